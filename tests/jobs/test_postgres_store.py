"""What the PostgreSQL store adds to the contract: selection by URL, claims that stay exclusive
across processes, migrations run by processes starting together, and change notifications
across processes (LISTEN/NOTIFY) that survive a dropped connection.

Runs against the session's private PostgreSQL server (``tests/pg_server.py``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from test_store_contract import make_job

from reelserve.errors import ReelserveError
from reelserve.jobs import open_store
from reelserve.jobs.store import JobStore
from reelserve.settings import Settings


@pytest.fixture
def open_pg(pg_database: str) -> Iterator[Callable[[], JobStore]]:
    """Open stores on this test's database (each one like a separate process); closes them."""
    from reelserve.jobs.postgres import PostgresJobStore

    opened: list[JobStore] = []

    def factory() -> JobStore:
        store = PostgresJobStore(pg_database)
        opened.append(store)
        return store

    yield factory
    for store in opened:
        store.close()


def _wait_for(condition: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def _listener_backends(url: str) -> list[int]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'reelserve-listen' "
            "AND datname = current_database()"
        ).fetchall()
    return [r[0] for r in rows]


def test_open_store_selects_postgres_by_url(pg_database: str, tmp_path: Path) -> None:
    from reelserve.jobs.postgres import PostgresJobStore

    store = open_store(Settings(database_url=pg_database, data_dir=tmp_path, max_attempts=5))
    try:
        assert isinstance(store, PostgresJobStore) and store.max_attempts == 5
        assert not (tmp_path / "reelserve.db").exists()
    finally:
        store.close()


def test_an_unreachable_database_is_a_clear_error_without_the_password(
    pg_server: object, tmp_path: Path
) -> None:
    url = f"postgresql://someone:s3cret@/nowhere?host={tmp_path}&port=1&connect_timeout=2"
    with pytest.raises(ReelserveError) as err:
        open_store(Settings(database_url=url, data_dir=tmp_path))
    assert err.value.code == "databaseUnavailable" and err.value.parameter == "database_url"
    assert err.value.http_status == 503
    assert "someone@" in err.value.message and "s3cret" not in err.value.message


def test_processes_starting_together_migrate_once(pg_database: str) -> None:
    from reelserve.jobs.postgres import MIGRATIONS, PostgresJobStore

    stores: list[JobStore] = []
    errors: list[BaseException] = []

    def start() -> None:
        try:
            stores.append(PostgresJobStore(pg_database))
        except BaseException as exc:  # collected and re-raised in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == [] and len(stores) == 4
        import psycopg

        with psycopg.connect(pg_database) as conn:
            assert conn.execute("SELECT version FROM reelserve_schema").fetchall() == [
                (len(MIGRATIONS),)]
        job = stores[0].create(make_job())
        assert stores[3].get(job.id) == job
    finally:
        for store in stores:
            store.close()


# Opens its store, waits for the start file (so all claimers race at once), claims until empty.
_CLAIMER = """
import json, os, sys, time
from reelserve.jobs.postgres import PostgresJobStore
store = PostgresJobStore(sys.argv[1])
while not os.path.exists(sys.argv[3]):
    time.sleep(0.01)
claimed = []
while (job := store.claim(sys.argv[2], 30)) is not None:
    claimed.append(job.id)
store.close()
print(json.dumps(claimed))
"""


def test_claims_from_several_processes_never_duplicate(
    open_pg: Callable[[], JobStore], pg_database: str, tmp_path: Path
) -> None:
    store = open_pg()
    ids = {store.create(make_job()).id for _ in range(80)}
    go = tmp_path / "go"
    procs = [
        subprocess.Popen([sys.executable, "-c", _CLAIMER, pg_database, f"proc{n}", str(go)],
                         stdout=subprocess.PIPE, text=True)
        for n in range(4)
    ]
    # Start the race once every claimer has its connection (each one holds a pooled one).
    assert _wait_for(lambda: _sessions(pg_database) >= 1 + 4, timeout=60)
    go.touch()
    per_process: list[list[str]] = []
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0
        per_process.append(json.loads(out.strip().splitlines()[-1]))
    claimed = [job_id for ids_of_one in per_process for job_id in ids_of_one]
    assert sorted(claimed) == sorted(ids)
    assert sum(1 for got in per_process if got) >= 2, [len(got) for got in per_process]
    assert all(job.attempts == 1 for job in map(store.get, ids) if job is not None)


def _sessions(url: str) -> int:
    """Client connections to this test's database other than the one asking."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
        ).fetchone()
    return int(row[0]) if row else 0


def test_changes_in_other_processes_reach_subscribers(
    open_pg: Callable[[], JobStore], pg_database: str
) -> None:
    here, there = open_pg(), open_pg()
    seen: list[str] = []
    here.subscribe(seen.append)
    assert _wait_for(lambda: len(_listener_backends(pg_database)) == 1)
    job = there.create(make_job())
    assert _wait_for(lambda: job.id in seen), "a change made elsewhere was not heard"
    assert there.claim("w", 30) is not None
    assert _wait_for(lambda: seen.count(job.id) >= 2)
    # This store's own changes are reported once, directly, not again through LISTEN.
    mine = here.create(make_job())
    assert seen.count(mine.id) == 1
    time.sleep(0.5)
    assert seen.count(mine.id) == 1


def test_notifications_resume_after_the_connection_drops(
    open_pg: Callable[[], JobStore], pg_database: str
) -> None:
    import psycopg

    here, there = open_pg(), open_pg()
    seen: list[str] = []
    here.subscribe(seen.append)
    assert _wait_for(lambda: len(_listener_backends(pg_database)) == 1)
    [pid] = _listener_backends(pg_database)
    with psycopg.connect(pg_database, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    # The listener reconnects on its own; changes made while it was away are not replayed (the
    # readers poll), so keep changing until one is heard on the new connection.
    assert _wait_for(lambda: _listener_backends(pg_database) not in ([], [pid]))
    heard: str | None = None
    deadline = time.monotonic() + 15
    while heard is None and time.monotonic() < deadline:
        job_id = there.create(make_job()).id
        if _wait_for(lambda: job_id in seen, timeout=1.0):  # noqa: B023 - called right here
            heard = job_id
    assert heard is not None, "no notification after the listener's connection was terminated"
    # The store itself never noticed: calls keep working through the pool.
    assert here.get(heard) is not None


def test_store_calls_fail_clearly_while_the_database_is_away_then_recover(
    pg_server: object, pg_database: str
) -> None:
    import psycopg

    from reelserve.jobs.postgres import PostgresJobStore

    store = PostgresJobStore(pg_database, wait_timeout=1.0)
    dbname = psycopg.conninfo.conninfo_to_dict(pg_database)["dbname"]
    admin_url = pg_database.replace(f"/{dbname}?", "/postgres?")
    try:
        job = store.create(make_job())
        with psycopg.connect(admin_url, autocommit=True) as admin:
            # The database goes away: new connections are refused, open ones are cut.
            admin.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS false')
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE datname = %s", (dbname,))
            with pytest.raises(ReelserveError) as err:
                store.get(job.id)
            assert err.value.code == "databaseUnavailable" and err.value.http_status == 503
            admin.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS true')
        # Back: the pool replaces its dead connections without a restart.
        assert _wait_for(lambda: _get_or_none(store, job.id) is not None, timeout=15)
        assert store.claim("w", 30) is not None
    finally:
        store.close()


def _get_or_none(store: JobStore, job_id: str) -> object:
    try:
        return store.get(job_id)
    except ReelserveError:
        return None


def test_a_closed_store_stops_listening(open_pg: Callable[[], JobStore], pg_database: str) -> None:
    store = open_pg()
    store.subscribe(lambda _job_id: None)
    assert _wait_for(lambda: len(_listener_backends(pg_database)) == 1)
    started = time.monotonic()
    store.close()
    assert time.monotonic() - started < 3.0
    assert _wait_for(lambda: _listener_backends(pg_database) == [], timeout=5.0)


def test_unknown_scheme_names_both_allowed_urls(tmp_path: Path) -> None:
    with pytest.raises(ReelserveError) as err:
        open_store(Settings(database_url="mysql://db/x", data_dir=tmp_path))
    assert err.value.code == "unsupportedDatabaseUrl"
    assert err.value.allowed_values == ["sqlite", "postgresql"]
    assert "postgresql://" in err.value.message


def test_job_ids_are_not_mistaken_for_payload_separators(
    open_pg: Callable[[], JobStore], pg_database: str
) -> None:
    """Payloads are ``instance:job id``; a job id with a colon must still arrive whole."""
    here, there = open_pg(), open_pg()
    seen: list[str] = []
    here.subscribe(seen.append)
    assert _wait_for(lambda: len(_listener_backends(pg_database)) == 1)
    job = make_job()
    odd = job.model_copy(update={"id": f"kling:{uuid.uuid4()}"})
    there.create(odd)
    assert _wait_for(lambda: odd.id in seen)
