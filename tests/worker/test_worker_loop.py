"""The worker loop in-process: real SQLite store, real artifact store, real encoder, tiny engine."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import pytest
from tiny_engine import TinyEngine

from reelserve.api.runware.schema import parse_video_inference
from reelserve.catalog.validate import validate
from reelserve.delivery.storage import LocalArtifactStore
from reelserve.errors import EngineError, ValidationError
from reelserve.jobs.sqlite import SQLiteJobStore
from reelserve.media.probe import probe
from reelserve.settings import Settings
from reelserve.tasks import Job, JobStatus, Result
from reelserve.worker.loop import Worker


@pytest.fixture
def env(tmp_path: Path) -> tuple[Settings, SQLiteJobStore, LocalArtifactStore]:
    settings = Settings(data_dir=tmp_path, lease_seconds=5, max_attempts=2)
    store = SQLiteJobStore(tmp_path / "db.sqlite", max_attempts=2)
    yield settings, store, LocalArtifactStore(tmp_path / "artifacts")  # type: ignore[misc]
    store.close()


def submit(store: SQLiteJobStore, **extra: object) -> Job:
    task = {"taskType": "videoInference", "taskUUID": str(uuid.uuid4()), "model": "klingai:1@1",
            "positivePrompt": "a red kite", "width": 720, "height": 720, "duration": 5,
            "includeCost": True, **extra}
    spec = validate(parse_video_inference(task))
    return store.create(Job(id=str(uuid.uuid4()), task_uuid=spec.task_uuid, owner="o",
                            request=task, spec=spec))


def test_job_renders_encodes_stores_and_finishes(env: tuple[Settings, SQLiteJobStore, LocalArtifactStore]) -> None:
    settings, store, artifacts = env
    job = submit(store, numberResults=2, seed=7)
    engine = TinyEngine()
    assert Worker(settings, store, artifacts, lambda spec: engine).run_once()
    done = store.get(job.id)
    assert done is not None and done.status is JobStatus.SUCCEEDED
    assert [r.seed for r in done.results] == [7, 8] and done.cost == pytest.approx(0.3696)
    for result in done.results:
        path = artifacts.local_path(result.artifact_key)
        assert path is not None
        facts = probe(path)
        assert (facts.width, facts.height, facts.num_frames) == (720, 720, 150)
        assert result.num_frames == 150 and result.cost == 0.1848
    assert not any((Path(settings.data_dir) / "work").iterdir())


def test_reelserve_error_becomes_the_job_error(env: tuple[Settings, SQLiteJobStore, LocalArtifactStore]) -> None:
    settings, store, artifacts = env
    job = submit(store)
    err = ValidationError("invalidThing", "thing 3 is not allowed; allowed: 1, 2",
                          parameter="thing", allowed_values=[1, 2])
    Worker(settings, store, artifacts, lambda spec: TinyEngine(fail=err)).run_once()
    done = store.get(job.id)
    assert done is not None and done.status is JobStatus.FAILED
    assert done.error == {"code": "invalidThing", "message": "thing 3 is not allowed; allowed: 1, 2",
                          "parameter": "thing", "allowedValues": [1, 2], "kind": "invalid"}


def test_crashes_are_retried_then_end_with_an_error(env: tuple[Settings, SQLiteJobStore, LocalArtifactStore]) -> None:
    settings, store, artifacts = env
    job = submit(store)
    engine = TinyEngine(fail=RuntimeError("gpu fell over"))
    worker = Worker(settings, store, artifacts, lambda spec: engine)
    assert worker.run_once()
    assert store.get(job.id).status is JobStatus.QUEUED  # type: ignore[union-attr]
    assert worker.run_once()
    done = store.get(job.id)
    assert done is not None and done.status is JobStatus.FAILED and done.attempts == 2
    assert done.error is not None and done.error["code"] == "internalError"
    assert "gpu fell over" in done.error["message"]
    # An engine error of kind INTERNAL is retried the same way.
    job2 = submit(store)
    worker2 = Worker(settings, store, artifacts,
                     lambda spec: TinyEngine(fail=EngineError("engineFailed", "out of memory")))
    worker2.run_once()
    worker2.run_once()
    assert store.get(job2.id).error["code"] == "engineFailed"  # type: ignore[union-attr,index]


def test_cancel_while_running(env: tuple[Settings, SQLiteJobStore, LocalArtifactStore]) -> None:
    settings, store, artifacts = env
    settings = settings.model_copy(update={"lease_seconds": 0.3})
    job = submit(store, duration=10)
    started = threading.Event()

    def on_frame(i: int) -> None:
        if i == 5:
            started.set()
        if i > 5:
            started.wait()
            threading.Event().wait(0.01)

    worker = Worker(settings, store, artifacts, lambda spec: TinyEngine(on_frame=on_frame))
    thread = threading.Thread(target=worker.run_once)
    thread.start()
    assert started.wait(30)
    store.request_cancel(job.id)
    thread.join(30)
    done = store.get(job.id)
    assert done is not None and done.status is JobStatus.CANCELLED and done.results == []


def test_results_recorded_before_a_crash_are_kept(env: tuple[Settings, SQLiteJobStore, LocalArtifactStore]) -> None:
    """A worker that loses its lease writes nothing; a retry renders only missing results."""
    settings, store, artifacts = env
    engine = TinyEngine()
    worker = Worker(settings, store, artifacts, lambda spec: engine)
    # A crash after result 0 was recorded: the retry renders only result 1.
    job2 = submit(store, numberResults=2, seed=200)
    claimed2 = store.claim("w1", 30)
    assert claimed2 is not None and claimed2.id == job2.id
    kept = Result(index=0, video_uuid=str(uuid.uuid4()), seed=200, artifact_key="outputs/x",
                  content_type="video/mp4", size_bytes=1, width=720, height=720, fps=30,
                  num_frames=150, duration=5, cost=0.1848)
    assert store.add_result(job2.id, "w1", kept)
    store.fail(job2.id, "w1", {"code": "internalError", "message": "crash"}, retry=True)
    engine.calls.clear()
    assert worker.run_once()
    done = store.get(job2.id)
    assert done is not None and done.status is JobStatus.SUCCEEDED
    assert engine.calls == [201]
    assert done.results[0].video_uuid == kept.video_uuid
