"""Tiny real content checkers and a tiny real engine for the safety tests.

:func:`make_classifier` saves a 1-layer random ViT image classifier (labels ``normal`` and
``nsfw``) with its preprocessor config into a folder, as a real checker model folder looks. Its
classifier head has zero weights and a bias that decides the answer for every image: ``flag=True``
makes ``nsfw`` win with probability ~1, ``flag=False`` makes ``normal`` win.

:class:`CountingChecker` wraps a real checker and counts the images it classified.
:class:`StripeEngine` renders frames whose content changes per frame (cheap, no weights).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from reelserve.media.clip import Clip, ResolvedInputs
from reelserve.safety import SafetyChecker, Verdict
from reelserve.tasks import GenerationSpec

if TYPE_CHECKING:
    from PIL import Image


def make_classifier(folder: Path, *, flag: bool) -> Path:
    """A tiny ViT classifier in ``folder`` that always (``flag``) or never flags ``nsfw``."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(
        image_size=32, patch_size=16, num_channels=3, hidden_size=8, num_hidden_layers=1,
        num_attention_heads=2, intermediate_size=16,
        id2label={0: "normal", 1: "nsfw"}, label2id={"normal": 0, "nsfw": 1},
    )
    torch.manual_seed(0)
    model = ViTForImageClassification(config).eval()
    with torch.no_grad():
        # Zero weights: the logits are the bias alone, whatever the image.
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([0.0, 12.0] if flag else [12.0, 0.0]))
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    # Written by hand so the folder reads the same in every transformers version.
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "ViTImageProcessor",
        "do_resize": True, "size": {"height": 32, "width": 32}, "resample": 2,
        "do_rescale": True, "rescale_factor": 1 / 255,
        "do_normalize": True, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
    }))
    return folder


class CountingChecker:
    """A real checker that counts what it classified (``images``) and how often (``calls``)."""

    def __init__(self, inner: SafetyChecker) -> None:
        self.inner = inner
        self.threshold = getattr(inner, "threshold", 0.5)
        self.images = 0
        self.calls = 0
        self._lock = threading.Lock()

    def check(self, images: Sequence[Image.Image]) -> list[Verdict]:
        with self._lock:
            self.images += len(images)
            self.calls += 1
        return self.inner.check(images)


class StripeEngine:
    """Frames with a stripe moving across them: each frame differs, nothing to load."""

    name = "stripes"

    def __init__(self) -> None:
        self.rendered: list[int] = []

    def supports(self, spec: GenerationSpec) -> bool:
        return True

    def generate(self, spec: GenerationSpec, inputs: ResolvedInputs, seed: int,
                 progress: Callable[[float], None], cancelled: Callable[[], bool]) -> Clip:
        self.rendered.append(seed)
        assert spec.width and spec.height
        width, height, n = spec.width, spec.height, spec.num_frames

        def frames() -> Iterator[np.ndarray]:
            for i in range(n):
                frame = np.full((height, width, 3), 40, dtype=np.uint8)
                x = i * width // n
                frame[:, x : x + max(1, width // 20)] = (220, 180, seed % 256)
                progress((i + 1) / n)
                yield frame

        return Clip(frames=frames(), num_frames=n, width=width, height=height, fps=spec.fps)
