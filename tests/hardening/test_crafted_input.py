"""Crafted input never makes a 500 (issue 14, item 10).

Each request below used to crash a handler: a lone UTF-16 surrogate (``"\\ud800"``) in a JSON
string, deeply nested JSON, a PNG whose header declares 30000x30000, Unicode digits such as
``²`` that pass ``str.isdigit()`` but not ``int()``, a 5000-digit ``exp``. A 500 also drops the
keep-alive connection; a clear 4xx keeps it. Every case runs against one real server.
"""

from __future__ import annotations

import json
import struct
import uuid
import zlib
from collections.abc import Iterator

import httpx
import pytest

from reelserve_testing import ServerProcess

SURROGATE = "\\ud800"  # a JSON escape of a lone high surrogate: valid JSON, invalid Unicode


@pytest.fixture(scope="module")
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60.0) as client:
        yield client


def _raw_json(http: httpx.Client, path: str, text: str) -> httpx.Response:
    return http.post(path, content=text.encode(), headers={"Content-Type": "application/json"})


def _assert_clean_refusal(resp: httpx.Response) -> None:
    assert 400 <= resp.status_code < 500, (resp.status_code, resp.text[:500])
    assert resp.headers.get("connection", "").lower() != "close", resp.headers
    json.loads(resp.text)  # every dialect answers JSON


def _video_task(**overrides: str) -> str:
    task = {"taskType": "videoInference", "taskUUID": str(uuid.uuid4()), "model": "klingai:1@1",
            "positivePrompt": "a boat", "width": 1280, "height": 720, "duration": 5}
    body = json.dumps([task])
    for key, raw in overrides.items():
        # Splice a raw JSON literal (with the escape) in place of the field's value.
        body = body.replace(json.dumps(key) + ": " + json.dumps(task[key]),
                            json.dumps(key) + ": " + raw)
    return body


@pytest.mark.parametrize("field", ["positivePrompt", "taskUUID", "taskType"])
def test_lone_surrogate_in_runware_fields(http: httpx.Client, field: str) -> None:
    resp = _raw_json(http, "/v1", _video_task(**{field: f'"x{SURROGATE}y"'}))
    assert resp.status_code < 500, resp.text
    body = resp.json()
    assert body.get("errors"), body


def test_lone_surrogate_in_webhook_url(http: httpx.Client) -> None:
    body = json.loads(_video_task())
    body[0]["webhookURL"] = "https://example.com/PLACEHOLDER"
    text = json.dumps(body).replace("PLACEHOLDER", SURROGATE)
    resp = _raw_json(http, "/v1", text)
    assert resp.status_code < 500, resp.text
    assert resp.json().get("errors")


@pytest.mark.parametrize(("path", "template"), [
    ("/v1/videos", '{"model": "klingai:1@1", "prompt": "a%sb", "seconds": "5"}'),
    ("/v1/videos/text2video", '{"model_name": "kling-v1", "prompt": "a%sb", "duration": "5"}'),
    ("/v1/videos/text2video",
     '{"model_name": "kling-v1", "prompt": "ok", "external_task_id": "o%s"}'),
])
def test_lone_surrogate_in_other_dialects(http: httpx.Client, path: str, template: str) -> None:
    _assert_clean_refusal(_raw_json(http, path, template % SURROGATE))


@pytest.mark.parametrize("path", ["/v1", "/v1/videos", "/v1/videos/text2video",
                                  "/v1/videos/image2video"])
def test_deeply_nested_json(http: httpx.Client, path: str) -> None:
    depth = 100_000
    _assert_clean_refusal(_raw_json(http, path, "[" * depth + "]" * depth))
    _assert_clean_refusal(_raw_json(http, path, '{"a":' * depth + "1" + "}" * depth))


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` in IHDR and carries one tiny IDAT."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))


def test_m2v_upload_declaring_huge_png(http: httpx.Client) -> None:
    resp = http.post("/klingai/m2v_15_img2video",
                     files={"input_image": ("big.png", _png_header(30000, 30000), "image/png")},
                     data={"prompt": "a cat", "aspect_ratio": "16:9"})
    _assert_clean_refusal(resp)


@pytest.mark.parametrize("path", [
    "/v1/videos?limit=%C2%B2",
    "/v1/videos/text2video?pageNum=%C2%B2&pageSize=10",
    "/v1/videos/text2video?pageNum=1&pageSize=%C2%B2",
])
def test_unicode_digits_in_query(http: httpx.Client, path: str) -> None:
    _assert_clean_refusal(http.get(path))


def test_unicode_digits_in_size(http: httpx.Client) -> None:
    _assert_clean_refusal(http.post("/v1/videos", json={"model": "klingai:1@1", "prompt": "a",
                                                        "seconds": "5", "size": "²x720"}))


@pytest.mark.parametrize("exp", ["%C2%B2", "9" * 5000, "-1", "1e9"])
def test_media_exp_crafted(server: ServerProcess, exp: str) -> None:
    # No auth: media URLs are capabilities; a crafted one is a clean 4xx, never a 500.
    with httpx.Client(base_url=server.url, timeout=30.0) as anon:
        resp = anon.get(f"/media/outputs/{uuid.uuid4()}.mp4?exp={exp}&sig=abc")
    assert 400 <= resp.status_code < 500, (resp.status_code, resp.text[:300])
