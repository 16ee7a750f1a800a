"""The Runware WebSocket transport at ``/v1``, byte for byte, with a raw ``websockets`` client.

A real ``reelserve serve`` subprocess per module (preview engine); the SDK tests in ``tests/sdk``
prove the same endpoint with the official clients.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from reelserve_testing import ServerFactory, ServerProcess

KEY = "ws-test-key"
T2V: dict[str, Any] = {"taskType": "videoInference", "model": "klingai:1@1",
                       "positivePrompt": "a paper boat on a calm lake", "duration": 5,
                       "width": 720, "height": 720}
WAIT = 60.0  # generous upper bound for one preview generation on a busy 2-core machine


@pytest.fixture(scope="module")
def ws_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("ws"), {
        "REELSERVE_API_KEYS": KEY, "REELSERVE_WORKERS": "1"}).start()
    yield proc
    proc.stop()


def ws_url(server: ServerProcess, suffix: str = "/v1") -> str:
    return server.url.replace("http://", "ws://") + suffix


def task(**fields: Any) -> dict[str, Any]:
    return {**T2V, "taskUUID": str(uuid.uuid4()), **fields}


async def send(ws: Any, *tasks: dict[str, Any]) -> None:
    await ws.send(json.dumps(list(tasks)))


async def recv(ws: Any, timeout: float = WAIT) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout))
    return frame


async def auth(ws: Any, key: str = KEY, session: str | None = None) -> str:
    message: dict[str, Any] = {"taskType": "authentication", "apiKey": key}
    if session:
        message["connectionSessionUUID"] = session
    await send(ws, message)
    reply = await recv(ws, 10)
    assert set(reply) == {"data"}, reply
    [item] = reply["data"]
    assert set(item) == {"taskType", "connectionSessionUUID"}, item
    assert item["taskType"] == "authentication"
    return str(item["connectionSessionUUID"])


async def collect(ws: Any, task_uuid: str, results: int, timeout: float = WAIT,
                  ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Frames for ``task_uuid`` until ``results`` videos (or an error) arrived."""
    frames: list[dict[str, Any]] = []
    videos: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(videos) < results:
        frame = await recv(ws, max(0.1, deadline - time.monotonic()))
        frames.append(frame)
        for item in frame.get("data", []):
            assert item["taskUUID"] == task_uuid, frame
            if "videoUUID" in item:
                videos.append(item)
        if frame.get("errors"):
            break
    return frames, videos


# ---------------------------------------------------------------------------- authentication


async def test_auth_reply_is_exact_and_any_query_string_is_accepted(ws_server: ServerProcess,
                                                                    ) -> None:
    for suffix in ("/v1?sdk=js&version=1.3.2&dryRun=0", "/v1/", "/v1"):
        async with websockets.connect(ws_url(ws_server, suffix)) as ws:
            session = await auth(ws)
            assert uuid.UUID(session)


async def test_bad_key_gets_invalid_api_key_and_socket_stays_open(ws_server: ServerProcess,
                                                                  ) -> None:
    async with websockets.connect(ws_url(ws_server)) as ws:
        await send(ws, {"taskType": "authentication", "apiKey": "wrong"})
        reply = await recv(ws, 10)
        assert set(reply) == {"errors"}
        [error] = reply["errors"]
        assert set(error) == {"code", "message", "parameter", "taskType"}, error
        assert error["code"] == "invalidApiKey"
        assert error["parameter"] == "apiKey" and error["taskType"] == "authentication"
        # still open: the right key now works on the same socket
        await auth(ws)


async def test_tasks_before_authentication_are_refused_per_task(ws_server: ServerProcess) -> None:
    async with websockets.connect(ws_url(ws_server)) as ws:
        video = task()
        await send(ws, video)
        [error] = (await recv(ws, 10))["errors"]
        assert error["code"] == "missingApiKey"
        assert error["taskUUID"] == video["taskUUID"] and error["taskType"] == "videoInference"


async def test_ping_pong_is_data_zero(ws_server: ServerProcess) -> None:
    async with websockets.connect(ws_url(ws_server)) as ws:
        await auth(ws)
        await send(ws, {"taskType": "ping", "ping": True})
        assert await recv(ws, 10) == {"data": [{"taskType": "ping", "pong": True}]}


# ---------------------------------------------------------------------------- tasks


async def test_tasks_in_one_frame_are_answered_separately_with_ids(ws_server: ServerProcess,
                                                                   ) -> None:
    async with websockets.connect(ws_url(ws_server)) as ws:
        await auth(ws)
        ok = task()
        bad_size = task(width=1000, height=1000)
        bad_model = task(model="klingai:99@9")
        unknown = {"taskType": "getResponse", "taskUUID": str(uuid.uuid4())}
        weird = {"taskType": "imageInference", "taskUUID": str(uuid.uuid4())}
        await send(ws, ok, bad_size, bad_model, unknown, weird)
        frames = [await recv(ws, 20) for _ in range(5)]
        by_uuid: dict[str, dict[str, Any]] = {}
        for frame in frames:
            items = frame.get("data", []) + frame.get("errors", [])
            assert len(items) == 1, frame  # one task per frame
            by_uuid[items[0]["taskUUID"]] = frame
        assert by_uuid[ok["taskUUID"]] == {"data": [{"taskType": "videoInference",
                                                     "taskUUID": ok["taskUUID"]}]}  # the ACK
        codes = {u: f["errors"][0]["code"] for u, f in by_uuid.items() if "errors" in f}
        assert codes == {bad_size["taskUUID"]: "invalidDimensions",
                         bad_model["taskUUID"]: "modelNotFound",
                         unknown["taskUUID"]: "taskNotFound",
                         weird["taskUUID"]: "unsupportedTaskType"}
        for frame in by_uuid.values():
            for error in frame.get("errors", []):
                assert error["taskType"] and error["message"], error


async def test_async_ack_then_get_response_delivers_each_result_once(ws_server: ServerProcess,
                                                                      ) -> None:
    async with websockets.connect(ws_url(ws_server)) as ws:
        await auth(ws)
        video = task(numberResults=2)
        await send(ws, video)
        assert await recv(ws, 20) == {"data": [{"taskType": "videoInference",
                                                "taskUUID": video["taskUUID"]}]}
        seen: list[dict[str, Any]] = []
        deadline = time.monotonic() + 2 * WAIT
        while len(seen) < 2 and time.monotonic() < deadline:
            await send(ws, {"taskType": "getResponse", "taskUUID": video["taskUUID"]})
            frame = await recv(ws, 20)
            assert "errors" not in frame, frame
            for item in frame["data"]:
                assert item["taskType"] == "videoInference"  # the original taskType
                assert item["status"] in ("processing", "success"), item
                if item["status"] == "success":
                    seen.append(item)
            await asyncio.sleep(0.3)
        assert len({i["videoUUID"] for i in seen}) == 2
        # Already delivered: polled again, nothing is sent twice.
        await send(ws, {"taskType": "getResponse", "taskUUID": video["taskUUID"]})
        frame = await recv(ws, 20)
        assert not [i for i in frame.get("data", []) if i.get("status") == "success"], frame


async def test_sync_is_pushed_without_ack_with_progress(ws_server: ServerProcess) -> None:
    async with websockets.connect(ws_url(ws_server)) as ws:
        await auth(ws)
        video = task(deliveryMethod="sync", numberResults=2)
        await send(ws, video)
        frames, videos = await collect(ws, video["taskUUID"], 2, 2 * WAIT)
        assert len({v["videoUUID"] for v in videos}) == 2
        assert all(v["videoURL"].startswith(ws_server.url) for v in videos)
        for frame in frames:
            for item in frame["data"]:
                assert "videoUUID" in item or item.get("status") == "processing", item
        progress = [i["progress"] for f in frames for i in f["data"] if "progress" in i]
        assert progress == sorted(progress)


async def test_sync_in_any_case_is_pushed_like_rest(ws_server: ServerProcess) -> None:
    # The handler reads deliveryMethod (case-insensitively, as REST does) and tells the
    # transport to push: "SYNC" gets no ACK but the result, exactly like "sync".
    async with websockets.connect(ws_url(ws_server)) as ws:
        await auth(ws)
        video = task(deliveryMethod="SYNC")
        await send(ws, video)
        frames, videos = await collect(ws, video["taskUUID"], 1, 2 * WAIT)
        assert not any(f.get("errors") for f in frames), frames
        [result] = videos
        assert result["videoURL"].startswith(ws_server.url) and "status" not in result
        acks = [i for f in frames for i in f["data"] if set(i) == {"taskType", "taskUUID"}]
        assert acks == [], frames


async def test_resent_task_uuid_gets_conflict(ws_server: ServerProcess) -> None:
    async with websockets.connect(ws_url(ws_server)) as ws:
        await auth(ws)
        video = task()
        await send(ws, video)
        await recv(ws, 20)  # ACK
        await send(ws, video)
        [error] = (await recv(ws, 20))["errors"]
        assert error["code"] == "conflictTaskUUID"
        assert error["taskUUID"] == video["taskUUID"] and error["taskType"] == "videoInference"


# ---------------------------------------------------------------------------- sessions


def _wait_finished(server: ServerProcess, task_uuid: str) -> None:
    """Wait (over REST, without taking results) until the task is done."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        resp = httpx.post(server.url + "/v1", headers={"Authorization": f"Bearer {KEY}"},
                          json=[{"taskType": "getTaskDetails", "taskUUID": task_uuid}])
        if resp.json()["data"][0]["status"] != "processing":
            return
        time.sleep(0.3)
    raise AssertionError(f"{task_uuid} did not finish")


async def test_results_of_a_dropped_socket_arrive_after_resume(ws_server: ServerProcess) -> None:
    ws = await websockets.connect(ws_url(ws_server))
    session = await auth(ws)
    video = task(deliveryMethod="sync")
    await send(ws, video)
    await asyncio.sleep(0.2)
    ws.transport.abort()  # the client vanishes mid-generation, no close handshake
    await asyncio.to_thread(_wait_finished, ws_server, video["taskUUID"])
    async with websockets.connect(ws_url(ws_server)) as again:
        assert await auth(again, session=session) == session
        _, videos = await collect(again, video["taskUUID"], 1, 20)
        assert len(videos) == 1


async def test_unknown_or_foreign_session_gets_a_new_uuid(ws_server: ServerProcess) -> None:
    async with websockets.connect(ws_url(ws_server)) as ws:
        made_up = str(uuid.uuid4())
        assert await auth(ws, session=made_up) != made_up


# ---------------------------------------------------------------------------- limits


@pytest.fixture
def tight_server(server_factory: ServerFactory, tmp_path: Path) -> ServerProcess:
    return server_factory(env={
        "REELSERVE_API_KEYS": KEY, "REELSERVE_WORKERS": "0",
        "REELSERVE_WS_IDLE_TIMEOUT": "1.5", "REELSERVE_WS_MAX_IN_FLIGHT": "1",
        "REELSERVE_MAX_BODY_BYTES": "4000", "REELSERVE_WS_SEND_QUEUE": "4",
    })


async def test_idle_socket_is_closed_and_pings_keep_it_open(tight_server: ServerProcess) -> None:
    async with websockets.connect(ws_url(tight_server)) as ws:
        await auth(ws)
        for _ in range(4):  # 2.4 s > idle timeout, but never 1.5 s without a message
            await asyncio.sleep(0.6)
            await send(ws, {"taskType": "ping", "ping": True})
            await recv(ws, 5)
        start = time.monotonic()
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
        assert 1.0 < time.monotonic() - start < 5.0
        assert ws.close_code == 1000 and "idle" in (ws.close_reason or "")


async def test_in_flight_limit_refuses_extra_tasks(tight_server: ServerProcess) -> None:
    # No workers: the first sync task stays in flight.
    async with websockets.connect(ws_url(tight_server)) as ws:
        await auth(ws)
        first, second = task(deliveryMethod="sync"), task(deliveryMethod="sync")
        await send(ws, first, second)
        [error] = (await recv(ws, 10))["errors"]
        assert error["code"] == "rateLimitExceeded"
        assert error["taskUUID"] == second["taskUUID"] and error["taskType"] == "videoInference"
        assert "1" in error["message"] and "REELSERVE_WS_MAX_IN_FLIGHT" in error["message"]


async def test_oversized_and_malformed_frames_are_refused_and_socket_survives(
        tight_server: ServerProcess) -> None:
    async with websockets.connect(ws_url(tight_server)) as ws:
        await auth(ws)
        big = task(positivePrompt="x" * 5000)
        await send(ws, big)
        [error] = (await recv(ws, 10))["errors"]
        assert error["code"] == "payloadTooLarge" and error["taskUUID"] == big["taskUUID"]
        assert "4000" in error["message"]
        await ws.send("{not json")
        [error] = (await recv(ws, 10))["errors"]
        assert error["code"] == "invalidJson" and error["parameter"] == "frame"
        await send(ws, {"taskType": "ping", "ping": True})
        assert (await recv(ws, 10))["data"][0]["pong"] is True


async def test_slow_client_is_dropped_without_blocking_others(tight_server: ServerProcess) -> None:
    # A client that stops reading (max_queue=1: the library stops reading the TCP stream) while
    # asking for thousands of replies: the server's bounded queue overflows and it is dropped.
    slow = await websockets.connect(ws_url(tight_server), max_queue=1)
    await auth(slow)
    pings = json.dumps([{"taskType": "ping", "ping": True}] * 1000)
    async with websockets.connect(ws_url(tight_server)) as other:
        await auth(other)
        for _ in range(60):
            try:
                await slow.send(pings)
            except websockets.ConnectionClosed:
                break  # the server already dropped it
            started = time.monotonic()
            await send(other, {"taskType": "ping", "ping": True})
            await recv(other, 5)
            assert time.monotonic() - started < 2.0  # the other client is served at once
            if slow.state is websockets.protocol.State.CLOSED:
                break
        with pytest.raises(websockets.ConnectionClosed):
            while True:  # drain what made it through, then the close frame
                await asyncio.wait_for(slow.recv(), 10)
        assert slow.close_code == 1013, (slow.close_code, slow.close_reason)
