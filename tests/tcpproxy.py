"""A TCP proxy on a fixed local port that a test can stop and start again.

It stands between a node and PostgreSQL so a test can make the database go
away (`stop` refuses new connections and cuts the open ones) and come back on
the same address (`start`), without touching the database server itself.

    with TcpProxy(("127.0.0.1", 5432)) as proxy:
        url = f"postgresql://postgres@127.0.0.1:{proxy.port}/db"
        ...
        proxy.stop()
        proxy.start()

`blackhole` keeps accepting connections but never forwards a byte, like a
server behind a network partition: clients wait until their own timeout.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType

_CHUNK = 65536


class TcpProxy:
    """Forwards connections from ``127.0.0.1:port`` to `upstream`, one thread per direction."""

    def __init__(self, upstream: tuple[str, int], port: int = 0) -> None:
        self.upstream = upstream
        self.port = port
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self.forwarding = True
        self.connections = 0
        """How many client connections were accepted, over all starts."""

    @property
    def running(self) -> bool:
        return self._listener is not None

    def start(self) -> TcpProxy:
        """Listen on the port (chosen on the first start if 0) and forward."""
        if self._listener is not None:
            return self
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._spawn(self._accept_loop, listener)
        return self

    def stop(self) -> None:
        """Stop listening and cut every open connection, as if the server went away."""
        listener, self._listener = self._listener, None
        if listener is not None:
            _close(listener)
        self._cut()
        threads, self._threads = self._threads, []
        for thread in threads:
            thread.join(timeout=5)

    def restart(self) -> TcpProxy:
        self.stop()
        return self.start()

    def blackhole(self) -> None:
        """Cut the open connections; accept new ones but never answer them."""
        self.forwarding = False
        self._cut()

    def resume(self) -> None:
        """Forward again; the connections held by `blackhole` are cut."""
        self.forwarding = True
        self._cut()

    def _cut(self) -> None:
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            _close(sock)

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        self._threads.append(thread)
        thread.start()

    def _accept_loop(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # the listener was closed by stop()
                return
            if self._listener is not listener:
                _close(client)
                return
            if not self.forwarding:
                with self._lock:
                    self._sockets.add(client)  # held open, never answered
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                _close(client)
                continue
            server.settimeout(None)
            with self._lock:
                self._sockets.update((client, server))
            self.connections += 1
            self._spawn(self._pump, client, server)
            self._spawn(self._pump, server, client)

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(_CHUNK):
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                with self._lock:
                    self._sockets.discard(sock)
                _close(sock)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
