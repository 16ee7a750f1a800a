"""Runware over REST: ``POST /v1`` with a JSON array of tasks.

A thin transport: read the body (capped while reading), parse it, authenticate, hand the tasks to
:class:`~reelserve.api.runware.handlers.RunwareHandler`, and map the reply to a status code
(200 when any task produced data, 400 when all failed, 507 when all failed for a full disk, 401
for a bad key, 413 for a body over ``settings.max_body_bytes``). Nothing here ever answers 500 for a bad request.
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
from reelserve.api.serving import ErrorRenderer, dialect_route
from reelserve.errors import STORAGE_FULL_CODE, ErrorKind, ReelserveError, ValidationError

if TYPE_CHECKING:
    from reelserve.api.serving import Serving

log = logging.getLogger(__name__)

# Bodies up to this are parsed on the event loop; bigger ones in a thread.
_INLINE_JSON_BYTES = 256 * 1024


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


def runware_rest_router(
    serving: Serving, handler: RunwareHandler, render_error: ErrorRenderer
) -> APIRouter:
    """``POST /v1`` (and ``/v1/``); a refusal of the whole request is ``render_error``'d."""
    router = APIRouter(route_class=dialect_route(render_error))
    settings = serving.settings

    async def post_tasks(request: Request) -> JSONResponse:
        try:
            body = await read_capped_body(request, settings.max_body_bytes)
        except ClientDisconnect:
            return JSONResponse({"data": [], "errors": []}, status_code=400)
        try:
            if len(body) > _INLINE_JSON_BYTES:
                tasks: Any = await run_in_threadpool(json.loads, body)
            else:
                tasks = json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise ValidationError(
                "invalidJson", f"the request body is not valid JSON: {exc}",
                parameter="body") from None
        if not isinstance(tasks, list):
            raise ValidationError(
                "invalidRequestBody", f"the request body must be a JSON array of task objects, "
                f"got a JSON {type(tasks).__name__}", parameter="body")
        api_key = bearer_token(request.headers.get("authorization"))
        if tasks and isinstance(tasks[0], dict) and tasks[0].get("taskType") == "authentication":
            key = tasks[0].get("apiKey")
            api_key = key if isinstance(key, str) else api_key
            tasks = tasks[1:]
        client = request.client.host if request.client else None
        owner = authenticate(settings, api_key, client)
        if not tasks:
            raise ValidationError("missingTasks", "the request array holds no tasks",
                                  parameter="body")
        reply: Reply = await handler.handle(tasks, owner)
        payload: dict[str, Any] = {"data": reply.data}
        if reply.errors:
            payload["errors"] = reply.errors
        status = 200 if reply.data or not reply.errors else 400
        if status == 400 and all(e.get("code") == STORAGE_FULL_CODE for e in reply.errors):
            status = 507  # nothing failed but the server's disk: a client retries later
        return JSONResponse(payload, status_code=status)

    router.add_api_route("/v1", post_tasks, methods=["POST"], include_in_schema=False)
    router.add_api_route("/v1/", post_tasks, methods=["POST"], include_in_schema=False)
    return router
