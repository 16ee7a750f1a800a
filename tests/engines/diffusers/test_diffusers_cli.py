"""`reelserve models list | pull` and `reelserve doctor`."""

from __future__ import annotations

import io
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from reelserve.cli import main
from reelserve.engines.diffusers import cli
from reelserve.engines.diffusers.hub import pull
from reelserve.engines.diffusers.profiles import ProfileSet
from reelserve.errors import EngineError, NotFoundError
from reelserve.settings import Settings

REPO = "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"


def _profiles(write_profiles: Callable[..., Path], tiny: Path, missing: Path) -> Path:
    return write_profiles([
        ("klingai:1@1", "t2v", "wan-t2v", tiny, {}),
        ("klingai:1@2", "t2v", "wan-t2v", missing, {"repo": REPO}),
    ])


def test_models_list_shows_presence_and_repo(
    write_profiles: Callable[..., Path], tiny_weights: dict[str, Path], tmp_path: Path
) -> None:
    path = _profiles(write_profiles, tiny_weights["wan-t2v"], tmp_path / "wan21-t2v-1.3b")
    out = io.StringIO()
    assert cli.models_list(Settings(profiles=path), out) == 0
    lines = out.getvalue().splitlines()
    assert lines[0].split() == ["MODEL", "WORKFLOW", "PIPELINE", "WEIGHTS", "PRESENT", "REPO"]
    assert lines[1].split() == ["klingai:1@1", "t2v", "wan-t2v", "wan-t2v", "yes", "-"]
    assert lines[2].split() == ["klingai:1@2", "t2v", "wan-t2v", "wan21-t2v-1.3b", "no", REPO]
    assert "reelserve models pull NAME" in out.getvalue()


def test_models_list_without_profiles(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "list"]) == 2
    assert "REELSERVE_PROFILES" in capsys.readouterr().out


def test_pull_without_internet_says_what_to_do(
    write_profiles: Callable[..., Path], tiny_weights: dict[str, Path], tmp_path: Path
) -> None:
    target = tmp_path / "wan21-t2v-1.3b"
    profiles = ProfileSet.load(_profiles(write_profiles, tiny_weights["wan-t2v"], target), check_weights=False)

    def offline(**kwargs: Any) -> str:  # the hub lies outside this machine
        raise ConnectionError("Failed to resolve host")

    with pytest.raises(EngineError) as info:
        pull(profiles, "wan21-t2v-1.3b", snapshot_download=offline)
    assert info.value.code == "modelPullFailed"
    assert REPO in info.value.message and str(target) in info.value.message
    assert "Without internet, copy the diffusers folder" in info.value.message
    with pytest.raises(NotFoundError, match=re.escape("known: ['wan-t2v', 'wan21-t2v-1.3b']")):
        pull(profiles, "nope", snapshot_download=offline)
    with pytest.raises(EngineError, match="no `repo`"):
        pull(profiles, "klingai:1@1", snapshot_download=offline)


def test_pull_downloads_into_the_weights_folder(
    write_profiles: Callable[..., Path], tiny_weights: dict[str, Path], tmp_path: Path
) -> None:
    target = tmp_path / "wan21-t2v-1.3b"
    profiles = ProfileSet.load(_profiles(write_profiles, tiny_weights["wan-t2v"], target), check_weights=False)
    calls: list[dict[str, Any]] = []

    def hub(**kwargs: Any) -> str:
        calls.append(kwargs)
        shutil.copytree(tiny_weights["wan-t2v"], kwargs["local_dir"])
        return str(kwargs["local_dir"])

    # by repo id, like by folder name
    assert pull(profiles, REPO, snapshot_download=hub) == target
    assert calls == [{"repo_id": REPO, "local_dir": str(target)}]
    assert (target / "model_index.json").is_file()


def test_doctor_reports_engines_weights_and_hides_secrets(
    write_profiles: Callable[..., Path], tiny_weights: dict[str, Path], tmp_path: Path
) -> None:
    good = write_profiles([("klingai:1@1", "t2v", "wan-t2v", tiny_weights["wan-t2v"], {})])
    out = io.StringIO()
    code = cli.doctor(Settings(profiles=good, api_keys=["sk-secret"]), out)
    text = out.getvalue()
    assert code == 0, text
    assert "diffusers: 1 profile(s)" in text and "registry: profiles valid" in text
    assert "torch: " in text and "no problems found" in text
    assert "sk-secret" not in text and "api_keys = (set)" in text

    bad = _profiles(write_profiles, tiny_weights["wan-t2v"], tmp_path / "wan21-t2v-1.3b")
    out = io.StringIO()
    assert cli.doctor(Settings(profiles=bad), out) == 1
    assert "MISSING" in out.getvalue() and "would refuse to start" in out.getvalue()
