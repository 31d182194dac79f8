"""An ASGI app served by uvicorn on a free loopback port in a daemon thread: real sockets for in-process apps."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any, Self

import uvicorn


class Served:
    """``with Served(app) as s: httpx.get(s.url)``; waits (with a deadline) until uvicorn accepts connections.

    ``force_exit`` stops without waiting for requests in flight (apps whose handlers may be sleeping).
    """

    def __init__(self, app: Any, *, force_exit: bool = False, start_timeout_s: float = 10.0) -> None:
        self.app = app
        self.force_exit = force_exit
        self.start_timeout_s = start_timeout_s
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        deadline = time.monotonic() + self.start_timeout_s
        while not self.server.started:
            assert time.monotonic() < deadline, f"{type(self.app).__name__} did not start serving at {self.url}"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.server.force_exit = self.force_exit
        self.thread.join(5)
        self.sock.close()
