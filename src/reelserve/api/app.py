"""The ASGI application: ``create_app(settings)``.

Routers per dialect are mounted here; each dialect adds its router in :func:`create_app` (or a
caller passes extra routers). The app owns the :class:`Services` (job store, artifact store, URL
signer, job-change events) and, unless told otherwise, runs ``settings.workers`` worker threads
beside the server. Importing this module pulls in no torch, diffusers or av.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

import reelserve
from reelserve.api.media import UrlSigner, media_router
from reelserve.errors import ReelserveError

if TYPE_CHECKING:
    from reelserve.api.ratelimit import RateLimiter
    from reelserve.delivery.dispatcher import Dispatcher
    from reelserve.delivery.storage import ArtifactStore
    from reelserve.delivery.sweeper import Sweeper
    from reelserve.jobs.store import JobStore
    from reelserve.media.netguard import OutboundPolicy
    from reelserve.settings import Settings
    from reelserve.tasks import Job
    from reelserve.worker.loop import EngineSelector

log = logging.getLogger("reelserve")


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
        from reelserve.delivery.dispatcher import Dispatcher
        from reelserve.delivery.storage import open_artifacts, url_secret
        from reelserve.delivery.sweeper import Sweeper
        from reelserve.jobs.store import open_store

        store = open_store(settings)
        artifacts = open_artifacts(settings)
        secret = url_secret(settings.data_dir, settings.url_secret)
        dispatcher = Dispatcher(settings, store, artifacts)
        return cls(settings=settings, store=store, artifacts=artifacts,
                   signer=UrlSigner(secret, settings.base_url), events=JobEvents(store),
                   policy=dispatcher.policy, dispatcher=dispatcher,
                   sweeper=Sweeper(settings, store, artifacts),
                   limiter=RateLimiter.from_settings(settings, store))


def create_app(
    settings: Settings,
    services: Services | None = None,
    *,
    run_workers: bool = True,
    select_engine: EngineSelector | None = None,
    routers: Iterable[APIRouter | Callable[[Services], APIRouter]] = (),
) -> FastAPI:
    """Build the application.

    Args:
        settings: the one Settings object.
        services: prebuilt services (default: opened from ``settings``).
        run_workers: run ``settings.workers`` worker threads beside the server.
        select_engine: engine selector for those workers (default: the engine registry).
        routers: extra routers, or factories taking the services, mounted after the built-in ones.
    """
    services = services or Services.from_settings(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services.events.start(asyncio.get_running_loop())
        if not settings.api_keys:
            log.warning("no REELSERVE_API_KEYS set: serving loopback clients only")
        else:
            log.info("%d API key(s) configured", len(settings.api_keys))
        executor = None
        if run_workers and settings.workers > 0:
            from reelserve.worker.executors import ThreadExecutor

            executor = ThreadExecutor(settings, services.store, services.artifacts,
                                      settings.workers, select_engine)
            executor.start()
        # Webhook/upload outbox and expired-output sweeper (reelserve.delivery).
        dispatcher, sweeper = services.dispatcher, services.sweeper
        dispatcher.start()
        sweeper.start()
        try:
            yield
        finally:
            services.events.stop()
            await run_in_threadpool(dispatcher.stop, 5.0)
            await run_in_threadpool(sweeper.stop, 5.0)
            if executor is not None:
                await run_in_threadpool(executor.stop, 5.0)
            await run_in_threadpool(services.store.close)

    app = FastAPI(title="reelserve", version=reelserve.__version__, lifespan=lifespan)
    app.state.services = services

    @app.exception_handler(ReelserveError)
    async def _reelserve_error(request: Request, exc: ReelserveError) -> JSONResponse:
        # Routers map their own errors; this catches the rest in a Runware-like shape.
        return JSONResponse({"data": [], "errors": [{**exc.to_dict(), "taskType": None,
                                                     "taskUUID": None}]},
                            status_code=exc.http_status)

    @app.exception_handler(RequestValidationError)
    async def _request_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"data": [], "errors": [{
            "code": "invalidRequest", "message": f"the request is malformed: {exc.errors()!s:.500}",
            "taskType": None, "taskUUID": None}]}, status_code=400)

    @app.get("/health", include_in_schema=False)
    async def health() -> dict[str, str]:
        return {"status": "ok", "version": reelserve.__version__}

    from reelserve.api.runware import render as runware_render
    from reelserve.api.runware.handlers import RunwareHandler
    from reelserve.api.runware.rest import runware_rest_router
    from reelserve.api.runware.ws import runware_ws_router

    # Delivery knows no dialect: each dialect registers how its jobs look in a webhook body.
    services.dispatcher.register_renderer(
        "runware", lambda job, result: runware_render.webhook_payload(job, result, services))
    handler = RunwareHandler(services)
    app.include_router(runware_rest_router(services, handler))
    app.include_router(runware_ws_router(services, handler))
    app.include_router(media_router(services))
    # Other dialects (issue 8). Kling's literal /v1/videos/{text2video|image2video} routes and
    # the OpenAI-style /v1/videos/{id} never overlap (see docs/api.md, "Route layout").
    from reelserve.api.kling.router import kling_router
    from reelserve.api.m2v.router import m2v_router
    from reelserve.api.openai.router import openai_router

    app.include_router(m2v_router(services))
    app.include_router(kling_router(services))
    app.include_router(openai_router(services))
    # The playground page at GET / (static files; it calls POST /v1 like any client).
    from reelserve.web import playground_router

    app.include_router(playground_router())
    for router in routers:
        app.include_router(router if isinstance(router, APIRouter) else router(services))
    return app
