"""The content checker seam: images in, one :class:`Verdict` per image out.

A :class:`SafetyChecker` knows nothing about jobs, videos or settings of a request; it classifies
still images. What gets checked (inputs, key frames or every frame) and what a flag does to the
task is decided by :mod:`reelserve.safety.guard`. The default implementation is
:class:`reelserve.safety.classifier.ClassifierChecker` (a transformers image classifier); any
object with a ``check`` method of this shape can stand in for it (tests wrap it to count calls).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["SafetyChecker", "Verdict"]


@dataclass(frozen=True)
class Verdict:
    """The checker's answer for one image.

    Attributes:
        flagged: whether the image counts as unsafe (an unsafe label reached the threshold).
        scores: every label the classifier knows, with its probability (0-1).
        label: the unsafe label that flagged the image (the highest scoring one), if flagged.
    """

    flagged: bool
    scores: dict[str, float] = field(default_factory=dict)
    label: str | None = None

    @property
    def score(self) -> float:
        """The score of the flagging label (0.0 when nothing flagged)."""
        return self.scores.get(self.label, 0.0) if self.label is not None else 0.0


@runtime_checkable
class SafetyChecker(Protocol):
    """Classifies images as safe or unsafe. Implementations must be safe to call from several
    worker threads (the default one serialises its model calls)."""

    def check(self, images: Sequence[Image.Image]) -> list[Verdict]:
        """One :class:`Verdict` per image of ``images`` (RGB), in order; ``images`` is one batch."""
        ...
