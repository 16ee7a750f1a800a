"""The dialect seam: each wire dialect is one declared :class:`Dialect` object.

A dialect names its origin (``Job.origin`` of its jobs is the name, or ``name.<kind>``), the
routers it mounts, how its jobs look in a webhook body and in a status callback, its error
envelope and its field-name table. :func:`reelserve.api.app.create_app` takes the list
explicitly, mounts the routers and hands the renderers to the delivery dispatcher; nothing
registers itself on import.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from reelserve.api.fields import FieldTable
from reelserve.errors import ReelserveError

if TYPE_CHECKING:
    from reelserve.api.serving import Serving
    from reelserve.delivery.dispatcher import PayloadRenderer, StatusRenderer

Envelope = Callable[[ReelserveError], "tuple[int, dict[str, Any]]"]
"""A dialect's error body: HTTP status and JSON of an error already in its field names."""


@dataclass(frozen=True)
class Dialect:
    """One wire dialect.

    Attributes:
        origin: the origin family of its jobs (``runware``, ``kling``, ``m2v``, ``openai``).
        fields: its names for the neutral field keys of errors.
        envelope: its error body (given the error in its own field names).
        routers: builds its routers over the serving layer.
        webhook: builds its webhook-body renderer (None: it has no webhooks).
        status: builds its status-callback renderer (None: it has no status callbacks).
    """

    origin: str
    fields: FieldTable
    envelope: Envelope
    routers: Callable[[Serving], Sequence[APIRouter]]
    webhook: Callable[[Serving], PayloadRenderer] | None = None
    status: Callable[[Serving], StatusRenderer] | None = None

    def error(self, exc: ReelserveError) -> ReelserveError:
        """``exc`` in this dialect's field names (and codes)."""
        return self.fields.render(exc)

    def error_response(self, exc: ReelserveError) -> JSONResponse:
        """The dialect's error answer to a refusal."""
        status, body = self.envelope(self.error(exc))
        return JSONResponse(body, status_code=status)
