"""Runware over REST: ``POST /v1`` with a JSON array of tasks.

A thin transport: read the body (capped while reading), parse it, authenticate, hand the tasks to
:class:`~reelserve.api.runware.handlers.RunwareHandler`, and map the reply to a status code
(200 when any task produced data, 400 when all failed, 401 for a bad key, 413 for a body over
``settings.max_body_bytes``). Nothing here ever answers 500 for a bad request.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from reelserve.api.auth import authenticate, bearer_token
from reelserve.api.runware.handlers import Reply, RunwareHandler
from reelserve.errors import ErrorKind, ReelserveError, ValidationError

if TYPE_CHECKING:
    from reelserve.api.app import Services

log = logging.getLogger(__name__)

# Bodies up to this are parsed on the event loop; bigger ones in a thread.
_INLINE_JSON_BYTES = 256 * 1024


def _envelope_error(exc: ReelserveError, status: int, task_type: str | None = None) -> JSONResponse:
    error = {**exc.to_dict(), "taskType": task_type, "taskUUID": None}
    return JSONResponse({"data": [], "errors": [error]}, status_code=status)


async def read_capped_body(request: Request, cap: int) -> bytes:
    """The request body, or ``payloadTooLarge`` once more than ``cap`` bytes arrived.

    An oversized body is drained (up to 4x the cap) so the client can read the error instead of
    seeing its upload cut off.
    """
    declared = request.headers.get("content-length")
    too_large = ReelserveError(
        "payloadTooLarge", f"the request body is larger than the {cap} byte limit "
        "(REELSERVE_MAX_BODY_BYTES); upload big media with mediaStorage or pass a URL",
        parameter="body", kind=ErrorKind.TOO_LARGE)
    chunks: list[bytes] = []
    size = 0
    over = declared is not None and declared.isdigit() and int(declared) > cap
    async for chunk in request.stream():
        size += len(chunk)
        if over or size > cap:
            over = True
            chunks.clear()
            if size > 4 * cap:
                break
            continue
        chunks.append(chunk)
    if over:
        raise too_large
    return b"".join(chunks)


def runware_rest_router(services: Services, handler: RunwareHandler) -> APIRouter:
    """``POST /v1`` (and ``/v1/``)."""
    router = APIRouter()
    settings = services.settings

    async def post_tasks(request: Request) -> JSONResponse:
        try:
            body = await read_capped_body(request, settings.max_body_bytes)
        except ReelserveError as exc:
            return _envelope_error(exc, exc.http_status)
        except ClientDisconnect:
            return JSONResponse({"data": [], "errors": []}, status_code=400)
        try:
            if len(body) > _INLINE_JSON_BYTES:
                tasks: Any = await run_in_threadpool(json.loads, body)
            else:
                tasks = json.loads(body)
        except (ValueError, RecursionError) as exc:
            return _envelope_error(ValidationError(
                "invalidJson", f"the request body is not valid JSON: {exc}", parameter="body"), 400)
        if not isinstance(tasks, list):
            return _envelope_error(ValidationError(
                "invalidRequestBody", f"the request body must be a JSON array of task objects, "
                f"got a JSON {type(tasks).__name__}", parameter="body"), 400)
        api_key = bearer_token(request.headers.get("authorization"))
        if tasks and isinstance(tasks[0], dict) and tasks[0].get("taskType") == "authentication":
            key = tasks[0].get("apiKey")
            api_key = key if isinstance(key, str) else api_key
            tasks = tasks[1:]
        client = request.client.host if request.client else None
        try:
            owner = authenticate(settings, api_key, client)
        except ReelserveError as exc:
            return _envelope_error(exc, 401, task_type="authentication")
        if not tasks:
            return _envelope_error(ValidationError(
                "missingTasks", "the request array holds no tasks", parameter="body"), 400)
        reply: Reply = await handler.handle(tasks, owner)
        payload: dict[str, Any] = {"data": reply.data}
        if reply.errors:
            payload["errors"] = reply.errors
        return JSONResponse(payload, status_code=200 if reply.data or not reply.errors else 400)

    router.add_api_route("/v1", post_tasks, methods=["POST"], include_in_schema=False)
    router.add_api_route("/v1/", post_tasks, methods=["POST"], include_in_schema=False)
    return router
