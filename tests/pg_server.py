"""A private, throwaway PostgreSQL server for tests (importable as ``pg_server``).

The ``pg_server`` fixture (session scope) finds the server binaries (``initdb``, ``pg_ctl``,
``postgres``) on ``PATH``, through ``pg_config --bindir`` or in the usual distribution folders
(newest version first), runs ``initdb`` into a temp dir and starts a server that listens only on a
unix socket in that dir, so it can clash with nothing else on the machine. PostgreSQL refuses to
run as root: then the temp dir is given to the ``postgres`` system user and every server command
runs as that user (``runuser``, else ``su``). The server is stopped and its dir removed at the end.

Without PostgreSQL (or psycopg) the tests that need it are skipped with a loud reason; where the
``CI`` environment variable is set they fail instead, so CI cannot pass without testing it.
``scripts/test`` installs the server when it is missing and it can.

``pg_database`` gives a test a fresh database; :func:`postgres_store` is the factory the store
contract suites use (one database per temp dir, so reopening a dir reopens its database).
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import pytest

from reelserve_testing import free_port

if TYPE_CHECKING:
    from reelserve.jobs.store import JobStore

SUPERUSER = "reelserve"
"""The superuser initdb creates (the same whichever OS user runs the server)."""

# Where distributions put the binaries when they are not on PATH (Debian/Ubuntu, RHEL/Fedora).
_BIN_GLOBS = ("/usr/lib/postgresql/*/bin", "/usr/pgsql-*/bin")
_TOOLS = ("initdb", "pg_ctl", "postgres")

# Durability is worthless for a throwaway test server; these make initdb, CREATE DATABASE and
# every commit much faster.
_TEST_CONFIG = {
    "listen_addresses": "''",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "300",
    "log_min_messages": "warning",
}


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", str(path)))


def find_bindir() -> Path | None:
    """The folder holding initdb, pg_ctl and postgres, or None when PostgreSQL is not installed."""
    candidates: list[Path] = []
    on_path = shutil.which("initdb")
    if on_path:
        # Often a symlink (/usr/local/bin/initdb -> .../bin/initdb): the real folder has the rest.
        candidates.append(Path(on_path).resolve().parent)
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True,
                                 timeout=10, check=True).stdout.strip()
            candidates.append(Path(out))
        except (OSError, subprocess.SubprocessError):
            pass
    for pattern in _BIN_GLOBS:
        found = [Path(p) for p in glob.glob(pattern)]
        candidates.extend(sorted(found, key=_version_key, reverse=True))
    for folder in candidates:
        if all((folder / tool).is_file() for tool in _TOOLS):
            return folder
    return None


def _service_user() -> tuple[int, int] | None:
    """uid and gid of the ``postgres`` system user, or None when there is none."""
    import pwd

    try:
        entry = pwd.getpwnam("postgres")
    except KeyError:
        return None
    return entry.pw_uid, entry.pw_gid


def unavailable_reason() -> str | None:
    """Why no test server can be started here, or None when one can."""
    import importlib.util

    if importlib.util.find_spec("psycopg") is None:
        return "psycopg is not installed (pip install -e '.[postgres]')"
    if find_bindir() is None:
        return ("no PostgreSQL server binaries (initdb, pg_ctl, postgres) on PATH or under "
                f"{', '.join(_BIN_GLOBS)}; scripts/test installs them when run as root with apt")
    if os.geteuid() == 0:
        if _service_user() is None:
            return "running as root and there is no 'postgres' system user to run the server as"
        if not (shutil.which("runuser") or shutil.which("su")):
            return "running as root and neither runuser nor su is available"
    return None


class PostgresServer:
    """One private server: ``initdb`` into ``root/data``, socket in ``root/sock``."""

    def __init__(self, bindir: Path, root: Path, port: int | None = None) -> None:
        self.bindir = bindir
        self.root = root
        self.data = root / "data"
        self.socket_dir = root / "sock"
        self.log_path = root / "server.log"
        self.port = port or free_port()
        self._run_as = _service_user() if os.geteuid() == 0 else None
        self._created: set[str] = set()

    def _run(self, *args: str, timeout: float = 120) -> None:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self._run_as is not None:
            if shutil.which("runuser"):
                command = ["runuser", "-u", "postgres", "--", *command]
            else:
                command = ["su", "postgres", "-s", "/bin/sh", "-c", shlex.join(command)]
        # initdb derives the locale from the environment; C keeps it the same everywhere.
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env,
                              cwd=self.root)
        if done.returncode != 0:
            raise RuntimeError(
                f"{' '.join(command)} exited with {done.returncode}:\n{done.stdout}\n"
                f"{done.stderr}\n{self.log()}")

    def log(self) -> str:
        """The end of the server log."""
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def start(self) -> PostgresServer:
        """initdb, configure and start; returns when the server accepts connections."""
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        if self._run_as is not None:
            uid, gid = self._run_as
            for path in (self.root, self.socket_dir):
                os.chown(path, uid, gid)
        self._run("initdb", "-D", str(self.data), "-U", SUPERUSER, "--auth=trust",
                  "--encoding=UTF8", "--no-locale", "--no-sync")
        settings = {**_TEST_CONFIG, "port": str(self.port),
                    "unix_socket_directories": f"'{self.socket_dir}'"}
        with open(self.data / "postgresql.conf", "a", encoding="utf-8") as conf:
            conf.write("\n# reelserve test server\n")
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log_path), "-w", "-t", "60",
                  "start")
        return self

    def stop(self) -> None:
        """Stop the server at once (nothing in it needs to survive) and remove its dir."""
        try:
            if (self.data / "postmaster.pid").exists():
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def url(self, dbname: str) -> str:
        """A ``postgresql://`` URL for ``dbname`` over the server's unix socket."""
        return (f"postgresql://{SUPERUSER}@/{dbname}?host={quote(str(self.socket_dir))}"
                f"&port={self.port}")

    def create_database(self, dbname: str) -> str:
        """Create ``dbname`` unless this server made it already; returns its URL."""
        import psycopg
        from psycopg import sql

        if dbname not in self._created:
            with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
            self._created.add(dbname)
        return self.url(dbname)

    def database_for(self, path: Path) -> str:
        """The URL of the database that belongs to ``path`` (created on first use)."""
        digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:20]
        return self.create_database(f"t_{digest}")


_CURRENT: PostgresServer | None = None


def _unavailable(reason: str) -> None:
    message = f"PostgreSQL NOT TESTED: {reason}"
    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI is set: the PostgreSQL tests must run there)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """A private PostgreSQL server for the whole session (skipped, or failed on CI, without one)."""
    global _CURRENT
    reason = unavailable_reason()
    if reason is not None:
        _unavailable(reason)
    bindir = find_bindir()
    assert bindir is not None
    # Not under pytest's tmp dirs: those are private to the test user, and the server may have
    # to run as the postgres user. The socket path must also stay short (about 100 bytes).
    root = Path(tempfile.mkdtemp(prefix="reelserve-pg-"))
    server = PostgresServer(bindir, root)
    try:
        server.start()
    except Exception:
        server.stop()
        raise
    _CURRENT = server
    try:
        yield server
    finally:
        _CURRENT = None
        server.stop()


@pytest.fixture
def pg_database(pg_server: PostgresServer, tmp_path: Path) -> str:
    """The URL of a fresh database for this test."""
    return pg_server.database_for(tmp_path)


def postgres_store(tmp: Path, max_attempts: int) -> JobStore:
    """Store factory for the contract suites: the database of ``tmp`` on the session's server.

    The suites request the ``pg_server`` fixture before calling it (see
    ``test_store_contract.store_factory``).
    """
    from reelserve.jobs.postgres import PostgresJobStore

    if _CURRENT is None:
        raise RuntimeError("the pg_server fixture must run before postgres_store is used")
    return PostgresJobStore(_CURRENT.database_for(tmp), max_attempts=max_attempts)
