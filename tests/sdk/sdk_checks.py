"""Constants, client arguments and assertions shared by the official-SDK test modules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

API_KEY = "sdk-test-key-0123456789"

# Old-SDK knobs (read at its import time, in ms): poll answers come at once from reelserve, so a
# short wait per poll only matters while a task is still processing.
OLD_SDK_ENV = {"RUNWARE_VIDEO_INITIAL_TIMEOUT": "1000", "RUNWARE_VIDEO_POLLING_DELAY": "250"}

# Scenario budgets (seconds): errors must come back fast; videos on the preview engine in seconds.
ERROR_BUDGET = 10.0
SCENARIO_TIMEOUT = 90.0
CLIENT_TIMEOUT = 240.0

VIDEO_SCENARIOS = ("async", "sync2", "frame_file", "camera")
ERROR_SCENARIOS = ("bad_size", "unknown_model", "unknown_task", "bad_key")


def ws_url(server: Any) -> str:
    """The server's WebSocket endpoint."""
    return server.url.replace("http://", "ws://") + "/v1"


def client_args(server: Any, frame: Path, scenarios: list[str], **extra: Any) -> dict[str, Any]:
    """The JSON arguments every client script takes."""
    return {"url": ws_url(server), "http_url": server.url + "/v1", "api_key": API_KEY,
            "image_path": str(frame), "scenarios": scenarios, "timeout": SCENARIO_TIMEOUT,
            **extra}


# ------------------------------------------------------------------------------ assertions


def assert_videos(outcome: dict[str, Any], count: int, server: Any) -> list[dict[str, Any]]:
    """The scenario returned ``count`` distinct finished videos served by this server."""
    assert outcome["ok"], f"expected videos, got {outcome}"
    items = outcome["items"]
    assert len(items) == count, items
    assert len({i["videoUUID"] for i in items}) == count, items
    task_uuids = {i["taskUUID"] for i in items}
    assert len(task_uuids) == 1 and None not in task_uuids, items
    for item in items:
        assert item["taskType"] == "videoInference"
        assert item["videoURL"].startswith(server.url + "/"), item
    return items


def assert_error(outcome: dict[str, Any], *, error_type: str, code: str | None,
                 parameter: str | None = None, message_has: str | None = None) -> dict[str, Any]:
    """The scenario failed fast with the SDK's own error type and the expected code."""
    assert not outcome["ok"], f"expected an error, got {outcome}"
    error = outcome["error"]
    assert error["type"] == error_type, error
    assert error["code"] == code, error
    if parameter is not None:
        assert error.get("parameter") == parameter, error
    if message_has is not None:
        assert message_has in (error.get("message") or ""), error
    assert outcome["elapsed"] < ERROR_BUDGET, f"took {outcome['elapsed']} s: {error}"
    return error
