"""Fixtures of the delivery tests: a real local receiver."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from receiver_helpers import Receiver, run_receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A webhook/PUT receiver on a free loopback port (503 for ``fail_first`` requests)."""
    with run_receiver() as rec:
        yield rec
