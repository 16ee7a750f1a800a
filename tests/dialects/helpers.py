"""Helpers shared by the dialect tests: polling, probing a fetched video, a local receiver."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx


def poll(fn: Callable[[], Any], done: Callable[[Any], bool], timeout: float = 240.0,
         interval: float = 0.25) -> Any:
    """Call ``fn`` until ``done(value)``; the last value (assertion error on timeout)."""
    deadline = time.monotonic() + timeout
    value = fn()
    while not done(value):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting; last value: {value!r:.2000}")
        time.sleep(interval)
        value = fn()
    return value


def download_and_probe(url: str, dest: Path) -> Any:
    """GET ``url`` (a signed media URL) into ``dest`` and probe it."""
    from reelserve.media.probe import probe

    resp = httpx.get(url, timeout=60.0)
    assert resp.status_code == 200, resp.text[:300]
    dest.write_bytes(resp.content)
    return probe(dest)


class Receiver:
    """A real local HTTP server recording every POST body (a callback receiver)."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/callback"

    def wait_for(self, done: Callable[[list[dict[str, Any]]], bool],
                 timeout: float = 60.0) -> list[dict[str, Any]]:
        def snapshot() -> list[dict[str, Any]]:
            with self.lock:
                return list(self.bodies)

        return poll(snapshot, done, timeout=timeout, interval=0.1)  # type: ignore[no-any-return]


@contextmanager
def receiver() -> Iterator[Receiver]:
    """Run a :class:`Receiver` on a free loopback port for the block."""
    rec = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            body = self.rfile.read(length)
            with rec.lock:
                rec.bodies.append(json.loads(body))
                rec.headers.append(dict(self.headers.items()))
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    rec.port = server.server_address[1]  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield rec
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
