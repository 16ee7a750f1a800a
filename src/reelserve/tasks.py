"""Wire-neutral task types: what every dialect parses into and what every layer below works on.

Data flow: a dialect parses its wire JSON into a :class:`TaskRequest`; the one validator
(:func:`reelserve.catalog.validate.validate`) turns it into a :class:`GenerationSpec`; the job store
keeps a :class:`Job` whose :class:`Result` items the dialect renders back in its own shape.
"""

from __future__ import annotations

import enum
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Workflow(enum.StrEnum):
    """What a generation starts from."""

    T2V = "t2v"  # prompt only
    I2V = "i2v"  # first frame
    FLF2V = "flf2v"  # first and last frame
    R2V = "r2v"  # reference images and/or reference videos
    V2V = "v2v"  # edit an input video


class FramePosition(enum.StrEnum):
    """Where a frame image is pinned in the clip."""

    FIRST = "first"
    LAST = "last"


class OutputType(enum.StrEnum):
    """How a finished video is handed back (Runware ``outputType``)."""

    URL = "URL"
    BASE64 = "base64Data"
    DATA_URI = "dataURI"


class OutputFormat(enum.StrEnum):
    """Container/codec of the output (Runware ``outputFormat``)."""

    MP4 = "MP4"  # H.264 in MP4
    WEBM = "WEBM"  # VP9 (+ Opus) in WebM
    MOV = "MOV"  # H.264 (or ProRes when configured) in QuickTime


class DeliveryMethod(enum.StrEnum):
    """Runware ``deliveryMethod``."""

    SYNC = "sync"
    ASYNC = "async"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# --------------------------------------------------------------------------------------------
# Request side (before validation)
# --------------------------------------------------------------------------------------------


class FrameImageInput(_Frozen):
    """A frame image as the client sent it, already in the current shape.

    ``frame`` is the raw position value (``"first"``, ``"last"``, ``0``, ``-1``) or ``None`` when
    omitted; the validator interprets it.
    """

    image: str
    frame: str | int | None = None


class TaskRequest(_Frozen):
    """A ``videoInference`` request in wire-neutral form, not yet checked against the catalog.

    Dialects fill the fields they have; everything else stays ``None``/empty and the validator
    applies the catalog defaults. ``unsupported`` lists the dotted paths of parameters the dialect
    did not recognise, so the one validator can refuse them with ``unsupportedParameter``.
    """

    task_uuid: str
    model: str | None = None
    positive_prompt: str | None = None
    negative_prompt: str | None = None
    width: int | None = None
    height: int | None = None
    duration: float | None = None
    fps: int | None = None
    cfg_scale: float | None = None
    seed: int | None = None
    number_results: int | None = None
    frame_images: list[FrameImageInput] = Field(default_factory=list)
    reference_images: list[str] = Field(default_factory=list)
    reference_videos: list[str] = Field(default_factory=list)
    video: str | None = None
    sound: bool | None = None
    keep_original_sound: bool | None = None
    camera_control: dict[str, Any] | None = None
    output_type: str | None = None
    output_format: str | None = None
    output_quality: int | None = None
    ttl: int | None = None
    delivery_method: str | None = None
    webhook_url: str | None = None
    upload_endpoint: str | None = None
    include_cost: bool = False
    safety_check_content: bool | None = None
    safety_mode: str | None = None
    unsupported: list[str] = Field(default_factory=list)


# --------------------------------------------------------------------------------------------
# Normalized spec (after validation)
# --------------------------------------------------------------------------------------------


class FrameImage(_Frozen):
    """A frame image pinned to a position."""

    image: str
    position: FramePosition


class CameraControl(_Frozen):
    """Normalized Kling camera control.

    ``type`` is ``simple`` or a preset (``down_back``, ``forward_up``, ``right_turn_forward``,
    ``left_turn_forward``). For ``simple``, ``config`` holds exactly one non-zero axis among
    horizontal, vertical, pan, tilt, roll, zoom with a value in -10..10; presets have no config.
    """

    type: str
    config: dict[str, float] = Field(default_factory=dict)


class Delivery(_Frozen):
    """How results leave the server."""

    method: DeliveryMethod = DeliveryMethod.ASYNC
    webhook_url: str | None = None
    upload_endpoint: str | None = None
    include_cost: bool = False
    status_url: str | None = None
    """POSTed on every status change (queued, running, terminal) through the delivery outbox;
    the dialect renders the body (Kling's ``callback_url``). Runware has no such field."""


class Safety(_Frozen):
    """Content safety options (validated; see docs for what runs)."""

    check_content: bool = False
    mode: str = "none"


class GenerationSpec(_Frozen):
    """A fully validated generation: everything an engine and the encoder need.

    ``width``/``height`` are ``None`` only while they still depend on an input (the first frame
    for ``klingai:6@0``, the input video for v2v); ``duration`` likewise for v2v. The worker fills
    them with :meth:`resolved` once the media is decoded.
    """

    task_uuid: str
    model: str
    workflow: Workflow
    width: int | None
    height: int | None
    fps: int
    duration: float | None
    positive_prompt: str | None = None
    negative_prompt: str | None = None
    cfg_scale: float = 0.5
    seeds: list[int]
    frame_images: list[FrameImage] = Field(default_factory=list)
    reference_images: list[str] = Field(default_factory=list)
    reference_videos: list[str] = Field(default_factory=list)
    input_video: str | None = None
    camera: CameraControl | None = None
    sound: bool = False
    keep_original_sound: bool = False
    output_type: OutputType = OutputType.URL
    output_format: OutputFormat = OutputFormat.MP4
    output_quality: int = 95
    ttl: int | None = None
    delivery: Delivery = Field(default_factory=Delivery)
    safety: Safety = Field(default_factory=Safety)

    @property
    def number_results(self) -> int:
        """How many videos this task produces (one per seed)."""
        return len(self.seeds)

    @property
    def num_frames(self) -> int:
        """Exact frame count: duration x fps (requires a resolved duration)."""
        if self.duration is None:
            raise ValueError("duration is not resolved yet")
        return max(1, round(self.duration * self.fps))

    @property
    def is_resolved(self) -> bool:
        """True when size and duration no longer depend on inputs."""
        return self.width is not None and self.height is not None and self.duration is not None

    def first_frame(self) -> str | None:
        """The image pinned to the first frame, if any."""
        return next((f.image for f in self.frame_images if f.position is FramePosition.FIRST), None)

    def last_frame(self) -> str | None:
        """The image pinned to the last frame, if any."""
        return next((f.image for f in self.frame_images if f.position is FramePosition.LAST), None)

    def resolved(
        self, *, width: int | None = None, height: int | None = None, duration: float | None = None
    ) -> GenerationSpec:
        """A copy with size/duration filled in from the decoded inputs."""
        update: dict[str, Any] = {}
        if width is not None:
            update["width"] = width
        if height is not None:
            update["height"] = height
        if duration is not None:
            update["duration"] = duration
        return self.model_copy(update=update)


# --------------------------------------------------------------------------------------------
# Jobs
# --------------------------------------------------------------------------------------------


class JobStatus(enum.StrEnum):
    """Lifecycle of a job; terminal states never change again."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        """Whether the job is finished for good."""
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


class Result(BaseModel):
    """One generated video of a job (a job has ``numberResults`` of them)."""

    model_config = ConfigDict(extra="forbid")

    index: int
    video_uuid: str
    seed: int
    artifact_key: str
    content_type: str
    size_bytes: int
    width: int
    height: int
    fps: float
    num_frames: int
    duration: float
    has_audio: bool = False
    cost: float | None = None
    nsfw: bool | None = None  # set when a content check ran (Runware ``NSFWContent``)
    safety_seconds: float | None = None  # time the content check took (reelserve.safety)
    safety_frames: int | None = None  # images/frames the content check classified
    render_seconds: float | None = None  # engine time of this result (metrics: render histogram)
    encode_seconds: float | None = None  # encoder time of this result (lazy engines render in it)


class Job(BaseModel):
    """The durable envelope of one accepted task.

    ``owner`` identifies the API key that created it (jobs are never visible to other keys);
    ``origin`` names the dialect and ``origin_data`` holds whatever that dialect needs to render
    the job back (opaque to everything below ``api/``).
    """

    model_config = ConfigDict(extra="forbid")

    id: str
    task_uuid: str
    owner: str
    origin: str = "runware"
    origin_data: dict[str, Any] = Field(default_factory=dict)
    request: dict[str, Any] = Field(default_factory=dict)
    spec: GenerationSpec
    status: JobStatus = JobStatus.QUEUED
    progress: float = 0.0  # percent done, 0-100 (what every dialect shows)
    attempts: int = 0
    cancel_requested: bool = False
    error: dict[str, Any] | None = None
    results: list[Result] = Field(default_factory=list)
    cost: float | None = None
    created_at: float = Field(default_factory=time.time)
    updated_at: float = Field(default_factory=time.time)
