"""All media-input resolution: a reference string in, checked bytes and decoded media out.

A reference (``inputs.frameImages[].image``, ``inputs.referenceImages[]``,
``inputs.referenceVideos[]``, ``inputs.video``) is one of:

* a UUID of an upload or an earlier output: read through the ``lookup`` callable the caller
  provides (the artifact store); unknown -> ``mediaNotFound``;
* a data URI (``data:image/png;base64,...``);
* an ``http(s)`` URL: fetched through the ``fetch`` callable, which the worker builds on the one
  outbound path :func:`reelserve.media.netguard.fetch` (SSRF rules, byte cap); this module never
  opens a connection itself;
* raw base64.

Decoding enforces the catalog limits (``limits.images`` / ``limits.videos`` in ``models.toml``):
file size (checked before decoding base64, and passed to the fetcher as its read cap), type
(sniffed from the bytes: a text file or a video where an image is expected is refused by name),
sides, and decompression bombs (the header's dimensions are checked before any pixel is decoded,
and Pillow's bomb guard is turned into an error). Only a short list of image formats is
accepted: PNG, JPEG, WEBP, GIF (first frame), BMP. Formats such as EPS, which Pillow hands to
external programs, are never opened.

Error codes (all :class:`~reelserve.errors.ReelserveError`):

====================== ============ =============================================================
code                   kind         when
====================== ============ =============================================================
mediaNotFound          not_found    a UUID nobody uploaded (or not visible to this key)
mediaTooLarge          too_large    bytes over the catalog's ``max_bytes``
invalidMediaReference  invalid      not a UUID, URL, data URI or base64; bad data URI
unsupportedMediaURL    invalid      a URL given but no fetcher configured, or a non-http scheme
invalidMediaType       invalid      a text file, a video where an image is expected, or the reverse
invalidImageData       invalid      undecodable or truncated image
invalidImageDimensions invalid      a side outside ``min_side``-``max_side``; decompression bombs
invalidVideoData       invalid      undecodable video, no video stream, no frames
invalidVideoDimensions invalid      a video side outside the video limits
====================== ============ =============================================================

This module reports facts (a video's size, frame rate, duration) and refuses only what cannot be
read or breaks the file limits. Whether those facts suit the task (a v2v input's length against
the model's ``video_edit`` range, with its 0.1 s snap) is decided in one place,
:func:`reelserve.catalog.validate.resolve_media`.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_to_bytes

from reelserve.errors import ErrorKind, MediaError, NotFoundError
from reelserve.media.clip import ResolvedInputs, VideoInput
from reelserve.tasks import GenerationSpec

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "Fetch",
    "Lookup",
    "decode_image",
    "decode_video",
    "resolve_inputs",
    "resolve_ref",
    "sniff",
]

Lookup = Callable[[str], "bytes | Path | None"]
"""UUID -> the stored bytes (or a local file holding them), or None when unknown."""

Fetch = Callable[..., Any]
"""Called as ``fetch(url, max_bytes=N)``; returns the body as ``bytes`` or an object with
``.content`` (:class:`reelserve.media.netguard.FetchResult`). Must stop reading past ``N``."""

PARAM_FRAME_IMAGES = "inputs.frameImages"
PARAM_REFERENCE_IMAGES = "inputs.referenceImages"
PARAM_REFERENCE_VIDEOS = "inputs.referenceVideos"
PARAM_VIDEO = "inputs.video"

# Pillow formats we let open input bytes; everything else is refused before a decoder runs.
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")

_UUID_RE = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)
_B64_RE = re.compile(rb"^[A-Za-z0-9+/_\-\s]*={0,2}\s*$")


def _short(ref: str, limit: int = 60) -> str:
    """A reference as it may appear in an error message (base64 payloads are huge)."""
    return ref if len(ref) <= limit else f"{ref[:limit]}... ({len(ref)} chars)"


def _too_large(parameter: str, size: int | str, max_bytes: int) -> MediaError:
    return MediaError(
        "mediaTooLarge",
        f"{parameter}: the media is {size} bytes; at most {max_bytes} bytes "
        f"({max_bytes / 1048576:g} MB) are accepted",
        parameter=parameter,
        kind=ErrorKind.TOO_LARGE,
    )


# --------------------------------------------------------------------------------------------
# Reference -> bytes
# --------------------------------------------------------------------------------------------


def resolve_ref(
    ref: str,
    *,
    parameter: str,
    lookup: Lookup,
    fetch: Fetch | None,
    max_bytes: int,
) -> bytes:
    """Turn a media reference into its bytes, never more than ``max_bytes`` of them.

    Args:
        ref: a UUID, data URI, http(s) URL or raw base64 string.
        parameter: the request field in errors (``inputs.frameImages``).
        lookup: UUID -> bytes or a local file path, or None when unknown.
        fetch: the outbound fetcher (see :data:`Fetch`), or None when URLs are not allowed.
        max_bytes: the byte cap for this kind of media.

    Raises:
        NotFoundError: ``mediaNotFound`` for an unknown UUID.
        MediaError: ``mediaTooLarge``, ``invalidMediaReference``, ``unsupportedMediaURL``.
        ReelserveError: whatever ``fetch`` raises (netguard's SSRF refusals), with ``parameter``
            filled in when the fetcher left it empty.
    """
    text = ref.strip()
    if not text:
        raise MediaError(
            "invalidMediaReference",
            f"{parameter}: the media reference is empty; give a UUID, an http(s) URL, "
            "a data URI or base64 data",
            parameter=parameter,
        )
    if _UUID_RE.match(text):
        found = lookup(text.lower())
        if found is None and text != text.lower():
            found = lookup(text)
        if found is None:
            raise NotFoundError(
                "mediaNotFound",
                f"{parameter}: no uploaded media or earlier result has the UUID {text}",
                parameter=parameter,
            )
        if isinstance(found, Path):
            size = found.stat().st_size
            if size > max_bytes:
                raise _too_large(parameter, size, max_bytes)
            return found.read_bytes()
        if len(found) > max_bytes:
            raise _too_large(parameter, len(found), max_bytes)
        return bytes(found)

    lowered = text[:16].lower()
    if lowered.startswith("data:"):
        return _decode_data_uri(text, parameter=parameter, max_bytes=max_bytes)
    if lowered.startswith(("http://", "https://")):
        if fetch is None:
            raise MediaError(
                "unsupportedMediaURL",
                f"{parameter}: {_short(text)} is a URL, but this server does not fetch URLs "
                "here; upload the media first and pass its UUID, or send a data URI or base64",
                parameter=parameter,
            )
        try:
            result = fetch(text, max_bytes=max_bytes)
        except MediaError:
            raise
        except Exception as exc:
            from reelserve.errors import ReelserveError

            if isinstance(exc, ReelserveError) and exc.parameter is None:
                exc.parameter = parameter
            raise
        content = result if isinstance(result, bytes | bytearray) else result.content
        if len(content) > max_bytes:  # a fetcher that did not honour the cap
            raise _too_large(parameter, f"more than {max_bytes}", max_bytes)
        return bytes(content)
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.\-]*://", text):
        scheme = text.split(":", 1)[0]
        raise MediaError(
            "unsupportedMediaURL",
            f"{parameter}: URL scheme {scheme!r} is not supported; use http or https",
            parameter=parameter,
            allowed_values=["http", "https"],
        )
    return _decode_base64(text, parameter=parameter, max_bytes=max_bytes)


def _decode_base64(text: str, *, parameter: str, max_bytes: int) -> bytes:
    # Estimate the decoded size first: refusing a 30 MB payload must not cost a 30 MB decode.
    estimate = len(text) * 3 // 4
    if estimate > max_bytes + 3:
        raise _too_large(parameter, f"about {estimate}", max_bytes)
    raw = text.encode("ascii", errors="replace")
    if not _B64_RE.match(raw):
        raise MediaError(
            "invalidMediaReference",
            f"{parameter}: {_short(text)!r} is not a UUID, an http(s) URL, a data URI or base64 data",
            parameter=parameter,
        )
    compact = re.sub(rb"\s+", b"", raw).replace(b"-", b"+").replace(b"_", b"/")
    compact += b"=" * (-len(compact) % 4)
    try:
        data = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MediaError(
            "invalidMediaReference",
            f"{parameter}: the base64 data cannot be decoded ({exc})",
            parameter=parameter,
        ) from exc
    if len(data) > max_bytes:
        raise _too_large(parameter, len(data), max_bytes)
    if not data:
        raise MediaError(
            "invalidMediaReference", f"{parameter}: the base64 data is empty", parameter=parameter
        )
    return data


def _decode_data_uri(text: str, *, parameter: str, max_bytes: int) -> bytes:
    header, sep, payload = text.partition(",")
    if not sep:
        raise MediaError(
            "invalidMediaReference",
            f"{parameter}: the data URI {_short(text)!r} has no ',' between header and data",
            parameter=parameter,
        )
    if header.lower().endswith(";base64"):
        return _decode_base64(payload, parameter=parameter, max_bytes=max_bytes)
    if len(payload) > 3 * max_bytes:  # percent-encoding is at most 3 chars per byte
        raise _too_large(parameter, f"about {len(payload)}", max_bytes)
    data = unquote_to_bytes(payload)
    if len(data) > max_bytes:
        raise _too_large(parameter, len(data), max_bytes)
    return data


# --------------------------------------------------------------------------------------------
# Sniffing
# --------------------------------------------------------------------------------------------


def sniff(data: bytes) -> tuple[str, str] | None:
    """Guess what ``data`` is from its first bytes: ``(kind, name)`` or None.

    ``kind`` is ``image``, ``video`` or ``text``; ``name`` a format name for messages (``PNG``,
    ``MP4``) or, for videos, the FFmpeg demuxer to open it with (``mov``, ``matroska``, ``avi``).
    """
    head = data[:64]
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return ("image", "PNG")
    if head.startswith(b"\xff\xd8\xff"):
        return ("image", "JPEG")
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return ("image", "WEBP")
    if head.startswith((b"GIF87a", b"GIF89a")):
        return ("image", "GIF")
    if head.startswith(b"BM"):
        return ("image", "BMP")
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"M4A ", b"M4B "):
            return ("audio", "M4A")
        if brand in (b"avif", b"avis", b"heic", b"heix", b"mif1", b"msf1"):
            return ("image", brand.decode("ascii", "replace").strip().upper())
        return ("video", "mov")
    if head[4:8] in (b"moov", b"mdat", b"wide", b"free", b"skip"):
        return ("video", "mov")
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return ("video", "matroska")
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return ("video", "avi")
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return ("image", "TIFF")
    if head.startswith((b"%PDF", b"%!PS")):
        return ("text", "PDF/PostScript")
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return ("audio", "WAV")
    if head.startswith(b"OggS"):
        return ("audio", "OGG")
    if head.startswith(b"fLaC"):
        return ("audio", "FLAC")
    if head.startswith(b"ID3") or head[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2"):
        return ("audio", "MP3")
    sample = data[:4096]
    if sample and b"\x00" not in sample:
        try:
            sample.decode("utf-8")
        except UnicodeDecodeError as exc:
            # a multi-byte char cut at the sample's end is still text
            if exc.start < len(sample) - 4:
                return None
        return ("text", "text")
    return None


# (kind, name) from :func:`sniff` -> (content type, file extension) of media we store as uploads.
UPLOAD_TYPES: dict[tuple[str, str], tuple[str, str]] = {
    ("image", "PNG"): ("image/png", "png"),
    ("image", "JPEG"): ("image/jpeg", "jpg"),
    ("image", "WEBP"): ("image/webp", "webp"),
    ("image", "GIF"): ("image/gif", "gif"),
    ("video", "mov"): ("video/mp4", "mp4"),
    ("video", "matroska"): ("video/webm", "webm"),
    ("audio", "WAV"): ("audio/wav", "wav"),
    ("audio", "OGG"): ("audio/ogg", "ogg"),
    ("audio", "FLAC"): ("audio/flac", "flac"),
    ("audio", "MP3"): ("audio/mpeg", "mp3"),
    ("audio", "M4A"): ("audio/mp4", "m4a"),
}


def upload_type(data: bytes) -> tuple[str, str, str] | None:
    """``(kind, content_type, extension)`` of an uploaded file we accept, or None."""
    found = sniff(data)
    if found is None or found not in UPLOAD_TYPES:
        return None
    content_type, extension = UPLOAD_TYPES[found]
    if found == ("video", "mov") and data[8:12] == b"qt  ":
        content_type, extension = "video/quicktime", "mov"
    return found[0], content_type, extension


# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------


def _image_limits() -> Any:
    from reelserve.catalog import get_catalog

    return get_catalog().limits.images


def _video_limits() -> Any:
    from reelserve.catalog import get_catalog

    return get_catalog().limits.videos


def decode_image(data: bytes, *, parameter: str) -> Image.Image:
    """Decode an input image to RGB, enforcing the catalog's ``limits.images``.

    The header is read first and the sides checked before any pixel is decoded, so a PNG that
    declares 30000x30000 costs nothing. EXIF orientation is applied; transparency is flattened
    onto black. Animated formats give their first frame.

    Raises:
        MediaError: ``mediaTooLarge``, ``invalidMediaType``, ``invalidImageData``,
            ``invalidImageDimensions`` (see the module table).
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    limits = _image_limits()
    if len(data) > limits.max_bytes:
        raise _too_large(parameter, len(data), limits.max_bytes)
    kind = sniff(data)
    if kind is not None and (kind[0] != "image" or kind[1] not in IMAGE_FORMATS):
        what = "a video" if kind[0] == "video" else f"{kind[1]}"
        raise MediaError(
            "invalidMediaType",
            f"{parameter}: expected an image, got {what} ({len(data)} bytes); "
            f"allowed image types: {', '.join(IMAGE_FORMATS)}",
            parameter=parameter,
            allowed_values=list(IMAGE_FORMATS),
        )
    try:
        with warnings.catch_warnings():
            # Pillow only warns between MAX_IMAGE_PIXELS and twice that; here it is an error.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img: Image.Image = Image.open(io.BytesIO(data), formats=list(IMAGE_FORMATS))
            width, height = img.size
            _check_sides(parameter, width, height, limits.min_side, limits.max_side, "image")
            img.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise MediaError(
            "invalidImageDimensions",
            f"{parameter}: refused as a decompression bomb ({exc}); sides must be between "
            f"{limits.min_side} and {limits.max_side} px",
            parameter=parameter,
        ) from exc
    except UnidentifiedImageError as exc:
        raise MediaError(
            "invalidImageData",
            f"{parameter}: the {len(data)} bytes are not a decodable image; "
            f"allowed image types: {', '.join(IMAGE_FORMATS)}",
            parameter=parameter,
            allowed_values=list(IMAGE_FORMATS),
        ) from exc
    except MediaError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise MediaError(
            "invalidImageData",
            f"{parameter}: the image is corrupt or truncated ({exc})",
            parameter=parameter,
        ) from exc
    img = ImageOps.exif_transpose(img) or img
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (0, 0, 0))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return img.convert("RGB")


def _check_sides(parameter: str, width: int, height: int, lo: int, hi: int, what: str) -> None:
    if lo <= width <= hi and lo <= height <= hi:
        return
    bomb = " (refused before decoding)" if width * height > hi * hi else ""
    raise MediaError(
        f"invalid{what.capitalize()}Dimensions",
        f"{parameter}: the {what} is {width}x{height} px{bomb}; each side must be between "
        f"{lo} and {hi} px",
        parameter=parameter,
    )


# --------------------------------------------------------------------------------------------
# Videos
# --------------------------------------------------------------------------------------------


def decode_video(
    data: bytes | Path, *, parameter: str, workdir: Path, max_bytes: int | None = None
) -> VideoInput:
    """Store an input video in ``workdir`` (unless it is already a file) and probe it.

    Checks the catalog's ``limits.videos`` (bytes, sides), that it really is a video container we
    accept (MP4/MOV, WebM/Matroska, AVI; sniffed, and opened with that demuxer only, local file
    access only) and that it has frames.

    Raises:
        MediaError: ``mediaTooLarge``, ``invalidMediaType``, ``invalidVideoData``,
            ``invalidVideoDimensions``.
    """
    from reelserve.media.probe import probe

    limits = _video_limits()
    cap = limits.max_bytes if max_bytes is None else max_bytes
    if isinstance(data, Path):
        path = data
        size = path.stat().st_size
        with path.open("rb") as fh:
            head = fh.read(4096)
    else:
        size = len(data)
        head = data[:4096]
        path = Path(workdir) / f"input-{uuid.uuid4().hex}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
    if size > cap:
        raise _too_large(parameter, size, cap)
    kind = sniff(head)
    if kind is None or kind[0] != "video":
        what = f"{kind[1]} ({kind[0]})" if kind else "data of an unknown type"
        raise MediaError(
            "invalidMediaType",
            f"{parameter}: expected a video (MP4, MOV, WebM, MKV, AVI), got {what}",
            parameter=parameter,
            allowed_values=["MP4", "MOV", "WEBM", "MKV", "AVI"],
        )
    if not isinstance(data, Path):
        path.write_bytes(data)
    try:
        info = probe(path, format=kind[1])
    except MediaError as exc:
        raise MediaError(
            "invalidVideoData",
            f"{parameter}: the video cannot be read ({exc.message})",
            parameter=parameter,
        ) from exc
    if not info.has_video or info.num_frames < 1 or info.fps <= 0:
        raise MediaError(
            "invalidVideoData",
            f"{parameter}: the file has no decodable video frames "
            f"(streams: {[s.type for s in info.streams]})",
            parameter=parameter,
        )
    _check_sides(parameter, info.width, info.height, limits.min_side, limits.max_side, "video")
    return VideoInput(
        path=path,
        width=info.width,
        height=info.height,
        fps=info.fps,
        num_frames=info.num_frames,
        duration=info.duration,
        has_audio=info.has_audio,
    )


# --------------------------------------------------------------------------------------------
# The whole spec
# --------------------------------------------------------------------------------------------


def resolve_inputs(
    spec: GenerationSpec,
    *,
    lookup: Lookup,
    fetch: Fetch | None,
    workdir: Path,
) -> ResolvedInputs:
    """Fetch and decode every media input of ``spec`` (the worker's first step).

    Images are decoded to RGB PIL images; videos are stored under ``workdir`` and probed. Errors
    name the Runware dotted path of the input (``inputs.frameImages``, ``inputs.referenceImages``,
    ``inputs.referenceVideos``, ``inputs.video``). The probed facts are returned, not judged: a
    v2v input's duration is checked (and snapped) by
    :func:`reelserve.catalog.validate.resolve_media`. Blocking: run it off the event loop.
    """
    images = _image_limits()
    videos = _video_limits()

    def image(ref: str, parameter: str) -> Image.Image:
        data = resolve_ref(
            ref, parameter=parameter, lookup=lookup, fetch=fetch, max_bytes=images.max_bytes
        )
        return decode_image(data, parameter=parameter)

    def video(ref: str, parameter: str) -> VideoInput:
        text = ref.strip()
        if _UUID_RE.match(text):
            found = lookup(text.lower()) or lookup(text)
            if isinstance(found, Path):  # stored file: probe it in place, no copy
                return decode_video(found, parameter=parameter, workdir=workdir)
        data = resolve_ref(
            ref, parameter=parameter, lookup=lookup, fetch=fetch, max_bytes=videos.max_bytes
        )
        return decode_video(data, parameter=parameter, workdir=workdir)

    first = spec.first_frame()
    last = spec.last_frame()
    return ResolvedInputs(
        first_frame=image(first, PARAM_FRAME_IMAGES) if first else None,
        last_frame=image(last, PARAM_FRAME_IMAGES) if last else None,
        reference_images=[image(r, PARAM_REFERENCE_IMAGES) for r in spec.reference_images],
        reference_videos=[video(r, PARAM_REFERENCE_VIDEOS) for r in spec.reference_videos],
        input_video=video(spec.input_video, PARAM_VIDEO) if spec.input_video else None,
    )
