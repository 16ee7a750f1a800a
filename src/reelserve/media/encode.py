"""The one encoder: a :class:`~reelserve.media.clip.Clip` in, a playable file out (PyAV).

Formats (Runware ``outputFormat``):

* ``MP4``: H.264 (libx264), yuv420p, ``+faststart`` so playback starts before the download ends;
  audio AAC.
* ``WEBM``: VP9 (libvpx-vp9, constant quality), yuv420p; audio Opus 48 kHz.
* ``MOV``: H.264 as for MP4 with AAC audio, or ProRes 422 HQ (prores_ks, yuv422p10le) with PCM
  audio when ``prores_mov`` is set (``REELSERVE_PRORES_MOV``).

``outputQuality`` (20-99) maps to a constant-rate factor through :func:`crf_for`, monotonically:
higher quality never means a higher CRF. Frame count and fps are exact: frame ``i`` gets
presentation time ``i / fps``. Audio comes from ``clip.generated_audio`` (samples a model made,
resampled) or ``clip.audio`` (an input file's sound, decoded), trimmed sample-exactly to the
clip's length and re-encoded for the container; without either the file has no audio track.

Frames are pulled from the clip's iterator in a helper thread (which also converts RGB to the
encoder's pixel format) while this thread encodes, so frame synthesis overlaps encoding and the
clip is never held in memory whole.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reelserve.errors import CANCELLED_CODE, CancelledError, EngineError
from reelserve.media.clip import AudioSource, CancelledFn, Clip, GeneratedAudio, ProgressFn
from reelserve.tasks import OutputFormat

if TYPE_CHECKING:
    import av as av_mod
    import numpy as np

__all__ = [
    "QUALITY_MAX",
    "QUALITY_MIN",
    "X264_PRESET",
    "content_type_for",
    "crf_for",
    "encode_clip",
    "extension_for",
]

QUALITY_MIN = 20
QUALITY_MAX = 99

# x264 preset: "veryfast" is the usual speed/quality knee on CPUs: about 2x faster than "medium"
# at a small bitrate cost, which at our CRFs is invisible. Anything faster ("superfast",
# "ultrafast") disables CABAC/partitions and bloats files noticeably.
X264_PRESET = "veryfast"
# libvpx-vp9: "good" deadline with cpu-used 5 and row multithreading; realtime mode ignores CRF.
VP9_CPU_USED = 5

# CRF range ends (quality 20 -> worst, 99 -> best), linear in between, rounded.
_X264_CRF = (38, 14)  # H.264 CRF 0-51; 18 is "visually lossless"
_VP9_CRF = (50, 18)  # VP9 CRF 0-63

_CONTENT_TYPES = {
    OutputFormat.MP4: "video/mp4",
    OutputFormat.WEBM: "video/webm",
    OutputFormat.MOV: "video/quicktime",
}
_EXTENSIONS = {OutputFormat.MP4: "mp4", OutputFormat.WEBM: "webm", OutputFormat.MOV: "mov"}


def content_type_for(fmt: OutputFormat) -> str:
    """MIME type of files of ``fmt`` (``video/mp4``, ``video/webm``, ``video/quicktime``)."""
    return _CONTENT_TYPES[OutputFormat(fmt)]


def extension_for(fmt: OutputFormat) -> str:
    """File extension (no dot) for ``fmt``."""
    return _EXTENSIONS[OutputFormat(fmt)]


def crf_for(fmt: OutputFormat, quality: int) -> int:
    """Constant-rate factor for ``outputQuality`` ``quality`` (20-99) in format ``fmt``.

    Linear from quality 20 to 99 (H.264: CRF 38 -> 14; VP9: 50 -> 18), rounded, so it is
    monotonically non-increasing in quality. ProRes has no CRF: it returns the H.264 value, which
    the ProRes path ignores (ProRes 422 HQ is a fixed-quality intermediate).
    """
    if not QUALITY_MIN <= quality <= QUALITY_MAX:
        raise EngineError(
            "invalidOutputQuality",
            f"outputQuality must be between {QUALITY_MIN} and {QUALITY_MAX}, got {quality}",
            parameter="outputQuality",
        )
    worst, best = _VP9_CRF if OutputFormat(fmt) is OutputFormat.WEBM else _X264_CRF
    t = (quality - QUALITY_MIN) / (QUALITY_MAX - QUALITY_MIN)
    return round(worst + (best - worst) * t)


@dataclass(frozen=True)
class _Plan:
    """Codec choices for one output file."""

    container_format: str
    container_options: dict[str, str]
    video_codec: str
    pix_fmt: str
    video_options: dict[str, str]
    audio_codec: str
    audio_format: str
    audio_rate: int
    audio_bitrate: int | None


def _plan(fmt: OutputFormat, quality: int, prores_mov: bool) -> _Plan:
    fmt = OutputFormat(fmt)
    crf = crf_for(fmt, quality)
    x264 = {"crf": str(crf), "preset": X264_PRESET, "profile": "high"}
    if fmt is OutputFormat.MP4:
        return _Plan(
            "mp4",
            {"movflags": "+faststart"},
            "libx264",
            "yuv420p",
            x264,
            "aac",
            "fltp",
            48000,
            192_000,
        )
    if fmt is OutputFormat.WEBM:
        vp9 = {
            "crf": str(crf),
            "b": "0",  # b:v 0 + crf = constant quality mode
            "deadline": "good",
            "cpu-used": str(VP9_CPU_USED),
            "row-mt": "1",
        }
        return _Plan("webm", {}, "libvpx-vp9", "yuv420p", vp9, "libopus", "flt", 48000, 128_000)
    if prores_mov:
        # profile 3 = 422 HQ; PCM audio is what editing tools expect beside ProRes.
        return _Plan(
            "mov",
            {"movflags": "+faststart"},
            "prores_ks",
            "yuv422p10le",
            {"profile": "3", "vendor": "apl0"},
            "pcm_s16le",
            "s16",
            48000,
            None,
        )
    return _Plan(
        "mov", {"movflags": "+faststart"}, "libx264", "yuv420p", x264, "aac", "fltp", 48000, 192_000
    )


# --------------------------------------------------------------------------------------------
# Audio: decode the source, trim to [start, start + duration), re-encode for the container
# --------------------------------------------------------------------------------------------


def _decode_source(source: AudioSource, duration: float, plan: _Plan) -> np.ndarray | None:
    """The audio of ``source`` from ``source.start`` for ``duration`` seconds, at the plan's rate
    and sample format, as a ``(channels, n)`` array; None when it has no audio (or none there)."""
    import av
    import numpy as np

    try:
        src = av.open(str(source.path), mode="r")
    except (av.error.FFmpegError, OSError) as exc:
        raise EngineError(
            "invalidAudioSource", f"cannot open audio source {source.path.name!r}: {exc}"
        ) from exc
    with src:
        if not src.streams.audio:
            return None
        in_stream = src.streams.audio[0]
        channels = min(2, max(1, in_stream.codec_context.channels or 1))
        layout = "stereo" if channels == 2 else "mono"
        rate = plan.audio_rate
        resampler = av.AudioResampler(format=plan.audio_format, layout=layout, rate=rate)
        skip = round(max(0.0, source.start) * rate)
        need = round(duration * rate)
        planar = av.AudioFormat(plan.audio_format).is_planar
        chunks: list[np.ndarray] = []
        have = 0  # samples kept so far
        seen = 0  # samples decoded so far (after resampling)

        def take(frames: list[Any]) -> None:
            nonlocal have, seen
            for fr in frames:
                arr = fr.to_ndarray()
                # planar: (channels, n); packed: (1, n * channels) -> (channels, n)
                arr = arr if planar else arr.reshape(-1, channels).T
                n = arr.shape[1]
                lo = max(0, skip - seen)
                hi = min(n, skip + need - seen)
                seen += n
                if hi > lo:
                    chunks.append(arr[:, lo:hi])
                    have += hi - lo

        try:
            for frame in src.decode(in_stream):
                frame.pts = None  # the resampler re-times; gaps in the source are not ours to fix
                take(resampler.resample(frame))
                if have >= need:
                    break
            else:
                take(resampler.resample(None))
        except av.error.FFmpegError as exc:
            raise EngineError(
                "invalidAudioSource", f"cannot decode audio of {source.path.name!r}: {exc}"
            ) from exc
    if have == 0:
        return None
    return np.concatenate(chunks, axis=1)[:, :need]


def _resample_generated(audio: GeneratedAudio, duration: float, plan: _Plan) -> np.ndarray:
    """Generated samples at the plan's rate and format, exactly ``duration`` seconds long.

    Resampled with libswresample (the same resampler as decoded sources). Models run a little
    long (LTX-2: 5.01 s of audio for a 5 s clip), so the tail is cut sample-exactly; a short
    result is padded with silence, so the audio track always ends with the video.
    """
    import av
    import numpy as np

    samples = np.asarray(audio.samples, dtype=np.float32)
    if samples.ndim != 2 or samples.shape[0] not in (1, 2) or audio.sample_rate < 1:
        raise EngineError(
            "invalidClip",
            f"generated audio must be (channels, samples) with 1 or 2 channels at a positive rate, "
            f"got shape {samples.shape} at {audio.sample_rate} Hz",
        )
    channels = samples.shape[0]
    layout = "stereo" if channels == 2 else "mono"
    rate = plan.audio_rate
    need = round(duration * rate)
    planar = av.AudioFormat(plan.audio_format).is_planar
    resampler = av.AudioResampler(format=plan.audio_format, layout=layout, rate=rate)
    src = av.AudioFrame.from_ndarray(
        np.ascontiguousarray(np.clip(samples, -1.0, 1.0)), format="fltp", layout=layout
    )
    src.sample_rate = audio.sample_rate
    chunks: list[np.ndarray] = []
    for fr in [*resampler.resample(src), *resampler.resample(None)]:
        arr = fr.to_ndarray()
        chunks.append(arr if planar else arr.reshape(-1, channels).T)
    out = np.concatenate(chunks, axis=1) if chunks else np.zeros((channels, 0), dtype=np.float32)
    if out.shape[1] < need:
        out = np.concatenate([out, np.zeros((channels, need - out.shape[1]), dtype=out.dtype)], axis=1)
    return out[:, :need]


def _encode_audio(
    clip: Clip, duration: float, out: av_mod.container.OutputContainer, plan: _Plan
) -> tuple[Any, list[Any]] | None:
    """Add an audio stream for ``clip`` to ``out`` and return it with all its encoded packets.

    The samples come from ``clip.generated_audio`` or from the file of ``clip.audio``. Returns
    None (and adds no stream) when the clip has neither, or its source has no audio stream or no
    samples in the requested window, so a silent input gives a file without an audio track. The
    packets are small (compressed audio of a few seconds) and are interleaved with the video by
    the caller.
    """
    import av
    import numpy as np

    if clip.generated_audio is not None:
        samples: np.ndarray | None = _resample_generated(clip.generated_audio, duration, plan)
    elif clip.audio is not None:
        samples = _decode_source(clip.audio, duration, plan)
    else:
        return None
    if samples is None or samples.shape[1] == 0:
        return None
    rate = plan.audio_rate
    layout = "stereo" if samples.shape[0] == 2 else "mono"
    planar = av.AudioFormat(plan.audio_format).is_planar

    stream: Any = out.add_stream(plan.audio_codec, rate=rate)
    stream.layout = layout
    stream.format = plan.audio_format
    if plan.audio_bitrate:
        stream.bit_rate = plan.audio_bitrate
    stream.codec_context.time_base = Fraction(1, rate)
    stream.codec_context.open()
    frame_size = stream.codec_context.frame_size or 1024
    packets: list[Any] = []
    for pos in range(0, samples.shape[1], frame_size):
        block = samples[:, pos : pos + frame_size]
        data = block if planar else block.T.reshape(1, -1)
        af = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(data), format=plan.audio_format, layout=layout
        )
        af.sample_rate = rate
        af.pts = pos
        af.time_base = Fraction(1, rate)
        packets.extend(stream.encode(af))
    packets.extend(stream.encode(None))
    return stream, packets


# --------------------------------------------------------------------------------------------
# Video: frames are produced (and converted) in a helper thread, encoded here
# --------------------------------------------------------------------------------------------

_DONE = object()


class _FrameFeeder:
    """Pull RGB frames from the clip in a thread and hand over encoder-ready ``VideoFrame`` objects.

    The queue is bounded so at most a few frames exist at a time. Errors raised by the clip's
    iterator (including the engine's CancelledError) are re-raised in the consumer.
    """

    def __init__(self, clip: Clip, pix_fmt: str, depth: int = 4) -> None:
        self._clip = clip
        self._pix_fmt = pix_fmt
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="reelserve-frames", daemon=True)
        self._started = False

    def start(self) -> None:
        self._thread.start()
        self._started = True

    def stop(self) -> None:
        """Ask the producer to stop and wait for it (it also closes the clip's generator)."""
        self._stop.set()
        if not self._started:
            return
        while self._thread.is_alive():
            with contextlib.suppress(queue.Empty):
                self._queue.get(timeout=0.05)
        self._thread.join()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        import av
        import numpy as np

        frames = self._clip.frames
        try:
            for index, rgb in enumerate(frames):
                if self._stop.is_set():
                    break
                arr = np.asarray(rgb)
                if arr.shape != (self._clip.height, self._clip.width, 3) or arr.dtype != np.uint8:
                    raise EngineError(
                        "invalidFrame",
                        f"frame {index} has shape {arr.shape} and dtype {arr.dtype}; the clip "
                        f"declares ({self._clip.height}, {self._clip.width}, 3) uint8",
                    )
                vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format="rgb24")
                vf = vf.reformat(format=self._pix_fmt)
                if not self._put(vf):
                    break
            else:
                self._put(_DONE)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            self._put(exc)
        finally:
            close = getattr(frames, "close", None)
            if close is not None:
                close()

    def __iter__(self) -> Iterator[Any]:
        while True:
            item = self._queue.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item


def encode_clip(
    clip: Clip,
    out_path: Path,
    *,
    output_format: OutputFormat,
    quality: int,
    prores_mov: bool = False,
    progress: ProgressFn | None = None,
    cancelled: CancelledFn | None = None,
) -> Path:
    """Encode ``clip`` into ``out_path`` and return the path.

    Args:
        clip: frames (consumed once), size, fps and optional audio source.
        out_path: file to write; replaced if it exists; removed again on failure.
        output_format: MP4, WEBM or MOV.
        quality: ``outputQuality`` 20-99, mapped by :func:`crf_for`.
        prores_mov: encode MOV as ProRes 422 HQ instead of H.264.
        progress: called with the fraction of frames encoded.
        cancelled: polled between frames; when it returns True the partial file is removed and
            :class:`~reelserve.errors.CancelledError` is raised.

    Raises:
        EngineError: the clip does not deliver what it declares (frame count, shape), odd sizes
            for 4:2:0 output, or an audio source that cannot be decoded.
        CancelledError: ``cancelled()`` turned true.
    """
    import av

    plan = _plan(output_format, quality, prores_mov)
    if clip.num_frames < 1 or clip.fps < 1:
        raise EngineError(
            "invalidClip",
            f"a clip needs at least one frame and a positive fps, got {clip.num_frames} frames "
            f"at {clip.fps} fps",
        )
    if plan.pix_fmt == "yuv420p" and (clip.width % 2 or clip.height % 2):
        raise EngineError(
            "invalidOutputSize",
            f"{plan.video_codec} with 4:2:0 chroma needs even width and height, got "
            f"{clip.width}x{clip.height}",
            parameter="width",
        )
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    duration = clip.num_frames / clip.fps
    feeder = _FrameFeeder(clip, plan.pix_fmt)
    ok = False
    try:
        with av.open(
            str(out_path), mode="w", format=plan.container_format, options=plan.container_options
        ) as out:
            vstream: Any = out.add_stream(plan.video_codec, rate=Fraction(clip.fps))
            vstream.width = clip.width
            vstream.height = clip.height
            vstream.pix_fmt = plan.pix_fmt
            vstream.options = dict(plan.video_options)
            vstream.codec_context.time_base = Fraction(1, clip.fps)
            # Frames are converted with swscale's default BT.601 matrix; say so, so players
            # decode the colours back the same way.
            vstream.codec_context.colorspace = av.video.reformatter.Colorspace.ITU601
            vstream.codec_context.color_range = av.video.reformatter.ColorRange.MPEG

            audio = _encode_audio(clip, duration, out, plan)
            apackets = audio[1] if audio else []
            ai = 0

            feeder.start()
            count = 0
            for vf in feeder:
                if cancelled is not None and cancelled():
                    raise CancelledError(CANCELLED_CODE, "the job was cancelled while encoding")
                if count >= clip.num_frames:
                    raise EngineError(
                        "invalidClip",
                        f"the clip yielded more than the {clip.num_frames} frames it declares",
                    )
                vf.pts = count
                vf.time_base = Fraction(1, clip.fps)
                for packet in vstream.encode(vf):
                    out.mux(packet)
                count += 1
                # Interleave audio up to the current video time, so the file streams well.
                now = count / clip.fps
                while ai < len(apackets) and (
                    apackets[ai].pts is None
                    or float(apackets[ai].pts * apackets[ai].time_base) <= now
                ):
                    out.mux(apackets[ai])
                    ai += 1
                if progress is not None:
                    progress(count / clip.num_frames)
            if count != clip.num_frames:
                raise EngineError(
                    "invalidClip",
                    f"the clip yielded {count} frames but declares {clip.num_frames}",
                )
            for packet in vstream.encode(None):
                out.mux(packet)
            for packet in apackets[ai:]:
                out.mux(packet)
        ok = True
    finally:
        feeder.stop()
        if not ok:
            out_path.unlink(missing_ok=True)
    return out_path
