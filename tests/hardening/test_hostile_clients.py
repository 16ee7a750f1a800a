"""Hostile clients against a real server (issue 14, items 3, 4, 5, 7, 8 and 11).

Each test reproduces what a review did to the server and states what must hold instead: task
arrays and bodies are capped on every route, a keyless server cannot be driven by another web
page (Host, Origin and content type are checked), forwarded-address headers are trusted only
from configured proxies, the in-flight limit is atomic, media answers carry ``nosniff`` and
answer ``HEAD``, and ``getResponse`` results survive an answer the client never read.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from reelserve_testing import ServerFactory, ServerProcess, make_png, poll_results


def _video(task_uuid: str | None = None) -> dict[str, object]:
    return {"taskType": "videoInference", "taskUUID": task_uuid or str(uuid.uuid4()),
            "model": "klingai:1@1", "positivePrompt": "a boat", "width": 1280, "height": 720,
            "duration": 5}


# ------------------------------------------------------------------ item 3: tasks per request


def test_task_array_is_capped(server: ServerProcess) -> None:
    tasks = [{"taskType": "modelSearch", "taskUUID": str(uuid.uuid4())} for _ in range(30_000)]
    with httpx.Client(base_url=server.url, timeout=60.0) as http:
        resp = http.post("/v1", json=tasks)
        assert resp.status_code in (400, 413), resp.status_code
        assert len(resp.content) < 10_000, len(resp.content)
        error = resp.json()["errors"][0]
        assert "task" in error["message"].lower() and error.get("code"), error
        # The server is still fine for everyone else.
        assert http.get("/health").status_code == 200


# ---------------------------------------------------- item 4: a keyless server and web pages


def test_foreign_host_refused_without_keys(server: ServerProcess) -> None:
    # DNS rebinding: the attacker's name resolves to 127.0.0.1, the Host header keeps the name.
    with httpx.Client(base_url=server.url, timeout=30.0) as http:
        for path in ("/v1/videos", "/v1/videos/text2video", "/health"):
            resp = http.get(path, headers={"Host": "rebind.attacker.example"})
            if path == "/health":
                continue  # liveness may answer anyone; it reveals nothing
            assert resp.status_code in (400, 403, 421), (path, resp.status_code, resp.text)
        resp = http.post("/v1", json=[{"taskType": "ping"}],
                         headers={"Host": "rebind.attacker.example:8000"})
        assert resp.status_code in (400, 403, 421), resp.text
        # The names a local user types still work.
        assert http.post("/v1", json=[{"taskType": "ping"}],
                         headers={"Host": f"localhost:{server.port}"}).status_code == 200


def test_cross_origin_writes_refused_without_keys(server: ServerProcess) -> None:
    evil = {"Origin": "https://evil.example"}
    with httpx.Client(base_url=server.url, timeout=30.0) as http:
        resp = http.post("/v1", json=[_video()], headers=evil)
        assert resp.status_code == 403, resp.text
        resp = http.post("/v1/videos", data={"prompt": "x", "seconds": "5"}, headers=evil)
        assert resp.status_code == 403, resp.text
        resp = http.post("/klingai/m2v_15_img2video", headers=evil,
                         files={"input_image": ("a.png", make_png(), "image/png")},
                         data={"prompt": "a cat"})
        assert resp.status_code == 403, resp.text
        # A "simple" cross-site request (no preflight): text/plain carrying JSON.
        resp = http.post("/v1", content=json.dumps([_video()]).encode(),
                         headers={"Content-Type": "text/plain"})
        assert resp.status_code == 415, resp.text
        # Same origin (the playground) is fine.
        resp = http.post("/v1", json=[{"taskType": "ping"}],
                         headers={"Origin": server.url})
        assert resp.status_code == 200, resp.text


async def test_cross_origin_websocket_refused(server: ServerProcess) -> None:
    import websockets
    from websockets.exceptions import InvalidStatus

    ws_url = server.url.replace("http://", "ws://") + "/v1"
    with pytest.raises(InvalidStatus) as refused:
        async with websockets.connect(ws_url, origin="https://evil.example"):
            pass
    assert refused.value.response.status_code == 403
    async with websockets.connect(ws_url, origin=server.url) as ws:
        await ws.send(json.dumps([{"taskType": "authentication", "apiKey": "any"}]))
        reply = json.loads(await ws.recv())
        assert reply["data"][0]["taskType"] == "authentication"


# ----------------------------------------------- item 5: Kling credentials and forwarded headers


def test_kling_needs_credentials_when_api_keys_set(server_factory: ServerFactory) -> None:
    srv = server_factory(env={"REELSERVE_API_KEYS": "k1", "REELSERVE_WORKERS": "0"})
    with httpx.Client(base_url=srv.url, timeout=30.0) as http:
        resp = http.post("/v1/videos/text2video", json={"model_name": "kling-v1", "prompt": "a"})
        assert resp.status_code == 401, resp.text
        assert http.get("/v1/videos/text2video").status_code == 401


@pytest.mark.parametrize("header", [
    {"X-Real-IP": "203.0.113.9"},
    {"Forwarded": "for=203.0.113.9;proto=https"},
    {"X-Forwarded-For": "203.0.113.9"},
])
def test_forwarded_requests_are_not_local(server: ServerProcess, header: dict[str, str]) -> None:
    # A same-host reverse proxy makes every client's TCP peer 127.0.0.1; the headers it adds
    # say the client is elsewhere. Untrusted by default: such a request is not a local one.
    with httpx.Client(base_url=server.url, timeout=30.0) as http:
        resp = http.post("/v1", json=[{"taskType": "ping"}], headers=header)
        assert resp.status_code in (401, 403), resp.text


def test_trusted_proxy_forwards_client_address(server_factory: ServerFactory) -> None:
    srv = server_factory(env={"REELSERVE_TRUSTED_PROXIES": "127.0.0.1", "REELSERVE_WORKERS": "0"})
    with httpx.Client(base_url=srv.url, timeout=30.0) as http:
        remote = http.post("/v1", json=[{"taskType": "ping"}],
                           headers={"X-Forwarded-For": "203.0.113.9"})
        assert remote.status_code in (401, 403), remote.text
        local = http.post("/v1", json=[{"taskType": "ping"}],
                          headers={"X-Forwarded-For": "127.0.0.1"})
        assert local.status_code == 200, local.text


# --------------------------------------------------------------- item 7: atomic in-flight limit


def test_in_flight_limit_is_atomic(server_factory: ServerFactory) -> None:
    srv = server_factory(env={"REELSERVE_WORKERS": "0", "REELSERVE_RATE_MAX_IN_FLIGHT": "32",
                              "REELSERVE_RATE_SUBMITS_PER_MINUTE": "0"})

    def submit(_: int) -> bool:
        with httpx.Client(base_url=srv.url, timeout=60.0) as http:
            resp = http.post("/v1", json=[_video()])
            body = resp.json()
            return resp.status_code == 200 and not body.get("errors")

    with ThreadPoolExecutor(max_workers=48) as pool:
        accepted = sum(pool.map(submit, range(300)))
    assert accepted == 32, accepted


# --------------------------------------------------------- item 8: body caps on every route


@pytest.mark.parametrize(("path", "kind"), [
    ("/v1/videos", "json"), ("/v1/videos", "multipart"), ("/v1/videos/text2video", "json"),
    ("/v1/videos/image2video", "json"), ("/klingai/m2v_15_img2video", "multipart"),
])
def test_body_cap_on_every_route(server_factory: ServerFactory, path: str, kind: str) -> None:
    srv = server_factory(env={"REELSERVE_MAX_BODY_BYTES": str(1024 * 1024),
                              "REELSERVE_WORKERS": "0"})
    blob = b"A" * (3 * 1024 * 1024)
    with httpx.Client(base_url=srv.url, timeout=60.0) as http:
        if kind == "json":
            resp = http.post(path, content=b'{"prompt": "' + blob + b'"}',
                             headers={"Content-Type": "application/json"})
        else:
            resp = http.post(path, data={"prompt": "a"},
                             files={"input_reference" if "videos" in path else "input_image":
                                    ("a.png", blob, "image/png")})
        assert resp.status_code == 413, (resp.status_code, resp.text[:300])


# ------------------------------------------------------------ item 11: media answer headers


def test_media_answers_nosniff_and_head(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.url, timeout=60.0) as http:
        resp = http.post("/v1", json=[{"taskType": "imageUpload", "taskUUID": str(uuid.uuid4()),
                                       "image": "data:image/png;base64,"
                                       + __import__("base64").b64encode(make_png()).decode()}])
        url = resp.json()["data"][0]["imageURL"]
        got = httpx.get(url, timeout=30.0)
        assert got.status_code == 200
        assert got.headers["x-content-type-options"] == "nosniff"
        head = httpx.head(url, timeout=30.0)
        assert head.status_code == 200, head.status_code
        assert head.headers["content-length"] == got.headers["content-length"]
        assert head.content == b""


# -------------------------------------------- item 11: getResponse answers that never arrive


@contextlib.contextmanager
def _slow_image_host(delay: float) -> Iterator[str]:
    """A loopback HTTP server that answers a PNG after ``delay`` seconds (keeps a batch busy)."""
    png = make_png(64, 64)

    class Slow(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            time.sleep(delay)
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(png)))
            self.end_headers()
            self.wfile.write(png)

        def log_message(self, format: str, *args: object) -> None:
            pass

    host = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    host.daemon_threads = True
    thread = threading.Thread(target=host.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{host.server_address[1]}/slow.png"
    finally:
        host.shutdown()
        host.server_close()


def test_get_response_keeps_results_the_client_never_read(
    server_factory: ServerFactory,
) -> None:
    # The answer to a getResponse batch is held up by a slow imageUpload in the same batch; the
    # client times out and leaves. Its results must still be there for the next poll (they
    # used to be marked delivered when taken, and were then only in getTaskDetails).
    srv = server_factory(env={"REELSERVE_OUTBOUND_ALLOW": "127.0.0.1",
                              "REELSERVE_ENGINE_SELECTOR": "tiny_engine:engine_selector"})
    task = _video()
    with httpx.Client(base_url=srv.url, timeout=60.0) as client:
        assert client.post("/v1", json=[task]).status_code == 200
        deadline = time.monotonic() + 300.0
        while True:  # getTaskDetails reads without handing results out
            details = client.post("/v1", json=[{"taskType": "getTaskDetails",
                                                 "taskUUID": task["taskUUID"]}]).json()
            status = details["data"][0]["status"]
            if status != "processing":
                break
            assert time.monotonic() < deadline, "the task did not finish"
            time.sleep(0.2)
        assert status == "success", details
        with _slow_image_host(3.0) as slow_url:
            with httpx.Client(base_url=srv.url, timeout=1.0) as impatient, \
                    pytest.raises(httpx.ReadTimeout):
                impatient.post("/v1", json=[
                    {"taskType": "getResponse", "taskUUID": task["taskUUID"]},
                    {"taskType": "imageUpload", "taskUUID": str(uuid.uuid4()),
                     "image": slow_url}])
            time.sleep(3.5)  # the server has answered into the closed connection by now
        items, errors = poll_results(client, str(task["taskUUID"]), timeout=30.0)
        assert not errors, errors
        assert [i["taskUUID"] for i in items] == [task["taskUUID"]], items
        # Handed out once: a poll after the answer arrived has nothing more.
        again = client.post("/v1", json=[{"taskType": "getResponse",
                                          "taskUUID": task["taskUUID"]}]).json()
        assert again["data"] == [], again


async def test_ws_results_of_an_expired_session_return_to_get_response(
    server_factory: ServerFactory,
) -> None:
    # A sync task over WebSocket whose client vanishes and never resumes: the pushed results wait
    # in the session's resume buffer; when the session expires (REELSERVE_WS_RESUME_SECONDS, with
    # no other socket coming or going to trigger a sweep) they go back to the store, so a later
    # getResponse over REST hands them out, once.
    import asyncio

    import websockets

    srv = server_factory(env={"REELSERVE_WS_RESUME_SECONDS": "1",
                              "REELSERVE_ENGINE_SELECTOR": "tiny_engine:engine_selector"})
    task = {**_video(), "deliveryMethod": "sync"}
    ws = await websockets.connect(srv.url.replace("http://", "ws://") + "/v1")
    await ws.send(json.dumps([{"taskType": "authentication", "apiKey": "any"}]))
    json.loads(await asyncio.wait_for(ws.recv(), 10))
    await ws.send(json.dumps([task]))
    await asyncio.sleep(0.2)
    ws.transport.abort()  # gone mid-generation, no close handshake, never back

    def finish_and_poll() -> tuple[list[dict[str, object]], list[dict[str, object]], object]:
        with httpx.Client(base_url=srv.url, timeout=60.0) as client:
            deadline = time.monotonic() + 300.0
            while True:  # getTaskDetails reads without handing results out
                details = client.post("/v1", json=[{"taskType": "getTaskDetails",
                                                     "taskUUID": task["taskUUID"]}]).json()
                if details["data"][0]["status"] != "processing":
                    break
                assert time.monotonic() < deadline, "the task did not finish"
                time.sleep(0.2)
            assert details["data"][0]["status"] == "success", details
            time.sleep(2.0)  # past the resume window: the session expired on its own timer
            items, errors = poll_results(client, str(task["taskUUID"]), timeout=30.0)
            again = client.post("/v1", json=[{"taskType": "getResponse",
                                              "taskUUID": task["taskUUID"]}]).json()
            return items, errors, again

    items, errors, again = await asyncio.to_thread(finish_and_poll)
    assert not errors, errors
    assert [i["taskUUID"] for i in items] == [task["taskUUID"]], items
    assert again["data"] == [], again
