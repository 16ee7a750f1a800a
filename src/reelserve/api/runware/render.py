"""Runware rendering: jobs, results and errors back into wire items (one place for all of it).

Used by every Runware transport (REST now, WebSocket later) through
:mod:`reelserve.api.runware.handlers`.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

from reelserve.errors import CANCELLED_CODE, ReelserveError
from reelserve.tasks import Job, JobStatus, OutputType, Result

if TYPE_CHECKING:
    from reelserve.api.serving import Serving
    from reelserve.jobs.store import DeliveryRecord

ORIGIN = "runware"
VIDEO_TASK = "videoInference"
CANCELLED = {"code": CANCELLED_CODE, "message": "the task was cancelled"}
"""The error of a job cancelled before any error was stored."""


def error_item(
    error: ReelserveError | dict[str, Any], *, task_type: str | None, task_uuid: str | None
) -> dict[str, Any]:
    """A Runware error object scoped to its task (``taskUUID`` and ``taskType`` always set)."""
    fields = error.to_dict() if isinstance(error, ReelserveError) else {
        k: v for k, v in error.items() if k != "kind"
    }
    return {**fields, "taskType": task_type, "taskUUID": task_uuid}


def ack_item(task_uuid: str) -> dict[str, Any]:
    """The async ACK: taskType and taskUUID and nothing else."""
    return {"taskType": VIDEO_TASK, "taskUUID": task_uuid}


def processing_item(job: Job) -> dict[str, Any]:
    """A getResponse item for a job still running."""
    return {"taskType": VIDEO_TASK, "taskUUID": job.task_uuid, "status": "processing",
            "progress": int(max(0, min(100, job.progress)))}


def result_item(
    job: Job, result: Result, serving: Serving, *, with_status: bool = True
) -> dict[str, Any]:
    """One success item. Reads the file for base64/dataURI output: call from a thread."""
    spec = job.spec
    item: dict[str, Any] = {"taskType": VIDEO_TASK, "taskUUID": job.task_uuid}
    if with_status:
        item["status"] = "success"
    item["videoUUID"] = result.video_uuid
    if spec.output_type is OutputType.URL:
        item["videoURL"] = serving.result_url(job, result)
    else:
        data = base64.b64encode(
            serving.services.artifacts.read_bytes(result.artifact_key)).decode()
        if spec.output_type is OutputType.BASE64:
            item["videoBase64Data"] = data
        else:
            item["videoDataURI"] = f"data:{result.content_type};base64,{data}"
    item["seed"] = result.seed
    if spec.delivery.include_cost and result.cost is not None:
        item["cost"] = result.cost
    if result.nsfw is not None:  # only when a content check actually ran
        item["NSFWContent"] = result.nsfw
    return item


def webhook_payload(job: Job, result: Result | None, serving: Serving) -> dict[str, Any]:
    """The webhook body: ``{"data":[item]}`` for one finished result, or for the job's failure
    (``result`` None) an error item with ``status: "error"``. Reads files: call from a thread."""
    if result is not None:
        return {"data": [result_item(job, result, serving)]}
    error = job.error or CANCELLED
    item = error_item(error, task_type=VIDEO_TASK, task_uuid=job.task_uuid)
    return {"data": [{**item, "status": "error"}]}


def job_errors(job: Job) -> list[dict[str, Any]]:
    """The job's error as a Runware error list (empty unless it failed or was cancelled)."""
    if job.status in (JobStatus.FAILED, JobStatus.CANCELLED):
        error = job.error or CANCELLED
        return [error_item(error, task_type=VIDEO_TASK, task_uuid=job.task_uuid)]
    return []


def job_response(job: Job, serving: Serving) -> dict[str, Any]:
    """The whole response of a job (every result, delivered or not): for getTaskDetails.

    A result whose content was checked also tells the check's cost (``safetySeconds``): task
    details only, a getResponse item stays the wire's own shape."""
    if not job.status.is_terminal:
        return {"data": [processing_item(job)]}
    out: dict[str, Any] = {"data": [_detailed(result_item(job, r, serving), r)
                                    for r in job.results]}
    errors = job_errors(job)
    if errors:
        out["errors"] = errors
    return out


def _detailed(item: dict[str, Any], result: Result) -> dict[str, Any]:
    if result.safety_seconds is not None:
        item["safetySeconds"] = result.safety_seconds
    return item


_DELIVERY_TYPES = {"webhook": "webhookURL", "upload": "uploadEndpoint", "status": "statusCallback"}
_DELIVERY_KEYS = {"result_index": "resultIndex", "next_attempt_at": "nextAttemptAt",
                  "last_status": "lastStatus", "last_error": "lastError"}


def delivery_item(record: dict[str, Any]) -> dict[str, Any]:
    """A neutral delivery record (:func:`reelserve.delivery.dispatcher.describe`) in Runware's
    ``getTaskDetails`` spelling: ``type`` names the task field (``webhookURL``), keys camelCase."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        if key == "type":
            value = _DELIVERY_TYPES.get(value, value)
        out[_DELIVERY_KEYS.get(key, key)] = value
    return out


def describe_deliveries(records: list[DeliveryRecord]) -> list[dict[str, Any]]:
    """A job's deliveries as ``getTaskDetails`` shows them (neutral records, Runware spelling)."""
    from reelserve.delivery.dispatcher import describe

    return [delivery_item(d) for d in describe(records)]
