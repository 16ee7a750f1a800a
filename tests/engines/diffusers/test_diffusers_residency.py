"""The residency cache on plain values: LRU order, byte budget, pins."""

from __future__ import annotations

from reelserve.engines.diffusers.residency import ResidencyCache


def _cache(budget: int | None) -> tuple[ResidencyCache[str, int], list[int]]:
    released: list[int] = []
    return ResidencyCache(budget, size_of=lambda v: v, release=released.append), released


def test_lru_eviction_under_budget() -> None:
    cache, released = _cache(100)
    for key, size in (("a", 40), ("b", 40)):
        with cache.use(key, lambda size=size: size, estimate=size):
            pass
    with cache.use("a", lambda: 999):  # a hit: "a" becomes most recent, loader not called
        pass
    with cache.use("c", lambda: 40, estimate=40):  # evicts "b", the least recently used
        pass
    assert cache.keys() == ["a", "c"] and released == [40] and cache.stats.evicted == ["b"]
    assert cache.stats.loads == 3 and cache.stats.hits == 1


def test_estimate_too_low_is_corrected_after_load() -> None:
    cache, _ = _cache(100)
    with cache.use("a", lambda: 60):
        pass
    with cache.use("b", lambda: 60, estimate=10):  # real size known after the load: "a" goes
        pass
    assert cache.keys() == ["b"]


def test_pinned_entries_survive_and_an_oversized_one_loads_alone() -> None:
    cache, _ = _cache(100)
    # "a" is in use while "b" loads: over budget rather than pulled away
    with cache.use("a", lambda: 60), cache.use("b", lambda: 60):
        assert cache.keys() == ["a", "b"]
    with cache.use("big", lambda: 500, estimate=500):
        assert cache.keys() == ["big"]
    assert cache.evict("big") and cache.keys() == []
