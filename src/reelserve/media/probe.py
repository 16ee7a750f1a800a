"""Read back what a media file really is: container, codecs, size, fps, exact frame count, streams.

Used on inputs (an uploaded or fetched video: is it a video at all, how long, how large, does it
carry audio) and on outputs (tests and the worker check the encoder honoured the request).
PyAV is imported lazily so that ``import reelserve`` stays light.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from reelserve.errors import MediaError

__all__ = ["SAFE_OPEN_OPTIONS", "ProbeResult", "StreamInfo", "probe"]


@dataclass(frozen=True)
class StreamInfo:
    """One stream of a container."""

    index: int
    type: str  # "video", "audio", "subtitle", "data", ...
    codec: str | None
    duration: float | None = None
    # audio only
    sample_rate: int | None = None
    channels: int | None = None


@dataclass(frozen=True)
class ProbeResult:
    """Facts about a media file.

    ``container`` is the short muxer name family that matters to us (``mp4``, ``mov``, ``webm``,
    ``matroska``, ...); ``format_name`` is FFmpeg's full demuxer name (``mov,mp4,m4a,3gp,3g2,mj2``).
    ``num_frames`` is exact: it counts the video packets that carry a frame (see :func:`probe`).
    """

    path: Path
    container: str
    format_name: str
    size_bytes: int
    video_codec: str | None
    width: int
    height: int
    fps: float
    num_frames: int
    duration: float
    has_audio: bool
    audio_codec: str | None
    pix_fmt: str | None
    streams: list[StreamInfo] = field(default_factory=list)

    @property
    def has_video(self) -> bool:
        """Whether the file has a video stream."""
        return self.video_codec is not None


def _container_name(format_name: str, path: Path) -> str:
    """Narrow FFmpeg's demuxer family name to the actual container.

    The mov demuxer reports ``mov,mp4,m4a,...`` for both MP4 and QuickTime and the matroska demuxer
    ``matroska,webm`` for both; the file's brand tells them apart.
    """
    names = format_name.split(",")
    if "mp4" in names or "mov" in names:
        with path.open("rb") as fh:
            head = fh.read(12)
        if head[4:8] == b"ftyp" and head[8:12] == b"qt  ":
            return "mov"
        if head[4:8] == b"ftyp":
            return "mp4"
        return "mov"  # QuickTime files may start with a moov/wide/mdat atom and no ftyp
    if "webm" in names or "matroska" in names:
        with path.open("rb") as fh:
            head = fh.read(64)
        return "webm" if b"webm" in head else "matroska"
    return names[0]


def _rate(stream: Any) -> Fraction | None:
    # average_rate comes from the frame count and duration; base/guessed rate from the codec
    # timing. For constant-rate files (all of ours) they agree; prefer the declared one.
    for attr in ("guessed_rate", "average_rate", "base_rate"):
        value = getattr(stream, attr, None)
        if value:
            return Fraction(value)
    return None


SAFE_OPEN_OPTIONS = {"protocol_whitelist": "file"}
"""FFmpeg options for opening untrusted files: no network or other protocols (an HLS playlist or
a concat list inside an "input video" must never make FFmpeg open anything but the file)."""


def probe(path: Path, *, decode: bool = False, format: str | None = None) -> ProbeResult:
    """Probe ``path`` and return its facts.

    The frame count is exact: it demuxes the whole video stream and counts the packets that carry
    a frame (every container we write stores one displayed frame per packet, VP9 superframes
    included). With ``decode=True`` it decodes the stream and counts decoded frames instead, for
    files of unknown origin where that is not guaranteed. ``format`` forces an FFmpeg demuxer
    (``mov``, ``matroska``, ``avi``), as input handling does after sniffing the bytes, so FFmpeg
    never probes untrusted data with every demuxer it has.

    Raises:
        MediaError: ``invalidMediaData`` when FFmpeg cannot open the file.
    """
    import av

    path = Path(path)
    try:
        container = av.open(str(path), mode="r", format=format, options=SAFE_OPEN_OPTIONS)
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise MediaError(
            "invalidMediaData",
            f"cannot read media file {path.name!r}: {exc}",
        ) from exc
    with container:
        format_name = container.format.name
        streams: list[StreamInfo] = []
        video = next((s for s in container.streams if s.type == "video"), None)
        audio = next((s for s in container.streams if s.type == "audio"), None)
        for s in container.streams:
            duration = (
                float(s.duration * s.time_base) if s.duration is not None and s.time_base else None
            )
            codec = s.codec_context.name if s.codec_context is not None else None
            streams.append(
                StreamInfo(
                    index=s.index,
                    type=s.type,
                    codec=codec,
                    duration=duration,
                    sample_rate=getattr(s.codec_context, "sample_rate", None)
                    if s.type == "audio"
                    else None,
                    channels=getattr(s.codec_context, "channels", None)
                    if s.type == "audio"
                    else None,
                )
            )
        container_duration = (
            float(container.duration) / av.time_base if container.duration is not None else 0.0
        )
        if video is None:
            return ProbeResult(
                path=path,
                container=_container_name(format_name, path),
                format_name=format_name,
                size_bytes=path.stat().st_size,
                video_codec=None,
                width=0,
                height=0,
                fps=0.0,
                num_frames=0,
                duration=container_duration,
                has_audio=audio is not None,
                audio_codec=audio.codec_context.name if audio is not None else None,
                pix_fmt=None,
                streams=streams,
            )
        vctx: Any = video.codec_context
        width, height, pix_fmt = vctx.width, vctx.height, vctx.pix_fmt
        rate = _rate(video)
        if decode:
            num_frames = sum(1 for _ in container.decode(video=0))
        else:
            # Demux only: cheap even for long inputs. Empty packets are the demuxer's flush marks.
            num_frames = sum(1 for pkt in container.demux(video) if pkt.size > 0)
        if video.duration is not None and video.time_base:
            duration = float(video.duration * video.time_base)
        elif rate:
            duration = num_frames / float(rate)
        else:
            duration = container_duration
        return ProbeResult(
            path=path,
            container=_container_name(format_name, path),
            format_name=format_name,
            size_bytes=path.stat().st_size,
            video_codec=video.codec_context.name,
            width=width,
            height=height,
            fps=float(rate) if rate else 0.0,
            num_frames=num_frames,
            duration=duration,
            has_audio=audio is not None,
            audio_codec=audio.codec_context.name if audio is not None else None,
            pix_fmt=pix_fmt,
            streams=streams,
        )
