"""Content safety: ``safety.checkContent`` checked for real (``docs/safety.md``).

* :class:`SafetyChecker` / :class:`Verdict` (:mod:`.base`): the seam, images in, verdicts out.
* :class:`~reelserve.safety.classifier.ClassifierChecker`: the default checker, a transformers
  image-classification model from ``REELSERVE_SAFETY_MODEL`` (imported only when it is used).
* :class:`ContentGuard` (:mod:`.guard`): what the worker checks for one job (inputs before
  rendering, output frames while encoding) and what a flag does.

This module is light: it imports neither torch nor transformers, so the API can ask
:func:`checker_configured` at submit time.
"""

from __future__ import annotations

import re
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TextIO

from reelserve.errors import EngineError, ErrorKind
from reelserve.safety.base import SafetyChecker, Verdict
from reelserve.safety.guard import ContentGuard, FrameWatch, Outcome, key_frame_indices

if TYPE_CHECKING:
    from reelserve.settings import Settings
    from reelserve.tasks import GenerationSpec

__all__ = [
    "ContentGuard",
    "FrameWatch",
    "Outcome",
    "SafetyChecker",
    "Verdict",
    "checker_configured",
    "guard_for",
    "key_frame_indices",
    "load_checker",
    "model_folder",
    "pull",
    "pull_command",
    "wants_pull",
]

# owner/name as the hub spells repo ids (no leading dot or slash, exactly one slash).
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")

_checkers: dict[tuple[Any, ...], SafetyChecker] = {}
_checkers_lock = threading.Lock()


def checker_configured(settings: Settings) -> bool:
    """Whether this install has a content checker (``REELSERVE_SAFETY_MODEL`` is set).

    Cheap and import-free: the API calls it at submit to refuse ``safety.checkContent`` when
    nothing would check. Whether the weights are really there is found out by the worker.
    """
    return bool(settings.safety_model and settings.safety_model.strip())


def _is_hub_id(value: str) -> bool:
    return not Path(value).expanduser().is_dir() and bool(_REPO_ID.match(value))


def model_folder(settings: Settings) -> Path:
    """The local folder of the configured checker model.

    ``REELSERVE_SAFETY_MODEL`` is that folder, or a hub repo id whose download lives in
    ``<data_dir>/models/safety/<owner>--<name>`` (where ``reelserve models pull safety`` puts it).
    """
    value = (settings.safety_model or "").strip()
    if not value:
        raise EngineError(
            "safetyCheckerUnavailable", "no content checker is configured (REELSERVE_SAFETY_MODEL)",
            parameter="safety.checkContent", kind=ErrorKind.UNAVAILABLE,
        )
    if _is_hub_id(value):
        return Path(settings.data_dir) / "models" / "safety" / value.replace("/", "--")
    return Path(value).expanduser()


def load_checker(settings: Settings) -> SafetyChecker:
    """The configured :class:`~reelserve.safety.classifier.ClassifierChecker`, loaded once per
    process (worker slots share it) on ``REELSERVE_DIFFUSERS_DEVICE`` or the first GPU."""
    folder = model_folder(settings)
    key = (str(folder.resolve()), tuple(settings.safety_labels), settings.safety_threshold,
           settings.diffusers_device, settings.safety_batch_size)
    with _checkers_lock:
        checker = _checkers.get(key)
        if checker is None:
            from reelserve.safety.classifier import ClassifierChecker

            checker = ClassifierChecker(
                folder, settings.safety_labels, settings.safety_threshold,
                device=settings.diffusers_device, batch_size=settings.safety_batch_size,
            )
            _checkers[key] = checker
        return checker


def guard_for(
    settings: Settings,
    spec: GenerationSpec,
    *,
    checker: SafetyChecker | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> ContentGuard | None:
    """The guard for ``spec``, or None when the request asked for no check.

    ``checker`` replaces the configured one (tests, plugins). A request that asks for a check on
    an install without a checker fails with ``safetyCheckerUnavailable``: never silently passed.
    """
    if not spec.safety.check_content or spec.safety.mode not in ("fast", "full"):
        return None
    if checker is None:
        if not checker_configured(settings):
            raise EngineError(
                "safetyCheckerUnavailable",
                "safety.checkContent was requested but this server has no content checker "
                "configured (REELSERVE_SAFETY_MODEL); send the task without safety.checkContent "
                "or ask the operator to configure one",
                parameter="safety.checkContent", kind=ErrorKind.UNAVAILABLE,
            )
        checker = load_checker(settings)
    mode: Literal["fast", "full"] = "full" if spec.safety.mode == "full" else "fast"
    threshold = getattr(checker, "threshold", settings.safety_threshold)
    return ContentGuard(
        checker, mode=mode, on_flag=settings.safety_on_flag, threshold=float(threshold),
        batch_size=settings.safety_batch_size, cancelled=cancelled,
    )


def pull(settings: Settings, *, snapshot_download: Callable[..., str] | None = None) -> Path:
    """``reelserve models pull safety``: download the configured hub model into
    :func:`model_folder`. A configured local folder is only checked, never downloaded.

    Raises:
        EngineError: ``modelPullFailed`` (kind UNAVAILABLE) when nothing is configured, the hub
            cannot be reached, or the download is not an image classifier.
    """
    value = (settings.safety_model or "").strip()
    if not value:
        raise EngineError(
            "modelPullFailed", "REELSERVE_SAFETY_MODEL is not set: name a hub repo id of an "
            "image-classification model (or a local folder) first", parameter="name",
            kind=ErrorKind.UNAVAILABLE,
        )
    folder = model_folder(settings)
    if _is_hub_id(value):
        if snapshot_download is None:
            from huggingface_hub import snapshot_download as hub_download

            snapshot_download = hub_download
        folder.mkdir(parents=True, exist_ok=True)
        try:
            snapshot_download(repo_id=value, local_dir=str(folder))
        except Exception as exc:  # network, auth, missing repo: all end the same way
            raise EngineError(
                "modelPullFailed",
                f"could not download {value} into {folder}: {type(exc).__name__}: {exc}. Without "
                f"internet, copy the model folder of {value} to {folder} on this machine, or set "
                "REELSERVE_SAFETY_MODEL to a local folder",
                parameter="name", kind=ErrorKind.UNAVAILABLE,
            ) from exc
    if not (folder / "config.json").is_file():
        raise EngineError(
            "modelPullFailed",
            f"{folder} has no config.json: not a transformers image-classification model",
            parameter="name", kind=ErrorKind.UNAVAILABLE,
        )
    return folder


def wants_pull(settings: Settings, name: str) -> bool:
    """Whether ``reelserve models pull NAME`` means the content checker: ``safety``, or the
    configured ``REELSERVE_SAFETY_MODEL`` itself."""
    return name == "safety" or bool(settings.safety_model and name == settings.safety_model.strip())


def pull_command(settings: Settings, out: TextIO | None = None) -> int:
    """``reelserve models pull safety``: :func:`pull`, reported on ``out``; the exit status."""
    from reelserve.errors import ReelserveError

    out = out or sys.stdout
    try:
        folder = pull(settings)
    except ReelserveError as exc:
        print(f"error: {exc.message}", file=out)
        return 1
    print(f"content checker ready in {folder}", file=out)
    return 0
