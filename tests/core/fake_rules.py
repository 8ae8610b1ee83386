"""A test plugin: a ``concat`` rule whose action joins its sources and dependencies.

Loaded by test workspaces through ``[plugins] modules = ["tests.core.fake_rules"]``;
it exercises the engine without images. ``FORGE_TEST_SLOW_WRITE`` makes the action
stream its output slowly so a test can SIGKILL forge mid-write.
"""

from __future__ import annotations

import os
import time

import forge
from forge import attr


class Concat(forge.Rule):
    name = "concat"
    doc = "Concatenate sources and dependencies' outputs (test rule)."
    attrs = {
        "srcs": attr.sources(default=[], doc="files"),
        "deps": attr.label_list(default=[], doc="other concat targets"),
        "text": attr.string(default="", doc="extra text"),
        "fail": attr.boolean(default=False, doc="fail when run"),
        "platform": attr.platform(),
    }

    def analyze(self, ctx):
        deps = [d[forge.DefaultInfo].action for d in ctx.attr.deps]
        action = ctx.action(
            "Concat", run_concat, inputs=ctx.files(ctx.attr.srcs), deps=deps,
            params={"text": ctx.attr.text, "fail": ctx.attr.fail},
            platform=ctx.attr.platform,
        )
        return [forge.DefaultInfo(action)]


def run_concat(rc):
    if rc.params["fail"]:
        rc.log("about to fail")
        raise forge.ActionFailed("concat told to fail")
    parts = [rc.cas.read_bytes(rc.dep(d).outputs["out"].digest) for d in rc.action.deps]
    parts += [f.path.read_bytes() for f in rc.action.inputs]
    parts.append(rc.params["text"].encode())
    data = b"".join(parts)
    slow = float(os.environ.get("FORGE_TEST_SLOW_WRITE", "0"))
    trace = os.environ.get("FORGE_TEST_TRACE")
    if trace:  # when each run starts and ends, so a test can see actions overlap
        with open(trace, "a") as fh:
            fh.write(f"start {rc.action.label} {time.monotonic()}\n")
    try:
        return _write(rc, data, slow)
    finally:
        if trace:
            with open(trace, "a") as fh:
                fh.write(f"end {rc.action.label} {time.monotonic()}\n")


def _write(rc, data: bytes, slow: float):
    if slow:
        with rc.cas.writer() as w:
            for i in range(200):
                w.write(data + str(i).encode() * 1000)
                w.flush()
                time.sleep(slow / 200)
        return rc.result({"out": forge.Descriptor(w.digest, w.size)})
    return rc.result({"out": rc.cas.put_bytes(data)})


@forge.hookimpl
def forge_register_rules(registry):
    registry.add(Concat)
