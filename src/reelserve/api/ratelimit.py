"""Per-key limits: task submits per minute, tasks in flight, and media uploads.

Both are checked when a generation task is submitted, before it is stored, in every dialect
(Runware, 302-style, Kling, OpenAI-style). A refusal is a
:class:`~reelserve.errors.RateLimitError` with code ``rateLimitExceeded`` (kind RATE_LIMIT; the
in-flight one is the subclass :class:`~reelserve.errors.InFlightLimitError`), which each dialect
renders in its own error shape (Runware: an error item with the taskUUID; Kling: 1302 / 1303).

* Submits per minute (``REELSERVE_RATE_SUBMITS_PER_MINUTE``, default 120): a sliding 60 s window
  per key, kept in memory per server process (several servers each apply it).
* In flight (``REELSERVE_RATE_MAX_IN_FLIGHT``, default 32): the key's queued + running tasks, as
  the job store counts them, so it holds across processes. :meth:`RateLimiter.check_submit`
  refuses early (before any upload is stored); the exact check is the store's: it counts and
  creates in one transaction serialised per key (``JobStore.create(max_active=...)``), so
  concurrent submits never overshoot the limit.
* Uploads (``REELSERVE_RATE_UPLOADS_PER_MINUTE``, default 120, and
  ``REELSERVE_RATE_UPLOAD_BYTES_PER_HOUR``, default 5 GiB): every stored input file (Runware
  ``imageUpload``/``mediaStorage``, 302 and OpenAI-style input images) counts, per key, in
  sliding windows kept in memory per server process, so one key cannot fill the disk.

``0`` switches a limit off. Blocking (the in-flight count reads the store): call from a thread.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from reelserve.errors import InFlightLimitError, RateLimitError

if TYPE_CHECKING:
    from reelserve.jobs.store import JobQueue
    from reelserve.settings import Settings

__all__ = ["RATE_LIMIT_CODE", "RateLimiter"]

RATE_LIMIT_CODE = "rateLimitExceeded"
_WINDOW = 60.0
_HOUR = 3600.0


class RateLimiter:
    """Applies the per-key limits.

    Args:
        submits_per_minute: submits allowed per key in any 60 s window (0: unlimited).
        max_in_flight: queued + running tasks allowed per key (0: unlimited).
        count_active: ``owner -> number of queued/running tasks`` (the job store's
            ``count_active``).
        uploads_per_minute: uploads allowed per key in any 60 s window (0: unlimited).
        upload_bytes_per_hour: upload bytes allowed per key in any hour (0: unlimited).
        clock: monotonic seconds; a seam for tests.
    """

    def __init__(
        self,
        *,
        submits_per_minute: int,
        max_in_flight: int,
        count_active: Callable[[str], int],
        uploads_per_minute: int = 0,
        upload_bytes_per_hour: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.submits_per_minute = submits_per_minute
        self.max_in_flight = max_in_flight
        self.uploads_per_minute = uploads_per_minute
        self.upload_bytes_per_hour = upload_bytes_per_hour
        self._count_active = count_active
        self._clock = clock
        self._recent: dict[str, deque[float]] = {}
        self._uploads: dict[str, deque[tuple[float, int]]] = {}  # (when, bytes), last hour
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, store: JobQueue) -> RateLimiter:
        """The limits an install runs with."""
        return cls(
            submits_per_minute=settings.rate_submits_per_minute,
            max_in_flight=settings.rate_max_in_flight,
            count_active=store.count_active,
            uploads_per_minute=settings.rate_uploads_per_minute,
            upload_bytes_per_hour=settings.rate_upload_bytes_per_hour,
        )

    def check_upload(self, owner: str, size: int, *, parameter: str | None = None) -> None:
        """Admit one upload of ``size`` bytes by ``owner`` or raise ``rateLimitExceeded``.

        An admitted upload counts at once. ``parameter`` is the request field the refusal
        names (the file's field).
        """
        if not self.uploads_per_minute and not self.upload_bytes_per_hour:
            return
        now = self._clock()
        with self._lock:
            window = self._uploads.setdefault(owner, deque())
            while window and window[0][0] <= now - _HOUR:
                window.popleft()
            if self.uploads_per_minute:
                minute = [when for when, _ in window if when > now - _WINDOW]
                if len(minute) >= self.uploads_per_minute:
                    raise RateLimitError(
                        RATE_LIMIT_CODE,
                        f"this API key sent {len(minute)} uploads in the last minute; at most "
                        f"{self.uploads_per_minute} per minute are allowed "
                        "(rate_uploads_per_minute). Retry in a minute",
                        parameter=parameter,
                        # when the oldest upload of the minute leaves the window
                        retry_after=minute[-self.uploads_per_minute] + _WINDOW - now,
                    )
            if self.upload_bytes_per_hour:
                used = sum(n for _, n in window)
                if used + size > self.upload_bytes_per_hour:
                    raise RateLimitError(
                        RATE_LIMIT_CODE,
                        f"this API key uploaded {used} bytes in the last hour; this upload of "
                        f"{size} bytes would pass the quota of {self.upload_bytes_per_hour} "
                        "bytes per hour (rate_upload_bytes_per_hour). Retry later",
                        parameter=parameter,
                        retry_after=self._bytes_free_in(window, size, now),
                    )
            window.append((now, size))
            if len(self._uploads) > 10_000:  # forget idle keys so memory stays bounded
                for key in [k for k, q in self._uploads.items() if not q or q[-1][0] <= now - _HOUR]:
                    del self._uploads[key]

    def _bytes_free_in(self, window: deque[tuple[float, int]], size: int, now: float) -> float:
        """Seconds until enough of the last hour's uploads leave the window for ``size`` more
        bytes (an hour when the upload alone is over the quota)."""
        used = sum(n for _, n in window)
        for when, n in window:  # oldest first
            used -= n
            if used + size <= self.upload_bytes_per_hour:
                return when + _HOUR - now
        return _HOUR

    def check_submit(self, owner: str, *, parameter: str | None = "taskType") -> None:
        """Admit one submit by ``owner`` or raise ``rateLimitExceeded``.

        An admitted submit counts against the per-minute window at once (even if it is refused
        later for another reason: a flood of bad requests costs us work too). ``parameter`` is
        the request field the refusal names: Runware's ``taskType``; dialects with no field to
        blame pass None so their error mapping does not print a foreign field name.
        """
        if self.max_in_flight:
            active = self._count_active(owner)
            if active >= self.max_in_flight:
                raise InFlightLimitError(
                    RATE_LIMIT_CODE,
                    f"this API key has {active} tasks queued or running; at most "
                    f"{self.max_in_flight} are allowed in flight (rate_max_in_flight). Wait for "
                    "some to finish, then submit again",
                    parameter=parameter,
                )
        if not self.submits_per_minute:
            return
        now = self._clock()
        with self._lock:
            recent = self._recent.setdefault(owner, deque())
            while recent and recent[0] <= now - _WINDOW:
                recent.popleft()
            if len(recent) >= self.submits_per_minute:
                retry_in = max(1, int(recent[0] + _WINDOW - now + 0.999))
                raise RateLimitError(
                    RATE_LIMIT_CODE,
                    f"this API key sent {len(recent)} tasks in the last minute; at most "
                    f"{self.submits_per_minute} per minute are allowed "
                    f"(rate_submits_per_minute). Retry in {retry_in} s",
                    parameter=parameter,
                    retry_after=recent[0] + _WINDOW - now,
                )
            recent.append(now)
            if len(self._recent) > 10_000:  # forget idle keys so memory stays bounded
                for key in [k for k, q in self._recent.items() if not q or q[-1] <= now - _WINDOW]:
                    del self._recent[key]
