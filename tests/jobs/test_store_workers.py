"""The JobStore contract for split deployments: the ``workers`` table and claims limited to the
routes (model id x workflow) a worker serves.

Runs over every implementation in ``test_store_contract.STORES``; the SQLite migration that adds
the route column is checked against a file written by the previous schema.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_store_contract import STORES, store_factory

from reelserve.jobs.sqlite import MIGRATIONS, SQLiteJobStore
from reelserve.jobs.store import JobStore, WorkerInfo, route_key
from reelserve.settings import Settings
from reelserve.tasks import GenerationSpec, Job, Result, Workflow
from reelserve.worker.loop import served_routes

A, B = "klingai:1@1", "klingai:3@1"


@pytest.fixture(params=sorted(STORES))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobStore]:
    opened = store_factory(request)(tmp_path, 3)
    yield opened
    opened.close()


def queue(store: JobStore, *routes: tuple[str, Workflow]) -> list[str]:
    ids = []
    for model, workflow in routes:
        task_uuid = str(uuid.uuid4())
        spec = GenerationSpec(task_uuid=task_uuid, model=model, workflow=workflow, width=720,
                              height=720, fps=30, duration=5.0, seeds=[1])
        ids.append(store.create(Job(id=str(uuid.uuid4()), task_uuid=task_uuid, owner="o",
                                    spec=spec)).id)
        time.sleep(0.005)
    return ids


def info(worker_id: str, serves: tuple[str, ...] | None = None) -> WorkerInfo:
    caps = ({"model": A, "workflow": "t2v", "engine": "diffusers", "pipeline": "ltx2",
             "sound": True},)
    return WorkerInfo(worker_id=worker_id, host="h", pid=7, started_at=time.time(),
                      last_seen=0.0, capabilities=caps, serves=serves)


def test_a_claim_takes_only_the_routes_it_serves(store: JobStore) -> None:
    a_t2v, b_t2v, a_i2v = queue(store, (A, Workflow.T2V), (B, Workflow.T2V), (A, Workflow.I2V))
    only_b = store.claim("wb", 30, serves=[route_key(B, "t2v")])
    assert only_b is not None and only_b.id == b_t2v
    assert store.claim("wb", 30, serves=[route_key(B, "t2v")]) is None  # A's jobs stay queued
    assert store.claim("none", 30, serves=[]) is None  # serves nothing: claims nothing
    # The filter and the model preference combine: A's i2v is preferred over nothing else here.
    job = store.claim("wa", 30, serves=[route_key(A, "i2v")], prefer_models={A})
    assert job is not None and job.id == a_i2v
    anything = store.claim("w", 30)  # no filter: any job
    assert anything is not None and anything.id == a_t2v


def test_workers_publish_beat_and_leave(store: JobStore) -> None:
    assert store.live_workers() == []
    store.publish_worker(info("w1", (route_key(A, "t2v"),)))
    store.publish_worker(info("w2"))
    [w1, w2] = store.live_workers()
    assert (w1.worker_id, w1.host, w1.pid, w1.serves) == ("w1", "h", 7, (route_key(A, "t2v"),))
    assert w1.capabilities[0]["pipeline"] == "ltx2" and w2.serves is None
    assert abs(w1.last_seen - time.time()) < 5  # the store's clock, not the given value
    seen = w1.last_seen
    time.sleep(0.05)
    assert store.touch_worker("w1") is True
    assert store.live_workers()[0].last_seen > seen
    assert store.touch_worker("gone") is False  # no row: the worker publishes again
    # A worker whose last beat is older than the window is not live.
    time.sleep(0.3)
    store.touch_worker("w2")
    assert [w.worker_id for w in store.live_workers(max_age=0.2)] == ["w2"]
    store.remove_worker("w2")
    assert [w.worker_id for w in store.live_workers()] == ["w1"]


def test_safety_time_is_a_measured_duration(store: JobStore) -> None:
    [job_id] = queue(store, (A, Workflow.T2V))
    assert store.claim("w", 30) is not None
    result = Result(index=0, video_uuid=str(uuid.uuid4()), seed=1, artifact_key="k",
                    content_type="video/mp4", size_bytes=1, width=720, height=720, fps=30,
                    num_frames=150, duration=5.0, safety_seconds=0.3, render_seconds=1.0,
                    encode_seconds=0.5)
    assert store.add_result(job_id, "w", result)
    safety = store.durations()["safety"]
    assert safety.count == 1 and abs(safety.total - 0.3) < 1e-9


def test_what_a_worker_serves_follows_its_profiles(tmp_path: Path) -> None:
    every, serves = served_routes(Settings(_env_file=None, data_dir=tmp_path))  # type: ignore[call-arg]
    assert serves is None and len(every) >= 12  # the preview engine renders every route
    (tmp_path / "w").mkdir()
    (tmp_path / "p.toml").write_text(
        f'[models."{A}".t2v]\npipeline = "ltx2"\nweights = "w"\n', encoding="utf-8")
    strict = Settings(_env_file=None, data_dir=tmp_path, profiles=tmp_path / "p.toml",  # type: ignore[call-arg]
                      preview_fallback=False)
    caps, serves = served_routes(strict)
    assert serves == (route_key(A, "t2v"),) and caps[0]["sound"] is True
    # Profiles that cannot be read: the worker claims anything and fails it with the cause.
    (tmp_path / "p.toml").write_text("not toml [", encoding="utf-8")
    assert served_routes(strict) == ([], None)


def test_sqlite_migration_backfills_the_route_column(tmp_path: Path) -> None:
    """Jobs written by schema 6 (no route column) are claimed by a worker serving their route."""
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    for script in MIGRATIONS[:6]:
        conn.executescript(script)
    conn.execute("PRAGMA user_version = 6")
    now = time.time()
    for n, (model, workflow) in enumerate(((A, Workflow.T2V), (B, Workflow.I2V))):
        spec = GenerationSpec(task_uuid=f"t{n}", model=model, workflow=workflow, width=720,
                              height=720, fps=30, duration=5.0, seeds=[1])
        conn.execute(
            "INSERT INTO jobs (id, owner, task_uuid, origin, origin_data, request, spec, model, "
            "status, created_at, updated_at) "
            "VALUES (?, 'o', ?, 'runware', '{}', '{}', ?, ?, 'queued', ?, ?)",
            (f"j{n}", f"t{n}", spec.model_dump_json(), model, now + n / 1000, now + n / 1000),
        )
    conn.close()
    store = SQLiteJobStore(path)
    try:
        job = store.claim("w", 30, serves=[route_key(B, "i2v")])
        assert job is not None and job.id == "j1"
        assert store.live_workers() == []
    finally:
        store.close()


def test_reelserve_workers_lists_live_workers(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from reelserve.cli import main

    monkeypatch.chdir(tmp_path)  # no .env file
    assert main(["workers", "--data-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.startswith("no live workers: submits are accepted and queued")
    store = SQLiteJobStore(tmp_path / "reelserve.db")
    try:
        caps, _ = served_routes(Settings(_env_file=None, data_dir=tmp_path))  # type: ignore[call-arg]
        store.publish_worker(WorkerInfo(worker_id="gpu0:1", host="box", pid=42,
                                        started_at=time.time() - 125, last_seen=0.0,
                                        capabilities=tuple(caps)))
        store.publish_worker(info("gpu1:2", (route_key(A, "t2v"),)))
    finally:
        store.close()
    assert main(["workers", "--data-dir", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("gpu0:1  host=box pid=42 up=2m0") and "claims=any job" in lines[0]
    assert lines[1].startswith(f"  preview: {len(caps)} model/workflow routes  [")
    assert "keepOriginalSound" in lines[1] and "camera: 12 move(s)" in lines[1]
    assert lines[2].startswith("gpu1:2  host=h pid=7") and "claims=1 route(s)" in lines[2]
    assert lines[3] == f"  ltx2: {A}/t2v  [sound]"
