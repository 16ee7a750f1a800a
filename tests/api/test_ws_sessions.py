"""WebSocket sessions in-process: results of frames dropped unsent go back, sessions expire on time.

The end-to-end case (a client that aborts a sync task and never resumes, then polls over REST) is
in ``tests/hardening/test_hostile_clients.py``; these pin the two drop paths directly.
"""

from __future__ import annotations

import asyncio
from typing import Any

from reelserve.api.runware.ws import Session, SessionRegistry, Taken, _Connection


class _Socket:
    """Stands in for a WebSocket: nothing is ever sent (the connection only queues)."""

    async def send_text(self, text: str) -> None:  # pragma: no cover - no sender runs here
        raise AssertionError("not sent in these tests")


def test_a_full_resume_buffer_hands_back_the_results_of_the_frame_it_drops() -> None:
    returned: list[Taken] = []
    session = Session("s", "owner", max_pending=2, give_back=returned.append)
    session.deliver("one", [("job-1", [0])])
    session.deliver("ping")  # carries no results
    session.deliver("three", [("job-3", [0, 1])])  # buffer of 2 overflows: "one" goes
    assert [out.text for out in session.pending] == ["ping", "three"]
    assert returned == [(("job-1", [0]),)]


async def test_a_detached_session_expires_on_its_own_and_hands_back_what_it_kept() -> None:
    returned: list[list[Any]] = []
    registry = SessionRegistry(resume_seconds=0.2, max_pending=8,
                               give_back=lambda taken: returned.append(list(taken)))
    conn = _Connection(_Socket(), queue_size=8)  # type: ignore[arg-type]
    session = registry.attach(None, "owner", conn)
    conn.shut(1000, "gone")  # the socket closed: frames can no longer be queued
    session.deliver("video", [("job-1", [0])])
    registry.detach(session, conn)
    assert len(registry) == 1 and returned == []
    await asyncio.sleep(0.5)  # no other socket comes or goes: the timer alone expires it
    assert len(registry) == 0 and session.expired
    assert returned == [[("job-1", [0])]]
    # A frame for an expired session (a sync task finishing late) goes straight back.
    session.deliver("late", [("job-2", [3])])
    assert returned[-1] == [("job-2", [3])]
