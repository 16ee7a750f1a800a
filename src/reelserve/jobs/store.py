"""The JobStore protocol: the only durable state of reelserve.

Every accepted task is a :class:`~reelserve.tasks.Job` row. Workers *claim* a job with a lease,
renew it with heartbeats, record each finished result as soon as it exists, and finish or fail the
job. A job whose worker died (lease expired) is claimed again; after its worker vanished
``max_losses`` times, or failed ``max_attempts`` times, it ends with an error result instead, so
no accepted task is ever silently lost. A worker that stops gracefully hands its job back
(:meth:`JobStore.release`), which costs the job nothing.

Waiting for changes works across processes: every store exposes :meth:`JobStore.subscribe` for
in-process notification and readers poll :meth:`JobStore.get` with a short interval for writers in
other processes (``reelserve worker --data-dir DIR``).

Implementations: :class:`reelserve.jobs.sqlite.SQLiteJobStore` (embedded default) and
:class:`reelserve.jobs.postgres.PostgresJobStore` (several machines; LISTEN/NOTIFY carries change
notifications across processes there). Every implementation must pass the contract suite in
``tests/jobs/``. What they share around their SQL (row mapping, the decisions each write makes,
the outbox rows it adds) lives in :mod:`reelserve.jobs.rows`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from reelserve.tasks import Job, JobStatus, Result

Listener = Callable[[str], None]
"""Called with a job id after a committed change to that job (from the writing thread)."""


class Listeners:
    """The in-process change listeners of one store: what :meth:`JobStore.subscribe` registers
    and what the store calls after each committed change. Safe to use from any thread."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []
        self._lock = threading.Lock()

    def add(self, listener: Listener) -> Callable[[], None]:
        """Register ``listener``; returns a function that unregisters it."""
        with self._lock:
            self._listeners.append(listener)

        def remove() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return remove

    def notify(self, job_id: str) -> None:
        """Call every listener with ``job_id`` (in this thread, outside the lock)."""
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            listener(job_id)


@dataclass(frozen=True)
class Heartbeat:
    """What a worker learns when it renews its lease.

    ``owned`` is False when the lease was lost (expired and taken by another worker, or the job
    reached a terminal state): the worker must stop and write nothing more. ``cancel_requested``
    tells it to stop and let the job end as cancelled.
    """

    owned: bool
    cancel_requested: bool


@dataclass(frozen=True)
class DeliveryRecord:
    """One outbox row: a webhook POST, an upload PUT or a status POST of a job, and its attempts.

    ``kind`` is ``webhook`` (``result_index`` is None for the job's failure webhook), ``upload``
    or ``status`` (a status change; ``event`` is the :class:`~reelserve.tasks.JobStatus` value
    the job entered, and ``created_at`` when). ``state`` is ``pending``, ``delivered``,
    ``failed`` or ``skipped``; ``history`` holds the last attempts
    (``{"attempt", "at", "status", "ms", "error"?}``). See :mod:`reelserve.delivery.dispatcher`.
    """

    id: str
    job_id: str
    kind: str
    url: str
    result_index: int | None
    state: str
    attempts: int
    next_at: float
    created_at: float
    updated_at: float
    last_status: int | None = None
    last_error: str | None = None
    history: tuple[dict[str, Any], ...] = ()
    event: str | None = None


def route_key(model: str, workflow: str) -> str:
    """The claim key of a model id x workflow (``klingai:1@1/t2v``): what a worker serves and
    what a job needs (AIR ids hold no ``/``)."""
    return f"{model}/{workflow}"


WORKER_BEAT = 5.0
"""Seconds between a worker's presence beats (its ``workers`` row's ``last_seen``)."""

WORKER_LIVE = 20.0
"""A worker whose last beat is older than this is not live any more (it died or stopped)."""


@dataclass(frozen=True)
class WorkerInfo:
    """One worker slot as it publishes itself in the ``workers`` table with its beats.

    ``capabilities`` is :func:`reelserve.engines.capabilities.capabilities` of the worker's
    settings (one JSON object per model id x workflow it renders); ``serves`` is None when it
    claims any job (it renders every catalog route, or could not tell), else the route keys
    (:func:`route_key`) its claims are limited to. ``started_at`` and ``last_seen`` are the
    store's clock.
    """

    worker_id: str
    host: str
    pid: int
    started_at: float
    last_seen: float
    capabilities: tuple[dict[str, Any], ...] = ()
    serves: tuple[str, ...] | None = None


DURATIONS: dict[str, str] = {
    "queue_wait": "from a job's creation to its first claim by a worker",
    "run": "from a job's first claim to its success (render, encode and store of every result)",
    "render": "engine time of one result (generating its frames)",
    "encode": "encode time of one result (frames to the container file; an engine that renders "
              "lazily, as the encoder pulls frames, spends its render time here)",
    "delivery": "from a webhook/upload/status delivery being due to its receiver's 2xx",
    "safety": "content-check time of one result (safety.checkContent: its frames classified)",
}
"""The durations :meth:`JobStore.durations` measures, with what each one spans."""

DURATION_BUCKETS: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                                       120.0, 300.0, 600.0, 1800.0, 3600.0)
"""Upper bounds (seconds) of the duration histograms: from a fast webhook to a long render or
a long queue. Stores count each observation in the first bucket it fits (then +Inf)."""


@dataclass(frozen=True)
class QueueStats:
    """The queued jobs of one model: how many, and when the oldest one was created."""

    model: str
    depth: int
    oldest_created_at: float


@dataclass(frozen=True)
class StoreStats:
    """What :meth:`JobStore.stats` reads, for every process sharing the store.

    Gauges of now: ``active`` counts the queued and running jobs by status value, ``queues``
    the queued jobs per model, ``pending_deliveries`` the outbox rows still to send by kind,
    ``busy_workers`` the workers holding a live lease on a running job; ``now`` is the store's
    clock at the read.

    Counters since the store was created (kept by the writes themselves, so a scrape reads a
    few rows and purging old jobs changes nothing): ``finished`` jobs by terminal status,
    ``failures`` failed jobs by error code, ``results`` videos produced, ``deliveries``
    outbox rows that ended, by ``(kind, state)`` (delivered, failed, skipped),
    ``delivery_attempts`` and ``delivery_failed_attempts`` (attempts that did not deliver) by
    kind.
    """

    active: dict[str, int]
    queues: list[QueueStats]
    pending_deliveries: dict[str, int]
    busy_workers: int
    now: float
    finished: dict[str, int]
    failures: dict[str, int]
    results: int
    deliveries: dict[tuple[str, str], int]
    delivery_attempts: dict[str, int]
    delivery_failed_attempts: dict[str, int]


@dataclass(frozen=True)
class DurationHistogram:
    """Cumulative bucket counts (one per :data:`DURATION_BUCKETS` bound, then +Inf), the sum
    of the observed seconds and their count."""

    buckets: list[int]
    total: float
    count: int


class JobReader(Protocol):
    """Reads one job and hears of changes: what every other role builds on."""

    def get(self, job_id: str) -> Job | None:
        """The job with its recorded results, or None."""
        ...

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Register an in-process change listener; returns a function that unregisters it."""
        ...


class JobQueue(JobReader, Protocol):
    """The API's side: accept jobs, find and list them, cancel them, hand results out."""

    def create(self, job: Job, *, max_active: int = 0) -> Job:
        """Insert a new queued job.

        Raises :class:`reelserve.errors.ConflictError` (``conflictTaskUUID``) when the owner
        already has a job with ``job.task_uuid``. With ``max_active`` (0: no limit), raises
        :class:`reelserve.errors.InFlightLimitError` (``rateLimitExceeded``) instead of
        inserting when the owner would have more than that many queued or running jobs; the
        count and the insert are one transaction, serialised per owner, so concurrent creates
        never overshoot the limit. A full disk raises ``insufficientStorage``.
        """
        ...

    def get_by_task(self, owner: str, task_uuid: str) -> Job | None:
        """The owner's job for a client task UUID, or None (never another owner's job)."""
        ...

    def list_jobs(
        self,
        owner: str,
        *,
        origin: str | None = None,
        statuses: Collection[JobStatus] | None = None,
        after: str | None = None,
        limit: int = 20,
        offset: int = 0,
    ) -> tuple[list[Job], str | None]:
        """One page of the owner's jobs, newest first (``created_at``, then ``id``, descending),
        and the cursor of the next page (None when no job follows).

        ``origin`` keeps one dialect's jobs only, ``statuses`` (None: any) only jobs in those
        states. ``after`` is a cursor from a previous page (or :func:`reelserve.jobs.rows.
        job_cursor` of a job): the page starts below it with a seek in the list's index, so a
        page costs the same at any depth. A malformed cursor raises ``ValidationError``
        (``invalidCursor``). ``offset`` skips that many jobs: only for wire protocols that page
        by number (Kling ``pageNum``, bounded); ``limit`` is at most 1000. Never returns another
        owner's job.
        """
        ...

    def count_active(self, owner: str) -> int:
        """Number of the owner's queued or running jobs (per-key in-flight limit)."""
        ...

    def queue_position(self, job_id: str) -> int | None:
        """How many queued jobs (of every owner) were created before the queued job ``job_id``
        (``created_at``, then ``id``): 0 means next in line. None when the job is not queued.

        A count over the ``(status, created_at)`` index range, so it stays cheap at any queue
        length. Workers prefer jobs for models they have loaded, so it is the FIFO position,
        an estimate of the wait, not a promise.
        """
        ...

    def request_cancel(self, job_id: str) -> Job | None:
        """Ask for cancellation: a queued job is cancelled at once, a running one at its next
        heartbeat. Terminal jobs are left as they are."""
        ...

    def take_undelivered(self, job_id: str) -> list[Result]:
        """Atomically return the results not handed out yet and mark them delivered."""
        ...

    def return_undelivered(self, job_id: str, indexes: Collection[int]) -> None:
        """Mark results ``indexes`` of ``job_id`` not delivered again: the answer that took them
        (:meth:`take_undelivered`) never reached its client, so the next poll hands them out."""
        ...


class JobLeases(JobReader, Protocol):
    """The workers' side: claim a job with a lease, renew it, record results, end the job."""

    def claim(
        self,
        worker_id: str,
        lease_seconds: float,
        *,
        prefer_models: Collection[str] = (),
        prefer_max_wait: float = 30.0,
        serves: Collection[str] | None = None,
    ) -> Job | None:
        """Take a runnable job (queued, or running with an expired lease), oldest first.

        ``serves`` (None: any job) limits the claim to jobs whose model id x workflow
        (:func:`route_key`) is in it: a worker takes only what its engines render, so workers
        with different profiles can share one store.

        Increments ``attempts`` and sets status running. Taking over a job whose lease expired
        (its worker vanished) also counts a *loss*; a job that lost its worker ``max_losses``
        times (default ``max_attempts``) is failed (``workerLost``) instead of being returned.
        Losses have their own budget: ``fail(retry=True)`` counts only the claims that failed.

        ``prefer_models`` (the models whose weights the worker has loaded) only reorders the
        runnable jobs: the oldest job whose ``spec.model`` is in it is taken before older jobs
        for other models, which saves a pipeline swap. It never leaves a job unclaimed while a
        worker asks: with no preferred job runnable, the oldest job is taken. To bound how long
        another model's job can be passed over, the oldest runnable job is taken regardless of
        preference once it was created more than ``prefer_max_wait`` seconds ago (0 gives strict
        arrival order).
        """
        ...

    def heartbeat(
        self, job_id: str, worker_id: str, lease_seconds: float, progress: float | None = None
    ) -> Heartbeat:
        """Renew the lease (and store progress 0-100 when given)."""
        ...

    def add_result(self, job_id: str, worker_id: str, result: Result) -> bool:
        """Record one finished result (idempotent per ``result.index``); False if lease lost."""
        ...

    def finish(self, job_id: str, worker_id: str, cost: float | None = None) -> bool:
        """Mark the job succeeded; False if the worker no longer holds the lease."""
        ...

    def fail(
        self, job_id: str, worker_id: str, error: dict[str, Any], *, retry: bool = False
    ) -> Job | None:
        """End the job with ``error`` (a ReelserveError dict plus ``kind``).

        With ``retry`` and attempts left, the job goes back to the queue instead. A job whose
        cancel was requested ends as cancelled. Returns the job as it is now, or None when the
        lease was lost.
        """
        ...

    def release(self, job_id: str, worker_id: str) -> bool:
        """Hand a running job back to the queue: a worker that stops (SIGTERM) or cannot run
        it now (full disk) gives up its lease so another claim takes the job at once.

        The claim is given back too (``attempts`` decreases): a handed-back job has not failed.
        Recorded results stay (the next claim renders only the missing ones). False when the
        worker no longer holds the lease.
        """
        ...


class DeliveryOutbox(JobReader, Protocol):
    """The dispatcher's side: webhooks, uploads and status callbacks.

    Rows are added in the same transaction as the change they report: add_result / fail / cancel
    for jobs with a webhook URL or upload endpoint, and every status change (create: queued,
    claim: running, finish / fail / cancel: terminal) for jobs with a ``spec.delivery.status_url``,
    at most one row per job and status."""

    def claim_deliveries(
        self, worker_id: str, lease_seconds: float, limit: int = 16
    ) -> list[DeliveryRecord]:
        """Lease up to ``limit`` pending deliveries whose next attempt is due.

        Status rows of one job go out in the order they were added: one is not claimed while an
        earlier status row of the same job is still pending (or being sent).
        """
        ...

    def record_delivery(
        self,
        delivery_id: str,
        worker_id: str,
        attempt: dict[str, Any],
        *,
        state: str,
        next_at: float | None = None,
    ) -> bool:
        """Append ``attempt`` to the history, set ``state`` (and ``next_at`` for a retry) and
        release the lease; False when the lease was lost."""
        ...

    def deliveries(self, job_id: str) -> list[DeliveryRecord]:
        """Every delivery of a job with its attempts, in creation order."""
        ...


class Retention(Protocol):
    """The sweeper's side: outputs and jobs past their time."""

    def expired_outputs(
        self, now: float, default_ttl: float, limit: int = 200
    ) -> list[tuple[str, Result]]:
        """``(job_id, result)`` pairs whose ttl (or ``default_ttl``) ended before ``now`` and
        that are not marked expired yet."""
        ...

    def mark_expired(self, job_id: str, index: int) -> None:
        """Record that a result's file was removed by the sweeper."""
        ...

    def expired_jobs(self, before: float, limit: int = 200) -> list[Job]:
        """Terminal jobs whose last change was before ``before`` (retention), oldest first.

        The sweeper removes their artifacts first, then deletes each job with :meth:`delete`.
        """
        ...

    def delete(self, job_id: str) -> bool:
        """Remove a job and its results for good (the caller removes the artifacts first).

        A worker still running it loses its lease (its heartbeat answers ``owned=False``) and
        writes nothing more. False when there was no such job.
        """
        ...


class WorkerRegistry(Protocol):
    """Who renders what: each worker slot publishes itself (and what it renders) with its
    presence beats, so an API process without engines knows what the deployment can serve."""

    def publish_worker(self, info: WorkerInfo) -> None:
        """Insert or replace ``info``'s row (``last_seen``: now, by the store's clock); rows
        not seen for an hour are removed on the way, so the table stays small."""
        ...

    def touch_worker(self, worker_id: str) -> bool:
        """Set the worker's ``last_seen`` to now; False when it has no row (publish again)."""
        ...

    def remove_worker(self, worker_id: str) -> None:
        """Remove the worker's row (a worker that stops)."""
        ...

    def live_workers(self, max_age: float = WORKER_LIVE) -> list[WorkerInfo]:
        """The workers seen within the last ``max_age`` seconds, by worker id."""
        ...


class StoreMetrics(Protocol):
    """Deployment-wide numbers for ``/metrics``."""

    def stats(self) -> StoreStats:
        """Deployment-wide numbers for metrics, read in one pass over the store."""
        ...

    def durations(self) -> dict[str, DurationHistogram]:
        """The histogram of every duration in :data:`DURATIONS` over
        :data:`DURATION_BUCKETS`, deployment-wide.

        Each one is counted by the write that ends it, in that write's transaction: a first
        claim (queue wait), a finish (run), a new result (its render and encode seconds), a
        delivered outbox row (delivery). They are counters: purging old jobs leaves them.
        """
        ...


@runtime_checkable
class JobStore(JobQueue, JobLeases, DeliveryOutbox, Retention, WorkerRegistry, StoreMetrics,
               Protocol):
    """Durable jobs with leases: every role above, implemented by one class per database.

    Each part of the server takes the role it uses (the dispatcher a :class:`DeliveryOutbox`,
    the sweeper a :class:`Retention` ...), so what a part may do to the jobs reads from its
    signature. All methods are blocking: call them from a thread, never on the asyncio event
    loop directly (use ``anyio.to_thread`` / ``run_in_threadpool``)."""

    max_attempts: int
    max_losses: int

    def close(self) -> None:
        """Release connections."""
        ...
