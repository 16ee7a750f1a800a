"""Tiny random pipelines of every kind, built once per session, and profile-file helpers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from diffusers_tiny import KINDS, save_tiny

pytest.importorskip("torch")
pytest.importorskip("diffusers")

#: The tiny profile of each kind: small native size and rate so a 5 s clip is ~20 frames.
TINY_NATIVE = {kind: ("32x32", 4) for kind in KINDS}


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One saved diffusers folder per pipeline kind (built once, ~seconds)."""
    root = tmp_path_factory.mktemp("tiny-weights")
    return {kind: save_tiny(kind, root / kind) for kind in KINDS}


def profile_toml(entries: list[tuple[str, str, str, Path | str, dict[str, Any]]]) -> str:
    """TOML text for ``(model, workflow, pipeline, weights, extra)`` entries."""
    lines: list[str] = []
    for model, workflow, pipeline, weights, extra in entries:
        size, fps = TINY_NATIVE.get(pipeline, ("32x32", 4))
        body = {"pipeline": pipeline, "weights": str(weights), "steps": 2, "guidance": 3.0,
                "native_size": size, "native_fps": fps, **extra}
        lines.append(f'[models."{model}".{workflow}]')
        for key, value in body.items():
            if isinstance(value, bool):
                lines.append(f"{key} = {'true' if value else 'false'}")
            elif isinstance(value, (int, float)):
                lines.append(f"{key} = {value}")
            else:
                lines.append(f"{key} = {value!r}".replace("'", '"'))
        lines.append("")
    return "\n".join(lines)


@pytest.fixture
def write_profiles(tmp_path: Path) -> Callable[..., Path]:
    """Write a profile file from entries and return its path."""

    def write(entries: list[tuple[str, str, str, Path | str, dict[str, Any]]]) -> Path:
        path = tmp_path / "profiles.toml"
        path.write_text(profile_toml(entries), encoding="utf-8")
        return path

    return write
