"""What the job stores share around their SQL: row mapping and the decisions of each write.

:class:`~reelserve.jobs.sqlite.SQLiteJobStore` and :class:`~reelserve.jobs.postgres.
PostgresJobStore` keep the same tables and do the same things with them; only their SQL dialect,
locking and clock differ. Everything else lives here, once: turning rows into
:class:`~reelserve.tasks.Job`, :class:`~reelserve.tasks.Result` and
:class:`~reelserve.jobs.store.DeliveryRecord` values, the JSON columns, the claim-order rule, what
a claim or a failure does with a job, and which outbox rows each change adds (with their
deterministic ids). Each store runs the SQL; these functions only read rows and decide.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from reelserve.errors import ConflictError
from reelserve.jobs.store import DeliveryRecord
from reelserve.tasks import GenerationSpec, Job, JobStatus, Result

JOB_COLUMNS = (
    "id, owner, task_uuid, origin, origin_data, request, spec, status, progress, attempts, "
    "cancel_requested, error, cost, created_at, updated_at"
)
"""The ``jobs`` columns :func:`job_from_row` reads (the same names in every store's schema)."""

HISTORY_KEPT = 20
"""How many attempts a delivery's ``history`` keeps (the newest)."""

_CANCELLED_BEFORE_START = {
    "code": "taskCancelled",
    "message": "the task was cancelled before it started",
    "kind": "invalid",
}


class Row(Protocol):
    """A database row read by column name (``sqlite3.Row``, psycopg's ``dict_row``)."""

    def __getitem__(self, key: str, /) -> Any: ...


# ------------------------------------------------------------------ rows to values


def job_from_row(row: Row, results: Iterable[str]) -> Job:
    """The job of a row with the :data:`JOB_COLUMNS`, with its results' JSON in index order."""
    return Job(
        id=row["id"],
        owner=row["owner"],
        task_uuid=row["task_uuid"],
        origin=row["origin"],
        origin_data=json.loads(row["origin_data"]),
        request=json.loads(row["request"]),
        spec=GenerationSpec.model_validate_json(row["spec"]),
        status=JobStatus(row["status"]),
        progress=row["progress"],
        attempts=row["attempts"],
        # SQLite stores the flag as 0/1, PostgreSQL as a boolean.
        cancel_requested=bool(row["cancel_requested"]),
        error=json.loads(row["error"]) if row["error"] else None,
        results=[Result.model_validate_json(data) for data in results],
        cost=row["cost"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def result_from_row(row: Row) -> Result:
    """The result stored in a ``results`` row's ``data`` column."""
    return Result.model_validate_json(row["data"])


def delivery_from_row(row: Row) -> DeliveryRecord:
    """The outbox entry of a ``deliveries`` row (every column of it)."""
    return DeliveryRecord(
        id=row["id"],
        job_id=row["job_id"],
        kind=row["kind"],
        url=row["url"],
        result_index=row["result_index"],
        state=row["state"],
        attempts=row["attempts"],
        next_at=row["next_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        last_status=row["last_status"],
        last_error=row["last_error"],
        history=tuple(json.loads(row["history"])),
        event=row["event"],
    )


# ------------------------------------------------------------------ values to columns


def new_job_values(job: Job) -> tuple[Any, ...]:
    """A new job's ``id, owner, task_uuid, origin, origin_data, request, spec, model, status``
    (queued), in that order, as the INSERT stores them."""
    return (
        job.id,
        job.owner,
        job.task_uuid,
        job.origin,
        json.dumps(job.origin_data),
        json.dumps(job.request),
        job.spec.model_dump_json(),
        job.spec.model,
        JobStatus.QUEUED.value,
    )


def error_json(error: dict[str, Any] | None) -> str | None:
    """The ``error`` column of a job ending with ``error`` (NULL for None)."""
    return None if error is None else json.dumps(error)


def attempt_columns(history: str, attempt: dict[str, Any]) -> tuple[Any, Any, str]:
    """``last_status``, ``last_error`` and ``history`` of a delivery after ``attempt``.

    ``history`` is the stored JSON list; the new one keeps the last :data:`HISTORY_KEPT`.
    """
    attempts: list[dict[str, Any]] = json.loads(history)
    attempts.append(attempt)
    return attempt.get("status"), attempt.get("error"), json.dumps(attempts[-HISTORY_KEPT:])


def task_uuid_conflict(job: Job) -> ConflictError:
    """The refusal of a job whose owner already has a job with its task UUID."""
    return ConflictError(
        "conflictTaskUUID",
        f"taskUUID {job.task_uuid!r} was already used by this API key; send a new UUID "
        "for a new task, or poll the existing one with getResponse",
        parameter="taskUUID",
    )


# ------------------------------------------------------------------ arguments


def page_bounds(limit: int, offset: int) -> tuple[int, int]:
    """``LIMIT`` and ``OFFSET`` of a list: negative values count as 0."""
    return max(0, limit), max(0, offset)


def clamp_progress(progress: float) -> float:
    """Progress as stored: within 0-100."""
    return max(0.0, min(100.0, progress))


# ------------------------------------------------------------------ delivery outbox


@dataclass(frozen=True)
class DeliveryTargets:
    """Where a job's deliveries go: its ``spec.delivery`` URLs (None or empty: nowhere)."""

    webhook_url: str | None = None
    upload_endpoint: str | None = None
    status_url: str | None = None

    @classmethod
    def of(cls, spec: GenerationSpec) -> DeliveryTargets:
        """The targets of a spec."""
        delivery = spec.delivery
        return cls(delivery.webhook_url, delivery.upload_endpoint, delivery.status_url)

    @classmethod
    def from_row(cls, row: Row) -> DeliveryTargets:
        """The targets a store's query extracted from the stored spec into the columns
        ``webhook_url``, ``upload_endpoint`` and ``status_url``."""
        return cls(row["webhook_url"], row["upload_endpoint"], row["status_url"])


@dataclass(frozen=True)
class NewDelivery:
    """An outbox row to add (pending, due now). Its ``id`` is deterministic, so adding the same
    row twice leaves the first one as it is (stores insert with "on conflict do nothing")."""

    id: str
    job_id: str
    kind: str
    url: str
    result_index: int | None = None
    event: str | None = None


def result_deliveries(job_id: str, targets: DeliveryTargets, index: int) -> list[NewDelivery]:
    """The rows a new result adds: its webhook POST and its upload PUT (``job:kind:index``)."""
    return [
        NewDelivery(f"{job_id}:{kind}:{index}", job_id, kind, url, result_index=index)
        for kind, url in (("webhook", targets.webhook_url), ("upload", targets.upload_endpoint))
        if url
    ]


def status_deliveries(
    job_id: str, targets: DeliveryTargets, status: JobStatus
) -> list[NewDelivery]:
    """The row a job entering ``status`` adds when it asks for status changes.

    The id ``job:status:<status>`` makes a repeat (a job claimed again after its worker died, a
    retry that queues it again) a no-op: a receiver hears each status of a job once.
    """
    if not targets.status_url:
        return []
    return [NewDelivery(f"{job_id}:status:{status.value}", job_id, "status", targets.status_url,
                        event=status.value)]


def end_deliveries(job_id: str, targets: DeliveryTargets, status: JobStatus) -> list[NewDelivery]:
    """The rows a job that ends without success (failed or cancelled) adds: its failure webhook
    (``job:webhook:error``; a failure uploads nothing), then its status change."""
    rows: list[NewDelivery] = []
    if targets.webhook_url:
        rows.append(NewDelivery(f"{job_id}:webhook:error", job_id, "webhook", targets.webhook_url))
    return rows + status_deliveries(job_id, targets, status)


# ------------------------------------------------------------------ claims and endings


def claim_preference(prefer_models: Collection[str]) -> list[str]:
    """The models a claim prefers, deduplicated and in a stable order (for the SQL arguments)."""
    return sorted(set(prefer_models))


def takes_oldest(oldest: Row, prefer: Collection[str], waited: bool) -> bool:
    """Whether a claim takes ``oldest`` (the oldest runnable job, with its ``model`` column)
    without looking for a job of a preferred model.

    That is the claim-order rule of :meth:`JobStore.claim`: there is no preference, the oldest
    job is for a preferred model itself, or it has ``waited`` (was created more than
    ``prefer_max_wait`` seconds ago), after which no job overtakes it any more.
    """
    return not prefer or oldest["model"] in prefer or waited


@dataclass(frozen=True)
class Outcome:
    """What a write does to a job: its new ``status``, the JSON for its ``error`` column and
    the outbox rows the change adds. ``error`` None clears the column, except after
    :func:`stale_outcome`, where it leaves the stored error as it is."""

    status: JobStatus
    error: str | None
    deliveries: list[NewDelivery]


def stale_outcome(row: Row, max_attempts: int) -> Outcome | None:
    """How a claim ends a runnable job instead of running it, or None to run it.

    ``row`` holds the job's ``id``, ``status``, ``cancel_requested``, ``attempts`` and its
    :class:`DeliveryTargets` columns. A running job is runnable only when its worker's lease
    expired. It ends as cancelled when a cancel was requested meanwhile (nothing is left to run;
    ``error`` is None: the stored one stays), and as failed (``workerLost``) once it was claimed
    ``max_attempts`` times, instead of crashing yet another worker.
    """
    if row["status"] != JobStatus.RUNNING.value:
        return None
    error: dict[str, Any] | None = None
    if row["cancel_requested"]:
        status = JobStatus.CANCELLED
    elif row["attempts"] >= max_attempts:
        status = JobStatus.FAILED
        error = {
            "code": "workerLost",
            "message": f"the worker running this task stopped {row['attempts']} times "
            f"(max_attempts={max_attempts}); the task was abandoned",
            "kind": "internal",
        }
    else:
        return None
    targets = DeliveryTargets.from_row(row)
    return Outcome(status, error_json(error), end_deliveries(row["id"], targets, status))


def fail_outcome(
    job_id: str, row: Row, error: dict[str, Any], *, retry: bool, max_attempts: int
) -> Outcome:
    """What :meth:`JobStore.fail` does to a job whose lease the failing worker holds.

    ``row`` holds the job's ``cancel_requested``, ``attempts`` and :class:`DeliveryTargets`
    columns. The job ends as cancelled when a cancel was requested, goes back to the queue for
    a ``retry`` with attempts left (no error, nothing delivered), and fails otherwise.
    """
    if row["cancel_requested"]:
        status = JobStatus.CANCELLED
    elif retry and row["attempts"] < max_attempts:
        return Outcome(JobStatus.QUEUED, None, [])
    else:
        status = JobStatus.FAILED
    targets = DeliveryTargets.from_row(row)
    return Outcome(status, error_json(error), end_deliveries(job_id, targets, status))


def cancel_queued(job_id: str, row: Row) -> Outcome:
    """How :meth:`JobStore.request_cancel` ends a job that is still queued (``row`` holds its
    :class:`DeliveryTargets` columns): cancelled at once, with a ``taskCancelled`` error."""
    targets = DeliveryTargets.from_row(row)
    return Outcome(JobStatus.CANCELLED, error_json(_CANCELLED_BEFORE_START),
                   end_deliveries(job_id, targets, JobStatus.CANCELLED))
