"""Kling's own API through a real server: JWT auth, create/query/list, external ids, callbacks."""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from tests.dialects.helpers import download_and_probe, poll, receiver

from reelserve.delivery import webhook
from reelserve_testing import ServerProcess, make_png

S1 = "sk-one-" + "1" * 32
S2 = "sk-two-" + "2" * 32
KEYS = f"ak-one:{S1},ak-two:{S2}"


def token(access: str = "ak-one", secret: str = S1, *, exp: float | None = 1800,
          nbf: float | None = -5) -> str:
    now = time.time()
    claims: dict[str, Any] = {"iss": access}
    if exp is not None:
        claims["exp"] = int(now + exp)
    if nbf is not None:
        claims["nbf"] = int(now + nbf)
    return jwt.encode(claims, secret, algorithm="HS256", headers={"typ": "JWT"})


def auth(**kw: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(**kw)}"}


@pytest.fixture(scope="module")
def kling(tmp_path_factory: pytest.TempPathFactory) -> Any:
    proc = ServerProcess(tmp_path_factory.mktemp("kling"), {
        "REELSERVE_WORKERS": "2", "REELSERVE_KLING_KEYS": KEYS,
        "REELSERVE_OUTBOUND_ALLOW": "127.0.0.1"}).start()
    yield proc
    proc.stop()


def _ok(resp: httpx.Response) -> Any:
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["code"] == 0 and body["message"] == "SUCCEED" and body["request_id"]
    return body["data"]


def _err(resp: httpx.Response, code: int, status: int) -> str:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["code"] == code and body["data"] is None and body["request_id"]
    return str(body["message"])


def test_jwt_checks(kling: ServerProcess) -> None:
    url = f"{kling.url}/v1/videos/text2video"
    body = {"prompt": "a red kite over the sea", "aspect_ratio": "1:1"}
    assert _ok(httpx.post(url, json=body, headers=auth()))["task_status"] in (
        "submitted", "processing")
    _err(httpx.post(url, json=body), 1001, 401)
    assert "expired" in _err(httpx.post(url, json=body, headers=auth(exp=-60)), 1004, 401)
    assert "not yet valid" in _err(httpx.post(url, json=body, headers=auth(nbf=120)), 1003, 401)
    _err(httpx.post(url, json=body, headers=auth(secret="wrong-" + "0" * 32)), 1002, 401)
    _err(httpx.post(url, json=body, headers=auth(access="nobody", secret=S1)), 1002, 401)
    _err(httpx.post(url, json=body, headers=auth(exp=None)), 1002, 401)  # exp is required
    _err(httpx.post(url, json=body, headers={"Authorization": "Bearer not.a.jwt"}), 1002, 401)
    _err(httpx.get(f"{url}?pageNum=1", headers=auth(exp=-60)), 1004, 401)


def test_create_query_list_and_external_id(kling: ServerProcess, tmp_path: Path) -> None:
    base = f"{kling.url}/v1/videos"
    ext = f"ext-{time.time_ns()}"
    created = _ok(httpx.post(f"{base}/text2video", headers=auth(), json={
        "model_name": "kling-v1", "mode": "std", "prompt": "a paper boat", "negative_prompt":
        "rain", "cfg_scale": 0.4, "aspect_ratio": "9:16", "duration": "5",
        "camera_control": {"type": "simple", "config": {"horizontal": 0, "zoom": 4}},
        "external_task_id": ext}))
    task_id = created["task_id"]
    assert created["task_info"] == {"external_task_id": ext}
    assert created["created_at"] > 1_000_000_000_000  # milliseconds

    done = poll(lambda: _ok(httpx.get(f"{base}/text2video/{task_id}", headers=auth())),
                lambda d: d["task_status"] in ("succeed", "failed"))
    assert done["task_status"] == "succeed", done
    (video,) = done["task_result"]["videos"]
    assert video["duration"] == "5"
    facts = download_and_probe(video["url"], tmp_path / "t.mp4")
    assert (facts.width, facts.height) == (720, 1280) and facts.fps == 30

    # external_task_id works as the path id, and is unique per access key.
    by_ext = _ok(httpx.get(f"{base}/text2video/{ext}", headers=auth()))
    assert by_ext["task_id"] == task_id
    msg = _err(httpx.post(f"{base}/text2video", headers=auth(),
                          json={"prompt": "again", "external_task_id": ext}), 1201, 400)
    assert "external_task_id" in msg
    # ... but another key may use the same external id, and cannot see the first task.
    other = _ok(httpx.post(f"{base}/text2video", headers=auth(access="ak-two", secret=S2),
                           json={"prompt": "mine", "external_task_id": ext}))
    assert other["task_id"] != task_id
    _err(httpx.get(f"{base}/text2video/{task_id}",
                   headers=auth(access="ak-two", secret=S2)), 1203, 404)
    # The kind is part of the address.
    _err(httpx.get(f"{base}/image2video/{task_id}", headers=auth()), 1203, 404)

    # image2video with a first and last frame (raw base64, as Kling sends it) on kling-v2-1 pro.
    img = base64.b64encode(make_png(640, 640, 1)).decode()
    tail = base64.b64encode(make_png(640, 640, 2)).decode()
    i2v = _ok(httpx.post(f"{base}/image2video", headers=auth(), json={
        "model_name": "kling-v2-1", "mode": "pro", "image": img, "image_tail": tail,
        "prompt": "morph", "duration": "5", "aspect_ratio": "1:1"}))
    listed = _ok(httpx.get(f"{base}/text2video", params={"pageNum": 1, "pageSize": 50},
                           headers=auth()))
    ids = [t["task_id"] for t in listed]
    assert task_id in ids and i2v["task_id"] not in ids and other["task_id"] not in ids
    page = _ok(httpx.get(f"{base}/text2video", params={"pageNum": 1, "pageSize": 1},
                         headers=auth()))
    assert len(page) == 1
    assert _ok(httpx.get(f"{base}/image2video", headers=auth()))[0]["task_id"] == i2v["task_id"]
    _err(httpx.get(f"{base}/text2video", params={"pageSize": 0}, headers=auth()), 1201, 400)
    done = poll(lambda: _ok(httpx.get(f"{base}/image2video/{i2v['task_id']}", headers=auth())),
                lambda d: d["task_status"] in ("succeed", "failed"))
    assert done["task_status"] == "succeed", done
    facts = download_and_probe(done["task_result"]["videos"][0]["url"], tmp_path / "i.mp4")
    assert (facts.width, facts.height) == (1080, 1080) and facts.fps == 24


def test_bad_requests(kling: ServerProcess) -> None:
    base = f"{kling.url}/v1/videos"
    msg = _err(httpx.post(f"{base}/text2video", headers=auth(),
                          json={"prompt": "x y", "model_name": "kling-v9"}), 1201, 400)
    assert "model_name" in msg and "kling-v1" in msg
    msg = _err(httpx.post(f"{base}/text2video", headers=auth(),
                          json={"prompt": "x y", "duration": "7"}), 1201, 400)
    assert "duration" in msg and "5" in msg
    msg = _err(httpx.post(f"{base}/text2video", headers=auth(),
                          json={"prompt": "x y", "cfg_scale": 3}), 1201, 400)
    assert "cfg_scale" in msg
    msg = _err(httpx.post(f"{base}/text2video", headers=auth(), json={
        "prompt": "x y", "camera_control": {"type": "simple", "config": {"zoom": 12}}}), 1201, 400)
    assert "camera_control" in msg
    # kling-v1-5 has no text-to-video in the catalog.
    _err(httpx.post(f"{base}/text2video", headers=auth(),
                    json={"prompt": "x y", "model_name": "kling-v1-5"}), 1201, 400)
    msg = _err(httpx.post(f"{base}/image2video", headers=auth(), json={"prompt": "x y"}),
               1201, 400)
    assert "image" in msg
    _err(httpx.post(f"{base}/text2video", headers=auth(), json={"prompt": "x y",
                                                                "static_mask": "m"}), 1201, 400)
    msg = _err(httpx.post(f"{base}/text2video", headers=auth(), json={
        "prompt": "x y", "callback_url": "http://10.0.0.1/hook"}), 1201, 400)
    assert "callback_url" in msg
    _err(httpx.post(f"{base}/text2video", headers=auth(), content=b"{nope"), 1201, 400)


def test_callback_on_each_status_change(kling: ServerProcess) -> None:
    with receiver() as rec:
        created = _ok(httpx.post(f"{kling.url}/v1/videos/text2video", headers=auth(), json={
            "prompt": "a lantern", "aspect_ratio": "1:1", "callback_url": rec.url,
            "external_task_id": f"cb-{time.time_ns()}"}))
        rec.wait_for(lambda b: any(x["task_id"] == created["task_id"]
                                   and x["task_status"] in ("succeed", "failed") for x in b))
        time.sleep(0.5)  # nothing more arrives
        with rec.lock:
            pairs = list(zip(rec.bodies, rec.headers, strict=True))
    mine = [(b, h) for b, h in pairs if b["task_id"] == created["task_id"]]
    # Each status once, in the order the task went through them (the delivery outbox).
    assert [b["task_status"] for b, _ in mine] == ["submitted", "processing", "succeed"]
    submitted, processing, succeed = (b for b, _ in mine)
    assert len({h[webhook.DELIVERY_HEADER] for _, h in mine}) == 3
    # Each body is the task as it was at that change: no result before it exists.
    assert "task_result" not in submitted and "task_result" not in processing
    assert submitted["updated_at"] <= processing["updated_at"] <= succeed["updated_at"]
    assert submitted["created_at"] == created["created_at"]
    for body in (submitted, processing, succeed):
        assert body["task_info"]["external_task_id"] == created["task_info"]["external_task_id"]
    assert succeed["task_result"]["videos"][0]["url"].startswith(kling.url)
    final = _ok(httpx.get(f"{kling.url}/v1/videos/text2video/{created['task_id']}",
                          headers=auth()))
    assert final["task_result"] == succeed["task_result"]


def test_rate_limits_in_the_kling_envelope(server_factory: Any) -> None:
    srv = server_factory(env={
        "REELSERVE_WORKERS": "0",  # nothing runs: tasks stay in flight
        "REELSERVE_KLING_KEYS": KEYS,
        "REELSERVE_RATE_MAX_IN_FLIGHT": "2",
        "REELSERVE_RATE_SUBMITS_PER_MINUTE": "3",
    })
    url = f"{srv.url}/v1/videos/text2video"
    body = {"prompt": "a slow river", "aspect_ratio": "1:1"}
    _ok(httpx.post(url, headers=auth(), json=body))
    _ok(httpx.post(url, headers=auth(), json=body))
    # In flight: Kling's "parallel tasks over the limit".
    msg = _err(httpx.post(url, headers=auth(), json=body), 1303, 429)
    assert "in flight" in msg and "2" in msg and "taskType" not in msg
    # Another access key is not affected; a duplicate external_task_id still counts per minute.
    two = auth(access="ak-two", secret=S2)
    _ok(httpx.post(url, headers=two, json={**body, "external_task_id": "dup"}))
    for _ in range(2):
        _err(httpx.post(url, headers=two, json={**body, "external_task_id": "dup"}), 1201, 400)
    # Per minute: Kling's "requests too fast".
    msg = _err(httpx.post(url, headers=two, json=body), 1302, 429)
    assert "per minute" in msg and "taskType" not in msg
