"""The JobStore contract for claim preference: jobs for loaded models go first, within bounds.

Runs over every implementation in ``test_store_contract.STORES``. The SQLite migration that adds
the indexed model column is checked at the end against a file written by the previous schema.
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
from reelserve.jobs.store import JobStore
from reelserve.tasks import GenerationSpec, Job, JobStatus, Workflow

A, B = "klingai:1@1", "klingai:1@2"


@pytest.fixture(params=sorted(STORES))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobStore]:
    opened = store_factory(request)(tmp_path, 3)
    yield opened
    opened.close()


def queue(store: JobStore, *models: str) -> list[str]:
    """Create one queued job per model, in this order (distinct creation times), return ids."""
    ids = []
    for model in models:
        task_uuid = str(uuid.uuid4())
        spec = GenerationSpec(task_uuid=task_uuid, model=model, workflow=Workflow.T2V, width=720,
                              height=720, fps=30, duration=5.0, seeds=[1])
        job = store.create(Job(id=str(uuid.uuid4()), task_uuid=task_uuid, owner="o",
                               request={"taskUUID": task_uuid}, spec=spec))
        ids.append(job.id)
        time.sleep(0.005)
    return ids


def claim_model(store: JobStore, prefer: set[str], max_wait: float = 30.0) -> str | None:
    job = store.claim("w", 30, prefer_models=prefer, prefer_max_wait=max_wait)
    return job.spec.model if job is not None else None


def test_oldest_job_for_a_preferred_model_goes_first(store: JobStore) -> None:
    a1, b1, b2, a2 = queue(store, A, B, B, A)
    order = [store.claim("w", 30, prefer_models={B}) for _ in range(4)]
    assert [j.id for j in order if j is not None] == [b1, b2, a1, a2]
    assert all(j is not None and j.status is JobStatus.RUNNING and j.attempts == 1 for j in order)


def test_without_preference_or_preferred_jobs_the_order_is_arrival(store: JobStore) -> None:
    queue(store, A, B, A)
    assert claim_model(store, set()) == A
    # Preferring a model nobody asked for never leaves a job unclaimed.
    assert claim_model(store, {"klingai:5@3"}) == B
    assert claim_model(store, {"klingai:5@3"}) == A
    assert store.claim("w", 30, prefer_models={A}) is None


def test_a_job_waiting_longer_than_max_wait_is_not_passed_over(store: JobStore) -> None:
    old_a, = queue(store, A)
    time.sleep(0.2)
    queue(store, B, B)
    # The A job waited 0.2 s: with a longer bound the B jobs overtake it ...
    assert claim_model(store, {B}, max_wait=30) == B
    # ... with a shorter one it goes first, whatever the worker prefers.
    job = store.claim("w", 30, prefer_models={B}, prefer_max_wait=0.1)
    assert job is not None and job.id == old_a
    assert claim_model(store, {B}, max_wait=0.1) == B


def test_max_wait_zero_is_strict_arrival_order(store: JobStore) -> None:
    queue(store, A, B, A, B)
    assert [claim_model(store, {B}, max_wait=0) for _ in range(4)] == [A, B, A, B]


def test_an_expired_lease_of_a_preferred_model_is_reclaimed_first(store: JobStore) -> None:
    b_id, = queue(store, B)
    assert store.claim("dead", 0.05) is not None
    queue(store, A)
    time.sleep(0.1)  # the dead worker's lease expires; the B job is older than the A job anyway
    again = store.claim("w", 30, prefer_models={A})
    assert again is not None and again.spec.model == A
    retried = store.claim("w", 30, prefer_models={A})
    assert retried is not None and retried.id == b_id and retried.attempts == 2


def test_sqlite_migration_backfills_the_model_column(tmp_path: Path) -> None:
    """A file written by schema 2 (no model column) keeps its jobs preferable after upgrading."""
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    for script in MIGRATIONS[:2]:
        conn.executescript(script)
    conn.execute("PRAGMA user_version = 2")
    now = time.time()  # recent: neither job has waited past the preference bound
    for n, model in enumerate((A, B)):
        spec = GenerationSpec(task_uuid=f"t{n}", model=model, workflow=Workflow.T2V, width=720,
                              height=720, fps=30, duration=5.0, seeds=[1])
        conn.execute(
            "INSERT INTO jobs (id, owner, task_uuid, origin, origin_data, request, spec, status, "
            "created_at, updated_at) VALUES (?, 'o', ?, 'runware', '{}', '{}', ?, 'queued', ?, ?)",
            (f"j{n}", f"t{n}", spec.model_dump_json(), now + n / 1000, now + n / 1000),
        )
    conn.close()
    store = SQLiteJobStore(path)
    try:
        job = store.claim("w", 30, prefer_models={B})
        assert job is not None and job.id == "j1"
        rows = store._conn().execute("SELECT id, model FROM jobs ORDER BY id").fetchall()
        assert [tuple(r) for r in rows] == [("j0", A), ("j1", B)]
    finally:
        store.close()
