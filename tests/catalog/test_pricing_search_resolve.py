"""Prices, modelSearch and resolve_media (size/duration from decoded inputs)."""

from __future__ import annotations

import pytest
from catalog_helpers import IMG, O1, i2v, run, wire

from reelserve.catalog import get_catalog
from reelserve.catalog.pricing import billed_seconds, price, task_cost
from reelserve.catalog.search import search_models
from reelserve.catalog.validate import infer_size_from_image, resolve_media
from reelserve.errors import EngineError, MediaError, ReelserveError, ValidationError

VID = "https://example.com/in.mp4"


def test_seed_prices() -> None:
    assert price(run(wire(duration=10))) == 0.1848
    assert price(run(i2v("klingai:2@1"))) == 0.1848
    assert price(run(wire(O1))) == 0.42
    assert price(run(wire(O1, duration=10))) == 0.84
    assert price(run(wire(O1, inputs={"frameImages": [IMG]}))) == 0.42
    assert price(run(wire(O1, inputs={"referenceImages": [IMG]}))) == 0.42
    assert price(run(wire(O1, inputs={"referenceVideos": [VID]}))) == 0.63
    assert price(run(wire(O1, duration=3, inputs={"referenceVideos": [VID]}))) == 0.378
    edit = resolve_media(run(wire(O1, inputs={"video": VID})), input_video=(1280, 720, 6.0))
    assert price(edit) == 0.756


def test_task_cost_sums_results() -> None:
    spec = run(wire(numberResults=3))
    assert task_cost(spec) == round(3 * 0.1848, 4)


def test_unresolved_edit_has_no_price() -> None:
    with pytest.raises(ReelserveError) as info:
        price(run(wire(O1, inputs={"video": VID})))
    assert info.value.code == "unresolvedSpec"


def test_billed_seconds() -> None:
    assert [billed_seconds(d) for d in (0.2, 3.0, 6.02, 6.5, 9.96)] == [1, 3, 6, 7, 10]


def test_every_model_has_a_positive_price() -> None:
    for air, entry in get_catalog().models.items():
        task = wire(air) if "t2v" in entry.workflows else i2v(air)
        spec = run(task)
        if spec.width is None:
            spec = resolve_media(spec, first_frame_size=(1280, 720))
        assert price(spec) > 0, air


def test_search() -> None:
    everything = search_models()
    assert everything["totalResults"] == 13 and len(everything["results"]) == 13
    o1 = search_models("O1")["results"]
    assert [r["air"] for r in o1] == [O1]
    assert o1[0]["workflows"] == ["t2v", "i2v", "flf2v", "r2v", "v2v"]
    assert o1[0]["fps"]["r2v"] == 24 and o1[0]["durations"]["r2v"][0] == 3
    assert search_models("pro 2.1")["results"][0]["air"] == "klingai:5@2"
    page = search_models(limit=5, offset=10)
    assert page["totalResults"] == 13 and len(page["results"]) == 3
    assert search_models("nothing-like-this") == {"totalResults": 0, "results": []}
    turbo = search_models("klingai:6@0")["results"][0]
    assert turbo["sizes"] == [] and turbo["sizeFromFirstFrame"]


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"limit": 0}, "invalidLimit"),
        ({"limit": 101}, "invalidLimit"),
        ({"limit": "5"}, "invalidLimit"),
        ({"limit": True}, "invalidLimit"),
        ({"offset": -1}, "invalidOffset"),
        ({"offset": 10**5000}, None),
        ({"search": 5}, "invalidSearch"),
    ],
)
def test_search_refusals(kwargs: dict[str, object], code: str | None) -> None:
    if code is None:
        assert search_models(**kwargs)["results"] == []  # type: ignore[arg-type]
        return
    with pytest.raises(ValidationError) as info:
        search_models(**kwargs)  # type: ignore[arg-type]
    assert info.value.code == code and info.value.parameter == code[len("invalid") :].lower()


def test_infer_size_rule() -> None:
    turbo = get_catalog().model("klingai:6@0")
    assert infer_size_from_image(turbo, 1024, 768) == (960, 720)
    assert infer_size_from_image(turbo, 768, 1024) == (720, 960)
    assert infer_size_from_image(turbo, 1920, 1080) == (1280, 720)
    assert infer_size_from_image(turbo, 500, 500) == (720, 720)
    assert infer_size_from_image(turbo, 2048, 300) == (1920, 280)  # long side capped at 1920
    w, h = infer_size_from_image(turbo, 333, 301)
    assert w % 2 == 0 and h % 2 == 0


def test_resolve_first_frame() -> None:
    spec = run(i2v("klingai:6@0"))
    assert not spec.is_resolved
    resolved = resolve_media(spec, first_frame_size=(1080, 1920))
    assert (resolved.width, resolved.height, resolved.duration) == (720, 1280, 5.0)
    assert resolve_media(resolved) is resolved
    with pytest.raises(EngineError):
        resolve_media(spec)


def test_resolve_video_edit() -> None:
    spec = run(wire(O1, inputs={"video": VID}))
    out = resolve_media(spec, input_video=(1920, 1080, 6.0))
    assert (out.width, out.height, out.duration, out.num_frames) == (1920, 1080, 6.0, 144)
    big = resolve_media(spec, input_video=(4096, 2160, 3.0))
    assert (big.width, big.height) == (2048, 1080)
    odd = resolve_media(spec, input_video=(641, 481, 10.05))
    assert (odd.width, odd.height, odd.duration) == (640, 480, 10.0)  # snapped within 0.1 s
    assert resolve_media(spec, input_video=(640, 480, 2.95)).duration == 3.0
    for bad, code in [
        ((640, 480, 2.8), "invalidVideoDuration"),
        ((640, 480, 10.2), "invalidVideoDuration"),
        ((640, 200, 5.0), "invalidVideoDimensions"),
    ]:
        with pytest.raises(MediaError) as info:
            resolve_media(spec, input_video=bad)
        assert (info.value.code, info.value.parameter) == (code, "inputs.video")
    with pytest.raises(EngineError):
        resolve_media(spec)
