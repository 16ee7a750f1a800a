"""The content check inside the worker loop, in-process: real SQLite store, real artifact store,
real encoder, a tiny real classifier loaded through the settings and wrapped to count its calls."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from safety_tiny import CountingChecker, StripeEngine, make_classifier

from reelserve.api.runware.schema import parse_video_inference
from reelserve.catalog.validate import validate
from reelserve.delivery.storage import OUTPUTS, LocalArtifactStore
from reelserve.jobs.sqlite import SQLiteJobStore
from reelserve.media.probe import probe
from reelserve.safety import load_checker
from reelserve.settings import Settings
from reelserve.tasks import Job, JobStatus
from reelserve.worker.loop import Worker
from reelserve_testing import data_uri, make_png


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return {"flag": make_classifier(tmp_path_factory.mktemp("flag"), flag=True),
            "clean": make_classifier(tmp_path_factory.mktemp("clean"), flag=False)}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteJobStore]:
    store = SQLiteJobStore(tmp_path / "db.sqlite", max_attempts=2)
    yield store
    store.close()


def submit(store: SQLiteJobStore, **extra: object) -> Job:
    task = {"taskType": "videoInference", "taskUUID": str(uuid.uuid4()), "model": "klingai:1@1",
            "positivePrompt": "a red kite", "width": 720, "height": 720, "duration": 5, **extra}
    spec = validate(parse_video_inference(task))
    return store.create(Job(id=str(uuid.uuid4()), task_uuid=spec.task_uuid, owner="o",
                            request=task, spec=spec))


def run_job(settings: Settings, store: SQLiteJobStore, checker: CountingChecker | None,
            engine: StripeEngine, **extra: object) -> Job:
    job = submit(store, **extra)
    worker = Worker(settings, store, LocalArtifactStore(settings.data_dir / "artifacts"),
                    lambda spec: engine, safety_checker=checker)
    assert worker.run_once()
    done = store.get(job.id)
    assert done is not None
    return done


def test_fast_checks_key_frames_and_full_checks_every_frame(
        tmp_path: Path, store: SQLiteJobStore, models: dict[str, Path]) -> None:
    settings = Settings(data_dir=tmp_path, safety_model=str(models["clean"]), safety_batch_size=8)
    engine = StripeEngine()
    counts: dict[str, int] = {}
    for mode in ("fast", "full"):
        checker = CountingChecker(load_checker(settings))
        done = run_job(settings, store, checker, engine, safety={"checkContent": True, "mode": mode})
        assert done.status is JobStatus.SUCCEEDED, done.error
        (result,) = done.results
        assert result.nsfw is False
        assert result.safety_frames == checker.images
        assert result.safety_seconds is not None and result.safety_seconds > 0
        counts[mode] = checker.images
        if mode == "full":  # batched: 150 frames in batches of 8
            assert checker.calls == 19
    # 5 s at 30 fps: first, middle, last and one per second = 7 of 150 frames.
    assert counts == {"fast": 7, "full": 150}
    # checkContent alone means fast.
    checker = CountingChecker(load_checker(settings))
    done = run_job(settings, store, checker, engine, safety={"checkContent": True})
    assert done.status is JobStatus.SUCCEEDED and checker.images == 7


def test_no_check_asked_means_no_check_and_no_flag(
        tmp_path: Path, store: SQLiteJobStore, models: dict[str, Path]) -> None:
    settings = Settings(data_dir=tmp_path, safety_model=str(models["flag"]))
    checker = CountingChecker(load_checker(settings))
    done = run_job(settings, store, checker, StripeEngine())
    assert done.status is JobStatus.SUCCEEDED and checker.calls == 0
    assert done.results[0].nsfw is None and done.results[0].safety_seconds is None


def test_flagged_output_is_withheld_and_its_file_never_stored(
        tmp_path: Path, store: SQLiteJobStore, models: dict[str, Path]) -> None:
    settings = Settings(data_dir=tmp_path, safety_model=str(models["flag"]))
    engine = StripeEngine()
    checker = CountingChecker(load_checker(settings))
    done = run_job(settings, store, checker, engine, safety={"checkContent": True},
                   numberResults=2, seed=3)
    assert done.status is JobStatus.FAILED and done.attempts == 1  # not retried
    assert done.error is not None and done.error["code"] == "contentPolicyViolation"
    assert done.error["kind"] == "forbidden"
    assert "result 0 was flagged" in done.error["message"] and "withheld" in done.error["message"]
    assert done.results == [] and engine.rendered == [3]  # stopped at the first flagged result
    artifacts = LocalArtifactStore(settings.data_dir / "artifacts")
    assert list(artifacts.list_keys(OUTPUTS)) == []
    assert not any((settings.data_dir / "work").iterdir())


def test_flagged_output_delivered_when_the_operator_says_so(
        tmp_path: Path, store: SQLiteJobStore, models: dict[str, Path]) -> None:
    settings = Settings(data_dir=tmp_path, safety_model=str(models["flag"]),
                        safety_on_flag="deliver")
    done = run_job(settings, store, None, StripeEngine(), safety={"checkContent": True,
                                                                  "mode": "full"})
    assert done.status is JobStatus.SUCCEEDED
    (result,) = done.results
    assert result.nsfw is True and result.safety_frames == 150
    path = LocalArtifactStore(settings.data_dir / "artifacts").local_path(result.artifact_key)
    assert path is not None and probe(path).num_frames == 150


def test_a_check_without_a_checker_fails_instead_of_passing(
        tmp_path: Path, store: SQLiteJobStore) -> None:
    settings = Settings(data_dir=tmp_path)
    engine = StripeEngine()
    done = run_job(settings, store, None, engine, safety={"checkContent": True})
    # Retried (another worker may have a checker), then failed; never rendered unchecked.
    assert done.status is JobStatus.QUEUED
    worker = Worker(settings, store, LocalArtifactStore(tmp_path / "artifacts"),
                    lambda spec: engine)
    assert worker.run_once()
    done = store.get(done.id)  # type: ignore[assignment]
    assert done is not None and done.status is JobStatus.FAILED
    assert done.error is not None and done.error["code"] == "safetyCheckerUnavailable"
    assert "REELSERVE_SAFETY_MODEL" in done.error["message"] and engine.rendered == []


def test_flagged_input_fails_before_the_engine_is_called(
        tmp_path: Path, store: SQLiteJobStore, models: dict[str, Path]) -> None:
    # Whatever safety_on_flag says: a flagged input is never rendered.
    settings = Settings(data_dir=tmp_path, safety_model=str(models["flag"]),
                        safety_on_flag="deliver")
    engine = StripeEngine()
    checker = CountingChecker(load_checker(settings))
    done = run_job(settings, store, checker, engine, safety={"checkContent": True},
                   inputs={"frameImages": [data_uri(make_png())]})
    assert done.status is JobStatus.FAILED and done.attempts == 1
    assert done.error is not None and done.error["code"] == "contentPolicyViolation"
    assert done.error["parameter"] == "inputs.frameImages"
    assert engine.rendered == [] and checker.images == 1
    # The same input passes a checker that flags nothing, and is counted on the result.
    settings = Settings(data_dir=tmp_path, safety_model=str(models["clean"]))
    done = run_job(settings, store, None, engine, safety={"checkContent": True},
                   inputs={"frameImages": [data_uri(make_png())]})
    assert done.status is JobStatus.SUCCEEDED and engine.rendered
    assert done.results[0].nsfw is False and done.results[0].safety_frames == 1 + 7
