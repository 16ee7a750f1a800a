"""Kling's own API (PROTOCOLS.md §4): JWT auth, wire JSON -> TaskRequest, Job -> task object.

* Auth: ``Authorization: Bearer <JWT>``, HS256 signed with a secret key, ``iss`` = access key,
  ``exp`` required and ``nbf`` checked (:func:`verify_jwt`). Key pairs come from
  ``REELSERVE_KLING_KEYS`` (``ACCESS:SECRET,...``). A Kling access key owns its jobs as the owner
  :func:`reelserve.api.auth.owner_for_key` gives that string, so an access key that is also listed
  in ``REELSERVE_API_KEYS`` sees the same jobs in every dialect.
* ``model_name`` + ``mode`` pick the catalog model (:data:`MODELS`); the one validator decides
  everything else. ``duration`` is a string ("5" | "10"), as Kling sends it.
* Every answer is ``{code, message, request_id, data}``; :func:`error_envelope` is the one place a
  ReelserveError becomes a Kling code (1000-1004 auth, 1100-1103 account, 1200-1203 request,
  1300-1304 policy/rate, 5000-5002 server).
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from reelserve.api.fields import FieldTable
from reelserve.errors import (
    CANCELLED_CODE,
    AuthError,
    ErrorKind,
    InFlightLimitError,
    ReelserveError,
    ValidationError,
)
from reelserve.tasks import FrameImageInput, Job, JobStatus, Result, TaskRequest

ORIGIN = "kling"
KINDS = ("text2video", "image2video")

DEFAULT_MODEL = "kling-v1"
DEFAULT_MODE = "std"
MODES = ("std", "pro")

MODELS: dict[str, dict[str, str]] = {
    "kling-v1": {"std": "klingai:1@1", "pro": "klingai:1@2"},
    "kling-v1-5": {"std": "klingai:2@1", "pro": "klingai:2@2"},
    "kling-v1-6": {"std": "klingai:3@1", "pro": "klingai:3@2"},
    "kling-v2-master": {"std": "klingai:4@3", "pro": "klingai:4@3"},
    "kling-v2-1": {"std": "klingai:5@1", "pro": "klingai:5@2"},
    "kling-v2-1-master": {"std": "klingai:5@3", "pro": "klingai:5@3"},
    "kling-v2-5-turbo": {"std": "klingai:6@0", "pro": "klingai:6@1"},
}
"""``model_name`` -> ``mode`` -> AIR id. Master models have one tier, whatever the mode."""

ASPECT_RATIOS = ("16:9", "9:16", "1:1")

# Task statuses
SUBMITTED = "submitted"
PROCESSING = "processing"
SUCCEED = "succeed"
FAILED = "failed"

_EXTERNAL_NS = uuid.UUID("6f1c7d0e-4b8a-4d55-9a59-2c1e3f0b7a11")

# ================================================================================================
# Auth
# ================================================================================================


def parse_key_pairs(pairs: list[str]) -> dict[str, str]:
    """``["ak:sk", ...]`` -> ``{ak: sk}``; a malformed pair is a configuration error."""
    keys: dict[str, str] = {}
    for pair in pairs:
        access, sep, secret = pair.partition(":")
        if not sep or not access.strip() or not secret.strip():
            raise ValidationError(
                "invalidKlingKeys",
                f"REELSERVE_KLING_KEYS entry {access.strip()[:6] + '...'!r} is not ACCESS:SECRET",
                parameter="kling_keys",
            )
        keys[access.strip()] = secret.strip()
    return keys


def _auth(code: str, message: str) -> AuthError:
    return AuthError(code, message, parameter="Authorization")


def verify_jwt(authorization: str | None, keys: Mapping[str, str], *, leeway: float = 5.0) -> str:
    """Check a Kling bearer JWT; returns the access key (``iss``).

    Raises AuthError with a code that :func:`error_envelope` maps to 1001 (empty), 1002 (invalid:
    bad signature, unknown ``iss``, malformed), 1003 (``nbf`` in the future) or 1004 (expired).
    """
    import jwt

    if not authorization or not authorization.strip():
        raise _auth("missingAuthorization", "Authorization is empty; send 'Authorization: "
                    "Bearer <JWT>' signed HS256 with your secret key, iss = access key")
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip() if scheme.lower() == "bearer" else authorization.strip()
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise _auth("invalidAuthorization", "Authorization is not a valid JWT") from None
    if header.get("alg") != "HS256":
        raise _auth("invalidAuthorization",
                    f"Authorization JWT alg is {header.get('alg')!r}; allowed: HS256")
    issuer = claims.get("iss")
    secret = keys.get(issuer) if isinstance(issuer, str) else None
    if secret is None or not isinstance(issuer, str):
        raise _auth("invalidAuthorization", "Authorization JWT iss is not a known access key")
    try:
        jwt.decode(token, secret, algorithms=["HS256"], leeway=leeway,
                   options={"require": ["iss", "exp"]})
    except jwt.ExpiredSignatureError:
        raise _auth("authorizationExpired", "Authorization JWT has expired (exp is in the "
                    "past); sign a new token") from None
    except jwt.ImmatureSignatureError:
        raise _auth("authorizationNotYetValid", "Authorization JWT is not yet valid (nbf is "
                    "in the future)") from None
    except jwt.MissingRequiredClaimError as exc:
        raise _auth("invalidAuthorization",
                    f"Authorization JWT lacks the claim {exc.claim!r}; required: iss, exp") from None
    except jwt.PyJWTError:
        raise _auth("invalidAuthorization", "Authorization JWT signature does not match the "
                    "secret key of its access key") from None
    return issuer


# ================================================================================================
# Parsing
# ================================================================================================


def external_task_uuid(external_task_id: str) -> str:
    """The job ``task_uuid`` for a client's ``external_task_id``.

    A name-based UUID keeps the store's per-owner uniqueness of task UUIDs doing the work: a
    second task with the same external id conflicts, and lookup is ``get_by_task``.
    """
    return str(uuid.uuid5(_EXTERNAL_NS, f"kling-external:{external_task_id}"))


def new_task_id() -> str:
    """A Kling task id (also the job id)."""
    return str(uuid.uuid4())


def _str(body: Mapping[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValidationError("invalidParameter", f"{key} must be a string, got "
                              f"{type(value).__name__} {value!r:.60}", parameter=key)
    return value.strip() or None


def _sound(body: Mapping[str, Any]) -> bool | None:
    """Kling's ``sound``: ``"on"`` (generate audio with the video) or ``"off"`` (the default)."""
    value = _str(body, "sound")
    if value is None:
        return None
    if value.lower() not in ("on", "off"):
        raise ValidationError("invalidSound", f"sound must be 'on' or 'off', got {value!r:.60}",
                              parameter="sound", allowed_values=["on", "off"])
    return value.lower() == "on"


def _float(body: Mapping[str, Any], key: str) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValidationError("invalidParameter", f"{key} must be a number, got {value!r:.60}",
                              parameter=key)
    try:
        number = float(value)
    except ValueError:
        raise ValidationError("invalidParameter", f"{key} must be a number, got {value!r:.60}",
                              parameter=key) from None
    if not math.isfinite(number):
        raise ValidationError("invalidParameter", f"{key} must be finite, got {value!r}",
                              parameter=key)
    return number


_COMMON = ("model_name", "model", "mode", "prompt", "negative_prompt", "cfg_scale", "duration",
           "aspect_ratio", "camera_control", "sound", "callback_url", "external_task_id")
FIELDS = {
    "text2video": _COMMON,
    "image2video": (*_COMMON, "image", "image_tail"),
}


def air_for(model_name: str | None, mode: str | None) -> str:
    """``model_name`` + ``mode`` -> AIR id, refusing unknown values with the allowed ones."""
    name = model_name or DEFAULT_MODEL
    tiers = MODELS.get(name)
    if tiers is None:
        raise ValidationError("invalidModelName", f"model_name {name!r} is not known; allowed: "
                              + ", ".join(MODELS), parameter="model_name",
                              allowed_values=list(MODELS))
    chosen = mode or DEFAULT_MODE
    if chosen not in MODES:
        raise ValidationError("invalidMode", f"mode {chosen!r} is not known; allowed: std, pro",
                              parameter="mode", allowed_values=list(MODES))
    return tiers[chosen]


def to_request(kind: str, body: Mapping[str, Any], *, task_uuid: str) -> TaskRequest:
    """Map a text2video/image2video JSON body onto a TaskRequest (types and shape only)."""
    if kind not in KINDS:
        raise ValidationError("invalidParameter", f"kind {kind!r}; allowed: " + ", ".join(KINDS),
                              parameter="kind", allowed_values=list(KINDS))
    unknown = [k for k, v in body.items() if k not in FIELDS[kind] and v not in (None, "")]
    air = air_for(_str(body, "model_name") or _str(body, "model"), _str(body, "mode"))

    duration_text = body.get("duration")
    duration: float | None = None
    if duration_text is not None:
        duration = _float(body, "duration")

    width = height = None
    aspect = _str(body, "aspect_ratio")
    if aspect is not None:
        if aspect not in ASPECT_RATIOS:
            raise ValidationError("invalidAspectRatio", f"aspect_ratio {aspect!r}; allowed: "
                                  + ", ".join(ASPECT_RATIOS), parameter="aspect_ratio",
                                  allowed_values=list(ASPECT_RATIOS))
        from reelserve.api.m2v.schema import size_for_aspect

        size = size_for_aspect(air, aspect)
        # Models that infer the size from the image (kling-v2-5-turbo std) ignore aspect_ratio,
        # as Kling's image2video does.
        if size is not None:
            width, height = size

    camera = body.get("camera_control")
    if camera is not None and not isinstance(camera, dict):
        raise ValidationError("invalidCameraControl", "camera_control must be an object "
                              "{type, config}", parameter="camera_control")
    if isinstance(camera, dict):
        camera = {k: v for k, v in camera.items() if v is not None}
        if isinstance(camera.get("config"), dict):
            camera["config"] = {k: v for k, v in camera["config"].items() if v not in (None, 0)}
        if camera.get("type") != "simple" and not camera.get("config"):
            camera.pop("config", None)

    frames: list[FrameImageInput] = []
    if kind == "image2video":
        image = _str(body, "image")
        tail = _str(body, "image_tail")
        if image is None:
            raise ValidationError("missingImage", "image is required for image2video (a URL or "
                                  "raw base64 of a JPG/PNG)", parameter="image")
        frames.append(FrameImageInput(image=image, frame="first"))
        if tail is not None:
            frames.append(FrameImageInput(image=tail, frame="last"))

    return TaskRequest(
        task_uuid=task_uuid,
        model=air,
        positive_prompt=_str(body, "prompt"),
        negative_prompt=_str(body, "negative_prompt"),
        cfg_scale=_float(body, "cfg_scale"),
        duration=duration,
        width=width,
        height=height,
        frame_images=frames,
        camera_control=camera,
        sound=_sound(body),
        unsupported=unknown,
    )


def origin_data(kind: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """What the job keeps to render itself back: kind, external id, callback, model name."""
    return {
        "kind": kind,
        "external_task_id": _str(body, "external_task_id"),
        "callback_url": _str(body, "callback_url"),
        "model_name": _str(body, "model_name") or _str(body, "model") or DEFAULT_MODEL,
        "mode": _str(body, "mode") or DEFAULT_MODE,
    }


# ================================================================================================
# Errors (the one mapping of ReelserveError onto this dialect)
# ================================================================================================

_AUTH_CODES = {
    "missingAuthorization": 1001,
    "invalidAuthorization": 1002,
    "authorizationNotYetValid": 1003,
    "authorizationExpired": 1004,
}
_KIND_CODES: dict[ErrorKind, tuple[int, int]] = {
    ErrorKind.INVALID: (1201, 400),
    ErrorKind.AUTH: (1000, 401),
    ErrorKind.FORBIDDEN: (1103, 403),
    ErrorKind.NOT_FOUND: (1203, 404),
    ErrorKind.CONFLICT: (1201, 400),
    ErrorKind.TOO_LARGE: (1201, 400),
    ErrorKind.RATE_LIMIT: (1302, 429),
    ErrorKind.UNAVAILABLE: (5001, 503),
    ErrorKind.TIMEOUT: (5002, 504),
    ErrorKind.INTERNAL: (5000, 500),
    ErrorKind.STORAGE_FULL: (5000, 507),  # Kling has no code of its own for a full disk
}

CANCELLED = {"code": CANCELLED_CODE, "message": "the task was cancelled"}
"""The error of a job cancelled before any error was stored."""

FIELD_NAMES = FieldTable({
    "provider.camera_control": "camera_control",
    "provider.sound": "sound",
    "frame_images": "image",
    "prompt": "prompt",
    "negative_prompt": "negative_prompt",
    "cfg_scale": "cfg_scale",
    "model": "model_name",
    "width": "aspect_ratio",
    "height": "aspect_ratio",
}, keep_suffix=True)
"""Neutral field keys -> Kling field names (``provider.camera_control.config.zoom`` reads
``camera_control.config.zoom``)."""


def kling_code(exc: ReelserveError) -> tuple[int, int]:
    """``(kling code, HTTP status)`` for an error.

    Per-key limits follow Kling's split: 1302 "requests too fast" for the submits-per-minute
    limit, 1303 "parallel tasks over the limit" for the in-flight limit.
    """
    if exc.code in _AUTH_CODES:
        return _AUTH_CODES[exc.code], 401
    if isinstance(exc, InFlightLimitError):
        return 1303, 429
    if exc.code == "modelNotFound":
        return 1203, 404
    if exc.code == "payloadTooLarge":  # the HTTP body cap of every route (api/guards.py)
        return 1201, 413
    return _KIND_CODES.get(exc.kind, (5000, 500))


def error_envelope(exc: ReelserveError) -> tuple[int, dict[str, Any]]:
    """HTTP status and the Kling envelope of a refusal (already in Kling field names)."""
    code, status = kling_code(exc)
    return status, {"code": code, "message": exc.message, "request_id": str(uuid.uuid4()),
                    "data": None}


def envelope(data: Any, request_id: str) -> dict[str, Any]:
    """The Kling success envelope."""
    return {"code": 0, "message": "SUCCEED", "request_id": request_id, "data": data}


# ================================================================================================
# Rendering
# ================================================================================================


@dataclass(frozen=True)
class Links:
    """Signed URL of an output video."""

    video: Callable[[Result], str]


def task_status(job: Job) -> str:
    """Kling status of a job: submitted, processing, succeed, failed (cancelled reads failed)."""
    return {
        JobStatus.QUEUED: SUBMITTED,
        JobStatus.RUNNING: PROCESSING,
        JobStatus.SUCCEEDED: SUCCEED,
    }.get(job.status, FAILED)


def render_task(job: Job, links: Links) -> dict[str, Any]:
    """The task object (query answers, list items and callback bodies)."""
    status = task_status(job)
    data: dict[str, Any] = {
        "task_id": job.id,
        "task_status": status,
        "task_status_msg": "",
        "created_at": round(job.created_at * 1000),
        "updated_at": round(job.updated_at * 1000),
        "task_info": {},
    }
    external = (job.origin_data.get("external_task_id")
                if job.origin.startswith(ORIGIN + ".") else None)
    if external:
        data["task_info"]["external_task_id"] = external
    if status == FAILED:
        error = ReelserveError.from_dict(job.error or CANCELLED)
        data["task_status_msg"] = FIELD_NAMES.render(error).message
    if job.status is JobStatus.SUCCEEDED:
        data["task_result"] = {
            "videos": [
                {"id": r.video_uuid, "url": links.video(r), "duration": f"{r.duration:g}"}
                for r in job.results
            ]
        }
    return data


def render_task_at(job: Job, status: JobStatus, at: float, links: Links) -> dict[str, Any]:
    """The task object as it was when ``job`` entered ``status`` at ``at`` (a callback body).

    The outbox may send a status change after the job moved on (a "processing" callback retried
    once the task already succeeded), so the body shows the status of that change and its time,
    never a later state: ``task_result`` appears only in the ``succeed`` callback and
    ``task_status_msg`` only in the ``failed`` one. Terminal statuses are final, so those two
    callbacks carry the job as it is.
    """
    return render_task(job.model_copy(update={"status": status, "updated_at": at}), links)


def render_submitted(job: Job) -> dict[str, Any]:
    """The ``data`` of a create answer (no result yet)."""
    data = {
        "task_id": job.id,
        "task_status": task_status(job),
        "task_info": {},
        "created_at": round(job.created_at * 1000),
        "updated_at": round(job.updated_at * 1000),
    }
    external = job.origin_data.get("external_task_id")
    if external:
        data["task_info"] = {"external_task_id": external}
    return data
