"""Image deltas and transfers over bad links: the delta format and codecs, the device-side
applier, deltas end to end on the real engine and registry, and tests/cut_proxy.py."""
