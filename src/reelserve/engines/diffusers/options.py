"""Speed options of a diffusers profile: what they are, how they are checked, how they are applied.

A profile may ask for (see docs/diffusers.md, "Speed options")::

    attention_backend = "_native_flash"       # diffusers' set_attention_backend on the transformer(s)
    compile = "regional"                      # or "full", "none", or a table (scope, backend, mode)
    cfg_batch = true                          # conditional + unconditional passes in one batch
    cache = { kind = "first_block", threshold = 0.05 }   # diffusers enable_cache (lossy)
    quantize = "int8"                         # weight-only, torchao (lossy)
    loras = [{ path = "loras/lightning.safetensors", weight = 1.0 }]  # fused at load

Checking (:func:`check_options`) is pure: no torch, no diffusers import, only
``importlib.util.find_spec`` for the optional packages a choice needs, so the server can refuse a
bad profile at start. Applying (:func:`apply_options`) happens once per load, on the loaded
pipeline, in this order: static LoRAs are fused (into full-precision weights), then weights are
quantized, then the attention backend, cache, CFG batching and compile are set. The denoising loop
is never copied: every option is a diffusers or torch feature set on the stock modules, except CFG
batching, which wraps the transformer call.
"""

from __future__ import annotations

import importlib.util
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from reelserve.errors import EngineError, ErrorKind

log = logging.getLogger(__name__)

#: ``diffusers.models.attention_dispatch.AttentionBackendName`` values of diffusers 0.42, copied so
#: a profile can be checked without importing diffusers. Loading re-checks against diffusers itself.
ATTENTION_BACKENDS: tuple[str, ...] = (
    "native", "flex", "_native_cudnn", "_native_efficient", "_native_flash", "_native_math",
    "_native_npu", "_native_xla",
    "flash", "flash_hub", "flash_varlen", "flash_varlen_hub", "flash_4_hub", "_flash_3",
    "_flash_varlen_3", "_flash_3_hub", "_flash_3_varlen_hub", "aiter_fa2_hub",
    "sage", "sage_hub", "sage_blackwell_hub", "sage_varlen", "_sage_qk_int8_pv_fp8_cuda",
    "_sage_qk_int8_pv_fp8_cuda_sm90", "_sage_qk_int8_pv_fp16_cuda", "_sage_qk_int8_pv_fp16_triton",
    "xformers",
)

#: Attention backends whose result differs from exact attention beyond rounding (SageAttention
#: quantizes Q and K to int8 and, in some variants, P·V to fp8).
LOSSY_BACKENDS = frozenset(b for b in ATTENTION_BACKENDS if "sage" in b)


def backend_package(backend: str) -> tuple[str, str] | None:
    """The (import name, pip name) an attention backend needs beyond torch, or ``None``."""
    if backend.endswith("_hub"):
        return "kernels", "kernels"  # downloads its kernel from the hub at load time
    if backend in ("flash", "flash_varlen"):
        return "flash_attn", "flash-attn"
    if backend in ("_flash_3", "_flash_varlen_3"):
        return "flash_attn_interface", "flash-attn 3 (built from source)"
    if "sage" in backend:
        return "sageattention", "sageattention"
    if backend == "xformers":
        return "xformers", "xformers"
    if backend == "_native_npu":
        return "torch_npu", "torch-npu"
    if backend == "_native_xla":
        return "torch_xla", "torch-xla"
    return None


#: Backends that run on the CPU too (the rest need a CUDA device).
CPU_BACKENDS = frozenset({"native", "flex", "_native_math"})

#: Cache kinds: the diffusers config class and the keys a profile may set for it (scalars and
#: ranges only; callbacks are wired by the engine). The profile's ``steps`` fills MagCache's
#: ``num_inference_steps``.
CACHE_KINDS: dict[str, tuple[str, frozenset[str]]] = {
    "first_block": ("FirstBlockCacheConfig", frozenset({"threshold"})),
    "mag": ("MagCacheConfig", frozenset({"threshold", "max_skip_steps", "retention_ratio", "mag_ratios"})),
    "taylorseer": ("TaylorSeerCacheConfig", frozenset({
        "cache_interval", "disable_cache_before_step", "disable_cache_after_step", "max_order",
        "use_lite_mode"})),
    "faster": ("FasterCacheConfig", frozenset({
        "spatial_attention_block_skip_range", "temporal_attention_block_skip_range",
        "spatial_attention_timestep_skip_range", "temporal_attention_timestep_skip_range",
        "low_frequency_weight_update_timestep_range", "high_frequency_weight_update_timestep_range",
        "alpha_low_frequency", "alpha_high_frequency", "unconditional_batch_skip_range",
        "unconditional_batch_timestep_skip_range", "is_guidance_distilled"})),
    "pyramid": ("PyramidAttentionBroadcastConfig", frozenset({
        "spatial_attention_block_skip_range", "temporal_attention_block_skip_range",
        "cross_attention_block_skip_range", "spatial_attention_timestep_skip_range",
        "temporal_attention_timestep_skip_range", "cross_attention_timestep_skip_range"})),
}

#: Config keys that are (low, high) ranges in diffusers (TOML gives lists).
_RANGE_KEYS = frozenset(k for _, keys in CACHE_KINDS.values() for k in keys if k.endswith("_range")
                        and "timestep" in k)

#: Pipeline kinds whose transformer call can take the CFG batch wrapper: Wan pipelines call the
#: transformer twice per step with the same latents and timestep. LTX already batches CFG inside
#: its pipeline; VACE's control inputs are per-layer and are not split here.
CFG_BATCH_KINDS = frozenset({"wan-t2v", "wan-i2v", "wan-flf2v", "wan22-i2v", "wan22-ti2v"})

QUANTIZE_CONFIGS = {"int8": "Int8WeightOnlyConfig", "fp8": "Float8WeightOnlyConfig"}


class CacheOption(BaseModel):
    """``cache = { kind = "...", <thresholds> }``: diffusers ``enable_cache`` (lossy)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    kind: Literal["first_block", "mag", "taylorseer", "faster", "pyramid"]

    @model_validator(mode="after")
    def _keys(self) -> CacheOption:
        allowed = CACHE_KINDS[self.kind][1]
        extra = sorted(set(self.model_extra or {}) - allowed)
        if extra:
            raise ValueError(
                f"cache kind {self.kind!r} takes no key(s) {extra}; allowed: {sorted(allowed)}")
        if self.kind == "mag" and "mag_ratios" not in (self.model_extra or {}):
            raise ValueError("cache kind 'mag' needs mag_ratios (model-dependent; calibrate them "
                             "with diffusers' MagCacheConfig(calibrate=True))")
        return self

    def params(self) -> dict[str, Any]:
        """The thresholds given, as diffusers config keyword arguments."""
        out = dict(self.model_extra or {})
        for key in _RANGE_KEYS & set(out):
            out[key] = tuple(out[key])
        return out


class CompileOption(BaseModel):
    """``compile = { scope = "regional", backend = "inductor", mode = ..., fullgraph = ... }``.

    ``regional`` compiles each repeated transformer block (``compile_repeated_blocks``: the same
    speed as a whole-model compile for a fraction of the compile time); ``full`` compiles the
    whole transformer.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    scope: Literal["regional", "full", "none"] = "regional"
    backend: str = "inductor"
    mode: str | None = None
    fullgraph: bool = False
    dynamic: bool | None = False

    @property
    def enabled(self) -> bool:
        """Whether anything is compiled."""
        return self.scope != "none"


class LoraOption(BaseModel):
    """One static LoRA, fused into the weights at load (``load_lora_weights`` + ``fuse_lora``).

    Either ``path`` (a local ``.safetensors`` file or folder, relative to the profile file) or
    ``repo`` (a hub id, with ``weight_name`` naming the file in it; needs the hub cache or
    internet at load time).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: Path | None = None
    repo: str | None = None
    weight_name: str | None = None
    weight: float = Field(default=1.0, ge=-10.0, le=10.0)
    target: Literal["transformer", "transformer_2"] = "transformer"

    @model_validator(mode="after")
    def _source(self) -> LoraOption:
        if (self.path is None) == (self.repo is None):
            raise ValueError("a LoRA needs exactly one of path (a local file) or repo (a hub id)")
        return self


def parse_compile(value: Any) -> CompileOption:
    """``compile`` as written in a profile: a bool, a scope string or a table."""
    if isinstance(value, CompileOption):
        return value
    if value is None or value is False:
        return CompileOption(scope="none")
    if value is True:
        return CompileOption()
    if isinstance(value, str):
        return CompileOption(scope=value)  # type: ignore[arg-type]  # pydantic checks the literal
    return CompileOption.model_validate(value)


def _fail(where: str, label: str, key: str, message: str, allowed: Any = None) -> EngineError:
    return EngineError(
        "invalidProfile", f"{where}: {label}: {key}: {message}", parameter="profiles",
        allowed_values=allowed, kind=ErrorKind.UNAVAILABLE)


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def check_options(profile: Any, where: str, label: str) -> None:
    """Refuse speed options that cannot work: unknown backend, an option the pipeline kind cannot
    take, a package that is not installed, a LoRA file that is not there.

    Pure (no torch/diffusers import). ``profile`` is a :class:`~.profiles.Profile`.

    Raises:
        EngineError: code ``invalidProfile`` naming ``where`` (the file), ``label`` (the entry),
            the key and what is allowed.
    """
    backend = profile.attention_backend
    if backend is not None:
        if backend not in ATTENTION_BACKENDS:
            raise _fail(where, label, "attention_backend", f"unknown backend {backend!r}; allowed: "
                        f"{list(ATTENTION_BACKENDS)}", list(ATTENTION_BACKENDS))
        need = backend_package(backend)
        if need is not None and not _has(need[0]):
            raise _fail(where, label, "attention_backend",
                        f"backend {backend!r} needs the missing package {need[1]!r} "
                        f"(pip install {need[1]}); backends without extra packages: "
                        f"{sorted(b for b in ATTENTION_BACKENDS if backend_package(b) is None)}")
    if profile.cfg_batch and profile.pipeline not in CFG_BATCH_KINDS:
        why = ("its pipeline already runs both passes as one batch" if profile.pipeline.startswith("ltx")
               else "its pipeline's control inputs are not split per pass")
        raise _fail(where, label, "cfg_batch", f"pipeline {profile.pipeline!r} cannot take it ({why}); "
                    f"kinds that can: {sorted(CFG_BATCH_KINDS)}", sorted(CFG_BATCH_KINDS))
    if profile.quantize is not None and not _has("torchao"):
        raise _fail(where, label, "quantize", f"{profile.quantize!r} weight-only quantization needs "
                    "the missing package 'torchao' (pip install torchao)")
    if profile.compile.enabled and profile.offload == "sequential":
        raise _fail(where, label, "compile", "cannot compile with offload = 'sequential' (its "
                    "hooks move every weight per call); use offload = 'model' or 'none'")
    if profile.loras and not _has("peft"):
        raise _fail(where, label, "loras", "loading LoRAs needs the missing package 'peft' "
                    "(pip install 'reelserve[diffusers]')")
    for n, lora in enumerate(profile.loras):
        if lora.path is not None and not lora.path.exists():
            raise _fail(where, label, f"loras[{n}].path", f"{lora.path} does not exist (a LoRA "
                        "file in diffusers/peft or Kohya format, relative to the profile file)")
        if lora.target == "transformer_2" and profile.pipeline not in ("wan22-i2v", "wan-t2v", "wan-vace"):
            raise _fail(where, label, f"loras[{n}].target", f"pipeline {profile.pipeline!r} has "
                        "no transformer_2 (Wan 2.2 A14B two-expert folders do)", ["transformer"])


def lossy_options(profile: Any) -> list[str]:
    """The options of ``profile`` that change the output beyond rounding (for logs and docs)."""
    out: list[str] = []
    if profile.attention_backend in LOSSY_BACKENDS:
        out.append(f"attention_backend={profile.attention_backend}")
    if profile.cache is not None:
        out.append(f"cache={profile.cache.kind}")
    if profile.quantize is not None:
        out.append(f"quantize={profile.quantize}")
    return out


# ------------------------------------------------------------------ applying (torch from here on)


def transformers_of(pipe: Any) -> list[Any]:
    """The denoising transformer(s) of a pipeline (two for Wan 2.2 A14B)."""
    return [m for m in (getattr(pipe, "transformer", None), getattr(pipe, "transformer_2", None))
            if m is not None]


def load_lora_adapter(pipe: Any, lora: LoraOption, name: str) -> None:
    """Load one LoRA into ``pipe`` as the adapter ``name`` (not fused, not weighted yet).

    The one place LoRA files are read: static LoRAs (fused by :func:`load_static_loras`) and
    per-request camera LoRAs (``camera.py``) both come through here.

    Raises:
        EngineError: ``modelLoadFailed`` naming the LoRA when it cannot be read or does not fit.
    """
    source: Any = str(lora.path) if lora.path is not None else lora.repo
    kwargs: dict[str, Any] = {"adapter_name": name}
    if lora.weight_name is not None:
        kwargs["weight_name"] = lora.weight_name
    elif lora.path is not None and lora.path.is_file():
        # load_lora_weights takes a folder (or repo) plus the file's name.
        source, kwargs["weight_name"] = str(lora.path.parent), lora.path.name
    if lora.target == "transformer_2":
        kwargs["load_into_transformer_2"] = True
    try:
        with warnings.catch_warnings():
            # peft warns on every adapter after the first; several adapters are the point here.
            warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
            pipe.load_lora_weights(source, **kwargs)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise EngineError(
            "modelLoadFailed", f"cannot load LoRA {lora.path or lora.repo}: {exc}",
            parameter="profiles", kind=ErrorKind.UNAVAILABLE) from exc


def load_static_loras(pipe: Any, loras: Sequence[LoraOption], prefix: str = "static") -> None:
    """Load ``loras`` into ``pipe``, fuse them into its weights and drop the adapters.

    After this the pipeline runs at the base model's speed with the LoRAs' effect baked in (a
    4-step distilled LoRA makes a 4-step model). Each LoRA's ``weight`` is its fuse scale. Runs
    at load, before any per-request (camera) adapter is loaded, so unloading here drops only
    these adapters' separate matrices.
    """
    if not loras:
        return
    names = [f"{prefix}{n}" for n in range(len(loras))]
    for name, lora in zip(names, loras, strict=True):
        load_lora_adapter(pipe, lora, name)
    for name, lora in zip(names, loras, strict=True):
        component = "transformer_2" if lora.target == "transformer_2" else "transformer"
        pipe.fuse_lora(components=[component], lora_scale=lora.weight, adapter_names=[name])
        log.info("fused LoRA %s into %s at weight %s", lora.path or lora.repo, component, lora.weight)
    # The fused weights stay; the separate low-rank matrices (and their per-call cost) go.
    pipe.unload_lora_weights()


def quantize_weights(pipe: Any, kind: str, device: str) -> None:
    """Weight-only quantization of the transformer(s) with torchao (``int8`` or ``fp8``).

    Raises:
        EngineError: ``invalidProfile`` when ``fp8`` is asked for on a device without fp8
            support (any non-CUDA device, or a CUDA GPU below compute capability 8.9), or when
            torchao is missing.
    """
    import torch

    if kind == "fp8":
        # torchao would run fp8 weights on the CPU too, but only by dequantizing every weight on
        # every call: slower than plain weights, so a profile asking for fp8 there is a mistake.
        if not device.startswith("cuda"):
            raise EngineError(
                "invalidProfile", f"quantize = 'fp8' needs a CUDA GPU with compute capability 8.9 "
                f"or more (Ada, Hopper); device {device!r} has none; use 'int8'",
                parameter="profiles", kind=ErrorKind.UNAVAILABLE)
        major, minor = torch.cuda.get_device_capability(torch.device(device))
        if (major, minor) < (8, 9):
            raise EngineError(
                "invalidProfile", f"quantize = 'fp8' needs a GPU with compute capability 8.9 or "
                f"more (Ada, Hopper); this one is {major}.{minor}; use 'int8'",
                parameter="profiles", kind=ErrorKind.UNAVAILABLE)
    try:
        from torchao import quantization as tq
    except ImportError as exc:
        raise EngineError("invalidProfile", "quantize needs the missing package 'torchao'",
                          parameter="profiles", kind=ErrorKind.UNAVAILABLE) from exc
    config = getattr(tq, QUANTIZE_CONFIGS[kind])()
    for module in transformers_of(pipe):
        tq.quantize_(module, config)


def set_attention_backend(pipe: Any, backend: str) -> None:
    """diffusers ``set_attention_backend`` on every transformer of the pipeline."""
    for module in transformers_of(pipe):
        try:
            module.set_attention_backend(backend)
        except (ValueError, RuntimeError, ImportError) as exc:
            raise EngineError(
                "invalidProfile", f"attention_backend {backend!r} cannot run here: {exc}",
                parameter="profiles", kind=ErrorKind.UNAVAILABLE) from exc


def enable_cache(pipe: Any, cache: CacheOption, steps: int) -> None:
    """diffusers ``enable_cache`` with the profile's kind and thresholds on every transformer."""
    import diffusers

    cls = getattr(diffusers, CACHE_KINDS[cache.kind][0])
    params = cache.params()
    if cache.kind == "mag":
        params["num_inference_steps"] = steps
    if cache.kind in ("faster", "pyramid"):
        params["current_timestep_callback"] = lambda: pipe.current_timestep
    for module in transformers_of(pipe):
        module.enable_cache(cls(**params))


def reset_cache(pipe: Any) -> None:
    """Clear the cache hooks' state before a call, so each job starts from the exact first step."""
    for module in transformers_of(pipe):
        module = getattr(module, "inner", module)  # under a CFG batch wrapper
        if getattr(module, "is_cache_enabled", False):
            module._reset_stateful_cache()


def compile_transformers(pipe: Any, option: CompileOption) -> None:
    """torch.compile the transformer(s): each repeated block (regional) or the whole module."""
    kwargs: dict[str, Any] = {"backend": option.backend, "fullgraph": option.fullgraph,
                              "dynamic": option.dynamic}
    if option.mode is not None:
        kwargs["mode"] = option.mode
    for module in transformers_of(pipe):
        if option.scope == "regional":
            module.compile_repeated_blocks(**kwargs)
        else:
            module.compile(**kwargs)


def apply_options(loaded: Any, profile: Any) -> None:
    """Apply ``profile``'s speed options to a freshly loaded pipeline (see the module docstring).

    ``loaded`` is a :class:`~.pipelines.LoadedPipeline`; its second front end (``image_pipe`` of
    wan22-ti2v) shares the modules, so only CFG batching, which wraps calls, is set on both.
    """
    pipe, device = loaded.pipe, loaded.device
    load_static_loras(pipe, profile.loras)
    if profile.quantize is not None:
        quantize_weights(pipe, profile.quantize, device)
    if profile.attention_backend is not None:
        if not device.startswith("cuda") and profile.attention_backend not in CPU_BACKENDS:
            raise EngineError(
                "invalidProfile", f"attention_backend {profile.attention_backend!r} needs a CUDA "
                f"device; on the CPU use one of {sorted(CPU_BACKENDS)}",
                parameter="profiles", kind=ErrorKind.UNAVAILABLE)
        set_attention_backend(pipe, profile.attention_backend)
    if profile.cache is not None:
        enable_cache(pipe, profile.cache, profile.steps)
    if profile.compile.enabled:
        compile_transformers(pipe, profile.compile)
    if profile.cfg_batch:
        from reelserve.engines.diffusers.cfg_batch import install_cfg_pairs

        for front in (pipe, loaded.image_pipe):
            if front is not None:
                install_cfg_pairs(front)
