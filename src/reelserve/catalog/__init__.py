"""The Kling model catalog: models, limits and prices, read from ``models.toml``.

Use :func:`get_catalog` everywhere (loaded once, cached). The one validator lives in
:mod:`reelserve.catalog.validate`, prices in :mod:`reelserve.catalog.pricing`, modelSearch in
:mod:`reelserve.catalog.search`.
"""

from __future__ import annotations

from functools import lru_cache

from reelserve.catalog.spec import Catalog, ModelEntry, load_catalog

__all__ = ["Catalog", "ModelEntry", "get_catalog", "load_catalog"]


@lru_cache(maxsize=1)
def get_catalog() -> Catalog:
    """The packaged catalog, loaded and cross-checked on first use, then cached."""
    return load_catalog()
