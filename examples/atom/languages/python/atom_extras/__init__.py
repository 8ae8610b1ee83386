"""atom_extras: what the real extras flavor gets from OpenCV, in miniature."""

__version__ = "0.1.0"


def grayscale(pixels):
    """ITU-R BT.601 luma of (r, g, b) tuples, as ints."""
    return [round(0.299 * r + 0.587 * g + 0.114 * b) for r, g, b in pixels]


def describe():
    return f"atom_extras {__version__}"
