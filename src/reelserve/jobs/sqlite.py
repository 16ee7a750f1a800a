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

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from reelserve.errors import ConflictError
from reelserve.jobs.store import DeliveryRecord, Heartbeat, Listener
from reelserve.tasks import GenerationSpec, Job, JobStatus, Result

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

_JOB_COLUMNS = (
    "id, owner, task_uuid, origin, origin_data, request, spec, status, progress, attempts, "
    "cancel_requested, error, cost, created_at, updated_at"
)


class SQLiteJobStore:
    """JobStore on a SQLite file (``":memory:"`` is not supported: workers need a shared file)."""

    def __init__(self, path: str | Path, *, max_attempts: int = 3) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_attempts = max_attempts
        self._local = threading.local()
        self._listeners: list[Listener] = []
        self._listeners_lock = threading.Lock()
        self._all_conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._migrate()

    # ------------------------------------------------------------------ connections

    def _conn(self) -> sqlite3.Connection:
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
        """Register a listener called with the job id after each committed change."""
        with self._listeners_lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._listeners_lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    def _notify(self, job_id: str) -> None:
        with self._listeners_lock:
            listeners = list(self._listeners)
        for listener in listeners:
            listener(job_id)

    # ------------------------------------------------------------------ reads

    def _row_to_job(self, conn: sqlite3.Connection, row: sqlite3.Row) -> Job:
        results = [
            Result.model_validate_json(r["data"])
            for r in conn.execute(
                "SELECT data FROM results WHERE job_id = ? ORDER BY idx", (row["id"],)
            )
        ]
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
            cancel_requested=bool(row["cancel_requested"]),
            error=json.loads(row["error"]) if row["error"] else None,
            results=results,
            cost=row["cost"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
        )

    def get(self, job_id: str) -> Job | None:
        """The job with its results, or None."""
        conn = self._conn()
        row = conn.execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return self._row_to_job(conn, row) if row else None

    def get_by_task(self, owner: str, task_uuid: str) -> Job | None:
        """The owner's job for a client task UUID, or None."""
        conn = self._conn()
        row = conn.execute(
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE owner = ? AND task_uuid = ?",
            (owner, task_uuid),
        ).fetchone()
        return self._row_to_job(conn, row) if row else None

    def list_jobs(
        self, owner: str, *, origin: str | None = None, limit: int = 20, offset: int = 0,
        after: str | None = None,
    ) -> list[Job]:
        """The owner's jobs newest first (optionally one origin), from ``offset`` or ``after``."""
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
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE {' AND '.join(where)} "
            "ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?",
            (*args, max(0, limit), max(0, offset)),
        ).fetchall()
        return [self._row_to_job(conn, row) for row in rows]

    # ------------------------------------------------------------------ writes

    def create(self, job: Job) -> Job:
        """Insert a queued job; ConflictError when the owner reused a task UUID."""
        now = time.time()
        try:
            with self._write() as conn:
                conn.execute(
                    "INSERT INTO jobs (id, owner, task_uuid, origin, origin_data, request, spec, "
                    "model, status, progress, attempts, cancel_requested, created_at, updated_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, 0, 0, ?, ?)",
                    (
                        job.id,
                        job.owner,
                        job.task_uuid,
                        job.origin,
                        json.dumps(job.origin_data),
                        json.dumps(job.request),
                        job.spec.model_dump_json(),
                        job.spec.model,
                        JobStatus.QUEUED.value,
                        now,
                        now,
                    ),
                )
                _enqueue_status(conn, job.id, JobStatus.QUEUED, now)
        except sqlite3.IntegrityError as exc:
            raise ConflictError(
                "conflictTaskUUID",
                f"taskUUID {job.task_uuid!r} was already used by this API key; send a new UUID "
                "for a new task, or poll the existing one with getResponse",
                parameter="taskUUID",
            ) from exc
        self._notify(job.id)
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
        """Take the next runnable job (see :meth:`JobStore.claim` for the order), or None."""
        lost: list[str] = []
        claimed: str | None = None
        prefer = sorted(set(prefer_models))
        with self._write() as conn:
            now = time.time()
            while True:
                row = self._next_runnable(conn, now, prefer, now - prefer_max_wait)
                if row is None:
                    break
                if row["status"] == JobStatus.RUNNING.value and row["cancel_requested"]:
                    # Cancelled while its worker was gone: nothing left to run.
                    conn.execute(
                        "UPDATE jobs SET status = ?, lease_owner = NULL, lease_expires = NULL, "
                        "updated_at = ? WHERE id = ?",
                        (JobStatus.CANCELLED.value, now, row["id"]),
                    )
                    _enqueue_deliveries(conn, row["id"], None, now)
                    _enqueue_status(conn, row["id"], JobStatus.CANCELLED, now)
                    lost.append(row["id"])
                    continue
                if row["status"] == JobStatus.RUNNING.value and row["attempts"] >= self.max_attempts:
                    # Its worker died max_attempts times: end it instead of crashing another one.
                    error = {
                        "code": "workerLost",
                        "message": f"the worker running this task stopped {row['attempts']} times "
                        f"(max_attempts={self.max_attempts}); the task was abandoned",
                        "kind": "internal",
                    }
                    conn.execute(
                        "UPDATE jobs SET status = ?, error = ?, lease_owner = NULL, "
                        "lease_expires = NULL, updated_at = ? WHERE id = ?",
                        (JobStatus.FAILED.value, json.dumps(error), now, row["id"]),
                    )
                    _enqueue_deliveries(conn, row["id"], None, now)
                    _enqueue_status(conn, row["id"], JobStatus.FAILED, now)
                    lost.append(row["id"])
                    continue
                conn.execute(
                    "UPDATE jobs SET status = ?, attempts = attempts + 1, lease_owner = ?, "
                    "lease_expires = ?, updated_at = ? WHERE id = ?",
                    (JobStatus.RUNNING.value, worker_id, now + lease_seconds, now, row["id"]),
                )
                # A re-claim after a lost worker adds nothing: the receiver heard "running".
                _enqueue_status(conn, row["id"], JobStatus.RUNNING, now)
                claimed = row["id"]
                break
        for job_id in lost:
            self._notify(job_id)
        if claimed is None:
            return None
        self._notify(claimed)
        return self.get(claimed)

    def _next_runnable(
        self, conn: sqlite3.Connection, now: float, prefer: list[str], cutoff: float
    ) -> sqlite3.Row | None:
        """The job a claim takes next: the oldest runnable one, unless it is younger than
        ``cutoff`` and a job for a ``prefer`` model is runnable, which then goes first."""
        columns = "SELECT id, model, status, attempts, cancel_requested, created_at FROM jobs"
        args = (JobStatus.QUEUED.value, JobStatus.RUNNING.value, now)
        oldest: sqlite3.Row | None = conn.execute(
            f"{columns} WHERE {_RUNNABLE} ORDER BY created_at LIMIT 1", args
        ).fetchone()
        if oldest is None or not prefer or oldest["model"] in prefer:
            return oldest
        if oldest["created_at"] <= cutoff:  # waited long enough: no more overtaking
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
        row: sqlite3.Row | None = conn.execute(
            "SELECT status, cancel_requested, attempts FROM jobs "
            "WHERE id = ? AND lease_owner = ? AND status = ?",
            (job_id, worker_id, JobStatus.RUNNING.value),
        ).fetchone()
        return row

    def heartbeat(
        self, job_id: str, worker_id: str, lease_seconds: float, progress: float | None = None
    ) -> Heartbeat:
        """Renew the lease; store progress when given."""
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
                    (now + lease_seconds, max(0.0, min(100.0, progress)), now, job_id),
                )
            cancel = bool(row["cancel_requested"])
        if progress is not None:
            self._notify(job_id)
        return Heartbeat(owned=True, cancel_requested=cancel)

    def add_result(self, job_id: str, worker_id: str, result: Result) -> bool:
        """Record one result (idempotent per index)."""
        with self._write() as conn:
            if self._owns(conn, job_id, worker_id) is None:
                return False
            now = time.time()
            inserted = conn.execute(
                "INSERT OR IGNORE INTO results (job_id, idx, data, created_at) VALUES (?, ?, ?, ?)",
                (job_id, result.index, result.model_dump_json(), now),
            ).rowcount
            if inserted:
                _enqueue_deliveries(conn, job_id, result.index, now)
            conn.execute("UPDATE jobs SET updated_at = ? WHERE id = ?", (now, job_id))
        self._notify(job_id)
        return True

    def finish(self, job_id: str, worker_id: str, cost: float | None = None) -> bool:
        """Mark succeeded (progress 100)."""
        with self._write() as conn:
            if self._owns(conn, job_id, worker_id) is None:
                return False
            now = time.time()
            conn.execute(
                "UPDATE jobs SET status = ?, progress = 100, cost = ?, lease_owner = NULL, "
                "lease_expires = NULL, updated_at = ? WHERE id = ?",
                (JobStatus.SUCCEEDED.value, cost, now, job_id),
            )
            _enqueue_status(conn, job_id, JobStatus.SUCCEEDED, now)
        self._notify(job_id)
        return True

    def fail(
        self, job_id: str, worker_id: str, error: dict[str, Any], *, retry: bool = False
    ) -> Job | None:
        """End the job with an error, requeue it (retry with attempts left), or cancel it."""
        with self._write() as conn:
            row = self._owns(conn, job_id, worker_id)
            if row is None:
                return None
            now = time.time()
            if row["cancel_requested"]:
                status = JobStatus.CANCELLED
            elif retry and row["attempts"] < self.max_attempts:
                status = JobStatus.QUEUED
            else:
                status = JobStatus.FAILED
            conn.execute(
                "UPDATE jobs SET status = ?, error = ?, lease_owner = NULL, lease_expires = NULL, "
                "updated_at = ? WHERE id = ?",
                (status.value, None if status is JobStatus.QUEUED else json.dumps(error), now,
                 job_id),
            )
            if status is not JobStatus.QUEUED:
                _enqueue_deliveries(conn, job_id, None, now)
                _enqueue_status(conn, job_id, status, now)
        self._notify(job_id)
        return self.get(job_id)

    def request_cancel(self, job_id: str) -> Job | None:
        """Cancel a queued job now, flag a running one."""
        with self._write() as conn:
            row = conn.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                return None
            status = JobStatus(row["status"])
            now = time.time()
            if status is JobStatus.QUEUED:
                error = {"code": "taskCancelled", "message": "the task was cancelled before it "
                         "started", "kind": "invalid"}
                conn.execute(
                    "UPDATE jobs SET status = ?, cancel_requested = 1, error = ?, updated_at = ? "
                    "WHERE id = ?",
                    (JobStatus.CANCELLED.value, json.dumps(error), now, job_id),
                )
                _enqueue_deliveries(conn, job_id, None, now)
                _enqueue_status(conn, job_id, JobStatus.CANCELLED, now)
            elif status is JobStatus.RUNNING:
                conn.execute(
                    "UPDATE jobs SET cancel_requested = 1, updated_at = ? WHERE id = ?",
                    (now, job_id),
                )
        self._notify(job_id)
        return self.get(job_id)

    def delete(self, job_id: str) -> bool:
        """Remove a job and its results (a running worker loses its lease)."""
        with self._write() as conn:
            conn.execute("DELETE FROM results WHERE job_id = ?", (job_id,))
            deleted = conn.execute("DELETE FROM jobs WHERE id = ?", (job_id,)).rowcount > 0
        if deleted:
            self._notify(job_id)
        return deleted

    def take_undelivered(self, job_id: str) -> list[Result]:
        """Return undelivered results and mark them delivered, atomically."""
        with self._write() as conn:
            rows = conn.execute(
                "SELECT idx, data FROM results WHERE job_id = ? AND delivered = 0 ORDER BY idx",
                (job_id,),
            ).fetchall()
            if rows:
                conn.execute(
                    "UPDATE results SET delivered = 1 WHERE job_id = ? AND delivered = 0", (job_id,)
                )
        return [Result.model_validate_json(r["data"]) for r in rows]

    # ------------------------------------------------------------------ delivery outbox

    def claim_deliveries(
        self, worker_id: str, lease_seconds: float, limit: int = 16
    ) -> list[DeliveryRecord]:
        """Lease up to ``limit`` pending deliveries that are due (status rows of a job in order)."""
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
        return [_delivery(r) for r in rows]

    def record_delivery(
        self,
        delivery_id: str,
        worker_id: str,
        attempt: dict[str, Any],
        *,
        state: str,
        next_at: float | None = None,
    ) -> bool:
        """Record one attempt, set the new state and release the lease."""
        with self._write() as conn:
            row = conn.execute(
                "SELECT job_id, history FROM deliveries WHERE id = ? AND lease_owner = ?",
                (delivery_id, worker_id),
            ).fetchone()
            if row is None:
                return False
            history = json.loads(row["history"])
            history.append(attempt)
            now = time.time()
            conn.execute(
                "UPDATE deliveries SET state = ?, attempts = attempts + 1, "
                "next_at = COALESCE(?, next_at), last_status = ?, last_error = ?, history = ?, "
                "lease_owner = NULL, lease_expires = NULL, updated_at = ? WHERE id = ?",
                (state, next_at, attempt.get("status"), attempt.get("error"),
                 json.dumps(history[-20:]), now, delivery_id),
            )
            job_id = row["job_id"]
        self._notify(job_id)
        return True

    def deliveries(self, job_id: str) -> list[DeliveryRecord]:
        """Every delivery of a job, in creation order."""
        rows = self._conn().execute(
            "SELECT * FROM deliveries WHERE job_id = ? ORDER BY created_at, id", (job_id,)
        ).fetchall()
        return [_delivery(r) for r in rows]

    # ------------------------------------------------------------------ expiry and limits

    def expired_outputs(
        self, now: float, default_ttl: float, limit: int = 200
    ) -> list[tuple[str, Result]]:
        """Results whose URL lifetime (task ttl, else ``default_ttl``) ended before ``now``."""
        rows = self._conn().execute(
            "SELECT r.job_id, r.data FROM results r JOIN jobs j ON j.id = r.job_id "
            "WHERE r.expired_at IS NULL AND "
            "r.created_at + COALESCE(json_extract(j.spec, '$.ttl'), ?) <= ? "
            "ORDER BY r.created_at LIMIT ?",
            (default_ttl, now, limit),
        ).fetchall()
        return [(r["job_id"], Result.model_validate_json(r["data"])) for r in rows]

    def mark_expired(self, job_id: str, index: int) -> None:
        """Note that a result's file was removed (it is not offered to the sweeper again)."""
        with self._write() as conn:
            conn.execute(
                "UPDATE results SET expired_at = ? WHERE job_id = ? AND idx = ?",
                (time.time(), job_id, index),
            )

    def count_active(self, owner: str) -> int:
        """How many of the owner's jobs are queued or running."""
        row = self._conn().execute(
            "SELECT COUNT(*) FROM jobs WHERE owner = ? AND status IN (?, ?)",
            (owner, JobStatus.QUEUED.value, JobStatus.RUNNING.value),
        ).fetchone()
        return int(row[0])


def _enqueue_deliveries(
    conn: sqlite3.Connection, job_id: str, index: int | None, now: float
) -> None:
    """Add outbox rows for a new result (``index``) or the job's failure (``None``).

    Runs inside the caller's transaction, so a recorded result always has its deliveries. Ids are
    deterministic (``job:kind:index``), which makes a repeated call a no-op.
    """
    row = conn.execute(
        "SELECT json_extract(spec, '$.delivery.webhook_url') AS hook, "
        "json_extract(spec, '$.delivery.upload_endpoint') AS up FROM jobs WHERE id = ?",
        (job_id,),
    ).fetchone()
    if row is None:
        return
    targets = []
    if row["hook"]:
        targets.append(("webhook", row["hook"]))
    if row["up"] and index is not None:
        targets.append(("upload", row["up"]))
    ref = "error" if index is None else str(index)
    for kind, url in targets:
        conn.execute(
            "INSERT OR IGNORE INTO deliveries (id, job_id, kind, url, result_index, next_at, "
            "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (f"{job_id}:{kind}:{ref}", job_id, kind, url, index, now, now, now),
        )


def _enqueue_status(conn: sqlite3.Connection, job_id: str, status: JobStatus, now: float) -> None:
    """Add the status-change row of a job that asks for one (``spec.delivery.status_url``).

    Runs inside the caller's transaction, so the change and its delivery commit together. The id
    ``job:status:<status>`` makes a repeat (a job claimed again after its worker died, a retry
    that queues it again) a no-op: a receiver hears each status of a job once.
    """
    row = conn.execute(
        "SELECT json_extract(spec, '$.delivery.status_url') AS url FROM jobs WHERE id = ?",
        (job_id,),
    ).fetchone()
    if row is None or not row["url"]:
        return
    conn.execute(
        "INSERT OR IGNORE INTO deliveries (id, job_id, kind, url, event, next_at, created_at, "
        "updated_at) VALUES (?, ?, 'status', ?, ?, ?, ?, ?)",
        (f"{job_id}:status:{status.value}", job_id, row["url"], status.value, now, now, now),
    )


def _delivery(row: sqlite3.Row) -> DeliveryRecord:
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
