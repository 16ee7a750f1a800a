"""Helpers shared by the catalog tests: build wire requests and run parse + validate."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from reelserve.api.runware.schema import parse_video_inference
from reelserve.catalog.validate import validate
from reelserve.errors import ReelserveError
from reelserve.tasks import GenerationSpec

SEEDS_DIR = Path(__file__).resolve().parent.parent / "data" / "seeds"
IMG = "https://example.com/in.jpg"
O1 = "klingai:kling@o1-standard"


def wire(model: str = "klingai:1@1", **fields: Any) -> dict[str, Any]:
    """A valid videoInference task (text-to-video where the model allows it) plus ``fields``.

    A field set to ``...`` is removed from the task.
    """
    task: dict[str, Any] = {
        "taskType": "videoInference",
        "taskUUID": str(uuid.uuid4()),
        "model": model,
        "positivePrompt": "a calm lake at dawn",
    }
    for key, value in fields.items():
        if value is ...:
            task.pop(key, None)
        else:
            task[key] = value
    return task


def i2v(model: str = "klingai:2@1", **fields: Any) -> dict[str, Any]:
    """A valid image-to-video task for ``model``."""
    return wire(model, inputs={"frameImages": [IMG]}, **fields)


def run(task: dict[str, Any]) -> GenerationSpec:
    """Parse and validate one wire task."""
    return validate(parse_video_inference(task))


def refused(task: dict[str, Any]) -> ReelserveError:
    """The error parse + validate raise for ``task`` (fails the test when none is raised)."""
    with pytest.raises(ReelserveError) as info:
        run(task)
    return info.value


def seed_examples() -> list[tuple[str, dict[str, Any]]]:
    """Every seed request example kept under tests/data/seeds/, by file name."""
    return [(p.name, json.loads(p.read_text("utf-8"))) for p in sorted(SEEDS_DIR.glob("*.json"))]
