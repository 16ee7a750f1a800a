"""Where worker loops run.

:class:`ThreadExecutor` runs ``slots`` worker loops as daemon threads in the current process:
beside the API server by default (``settings.workers``), or alone in ``reelserve worker``. Heavy
imports (av, engines) happen in those threads on first use, never on the server's start path.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from reelserve.worker.loop import EngineSelector, Worker

if TYPE_CHECKING:
    from reelserve.delivery.storage import ArtifactStore
    from reelserve.jobs.store import JobStore
    from reelserve.settings import Settings

log = logging.getLogger(__name__)


class ThreadExecutor:
    """``slots`` worker threads sharing one store, artifact store and engine selector."""

    def __init__(
        self,
        settings: Settings,
        store: JobStore,
        artifacts: ArtifactStore,
        slots: int,
        select_engine: EngineSelector | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.artifacts = artifacts
        self.slots = slots
        self._select_engine = select_engine
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._selector_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, slots: int | None = None) -> ThreadExecutor:
        """Open the store and artifact store named by ``settings``."""
        from reelserve.delivery.storage import open_artifacts
        from reelserve.jobs.store import open_store

        return cls(settings, open_store(settings), open_artifacts(settings.data_dir),
                   settings.workers if slots is None else slots)

    def _selector(self) -> EngineSelector:
        # One engine selector for all slots (it caches loaded pipelines), built lazily and once.
        with self._selector_lock:
            if self._select_engine is None:
                from reelserve.worker.loop import default_engine_selector

                self._select_engine = default_engine_selector(self.settings)
            return self._select_engine

    def start(self) -> None:
        """Start the worker threads."""
        for slot in range(self.slots):
            thread = threading.Thread(target=self._run_slot, args=(slot,),
                                      name=f"reelserve-worker-{slot}", daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("started %d worker thread(s)", self.slots)

    def _run_slot(self, slot: int) -> None:
        try:
            selector = self._selector()
        except Exception:
            log.exception("worker slot %d: cannot build the engine selector", slot)
            return
        Worker(self.settings, self.store, self.artifacts, selector).run(self._stop)

    def stop(self, timeout: float = 10.0) -> None:
        """Ask every thread to stop after its current job and wait up to ``timeout`` each."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()
