"""The diffusers engine on tiny random pipelines of every kind, loaded through real profiles."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from diffusers_tiny import tiny_spec
from PIL import Image

from reelserve.engines.diffusers.engine import (
    DiffusersEngine,
    generation_frames,
    generation_size,
    resample_indices,
)
from reelserve.engines.diffusers.profiles import Profile, ProfileSet
from reelserve.engines.registry import EngineRegistry
from reelserve.errors import CANCELLED_CODE, CancelledError
from reelserve.media.clip import Clip, ResolvedInputs, VideoInput
from reelserve.settings import Settings
from reelserve.tasks import GenerationSpec, OutputFormat, Workflow

COMBOS = [
    ("wan-t2v", "t2v"),
    ("wan-i2v", "i2v"),
    ("wan-flf2v", "flf2v"),
    ("wan22-i2v", "i2v"),
    ("wan22-i2v", "flf2v"),
    ("wan22-ti2v", "t2v"),
    ("wan22-ti2v", "i2v"),
    ("wan-vace", "t2v"),
    ("wan-vace", "i2v"),
    ("wan-vace", "flf2v"),
    ("wan-vace", "r2v"),
    ("wan-vace", "v2v"),
    ("ltx-condition", "t2v"),
    ("ltx-condition", "i2v"),
    ("ltx-condition", "flf2v"),
    ("ltx-condition", "v2v"),
    ("ltx2", "t2v"),
    ("ltx2", "i2v"),
    ("ltx2", "flf2v"),
]
MODEL = "klingai:kling@o1-standard"


def _image(color: tuple[int, int, int], size: tuple[int, int] = (320, 400)) -> Image.Image:
    image = Image.new("RGB", size, color)
    image.paste((255 - color[0], 80, 40), (40, 40, 160, 200))
    return image


@pytest.fixture(scope="module")
def input_video(tmp_path_factory: pytest.TempPathFactory) -> VideoInput:
    """A real 1 s, 12 fps H.264 file written by the one encoder."""
    from reelserve.media.encode import encode_clip
    from reelserve.media.probe import probe

    def frames() -> Iterator[np.ndarray]:
        for i in range(12):
            frame = np.zeros((96, 128, 3), np.uint8)
            frame[:, : 10 * (i + 1)] = (200, 30, 30)
            yield frame

    path = tmp_path_factory.mktemp("video") / "in.mp4"
    encode_clip(Clip(frames(), 12, 128, 96, 12), path, output_format=OutputFormat.MP4, quality=90)
    info = probe(path)
    return VideoInput(path, info.width, info.height, info.fps, info.num_frames, info.duration, False)


def _spec(workflow: str, **update: Any) -> GenerationSpec:
    spec: GenerationSpec = tiny_spec(workflow, "a cat dances on the moon", 7, **{"model": MODEL, **update})
    return spec


def _inputs(workflow: str, video: VideoInput) -> ResolvedInputs:
    wf = Workflow(workflow)
    return ResolvedInputs(
        first_frame=_image((200, 20, 20)) if wf in (Workflow.I2V, Workflow.FLF2V) else None,
        last_frame=_image((20, 20, 200)) if wf is Workflow.FLF2V else None,
        reference_images=[_image((20, 200, 20))] if wf is Workflow.R2V else [],
        reference_videos=[video] if wf is Workflow.R2V else [],
        input_video=video if wf is Workflow.V2V else None,
    )


def _engine(write_profiles: Callable[..., Path], entries: list[tuple[str, str, str, Path, dict[str, Any]]], **settings: Any) -> DiffusersEngine:
    path = write_profiles(entries)
    registry = EngineRegistry.from_settings(Settings(profiles=path, diffusers_device="cpu", **settings))
    assert registry.diffusers is not None
    return registry.diffusers


def _frames(clip: Clip) -> list[np.ndarray]:
    frames = list(clip.frames)
    assert len(frames) == clip.num_frames
    return frames


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "workflow"), COMBOS, ids=[f"{k}-{w}" for k, w in COMBOS])
def test_every_kind_and_workflow_yields_the_contract_clip(
    kind: str, workflow: str, tiny_weights: dict[str, Path], write_profiles: Callable[..., Path],
    input_video: VideoInput,
) -> None:
    engine = _engine(write_profiles, [(MODEL, workflow, kind, tiny_weights[kind], {})])
    spec = _spec(workflow)
    if workflow == "v2v":  # the worker resolves v2v size/duration from the input video
        spec = spec.resolved(width=input_video.width, height=input_video.height, duration=input_video.duration)
    progress: list[float] = []
    clip = engine.generate(spec, _inputs(workflow, input_video), 7, progress.append, lambda: False)
    assert (clip.width, clip.height, clip.fps, clip.num_frames) == (spec.width, spec.height, 8, spec.num_frames)
    frames = _frames(clip)
    assert all(f.shape == (spec.height, spec.width, 3) and f.dtype == np.uint8 for f in frames)
    assert progress == sorted(progress) and progress[-1] == 1.0 and len(progress) >= 2


@pytest.mark.slow
def test_clip_encodes_to_the_contract_size_fps_and_count(
    tiny_weights: dict[str, Path], write_profiles: Callable[..., Path], tmp_path: Path
) -> None:
    from reelserve.media.encode import encode_clip
    from reelserve.media.probe import probe

    engine = _engine(write_profiles, [(MODEL, "t2v", "wan-t2v", tiny_weights["wan-t2v"], {})])
    spec = _spec("t2v", width=1280, height=720, fps=30, duration=1.0)
    clip = engine.generate(spec, ResolvedInputs(), 3, lambda f: None, lambda: False)
    out = encode_clip(clip, tmp_path / "o.mp4", output_format=OutputFormat.MP4, quality=80)
    info = probe(out)
    assert (info.width, info.height, info.num_frames) == (1280, 720, 30)
    assert info.fps == pytest.approx(30)


@pytest.mark.slow
def test_seeds_are_reproducible_and_distinct(tiny_weights: dict[str, Path], write_profiles: Callable[..., Path]) -> None:
    engine = _engine(write_profiles, [(MODEL, "t2v", "wan-t2v", tiny_weights["wan-t2v"], {})])
    spec = _spec("t2v")

    def render(seed: int) -> np.ndarray:
        return np.stack(_frames(engine.generate(spec, ResolvedInputs(), seed, lambda f: None, lambda: False)))

    a, b, c = render(1), render(1), render(2)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.slow
def test_batched_seeds_render_together(tiny_weights: dict[str, Path], write_profiles: Callable[..., Path]) -> None:
    engine = _engine(write_profiles, [(MODEL, "t2v", "wan-t2v", tiny_weights["wan-t2v"], {"batch": 2})])
    spec = _spec("t2v", seeds=[1, 2, 3])
    calls: list[int] = []
    with engine._use(engine.profiles.get(MODEL, "t2v").profile) as loaded:  # type: ignore[union-attr]
        loaded.pipe.transformer.register_forward_hook(lambda *a: calls.append(1))
    clips = engine.generate_many(spec, ResolvedInputs(), [1, 2, 3], lambda f: None, lambda: False)
    assert len(clips) == 3
    stacks = [np.stack(_frames(c)) for c in clips]
    assert not np.array_equal(stacks[0], stacks[1])
    # 2 steps x CFG (2 transformer calls) per pipeline call, 2 calls for 3 seeds at batch 2
    assert len(calls) == 2 * 2 * 2


@pytest.mark.slow
def test_cancel_mid_run_stops_within_one_step(tiny_weights: dict[str, Path], write_profiles: Callable[..., Path]) -> None:
    engine = _engine(write_profiles, [(MODEL, "t2v", "wan-t2v", tiny_weights["wan-t2v"], {"steps": 8})])
    forward_calls: list[int] = []
    with engine._use(engine.profiles.get(MODEL, "t2v").profile) as loaded:  # type: ignore[union-attr]
        loaded.pipe.transformer.register_forward_hook(lambda *a: forward_calls.append(1))
        vae_calls: list[int] = []
        loaded.pipe.vae.register_forward_pre_hook(lambda *a: vae_calls.append(1))
    progress: list[float] = []
    with pytest.raises(CancelledError) as err:
        # cancelled() turns true once the first step reported progress
        engine.generate(_spec("t2v"), ResolvedInputs(), 1, progress.append, lambda: bool(progress))
    assert err.value.code == CANCELLED_CODE
    assert len(progress) == 1  # exactly one step ran out of 8
    assert len(forward_calls) == 2  # that step's conditional and unconditional passes, no more
    # and the pipeline is usable afterwards (its interrupt flag resets on the next call)
    clip = engine.generate(_spec("t2v"), ResolvedInputs(), 1, lambda f: None, lambda: False)
    assert len(_frames(clip)) == clip.num_frames


@pytest.mark.slow
def test_small_memory_budget_evicts_least_recently_used(
    tiny_weights: dict[str, Path], write_profiles: Callable[..., Path]
) -> None:
    entries = [
        ("klingai:1@1", "t2v", "wan-t2v", tiny_weights["wan-t2v"], {}),
        ("klingai:6@1", "t2v", "wan22-ti2v", tiny_weights["wan22-ti2v"], {}),
        ("klingai:6@1", "i2v", "wan22-ti2v", tiny_weights["wan22-ti2v"], {}),
    ]
    probe_engine = _engine(write_profiles, entries)
    probe_engine.load("klingai:1@1", "t2v")
    probe_engine.load("klingai:6@1", "t2v")
    sizes = probe_engine.cache.resident_bytes()
    # room for the larger one alone, not both
    budget_gb = 0.75 * sizes / 1e9
    registry = EngineRegistry.from_settings(
        Settings(profiles=write_profiles(entries), diffusers_device="cpu", diffusers_memory_gb=budget_gb)
    )
    engine = registry.diffusers
    assert engine is not None
    t2v = _spec("t2v", model="klingai:1@1")
    ti2v = _spec("t2v", model="klingai:6@1")
    engine.generate(t2v, ResolvedInputs(), 1, lambda f: None, lambda: False)
    assert registry.preferred_models() == {"klingai:1@1"}
    engine.generate(ti2v, ResolvedInputs(), 1, lambda f: None, lambda: False)
    assert registry.preferred_models() == {"klingai:6@1"}
    # i2v of the same model shares the resident TI2V pipeline: a hit, no load, no eviction
    i2v = _spec("i2v", model="klingai:6@1")
    engine.generate(i2v, _inputs("i2v", None), 1, lambda f: None, lambda: False)  # type: ignore[arg-type]
    assert engine.cache.stats.loads == 2 and engine.cache.stats.hits >= 1
    engine.generate(t2v, ResolvedInputs(), 1, lambda f: None, lambda: False)
    assert registry.preferred_models() == {"klingai:1@1"}
    assert [key[0] for key in engine.cache.stats.evicted] == ["wan-t2v", "wan22-ti2v"]
    assert engine.cache.resident_bytes() <= budget_gb * 1e9


@pytest.mark.slow
def test_weights_that_do_not_fit_the_kind_are_refused_on_load(
    tiny_weights: dict[str, Path], write_profiles: Callable[..., Path]
) -> None:
    from reelserve.errors import EngineError

    engine = _engine(write_profiles, [(MODEL, "i2v", "wan-i2v", tiny_weights["wan-t2v"], {})])
    with pytest.raises(EngineError, match="does not fit pipeline 'wan-i2v'"):
        engine.load(MODEL, "i2v")


# -- pure sizing helpers ----------------------------------------------------------------------


def _profile(**kw: Any) -> Profile:
    return Profile(pipeline=kw.pop("pipeline", "wan-t2v"), weights=Path("w"), **kw)


@pytest.mark.parametrize(
    ("pipeline", "native", "req", "expected"),
    [
        ("wan-t2v", "832x480", (1280, 720), (832, 480)),
        ("wan-t2v", "832x480", (720, 1280), (480, 832)),
        ("wan-t2v", "832x480", (720, 720), (624, 624)),
        ("ltx-condition", "1216x704", (1920, 1080), (1216, 704)),
        ("ltx-condition", "1216x704", (1080, 1080), (928, 928)),
    ],
)
def test_generation_size_keeps_native_area_at_requested_aspect(
    pipeline: str, native: str, req: tuple[int, int], expected: tuple[int, int]
) -> None:
    profile = _profile(pipeline=pipeline, native_size=native)
    w, h = generation_size(profile, *req)
    assert (w, h) == expected
    assert w % profile.rule.side_multiple == 0 and h % profile.rule.side_multiple == 0


def test_generation_frames_follow_the_pipeline_rule() -> None:
    assert generation_frames(_profile(native_fps=16), 5.0) == 81
    assert generation_frames(_profile(native_fps=16), 10.0) == 161
    assert generation_frames(_profile(native_fps=16, max_frames=81), 10.0) == 81
    assert generation_frames(_profile(pipeline="ltx-condition", native_fps=30), 5.0) == 153
    assert generation_frames(_profile(native_fps=24), 3.0) == 73


def test_resample_indices_nearest_in_time_and_stretch_when_capped() -> None:
    # 16 fps, 81 frames -> 30 fps, 150 frames: t = i/30, nearest source frame
    idx = resample_indices(81, 16, 150, 30)
    assert len(idx) == 150 and idx[0] == 0 and idx[-1] == 79 and idx == sorted(idx)
    # capped source (5 s) over a 10 s output: stretched to the end, not frozen at 5 s
    idx = resample_indices(81, 16, 300, 30)
    assert idx[-1] == 80 and idx[150] == 40


def test_profile_guidance_mapping() -> None:
    profile = _profile(guidance=5.0)
    assert profile.guidance_for(0.5) == 5.0
    assert profile.guidance_for(0.0) == 1.0
    assert profile.guidance_for(1.0) == 9.0


def test_profileset_get_accepts_strings(tmp_path: Path) -> None:
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "model_index.json").write_text("{}")
    path = tmp_path / "p.toml"
    path.write_text('[models."klingai:1@1".t2v]\npipeline = "wan-t2v"\nweights = "w"\n')
    assert ProfileSet.load(path).get("klingai:1@1", "t2v") is not None
