"""Camera control on a GPU profile: camera moves mapped to LoRAs, activated per request."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from reelserve.engines.capabilities import capability
from reelserve.engines.diffusers.camera import adapter_name, lora_option
from reelserve.engines.diffusers.engine import DiffusersEngine
from reelserve.engines.registry import EngineRegistry
from reelserve.errors import EngineError
from reelserve.media.clip import ResolvedInputs
from reelserve.settings import Settings
from reelserve.tasks import CameraControl, GenerationSpec, Workflow

MODEL = "klingai:1@1"


def _save_camera_lora(weights: Path, out: Path, seed: int) -> Path:
    """A random LoRA for the tiny Wan transformer, saved as diffusers saves LoRAs (peft keys)."""
    import diffusers
    import torch
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    transformer = diffusers.WanTransformer3DModel.from_pretrained(weights, subfolder="transformer")
    torch.manual_seed(seed)
    # init_lora_weights=False: both matrices random, so the adapter really changes the output;
    # lora_alpha == r makes peft's scaling equal to the adapter weight set per request.
    transformer.add_adapter(
        LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"],
                   init_lora_weights=False)
    )
    diffusers.WanPipeline.save_lora_weights(
        out, transformer_lora_layers=get_peft_model_state_dict(transformer)
    )
    return out


@pytest.fixture(scope="module")
def camera_loras(tiny_weights: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A LoRA folder (zoom in) and a LoRA file (pan up)."""
    root = tmp_path_factory.mktemp("camera-loras")
    zoom = _save_camera_lora(tiny_weights["wan-t2v"], root / "dolly-in", seed=1)
    pan = _save_camera_lora(tiny_weights["wan-t2v"], root / "jib-up", seed=2)
    return zoom, pan / "pytorch_lora_weights.safetensors"


def _spec(camera: CameraControl | None) -> GenerationSpec:
    return GenerationSpec(
        task_uuid="t", model=MODEL, workflow=Workflow.T2V, width=32, height=32, fps=4, duration=2.0,
        positive_prompt="a cat dances on the moon", seeds=[5], camera=camera,
    )


def _render(engine: DiffusersEngine, camera: CameraControl | None) -> np.ndarray:
    clip = engine.generate(_spec(camera), ResolvedInputs(), 5, lambda f: None, lambda: False)
    return np.stack(list(clip.frames)).astype(np.int16)


def _scalings(engine: DiffusersEngine) -> tuple[list[str], dict[str, set[float]]]:
    """Active adapters of the loaded pipeline and, per adapter, the peft scalings in its layers."""
    entry = engine.profiles.get(MODEL, Workflow.T2V)
    assert entry is not None
    with engine._use(entry.profile) as loaded:
        transformer = loaded.pipe.transformer
        active = list(transformer.active_adapters()) if transformer._hf_peft_config_loaded else []
        scales: dict[str, set[float]] = {}
        for module in transformer.modules():
            for name, value in getattr(module, "scaling", {}).items():
                scales.setdefault(name, set()).add(round(float(value), 6))
        disabled = all(getattr(m, "disable_adapters", False) for m in transformer.modules()
                       if hasattr(m, "scaling"))
    return ([] if disabled else active), scales


@pytest.mark.slow
def test_camera_request_activates_the_mapped_lora(
    tiny_weights: dict[str, Path], write_profiles: Callable[..., Path], camera_loras: tuple[Path, Path]
) -> None:
    zoom, pan = camera_loras
    camera_table = f'{{ zoom_in = "{zoom}", pan_up = "{pan}" }}'
    path = write_profiles([(MODEL, "t2v", "wan-t2v", tiny_weights["wan-t2v"], {})])
    # profile_toml writes flat values; the camera table is an inline table
    path.write_text(path.read_text() + f"camera = {camera_table}\n")
    engine = EngineRegistry.from_settings(Settings(profiles=path, diffusers_device="cpu")).diffusers
    assert engine is not None
    zoom_name, pan_name = adapter_name("zoom_in", str(zoom)), adapter_name("pan_up", str(pan))

    plain = _render(engine, None)
    active, _ = _scalings(engine)
    assert active == []  # loaded at load, off until asked

    zoomed = _render(engine, CameraControl(type="simple", config={"zoom": -5.0}))
    active, scales = _scalings(engine)
    assert active == [zoom_name]
    assert scales[zoom_name] == {0.5}  # |value| / 10
    assert np.abs(zoomed - plain).mean() > 1.0  # the LoRA changed the video

    panned = _render(engine, CameraControl(type="simple", config={"pan": 10.0}))
    active, scales = _scalings(engine)
    assert active == [pan_name] and scales[pan_name] == {1.0}
    assert np.abs(panned - zoomed).mean() > 1.0

    # a request without camera control runs the base model again, bit for bit
    assert np.array_equal(_render(engine, None), plain)
    assert _scalings(engine)[0] == []

    # zoom +3 widens the view (zoom_out): not mapped, refused instead of rendered without it
    with pytest.raises(EngineError) as info:
        _render(engine, CameraControl(type="simple", config={"zoom": 3.0}))
    assert info.value.code == "unsupportedCameraControl"
    assert info.value.parameter == "providerSettings.klingai.cameraControl"
    assert "zoom_out" in info.value.message

    cap = capability(engine.settings, MODEL, "t2v", profiles=engine.profiles)
    assert cap is not None and cap.camera_moves == ["pan_up", "zoom_in"] and cap.camera_presets == []


def test_lora_sources() -> None:
    assert lora_option("owner/name").repo == "owner/name"
    hub_file = lora_option("Lightricks/LTX-2-19b-LoRA-Camera-Control-Dolly-In/ltx-2-19b-lora-camera-control-dolly-in.safetensors")
    assert (hub_file.repo, hub_file.weight_name) == (
        "Lightricks/LTX-2-19b-LoRA-Camera-Control-Dolly-In", "ltx-2-19b-lora-camera-control-dolly-in.safetensors",
    )
    assert adapter_name("zoom_in", "a") != adapter_name("zoom_in", "b")
    assert adapter_name("zoom_in", "a").startswith("camera_zoom_in_")
