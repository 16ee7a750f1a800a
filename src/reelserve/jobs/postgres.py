"""The JobStore for several machines: PostgreSQL through psycopg 3.

Selected by ``REELSERVE_DATABASE_URL=postgresql://user:password@host:5432/dbname`` (needs the
``postgres`` extra: ``pip install 'reelserve[postgres]'``). Every API server and ``reelserve
worker`` on every machine points at the same database; it is the only shared state besides the
artifacts (see ``docs/deployment.md``).

Concurrency: a small connection pool per process, one transaction per method. A claim picks its
job with ``SELECT ... FOR UPDATE SKIP LOCKED``, so concurrent claimers on any number of machines
never take the same job and never wait for each other; every other write locks the job row it
checks (``FOR UPDATE``) before it writes, so "does this worker still hold the lease" and the write
happen atomically.

Time: every time the store stamps (leases, ``created_at``, delivery leases) is the database's
clock (``now()``, the transaction's start), so the clocks of the machines do not matter for
leases or claim order. Two values come from the caller and are compared with the database clock:
a delivery retry's ``next_at`` and the sweeper's ``now`` in :meth:`expired_outputs`; those assume
the machines' clocks agree to within a second or so (NTP), which only shifts a retry or an expiry
by that much.

Change notification: each committed change also runs ``pg_notify`` on :data:`CHANNEL` with
``<store instance>:<job id>``. A store with subscribers keeps one extra connection that LISTENs
and calls them for changes made by *other* processes (its own changes are reported directly after
commit, as in SQLite). Notifications are an optimisation only: readers also poll. The listening
connection reconnects with backoff when it drops, and changes made while it was down are simply
found by those polls. Progress-only heartbeats are not broadcast: nothing outside the writing
process waits for them, and waking every idle worker on every machine each time a running job
advances would only cost claims.

Schema changes go into :data:`MIGRATIONS` (append only); the ``reelserve_schema`` table records
how many have run. Migrations run under an advisory lock, so processes starting together do not
race.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import DictRow, dict_row
from psycopg_pool import ConnectionPool

from reelserve.errors import ErrorKind, ReelserveError, storage_full
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

log = logging.getLogger(__name__)

Conn = psycopg.Connection[DictRow]

MIGRATIONS: list[str] = [
    # 1: the schema of the SQLite store as of its migration 4: jobs (with the indexed model
    # column that claim preference uses), per-index results with expiry, and the delivery
    # outbox (webhook, upload and status rows). ``seq`` orders outbox rows the way SQLite's
    # rowid does: status rows of one job go out in the order they were added.
    """
    CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        task_uuid TEXT NOT NULL,
        origin TEXT NOT NULL,
        origin_data TEXT NOT NULL,
        request TEXT NOT NULL,
        spec TEXT NOT NULL,
        model TEXT,
        status TEXT NOT NULL,
        progress DOUBLE PRECISION NOT NULL DEFAULT 0,
        attempts INTEGER NOT NULL DEFAULT 0,
        cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
        lease_owner TEXT,
        lease_expires DOUBLE PRECISION,
        error TEXT,
        cost DOUBLE PRECISION,
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
        UNIQUE (owner, task_uuid)
    );
    CREATE INDEX jobs_runnable ON jobs (status, created_at);
    CREATE INDEX jobs_model_runnable ON jobs (model, status, created_at);
    CREATE INDEX jobs_owner_status ON jobs (owner, status);
    CREATE INDEX jobs_owner_created ON jobs (owner, created_at, id);
    CREATE TABLE results (
        job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        idx INTEGER NOT NULL,
        data TEXT NOT NULL,
        delivered BOOLEAN NOT NULL DEFAULT FALSE,
        created_at DOUBLE PRECISION NOT NULL,
        expired_at DOUBLE PRECISION,
        PRIMARY KEY (job_id, idx)
    );
    CREATE INDEX results_live ON results (created_at) WHERE expired_at IS NULL;
    CREATE TABLE deliveries (
        seq BIGINT GENERATED ALWAYS AS IDENTITY,
        id TEXT PRIMARY KEY,
        job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        kind TEXT NOT NULL,
        url TEXT NOT NULL,
        result_index INTEGER,
        event TEXT,
        state TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0,
        next_at DOUBLE PRECISION NOT NULL,
        lease_owner TEXT,
        lease_expires DOUBLE PRECISION,
        last_status INTEGER,
        last_error TEXT,
        history TEXT NOT NULL DEFAULT '[]',
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX deliveries_due ON deliveries (next_at) WHERE state = 'pending';
    CREATE INDEX deliveries_job ON deliveries (job_id, seq);
    """,
    # 2: lists that scale (as SQLite's migration 5): one index per list filter in list order,
    # so a page is an index seek at any depth ((owner, status, ...) also serves count_active,
    # which made jobs_owner_status redundant); (status, updated_at) for retention; started_at
    # (first claim) for the run duration; duration_counts and counters for metrics (counted
    # by the writes themselves, so a scrape reads a few rows).
    """
    ALTER TABLE jobs ADD COLUMN started_at DOUBLE PRECISION;
    CREATE TABLE duration_counts (
        name TEXT NOT NULL,
        bucket INTEGER NOT NULL,
        count BIGINT NOT NULL,
        total DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (name, bucket)
    );
    CREATE TABLE counters (
        name TEXT NOT NULL,
        label TEXT NOT NULL,
        value BIGINT NOT NULL,
        PRIMARY KEY (name, label)
    );
    CREATE INDEX jobs_owner_origin_created ON jobs (owner, origin, created_at, id);
    CREATE INDEX jobs_owner_status_created ON jobs (owner, status, created_at, id);
    CREATE INDEX jobs_owner_origin_status_created ON jobs (owner, origin, status, created_at, id);
    DROP INDEX jobs_owner_status;
    CREATE INDEX jobs_status_updated ON jobs (status, updated_at);
    """,
    # 3 (as SQLite's 6): how often a job's worker vanished (its lease expired and another
    # claim took the job over), budgeted apart from its failures, so restarts do not use up
    # its retries
    """
    ALTER TABLE jobs ADD COLUMN losses INTEGER NOT NULL DEFAULT 0;
    """,
    # 4 (as SQLite's 7): split deployments: each job's model id x workflow as its claim key
    # (route), indexed so a worker's claim seeks the routes it serves; and the workers table,
    # where each worker publishes what it renders with its presence beats
    """
    ALTER TABLE jobs ADD COLUMN route TEXT;
    UPDATE jobs SET route = model || '/' || (spec::jsonb ->> 'workflow');
    CREATE INDEX jobs_route_runnable ON jobs (route, status, created_at);
    CREATE TABLE workers (
        worker_id TEXT PRIMARY KEY,
        host TEXT NOT NULL,
        pid INTEGER NOT NULL,
        started_at DOUBLE PRECISION NOT NULL,
        last_seen DOUBLE PRECISION NOT NULL,
        capabilities TEXT NOT NULL,
        serves TEXT
    );
    """,
]

CHANNEL = "reelserve_jobs"
"""The LISTEN/NOTIFY channel; payloads are ``<store instance id>:<job id>``."""

# Any constant works: it only has to be the same in every reelserve process.
_MIGRATION_LOCK = 0x7265656C73657276
# The first key of the per-owner advisory locks of create(max_active=...) (a 32-bit key pair:
# this constant and the owner's hash), apart from the migration lock's 64-bit key space.
_OWNER_LOCK = 0x72736A62

# The database clock in epoch seconds: the start of the current transaction.
_NOW = "extract(epoch FROM now())::float8"

# How long a worker's row outlives its last beat (then the next publish removes it).
_WORKER_KEPT = 3600.0

# A claimable job: queued, or running under a lease that expired (its worker died).
_RUNNABLE = f"(status = 'queued' OR (status = 'running' AND lease_expires < {_NOW}))"

# A job row with its results (one statement, so both come from the same snapshot).
_JOB = (
    f"{JOB_COLUMNS}, "
    "ARRAY(SELECT r.data FROM results r WHERE r.job_id = jobs.id ORDER BY r.idx) AS results"
)

# Where a job's deliveries go, read from its stored spec (see DeliveryTargets.from_row).
_TARGETS = (
    "spec::jsonb #>> '{delivery,webhook_url}' AS webhook_url, "
    "spec::jsonb #>> '{delivery,upload_endpoint}' AS upload_endpoint, "
    "spec::jsonb #>> '{delivery,status_url}' AS status_url"
)

# Connection settings used unless the URL sets them: fail fast when the server is unreachable,
# and notice a dead peer on an idle connection (the listener's) within about a minute.
_CONNECT_DEFAULTS = {
    "connect_timeout": "10",
    "keepalives": "1",
    "keepalives_idle": "30",
    "keepalives_interval": "10",
    "keepalives_count": "3",
    "application_name": "reelserve",
}


def _unavailable(exc: Exception, target: str) -> ReelserveError:
    return ReelserveError(
        "databaseUnavailable",
        f"the job database ({target}) cannot be used: {exc}".strip(),
        parameter="database_url",
        kind=ErrorKind.UNAVAILABLE,
    )


def _describe(conninfo: str) -> str:
    """Where the URL points, without its password (for error messages and logs)."""
    params = conninfo_to_dict(conninfo)
    host = params.get("host") or "local socket"
    return f"{params.get('user') or 'default user'}@{host}:{params.get('port') or 5432}/" \
           f"{params.get('dbname') or 'default database'}"


class PostgresJobStore(JobStore):
    """JobStore on a PostgreSQL database, shared by every process on every machine.

    Methods without a docstring of their own do what :class:`~reelserve.jobs.store.JobStore`
    documents.

    Args:
        url: a libpq connection URL (``postgresql://user:password@host:port/dbname``) or
            key=value string.
        max_attempts: claims after which a job whose worker keeps dying ends with an error.
        pool_size: most connections this process opens for store calls (the LISTEN connection
            comes on top); callers beyond it wait for a free one.
        wait_timeout: seconds a call waits for a usable connection (all busy, or the database
            unreachable) before it fails with ``databaseUnavailable``.
    """

    def __init__(
        self, url: str, *, max_attempts: int = 3, max_losses: int | None = None,
        pool_size: int = 8, wait_timeout: float = 10.0,
    ) -> None:
        params = {**_CONNECT_DEFAULTS, **conninfo_to_dict(url)}
        self._conninfo = make_conninfo("", **params)
        self._target = _describe(self._conninfo)
        self.max_attempts = max_attempts
        #: How often a job's worker may vanish before the job fails with ``workerLost``
        #: (default: ``max_attempts``); see :func:`reelserve.jobs.rows.stale_outcome`.
        self.max_losses = max_losses if max_losses is not None else max_attempts
        self._instance = uuid.uuid4().hex[:12]
        self._listeners = Listeners()
        self._listen_lock = threading.Lock()
        self._listen_thread: _ListenThread | None = None
        try:
            # One plain connection first: a wrong URL fails here, at once and clearly, instead
            # of as a pool timeout at the first request.
            with psycopg.connect(self._conninfo, row_factory=dict_row) as conn:
                self._migrate(conn)
        except psycopg.Error as exc:  # unreachable, bad password, no right to create tables
            raise _unavailable(exc, self._target) from exc
        self._pool: ConnectionPool[Conn] = ConnectionPool(
            self._conninfo,
            min_size=1,
            max_size=max(1, pool_size),
            kwargs={"row_factory": dict_row},
            timeout=wait_timeout,
            # A connection the server dropped (restart, failover, idle timeout) is replaced when
            # it is taken from the pool instead of failing the call that took it.
            check=ConnectionPool.check_connection,
            name="reelserve-jobs",
            open=True,
        )

    # ------------------------------------------------------------------ connections

    @contextlib.contextmanager
    def _tx(self) -> Iterator[Conn]:
        """One transaction: committed when the block ends, rolled back when it raises.

        A database server out of disk space raises ``insufficientStorage``."""
        try:
            with self._pool.connection() as conn:
                yield conn
        except psycopg.errors.DiskFull as exc:
            raise storage_full("the job database", exc) from exc
        except psycopg.OperationalError as exc:  # connection lost, pool timeout, server down
            raise _unavailable(exc, self._target) from exc

    def _migrate(self, conn: Conn) -> None:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            conn.execute("CREATE TABLE IF NOT EXISTS reelserve_schema (version INTEGER NOT NULL)")
            row = conn.execute("SELECT version FROM reelserve_schema").fetchone()
            if row is None:
                conn.execute("INSERT INTO reelserve_schema (version) VALUES (0)")
                version = 0
            else:
                version = int(row["version"])
            if version > len(MIGRATIONS):
                # Migrations only add tables and columns, so an older release can keep going
                # during a rolling upgrade; it just does not use what the newer one added.
                log.warning("job database schema %d is newer than this reelserve knows (%d)",
                            version, len(MIGRATIONS))
                return
            for script in MIGRATIONS[version:]:
                conn.execute(script)  # a literal script; no parameters
            conn.execute("UPDATE reelserve_schema SET version = %s", (len(MIGRATIONS),))

    def close(self) -> None:
        """Stop listening and close every connection."""
        thread, self._listen_thread = self._listen_thread, None
        if thread is not None:
            thread.stop()
            # Wakes the listener at once instead of at its next poll.
            with contextlib.suppress(ReelserveError), self._tx() as conn:
                conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, f"{thread.instance}:"))
            thread.join(5.0)
        self._pool.close()

    # ------------------------------------------------------------------ notification

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Register a listener called with the job id after each committed change.

        Changes made through this store are reported from the writing thread; changes made by
        other processes from the store's LISTEN thread, started by the first subscription.
        """
        unsubscribe = self._listeners.add(listener)
        with self._listen_lock:
            if self._listen_thread is None:
                self._listen_thread = _ListenThread(
                    self._conninfo, self._instance, self._listeners.notify
                )
                self._listen_thread.start()
        return unsubscribe

    def _publish(self, conn: Conn, *job_ids: str) -> None:
        """Tell other processes, at commit (NOTIFY is transactional), which jobs changed."""
        conn.execute(
            "SELECT pg_notify(%s, %s || ':' || j) FROM unnest(%s::text[]) AS j",
            (CHANNEL, self._instance, list(job_ids)),
        )

    # ------------------------------------------------------------------ reads

    def get(self, job_id: str) -> Job | None:
        with self._tx() as conn:
            row = conn.execute(f"SELECT {_JOB} FROM jobs WHERE id = %s", (job_id,)).fetchone()
        return _job(row) if row else None

    def get_by_task(self, owner: str, task_uuid: str) -> Job | None:
        with self._tx() as conn:
            row = conn.execute(
                f"SELECT {_JOB} FROM jobs WHERE owner = %s AND task_uuid = %s", (owner, task_uuid)
            ).fetchone()
        return _job(row) if row else None

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
            _JOB, owner, origin=origin, statuses=status_values(statuses),
            cursor=parse_cursor(after) if after is not None else None, limit=limit,
            offset=offset, mark="%s",
        )
        with self._tx() as conn:
            rows = conn.execute(sql, args).fetchall()
        page, cursor = page_of(rows, limit, row_cursor)
        return [_job(row) for row in page], cursor

    def expired_jobs(self, before: float, limit: int = 200) -> list[Job]:
        with self._tx() as conn:
            rows = conn.execute(
                f"SELECT {_JOB} FROM jobs WHERE status = ANY(%s) AND updated_at < %s "
                "ORDER BY updated_at LIMIT %s",
                (list(TERMINAL_STATUSES), before, max(0, limit)),
            ).fetchall()
        return [_job(row) for row in rows]

    def stats(self) -> StoreStats:
        with self._tx() as conn:
            # REPEATABLE READ: every number comes from the same snapshot. Each query is an
            # index range over active jobs or pending rows, or reads the counters.
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            now = float(_scalar(conn, f"SELECT {_NOW}"))
            active = {r["status"]: r["n"] for r in conn.execute(
                "SELECT status, count(*) AS n FROM jobs WHERE status IN ('queued', 'running') "
                "GROUP BY status")}
            queues = [QueueStats(r["model"] or "", r["n"], r["oldest"]) for r in conn.execute(
                "SELECT model, count(*) AS n, min(created_at) AS oldest FROM jobs "
                "WHERE status = 'queued' GROUP BY model ORDER BY model")]
            pending = {r["kind"]: r["n"] for r in conn.execute(
                "SELECT kind, count(*) AS n FROM deliveries WHERE state = 'pending' "
                "GROUP BY kind")}
            busy = _scalar(conn, "SELECT count(DISTINCT lease_owner) FROM jobs WHERE "
                           f"status = 'running' AND lease_expires > {_NOW}")
            counters = [(r["name"], r["label"], r["value"]) for r in conn.execute(
                "SELECT name, label, value FROM counters")]
        return store_stats(active, queues, pending, busy, now, counters)

    def durations(self) -> dict[str, DurationHistogram]:
        with self._tx() as conn:
            rows = conn.execute("SELECT name, bucket, count, total FROM duration_counts").fetchall()
        return histograms((r["name"], r["bucket"], r["count"], r["total"]) for r in rows)

    def count_active(self, owner: str) -> int:
        with self._tx() as conn:
            return _count_active(conn, owner)

    def queue_position(self, job_id: str) -> int | None:
        with self._tx() as conn:
            row = conn.execute("SELECT status, created_at FROM jobs WHERE id = %s",
                               (job_id,)).fetchone()
            if row is None or row["status"] != JobStatus.QUEUED.value:
                return None
            # A range of the jobs_runnable (status, created_at) index; the id breaks ties.
            ahead = conn.execute(
                "SELECT count(*) AS n FROM jobs WHERE status = %s AND created_at <= %s "
                "AND NOT (created_at = %s AND id >= %s)",
                (JobStatus.QUEUED.value, row["created_at"], row["created_at"], job_id),
            ).fetchone()
            return int(ahead["n"]) if ahead else 0

    # ------------------------------------------------------------------ writes

    def create(self, job: Job, *, max_active: int = 0) -> Job:
        try:
            with self._tx() as conn:
                if max_active:
                    # Creates of one owner queue on this transaction-scoped lock, so the count
                    # below sees every earlier create of the owner (committed) and the limit
                    # holds exactly across processes and machines.
                    conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
                                 (_OWNER_LOCK, job.owner))
                row = conn.execute(
                    "INSERT INTO jobs (id, owner, task_uuid, origin, origin_data, request, spec, "
                    "model, status, route, created_at, updated_at) "
                    f"VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, {_NOW}, {_NOW}) "
                    f"RETURNING {_JOB}",
                    new_job_values(job),
                ).fetchone()
                if max_active:
                    check_active(_count_active(conn, job.owner), max_active)  # raises: rollback
                targets = DeliveryTargets.of(job.spec)
                _add_deliveries(conn, status_deliveries(job.id, targets, JobStatus.QUEUED))
                self._publish(conn, job.id)
        except psycopg.errors.UniqueViolation as exc:
            raise task_uuid_conflict(job) from exc
        self._listeners.notify(job.id)
        assert row is not None
        return _job(row)

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
        claimed: DictRow | None = None
        prefer = claim_preference(prefer_models)
        routes = claim_routes(serves)
        if routes == []:
            return None  # serves nothing
        with self._tx() as conn:
            while (row := self._next_runnable(conn, prefer, prefer_max_wait, routes)) is not None:
                outcome = stale_outcome(row, self.max_losses)
                if outcome is None:
                    break
                conn.execute(
                    "UPDATE jobs SET status = %s, error = COALESCE(%s, error), lease_owner = NULL, "
                    f"lease_expires = NULL, updated_at = {_NOW} WHERE id = %s",
                    (outcome.status.value, outcome.error, row["id"]),
                )
                _add_deliveries(conn, outcome.deliveries)
                _bump(conn, outcome_counts(outcome.status, outcome.error))
                ended.append(row["id"])
            if row is not None:
                # Taking over a running job (its lease expired) counts one more vanished
                # worker (the SET expressions read the row as it was).
                claimed = conn.execute(
                    "UPDATE jobs SET status = %s, attempts = attempts + 1, "
                    "losses = losses + (status = 'running')::int, lease_owner = %s, "
                    f"lease_expires = {_NOW} + %s, updated_at = {_NOW}, "
                    f"started_at = COALESCE(started_at, {_NOW}) WHERE id = %s "
                    f"RETURNING {_JOB}",
                    (JobStatus.RUNNING.value, worker_id, lease_seconds, row["id"]),
                ).fetchone()
                targets = DeliveryTargets.from_row(row)
                _add_deliveries(conn, status_deliveries(row["id"], targets, JobStatus.RUNNING))
                if claimed is not None and claimed["attempts"] == 1:  # a first claim
                    _observe(conn, "queue_wait", claimed["updated_at"] - claimed["created_at"])
            changed = ended + ([claimed["id"]] if claimed is not None else [])
            if changed:
                self._publish(conn, *changed)
        for job_id in changed:
            self._listeners.notify(job_id)
        return _job(claimed) if claimed is not None else None

    def _next_runnable(self, conn: Conn, prefer: list[str], max_wait: float,
                       routes: list[str] | None = None) -> DictRow | None:
        """Lock the job a claim takes next: the oldest runnable one, unless it waited less than
        ``max_wait`` and a job for a ``prefer`` model is runnable, which then goes first.
        ``routes`` (None: any) limits both to jobs of those route keys.

        ``SKIP LOCKED`` passes over rows another claim is deciding on right now, so concurrent
        claims each get a different job without queueing behind one another.
        """
        columns = (f"SELECT id, model, status, attempts, losses, cancel_requested, {_TARGETS}, "
                   f"created_at <= {_NOW} - %s AS waited FROM jobs")
        runnable = _RUNNABLE if routes is None else f"route = ANY(%s) AND {_RUNNABLE}"
        route_args: tuple[Any, ...] = () if routes is None else (routes,)
        oldest: DictRow | None = conn.execute(
            f"{columns} WHERE {runnable} ORDER BY created_at LIMIT 1 "
            "FOR UPDATE SKIP LOCKED",
            (max_wait, *route_args),
        ).fetchone()
        if oldest is None or takes_oldest(oldest, prefer, oldest["waited"]):
            return oldest
        # "status IN" lets the index seek (model, status) pairs instead of scanning every job
        # the model ever had; the runnable condition then keeps running jobs with expired leases.
        preferred: DictRow | None = conn.execute(
            f"{columns} WHERE model = ANY(%s) AND status IN ('queued', 'running') "
            f"AND {runnable} ORDER BY created_at LIMIT 1 FOR UPDATE SKIP LOCKED",
            (max_wait, prefer, *route_args),
        ).fetchone()
        return preferred if preferred is not None else oldest

    # ------------------------------------------------------------------ workers

    def publish_worker(self, info: WorkerInfo) -> None:
        with self._tx() as conn:
            conn.execute(f"DELETE FROM workers WHERE last_seen < {_NOW} - %s", (_WORKER_KEPT,))
            conn.execute(
                "INSERT INTO workers (worker_id, host, pid, started_at, capabilities, serves, "
                f"last_seen) VALUES (%s, %s, %s, %s, %s, %s, {_NOW}) "
                "ON CONFLICT (worker_id) DO UPDATE SET host = EXCLUDED.host, pid = EXCLUDED.pid, "
                "started_at = EXCLUDED.started_at, capabilities = EXCLUDED.capabilities, "
                "serves = EXCLUDED.serves, last_seen = EXCLUDED.last_seen",
                worker_values(info),
            )

    def touch_worker(self, worker_id: str) -> bool:
        with self._tx() as conn:
            cur = conn.execute(f"UPDATE workers SET last_seen = {_NOW} WHERE worker_id = %s",
                               (worker_id,))
            return cur.rowcount > 0

    def remove_worker(self, worker_id: str) -> None:
        with self._tx() as conn:
            conn.execute("DELETE FROM workers WHERE worker_id = %s", (worker_id,))

    def live_workers(self, max_age: float = WORKER_LIVE) -> list[WorkerInfo]:
        with self._tx() as conn:
            rows = conn.execute(
                f"SELECT * FROM workers WHERE last_seen >= {_NOW} - %s ORDER BY worker_id",
                (max_age,),
            ).fetchall()
        return [worker_from_row(row) for row in rows]

    def _owns(self, conn: Conn, job_id: str, worker_id: str) -> DictRow | None:
        """The job's row (with its delivery targets), locked for this transaction, when
        ``worker_id`` holds its lease."""
        row: DictRow | None = conn.execute(
            f"SELECT status, cancel_requested, attempts, losses, {_TARGETS} FROM jobs "
            "WHERE id = %s AND lease_owner = %s AND status = %s FOR UPDATE",
            (job_id, worker_id, JobStatus.RUNNING.value),
        ).fetchone()
        return row

    def heartbeat(
        self, job_id: str, worker_id: str, lease_seconds: float, progress: float | None = None
    ) -> Heartbeat:
        with self._tx() as conn:
            if progress is None:
                row = conn.execute(
                    f"UPDATE jobs SET lease_expires = {_NOW} + %s "
                    "WHERE id = %s AND lease_owner = %s AND status = %s RETURNING cancel_requested",
                    (lease_seconds, job_id, worker_id, JobStatus.RUNNING.value),
                ).fetchone()
            else:
                row = conn.execute(
                    f"UPDATE jobs SET lease_expires = {_NOW} + %s, progress = %s, "
                    f"updated_at = {_NOW} WHERE id = %s AND lease_owner = %s AND status = %s "
                    "RETURNING cancel_requested",
                    (lease_seconds, clamp_progress(progress), job_id, worker_id,
                     JobStatus.RUNNING.value),
                ).fetchone()
        if row is None:
            return Heartbeat(owned=False, cancel_requested=False)
        if progress is not None:
            self._listeners.notify(job_id)  # in-process only: see the module docstring
        return Heartbeat(owned=True, cancel_requested=bool(row["cancel_requested"]))

    def add_result(self, job_id: str, worker_id: str, result: Result) -> bool:
        with self._tx() as conn:
            row = self._owns(conn, job_id, worker_id)
            if row is None:
                return False
            inserted = conn.execute(
                "INSERT INTO results (job_id, idx, data, created_at) "
                f"VALUES (%s, %s, %s, {_NOW}) ON CONFLICT (job_id, idx) DO NOTHING",
                (job_id, result.index, result.model_dump_json()),
            ).rowcount
            if inserted:
                targets = DeliveryTargets.from_row(row)
                _add_deliveries(conn, result_deliveries(job_id, targets, result.index))
                for name, seconds in result_durations(result):
                    _observe(conn, name, seconds)
                _bump(conn, [("results", "")])
            conn.execute(f"UPDATE jobs SET updated_at = {_NOW} WHERE id = %s", (job_id,))
            self._publish(conn, job_id)
        self._listeners.notify(job_id)
        return True

    def finish(self, job_id: str, worker_id: str, cost: float | None = None) -> bool:
        with self._tx() as conn:
            row = self._owns(conn, job_id, worker_id)
            if row is None:
                return False
            ended = conn.execute(
                "UPDATE jobs SET status = %s, progress = 100, cost = %s, lease_owner = NULL, "
                f"lease_expires = NULL, updated_at = {_NOW} WHERE id = %s "
                "RETURNING updated_at - started_at AS run",
                (JobStatus.SUCCEEDED.value, cost, job_id),
            ).fetchone()
            targets = DeliveryTargets.from_row(row)
            _add_deliveries(conn, status_deliveries(job_id, targets, JobStatus.SUCCEEDED))
            if ended is not None and ended["run"] is not None:
                _observe(conn, "run", ended["run"])
            _bump(conn, outcome_counts(JobStatus.SUCCEEDED, None))
            self._publish(conn, job_id)
        self._listeners.notify(job_id)
        return True

    def fail(
        self, job_id: str, worker_id: str, error: dict[str, Any], *, retry: bool = False
    ) -> Job | None:
        with self._tx() as conn:
            row = self._owns(conn, job_id, worker_id)
            if row is None:
                return None
            outcome = fail_outcome(job_id, row, error, retry=retry, max_attempts=self.max_attempts)
            updated = conn.execute(
                "UPDATE jobs SET status = %s, error = %s, lease_owner = NULL, "
                f"lease_expires = NULL, updated_at = {_NOW} WHERE id = %s RETURNING {_JOB}",
                (outcome.status.value, outcome.error, job_id),
            ).fetchone()
            _add_deliveries(conn, outcome.deliveries)
            _bump(conn, outcome_counts(outcome.status, outcome.error))
            self._publish(conn, job_id)
        self._listeners.notify(job_id)
        return _job(updated) if updated is not None else None

    def release(self, job_id: str, worker_id: str) -> bool:
        with self._tx() as conn:
            if self._owns(conn, job_id, worker_id) is None:
                return False
            conn.execute(
                "UPDATE jobs SET status = %s, attempts = GREATEST(0, attempts - 1), "
                f"lease_owner = NULL, lease_expires = NULL, updated_at = {_NOW} WHERE id = %s",
                (JobStatus.QUEUED.value, job_id),
            )
            self._publish(conn, job_id)
        self._listeners.notify(job_id)
        return True

    def request_cancel(self, job_id: str) -> Job | None:
        with self._tx() as conn:
            row = conn.execute(
                f"SELECT status, {_TARGETS} FROM jobs WHERE id = %s FOR UPDATE", (job_id,)
            ).fetchone()
            if row is None:
                return None
            status = JobStatus(row["status"])
            if status is JobStatus.QUEUED:
                outcome = cancel_queued(job_id, row)
                conn.execute(
                    "UPDATE jobs SET status = %s, cancel_requested = TRUE, error = %s, "
                    f"updated_at = {_NOW} WHERE id = %s",
                    (outcome.status.value, outcome.error, job_id),
                )
                _add_deliveries(conn, outcome.deliveries)
                _bump(conn, outcome_counts(outcome.status, outcome.error))
            elif status is JobStatus.RUNNING:
                conn.execute(
                    f"UPDATE jobs SET cancel_requested = TRUE, updated_at = {_NOW} WHERE id = %s",
                    (job_id,),
                )
            current = conn.execute(f"SELECT {_JOB} FROM jobs WHERE id = %s", (job_id,)).fetchone()
            self._publish(conn, job_id)
        self._listeners.notify(job_id)
        return _job(current) if current is not None else None

    def delete(self, job_id: str) -> bool:
        """Remove a job with its results and deliveries (a running worker loses its lease)."""
        with self._tx() as conn:
            deleted = conn.execute("DELETE FROM jobs WHERE id = %s", (job_id,)).rowcount > 0
            if deleted:
                self._publish(conn, job_id)
        if deleted:
            self._listeners.notify(job_id)
        return deleted

    def take_undelivered(self, job_id: str) -> list[Result]:
        with self._tx() as conn:
            rows = conn.execute(
                "UPDATE results SET delivered = TRUE WHERE job_id = %s AND NOT delivered "
                "RETURNING idx, data",
                (job_id,),
            ).fetchall()
        return [result_from_row(r) for r in sorted(rows, key=lambda r: r["idx"])]

    def return_undelivered(self, job_id: str, indexes: Collection[int]) -> None:
        if not indexes:
            return
        with self._tx() as conn:
            conn.execute("UPDATE results SET delivered = FALSE WHERE job_id = %s AND "
                         "idx = ANY(%s)", (job_id, [int(i) for i in indexes]))

    # ------------------------------------------------------------------ delivery outbox

    def claim_deliveries(
        self, worker_id: str, lease_seconds: float, limit: int = 16
    ) -> list[DeliveryRecord]:
        with self._tx() as conn:
            # A status row waits while an earlier one of its job (smaller seq) is pending, so a
            # receiver never hears "succeed" before "processing". SKIP LOCKED lets dispatchers
            # on other machines lease other rows meanwhile.
            rows = conn.execute(
                "WITH due AS (SELECT d.id FROM deliveries d WHERE d.state = 'pending' AND "
                f"d.next_at <= {_NOW} AND (d.lease_expires IS NULL OR d.lease_expires < {_NOW}) "
                "AND NOT (d.kind = 'status' AND EXISTS (SELECT 1 FROM deliveries e "
                "WHERE e.job_id = d.job_id AND e.kind = 'status' AND e.state = 'pending' "
                "AND e.seq < d.seq)) ORDER BY d.next_at, d.seq LIMIT %s FOR UPDATE SKIP LOCKED) "
                f"UPDATE deliveries SET lease_owner = %s, lease_expires = {_NOW} + %s "
                "FROM due WHERE deliveries.id = due.id RETURNING deliveries.*",
                (limit, worker_id, lease_seconds),
            ).fetchall()
        return [delivery_from_row(r) for r in sorted(rows, key=lambda r: (r["next_at"], r["seq"]))]

    def record_delivery(
        self,
        delivery_id: str,
        worker_id: str,
        attempt: dict[str, Any],
        *,
        state: str,
        next_at: float | None = None,
    ) -> bool:
        with self._tx() as conn:
            row = conn.execute(
                "SELECT job_id, kind, history FROM deliveries WHERE id = %s AND lease_owner = %s "
                "FOR UPDATE",
                (delivery_id, worker_id),
            ).fetchone()
            if row is None:
                return False
            sent = conn.execute(
                "UPDATE deliveries SET state = %s, attempts = attempts + 1, "
                "next_at = COALESCE(%s, next_at), last_status = %s, last_error = %s, "
                f"history = %s, lease_owner = NULL, lease_expires = NULL, updated_at = {_NOW} "
                "WHERE id = %s RETURNING updated_at - created_at AS took",
                (state, next_at, *attempt_columns(row["history"], attempt), delivery_id),
            ).fetchone()
            if state == "delivered" and sent is not None:
                _observe(conn, "delivery", sent["took"])
            _bump(conn, attempt_counts(row["kind"], state))
            job_id: str = row["job_id"]
            self._publish(conn, job_id)
        self._listeners.notify(job_id)
        return True

    def deliveries(self, job_id: str) -> list[DeliveryRecord]:
        with self._tx() as conn:
            rows = conn.execute(
                "SELECT * FROM deliveries WHERE job_id = %s ORDER BY created_at, seq", (job_id,)
            ).fetchall()
        return [delivery_from_row(r) for r in rows]

    # ------------------------------------------------------------------ expiry

    def expired_outputs(
        self, now: float, default_ttl: float, limit: int = 200
    ) -> list[tuple[str, Result]]:
        with self._tx() as conn:
            rows = conn.execute(
                "SELECT r.job_id, r.data FROM results r JOIN jobs j ON j.id = r.job_id "
                "WHERE r.expired_at IS NULL AND "
                "r.created_at + COALESCE((j.spec::jsonb ->> 'ttl')::float8, %s) <= %s "
                "ORDER BY r.created_at LIMIT %s",
                (default_ttl, now, limit),
            ).fetchall()
        return [(r["job_id"], result_from_row(r)) for r in rows]

    def mark_expired(self, job_id: str, index: int) -> None:
        with self._tx() as conn:
            conn.execute(
                f"UPDATE results SET expired_at = {_NOW} WHERE job_id = %s AND idx = %s",
                (job_id, index),
            )


class _ListenThread(threading.Thread):
    """LISTENs on :data:`CHANNEL` and reports other processes' changes to ``deliver``.

    Reconnects with backoff when the connection drops; what changed meanwhile is found by the
    readers' polls, so nothing is replayed.
    """

    _POLL = 1.0  # how often the stop flag is checked while no notification arrives
    _PING = 30.0  # idle seconds after which the connection is checked with a query

    def __init__(self, conninfo: str, instance: str, deliver: Callable[[str], None]) -> None:
        super().__init__(name="reelserve-pg-listen", daemon=True)
        self.conninfo = make_conninfo(conninfo, application_name="reelserve-listen")
        self.instance = instance
        self.deliver = deliver
        self._stop_event = threading.Event()
        self.connected = threading.Event()
        """Set while LISTEN is in place (tests wait for it)."""

    def stop(self) -> None:
        self._stop_event.set()

    def run(self) -> None:
        backoff = 0.5
        while not self._stop_event.is_set():
            try:
                self._listen()
                backoff = 0.5
            except psycopg.Error as exc:
                self.connected.clear()
                if self._stop_event.is_set():
                    return
                log.warning("job change notifications interrupted (%s); reconnecting in %.1f s",
                            exc, backoff)
                self._stop_event.wait(backoff)
                backoff = min(backoff * 2, 30.0)
            except Exception:  # a listener's bug must not end notifications for good
                log.exception("job change listener failed")
                self._stop_event.wait(1.0)

    def _listen(self) -> None:
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHANNEL)))
            self.connected.set()
            idle_since = time.monotonic()
            while not self._stop_event.is_set():
                for note in conn.notifies(timeout=self._POLL):
                    idle_since = time.monotonic()
                    instance, _, job_id = note.payload.partition(":")
                    if self._stop_event.is_set():
                        break
                    if instance != self.instance and job_id:
                        self.deliver(job_id)
                if time.monotonic() - idle_since > self._PING:
                    conn.execute("SELECT 1")  # raises if the server went away silently
                    idle_since = time.monotonic()
            self.connected.clear()


def _count_active(conn: Conn, owner: str) -> int:
    """The owner's queued and running jobs, as this transaction sees them."""
    row = conn.execute(
        "SELECT count(*) AS n FROM jobs WHERE owner = %s AND status IN (%s, %s)",
        (owner, JobStatus.QUEUED.value, JobStatus.RUNNING.value),
    ).fetchone()
    return int(row["n"]) if row else 0


def _scalar(conn: Conn, query: str) -> Any:
    """The one value a literal query (no parameters) reads."""
    row = conn.execute(query).fetchone()
    assert row is not None
    return next(iter(row.values()))


def _job(row: DictRow) -> Job:
    """The job of a row selected with :data:`_JOB` (its results come in the same row)."""
    return job_from_row(row, row["results"])


def _observe(conn: Conn, name: str, seconds: float) -> None:
    """Count one ``name`` duration in its histogram bucket, in the caller's transaction."""
    conn.execute(
        "INSERT INTO duration_counts (name, bucket, count, total) VALUES (%s, %s, 1, %s) "
        "ON CONFLICT (name, bucket) DO UPDATE SET count = duration_counts.count + 1, "
        "total = duration_counts.total + excluded.total",
        (name, duration_bucket(seconds), max(0.0, seconds)),
    )


def _bump(conn: Conn, counts: Iterable[tuple[str, str]]) -> None:
    """Add one to each ``(name, label)`` counter, in the caller's transaction."""
    for name, label in counts:
        conn.execute(
            "INSERT INTO counters (name, label, value) VALUES (%s, %s, 1) "
            "ON CONFLICT (name, label) DO UPDATE SET value = counters.value + 1",
            (name, label),
        )


def _add_deliveries(conn: Conn, deliveries: Iterable[NewDelivery]) -> None:
    """Insert outbox rows, due now, in the caller's transaction (so a change and the deliveries
    reporting it commit together); an id already there is left as it is."""
    for d in deliveries:  # in order: ``seq`` orders a job's status rows
        conn.execute(
            "INSERT INTO deliveries (id, job_id, kind, url, result_index, event, next_at, "
            f"created_at, updated_at) VALUES (%s, %s, %s, %s, %s, %s, {_NOW}, {_NOW}, {_NOW}) "
            "ON CONFLICT (id) DO NOTHING",
            (d.id, d.job_id, d.kind, d.url, d.result_index, d.event),
        )
