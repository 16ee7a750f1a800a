"""The 302-style API through a real server: real multipart uploads, fetch until 99, probe."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.dialects.helpers import download_and_probe, poll

from reelserve_testing import ServerProcess, data_uri, make_jpeg, make_png

# path -> (expected model size for the aspect ratio sent, duration)
CASES: list[tuple[str, dict[str, str], bool, tuple[int, int], float]] = [
    ("m2v_15_img2video", {"aspect_ratio": "16:9", "camera_type": "zoom", "camera_value": "-5"},
     True, (1280, 720), 5.0),
    ("m2v_15_img2video_10s", {"aspect_ratio": "1:1", "camera_type": "down_back",
                              "camera_value": "7"}, True, (720, 720), 10.0),
    ("m2v_img2video_hq", {"aspect_ratio": "1:1", "camera_type": "pan", "camera_value": "3"},
     True, (1080, 1080), 5.0),
    ("m2v_img2video_hq_10s", {"aspect_ratio": "9:16", "camera_type": "",
                              "camera_value": "0"}, True, (1080, 1920), 10.0),
    ("m2v_txt2video_hq_5s", {"aspect_ratio": "9:16", "camera_type": "roll",
                             "camera_value": "2"}, False, (720, 1280), 5.0),
    ("m2v_txt2video_hq_10s", {"aspect_ratio": "1:1"}, False, (720, 720), 10.0),
]


def _fetch(client: httpx.Client, task_id: str) -> dict[str, Any]:
    resp = client.get(f"/klingai/task/{task_id}/fetch", params={"geo": "global"})
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    assert body["result"] == 1 and body["status"] == 200 and body["message"] == ""
    return body["data"]


def _submit(client: httpx.Client, path: str, fields: dict[str, str],
            files: dict[str, Any] | None = None) -> httpx.Response:
    return client.post(f"/klingai/{path}", data=fields, files=files)


def test_every_path_renders_and_probes(client: httpx.Client, tmp_path: Path) -> None:
    submitted: list[tuple[str, str, tuple[int, int], float]] = []
    for path, extra, with_image, size, duration in CASES:
        fields = {"prompt": f"a lighthouse at dusk ({path})", "negative_prompt": "blurry",
                  "cfg": "0.5", "enable_audio": "false", **extra}
        files = {"input_image": ("first.png", make_png(640, 400), "image/png")} if with_image \
            else None
        resp = _submit(client, path, fields, files)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["result"] == 1
        task = body["data"]["task"]
        assert task["id"].startswith("kling_") and len(task["id"]) == len("kling_") + 12
        int(task["id"][6:], 16)
        assert task["type"] == path
        assert body["data"]["status"] in (5, 10, 99)
        submitted.append((task["id"], path, size, duration))
    # The HQ path with a tail image (first + last frame -> klingai:5@2), a JPEG this time.
    resp = _submit(client, "m2v_img2video_hq", {"prompt": "morph", "aspect_ratio": "1:1"},
                   {"input_image": ("a.jpg", make_jpeg(640, 640, 1), "image/jpeg"),
                    "tail_image": ("b.png", make_png(640, 640, 2), "image/png")})
    assert resp.status_code == 200, resp.text
    submitted.append((resp.json()["data"]["task"]["id"], "tail", (1080, 1080), 5.0))

    for task_id, path, (width, height), duration in submitted:
        data = poll(lambda t=task_id: _fetch(client, t), lambda d: d["status"] in (99, 50))
        assert data["status"] == 99, data
        assert data["task"]["status"] == 99 and data["task"]["id"] == task_id
        assert data["task"]["updateTime"] >= data["task"]["createTime"]
        (work,) = data["works"]
        assert work["status"] == 99 and work["contentType"] == "video"
        res = work["resource"]
        assert (res["width"], res["height"], res["duration"]) == (width, height,
                                                                   int(duration * 1000))
        facts = download_and_probe(res["resource"], tmp_path / f"{task_id}.mp4")
        assert (facts.width, facts.height) == (width, height), path
        assert facts.video_codec == "h264"
        assert facts.duration == pytest.approx(duration, abs=0.1)
        # The cover is the first frame as a JPEG of the video's size.
        cover = httpx.get(work["cover"]["resource"], timeout=30)
        assert cover.status_code == 200 and cover.content[:3] == b"\xff\xd8\xff"
        from PIL import Image

        with Image.open(io.BytesIO(cover.content)) as img:
            assert img.format == "JPEG" and img.size == (width, height)


def _refused(resp: httpx.Response, field: str, status: int = 400) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body: dict[str, Any] = resp.json()
    assert body["result"] != 1 and body["data"] is None
    assert body["status"] == status
    assert body["parameter"] == field
    assert field in body["message"], body["message"]
    return body


def test_bad_form_values_get_the_envelope(client: httpx.Client) -> None:
    image = {"input_image": ("a.png", make_png(400, 400), "image/png")}
    body = _refused(_submit(client, "m2v_15_img2video", {"cfg": "2"}, image), "cfg")
    assert "2" in body["message"] and "1" in body["message"]
    body = _refused(_submit(client, "m2v_15_img2video",
                            {"camera_type": "zoom", "camera_value": "11"}, image), "camera_value")
    assert "11" in body["message"] and "10" in body["message"]
    _refused(_submit(client, "m2v_15_img2video", {"cfg": "lots"}, image), "cfg")
    _refused(_submit(client, "m2v_15_img2video", {"aspect_ratio": "4:3"}, image), "aspect_ratio")
    _refused(_submit(client, "m2v_15_img2video", {"camera_type": "spin"}, image), "camera_type")
    _refused(_submit(client, "m2v_15_img2video", {"camera_type": "tilt"}, image), "camera_value")
    _refused(_submit(client, "m2v_15_img2video", {"enable_audio": "maybe"}, image),
             "enable_audio")
    _refused(_submit(client, "m2v_15_img2video", {"seed": "3"}, image), "seed")


def test_image_rules(client: httpx.Client) -> None:
    from PIL import Image

    tiny = io.BytesIO()
    Image.new("RGB", (9, 9), (255, 0, 0)).save(tiny, format="PNG")
    body = _refused(_submit(client, "m2v_15_img2video", {},
                            {"input_image": ("tiny.png", tiny.getvalue(), "image/png")}),
                    "input_image")
    assert "9x9" in body["message"] and "300" in body["message"]

    gif = io.BytesIO()
    Image.new("RGB", (400, 400), (0, 255, 0)).save(gif, format="GIF")
    body = _refused(_submit(client, "m2v_15_img2video", {},
                            {"input_image": ("a.gif", gif.getvalue(), "image/gif")}),
                    "input_image")
    assert "GIF" in body["message"] and "JPG or PNG" in body["message"]

    _refused(_submit(client, "m2v_15_img2video", {},
                     {"input_image": ("x.png", b"not an image", "image/png")}), "input_image")
    big = b"\x89PNG\r\n\x1a\n" + b"\0" * (10 * 1024 * 1024 + 1)
    _refused(_submit(client, "m2v_15_img2video", {},
                     {"input_image": ("big.png", big, "image/png")}), "input_image", 413)
    # A tail image on the same small-image rules, and only on the HQ paths.
    _refused(_submit(client, "m2v_img2video_hq", {},
                     {"input_image": ("a.png", make_png(400, 400), "image/png"),
                      "tail_image": ("t.png", tiny.getvalue(), "image/png")}), "tail_image")
    _refused(_submit(client, "m2v_15_img2video", {},
                     {"input_image": ("a.png", make_png(400, 400), "image/png"),
                      "tail_image": ("t.png", make_png(400, 400), "image/png")}), "tail_image")
    # Image paths need input_image; text paths take none and need a prompt.
    _refused(_submit(client, "m2v_15_img2video", {"prompt": "x y"}), "input_image")
    _refused(_submit(client, "m2v_txt2video_hq_5s", {"prompt": "a b"},
                     {"input_image": ("a.png", make_png(400, 400), "image/png")}), "input_image")
    _refused(_submit(client, "m2v_txt2video_hq_5s", {"negative_prompt": "dark"}), "prompt")


def test_json_body_with_data_uri_and_failed_task(client: httpx.Client) -> None:
    # JSON with the image as a data URI (URLs go through the same netguard path).
    resp = client.post("/klingai/m2v_15_img2video",
                       json={"input_image": data_uri(make_png(480, 480)), "prompt": "waves",
                             "aspect_ratio": "1:1", "enable_audio": True})
    # The preview engine cannot make audio: refused in the submit answer (issue 12; it used to
    # fail when the task ran), with a message naming the 302 field.
    data = _refused(resp, "enable_audio")
    assert data["code"] == "unsupportedEnableAudio"  # the 302 name of unsupportedSound
    assert data["parameter"] == "enable_audio"
    assert "enable_audio" in data["message"]


def test_unknown_task_and_wrong_content_type(client: httpx.Client) -> None:
    resp = client.get("/klingai/task/kling_000000000000/fetch")
    assert resp.status_code == 404 and resp.json()["result"] == 0
    resp = client.post("/klingai/m2v_15_img2video", content=b"x",
                       headers={"content-type": "text/plain"})
    assert resp.status_code == 400 and resp.json()["parameter"] == "Content-Type"


def test_api_keys_are_required_when_configured(server_factory: Any) -> None:
    srv: ServerProcess = server_factory(env={"REELSERVE_API_KEYS": "k1", "REELSERVE_WORKERS": "0"})
    resp = httpx.post(f"{srv.url}/klingai/m2v_txt2video_hq_5s", data={"prompt": "a b"})
    assert resp.status_code == 401 and resp.json()["result"] == 0
    resp = httpx.post(f"{srv.url}/klingai/m2v_txt2video_hq_5s", data={"prompt": "a b"},
                      headers={"Authorization": "Bearer k1"})
    assert resp.status_code == 200 and resp.json()["data"]["status"] == 5


def test_rate_limits_in_the_302_envelope(server_factory: Any) -> None:
    srv: ServerProcess = server_factory(env={
        "REELSERVE_API_KEYS": "key-a,key-b",
        "REELSERVE_WORKERS": "0",  # nothing runs: tasks stay in flight
        "REELSERVE_RATE_MAX_IN_FLIGHT": "1",
    })

    def post(key: str, path: str, files: dict[str, Any] | None = None) -> httpx.Response:
        return httpx.post(f"{srv.url}/klingai/{path}", data={"prompt": "a b"}, files=files,
                          headers={"Authorization": f"Bearer {key}"}, timeout=60)

    image = {"input_image": ("a.png", make_png(400, 400), "image/png")}
    assert post("key-a", "m2v_15_img2video", image).json()["result"] == 1
    uploads = srv.data_dir / "artifacts" / "uploads"
    stored = sorted(uploads.iterdir())
    assert stored  # the accepted submit kept its image
    resp = post("key-a", "m2v_15_img2video", image)
    assert resp.status_code == 429, resp.text
    body = resp.json()
    assert (body["result"], body["status"], body["code"], body["data"]) == (
        0, 429, "rateLimitExceeded", None)
    assert "in flight" in body["message"] and "parameter" not in body
    # Refused before the image was stored; other keys are not affected.
    assert sorted(uploads.iterdir()) == stored
    assert post("key-b", "m2v_txt2video_hq_5s").json()["result"] == 1
