"""The worker loop: claim a job, resolve its inputs, render, encode, store, finish.

The same loop runs everywhere: as threads beside the server (the default), alone as
``reelserve worker --data-dir DIR``, or later in other executors. It is plain blocking code and
never runs on an asyncio event loop.

Crash safety: every step that matters is recorded in the job store before the next begins. A
result is recorded as soon as its file is stored, so a job restarted after a crash (its lease
expired and another worker claimed it) renders only the results still missing. A worker that
loses its lease stops without writing anything more. Engines that batch (:class:`BatchEngine`)
render the missing seeds in groups, and each group's results are recorded before the next group
starts, so a crash costs at most one group.

Claim order: a selector that knows which models are loaded (:class:`PreferringSelector`, like the
engine registry) makes the worker claim jobs for those models first, within the store's bound on
how long another model's job may be passed over (``settings.prefer_max_wait``).
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import threading
import uuid
from collections.abc import Callable, Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from reelserve.delivery.storage import OUTPUTS, ArtifactStore, owned_media_path
from reelserve.engines.base import BatchEngine
from reelserve.errors import CancelledError, EngineError, ErrorKind, ReelserveError
from reelserve.tasks import GenerationSpec, Job, Result

if TYPE_CHECKING:
    from reelserve.engines.base import Clip, Engine, ResolvedInputs
    from reelserve.jobs.store import JobStore
    from reelserve.settings import Settings

log = logging.getLogger(__name__)

EngineSelector = Callable[[GenerationSpec], "Engine"]
"""Picks the engine that renders a spec (by default the engine registry, which is callable)."""


@runtime_checkable
class PreferringSelector(Protocol):
    """An engine selector that also names the models it has loaded now (the engine registry).

    The worker passes them to :meth:`JobStore.claim` so jobs it can start without loading
    other weights go first. Plain callables are selectors too; they just express no preference.
    """

    def __call__(self, spec: GenerationSpec) -> Engine:
        """The engine that renders ``spec``."""
        ...

    def preferred_models(self) -> Collection[str]:
        """Model ids whose jobs this process renders cheapest now (weights resident)."""
        ...


class _LeaseLost(Exception):
    """Another worker owns the job now (or it ended): stop quietly."""


def default_engine_selector(settings: Settings) -> EngineSelector:
    """The selector named by ``settings.engine_selector``, else the engine registry's."""
    if settings.engine_selector:
        import importlib

        module_name, _, attr = settings.engine_selector.partition(":")
        factory = getattr(importlib.import_module(module_name), attr or "engine_selector")
        selector: EngineSelector = factory(settings)
        return selector
    try:
        from reelserve.engines.registry import EngineRegistry
    except ImportError:  # registry not installed in this build
        from reelserve.engines.preview import PreviewEngine

        preview = PreviewEngine()
        return lambda spec: preview
    return EngineRegistry.from_settings(settings)


def error_dict(exc: ReelserveError) -> dict[str, Any]:
    """How an error is stored on a job: the Runware fields plus its kind."""
    return {**exc.to_dict(), "kind": exc.kind.value}


class _JobRun:
    """State of one claimed job while it runs: lease renewal, progress and cancellation."""

    def __init__(self, worker: Worker, job: Job) -> None:
        self.worker = worker
        self.job = job
        self.progress = 0.0
        self.cancelled = threading.Event()
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._beat = threading.Thread(
            target=self._heartbeat_loop, name=f"heartbeat-{job.id[:8]}", daemon=True
        )

    def __enter__(self) -> _JobRun:
        self._beat.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._beat.join()

    def _heartbeat_loop(self) -> None:
        lease = self.worker.settings.lease_seconds
        interval = max(0.05, min(lease / 3, 2.0))
        sent = -1.0
        while not self._stop.wait(interval):
            progress = round(self.progress, 1)
            try:
                beat = self.worker.store.heartbeat(
                    self.job.id, self.worker.worker_id, lease,
                    progress if progress != sent else None,
                )
            except Exception:  # a busy DB must not kill the job; the next beat retries
                log.exception("heartbeat failed for job %s", self.job.id)
                continue
            sent = progress
            if not beat.owned:
                self.lost.set()
                return
            if beat.cancel_requested:
                self.cancelled.set()

    def is_cancelled(self) -> bool:
        """Engines and the encoder poll this between frames."""
        return self.cancelled.is_set() or self.lost.is_set()

    def set_progress(self, finished: int, fraction: float, span: int = 1) -> None:
        """``finished`` results are recorded and the next ``span`` are ``fraction`` done;
        stored as 0-99 overall until the job finishes (never going back)."""
        n = max(1, self.job.spec.number_results)
        overall = (finished + span * max(0.0, min(1.0, fraction))) / n * 100.0
        self.progress = max(self.progress, min(99.0, overall))


class Worker:
    """One worker slot. ``run`` loops until ``stop`` is set; ``run_once`` handles one job.

    Args:
        settings: the install's settings (lease length, data dir, encoder options).
        store: the job store shared with the API.
        artifacts: where outputs are stored and uploaded inputs are found.
        select_engine: picks the engine per spec (default: the engine registry).
        worker_id: unique id used for leases (default: host, pid and a random suffix).
        fetch: the outbound fetcher passed to input resolution (default: the netguard).
    """

    def __init__(
        self,
        settings: Settings,
        store: JobStore,
        artifacts: ArtifactStore,
        select_engine: EngineSelector | None = None,
        *,
        worker_id: str | None = None,
        fetch: Callable[..., Any] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.artifacts = artifacts
        self._select_engine = select_engine
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._fetch = fetch
        self._wake = threading.Event()
        self._unsubscribe = store.subscribe(lambda _job_id: self._wake.set())

    @property
    def select_engine(self) -> EngineSelector:
        """The engine selector, built on first use (keeps engine imports off the start path)."""
        if self._select_engine is None:
            self._select_engine = default_engine_selector(self.settings)
        return self._select_engine

    def run(self, stop: threading.Event, poll_interval: float = 0.5) -> None:
        """Claim and run jobs until ``stop`` is set.

        Sleeps between empty claims, woken early by in-process store changes; the poll interval
        covers jobs created by other processes.
        """
        while not stop.is_set():
            try:
                did_work = self.run_once()
            except Exception:  # keep the slot alive: the job's lease expires and it is retried
                log.exception("worker %s: unexpected error", self.worker_id)
                did_work = False
            if not did_work:
                self._wake.wait(poll_interval)
                self._wake.clear()
        self._unsubscribe()

    def run_once(self) -> bool:
        """Claim one job and run it to its end; False when there was nothing to claim."""
        job = self.store.claim(
            self.worker_id, self.settings.lease_seconds,
            prefer_models=self.preferred_models(),
            prefer_max_wait=self.settings.prefer_max_wait,
        )
        if job is None:
            return False
        self.process(job)
        return True

    def preferred_models(self) -> Collection[str]:
        """Models to claim jobs for first: those the selector has loaded, if it can tell.

        A selector not built yet has loaded nothing, so this never builds it (building loads the
        profiles, which belongs to the first job, not to every idle poll).
        """
        selector = self._select_engine
        if isinstance(selector, PreferringSelector):
            return selector.preferred_models()
        return ()

    # ------------------------------------------------------------------ one job

    def process(self, job: Job) -> None:
        """Run a claimed job and record its outcome in the store."""
        workdir = Path(self.settings.data_dir) / "work" / f"{job.id}-{uuid.uuid4().hex[:6]}"
        workdir.mkdir(parents=True, exist_ok=True)
        try:
            with _JobRun(self, job) as run:
                try:
                    self._render(run, workdir)
                except _LeaseLost:
                    log.info("job %s: lease lost, stopping", job.id)
                except CancelledError as exc:
                    if not run.lost.is_set():  # a lost lease is not a cancellation: stay quiet
                        self.store.fail(job.id, self.worker_id, error_dict(exc))
                except ReelserveError as exc:
                    if run.lost.is_set():
                        return
                    err: ReelserveError = exc
                    if run.cancelled.is_set():
                        err = CancelledError("taskCancelled", "the task was cancelled")
                    # Internal engine errors may be transient (out of memory): retry those.
                    retry = err.kind in (ErrorKind.INTERNAL, ErrorKind.UNAVAILABLE,
                                         ErrorKind.TIMEOUT)
                    self.store.fail(job.id, self.worker_id, error_dict(err), retry=retry)
                except Exception as exc:
                    log.exception("job %s failed", job.id)
                    if run.lost.is_set():
                        return
                    internal = {"code": "internalError", "kind": ErrorKind.INTERNAL.value,
                           "message": f"the worker failed while rendering: {type(exc).__name__}: "
                                      f"{exc}"}
                    self.store.fail(job.id, self.worker_id, internal, retry=True)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def _check(self, run: _JobRun) -> None:
        if run.lost.is_set():
            raise _LeaseLost
        if run.cancelled.is_set():
            raise CancelledError("taskCancelled", "the task was cancelled while it ran")

    def _lookup(self, owner: str) -> Callable[[str], Path | None]:
        """UUID -> local file of an upload or an earlier output of the same owner."""
        return lambda media_uuid: owned_media_path(self.artifacts, media_uuid, owner)

    def _fetcher(self) -> Callable[..., Any]:
        if self._fetch is None:
            from reelserve.media import netguard

            policy = netguard.OutboundPolicy.from_settings(self.settings)

            def fetch(url: str, *, max_bytes: int) -> Any:
                return netguard.fetch(url, max_bytes=max_bytes, policy=policy)

            self._fetch = fetch
        return self._fetch

    def _resolve(self, job: Job, workdir: Path) -> tuple[GenerationSpec, ResolvedInputs]:
        from reelserve.catalog.validate import resolve_media
        from reelserve.media.inputs import resolve_inputs

        spec = job.spec
        inputs = resolve_inputs(
            spec, lookup=self._lookup(job.owner), fetch=self._fetcher(), workdir=workdir
        )
        if not spec.is_resolved:
            first = inputs.first_frame
            video = inputs.input_video
            spec = resolve_media(
                spec,
                first_frame_size=first.size if first is not None else None,
                input_video=(video.width, video.height, video.duration) if video else None,
            )
        return spec, inputs

    def _render(self, run: _JobRun, workdir: Path) -> None:
        from reelserve.catalog.pricing import price

        job = run.job
        spec, inputs = self._resolve(job, workdir)
        self._check(run)
        cost_each = price(spec)
        done = {r.index for r in job.results}
        engine = self.select_engine(spec)
        # Results recorded before a crash are kept and never rendered again.
        missing = [(index, seed) for index, seed in enumerate(spec.seeds) if index not in done]
        run.set_progress(len(done), 0.0)
        size = max(1, engine.batch_size(spec)) if isinstance(engine, BatchEngine) else 1
        for start in range(0, len(missing), size):
            group = missing[start : start + size]
            finished = len(done) + start
            self._check(run)
            clips = self._generate(run, engine, spec, inputs, group, finished)
            # Each result is encoded, stored and recorded before the next one is encoded.
            for offset, ((index, seed), clip) in enumerate(zip(group, clips, strict=True)):
                self._record(run, spec, clip, index, seed, cost_each, workdir, finished + offset)
        total = round(cost_each * len(spec.seeds), 6)
        if not self.store.finish(job.id, self.worker_id, cost=total):
            raise _LeaseLost
        log.info("job %s finished (%d results) in attempt %d", job.id, len(spec.seeds),
                 job.attempts)

    def _generate(
        self,
        run: _JobRun,
        engine: Engine,
        spec: GenerationSpec,
        inputs: ResolvedInputs,
        group: list[tuple[int, int]],
        finished: int,
    ) -> list[Clip]:
        """Clips for the ``(index, seed)`` pairs of ``group``: one call when the engine batches.

        ``finished`` results are recorded already (for progress).
        """

        def on_engine(fraction: float) -> None:
            run.set_progress(finished, fraction * 0.98, span=len(group))

        if len(group) > 1 and isinstance(engine, BatchEngine):
            clips = engine.generate_many(
                spec, inputs, [seed for _, seed in group], on_engine, run.is_cancelled
            )
            if len(clips) != len(group):
                raise EngineError(
                    "engineFailed",
                    f"engine {engine.name!r} returned {len(clips)} clips for {len(group)} seeds",
                )
            return clips
        # Groups of several come from batch engines only; this is the one-seed path.
        return [engine.generate(spec, inputs, seed, on_engine, run.is_cancelled) for _, seed in group]

    def _record(
        self,
        run: _JobRun,
        spec: GenerationSpec,
        clip: Clip,
        index: int,
        seed: int,
        cost: float,
        workdir: Path,
        finished: int,
    ) -> None:
        """Encode ``clip``, store the file and record it as result ``index`` of the job.

        ``finished`` results are recorded already (for progress).
        """
        from reelserve.media.encode import content_type_for, encode_clip, extension_for
        from reelserve.media.probe import probe

        job = run.job
        ext = extension_for(spec.output_format).lstrip(".")

        def on_encode(fraction: float) -> None:
            # Lazy engines render while the encoder pulls frames: encoding is their progress.
            run.set_progress(finished, fraction * 0.98)

        out = workdir / f"result-{index}.{ext}"
        encode_clip(
            clip, out, output_format=spec.output_format, quality=spec.output_quality,
            prores_mov=self.settings.prores_mov, progress=on_encode, cancelled=run.is_cancelled,
        )
        self._check(run)
        video_uuid = str(uuid.uuid4())
        content_type = content_type_for(spec.output_format)
        info = self.artifacts.put_file(
            f"{OUTPUTS}/{video_uuid}", out, content_type=content_type, owner=job.owner,
            extension=ext, move=True,
        )
        facts = probe(info_path) if (info_path := self.artifacts.local_path(info.key)) else None
        result = Result(
            index=index,
            video_uuid=video_uuid,
            seed=seed,
            artifact_key=info.key,
            content_type=content_type,
            size_bytes=info.size,
            width=facts.width if facts else clip.width,
            height=facts.height if facts else clip.height,
            fps=facts.fps if facts else float(clip.fps),
            num_frames=facts.num_frames if facts else clip.num_frames,
            duration=facts.duration if facts else clip.num_frames / clip.fps,
            has_audio=facts.has_audio if facts else clip.audio is not None,
            cost=cost,
        )
        if not self.store.add_result(job.id, self.worker_id, result):
            raise _LeaseLost
        run.set_progress(finished, 1.0)


def run_standalone(settings: Settings, stop: threading.Event | None = None, *,
                   name: str | None = None, grace: float = 10.0) -> None:
    """``reelserve worker``: run ``settings.workers`` (at least one) slots until stopped.

    ``name`` goes into the worker ids (a supervised child's slot, e.g. ``gpu0``); once ``stop``
    is set, running jobs get ``grace`` seconds to finish.
    """
    from reelserve.worker.executors import ThreadExecutor

    stop = stop or threading.Event()
    executor = ThreadExecutor.from_settings(settings, slots=max(1, settings.workers), name=name)
    executor.start()
    try:
        # Poll rather than block forever, so a signal handler setting ``stop`` is seen promptly.
        while not stop.wait(1.0):
            continue
    finally:
        executor.stop(grace)
        executor.store.close()  # the executor opened it (from_settings), so it closes it
