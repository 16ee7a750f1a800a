"""Loaded pipelines kept under an explicit memory budget, least recently used evicted first.

Loading a 14B video model takes tens of seconds, so a worker keeps what it loaded; but two of them
rarely fit one GPU, so the cache holds at most ``budget_bytes`` of weights. Before a load it evicts
by the load's estimate (the weights folder's size on disk, scaled by dtype); after the load it
re-measures the real parameter bytes and evicts again if the estimate was low. Entries in use by a
running job are pinned and never evicted under it. A single pipeline larger than the whole budget
still loads, alone (everything else evicted) — refusing would make the model unusable, and offload
settings in its profile are the operator's lever for that case.

This module is torch-free; the engine passes in how to measure and release an entry.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass
class _Slot(Generic[V]):
    value: V
    size: int
    pins: int = 0


@dataclass
class ResidencyStats:
    """Counters for ``reelserve doctor`` and the tests."""

    loads: int = 0
    hits: int = 0
    evicted: list[Hashable] = field(default_factory=list)


class ResidencyCache(Generic[K, V]):
    """LRU cache of loaded values bounded by a byte budget.

    Args:
        budget_bytes: the most bytes of resident values; ``None`` means unbounded.
        size_of: measures a loaded value in bytes.
        release: frees a value's memory when it is evicted (drop references, empty caches).
    """

    def __init__(
        self,
        budget_bytes: int | None,
        size_of: Callable[[V], int],
        release: Callable[[V], None] = lambda value: None,
    ) -> None:
        self.budget_bytes = budget_bytes
        self._size_of = size_of
        self._release = release
        self._slots: OrderedDict[K, _Slot[V]] = OrderedDict()
        # One lock for lookups and loads: loads are serialized on purpose, two concurrent loads
        # could each fit the budget alone and overflow it together.
        self._lock = threading.RLock()
        self.stats = ResidencyStats()

    def keys(self) -> list[K]:
        """Resident keys, least recently used first."""
        with self._lock:
            return list(self._slots)

    def resident_bytes(self) -> int:
        """Bytes held by resident values."""
        with self._lock:
            return sum(slot.size for slot in self._slots.values())

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._slots

    @contextlib.contextmanager
    def use(self, key: K, loader: Callable[[], V], estimate: int = 0) -> Iterator[V]:
        """Yield the value for ``key``, loading it (and evicting LRU entries) when absent.

        The value is pinned for the duration of the ``with`` block.
        """
        with self._lock:
            slot = self._slots.get(key)
            if slot is not None:
                self._slots.move_to_end(key)
                self.stats.hits += 1
            else:
                self._make_room(estimate, keep=None)
                value = loader()
                slot = _Slot(value, self._size_of(value))
                self._slots[key] = slot
                self.stats.loads += 1
                self._make_room(0, keep=key)
            slot.pins += 1
        try:
            yield slot.value
        finally:
            with self._lock:
                slot.pins -= 1

    def evict(self, key: K) -> bool:
        """Drop ``key`` now if it is resident and not in use; True when it was dropped."""
        with self._lock:
            slot = self._slots.get(key)
            if slot is None or slot.pins:
                return False
            self._drop(key)
            return True

    def clear(self) -> None:
        """Evict every entry not in use."""
        with self._lock:
            for key in list(self._slots):
                self.evict(key)

    def _make_room(self, incoming: int, keep: K | None) -> None:
        if self.budget_bytes is None:
            return
        for key in list(self._slots):
            if self.resident_bytes() + incoming <= self.budget_bytes:
                return
            if key == keep or self._slots[key].pins:
                continue
            self._drop(key)
        if self.resident_bytes() + incoming > self.budget_bytes:
            log.warning(
                "resident pipelines use %.2f GB, over the %.2f GB budget (nothing left to evict)",
                (self.resident_bytes() + incoming) / 1e9,
                self.budget_bytes / 1e9,
            )

    def _drop(self, key: K) -> None:
        slot = self._slots.pop(key)
        self.stats.evicted.append(key)
        log.info("evicting pipeline %s (%.2f GB)", key, slot.size / 1e9)
        self._release(slot.value)
