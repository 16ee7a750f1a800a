"""Diffusers engine benchmark: plain diffusers vs reelserve's engine, side by side in one run.

Builds Wan 2.1 T2V 1.3B components from their published configs with random weights (no download),
then times:

1. a plain ``WanPipeline`` call (832x480, 81 frames, 50 steps, CFG 5.0);
2. the same job through :class:`reelserve.engines.diffusers.engine.DiffusersEngine` (including
   progress callbacks and fitting/resampling every output frame);
3. both against the FLOP floor: the DiT's FLOPs per step (projections, attention, cross-attention,
   FFN; x2 for CFG) divided by the matmul rate measured in this same run;
4. speedups that keep the math, each timed on the engine path: SDPA backends, CFG batching (the
   conditional and unconditional passes in one batch), torch.compile.

Usage::

    python bench/bench_diffusers.py            # full size, needs a CUDA GPU (~20 GB)
    python bench/bench_diffusers.py --small    # tiny shapes on the CPU, proves the script works

The numbers it printed are recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

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
UMT5_XXL = dict(
    vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
    relative_attention_num_buckets=32, relative_attention_max_distance=128,
    feed_forward_proj="gated-gelu", dropout_rate=0.0, layer_norm_epsilon=1e-6,
)
# --small: same architecture, shrunk until a CPU runs it in seconds.
SMALL_TRANSFORMER = {**WAN13_TRANSFORMER, "num_attention_heads": 2, "attention_head_dim": 32,
                     "ffn_dim": 128, "num_layers": 2, "text_dim": 64, "rope_max_seq_len": 64}
SMALL_VAE = {**WAN_VAE, "base_dim": 8, "dim_mult": [1, 1, 1, 1], "num_res_blocks": 1}
SMALL_UMT5 = {**UMT5_XXL, "vocab_size": 512, "d_model": 64, "d_kv": 16, "d_ff": 128,
              "num_layers": 2, "num_heads": 4}


@dataclass
class Job:
    width: int
    height: int
    frames: int
    fps: int
    steps: int
    guidance: float
    text_tokens: int


FULL_JOB = Job(832, 480, 81, 16, 50, 5.0, 512)
SMALL_JOB = Job(64, 64, 9, 8, 4, 5.0, 64)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(device: str, fn: Callable[[], Any]) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def tokenizer(vocab: int) -> Any:
    """A T5-style tokenizer trained here (offline); ids stay below the encoder's vocab."""
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import T5TokenizerFast

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=min(vocab, 200), special_tokens=["<pad>", "</s>", "<unk>"],
                                      unk_token="<unk>")
    tok.train_from_iterator(["a lighthouse on basalt cliffs at dusk, waves, fog"] * 20, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", tok.token_to_id("</s>"))])
    return T5TokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                           extra_ids=0)


def build_pipeline(small: bool, device: str, dtype: torch.dtype) -> Any:
    """WanPipeline with random weights from the configs above, on ``device``."""
    import diffusers
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(0)
    t_cfg, v_cfg, e_cfg = (SMALL_TRANSFORMER, SMALL_VAE, SMALL_UMT5) if small else (
        WAN13_TRANSFORMER, WAN_VAE, UMT5_XXL)
    with torch.device(device):
        transformer = diffusers.WanTransformer3DModel(**t_cfg).to(dtype)
        vae = diffusers.AutoencoderKLWan(**v_cfg).to(torch.float32)  # Wan VAE decodes in fp32
        encoder = UMT5EncoderModel(UMT5Config(**e_cfg)).to(dtype).eval()
    scheduler = diffusers.UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0, num_train_timesteps=1000)
    pipe = diffusers.WanPipeline(tokenizer=tokenizer(e_cfg["vocab_size"]), text_encoder=encoder, vae=vae,
                                 transformer=transformer, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def dit_flops_per_step(cfg: dict[str, Any], job: Job, cfg_passes: int = 2) -> float:
    """Matmul FLOPs of one denoising step of the Wan DiT (x2 for CFG's two passes)."""
    d = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    lat_frames = (job.frames - 1) // 4 + 1
    tokens = lat_frames * (job.height // 16) * (job.width // 16)  # VAE /8, patch /2
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


def matmul_rate(device: str, dtype: torch.dtype, n: int) -> float:
    """Measured dense matmul FLOP/s at ``n x n`` in ``dtype`` on ``device``."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    reps = 20 if device.startswith("cuda") else 5
    seconds = timed(device, lambda: [a @ b for _ in range(reps)])
    return 2 * n**3 * reps / seconds


class CfgBatchedTransformer(torch.nn.Module):
    """Runs the conditional and unconditional passes of a step as one batch of two.

    WanPipeline calls the transformer twice per step with the same latents and timestep and
    different text embeddings; the second call's result is only needed after both. On the
    conditional call this wrapper runs both halves batched and keeps the unconditional half for
    the next call. Same math, one larger kernel launch series instead of two.
    """

    def __init__(self, inner: torch.nn.Module, negative: torch.Tensor) -> None:
        super().__init__()
        self.inner = inner
        self.negative = negative
        self._stash: Any = None

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.inner, name)

    def forward(self, hidden_states: torch.Tensor, timestep: torch.Tensor,
                encoder_hidden_states: torch.Tensor, **kwargs: Any) -> Any:
        if encoder_hidden_states is self.negative and self._stash is not None:
            out, self._stash = self._stash, None
            return (out,)
        both = self.inner(
            hidden_states=torch.cat([hidden_states, hidden_states]),
            timestep=torch.cat([timestep, timestep]),
            encoder_hidden_states=torch.cat([encoder_hidden_states, self.negative]),
            **{**kwargs, "return_dict": False},
        )[0]
        cond, self._stash = both.chunk(2)
        return (cond,)


def engine_for(pipe: Any, job: Job, device: str, dtype: torch.dtype, workdir: Path) -> Any:
    """A DiffusersEngine whose residency cache already holds ``pipe`` (no load timed)."""
    from reelserve.engines.diffusers.engine import DiffusersEngine
    from reelserve.engines.diffusers.pipelines import LoadedPipeline
    from reelserve.engines.diffusers.profiles import Profile, ProfileEntry, ProfileSet
    from reelserve.settings import Settings
    from reelserve.tasks import Workflow

    profile = Profile(pipeline="wan-t2v", weights=workdir, steps=job.steps, guidance=job.guidance,
                      native_size=f"{job.width}x{job.height}", native_fps=job.fps)
    profiles = ProfileSet([ProfileEntry("klingai:1@1", Workflow.T2V, profile)])
    engine = DiffusersEngine(profiles, Settings(diffusers_device=device))
    with engine.cache.use(profile.resident_key(), lambda: LoadedPipeline("wan-t2v", pipe, device, dtype)):
        pass
    return engine


def run_engine(engine: Any, job: Job) -> int:
    from reelserve.engines.base import ResolvedInputs
    from reelserve.tasks import GenerationSpec, Workflow

    spec = GenerationSpec(task_uuid="bench", model="klingai:1@1", workflow=Workflow.T2V,
                          width=job.width, height=job.height, fps=job.fps,
                          duration=job.frames / job.fps, positive_prompt=PROMPT,
                          negative_prompt=NEGATIVE, cfg_scale=0.5, seeds=[42])
    clip = engine.generate(spec, ResolvedInputs(), 42, lambda f: None, lambda: False)
    return sum(1 for _ in clip.frames)  # the encoder would pull every fitted frame


PROMPT = "a lighthouse on basalt cliffs at dusk, waves crash, fog rolls in"
NEGATIVE = "blurry, low quality"


@contextlib.contextmanager
def sdpa(backend: str | None) -> Iterator[None]:
    if backend is None:
        yield
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel([getattr(SDPBackend, backend)]):
        yield


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="tiny shapes on the CPU (proves the script)")
    parser.add_argument("--speedup-steps", type=int, default=10,
                        help="steps per speedup trial (per-step time is what is compared)")
    args = parser.parse_args()
    # Failed trials are reported in one line below; the engine's own traceback log would drown them.
    logging.getLogger("reelserve").setLevel(logging.CRITICAL)
    device = "cuda" if torch.cuda.is_available() and not args.small else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    job = SMALL_JOB if args.small else FULL_JOB
    cfg = SMALL_TRANSFORMER if args.small else WAN13_TRANSFORMER
    name = torch.cuda.get_device_name() if device == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {name}, dtype {dtype}, torch {torch.__version__}")
    print(f"job: {job.width}x{job.height}, {job.frames} frames, {job.steps} steps, CFG {job.guidance}")

    pipe = build_pipeline(args.small, device, dtype)
    rate = matmul_rate(device, dtype, 8192 if device == "cuda" else 1024)
    flops_step = dit_flops_per_step(cfg, job)
    floor = flops_step * job.steps / rate
    print(f"matmul rate: {rate / 1e12:.2f} TFLOP/s ({dtype}); DiT FLOPs/step (CFG): {flops_step / 1e12:.2f} T;"
          f" floor for {job.steps} steps: {floor:.2f} s")

    def plain(steps: int = job.steps) -> None:
        pipe(prompt=PROMPT, negative_prompt=NEGATIVE, height=job.height, width=job.width,
             num_frames=job.frames, num_inference_steps=steps, guidance_scale=job.guidance,
             generator=torch.Generator("cpu").manual_seed(42), output_type="np")

    with tempfile.TemporaryDirectory() as tmp:
        engine = engine_for(pipe, job, device, dtype, Path(tmp))
        plain(2)  # warm-up: kernels, allocator
        # Interleaved repeats, best of each: on a shared machine the minimum is the stable number.
        reps = 3 if args.small else 1
        t_plain, t_engine = math.inf, math.inf
        for _ in range(reps):
            t_plain = min(t_plain, timed(device, plain))
            t_engine = min(t_engine, timed(device, lambda: run_engine(engine, job)))
        print(f"plain diffusers: {t_plain:.2f} s   reelserve engine: {t_engine:.2f} s   "
              f"ratio engine/plain: {t_engine / t_plain:.3f}")
        print(f"vs FLOP floor: plain {t_plain / floor:.2f}x, engine {t_engine / floor:.2f}x")

        # Speedups that keep the math, per-step times on short runs of the engine path.
        steps = min(args.speedup_steps, job.steps)
        short = Job(**{**job.__dict__, "steps": steps})
        short_engine = engine_for(pipe, short, device, dtype, Path(tmp))

        def per_step() -> float:
            return min(timed(device, lambda: run_engine(short_engine, short)) for _ in range(reps)) / steps

        per_step()  # warm-up of the short shape
        base = per_step()
        print(f"\nspeedups (engine path, {steps}-step runs, s/step; baseline {base:.3f}):")
        backends = ["FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION", "MATH"]
        for backend in backends:
            try:
                with sdpa(backend):
                    t = per_step()
                print(f"  SDPA {backend:<20} {t:.3f} s/step  gain {base / t:.2f}x")
            except Exception as exc:
                print(f"  SDPA {backend:<20} unavailable here ({type(exc).__name__}: {str(exc)[:80]})")

        inner = pipe.transformer
        try:
            # Precompute the embeddings once so the wrapper recognises the unconditional pass.
            pos, neg = pipe.encode_prompt(PROMPT, NEGATIVE, device=device, dtype=dtype)
            wrapped = CfgBatchedTransformer(inner, neg)
            pipe.transformer = wrapped
            pipe.encode_prompt = lambda *a, **k: (pos, neg)
            t = per_step()
            print(f"  CFG batching             {t:.3f} s/step  gain {base / t:.2f}x")
        except Exception as exc:
            print(f"  CFG batching             failed ({type(exc).__name__}: {str(exc)[:120]})")
        finally:
            pipe.transformer = inner
            pipe.__dict__.pop("encode_prompt", None)

        try:
            compiled = torch.compile(inner, fullgraph=False, dynamic=False)
            pipe.transformer = compiled
            compile_time = timed(device, lambda: run_engine(short_engine, Job(**{**short.__dict__, "steps": 2})))
            t = per_step()
            print(f"  torch.compile            {t:.3f} s/step  gain {base / t:.2f}x (compile {compile_time:.1f} s)")
        except Exception as exc:
            print(f"  torch.compile            unavailable here ({type(exc).__name__}: {str(exc)[:120]})")
        finally:
            pipe.transformer = inner


if __name__ == "__main__":
    main()
