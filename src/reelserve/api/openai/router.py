"""Thin router of the OpenAI-style Videos API: ``/v1/videos`` and ``/v1/videos/{id}[/content]``.

The ``{id}`` segment uses the ``video_id`` path convertor, which matches any segment *except*
``text2video`` and ``image2video``: those belong to Kling's routes, so neither dialect shadows
the other whatever order the routers are mounted in.
"""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.convertors import CONVERTOR_TYPES, Convertor, register_url_convertor
from starlette.datastructures import UploadFile

from reelserve.api.auth import authenticate, bearer_token
from reelserve.api.media import ensure_cover
from reelserve.api.openai import schema
from reelserve.delivery.storage import UPLOADS, delete_output
from reelserve.errors import ErrorKind, NotFoundError, ReelserveError, ValidationError
from reelserve.tasks import Job, JobStatus

if TYPE_CHECKING:
    from reelserve.api.app import Services

MAX_LIMIT = 100
DELETE_WAIT = 10.0
"""Seconds DELETE waits for a running job to stop before removing it anyway."""


class VideoIdConvertor(Convertor[str]):
    """A path segment that is not one of Kling's literal kinds."""

    regex = r"(?!(?:text2video|image2video)(?:/|$))[^/]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


if "video_id" not in CONVERTOR_TYPES:
    register_url_convertor("video_id", VideoIdConvertor())


def _error(exc: ReelserveError) -> JSONResponse:
    status, body = schema.error_envelope(exc)
    return JSONResponse(body, status_code=status)


class OpenAIService:
    """The blocking half of the dialect (runs in threads)."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def owner(self, request: Request) -> str:
        """The owner of a request authenticated with the REST API keys (Bearer)."""
        return authenticate(self.services.settings,
                            bearer_token(request.headers.get("authorization")),
                            request.client.host if request.client else None)

    def store_reference(self, data: bytes, owner: str) -> str:
        """Keep an uploaded ``input_reference`` as an upload; returns its UUID."""
        from reelserve.media.inputs import sniff

        kind = sniff(data)
        types = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
        if kind is None or kind[0] != "image" or kind[1].upper() not in types:
            raise ValidationError("invalidInputReference", "input_reference must be an image "
                                  "file (JPEG, PNG or WebP)", parameter="input_reference")
        content_type = types[kind[1].upper()]
        ext = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp"}[kind[1].upper()]
        media_uuid = str(uuid.uuid4())
        self.services.artifacts.put_bytes(f"{UPLOADS}/{media_uuid}", data,
                                          content_type=content_type, owner=owner,
                                          extension=ext.lstrip("."))
        return media_uuid

    def submit(self, body: dict[str, Any], reference: str | None, owner: str) -> Job:
        """Map, validate and create the job."""
        from reelserve.catalog.validate import validate

        task_uuid = str(uuid.uuid4())
        request = schema.to_request(body, task_uuid=task_uuid, input_reference=reference)
        spec = validate(request)
        recorded = {k: v for k, v in body.items() if k != "input_reference"}
        job = Job(id=schema.new_video_id(), task_uuid=task_uuid, owner=owner,
                  origin=schema.ORIGIN, request=recorded, spec=spec)
        return self.services.store.create(job)

    def get(self, video_id: str, owner: str) -> Job:
        """The owner's job (any dialect's), or ``videoNotFound``."""
        job = self.services.store.get(video_id)
        if job is None or job.owner != owner:
            raise NotFoundError("videoNotFound", f"no video with id {video_id!r} exists for "
                                "this API key", parameter="video_id")
        return job

    def expires_at(self, job: Job) -> float:
        """When the outputs' URLs stop working (creation + ttl)."""
        return job.updated_at + (job.spec.ttl or self.services.settings.default_ttl)

    def render(self, job: Job) -> dict[str, Any]:
        """The video object of ``job``."""
        return schema.render_video(job, expires_at=self.expires_at(job))

    def remove(self, job: Job) -> None:
        """Delete the outputs (and covers) of a terminal or abandoned job, then the job."""
        current = self.services.store.get(job.id) or job
        for result in current.results:
            delete_output(self.services.artifacts, result.artifact_key)
        self.services.store.delete(job.id)


def openai_router(services: Services) -> APIRouter:
    """OpenAI-style routes: create, list, retrieve, content, delete."""
    router = APIRouter(tags=["OpenAI-style videos"])
    service = OpenAIService(services)
    limiter = services.limiter  # per-key limits: rate_limit_error, 429

    async def read_create(request: Request, owner: str) -> tuple[dict[str, Any], str | None]:
        ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if ctype in ("multipart/form-data", "application/x-www-form-urlencoded"):
            try:
                form = await request.form(max_files=2, max_fields=32)
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
                    else:
                        body[key] = value
            finally:
                await form.close()
            if reference is None and body.get("input_reference"):
                reference = schema.reference_value(body.pop("input_reference"))
            return body, reference
        try:
            parsed = json.loads(await request.body() or b"{}")
        except ValueError as exc:
            raise ValidationError("invalidRequest", f"the body is not valid JSON: {exc}",
                                  parameter="body") from None
        if not isinstance(parsed, dict):
            raise ValidationError("invalidRequest", "the body must be a JSON object",
                                  parameter="body")
        return parsed, schema.reference_value(parsed.get("input_reference"))

    @router.post("/v1/videos", summary="Create a video")
    async def create(request: Request) -> JSONResponse:
        try:
            owner = await run_in_threadpool(service.owner, request)
            # Before the body is read: a refused submit stores no input_reference upload.
            await run_in_threadpool(limiter.check_submit, owner, parameter=None)
            body, reference = await read_create(request, owner)
            job = await run_in_threadpool(service.submit, body, reference, owner)
        except ReelserveError as exc:
            return _error(exc)
        return JSONResponse(service.render(job))

    @router.get("/v1/videos", summary="List videos")
    async def listing(request: Request) -> JSONResponse:
        try:
            owner = await run_in_threadpool(service.owner, request)
            raw = request.query_params.get("limit") or "20"
            if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
                raise ValidationError("invalidLimit", f"limit must be an integer from 1 to "
                                      f"{MAX_LIMIT}, got {raw!r:.40}", parameter="limit")
            order = request.query_params.get("order") or "desc"
            if order != "desc":
                raise ValidationError("invalidOrder", f"order {order!r:.20} is not supported; "
                                      "allowed: desc (newest first)", parameter="order",
                                      allowed_values=["desc"])
            limit = int(raw)
            after = request.query_params.get("after") or None
            jobs = await run_in_threadpool(
                lambda: services.store.list_jobs(owner, origin=schema.ORIGIN, limit=limit + 1,
                                                 after=after))
        except ReelserveError as exc:
            return _error(exc)
        page = [service.render(j) for j in jobs[:limit]]
        return JSONResponse(schema.render_list(page, has_more=len(jobs) > limit))

    @router.get("/v1/videos/{video_id:video_id}", summary="Retrieve a video")
    async def retrieve(video_id: str, request: Request) -> JSONResponse:
        try:
            owner = await run_in_threadpool(service.owner, request)
            job = await run_in_threadpool(service.get, video_id, owner)
        except ReelserveError as exc:
            return _error(exc)
        return JSONResponse(service.render(job))

    @router.get("/v1/videos/{video_id:video_id}/content", summary="Download a video")
    async def content(video_id: str, request: Request) -> Response:
        variant = request.query_params.get("variant") or "video"
        try:
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
        except ReelserveError as exc:
            return _error(exc)
        return FileResponse(path, media_type=media_type)

    @router.delete("/v1/videos/{video_id:video_id}", summary="Delete a video")
    async def delete(video_id: str, request: Request) -> JSONResponse:
        try:
            owner = await run_in_threadpool(service.owner, request)
            job = await run_in_threadpool(service.get, video_id, owner)
            if not job.status.is_terminal:
                # Cancel first so the worker stops and writes no output we would miss.
                await run_in_threadpool(services.store.request_cancel, job.id)
                await services.events.wait_terminal(job.id, DELETE_WAIT)
            await run_in_threadpool(service.remove, job)
        except ReelserveError as exc:
            return _error(exc)
        return JSONResponse(schema.render_deleted(video_id))

    return router
