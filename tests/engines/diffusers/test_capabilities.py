"""Capabilities as data: which engine renders a model id x workflow and what it honours."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from reelserve.engines.capabilities import ENGINE_ABILITIES, Capability, capabilities, capability
from reelserve.engines.diffusers.profiles import (
    CAMERA_AXIS_KEYS,
    CAMERA_PRESET_KEYS,
    PIPELINE_WORKFLOWS,
)
from reelserve.errors import EngineError
from reelserve.settings import Settings
from reelserve.tasks import CameraControl, GenerationSpec, Workflow

O1 = "klingai:kling@o1-standard"


def _profiles(tmp_path: Path) -> Path:
    """A profile file whose weights folders do not exist: the API host may hold no weights."""
    path = tmp_path / "profiles.toml"
    path.write_text(
        """
[models."klingai:1@1".t2v]
pipeline = "ltx2"
weights = "models/ltx-2"
native_size = "768x512"
native_fps = 24
camera = { zoom_in = "loras/dolly-in.safetensors", horizontal_left = "owner/camera-lora", down_back = "owner/preset" }

[models."klingai:1@1".i2v]
pipeline = "wan22-ti2v"
weights = "models/wan22-ti2v-5b"
native_size = "1280x704"

[models."klingai:kling@o1-standard".v2v]
pipeline = "wan-vace"
weights = "models/wan21-vace-14b"

[models."klingai:kling@o1-standard".r2v]
pipeline = "wan-vace"
weights = "models/wan21-vace-14b"
""",
        encoding="utf-8",
    )
    (tmp_path / "loras").mkdir()
    (tmp_path / "loras" / "dolly-in.safetensors").write_bytes(b"")
    return path


def _spec(model: str, workflow: str, **extra: object) -> GenerationSpec:
    return GenerationSpec(
        task_uuid="t", model=model, workflow=Workflow(workflow), width=720, height=720, fps=24,
        duration=5.0, seeds=[1], **extra,  # type: ignore[arg-type]
    )


def test_every_kind_declares_its_abilities() -> None:
    assert set(ENGINE_ABILITIES) == {"preview", *PIPELINE_WORKFLOWS}
    assert [k for k, a in ENGINE_ABILITIES.items() if a.sound] == ["ltx2"]
    # keepOriginalSound only where an input video can carry sound
    assert ENGINE_ABILITIES["wan-vace"].keep_original_sound == {Workflow.V2V, Workflow.R2V}
    assert ENGINE_ABILITIES["ltx-condition"].keep_original_sound == {Workflow.V2V}
    assert ENGINE_ABILITIES["ltx2"].keep_original_sound == frozenset()
    assert ENGINE_ABILITIES["preview"].camera == "builtin"


def test_profiled_route_reports_its_pipeline_sound_and_mapped_camera_moves(tmp_path: Path) -> None:
    settings = Settings(profiles=_profiles(tmp_path))
    cap = capability(settings, "klingai:1@1", "t2v")
    assert cap is not None
    assert (cap.engine, cap.pipeline, cap.sound) == ("diffusers", "ltx2", True)
    assert cap.weights == str(tmp_path / "models" / "ltx-2")
    assert cap.camera_moves == ["horizontal_left", "zoom_in"]
    assert cap.camera_presets == ["down_back"]
    assert cap.camera_axes == ["horizontal", "zoom"]
    wan = capability(settings, "klingai:1@1", "i2v")
    assert wan is not None and (wan.pipeline, wan.sound, wan.camera_moves) == ("wan22-ti2v", False, [])
    vace = capability(settings, O1, "v2v")
    assert vace is not None and vace.keep_original_sound and vace.edit and not vace.reference_images
    refs = capability(settings, O1, "r2v")
    assert refs is not None and refs.reference_images and refs.keep_original_sound


def test_unprofiled_route_is_preview_or_nothing(tmp_path: Path) -> None:
    path = _profiles(tmp_path)
    cap = capability(Settings(profiles=path), "klingai:2@1", "i2v")
    assert cap is not None and cap.engine == "preview" and cap.pipeline is None
    assert not cap.sound and cap.camera_moves == sorted(CAMERA_AXIS_KEYS)
    assert cap.camera_presets == sorted(CAMERA_PRESET_KEYS)
    assert capability(Settings(profiles=path, preview_fallback=False), "klingai:2@1", "i2v") is None
    # no profiles at all
    assert capability(Settings(), O1, "v2v") == Capability(
        model=O1, workflow="v2v", engine="preview", keep_original_sound=True, edit=True,
        camera_moves=sorted(CAMERA_AXIS_KEYS), camera_presets=sorted(CAMERA_PRESET_KEYS),
    )


def test_the_table_is_json_and_round_trips(tmp_path: Path) -> None:
    settings = Settings(profiles=_profiles(tmp_path), preview_fallback=False)
    table = capabilities(settings)
    # with the fallback off only the four profiled routes render here
    assert sorted((c["model"], c["workflow"]) for c in table) == [
        ("klingai:1@1", "i2v"), ("klingai:1@1", "t2v"), (O1, "r2v"), (O1, "v2v"),
    ]
    again = json.loads(json.dumps(table))
    assert [Capability.from_dict(c) for c in again] == [Capability.from_dict(c) for c in table]
    full = capabilities(Settings(profiles=settings.profiles))
    assert len(full) > len(table) and {c["engine"] for c in full} == {"preview", "diffusers"}


def test_check_refuses_what_the_route_cannot_honour(tmp_path: Path) -> None:
    settings = Settings(profiles=_profiles(tmp_path))
    ltx2 = capability(settings, "klingai:1@1", "t2v")
    wan = capability(settings, "klingai:1@1", "i2v")
    assert ltx2 is not None and wan is not None
    ltx2.check(_spec("klingai:1@1", "t2v", sound=True))
    ltx2.check(_spec("klingai:1@1", "t2v", camera=CameraControl(type="simple", config={"zoom": -4})))
    ltx2.check(_spec("klingai:1@1", "t2v", camera=CameraControl(type="down_back")))
    cases = [
        (wan, _spec("klingai:1@1", "i2v", sound=True), "unsupportedSound", "providerSettings.klingai.sound"),
        # zoom +4 widens the view (zoom_out): only zoom_in is mapped
        (ltx2, _spec("klingai:1@1", "t2v", camera=CameraControl(type="simple", config={"zoom": 4})),
         "unsupportedCameraControl", "providerSettings.klingai.cameraControl"),
        (ltx2, _spec("klingai:1@1", "t2v", camera=CameraControl(type="forward_up")),
         "unsupportedCameraControl", "providerSettings.klingai.cameraControl"),
        (ltx2, _spec("klingai:1@1", "t2v", keep_original_sound=True),
         "unsupportedKeepOriginalSound", "providerSettings.klingai.keepOriginalSound"),
    ]
    for cap, spec, code, parameter in cases:
        with pytest.raises(EngineError) as info:
            cap.check(spec)
        assert (info.value.code, info.value.parameter) == (code, parameter)
    with pytest.raises(EngineError) as info:
        ltx2.check(_spec("klingai:1@1", "t2v", camera=CameraControl(type="simple", config={"pan": 3})))
    assert "pan_up" in info.value.message and info.value.allowed_values == [
        "horizontal_left", "zoom_in", "down_back",
    ]


def test_unknown_camera_key_is_refused_at_profile_load(tmp_path: Path) -> None:
    path = tmp_path / "profiles.toml"
    path.write_text(
        '[models."klingai:1@1".t2v]\npipeline = "ltx2"\nweights = "w"\ncamera = { dolly_in = "x" }\n'
    )
    with pytest.raises(EngineError) as info:
        capability(Settings(profiles=path), "klingai:1@1", "t2v")
    assert info.value.code == "invalidProfile" and "zoom_in" in info.value.message


def test_capabilities_import_no_heavy_module(tmp_path: Path) -> None:
    code = (
        "import sys, json\n"
        "from reelserve.engines.capabilities import capabilities\n"
        "from reelserve.settings import Settings\n"
        f"json.dumps(capabilities(Settings(profiles={str(_profiles(tmp_path))!r})))\n"
        "print(sorted(m for m in ('torch', 'diffusers', 'transformers', 'av') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
