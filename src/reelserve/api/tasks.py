"""Task management for every dialect: ``GET /v1/tasks``, ``GET /v1/tasks/{taskUUID}``,
``POST /v1/tasks/{taskUUID}/cancel``.

A key sees and cancels its own jobs whatever protocol created them (Runware, Kling, 302-style,
OpenAI-style); ``origin`` says which. Each job is rendered in one dialect-neutral shape::

    {"taskUUID", "id", "status", "progress", "model", "workflow", "origin", "prompt",
     "numberResults", "createdAt", "updatedAt", "results": [{"videoUUID", "url", ...}],
     "error": {"code", "message", "parameter"} | null, "cost"}

``GET /v1/tasks/{taskUUID}`` of a queued task adds ``queuePosition``: how many queued jobs
(of every key) were created before it, 0 when it is next (``JobStore.queue_position``).

``status`` is the job's own lifecycle (queued, running, succeeded, failed, cancelled). Errors
are :class:`~reelserve.errors.ReelserveError` raised to the app's one error handler. Every answer
carries ``X-Reelserve-Auth: keys`` or ``keyless`` so a client can tell a user that the key it
sent was ignored by a server without keys.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from reelserve.api.serving import Serving
from reelserve.errors import NotFoundError, ValidationError
from reelserve.tasks import JobStatus

if TYPE_CHECKING:
    from reelserve.api.services import Services
    from reelserve.jobs.store import JobStore
    from reelserve.tasks import Job

MAX_LIMIT = 100
AUTH_HEADER = "X-Reelserve-Auth"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def parse_statuses(values: Sequence[str]) -> list[JobStatus] | None:
    """``?status=queued,running`` (comma-separated and/or repeated) -> statuses, or None for all."""
    names = [part.strip().lower() for value in values for part in value.split(",") if part.strip()]
    if not names:
        return None
    allowed = [s.value for s in JobStatus]
    bad = [n for n in names if n not in allowed]
    if bad:
        raise ValidationError("invalidStatus", f"unknown task status {bad[0]!r}; use one or more "
                              f"of {', '.join(allowed)}", parameter="status", allowed_values=allowed)
    return [JobStatus(n) for n in dict.fromkeys(names)]


def list_page(store: JobStore, owner: str, statuses: list[JobStatus] | None, after: str | None,
              limit: int) -> tuple[list[Job], str | None]:
    """One page of the owner's jobs, newest first, and the cursor of the next page (or None).

    The store pages by keyset over its ``(owner, status, created_at, id)`` index; a cursor it did
    not make is refused as ``invalidCursor`` (parameter ``cursor``, as this API names it).
    """
    try:
        jobs, cursor = store.list_jobs(owner, statuses=statuses, after=after, limit=limit)
    except ValidationError as exc:
        if exc.code != "invalidCursor":
            raise
        raise ValidationError("invalidCursor", "cursor is not a nextCursor this server gave; "
                              "start again without it", parameter="cursor") from None
    return list(jobs), cursor


class TaskService:
    """The blocking half of the task API (runs in threads), over the shared serving layer."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.serving = Serving(services)

    def owner(self, request: Request) -> str:
        """The owner of a request (``Authorization: Bearer <key>``; loopback when keyless)."""
        return self.serving.owner(request)

    def find(self, owner: str, task_uuid: str) -> Job:
        """The owner's job by taskUUID (or by the dialect's job id), else ``taskNotFound``."""
        store = self.services.store
        job = store.get_by_task(owner, task_uuid) or self.serving.job_of(owner, task_uuid)
        if job is None:
            raise NotFoundError("taskNotFound", f"no task {task_uuid!r} exists for this API key",
                                parameter="taskUUID")
        return job

    def cancel(self, owner: str, task_uuid: str) -> Job:
        """Ask for cancellation: a queued job never runs, a running one stops at its next step.
        A terminal job is returned unchanged (cancelling twice is not an error)."""
        job = self.find(owner, task_uuid)
        if job.status.is_terminal:
            return job
        return self.services.store.request_cancel(job.id) or self.find(owner, task_uuid)

    def show(self, owner: str, task_uuid: str) -> dict[str, Any]:
        """One task as ``GET /v1/tasks/{taskUUID}`` answers it: :meth:`render`, plus
        ``queuePosition`` (queued jobs ahead of it, every key's) while it is queued. Only here,
        not in lists: one count per task is cheap, one per listed task is not needed."""
        job = self.find(owner, task_uuid)
        body = self.render(job)
        if job.status is JobStatus.QUEUED and not job.cancel_requested:
            position = self.services.store.queue_position(job.id)
            if position is not None:  # None: it left the queue since it was read
                body["queuePosition"] = position
        return body

    def render(self, job: Job) -> dict[str, Any]:
        """The neutral task object (reads artifact info for the URLs: call from a thread)."""
        results = []
        for result in job.results:
            link = self.serving.link(job, result.artifact_key)
            results.append({
                "videoUUID": result.video_uuid, "url": link.url,
                "expiresAt": _iso(link.expires_at), "seed": result.seed,
                "width": result.width, "height": result.height, "duration": result.duration,
                "contentType": result.content_type, "sizeBytes": result.size_bytes,
            })
        error = None
        if job.error:
            error = {k: job.error.get(k) for k in ("code", "message", "parameter")}
        status = job.status.value
        if job.cancel_requested and not job.status.is_terminal:
            status = "cancelling"
        return {
            "taskUUID": job.task_uuid, "id": job.id, "status": status,
            "progress": round(100 if job.status is JobStatus.SUCCEEDED else job.progress),
            "model": job.spec.model, "workflow": job.spec.workflow.value, "origin": job.origin,
            "prompt": job.spec.positive_prompt, "numberResults": len(job.spec.seeds),
            "createdAt": _iso(job.created_at), "updatedAt": _iso(job.updated_at),
            "results": results, "error": error, "cost": job.cost,
        }


def tasks_router(services: Services) -> APIRouter:
    """``/v1/tasks`` routes over ``services`` (mounted once by ``create_app``)."""
    router = APIRouter(tags=["Tasks (every dialect)"])
    service = TaskService(services)
    auth_mode = "keys" if services.settings.api_keys else "keyless"

    def answer(body: dict[str, Any]) -> JSONResponse:
        return JSONResponse(body, headers={AUTH_HEADER: auth_mode})

    @router.get("/v1/tasks", summary="List this key's tasks (every dialect), newest first")
    async def list_tasks(
        request: Request,
        status: list[str] = Query(default=[], description="filter: queued, running, "  # noqa: B008
                                  "succeeded, failed, cancelled (comma-separated or repeated)"),
        limit: int = Query(default=20, ge=1, le=MAX_LIMIT),
        cursor: str | None = Query(default=None, description="nextCursor of the previous page"),
    ) -> JSONResponse:
        owner = await run_in_threadpool(service.owner, request)
        statuses = parse_statuses(status)

        def page() -> dict[str, Any]:
            jobs, next_cursor = list_page(services.store, owner, statuses, cursor, limit)
            return {"data": [service.render(job) for job in jobs], "nextCursor": next_cursor}

        return answer(await run_in_threadpool(page))

    @router.get("/v1/tasks/{task_uuid}", summary="One task of this key")
    async def get_task(task_uuid: str, request: Request) -> JSONResponse:
        owner = await run_in_threadpool(service.owner, request)
        return answer(await run_in_threadpool(service.show, owner, task_uuid))

    @router.post("/v1/tasks/{task_uuid}/cancel", summary="Cancel a task of this key")
    async def cancel_task(task_uuid: str, request: Request) -> JSONResponse:
        owner = await run_in_threadpool(service.owner, request)
        return answer(await run_in_threadpool(
            lambda: service.render(service.cancel(owner, task_uuid))))

    return router


__all__ = ["AUTH_HEADER", "TaskService", "list_page", "parse_statuses", "tasks_router"]
