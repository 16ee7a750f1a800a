"""Shared fixtures: a REAL reelserve server in a subprocess and an httpx client.

``server_factory(env=..., data_dir=...)`` starts ``python -m reelserve serve --port <free>
--data-dir <tmp>`` with extra ``REELSERVE_*`` variables and waits for ``/health``; every server it
started is stopped after the test. ``server`` is a module-scoped default server (loopback only, 2
worker threads, preview engine) and ``client`` an httpx client on it. Helpers to build and upload
media live in ``reelserve_testing`` (``from reelserve_testing import upload_image, ...``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from reelserve_testing import ServerFactory, ServerProcess


@pytest.fixture(autouse=True)
def _isolate_reelserve_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No REELSERVE_* variable from the developer's shell leaks into a test."""
    for name in list(os.environ):
        if name.startswith("REELSERVE_"):
            monkeypatch.delenv(name, raising=False)

@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[ServerFactory]:
    """Start servers: ``server_factory(env={"REELSERVE_WORKERS": "2"}, data_dir=None)``."""
    started: list[ServerProcess] = []

    def start(env: dict[str, str] | None = None, data_dir: Path | None = None,
              port: int | None = None) -> ServerProcess:
        server = ServerProcess(data_dir or tmp_path / f"data-{len(started)}", env, port).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One default server per test module (loopback only, 2 worker threads)."""
    proc = ServerProcess(tmp_path_factory.mktemp("server"), {"REELSERVE_WORKERS": "2"}).start()
    yield proc
    proc.stop()


@pytest.fixture
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    """An httpx client on the module's server."""
    with httpx.Client(base_url=server.url, timeout=120.0) as http:
        yield http


