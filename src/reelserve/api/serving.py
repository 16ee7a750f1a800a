"""The serving layer: what every wire dialect needs, decided once.

A dialect's router parses its wire shape into a :class:`~reelserve.tasks.TaskRequest`, calls
:class:`Serving` and renders the answer; it decides nothing itself. Here live:

- :meth:`Serving.submit`: validate -> capabilities (what the engine that will render it cannot
  honour is refused: :class:`reelserve.api.availability.Availability`) -> delivery targets -> per-key
  limits -> ``Job`` -> store (the one submit; every check a submit needs goes in its marked
  place);
- :meth:`Serving.store_upload`: keep an input file as an upload (one content-type table,
  :data:`reelserve.media.inputs.UPLOAD_TYPES`);
- :meth:`Serving.link` / :meth:`Serving.expires_at`: a result's signed URL and expiry, one rule
  for every dialect: the artifact's creation time + the job's ttl (or ``default_ttl``);
- :meth:`Serving.owner`: who sends a request authenticated with the REST API keys;
- :func:`dialect_route`: the one place a route's :class:`~reelserve.errors.ReelserveError`
  becomes the dialect's error envelope (routes raise, they do not catch).

Blocking methods (job store, artifact files) must be called from a thread.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Collection, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, cast

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute, Match
from starlette.types import Scope

from reelserve.api.auth import authenticate, bearer_token, client_address
from reelserve.delivery.storage import UPLOADS
from reelserve.errors import InFlightLimitError, RateLimitError, ReelserveError, ValidationError
from reelserve.tasks import Job

if TYPE_CHECKING:
    from reelserve.api.services import Services
    from reelserve.settings import Settings
    from reelserve.tasks import Result, TaskRequest


@dataclass(frozen=True)
class Upload:
    """A stored input file: its UUID (what a TaskRequest names), key, type and signed URL."""

    media_uuid: str
    key: str
    kind: str
    content_type: str
    extension: str
    url: str


@dataclass(frozen=True)
class Link:
    """A signed URL of an artifact and the unix time it stops working."""

    url: str
    expires_at: float


class Serving:
    """The operations every dialect shares, over one app's :class:`Services`."""

    def __init__(self, services: Services) -> None:
        from reelserve.api.availability import Availability

        self.services = services
        #: What renders each model id x workflow here and what it honours (submit refusals,
        #: ``GET /v1/models``, ``modelSearch``): this process's worker threads and the store's
        #: live workers.
        self.availability = Availability(services.settings, services.store)

    @property
    def settings(self) -> Settings:
        """The one Settings object."""
        return self.services.settings

    # ------------------------------------------------------------------ who

    def owner(self, request: Request) -> str:
        """The owner of a request authenticated with the REST API keys (``Bearer``)."""
        return authenticate(self.settings, bearer_token(request.headers.get("authorization")),
                            client_address(self.settings, request.scope))

    # ------------------------------------------------------------------ submit

    def check_limits(self, owner: str, *, parameter: str | None = None) -> None:
        """Admit one submit of ``owner`` under the per-key limits (``rateLimitExceeded``).

        Dialects that store uploads before the task exists call this first (a refused submit
        then costs no download and leaves no upload) and pass ``limits=False`` to :meth:`submit`.
        """
        self.services.limiter.check_submit(owner, parameter=parameter)

    def submit(
        self,
        request: TaskRequest,
        owner: str,
        *,
        origin: str,
        job_id: str | None = None,
        origin_data: Mapping[str, Any] | None = None,
        recorded: Mapping[str, Any] | None = None,
        status_url: str | None = None,
        status_parameter: str = "statusURL",
        limits: bool = True,
        limit_parameter: str | None = None,
    ) -> Job:
        """Validate ``request`` and store it as a job of ``owner`` (idempotent on its taskUUID).

        Args:
            request: the wire-neutral task.
            owner: who submits (from :meth:`owner` or the dialect's own auth).
            origin: ``Job.origin``: the dialect's name (``kling.text2video`` for sub-kinds).
            job_id: the job id (dialects with their own id shape); default a UUID.
            origin_data: what the dialect needs to render the job back.
            recorded: the request as the client sent it (default: empty).
            status_url: a URL to POST each status change to (Kling's ``callback_url``).
            status_parameter: the wire field ``status_url`` came from, for refusals.
            limits: check the per-key limits here (False: the dialect called
                :meth:`check_limits` already).
            limit_parameter: the field a rate-limit refusal names (Runware: ``taskType``).
        """
        from reelserve.catalog.validate import validate
        from reelserve.delivery.dispatcher import check_targets

        spec = validate(request)
        if status_url:
            spec = spec.model_copy(update={"delivery": spec.delivery.model_copy(
                update={"status_url": status_url})})
        # --- checks that refuse a valid request on this server go here, in this order ---
        # what the engine that will render it cannot honour (sound, camera, keepOriginalSound,
        # an unmapped model, a content check without a checker): refused now, never dropped
        self.availability.check(spec)
        # delivery targets under the SSRF rules (names are resolved when sent, not now)
        check_targets(spec.delivery, self.services.policy, status_parameter=status_parameter)
        if limits:
            self.check_limits(owner, parameter=limit_parameter)
        job = Job(id=job_id or str(uuid.uuid4()), task_uuid=spec.task_uuid, owner=owner,
                  origin=origin, origin_data=dict(origin_data or {}),
                  request=dict(recorded or {}), spec=spec)
        try:
            # The exact in-flight check: the store counts and creates in one transaction.
            return self.services.store.create(job, max_active=self.services.limiter.max_in_flight)
        except InFlightLimitError as exc:
            exc.parameter = limit_parameter
            raise

    # ------------------------------------------------------------------ uploads

    def store_upload(
        self,
        data: bytes,
        owner: str,
        *,
        parameter: str,
        kinds: Collection[str] = ("image", "video", "audio"),
        formats: Collection[str] | None = None,
    ) -> Upload:
        """Keep ``data`` as an upload of ``owner`` (the worker resolves it by UUID).

        The type is sniffed from the bytes and must be one of ``kinds`` (and, when given, of
        the content types ``formats``); otherwise ``invalid<Parameter>`` naming ``parameter``.
        """
        from reelserve.media.inputs import upload_type

        found = upload_type(data)
        if found is None or found[0] not in kinds or (
            formats is not None and found[1] not in formats
        ):
            wanted = ", ".join(sorted(formats)) if formats is not None else "/".join(kinds)
            raise ValidationError(
                f"invalid{parameter[:1].upper()}{parameter[1:]}",
                f"{parameter} is not a supported file ({found[1] if found else 'unknown data'});"
                f" allowed: {wanted}", parameter=parameter)
        kind, content_type, ext = found
        self.services.limiter.check_upload(owner, len(data), parameter=parameter)
        media_uuid = str(uuid.uuid4())
        info = self.services.artifacts.put_bytes(f"{UPLOADS}/{media_uuid}", data,
                                                 content_type=content_type, owner=owner,
                                                 extension=ext)
        url = self.services.signer.url(info.key, ext, info.created_at + self.settings.default_ttl)
        return Upload(media_uuid, info.key, kind, content_type, ext, url)

    # ------------------------------------------------------------------ results

    def ttl(self, job: Job) -> int:
        """How long a job's output URLs live (seconds)."""
        return job.spec.ttl or self.settings.default_ttl

    def link(self, job: Job, key: str, extension: str | None = None) -> Link:
        """Signed URL of artifact ``key`` of ``job``: valid from its creation for the job's ttl.

        The one expiry rule of every dialect. An artifact that is gone counts from the job's
        last update (its URL answers 404 anyway).
        """
        info = self.services.artifacts.info(key)
        created = info.created_at if info is not None else job.updated_at
        ext = extension if extension is not None else (info.extension if info else "")
        expires = created + self.ttl(job)
        return Link(self.services.signer.url(key, ext, expires), expires)

    def result_url(self, job: Job, result: Result) -> str:
        """Signed URL of one output video."""
        return self.link(job, result.artifact_key).url

    def expires_at(self, job: Job) -> float | None:
        """When the first output's URL stops working (None before there is one)."""
        if not job.results:
            return None
        return self.link(job, job.results[0].artifact_key).expires_at

    def cover_url(self, job: Job, result: Result) -> str | None:
        """Signed URL of the cover (first frame as JPEG), made on first request."""
        from reelserve.api.media import ensure_cover

        key = ensure_cover(self.services, job, result)
        return None if key is None else self.link(job, key, "jpg").url

    # ------------------------------------------------------------------ jobs

    def job_of(self, owner: str, job_id: str) -> Job | None:
        """The job ``job_id`` when ``owner`` owns it (other owners' jobs do not exist)."""
        job = self.services.store.get(job_id)
        return job if job is not None and job.owner == owner else None


# ================================================================================================
# Errors: one handler per dialect
# ================================================================================================

ErrorRenderer = Callable[[ReelserveError], Response]

RETRY_AFTER_IN_FLIGHT = 5
"""``Retry-After`` of a refusal whose limit cannot say when it frees (the tasks-in-flight limit
frees when one of the key's jobs ends): a polling interval, not a promise."""


def retry_after(exc: ReelserveError) -> int | None:
    """Whole seconds a client refused by a per-key limit should wait (None: not a limit)."""
    if not isinstance(exc, RateLimitError):
        return None
    if exc.retry_after is None:
        return RETRY_AFTER_IN_FLIGHT
    return max(1, math.ceil(exc.retry_after))


def with_retry_after(response: Response, exc: ReelserveError) -> Response:
    """``response`` to ``exc`` with ``Retry-After`` when ``exc`` is a rate limit: the one place
    every dialect's 429 gets it (SDKs such as OpenAI's read it to time their retries)."""
    seconds = retry_after(exc)
    if seconds is not None:
        response.headers["Retry-After"] = str(seconds)
    return response


def dialect_route(render_error: ErrorRenderer, *,
                  unsupported_media_status: int = 415) -> type[APIRoute]:
    """An ``APIRoute`` class whose routes answer any :class:`ReelserveError` they raise with
    ``render_error`` (the dialect's envelope). Pass it as ``APIRouter(route_class=...)``.

    ``unsupported_media_status``: the HTTP status of a body type no route speaks
    (``unsupportedMediaType``, refused before routing by :mod:`reelserve.api.guards`)."""

    class DialectRoute(APIRoute):
        # Read by error_response_for: refusals made before the route runs (middleware).
        error_renderer: ClassVar[ErrorRenderer] = staticmethod(render_error)
        media_type_status: ClassVar[int] = unsupported_media_status

        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def handle(request: Request) -> Response:
                try:
                    return await handler(request)
                except ReelserveError as exc:
                    return with_retry_after(render_error(exc), exc)

            return handle

    return DialectRoute


def error_response_for(scope: Scope, exc: ReelserveError) -> Response:
    """``exc`` as the answer of the route ``scope`` is addressed to: its dialect's envelope
    (a :func:`dialect_route` route's), else the app's generic Runware-like error body.

    For refusals made before any route runs (the client guard middleware)."""
    state = getattr(scope.get("app"), "state", None)
    routes: Sequence[BaseRoute] = getattr(state, "dialect_routes", ())  # set by create_app
    found: BaseRoute | None = None
    for route in routes:
        match, _ = route.matches(scope)
        if getattr(route, "error_renderer", None) is None or match is Match.NONE:
            continue
        if match is Match.FULL:
            found = route
            break
        found = found or route  # the path matches, another method is routed
    if found is None:
        response: Response = JSONResponse({"data": [], "errors": [{
            **exc.to_dict(), "taskType": None, "taskUUID": None}]}, status_code=exc.http_status)
    else:
        response = cast("Response", found.error_renderer(exc))  # type: ignore[attr-defined]
    if exc.code == UNSUPPORTED_MEDIA_CODE:
        response.status_code = getattr(found, "media_type_status", 415)
    return with_retry_after(response, exc)


UNSUPPORTED_MEDIA_CODE = "unsupportedMediaType"
"""The code of a request body of a type no route speaks (HTTP 415 unless the dialect says)."""
