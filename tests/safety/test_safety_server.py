"""``safety.checkContent`` end to end through a real server (``python -m reelserve serve``, the
preview engine), the tiny real classifiers loaded through ``REELSERVE_SAFETY_*``. That a flagged
input stops the task before the engine runs is shown in-process (test_safety_worker.py)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from safety_tiny import make_classifier

from reelserve.api.auth import LOCAL_OWNER
from reelserve.delivery.storage import OUTPUTS, LocalArtifactStore
from reelserve.jobs.sqlite import SQLiteJobStore
from reelserve.media.probe import probe
from reelserve.tasks import Job
from reelserve_testing import ServerProcess, poll_results, runware, upload_image

pytestmark = pytest.mark.slow  # three servers, each loading torch for its checker


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return {"flag": make_classifier(tmp_path_factory.mktemp("flag"), flag=True),
            "clean": make_classifier(tmp_path_factory.mktemp("clean"), flag=False)}


def _serve(tmp_path_factory: pytest.TempPathFactory, name: str,
           env: dict[str, str]) -> Iterator[tuple[ServerProcess, httpx.Client]]:
    # A generous start timeout: three servers start in this module on a busy test machine.
    server = ServerProcess(tmp_path_factory.mktemp(name),
                           {"REELSERVE_WORKERS": "1", **env}).start(timeout=120)
    try:
        with httpx.Client(base_url=server.url, timeout=120.0) as http:
            yield server, http
    finally:
        server.stop()


@pytest.fixture(scope="module")
def flagging(tmp_path_factory: pytest.TempPathFactory,
             models: dict[str, Path]) -> Iterator[tuple[ServerProcess, httpx.Client]]:
    """Flags everything, withholds (the default)."""
    yield from _serve(tmp_path_factory, "flagging", {"REELSERVE_SAFETY_MODEL": str(models["flag"])})


@pytest.fixture(scope="module")
def delivering(tmp_path_factory: pytest.TempPathFactory,
               models: dict[str, Path]) -> Iterator[tuple[ServerProcess, httpx.Client]]:
    """Flags everything and delivers it flagged."""
    yield from _serve(tmp_path_factory, "delivering", {
        "REELSERVE_SAFETY_MODEL": str(models["flag"]), "REELSERVE_SAFETY_ON_FLAG": "deliver"})


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory,
          models: dict[str, Path]) -> Iterator[tuple[ServerProcess, httpx.Client]]:
    """Flags nothing."""
    yield from _serve(tmp_path_factory, "clean", {"REELSERVE_SAFETY_MODEL": str(models["clean"])})


def _task(**extra: Any) -> dict[str, Any]:
    return {"taskType": "videoInference", "taskUUID": str(uuid.uuid4()), "model": "klingai:1@1",
            "positivePrompt": "a kite over the sea", "width": 720, "height": 720, "duration": 5,
            **extra}


def _run(http: httpx.Client, task: dict[str, Any]) -> tuple[list[dict[str, Any]],
                                                             list[dict[str, Any]]]:
    resp = runware(http, [task])
    assert resp.status_code == 200, resp.text
    return poll_results(http, task["taskUUID"], timeout=180)


def _stored(server: ServerProcess, task_uuid: str) -> Job:
    store = SQLiteJobStore(server.data_dir / "reelserve.db")
    try:
        job = store.get_by_task(LOCAL_OWNER, task_uuid)
    finally:
        store.close()
    assert job is not None
    return job


def test_flagged_input_fails_the_task_before_rendering(
        flagging: tuple[ServerProcess, httpx.Client]) -> None:
    server, http = flagging
    image = upload_image(http)
    task = _task(inputs={"frameImages": [{"image": image, "frame": "first"}]},
                 safety={"checkContent": True})
    items, errors = _run(http, task)
    assert items == []
    (error,) = errors
    assert error["code"] == "contentPolicyViolation", error
    assert error["parameter"] == "inputs.frameImages" and error["taskUUID"] == task["taskUUID"]
    assert "nsfw scored 1.00" in error["message"] and "not rendered" in error["message"]
    stored = _stored(server, task["taskUUID"])
    assert stored.attempts == 1 and stored.results == []  # a verdict, not retried


def test_flagged_output_is_withheld_with_a_content_policy_error(
        flagging: tuple[ServerProcess, httpx.Client]) -> None:
    server, http = flagging
    task = _task(safety={"checkContent": True, "mode": "fast"})
    items, errors = _run(http, task)
    assert items == []
    (error,) = errors
    assert error["code"] == "contentPolicyViolation" and "withheld" in error["message"]
    stored = _stored(server, task["taskUUID"])
    assert stored.attempts == 1 and stored.results == []
    assert list(LocalArtifactStore(server.data_dir / "artifacts").list_keys(OUTPUTS)) == []
    details = runware(http, [{"taskType": "getTaskDetails", "taskUUID": task["taskUUID"]}])
    body = details.json()["data"][0]
    assert body["response"]["data"] == []
    assert body["response"]["errors"][0]["code"] == "contentPolicyViolation"


def test_flagged_output_delivered_with_nsfw_content_true(
        delivering: tuple[ServerProcess, httpx.Client], tmp_path: Path) -> None:
    server, http = delivering
    task = _task(safety={"checkContent": True})  # checkContent alone: fast
    (item,), errors = _run(http, task)
    assert errors == []
    assert item["NSFWContent"] is True and item["status"] == "success"
    video = tmp_path / "out.mp4"
    video.write_bytes(httpx.get(item["videoURL"], timeout=60).content)
    assert probe(video).num_frames == 150
    (result,) = _stored(server, task["taskUUID"]).results
    # 5 s at 30 fps: first, middle, last and one frame per second = 7 of 150 frames.
    assert result.nsfw is True and result.safety_frames == 7
    assert result.safety_seconds is not None and result.safety_seconds > 0
    details = runware(http, [{"taskType": "getTaskDetails", "taskUUID": task["taskUUID"]}])
    assert details.json()["data"][0]["response"]["data"][0]["NSFWContent"] is True


def test_clean_content_is_delivered_with_nsfw_content_false(
        clean: tuple[ServerProcess, httpx.Client]) -> None:
    server, http = clean
    image = upload_image(http, seed=2)
    task = _task(inputs={"frameImages": [{"image": image, "frame": "first"}]},
                 safety={"checkContent": True, "mode": "full"})
    (item,), errors = _run(http, task)
    assert errors == [] and item["NSFWContent"] is False
    (result,) = _stored(server, task["taskUUID"]).results
    assert result.nsfw is False and result.safety_frames == 1 + 150  # the input, every frame
    # Without a check there is no verdict to report.
    (item,), errors = _run(http, _task())
    assert errors == [] and "NSFWContent" not in item
