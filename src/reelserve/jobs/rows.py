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

import base64
import binascii
import bisect
import itertools
import json
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from reelserve.errors import CANCELLED_CODE, ConflictError, InFlightLimitError, ValidationError
from reelserve.jobs.store import (
    DURATION_BUCKETS,
    DURATIONS,
    DeliveryRecord,
    DurationHistogram,
    QueueStats,
    StoreStats,
    WorkerInfo,
    route_key,
)
from reelserve.tasks import GenerationSpec, Job, JobStatus, Result

JOB_COLUMNS = (
    "id, owner, task_uuid, origin, origin_data, request, spec, status, progress, attempts, "
    "cancel_requested, error, cost, created_at, updated_at"
)
"""The ``jobs`` columns :func:`job_from_row` reads (the same names in every store's schema)."""

HISTORY_KEPT = 20
"""How many attempts a delivery's ``history`` keeps (the newest)."""

_CANCELLED_BEFORE_START = {
    "code": CANCELLED_CODE,
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
    (queued) and ``route`` (the claim key, :func:`~reelserve.jobs.store.route_key`), in that
    order, as the INSERT stores them."""
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
        route_key(job.spec.model, job.spec.workflow.value),
    )


def worker_from_row(row: Row) -> WorkerInfo:
    """The :class:`~reelserve.jobs.store.WorkerInfo` of a ``workers`` row."""
    serves = row["serves"]
    return WorkerInfo(
        worker_id=row["worker_id"],
        host=row["host"],
        pid=int(row["pid"]),
        started_at=float(row["started_at"]),
        last_seen=float(row["last_seen"]),
        capabilities=tuple(json.loads(row["capabilities"])),
        serves=None if serves is None else tuple(json.loads(serves)),
    )


def worker_values(info: WorkerInfo) -> tuple[Any, ...]:
    """``worker_id, host, pid, started_at, capabilities, serves`` of a ``workers`` upsert."""
    return (info.worker_id, info.host, info.pid, info.started_at,
            json.dumps(list(info.capabilities), separators=(",", ":")),
            None if info.serves is None else json.dumps(sorted(info.serves)))


def claim_routes(serves: Collection[str] | None) -> list[str] | None:
    """The route keys a claim is limited to (None: any job), deduplicated and sorted."""
    return None if serves is None else sorted(set(serves))


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


MAX_PAGE = 1000
"""The most jobs one :meth:`~reelserve.jobs.store.JobStore.list_jobs` call returns."""

TERMINAL_STATUSES = tuple(s.value for s in JobStatus if s.is_terminal)
"""The stored ``status`` values of jobs that will not change any more (retention purges them)."""


def page_bounds(limit: int, offset: int) -> tuple[int, int]:
    """``LIMIT`` and ``OFFSET`` of a list: negative values count as 0, ``limit`` at most
    :data:`MAX_PAGE`."""
    return min(max(0, limit), MAX_PAGE), max(0, offset)


def job_cursor(job: Job) -> str:
    """The opaque ``after`` cursor of :meth:`~reelserve.jobs.store.JobStore.list_jobs` that lists
    the jobs listed after ``job`` (older, or as old with a smaller id).

    Wire dialects whose cursor is an object id (OpenAI's ``after=video_id``) fetch that job, check
    its owner and pass this. It is the list's sort key, ``(created_at, id)``, so paging is a seek
    in the list's index whatever the page number (no ``OFFSET``).
    """
    return row_cursor({"created_at": job.created_at, "id": job.id})


def parse_cursor(cursor: str) -> tuple[float, str]:
    """The ``(created_at, id)`` a :func:`job_cursor` holds; refuses anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, job_id = json.loads(raw)
        if isinstance(created_at, bool) or not isinstance(created_at, int | float) or \
                not isinstance(job_id, str):
            raise TypeError(cursor)
    except (binascii.Error, ValueError, TypeError):
        raise ValidationError(
            "invalidCursor", f"after {cursor!r:.60} is not a cursor this server handed out; "
            "pass the next-page cursor of a previous list answer unchanged, or leave it out "
            "for the first page", parameter="after") from None
    return float(created_at), job_id


def status_values(statuses: Collection[JobStatus] | None) -> list[str] | None:
    """The stored ``status`` values of a list's status filter (None: any status), sorted."""
    return None if statuses is None else sorted({JobStatus(s).value for s in statuses})


def list_query(
    columns: str,
    owner: str,
    *,
    origin: str | None,
    statuses: list[str] | None,
    cursor: tuple[float, str] | None,
    limit: int,
    offset: int,
    mark: str,
) -> tuple[str, list[Any]]:
    """The SQL (with ``mark`` placeholders) and arguments of one page of
    :meth:`~reelserve.jobs.store.JobStore.list_jobs`, reading ``limit + 1`` rows (the one
    past the page tells whether a next page exists); ``columns`` are selected from ``jobs``.

    Every branch is ``owner = ? [AND origin = ?] [AND status = ?] AND (created_at, id) < ?``
    ordered by ``created_at DESC, id DESC``: a seek in one of the ``jobs_owner_*`` indexes
    followed by reading the page, however many jobs the owner has. Several statuses become one
    such branch each, merged (``UNION ALL``) and cut to the page, instead of a scan and sort of
    every job in those states.
    """
    base = [f"owner = {mark}"]
    base_args: list[Any] = []
    if origin is not None:
        base.append(f"origin = {mark}")
        base_args.append(origin)
    if cursor is not None:
        base.append(f"(created_at, id) < ({mark}, {mark})")
    order = "ORDER BY created_at DESC, id DESC"
    want = limit + offset + 1

    def branch(status: str | None) -> tuple[str, list[Any]]:
        where = list(base)
        args: list[Any] = [owner, *base_args]
        if status is not None:
            where.insert(1, f"status = {mark}")
            args.insert(1, status)
        if cursor is not None:
            args += list(cursor)
        return f"SELECT {columns} FROM jobs WHERE {' AND '.join(where)} {order}", args

    if statuses is not None and len(statuses) > 1:
        parts = [branch(status) for status in statuses]
        sql = " UNION ALL ".join(
            f"SELECT * FROM ({q} LIMIT {want}) AS branch{i}" for i, (q, _) in enumerate(parts))
        sql = f"SELECT * FROM ({sql}) AS page {order} LIMIT {mark} OFFSET {mark}"
        args = [a for _, part in parts for a in part]
    else:
        sql, args = branch(statuses[0] if statuses else None)
        sql += f" LIMIT {mark} OFFSET {mark}"
    return sql, [*args, limit + 1, offset]


def page_of(rows: list[Any], limit: int, cursor_of: Any) -> tuple[list[Any], str | None]:
    """A list query read ``limit + 1`` rows: the page, and the cursor after its last row when
    more follow (``cursor_of`` turns a kept row into its cursor)."""
    page = rows[:limit]
    return page, cursor_of(page[-1]) if len(rows) > limit and page else None


def row_cursor(row: Row) -> str:
    """The :func:`job_cursor` of a ``jobs`` row (its ``created_at`` and ``id``)."""
    raw = json.dumps([row["created_at"], row["id"]], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


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


def stale_outcome(row: Row, max_losses: int) -> Outcome | None:
    """How a claim ends a runnable job instead of running it, or None to run it.

    ``row`` holds the job's ``id``, ``status``, ``cancel_requested``, ``losses`` and its
    :class:`DeliveryTargets` columns. A running job is runnable only when its worker's lease
    expired: its worker vanished (killed, crashed, machine gone). It ends as cancelled when a
    cancel was requested meanwhile (nothing is left to run; ``error`` is None: the stored one
    stays), and as failed (``workerLost``) once its worker vanished ``max_losses`` times, instead
    of crashing yet another worker. Vanished workers have their own budget (``losses``, see
    :func:`fail_outcome`): restarting a server under a job must not use up its retries.
    """
    if row["status"] != JobStatus.RUNNING.value:
        return None
    error: dict[str, Any] | None = None
    lost = row["losses"] + 1  # this takeover included
    if row["cancel_requested"]:
        status = JobStatus.CANCELLED
    elif lost >= max_losses:
        status = JobStatus.FAILED
        error = {
            "code": "workerLost",
            "message": f"the worker running this task stopped {lost} times "
            f"(max_worker_losses={max_losses}); the task was abandoned",
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

    ``row`` holds the job's ``cancel_requested``, ``attempts``, ``losses`` and
    :class:`DeliveryTargets` columns. The job ends as cancelled when a cancel was requested, goes
    back to the queue for a ``retry`` with attempts left (no error, nothing delivered), and fails
    otherwise. Attempts left counts the claims that ended in a failure (this one included), not
    the ones whose worker vanished (``losses``, budgeted by :func:`stale_outcome`).
    """
    if row["cancel_requested"]:
        status = JobStatus.CANCELLED
    elif retry and row["attempts"] - row["losses"] < max_attempts:
        return Outcome(JobStatus.QUEUED, None, [])
    else:
        status = JobStatus.FAILED
    targets = DeliveryTargets.from_row(row)
    return Outcome(status, error_json(error), end_deliveries(job_id, targets, status))


def check_active(active: int, max_active: int) -> None:
    """Refuse a create that makes its owner's queued + running jobs (``active``, the new one
    included) exceed ``max_active``: ``rateLimitExceeded`` (:class:`InFlightLimitError`).

    The stores call this inside the creating transaction, after the insert and under a lock
    that serialises the owner's creates, so the limit is exact; the refusal rolls back.
    """
    if active > max_active:
        raise InFlightLimitError(
            "rateLimitExceeded",
            f"this API key has {active - 1} tasks queued or running; at most {max_active} are "
            "allowed in flight (rate_max_in_flight). Wait for some to finish, then submit again",
        )


def cancel_queued(job_id: str, row: Row) -> Outcome:
    """How :meth:`JobStore.request_cancel` ends a job that is still queued (``row`` holds its
    :class:`DeliveryTargets` columns): cancelled at once, with a ``taskCancelled`` error."""
    targets = DeliveryTargets.from_row(row)
    return Outcome(JobStatus.CANCELLED, error_json(_CANCELLED_BEFORE_START),
                   end_deliveries(job_id, targets, JobStatus.CANCELLED))


# ------------------------------------------------------------------ metrics


def duration_bucket(seconds: float) -> int:
    """The index of the first :data:`DURATION_BUCKETS` bound ``seconds`` fits under
    (``len(DURATION_BUCKETS)``: +Inf), the bucket a store counts an observation in."""
    return bisect.bisect_left(DURATION_BUCKETS, max(0.0, seconds))


def result_durations(result: Result) -> list[tuple[str, float]]:
    """The durations a new result reports: its ``render``, ``encode`` and ``safety`` (content
    check) seconds, when known."""
    timed = (("render", result.render_seconds), ("encode", result.encode_seconds),
             ("safety", result.safety_seconds))
    return [(name, seconds) for name, seconds in timed if seconds is not None]


def histograms(rows: Iterable[Sequence[Any]]) -> dict[str, DurationHistogram]:
    """Every :data:`DURATIONS` histogram from ``duration_counts`` rows ``(name, bucket, count,
    total)`` (per bucket, not cumulative); a duration never observed has zeros."""
    counts = {name: [0] * (len(DURATION_BUCKETS) + 1) for name in DURATIONS}
    totals = dict.fromkeys(DURATIONS, 0.0)
    for name, bucket, count, total in rows:
        if name in counts and 0 <= bucket < len(counts[name]):
            counts[name][bucket] += int(count)
            totals[name] += float(total)
    return {name: DurationHistogram(list(itertools.accumulate(per[:-1])), totals[name], sum(per))
            for name, per in counts.items()}


def outcome_counts(status: JobStatus, error: str | None) -> list[tuple[str, str]]:
    """The ``counters`` rows ``(name, label)`` a job entering ``status`` adds one to: a
    terminal status counts in ``jobs_finished``, a failure also in ``jobs_failed`` by its
    error code (``error``: the stored JSON)."""
    if not status.is_terminal:
        return []
    counts = [("jobs_finished", status.value)]
    if status is JobStatus.FAILED:
        code = json.loads(error).get("code") if error else None
        counts.append(("jobs_failed", str(code or "unknown")))
    return counts


def attempt_counts(kind: str, state: str) -> list[tuple[str, str]]:
    """The ``counters`` rows an attempt of a ``kind`` delivery that leaves it in ``state``
    adds one to: ``delivery_attempts``, ``delivery_failed_attempts`` unless it delivered, and
    ``deliveries`` (label ``kind:state``) when the row ended."""
    counts = [("delivery_attempts", kind)]
    if state != "delivered":
        counts.append(("delivery_failed_attempts", kind))
    if state != "pending":
        counts.append(("deliveries", f"{kind}:{state}"))
    return counts


def store_stats(
    active: dict[str, int],
    queues: list[QueueStats],
    pending: dict[str, int],
    busy_workers: int,
    now: float,
    counters: Iterable[Sequence[Any]],
) -> StoreStats:
    """:class:`StoreStats` from a store's reads; ``counters`` are its ``(name, label, value)``
    rows."""
    by_name: dict[str, dict[str, int]] = {}
    for name, label, value in counters:
        by_name.setdefault(str(name), {})[str(label)] = int(value)
    ended = {tuple(label.split(":", 1)): n for label, n in by_name.get("deliveries", {}).items()}
    return StoreStats(
        active={str(k): int(v) for k, v in active.items()},
        queues=queues,
        pending_deliveries={str(k): int(v) for k, v in pending.items()},
        busy_workers=int(busy_workers),
        now=float(now),
        finished=by_name.get("jobs_finished", {}),
        failures=by_name.get("jobs_failed", {}),
        results=by_name.get("results", {}).get("", 0),
        deliveries={(k[0], k[1]): n for k, n in ended.items() if len(k) == 2},
        delivery_attempts=by_name.get("delivery_attempts", {}),
        delivery_failed_attempts=by_name.get("delivery_failed_attempts", {}),
    )
