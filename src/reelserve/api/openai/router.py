"""Thin router of the OpenAI-style Videos API: ``/v1/videos`` and ``/v1/videos/{id}[/content]``.

The ``{id}`` segment uses the ``video_id`` path convertor, which matches any segment *except*
``text2video`` and ``image2video``: those belong to Kling's routes, so neither dialect shadows
the other whatever order the routers are mounted in.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.convertors import CONVERTOR_TYPES, Convertor, register_url_convertor
from starlette.datastructures import UploadFile

from reelserve.api.dialect import Dialect
from reelserve.api.media import NOSNIFF, ensure_cover
from reelserve.api.openai import schema
from reelserve.api.parsing import parse_int, read_json
from reelserve.api.serving import dialect_route
from reelserve.delivery.storage import delete_output
from reelserve.errors import ErrorKind, NotFoundError, ReelserveError, ValidationError
from reelserve.jobs.rows import job_cursor
from reelserve.tasks import Job, JobStatus

if TYPE_CHECKING:
    from collections.abc import Sequence

    from reelserve.api.serving import Serving
    from reelserve.jobs.store import JobStore

MAX_LIMIT = 100
REFERENCE_URL_FIELD = "input_reference[image_url]"
"""The form field of an image URL reference (the SDKs' multipart form of ``input_reference:
{"image_url": ...}``; JSON bodies send the object itself)."""
DELETE_WAIT = 10.0
"""Seconds DELETE waits for a running job to stop before removing it anyway."""


class VideoIdConvertor(Convertor[str]):
    """A path segment that is not one of Kling's literal kinds."""

    regex = r"(?!(?:text2video|image2video)(?:/|$))[^/]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value




class OpenAIService:
    """The blocking half of the dialect (runs in threads)."""

    def __init__(self, serving: Serving) -> None:
        self.serving = serving
        self.services = serving.services

    def owner(self, request: Request) -> str:
        """The owner of a request authenticated with the REST API keys (Bearer)."""
        return self.serving.owner(request)

    def store_reference(self, data: bytes, owner: str) -> str:
        """Keep an uploaded ``input_reference`` as an upload; returns its UUID."""
        try:
            upload = self.serving.store_upload(
                data, owner, parameter="input_reference", kinds=("image",),
                formats=("image/png", "image/jpeg", "image/webp"))
        except ValidationError:
            raise ValidationError("invalidInputReference", "input_reference must be an image "
                                  "file (JPEG, PNG or WebP)", parameter="input_reference") from None
        return upload.media_uuid

    def submit(self, body: dict[str, Any], reference: str | None, owner: str) -> Job:
        """Map and submit (the per-key limits were checked before the body was read)."""
        request = schema.to_request(body, task_uuid=str(uuid.uuid4()),
                                    input_reference=reference)
        recorded = {k: v for k, v in body.items() if k != "input_reference"}
        return self.serving.submit(request, owner, origin=schema.ORIGIN,
                                   job_id=schema.new_video_id(), recorded=recorded,
                                   limits=False)

    def get(self, video_id: str, owner: str) -> Job:
        """The owner's job (any dialect's), or ``videoNotFound``."""
        job = self.services.store.get(video_id)
        if job is None or job.owner != owner:
            raise NotFoundError("videoNotFound", f"no video with id {video_id!r} exists for "
                                "this API key", parameter="video_id")
        return job

    def render(self, job: Job) -> dict[str, Any]:
        """The video object of ``job`` (``expires_at``: the serving layer's one expiry rule,
        the output's creation + ttl, as every dialect's URLs)."""
        return schema.render_video(job, expires_at=self.serving.expires_at(job))

    def remove(self, job: Job) -> None:
        """Delete the outputs (and covers) of a terminal or abandoned job, then the job."""
        current = self.services.store.get(job.id) or job
        for result in current.results:
            delete_output(self.services.artifacts, result.artifact_key)
        self.services.store.delete(job.id)


def openai_router(serving: Serving) -> APIRouter:
    """OpenAI-style routes: create, list, retrieve, content, delete."""
    if "video_id" not in CONVERTOR_TYPES:  # the {id} segment that is not a Kling kind
        register_url_convertor("video_id", VideoIdConvertor())
    router = APIRouter(tags=["OpenAI-style videos"],
                       route_class=dialect_route(OPENAI.error_response))
    services = serving.services
    service = OpenAIService(serving)

    async def read_create(request: Request, owner: str) -> tuple[dict[str, Any], str | None]:
        ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if ctype in ("multipart/form-data", "application/x-www-form-urlencoded"):
            try:
                form = await request.form(max_files=2, max_fields=32)
            except ReelserveError:  # the body cap (api/guards.py), raised while streaming
                raise
            except Exception as exc:  # python-multipart errors share no base class
                raise ValidationError("invalidRequest", f"the form cannot be parsed: {exc}",
                                      parameter="body") from None
            body: dict[str, Any] = {}
            reference: str | None = None
            try:
                for key, value in form.multi_items():
                    if isinstance(value, UploadFile):
                        if key != "input_reference":
                            raise ValidationError("unsupportedParameter", f"{key} cannot be a "
                                                  "file; only input_reference can",
                                                  parameter=key)
                        data = await value.read()
                        reference = await run_in_threadpool(service.store_reference, data, owner)
                    elif key == REFERENCE_URL_FIELD:
                        # How the SDKs put {"image_url": ...} in a form (Python and Node alike)
                        body["input_reference"] = {"image_url": value}
                    else:
                        body[key] = value
            finally:
                await form.close()
            if reference is None and body.get("input_reference"):
                reference = schema.reference_value(body.pop("input_reference"))
            return body, reference
        parsed = await read_json(request, empty={}, code="invalidRequest")
        if not isinstance(parsed, dict):
            raise ValidationError("invalidRequest", "the body must be a JSON object",
                                  parameter="body")
        return parsed, schema.reference_value(parsed.get("input_reference"))

    @router.post("/v1/videos", summary="Create a video")
    async def create(request: Request) -> JSONResponse:
        owner = await run_in_threadpool(service.owner, request)
        # Before the body is read: a refused submit stores no input_reference upload.
        await run_in_threadpool(serving.check_limits, owner)
        body, reference = await read_create(request, owner)
        job = await run_in_threadpool(service.submit, body, reference, owner)
        return JSONResponse(await run_in_threadpool(service.render, job))

    @router.get("/v1/videos", summary="List videos")
    async def listing(request: Request) -> JSONResponse:
        owner = await run_in_threadpool(service.owner, request)
        limit = parse_int(request.query_params.get("limit"), name="limit", minimum=1,
                          maximum=MAX_LIMIT, default=20, code="invalidLimit")
        order = request.query_params.get("order") or "desc"
        if order != "desc":
            raise ValidationError("invalidOrder", f"order {order!r:.20} is not supported; "
                                  "allowed: desc (newest first)", parameter="order",
                                  allowed_values=["desc"])
        after = request.query_params.get("after") or None
        jobs, more = await run_in_threadpool(_videos_after, services.store, owner, limit, after)
        page = await run_in_threadpool(lambda: [service.render(j) for j in jobs])
        return JSONResponse(schema.render_list(page, has_more=more))

    @router.get("/v1/videos/{video_id:video_id}", summary="Retrieve a video")
    async def retrieve(video_id: str, request: Request) -> JSONResponse:
        owner = await run_in_threadpool(service.owner, request)
        job = await run_in_threadpool(service.get, video_id, owner)
        return JSONResponse(await run_in_threadpool(service.render, job))

    @router.get("/v1/videos/{video_id:video_id}/content", summary="Download a video")
    async def content(video_id: str, request: Request) -> Response:
        variant = request.query_params.get("variant") or "video"
        owner = await run_in_threadpool(service.owner, request)
        if variant not in ("video", "thumbnail"):
            raise ValidationError("invalidVariant", f"variant {variant!r:.30} is not "
                                  "available; allowed: video, thumbnail",
                                  parameter="variant", allowed_values=["video", "thumbnail"])
        job = await run_in_threadpool(service.get, video_id, owner)
        if job.status is not JobStatus.SUCCEEDED or not job.results:
            raise ReelserveError(
                "videoNotReady", f"video {video_id!r} is {schema.video_status(job)}; content "
                "is available once it is completed", parameter="video_id",
                kind=ErrorKind.CONFLICT)
        result = job.results[0]
        key, media_type = result.artifact_key, result.content_type
        if variant == "thumbnail":
            cover = await run_in_threadpool(ensure_cover, services, job, result)
            if cover is None:
                raise NotFoundError("contentNotFound", "no thumbnail is available",
                                    parameter="variant")
            key, media_type = cover, "image/jpeg"
        path = await run_in_threadpool(services.artifacts.local_path, key)
        if path is None or not path.exists():
            raise NotFoundError("contentNotFound", f"the content of video {video_id!r} is "
                                "no longer stored", parameter="video_id")
        return FileResponse(path, media_type=media_type, headers=NOSNIFF)

    @router.delete("/v1/videos/{video_id:video_id}", summary="Delete a video")
    async def delete(video_id: str, request: Request) -> JSONResponse:
        owner = await run_in_threadpool(service.owner, request)
        job = await run_in_threadpool(service.get, video_id, owner)
        if not job.status.is_terminal:
            # Cancel first so the worker stops and writes no output we would miss.
            await run_in_threadpool(services.store.request_cancel, job.id)
            await services.events.wait_terminal(job.id, DELETE_WAIT)
        await run_in_threadpool(service.remove, job)
        return JSONResponse(schema.render_deleted(video_id))

    return router


def _videos_after(
    store: JobStore, owner: str, limit: int, after: str | None
) -> tuple[list[Job], bool]:
    """One page of the owner's videos below the video ``after`` (an id, as OpenAI pages) and
    whether more follow; an id that is not one of the owner's videos lists nothing."""
    cursor = None
    if after is not None:
        job = store.get(after)
        if job is None or job.owner != owner:
            return [], False
        cursor = job_cursor(job)
    jobs, following = store.list_jobs(owner, origin=schema.ORIGIN, limit=limit, after=cursor)
    return jobs, following is not None


def _routers(serving: Serving) -> Sequence[APIRouter]:
    return [openai_router(serving)]


OPENAI = Dialect(origin=schema.ORIGIN, fields=schema.FIELD_NAMES, envelope=schema.error_envelope,
                 routers=_routers)
"""The OpenAI-style Videos API as a declared dialect (clients poll; no webhooks)."""


def models_router(serving: Serving) -> APIRouter:
    """``GET /v1/models``: the models this server renders (OpenAI-style list).

    Authenticated like the REST API (``Authorization: Bearer``); answers
    ``{"object": "list", "data": [...]}`` (see :meth:`Availability.models`), refusals in the
    OpenAI error shape.
    """
    # An OpenAI-style list answers refusals (auth) in the OpenAI error shape, as /v1/videos does.
    router = APIRouter(tags=["models"], route_class=dialect_route(OPENAI.error_response))

    @router.get("/v1/models")
    async def list_models(request: Request) -> dict[str, Any]:
        await run_in_threadpool(serving.owner, request)
        data = await run_in_threadpool(serving.availability.models)
        return {"object": "list", "data": data}

    return router
