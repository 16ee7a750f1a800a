"""The worker loop in-process: real SQLite store, real artifact store, real encoder, tiny engine."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import pytest
from tiny_engine import ResidentSelector, TinyBatchEngine, TinyEngine

from reelserve.api.runware.schema import parse_video_inference
from reelserve.catalog.validate import validate
from reelserve.client._wire import error_from_wire
from reelserve.delivery.storage import LocalArtifactStore
from reelserve.errors import (
    CANCELLED_CODE,
    CancelledError,
    EngineError,
    ValidationError,
    WorkerBrokenError,
)
from reelserve.jobs.sqlite import SQLiteJobStore
from reelserve.media.probe import probe
from reelserve.settings import Settings
from reelserve.tasks import Job, JobStatus, Result
from reelserve.worker.loop import Worker
from reelserve_testing import make_video


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


def test_a_broken_worker_writes_nothing_and_claims_no_more(
        env: tuple[Settings, SQLiteJobStore, LocalArtifactStore]) -> None:
    # A render split over a GPU group failed (a rank died): not the job's fault, so no retry is
    # spent and nothing is written, but the job is not handed back either (a job that breaks
    # every group must not loop for ever): its lease runs out, which counts as a loss.
    settings, store, artifacts = env
    first, second = submit(store), submit(store)
    engine = TinyEngine(fail=WorkerBrokenError("workerUnavailable", "rank 0 lost rank 1"))
    worker = Worker(settings, store, artifacts, lambda spec: engine)
    stop = threading.Event()
    runner = threading.Thread(target=worker.run, args=(stop, 0.05))
    runner.start()
    runner.join(10)
    assert not runner.is_alive() and not stop.is_set()  # it left on its own, after one job
    assert worker.broken.is_set()
    claimed = [store.get(first.id), store.get(second.id)]
    assert [j.status for j in claimed if j is not None] == [JobStatus.RUNNING, JobStatus.QUEUED]
    running = claimed[0]
    assert running is not None and running.attempts == 1 and running.error is None
    assert running.results == []


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
    # One cancellation code, whichever layer noticed; the Python client rebuilds its class from it.
    assert done.error is not None and done.error["code"] == CANCELLED_CODE
    assert isinstance(error_from_wire(done.error), CancelledError)


def test_edit_video_within_the_snap_tolerance_is_rendered(
    env: tuple[Settings, SQLiteJobStore, LocalArtifactStore], tmp_path: Path
) -> None:
    """Issue 11: a 10.05 s v2v input (O1 edits 3-10 s; 0.1 s snap) was refused by media/inputs
    before resolve_media could snap it. The worker now renders it at 10 s."""
    settings, store, artifacts = env
    video = make_video(tmp_path / "edit.mp4", width=320, height=320, frames=201, fps=20)
    assert probe(video).duration == pytest.approx(10.05)
    media_uuid = str(uuid.uuid4())
    artifacts.put_file(f"uploads/{media_uuid}", video, content_type="video/mp4", owner="o",
                       extension="mp4")
    task = {"taskType": "videoInference", "taskUUID": str(uuid.uuid4()),
            "model": "klingai:kling@o1-standard", "positivePrompt": "make it snow",
            "inputs": {"video": media_uuid}}
    spec = validate(parse_video_inference(task))
    job = store.create(Job(id=str(uuid.uuid4()), task_uuid=spec.task_uuid, owner="o",
                           request=task, spec=spec))
    assert Worker(settings, store, artifacts, lambda spec: TinyEngine()).run_once()
    done = store.get(job.id)
    assert done is not None and done.status is JobStatus.SUCCEEDED, done.error if done else None
    (result,) = done.results
    assert (result.width, result.height, result.duration) == (320, 320, pytest.approx(10.0))


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


def test_jobs_for_the_loaded_model_are_claimed_first(env: tuple[Settings, SQLiteJobStore, LocalArtifactStore]) -> None:
    settings, store, artifacts = env
    a, b = "klingai:1@1", "klingai:1@2"
    for model in (a, b, a):
        submit(store, model=model)
    selector = ResidentSelector()
    worker = Worker(settings, store, artifacts, selector)
    while worker.run_once():
        pass
    # Nothing loaded at first: arrival order; then the loaded model's later job overtakes.
    assert selector.served == [a, a, b]
    # With no wait allowed past arrival order, the preference never reorders anything.
    for model in (a, b, a):
        submit(store, model=model)
    strict = Worker(settings.model_copy(update={"prefer_max_wait": 0.0}), store, artifacts, selector)
    selector.served.clear()
    while strict.run_once():
        pass
    assert selector.served == [a, b, a]


def test_batch_engine_renders_missing_seeds_in_groups(env: tuple[Settings, SQLiteJobStore, LocalArtifactStore]) -> None:
    settings, store, artifacts = env
    engine = TinyBatchEngine(batch=2)
    worker = Worker(settings, store, artifacts, lambda spec: engine)
    job = submit(store, numberResults=3, seed=10)
    assert worker.run_once()
    done = store.get(job.id)
    assert done is not None and done.status is JobStatus.SUCCEEDED
    assert [r.seed for r in done.results] == [10, 11, 12] and len({r.video_uuid for r in done.results}) == 3
    # Two seeds in one call, the third alone (a group of one is a plain generate).
    assert engine.batches == [[10, 11]] and engine.calls == [10, 11, 12]
    # After a crash that kept result 0, only the missing seeds are rendered, together.
    job2 = submit(store, numberResults=3, seed=20)
    assert store.claim("w1", 30) is not None
    kept = Result(index=0, video_uuid=str(uuid.uuid4()), seed=20, artifact_key="outputs/x",
                  content_type="video/mp4", size_bytes=1, width=720, height=720, fps=30,
                  num_frames=150, duration=5, cost=0.1848)
    assert store.add_result(job2.id, "w1", kept)
    store.fail(job2.id, "w1", {"code": "internalError", "message": "crash"}, retry=True)
    engine.batches.clear()
    engine.calls.clear()
    assert worker.run_once()
    done2 = store.get(job2.id)
    assert done2 is not None and done2.status is JobStatus.SUCCEEDED
    assert engine.batches == [[21, 22]] and engine.calls == [21, 22]
    assert done2.results[0].video_uuid == kept.video_uuid
    assert [r.seed for r in done2.results] == [20, 21, 22]
