"""The ``reelserve models list | pull`` and ``reelserve doctor`` commands.

``reelserve.cli`` parses arguments and calls these; each prints to ``out`` and returns an exit
code (0 fine, 1 a problem found or an operation failed, 2 nothing configured to act on).
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from typing import TYPE_CHECKING, TextIO

from reelserve.errors import ReelserveError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from reelserve.engines.diffusers.profiles import ProfileSet
    from reelserve.engines.registry import EngineRegistry
    from reelserve.settings import Settings


def _profiles(settings: Settings, out: TextIO) -> ProfileSet | None:
    from reelserve.engines.diffusers.profiles import ProfileSet

    if settings.profiles is None:
        print(
            "no profiles configured (set REELSERVE_PROFILES to a TOML file, e.g. a copy of "
            "profiles.example.toml); every model renders with the preview engine",
            file=out,
        )
        return None
    return ProfileSet.load(settings.profiles, check_weights=False)


def engines_at_start(settings: Settings, preload: Sequence[str] = ()) -> EngineRegistry | None:
    """Build the engine registry for ``reelserve serve|worker`` before they start anything.

    Loading the registry validates the profiles file (keys, pipeline kinds, sizes, speed options
    and the packages they need, weights folders) without importing torch; ``preload`` ids must
    each have a profile. Returns the registry for the worker to use, or ``None`` when
    ``settings.engine_selector`` names another selector (the worker builds that one itself; the
    profiles are still checked here).

    Raises:
        EngineError: ``invalidProfile``/``modelWeightsNotFound`` naming the file, the entry, the
            key and what is allowed; ``modelUnavailable`` for a ``--preload`` id without profile.
    """
    from reelserve.engines.registry import EngineRegistry
    from reelserve.errors import EngineError, ErrorKind

    registry = EngineRegistry.from_settings(settings)
    if preload:
        served = registry.profiles.models() if registry.profiles is not None else set()
        unknown = sorted(set(preload) - served)
        if unknown:
            where = (f"the profiles file {settings.profiles}" if settings.profiles is not None
                     else "no profiles file (REELSERVE_PROFILES is unset)")
            raise EngineError(
                "modelUnavailable", f"--preload {', '.join(unknown)}: {where} maps "
                f"{'no such id' if served else 'nothing'}; ids it maps: {sorted(served)}",
                parameter="preload", allowed_values=sorted(served), kind=ErrorKind.UNAVAILABLE)
    return None if settings.engine_selector else registry


def models_list(settings: Settings, out: TextIO | None = None) -> int:
    """Print every profile: model id, workflow, pipeline, weights folder, present or not, repo."""
    out = out or sys.stdout
    try:
        profiles = _profiles(settings, out)
    except ReelserveError as exc:
        print(f"error: {exc.message}", file=out)
        return 1
    if profiles is None:
        return 2
    rows = [("MODEL", "WORKFLOW", "PIPELINE", "WEIGHTS", "PRESENT", "REPO")]
    missing = 0
    for entry in sorted(profiles, key=lambda e: (e.model, e.workflow.value)):
        present = (entry.profile.weights / "model_index.json").is_file()
        missing += not present
        rows.append((
            entry.model, entry.workflow.value, entry.profile.pipeline, entry.profile.weights.name,
            "yes" if present else "no", entry.profile.repo or "-",
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip(), file=out)
    if missing:
        print(f"\n{missing} profile(s) lack weights: `reelserve models pull NAME` (NAME from WEIGHTS)", file=out)
    return 0


def models_pull(settings: Settings, name: str, out: TextIO | None = None) -> int:
    """Download the weights ``name`` (weights folder name, hub repo id or model id)."""
    out = out or sys.stdout
    from reelserve.engines.diffusers.hub import pull

    try:
        profiles = _profiles(settings, out)
        if profiles is None:
            return 2
        folder = pull(profiles, name)
    except ReelserveError as exc:
        print(f"error: {exc.message}", file=out)
        return 1
    print(f"weights ready in {folder}", file=out)
    return 0


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def doctor(settings: Settings, out: TextIO | None = None) -> int:
    """Print what this install has: versions, devices, engines, profiles and weights, settings."""
    out = out or sys.stdout
    from reelserve import __version__

    problems = 0
    print(f"reelserve {__version__} on Python {platform.python_version()} ({platform.platform()})", file=out)
    print("\npackages:", file=out)
    for dist in ("torch", "diffusers", "transformers", "accelerate", "huggingface_hub", "av"):
        print(f"  {dist}: {_version(dist) or 'not installed'}", file=out)

    print("\ndevices:", file=out)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        print(f"  CUDA_VISIBLE_DEVICES={visible!r}: only these GPUs are visible, as cuda:0, "
              "cuda:1, ...", file=out)
    if _version("torch") is None:
        print("  torch not installed: the diffusers engine is unavailable (pip install 'reelserve[diffusers]')", file=out)
    else:
        import torch

        if torch.cuda.is_available():
            for i in range(torch.cuda.device_count()):
                prop = torch.cuda.get_device_properties(i)
                print(f"  cuda:{i} {prop.name}, {prop.total_memory / 2**30:.1f} GiB, bf16 "
                      f"{'yes' if torch.cuda.is_bf16_supported() else 'no'}", file=out)
            if torch.cuda.device_count() > 1 and visible is None:
                gpus = ",".join(str(i) for i in range(torch.cuda.device_count()))
                print(f"  several GPUs: run one worker process per GPU with `reelserve worker "
                      f"--gpus {gpus}` (docs/deployment.md)", file=out)
        else:
            print("  no CUDA device: diffusers pipelines would run on the CPU (float32, very slow)", file=out)
        print(f"  cpu: {torch.get_num_threads()} torch threads", file=out)

    print("\nengines:", file=out)
    print(f"  preview: {'on' if settings.preview_fallback else 'off'} (REELSERVE_PREVIEW_FALLBACK)", file=out)
    try:
        profiles = _profiles(settings, out) if settings.profiles is not None else None
    except ReelserveError as exc:
        print(f"  diffusers: profile error: {exc.message}", file=out)
        profiles, problems = None, problems + 1
    if profiles is None:
        if settings.profiles is None:
            print("  diffusers: off (no REELSERVE_PROFILES)", file=out)
    else:
        from reelserve.engines.registry import EngineRegistry

        print(f"  diffusers: {len(profiles)} profile(s) from {settings.profiles}", file=out)
        seen: set[str] = set()
        for entry in profiles:
            folder = entry.profile.weights
            if str(folder) in seen:
                continue
            seen.add(str(folder))
            ok = (folder / "model_index.json").is_file()
            problems += not ok
            served = sorted(f"{e.model}/{e.workflow.value}" for e in profiles if e.profile.weights == folder)
            print(f"    {'ok     ' if ok else 'MISSING'} {folder} ({entry.profile.pipeline}) -> {', '.join(served)}", file=out)
        try:
            EngineRegistry.from_settings(settings)
            print("  registry: profiles valid, the server will start", file=out)
        except ReelserveError as exc:
            print(f"  registry: the server would refuse to start: {exc.message}", file=out)
            problems += 1

    print("\nsettings:", file=out)
    for name, value in settings.redacted().items():  # secrets by their type, never in clear
        print(f"  {name} = {value}", file=out)
    print(f"\n{'no problems found' if not problems else f'{problems} problem(s) found'}", file=out)
    return 0 if not problems else 1
