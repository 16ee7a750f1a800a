"""Media inputs: every reference form resolves, limits are enforced with the right codes."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, PngImagePlugin

from media.media_helpers import image_bytes, make_image, make_video, png_bomb
from reelserve.catalog import get_catalog
from reelserve.catalog.validate import resolve_media
from reelserve.errors import ErrorKind, MediaError, NotFoundError, ReelserveError
from reelserve.media.clip import ResolvedInputs
from reelserve.media.inputs import decode_image, decode_video, resolve_inputs, resolve_ref, sniff
from reelserve.tasks import FrameImage, FramePosition, GenerationSpec, Workflow

P = "inputs.frameImages"
UUID = "0b3c2a5e-8f61-4c1e-9a77-5d2f8e4b1c90"
PNG = image_bytes(make_image(400, 320, 1))
LIMITS = get_catalog().limits.images


def nolookup(_: str) -> bytes | None:
    return None


def test_limits_come_from_the_catalog() -> None:
    assert (LIMITS.min_side, LIMITS.max_side) == (300, 2048)
    assert LIMITS.max_bytes >= 20_000_000


# ------------------------------------------------------------------ references


def test_uuid_data_uri_base64() -> None:
    store = {UUID: PNG}
    assert resolve_ref(UUID, parameter=P, lookup=store.get, fetch=None, max_bytes=10**7) == PNG
    assert (
        resolve_ref(UUID.upper(), parameter=P, lookup=store.get, fetch=None, max_bytes=10**7) == PNG
    )
    b64 = base64.b64encode(PNG).decode()
    assert (
        resolve_ref(
            f"data:image/png;base64,{b64}",
            parameter=P,
            lookup=nolookup,
            fetch=None,
            max_bytes=10**7,
        )
        == PNG
    )
    assert resolve_ref(b64, parameter=P, lookup=nolookup, fetch=None, max_bytes=10**7) == PNG


def test_uuid_as_a_stored_file(tmp_path: Path) -> None:
    f = tmp_path / "blob"
    f.write_bytes(PNG)
    assert resolve_ref(UUID, parameter=P, lookup=lambda u: f, fetch=None, max_bytes=10**7) == PNG
    with pytest.raises(MediaError) as err:
        resolve_ref(UUID, parameter=P, lookup=lambda u: f, fetch=None, max_bytes=100)
    assert (err.value.code, err.value.kind) == ("mediaTooLarge", ErrorKind.TOO_LARGE)


def test_unknown_uuid_is_not_found() -> None:
    with pytest.raises(NotFoundError) as err:
        resolve_ref(UUID, parameter="inputs.video", lookup=nolookup, fetch=None, max_bytes=10)
    assert (err.value.code, err.value.parameter, err.value.kind) == (
        "mediaNotFound",
        "inputs.video",
        ErrorKind.NOT_FOUND,
    )


def test_urls_go_through_the_fetcher_with_the_cap() -> None:
    calls: list[tuple[str, int]] = []

    class Result:
        content = PNG
        content_type = "image/png"

    def fetch(url: str, *, max_bytes: int) -> Any:
        calls.append((url, max_bytes))
        return Result()

    url = "https://example.invalid/a.png"
    assert resolve_ref(url, parameter=P, lookup=nolookup, fetch=fetch, max_bytes=10**7) == PNG
    assert calls == [(url, 10**7)]
    with pytest.raises(MediaError) as big:  # a fetcher that ignores the cap is still capped
        resolve_ref(url, parameter=P, lookup=nolookup, fetch=fetch, max_bytes=1234)
    assert big.value.code == "mediaTooLarge"
    with pytest.raises(MediaError) as err:
        resolve_ref(url, parameter=P, lookup=nolookup, fetch=None, max_bytes=1234)
    assert (err.value.code, err.value.parameter) == ("unsupportedMediaURL", P)


def test_fetch_errors_get_the_parameter() -> None:
    def fetch(url: str, *, max_bytes: int) -> bytes:
        raise ReelserveError("blockedAddress", "refused")

    with pytest.raises(ReelserveError) as err:
        resolve_ref("http://10.0.0.1/x", parameter=P, lookup=nolookup, fetch=fetch, max_bytes=10)
    assert (err.value.code, err.value.parameter) == ("blockedAddress", P)


@pytest.mark.parametrize("ref", ["ftp://example.invalid/x.png", "file:///etc/passwd"])
def test_other_schemes_are_refused(ref: str) -> None:
    with pytest.raises(MediaError) as err:
        resolve_ref(ref, parameter=P, lookup=nolookup, fetch=lambda u, max_bytes: b"", max_bytes=10)
    assert err.value.code == "unsupportedMediaURL"


@pytest.mark.parametrize("ref", ["", "not base64 at all!", "data:image/png;base64"])
def test_garbage_references(ref: str) -> None:
    with pytest.raises(MediaError) as err:
        resolve_ref(ref, parameter=P, lookup=nolookup, fetch=None, max_bytes=10**6)
    assert err.value.code == "invalidMediaReference" and err.value.parameter == P


def test_oversized_base64_is_refused_before_decoding() -> None:
    huge = "A" * (4 * 1024 * 1024)
    with pytest.raises(MediaError) as err:
        resolve_ref(huge, parameter=P, lookup=nolookup, fetch=None, max_bytes=1024 * 1024)
    assert err.value.code == "mediaTooLarge"


# ------------------------------------------------------------------ images


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_good_images_decode_to_rgb(fmt: str) -> None:
    img = decode_image(image_bytes(make_image(640, 360, 2), fmt), parameter=P)
    assert (img.mode, img.size) == ("RGB", (640, 360))


def test_alpha_is_flattened() -> None:
    rgba = make_image(400, 400, 3).convert("RGBA")
    assert decode_image(image_bytes(rgba), parameter=P).mode == "RGB"


def _err(data: bytes) -> MediaError:
    with pytest.raises(MediaError) as err:
        decode_image(data, parameter=P)
    assert err.value.parameter == P
    return err.value


def test_truncated_png() -> None:
    assert _err(PNG[: len(PNG) // 2]).code == "invalidImageData"


def test_garbage_bytes() -> None:
    assert _err(b"\x00\x01\x02\x03" * 100).code == "invalidImageData"


def test_text_file() -> None:
    err = _err(b"just some notes\nnot an image\n" * 20)
    assert err.code == "invalidMediaType" and "text" in err.message


def test_video_where_an_image_is_expected(tmp_path: Path) -> None:
    err = _err(make_video(tmp_path / "v.mp4", frames=3).read_bytes())
    assert err.code == "invalidMediaType" and "video" in err.message


@pytest.mark.parametrize(("w", "h"), [(299, 400), (400, 299), (2049, 400), (400, 2049)])
def test_sides_out_of_range(w: int, h: int) -> None:
    err = _err(image_bytes(Image.new("RGB", (w, h), (10, 20, 30))))
    assert err.code == "invalidImageDimensions"
    assert f"{w}x{h}" in err.message and "300" in err.message and "2048" in err.message


def test_sides_at_the_limits_pass() -> None:
    assert decode_image(image_bytes(Image.new("RGB", (300, 2048))), parameter=P).size == (300, 2048)


def test_21_mb_image() -> None:
    info = PngImagePlugin.PngInfo()
    info.add_itxt("padding", "x" * (21 * 1024 * 1024))  # a valid PNG, 21 MB on disk
    data = image_bytes(make_image(400, 400, 4), "PNG", pnginfo=info)
    assert len(data) > 21 * 1024 * 1024
    err = _err(data)
    assert (err.code, err.kind) == ("mediaTooLarge", ErrorKind.TOO_LARGE)


@pytest.mark.parametrize("side", [10_000, 30_000])
def test_png_bomb_is_refused_before_decoding(side: int) -> None:
    data = png_bomb(side, side)
    assert len(data) < 1_000_000
    err = _err(data)
    assert err.code == "invalidImageDimensions"
    assert f"{side}x{side}" in err.message or "decompression bomb" in err.message


@pytest.mark.parametrize("head", [b"%!PS-Adobe-3.0 EPSF-3.0\n", b"II*\x00" + b"\x00" * 60])
def test_formats_outside_the_list_are_refused(head: bytes) -> None:
    assert _err(head + b"\x00" * 100).code == "invalidMediaType"


def test_sniff() -> None:
    assert sniff(PNG) == ("image", "PNG")
    assert sniff(b"\x1a\x45\xdf\xa3rest") == ("video", "matroska")
    assert sniff(b"hello") == ("text", "text")


# ------------------------------------------------------------------ videos


def test_video_is_stored_and_probed(tmp_path: Path) -> None:
    data = make_video(
        tmp_path / "v.mp4", width=320, height=320, fps=24, frames=30, audio_seconds=1.0
    ).read_bytes()
    v = decode_video(data, parameter="inputs.video", workdir=tmp_path / "work")
    assert (v.width, v.height, v.fps, v.num_frames, v.has_audio) == (320, 320, 24.0, 30, True)
    assert abs(v.duration - 1.25) < 0.05 and v.path.parent == tmp_path / "work"


def test_image_where_a_video_is_expected(tmp_path: Path) -> None:
    with pytest.raises(MediaError) as err:
        decode_video(PNG, parameter="inputs.referenceVideos", workdir=tmp_path)
    assert (err.value.code, err.value.parameter) == ("invalidMediaType", "inputs.referenceVideos")


def test_broken_video(tmp_path: Path) -> None:
    with pytest.raises(MediaError) as err:
        decode_video(
            b"\x00\x00\x00\x18ftypisom" + b"\x00" * 500, parameter="inputs.video", workdir=tmp_path
        )
    assert err.value.code == "invalidVideoData"


def test_small_video(tmp_path: Path) -> None:
    data = make_video(tmp_path / "s.mp4", width=256, height=320, frames=3).read_bytes()
    with pytest.raises(MediaError) as err:
        decode_video(data, parameter="inputs.video", workdir=tmp_path)
    assert err.value.code == "invalidVideoDimensions"


# ------------------------------------------------------------------ a whole spec


def _spec(**kw: Any) -> GenerationSpec:
    base: dict[str, Any] = dict(
        task_uuid="t", model="klingai:kling@o1-standard", workflow=Workflow.I2V, width=1280,
        height=720, fps=24, duration=5.0, seeds=[1],
    )  # fmt: skip
    base.update(kw)
    return GenerationSpec(**base)


def test_resolve_inputs(tmp_path: Path) -> None:
    video = make_video(tmp_path / "in.mp4", width=320, height=320, frames=96)  # 4 s
    store: dict[str, Any] = {UUID: video}
    first = "data:image/png;base64," + base64.b64encode(PNG).decode()
    last = base64.b64encode(image_bytes(make_image(500, 500, 9), "JPEG")).decode()
    spec = _spec(
        workflow=Workflow.FLF2V,
        frame_images=[
            FrameImage(image=first, position=FramePosition.FIRST),
            FrameImage(image=last, position=FramePosition.LAST),
        ],
    )
    got = resolve_inputs(spec, lookup=store.get, fetch=None, workdir=tmp_path)
    assert got.first_frame is not None and got.first_frame.size == (400, 320)
    assert got.last_frame is not None and got.last_frame.size == (500, 500)

    v2v = _spec(
        workflow=Workflow.V2V,
        width=None,
        height=None,
        duration=None,
        input_video=UUID,
        reference_images=[first],
    )
    got = resolve_inputs(v2v, lookup=store.get, fetch=None, workdir=tmp_path)
    assert (
        got.input_video is not None
        and got.input_video.path == video
        and got.input_video.num_frames == 96
    )
    assert len(got.reference_images) == 1


def test_resolve_inputs_names_the_failing_input(tmp_path: Path) -> None:
    bad = base64.b64encode(b"plain text, not an image at all").decode()
    with pytest.raises(MediaError) as err:
        resolve_inputs(
            _spec(workflow=Workflow.R2V, reference_images=[bad]),
            lookup=nolookup,
            fetch=None,
            workdir=tmp_path,
        )
    assert err.value.parameter == "inputs.referenceImages"
    with pytest.raises(NotFoundError) as nf:
        resolve_inputs(
            _spec(workflow=Workflow.V2V, input_video=UUID),
            lookup=nolookup,
            fetch=None,
            workdir=tmp_path,
        )
    assert (nf.value.code, nf.value.parameter) == ("mediaNotFound", "inputs.video")


def _v2v_spec() -> GenerationSpec:
    # As the validator leaves a v2v spec: size and duration follow the input video.
    return _spec(workflow=Workflow.V2V, input_video=UUID, width=None, height=None, duration=None)


def _edit_facts(inputs: ResolvedInputs) -> tuple[int, int, float]:
    assert inputs.input_video is not None
    return inputs.input_video.width, inputs.input_video.height, inputs.input_video.duration


def test_v2v_input_duration_follows_the_catalog(tmp_path: Path) -> None:
    edit = get_catalog().model("klingai:kling@o1-standard").video_edit
    assert edit is not None
    frames = max(1, int(edit.min_duration * 24) - 12)  # half a second too short
    video = make_video(tmp_path / "short.mp4", width=320, height=320, frames=frames)
    # media/inputs reports the fact; resolve_media is the one place that refuses it.
    inputs = resolve_inputs(_v2v_spec(), lookup={UUID: video}.get, fetch=None, workdir=tmp_path)
    assert _edit_facts(inputs)[2] == pytest.approx(frames / 24)
    with pytest.raises(MediaError) as err:
        resolve_media(_v2v_spec(), input_video=_edit_facts(inputs))
    assert (err.value.code, err.value.parameter) == ("invalidVideoDuration", "inputs.video")


@pytest.mark.parametrize(("frames", "expected"), [(201, 10.0), (59, 3.0)])
def test_v2v_input_within_the_snap_is_resolved_not_refused(
    tmp_path: Path, frames: int, expected: float
) -> None:
    """Issue 11: a 10.05 s (or 2.95 s) edit video was refused by media/inputs before
    resolve_media could snap it; now inputs report it and resolve_media snaps it to the range."""
    video = make_video(tmp_path / "edit.mp4", width=320, height=320, fps=20, frames=frames)
    inputs = resolve_inputs(_v2v_spec(), lookup={UUID: video}.get, fetch=None, workdir=tmp_path)
    assert _edit_facts(inputs) == (320, 320, pytest.approx(frames / 20))
    spec = resolve_media(_v2v_spec(), input_video=_edit_facts(inputs))
    assert (spec.width, spec.height, spec.duration) == (320, 320, expected)
