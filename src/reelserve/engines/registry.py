"""Which engine renders a spec: the diffusers engine where a profile maps it, else preview.

The worker builds one :class:`EngineRegistry` per process with :meth:`EngineRegistry.from_settings`
and uses it as its engine selector: calling the registry is :meth:`EngineRegistry.select`, and
:meth:`EngineRegistry.preferred_models` tells the worker which jobs to claim first. Profiles are
loaded and checked at construction, so a bad profile stops the server at start instead of failing
jobs later.

Nothing here imports torch or diffusers: the diffusers engine imports them lazily when it first
builds a pipeline, and its module is only imported when a profile file is configured.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from reelserve.errors import EngineError, ErrorKind

if TYPE_CHECKING:
    from reelserve.engines.base import Engine
    from reelserve.engines.diffusers.engine import DiffusersEngine
    from reelserve.engines.diffusers.profiles import ProfileSet
    from reelserve.settings import Settings
    from reelserve.tasks import GenerationSpec


class EngineRegistry:
    """Routes each :class:`GenerationSpec` to an engine.

    Args:
        settings: the install's settings (``preview_fallback`` decides what happens to specs no
            profile covers).
        diffusers: the diffusers engine, or ``None`` when no profiles are configured.
        preview: the preview engine, or ``None`` to build it on first use.
    """

    def __init__(
        self,
        settings: Settings,
        diffusers: DiffusersEngine | None = None,
        preview: Engine | None = None,
    ) -> None:
        self.settings = settings
        self.diffusers = diffusers
        self._preview = preview

    @classmethod
    def from_settings(cls, settings: Settings) -> EngineRegistry:
        """Build the registry for ``settings``, loading and validating ``settings.profiles``.

        Raises:
            EngineError: (kind UNAVAILABLE) when the profile file is missing or invalid, names a
                weights folder that does not exist, or maps a workflow to a pipeline that cannot do
                it. The message names the file, the entry and what is allowed.
        """
        diffusers: DiffusersEngine | None = None
        if settings.profiles is not None:
            from reelserve.engines.diffusers.engine import DiffusersEngine
            from reelserve.engines.diffusers.profiles import ProfileSet

            profiles = ProfileSet.load(settings.profiles)
            diffusers = DiffusersEngine(profiles, settings)
        return cls(settings, diffusers=diffusers)

    @property
    def profiles(self) -> ProfileSet | None:
        """The loaded profiles, if any."""
        return self.diffusers.profiles if self.diffusers is not None else None

    @property
    def preview(self) -> Engine:
        """The preview engine (built on first use)."""
        if self._preview is None:
            # Lazy: the preview engine pulls in numpy/PIL drawing code the API process never needs.
            from reelserve.engines.preview import PreviewEngine

            self._preview = PreviewEngine()
        return self._preview

    def select(self, spec: GenerationSpec) -> Engine:
        """The engine that renders ``spec``.

        The diffusers engine when a profile maps ``spec.model`` + ``spec.workflow``; otherwise the
        preview engine, or, with ``preview_fallback`` off, an :class:`EngineError` with code
        ``modelUnavailable`` (kind UNAVAILABLE).
        """
        if self.diffusers is not None and self.diffusers.supports(spec):
            return self.diffusers
        if self.settings.preview_fallback:
            return self.preview
        served = sorted(
            f"{e.model}/{e.workflow.value}" for e in (self.profiles or [])
        )
        raise EngineError(
            "modelUnavailable",
            f"model {spec.model!r} with workflow {spec.workflow.value!r} has no diffusers profile "
            f"on this server and the preview engine is off (REELSERVE_PREVIEW_FALLBACK=false); "
            f"served here: {served or 'nothing'}",
            parameter="model",
            allowed_values=served,
            kind=ErrorKind.UNAVAILABLE,
        )

    def __call__(self, spec: GenerationSpec) -> Engine:
        """Same as :meth:`select`: the registry is the worker's engine selector."""
        return self.select(spec)

    def preferred_models(self) -> set[str]:
        """Model ids whose pipelines are loaded now; the worker prefers claiming jobs for these."""
        if self.diffusers is None:
            return set()
        return self.diffusers.loaded_models()

    def preload(self, models: Sequence[str]) -> list[str]:
        """Load (and compile) the pipelines serving ``models`` now; ``model/workflow`` loaded.

        Raises:
            EngineError: ``modelUnavailable`` when no diffusers profiles are configured or one
                id has none; a load failure as the engine raises it.
        """
        if self.diffusers is None:
            raise EngineError(
                "modelUnavailable", f"--preload {', '.join(models)}: no diffusers profiles are "
                "configured (REELSERVE_PROFILES); the preview engine needs no preload",
                parameter="preload", kind=ErrorKind.UNAVAILABLE)
        return self.diffusers.preload(set(models))

    def engines(self) -> list[Engine]:
        """Every engine this registry may hand out (for ``reelserve doctor``)."""
        out: list[Engine] = []
        if self.diffusers is not None:
            out.append(self.diffusers)
        if self.settings.preview_fallback:
            out.append(self.preview)
        return out
