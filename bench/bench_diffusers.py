"""Diffusers engine benchmark: plain diffusers vs reelserve's engine and its speed options, in one run.

Builds Wan 2.1 T2V 1.3B and Wan 2.2 TI2V 5B from their published configs with random weights (no
download), then for each model and size (1.3B: 832x480; 5B: 832x480 and 1280x704), 81 frames,
CFG 5.0, times:

1. a plain diffusers ``WanPipeline`` call;
2. the same job through :class:`reelserve.engines.diffusers.engine.DiffusersEngine` with no options
   (the ratio engine/plain must stay <= 1.01);
3. each profile speed option alone, through the engine exactly as a profile would set it
   (``DiffusersEngine.adopt`` applies the options and the compile warm-up as a load does), and the
   best combination of the math-preserving ones, each with its gain over the engine with none;
4. each time against the FLOP floor: the DiT's matmul FLOPs per step (projections, self- and
   cross-attention, FFN; both CFG passes) over the dense matmul rate measured in this same run;
5. peak GPU memory of each trial, and for each lossy option the PSNR of its output against the
   exact output of the same seed (random weights say nothing about beauty; PSNR says how far the
   option moves the numbers).

Denoising time per step is taken from the step callbacks (first to last step), so the text
encoder and the VAE decode, which no option touches, do not dilute the gains; whole-call times
are printed too. Every trial renders the same seed from a copy of the same random transformer.

Usage::

    python bench/bench_diffusers.py            # full size, needs a CUDA GPU (~60 GB for the 5B)
    python bench/bench_diffusers.py --small    # tiny shapes on the CPU, proves the script works
    python bench/bench_diffusers.py --models wan21-1.3b --steps 6

The numbers it printed are recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import copy
import gc
import importlib.util
import logging
import math
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

# The tests' offline builders (tokenizers trained here): shared with the tests, not copied.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "engines" / "diffusers"))
from diffusers_tiny import unigram_tokenizer

# Published configs of Wan-AI/Wan2.1-T2V-1.3B-Diffusers (transformer/config.json, vae, text_encoder).
WAN13_TRANSFORMER = dict(
    patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16,
    out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30, cross_attn_norm=True,
    qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=None, added_kv_proj_dim=None,
    rope_max_seq_len=1024,
)
WAN_VAE = dict(
    base_dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
    temperal_downsample=[False, True, True], dropout=0.0,
)
# Wan-AI/Wan2.2-TI2V-5B-Diffusers: a 24-head DiT over a 48-channel latent of the 16x VAE.
WAN5_TRANSFORMER = {**WAN13_TRANSFORMER, "num_attention_heads": 24, "in_channels": 48,
                    "out_channels": 48, "ffn_dim": 14336}
WAN22_VAE = dict(
    base_dim=160, decoder_base_dim=256, z_dim=48, in_channels=12, out_channels=12, is_residual=True,
    patch_size=2, scale_factor_spatial=16, scale_factor_temporal=4, dim_mult=[1, 2, 4, 4],
    num_res_blocks=2, attn_scales=[], temperal_downsample=[False, True, True], dropout=0.0,
    latents_mean=[0.0] * 48, latents_std=[1.0] * 48,
)
UMT5_XXL = dict(
    vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
    relative_attention_num_buckets=32, relative_attention_max_distance=128,
    feed_forward_proj="gated-gelu", dropout_rate=0.0, layer_norm_epsilon=1e-6,
)
# --small: same architectures, shrunk until a CPU runs them in seconds.
_SHRINK = {"num_attention_heads": 2, "attention_head_dim": 32, "ffn_dim": 128, "num_layers": 2,
           "text_dim": 64, "rope_max_seq_len": 64}
SMALL13_TRANSFORMER = {**WAN13_TRANSFORMER, **_SHRINK}
SMALL5_TRANSFORMER = {**WAN5_TRANSFORMER, **_SHRINK}
SMALL_VAE = {**WAN_VAE, "base_dim": 8, "dim_mult": [1, 1, 1, 1], "num_res_blocks": 1}
SMALL22_VAE = {**WAN22_VAE, "base_dim": 8, "decoder_base_dim": 8, "dim_mult": [1, 1, 1, 1],
               "num_res_blocks": 1}
SMALL_UMT5 = {**UMT5_XXL, "vocab_size": 512, "d_model": 64, "d_kv": 16, "d_ff": 128,
              "num_layers": 2, "num_heads": 4}

PROMPT = "a lighthouse on basalt cliffs at dusk, waves crash, fog rolls in"
NEGATIVE = "blurry, low quality"
SEED = 42


@dataclass(frozen=True)
class Model:
    """One benchmarked model: its configs, pipeline kind and the sizes it is timed at."""

    name: str
    kind: str
    transformer: dict[str, Any]
    vae: dict[str, Any]
    spatial: int  # VAE spatial factor x patch size: pixels per token side
    sizes: tuple[tuple[int, int], ...]
    expand_timesteps: bool = False


MODELS = {
    "wan21-1.3b": Model("Wan 2.1 T2V 1.3B", "wan-t2v", WAN13_TRANSFORMER, WAN_VAE, 16, ((832, 480),)),
    "wan22-5b": Model("Wan 2.2 TI2V 5B", "wan22-ti2v", WAN5_TRANSFORMER, WAN22_VAE, 32,
                      ((832, 480), (1280, 704)), expand_timesteps=True),
}
SMALL_MODELS = {
    "wan21-1.3b": Model("Wan 2.1 T2V (small)", "wan-t2v", SMALL13_TRANSFORMER, SMALL_VAE, 16, ((64, 64),)),
    "wan22-5b": Model("Wan 2.2 TI2V (small)", "wan22-ti2v", SMALL5_TRANSFORMER, SMALL22_VAE, 32,
                      ((64, 64), (96, 64)), expand_timesteps=True),
}


@dataclass(frozen=True)
class Job:
    width: int
    height: int
    frames: int
    fps: int
    steps: int
    guidance: float
    text_tokens: int = 512


@dataclass
class Trial:
    """One line of the table."""

    name: str
    options: dict[str, Any]
    lossy: bool = False
    steps: int | None = None  # the LoRA trial runs its own step count (4-step distilled)
    guidance: float | None = None
    step_s: float = math.nan
    call_s: float = math.nan
    peak_gb: float = math.nan
    psnr: float | None = None
    note: str = ""
    frames: np.ndarray | None = field(default=None, repr=False)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def tokenizer(vocab: int) -> Any:
    """A T5-style tokenizer trained here (offline), ids below ``vocab``: the tests' builder."""
    return unigram_tokenizer("t5", ["a lighthouse on basalt cliffs at dusk, waves, fog"], vocab)


def timed(device: str, fn: Callable[[], Any]) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def matmul_rate(device: str, dtype: torch.dtype, n: int) -> float:
    """Measured dense matmul FLOP/s at ``n x n`` in ``dtype`` on ``device``."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    reps = 20 if device.startswith("cuda") else 5
    seconds = timed(device, lambda: [a @ b for _ in range(reps)])
    return 2 * n**3 * reps / seconds


def dit_flops_per_step(cfg: dict[str, Any], job: Job, spatial: int, cfg_passes: int = 2) -> float:
    """Matmul FLOPs of one denoising step of a Wan DiT (both CFG passes).

    ``spatial`` is pixels per token side (VAE factor x patch): 16 for Wan 2.1, 32 for TI2V-5B.
    """
    d = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    lat_frames = (job.frames - 1) // 4 + 1
    tokens = lat_frames * (job.height // spatial) * (job.width // spatial)
    text = job.text_tokens
    per_layer = (
        4 * 2 * tokens * d * d  # self-attention q, k, v, o
        + 2 * 2 * tokens * tokens * d  # QK^T and AV
        + 2 * 2 * tokens * d * d  # cross-attention q, o
        + 2 * 2 * text * d * d  # cross-attention k, v over the text tokens
        + 2 * 2 * tokens * text * d  # cross-attention scores and values
        + 2 * 2 * tokens * d * cfg["ffn_dim"]  # FFN up and down
    )
    embed = 2 * tokens * d * (cfg["in_channels"] * 4) * 2  # patch embedding + output head
    return float(cfg_passes * (cfg["num_layers"] * per_layer + embed))


class Bench:
    """Shared parts of one model (text encoder, VAE, base transformer) and its trials."""

    def __init__(self, model: Model, small: bool, device: str, dtype: torch.dtype) -> None:
        import diffusers
        from transformers import UMT5Config, UMT5EncoderModel

        self.model, self.device, self.dtype = model, device, dtype
        torch.manual_seed(0)
        e_cfg = SMALL_UMT5 if small else UMT5_XXL
        with torch.device(device):
            self.transformer = diffusers.WanTransformer3DModel(**model.transformer).to(dtype).eval()
            self.vae = diffusers.AutoencoderKLWan(**model.vae).to(torch.float32)  # Wan VAE: fp32
            self.encoder = UMT5EncoderModel(UMT5Config(**e_cfg)).to(dtype).eval()
        self.tokenizer = tokenizer(e_cfg["vocab_size"])

    def pipeline(self, transformer: Any | None = None) -> Any:
        """A fresh WanPipeline around a copy of the base transformer (options change it in place)."""
        import diffusers

        scheduler = diffusers.UniPCMultistepScheduler(
            prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0,
            num_train_timesteps=1000)
        pipe = diffusers.WanPipeline(
            tokenizer=self.tokenizer, text_encoder=self.encoder, vae=self.vae, scheduler=scheduler,
            transformer=transformer if transformer is not None else copy.deepcopy(self.transformer),
            expand_timesteps=self.model.expand_timesteps)
        pipe.set_progress_bar_config(disable=True)
        return pipe


class StepClock:
    """Times denoising steps from the step callbacks (first step's end to the last's)."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.marks: list[float] = []

    def mark(self) -> None:
        sync(self.device)
        self.marks.append(time.perf_counter())

    def per_step(self) -> float:
        if len(self.marks) < 2:
            return math.nan
        return (self.marks[-1] - self.marks[0]) / (len(self.marks) - 1)


def run_plain(bench: Bench, pipe: Any, job: Job) -> tuple[float, float, np.ndarray]:
    """Plain diffusers: (s/step, s/call, frames)."""
    clock = StepClock(bench.device)

    def on_step(p: Any, i: int, t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        clock.mark()
        return kwargs

    out: dict[str, Any] = {}

    def call() -> None:
        out["frames"] = pipe(
            prompt=PROMPT, negative_prompt=NEGATIVE, height=job.height, width=job.width,
            num_frames=job.frames, num_inference_steps=job.steps, guidance_scale=job.guidance,
            generator=torch.Generator("cpu").manual_seed(SEED), output_type="np",
            callback_on_step_end=on_step).frames[0]

    seconds = timed(bench.device, call)
    return clock.per_step(), seconds, out["frames"]


def engine_for(bench: Bench, job: Job, options: dict[str, Any], workdir: Path,
               pipe: Any | None = None) -> tuple[Any, Any]:
    """A DiffusersEngine whose profile carries ``options``, with ``pipe`` made resident through
    ``adopt`` (options applied and compile warmed up exactly as a load would)."""
    from reelserve.engines.diffusers.engine import DiffusersEngine
    from reelserve.engines.diffusers.pipelines import LoadedPipeline
    from reelserve.engines.diffusers.profiles import Profile, ProfileEntry, ProfileSet
    from reelserve.settings import Settings
    from reelserve.tasks import Workflow

    profile = Profile(pipeline=bench.model.kind, weights=workdir, steps=job.steps,
                      guidance=job.guidance, native_size=f"{job.width}x{job.height}",
                      native_fps=job.fps, **options)
    profiles = ProfileSet([ProfileEntry("klingai:1@1", Workflow.T2V, profile)])
    engine = DiffusersEngine(profiles, Settings(diffusers_device=bench.device))
    loaded = LoadedPipeline(bench.model.kind, pipe if pipe is not None else bench.pipeline(),
                            bench.device, bench.dtype)
    engine.adopt(profile, loaded)
    return engine, profile


def run_engine(bench: Bench, engine: Any, job: Job) -> tuple[float, float, np.ndarray]:
    """The engine path (plan, callbacks, cover-fit of every frame): (s/step, s/call, frames)."""
    from reelserve.media.clip import ResolvedInputs
    from reelserve.tasks import GenerationSpec, Workflow

    spec = GenerationSpec(task_uuid="bench", model="klingai:1@1", workflow=Workflow.T2V,
                          width=job.width, height=job.height, fps=job.fps,
                          duration=(job.frames - 1) / job.fps, positive_prompt=PROMPT,
                          negative_prompt=NEGATIVE, cfg_scale=0.5, seeds=[SEED])
    clock = StepClock(bench.device)
    seen: set[float] = set()

    def progress(fraction: float) -> None:
        if fraction < 0.96 and fraction not in seen:  # the denoising share of the bar
            seen.add(fraction)
            clock.mark()

    out: dict[str, Any] = {}

    def call() -> None:
        clip = engine.generate(spec, ResolvedInputs(), SEED, progress, lambda: False)
        out["frames"] = np.stack(list(clip.frames))  # the encoder would pull every fitted frame

    seconds = timed(bench.device, call)
    return clock.per_step(), seconds, out["frames"]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8-range frame stacks (inf when identical)."""
    a = a.astype(np.float64) * (255.0 if a.dtype != np.uint8 and a.max() <= 1.0 else 1.0)
    b = b.astype(np.float64) * (255.0 if b.dtype != np.uint8 and b.max() <= 1.0 else 1.0)
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def random_lora(bench: Bench, path: Path, rank: int) -> Path:
    """A random LoRA over every attention projection of the transformer (diffusers/peft keys)."""
    from safetensors.torch import save_file

    torch.manual_seed(1)
    state: dict[str, torch.Tensor] = {}
    for name, module in bench.transformer.named_modules():
        if isinstance(module, torch.nn.Linear) and ".attn1." in name:
            state[f"transformer.{name}.lora_A.weight"] = torch.randn(rank, module.in_features) * 0.01
            state[f"transformer.{name}.lora_B.weight"] = torch.randn(module.out_features, rank) * 0.01
    save_file(state, str(path))
    return path


def attention_backends(device: str) -> list[str]:
    if not device.startswith("cuda"):
        return ["_native_math", "flex"]
    return ["_native_flash", "_native_cudnn", "_native_efficient", "flex", "flash", "_flash_3"]


def trials_for(bench: Bench, device: str, workdir: Path, small: bool) -> list[Trial]:
    """Each option alone (as a profile sets it); the combination is added after they ran."""
    backend = "inductor" if device.startswith("cuda") or not small else "eager"
    out = [Trial("engine, no options", {})]
    for name in attention_backends(device):
        out.append(Trial(f"attention_backend={name}", {"attention_backend": name}))
    out.append(Trial("cfg_batch", {"cfg_batch": True}))
    out.append(Trial(f"compile regional ({backend})",
                     {"compile": {"scope": "regional", "backend": backend}}))
    for sage in ("sage",):
        out.append(Trial(f"attention_backend={sage}", {"attention_backend": sage}, lossy=True))
    out.append(Trial("cache first_block 0.05", {"cache": {"kind": "first_block", "threshold": 0.05}},
                     lossy=True))
    out.append(Trial("cache taylorseer interval 3",
                     {"cache": {"kind": "taylorseer", "cache_interval": 3,
                                "disable_cache_before_step": 2}}, lossy=True))
    for kind in ("fp8", "int8"):
        out.append(Trial(f"quantize={kind}", {"quantize": kind}, lossy=True))
    if importlib.util.find_spec("peft") is not None:
        lora = random_lora(bench, workdir / "lora.safetensors", rank=4 if small else 32)
        out.append(Trial("loras (fused) + 4 steps, guidance 1", {"loras": [{"path": str(lora)}]},
                         lossy=True, steps=4, guidance=1.0,
                         note="a distilled LoRA's speed: fewer steps, no CFG; output is another model's"))
    return out


def run_trial(bench: Bench, trial: Trial, job: Job, workdir: Path) -> None:
    """Time one trial through the engine; failures become a note, not an abort."""
    from reelserve.engines.diffusers.options import check_options
    from reelserve.errors import ReelserveError

    tjob = Job(**{**job.__dict__, "steps": trial.steps or job.steps,
                  "guidance": trial.guidance if trial.guidance is not None else job.guidance})
    gc.collect()
    if bench.device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    try:
        engine, profile = engine_for(bench, tjob, trial.options, workdir)
        check_options(profile, "bench", trial.name)  # the start-time checks a profile gets
        run_engine(bench, engine, Job(**{**tjob.__dict__, "steps": 2}))  # shapes, allocator
        trial.step_s, trial.call_s, trial.frames = run_engine(bench, engine, tjob)
        if bench.device.startswith("cuda"):
            trial.peak_gb = torch.cuda.max_memory_allocated() / 2**30
    except (ReelserveError, RuntimeError, ValueError, ImportError, TypeError) as exc:
        message = exc.message if isinstance(exc, ReelserveError) else f"{type(exc).__name__}: {exc}"
        trial.note = f"unavailable here: {message.splitlines()[0][:110]}"
    finally:
        engine = None
        gc.collect()


def bench_model(key: str, model: Model, small: bool, device: str, dtype: torch.dtype,
                rate: float, steps: int, job_steps: int, workdir: Path) -> None:
    bench = Bench(model, small, device, dtype)
    for width, height in model.sizes:
        job = Job(width, height, 9 if small else 81, 16 if key == "wan21-1.3b" else 24, steps, 5.0,
                  64 if small else 512)
        flops = dit_flops_per_step(model.transformer, job, model.spatial)
        floor = flops / rate
        print(f"\n## {model.name}, {width}x{height}, {job.frames} frames, {steps} steps timed, "
              f"CFG {job.guidance}")
        print(f"DiT FLOPs/step (both CFG passes): {flops / 1e12:.2f} T; floor {floor:.3f} s/step "
              f"at {rate / 1e12:.1f} TFLOP/s")

        # Plain diffusers and the engine with no options on the very same pipeline object.
        pipe = bench.pipeline(bench.transformer)
        run_plain(bench, pipe, Job(**{**job.__dict__, "steps": 2}))  # warm-up
        engine, _ = engine_for(bench, job, {}, workdir, pipe=pipe)
        reps = 3 if small else 1
        plain = engine_plain = (math.inf, math.inf)
        exact: np.ndarray | None = None
        for _ in range(reps):  # interleaved, best of each: the stable number on a shared machine
            p_step, p_call, _frames = run_plain(bench, pipe, job)
            e_step, e_call, exact = run_engine(bench, engine, job)
            plain = (min(plain[0], p_step), min(plain[1], p_call))
            engine_plain = (min(engine_plain[0], e_step), min(engine_plain[1], e_call))
        del engine, pipe
        print(f"plain diffusers: {plain[0]:.3f} s/step ({plain[1]:.2f} s/call)   engine, no options: "
              f"{engine_plain[0]:.3f} s/step ({engine_plain[1]:.2f} s/call)   ratio engine/plain "
              f"{engine_plain[1] / plain[1]:.3f} per call, {engine_plain[0] / plain[0]:.3f} per step")
        print(f"vs FLOP floor: plain {plain[0] / floor:.2f}x, engine {engine_plain[0] / floor:.2f}x")

        trials = trials_for(bench, device, workdir, small)
        base = trials[0]
        for trial in trials:
            run_trial(bench, trial, job, workdir)
        # Best math-preserving combination: every exact option that gained, one backend (the best).
        exact_gains = [t for t in trials[1:] if not t.lossy and t.step_s < base.step_s * 0.98]
        combo: dict[str, Any] = {}
        for t in sorted(exact_gains, key=lambda t: t.step_s, reverse=True):
            combo.update(t.options)  # the fastest backend is applied last and wins
        if len(exact_gains) > 1:
            best = Trial("best math-preserving combination: " + ", ".join(
                f"{k}={v if not isinstance(v, dict) else v.get('scope', v)}" for k, v in combo.items()), combo)
            run_trial(bench, best, job, workdir)
            trials.append(best)
        elif exact_gains:
            print(f"best math-preserving combination: {exact_gains[0].name} alone (no other exact "
                  "option gained here)")
        else:
            print("best math-preserving combination: none (no exact option gained here)")
        reference = base.frames if base.frames is not None else exact
        print(f"\n{'trial':<58} {'s/step':>8} {'job s':>8} {'gain':>6} {'xfloor':>7} {'s/call':>8} "
              f"{'peak GiB':>8} {'PSNR dB':>8}")
        print(f"(job s: denoising time of a {job_steps}-step job, or of the trial's own steps; "
              f"gain: over the engine with no options on that; s/call: {steps}-step call incl. "
              "text encoder and VAE decode)")
        for t in trials:
            if t.frames is not None and reference is not None and (t.lossy or t is not base):
                t.psnr = psnr(t.frames, reference)
            if math.isnan(t.step_s):
                print(f"{t.name:<58} {t.note}")
                continue
            # The LoRA trial runs fewer steps: compare whole denoising times, not per-step ones.
            job_s = t.step_s * (t.steps or job_steps)
            gain = (base.step_s * job_steps) / job_s
            psnr_text = ("exact" if t.psnr == math.inf else f"{t.psnr:.1f}") if t.psnr is not None else "-"
            if t.steps is not None:
                psnr_text = "n/a"
            print(f"{t.name:<58} {t.step_s:>8.3f} {job_s:>8.1f} {gain:>5.2f}x {t.step_s / floor:>6.2f}x "
                  f"{t.call_s:>8.2f} {t.peak_gb:>8.1f} {psnr_text:>8}" + (f"  ({t.note})" if t.note else ""))
            t.frames = None
    del bench
    gc.collect()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="tiny shapes on the CPU (proves the script)")
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=sorted(MODELS))
    parser.add_argument("--job-steps", type=int, default=50,
                        help="steps of the job the table projects to (default 50, Wan's default)")
    parser.add_argument("--steps", type=int, default=None,
                        help="denoising steps per timed call (default 10 on a GPU, 4 with --small); "
                        "per-step times are what is compared")
    args = parser.parse_args()
    # Failed trials are reported in one line; the engine's own traceback log would drown them.
    logging.getLogger("reelserve").setLevel(logging.CRITICAL)
    logging.getLogger("diffusers").setLevel(logging.ERROR)
    device = "cuda" if torch.cuda.is_available() and not args.small else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    name = torch.cuda.get_device_name() if device == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    import diffusers

    print(f"device: {name}, dtype {dtype}, torch {torch.__version__}, diffusers {diffusers.__version__}")
    rate = matmul_rate(device, dtype, 8192 if device == "cuda" else 1024)
    print(f"measured matmul rate: {rate / 1e12:.2f} TFLOP/s ({dtype})")
    steps = args.steps or (4 if args.small else 10)
    models = SMALL_MODELS if args.small else MODELS
    with tempfile.TemporaryDirectory() as tmp:
        for key in args.models:
            bench_model(key, models[key], args.small, device, dtype, rate, steps, args.job_steps,
                        Path(tmp))


if __name__ == "__main__":
    main()
