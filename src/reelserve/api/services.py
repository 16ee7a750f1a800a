"""What every router needs, built once per app: :class:`Services` and :class:`JobEvents`.

Kept apart from :mod:`reelserve.api.app` so routers and the serving layer import it without
importing the app (no import circle). Importing this module pulls in no torch, diffusers or av.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.concurrency import run_in_threadpool

from reelserve.api.signing import UrlSigner

if TYPE_CHECKING:
    from reelserve.api.ratelimit import RateLimiter
    from reelserve.delivery.dispatcher import Dispatcher
    from reelserve.delivery.storage import ArtifactStore
    from reelserve.delivery.sweeper import Sweeper
    from reelserve.jobs.store import JobStore
    from reelserve.media.netguard import OutboundPolicy
    from reelserve.settings import Settings
    from reelserve.tasks import Job


class JobEvents:
    """Await job changes from async code.

    In-process writers (worker threads) notify through :meth:`JobStore.subscribe`; writers in
    another process are seen by polling every ``poll_interval`` seconds. Both paths end in a
    ``store.get`` in a thread, so the event loop never blocks on the database.
    """

    def __init__(self, store: JobStore, poll_interval: float = 0.25) -> None:
        self.store = store
        self.poll_interval = poll_interval
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._unsubscribe: Callable[[], None] | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Begin relaying store notifications into ``loop``."""
        self._loop = loop
        self._unsubscribe = self.store.subscribe(self._on_change)

    def stop(self) -> None:
        """Stop relaying."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def _on_change(self, job_id: str) -> None:
        # Called from writer threads: hop onto the loop before touching asyncio objects.
        loop = self._loop
        if loop is not None and job_id in self._waiters and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # loop closed between check and call
                loop.call_soon_threadsafe(self._wake, job_id)

    def _wake(self, job_id: str) -> None:
        for event in self._waiters.get(job_id, ()):
            event.set()

    async def wait_terminal(self, job_id: str, timeout: float) -> Job | None:
        """The job once terminal, or its latest state when ``timeout`` seconds passed."""
        event = asyncio.Event()
        self._waiters.setdefault(job_id, set()).add(event)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            while True:
                event.clear()
                job = await run_in_threadpool(self.store.get, job_id)
                if job is None or job.status.is_terminal:
                    return job
                left = deadline - loop.time()
                if left <= 0:
                    return job
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), min(self.poll_interval, left))
        finally:
            waiters = self._waiters.get(job_id)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    del self._waiters[job_id]


@dataclass
class Services:
    """Everything the routers need, built once per app.

    ``dispatcher`` (webhook/upload/status-callback outbox) and ``sweeper`` (expired outputs) run
    in background threads during the app's lifespan; ``limiter`` holds the per-key limits and
    ``policy`` the outbound (SSRF) rules every dialect checks client URLs against at submit.
    """

    settings: Settings
    store: JobStore
    artifacts: ArtifactStore
    signer: UrlSigner
    events: JobEvents
    policy: OutboundPolicy
    dispatcher: Dispatcher
    sweeper: Sweeper
    limiter: RateLimiter

    @classmethod
    def from_settings(cls, settings: Settings) -> Services:
        """Open the stores named by ``settings`` (fast: no engine imports)."""
        from reelserve.api.ratelimit import RateLimiter
        from reelserve.delivery import open_artifacts
        from reelserve.delivery.dispatcher import Dispatcher
        from reelserve.delivery.storage import url_secret
        from reelserve.delivery.sweeper import Sweeper
        from reelserve.jobs import open_store

        store = open_store(settings)
        artifacts = open_artifacts(settings)
        secret = url_secret(settings.data_dir, settings.url_secret)
        dispatcher = Dispatcher(settings, store, artifacts)
        return cls(settings=settings, store=store, artifacts=artifacts,
                   signer=UrlSigner(secret, settings.base_url), events=JobEvents(store),
                   policy=dispatcher.policy, dispatcher=dispatcher,
                   sweeper=Sweeper(settings, store, artifacts),
                   limiter=RateLimiter.from_settings(settings, store))
