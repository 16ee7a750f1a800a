"""The Runware dialect as one declared object (see :mod:`reelserve.api.dialect`).

REST (``POST /v1``) and WebSocket (``/v1``) share one :class:`RunwareHandler`. Errors keep the
validator's field spelling (:data:`~reelserve.api.fields.RUNWARE_FIELDS`): what the official
SDKs read.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from reelserve.api.dialect import Dialect
from reelserve.api.fields import RUNWARE_FIELDS
from reelserve.api.runware import render
from reelserve.errors import ErrorKind, ReelserveError

if TYPE_CHECKING:
    from fastapi import APIRouter

    from reelserve.api.serving import Serving
    from reelserve.delivery.dispatcher import PayloadRenderer


def error_envelope(exc: ReelserveError) -> tuple[int, dict[str, Any]]:
    """A refusal of a whole request: ``{"data": [], "errors": [item]}`` with the kind's status
    (an authentication failure is scoped to the ``authentication`` task)."""
    task_type = "authentication" if exc.kind is ErrorKind.AUTH else None
    item = render.error_item(exc, task_type=task_type, task_uuid=None)
    return exc.http_status, {"data": [], "errors": [item]}


def _routers(serving: Serving) -> Sequence[APIRouter]:
    from reelserve.api.runware.handlers import RunwareHandler
    from reelserve.api.runware.rest import runware_rest_router
    from reelserve.api.runware.ws import runware_ws_router

    handler = RunwareHandler(serving)
    return [runware_rest_router(serving, handler, RUNWARE.error_response),
            runware_ws_router(serving, handler)]


def _webhook(serving: Serving) -> PayloadRenderer:
    return lambda job, result: render.webhook_payload(job, result, serving)


RUNWARE = Dialect(origin=render.ORIGIN, fields=RUNWARE_FIELDS, envelope=error_envelope,
                  routers=_routers, webhook=_webhook)
