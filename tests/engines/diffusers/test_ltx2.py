"""LTX-2 (pipeline kind ``ltx2``): video with generated sound, and keepOriginalSound on v2v.

A tiny random LTX-2 pipeline (audio-video transformer, video VAE, audio VAE, vocoder, Gemma 3
text encoder, locally trained tokenizer) is saved and loaded through the real profile code.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from diffusers_tiny import profile_toml, tiny_spec
from PIL import Image

from media.media_helpers import audio_duration
from media.media_helpers import make_video as make_video_with_audio
from reelserve.engines.registry import EngineRegistry
from reelserve.media.clip import ResolvedInputs
from reelserve.media.probe import probe
from reelserve.settings import Settings
from reelserve.tasks import GenerationSpec
from reelserve_testing import poll_results, runware, upload_image, upload_media

MODEL = "klingai:1@1"


def _spec(workflow: str = "t2v", **update: Any) -> GenerationSpec:
    spec: GenerationSpec = tiny_spec(workflow, "waves crash on a rocky shore", 3, **{"model": MODEL, **update})
    return spec


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_sound_gives_generated_audio_of_the_clip_length(
    dtype: str, tiny_weights: dict[str, Path], write_profiles: Callable[..., Path]
) -> None:
    path = write_profiles([(MODEL, "t2v", "ltx2", tiny_weights["ltx2"], {"dtype": dtype})])
    engine = EngineRegistry.from_settings(Settings(profiles=path, diffusers_device="cpu")).diffusers
    assert engine is not None
    clip = engine.generate(_spec(sound=True), ResolvedInputs(), 3, lambda f: None, lambda: False)
    audio = clip.generated_audio
    assert audio is not None and clip.audio is None
    # float32 numpy even from a bf16 pipeline (out.audio stays a bf16 torch tensor there)
    assert isinstance(audio.samples, np.ndarray) and audio.samples.dtype == np.float32
    assert audio.sample_rate == 16000 and audio.samples.shape[0] == 2
    # 2 s at 4 fps generates 9 frames (2.25 s); the audio covers them (the encoder trims to 2 s)
    assert 2.0 <= audio.samples.shape[1] / audio.sample_rate <= 2.4
    assert float(np.abs(audio.samples).max()) > 0.0
    assert len(list(clip.frames)) == clip.num_frames == 16
    silent = engine.generate(_spec(), ResolvedInputs(), 3, lambda f: None, lambda: False)
    assert silent.generated_audio is None and silent.audio is None


@pytest.mark.slow
def test_keep_original_sound_on_a_diffusers_v2v_profile(
    tiny_weights: dict[str, Path], write_profiles: Callable[..., Path], tmp_path: Path
) -> None:
    from reelserve.media.clip import VideoInput
    from reelserve.media.encode import encode_clip

    source = make_video_with_audio(tmp_path / "in.mp4", width=96, height=64, frames=12, fps=12,
                                   audio_seconds=1.0)
    info = probe(source)
    video = VideoInput(source, info.width, info.height, info.fps, info.num_frames, info.duration,
                       info.has_audio)
    path = write_profiles([("klingai:kling@o1-standard", "v2v", "ltx-condition", tiny_weights["ltx-condition"], {})])
    engine = EngineRegistry.from_settings(Settings(profiles=path, diffusers_device="cpu")).diffusers
    assert engine is not None
    spec = _spec("v2v", model="klingai:kling@o1-standard", width=96, height=64, duration=info.duration,
                 keep_original_sound=True)
    clip = engine.generate(spec, ResolvedInputs(input_video=video), 1, lambda f: None, lambda: False)
    assert clip.audio is not None and clip.audio.path == source
    out = encode_clip(clip, tmp_path / "out.mp4", output_format=spec.output_format, quality=70)
    assert probe(out).audio_codec == "aac"
    assert audio_duration(out) == pytest.approx(audio_duration(source), abs=0.05)
    # without the flag the edit is silent
    plain = engine.generate(spec.model_copy(update={"keep_original_sound": False}),
                            ResolvedInputs(input_video=video), 1, lambda f: None, lambda: False)
    assert plain.audio is None


def _image(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))


@pytest.mark.slow
@pytest.mark.parametrize("workflow", ["i2v", "flf2v"])
def test_image_workflows_make_sound_too(
    workflow: str, tiny_weights: dict[str, Path], write_profiles: Callable[..., Path]
) -> None:
    path = write_profiles([(MODEL, workflow, "ltx2", tiny_weights["ltx2"], {})])
    engine = EngineRegistry.from_settings(Settings(profiles=path, diffusers_device="cpu")).diffusers
    assert engine is not None
    inputs = ResolvedInputs(first_frame=_image(1), last_frame=_image(2) if workflow == "flf2v" else None)
    clip = engine.generate(_spec(workflow, sound=True), inputs, 3, lambda f: None, lambda: False)
    assert clip.generated_audio is not None and clip.generated_audio.samples.shape[0] == 2
    assert len(list(clip.frames)) == 16


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_sound_and_kept_sound_through_the_server(
    server_factory: Any, tiny_weights: dict[str, Path], tmp_path: Path
) -> None:
    """Real requests, preview engine off: every file below was rendered by a diffusers profile."""
    o1 = "klingai:kling@o1-standard"
    path = tmp_path / "profiles.toml"
    path.write_text(profile_toml([
        (MODEL, "t2v", "ltx2", tiny_weights["ltx2"], {}),
        ("klingai:2@1", "i2v", "ltx2", tiny_weights["ltx2"], {}),
        (o1, "v2v", "ltx-condition", tiny_weights["ltx-condition"], {}),
    ]))
    server = server_factory(env={
        "REELSERVE_PROFILES": str(path),
        "REELSERVE_PREVIEW_FALLBACK": "false",
        "REELSERVE_DIFFUSERS_DEVICE": "cpu",
        "REELSERVE_WORKERS": "1",
    })
    # O1 edits take 3 to 10 s of video
    source = make_video_with_audio(tmp_path / "in.mp4", width=320, height=320, frames=36, fps=12,
                                   audio_seconds=3.0)
    with httpx.Client(base_url=server.url, timeout=120.0) as http:
        first = upload_image(http, 640, 360, 1)
        video = upload_media(http, source.read_bytes())
        base = {"taskType": "videoInference", "positivePrompt": "waves crash on a rocky shore",
                "deliveryMethod": "async"}
        sound = {"providerSettings": {"klingai": {"sound": True}}}
        # (task, expected (width, height, fps, frames, audio codec, audio seconds))
        tasks: dict[str, tuple[dict[str, Any], tuple[int, int, float, int, str, float]]] = {
            "t2v.mp4": ({"model": MODEL, "width": 720, "height": 720, "duration": 5, **sound},
                        (720, 720, 30, 150, "aac", 5.0)),
            "i2v.webm": ({"model": "klingai:2@1", "width": 720, "height": 720, "duration": 5,
                          "outputFormat": "WEBM", "inputs": {"frameImages": [{"image": first, "frame": "first"}]},
                          **sound}, (720, 720, 30, 150, "opus", 5.0)),
            "v2v.mp4": ({"model": o1, "inputs": {"video": video},
                         "providerSettings": {"klingai": {"keepOriginalSound": True}}},
                        (320, 320, 24, 72, "aac", 3.0)),
        }
        submitted = {}
        for name, (task, expected) in tasks.items():
            task_uuid = str(uuid.uuid4())
            resp = runware(http, [{**base, **task, "taskUUID": task_uuid}])
            assert resp.status_code == 200, resp.text
            submitted[name] = (task_uuid, expected)
        for name, (task_uuid, (width, height, fps, frames, codec, seconds)) in submitted.items():
            items, errors = poll_results(http, task_uuid, timeout=900)
            assert not errors, (name, errors)
            out = tmp_path / name
            out.write_bytes(http.get(items[0]["videoURL"]).content)
            info = probe(out)
            assert (info.width, info.height, info.num_frames) == (width, height, frames), name
            assert info.fps == pytest.approx(fps), name
            assert info.audio_codec == codec, name
            # the audio stream lasts as long as the clip (lossy codecs: one frame of padding)
            assert seconds - 0.01 <= audio_duration(out) <= seconds + 0.03, name
