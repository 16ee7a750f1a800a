"""Thin router of Kling's own API: ``/v1/videos/{text2video|image2video}[/{task_id}]``.

Routes use the literal kind segments, so they never overlap the OpenAI-style ``/v1/videos/{id}``
routes (whose ids exclude those two words; see :mod:`reelserve.api.openai.router`).
Parsing, auth and rendering live in :mod:`reelserve.api.kling.schema`. ``callback_url`` becomes the
job's ``spec.delivery.status_url``: the job store adds a delivery row on each status change and
the delivery dispatcher POSTs the task object rendered by :meth:`KlingService.render_event`
(persisted, retried, resumed after a restart; see docs/delivery.md).
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from reelserve.api import parsing
from reelserve.api.auth import owner_for_key
from reelserve.api.dialect import Dialect
from reelserve.api.kling import schema
from reelserve.api.parsing import parse_int
from reelserve.api.serving import dialect_route
from reelserve.errors import AuthError, ConflictError, NotFoundError, ValidationError
from reelserve.tasks import Job, Result

if TYPE_CHECKING:
    from collections.abc import Sequence

    from reelserve.api.serving import Serving
    from reelserve.delivery.dispatcher import StatusEvent, StatusRenderer

MAX_PAGE_SIZE = 500
MAX_PAGE_NUM = 1000


def origin_for(kind: str) -> str:
    """``Job.origin`` of Kling jobs: ``kling.text2video`` / ``kling.image2video`` (the list
    of one kind pages over that origin only)."""
    return f"{schema.ORIGIN}.{kind}"


class KlingService:
    """The blocking half of the dialect (runs in threads)."""

    def __init__(self, serving: Serving) -> None:
        self.serving = serving
        self.services = serving.services
        self.keys = schema.parse_key_pairs(
            [k.get_secret_value() for k in serving.settings.kling_keys])

    def owner(self, request: Request) -> str:
        """Verify the bearer JWT; the owner is :func:`owner_for_key` of the access key.

        With no Kling keys configured the REST API keys rule applies (:meth:`Serving.owner`):
        ``Authorization: Bearer <API key>`` when ``REELSERVE_API_KEYS`` is set (never open
        because the client is local), loopback clients only when it is not.
        """
        header = request.headers.get("authorization")
        if not self.keys:
            try:
                return self.serving.owner(request)
            except AuthError as exc:
                raise AuthError(
                    "invalidAuthorization", f"{exc.message} (this server has no Kling keys "
                    "configured, REELSERVE_KLING_KEYS: send 'Authorization: Bearer <API key>')",
                    parameter="Authorization") from None
        return owner_for_key(schema.verify_jwt(header, self.keys))

    def submit(self, kind: str, body: dict[str, Any], owner: str) -> Job:
        """Map and submit (idempotent on ``external_task_id``).

        ``callback_url`` rides the delivery outbox as the job's status URL (refused at submit
        when the URL itself is); per-key limits answer 1302 / 1303.
        """
        data = schema.origin_data(kind, body)
        external = data["external_task_id"]
        task_uuid = schema.external_task_uuid(external) if external else str(uuid.uuid4())
        request = schema.to_request(kind, body, task_uuid=task_uuid)
        recorded = {k: v for k, v in body.items() if k not in ("image", "image_tail")}
        try:
            return self.serving.submit(
                request, owner, origin=origin_for(kind), job_id=schema.new_task_id(),
                origin_data=data, recorded=recorded, status_url=data["callback_url"],
                status_parameter="callback_url")
        except ConflictError:
            raise ConflictError(
                "conflictExternalTaskId", f"external_task_id {external!r} was already used by "
                "this access key; it must be unique (query the existing task with it)",
                parameter="external_task_id") from None

    def get(self, kind: str, task_id: str, owner: str) -> Job:
        """A task by ``task_id`` or by ``external_task_id``, of this owner only."""
        job = self.services.store.get(task_id)
        if job is None or job.owner != owner:
            job = self.services.store.get_by_task(owner, schema.external_task_uuid(task_id))
        if job is None or job.owner != owner or (
            job.origin.startswith(schema.ORIGIN + ".") and job.origin != origin_for(kind)
        ):
            raise NotFoundError("taskNotFound", f"no {kind} task with task_id or "
                                f"external_task_id {task_id!r} exists for this access key",
                                parameter="task_id")
        return job

    def list(self, kind: str, owner: str, page_num: int, page_size: int) -> list[Job]:
        """One page of the owner's tasks of ``kind``, newest first."""
        return self.services.store.list_jobs(owner, origin=origin_for(kind), limit=page_size,
                                             offset=(page_num - 1) * page_size)[0]

    def video_url(self, job: Job, result: Result) -> str:
        """Signed URL of an output."""
        return self.serving.result_url(job, result)

    def render(self, job: Job) -> dict[str, Any]:
        """The task object of ``job``."""
        return schema.render_task(job, schema.Links(video=lambda r: self.video_url(job, r)))

    def render_event(self, job: Job, event: StatusEvent) -> dict[str, Any]:
        """The callback body of a status change: the task object as it was at ``event``."""
        return schema.render_task_at(job, event.status, event.at,
                                     schema.Links(video=lambda r: self.video_url(job, r)))


def _page_arg(request: Request, name: str, default: int, maximum: int) -> int:
    return parse_int(request.query_params.get(name), name=name, minimum=1, maximum=maximum,
                     default=default)


def kling_router(serving: Serving) -> APIRouter:
    """Kling's own routes: create, query (by task_id or external_task_id) and list, per kind."""
    router = APIRouter(tags=["Kling"], route_class=dialect_route(KLING.error_response))
    service = KlingService(serving)

    def reply(data: Any) -> JSONResponse:
        return JSONResponse(schema.envelope(data, str(uuid.uuid4())))

    async def read_json(request: Request) -> dict[str, Any]:
        body = await parsing.read_json(request, empty={}, code="invalidRequest")
        if not isinstance(body, dict):
            raise ValidationError("invalidRequest", "the body must be a JSON object",
                                  parameter="body")
        return body

    for kind in schema.KINDS:

        def make(kind: str) -> None:
            async def create(request: Request) -> JSONResponse:
                owner = service.owner(request)
                body = await read_json(request)
                job = await run_in_threadpool(service.submit, kind, body, owner)
                return reply(schema.render_submitted(job))

            async def query(task_id: str, request: Request) -> JSONResponse:
                owner = service.owner(request)
                job = await run_in_threadpool(service.get, kind, task_id, owner)
                return reply(await run_in_threadpool(service.render, job))

            async def listing(request: Request) -> JSONResponse:
                owner = service.owner(request)
                page_num = _page_arg(request, "pageNum", 1, MAX_PAGE_NUM)
                page_size = _page_arg(request, "pageSize", 30, MAX_PAGE_SIZE)
                jobs = await run_in_threadpool(service.list, kind, owner, page_num, page_size)
                return reply(await run_in_threadpool(lambda: [service.render(j) for j in jobs]))

            router.add_api_route(f"/v1/videos/{kind}", create, methods=["POST"],
                                 name=f"kling_create_{kind}", summary=f"Kling {kind}: create")
            router.add_api_route(f"/v1/videos/{kind}", listing, methods=["GET"],
                                 name=f"kling_list_{kind}", summary=f"Kling {kind}: list")
            router.add_api_route(f"/v1/videos/{kind}/{{task_id}}", query, methods=["GET"],
                                 name=f"kling_query_{kind}", summary=f"Kling {kind}: query")

        make(kind)
    return router


def _status(serving: Serving) -> StatusRenderer:
    # callback_url bodies (the outbox sends them, from any process serving this dialect)
    return KlingService(serving).render_event


def _routers(serving: Serving) -> Sequence[APIRouter]:
    return [kling_router(serving)]


KLING = Dialect(origin=schema.ORIGIN, fields=schema.FIELD_NAMES, envelope=schema.error_envelope,
                routers=_routers, status=_status)
"""Kling's own API as a declared dialect (jobs' origins: ``kling.<kind>``)."""
