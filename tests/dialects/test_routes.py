"""Route layout (/v1 Runware, /v1/videos/* shared by Kling and OpenAI) and cross-key isolation."""

from __future__ import annotations

import time
from typing import Any

import httpx
import jwt
import pytest

from reelserve.api.auth import owner_for_key
from reelserve_testing import ServerProcess

SECRET = "s" * 40


def kling_auth(access: str) -> dict[str, str]:
    now = int(time.time())
    tok = jwt.encode({"iss": access, "exp": now + 600, "nbf": now - 5}, SECRET, algorithm="HS256")
    return {"Authorization": f"Bearer {tok}"}


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Any:
    # No workers: these tests only look at routing and visibility of queued jobs.
    proc = ServerProcess(tmp_path_factory.mktemp("routes"), {
        "REELSERVE_WORKERS": "0", "REELSERVE_API_KEYS": "key-a,key-b",
        "REELSERVE_KLING_KEYS": f"key-a:{SECRET},ak-c:{SECRET}"}).start()
    yield proc
    proc.stop()


A = {"Authorization": "Bearer key-a"}
B = {"Authorization": "Bearer key-b"}


def test_routes_do_not_shadow(keyed: ServerProcess) -> None:
    url = keyed.url
    # Kling's literal kinds win over the OpenAI {id}, whatever the mount order.
    listed = httpx.get(f"{url}/v1/videos/text2video", headers=kling_auth("ak-c"))
    assert listed.status_code == 200 and listed.json()["code"] == 0
    assert isinstance(listed.json()["data"], list)
    missing = httpx.get(f"{url}/v1/videos/image2video/content", headers=kling_auth("ak-c"))
    assert missing.status_code == 404 and missing.json()["code"] == 1203
    # Every other /v1/videos/{id} is OpenAI-style.
    resp = httpx.get(f"{url}/v1/videos/video_nope", headers=A)
    assert resp.status_code == 404 and "error" in resp.json()
    resp = httpx.get(f"{url}/v1/videos/video_nope/content", headers=A)
    assert resp.status_code == 404 and "error" in resp.json()
    assert httpx.get(f"{url}/v1/videos", headers=A).json()["object"] == "list"
    # /v1 stays Runware's task array endpoint.
    resp = httpx.post(f"{url}/v1", headers=A, json=[{"taskType": "ping", "ping": True}])
    assert resp.status_code == 200 and resp.json()["data"][0]["pong"] is True
    # Unknown 302 paths are not routed at all.
    assert httpx.post(f"{url}/klingai/m2v_nothing", headers=A).status_code in (404, 405)


def test_openapi_lists_each_route_once(keyed: ServerProcess) -> None:
    paths = httpx.get(f"{keyed.url}/openapi.json").json()["paths"]
    for path in ("/v1/videos", "/v1/videos/{video_id}", "/v1/videos/{video_id}/content",
                 "/v1/videos/text2video", "/v1/videos/text2video/{task_id}",
                 "/v1/videos/image2video", "/v1/videos/image2video/{task_id}",
                 "/klingai/task/{task_id}/fetch", "/klingai/m2v_img2video_hq"):
        assert path in paths, path


def test_cross_key_isolation(keyed: ServerProcess) -> None:
    url = keyed.url
    video = httpx.post(f"{url}/v1/videos", headers=A, json={"prompt": "mine only"}).json()
    m2v = httpx.post(f"{url}/klingai/m2v_txt2video_hq_5s", headers=A,
                     data={"prompt": "mine only"}).json()["data"]["task"]["id"]
    kling = httpx.post(f"{url}/v1/videos/text2video", headers=kling_auth("key-a"),
                       json={"prompt": "mine only"}).json()["data"]["task_id"]

    # Key B sees none of key A's jobs, in any dialect.
    for job_id in (video["id"], m2v, kling):
        assert httpx.get(f"{url}/v1/videos/{job_id}", headers=B).status_code == 404
        assert httpx.delete(f"{url}/v1/videos/{job_id}", headers=B).status_code == 404
        assert httpx.get(f"{url}/klingai/task/{job_id}/fetch", headers=B).status_code == 404
        assert httpx.get(f"{url}/v1/videos/text2video/{job_id}",
                         headers=kling_auth("ak-c")).json()["code"] == 1203
    assert video["id"] not in [v["id"] for v in
                               httpx.get(f"{url}/v1/videos", headers=B).json()["data"]]
    assert httpx.get(f"{url}/v1/videos/text2video", headers=kling_auth("ak-c")).json()[
        "data"] == []

    # Key A sees its jobs across dialects: the Kling access key "key-a" is the same owner
    # as the API key "key-a".
    assert owner_for_key("key-a") != owner_for_key("key-b")
    for job_id in (video["id"], m2v, kling):
        assert httpx.get(f"{url}/v1/videos/{job_id}", headers=A).status_code == 200
        fetched = httpx.get(f"{url}/klingai/task/{job_id}/fetch", headers=A).json()
        assert fetched["result"] == 1 and fetched["data"]["status"] == 5
    assert httpx.get(f"{url}/v1/videos/text2video/{kling}",
                     headers=kling_auth("key-a")).json()["data"]["task_status"] == "submitted"
    # A wrong API key is refused in each dialect's own envelope.
    bad = {"Authorization": "Bearer nope"}
    assert httpx.get(f"{url}/v1/videos", headers=bad).json()["error"]["type"] == \
        "authentication_error"
    assert httpx.get(f"{url}/klingai/task/{m2v}/fetch", headers=bad).json()["result"] == 0
