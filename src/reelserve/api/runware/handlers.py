"""Runware task handling, independent of the transport.

:meth:`RunwareHandler.handle` takes the task objects of one request (REST body or WebSocket frame)
for an authenticated owner and returns ``data`` items and ``errors``. REST (:mod:`.rest`) and
WebSocket transports are thin layers over it. Every blocking step (job store, artifact files,
decoding) runs in a thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool

from reelserve.api.runware import render
from reelserve.api.runware.schema import check_task_uuid
from reelserve.api.serving import retry_after
from reelserve.delivery.storage import OUTPUTS, UPLOADS
from reelserve.errors import ErrorKind, NotFoundError, ReelserveError, ValidationError
from reelserve.tasks import DeliveryMethod, Job, JobStatus

if TYPE_CHECKING:
    from reelserve.api.serving import Serving, Upload

@dataclass
class Reply:
    """What one batch of tasks produced."""

    data: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    push: list[str] = field(default_factory=list)
    """taskUUIDs of accepted ``deliveryMethod: "sync"`` tasks this reply did not wait for: a
    transport that pushes results (WebSocket) watches them instead of sending the ACK."""
    retry_after: int | None = None
    """Seconds until a task refused by a per-key limit would be admitted (REST:
    ``Retry-After``), the longest of the batch; None when no task was."""

    taken: list[tuple[str, list[int]]] = field(default_factory=list)
    """``(job id, result indexes)`` this reply took from the store (marked delivered): a
    transport whose answer does not reach the client hands them back with :meth:`give_back`."""

    def extend(self, other: Reply) -> None:
        """Append another reply's items."""
        self.data.extend(other.data)
        self.errors.extend(other.errors)
        self.push.extend(other.push)
        self.taken.extend(other.taken)
        if other.retry_after is not None:
            self.retry_after = max(self.retry_after or 0, other.retry_after)


def _task_uuid(task: dict[str, Any]) -> str:
    return check_task_uuid(task.get("taskUUID"), uuid_required=False)


class RunwareHandler:
    """Runs Runware tasks for an owner. One instance per app; safe for concurrent use."""

    def __init__(self, serving: Serving) -> None:
        self.serving = serving
        self.services = serving.services

    async def handle(self, tasks: list[Any], owner: str, *, wait_sync: bool = True) -> Reply:
        """Run ``tasks`` concurrently and gather their items in task order.

        ``wait_sync``: a ``videoInference`` with ``deliveryMethod: "sync"`` (any case) waits for
        its results (REST). A transport that pushes results itself (WebSocket) passes False and
        gets the ACK with the task in :attr:`Reply.push` (unless a webhook delivers it).
        """
        replies = await asyncio.gather(
            *(self.handle_one(task, owner, wait_sync=wait_sync) for task in tasks)
        )
        out = Reply()
        for reply in replies:
            out.extend(reply)
        return out

    async def handle_one(self, task: Any, owner: str, *, wait_sync: bool = True) -> Reply:
        """Run one task; every failure becomes an error item naming its taskUUID and taskType."""
        task_type = task.get("taskType") if isinstance(task, dict) else None
        task_uuid = task.get("taskUUID") if isinstance(task, dict) else None
        try:
            if not isinstance(task, dict):
                raise ValidationError(
                    "invalidTask",
                    f"each array element must be a task object, got {type(task).__name__}",
                    parameter="task",
                )
            if not isinstance(task_type, str):
                raise ValidationError(
                    "missingTaskType" if task_type is None else "invalidTaskType",
                    f"taskType must be a string naming the task, got {task_type!r}",
                    parameter="taskType", allowed_values=sorted(_TASKS),
                )
            method = _TASKS.get(task_type)
            if method is None:
                raise ValidationError(
                    "unsupportedTaskType",
                    f"taskType {task_type!r} is not supported by this server",
                    parameter="taskType", allowed_values=sorted(_TASKS),
                )
            return await method(self, task, owner, wait_sync)
        except ReelserveError as exc:
            return Reply(errors=[render.error_item(
                exc, task_type=task_type if isinstance(task_type, str) else None,
                task_uuid=task_uuid if isinstance(task_uuid, str) else None)],
                retry_after=retry_after(exc))

    # ------------------------------------------------------------------ tasks

    async def _ping(self, task: dict[str, Any], owner: str, wait_sync: bool) -> Reply:
        item: dict[str, Any] = {"taskType": "ping", "pong": True}
        if isinstance(task.get("taskUUID"), str):
            item["taskUUID"] = task["taskUUID"]
        return Reply(data=[item])

    async def _authentication(self, task: dict[str, Any], owner: str, wait_sync: bool) -> Reply:
        # The transport authenticated already; a repeated auth object is acknowledged.
        return Reply(data=[{"taskType": "authentication"}])

    async def _video_inference(self, task: dict[str, Any], owner: str, wait_sync: bool) -> Reply:
        from reelserve.api.runware.schema import parse_video_inference

        request = parse_video_inference(task)
        job = await run_in_threadpool(
            lambda: self.serving.submit(request, owner, origin=render.ORIGIN, recorded=task,
                                        limit_parameter="taskType"))
        delivery = job.spec.delivery
        if delivery.method is DeliveryMethod.SYNC:
            if wait_sync:
                return await self._wait_and_render(job)
            if not delivery.webhook_url:
                return Reply(data=[render.ack_item(job.task_uuid)], push=[job.task_uuid])
        return Reply(data=[render.ack_item(job.task_uuid)])

    async def _wait_and_render(self, job: Job) -> Reply:
        settings = self.services.settings
        done = await self.services.events.wait_terminal(job.id, settings.sync_timeout)
        if done is None or not done.status.is_terminal:
            return Reply(errors=[render.error_item(
                ReelserveError(
                    "timeoutProvider",
                    f"the task did not finish within sync_timeout={settings.sync_timeout:g} s; it "
                    "keeps running: poll it with getResponse",
                    kind=ErrorKind.TIMEOUT),
                task_type=render.VIDEO_TASK, task_uuid=job.task_uuid)])
        return await run_in_threadpool(self._deliver_terminal, done, False)

    def _deliver_terminal(self, job: Job, with_status: bool) -> Reply:
        results = self.services.store.take_undelivered(job.id)
        taken = [(job.id, [r.index for r in results])] if results else []
        try:
            data = [render.result_item(job, r, self.serving, with_status=with_status)
                    for r in results]
        except BaseException:  # rendering failed: the results were never handed out
            self.give_back(Reply(taken=taken))
            raise
        return Reply(data=data, errors=render.job_errors(job), taken=taken)

    def give_back(self, reply: Reply) -> None:
        """The answer carrying ``reply`` never reached its client: mark the results it took
        undelivered again, so the next ``getResponse`` hands them out (blocking: a thread)."""
        for job_id, indexes in reply.taken:
            self.services.store.return_undelivered(job_id, indexes)
        reply.taken = []

    async def _get_response(self, task: dict[str, Any], owner: str, wait_sync: bool) -> Reply:
        task_uuid = _task_uuid(task)
        job = await run_in_threadpool(self.services.store.get_by_task, owner, task_uuid)
        if job is None:
            raise NotFoundError("taskNotFound", f"no task with taskUUID {task_uuid!r} exists "
                                "for this API key", parameter="taskUUID")
        if not job.status.is_terminal:
            return Reply(data=[render.processing_item(job)])
        reply = await run_in_threadpool(self._deliver_terminal, job, True)
        return reply

    async def _get_task_details(self, task: dict[str, Any], owner: str, wait_sync: bool) -> Reply:
        task_uuid = _task_uuid(task)
        job = await run_in_threadpool(self.services.store.get_by_task, owner, task_uuid)
        if job is None:
            raise NotFoundError("taskNotFound", f"no task with taskUUID {task_uuid!r} exists "
                                "for this API key", parameter="taskUUID")
        response = await run_in_threadpool(render.job_response, job, self.serving)
        deliveries = await run_in_threadpool(self.services.store.deliveries, job.id)
        return Reply(data=[{
            "taskType": "getTaskDetails", "taskUUID": task_uuid,
            "status": _STATUS_NAMES[job.status], "progress": int(job.progress),
            "request": job.request, "response": response,
            "createdAt": job.created_at, "updatedAt": job.updated_at,
            "deliveries": render.describe_deliveries(deliveries),
        }])

    async def _model_search(self, task: dict[str, Any], owner: str, wait_sync: bool) -> Reply:
        # Argument types and ranges are checked by the catalog's search_models.
        search = task.get("search")
        limit = task.get("limit", 20)
        offset = task.get("offset", 0)
        search_models = _search_models()
        result = await run_in_threadpool(search_models, search, limit, offset)
        # Per result, what renders each workflow here and what it supports (api/availability.py).
        view = await run_in_threadpool(self.serving.availability.view)
        for model in result.get("results", []):
            model["serving"] = self.serving.availability.describe(
                model["air"], model.get("workflows", []), view)
        item: dict[str, Any] = {"taskType": "modelSearch"}
        if isinstance(task.get("taskUUID"), str):
            item["taskUUID"] = task["taskUUID"]
        item.update(result)
        return Reply(data=[item])

    async def _image_upload(self, task: dict[str, Any], owner: str, wait_sync: bool) -> Reply:
        task_uuid = _task_uuid(task)
        value = task.get("image")
        data, found = await run_in_threadpool(self._media_bytes, value, "image", owner)
        if found is None or found[0] != "image":
            raise ValidationError(
                "invalidImage", f"image is not a supported image ({found[1] if found else 'unknown'} "
                "data); allowed: PNG, JPEG, WEBP, GIF", parameter="image",
                allowed_values=["PNG", "JPEG", "WEBP", "GIF"])
        upload = await run_in_threadpool(self._store_upload, data, "image", owner)
        return Reply(data=[{"taskType": "imageUpload", "taskUUID": task_uuid,
                            "imageUUID": upload.media_uuid, "imageURL": upload.url}])

    async def _media_storage(self, task: dict[str, Any], owner: str, wait_sync: bool) -> Reply:
        task_uuid = _task_uuid(task)
        operation = task.get("operation", "upload")
        if operation == "upload":
            data, found = await run_in_threadpool(
                self._media_bytes, task.get("media"), "media", owner)
            if found is None:
                raise ValidationError(
                    "invalidMedia", "media is not a recognised image, video or audio file; "
                    "allowed: PNG, JPEG, WEBP, GIF, MP4, MOV, WEBM, MP3, WAV, M4A, OGG, FLAC",
                    parameter="media")
            upload = await run_in_threadpool(self._store_upload, data, "media", owner)
            return Reply(data=[{"taskType": "mediaStorage", "taskUUID": task_uuid,
                                "operation": "upload", "mediaUUID": upload.media_uuid,
                                "mediaURL": upload.url}])
        if operation == "delete":
            target = task.get("mediaUUID")
            if not isinstance(target, str):
                raise ValidationError("missingMediaUUID" if target is None else
                                      "invalidMediaUUID",
                                      f"mediaUUID must be a string, got {target!r}",
                                      parameter="mediaUUID")
            deleted = await run_in_threadpool(self._delete_upload, target, owner)
            if not deleted:
                raise NotFoundError("mediaNotFound", f"no media with mediaUUID {target!r} "
                                    "exists for this API key", parameter="mediaUUID")
            return Reply(data=[{"taskType": "mediaStorage", "taskUUID": task_uuid,
                                "operation": "delete", "mediaUUID": target}])
        raise ValidationError("invalidOperation",
                              f"operation must be 'upload' or 'delete', got {operation!r}",
                              parameter="operation", allowed_values=["upload", "delete"])

    # ------------------------------------------------------------------ media helpers

    def _media_bytes(
        self, value: Any, parameter: str, owner: str
    ) -> tuple[bytes, tuple[str, str, str] | None]:
        """Bytes of a data URI, raw base64, URL (through the netguard) or an earlier UUID, with
        their sniffed ``(kind, content_type, extension)``.

        The cap is the catalog's input limit: images for ``imageUpload``, videos (the larger) for
        ``mediaStorage``, which also takes video and audio.
        """
        from reelserve.catalog import get_catalog
        from reelserve.delivery.storage import owned_media_path
        from reelserve.media.inputs import resolve_ref, upload_type

        if not isinstance(value, str) or not value.strip():
            raise ValidationError(
                f"missing{parameter.capitalize()}" if value is None
                else f"invalid{parameter.capitalize()}",
                f"{parameter} must be a data URI, base64 string, URL or UUID, got {value!r:.60}",
                parameter=parameter)
        limits = get_catalog().limits
        cap = limits.images.max_bytes if parameter == "image" else limits.videos.max_bytes
        data = resolve_ref(
            value, parameter=parameter,
            lookup=lambda media_uuid: owned_media_path(self.services.artifacts, media_uuid, owner),
            fetch=self._fetch, max_bytes=cap)
        return data, upload_type(data)

    def _fetch(self, url: str, *, max_bytes: int) -> Any:
        from reelserve.media import netguard

        return netguard.fetch(url, max_bytes=max_bytes, policy=self.services.policy)

    def _store_upload(self, data: bytes, parameter: str, owner: str) -> Upload:
        kinds = ("image",) if parameter == "image" else ("image", "video", "audio")
        return self.serving.store_upload(data, owner, parameter=parameter, kinds=kinds)

    def _delete_upload(self, media_uuid: str, owner: str) -> bool:
        for prefix in (UPLOADS, OUTPUTS):
            key = f"{prefix}/{media_uuid}"
            try:
                info = self.services.artifacts.info(key)
            except ReelserveError:  # not UUID-shaped
                return False
            if info is not None and info.owner in (None, owner):
                return self.services.artifacts.delete(key)
        return False


def _search_models() -> Any:
    """The catalog's modelSearch function (kept lazy: the catalog loads a TOML file)."""
    try:
        from reelserve.catalog.search import search_models
    except ImportError:
        from reelserve.catalog import search_models  # type: ignore[attr-defined,no-redef]
    return search_models


_STATUS_NAMES = {
    JobStatus.QUEUED: "processing", JobStatus.RUNNING: "processing",
    JobStatus.SUCCEEDED: "success", JobStatus.FAILED: "error", JobStatus.CANCELLED: "error",
}

_TASKS = {
    "ping": RunwareHandler._ping,
    "authentication": RunwareHandler._authentication,
    "videoInference": RunwareHandler._video_inference,
    "getResponse": RunwareHandler._get_response,
    "getTaskDetails": RunwareHandler._get_task_details,
    "modelSearch": RunwareHandler._model_search,
    "imageUpload": RunwareHandler._image_upload,
    "mediaStorage": RunwareHandler._media_storage,
}
