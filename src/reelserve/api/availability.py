"""What this deployment renders, per model id x workflow, as the API decides it at submit.

Every model id x workflow ("route") is rendered by one engine on a worker (the preview engine, or
a diffusers profile's pipeline), and :mod:`reelserve.engines.capabilities` says, as plain data,
what that engine honours (sound, keepOriginalSound, camera moves and presets, reference images,
edit). :class:`Availability` gathers that data for the API from two places:

* this process's own worker threads (``REELSERVE_WORKERS`` > 0 on ``reelserve serve``): the
  capabilities of its own settings, known before any thread has started;
* the live workers of the job store (``workers`` table): every worker slot, in this process or
  in ``reelserve worker`` processes on other machines, publishes its capabilities with its
  presence beats (:mod:`reelserve.worker.loop`).

An API process with no worker threads of its own and no live worker registered yet cannot know
what will render a job: it accepts and queues (the first worker that serves the route takes it).
Otherwise :meth:`Availability.check` refuses in the submit answer what nothing live can honour:
``modelUnavailable`` (no worker renders the route), ``unsupportedSound``,
``unsupportedKeepOriginalSound``, ``unsupportedCameraControl``, and ``unsupportedSafetyCheck``
(``safety.checkContent`` without a configured checker). When several workers serve a route, a
request is accepted when one of them honours it.

:meth:`Availability.models` is what ``GET /v1/models`` lists (an OpenAI-style model list with
reelserve's fields: the workflows served, the engine of each and what it supports; the route lives
with the OpenAI dialect, :func:`reelserve.api.openai.router.models_router`); Runware's
``modelSearch`` adds the same per result (:meth:`Availability.describe`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from reelserve.errors import EngineError, ErrorKind, ValidationError
from reelserve.jobs.store import WORKER_LIVE, WorkerInfo, route_key

if TYPE_CHECKING:
    from reelserve.engines.capabilities import Capability
    from reelserve.jobs.store import WorkerRegistry
    from reelserve.settings import Settings
    from reelserve.tasks import GenerationSpec

log = logging.getLogger(__name__)

__all__ = ["SAFETY_PARAMETER", "Availability", "RouteView"]

SAFETY_PARAMETER = "safety.checkContent"
"""The field a refused content check names (only Runware's wire shape can ask for one)."""


@dataclass(frozen=True)
class RouteView:
    """What the API knows about the routes now.

    ``routes`` maps each route key to the capabilities of the engines that render it (one per
    distinct engine: workers with the same profile count once); None when nothing is known yet
    (no worker threads here and no live worker registered): submits are accepted and queued.
    ``workers`` are the live workers read from the store.
    """

    routes: dict[str, list[Capability]] | None
    workers: tuple[WorkerInfo, ...] = ()


class Availability:
    """The routes this deployment renders and what each honours, read at submit.

    Args:
        settings: the API process's settings (its own profiles and preview fallback count when
            ``local`` is true; ``safety_model`` decides ``safety.checkContent``).
        store: the job store whose ``workers`` table the workers publish into.
        local: this process runs worker threads (default: ``settings.workers > 0``).
        refresh: seconds a read of the live workers is reused (a submit burst reads once).
    """

    def __init__(self, settings: Settings, store: WorkerRegistry, *, local: bool | None = None,
                 refresh: float = 1.0) -> None:
        self.settings = settings
        self.store = store
        self.local = settings.workers > 0 if local is None else local
        self.refresh = refresh
        self.created = int(time.time())
        self._lock = threading.Lock()
        self._local_caps: list[Capability] | None = None
        self._cached: tuple[float, RouteView] | None = None

    # ------------------------------------------------------------------ reading

    def _local(self) -> list[Capability]:
        """The capabilities of this process's own settings (read once: profiles do not change
        while a process runs). Unreadable profiles give none: the worker threads then fail each
        job with the cause (``workerUnavailable``), which says more than a submit refusal."""
        if self._local_caps is None:
            from reelserve.engines.capabilities import Capability, capabilities

            try:
                self._local_caps = [Capability.from_dict(c) for c in capabilities(self.settings)]
            except Exception as exc:
                log.warning("cannot read what this server's workers render: %s: %s",
                            type(exc).__name__, exc)
                self._local_caps = []
        return self._local_caps

    def view(self) -> RouteView:
        """The routes known now (blocking: reads the store at most every ``refresh`` s)."""
        now = time.monotonic()
        with self._lock:
            if self._cached is not None and now - self._cached[0] < self.refresh:
                return self._cached[1]
        from reelserve.engines.capabilities import Capability

        workers = tuple(self.store.live_workers(WORKER_LIVE))
        caps: list[Capability] = list(self._local()) if self.local else []
        for worker in workers:
            for data in worker.capabilities:
                try:
                    caps.append(Capability.from_dict(data))
                except TypeError:  # published by a newer release with more fields: skip it
                    continue
        routes: dict[str, list[Capability]] | None = None
        if self.local or workers:
            routes = {}
            for cap in caps:
                same = routes.setdefault(route_key(cap.model, cap.workflow), [])
                if cap not in same:
                    same.append(cap)
        view = RouteView(routes, workers)
        with self._lock:
            self._cached = (now, view)
        return view

    def forget(self) -> None:
        """Drop the cached read (tests, and after a worker registers in this process)."""
        with self._lock:
            self._cached = None

    # ------------------------------------------------------------------ submit

    def check(self, spec: GenerationSpec) -> None:
        """Refuse ``spec`` when nothing live here can render it as asked.

        Raises:
            ValidationError: ``unsupportedSafetyCheck`` (``safety.checkContent`` asked and no
                checker configured).
            EngineError: kind INVALID: ``modelUnavailable`` (no engine renders the model id x
                workflow; allowed values: the routes served for that model), or the first
                engine's ``unsupportedSound`` / ``unsupportedKeepOriginalSound`` /
                ``unsupportedCameraControl`` when no engine of the route honours ``spec``.
        """
        from reelserve.safety import checker_configured

        if spec.safety.check_content and not checker_configured(self.settings):
            raise ValidationError(
                "unsupportedSafetyCheck",
                f"{SAFETY_PARAMETER}=true asks for a content check, and this server has no "
                "content checker configured (REELSERVE_SAFETY_MODEL); send checkContent=false "
                "or leave safety out",
                parameter=SAFETY_PARAMETER, allowed_values=[False])
        routes = self.view().routes
        if routes is None:
            return  # no worker registered yet: accepted and queued (docs/deployment.md)
        workflow = spec.workflow.value
        caps = routes.get(route_key(spec.model, workflow))
        if not caps:
            served = sorted(key for key in routes if key.startswith(f"{spec.model}/"))
            raise EngineError(
                "modelUnavailable",
                f"model {spec.model!r} with workflow {workflow!r} is not rendered by any "
                "worker of this server (no diffusers profile maps it and the preview engine is "
                f"off: REELSERVE_PREVIEW_FALLBACK=false); served for this model: "
                f"{[k.split('/', 1)[1] for k in served] or 'nothing'}; served models: "
                f"{sorted({k.split('/', 1)[0] for k in routes}) or 'none'}",
                parameter="model",
                allowed_values=sorted({k.split("/", 1)[0] for k in routes}),
                kind=ErrorKind.INVALID,
            )
        first: EngineError | None = None
        for cap in caps:
            try:
                cap.check(spec)
            except EngineError as exc:
                first = first or exc
                continue
            return
        assert first is not None
        raise first

    # ------------------------------------------------------------------ listing

    def describe(self, model: str, workflows: Iterable[str], view: RouteView | None = None,
                 ) -> dict[str, Any]:
        """What renders each of ``model``'s ``workflows`` here and what it supports.

        ``{"workflows": [served...], "engine": {wf: label}, "supports": {wf: {...}}}``: the label
        is ``preview`` or the diffusers pipeline kind (several joined by ``|`` when workers
        differ); ``supports`` lists ``sound``, ``keepOriginalSound``, ``cameraControl``
        (``moves``, ``presets``), ``referenceImages``, ``edit`` and ``safetyCheck``. With nothing
        known yet (no worker registered) every workflow is listed with engine None.
        """
        from reelserve.safety import checker_configured

        view = view or self.view()
        safety = checker_configured(self.settings)
        served: list[str] = []
        engines: dict[str, str | None] = {}
        supports: dict[str, dict[str, Any] | None] = {}
        for wf in workflows:
            if view.routes is None:
                served.append(wf)
                engines[wf] = None
                supports[wf] = None
                continue
            caps = view.routes.get(route_key(model, wf))
            if not caps:
                continue
            served.append(wf)
            engines[wf] = "|".join(sorted({c.pipeline or c.engine for c in caps}))
            supports[wf] = {
                "sound": any(c.sound for c in caps),
                "keepOriginalSound": any(c.keep_original_sound for c in caps),
                "cameraControl": {
                    "moves": sorted({m for c in caps for m in c.camera_moves}),
                    "presets": sorted({p for c in caps for p in c.camera_presets}),
                },
                "referenceImages": any(c.reference_images for c in caps),
                "edit": any(c.edit for c in caps),
                "safetyCheck": safety,
            }
        return {"workflows": served, "engine": engines, "supports": supports}

    def models(self) -> list[dict[str, Any]]:
        """``GET /v1/models``'s ``data``: one OpenAI-style model object per catalog id that
        renders here (every id while nothing is known yet), with :meth:`describe`'s fields."""
        from reelserve.catalog import get_catalog

        view = self.view()
        out: list[dict[str, Any]] = []
        for air, entry in get_catalog().models.items():
            info = self.describe(air, [w.value for w in entry.workflows], view)
            if not info["workflows"]:
                continue
            out.append({"id": air, "object": "model", "created": self.created,
                        "owned_by": "klingai", "name": entry.name, **info})
        return out
