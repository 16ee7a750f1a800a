"""OpenAI-style /v1/videos through a real server: create, poll, content, list, delete."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
from tests.dialects.helpers import poll

from reelserve.media.probe import probe
from reelserve_testing import ServerProcess, data_uri, make_png


def test_create_poll_download(client: httpx.Client, tmp_path: Path) -> None:
    resp = client.post("/v1/videos", json={"model": "klingai:1@1", "prompt": "a windmill",
                                           "seconds": "5", "size": "720x720"})
    assert resp.status_code == 200, resp.text
    video = resp.json()
    assert video["object"] == "video" and video["id"].startswith("video_")
    assert video["status"] in ("queued", "in_progress")
    assert (video["seconds"], video["size"], video["model"]) == ("5", "720x720", "klingai:1@1")
    seen: set[str] = set()

    def get() -> dict[str, object]:
        body = client.get(f"/v1/videos/{video['id']}").json()
        seen.add(str(body["status"]))
        assert 0 <= int(body["progress"]) <= 100  # type: ignore[call-overload]
        return body  # type: ignore[no-any-return]

    done = poll(get, lambda v: v["status"] in ("completed", "failed"), interval=0.1)
    assert done["status"] == "completed" and done["progress"] == 100, done
    assert seen <= {"queued", "in_progress", "completed"}
    content = client.get(f"/v1/videos/{video['id']}/content")
    assert content.status_code == 200 and content.headers["content-type"] == "video/mp4"
    (tmp_path / "v.mp4").write_bytes(content.content)
    facts = probe(tmp_path / "v.mp4")
    assert (facts.width, facts.height, facts.fps) == (720, 720, 30)
    thumb = client.get(f"/v1/videos/{video['id']}/content", params={"variant": "thumbnail"})
    assert thumb.status_code == 200 and thumb.content[:3] == b"\xff\xd8\xff"

    listed = client.get("/v1/videos", params={"limit": 100}).json()
    assert listed["object"] == "list" and video["id"] in [v["id"] for v in listed["data"]]

    deleted = client.delete(f"/v1/videos/{video['id']}")
    assert deleted.json() == {"id": video["id"], "object": "video.deleted", "deleted": True}
    assert client.get(f"/v1/videos/{video['id']}").status_code == 404
    assert client.get(f"/v1/videos/{video['id']}/content").status_code == 404


def test_multipart_with_input_reference(client: httpx.Client) -> None:
    resp = client.post("/v1/videos", data={"prompt": "the box slides", "seconds": "5",
                                           "size": "1280x720"},
                       files={"input_reference": ("f.png", make_png(640, 360), "image/png")})
    assert resp.status_code == 200, resp.text
    done = poll(lambda: client.get(f"/v1/videos/{resp.json()['id']}").json(),
                lambda v: v["status"] in ("completed", "failed"))
    assert done["status"] == "completed", done
    # JSON with the reference as a data URI in {"image_url": ...} works as well.
    resp = client.post("/v1/videos", json={"prompt": "x y", "size": "720x720",
                                           "input_reference": {"image_url":
                                                               data_uri(make_png(400, 400))}})
    assert resp.status_code == 200, resp.text


def test_errors_in_openai_shape(client: httpx.Client) -> None:
    resp = client.post("/v1/videos", json={"prompt": "x y", "seconds": "7"})
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert error["param"] == "seconds" and "seconds" in error["message"]
    assert error["type"] == "invalid_request_error"
    resp = client.post("/v1/videos", json={"prompt": "x y", "size": "640x480"})
    assert resp.json()["error"]["param"] == "size"
    resp = client.post("/v1/videos", json={"prompt": "x y", "model": "sora-2"})
    assert resp.status_code == 404 and resp.json()["error"]["param"] == "model"
    resp = client.get("/v1/videos/video_doesnotexist")
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "videoNotFound"
    assert client.get("/v1/videos", params={"limit": 0}).status_code == 400


def test_delete_mid_run_cancels(server_factory: object, tmp_path: Path) -> None:
    srv: ServerProcess = server_factory(env={"REELSERVE_WORKERS": "1"})  # type: ignore[operator]
    with httpx.Client(base_url=srv.url, timeout=60) as http:
        # A long render (10 s of 1080p on a Pro model) occupies the only worker.
        long = http.post("/v1/videos", json={"model": "klingai:5@3", "prompt": "slow sunset",
                                             "seconds": "10", "size": "1920x1080"}).json()
        poll(lambda: http.get(f"/v1/videos/{long['id']}").json(),
             lambda v: v["status"] == "in_progress", interval=0.05)
        started = time.monotonic()
        resp = http.delete(f"/v1/videos/{long['id']}")
        assert resp.status_code == 200 and resp.json()["deleted"] is True
        assert http.get(f"/v1/videos/{long['id']}").status_code == 404
        # The worker stopped the render: a short job right behind it finishes promptly.
        short = http.post("/v1/videos", json={"prompt": "quick", "size": "720x720"}).json()
        done = poll(lambda: http.get(f"/v1/videos/{short['id']}").json(),
                    lambda v: v["status"] in ("completed", "failed"), timeout=60)
        assert done["status"] == "completed"
        assert time.monotonic() - started < 25
    # No output of the cancelled render was kept.
    outputs = [p for p in (srv.data_dir / "artifacts" / "outputs").iterdir()
               if p.suffix != ".json"]
    assert len(outputs) == 1, outputs


def test_rate_limits_in_openai_shape(server_factory: object) -> None:
    srv: ServerProcess = server_factory(env={  # type: ignore[operator]
        "REELSERVE_API_KEYS": "key-a,key-b",
        "REELSERVE_WORKERS": "0",
        "REELSERVE_RATE_SUBMITS_PER_MINUTE": "1",
    })

    def create(key: str, **kw: object) -> httpx.Response:
        return httpx.post(f"{srv.url}/v1/videos", headers={"Authorization": f"Bearer {key}"},
                          timeout=60, **kw)  # type: ignore[arg-type]

    form = {"prompt": "x y", "size": "720x720"}
    reference = {"input_reference": ("r.png", make_png(400, 400), "image/png")}
    assert create("key-a", data=form, files=reference).status_code == 200
    uploads = srv.data_dir / "artifacts" / "uploads"
    stored = sorted(uploads.iterdir())
    assert stored  # the accepted submit kept its input_reference
    resp = create("key-a", data=form, files=reference)
    assert resp.status_code == 429, resp.text
    error = resp.json()["error"]
    assert (error["type"], error["code"], error["param"]) == (
        "rate_limit_error", "rateLimitExceeded", None)
    assert "per minute" in error["message"]
    # Refused before the upload was read: no input_reference was stored.
    assert sorted(uploads.iterdir()) == stored
    assert create("key-b", json={"prompt": "x y", "size": "720x720"}).status_code == 200
