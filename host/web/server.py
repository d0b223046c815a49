# Runs on CPython (host): WebServer — the /v1 API served by uvicorn in a thread of the daemon.
"""``WebServer(config, writer=..., read_db=..., policy=..., bus=...).start()`` binds the
address (a bind failure raises ``HostError`` at once), runs uvicorn on its own thread and
returns once the server accepts connections; ``stop()`` ends the event streams, lets the
requests in flight finish (a few seconds at most) and joins the thread.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable

import sqlite_utils
import uvicorn

from host.errors import HostError
from host.rules.policy import Policy
from host.web.app import create_app
from host.web.config import HttpConfig
from host.web.context import ReadersLike, SalesLike, WebContext, WriterLike
from host.web.events import EventBus

log = logging.getLogger("tapkiosk.web")

#: Seconds ``start()`` waits for uvicorn to accept connections.
START_TIMEOUT_S = 15.0
#: Seconds in-flight requests get to finish on ``stop()``.
GRACEFUL_S = 3


class WebServer:
    """The daemon's HTTP API server."""

    def __init__(self, config: HttpConfig, *, writer: WriterLike,
                 read_db: Callable[[], sqlite_utils.Database], policy: Policy,
                 bus: EventBus, log_level: str = "warning", sales: SalesLike | None = None,
                 readers: ReadersLike | None = None) -> None:
        self.config = config
        self.ctx = WebContext(writer=writer, read_db=read_db, policy=policy, bus=bus,
                              sales=sales, readers=readers)
        self.app = create_app(self.ctx)
        self._log_level = log_level
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port: int | None = None

    @property
    def url(self) -> str:
        """Base URL of the running server (``http[s]://address:port``)."""
        host = self.config.address
        host = f"[{host}]" if ":" in host else host
        return f"{'https' if self.config.tls else 'http'}://{host}:{self.port}"

    def _bind(self) -> socket.socket:
        c = self.config
        try:
            family, kind, proto, _, addr = socket.getaddrinfo(
                c.address, c.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
            sock = socket.socket(family, kind, proto)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(addr)
        except OSError as e:
            raise HostError(f"cannot serve the HTTP API on {c.address}:{c.port}: "
                            f"{e.strerror or e}") from None
        sock.set_inheritable(True)
        return sock

    def start(self) -> "WebServer":
        """Bind, start uvicorn's thread, wait until it serves; returns self."""
        sock = self._bind()
        self.port = sock.getsockname()[1]
        c = self.config
        # log_config=None: uvicorn leaves the daemon's logging set-up alone.
        cfg = uvicorn.Config(self.app, log_config=None, log_level=self._log_level,
                             lifespan="off",
                             access_log=False, timeout_graceful_shutdown=GRACEFUL_S,
                             ssl_certfile=c.tls_cert, ssl_keyfile=c.tls_key)
        server = uvicorn.Server(cfg)
        self._server = server
        self._thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]},
                                        name="tapkiosk-http", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not server.started:
            self.stop()
            sock.close()
            raise HostError(f"the HTTP API did not start on {c.address}:{self.port}")
        log.info("HTTP API on %s/v1", self.url)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """End the event streams, stop accepting, finish in-flight requests. Idempotent."""
        self.ctx.close_streams()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout)
