"""Resources a hostile or unlucky client must not exhaust (issue 14, items 1 and 2).

Item 1: the SQLite store kept every thread's connection forever; the request thread pool retires
idle threads, so each burst after a pause leaked file descriptors until the server died.
Item 2: one WebSocket frame of 10,000 ``authentication`` tasks blocked ``/health`` for 89 s,
idle unauthenticated sockets were unbounded, and authenticating again reset a socket's in-flight
count.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
import uuid
from pathlib import Path

import httpx

from reelserve_testing import ServerFactory, ServerProcess


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_sqlite_store_does_not_leak_fds_across_short_lived_threads(tmp_path: Path) -> None:
    from reelserve.jobs.sqlite import SQLiteJobStore

    store = SQLiteJobStore(tmp_path / "jobs.db")
    try:
        store.get("warm-up")
        before = _open_fds()
        for _ in range(60):  # 60 threads, each used once and gone, as a retired pool thread
            worker = threading.Thread(target=store.get, args=("no-such-job",))
            worker.start()
            worker.join()
        after = _open_fds()
        assert after - before <= 4, (before, after)
    finally:
        store.close()


def _server_fds(server: ServerProcess) -> int:
    assert server.proc is not None
    return len(os.listdir(f"/proc/{server.proc.pid}/fd"))


async def test_one_huge_auth_frame_does_not_block_the_server(server: ServerProcess) -> None:
    import websockets

    ws_url = server.url.replace("http://", "ws://") + "/v1"
    frame = json.dumps([{"taskType": "authentication", "apiKey": "any"}] * 10_000)
    async with httpx.AsyncClient(base_url=server.url, timeout=30.0) as http, \
            websockets.connect(ws_url, max_size=None) as ws:
        await ws.send(frame)
        worst = 0.0
        for _ in range(20):
            start = time.monotonic()
            assert (await http.get("/health")).status_code == 200
            worst = max(worst, time.monotonic() - start)
            await asyncio.sleep(0.05)
        assert worst < 1.0, worst
        # The socket answers (one reply or a refusal), it does not stall forever.
        reply = await asyncio.wait_for(ws.recv(), 30.0)
        assert reply


async def test_idle_unauthenticated_sockets_are_bounded(server_factory: ServerFactory) -> None:
    import websockets

    srv = server_factory(env={"REELSERVE_WS_MAX_CONNECTIONS": "50", "REELSERVE_WORKERS": "0"})
    ws_url = srv.url.replace("http://", "ws://") + "/v1"
    base = _server_fds(srv)
    sockets = []
    refused = 0
    for _ in range(80):
        try:
            sockets.append(await websockets.connect(ws_url))
        except (websockets.exceptions.InvalidStatus, OSError):
            refused += 1
    # Over the cap a socket is refused at the handshake or closed at once.
    open_ones = 0
    for ws in sockets:
        try:
            await ws.send(json.dumps([{"taskType": "ping", "ping": True}]))
            await asyncio.wait_for(ws.recv(), 5.0)
            open_ones += 1
        except (websockets.exceptions.ConnectionClosed, TimeoutError):
            pass
    assert open_ones <= 50 and refused + (len(sockets) - open_ones) >= 30, (open_ones, refused)
    for ws in sockets:
        await ws.close()
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline and _server_fds(srv) > base + 5:
        await asyncio.sleep(0.2)
    assert _server_fds(srv) <= base + 5, (base, _server_fds(srv))


async def test_reauthenticating_keeps_the_in_flight_count(server_factory: ServerFactory) -> None:
    # Authenticating again on the same socket starts a new session; the socket's running tasks
    # still count (it used to start from zero, so a client could run without limit).
    import websockets

    srv = server_factory(env={"REELSERVE_WORKERS": "0", "REELSERVE_WS_MAX_IN_FLIGHT": "2"})
    ws_url = srv.url.replace("http://", "ws://") + "/v1"

    def sync_video() -> dict[str, object]:
        return {"taskType": "videoInference", "taskUUID": str(uuid.uuid4()),
                "model": "klingai:1@1", "positivePrompt": "a boat", "width": 1280,
                "height": 720, "duration": 5, "deliveryMethod": "sync"}

    async def authenticate(ws: websockets.ClientConnection) -> str:
        await ws.send(json.dumps([{"taskType": "authentication", "apiKey": "any"}]))
        reply = json.loads(await asyncio.wait_for(ws.recv(), 10.0))
        return str(reply["data"][0]["connectionSessionUUID"])

    async with websockets.connect(ws_url) as ws:
        first = await authenticate(ws)
        # Two sync tasks with no worker: they stay in flight (no ACK is sent for sync).
        await ws.send(json.dumps([sync_video(), sync_video()]))
        await asyncio.sleep(0.5)
        assert await authenticate(ws) != first
        third = sync_video()
        await ws.send(json.dumps([third]))
        reply = json.loads(await asyncio.wait_for(ws.recv(), 10.0))
        error = reply["errors"][0]
        assert error["code"] == "rateLimitExceeded", reply
        assert error["taskUUID"] == third["taskUUID"], reply
        assert "REELSERVE_WS_MAX_IN_FLIGHT" in error["message"], reply
