"""The ASGI application: ``create_app(settings)``.

The wire dialects are declared objects (:class:`~reelserve.api.dialect.Dialect`) listed in
:func:`default_dialects`; :func:`create_app` mounts each one's routers over the one serving layer
(:class:`~reelserve.api.serving.Serving`) and hands its webhook/status renderers to the delivery
dispatcher. Routers that are not a dialect (media, ``/v1/tasks``, the playground, a caller's
``routers=``) are mounted after them. The app owns the :class:`Services` (job store, artifact
store, URL signer, job-change events) and, unless told otherwise, runs ``settings.workers``
worker threads beside the server. Importing this module pulls in no torch, diffusers or av.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

import reelserve
from reelserve.api.guards import BodyLimitMiddleware, ClientGuardMiddleware
from reelserve.api.media import media_router
from reelserve.api.observability import RequestLogMiddleware, observability_router
from reelserve.api.openapi import install_openapi
from reelserve.api.services import JobEvents, Services
from reelserve.api.serving import Serving, with_retry_after
from reelserve.errors import ReelserveError
from reelserve.worker.readiness import Readiness

if TYPE_CHECKING:
    from reelserve.api.dialect import Dialect
    from reelserve.settings import Settings
    from reelserve.worker.loop import EngineSelector

log = logging.getLogger("reelserve")

__all__ = ["JobEvents", "Services", "create_app", "default_dialects"]


def default_dialects() -> list[Dialect]:
    """The wire dialects a server speaks: Runware (REST + WebSocket), 302-style, Kling, OpenAI.

    A new dialect is a package under ``api/`` with ``schema.py``, a thin router and one
    ``Dialect`` object, added to this list. Kling's literal ``/v1/videos/{text2video|
    image2video}`` routes and the OpenAI-style ``/v1/videos/{id}`` never overlap (docs/api.md,
    "Route layout").
    """
    from reelserve.api.kling.router import KLING
    from reelserve.api.m2v.router import M2V
    from reelserve.api.openai.router import OPENAI
    from reelserve.api.runware.dialect import RUNWARE

    return [RUNWARE, M2V, KLING, OPENAI]


def create_app(
    settings: Settings,
    services: Services | None = None,
    *,
    run_workers: bool = True,
    select_engine: EngineSelector | None = None,
    routers: Iterable[APIRouter | Callable[[Services], APIRouter]] = (),
    preload: Sequence[str] = (),
    dialects: Sequence[Dialect] | None = None,
) -> FastAPI:
    """Build the application.

    Args:
        settings: the one Settings object.
        services: prebuilt services (default: opened from ``settings``).
        run_workers: run ``settings.workers`` worker threads beside the server.
        select_engine: engine selector for those workers (default: the engine registry).
        routers: extra routers, or factories taking the services, mounted after the built-in ones.
        preload: model ids whose pipelines the worker threads load (and compile) before taking
            any job; ``app.state.readiness`` says when they are done (``/ready``).
        dialects: the wire dialects to serve (default: :func:`default_dialects`).
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
                                      settings.workers, select_engine, preload=preload,
                                      readiness=readiness)
            executor.start()
            app.state.worker_slots = executor.slots_alive  # /ready and /metrics read it
            # The server's SIGTERM handler calls this first (cli.py): no job starts while
            # the server drains its connections.
            app.state.stop_claiming = executor.stop_claiming
        else:
            readiness.ready()  # no worker threads here: the API side is all this process runs
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
            stopped = True
            if executor is not None:  # running jobs finish, or go back to the queue
                stopped = await run_in_threadpool(executor.stop, settings.shutdown_grace)
            if stopped:  # never under a job still writing (it would fail on a closed store)
                await run_in_threadpool(services.store.close)

    app = FastAPI(title="reelserve", version=reelserve.__version__, lifespan=lifespan)
    app.state.services = services
    # What a /ready route reads: the worker threads' state (starting, loading, ready, failed).
    readiness = Readiness()
    app.state.readiness = readiness

    @app.exception_handler(ReelserveError)
    async def _reelserve_error(request: Request, exc: ReelserveError) -> Response:
        # Routers map their own errors; this catches the rest in a Runware-like shape.
        return with_retry_after(JSONResponse(
            {"data": [], "errors": [{**exc.to_dict(), "taskType": None, "taskUUID": None}]},
            status_code=exc.http_status), exc)

    @app.exception_handler(RequestValidationError)
    async def _request_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"data": [], "errors": [{
            "code": "invalidRequest", "message": f"the request is malformed: {exc.errors()!s:.500}",
            "taskType": None, "taskUUID": None}]}, status_code=400)

    # /health, /ready, /metrics (api/observability.py); slots: this process's worker threads.
    app.state.worker_slots = lambda: (0, 0)
    app.include_router(observability_router(services, readiness,
                                            lambda: app.state.worker_slots()))

    serving = Serving(services)
    app.state.dialect_routes = []  # read by serving.error_response_for
    for dialect in default_dialects() if dialects is None else dialects:
        # Delivery knows no dialect: each declared one hands over how its jobs look in a
        # webhook body and in a status callback (looked up by Job.origin family).
        if dialect.webhook is not None:
            services.dispatcher.register_renderer(dialect.origin, dialect.webhook(serving))
        if dialect.status is not None:
            services.dispatcher.register_status_renderer(dialect.origin, dialect.status(serving))
        for router in dialect.routers(serving):
            app.include_router(router)
            # Refusals made before routing (api/guards.py) answer in the route's envelope.
            app.state.dialect_routes.extend(router.routes)
    app.include_router(media_router(services))
    # Routers that are not a wire dialect.
    from reelserve.api.tasks import tasks_router  # /v1/tasks: every dialect's jobs

    app.include_router(tasks_router(services))
    from reelserve.api.openai.router import models_router  # /v1/models: what renders each id here

    app.include_router(models_router(serving))
    # The playground page at GET / (static files; it calls POST /v1 like any client).
    from reelserve.web import playground_router

    app.include_router(playground_router())
    for extra in routers:
        app.include_router(extra if isinstance(extra, APIRouter) else extra(services))
    # /openapi.json from api/openapi.py (every route, bodies, auth); 405s list every method.
    install_openapi(app)
    # Every route's body is capped while it streams in (api/guards.py); a keyless server checks
    # Host, Origin and content type before any route runs. Middleware added later runs first.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(ClientGuardMiddleware, settings=settings)
    # Added last, so it is the outermost middleware: refusals by the others are logged too.
    app.add_middleware(RequestLogMiddleware)
    return app
