"""The embedded default JobStore: one SQLite file in WAL mode.

Concurrency: one connection per thread (SQLite connections must not be shared across threads
without care), ``BEGIN IMMEDIATE`` for every write so claims are atomic across threads *and*
processes (a separate ``reelserve worker`` process shares the file), and a busy timeout so
writers queue instead of failing.

Schema changes go into :data:`MIGRATIONS` (append only); ``PRAGMA user_version`` records how many
have run. Later features add their tables and columns there (the delivery outbox, its
status-change rows).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from reelserve.errors import storage_full
from reelserve.jobs.rows import (
    JOB_COLUMNS,
    TERMINAL_STATUSES,
    DeliveryTargets,
    NewDelivery,
    attempt_columns,
    attempt_counts,
    cancel_queued,
    check_active,
    claim_preference,
    claim_routes,
    clamp_progress,
    delivery_from_row,
    duration_bucket,
    fail_outcome,
    histograms,
    job_from_row,
    list_query,
    new_job_values,
    outcome_counts,
    page_bounds,
    page_of,
    parse_cursor,
    result_deliveries,
    result_durations,
    result_from_row,
    row_cursor,
    stale_outcome,
    status_deliveries,
    status_values,
    store_stats,
    takes_oldest,
    task_uuid_conflict,
    worker_from_row,
    worker_values,
)
from reelserve.jobs.store import (
    WORKER_LIVE,
    DeliveryRecord,
    DurationHistogram,
    Heartbeat,
    JobStore,
    Listener,
    Listeners,
    QueueStats,
    StoreStats,
    WorkerInfo,
)
from reelserve.tasks import Job, JobStatus, Result

MIGRATIONS: list[str] = [
    # 1: jobs and their per-index results
    """
    CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        task_uuid TEXT NOT NULL,
        origin TEXT NOT NULL,
        origin_data TEXT NOT NULL,
        request TEXT NOT NULL,
        spec TEXT NOT NULL,
        status TEXT NOT NULL,
        progress REAL NOT NULL DEFAULT 0,
        attempts INTEGER NOT NULL DEFAULT 0,
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        lease_owner TEXT,
        lease_expires REAL,
        error TEXT,
        cost REAL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        UNIQUE (owner, task_uuid)
    );
    CREATE INDEX jobs_runnable ON jobs (status, created_at);
    CREATE TABLE results (
        job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        idx INTEGER NOT NULL,
        data TEXT NOT NULL,
        delivered INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        PRIMARY KEY (job_id, idx)
    );
    """,
    # 2: the delivery outbox (webhook POSTs, upload PUTs), output expiry, per-owner counts
    """
    CREATE TABLE deliveries (
        id TEXT PRIMARY KEY,
        job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        kind TEXT NOT NULL,
        url TEXT NOT NULL,
        result_index INTEGER,
        state TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0,
        next_at REAL NOT NULL,
        lease_owner TEXT,
        lease_expires REAL,
        last_status INTEGER,
        last_error TEXT,
        history TEXT NOT NULL DEFAULT '[]',
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX deliveries_due ON deliveries (state, next_at);
    CREATE INDEX deliveries_job ON deliveries (job_id);
    ALTER TABLE results ADD COLUMN expired_at REAL;
    CREATE INDEX results_live ON results (expired_at, created_at);
    CREATE INDEX jobs_owner_status ON jobs (owner, status);
    """,
    # 3: the model id in its own indexed column, so a claim can prefer jobs for loaded models
    # without parsing every queued spec (backfilled from the stored spec JSON)
    """
    ALTER TABLE jobs ADD COLUMN model TEXT;
    UPDATE jobs SET model = json_extract(spec, '$.model');
    CREATE INDEX jobs_model_runnable ON jobs (model, status, created_at);
    """,
    # 4: status-change deliveries (kind 'status'): the JobStatus value the row reports
    """
    ALTER TABLE deliveries ADD COLUMN event TEXT;
    """,
    # 5: lists that scale: one index per list filter in list order (owner; owner + origin;
    # owner + status; owner + origin + status; each then created_at, id), so a page is a seek
    # plus the page's rows at any depth; (owner, status, ...) also serves count_active, which
    # made jobs_owner_status redundant. Retention finds old terminal jobs by (status,
    # updated_at). started_at (first claim) gives the run duration; duration_counts holds the
    # duration histograms (JobStore.durations) and counters the totals of JobStore.stats, both
    # counted by the writes themselves, so a metrics scrape reads a few rows.
    """
    ALTER TABLE jobs ADD COLUMN started_at REAL;
    CREATE TABLE duration_counts (
        name TEXT NOT NULL,
        bucket INTEGER NOT NULL,
        count INTEGER NOT NULL,
        total REAL NOT NULL,
        PRIMARY KEY (name, bucket)
    );
    CREATE TABLE counters (
        name TEXT NOT NULL,
        label TEXT NOT NULL,
        value INTEGER NOT NULL,
        PRIMARY KEY (name, label)
    );
    CREATE INDEX jobs_owner_created ON jobs (owner, created_at, id);
    CREATE INDEX jobs_owner_origin_created ON jobs (owner, origin, created_at, id);
    CREATE INDEX jobs_owner_status_created ON jobs (owner, status, created_at, id);
    CREATE INDEX jobs_owner_origin_status_created ON jobs (owner, origin, status, created_at, id);
    DROP INDEX jobs_owner_status;
    CREATE INDEX jobs_status_updated ON jobs (status, updated_at);
    """,
    # 6: how often a job's worker vanished (its lease expired and another claim took the job
    # over), budgeted apart from its failures, so restarts do not use up its retries
    """
    ALTER TABLE jobs ADD COLUMN losses INTEGER NOT NULL DEFAULT 0;
    """,
    # 7: split deployments: each job's model id x workflow as its claim key (route), indexed so
    # a worker's claim seeks the routes it serves; and the workers table, where each worker
    # publishes what it renders with its presence beats (the API decides submits from it)
    """
    ALTER TABLE jobs ADD COLUMN route TEXT;
    UPDATE jobs SET route = model || '/' || json_extract(spec, '$.workflow');
    CREATE INDEX jobs_route_runnable ON jobs (route, status, created_at);
    CREATE TABLE workers (
        worker_id TEXT PRIMARY KEY,
        host TEXT NOT NULL,
        pid INTEGER NOT NULL,
        started_at REAL NOT NULL,
        last_seen REAL NOT NULL,
        capabilities TEXT NOT NULL,
        serves TEXT
    );
    """,
]

# How long a worker's row outlives its last beat (then the next publish removes it).
_WORKER_KEPT = 3600.0

# A claimable job: queued, or running under a lease that expired (its worker died).
_RUNNABLE = "(status = ? OR (status = ? AND lease_expires < ?))"

# Where a job's deliveries go, read from its stored spec (see DeliveryTargets.from_row).
_TARGETS = (
    "json_extract(spec, '$.delivery.webhook_url') AS webhook_url, "
    "json_extract(spec, '$.delivery.upload_endpoint') AS upload_endpoint, "
    "json_extract(spec, '$.delivery.status_url') AS status_url"
)


class SQLiteJobStore(JobStore):
    """JobStore on a SQLite file (``":memory:"`` is not supported: workers need a shared file).

    Methods without a docstring of their own do what :class:`~reelserve.jobs.store.JobStore`
    documents.
    """

    def __init__(
        self, path: str | Path, *, max_attempts: int = 3, max_losses: int | None = None
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_attempts = max_attempts
        #: How often a job's worker may vanish before the job fails with ``workerLost``
        #: (default: ``max_attempts``); see :func:`reelserve.jobs.rows.stale_outcome`.
        self.max_losses = max_losses if max_losses is not None else max_attempts
        self._local = threading.local()
        self._listeners = Listeners()
        # Every open connection and the thread it belongs to (weakly: a finished thread is
        # freed, and its connection is closed by the next _conn call of another thread).
        self._conns: dict[sqlite3.Connection, weakref.ref[threading.Thread]] = {}
        self._conns_lock = threading.Lock()
        self._migrate()

    # ------------------------------------------------------------------ connections

    def _conn(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            # isolation_level=None: we issue BEGIN ourselves so writes take the lock up front.
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None,
                                   check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn = conn
            with self._conns_lock:
                self._close_orphans()
                self._conns[conn] = weakref.ref(threading.current_thread())
        return conn

    def _close_orphans(self) -> None:
        """Close the connections of threads that ended (caller holds ``_conns_lock``).

        Thread pools (the server's request threads) retire idle threads and start new ones for
        the next burst; each new thread opens its own connection, so without this every burst
        after a pause would leave the old threads' file descriptors open until none are left.
        A finished thread can no longer use its connection, so closing it here is safe.
        """
        for conn, owner in list(self._conns.items()):
            thread = owner()
            if thread is None or not thread.is_alive():
                del self._conns[conn]
                with contextlib.suppress(sqlite3.Error):
                    conn.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, holding the database's write lock from its start.

        A full disk (the write or its commit finds no space) raises ``insufficientStorage``
        (:class:`~reelserve.errors.StorageFullError`) with nothing written.
        """
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise
        except sqlite3.OperationalError as exc:
            if _disk_full(exc):
                raise storage_full("the job database", exc) from exc
            raise

    def _migrate(self) -> None:
        with self._write() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in script.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {number}")

    def close(self) -> None:
        """Close every connection this store opened (in any thread)."""
        with self._conns_lock:
            for conn in self._conns:
                conn.close()
            self._conns.clear()
        self._local = threading.local()

    # ------------------------------------------------------------------ notification

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        return self._listeners.add(listener)

    # ------------------------------------------------------------------ reads

    def _job(self, conn: sqlite3.Connection, row: sqlite3.Row) -> Job:
        """The job of a row with the JOB_COLUMNS, with its results."""
        results = conn.execute(
            "SELECT data FROM results WHERE job_id = ? ORDER BY idx", (row["id"],)
        )
        return job_from_row(row, (r["data"] for r in results))

    def get(self, job_id: str) -> Job | None:
        conn = self._conn()
        row = conn.execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return self._job(conn, row) if row else None

    def get_by_task(self, owner: str, task_uuid: str) -> Job | None:
        conn = self._conn()
        row = conn.execute(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE owner = ? AND task_uuid = ?",
            (owner, task_uuid),
        ).fetchone()
        return self._job(conn, row) if row else None

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
        limit, offset = page_bounds(limit, offset)
        sql, args = list_query(
            JOB_COLUMNS, owner, origin=origin, statuses=status_values(statuses),
            cursor=parse_cursor(after) if after is not None else None, limit=limit,
            offset=offset, mark="?",
        )
        conn = self._conn()
        rows, cursor = page_of(conn.execute(sql, args).fetchall(), limit, row_cursor)
        return [self._job(conn, row) for row in rows], cursor

    def expired_jobs(self, before: float, limit: int = 200) -> list[Job]:
        conn = self._conn()
        marks = ", ".join("?" * len(TERMINAL_STATUSES))
        rows = conn.execute(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE status IN ({marks}) AND updated_at < ? "
            "ORDER BY updated_at LIMIT ?",
            (*TERMINAL_STATUSES, before, max(0, limit)),
        ).fetchall()
        return [self._job(conn, row) for row in rows]

    def stats(self) -> StoreStats:
        conn = self._conn()
        # One read transaction: every number comes from the same snapshot. Each query is an
        # index range over active jobs or pending rows, or reads the counters: none scans the
        # jobs a deployment has finished.
        conn.execute("BEGIN")
        try:
            now = time.time()
            active = {r[0]: r[1] for r in conn.execute(
                "SELECT status, COUNT(*) FROM jobs WHERE status IN (?, ?) GROUP BY status",
                (JobStatus.QUEUED.value, JobStatus.RUNNING.value))}
            queues = [QueueStats(r[0] or "", r[1], r[2]) for r in conn.execute(
                "SELECT model, COUNT(*), MIN(created_at) FROM jobs WHERE status = ? "
                "GROUP BY model ORDER BY model", (JobStatus.QUEUED.value,))]
            pending = {r[0]: r[1] for r in conn.execute(
                "SELECT kind, COUNT(*) FROM deliveries WHERE state = 'pending' GROUP BY kind")}
            busy = conn.execute(
                "SELECT COUNT(DISTINCT lease_owner) FROM jobs WHERE status = ? AND "
                "lease_expires > ?", (JobStatus.RUNNING.value, now)).fetchone()[0]
            counters = [tuple(r) for r in conn.execute("SELECT name, label, value FROM counters")]
        finally:
            conn.execute("COMMIT")
        return store_stats(active, queues, pending, busy, now, counters)

    def durations(self) -> dict[str, DurationHistogram]:
        rows = self._conn().execute("SELECT name, bucket, count, total FROM duration_counts")
        return histograms(tuple(r) for r in rows)

    def count_active(self, owner: str) -> int:
        return self._count_active(self._conn(), owner)

    def queue_position(self, job_id: str) -> int | None:
        conn = self._conn()
        row = conn.execute("SELECT status, created_at FROM jobs WHERE id = ?",
                           (job_id,)).fetchone()
        if row is None or row[0] != JobStatus.QUEUED.value:
            return None
        # A range of the jobs_runnable (status, created_at) index; the id breaks ties.
        ahead = conn.execute(
            "SELECT COUNT(*) FROM jobs WHERE status = ? AND created_at <= ? "
            "AND NOT (created_at = ? AND id >= ?)",
            (JobStatus.QUEUED.value, row[1], row[1], job_id),
        ).fetchone()
        return int(ahead[0])

    @staticmethod
    def _count_active(conn: sqlite3.Connection, owner: str) -> int:
        row = conn.execute(
            "SELECT COUNT(*) FROM jobs WHERE owner = ? AND status IN (?, ?)",
            (owner, JobStatus.QUEUED.value, JobStatus.RUNNING.value),
        ).fetchone()
        return int(row[0])

    # ------------------------------------------------------------------ writes

    def create(self, job: Job, *, max_active: int = 0) -> Job:
        now = time.time()
        try:
            with self._write() as conn:
                conn.execute(
                    "INSERT INTO jobs (id, owner, task_uuid, origin, origin_data, request, spec, "
                    "model, status, route, progress, attempts, cancel_requested, created_at, "
                    "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, 0, 0, ?, ?)",
                    (*new_job_values(job), now, now),
                )
                if max_active:
                    # Counted after the insert, under the write lock the transaction holds
                    # from its start: concurrent creates of one owner are serialised, so the
                    # limit holds exactly (the refusal rolls the insert back).
                    check_active(self._count_active(conn, job.owner), max_active)
                targets = DeliveryTargets.of(job.spec)
                _add_deliveries(conn, status_deliveries(job.id, targets, JobStatus.QUEUED), now)
        except sqlite3.IntegrityError as exc:
            raise task_uuid_conflict(job) from exc
        self._listeners.notify(job.id)
        created = self.get(job.id)
        assert created is not None
        return created

    def claim(
        self,
        worker_id: str,
        lease_seconds: float,
        *,
        prefer_models: Collection[str] = (),
        prefer_max_wait: float = 30.0,
        serves: Collection[str] | None = None,
    ) -> Job | None:
        ended: list[str] = []
        prefer = claim_preference(prefer_models)
        routes = claim_routes(serves)
        if routes == []:
            return None  # serves nothing
        with self._write() as conn:
            now = time.time()
            while (row := self._next_runnable(conn, now, prefer, now - prefer_max_wait,
                                              routes)) is not None:
                outcome = stale_outcome(row, self.max_losses)
                if outcome is None:
                    break
                conn.execute(
                    "UPDATE jobs SET status = ?, error = COALESCE(?, error), lease_owner = NULL, "
                    "lease_expires = NULL, updated_at = ? WHERE id = ?",
                    (outcome.status.value, outcome.error, now, row["id"]),
                )
                _add_deliveries(conn, outcome.deliveries, now)
                _bump(conn, outcome_counts(outcome.status, outcome.error))
                ended.append(row["id"])
            if row is not None:
                # Taking over a running job (its lease expired) counts one more vanished worker.
                conn.execute(
                    "UPDATE jobs SET status = ?, attempts = attempts + 1, "
                    "losses = losses + (status = ?), lease_owner = ?, "
                    "lease_expires = ?, updated_at = ?, started_at = COALESCE(started_at, ?) "
                    "WHERE id = ?",
                    (JobStatus.RUNNING.value, JobStatus.RUNNING.value, worker_id,
                     now + lease_seconds, now, now, row["id"]),
                )
                targets = DeliveryTargets.from_row(row)
                _add_deliveries(conn, status_deliveries(row["id"], targets, JobStatus.RUNNING), now)
                if row["attempts"] == 0:  # the first claim ends the job's queue wait
                    _observe(conn, "queue_wait", now - row["created_at"])
        for job_id in ended:
            self._listeners.notify(job_id)
        if row is None:
            return None
        self._listeners.notify(row["id"])
        return self.get(row["id"])

    def _next_runnable(
        self, conn: sqlite3.Connection, now: float, prefer: list[str], cutoff: float,
        routes: list[str] | None = None,
    ) -> sqlite3.Row | None:
        """The job a claim takes next: the oldest runnable one, unless it is younger than
        ``cutoff`` and a job for a ``prefer`` model is runnable, which then goes first.
        ``routes`` (None: any) limits both to jobs of those route keys."""
        columns = ("SELECT id, model, status, attempts, losses, cancel_requested, created_at, "
                   f"{_TARGETS} FROM jobs")
        args: tuple[Any, ...] = (JobStatus.QUEUED.value, JobStatus.RUNNING.value, now)
        runnable = _RUNNABLE
        if routes is not None:
            runnable = f"route IN ({', '.join('?' * len(routes))}) AND {_RUNNABLE}"
            args = (*routes, *args)
        oldest: sqlite3.Row | None = conn.execute(
            f"{columns} WHERE {runnable} ORDER BY created_at LIMIT 1", args
        ).fetchone()
        if oldest is None or takes_oldest(oldest, prefer, oldest["created_at"] <= cutoff):
            return oldest
        marks = ", ".join("?" * len(prefer))
        # "status IN" lets the index seek (model, status) pairs instead of scanning every job
        # the model ever had; the second condition then keeps running jobs with expired leases.
        preferred: sqlite3.Row | None = conn.execute(
            f"{columns} WHERE model IN ({marks}) AND status IN (?, ?) AND {runnable} "
            "ORDER BY created_at LIMIT 1",
            (*prefer, JobStatus.QUEUED.value, JobStatus.RUNNING.value, *args),
        ).fetchone()
        return preferred if preferred is not None else oldest

    # ------------------------------------------------------------------ workers

    def publish_worker(self, info: WorkerInfo) -> None:
        with self._write() as conn:
            now = time.time()
            conn.execute("DELETE FROM workers WHERE last_seen < ?", (now - _WORKER_KEPT,))
            conn.execute(
                "INSERT OR REPLACE INTO workers (worker_id, host, pid, started_at, capabilities, "
                "serves, last_seen) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (*worker_values(info), now),
            )

    def touch_worker(self, worker_id: str) -> bool:
        with self._write() as conn:
            cur = conn.execute("UPDATE workers SET last_seen = ? WHERE worker_id = ?",
                               (time.time(), worker_id))
            return cur.rowcount > 0

    def remove_worker(self, worker_id: str) -> None:
        with self._write() as conn:
            conn.execute("DELETE FROM workers WHERE worker_id = ?", (worker_id,))

    def live_workers(self, max_age: float = WORKER_LIVE) -> list[WorkerInfo]:
        rows = self._conn().execute(
            "SELECT * FROM workers WHERE last_seen >= ? ORDER BY worker_id",
            (time.time() - max_age,),
        ).fetchall()
        return [worker_from_row(row) for row in rows]

    def _owns(self, conn: sqlite3.Connection, job_id: str, worker_id: str) -> sqlite3.Row | None:
        """The job's row when ``worker_id`` holds its lease (with its delivery targets)."""
        row: sqlite3.Row | None = conn.execute(
            f"SELECT status, cancel_requested, attempts, losses, started_at, {_TARGETS} FROM jobs "
            "WHERE id = ? AND lease_owner = ? AND status = ?",
            (job_id, worker_id, JobStatus.RUNNING.value),
        ).fetchone()
        return row

    def heartbeat(
        self, job_id: str, worker_id: str, lease_seconds: float, progress: float | None = None
    ) -> Heartbeat:
        with self._write() as conn:
            row = self._owns(conn, job_id, worker_id)
            if row is None:
                return Heartbeat(owned=False, cancel_requested=False)
            now = time.time()
            if progress is None:
                conn.execute(
                    "UPDATE jobs SET lease_expires = ? WHERE id = ?", (now + lease_seconds, job_id)
                )
            else:
                conn.execute(
                    "UPDATE jobs SET lease_expires = ?, progress = ?, updated_at = ? WHERE id = ?",
                    (now + lease_seconds, clamp_progress(progress), now, job_id),
                )
            cancel = bool(row["cancel_requested"])
        if progress is not None:
            self._listeners.notify(job_id)
        return Heartbeat(owned=True, cancel_requested=cancel)

    def add_result(self, job_id: str, worker_id: str, result: Result) -> bool:
        with self._write() as conn:
            row = self._owns(conn, job_id, worker_id)
            if row is None:
                return False
            now = time.time()
            inserted = conn.execute(
                "INSERT OR IGNORE INTO results (job_id, idx, data, created_at) VALUES (?, ?, ?, ?)",
                (job_id, result.index, result.model_dump_json(), now),
            ).rowcount
            if inserted:
                targets = DeliveryTargets.from_row(row)
                _add_deliveries(conn, result_deliveries(job_id, targets, result.index), now)
                for name, seconds in result_durations(result):
                    _observe(conn, name, seconds)
                _bump(conn, [("results", "")])
            conn.execute("UPDATE jobs SET updated_at = ? WHERE id = ?", (now, job_id))
        self._listeners.notify(job_id)
        return True

    def finish(self, job_id: str, worker_id: str, cost: float | None = None) -> bool:
        with self._write() as conn:
            row = self._owns(conn, job_id, worker_id)
            if row is None:
                return False
            now = time.time()
            conn.execute(
                "UPDATE jobs SET status = ?, progress = 100, cost = ?, lease_owner = NULL, "
                "lease_expires = NULL, updated_at = ? WHERE id = ?",
                (JobStatus.SUCCEEDED.value, cost, now, job_id),
            )
            targets = DeliveryTargets.from_row(row)
            _add_deliveries(conn, status_deliveries(job_id, targets, JobStatus.SUCCEEDED), now)
            if row["started_at"] is not None:
                _observe(conn, "run", now - row["started_at"])
            _bump(conn, outcome_counts(JobStatus.SUCCEEDED, None))
        self._listeners.notify(job_id)
        return True

    def fail(
        self, job_id: str, worker_id: str, error: dict[str, Any], *, retry: bool = False
    ) -> Job | None:
        with self._write() as conn:
            row = self._owns(conn, job_id, worker_id)
            if row is None:
                return None
            now = time.time()
            outcome = fail_outcome(job_id, row, error, retry=retry, max_attempts=self.max_attempts)
            conn.execute(
                "UPDATE jobs SET status = ?, error = ?, lease_owner = NULL, lease_expires = NULL, "
                "updated_at = ? WHERE id = ?",
                (outcome.status.value, outcome.error, now, job_id),
            )
            _add_deliveries(conn, outcome.deliveries, now)
            _bump(conn, outcome_counts(outcome.status, outcome.error))
        self._listeners.notify(job_id)
        return self.get(job_id)

    def release(self, job_id: str, worker_id: str) -> bool:
        with self._write() as conn:
            if self._owns(conn, job_id, worker_id) is None:
                return False
            conn.execute(
                "UPDATE jobs SET status = ?, attempts = MAX(0, attempts - 1), lease_owner = NULL, "
                "lease_expires = NULL, updated_at = ? WHERE id = ?",
                (JobStatus.QUEUED.value, time.time(), job_id),
            )
        self._listeners.notify(job_id)
        return True

    def request_cancel(self, job_id: str) -> Job | None:
        with self._write() as conn:
            row = conn.execute(
                f"SELECT status, {_TARGETS} FROM jobs WHERE id = ?", (job_id,)
            ).fetchone()
            if row is None:
                return None
            status = JobStatus(row["status"])
            now = time.time()
            if status is JobStatus.QUEUED:
                outcome = cancel_queued(job_id, row)
                conn.execute(
                    "UPDATE jobs SET status = ?, cancel_requested = 1, error = ?, updated_at = ? "
                    "WHERE id = ?",
                    (outcome.status.value, outcome.error, now, job_id),
                )
                _add_deliveries(conn, outcome.deliveries, now)
                _bump(conn, outcome_counts(outcome.status, outcome.error))
            elif status is JobStatus.RUNNING:
                conn.execute(
                    "UPDATE jobs SET cancel_requested = 1, updated_at = ? WHERE id = ?",
                    (now, job_id),
                )
        self._listeners.notify(job_id)
        return self.get(job_id)

    def delete(self, job_id: str) -> bool:
        with self._write() as conn:
            conn.execute("DELETE FROM results WHERE job_id = ?", (job_id,))
            deleted = conn.execute("DELETE FROM jobs WHERE id = ?", (job_id,)).rowcount > 0
        if deleted:
            self._listeners.notify(job_id)
        return deleted

    def take_undelivered(self, job_id: str) -> list[Result]:
        with self._write() as conn:
            rows = conn.execute(
                "SELECT idx, data FROM results WHERE job_id = ? AND delivered = 0 ORDER BY idx",
                (job_id,),
            ).fetchall()
            if rows:
                conn.execute(
                    "UPDATE results SET delivered = 1 WHERE job_id = ? AND delivered = 0", (job_id,)
                )
        return [result_from_row(r) for r in rows]

    def return_undelivered(self, job_id: str, indexes: Collection[int]) -> None:
        if not indexes:
            return
        with self._write() as conn:
            conn.executemany("UPDATE results SET delivered = 0 WHERE job_id = ? AND idx = ?",
                             [(job_id, int(i)) for i in indexes])

    # ------------------------------------------------------------------ delivery outbox

    def claim_deliveries(
        self, worker_id: str, lease_seconds: float, limit: int = 16
    ) -> list[DeliveryRecord]:
        with self._write() as conn:
            now = time.time()
            # A status row waits while an earlier one of its job (smaller rowid: rows are only
            # appended) is pending, so a receiver never hears "succeed" before "processing".
            ids = [
                r["id"]
                for r in conn.execute(
                    "SELECT id FROM deliveries d WHERE state = 'pending' AND next_at <= ? AND "
                    "(lease_expires IS NULL OR lease_expires < ?) AND NOT (kind = 'status' AND "
                    "EXISTS (SELECT 1 FROM deliveries e WHERE e.job_id = d.job_id AND "
                    "e.kind = 'status' AND e.state = 'pending' AND e.rowid < d.rowid)) "
                    "ORDER BY next_at LIMIT ?",
                    (now, now, limit),
                )
            ]
            for delivery_id in ids:
                conn.execute(
                    "UPDATE deliveries SET lease_owner = ?, lease_expires = ? WHERE id = ?",
                    (worker_id, now + lease_seconds, delivery_id),
                )
            rows = [
                conn.execute("SELECT * FROM deliveries WHERE id = ?", (i,)).fetchone() for i in ids
            ]
        return [delivery_from_row(r) for r in rows]

    def record_delivery(
        self,
        delivery_id: str,
        worker_id: str,
        attempt: dict[str, Any],
        *,
        state: str,
        next_at: float | None = None,
    ) -> bool:
        with self._write() as conn:
            row = conn.execute(
                "SELECT job_id, kind, history, created_at FROM deliveries WHERE id = ? AND "
                "lease_owner = ?",
                (delivery_id, worker_id),
            ).fetchone()
            if row is None:
                return False
            now = time.time()
            if state == "delivered":
                _observe(conn, "delivery", now - row["created_at"])
            _bump(conn, attempt_counts(row["kind"], state))
            conn.execute(
                "UPDATE deliveries SET state = ?, attempts = attempts + 1, "
                "next_at = COALESCE(?, next_at), last_status = ?, last_error = ?, history = ?, "
                "lease_owner = NULL, lease_expires = NULL, updated_at = ? WHERE id = ?",
                (state, next_at, *attempt_columns(row["history"], attempt), now, delivery_id),
            )
            job_id = row["job_id"]
        self._listeners.notify(job_id)
        return True

    def deliveries(self, job_id: str) -> list[DeliveryRecord]:
        rows = self._conn().execute(
            "SELECT * FROM deliveries WHERE job_id = ? ORDER BY created_at, id", (job_id,)
        ).fetchall()
        return [delivery_from_row(r) for r in rows]

    # ------------------------------------------------------------------ expiry

    def expired_outputs(
        self, now: float, default_ttl: float, limit: int = 200
    ) -> list[tuple[str, Result]]:
        rows = self._conn().execute(
            "SELECT r.job_id, r.data FROM results r JOIN jobs j ON j.id = r.job_id "
            "WHERE r.expired_at IS NULL AND "
            "r.created_at + COALESCE(json_extract(j.spec, '$.ttl'), ?) <= ? "
            "ORDER BY r.created_at LIMIT ?",
            (default_ttl, now, limit),
        ).fetchall()
        return [(r["job_id"], result_from_row(r)) for r in rows]

    def mark_expired(self, job_id: str, index: int) -> None:
        with self._write() as conn:
            conn.execute(
                "UPDATE results SET expired_at = ? WHERE job_id = ? AND idx = ?",
                (time.time(), job_id, index),
            )


def _disk_full(exc: sqlite3.OperationalError) -> bool:
    """Whether SQLite failed for want of space (``SQLITE_FULL``, or an I/O error it reports
    while the file system is full)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code == sqlite3.SQLITE_FULL or "disk is full" in str(exc)


def _observe(conn: sqlite3.Connection, name: str, seconds: float) -> None:
    """Count one ``name`` duration in its histogram bucket, in the caller's transaction."""
    conn.execute(
        "INSERT INTO duration_counts (name, bucket, count, total) VALUES (?, ?, 1, ?) "
        "ON CONFLICT (name, bucket) DO UPDATE SET count = duration_counts.count + 1, "
        "total = duration_counts.total + excluded.total",
        (name, duration_bucket(seconds), max(0.0, seconds)),
    )


def _bump(conn: sqlite3.Connection, counts: Iterable[tuple[str, str]]) -> None:
    """Add one to each ``(name, label)`` counter, in the caller's transaction."""
    conn.executemany(
        "INSERT INTO counters (name, label, value) VALUES (?, ?, 1) "
        "ON CONFLICT (name, label) DO UPDATE SET value = counters.value + 1",
        list(counts),
    )


def _add_deliveries(
    conn: sqlite3.Connection, deliveries: Iterable[NewDelivery], now: float
) -> None:
    """Insert outbox rows, due ``now``, in the caller's transaction (so a change and the
    deliveries reporting it commit together); an id already there is left as it is."""
    conn.executemany(
        "INSERT OR IGNORE INTO deliveries (id, job_id, kind, url, result_index, event, next_at, "
        "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [(d.id, d.job_id, d.kind, d.url, d.result_index, d.event, now, now, now)
         for d in deliveries],
    )
