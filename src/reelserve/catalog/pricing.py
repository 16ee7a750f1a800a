"""Cost of a generation, from the prices in ``models.toml``.

:func:`price` is the cost of **one result** of a resolved spec, in USD rounded to 4 decimals. A
task's cost is the sum over its ``numberResults`` results (:func:`task_cost`), which is what the
Runware ``cost`` field of each result item carries per item.

Units (``[models.X.price]``):

* ``clip``: ``base`` per result, whatever the duration. The seeds show klingai:1@1 at 10 s and
  klingai:2@1 at 5 s both costing 0.1848, so these tiers are flat per clip.
* ``second``: ``base`` per second of output (O1: 0.084); ``reference_video`` replaces it when
  reference videos are given (0.126) and ``video_edit`` for v2v (0.126), where the output follows
  the input video so the edit is billed on the input's length. Seconds are rounded to the nearest
  whole second (at least 1): a 6.02 s probed input bills as 6 s.
"""

from __future__ import annotations

from reelserve.catalog import get_catalog
from reelserve.catalog.spec import Catalog
from reelserve.errors import ErrorKind, ReelserveError
from reelserve.tasks import GenerationSpec, Workflow


def billed_seconds(duration: float) -> int:
    """Whole seconds billed for ``duration`` (nearest, halves up, at least 1)."""
    return max(1, int(duration + 0.5))


def unit_price(spec: GenerationSpec, *, catalog: Catalog | None = None) -> float:
    """The rate that applies to ``spec``: USD per clip or per second (see the module doc)."""
    price = (catalog or get_catalog()).model(spec.model).price
    if price.unit == "clip":
        return price.base
    if spec.workflow is Workflow.V2V and price.video_edit is not None:
        return price.video_edit
    if spec.reference_videos and price.reference_video is not None:
        return price.reference_video
    return price.base


def price(spec: GenerationSpec, *, catalog: Catalog | None = None) -> float:
    """Cost in USD of ONE result of ``spec``, rounded to 4 decimals.

    Raises:
        ReelserveError: ``unresolvedSpec`` (kind INTERNAL) for a per-second model whose duration
            is not known yet (v2v before :func:`reelserve.catalog.validate.resolve_media`).
    """
    catalog = catalog or get_catalog()
    entry = catalog.model(spec.model)
    rate = unit_price(spec, catalog=catalog)
    if entry.price.unit == "clip":
        return round(rate, 4)
    if spec.duration is None:
        raise ReelserveError(
            "unresolvedSpec",
            f"task {spec.task_uuid}: the cost of {spec.model} {spec.workflow.value} depends on the"
            " input video's length; resolve the spec first",
            kind=ErrorKind.INTERNAL,
        )
    return round(rate * billed_seconds(spec.duration), 4)


def task_cost(spec: GenerationSpec, *, catalog: Catalog | None = None) -> float:
    """Cost in USD of the whole task: one result's price times ``numberResults``."""
    return round(price(spec, catalog=catalog) * spec.number_results, 4)


__all__ = ["billed_seconds", "price", "task_cost", "unit_price"]
