"""``modelSearch``: the catalog rendered as Runware model search results."""

from __future__ import annotations

from typing import Any

from reelserve.catalog import get_catalog
from reelserve.catalog.spec import Catalog, ModelEntry
from reelserve.catalog.validate import short_repr
from reelserve.errors import invalid

MAX_LIMIT = 100


def _num(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def render_model(entry: ModelEntry) -> dict[str, Any]:
    """One modelSearch result item for ``entry`` (Runware-like keys, plus the catalog facts)."""
    item: dict[str, Any] = {
        "air": entry.air,
        "name": entry.name,
        "version": entry.version,
        "tier": entry.tier,
        "category": "video",
        "architecture": "klingai",
        "creator": "Kling AI",
        "type": "base",
        "private": False,
        "workflows": [w.value for w in entry.workflows],
        "sizes": list(entry.sizes),
        "sizeFromFirstFrame": entry.infer_size is not None,
        "fps": {w.value: fps for w, fps in entry.fps.items()},
        "durations": {w.value: [_num(d) for d in ds] for w, ds in entry.durations.items()},
        "framePositions": [p.value for p in entry.frame_positions],
        "promptRequired": [w.value for w in entry.prompt_required],
        "providerSettings": list(entry.provider_settings),
        "price": {
            "unit": entry.price.unit,
            "base": entry.price.base,
            **(
                {"referenceVideo": entry.price.reference_video}
                if entry.price.reference_video
                else {}
            ),
            **({"videoEdit": entry.price.video_edit} if entry.price.video_edit else {}),
        },
        "tags": ["video", "kling", *(w.value for w in entry.workflows)],
    }
    if entry.references is not None:
        item["maxReferenceImages"] = entry.references.max_images
        item["maxReferenceVideos"] = entry.references.max_videos
    if entry.video_edit is not None:
        item["videoEdit"] = {
            "minDuration": _num(entry.video_edit.min_duration),
            "maxDuration": _num(entry.video_edit.max_duration),
            "maxReferenceImages": entry.video_edit.max_reference_images,
        }
    return item


def search_models(
    search: str | None = None,
    limit: int = 20,
    offset: int = 0,
    *,
    catalog: Catalog | None = None,
) -> dict[str, Any]:
    """Answer a ``modelSearch`` task: ``{"totalResults": N, "results": [...]}``.

    ``search`` matches case-insensitively as a substring of the AIR id, name, version, tier or
    a workflow; every word of it must match. ``limit`` is 1-100, ``offset`` >= 0 (JSON values are
    type-checked here because the wire layer passes them through).

    Raises:
        reelserve.errors.ValidationError: ``invalidSearch``, ``invalidLimit`` or ``invalidOffset``.
    """
    if search is not None and not isinstance(search, str):
        raise invalid(
            "invalidSearch", f"search must be a string, got {short_repr(search)}", "search"
        )
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise invalid(
            "invalidLimit",
            f"limit must be an integer from 1 to {MAX_LIMIT}, got {short_repr(limit)}",
            "limit",
        )
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise invalid(
            "invalidOffset", f"offset must be an integer >= 0, got {short_repr(offset)}", "offset"
        )
    catalog = catalog or get_catalog()
    words = (search or "").lower().split()
    matches = []
    for entry in catalog.models.values():
        haystack = " ".join(
            [entry.air, entry.name, entry.version, entry.tier, *(w.value for w in entry.workflows)]
        ).lower()
        if all(word in haystack for word in words):
            matches.append(entry)
    return {
        "totalResults": len(matches),
        "results": [render_model(e) for e in matches[offset : offset + limit]],
    }


__all__ = ["render_model", "search_models"]
