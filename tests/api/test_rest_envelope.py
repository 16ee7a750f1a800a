"""The Runware REST envelope on a real server: bad bodies, auth, ownership, uploads, signed URLs."""

from __future__ import annotations

import base64
import time
import uuid

import httpx
import pytest

from reelserve.api.media import UrlSigner
from reelserve_testing import (
    ServerFactory,
    ServerProcess,
    data_uri,
    make_png,
    make_video,
    poll_results,
    runware,
    upload_image,
)


def _errors(resp: httpx.Response, status: int) -> list[dict[str, object]]:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["data"] == [] or status == 200
    return list(body["errors"])


def _t2v(**extra: object) -> dict[str, object]:
    task: dict[str, object] = {"taskType": "videoInference", "taskUUID": str(uuid.uuid4()),
                               "model": "klingai:1@1", "positivePrompt": "a lighthouse at dusk",
                               "width": 720, "height": 720, "duration": 5}
    task.update(extra)
    return task


def test_bad_bodies_get_runware_errors_never_500(client: httpx.Client, server: ServerProcess) -> None:
    cases: list[tuple[bytes, str]] = [
        (b"[{", "invalidJson"),
        (b"\xff\xfe garbage", "invalidJson"),
        (b'{"taskType": "ping"}', "invalidRequestBody"),
        (b'"just a string"', "invalidRequestBody"),
        (b"[]", "missingTasks"),
    ]
    for body, code in cases:
        errors = _errors(client.post("/v1", content=body), 400)
        assert errors[0]["code"] == code
        assert {"message", "taskType", "taskUUID"} <= errors[0].keys()
    # Wrong types inside a task: per-task error with the taskUUID and taskType.
    for bad in ({"width": "wide"}, {"duration": [5]}, {"numberResults": "two"},
                {"inputs": "not-an-object"}, {"positivePrompt": 42}, {"model": None}):
        task = _t2v(**bad)
        errors = _errors(runware(client, [task]), 400)
        assert errors[0]["taskUUID"] == task["taskUUID"]
        assert errors[0]["taskType"] == "videoInference"
        assert errors[0]["code"].startswith(("invalid", "missing", "unsupported"))
    # Non-object array elements and a non-string taskType.
    errors = _errors(runware(client, [3, {"taskType": 7, "taskUUID": "u-1"}]), 400)  # type: ignore[list-item]
    assert [e["code"] for e in errors] == ["invalidTask", "invalidTaskType"]
    assert errors[1]["taskUUID"] == "u-1"
    assert client.get("/health").status_code == 200


def test_unknown_task_type_with_task_uuid(client: httpx.Client) -> None:
    errors = _errors(runware(client, [{"taskType": "imageInference", "taskUUID": "t-9"}]), 400)
    assert errors[0]["code"] == "unsupportedTaskType"
    assert (errors[0]["taskUUID"], errors[0]["taskType"]) == ("t-9", "imageInference")


def test_fifty_megabyte_body_is_refused_and_server_keeps_serving(client: httpx.Client) -> None:
    blob = b"A" * (50 * 1024 * 1024)
    body = b'[{"taskType":"imageUpload","taskUUID":"big","image":"' + blob + b'"}]'
    resp = client.post("/v1", content=body, headers={"content-type": "application/json"})
    errors = _errors(resp, 413)
    assert errors[0]["code"] == "payloadTooLarge"
    assert runware(client, [{"taskType": "ping", "ping": True}]).json() == {
        "data": [{"taskType": "ping", "pong": True}]}


def test_mixed_batch_returns_data_and_errors(client: httpx.Client) -> None:
    resp = runware(client, [{"taskType": "ping", "ping": True},
                            {"taskType": "getResponse", "taskUUID": "no-such-task"}])
    assert resp.status_code == 200
    body = resp.json()
    assert body["data"] == [{"taskType": "ping", "pong": True}]
    assert body["errors"][0]["code"] == "taskNotFound"
    assert body["errors"][0]["taskUUID"] == "no-such-task"


def test_model_search(client: httpx.Client) -> None:
    resp = runware(client, [{"taskType": "modelSearch", "taskUUID": "s-1", "search": "kling",
                             "limit": 3, "offset": 0}])
    item = resp.json()["data"][0]
    assert item["taskType"] == "modelSearch" and item["taskUUID"] == "s-1"
    assert item["totalResults"] >= 13 and len(item["results"]) == 3
    errors = _errors(runware(client, [{"taskType": "modelSearch", "taskUUID": "s-2",
                                       "limit": "many"}]), 400)
    assert errors[0]["taskUUID"] == "s-2" and errors[0]["parameter"] == "limit"


def test_uploads_and_signed_urls(client: httpx.Client, server: ServerProcess) -> None:
    png = make_png(400, 300)
    resp = runware(client, [{"taskType": "imageUpload", "taskUUID": "up-1", "image": data_uri(png)}])
    item = resp.json()["data"][0]
    assert item["taskType"] == "imageUpload" and item["taskUUID"] == "up-1"
    uuid.UUID(item["imageUUID"])
    got = httpx.get(item["imageURL"])
    assert got.status_code == 200 and got.content == png
    assert got.headers["content-type"] == "image/png"
    # Tampered signature: 404 and never the file.
    bad = item["imageURL"].replace("sig=", "sig=x")
    assert httpx.get(bad).status_code == 404
    assert httpx.get(item["imageURL"].split("?")[0]).status_code == 404
    # mediaStorage: video upload, then delete.
    video = make_video(server.data_dir / "clip.mp4", 320, 240, frames=6).read_bytes()
    resp = runware(client, [{"taskType": "mediaStorage", "taskUUID": "ms-1", "operation": "upload",
                             "media": base64.b64encode(video).decode()}])
    media = resp.json()["data"][0]
    assert media["operation"] == "upload" and httpx.get(media["mediaURL"]).content == video
    resp = runware(client, [{"taskType": "mediaStorage", "taskUUID": "ms-2", "operation": "delete",
                             "mediaUUID": media["mediaUUID"]}])
    assert resp.json()["data"][0]["mediaUUID"] == media["mediaUUID"]
    assert httpx.get(media["mediaURL"]).status_code == 404
    errors = _errors(runware(client, [{"taskType": "mediaStorage", "taskUUID": "ms-3",
                                       "operation": "delete", "mediaUUID": media["mediaUUID"]}]), 400)
    assert errors[0]["code"] == "mediaNotFound"
    errors = _errors(runware(client, [{"taskType": "imageUpload", "taskUUID": "up-2",
                                       "image": "!!not base64!!"}]), 400)
    assert errors[0]["taskUUID"] == "up-2"


def test_expired_url_is_410(server_factory: ServerFactory) -> None:
    secret = "test-secret"
    srv = server_factory(env={"REELSERVE_URL_SECRET": secret, "REELSERVE_WORKERS": "0"})
    with httpx.Client(base_url=srv.url) as http:
        image_uuid = upload_image(http, 320, 320)
        signer = UrlSigner(secret.encode(), srv.url)
        key = f"uploads/{image_uuid}"
        assert http.get(signer.url(key, "png", time.time() + 60)).status_code == 200
        assert http.get(signer.url(key, "png", time.time() - 1)).status_code == 410
        assert http.get(signer.url(key, "png", time.time() + 60).replace(secret, "")).status_code == 200
        other = UrlSigner(b"other", srv.url)
        assert http.get(other.url(key, "png", time.time() + 60)).status_code == 404


def test_api_keys_auth_and_ownership(server_factory: ServerFactory) -> None:
    srv = server_factory(env={"REELSERVE_API_KEYS": "key-a,key-b",
                              "REELSERVE_ENGINE_SELECTOR": "tiny_engine:engine_selector",
                              "REELSERVE_WORKERS": "1"})
    with httpx.Client(base_url=srv.url, timeout=60) as http:
        ping = [{"taskType": "ping", "ping": True}]
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            errors = _errors(http.post("/v1", json=ping, headers=headers), 401)
            assert errors[0]["code"] == "invalidApiKey"
        assert http.post("/v1", json=ping, headers={"Authorization": "Bearer key-a"}).status_code == 200
        # The authentication object as the first element works too.
        resp = http.post("/v1", json=[{"taskType": "authentication", "apiKey": "key-b"}, *ping])
        assert resp.json()["data"] == [{"taskType": "ping", "pong": True}]
        task = _t2v(deliveryMethod="sync")
        a = {"Authorization": "Bearer key-a"}
        b = {"Authorization": "Bearer key-b"}
        assert http.post("/v1", json=[task], headers=a).status_code == 200
        # Another key can neither see the job nor collide with its taskUUID.
        errors = _errors(http.post("/v1", json=[{"taskType": "getResponse",
                                                 "taskUUID": task["taskUUID"]}], headers=b), 400)
        assert errors[0]["code"] == "taskNotFound"
        errors = _errors(http.post("/v1", json=[{"taskType": "getTaskDetails",
                                                 "taskUUID": task["taskUUID"]}], headers=b), 400)
        assert errors[0]["code"] == "taskNotFound"
        again = {**task, "deliveryMethod": "async"}
        assert http.post("/v1", json=[again], headers=b).status_code == 200
        errors = _errors(http.post("/v1", json=[again], headers=a), 400)
        assert errors[0]["code"] == "conflictTaskUUID"
        assert errors[0]["taskUUID"] == task["taskUUID"]


@pytest.fixture
def tiny_server(server_factory: ServerFactory) -> ServerProcess:
    return server_factory(env={"REELSERVE_ENGINE_SELECTOR": "tiny_engine:engine_selector",
                               "REELSERVE_WORKERS": "1"})


def test_async_ack_get_response_once_and_task_details(tiny_server: ServerProcess) -> None:
    with httpx.Client(base_url=tiny_server.url, timeout=60) as http:
        task = _t2v(numberResults=2, seed=1234, includeCost=True, outputType="base64Data")
        resp = runware(http, [task])
        # The ACK carries taskType and taskUUID and nothing else.
        assert resp.json() == {"data": [{"taskType": "videoInference", "taskUUID": task["taskUUID"]}]}
        first = runware(http, [{"taskType": "getResponse", "taskUUID": task["taskUUID"]}]).json()
        status = first["data"][0]["status"]
        assert status in ("processing", "success")
        if status == "processing":
            assert 0 <= first["data"][0]["progress"] <= 100
        items, errors = poll_results(http, str(task["taskUUID"]), 2)
        assert not errors and len(items) == 2
        assert [i["seed"] for i in items] == [1234, 1235]
        assert all(i["cost"] == 0.1848 and i["videoBase64Data"] and "videoURL" not in i
                   for i in items)
        assert all("NSFWContent" not in i for i in items)
        assert base64.b64decode(items[0]["videoBase64Data"])[4:8] == b"ftyp"
        # Success items are delivered once.
        later = runware(http, [{"taskType": "getResponse", "taskUUID": task["taskUUID"]}]).json()
        assert later["data"] == []
        details = runware(http, [{"taskType": "getTaskDetails", "taskUUID": task["taskUUID"]}])
        item = details.json()["data"][0]
        assert item["request"] == task and item["status"] == "success"
        assert len(item["response"]["data"]) == 2


def test_sync_data_uri_and_no_cost_without_include_cost(tiny_server: ServerProcess) -> None:
    with httpx.Client(base_url=tiny_server.url, timeout=60) as http:
        task = _t2v(deliveryMethod="sync", outputType="dataURI", outputFormat="WEBM")
        items = runware(http, [task]).json()["data"]
        assert len(items) == 1
        assert items[0]["videoDataURI"].startswith("data:video/webm;base64,")
        assert "cost" not in items[0] and "status" not in items[0]
