"""PyPI ``runware`` 0.5.x (WebSocket only) against a real reelserve, unchanged but for its URL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sdk_checks import (
    CLIENT_TIMEOUT,
    ERROR_SCENARIOS,
    OLD_SDK_ENV,
    VIDEO_SCENARIOS,
    assert_error,
    assert_videos,
    client_args,
)
from sdk_envs import CLIENTS_DIR, run_client

pytestmark = pytest.mark.sdk


@pytest.fixture(scope="module")
def outcomes(old_sdk_python: Path, sdk_server: Any, frame_png: Path) -> dict[str, Any]:
    run = run_client(old_sdk_python, CLIENTS_DIR / "runware_old.py",
                     client_args(sdk_server, frame_png, [*VIDEO_SCENARIOS, *ERROR_SCENARIOS]),
                     env=OLD_SDK_ENV, timeout=CLIENT_TIMEOUT)
    result: dict[str, Any] = run.json()
    return result


def test_async_video_then_get_response(outcomes: dict[str, Any], sdk_server: Any) -> None:
    [item] = assert_videos(outcomes["async"], 1, sdk_server)
    assert item["status"] == "success"


def test_sync_video_two_results_pushed(outcomes: dict[str, Any], sdk_server: Any) -> None:
    items = assert_videos(outcomes["sync2"], 2, sdk_server)
    assert items[0]["seed"] != items[1]["seed"]


def test_frame_image_from_local_file(outcomes: dict[str, Any], sdk_server: Any) -> None:
    # The SDK turns the path into a data URI under the legacy top-level frameImages[].inputImage.
    assert_videos(outcomes["frame_file"], 1, sdk_server)


def test_camera_control_through_provider_settings_classes(outcomes: dict[str, Any],
                                                          sdk_server: Any) -> None:
    assert_videos(outcomes["camera"], 1, sdk_server)


def test_invalid_size(outcomes: dict[str, Any]) -> None:
    assert_error(outcomes["bad_size"], error_type="RunwareAPIError", code="invalidDimensions",
                 parameter="width", message_has="720x720")


def test_unknown_model(outcomes: dict[str, Any]) -> None:
    assert_error(outcomes["unknown_model"], error_type="RunwareAPIError", code="modelNotFound",
                 parameter="model", message_has="klingai:99@9")


def test_unknown_task_uuid(outcomes: dict[str, Any]) -> None:
    error = assert_error(outcomes["unknown_task"], error_type="RunwareAPIError",
                         code="taskNotFound", parameter="taskUUID")
    assert error["taskUUID"]


def test_bad_api_key(outcomes: dict[str, Any]) -> None:
    # This SDK reports authentication failures as a builtin ConnectionError carrying the
    # server's message (it has no error code for them).
    assert_error(outcomes["bad_key"], error_type="ConnectionError", code=None,
                 message_has="API key is not valid")
