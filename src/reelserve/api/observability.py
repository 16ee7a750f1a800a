"""Operations endpoints and the access log: ``GET /metrics``, ``/health``, ``/ready`` and the
:class:`RequestLogMiddleware` (one log line per request, with a request id).

- ``GET /metrics``: the Prometheus text of the whole deployment
  (:func:`reelserve.observability.metrics.render`, read from the job store, so every server of a
  deployment answers the same numbers), plus this process's worker slots and loaded models
  (:class:`ProcessCollector`).
- ``GET /health``: the process answers (liveness). Never touches the store.
- ``GET /ready``: the store answers a query, this process's worker slots are alive, and the
  models it was told to preload are loaded (``Readiness``); 503 with the reasons otherwise.
  A server with ``REELSERVE_WORKERS=0`` has no slots of its own: it is ready when its store
  answers and some worker of the deployment is alive (``JobStore.live_workers``).

None of them needs an API key: load balancers, orchestrators and Prometheus call them, and they
tell nothing about any key's tasks.
"""

from __future__ import annotations

import logging
import re
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import reelserve
from reelserve.observability.metrics import CONTENT_TYPE, render

if TYPE_CHECKING:
    from reelserve.api.services import Services
    from reelserve.worker.readiness import Readiness, ReadinessSnapshot

__all__ = [
    "REQUEST_ID_HEADER",
    "ProcessCollector",
    "RequestLogMiddleware",
    "observability_router",
    "request_id",
]

REQUEST_ID_HEADER = "X-Request-ID"
access_log = logging.getLogger("reelserve.access")

# A client's request id is echoed into logs and headers: printable, no spaces, bounded, so it
# can neither forge log lines nor bloat them. Anything else is replaced by a fresh id.
_ID_RE = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")


def request_id(request: Request) -> str | None:
    """The id :class:`RequestLogMiddleware` gave this request (None outside the middleware)."""
    value = request.scope.get("state", {}).get("request_id")
    return value if isinstance(value, str) else None


class RequestLogMiddleware:
    """Pure ASGI middleware: one ``reelserve.access`` INFO line per HTTP request or WebSocket.

    The request id is the client's ``X-Request-ID`` when it is a sane token, else a new UUID; it
    is echoed as ``X-Request-ID`` on every HTTP answer (errors too) and kept in
    ``scope["state"]["request_id"]`` (:func:`request_id`). The line: method, path, status,
    milliseconds, response bytes, client address, request id. Pure ASGI (not
    ``BaseHTTPMiddleware``) so streamed file answers and WebSockets pass through untouched.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        given = ""
        for name, value in scope.get("headers") or ():
            if name == b"x-request-id":
                given = value.decode("latin-1")
                break
        rid = given if _ID_RE.fullmatch(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        started = time.perf_counter()
        status = 0
        sent = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status, sent
            kind = message["type"]
            if kind == "http.response.start":
                status = int(message["status"])
                headers = [(k, v) for k, v in message.get("headers", ())
                           if k.lower() != b"x-request-id"]
                headers.append((b"x-request-id", rid.encode("latin-1")))
                message = {**message, "headers": headers}
            elif kind == "http.response.body":
                sent += len(message.get("body", b""))
            elif kind == "websocket.accept":
                status = 101
            elif kind == "websocket.close" and not status:
                status = 403  # closed before accepting: refused
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except BaseException:
            status = status or 500
            raise
        finally:
            if access_log.isEnabledFor(logging.INFO):
                client = scope.get("client")
                method = scope.get("method", "WS")
                access_log.info("%s %s %d %.1fms %dB client=%s rid=%s", method,
                                scope.get("path", ""), status,
                                (time.perf_counter() - started) * 1000, sent,
                                client[0] if client else "-", rid)


class ProcessCollector(Collector):
    """This process's worker side: slots alive, ready state, preloaded models, GPU memory.

    Unlike :class:`~reelserve.observability.metrics.StoreCollector` these are per process
    (each server or worker process has its own slots and GPU), labelled by nothing: scrape each
    process that runs slots to see them all.
    """

    def __init__(self, readiness: Readiness, slots: Callable[[], tuple[int, int]]) -> None:
        self.readiness = readiness
        self.slots = slots

    def collect(self) -> Iterator[Metric]:
        """The process-local families of one scrape."""
        snap = self.readiness.snapshot()
        total, alive = self.slots()
        yield GaugeMetricFamily("reelserve_process_worker_slots",
                                "Worker slots this process started", value=total)
        yield GaugeMetricFamily("reelserve_process_worker_slots_alive",
                                "Worker slot threads of this process still running", value=alive)
        yield GaugeMetricFamily("reelserve_process_ready",
                                "1 when this process's worker side takes jobs (/ready)",
                                value=1 if snap.ready else 0)
        loaded = GaugeMetricFamily("reelserve_process_models_loaded",
                                   "Models (model/workflow) preloaded by this process",
                                   labels=["model"])
        for entry in snap.preloaded:
            loaded.add_metric([entry], 1)
        yield loaded
        # Only when an engine already imported torch: /metrics never imports it itself.
        torch = sys.modules.get("torch")
        cuda = getattr(torch, "cuda", None)
        if cuda is not None and cuda.is_available():
            memory = GaugeMetricFamily("reelserve_gpu_memory_allocated_bytes",
                                       "GPU memory held by this process's tensors",
                                       labels=["device"])
            for index in range(cuda.device_count()):
                memory.add_metric([str(index)], float(cuda.memory_allocated(index)))
            yield memory


def _ready_body(services: Services, snap: ReadinessSnapshot,
                slots: tuple[int, int]) -> tuple[bool, dict[str, Any]]:
    """``/ready``'s verdict and body (blocking: it queries the store)."""
    reasons: list[str] = []
    live: int | None = None
    store: dict[str, Any]
    try:
        services.store.get("readiness-probe")  # an indexed lookup: proves the store answers
        # every worker of the deployment publishes itself in the store with its beats
        live = len(services.store.live_workers())
        store = {"reachable": True}
    except Exception as exc:  # any failure of the store is "not ready", with its cause
        store = {"reachable": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
        reasons.append("the job store does not answer")
    total, alive = slots
    if not total and live == 0:  # an API-only server: someone else must render
        reasons.append("no worker of the deployment is alive (this server runs none: "
                       "REELSERVE_WORKERS=0; start `reelserve worker`)")
    if total and alive < total:
        reasons.append(f"{total - alive} of {total} worker slots stopped")
    if not snap.ready:
        reasons.append(f"worker slots are {snap.state.value}: {snap.detail}".rstrip(": "))
    body = {
        "ready": not reasons,
        "reasons": reasons,
        "version": reelserve.__version__,
        "store": store,
        "workers": {**snap.to_dict(), "slots": total, "alive": alive, "live": live},
    }
    return not reasons, body


def observability_router(services: Services, readiness: Readiness,
                         slots: Callable[[], tuple[int, int]]) -> APIRouter:
    """``/metrics``, ``/health`` and ``/ready`` over ``services`` and this process's worker
    ``readiness``; ``slots()`` gives ``(started, alive)`` worker slot threads of this process."""
    router = APIRouter(tags=["Operations"])
    process = ProcessCollector(readiness, slots)

    @router.get("/health", summary="Liveness: the process answers",
                response_description="always 200 while the process runs")
    async def health() -> dict[str, str]:
        return {"status": "ok", "version": reelserve.__version__}

    @router.get("/ready", summary="Readiness: store reachable, worker slots alive, models loaded",
                responses={503: {"description": "not ready; `reasons` says why"}})
    async def ready() -> JSONResponse:
        snap = readiness.snapshot()
        ok, body = await run_in_threadpool(_ready_body, services, snap, slots())
        return JSONResponse(body, status_code=200 if ok else 503)

    @router.get("/metrics", summary="Prometheus metrics of the deployment",
                response_class=Response,
                responses={200: {"content": {CONTENT_TYPE: {"schema": {"type": "string"}}},
                                 "description": "Prometheus text exposition format 0.0.4"}})
    async def metrics() -> Response:
        text = await run_in_threadpool(render, services.store, extra=(process,))
        return Response(text, media_type=CONTENT_TYPE)

    return router
