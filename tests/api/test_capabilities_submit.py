"""What the engine that will run a request cannot honour is refused in the submit answer.

Two real servers: one renders with the preview engine (no audio, every camera move), the other
has the preview engine off and a diffusers profile for ``klingai:1@1``/``klingai:1@2`` text to
video only (``wan-t2v``: no audio, no camera LoRAs). That profile's weights folder holds only its
``model_index.json``: every refusal below happens at submit, before anything would be loaded,
so no job ever reaches it. Each refusal is checked in every dialect that can express the
parameter (Runware REST and WebSocket, Kling, 302-style, OpenAI-style), in that dialect's field
names; ``GET /v1/models`` and ``modelSearch`` show what renders each id.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from reelserve_testing import ServerProcess, make_png, runware

T2V: dict[str, Any] = {"taskType": "videoInference", "model": "klingai:1@1",
                       "positivePrompt": "a paper boat on a calm lake", "duration": 5,
                       "width": 720, "height": 720, "deliveryMethod": "async"}
ZOOM = {"type": "simple", "config": {"zoom": 5}}


def _task(**fields: Any) -> dict[str, Any]:
    return {**T2V, "taskUUID": str(uuid.uuid4()), **fields}


@pytest.fixture(scope="module")
def preview(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("preview"), {"REELSERVE_WORKERS": "1"}).start(timeout=120)
    yield proc
    proc.stop()


def _stub_profiles(folder: Path) -> Path:
    weights = folder / "wan-t2v"
    weights.mkdir(parents=True)
    (weights / "model_index.json").write_text('{"_class_name": "WanPipeline"}', encoding="utf-8")
    profiles = folder / "profiles.toml"
    profiles.write_text(
        '[models."klingai:1@1".t2v]\npipeline = "wan-t2v"\nweights = "wan-t2v"\n\n'
        '[models."klingai:1@2".t2v]\npipeline = "wan-t2v"\nweights = "wan-t2v"\n',
        encoding="utf-8")
    return profiles


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("strict")
    proc = ServerProcess(folder / "data", {
        "REELSERVE_WORKERS": "1", "REELSERVE_PREVIEW_FALLBACK": "false",
        "REELSERVE_PROFILES": str(_stub_profiles(folder))}).start(timeout=120)
    yield proc
    proc.stop()


def _refused(resp: httpx.Response) -> dict[str, Any]:
    """The one Runware error of a refused videoInference (HTTP 400)."""
    assert resp.status_code == 400, resp.text
    [error] = resp.json()["errors"]
    return error  # type: ignore[no-any-return]


def _ws_refusal(server: ServerProcess, task: dict[str, Any]) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        url = server.url.replace("http://", "ws://") + "/v1"
        async with websockets.connect(url) as ws:
            await ws.send(json.dumps([{"taskType": "authentication", "apiKey": "any"}]))
            json.loads(await asyncio.wait_for(ws.recv(), 10))
            await ws.send(json.dumps([task]))
            frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 30))
            return frame

    frame = asyncio.run(go())
    assert frame.get("data", []) == [], frame
    [error] = frame["errors"]
    assert error["taskUUID"] == task["taskUUID"]
    return error  # type: ignore[no-any-return]


def _kling(server: ServerProcess, **body: Any) -> tuple[int, dict[str, Any]]:
    resp = httpx.post(f"{server.url}/v1/videos/text2video",
                      json={"prompt": "a paper boat", "duration": "5", **body}, timeout=30)
    return resp.status_code, resp.json()


def _m2v(server: ServerProcess, route: str, **form: Any) -> tuple[int, dict[str, Any]]:
    files = None
    if "image" in form:
        files = {"input_image": ("a.png", form.pop("image"), "image/png")}
    resp = httpx.post(f"{server.url}/klingai/{route}", data={"prompt": "a paper boat", **form},
                      files=files, timeout=30)
    return resp.status_code, resp.json()


# ------------------------------------------------------------------ sound (preview: no audio)


def test_sound_is_refused_at_submit_in_every_dialect(preview: ServerProcess) -> None:
    with httpx.Client(base_url=preview.url, timeout=30) as http:
        error = _refused(runware(http, [_task(providerSettings={"klingai": {"sound": True}})]))
    assert error["code"] == "unsupportedSound"
    assert error["parameter"] == "providerSettings.klingai.sound"
    assert error["allowedValues"] == [False] and "preview engine" in error["message"]

    ws = _ws_refusal(preview, _task(providerSettings={"klingai": {"sound": True}}))
    assert (ws["code"], ws["parameter"]) == ("unsupportedSound", "providerSettings.klingai.sound")

    status, body = _kling(preview, sound="on")
    assert status == 400 and body["code"] == 1201 and body["data"] is None, body
    assert body["message"].startswith("sound") or "sound=true" in body["message"], body
    assert "providerSettings" not in body["message"]

    status, body = _m2v(preview, "m2v_txt2video_hq_5s", enable_audio="true")
    assert status == 400 and body["result"] == 0, body
    # Codes that embed a field name speak the dialect's name for it (api/fields.py).
    assert (body["code"], body["parameter"]) == ("unsupportedEnableAudio", "enable_audio")
    assert "enable_audio" in body["message"]

    # Without sound the same requests are accepted (and rendered by the preview engine).
    status, body = _kling(preview, sound="off")
    assert status == 200 and body["code"] == 0, body
    status, body = _kling(preview, sound="loud")
    assert status == 400 and "sound must be 'on' or 'off'" in body["message"], body


def test_safety_check_without_a_checker_is_refused_at_submit(preview: ServerProcess) -> None:
    asked = {"safety": {"checkContent": True, "mode": "fast"}}
    with httpx.Client(base_url=preview.url, timeout=30) as http:
        error = _refused(runware(http, [_task(**asked)]))
        # A sync request is refused the same way, before any waiting.
        sync = _refused(runware(http, [_task(deliveryMethod="sync", **asked)]))
    assert (error["code"], error["parameter"]) == ("unsupportedSafetyCheck", "safety.checkContent")
    assert "REELSERVE_SAFETY_MODEL" in error["message"] and error["allowedValues"] == [False]
    assert sync["code"] == "unsupportedSafetyCheck"
    ws = _ws_refusal(preview, _task(**asked))
    assert (ws["code"], ws["parameter"]) == ("unsupportedSafetyCheck", "safety.checkContent")


# ------------------------------------------------------------------ camera, unmapped model


def test_camera_without_camera_loras_is_refused_at_submit(strict: ServerProcess) -> None:
    with httpx.Client(base_url=strict.url, timeout=30) as http:
        error = _refused(runware(http, [_task(providerSettings={"klingai": {
            "cameraControl": ZOOM}})]))
        assert error["code"] == "unsupportedCameraControl"
        assert error["parameter"] == "providerSettings.klingai.cameraControl"
        assert "zoom=5 (zoom_out)" in error["message"] and "'wan-t2v'" in error["message"]
        # The same profile has no audio either.
        sound = _refused(runware(http, [_task(providerSettings={"klingai": {"sound": True}})]))
        assert sound["code"] == "unsupportedSound" and "'wan-t2v'" in sound["message"]

    ws = _ws_refusal(strict, _task(providerSettings={"klingai": {"cameraControl": ZOOM}}))
    assert ws["code"] == "unsupportedCameraControl"

    status, body = _kling(strict, model_name="kling-v1", camera_control=ZOOM)
    assert status == 400 and body["code"] == 1201, body
    assert "camera_control" in body["message"] and "providerSettings" not in body["message"]

    status, body = _m2v(strict, "m2v_txt2video_hq_5s", camera_type="zoom", camera_value="5")
    assert status == 400, body
    assert (body["code"], body["parameter"]) == ("unsupportedCameraType", "camera_type")


def test_an_unmapped_model_is_refused_when_the_preview_engine_is_off(
    strict: ServerProcess,
) -> None:
    with httpx.Client(base_url=strict.url, timeout=30) as http:
        error = _refused(runware(http, [_task(model="klingai:3@1")]))
        assert (error["code"], error["parameter"]) == ("modelUnavailable", "model")
        assert error["allowedValues"] == ["klingai:1@1", "klingai:1@2"]
        assert "REELSERVE_PREVIEW_FALLBACK=false" in error["message"]
        # Mapped for t2v only: its image-to-video is refused the same way.
        image = "data:image/png;base64," + __import__("base64").b64encode(
            make_png(720, 720)).decode()
        i2v = _refused(runware(http, [_task(inputs={"frameImages": [
            {"inputImage": image, "frame": "first"}]}, positivePrompt="waves")]))
        assert i2v["code"] == "modelUnavailable" and "'i2v'" in i2v["message"]

        resp = http.post("/v1/videos", json={"model": "klingai:3@1", "prompt": "a paper boat"})
        assert resp.status_code == 400, resp.text
        openai_error = resp.json()["error"]
        assert (openai_error["code"], openai_error["param"]) == ("modelUnavailable", "model")

    ws = _ws_refusal(strict, _task(model="klingai:3@1"))
    assert ws["code"] == "modelUnavailable"

    status, body = _kling(strict, model_name="kling-v1-6")
    assert status == 400 and body["code"] == 1201, body
    assert "model_name" in body["message"] or "klingai:3@1" in body["message"], body

    status, body = _m2v(strict, "m2v_15_img2video", image=make_png(720, 720))
    assert status == 400, body
    assert body["code"] == "modelUnavailable"


# ------------------------------------------------------------------ what renders each id


def test_models_list_and_model_search_show_what_renders_each_id(
    preview: ServerProcess, strict: ServerProcess,
) -> None:
    listed = httpx.get(f"{strict.url}/v1/models", timeout=30)
    assert listed.status_code == 200, listed.text
    body = listed.json()
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == ["klingai:1@1", "klingai:1@2"]
    one = body["data"][0]
    assert one["object"] == "model" and isinstance(one["created"], int) and one["owned_by"]
    assert one["workflows"] == ["t2v"] and one["engine"] == {"t2v": "wan-t2v"}
    assert one["supports"]["t2v"] == {
        "sound": False, "keepOriginalSound": False,
        "cameraControl": {"moves": [], "presets": []},
        "referenceImages": False, "edit": False, "safetyCheck": False}

    everything = httpx.get(f"{preview.url}/v1/models", timeout=30).json()["data"]
    o1 = next(m for m in everything if m["id"] == "klingai:kling@o1-standard")
    assert set(o1["engine"].values()) == {"preview"}
    assert o1["supports"]["v2v"]["keepOriginalSound"] and o1["supports"]["v2v"]["edit"]
    assert "zoom_in" in o1["supports"]["t2v"]["cameraControl"]["moves"]
    assert not any(s["sound"] for m in everything for s in m["supports"].values())
    assert len(everything) >= 12

    with httpx.Client(base_url=strict.url, timeout=30) as http:
        found = runware(http, [{"taskType": "modelSearch", "search": "klingai:1@"}]).json()
    results = {r["air"]: r for r in found["data"][0]["results"]}
    assert results["klingai:1@1"]["serving"] == {
        "workflows": ["t2v"], "engine": {"t2v": "wan-t2v"},
        "supports": {"t2v": one["supports"]["t2v"]}}
    # Catalog facts stay; the catalog's i2v is listed there but not served here.
    assert results["klingai:1@1"]["workflows"] == ["t2v", "i2v"]
