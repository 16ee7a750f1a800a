"""PyPI ``runware-sdk`` 1.x against a real reelserve, over both of its transports."""

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
from sdk_envs import CLIENTS_DIR, run_client

pytestmark = pytest.mark.sdk


@pytest.fixture(scope="module", params=["websocket", "rest"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def outcomes(new_sdk_python: Path, sdk_server: Any, frame_png: Path,
             transport: str) -> dict[str, Any]:
    scenarios = [*VIDEO_SCENARIOS, *ERROR_SCENARIOS]
    run = run_client(new_sdk_python, CLIENTS_DIR / "runware_new.py",
                     client_args(sdk_server, frame_png, scenarios, transport=transport),
                     timeout=CLIENT_TIMEOUT)
    result: dict[str, Any] = run.json()
    return result


def test_async_video_then_get_response(outcomes: dict[str, Any], sdk_server: Any) -> None:
    [item] = assert_videos(outcomes["async"], 1, sdk_server)
    assert item["status"] == "success"


def test_sync_video_two_results(outcomes: dict[str, Any], sdk_server: Any) -> None:
    items = assert_videos(outcomes["sync2"], 2, sdk_server)
    assert items[0]["seed"] != items[1]["seed"]


def test_frame_image_from_local_file(outcomes: dict[str, Any], sdk_server: Any) -> None:
    assert_videos(outcomes["frame_file"], 1, sdk_server)


def test_camera_control(outcomes: dict[str, Any], sdk_server: Any) -> None:
    assert_videos(outcomes["camera"], 1, sdk_server)


def test_invalid_size(outcomes: dict[str, Any]) -> None:
    error = assert_error(outcomes["bad_size"], error_type="RunwareError", code="validation",
                         parameter="width", message_has="720x720")
    assert error["taskType"] == "videoInference"


def test_unknown_model(outcomes: dict[str, Any]) -> None:
    assert_error(outcomes["unknown_model"], error_type="RunwareError", code="notFound",
                 parameter="model", message_has="klingai:99@9")


def test_unknown_task_uuid(outcomes: dict[str, Any]) -> None:
    assert_error(outcomes["unknown_task"], error_type="RunwareError", code="notFound",
                 parameter="taskUUID")


def test_bad_api_key(outcomes: dict[str, Any]) -> None:
    assert_error(outcomes["bad_key"], error_type="RunwareError", code="auth",
                 message_has="API key is not valid")


def test_drop_mid_generation_and_resume(new_sdk_python: Path, sdk_server: Any,
                                        frame_png: Path) -> None:
    run = run_client(new_sdk_python, CLIENTS_DIR / "runware_new.py",
                     client_args(sdk_server, frame_png, ["resume"], transport="websocket"),
                     timeout=CLIENT_TIMEOUT)
    [item] = assert_videos(run.json()["resume"], 1, sdk_server)
    # The SDK re-authenticated with its connectionSessionUUID and the server resumed that session.
    assert item["sessionBefore"] and item["sessionAfter"] == item["sessionBefore"]
