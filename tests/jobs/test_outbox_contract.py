"""JobStore contract, delivery part: the outbox (results, failures, status changes), output
expiry and per-owner counts.

Runs over every store in ``test_store_contract.STORES``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_store_contract import STORES, store_factory

from reelserve.jobs.store import JobStore
from reelserve.tasks import Delivery, GenerationSpec, Job, JobStatus, Result, Workflow

HOOK = "https://hooks.example/in"
PUT = "https://bucket.example/put?sig=1"
CALLBACK = "https://hooks.example/status"


@pytest.fixture(params=sorted(STORES))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobStore]:
    st = store_factory(request)(tmp_path, 3)
    yield st
    st.close()


def make_job(
    owner: str = "o1",
    *,
    hook: str | None = HOOK,
    put: str | None = None,
    status: str | None = None,
    ttl: int | None = None,
    seeds: int = 2,
) -> Job:
    task_uuid = str(uuid.uuid4())
    spec = GenerationSpec(
        task_uuid=task_uuid,
        model="klingai:1@1",
        workflow=Workflow.T2V,
        width=1280,
        height=720,
        fps=30,
        duration=5.0,
        seeds=list(range(1, seeds + 1)),
        ttl=ttl,
        delivery=Delivery(webhook_url=hook, upload_endpoint=put, status_url=status),
    )
    return Job(id=str(uuid.uuid4()), task_uuid=task_uuid, owner=owner, spec=spec)


def make_result(index: int) -> Result:
    return Result(
        index=index,
        video_uuid=str(uuid.uuid4()),
        seed=index,
        artifact_key=f"outputs/r{index}",
        content_type="video/mp4",
        size_bytes=10,
        width=1280,
        height=720,
        fps=30.0,
        num_frames=150,
        duration=5.0,
    )


def running(store: JobStore, job: Job) -> Job:
    store.create(job)
    claimed = store.claim("w1", 30)
    assert claimed is not None and claimed.id == job.id
    return claimed


def test_each_result_and_failure_gets_one_delivery(store: JobStore) -> None:
    job = running(store, make_job(put=PUT))
    assert store.add_result(job.id, "w1", make_result(0))
    assert store.add_result(job.id, "w1", make_result(0))  # idempotent: no second row
    assert store.add_result(job.id, "w1", make_result(1))
    store.fail(job.id, "w1", {"code": "x", "message": "boom", "kind": "internal"})
    rows = store.deliveries(job.id)
    kinds = sorted((r.kind, -1 if r.result_index is None else r.result_index) for r in rows)
    assert kinds == [("upload", 0), ("upload", 1), ("webhook", -1), ("webhook", 0), ("webhook", 1)]
    assert {r.url for r in rows if r.kind == "upload"} == {PUT}
    assert all(r.state == "pending" and r.attempts == 0 for r in rows)


def test_no_targets_no_rows_and_requeue_is_not_a_failure(store: JobStore) -> None:
    quiet = running(store, make_job(hook=None))
    store.add_result(quiet.id, "w1", make_result(0))
    assert store.deliveries(quiet.id) == []
    job = running(store, make_job())
    store.fail(job.id, "w1", {"code": "x", "message": "m", "kind": "internal"}, retry=True)
    assert store.get(job.id).status is JobStatus.QUEUED  # type: ignore[union-attr]
    assert store.deliveries(job.id) == []


def test_cancel_of_a_queued_job_sends_its_failure(store: JobStore) -> None:
    job = make_job()
    store.create(job)
    store.request_cancel(job.id)
    [row] = store.deliveries(job.id)
    assert row.kind == "webhook" and row.result_index is None


def status_rows(store: JobStore, job_id: str) -> list[str | None]:
    return [r.event for r in store.deliveries(job_id) if r.kind == "status"]


def test_each_status_change_gets_one_row(store: JobStore) -> None:
    job = make_job(hook=None, status=CALLBACK)
    store.create(job)
    assert status_rows(store, job.id) == ["queued"]
    claimed = store.claim("w1", 30)
    assert claimed is not None and claimed.id == job.id
    # A retry queues it again and a second claim runs it again: no second row for either.
    store.fail(job.id, "w1", {"code": "x", "message": "m", "kind": "internal"}, retry=True)
    assert store.claim("w2", 30) is not None
    store.add_result(job.id, "w2", make_result(0))
    assert store.finish(job.id, "w2")
    rows = [r for r in store.deliveries(job.id) if r.kind == "status"]
    assert [r.event for r in rows] == ["queued", "running", "succeeded"]
    assert all(r.url == CALLBACK and r.result_index is None for r in rows)
    assert rows[0].created_at <= rows[1].created_at <= rows[2].created_at
    assert len(store.deliveries(job.id)) == 3  # no webhook or upload was asked for


def test_status_rows_for_failure_and_cancel(store: JobStore) -> None:
    failing = running(store, make_job(hook=None, status=CALLBACK))
    store.fail(failing.id, "w1", {"code": "x", "message": "boom", "kind": "internal"})
    assert status_rows(store, failing.id) == ["queued", "running", "failed"]
    cancelled = make_job(hook=None, status=CALLBACK)
    store.create(cancelled)
    store.request_cancel(cancelled.id)
    assert status_rows(store, cancelled.id) == ["queued", "cancelled"]
    plain = running(store, make_job(hook=HOOK))
    store.finish(plain.id, "w1")
    assert status_rows(store, plain.id) == []  # no status URL, no status rows


def test_status_rows_of_a_job_are_claimed_in_order(store: JobStore) -> None:
    job = running(store, make_job(hook=None, status=CALLBACK))
    store.finish(job.id, "w1")
    other = make_job(hook=None, status=CALLBACK)
    store.create(other)
    # Only the first row of each job is due; the later ones wait for it.
    first = store.claim_deliveries("d1", 30, 10)
    assert sorted((r.job_id, r.event) for r in first) == sorted(
        [(job.id, "queued"), (other.id, "queued")]
    )
    assert store.claim_deliveries("d2", 30, 10) == []  # in flight still blocks the next
    mine = next(r for r in first if r.job_id == job.id)
    retry = {"attempt": 1, "at": time.time(), "status": 503, "ms": 1, "error": "HTTP 503"}
    assert store.record_delivery(mine.id, "d1", retry, state="pending", next_at=time.time() + 0.2)
    assert store.claim_deliveries("d2", 30, 10) == []  # a retry not yet due still blocks
    time.sleep(0.25)
    [again] = store.claim_deliveries("d2", 30, 10)  # the retry goes before the next status
    assert again.id == mine.id
    gave_up = {"attempt": 2, "at": time.time(), "status": 503, "ms": 1, "error": "HTTP 503"}
    assert store.record_delivery(mine.id, "d2", gave_up, state="failed")
    [running_row] = store.claim_deliveries("d2", 30, 10)  # a given-up row unblocks the next
    assert (running_row.job_id, running_row.event) == (job.id, "running")
    ok = {"attempt": 1, "at": time.time(), "status": 200, "ms": 1}
    store.record_delivery(running_row.id, "d2", ok, state="delivered")
    [last] = store.claim_deliveries("d3", 30, 10)
    assert (last.job_id, last.event) == (job.id, "succeeded")


def test_claim_leases_and_record_releases(store: JobStore) -> None:
    job = running(store, make_job())
    store.add_result(job.id, "w1", make_result(0))
    [rec] = store.claim_deliveries("d1", 30, 10)
    assert store.claim_deliveries("d2", 30, 10) == []  # leased by d1
    attempt = {"attempt": 1, "at": time.time(), "status": 503, "ms": 3, "error": "HTTP 503"}
    assert not store.record_delivery(rec.id, "d2", attempt, state="pending", next_at=0)
    assert store.record_delivery(rec.id, "d1", attempt, state="pending", next_at=time.time() + 60)
    assert store.claim_deliveries("d2", 30, 10) == []  # not due yet
    [row] = store.deliveries(job.id)
    assert row.attempts == 1 and row.last_status == 503 and row.last_error == "HTTP 503"
    assert row.history == (attempt,)


def test_due_retry_and_expired_lease_are_claimed_again(store: JobStore) -> None:
    job = running(store, make_job())
    store.add_result(job.id, "w1", make_result(0))
    [rec] = store.claim_deliveries("d1", 0.05, 10)
    time.sleep(0.1)  # d1 died mid-attempt: its lease runs out
    [again] = store.claim_deliveries("d2", 30, 10)
    assert again.id == rec.id
    ok = {"attempt": 1, "at": time.time(), "status": 200, "ms": 1}
    assert store.record_delivery(again.id, "d2", ok, state="delivered")
    assert store.claim_deliveries("d3", 30, 10) == []
    assert store.deliveries(job.id)[0].state == "delivered"


@pytest.mark.parametrize("name", sorted(STORES))
def test_outbox_survives_reopening(
    request: pytest.FixtureRequest, tmp_path: Path, name: str
) -> None:
    factory = store_factory(request, name)
    first = factory(tmp_path, 3)
    job = running(first, make_job())
    first.add_result(job.id, "w1", make_result(0))
    first.close()
    second = factory(tmp_path, 3)
    [rec] = second.claim_deliveries("d", 30, 10)
    assert rec.job_id == job.id
    second.close()


def test_expired_outputs_follow_task_ttl(store: JobStore) -> None:
    short = running(store, make_job(ttl=60, hook=None))
    store.add_result(short.id, "w1", make_result(0))
    default = running(store, make_job(hook=None))
    store.add_result(default.id, "w1", make_result(0))
    now = time.time()
    assert store.expired_outputs(now, 86400) == []
    [(job_id, result)] = store.expired_outputs(now + 61, 86400)
    assert job_id == short.id and result.index == 0
    assert len(store.expired_outputs(now + 86401, 86400)) == 2
    store.mark_expired(short.id, 0)
    assert [j for j, _ in store.expired_outputs(now + 86401, 86400)] == [default.id]


def test_count_active(store: JobStore) -> None:
    a, b = make_job("x"), make_job("x")
    store.create(a)
    store.create(b)
    store.create(make_job("y"))
    assert store.count_active("x") == 2
    claimed = store.claim("w", 30)
    assert claimed is not None
    store.finish(claimed.id, "w")
    assert store.count_active("x") + store.count_active("y") == 2
