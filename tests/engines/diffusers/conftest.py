"""Tiny random pipelines of every kind, built once per session, and profile-file helpers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from diffusers_tiny import KINDS, profile_toml, save_tiny

pytest.importorskip("torch")
pytest.importorskip("diffusers")

@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One saved diffusers folder per pipeline kind (built once, ~seconds)."""
    root = tmp_path_factory.mktemp("tiny-weights")
    return {kind: save_tiny(kind, root / kind) for kind in KINDS}


@pytest.fixture
def write_profiles(tmp_path: Path) -> Callable[..., Path]:
    """Write a profile file from entries and return its path."""

    def write(entries: list[tuple[str, str, str, Path | str, dict[str, Any]]]) -> Path:
        path = tmp_path / "profiles.toml"
        path.write_text(profile_toml(entries), encoding="utf-8")
        return path

    return write
