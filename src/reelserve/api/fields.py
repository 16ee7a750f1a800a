"""Field names of errors: one neutral vocabulary, one table per dialect, one renderer.

Every refusal names the field it is about. Below ``api/`` that name is a neutral key: a
:class:`~reelserve.tasks.TaskRequest` path such as ``prompt``, ``frame_images.1.frame`` or
``provider.sound``. The validator's historical parameter paths (the Runware spellings it has always
reported, which the Runware SDKs and the catalog tests read) are mapped onto those keys by
:data:`CANONICAL`, the one place that knows both. Each dialect declares a :class:`FieldTable`
(neutral key -> its own wire name) and :func:`FieldTable.render` turns any
:class:`~reelserve.errors.ReelserveError` into the same error spoken in that dialect's words:
its ``parameter``, the field names inside its ``message``, and codes that embed a field name
(``missingPositivePrompt`` reads ``missingPrompt`` to an OpenAI client).

The Runware table is the identity on today's names, so Runware clients see exactly the errors
they always saw.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property

from reelserve.errors import ReelserveError

CANONICAL: Mapping[str, str] = {
    # neutral key (TaskRequest path)   ->  the validator's parameter path
    "prompt": "positivePrompt",
    "negative_prompt": "negativePrompt",
    "frame_images": "inputs.frameImages",
    "reference_images": "inputs.referenceImages",
    "reference_videos": "inputs.referenceVideos",
    "video": "inputs.video",
    "cfg_scale": "CFGScale",
    "number_results": "numberResults",
    "provider.sound": "providerSettings.klingai.sound",
    "provider.keep_original_sound": "providerSettings.klingai.keepOriginalSound",
    "provider.camera_control": "providerSettings.klingai.cameraControl",
    "output_type": "outputType",
    "output_format": "outputFormat",
    "output_quality": "outputQuality",
    "delivery_method": "deliveryMethod",
    "webhook_url": "webhookURL",
    "upload_endpoint": "uploadEndpoint",
    "include_cost": "includeCost",
    "task_uuid": "taskUUID",
}
"""Neutral keys whose validator spelling differs; every other key is spelled the same."""

_NEUTRAL_OF = {path: key for key, path in CANONICAL.items()}
# Longest spelling first, so ``inputs.referenceImages`` wins over a shorter overlapping one.
_CANONICAL_BY_LENGTH = sorted(CANONICAL.items(), key=lambda kv: len(kv[1]), reverse=True)
_CODE_PREFIXES = ("missing", "invalid", "unsupported")


def _split(path: str, table: Mapping[str, str]) -> tuple[str, str] | None:
    """``(prefix, rest)`` of the longest table key that ``path`` equals or starts with + '.'."""
    for prefix in sorted(table, key=len, reverse=True):
        if path == prefix or path.startswith(prefix + "."):
            return prefix, path[len(prefix):]
    return None


def neutral_key(parameter: str | None) -> str | None:
    """The neutral key of an error's parameter path (unknown paths are kept as they are)."""
    if parameter is None:
        return None
    hit = _split(parameter, _NEUTRAL_OF)
    return parameter if hit is None else _NEUTRAL_OF[hit[0]] + hit[1]


def _stem(name: str) -> str:
    """``input_reference`` -> ``InputReference``; ``CFGScale`` -> ``CFGScale`` (code stems)."""
    last = name.rsplit(".", 1)[-1]
    return "".join(part[:1].upper() + part[1:] for part in last.split("_"))


def _spelled(word: str) -> re.Pattern[str]:
    # A field name as a whole word: not inside a longer identifier or path.
    return re.compile(rf"(?<![\w.]){re.escape(word)}(?![\w])")


@dataclass(frozen=True)
class FieldTable:
    """A dialect's names for neutral field keys.

    Args:
        names: neutral key (or key prefix, e.g. ``frame_images``) -> the dialect's field name.
        neutral_default: keys not in ``names`` read as the neutral key (True) or keep the
            validator's spelling (False: Runware).
        keep_suffix: keep the rest of a path after the named prefix in ``parameter``
            (``inputs.frameImages.1.frame``); dialects whose fields are flat say False.
        rename_codes: also rename field names embedded in error codes.
        mention: start a message with the field's name when it does not name it already.
    """

    names: Mapping[str, str] = field(default_factory=dict)
    neutral_default: bool = True
    keep_suffix: bool = False
    rename_codes: bool = True
    mention: bool = True

    def name(self, key: str) -> str:
        """This dialect's name for neutral ``key`` (a path; prefixes are looked up)."""
        hit = _split(key, self.names)
        if hit is not None:
            return self.names[hit[0]] + (hit[1] if self.keep_suffix else "")
        canon = _split(key, CANONICAL)
        if canon is None or self.neutral_default:
            return key
        return CANONICAL[canon[0]] + (canon[1] if self.keep_suffix else "")

    @cached_property
    def _renames(self) -> list[tuple[re.Pattern[str], str, str]]:
        """(pattern of the validator spelling, this dialect's name, that spelling) per key."""
        out = []
        for key, spelled in _CANONICAL_BY_LENGTH:
            mine = self.names.get(key, key if self.neutral_default else spelled)
            if mine != spelled:
                out.append((_spelled(spelled), mine, spelled))
        return out

    def render(self, exc: ReelserveError) -> ReelserveError:
        """``exc`` in this dialect's words (the same class, kind and allowed values)."""
        key = neutral_key(exc.parameter)
        parameter = self.name(key) if key is not None else None
        message = exc.message
        code = exc.code
        if exc.parameter is not None and parameter != exc.parameter:
            # The error's own field: its whole path, else the named prefix of it.
            message, hits = _spelled(exc.parameter).subn(parameter or "", message)
            own = _split(exc.parameter, _NEUTRAL_OF)
            if hits == 0 and own is not None:
                message, hits = _spelled(own[0]).subn(self.name(_NEUTRAL_OF[own[0]]), message)
            if hits == 0 and self.mention and parameter and parameter not in message:
                message = f"{parameter}: {message}"
        elif self.mention and parameter is not None and parameter not in message:
            message = f"{parameter}: {message}"
        for pattern, mine, spelled in self._renames:
            # Other fields a message mentions (the "no inputs.frameImages given" kind).
            message = pattern.sub(mine, message)
            if self.rename_codes:
                for prefix in _CODE_PREFIXES:
                    if code == prefix + _stem(spelled):
                        code = prefix + _stem(mine)
        if (parameter, message, code) == (exc.parameter, exc.message, exc.code):
            return exc
        try:  # the same class, so dialects that tell subclasses apart still can
            return type(exc)(code, message, parameter=parameter,
                             allowed_values=exc.allowed_values, kind=exc.kind)
        except TypeError:  # a subclass with its own constructor
            return ReelserveError(code, message, parameter=parameter,
                                  allowed_values=exc.allowed_values, kind=exc.kind)


RUNWARE_FIELDS = FieldTable(neutral_default=False, keep_suffix=True, rename_codes=False,
                            mention=False)
"""Runware: the validator's spelling, unchanged (what the official SDKs read)."""
