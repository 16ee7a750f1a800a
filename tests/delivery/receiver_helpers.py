"""A real local HTTP receiver for webhooks and upload PUTs (used by the delivery tests)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    """One request the receiver saw, and what it answered."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    answered: int


@dataclass
class Receiver:
    """Answers ``fail_first`` requests with 503, then 200. ``accept`` switches answers off/on."""

    port: int = 0
    fail_first: int = 0
    accept: bool = True
    seen: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    event: threading.Condition = field(default_factory=threading.Condition)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def accepted(self) -> list[Received]:
        """Requests answered with 2xx."""
        with self.lock:
            return [r for r in self.seen if 200 <= r.answered < 300]

    def wait_for(self, predicate: Any, timeout: float = 30.0) -> bool:
        """Block until ``predicate(self)`` is true."""
        with self.event:
            return self.event.wait_for(lambda: predicate(self), timeout)


@contextlib.contextmanager
def run_receiver() -> Iterator[Receiver]:
    """Serve a :class:`Receiver` on a free loopback port for the duration of the block."""
    rec = Receiver()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _handle(self) -> None:
            n = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(n) if n else b""
            with rec.lock:
                failed_so_far = sum(1 for r in rec.seen if r.answered >= 500)
                status = 503 if (failed_so_far < rec.fail_first or not rec.accept) else 200
                rec.seen.append(Received(self.command, self.path, dict(self.headers), body, status))
            payload = b"ok" if status == 200 else b"try later"
            self.send_response(status)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            with rec.event:
                rec.event.notify_all()

        do_POST = do_PUT = _handle

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    rec.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield rec
    httpd.shutdown()
    httpd.server_close()
