"""Fixtures of the delivery tests: a real local receiver, a real S3 endpoint (moto's standalone
server, ``tests/s3_server.py``) and the session's private PostgreSQL server (``tests/pg_server.py``)
for the several-machine test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from receiver_helpers import Receiver, run_receiver

from pg_server import pg_database, pg_server
from s3_server import s3_bucket, s3_server

__all__ = ["pg_database", "pg_server", "receiver", "s3_bucket", "s3_server"]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A webhook/PUT receiver on a free loopback port (503 for ``fail_first`` requests)."""
    with run_receiver() as rec:
        yield rec
