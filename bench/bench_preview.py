"""Preview engine benchmark: a 1280x720, 5 s, 30 fps i2v clip, next to PyAV encoding alone.

Both sides produce the same 150 frames with the same encoder settings (H.264 via libx264, the
preset and CRF that :mod:`reelserve.media.encode` uses for MP4 at outputQuality 95):

* ``preview``: ``PreviewEngine.generate`` + ``encode_clip``, i.e. frame synthesis (overlapped with
  encoding in the encoder's feeder thread) plus encoding, as the worker runs it;
* ``pyav``: the frames rendered beforehand into memory (not timed), then a plain PyAV loop
  (``VideoFrame.from_ndarray`` -> ``encode`` -> ``mux``) with the same codec options.

Runs alternate and the best of ``--repeat`` runs per side is reported, which damps noise from
other processes. Target: ratio <= 1.5 for every camera move.

    python bench/bench_preview.py [--repeat 3] [--camera simple:zoom=5]
    python bench/bench_preview.py --all [--repeat 3]   # every camera move, one table

``--all`` measures each move of :data:`ALL_CAMERAS` in turn (each against the PyAV-only encode
of its own 150 frames, runs alternating) and prints one row per move.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from reelserve.engines.preview import PreviewEngine
from reelserve.media.clip import ResolvedInputs
from reelserve.media.encode import X264_PRESET, crf_for, encode_clip
from reelserve.tasks import CameraControl, GenerationSpec, OutputFormat, Workflow

WIDTH, HEIGHT, FPS, SECONDS, QUALITY = 1280, 720, 30, 5.0, 95


def test_image(seed: int = 0) -> Image.Image:
    """A photo-like 1600x1000 input: gradient sky, shapes, soft texture (not noise, not flat)."""
    rng = np.random.default_rng(seed)
    w, h = 1600, 1000
    ys = np.linspace(0, 1, h)[:, None]
    xs = np.linspace(0, 1, w)[None, :]
    base = np.stack([90 + 120 * ys + 20 * xs, 120 + 60 * ys * xs, 200 - 120 * ys + 0 * xs], axis=-1)
    texture = rng.normal(0, 1, (h // 4, w // 4, 3))
    tex = np.asarray(
        Image.fromarray(np.clip(128 + 40 * texture, 0, 255).astype(np.uint8))
        .resize((w, h), Image.Resampling.BICUBIC)
        .filter(ImageFilter.GaussianBlur(1.5)),
        dtype=float,
    )
    img = Image.fromarray(np.clip(base + (tex - 128) * 0.5, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(40):
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        r = int(rng.integers(15, 120))
        color = tuple(int(c) for c in rng.integers(0, 255, 3))
        if rng.random() < 0.5:
            draw.ellipse((x - r, y - r, x + r, y + r), fill=color)
        else:
            draw.rectangle((x - r, y - r // 2, x + r, y + r // 2), fill=color)
    return img


def spec(camera: CameraControl | None) -> GenerationSpec:
    return GenerationSpec(
        task_uuid="bench",
        model="klingai:1@1",
        workflow=Workflow.I2V,
        width=WIDTH,
        height=HEIGHT,
        fps=FPS,
        duration=SECONDS,
        seeds=[1],
        camera=camera,
        output_quality=QUALITY,
    )


def run_preview(s: GenerationSpec, inputs: ResolvedInputs, out: Path) -> float:
    t0 = time.perf_counter()
    clip = PreviewEngine().generate(s, inputs, 1, lambda f: None, lambda: False)
    encode_clip(clip, out, output_format=OutputFormat.MP4, quality=QUALITY)
    return time.perf_counter() - t0


def run_pyav(frames: list[np.ndarray], out: Path) -> float:
    t0 = time.perf_counter()
    with av.open(str(out), mode="w", format="mp4", options={"movflags": "+faststart"}) as c:
        stream = c.add_stream("libx264", rate=Fraction(FPS))
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.options = {
            "crf": str(crf_for(OutputFormat.MP4, QUALITY)),
            "preset": X264_PRESET,
            "profile": "high",
        }
        for i, arr in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(arr, format="rgb24")
            vf.pts = i
            for packet in stream.encode(vf):
                c.mux(packet)
        for packet in stream.encode(None):
            c.mux(packet)
    return time.perf_counter() - t0


ALL_CAMERAS: list[str | None] = [
    None,
    "simple:horizontal=10",
    "simple:vertical=10",
    "simple:zoom=10",
    "simple:roll=10",
    "simple:roll=-10",
    "simple:pan=10",
    "simple:tilt=10",
    "down_back",
    "forward_up",
    "right_turn_forward",
    "left_turn_forward",
]
"""Every camera path at full scale (|value| = 10, the largest rotation), plus the default move."""


def parse_camera(text: str | None) -> CameraControl | None:
    if not text:
        return None
    kind, _, rest = text.partition(":")
    config = {}
    if rest:
        axis, _, value = rest.partition("=")
        config[axis] = float(value)
    return CameraControl(type=kind, config=config)


@dataclass
class Result:
    camera: str
    pyav: list[float]
    preview: list[float]
    size_pyav: int
    size_preview: int

    @property
    def ratio(self) -> float:
        return min(self.preview) / min(self.pyav)


def measure(camera_text: str | None, inputs: ResolvedInputs, repeat: int, tmp: Path) -> Result:
    """Best-of-``repeat`` alternating runs of both sides for one camera move."""
    s = spec(parse_camera(camera_text))
    clip = PreviewEngine().generate(s, inputs, 1, lambda f: None, lambda: False)
    frames = [np.array(f) for f in clip.frames]  # same frames, rendered outside the timing
    assert len(frames) == s.num_frames == 150
    preview_times, pyav_times = [], []
    for _ in range(repeat):
        pyav_times.append(run_pyav(frames, tmp / "pyav.mp4"))
        preview_times.append(run_preview(s, inputs, tmp / "preview.mp4"))
    return Result(
        camera_text or "none",
        pyav_times,
        preview_times,
        (tmp / "pyav.mp4").stat().st_size,
        (tmp / "preview.mp4").stat().st_size,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--camera", default=None, help="e.g. simple:zoom=5 or right_turn_forward")
    parser.add_argument(
        "--all", action="store_true", help="every camera move (ALL_CAMERAS), one table"
    )
    args = parser.parse_args()

    inputs = ResolvedInputs(first_frame=test_image())
    header = (
        f"i2v {WIDTH}x{HEIGHT} {SECONDS:g}s {FPS}fps (150 frames), "
        f"x264 preset={X264_PRESET} crf={crf_for(OutputFormat.MP4, QUALITY)}, "
        f"best of {args.repeat}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        if args.all:
            print(header)
            print(f"{'camera':<22} {'pyav only':>10} {'preview+enc':>12} {'ratio':>6}")
            worst = 0.0
            for camera_text in ALL_CAMERAS:
                r = measure(camera_text, inputs, args.repeat, Path(tmp))
                worst = max(worst, r.ratio)
                print(
                    f"{r.camera:<22} {min(r.pyav):>9.3f}s {min(r.preview):>11.3f}s {r.ratio:>6.2f}",
                    flush=True,
                )
            print(f"worst ratio: {worst:.2f}  (target <= 1.5)")
            return
        r = measure(args.camera, inputs, args.repeat, Path(tmp))
    print(f"{header}, camera={r.camera}")
    print(
        f"pyav encode only : {min(r.pyav):.3f} s  (runs: {', '.join(f'{t:.3f}' for t in r.pyav)})"
    )
    print(
        f"preview + encode : {min(r.preview):.3f} s  "
        f"(runs: {', '.join(f'{t:.3f}' for t in r.preview)})"
    )
    print(f"ratio            : {r.ratio:.2f}  (target <= 1.5)")
    print(f"file sizes       : pyav {r.size_pyav} B, preview {r.size_preview} B")


if __name__ == "__main__":
    main()
