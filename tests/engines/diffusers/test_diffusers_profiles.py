"""Profiles and the engine registry: bad profiles stop the server at start, with clear messages."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from reelserve.engines.diffusers.profiles import PIPELINE_WORKFLOWS, ProfileSet
from reelserve.engines.registry import EngineRegistry
from reelserve.errors import EngineError, ErrorKind
from reelserve.settings import Settings
from reelserve.tasks import GenerationSpec, Workflow

REPO_ROOT = Path(__file__).resolve().parents[3]


def _spec(model: str = "klingai:1@1", workflow: Workflow = Workflow.T2V) -> GenerationSpec:
    return GenerationSpec(
        task_uuid="t", model=model, workflow=workflow, width=64, height=48, fps=8, duration=1.0,
        positive_prompt="a cat", seeds=[1],
    )


def test_valid_profile_loads_and_maps(write_profiles: Callable[..., Path], tiny_weights: dict[str, Path]) -> None:
    path = write_profiles([
        ("klingai:1@1", "t2v", "wan-t2v", tiny_weights["wan-t2v"], {}),
        ("klingai:1@1", "i2v", "wan-i2v", tiny_weights["wan-i2v"], {"offload": "none"}),
    ])
    registry = EngineRegistry.from_settings(Settings(profiles=path))
    assert registry.diffusers is not None
    assert registry.select(_spec()) is registry.diffusers
    assert registry.select(_spec(workflow=Workflow.I2V)) is registry.diffusers
    assert registry.preferred_models() == set()  # nothing loaded yet


def test_relative_weights_resolve_against_profile_file(tmp_path: Path, tiny_weights: dict[str, Path]) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "w").symlink_to(tiny_weights["wan-t2v"], target_is_directory=True)
    path = tmp_path / "p.toml"
    path.write_text('[models."klingai:1@1".t2v]\npipeline = "wan-t2v"\nweights = "models/w"\n')
    entry = ProfileSet.load(path).get("klingai:1@1", "t2v")
    assert entry is not None and entry.profile.weights == tmp_path / "models" / "w"


def test_missing_weights_folder_fails_at_registry_construction(write_profiles: Callable[..., Path], tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "wan21-t2v-1.3b"
    path = write_profiles([("klingai:1@1", "t2v", "wan-t2v", missing, {"repo": "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"})])
    with pytest.raises(EngineError) as info:
        EngineRegistry.from_settings(Settings(profiles=path))
    err = info.value
    assert err.code == "modelWeightsNotFound" and err.kind is ErrorKind.UNAVAILABLE
    assert str(missing) in err.message and 'models."klingai:1@1".t2v' in err.message
    assert "reelserve models pull wan21-t2v-1.3b" in err.message


@pytest.mark.parametrize(
    ("workflow", "pipeline"),
    [("i2v", "wan-t2v"), ("t2v", "wan-i2v"), ("r2v", "ltx-condition"), ("v2v", "wan22-i2v")],
)
def test_pipeline_that_cannot_do_the_workflow_is_refused(
    write_profiles: Callable[..., Path], tiny_weights: dict[str, Path], workflow: str, pipeline: str
) -> None:
    path = write_profiles([("klingai:1@1", workflow, pipeline, tiny_weights["wan-t2v"], {})])
    with pytest.raises(EngineError) as info:
        EngineRegistry.from_settings(Settings(profiles=path))
    assert info.value.code == "invalidProfile"
    assert f"pipeline {pipeline!r} cannot do workflow {workflow!r}" in info.value.message
    assert info.value.allowed_values == sorted(w.value for w in PIPELINE_WORKFLOWS[pipeline])


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ({"stepz": 3}, "stepz"),
        ({"pipeline": "wan-magic"}, "wan-magic"),
        ({"native_size": "830x480"}, "multiples of 16"),
        ({"native_size": "big"}, "832x480"),
        ({"offload": "gpu"}, "offload"),
        ({"max_frames": 80}, "4k+1"),
    ],
)
def test_bad_profile_values_are_refused(
    write_profiles: Callable[..., Path], tiny_weights: dict[str, Path], extra: dict[str, object], needle: str
) -> None:
    path = write_profiles([("klingai:1@1", "t2v", "wan-t2v", tiny_weights["wan-t2v"], extra)])
    with pytest.raises(EngineError) as info:
        ProfileSet.load(path)
    assert info.value.code == "invalidProfile"
    assert needle in info.value.message and str(path) in info.value.message


def test_unknown_workflow_and_top_level_keys(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text('[models."klingai:1@1".x2v]\npipeline = "wan-t2v"\nweights = "w"\n')
    with pytest.raises(EngineError, match="unknown workflow 'x2v'"):
        ProfileSet.load(path)
    path.write_text('[model."klingai:1@1".t2v]\npipeline = "wan-t2v"\n')
    with pytest.raises(EngineError, match=r"unknown top-level key\(s\) \['model'\]"):
        ProfileSet.load(path)
    with pytest.raises(EngineError, match="does not exist"):
        ProfileSet.load(tmp_path / "absent.toml")


def test_example_profile_covers_every_kling_model_and_workflow(tmp_path: Path) -> None:
    from reelserve.catalog.spec import load_catalog

    profiles = ProfileSet.load(REPO_ROOT / "profiles.example.toml", check_weights=False)
    catalog = load_catalog()
    for model in catalog.models.values():
        for workflow in model.workflows:
            entry = profiles.get(model.air, workflow)
            assert entry is not None, f"{model.air}/{workflow} has no example profile"
            assert entry.profile.repo, f"{model.air}/{workflow} has no hub repo id"


def test_no_profile_falls_back_to_preview_or_refuses() -> None:
    sentinel = object()
    registry = EngineRegistry(Settings(preview_fallback=True), preview=sentinel)  # type: ignore[arg-type]
    assert registry.select(_spec()) is sentinel
    strict = EngineRegistry(Settings(preview_fallback=False))
    with pytest.raises(EngineError) as info:
        strict.select(_spec())
    assert info.value.code == "modelUnavailable" and info.value.kind is ErrorKind.UNAVAILABLE
    assert "klingai:1@1" in info.value.message and "t2v" in info.value.message


def test_unmapped_workflow_with_profiles_and_no_fallback(write_profiles: Callable[..., Path], tiny_weights: dict[str, Path]) -> None:
    path = write_profiles([("klingai:1@1", "t2v", "wan-t2v", tiny_weights["wan-t2v"], {})])
    registry = EngineRegistry.from_settings(Settings(profiles=path, preview_fallback=False))
    with pytest.raises(EngineError) as info:
        registry.select(_spec(workflow=Workflow.I2V))
    assert info.value.allowed_values == ["klingai:1@1/t2v"]


def test_registry_without_profiles_imports_no_torch() -> None:
    code = (
        "import sys, json\n"
        "from reelserve.engines.registry import EngineRegistry\n"
        "from reelserve.settings import Settings\n"
        "EngineRegistry.from_settings(Settings(profiles=None))\n"
        "import reelserve.engines.diffusers.profiles, reelserve.engines.diffusers.engine\n"
        "print(json.dumps([m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=120)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
