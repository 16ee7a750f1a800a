"""Fixtures of the job store tests: the session's private PostgreSQL server (``pg_server``) and a
fresh database per test (``pg_database``), from ``tests/pg_server.py``."""

from pg_server import pg_database, pg_server

__all__ = ["pg_database", "pg_server"]
