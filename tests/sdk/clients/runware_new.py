"""Drive reelserve with PyPI ``runware-sdk`` 1.x, over its ``websocket`` or ``rest`` transport.

Run inside the SDK's own virtualenv: ``python runware_new.py '<json args>'``. Args: ``transport``
(``websocket``|``rest``), ``url`` (ws://.../v1), ``http_url`` (http://.../v1), ``api_key``,
``image_path``, ``scenarios``, ``timeout`` (seconds per scenario). Prints one JSON line mapping
each scenario to ``{"ok": true, "items": [...]}`` or ``{"ok": false, "error": {...}}``.

This SDK has no provider-settings classes: ``providerSettings`` is a plain dict in its typed
request (``dict[str, object]``), so camera control is sent as the documented dict.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from typing import Any

from runware import Runware, RunwareError, file_to_data_uri

ARGS: dict[str, Any] = json.loads(sys.argv[1])
T2V: dict[str, Any] = {
    "taskType": "videoInference",  # explicit: the model registry lookup would need the internet
    "model": "klingai:1@1",
    "positivePrompt": "a paper boat drifting on a calm lake",
    "duration": 5,
    "width": 720,
    "height": 720,
}


def _client(api_key: str) -> Runware:
    return Runware(
        api_key=api_key,
        transport=ARGS["transport"],
        ws_base_url=ARGS["url"],
        http_base_url=ARGS["http_url"],
        max_retries=0,
        retry_delay=200,
        auth_timeout=5_000,
        timeout=int(ARGS.get("timeout", 60) * 1000),
        poll_timeout=int(ARGS.get("timeout", 60) * 1000),
    )


def _item(item: dict[str, Any]) -> dict[str, Any]:
    keys = ("taskType", "taskUUID", "status", "videoUUID", "videoURL", "seed", "cost")
    return {k: item.get(k) for k in keys}


def _error(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, RunwareError):
        return {"type": "RunwareError", "code": exc.code, "message": exc.message,
                "parameter": exc.parameter, "taskUUID": exc.task_uuid, "taskType": exc.task_type,
                "status_code": exc.status_code}
    return {"type": type(exc).__name__, "code": None, "message": str(exc)}


async def scenario(client: Runware, name: str) -> list[dict[str, Any]]:
    if name == "async":
        return [_item(i) for i in await client.run(dict(T2V))]
    if name == "sync2":
        return [_item(i) for i in await client.run({**T2V, "deliveryMethod": "sync", "numberResults": 2})]
    if name == "frame_file":
        image = file_to_data_uri(ARGS["image_path"])
        task = {**T2V, "positivePrompt": "the scene comes alive",
                "inputs": {"frameImages": [{"image": image, "frame": "first"}]}}
        return [_item(i) for i in await client.run(task)]
    if name == "camera":
        camera = {"type": "simple", "config": {"zoom": 5}}
        task = {**T2V, "providerSettings": {"klingai": {"cameraControl": camera}}}
        return [_item(i) for i in await client.run(task)]
    if name == "bad_size":
        return [_item(i) for i in await client.run({**T2V, "width": 1000, "height": 1000})]
    if name == "unknown_model":
        return [_item(i) for i in await client.run({**T2V, "model": "klingai:99@9"})]
    if name == "unknown_task":
        items = await client.get_response({"taskUUID": str(uuid.uuid4())})
        return [_item(dict(i)) for i in items]
    raise ValueError(f"unknown scenario {name!r}")


async def resume() -> list[dict[str, Any]]:
    """Drop the socket right after the ACK, mid-generation; the SDK reconnects on its own with
    its connectionSessionUUID (held requests are sent again after it) and keeps polling until
    the result arrives. Own client: a drop fails this SDK's in-flight *sync* tasks by design."""
    client = _client(ARGS["api_key"])
    await client.connect()
    try:
        return await _drop_and_resume(client)
    finally:
        await client.close()


async def _drop_and_resume(client: Runware) -> list[dict[str, Any]]:
    transport = client._ws_transport  # the SDK's own transport object
    assert transport is not None, "resume needs the websocket transport"
    session_before = transport.session_id
    acked = asyncio.Event()
    task_uuid = str(uuid.uuid4())

    original = transport.subscribe_to_task

    def spy(uuid_: str, callback: Any) -> None:
        def wrapped(frame: dict[str, Any]) -> None:
            callback(frame)
            acked.set()
        original(uuid_, wrapped if uuid_ == task_uuid else callback)

    transport.subscribe_to_task = spy  # type: ignore[method-assign]
    run = asyncio.create_task(client.run({**T2V, "taskUUID": task_uuid}))
    await asyncio.wait_for(acked.wait(), 30)
    ws = transport._ws
    assert ws is not None
    ws.transport.abort()  # an abrupt drop, no close handshake
    items = await run
    return [{**_item(i), "sessionBefore": session_before, "sessionAfter": transport.session_id}
            for i in items]


async def bad_key() -> list[dict[str, Any]]:
    client = _client("definitely-not-a-valid-key")
    try:
        await client.connect()
        return [_item(i) for i in await client.run(dict(T2V))]
    finally:
        await client.close()


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
    if "resume" in names:
        results["resume"] = await timed(resume())
    rest = [n for n in names if n not in ("bad_key", "resume")]
    if rest:
        client = _client(ARGS["api_key"])
        try:
            await client.connect()
            outs = await asyncio.gather(*(timed(scenario(client, n)) for n in rest))
            results.update(zip(rest, outs, strict=True))
        finally:
            await client.close()
    print(json.dumps(results), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
