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

Stopping and trouble: a worker asked to hand its job back (``hand_back``, set when a stopping
process's grace period ends) stops rendering at the next cancellation point and returns the job
to the queue (:meth:`JobStore.release`), so another worker takes it at once and the job loses no
attempt. A full disk is not the job's fault either: the job is handed back the same way and the
worker waits before its next claim, doubling the pause while the disk stays full. Repeated
trouble (a full disk, a database that refuses claims) is logged once when it starts and once
when it clears, not once per try.

Claim order: a selector that knows which models are loaded (:class:`PreferringSelector`, like the
engine registry) makes the worker claim jobs for those models first, within the store's bound on
how long another model's job may be passed over (``settings.prefer_max_wait``).

Presence: a running worker publishes itself into the store's ``workers`` table (id, host, pid,
start, and what its settings render: :func:`reelserve.engines.capabilities.capabilities`) and
beats every :data:`~reelserve.jobs.store.WORKER_BEAT` seconds from a small thread, so an API
process without engines decides submits from the live workers. A worker whose settings render
only some model id x workflow routes claims only jobs of those routes (``serves``); one that
renders every catalog route (the preview fallback on) claims any job.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable, Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from reelserve.delivery.storage import OUTPUTS, ArtifactStore, is_disk_full, owned_media_path
from reelserve.engines.base import BatchEngine
from reelserve.errors import (
    CANCELLED_CODE,
    CancelledError,
    EngineError,
    ErrorKind,
    ReelserveError,
    WorkerBrokenError,
)
from reelserve.jobs.store import WORKER_BEAT, WorkerInfo, route_key
from reelserve.tasks import GenerationSpec, Job, JobStatus, Result, Workflow

if TYPE_CHECKING:
    from reelserve.engines.base import Engine
    from reelserve.jobs.store import JobStore
    from reelserve.media.clip import Clip, ResolvedInputs
    from reelserve.safety import ContentGuard, SafetyChecker
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


class _HandBack(Exception):
    """The worker is stopping: give the job back to the queue instead of finishing it."""


WORK = "work"
"""The folder of ``data_dir`` holding one scratch folder per running job,
``<job id>-<6 hex>`` (inputs fetched, frames, the encoded file before it is stored)."""


def remove_work_folders(work: Path, job_id: str) -> None:
    """Remove every scratch folder of ``job_id`` under ``work``: what an interrupted attempt of
    the job (its worker killed) left. Called by the worker that just claimed the job, which
    makes it the only one entitled to them."""
    for folder in work.glob(f"{job_id}-*"):
        if folder.name[len(job_id) + 1:].isalnum():  # exactly <job id>-<suffix>, no other job
            shutil.rmtree(folder, ignore_errors=True)


def clean_work_folders(data_dir: Path, store: JobStore) -> int:
    """Remove the scratch folders under ``data_dir/work`` of jobs that are not running any more
    (finished, queued again or gone): left by workers that were killed. Returns how many.

    Folders of running jobs stay: another process sharing the data dir may be rendering them
    (a job whose worker died is cleaned by the claim that takes it over).
    """
    removed = 0
    work = Path(data_dir) / WORK
    if not work.is_dir():
        return 0
    for folder in work.iterdir():
        job_id, sep, _suffix = folder.name.rpartition("-")
        if not sep or not folder.is_dir():
            continue
        job = store.get(job_id)
        if job is None or job.status is not JobStatus.RUNNING:
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    if removed:
        log.info("removed %d scratch folder(s) of interrupted jobs in %s", removed, work)
    return removed


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ReelserveError):
        return f"{exc.code}: {exc.message}"
    return f"{type(exc).__name__}: {exc}"


class Trouble:
    """A condition that makes a worker wait and retry (a full disk, a database refusing
    writes): exponential backoff from ``first`` to ``most`` seconds, and one log line when the
    condition starts (or changes) and one when it clears, however often it is retried."""

    def __init__(self, what: str, first: float = 0.5, most: float = 30.0) -> None:
        self.what = what
        self.first = first
        self.most = most
        self.delay = 0.0
        self.key: str | None = None  # the condition being retried now (an error code or type)
        self.tries = 0

    def hit(self, exc: BaseException) -> float:
        """Record one failed try because of ``exc``; returns how long to wait before the next."""
        key = exc.code if isinstance(exc, ReelserveError) else type(exc).__name__
        if key != self.key:
            # A new condition: say so once (with the traceback when it is not one we know).
            if isinstance(exc, ReelserveError) or is_disk_full(exc):
                log.warning("%s: %s; retrying with backoff", self.what, _describe(exc))
            else:
                log.error("%s: %s; retrying with backoff", self.what, _describe(exc),
                          exc_info=exc)
            self.key = key
            self.delay = 0.0
        self.tries += 1
        self.delay = self.first if not self.delay else min(self.most, self.delay * 2)
        return self.delay

    def clear(self) -> None:
        """The last try worked: log the recovery once and reset the backoff."""
        if self.key is not None:
            log.info("%s: recovered after %d failed tr%s", self.what, self.tries,
                     "y" if self.tries == 1 else "ies")
        self.key = None
        self.delay = 0.0
        self.tries = 0


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


def served_routes(settings: Settings) -> tuple[list[dict[str, Any]], tuple[str, ...] | None]:
    """What a worker with ``settings`` publishes and the routes it claims.

    Returns its capabilities (:func:`reelserve.engines.capabilities.capabilities`, JSON-ready)
    and the route keys (:func:`reelserve.jobs.store.route_key`) it limits its claims to, or
    None when it renders every catalog route (no need to filter) or its profiles cannot be
    read: such a worker claims any job, and one that cannot render fails it with the cause
    instead of leaving it queued.
    """
    from reelserve.catalog import get_catalog

    try:
        from reelserve.engines.capabilities import capabilities

        published = capabilities(settings)
    except Exception as exc:
        log.warning("cannot tell what this worker renders (%s); it claims any job",
                    _describe(exc))
        return [], None
    routes = {route_key(c["model"], c["workflow"]) for c in published}
    every = {route_key(air, Workflow(wf).value)
             for air, entry in get_catalog().models.items() for wf in entry.workflows}
    return published, None if routes >= every else tuple(sorted(routes))


def error_dict(exc: ReelserveError) -> dict[str, Any]:
    """How an error is stored on a job: the Runware fields plus its kind."""
    return {**exc.to_dict(), "kind": exc.kind.value}


class _JobRun:
    """State of one claimed job while it runs: lease renewal, progress and cancellation."""

    def __init__(self, worker: Worker, job: Job) -> None:
        self.worker = worker
        self.job = job
        self.progress = 0.0
        self.guard: ContentGuard | None = None  # the content check, when the request asks one
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
        failing = False
        while not self._stop.wait(interval):
            progress = round(self.progress, 1)
            try:
                beat = self.worker.store.heartbeat(
                    self.job.id, self.worker.worker_id, lease,
                    progress if progress != sent else None,
                )
            except Exception as exc:  # a busy DB must not kill the job; the next beat retries
                if not failing:  # once per spell, not once per beat
                    log.warning("heartbeat failed for job %s: %s", self.job.id, _describe(exc),
                                exc_info=None if isinstance(exc, ReelserveError) else exc)
                failing = True
                continue
            failing = False
            sent = progress
            if not beat.owned:
                self.lost.set()
                return
            if beat.cancel_requested:
                self.cancelled.set()

    def is_cancelled(self) -> bool:
        """Engines and the encoder poll this between frames (a hand-back stops them too)."""
        return self.cancelled.is_set() or self.lost.is_set() or self.worker.hand_back.is_set()

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
        safety_checker: the content checker for requests with ``safety.checkContent``
            (default: the one configured by ``REELSERVE_SAFETY_MODEL``, loaded on first use).
        hand_back: once set, a running job stops at its next cancellation point and goes
            back to the queue (a stopping executor sets it when its grace period ends).
        broken: set by this worker when its engine says it can render no more
            (:class:`~reelserve.errors.WorkerBrokenError`); it then claims nothing more, and its
            process is expected to end (the executor reads it; shared by its slots).
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
        safety_checker: SafetyChecker | None = None,
        hand_back: threading.Event | None = None,
        broken: threading.Event | None = None,
    ) -> None:
        self.settings = settings
        self.hand_back = hand_back or threading.Event()
        self.broken = broken or threading.Event()
        #: Claims failing (the database refusing), and jobs handed back for a full disk.
        self.claim_trouble = Trouble("worker claim")
        self.disk_trouble = Trouble("worker storage", first=1.0, most=60.0)
        self._safety_checker = safety_checker
        self.store = store
        self.artifacts = artifacts
        self._select_engine = select_engine
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._fetch = fetch
        self._wake = threading.Event()
        self._unsubscribe = store.subscribe(lambda _job_id: self._wake.set())
        #: The route keys this worker claims jobs of (None: any job); set by :meth:`run` from
        #: what its settings render (see :func:`served_routes`).
        self.serves: tuple[str, ...] | None = None

    @property
    def select_engine(self) -> EngineSelector:
        """The engine selector, built on first use (keeps engine imports off the start path)."""
        if self._select_engine is None:
            self._select_engine = default_engine_selector(self.settings)
        return self._select_engine

    def run(self, stop: threading.Event, poll_interval: float = 0.5) -> None:
        """Claim and run jobs until ``stop`` is set.

        Sleeps between empty claims, woken early by in-process store changes; the poll interval
        covers jobs created by other processes. While it runs, the worker's row in the store's
        ``workers`` table says it is alive and what it renders (removed when it stops).
        """
        presence = self._start_presence()
        try:
            self._loop(stop, poll_interval)
        finally:
            presence.set()
            with contextlib.suppress(Exception):  # the store may be closed already
                self.store.remove_worker(self.worker_id)

    def _loop(self, stop: threading.Event, poll_interval: float) -> None:
        while not stop.is_set() and not self.broken.is_set():
            try:
                did_work = self.run_once()
            except Exception as exc:  # keep the slot alive: the job's lease expires, it is retried
                stop.wait(self.claim_trouble.hit(exc))
                continue
            self.claim_trouble.clear()
            if self.disk_trouble.delay:  # the last job found the disk full: wait, then retry
                stop.wait(self.disk_trouble.delay)
            elif not did_work:
                self._wake.wait(poll_interval)
                self._wake.clear()
        self._unsubscribe()

    def run_once(self) -> bool:
        """Claim one job and run it to its end; False when there was nothing to claim."""
        job = self.store.claim(
            self.worker_id, self.settings.lease_seconds,
            prefer_models=self.preferred_models(),
            prefer_max_wait=self.settings.prefer_max_wait,
            serves=self.serves,
        )
        if job is None:
            return False
        self.process(job)
        return True

    def _start_presence(self) -> threading.Event:
        """Publish this worker (what it renders) and start its presence beats; set the returned
        event to stop them. A store that refuses the first publish is retried by the beats."""
        capabilities, self.serves = served_routes(self.settings)
        info = WorkerInfo(worker_id=self.worker_id, host=socket.gethostname(), pid=os.getpid(),
                          started_at=time.time(), last_seen=time.time(),
                          capabilities=tuple(capabilities), serves=self.serves)
        published = True
        try:
            self.store.publish_worker(info)
        except Exception as exc:  # the beats publish it once the store answers
            log.warning("worker %s: could not publish itself: %s", self.worker_id,
                        _describe(exc))
            published = False
        stop = threading.Event()
        threading.Thread(target=self._beat, args=(stop, info, published),
                         name=f"presence-{self.worker_id[-8:]}", daemon=True).start()
        return stop

    def _beat(self, stop: threading.Event, info: WorkerInfo, published: bool) -> None:
        trouble = Trouble(f"worker {self.worker_id} presence", first=WORKER_BEAT)
        while not stop.wait(trouble.delay or WORKER_BEAT):
            try:
                # A row removed meanwhile (an operator's cleanup) is published again.
                if not published or not self.store.touch_worker(self.worker_id):
                    self.store.publish_worker(info)
                    published = True
            except Exception as exc:
                trouble.hit(exc)
                continue
            trouble.clear()

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
        work = Path(self.settings.data_dir) / WORK
        remove_work_folders(work, job.id)  # an interrupted earlier attempt's
        workdir = work / f"{job.id}-{uuid.uuid4().hex[:6]}"
        try:
            with _JobRun(self, job) as run:
                try:
                    workdir.mkdir(parents=True, exist_ok=True)
                    self._render(run, workdir)
                except _LeaseLost:
                    log.info("job %s: lease lost, stopping", job.id)
                    return
                except Exception as exc:
                    if self._put_back(run, exc):
                        return
                    self._fail(run, exc)
                self.disk_trouble.clear()
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def _put_back(self, run: _JobRun, exc: Exception) -> bool:
        """Return the job to the queue when ``exc`` is not its fault: this worker is stopping,
        or the disk is full (then back off). True when the job needs nothing more from here."""
        job = run.job
        if run.lost.is_set():
            return True  # another worker has it, or it ended: write nothing
        if isinstance(exc, WorkerBrokenError):
            # Not the job's fault, and no release either: a job that breaks every group it
            # meets must not loop for ever. Its lease runs out and counts as a loss.
            log.error("job %s: this worker cannot render any more (%s); claiming nothing more, "
                      "the job is taken again when its lease runs out", job.id, exc.message)
            self.broken.set()
            return True
        if run.cancelled.is_set():
            return False  # the client's cancellation wins: the job ends as cancelled
        if self.hand_back.is_set():
            if self.store.release(job.id, self.worker_id):
                log.info("job %s handed back to the queue: this worker is stopping", job.id)
            return True
        if is_disk_full(exc):
            self.disk_trouble.hit(exc)
            self.store.release(job.id, self.worker_id)
            return True
        return False

    def _fail(self, run: _JobRun, exc: Exception) -> None:
        """Record how the job ended because of ``exc`` (failed, retried or cancelled)."""
        job = run.job
        if isinstance(exc, CancelledError):
            self.store.fail(job.id, self.worker_id, error_dict(exc))
            return
        if isinstance(exc, ReelserveError):
            err: ReelserveError = exc
            if run.cancelled.is_set():
                err = CancelledError(CANCELLED_CODE, "the task was cancelled")
            # Internal engine errors may be transient (out of memory): retry those.
            retry = err.kind in (ErrorKind.INTERNAL, ErrorKind.UNAVAILABLE, ErrorKind.TIMEOUT)
            self.store.fail(job.id, self.worker_id, error_dict(err), retry=retry)
            return
        log.exception("job %s failed", job.id, exc_info=exc)
        internal = {"code": "internalError", "kind": ErrorKind.INTERNAL.value,
                    "message": f"the worker failed while rendering: {type(exc).__name__}: {exc}"}
        self.store.fail(job.id, self.worker_id, internal, retry=True)

    def _check(self, run: _JobRun) -> None:
        if run.lost.is_set():
            raise _LeaseLost
        if self.hand_back.is_set() and not run.cancelled.is_set():
            raise _HandBack
        if run.cancelled.is_set():
            raise CancelledError(CANCELLED_CODE, "the task was cancelled while it ran")

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
        # Inputs are checked before an engine is even chosen: a flagged one costs no GPU time.
        run.guard = self._content_guard(spec, run)
        if run.guard is not None:
            run.guard.check_inputs(inputs)
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
            began = time.monotonic()
            clips = self._generate(run, engine, spec, inputs, group, finished)
            render_each = (time.monotonic() - began) / len(group)  # a batch shares its time
            # Each result is encoded, stored and recorded before the next one is encoded.
            for offset, ((index, seed), clip) in enumerate(zip(group, clips, strict=True)):
                self._record(run, spec, clip, index, seed, cost_each, workdir, finished + offset,
                             render_seconds=render_each)
        total = round(cost_each * len(spec.seeds), 6)
        if not self.store.finish(job.id, self.worker_id, cost=total):
            raise _LeaseLost
        log.info("job %s finished (%d results) in attempt %d", job.id, len(spec.seeds),
                 job.attempts)

    def _content_guard(self, spec: GenerationSpec, run: _JobRun) -> ContentGuard | None:
        """The content check this job asked for (``safety``), or None."""
        if not spec.safety.check_content:
            return None  # reelserve.safety (and its model) is loaded only when asked for
        from reelserve.safety import guard_for

        return guard_for(self.settings, spec, checker=self._safety_checker,
                         cancelled=run.is_cancelled)

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
        *,
        render_seconds: float | None = None,
    ) -> None:
        """Encode ``clip``, store the file and record it as result ``index`` of the job.

        ``finished`` results are recorded already (for progress); ``render_seconds`` is the
        engine's time for the clip, recorded with the encoder's time for metrics.
        """
        from reelserve.media.encode import content_type_for, encode_clip, extension_for
        from reelserve.media.probe import probe

        job = run.job
        ext = extension_for(spec.output_format).lstrip(".")

        def on_encode(fraction: float) -> None:
            # Lazy engines render while the encoder pulls frames: encoding is their progress.
            run.set_progress(finished, fraction * 0.98)

        out = workdir / f"result-{index}.{ext}"
        # The content check taps the frames on their way into the encoder (no second decode).
        watch = run.guard.watch(clip, index) if run.guard is not None else None
        encode_began = time.monotonic()
        encode_clip(
            watch.clip if watch is not None else clip, out, output_format=spec.output_format,
            quality=spec.output_quality, prores_mov=self.settings.prores_mov, progress=on_encode,
            cancelled=run.is_cancelled,
        )
        encode_seconds = time.monotonic() - encode_began
        self._check(run)
        checked = watch.finish() if watch is not None else None
        if checked is not None and checked.error is not None:
            out.unlink(missing_ok=True)
            log.info("job %s: result %d withheld by the content check (%d frames, %.3f s)",
                     job.id, index, checked.frames, checked.seconds)
            raise checked.error
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
            nsfw=checked.flagged if checked is not None else None,
            safety_seconds=checked.seconds if checked is not None else None,
            safety_frames=checked.frames if checked is not None else None,
            render_seconds=round(render_seconds, 6) if render_seconds is not None else None,
            encode_seconds=round(encode_seconds, 6),
        )
        if not self.store.add_result(job.id, self.worker_id, result):
            raise _LeaseLost
        run.set_progress(finished, 1.0)

