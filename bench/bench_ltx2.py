"""LTX-2 benchmark: one 5 s 1280x704 clip with audio at 24 fps, reelserve's engine vs plain diffusers.

Builds an LTX-2 pipeline (audio-video transformer, video VAE, audio VAE, vocoder, text connectors,
Gemma 3 text encoder) from FULL-SIZE configs with random weights (nothing is downloaded), then
renders the same text-to-video job twice on the same pipeline object:

1. through reelserve's engine: ``DiffusersEngine.adopt`` makes the pipeline resident as a load
   would, and ``DiffusersEngine.generate`` plans and runs it through ``pipelines.run`` (the ltx2
   kind) with ``sound`` on, exactly as a job does;
2. as a plain ``LTX2Pipeline`` call with the same arguments ``pipelines.run`` passes.

It prints the whole-call time and the denoising time per step of each, their ratio engine/plain,
the peak GPU memory of each (``torch.cuda.max_memory_allocated``), the steps, and the generated
audio's duration against the clip's (the engine hands the encoder the model's slightly long audio,
which it trims; here both lengths are shown).

Where the full-size numbers come from (diffusers 0.42.1 as installed; no internet here):

- transformer: ``LTX2VideoTransformer3DModel.__init__`` defaults (models/transformers/
  transformer_ltx2.py): 48 layers, 32 heads x 128 (video, 4096 wide), 32 heads x 64 (audio, 2048
  wide), 128 latent channels each, caption_channels 3840. The tiny test pipeline's
  ``rope_type="split"``/``rope_double_precision=False`` are NOT used here; the class defaults are.
- video VAE: ``AutoencoderKLLTX2Video.__init__`` defaults (128 latent channels), with the
  compression ratios set to 32 / 8 explicitly (see ``VIDEO_VAE`` for why).
- audio VAE: ``AutoencoderKLLTX2Audio.__init__`` defaults (16 kHz, hop 160, 64 mel bins, 8 latent
  channels: 8 x 64/4 = 128 = the transformer's audio_in_channels = base_channels, the width of
  its latent statistics).
- vocoder: ``LTX2Vocoder.__init__`` defaults (pipelines/ltx2/vocoder.py): hidden 1024, upsampling
  6x5x2x2x2 = 240 = 24000 Hz / (16000 Hz / 160 hop), stereo 24 kHz out.
- connectors: ``LTX2TextConnectors.__init__`` defaults (pipelines/ltx2/connectors.py): 30 heads x
  128, 2 layers, 128 learnable registers; ``caption_channels=3840`` is commented there as "default
  Gemma-3-12B text encoder hidden_size" and ``text_proj_in_factor=49`` is its 48 layers + the
  embeddings (the connectors read every hidden state).
- Gemma 3 12B text tower: hidden 3840 and 48 layers from the two numbers above; the rest
  (intermediate 15360, 16 heads, 8 KV heads, head_dim 256, vocab 262208, sliding window 1024) is
  the published google/gemma-3-12b config as remembered, NOT verified here (transformers'
  ``Gemma3TextConfig`` defaults describe the 2B: head_dim 256 and vocab 262208 match). Only the
  hidden states reach the connectors, so a mismatch there changes the encoder's time and memory,
  not the rest of the pipeline. The SigLIP vision tower of the real checkpoint is replaced by a
  one-layer one: prompts are text only and it never runs. ``--light-text-encoder`` keeps the
  hidden size but uses 4 layers (and a 5-fold connector input), for a GPU too small for the 12B
  one. Built here on the meta device these configs count 18.9B parameters (transformer), 11.8B
  (Gemma 3 text tower with its 262k x 3840 embeddings), 1.4B (connectors), 1.2B (video VAE),
  0.05B each (audio VAE, vocoder): about 67 GB of bf16 weights.
- the tokenizer is a Gemma-style Unigram tokenizer trained here on a few sentences; prompts pad to
  the pipeline's default ``max_sequence_length`` (1024), as real ones do.

The scheduler is ``FlowMatchEulerDiscreteScheduler`` with its defaults; the call uses the
pipeline's defaults for everything the engine does not set (STG, modality guidance, audio guidance).

Usage::

    python bench/bench_ltx2.py                # full size, needs a CUDA GPU (67 GB of weights), 10 steps
    python bench/bench_ltx2.py --steps 30     # LTX-2's default step count
    python bench/bench_ltx2.py --small        # shrunk on the CPU, proves the script works

The numbers it printed are recorded in docs/benchmarks.md ("LTX-2 with audio").
"""

from __future__ import annotations

import argparse
import gc
import logging
import math
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

# The tests' offline builders (tokenizers trained here) and the Wan benchmark's step timing
# (this folder is on the path when a script of it runs): shared, not copied.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "engines" / "diffusers"))
from bench_diffusers import StepClock, sync
from diffusers_tiny import unigram_tokenizer

# Full-size configs: see the module docstring for the source of every number.
TRANSFORMER = dict(
    in_channels=128, out_channels=128, patch_size=1, patch_size_t=1, num_attention_heads=32,
    attention_head_dim=128, cross_attention_dim=4096, audio_in_channels=128, audio_out_channels=128,
    audio_num_attention_heads=32, audio_attention_head_dim=64, audio_cross_attention_dim=2048,
    num_layers=48, caption_channels=3840,
)
# AutoencoderKLLTX2Video's defaults, except the compression ratios: left at None, the class derives
# 4 x 2**4 = 64 and 2**4 = 16 from its four scaling blocks, while its decoder actually upsamples
# 32x / 8x, the pipeline's fallbacks (pipeline_ltx2.py) and the transformer's
# vae_scale_factors=(8, 32, 32) say 32 / 8. Unset, the pipeline plans half the frames and size.
VIDEO_VAE: dict[str, Any] = dict(spatial_compression_ratio=32, temporal_compression_ratio=8)
AUDIO_VAE = dict(base_channels=128, ch_mult=(1, 2, 4), num_res_blocks=2, latent_channels=8,
                 mel_bins=64, sample_rate=16000, mel_hop_length=160)
VOCODER = dict(in_channels=128, hidden_channels=1024, upsample_factors=[6, 5, 2, 2, 2],
               upsample_kernel_sizes=[16, 15, 8, 4, 4], output_sampling_rate=24000)
CONNECTORS = dict(caption_channels=3840, text_proj_in_factor=49, video_connector_num_attention_heads=30,
                  video_connector_attention_head_dim=128, audio_connector_num_attention_heads=30,
                  audio_connector_attention_head_dim=128)
GEMMA3_12B_TEXT = dict(
    vocab_size=262208, hidden_size=3840, intermediate_size=15360, num_hidden_layers=48,
    num_attention_heads=16, num_key_value_heads=8, head_dim=256, sliding_window=1024,
    max_position_embeddings=131072,
)
# The vision tower never runs for text prompts: one small layer stands in for SigLIP.
VISION_STUB = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                   image_size=32, patch_size=8)

# --small: the same architectures (same compression factors, same 24 kHz audio chain), shrunk
# in width and depth until a 2-core CPU renders the 5 s clip at 128x128 in about a minute.
SMALL_TRANSFORMER = {**TRANSFORMER, "num_attention_heads": 2, "attention_head_dim": 16,
                     "cross_attention_dim": 32, "audio_num_attention_heads": 2,
                     "audio_attention_head_dim": 8, "audio_cross_attention_dim": 16, "num_layers": 2,
                     "caption_channels": 32, "audio_in_channels": 8, "audio_out_channels": 8}
SMALL_VIDEO_VAE = dict(**VIDEO_VAE, block_out_channels=(8, 16, 32, 64), decoder_block_out_channels=(8, 16, 32),
                       layers_per_block=(1, 1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 1))
# The audio VAE's latent statistics are ``base_channels`` wide and must match the packed latent
# (latent_channels x mel_bins / 4): 2 x 16 / 4 = 8; the vocoder reads 2 x 16 mel channels.
SMALL_AUDIO_VAE = {**AUDIO_VAE, "base_channels": 8, "num_res_blocks": 1, "latent_channels": 2,
                   "mel_bins": 16}
SMALL_VOCODER = {**VOCODER, "hidden_channels": 32, "in_channels": 32}
SMALL_CONNECTORS = {**CONNECTORS, "caption_channels": 32, "text_proj_in_factor": 3,
                    "video_connector_num_attention_heads": 4, "video_connector_attention_head_dim": 8,
                    "audio_connector_num_attention_heads": 4, "audio_connector_attention_head_dim": 8}
SMALL_GEMMA_TEXT = dict(vocab_size=512, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=1, head_dim=8, sliding_window=64,
                        max_position_embeddings=2048)

PROMPT = "a lighthouse on basalt cliffs at dusk, waves crash on the rocks, gulls cry, wind howls"
NEGATIVE = "blurry, low quality, distorted audio"
SEED = 42
MODEL = "lightricks:2@1"  # any id: the benchmark's own profile set maps it to the ltx2 kind


@dataclass(frozen=True)
class Job:
    """The benchmarked clip."""

    width: int
    height: int
    duration: float
    fps: int
    steps: int
    guidance: float = 4.0  # the engine's profile guidance (CFGScale 0.5 maps to it)


@dataclass
class Result:
    """One timed call."""

    call_s: float = math.nan
    step_s: float = math.nan
    steps_seen: int = 0
    peak_gib: float = math.nan
    frames: int = 0
    audio_s: float = math.nan
    extra: dict[str, Any] = field(default_factory=dict)


def gemma_tokenizer(vocab: int) -> Any:
    """A Gemma-style tokenizer trained here (offline), ids below ``vocab``: the tests' builder."""
    return unigram_tokenizer("gemma", [PROMPT, NEGATIVE], vocab)


def build_pipeline(small: bool, light_text: bool, device: str, dtype: torch.dtype) -> Any:
    """The LTX-2 pipeline from configs with random weights, built directly on ``device`` in
    ``dtype`` (building 19B parameters in float32 first would need twice the memory)."""
    import diffusers
    from diffusers.pipelines.ltx2 import LTX2TextConnectors
    from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    text_cfg = dict(SMALL_GEMMA_TEXT if small else GEMMA3_12B_TEXT)
    connectors_cfg = dict(SMALL_CONNECTORS if small else CONNECTORS)
    if light_text and not small:
        text_cfg["num_hidden_layers"] = 4
        connectors_cfg["text_proj_in_factor"] = 5
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            text_encoder = Gemma3ForConditionalGeneration(
                Gemma3Config(text_config=text_cfg, vision_config=VISION_STUB, mm_tokens_per_image=4)
            ).eval()
            transformer = diffusers.LTX2VideoTransformer3DModel(
                **(SMALL_TRANSFORMER if small else TRANSFORMER)).eval()
            connectors = LTX2TextConnectors(**connectors_cfg).eval()
            vae = diffusers.AutoencoderKLLTX2Video(**(SMALL_VIDEO_VAE if small else VIDEO_VAE)).eval()
            audio_vae = diffusers.AutoencoderKLLTX2Audio(**(SMALL_AUDIO_VAE if small else AUDIO_VAE)).eval()
            vocoder = LTX2Vocoder(**(SMALL_VOCODER if small else VOCODER)).eval()
    finally:
        torch.set_default_dtype(previous)
    pipe = diffusers.LTX2Pipeline(
        transformer=transformer, vae=vae, audio_vae=audio_vae,
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(), text_encoder=text_encoder,
        tokenizer=gemma_tokenizer(text_cfg["vocab_size"]), connectors=connectors, vocoder=vocoder,
    ).to(device, dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def billions(module: torch.nn.Module) -> float:
    return sum(p.numel() for p in module.parameters()) / 1e9


def measured(device: str, fn: Callable[[], None], result: Result) -> Result:
    """Run ``fn`` once, filling ``result``'s wall time and peak GPU memory."""
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    result.call_s = time.perf_counter() - start
    if device.startswith("cuda"):
        result.peak_gib = torch.cuda.max_memory_allocated() / 2**30
    return result


def make_engine(pipe: Any, job: Job, device: str, dtype: torch.dtype, workdir: Path) -> tuple[Any, Any]:
    """A DiffusersEngine with ``pipe`` resident for an ltx2 profile at the job's native size and
    rate (``adopt`` prepares it exactly as a load would)."""
    from reelserve.engines.diffusers.engine import DiffusersEngine
    from reelserve.engines.diffusers.pipelines import LoadedPipeline
    from reelserve.engines.diffusers.profiles import Profile, ProfileEntry, ProfileSet
    from reelserve.settings import Settings
    from reelserve.tasks import Workflow

    profile = Profile(pipeline="ltx2", weights=workdir, steps=job.steps, guidance=job.guidance,
                      native_size=f"{job.width}x{job.height}", native_fps=job.fps)
    engine = DiffusersEngine(ProfileSet([ProfileEntry(MODEL, Workflow.T2V, profile)]),
                             Settings(diffusers_device=device))
    engine.adopt(profile, LoadedPipeline("ltx2", pipe, device, dtype))
    return engine, profile


def run_engine(engine: Any, job: Job, device: str) -> Result:
    """The engine path: plan, ``pipelines.run``, audio handed over, every fitted frame pulled."""
    import numpy as np

    from reelserve.media.clip import ResolvedInputs
    from reelserve.tasks import GenerationSpec, Workflow

    spec = GenerationSpec(task_uuid="bench", model=MODEL, workflow=Workflow.T2V, width=job.width,
                          height=job.height, fps=job.fps, duration=job.duration, positive_prompt=PROMPT,
                          negative_prompt=NEGATIVE, cfg_scale=0.5, seeds=[SEED], sound=True)
    clock = StepClock(device)
    seen: set[float] = set()

    def progress(fraction: float) -> None:
        if fraction < 0.96 and fraction not in seen:  # the denoising share of the bar
            seen.add(fraction)
            clock.mark()

    result = Result()

    def call() -> None:
        clip = engine.generate(spec, ResolvedInputs(), SEED, progress, lambda: False)
        result.frames = len(np.stack(list(clip.frames)))  # the encoder would pull every frame
        audio = clip.generated_audio
        if audio is not None:
            result.audio_s = audio.samples.shape[-1] / audio.sample_rate
            result.extra["audio"] = f"{audio.samples.shape[0]} ch, {audio.sample_rate} Hz, {audio.samples.dtype}"

    measured(device, call, result)
    result.step_s, result.steps_seen = clock.per_step(), len(clock.marks)
    return result


def run_plain(pipe: Any, job: Job, frames: int, device: str, steps: int | None = None) -> Result:
    """Plain diffusers with the arguments ``pipelines.run`` passes for an ltx2 text-to-video job."""
    clock = StepClock(device)

    def on_step(p: Any, i: int, t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        clock.mark()
        return kwargs

    result = Result()

    def call() -> None:
        out = pipe(prompt=PROMPT, negative_prompt=NEGATIVE, height=job.height, width=job.width,
                   num_frames=frames, num_inference_steps=steps or job.steps,
                   guidance_scale=job.guidance, generator=torch.Generator("cpu").manual_seed(SEED),
                   num_videos_per_prompt=1, output_type="np", frame_rate=float(job.fps),
                   callback_on_step_end=on_step)
        result.frames = out.frames.shape[1]
        result.audio_s = out.audio.shape[-1] / pipe.vocoder.config.output_sampling_rate

    measured(device, call, result)
    result.step_s, result.steps_seen = clock.per_step(), len(clock.marks)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="shrunk models at 128x128 on the CPU")
    parser.add_argument("--steps", type=int, default=None,
                        help="denoising steps (default 10 on a GPU, 3 with --small; LTX-2's own "
                        "default is 30, the per-step time projects to it)")
    parser.add_argument("--light-text-encoder", action="store_true",
                        help="a 4-layer Gemma 3 with the 12B's hidden size instead of the 48-layer one")
    parser.add_argument("--reps", type=int, default=None,
                        help="interleaved engine/plain repetitions, best of each (default 1, 2 with --small)")
    args = parser.parse_args()
    logging.getLogger("diffusers").setLevel(logging.ERROR)
    device = "cuda" if torch.cuda.is_available() and not args.small else "cpu"
    if device == "cpu" and not args.small:
        parser.error("the full-size run needs a CUDA GPU; use --small on the CPU")
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    steps = args.steps or (3 if args.small else 10)
    job = Job(128, 128, 5.0, 24, steps) if args.small else Job(1280, 704, 5.0, 24, steps)
    reps = args.reps or (2 if args.small else 1)
    import diffusers

    name = torch.cuda.get_device_name() if device == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {name}, dtype {dtype}, torch {torch.__version__}, diffusers {diffusers.__version__}")
    start = time.perf_counter()
    pipe = build_pipeline(args.small, args.light_text_encoder, device, dtype)
    print(f"built in {time.perf_counter() - start:.1f} s: transformer {billions(pipe.transformer):.3f} B, "
          f"text encoder {billions(pipe.text_encoder):.3f} B, connectors {billions(pipe.connectors):.3f} B, "
          f"video VAE {billions(pipe.vae):.3f} B, audio VAE {billions(pipe.audio_vae):.4f} B, "
          f"vocoder {billions(pipe.vocoder):.4f} B parameters")
    if device == "cuda":
        print(f"weights resident: {torch.cuda.memory_allocated() / 2**30:.1f} GiB")

    with tempfile.TemporaryDirectory() as tmp:
        from reelserve.engines.diffusers.engine import generation_frames

        engine, profile = make_engine(pipe, job, device, dtype, Path(tmp))
        frames = generation_frames(profile, job.duration)  # what the engine asks the pipeline for
        print(f"\n## LTX-2 text-to-video with audio: {job.width}x{job.height}, {job.duration:g} s at "
              f"{job.fps} fps = {frames} frames, {steps} steps, guidance {job.guidance}")
        # Warm-up (kernels, allocator) at the same shapes; one step keeps it short.
        warm = run_plain(pipe, job, frames, device, steps=1)
        print(f"warm-up (1 step, plain): {warm.call_s:.2f} s")
        best_engine = best_plain = Result(call_s=math.inf)
        for _ in range(reps):  # interleaved, best of each: the stable number on a shared machine
            e = run_engine(engine, job, device)
            p = run_plain(pipe, job, frames, device)
            best_engine = e if e.call_s < best_engine.call_s else best_engine
            best_plain = p if p.call_s < best_plain.call_s else best_plain
        for label, r in (("engine (DiffusersEngine.generate)", best_engine), ("plain LTX2Pipeline", best_plain)):
            clip_s = r.frames / job.fps  # the engine's clip has the spec's frame count
            peak = f"{r.peak_gib:.1f} GiB" if not math.isnan(r.peak_gib) else "n/a (CPU)"
            print(f"{label:<34} {r.call_s:8.2f} s/call  {r.step_s:7.3f} s/step  steps {r.steps_seen}  "
                  f"peak {peak}  frames {r.frames}  audio {r.audio_s:.3f} s vs clip {clip_s:.3f} s "
                  f"({(r.audio_s - clip_s) * 1000:+.0f} ms){'  ' + r.extra['audio'] if 'audio' in r.extra else ''}")
        print(f"ratio engine/plain: {best_engine.call_s / best_plain.call_s:.3f} per call, "
              f"{best_engine.step_s / best_plain.step_s:.3f} per step")
        print(f"projected denoising for 30 steps (LTX-2's default): engine {best_engine.step_s * 30:.1f} s, "
              f"plain {best_plain.step_s * 30:.1f} s")


if __name__ == "__main__":
    main()
