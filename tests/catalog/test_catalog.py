"""The catalog file: loaded, typed, cross-checked, and the facts the seeds state."""

from __future__ import annotations

from pathlib import Path

import pytest

from reelserve.catalog import get_catalog, load_catalog
from reelserve.errors import ErrorKind, ReelserveError, ValidationError
from reelserve.tasks import FramePosition, Workflow

AIR_IDS = [
    "klingai:1@1",
    "klingai:1@2",
    "klingai:2@1",
    "klingai:2@2",
    "klingai:3@1",
    "klingai:3@2",
    "klingai:4@3",
    "klingai:5@1",
    "klingai:5@2",
    "klingai:5@3",
    "klingai:6@0",
    "klingai:6@1",
    "klingai:kling@o1-standard",
]
PACKAGED = Path(__file__).resolve().parents[2] / "src" / "reelserve" / "catalog" / "models.toml"


def test_all_models_present_and_cached() -> None:
    catalog = get_catalog()
    assert list(catalog.models) == AIR_IDS
    assert get_catalog() is catalog
    assert catalog.model("klingai:2@1").air == "klingai:2@1"


def test_image_limits() -> None:
    images = get_catalog().limits.images
    assert (images.min_side, images.max_side, images.max_bytes) == (300, 2048, 20 * 1024 * 1024)


def test_seed_facts() -> None:
    c = get_catalog()
    assert c.model("klingai:3@1").fps == {Workflow.T2V: 30, Workflow.I2V: 24}
    assert c.model("klingai:2@1").workflows == [Workflow.I2V]
    assert c.model("klingai:5@2").frame_positions == [FramePosition.FIRST, FramePosition.LAST]
    assert c.model("klingai:1@1").frame_positions == [FramePosition.FIRST]
    assert c.model("klingai:2@2").default_size == (1920, 1080)
    assert c.model("klingai:6@0").default_size is None
    o1 = c.model("klingai:kling@o1-standard")
    assert o1.sizes == ["1280x720", "960x960", "720x1280"]
    assert o1.durations[Workflow.R2V] == [3, 4, 5, 6, 7, 8, 9, 10]
    assert o1.references is not None and o1.references.max_images == 7
    assert o1.video_edit is not None and o1.video_edit.max_reference_images == 4


def test_unknown_model_is_not_found() -> None:
    with pytest.raises(ValidationError) as info:
        get_catalog().model("klingai:9@9")
    err = info.value
    assert (err.code, err.parameter, err.kind) == ("modelNotFound", "model", ErrorKind.NOT_FOUND)
    assert err.allowed_values == AIR_IDS


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "models.toml"
    path.write_text(text)
    return path


def test_unknown_key_refused(tmp_path: Path) -> None:
    text = PACKAGED.read_text().replace('tier = "Standard"', 'tier = "Standard"\ncolour = "red"', 1)
    with pytest.raises(ReelserveError, match="colour") as info:
        load_catalog(_write(tmp_path, text))
    assert info.value.code == "invalidCatalog"


@pytest.mark.parametrize(
    ("old", "new", "why"),
    [
        ("fps = { t2v = 30, i2v = 24 }", "fps = { t2v = 30 }", "fps must name"),
        ("sizes = []", 'sizes = ["1280x720"]', "exactly one"),
        ('workflows = ["i2v", "flf2v"]', 'workflows = ["flf2v"]', "flf2v needs i2v"),
        ('"1920x1080", "1080x1080"', '"1920x1081", "1080x1080"', "even"),
        ("min_side = 300", "min_side = 3000", "min_side"),
    ],
)
def test_cross_checks(tmp_path: Path, old: str, new: str, why: str) -> None:
    text = PACKAGED.read_text()
    assert old in text
    with pytest.raises(ReelserveError, match=why):
        load_catalog(_write(tmp_path, text.replace(old, new, 1)))


def test_broken_toml(tmp_path: Path) -> None:
    with pytest.raises(ReelserveError) as info:
        load_catalog(_write(tmp_path, "[limits\n"))
    assert info.value.code == "invalidCatalog"


def test_compatibility_doc_lists_every_model() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "compatibility.md").read_text()
    for air, entry in get_catalog().models.items():
        assert f"`{air}`" in doc and entry.name in doc
