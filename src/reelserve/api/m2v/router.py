"""Thin router of the 302-style API: ``POST /klingai/<path>`` and ``GET /klingai/task/{id}/fetch``.

Parsing and rendering live in :mod:`reelserve.api.m2v.schema`; this module only reads the
request, stores checked images as uploads (the worker resolves them by UUID, like Runware
uploads), runs the one validator, creates the job and answers in the 302 envelope. Blocking work
(Pillow, the job store, PyAV for covers: :func:`reelserve.api.media.ensure_cover`) runs in
threads.
"""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from reelserve.api.dialect import Dialect
from reelserve.api.m2v import schema
from reelserve.api.parsing import read_json
from reelserve.api.serving import dialect_route
from reelserve.errors import ErrorKind, NotFoundError, ReelserveError, ValidationError
from reelserve.tasks import Job, Result

if TYPE_CHECKING:
    from collections.abc import Sequence

    from reelserve.api.serving import Serving


async def read_form(request: Request) -> dict[str, schema.FormValue]:
    """The submitted fields: multipart/urlencoded form (files become ImageUpload) or JSON."""
    ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    fields: dict[str, schema.FormValue] = {}
    if ctype == "application/json":
        body = await read_json(request, empty={}, code="invalidRequest")
        if not isinstance(body, dict):
            raise ValidationError("invalidRequest", "the JSON body must be an object of the form "
                                  "fields", parameter="body")
        for key, value in body.items():
            if value is None:
                continue
            fields[key] = json.dumps(value) if isinstance(value, bool) else str(value)
        return fields
    if ctype not in ("multipart/form-data", "application/x-www-form-urlencoded"):
        raise ValidationError(
            "invalidRequest", f"Content-Type {ctype or 'none'!r} is not accepted; send "
            "multipart/form-data (or JSON with image URLs)", parameter="Content-Type",
            allowed_values=["multipart/form-data", "application/x-www-form-urlencoded",
                            "application/json"])
    try:
        form = await request.form(max_files=4, max_fields=64)
    except ReelserveError:  # the body cap (api/guards.py), raised while streaming
        raise
    except Exception as exc:  # python-multipart parse errors carry no common base class
        raise ValidationError("invalidRequest", f"the multipart form cannot be parsed: {exc}",
                              parameter="body") from None
    try:
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                if value.size is not None and value.size > schema.MAX_IMAGE_BYTES:
                    raise ReelserveError(
                        "invalidImageSize", f"{key} is {value.size} bytes; the 302-style API "
                        f"accepts at most 10 MB ({schema.MAX_IMAGE_BYTES} bytes)",
                        parameter=key, kind=ErrorKind.TOO_LARGE)
                fields[key] = schema.ImageUpload(await value.read(), value.filename)
            else:
                fields[key] = value
    finally:
        await form.close()
    return fields


class M2VService:
    """The blocking half of the dialect (runs in threads)."""

    def __init__(self, serving: Serving) -> None:
        self.serving = serving
        self.services = serving.services

    def image_bytes(self, value: schema.FormValue, field: str) -> bytes:
        """An uploaded file's bytes, or the bytes behind a URL / data URI (through the netguard)."""
        if isinstance(value, schema.ImageUpload):
            return value.data
        from reelserve.media import netguard
        from reelserve.media.inputs import resolve_ref

        policy = self.services.policy

        def fetch(url: str, *, max_bytes: int) -> Any:
            return netguard.fetch(url, max_bytes=max_bytes, policy=policy, parameter=field)

        return resolve_ref(value, parameter=field, lookup=lambda _uuid: None, fetch=fetch,
                           max_bytes=schema.MAX_IMAGE_BYTES)

    def store_image(self, value: schema.FormValue, field: str, owner: str) -> str:
        """Check an image against the 302 rules and keep it as an upload; returns its UUID."""
        data = self.image_bytes(value, field)
        content_type, _w, _h = schema.check_image(data, field)
        return self.serving.store_upload(data, owner, parameter=field, kinds=("image",),
                                         formats=(content_type,)).media_uuid

    def submit(self, route: schema.PathRoute, form: dict[str, schema.FormValue],
               owner: str) -> Job:
        """Check, map, validate and create the job.

        The per-key limits are checked after the form's own checks and before any image is
        fetched or stored, so a refused submit costs no download and leaves no upload behind.
        """
        schema.check_form(route, form)
        # per-key limits (api/ratelimit.py): rateLimitExceeded, 429
        self.serving.check_limits(owner)
        images: dict[str, str] = {}
        for field in ("input_image", "tail_image"):
            value = form.get(field)
            if value not in (None, ""):
                assert value is not None
                images[field] = self.store_image(value, field, owner)
        task_uuid = str(uuid.uuid4())
        request = schema.to_request(route, form, task_uuid=task_uuid,
                                    input_image=images.get("input_image"),
                                    tail_image=images.get("tail_image"))
        recorded = {k: (f"upload:{images[k]}" if k in images else v)
                    for k, v in form.items() if not isinstance(v, schema.ImageUpload)}
        recorded.update({k: f"upload:{v}" for k, v in images.items()})
        return self.serving.submit(request, owner, origin=schema.ORIGIN,
                                   job_id=schema.new_task_id(), origin_data={"type": route.name},
                                   recorded=recorded, limits=False)

    def get(self, task_id: str, owner: str) -> Job:
        """The owner's job, or ``taskNotFound`` (also for other owners' jobs)."""
        job = self.services.store.get(task_id)
        if job is None or job.owner != owner:
            raise NotFoundError("taskNotFound", f"no task with id {task_id!r} exists for this "
                                "API key", parameter="id")
        return job

    def video_url(self, job: Job, result: Result) -> str:
        """Signed URL of an output, valid the job's ttl from its creation."""
        return self.serving.result_url(job, result)

    def cover_url(self, job: Job, result: Result) -> str | None:
        """Signed URL of the cover (first frame as JPEG), made on first request."""
        return self.serving.cover_url(job, result)

    def render(self, job: Job) -> dict[str, Any]:
        """The 302 ``data`` of a job (may extract covers: blocking)."""
        links = schema.Links(video=lambda r: self.video_url(job, r),
                             cover=lambda r: self.cover_url(job, r))
        return schema.render_task(job, links)


def m2v_router(serving: Serving) -> APIRouter:
    """The 302-style routes (six submit paths and fetch)."""
    # 302-style clients read every refusal as a 400 with the field named (an unsupported
    # Content-Type too, whether this router or the keyless guard refuses it).
    router = APIRouter(tags=["302-style Kling"], route_class=dialect_route(
        M2V.error_response, unsupported_media_status=400))
    service = M2VService(serving)

    def make_submit(route: schema.PathRoute) -> Any:
        async def submit(request: Request) -> JSONResponse:
            owner = await run_in_threadpool(serving.owner, request)
            form = await read_form(request)
            job = await run_in_threadpool(service.submit, route, form, owner)
            data = await run_in_threadpool(service.render, job)
            return JSONResponse(schema.envelope(data))

        submit.__name__ = f"submit_{route.name}"
        return submit

    for route in schema.PATHS.values():
        router.add_api_route(f"/klingai/{route.name}", make_submit(route), methods=["POST"],
                             summary=f"302-style {route.name} ({route.model}, "
                             f"{route.duration:g} s)")

    @router.get("/klingai/task/{task_id}/fetch", summary="302-style fetch")
    async def fetch(task_id: str, request: Request) -> JSONResponse:
        # ``geo`` (and any other query) is accepted and ignored, as on the 302 page.
        owner = await run_in_threadpool(serving.owner, request)
        job = await run_in_threadpool(service.get, task_id, owner)
        data = await run_in_threadpool(service.render, job)
        return JSONResponse(schema.envelope(data))

    return router


def _routers(serving: Serving) -> Sequence[APIRouter]:
    return [m2v_router(serving)]


M2V = Dialect(origin=schema.ORIGIN, fields=schema.FIELD_NAMES, envelope=schema.error_envelope,
              routers=_routers)
"""The 302-style API as a declared dialect (no webhooks or callbacks: clients poll)."""

__all__ = ["M2V", "M2VService", "m2v_router"]
