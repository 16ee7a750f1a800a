"""Durable job state: the :class:`~reelserve.jobs.store.JobStore` protocol and its stores.

:func:`open_store` is the one factory. It lives here rather than in :mod:`reelserve.jobs.store`
so that the protocol module imports no implementation: :mod:`~reelserve.jobs.sqlite` and
:mod:`~reelserve.jobs.postgres` import the protocol, and only this factory imports them (lazily,
so a SQLite install never loads the PostgreSQL driver).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from reelserve.jobs.store import JobStore
    from reelserve.settings import Settings

__all__ = ["open_store"]


def open_store(settings: Settings) -> JobStore:
    """The job store named by ``settings.resolved_database_url`` (SQLite by default).

    ``postgresql://`` (or ``postgres://``) URLs open :class:`~reelserve.jobs.postgres.
    PostgresJobStore`; its driver is imported only then, so ``import reelserve`` and SQLite
    installs never load it.
    """
    from reelserve.errors import ValidationError

    url = settings.resolved_database_url
    if url.startswith("sqlite:///"):
        from reelserve.jobs.sqlite import SQLiteJobStore

        return SQLiteJobStore(url.removeprefix("sqlite:///"), max_attempts=settings.max_attempts,
                              max_losses=settings.max_worker_losses)
    scheme = url.split(":", 1)[0]
    if scheme in ("postgresql", "postgres"):
        try:
            from reelserve.jobs.postgres import PostgresJobStore
        except ImportError as exc:
            raise ValidationError(
                "unsupportedDatabaseUrl",
                f"database_url is a PostgreSQL URL but its driver is not installed ({exc}); "
                "install the extra: pip install 'reelserve[postgres]'",
                parameter="database_url",
                allowed_values=["sqlite"],
            ) from exc
        return PostgresJobStore(url, max_attempts=settings.max_attempts,
                                max_losses=settings.max_worker_losses)
    raise ValidationError(
        "unsupportedDatabaseUrl",
        f"database_url scheme {scheme!r} is not supported; allowed: sqlite:///PATH, "
        "postgresql://USER:PASSWORD@HOST:PORT/DBNAME",
        parameter="database_url",
        allowed_values=["sqlite", "postgresql"],
    )
