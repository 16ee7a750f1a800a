"""Runware over REST: ``POST /v1`` with a JSON array of tasks.

A thin transport: read the body (capped while it streams in by the app's body limit), parse it
(:func:`~reelserve.api.parsing.parse_json`, at most ``max_tasks_per_request`` tasks), authenticate, hand the tasks to
:class:`~reelserve.api.runware.handlers.RunwareHandler`, and map the reply to a status code
(200 when any task produced data, 400 when all failed, 507 when all failed for a full disk, 401
for a bad key, 413 for a body over ``settings.max_body_bytes``). Nothing here ever answers 500 for a bad request.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from reelserve.api.auth import authenticate, bearer_token, client_address
from reelserve.api.parsing import parse_json_async
from reelserve.api.runware.handlers import Reply, RunwareHandler
from reelserve.api.serving import ErrorRenderer, dialect_route
from reelserve.errors import STORAGE_FULL_CODE, ValidationError

if TYPE_CHECKING:
    from reelserve.api.serving import Serving

log = logging.getLogger(__name__)


def check_task_count(tasks: list[Any], cap: int, *, parameter: str = "body") -> None:
    """Refuse an array of more than ``cap`` tasks (``tooManyTasks``), before running any.

    One request's cost must stay bounded: 30,000 ``modelSearch`` tasks once made a 205 MB answer.
    """
    if len(tasks) > cap:
        raise ValidationError(
            "tooManyTasks", f"the request holds {len(tasks)} tasks; the limit is {cap} tasks "
            "per request (REELSERVE_MAX_TASKS_PER_REQUEST): send them in several requests",
            parameter=parameter)


class HandOverResponse(JSONResponse):
    """A JSON answer carrying results taken from the store (``getResponse``, a sync reply).

    ``on_lost`` (blocking; run in a thread) hands them back when the answer cannot reach the
    client: it left before the answer was ready (it timed out; uvicorn then drops what is sent
    without an error, so it is asked first), or sending failed. A client that disconnects
    while the bytes are in flight cannot be told apart from one that read them; that window is
    the write itself.
    """

    def __init__(self, content: Any, *, status_code: int, headers: dict[str, str] | None,
                 on_lost: Callable[[], None]) -> None:
        super().__init__(content, status_code=status_code, headers=headers)
        self.on_lost = on_lost

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if await Request(scope, receive).is_disconnected():
            await run_in_threadpool(self.on_lost)
            return
        try:
            await super().__call__(scope, receive, send)
        except BaseException:
            # Possibly cancelled: no awaiting here; one short store write on the loop.
            self.on_lost()
            raise


def runware_rest_router(
    serving: Serving, handler: RunwareHandler, render_error: ErrorRenderer
) -> APIRouter:
    """``POST /v1`` (and ``/v1/``); a refusal of the whole request is ``render_error``'d."""
    router = APIRouter(route_class=dialect_route(render_error))
    settings = serving.settings

    async def post_tasks(request: Request) -> Response:
        try:  # capped while it streams in (api/guards.py BodyLimitMiddleware)
            body = await request.body()
        except ClientDisconnect:
            return JSONResponse({"data": [], "errors": []}, status_code=400)
        tasks = await parse_json_async(body)
        if not isinstance(tasks, list):
            raise ValidationError(
                "invalidRequestBody", f"the request body must be a JSON array of task objects, "
                f"got a JSON {type(tasks).__name__}", parameter="body")
        check_task_count(tasks, settings.max_tasks_per_request)
        api_key = bearer_token(request.headers.get("authorization"))
        if tasks and isinstance(tasks[0], dict) and tasks[0].get("taskType") == "authentication":
            key = tasks[0].get("apiKey")
            api_key = key if isinstance(key, str) else api_key
            tasks = tasks[1:]
        owner = authenticate(settings, api_key, client_address(settings, request.scope))
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
        # A task refused by a per-key limit: when to retry, as every dialect's 429 says it.
        headers = ({"Retry-After": str(reply.retry_after)}
                   if reply.retry_after is not None else None)
        if reply.taken:  # results leave the store only when the answer reaches the client
            return HandOverResponse(payload, status_code=status, headers=headers,
                                    on_lost=lambda: handler.give_back(reply))
        return JSONResponse(payload, status_code=status, headers=headers)

    router.add_api_route("/v1", post_tasks, methods=["POST"], include_in_schema=False)
    router.add_api_route("/v1/", post_tasks, methods=["POST"], include_in_schema=False)
    return router
