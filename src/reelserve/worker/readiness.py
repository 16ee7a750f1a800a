"""Whether this process's worker slots can take jobs: the state a ``/ready`` route reads.

:class:`Readiness` is written by the :class:`~reelserve.worker.executors.ThreadExecutor` (slots
starting, models preloading, ready, or failed with the error that stops them) and read with
:meth:`Readiness.snapshot`. ``create_app`` keeps the executor's on ``app.state.readiness``.
It is in-process state: workers in other processes (``reelserve worker``) have their own.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class ReadyState(StrEnum):
    """Where the worker side of a process stands."""

    STARTING = "starting"  # slots not started yet
    LOADING = "loading"  # preloading (and compiling) models before taking jobs
    READY = "ready"  # slots claim jobs
    FAILED = "failed"  # no slot can render; queued jobs are failed with ``error``'s code


@dataclass(frozen=True)
class ReadinessSnapshot:
    """One consistent reading of :class:`Readiness`."""

    state: ReadyState
    detail: str = ""
    preloaded: tuple[str, ...] = ()
    error: dict[str, Any] | None = None

    @property
    def ready(self) -> bool:
        """True only when slots take jobs (what ``/ready`` answers)."""
        return self.state is ReadyState.READY

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form for a ``/ready`` body."""
        return {"ready": self.ready, "state": self.state.value, "detail": self.detail,
                "preloaded": list(self.preloaded), "error": self.error}


@dataclass
class Readiness:
    """Thread-safe readiness of one process's worker slots."""

    _state: ReadyState = ReadyState.STARTING
    _detail: str = ""
    _preloaded: tuple[str, ...] = ()
    _error: dict[str, Any] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _changed: threading.Condition = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._changed = threading.Condition(self._lock)

    def _set(self, state: ReadyState, detail: str, **extra: Any) -> None:
        with self._changed:
            if self._state is ReadyState.FAILED:
                return  # a failure stays: nothing after it makes the slots able to render
            self._state, self._detail = state, detail
            if "preloaded" in extra:
                self._preloaded = tuple(extra["preloaded"])
            if "error" in extra:
                self._error = extra["error"]
            self._changed.notify_all()

    def loading(self, detail: str) -> None:
        """Models are being loaded before any job is taken."""
        self._set(ReadyState.LOADING, detail)

    def ready(self, preloaded: tuple[str, ...] | list[str] = ()) -> None:
        """Slots take jobs now (``preloaded``: the ``model/workflow`` entries loaded first)."""
        self._set(ReadyState.READY, "worker slots take jobs", preloaded=preloaded)

    def failed(self, error: dict[str, Any]) -> None:
        """No slot can render: ``error`` is the stored error dict (code, message, ...)."""
        self._set(ReadyState.FAILED, str(error.get("message", "")), error=error)

    def snapshot(self) -> ReadinessSnapshot:
        """The state now."""
        with self._lock:
            return ReadinessSnapshot(self._state, self._detail, self._preloaded, self._error)

    def wait(self, timeout: float | None = None) -> ReadinessSnapshot:
        """Block until the state is READY or FAILED (or ``timeout``); returns the state then."""
        with self._changed:
            self._changed.wait_for(
                lambda: self._state in (ReadyState.READY, ReadyState.FAILED), timeout)
        return self.snapshot()
