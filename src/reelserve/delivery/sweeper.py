"""Deletes outputs and uploaded media once their URLs have expired, and old jobs.

An output's URL is valid until its file's creation time + the task's ``ttl`` (or
``settings.default_ttl``); an upload's until its creation + ``default_ttl``. After that the URL
answers 410 anyway, so the file only costs storage: the sweeper removes it together with the
artifacts derived from it (its cover; :func:`~reelserve.delivery.storage.delete_output`) from
whichever artifact store is configured (local disk or S3), and the job store marks the result
expired so it is not looked at again. The signed URL check (``api/media.py``) and the sweeper use the same rule;
the sweeper runs a little later than the URL stops working, never earlier (a result row is written
after its file).

Job rows are kept ``settings.job_retention_days`` after they reached a terminal state (their
last change); then the sweeper purges each one with its outputs, so the job table does not grow
for ever.

Tests drive :meth:`Sweeper.sweep` with an explicit ``now`` instead of waiting for a ttl (the
catalog's minimum ttl is 60 s).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from reelserve.delivery.storage import UPLOADS, delete_output

if TYPE_CHECKING:
    from reelserve.delivery.storage import ArtifactStore
    from reelserve.jobs.store import Retention
    from reelserve.settings import Settings

log = logging.getLogger(__name__)

__all__ = ["SweepReport", "Sweeper"]


@dataclass(frozen=True)
class SweepReport:
    """What one pass removed (``jobs``: terminal jobs past ``job_retention_days``)."""

    outputs: int
    uploads: int
    jobs: int = 0


class Sweeper:
    """Removes expired artifacts; ``start()`` repeats :meth:`sweep` every ``sweep_interval`` s.

    Args:
        settings: ``default_ttl`` and ``sweep_interval``.
        store: the job store (knows each output's task and ttl).
        artifacts: the artifact store to delete from.
        clock: wall clock (seconds); a seam for tests.
    """

    def __init__(
        self,
        settings: Settings,
        store: Retention,
        artifacts: ArtifactStore,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.store = store
        self.artifacts = artifacts
        self.clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sweep(self, now: float | None = None) -> SweepReport:
        """Delete everything expired at ``now`` (default: the clock)."""
        now = self.clock() if now is None else now
        outputs = 0
        while True:
            batch = self.store.expired_outputs(now, self.settings.default_ttl, 200)
            for job_id, result in batch:
                if delete_output(self.artifacts, result.artifact_key):  # with its cover
                    outputs += 1
                self.store.mark_expired(job_id, result.index)
            if len(batch) < 200:
                break
        uploads = self._sweep_uploads(now)
        jobs = self._purge_jobs(now)
        if outputs or uploads or jobs:
            log.info("sweeper removed %d expired outputs, %d uploads and %d old jobs",
                     outputs, uploads, jobs)
        return SweepReport(outputs=outputs, uploads=uploads, jobs=jobs)

    def _purge_jobs(self, now: float) -> int:
        # Retention: terminal jobs whose last change is older than job_retention_days go with
        # their outputs (and covers). Files first, then the row: a crash in between leaves the
        # row, so the next pass deletes the rest (deleting a missing file is a no-op).
        days = self.settings.job_retention_days
        if days <= 0:
            return 0
        purged = 0
        while True:
            batch = self.store.expired_jobs(now - days * 86400.0, 200)
            for job in batch:
                for result in job.results:
                    delete_output(self.artifacts, result.artifact_key)
                purged += int(self.store.delete(job.id))
            if len(batch) < 200:
                return purged

    def _sweep_uploads(self, now: float) -> int:
        # Uploads have no job row: list the store (every implementation can), pre-filtered by
        # write time, and decide on each one's created_at, the rule the signed URLs use.
        cutoff = now - self.settings.default_ttl
        removed = 0
        for key in list(self.artifacts.list_keys(UPLOADS, stored_before=cutoff + 1.0)):
            info = self.artifacts.info(key)
            if info is not None and info.created_at <= cutoff:
                removed += int(self.artifacts.delete(key))
        return removed

    def start(self) -> None:
        """Sweep in a background thread until :meth:`stop`."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="artifact-sweeper", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the background thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.sweep()
            except Exception:  # never let one bad file stop the sweeping
                log.exception("sweep failed")
            self._stop.wait(self.settings.sweep_interval)
