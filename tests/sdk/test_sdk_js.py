"""npm ``@runware/sdk-js`` (Node) against a real reelserve; skipped where node/npm are absent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sdk_checks import (
    CLIENT_TIMEOUT,
    ERROR_SCENARIOS,
    VIDEO_SCENARIOS,
    assert_error,
    assert_videos,
    client_args,
)
from sdk_envs import run_client

pytestmark = pytest.mark.sdk


@pytest.fixture(scope="module")
def outcomes(js_sdk: tuple[Path, Path], sdk_server: Any, frame_png: Path) -> dict[str, Any]:
    node, js_dir = js_sdk
    run = run_client(node, js_dir / "client.mjs",
                     client_args(sdk_server, frame_png, [*VIDEO_SCENARIOS, *ERROR_SCENARIOS]),
                     timeout=CLIENT_TIMEOUT, cwd=js_dir)
    result: dict[str, Any] = run.json()
    return result


def test_async_video_then_get_response(outcomes: dict[str, Any], sdk_server: Any) -> None:
    [item] = assert_videos(outcomes["async"], 1, sdk_server)
    assert item["status"] == "success"


def test_two_results(outcomes: dict[str, Any], sdk_server: Any) -> None:
    # The JS SDK forces deliveryMethod "async" and polls until numberResults distinct videos.
    items = assert_videos(outcomes["sync2"], 2, sdk_server)
    assert items[0]["seed"] != items[1]["seed"]


def test_frame_image_from_local_file(outcomes: dict[str, Any], sdk_server: Any) -> None:
    assert_videos(outcomes["frame_file"], 1, sdk_server)


def test_camera_control(outcomes: dict[str, Any], sdk_server: Any) -> None:
    assert_videos(outcomes["camera"], 1, sdk_server)


def test_invalid_size(outcomes: dict[str, Any]) -> None:
    assert_error(outcomes["bad_size"], error_type="RunwareErrorObject", code="invalidDimensions",
                 parameter="width")


def test_unknown_model(outcomes: dict[str, Any]) -> None:
    assert_error(outcomes["unknown_model"], error_type="RunwareErrorObject", code="modelNotFound",
                 parameter="model")


def test_unknown_task_uuid(outcomes: dict[str, Any]) -> None:
    assert_error(outcomes["unknown_task"], error_type="RunwareErrorObject", code="taskNotFound",
                 parameter="taskUUID")


def test_bad_api_key(outcomes: dict[str, Any]) -> None:
    error = assert_error(outcomes["bad_key"], error_type="RunwareErrorObject",
                         code="invalidApiKey", parameter="apiKey")
    assert error["taskType"] == "authentication" and error["taskUUID"] is None
