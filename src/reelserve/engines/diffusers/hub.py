"""``reelserve models pull``: download a profile's weights from the model hub.

This is an operator action run by hand (like ``pip install``), not something a request can
trigger, so it uses huggingface_hub's own downloader rather than the request-facing netguard.
Without internet it fails with a message saying what to copy where instead.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from reelserve.engines.diffusers.profiles import ProfileEntry, ProfileSet
from reelserve.errors import EngineError, ErrorKind, NotFoundError


def weights_names(profiles: ProfileSet) -> dict[str, list[ProfileEntry]]:
    """Profile entries grouped by the name ``models pull`` accepts: the weights folder's name."""
    out: dict[str, list[ProfileEntry]] = {}
    for entry in profiles:
        out.setdefault(entry.profile.weights.name, []).append(entry)
    return out


def find_weights(profiles: ProfileSet, name: str) -> tuple[Path, str]:
    """The (folder, hub repo id) that ``name`` designates.

    ``name`` may be a weights folder name, a hub repo id or a model id (``klingai:1@1``) whose
    profiles all share one weights folder.

    Raises:
        NotFoundError: ``modelNotFound`` listing the names that exist.
        EngineError: the entry has no ``repo`` to download from.
    """
    groups = weights_names(profiles)
    matches = {
        (e.profile.weights, e.profile.repo)
        for e in profiles
        if name in (e.profile.weights.name, e.profile.repo, e.model)
    }
    if not matches:
        raise NotFoundError(
            "modelNotFound",
            f"no profile uses weights named {name!r}; known: {sorted(groups)}",
            parameter="name",
            allowed_values=sorted(groups),
        )
    if len(matches) > 1:
        raise EngineError(
            "invalidName",
            f"{name!r} names several weights folders {sorted(str(m[0]) for m in matches)}; "
            f"pull one of {sorted(m[0].name for m in matches)}",
            parameter="name",
            allowed_values=sorted(m[0].name for m in matches),
        )
    folder, repo = next(iter(matches))
    if not repo:
        raise EngineError(
            "missingRepo",
            f"the profile for {folder} has no `repo` (hub id) to download from; add one, or copy a "
            f"diffusers folder to {folder}",
            parameter="repo",
        )
    return folder, repo


def pull(
    profiles: ProfileSet,
    name: str,
    *,
    snapshot_download: Callable[..., str] | None = None,
) -> Path:
    """Download the weights named ``name`` into the profile's ``weights`` folder.

    huggingface_hub prints its own progress bars. Returns the folder.

    Raises:
        EngineError: ``modelPullFailed`` (kind UNAVAILABLE) when the hub cannot be reached or
            refuses the repo, saying how to install the weights by hand instead.
    """
    folder, repo = find_weights(profiles, name)
    if snapshot_download is None:
        from huggingface_hub import snapshot_download as hub_download

        download: Callable[..., str] = hub_download
    else:
        download = snapshot_download

    try:
        download(repo_id=repo, local_dir=str(folder))
    except Exception as exc:  # network, auth, missing repo: all end the same way for the operator
        raise EngineError(
            "modelPullFailed",
            f"could not download {repo} into {folder}: {type(exc).__name__}: {exc}. Without "
            f"internet, copy the diffusers folder of {repo} (with model_index.json) to {folder} "
            f"on this machine instead",
            parameter="name",
            kind=ErrorKind.UNAVAILABLE,
        ) from exc
    if not (folder / "model_index.json").is_file():
        raise EngineError(
            "modelPullFailed",
            f"{repo} downloaded into {folder} but has no model_index.json: not a diffusers folder "
            f"(pick the '-Diffusers' variant of the repo)",
            parameter="repo",
            kind=ErrorKind.UNAVAILABLE,
        )
    return folder
