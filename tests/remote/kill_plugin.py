"""A test plugin that kills a process (a throwaway registry) in the middle of a build.

Loaded through ``[plugins] modules = ["tests.remote.kill_plugin"]``. When an action whose
id is ``$FORGE_TEST_KILL_ON`` finishes, the process ``$FORGE_TEST_KILL_PID`` gets SIGKILL
and the hook waits until its port (``$FORGE_TEST_KILL_PORT``) refuses connections, so
the next remote cache request of the build meets a dead registry deterministically.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time

import forge


@forge.hookimpl
def forge_action_finished(action, result, status):
    pid = os.environ.get("FORGE_TEST_KILL_PID")
    if not pid or action.id != os.environ.get("FORGE_TEST_KILL_ON"):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(int(pid), signal.SIGKILL)
    port = int(os.environ["FORGE_TEST_KILL_PORT"])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        except OSError:
            return
        time.sleep(0.05)
