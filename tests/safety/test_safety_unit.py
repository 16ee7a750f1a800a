"""The content checker on its own: settings, key frames, the tiny real classifier, pulls."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from safety_tiny import CountingChecker, make_classifier

from reelserve.errors import ContentPolicyError, EngineError
from reelserve.media.clip import ResolvedInputs, VideoInput
from reelserve.media.probe import probe
from reelserve.safety import (
    ContentGuard,
    checker_configured,
    key_frame_indices,
    load_checker,
    model_folder,
    pull,
)
from reelserve.safety.classifier import ClassifierChecker
from reelserve.settings import Settings
from reelserve_testing import make_video


@pytest.fixture(scope="module")
def flagging(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_classifier(tmp_path_factory.mktemp("flagging"), flag=True)


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_classifier(tmp_path_factory.mktemp("clean"), flag=False)


def test_checker_configured_only_with_a_model(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    assert checker_configured(Settings(data_dir=tmp_path)) is False
    assert checker_configured(Settings(data_dir=tmp_path, safety_model="  ")) is False
    monkeypatch.setenv("REELSERVE_SAFETY_MODEL", str(tmp_path / "model"))
    assert checker_configured(Settings(data_dir=tmp_path)) is True


def test_settings_read_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REELSERVE_SAFETY_LABELS", "porn, hentai")
    monkeypatch.setenv("REELSERVE_SAFETY_THRESHOLD", "0.8")
    monkeypatch.setenv("REELSERVE_SAFETY_ON_FLAG", "deliver")
    settings = Settings(data_dir=tmp_path)
    assert settings.safety_labels == ["porn", "hentai"]
    assert (settings.safety_threshold, settings.safety_on_flag) == (0.8, "deliver")
    assert Settings(data_dir=tmp_path, safety_on_flag="withhold").safety_on_flag == "withhold"
    monkeypatch.setenv("REELSERVE_SAFETY_ON_FLAG", "ignore")
    with pytest.raises(ValueError, match="safety_on_flag"):
        Settings(data_dir=tmp_path)


def test_the_light_module_imports_nothing_heavy() -> None:
    code = ("import sys, reelserve.safety, reelserve.worker.loop\n"
            "heavy = [m for m in ('torch', 'transformers', 'diffusers') if m in sys.modules]\n"
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_key_frames_are_first_middle_last_and_one_per_second() -> None:
    assert key_frame_indices(150, 30) == [0, 30, 60, 75, 90, 120, 149]
    assert key_frame_indices(121, 24) == [0, 24, 48, 60, 72, 96, 120]
    assert key_frame_indices(1, 24) == [0]
    assert key_frame_indices(0, 24) == []
    assert key_frame_indices(10, 29.97) == [0, 5, 9]


def test_the_tiny_classifiers_flag_always_and_never(flagging: Path, clean: Path) -> None:
    images = [Image.new("RGB", (64 + i, 48), (i * 40, 10, 200)) for i in range(5)]
    flagged = ClassifierChecker(flagging, ["NSFW"], 0.5, batch_size=2).check(images)
    assert [v.flagged for v in flagged] == [True] * 5
    assert flagged[0].label == "nsfw" and flagged[0].score > 0.99
    assert set(flagged[0].scores) == {"normal", "nsfw"}
    passed = ClassifierChecker(clean, ["nsfw"], 0.5).check(images[:1])
    assert passed[0].flagged is False and passed[0].label is None and passed[0].score == 0.0
    # The threshold decides: nothing scores 1.0 exactly.
    assert ClassifierChecker(flagging, ["nsfw"], 1.0).check(images[:1])[0].flagged is False
    assert ClassifierChecker(flagging, ["nsfw"], 0.5).check([]) == []


def test_labels_the_model_does_not_have_are_refused(flagging: Path) -> None:
    with pytest.raises(EngineError, match=r"labels are \['normal', 'nsfw'\]") as info:
        ClassifierChecker(flagging, ["porn"], 0.5)
    assert info.value.code == "invalidSafetyLabels"


def test_a_missing_model_folder_says_what_to_do(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, safety_model=str(tmp_path / "nowhere"))
    with pytest.raises(EngineError, match="reelserve models pull safety") as info:
        load_checker(settings)
    assert info.value.code == "safetyModelUnavailable"


def test_load_checker_is_shared_per_process(tmp_path: Path, clean: Path) -> None:
    settings = Settings(data_dir=tmp_path, safety_model=str(clean))
    first = load_checker(settings)
    assert load_checker(Settings(data_dir=tmp_path / "other", safety_model=str(clean))) is first
    import torch

    assert isinstance(first, ClassifierChecker)
    assert first.device == ("cuda" if torch.cuda.is_available() else "cpu")  # the GPU when there is one


def test_hub_ids_live_in_the_data_dir_and_pull_fetches_them(tmp_path: Path, clean: Path) -> None:
    settings = Settings(data_dir=tmp_path, safety_model="someone/nsfw-detector")
    folder = model_folder(settings)
    assert folder == tmp_path / "models" / "safety" / "someone--nsfw-detector"
    calls: list[dict[str, str]] = []

    def download(**kwargs: str) -> str:  # what the hub would put there: the model files
        calls.append(kwargs)
        shutil.copytree(clean, kwargs["local_dir"], dirs_exist_ok=True)
        return kwargs["local_dir"]

    assert pull(settings, snapshot_download=download) == folder
    assert calls == [{"repo_id": "someone/nsfw-detector", "local_dir": str(folder)}]
    assert json.loads((folder / "config.json").read_text())["id2label"]["1"] == "nsfw"
    checker = load_checker(settings)
    assert checker.check([Image.new("RGB", (8, 8))])[0].flagged is False


def test_pull_failures_say_what_to_do(tmp_path: Path, clean: Path) -> None:
    def offline(**kwargs: str) -> str:
        raise OSError("no route to host")

    settings = Settings(data_dir=tmp_path, safety_model="someone/nsfw-detector")
    with pytest.raises(EngineError, match="copy the model folder") as info:
        pull(settings, snapshot_download=offline)
    assert info.value.code == "modelPullFailed"
    with pytest.raises(EngineError, match="REELSERVE_SAFETY_MODEL is not set"):
        pull(Settings(data_dir=tmp_path))
    # A local folder is only checked, never downloaded.
    assert pull(Settings(data_dir=tmp_path, safety_model=str(clean)), snapshot_download=offline) == clean


def test_models_pull_safety_on_the_command_line(tmp_path: Path, clean: Path) -> None:
    env = {**os.environ, "REELSERVE_DATA_DIR": str(tmp_path), "REELSERVE_SAFETY_MODEL": str(clean)}
    command = [sys.executable, "-m", "reelserve", "models", "pull", "safety"]
    out = subprocess.run(command, capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"content checker ready in {clean}" in out.stdout
    env["REELSERVE_SAFETY_MODEL"] = str(tmp_path / "missing")
    out = subprocess.run(command, capture_output=True, text=True, env=env)
    assert out.returncode == 1 and "has no config.json" in out.stdout


def _video_input(path: Path) -> VideoInput:
    facts = probe(path)
    return VideoInput(path=path, width=facts.width, height=facts.height, fps=facts.fps,
                      num_frames=facts.num_frames, duration=facts.duration,
                      has_audio=facts.has_audio)


def test_input_videos_are_checked_by_key_frames_or_every_frame(
        tmp_path: Path, flagging: Path, clean: Path) -> None:
    video = _video_input(make_video(tmp_path / "in.mp4", 160, 96, frames=50, fps=24))
    inputs = ResolvedInputs(first_frame=Image.new("RGB", (40, 30)),
                            reference_videos=[video], input_video=video)
    assert key_frame_indices(50, 24) == [0, 24, 25, 48, 49]  # one per second, middle, last
    counted: dict[str, int] = {}
    for mode in ("fast", "full"):
        checker = CountingChecker(ClassifierChecker(clean, ["nsfw"], 0.5))
        guard = ContentGuard(checker, mode="fast" if mode == "fast" else "full", batch_size=8)
        assert guard.check_inputs(inputs) > 0
        counted[mode] = checker.images
    # The image, then the input video and the reference video (the same file here).
    assert counted == {"fast": 1 + 2 * 5, "full": 1 + 2 * 50}
    flagged = ContentGuard(ClassifierChecker(flagging, ["nsfw"], 0.5), mode="fast")
    with pytest.raises(ContentPolicyError, match=r"inputs\.video") as info:
        flagged.check_inputs(ResolvedInputs(input_video=video))
    assert info.value.code == "contentPolicyViolation" and info.value.parameter == "inputs.video"
