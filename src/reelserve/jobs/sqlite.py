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

import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from reelserve.jobs.rows import (
    JOB_COLUMNS,
    DeliveryTargets,
    NewDelivery,
    attempt_columns,
    cancel_queued,
    claim_preference,
    clamp_progress,
    delivery_from_row,
    fail_outcome,
    job_from_row,
    new_job_values,
    page_bounds,
    result_deliveries,
    result_from_row,
    stale_outcome,
    status_deliveries,
    takes_oldest,
    task_uuid_conflict,
)
from reelserve.jobs.store import DeliveryRecord, Heartbeat, JobStore, Listener, Listeners
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
]

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

    def __init__(self, path: str | Path, *, max_attempts: int = 3) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_attempts = max_attempts
        self._local = threading.local()
        self._listeners = Listeners()
        self._all_conns: list[sqlite3.Connection] = []
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
                self._all_conns.append(conn)
        return conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, holding the database's write lock from its start."""
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

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
            for conn in self._all_conns:
                conn.close()
            self._all_conns.clear()
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
        self, owner: str, *, origin: str | None = None, limit: int = 20, offset: int = 0,
        after: str | None = None,
    ) -> list[Job]:
        conn = self._conn()
        where = ["owner = ?"]
        args: list[Any] = [owner]
        if origin is not None:
            where.append("origin = ?")
            args.append(origin)
        if after is not None:
            row = conn.execute("SELECT created_at, id FROM jobs WHERE id = ? AND owner = ?",
                               (after, owner)).fetchone()
            if row is None:
                return []
            where.append("(created_at < ? OR (created_at = ? AND id < ?))")
            args += [row["created_at"], row["created_at"], row["id"]]
        rows = conn.execute(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE {' AND '.join(where)} "
            "ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?",
            (*args, *page_bounds(limit, offset)),
        ).fetchall()
        return [self._job(conn, row) for row in rows]

    def count_active(self, owner: str) -> int:
        row = self._conn().execute(
            "SELECT COUNT(*) FROM jobs WHERE owner = ? AND status IN (?, ?)",
            (owner, JobStatus.QUEUED.value, JobStatus.RUNNING.value),
        ).fetchone()
        return int(row[0])

    # ------------------------------------------------------------------ writes

    def create(self, job: Job) -> Job:
        now = time.time()
        try:
            with self._write() as conn:
                conn.execute(
                    "INSERT INTO jobs (id, owner, task_uuid, origin, origin_data, request, spec, "
                    "model, status, progress, attempts, cancel_requested, created_at, updated_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, 0, 0, ?, ?)",
                    (*new_job_values(job), now, now),
                )
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
    ) -> Job | None:
        ended: list[str] = []
        prefer = claim_preference(prefer_models)
        with self._write() as conn:
            now = time.time()
            while (row := self._next_runnable(conn, now, prefer, now - prefer_max_wait)) is not None:
                outcome = stale_outcome(row, self.max_attempts)
                if outcome is None:
                    break
                conn.execute(
                    "UPDATE jobs SET status = ?, error = COALESCE(?, error), lease_owner = NULL, "
                    "lease_expires = NULL, updated_at = ? WHERE id = ?",
                    (outcome.status.value, outcome.error, now, row["id"]),
                )
                _add_deliveries(conn, outcome.deliveries, now)
                ended.append(row["id"])
            if row is not None:
                conn.execute(
                    "UPDATE jobs SET status = ?, attempts = attempts + 1, lease_owner = ?, "
                    "lease_expires = ?, updated_at = ? WHERE id = ?",
                    (JobStatus.RUNNING.value, worker_id, now + lease_seconds, now, row["id"]),
                )
                targets = DeliveryTargets.from_row(row)
                _add_deliveries(conn, status_deliveries(row["id"], targets, JobStatus.RUNNING), now)
        for job_id in ended:
            self._listeners.notify(job_id)
        if row is None:
            return None
        self._listeners.notify(row["id"])
        return self.get(row["id"])

    def _next_runnable(
        self, conn: sqlite3.Connection, now: float, prefer: list[str], cutoff: float
    ) -> sqlite3.Row | None:
        """The job a claim takes next: the oldest runnable one, unless it is younger than
        ``cutoff`` and a job for a ``prefer`` model is runnable, which then goes first."""
        columns = ("SELECT id, model, status, attempts, cancel_requested, created_at, "
                   f"{_TARGETS} FROM jobs")
        args = (JobStatus.QUEUED.value, JobStatus.RUNNING.value, now)
        oldest: sqlite3.Row | None = conn.execute(
            f"{columns} WHERE {_RUNNABLE} ORDER BY created_at LIMIT 1", args
        ).fetchone()
        if oldest is None or takes_oldest(oldest, prefer, oldest["created_at"] <= cutoff):
            return oldest
        marks = ", ".join("?" * len(prefer))
        # "status IN" lets the index seek (model, status) pairs instead of scanning every job
        # the model ever had; the second condition then keeps running jobs with expired leases.
        preferred: sqlite3.Row | None = conn.execute(
            f"{columns} WHERE model IN ({marks}) AND status IN (?, ?) AND {_RUNNABLE} "
            "ORDER BY created_at LIMIT 1",
            (*prefer, JobStatus.QUEUED.value, JobStatus.RUNNING.value, *args),
        ).fetchone()
        return preferred if preferred is not None else oldest

    def _owns(self, conn: sqlite3.Connection, job_id: str, worker_id: str) -> sqlite3.Row | None:
        """The job's row when ``worker_id`` holds its lease (with its delivery targets)."""
        row: sqlite3.Row | None = conn.execute(
            f"SELECT status, cancel_requested, attempts, {_TARGETS} FROM jobs "
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
        self._listeners.notify(job_id)
        return self.get(job_id)

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
                "SELECT job_id, history FROM deliveries WHERE id = ? AND lease_owner = ?",
                (delivery_id, worker_id),
            ).fetchone()
            if row is None:
                return False
            conn.execute(
                "UPDATE deliveries SET state = ?, attempts = attempts + 1, "
                "next_at = COALESCE(?, next_at), last_status = ?, last_error = ?, history = ?, "
                "lease_owner = NULL, lease_expires = NULL, updated_at = ? WHERE id = ?",
                (state, next_at, *attempt_columns(row["history"], attempt), time.time(),
                 delivery_id),
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
