"""A fault-injecting TCP proxy on loopback: a bad network link between a client and a server.

    python tests/cut_proxy.py --upstream 127.0.0.1:5000 --cut-down-every 1048576
    (prints "listening on 127.0.0.1:PORT"; point the client there)

It forwards bytes both ways and knows nothing of HTTP. Faults, each optional:

- ``cut_down_every=N``: every connection is closed after it has carried N bytes from the
  server to the client (a link that drops every N bytes; a client reconnects and goes on);
- ``cut_up_after=N`` with ``cut_up_times=K``: the first K connections that carry more
  than N bytes from the client are closed there (an upload that breaks mid-way);
- ``corrupt_down_at=N``: the byte at offset N of the server-to-client stream (counted over
  all connections) is flipped once (a link that corrupts, unnoticed by TCP).

Counters (``down_bytes``, ``up_bytes``, ``connections``, ``cuts``) say what crossed it, so a
test can check that a resumed transfer sent each byte about once. Used by the transfer
and delta tests (``CutProxy`` in-process) and runnable on its own for manual experiments.
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import threading
import time


class CutProxy:
    """The proxy; ``start()`` listens on a free loopback port (``host`` says which)."""

    def __init__(self, upstream: str, *, cut_down_every: int | None = None,
                 cut_up_after: int | None = None, cut_up_times: int = 1,
                 corrupt_down_at: int | None = None):
        host, _, port = upstream.rpartition(":")
        self.upstream = (host, int(port))
        self.cut_down_every = cut_down_every
        self.cut_up_after = cut_up_after
        self.cut_up_times = cut_up_times
        self.corrupt_down_at = corrupt_down_at
        self.down_bytes = 0
        self.up_bytes = 0
        self.connections = 0
        self.cuts = 0
        self._lock = threading.Lock()
        self._server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(("127.0.0.1", 0))
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self._server.getsockname()[1]}"

    def reset_counters(self) -> None:
        with self._lock:
            self.down_bytes = self.up_bytes = self.connections = self.cuts = 0

    def start(self) -> CutProxy:
        self._server.listen(64)
        self._thread = threading.Thread(target=self._accept, daemon=True, name="cut-proxy")
        self._thread.start()
        return self

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._server.close()

    def __enter__(self) -> CutProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing ----------------------------------------------------------------------
    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            server = socket.create_connection(self.upstream, timeout=30)
        except OSError:
            client.close()
            return
        state = {"down": 0, "up": 0, "cut": False}
        done = threading.Event()

        def cut() -> None:
            if not state["cut"]:
                state["cut"] = True
                with self._lock:
                    self.cuts += 1
            for s in (client, server):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
            done.set()

        def pump(src: socket.socket, dst: socket.socket, direction: str) -> None:
            try:
                while not done.is_set():
                    data = src.recv(65536)
                    if not data:
                        break
                    if direction == "down":
                        data, stop = self._down(state, data)
                    else:
                        data, stop = self._up(state, data)
                    if data:
                        dst.sendall(data)
                    if stop:
                        cut()
                        return
            except OSError:
                pass
            finally:
                with contextlib.suppress(OSError):
                    dst.shutdown(socket.SHUT_WR)

        up = threading.Thread(target=pump, args=(client, server, "up"), daemon=True)
        up.start()
        pump(server, client, "down")
        up.join(timeout=60)
        for s in (client, server):
            s.close()

    def _down(self, state: dict, data: bytes) -> tuple[bytes, bool]:
        stop = False
        if self.cut_down_every is not None and state["down"] + len(data) >= self.cut_down_every:
            data = data[: self.cut_down_every - state["down"]]
            stop = True
        with self._lock:
            start = self.down_bytes
            self.down_bytes += len(data)
            at = self.corrupt_down_at
            if at is not None and start <= at < start + len(data):
                buf = bytearray(data)
                buf[at - start] ^= 0xFF
                data = bytes(buf)
                self.corrupt_down_at = None  # once
        state["down"] += len(data)
        return data, stop

    def _up(self, state: dict, data: bytes) -> tuple[bytes, bool]:
        stop = False
        with self._lock:
            if (self.cut_up_after is not None and self.cut_up_times > 0
                    and state["up"] + len(data) > self.cut_up_after):
                data = data[: self.cut_up_after - state["up"]]
                self.cut_up_times -= 1
                stop = True
            self.up_bytes += len(data)
        state["up"] += len(data)
        return data, stop


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--upstream", required=True, help="host:port to forward to")
    p.add_argument("--cut-down-every", type=int, help="close each connection after N server->client bytes")
    p.add_argument("--cut-up-after", type=int, help="close a connection after N client->server bytes")
    p.add_argument("--cut-up-times", type=int, default=1, help="how many connections --cut-up-after cuts")
    p.add_argument("--corrupt-down-at", type=int, help="flip the server->client byte at this offset, once")
    args = p.parse_args()
    proxy = CutProxy(args.upstream, cut_down_every=args.cut_down_every, cut_up_after=args.cut_up_after,
                     cut_up_times=args.cut_up_times, corrupt_down_at=args.corrupt_down_at).start()
    print(f"listening on {proxy.host}", flush=True)
    try:
        while True:
            time.sleep(5)
            print(f"connections {proxy.connections}, cuts {proxy.cuts}, down {proxy.down_bytes} B, "
                  f"up {proxy.up_bytes} B", flush=True)
    except KeyboardInterrupt:
        proxy.close()


if __name__ == "__main__":
    main()
