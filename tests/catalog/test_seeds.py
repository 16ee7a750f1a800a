"""Every request example of the seeds validates and prices to its documented cost."""

from __future__ import annotations

from typing import Any

import pytest
from catalog_helpers import seed_examples

from reelserve.api.runware.schema import parse_video_inference
from reelserve.catalog.pricing import price, task_cost
from reelserve.catalog.validate import resolve_media, validate
from reelserve.tasks import Workflow

EXAMPLES = seed_examples()


def test_all_seed_examples_are_kept() -> None:
    # 000: 4, 002: 3, 003: 18, 004: 10 request examples (001 is the 302-style API).
    assert len(EXAMPLES) == 35
    assert sum(1 for _, d in EXAMPLES if d["cost"] is not None) == 17


@pytest.mark.parametrize(("name", "example"), EXAMPLES, ids=[n for n, _ in EXAMPLES])
def test_seed_example_validates_and_prices(name: str, example: dict[str, Any]) -> None:
    request = example["request"]
    spec = validate(parse_video_inference(request))
    assert spec.model == request["model"]
    assert spec.task_uuid == request["taskUUID"]
    if "width" in request:
        assert (spec.width, spec.height) == (request["width"], request["height"])
    if "duration" in request:
        assert spec.duration == request["duration"]
    if "inputVideo" in example:
        video = example["inputVideo"]
        assert spec.workflow is Workflow.V2V and not spec.is_resolved
        spec = resolve_media(spec, input_video=(video["width"], video["height"], video["duration"]))
    elif spec.width is None:
        spec = resolve_media(spec, first_frame_size=(1024, 768))
    assert spec.is_resolved
    if example["cost"] is not None:
        assert price(spec) == example["cost"]
        assert task_cost(spec) == example["cost"]  # numberResults defaults to 1
