"""Profile speed options on tiny random pipelines: checks at start, contract, exactness, LoRAs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from reelserve.engines.diffusers import options
from reelserve.engines.diffusers.engine import DiffusersEngine
from reelserve.engines.diffusers.profiles import ProfileSet
from reelserve.errors import EngineError
from reelserve.media.clip import ResolvedInputs
from reelserve.settings import Settings
from reelserve.tasks import GenerationSpec, Workflow

MODEL = "klingai:1@1"


def _toml(weights: Path, pipeline: str = "wan-t2v", extra: str = "", workflow: str = "t2v") -> str:
    return (f'[models."{MODEL}".{workflow}]\npipeline = "{pipeline}"\nweights = "{weights}"\n'
            f'steps = 2\nguidance = 3.0\nnative_size = "32x32"\nnative_fps = 4\n{extra}\n')


def _load(tmp_path: Path, text: str) -> ProfileSet:
    path = tmp_path / "profiles.toml"
    path.write_text(text, encoding="utf-8")
    return ProfileSet.load(path)


def _spec(**update: Any) -> GenerationSpec:
    base: dict[str, Any] = dict(
        task_uuid="t", model=MODEL, workflow=Workflow.T2V, width=48, height=32, fps=8,
        duration=1.0, positive_prompt="a cat dances on the moon", negative_prompt="blurry",
        seeds=[7])
    return GenerationSpec(**{**base, **update})


def _render(profiles: ProfileSet, spec: GenerationSpec | None = None) -> np.ndarray:
    engine = DiffusersEngine(profiles, Settings(diffusers_device="cpu"))
    spec = spec or _spec()
    clip = engine.generate(spec, ResolvedInputs(), 7, lambda f: None, lambda: False)
    frames = np.stack(list(clip.frames))
    # The contract: exactly the requested size, rate and frame count.
    assert (clip.width, clip.height, clip.fps, clip.num_frames) == (48, 32, 8, spec.num_frames)
    assert frames.shape == (spec.num_frames, 32, 48, 3)
    return frames.astype(np.float64)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


# ------------------------------------------------------------------ refused at start


@pytest.mark.parametrize(("extra", "key", "says"), [
    ('attention_backend = "fastest"', "attention_backend", "allowed: ['native'"),
    ('attention_backend = "sage"', "attention_backend", "missing package 'sageattention'"),
    ("cfg_batch = true", "cfg_batch", "cannot take it"),
    ('cache = { kind = "first_block", treshold = 0.1 }', "cache", "allowed: ['threshold']"),
    ('cache = { kind = "teacache" }', "cache.kind", "'first_block'"),
    ('compile = { scope = "regional", fullgraf = true }', "compile.fullgraf", "allowed keys"),
    ('loras = [{ path = "missing.safetensors" }]', "loras[0].path", "does not exist"),
    ('quantize = "int4"', "quantize", "'fp8' or 'int8'"),
])
def test_bad_option_fails_at_start_naming_the_entry(
    tmp_path: Path, tiny_weights: dict[str, Path], extra: str, key: str, says: str
) -> None:
    pipeline = "ltx-condition" if extra == "cfg_batch = true" else "wan-t2v"
    with pytest.raises(EngineError) as info:
        _load(tmp_path, _toml(tiny_weights[pipeline], pipeline, extra))
    message = info.value.message
    assert info.value.code == "invalidProfile"
    assert str(tmp_path / "profiles.toml") in message
    assert f'models."{MODEL}".t2v' in message
    assert key in message
    assert says in message


def test_quantize_without_torchao_says_missing_package(
    tmp_path: Path, tiny_weights: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # torchao comes with the diffusers extra; its absence is simulated at the start-time check.
    has = options._has
    monkeypatch.setattr(options, "_has", lambda module: module != "torchao" and has(module))
    with pytest.raises(EngineError) as info:
        _load(tmp_path, _toml(tiny_weights["wan-t2v"], extra='quantize = "int8"'))
    assert "quantize" in info.value.message
    assert "missing package 'torchao'" in info.value.message


def test_gpu_only_backend_fails_at_load_on_cpu(tmp_path: Path, tiny_weights: dict[str, Path]) -> None:
    profiles = _load(tmp_path, _toml(tiny_weights["wan-t2v"], extra='attention_backend = "_native_flash"'))
    with pytest.raises(EngineError, match="needs a CUDA device"):
        _render(profiles)


# ------------------------------------------------------------------ math-preserving options


@pytest.fixture(scope="module")
def exact(tiny_weights: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """The plain pipeline's frames for the reference spec."""
    return _render(_load(tmp_path_factory.mktemp("plain"), _toml(tiny_weights["wan-t2v"])))


@pytest.mark.parametrize("extra", [
    'attention_backend = "_native_math"',
    'attention_backend = "native"',
    "cfg_batch = true",
    'compile = { scope = "regional", backend = "eager" }',
    'compile = { scope = "full", backend = "eager" }\ncfg_batch = true\nattention_backend = "native"',
])
def test_math_preserving_options_give_the_same_frames(
    tmp_path: Path, tiny_weights: dict[str, Path], exact: np.ndarray, extra: str
) -> None:
    frames = _render(_load(tmp_path, _toml(tiny_weights["wan-t2v"], extra=extra)))
    # Same math; a batched matmul may round differently in the last bit, then 8-bit quantized.
    assert np.abs(frames - exact).max() <= 2.0


def test_cfg_batch_runs_one_transformer_call_per_step(tmp_path: Path, tiny_weights: dict[str, Path]) -> None:
    profiles = _load(tmp_path, _toml(tiny_weights["wan-t2v"], extra="cfg_batch = true"))
    engine = DiffusersEngine(profiles, Settings(diffusers_device="cpu"))
    entry = profiles.get(MODEL, "t2v")
    assert entry is not None
    calls: list[int] = []
    with engine._use(entry.profile) as loaded:
        inner = loaded.pipe.transformer.inner
        handle = inner.register_forward_hook(lambda m, a, kw: calls.append(1))
    try:
        engine.generate(_spec(), ResolvedInputs(), 7, lambda f: None, lambda: False)
    finally:
        handle.remove()
    assert len(calls) == 2  # 2 steps, conditional and unconditional passes batched


def test_cfg_batch_on_two_experts_and_image_front(tmp_path: Path, tiny_weights: dict[str, Path]) -> None:
    """wan22-ti2v's image-to-video front shares the modules; the wrapper batches both."""
    plain = _load(tmp_path, _toml(tiny_weights["wan22-ti2v"], "wan22-ti2v"))
    fast_dir = tmp_path / "fast"
    fast_dir.mkdir()
    fast = _load(fast_dir, _toml(tiny_weights["wan22-ti2v"], "wan22-ti2v", "cfg_batch = true"))
    assert np.abs(_render(plain) - _render(fast)).max() <= 2.0


# ------------------------------------------------------------------ lossy options


def test_cache_keeps_the_contract_and_stays_close(
    tmp_path: Path, tiny_weights: dict[str, Path], exact: np.ndarray
) -> None:
    text = _toml(tiny_weights["wan-t2v"], extra='cache = { kind = "first_block", threshold = 0.05 }')
    profiles = _load(tmp_path, text)
    first = _render(profiles)
    assert _psnr(first, exact) > 20.0
    # Cache state is reset per call: the same seed gives the same frames again.
    assert np.array_equal(_render(profiles), first)


#: Measured PSNR of int8 weight-only against the exact frames (seed 7, tiny random weights, CPU):
#: wan-t2v 49.9 dB, wan22-ti2v 47.1 dB; other seeds gave 46.6-85 dB on wan-t2v. The floor leaves
#: room for other torch/torchao builds while still catching a broken quantization (unrelated
#: frames score about 10 dB).
INT8_PSNR_FLOOR = 35.0


@pytest.mark.parametrize("pipeline", ["wan-t2v", "wan22-ti2v"])
def test_int8_quantize_keeps_the_contract_and_stays_close(
    tmp_path: Path, tiny_weights: dict[str, Path], pipeline: str
) -> None:
    import torch

    plain = _render(_load(tmp_path, _toml(tiny_weights[pipeline], pipeline)))
    quant_dir = tmp_path / "int8"
    quant_dir.mkdir()
    profiles = _load(quant_dir, _toml(tiny_weights[pipeline], pipeline, 'quantize = "int8"'))
    entry = profiles.get(MODEL, "t2v")
    assert entry is not None
    engine = DiffusersEngine(profiles, Settings(diffusers_device="cpu"))
    with engine._use(entry.profile) as loaded:
        linears = [m for m in loaded.pipe.transformer.modules() if isinstance(m, torch.nn.Linear)]
        # Every linear weight of the transformer is stored as int8 (torchao's Int8Tensor).
        assert linears
        assert all(getattr(m.weight, "qdata", m.weight).dtype == torch.int8 for m in linears)
    frames = _render(profiles)  # _render asserts size, fps and frame count
    psnr = _psnr(frames, plain)
    # Lossy (rounded weights move the output) but close to the exact frames of the same seed.
    assert psnr < float("inf")
    assert psnr > INT8_PSNR_FLOOR
    assert np.array_equal(_render(profiles), frames)  # and deterministic per seed


def test_int8_quantizes_both_experts(tmp_path: Path, tiny_weights: dict[str, Path]) -> None:
    """Wan 2.2 A14B folders have two transformers (high- and low-noise experts); both shrink."""
    import torch

    text = _toml(tiny_weights["wan22-i2v"], "wan22-i2v", 'quantize = "int8"', workflow="i2v")
    profiles = _load(tmp_path, text)
    entry = profiles.get(MODEL, "i2v")
    assert entry is not None
    engine = DiffusersEngine(profiles, Settings(diffusers_device="cpu"))
    with engine._use(entry.profile) as loaded:
        for transformer in (loaded.pipe.transformer, loaded.pipe.transformer_2):
            weight = transformer.blocks[0].attn1.to_q.weight
            assert getattr(weight, "qdata", weight).dtype == torch.int8


def test_fp8_quantize_is_refused_on_cpu_at_load(tmp_path: Path, tiny_weights: dict[str, Path]) -> None:
    profiles = _load(tmp_path, _toml(tiny_weights["wan-t2v"], extra='quantize = "fp8"'))
    with pytest.raises(EngineError) as info:
        _render(profiles)
    assert info.value.code == "invalidProfile"
    message = info.value.message
    assert "quantize = 'fp8'" in message
    assert "compute capability 8.9" in message
    assert "'cpu'" in message
    assert "use 'int8'" in message


# ------------------------------------------------------------------ static LoRAs


def _tiny_lora(path: Path, scale: float = 0.5) -> Path:
    """A random rank-2 LoRA on the tiny Wan transformer's attention, saved in diffusers/peft form."""
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(1)
    state: dict[str, torch.Tensor] = {}
    for block in range(2):
        for proj in ("to_q", "to_k", "to_v", "to_out.0"):
            prefix = f"transformer.blocks.{block}.attn1.{proj}"
            state[f"{prefix}.lora_A.weight"] = torch.randn(2, 24) * scale
            state[f"{prefix}.lora_B.weight"] = torch.randn(24, 2) * scale
    save_file(state, str(path))
    return path


def test_static_lora_loads_and_fuses(tmp_path: Path, tiny_weights: dict[str, Path], exact: np.ndarray) -> None:
    pytest.importorskip("peft")
    _tiny_lora(tmp_path / "style.safetensors")
    text = _toml(tiny_weights["wan-t2v"], extra='loras = [{ path = "style.safetensors", weight = 1.0 }]')
    profiles = _load(tmp_path, text)
    entry = profiles.get(MODEL, "t2v")
    assert entry is not None
    engine = DiffusersEngine(profiles, Settings(diffusers_device="cpu"))
    with engine._use(entry.profile) as loaded:
        transformer = loaded.pipe.transformer
        # Fused: the adapter layers are gone, the base weights carry the LoRA.
        assert not any("lora" in name for name, _ in transformer.named_parameters())
        base = DiffusersEngine(ProfileSet.load(_write(tmp_path / "plain", _toml(tiny_weights["wan-t2v"]))),
                               Settings(diffusers_device="cpu"))
        plain_entry = base.profiles.get(MODEL, "t2v")
        assert plain_entry is not None
        with base._use(plain_entry.profile) as plain:
            delta = (transformer.blocks[0].attn1.to_q.weight
                     - plain.pipe.transformer.blocks[0].attn1.to_q.weight).abs().max().item()
        assert delta > 1e-3
    frames = _render(profiles)
    assert not np.array_equal(frames, exact)  # the fused LoRA changes the output


def _write(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "profiles.toml"
    path.write_text(text, encoding="utf-8")
    return path
