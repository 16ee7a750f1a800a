"""What a task's content check looks at, and what a flag does to the task.

One :class:`ContentGuard` serves one job attempt in the worker:

* :meth:`ContentGuard.check_inputs` classifies the input images and frames of the input videos
  before the engine is even chosen, so a flagged input fails the task before any GPU time is
  spent (:class:`~reelserve.errors.ContentPolicyError`, whatever ``safety_on_flag`` says).
* :meth:`ContentGuard.watch` taps an output clip's frame stream on its way into the encoder:
  the chosen frames are classified in batches while the encoder works, so the check needs no
  second decode and never holds the clip in memory. :meth:`FrameWatch.finish` then says whether
  the result is flagged and whether it is withheld.

Modes: ``fast`` looks at key frames (first, middle, last and one frame per second), ``full`` at
every frame. The time spent (classifying, and decoding input videos) is measured so the worker
can record it on the results.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from reelserve.errors import CONTENT_POLICY_CODE, ContentPolicyError
from reelserve.safety.base import SafetyChecker, Verdict

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

    from reelserve.media.clip import Clip, ResolvedInputs, VideoInput

__all__ = ["ContentGuard", "FrameWatch", "Outcome", "key_frame_indices"]

Mode = Literal["fast", "full"]
OnFlag = Literal["withhold", "deliver"]


def key_frame_indices(num_frames: int, fps: float) -> list[int]:
    """The frames ``fast`` mode checks: first, middle, last and one per second (sorted, unique)."""
    if num_frames < 1:
        return []
    step = max(1, round(fps))
    picked = set(range(0, num_frames, step)) | {0, num_frames // 2, num_frames - 1}
    return sorted(picked)


@dataclass
class _Tally:
    """Running totals of one check (inputs, or one output)."""

    frames: int = 0
    seconds: float = 0.0
    worst: Verdict | None = None  # the flagged verdict with the highest score, if any

    def add(self, verdicts: Sequence[Verdict], seconds: float) -> None:
        self.frames += len(verdicts)
        self.seconds += seconds
        for verdict in verdicts:
            if verdict.flagged and (self.worst is None or verdict.score > self.worst.score):
                self.worst = verdict


@dataclass(frozen=True)
class Outcome:
    """The check of one output.

    Attributes:
        flagged: whether any checked frame was flagged (the result's ``NSFWContent``).
        frames: how many frames were classified.
        seconds: time spent checking this output.

        The first output of an attempt also counts the input check's frames and time, so the
        results' numbers add up to the job's.
        error: set when the output is withheld: the task must fail with it.
    """

    flagged: bool
    frames: int
    seconds: float
    error: ContentPolicyError | None = None


def _describe(verdict: Verdict) -> str:
    return f"{verdict.label} scored {verdict.score:.2f}"


class ContentGuard:
    """The content check of one job attempt.

    Args:
        checker: the classifier.
        mode: ``fast`` (key frames) or ``full`` (every frame).
        on_flag: ``withhold`` (a flagged output fails the task) or ``deliver`` (it is delivered
            with ``NSFWContent: true``).
        threshold: the checker's threshold, quoted in error messages.
        batch_size: frames classified together.
        cancelled: polled between batches of input frames.
    """

    def __init__(
        self,
        checker: SafetyChecker,
        *,
        mode: Mode,
        on_flag: OnFlag = "withhold",
        threshold: float = 0.5,
        batch_size: int = 16,
        cancelled: Callable[[], bool] | None = None,
    ) -> None:
        self.checker = checker
        self.mode = mode
        self.on_flag = on_flag
        self.threshold = threshold
        self.batch_size = max(1, batch_size)
        self._cancelled = cancelled or (lambda: False)
        self._unreported = _Tally()  # the input check, not yet put on a result

    # ----------------------------------------------------------------------------- inputs

    def check_inputs(self, inputs: ResolvedInputs) -> float:
        """Classify every input image and the chosen frames of every input video.

        Returns the seconds it took. Raises :class:`ContentPolicyError` naming the first flagged
        input (by its Runware parameter path).
        """
        start = time.perf_counter()
        images: list[tuple[str, Image.Image]] = []
        if inputs.first_frame is not None:
            images.append(("inputs.frameImages", inputs.first_frame))
        if inputs.last_frame is not None:
            images.append(("inputs.frameImages", inputs.last_frame))
        images += [("inputs.referenceImages", image) for image in inputs.reference_images]
        for start_at in range(0, len(images), self.batch_size):
            batch = images[start_at : start_at + self.batch_size]
            verdicts = self.checker.check([image.convert("RGB") for _, image in batch])
            self._unreported.frames += len(verdicts)
            for (parameter, _), verdict in zip(batch, verdicts, strict=True):
                if verdict.flagged:
                    self._input_flagged(parameter, "an input image", verdict)
        videos: list[tuple[str, VideoInput]] = []
        if inputs.input_video is not None:
            videos.append(("inputs.video", inputs.input_video))
        videos += [("inputs.referenceVideos", video) for video in inputs.reference_videos]
        for parameter, video in videos:
            if self._cancelled():
                break
            for verdict in self._video_verdicts(video):
                self._unreported.frames += 1
                if verdict.flagged:
                    self._input_flagged(parameter, "a frame of an input video", verdict)
        seconds = time.perf_counter() - start
        self._unreported.seconds += seconds
        return seconds

    def _video_verdicts(self, video: VideoInput) -> Iterator[Verdict]:
        """Verdicts for the chosen frames of ``video``, batch by batch (decoded as it goes)."""
        from reelserve.media.frames import decode_video

        keep = (None if self.mode == "full"
                else set(key_frame_indices(video.num_frames, video.fps)))
        batch: list[Image.Image] = []
        with contextlib.closing(decode_video(video.path)) as frames:
            for index, frame in enumerate(frames):
                if keep is not None and index not in keep:
                    continue
                batch.append(frame.to_image().convert("RGB"))
                if len(batch) >= self.batch_size:
                    yield from self.checker.check(batch)
                    batch = []
                    if self._cancelled():
                        return
        if batch:
            yield from self.checker.check(batch)

    def _input_flagged(self, parameter: str, what: str, verdict: Verdict) -> None:
        raise ContentPolicyError(
            CONTENT_POLICY_CODE,
            f"{what} ({parameter}) was flagged by this server's content check "
            f"({_describe(verdict)}, threshold {self.threshold:g}); the task was not rendered",
            parameter=parameter,
        )

    # ----------------------------------------------------------------------------- outputs

    def watch(self, clip: Clip, index: int = 0) -> FrameWatch:
        """A tap on ``clip``'s frames; encode ``watch.clip`` instead of ``clip``."""
        return FrameWatch(self, clip, index)

    def _take_unreported(self) -> _Tally:
        tally, self._unreported = self._unreported, _Tally()
        return tally


class FrameWatch:
    """Classifies the chosen frames of one output clip as the encoder pulls them.

    The frames are classified on whichever thread pulls them (the encoder's feeder thread), in
    batches, so classification overlaps with encoding.
    """

    def __init__(self, guard: ContentGuard, clip: Clip, index: int) -> None:
        self._guard = guard
        self._index = index
        self._keep = (None if guard.mode == "full"
                      else set(key_frame_indices(clip.num_frames, clip.fps)))
        self._pending: list[Image.Image] = []
        self._tally = _Tally()
        self.clip: Clip = dataclasses.replace(clip, frames=self._tap(clip.frames))
        """The clip to encode: same frames, tapped."""

    def _tap(self, frames: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        from PIL import Image

        for i, frame in enumerate(frames):
            if self._keep is None or i in self._keep:
                start = time.perf_counter()
                # A copy: engines may reuse their frame buffer for the next frame.
                self._pending.append(Image.fromarray(frame.copy()))
                self._tally.seconds += time.perf_counter() - start
                if len(self._pending) >= self._guard.batch_size:
                    self._flush()
            yield frame

    def _flush(self) -> None:
        if not self._pending:
            return
        start = time.perf_counter()
        verdicts = self._guard.checker.check(self._pending)
        self._pending = []
        self._tally.add(verdicts, time.perf_counter() - start)

    def finish(self) -> Outcome:
        """Classify what is left and say what the result is (call after encoding)."""
        self._flush()
        tally = self._tally
        inputs = self._guard._take_unreported()
        error = None
        if tally.worst is not None and self._guard.on_flag == "withhold":
            error = ContentPolicyError(
                CONTENT_POLICY_CODE,
                f"result {self._index} was flagged by this server's content check "
                f"({_describe(tally.worst)}, threshold {self._guard.threshold:g}) and withheld",
            )
        return Outcome(flagged=tally.worst is not None, frames=tally.frames + inputs.frames,
                       seconds=round(tally.seconds + inputs.seconds, 4), error=error)
