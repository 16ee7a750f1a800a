"""Each dialect speaks its own field names: no Runware name or code reaches an OpenAI, Kling or
302 client, and Runware clients read exactly what they always read.

A real server (no workers: every refusal here happens at submit) for the wire checks, and the
field tables themselves over refusals of the one validator.
"""

from __future__ import annotations

import io
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest

from reelserve.api.fields import CANONICAL, RUNWARE_FIELDS, FieldTable
from reelserve.api.kling.schema import FIELD_NAMES as KLING_FIELDS
from reelserve.api.m2v.schema import FIELD_NAMES as M2V_FIELDS
from reelserve.api.openai.schema import FIELD_NAMES as OPENAI_FIELDS
from reelserve.api.runware.schema import parse_video_inference
from reelserve.catalog.validate import validate
from reelserve.errors import ReelserveError
from reelserve_testing import ServerProcess, make_png

SECRET = "v" * 40
KEY = "vocab-key"
RUNWARE_WORDS = sorted(set(CANONICAL.values()) | {"positivePrompt", "frameImages",
                                                   "PositivePrompt", "FrameImages", "CFGScale"})
"""Spellings only the Runware dialect may show (field paths and the code stems built on them)."""


def assert_no_runware(*texts: Any) -> None:
    for text in texts:
        blob = text if isinstance(text, str) else json.dumps(text)
        leaked = [w for w in RUNWARE_WORDS if w in blob]
        assert not leaked, f"Runware vocabulary {leaked} in {blob}"


@pytest.fixture(scope="module")
def vocab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("vocab"), {
        "REELSERVE_WORKERS": "0", "REELSERVE_API_KEYS": KEY,
        "REELSERVE_KLING_KEYS": f"ak-v:{SECRET}"}).start()
    yield proc
    proc.stop()


def bearer() -> dict[str, str]:
    return {"Authorization": f"Bearer {KEY}"}


def kling_auth() -> dict[str, str]:
    now = int(time.time())
    tok = jwt.encode({"iss": "ak-v", "exp": now + 600, "nbf": now - 5}, SECRET,
                     algorithm="HS256")
    return {"Authorization": f"Bearer {tok}"}


def runware(server: ServerProcess, **fields: Any) -> dict[str, Any]:
    task = {"taskType": "videoInference", "taskUUID": str(uuid.uuid4()), "model": "klingai:1@1",
            "positivePrompt": "a calm lake", "duration": 5, "width": 720, "height": 720}
    for key, value in fields.items():
        if value is ...:
            task.pop(key)
        else:
            task[key] = value
    resp = httpx.post(f"{server.url}/v1", json=[task], headers=bearer(), timeout=30)
    assert resp.status_code == 400, resp.text
    [error] = resp.json()["errors"]
    return error  # type: ignore[no-any-return]


def openai(server: ServerProcess, **kw: Any) -> dict[str, Any]:
    resp = httpx.post(f"{server.url}/v1/videos", headers=bearer(), timeout=30, **kw)
    assert resp.status_code == 400, resp.text
    error: dict[str, Any] = resp.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert_no_runware(error)
    return error


def kling(server: ServerProcess, kind: str, body: dict[str, Any]) -> str:
    resp = httpx.post(f"{server.url}/v1/videos/{kind}", headers=kling_auth(), json=body,
                      timeout=30)
    assert resp.status_code == 400, resp.text
    envelope = resp.json()
    assert envelope["code"] == 1201 and envelope["data"] is None
    assert_no_runware(envelope)
    return str(envelope["message"])


def m2v(server: ServerProcess, path: str, data: dict[str, str],
        files: dict[str, Any] | None = None) -> dict[str, Any]:
    resp = httpx.post(f"{server.url}/klingai/{path}", headers=bearer(), data=data, files=files,
                      timeout=30)
    assert resp.status_code == 400, resp.text
    body: dict[str, Any] = resp.json()
    assert body["result"] == 0 and body["data"] is None
    assert_no_runware(body)
    return body


def test_missing_prompt(vocab: ServerProcess) -> None:
    # Runware: exactly as before (the official SDKs read these).
    error = runware(vocab, positivePrompt=...)
    assert (error["code"], error["parameter"]) == ("missingPositivePrompt", "positivePrompt")
    assert error["message"] == ("positivePrompt is required for text-to-video "
                                "(no inputs.frameImages given)")
    error = openai(vocab, json={"seconds": "5", "size": "720x720"})
    assert (error["param"], error["code"]) == ("prompt", "missingPrompt")
    assert error["message"] == "prompt is required for text-to-video (no input_reference given)"
    message = kling(vocab, "text2video", {"duration": "5"})
    assert message == "prompt is required for text-to-video (no image given)"
    body = m2v(vocab, "m2v_txt2video_hq_5s", {"aspect_ratio": "1:1"})
    assert (body["parameter"], body["code"]) == ("prompt", "missingPrompt")
    assert body["message"] == "prompt is required for text-to-video (no input_image given)"


def test_bad_duration_and_cfg(vocab: ServerProcess) -> None:
    error = runware(vocab, duration=7)
    assert (error["code"], error["parameter"]) == ("invalidDuration", "duration")
    assert error["message"].startswith("duration 7")
    error = openai(vocab, json={"prompt": "a calm lake", "seconds": "7"})
    assert error["param"] == "seconds" and error["message"].startswith("seconds 7")
    assert "duration" not in error["message"]
    assert "duration 7" in kling(vocab, "text2video", {"prompt": "a calm lake", "duration": "7"})

    error = runware(vocab, CFGScale=3)
    assert (error["code"], error["parameter"]) == ("invalidCFGScale", "CFGScale")
    assert error["message"].startswith("CFGScale must be between")
    assert kling(vocab, "text2video", {"prompt": "a calm lake", "cfg_scale": 3}).startswith(
        "cfg_scale must be between")
    image = {"input_image": ("a.png", make_png(400, 400), "image/png")}
    body = m2v(vocab, "m2v_15_img2video", {"prompt": "a calm lake", "cfg": "3"}, image)
    assert body["parameter"] == "cfg" and body["message"].startswith("cfg must be between")


def test_bad_image(vocab: ServerProcess) -> None:
    error = openai(vocab, data={"prompt": "a calm lake"},
                   files={"input_reference": ("a.txt", b"not an image", "text/plain")})
    assert (error["param"], error["code"]) == ("input_reference", "invalidInputReference")
    # A last frame alone: the validator's frame rule, in each dialect's image field.
    message = kling(vocab, "image2video", {"image_tail": "https://example.com/b.png",
                                            "prompt": "a calm lake"})
    assert "image" in message
    from PIL import Image

    tiny = io.BytesIO()
    Image.new("RGB", (9, 9), (255, 0, 0)).save(tiny, format="PNG")
    body = m2v(vocab, "m2v_15_img2video", {"prompt": "a calm lake"},
               {"input_image": ("tiny.png", tiny.getvalue(), "image/png")})
    assert body["parameter"] == "input_image" and "9x9" in body["message"]


REFUSED: list[dict[str, Any]] = [
    {"positivePrompt": ...},
    {"positivePrompt": "a"},
    {"negativePrompt": "x"},
    {"CFGScale": 1.01},
    {"duration": 7},
    {"width": 640, "height": 480},
    {"width": 720},
    {"inputs": {"frameImages": [{"inputImage": "https://e.com/a.png", "frame": "last"}]}},
    {"inputs": {"frameImages": [{"inputImage": "https://e.com/a.png"}],
                "referenceImages": ["https://e.com/b.png"]}},
    {"providerSettings": {"klingai": {"cameraControl": {"type": "simple",
                                                         "config": {"zoom": 12}}}}},
    {"providerSettings": {"klingai": {"cameraControl": {"type": "spin"}}}},
    {"providerSettings": {"klingai": {"keepOriginalSound": True}}, "model": "klingai:6@1"},
    {"deliveryMethod": "later"},
    {"outputType": "file"},
]


def refusal(fields: dict[str, Any]) -> ReelserveError:
    task: dict[str, Any] = {"taskType": "videoInference", "taskUUID": str(uuid.uuid4()),
                            "model": "klingai:1@1", "positivePrompt": "a calm lake at dawn"}
    for key, value in fields.items():
        if value is ...:
            task.pop(key)
        else:
            task[key] = value
    with pytest.raises(ReelserveError) as info:
        validate(parse_video_inference(task))
    return info.value


@pytest.mark.parametrize("fields", REFUSED, ids=[str(i) for i in range(len(REFUSED))])
@pytest.mark.parametrize("table", [OPENAI_FIELDS, KLING_FIELDS, M2V_FIELDS],
                         ids=["openai", "kling", "302"])
def test_tables_leave_no_runware_word(fields: dict[str, Any], table: FieldTable) -> None:
    exc = refusal(fields)
    rendered = table.render(exc)
    assert_no_runware(rendered.message, rendered.parameter or "", rendered.code)
    assert (rendered.kind, rendered.allowed_values, type(rendered)) == (
        exc.kind, exc.allowed_values, type(exc))
    # The Runware table is the identity: the very same error object.
    assert RUNWARE_FIELDS.render(exc) is exc
