"""Property tests: no JSON input makes parse + validate raise anything but ReelserveError."""

from __future__ import annotations

import contextlib
import json
from typing import Any

from catalog_helpers import IMG, O1, seed_examples, wire
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reelserve.api.runware.schema import parse_video_inference
from reelserve.catalog.validate import resolve_media, validate
from reelserve.errors import ReelserveError
from reelserve.tasks import GenerationSpec

KEYS = [
    "taskType",
    "taskUUID",
    "model",
    "positivePrompt",
    "negativePrompt",
    "width",
    "height",
    "duration",
    "fps",
    "CFGScale",
    "seed",
    "numberResults",
    "inputs",
    "frameImages",
    "referenceImages",
    "providerSettings",
    "outputType",
    "outputFormat",
    "outputQuality",
    "ttl",
    "deliveryMethod",
    "webhookURL",
    "uploadEndpoint",
    "includeCost",
    "safety",
    "klingai",
    "frameImages",
    "referenceVideos",
    "video",
    "image",
    "inputImage",
    "frame",
    "sound",
    "keepOriginalSound",
    "cameraControl",
    "type",
    "config",
    "zoom",
    "checkContent",
    "mode",
]
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["first", "last", "simple", "klingai:1@1", O1, "MP4", "URL", IMG, "", "a" * 3]),
    st.text(max_size=12),
)
JSON = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.one_of(st.sampled_from(KEYS), st.text(max_size=6)), children, max_size=5
        ),
    ),
    max_leaves=20,
)

SEEDS = [d["request"] for _, d in seed_examples()]
VALID = [
    *SEEDS,
    wire(
        numberResults=2,
        seed=5,
        providerSettings={
            "klingai": {"sound": True, "cameraControl": {"type": "simple", "config": {"zoom": 3}}}
        },
    ),
    wire("klingai:5@2", inputs={"frameImages": [IMG, {"image": IMG, "frame": "last"}]}),
    wire(O1, inputs={"video": "https://example.com/v.mp4", "referenceImages": [IMG]}),
]


def _check(task: Any) -> None:
    try:
        spec = validate(parse_video_inference(task))
    except ReelserveError as err:
        assert err.code and err.message
        json.dumps(err.to_dict())  # always serialisable for the wire
        return
    assert isinstance(spec, GenerationSpec)
    with contextlib.suppress(ReelserveError):
        resolve_media(spec, first_frame_size=(640, 480), input_video=(640, 480, 5.0))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(JSON)
def test_arbitrary_json(task: Any) -> None:
    _check(task)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(VALID),
    st.lists(st.tuples(st.sampled_from(KEYS), JSON, st.booleans()), min_size=1, max_size=3),
    st.sampled_from([None, "inputs", "providerSettings"]),
)
def test_mutated_valid_requests(
    base: dict[str, Any], mutations: list[tuple[str, Any, bool]], where: str | None
) -> None:
    task = json.loads(json.dumps(base))
    target = task
    if where is not None:
        target = task.setdefault(where, {})
        if where == "providerSettings":
            target = target.setdefault("klingai", {})
    for key, value, delete in mutations:
        if delete:
            target.pop(key, None)
        else:
            target[key] = value
    _check(task)


def test_giant_integers_do_not_break_messages() -> None:
    # repr() of a 5000-digit int raises ValueError; messages must still be built.
    for key in ("seed", "width", "CFGScale", "duration", "numberResults", "ttl", "fps"):
        _check(wire(**{key: 10**5000}))
    _check(wire(inputs={"frameImages": [{"image": IMG, "frame": 10**5000}]}))
