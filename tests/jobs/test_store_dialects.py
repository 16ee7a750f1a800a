"""Store methods the dialects need: list_jobs (owner, origin, offset/cursor paging) and delete.

Runs over every store in ``test_store_contract.STORES``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_store_contract import STORES, store_factory

from reelserve.jobs.rows import job_cursor
from reelserve.jobs.store import JobStore
from reelserve.tasks import GenerationSpec, Job, JobStatus, Workflow


@pytest.fixture(params=sorted(STORES))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobStore]:
    opened = store_factory(request)(tmp_path, 3)
    yield opened
    opened.close()


def _job(owner: str, origin: str, created: float) -> Job:
    task = str(uuid.uuid4())
    spec = GenerationSpec(task_uuid=task, model="klingai:1@1", workflow=Workflow.T2V, width=720,
                          height=720, fps=30, duration=5.0, seeds=[1])
    return Job(id=f"j-{created}", task_uuid=task, owner=owner, origin=origin, spec=spec,
               created_at=created)


def test_list_jobs_by_owner_origin_with_paging(store: JobStore) -> None:
    for i in range(5):
        store.create(_job("a", "openai", i))
    store.create(_job("a", "kling.text2video", 10))
    store.create(_job("b", "openai", 20))
    # create() stamps created_at itself; order follows insertion.
    jobs, cursor = store.list_jobs("a", origin="openai", limit=10)
    assert [j.id for j in jobs] == [f"j-{i}" for i in (4, 3, 2, 1, 0)]
    assert cursor is None
    jobs, _ = store.list_jobs("a", origin="openai", limit=2, offset=2)
    assert [j.id for j in jobs] == ["j-2", "j-1"]
    third = store.get("j-3")
    assert third is not None
    jobs, cursor = store.list_jobs("a", origin="openai", limit=2, after=job_cursor(third))
    assert [j.id for j in jobs] == ["j-2", "j-1"]
    assert cursor is not None
    assert [j.id for j in store.list_jobs("a", origin="openai", after=cursor)[0]] == ["j-0"]
    assert len(store.list_jobs("a", limit=100)[0]) == 6
    assert [j.id for j in store.list_jobs("b")[0]] == ["j-20"]
    # a cursor made from another owner's job still lists only this owner's jobs
    assert store.list_jobs("b", after=job_cursor(third))[0] == []


def test_delete_removes_job_and_stops_its_worker(store: JobStore) -> None:
    store.create(_job("a", "openai", 1))
    claimed = store.claim("w1", 30)
    assert claimed is not None and claimed.status is JobStatus.RUNNING
    assert store.delete(claimed.id) is True
    assert store.get(claimed.id) is None
    assert store.heartbeat(claimed.id, "w1", 30).owned is False
    assert store.finish(claimed.id, "w1") is False
    assert store.delete(claimed.id) is False
