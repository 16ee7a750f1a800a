"""Drive reelserve with PyPI ``runware`` 0.5.x (WebSocket only), exactly as a user would.

Run inside the SDK's own virtualenv: ``python runware_old.py '<json args>'``. Args: ``url``,
``api_key``, ``image_path``, ``scenarios`` (names below), ``timeout`` (seconds per scenario).
Prints one JSON line: ``{scenario: {"ok": bool, "items": [...]} | {"ok": false, "error": {...}}}``.

The SDK reads ``RUNWARE_VIDEO_INITIAL_TIMEOUT`` / ``RUNWARE_VIDEO_POLLING_DELAY`` at import time;
the test sets them low so each poll returns quickly.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from typing import Any

from runware import (
    IFrameImage,
    IKlingAIProviderSettings,
    IKlingCameraConfig,
    IKlingCameraControl,
    IVideoInference,
    Runware,
    RunwareAPIError,
)

ARGS: dict[str, Any] = json.loads(sys.argv[1])
T2V: dict[str, Any] = {
    "model": "klingai:1@1",
    "positivePrompt": "a paper boat drifting on a calm lake",
    "duration": 5,
    "width": 720,
    "height": 720,
}


def _item(video: Any) -> dict[str, Any]:
    keys = ("taskType", "taskUUID", "status", "videoUUID", "videoURL", "seed", "cost")
    return {k: getattr(video, k, None) for k in keys}


def _error(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, RunwareAPIError):
        data = exc.error_data
        return {"type": "RunwareAPIError", "code": exc.code, "message": data.get("message"),
                "parameter": data.get("parameter"), "taskUUID": data.get("taskUUID"),
                "taskType": data.get("taskType")}
    return {"type": type(exc).__name__, "code": None, "message": str(exc)}


async def _video(client: Runware, request: IVideoInference) -> list[dict[str, Any]]:
    first = await client.videoInference(requestVideo=request)
    if isinstance(first, list):  # sync delivery: the videos themselves
        return [_item(v) for v in first]
    videos = await client.getResponse(taskUUID=first.taskUUID, numberResults=request.numberResults or 1)
    return [_item(v) for v in videos]


async def scenario(client: Runware, name: str) -> list[dict[str, Any]]:
    if name == "async":
        return await _video(client, IVideoInference(**T2V))
    if name == "sync2":
        videos = await client.videoInference(
            requestVideo=IVideoInference(**T2V, deliveryMethod="sync", numberResults=2)
        )
        assert isinstance(videos, list), videos
        return [_item(v) for v in videos]
    if name == "frame_file":
        # A local path: the SDK itself reads it and sends a data URI in the legacy
        # top-level frameImages[].inputImage shape.
        frame = IFrameImage(inputImage=ARGS["image_path"], frame="first")
        return await _video(client, IVideoInference(**{**T2V, "positivePrompt": "the scene comes alive"},
                                                    frameImages=[frame]))
    if name == "camera":
        settings = IKlingAIProviderSettings(
            cameraControl=IKlingCameraControl(camera_type="simple", config=IKlingCameraConfig(zoom=5))
        )
        return await _video(client, IVideoInference(**T2V, providerSettings=settings))
    if name == "bad_size":
        return await _video(client, IVideoInference(**{**T2V, "width": 1000, "height": 1000}))
    if name == "unknown_model":
        return await _video(client, IVideoInference(**{**T2V, "model": "klingai:99@9"}))
    if name == "unknown_task":
        videos = await client.getResponse(taskUUID=str(uuid.uuid4()), numberResults=1)
        return [_item(v) for v in videos]
    raise ValueError(f"unknown scenario {name!r}")


async def bad_key() -> list[dict[str, Any]]:
    # connect() itself returns after the server's invalidApiKey reply (the SDK records it);
    # ensureConnection() is where the SDK surfaces it. A videoInference call would go through
    # the SDK's reconnect/circuit-breaker loop first (minutes, by the SDK's own design).
    client = Runware(api_key="definitely-not-a-valid-key", url=ARGS["url"])
    try:
        await client.connect()
        await client.ensureConnection()
        return []
    finally:
        await client.disconnect()


async def timed(coro: Any) -> dict[str, Any]:
    start = time.monotonic()
    try:
        items = await asyncio.wait_for(coro, ARGS.get("timeout", 60))
        out: dict[str, Any] = {"ok": True, "items": items}
    except Exception as exc:
        out = {"ok": False, "error": _error(exc)}
    out["elapsed"] = round(time.monotonic() - start, 2)
    return out


async def main() -> None:
    names: list[str] = ARGS["scenarios"]
    results: dict[str, Any] = {}
    if "bad_key" in names:
        results["bad_key"] = await timed(bad_key())
    rest = [n for n in names if n != "bad_key"]
    if rest:
        client = Runware(api_key=ARGS["api_key"], url=ARGS["url"])
        await client.connect()
        try:
            outs = await asyncio.gather(*(timed(scenario(client, n)) for n in rest))
            results.update(zip(rest, outs, strict=True))
        finally:
            await client.disconnect()
    print(json.dumps(results), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
