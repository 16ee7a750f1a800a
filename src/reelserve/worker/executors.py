"""Where worker loops run.

:class:`ThreadExecutor` runs ``slots`` worker loops as daemon threads in the current process:
beside the API server by default (``settings.workers``), or alone in ``reelserve worker``. Heavy
imports (av, engines) happen in those threads on first use, never on the server's start path.

:class:`ProcessExecutor` supervises one ``reelserve worker`` child process per slot on this
machine (``reelserve worker --gpus 0,1,2,3`` or ``--processes N``): each child gets its slot's
``CUDA_VISIBLE_DEVICES`` and its own worker id, a child that dies is started again with backoff,
and a stop is forwarded to every child, which finishes its current job within a grace period.
The children are fresh interpreters (``python -m reelserve worker``), not forks: they inherit no
database connection, thread or CUDA context from the supervisor, which opens none of these
itself. A job whose child died is claimed again through the store's lease expiry, like any
crashed worker's job; the supervisor adds no recovery path of its own.

A slot with ``ranks > 1`` is a torch.distributed group (:mod:`reelserve.worker.group`, laid out
by :func:`~reelserve.worker.slots.plan_groups` for profiles that set ``parallel``): one process
per rank, all seeing the group's GPUs, started together on a fresh rendezvous port. When any
rank dies the others are killed (they cannot go on without it) and the whole group is started
again with the same backoff as a single child.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

from reelserve.errors import EngineError, ErrorKind, ReelserveError, ValidationError
from reelserve.worker.loop import EngineSelector, Worker, error_dict
from reelserve.worker.readiness import Readiness
from reelserve.worker.slots import WorkerSlot

if TYPE_CHECKING:
    from reelserve.delivery.storage import ArtifactStore
    from reelserve.engines.base import Engine
    from reelserve.jobs.store import JobStore
    from reelserve.settings import Settings
    from reelserve.tasks import GenerationSpec

log = logging.getLogger(__name__)


class ThreadExecutor:
    """``slots`` worker threads sharing one store, artifact store and engine selector.

    ``name`` (e.g. ``gpu0``, given by a :class:`ProcessExecutor` to its children) is put into the
    worker ids, so leases and logs show which slot of the machine holds a job.
    """

    def __init__(
        self,
        settings: Settings,
        store: JobStore,
        artifacts: ArtifactStore,
        slots: int,
        select_engine: EngineSelector | None = None,
        *,
        name: str | None = None,
        preload: Sequence[str] = (),
        readiness: Readiness | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.artifacts = artifacts
        self.slots = slots
        self.name = name
        self.preload = tuple(preload)
        #: What ``/ready`` reads: starting, loading (preload), ready, or failed.
        self.readiness = readiness or Readiness()
        self._select_engine = select_engine
        self._stop = threading.Event()
        self._hand_back = threading.Event()
        self._broken = threading.Event()
        self._threads: list[threading.Thread] = []
        self._selector_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, slots: int | None = None,
                      name: str | None = None, select_engine: EngineSelector | None = None,
                      preload: Sequence[str] = ()) -> ThreadExecutor:
        """Open the store and artifact store named by ``settings``."""
        from reelserve.delivery import open_artifacts
        from reelserve.jobs import open_store

        return cls(settings, open_store(settings), open_artifacts(settings),
                   settings.workers if slots is None else slots, select_engine, name=name,
                   preload=preload)

    def _selector(self) -> EngineSelector:
        # One engine selector for all slots (it caches loaded pipelines), built lazily and once.
        with self._selector_lock:
            if self._select_engine is None:
                from reelserve.worker.loop import default_engine_selector

                self._select_engine = default_engine_selector(self.settings)
            return self._select_engine

    def start(self) -> None:
        """Build the engine selector, preload ``preload`` models, then start the worker threads.

        This happens in a thread, so the server answers (``/ready``: loading) meanwhile. No slot
        claims a job before the preload is done. When the selector cannot be built or a preload
        fails, :attr:`readiness` turns FAILED and the slots still run, failing every job they
        claim with code ``workerUnavailable`` and the cause, so no job stays queued forever.
        """
        thread = threading.Thread(target=self._prepare, name="reelserve-worker-prepare",
                                  daemon=True)
        thread.start()
        self._threads.append(thread)

    def _prepare(self) -> None:
        from reelserve.worker.loop import clean_work_folders

        try:  # scratch folders of jobs this machine's workers were killed in
            clean_work_folders(self.settings.data_dir, self.store)
        except Exception as exc:  # never a reason not to start: the next claims clean up too
            log.warning("could not clean up scratch folders: %s: %s", type(exc).__name__, exc)
        selector: EngineSelector
        try:
            selector = self._selector()
            preloaded: list[str] = []
            if self.preload:
                self.readiness.loading(f"preloading {', '.join(self.preload)}")
                load = getattr(selector, "preload", None)
                if load is None:
                    raise EngineError("modelUnavailable", "--preload needs the engine registry "
                                      "(a custom engine selector cannot preload)",
                                      parameter="preload", kind=ErrorKind.UNAVAILABLE)
                preloaded = list(load(self.preload))
                log.info("preloaded %s", ", ".join(preloaded))
            self.readiness.ready(preloaded)
        except Exception as exc:
            log.exception("worker slots cannot render")
            error = (exc if isinstance(exc, ReelserveError) else EngineError(
                "engineFailed", f"{type(exc).__name__}: {exc}", kind=ErrorKind.INTERNAL))
            refusal = EngineError(
                "workerUnavailable", f"this server's worker cannot render: {error.code}: "
                f"{error.message}", kind=ErrorKind.UNAVAILABLE)
            self.readiness.failed(error_dict(refusal))

            def selector(spec: GenerationSpec) -> Engine:
                raise refusal

        if self._stop.is_set():
            return
        for slot in range(self.slots):
            thread = threading.Thread(target=self._run_slot, args=(slot, selector),
                                      name=f"reelserve-worker-{slot}", daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("started %d worker thread(s)", self.slots)

    def _worker_id(self, slot: int) -> str | None:
        if self.name is None:
            return None  # the Worker's default: host, pid and a random suffix
        label = self.name if self.slots == 1 else f"{self.name}.{slot}"
        return f"{socket.gethostname()}:{label}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    def _run_slot(self, slot: int, selector: EngineSelector) -> None:
        Worker(self.settings, self.store, self.artifacts, selector,
               worker_id=self._worker_id(slot), hand_back=self._hand_back,
               broken=self._broken).run(self._stop)

    @property
    def broken(self) -> bool:
        """Whether a slot's engine said it can render no more (a GPU group that broke)."""
        return self._broken.is_set()

    def slots_alive(self) -> tuple[int, int]:
        """``(started, alive)`` slot threads (``/ready``: a slot that died takes no jobs)."""
        started = [t for t in list(self._threads) if t.name != "reelserve-worker-prepare"]
        return len(started), sum(1 for t in started if t.is_alive())

    def stop_claiming(self) -> None:
        """Claim no more jobs (running ones go on): the first thing a stopping process does,
        from its signal handler, so no job is started that the process could not finish."""
        self._stop.set()

    def stop(self, timeout: float = 10.0, hand_back_wait: float = 10.0) -> bool:
        """Stop claiming, give running jobs ``timeout`` seconds to finish, then hand back.

        Jobs still running after ``timeout`` stop at their next cancellation point (the engine
        and encoder poll it between frames) and go back to the queue, where another worker
        takes them at once without their losing an attempt. Returns True when every thread
        ended; False when one is still busy ``hand_back_wait`` seconds later (an engine that
        does not poll): the caller must then leave the job store open, and that job's lease
        runs out as if the process had been killed.
        """
        self._stop.set()
        deadline = time.monotonic() + timeout
        # The prepare thread goes first: once it ended, the slot list no longer grows.
        for thread in list(self._threads):
            thread.join(max(0.0, deadline - time.monotonic()))
        for thread in list(self._threads):
            thread.join(max(0.0, deadline - time.monotonic()))
        busy = [thread for thread in self._threads if thread.is_alive()]
        if busy:
            log.info("%d job(s) still running after %.0f s: handing them back", len(busy),
                     timeout)
            self._hand_back.set()
            deadline = time.monotonic() + hand_back_wait
            for thread in busy:
                thread.join(max(0.0, deadline - time.monotonic()))
            busy = [thread for thread in busy if thread.is_alive()]
            if busy:
                log.warning("%d worker thread(s) did not stop; their jobs will be claimed "
                            "again when their leases expire", len(busy))
        self._threads = busy
        return not busy


def run_standalone(settings: Settings, stop: threading.Event | None = None, *,
                   name: str | None = None, grace: float = 10.0,
                   select_engine: EngineSelector | None = None,
                   preload: Sequence[str] = ()) -> None:
    """``reelserve worker``: run ``settings.workers`` (at least one) slots until stopped.

    ``name`` goes into the worker ids (a supervised child's slot, e.g. ``gpu0``); once ``stop``
    is set, running jobs get ``grace`` seconds to finish.
    """
    stop = stop or threading.Event()
    executor = ThreadExecutor.from_settings(settings, slots=max(1, settings.workers), name=name,
                                            select_engine=select_engine, preload=preload)
    executor.start()
    try:
        # Poll rather than block forever, so a signal handler setting ``stop`` is seen promptly.
        while not stop.wait(1.0):
            continue
    finally:
        # The executor opened the store (from_settings), so it closes it, once no job uses it.
        if executor.stop(grace):
            executor.store.close()


# ------------------------------------------------------------------ supervised processes


def settings_environ(settings: Settings) -> dict[str, str | None]:
    """``REELSERVE_*`` variables that rebuild ``settings`` in a child process.

    ``None`` marks a variable to remove (an unset optional setting), so the child's settings
    equal the supervisor's whatever mix of arguments, environment and ``.env`` made them.
    Secrets are passed in clear: the child needs them, and only the same user can read them.
    """
    from pydantic import SecretBytes, SecretStr
    from pydantic_core import to_json
    from pydantic_settings import NoDecode

    out: dict[str, str | None] = {}
    for name, field in type(settings).model_fields.items():
        key = f"REELSERVE_{name.upper()}"
        value = getattr(settings, name)
        if isinstance(value, SecretStr | SecretBytes):
            value = value.get_secret_value()
        if value is None:
            out[key] = None
        elif isinstance(value, bool):
            out[key] = "true" if value else "false"
        elif isinstance(value, bytes):
            out[key] = value.decode()
        elif isinstance(value, list | tuple | set) and NoDecode in field.metadata:
            out[key] = ",".join(item.get_secret_value() if isinstance(item, SecretStr) else str(item)
                                for item in value)
        elif isinstance(value, str | int | float | os.PathLike):
            out[key] = str(value.value if isinstance(value, Enum) else value)
        else:  # lists, dicts, nested models: pydantic-settings decodes them as JSON
            out[key] = to_json(value).decode()
    return out


@dataclass
class _Child:
    """A slot's current process(es), one per rank, and its restart bookkeeping."""

    slot: WorkerSlot
    procs: list[subprocess.Popen[bytes]] = dataclasses.field(default_factory=list)
    started_at: float = 0.0
    failures: int = 0
    next_start: float = 0.0
    restarts: int = 0


class ProcessExecutor:
    """Supervises one ``reelserve worker`` child process per :class:`WorkerSlot`.

    Args:
        settings: the install's settings; children get them through ``REELSERVE_*`` variables.
        slots: one child each (:func:`gpu_slots`, :func:`process_slots`).
        threads: worker threads in each child (``reelserve worker --workers``; 1 on a GPU).
        grace: seconds a stopping child may spend finishing its current job; the supervisor
            kills a child still running ``grace + 5`` seconds after it forwarded the stop.
        backoff_base: seconds before the first restart of a child that died; doubled for each
            further death in a row, up to ``backoff_max``. A child that ran ``stable_after``
            seconds starts the count again.
        command: the argv that starts a slot's child (default: ``python -m reelserve worker``
            with the slot's name); a wrapper (numactl, nice) may prepend itself.
        environ: the environment the children start from (default: this process's).
        preload: model ids each child loads before it takes jobs (``--preload``).
    """

    def __init__(
        self,
        settings: Settings,
        slots: Sequence[WorkerSlot],
        *,
        threads: int = 1,
        grace: float = 30.0,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
        stable_after: float = 60.0,
        poll_interval: float = 0.2,
        command: Callable[[WorkerSlot], list[str]] | None = None,
        environ: Mapping[str, str] | None = None,
        preload: Sequence[str] = (),
    ) -> None:
        if not slots:
            raise ValidationError("invalidWorkerSlots", "a process executor needs at least one slot")
        widest = max(len(slot.devices or ()) for slot in slots)
        device = settings.diffusers_device or ""
        index = device.partition(":")[2]
        if any(slot.devices for slot in slots) and index.isdigit() and int(index) >= widest:
            raise ValidationError(
                "invalidDevice", f"REELSERVE_DIFFUSERS_DEVICE={device} names a GPU no worker "
                f"sees: with --gpus each worker sees its own GPUs as cuda:0 to cuda:{widest - 1}; "
                "leave it unset (cuda:0) or set cuda", parameter="diffusers_device")
        self.settings = settings
        self.preload = tuple(preload)
        self.slots = list(slots)
        self.threads = max(1, threads)
        self.grace = grace
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.stable_after = stable_after
        self.poll_interval = poll_interval
        self._command = command or self._worker_command
        self._environ = dict(os.environ if environ is None else environ)
        self._children = [_Child(slot) for slot in self.slots]
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._monitor: threading.Thread | None = None

    def _worker_command(self, slot: WorkerSlot) -> list[str]:
        level = logging.getLevelName(logging.getLogger("reelserve").getEffectiveLevel()).lower()
        if level not in ("critical", "error", "warning", "info", "debug"):
            level = "info"
        if slot.ranks > 1:  # every rank runs the same command; its rank comes in RANK
            return [sys.executable, "-m", "reelserve.worker.group", "--log-level", level,
                    "--name", slot.label, "--grace", str(self.grace),
                    "--parent-pid", str(os.getpid())] + (
                        ["--preload", *self.preload] if self.preload else [])
        return [sys.executable, "-m", "reelserve", "--log-level", level, "worker",
                "--name", slot.label, "--workers", str(self.threads), "--grace", str(self.grace),
                "--parent-pid", str(os.getpid())] + (["--preload", *self.preload] if self.preload else [])

    def _child_environ(self, slot: WorkerSlot) -> dict[str, str]:
        env = dict(self._environ)
        for key, value in settings_environ(self.settings).items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        if slot.devices is not None:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(slot.devices)
        return env

    def _spawn(self, child: _Child) -> None:
        env = self._child_environ(child.slot)
        ranks = child.slot.ranks
        if ranks > 1:
            # A fresh rendezvous port per start: the last group's may still be in TIME_WAIT.
            env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()),
                       WORLD_SIZE=str(ranks))
        procs: list[subprocess.Popen[bytes]] = []
        try:
            for rank in range(ranks):
                rank_env = env if ranks == 1 else {**env, "RANK": str(rank), "LOCAL_RANK": str(rank)}
                procs.append(subprocess.Popen(self._command(child.slot), env=rank_env,
                                              stdin=subprocess.DEVNULL))
        except OSError:
            log.exception("worker %s: cannot start its process", child.slot.label)
            _end(procs)
            child.procs = []
            self._schedule_restart(child, time.monotonic(), ran=0.0)
            return
        child.procs = procs
        child.started_at = time.monotonic()
        devices = (f" (CUDA_VISIBLE_DEVICES={env['CUDA_VISIBLE_DEVICES']})"
                   if child.slot.devices is not None else "")
        if ranks == 1:
            log.info("worker %s: started process %d%s", child.slot.label, procs[0].pid, devices)
        else:
            log.info("worker %s: started a group of %d processes %s%s, rendezvous on port %s",
                     child.slot.label, ranks, ", ".join(str(p.pid) for p in procs), devices,
                     env["MASTER_PORT"])

    def _schedule_restart(self, child: _Child, now: float, ran: float) -> float:
        child.failures = 1 if ran >= self.stable_after else child.failures + 1
        delay = min(self.backoff_max, self.backoff_base * 2 ** (child.failures - 1))
        child.next_start = now + delay
        return delay

    def start(self) -> None:
        """Start every child and the thread that restarts those that die."""
        with self._lock:
            for child in self._children:
                self._spawn(child)
        self._monitor = threading.Thread(target=self._supervise, name="reelserve-supervisor",
                                         daemon=True)
        self._monitor.start()
        log.info("supervising %d worker process(es)", len(self._children))

    def _supervise(self) -> None:
        while not self._stopping.wait(self.poll_interval):
            with self._lock:
                if self._stopping.is_set():
                    return
                now = time.monotonic()
                for child in self._children:
                    if not child.procs:
                        if now >= child.next_start:
                            child.restarts += 1
                            self._spawn(child)
                        continue
                    dead = [(rank, proc, code) for rank, proc in enumerate(child.procs)
                            if (code := proc.poll()) is not None]
                    if not dead:
                        continue
                    delay = self._schedule_restart(child, now, ran=now - child.started_at)
                    rank, proc, code = dead[0]
                    if len(child.procs) == 1:
                        log.warning("worker %s: process %d %s; restarting it in %.1f s",
                                    child.slot.label, proc.pid, _describe_exit(code), delay)
                    else:
                        # The others would wait in a collective for it until they time out.
                        log.warning("worker %s: rank %d (process %d) %s; ending the other ranks "
                                    "and restarting the group of %d in %.1f s", child.slot.label,
                                    rank, proc.pid, _describe_exit(code), len(child.procs), delay)
                        _end(child.procs)
                    child.procs = []

    def pids(self) -> dict[str, int]:
        """Label -> pid of every child running now (``<label>.rank<r>`` for a group's ranks)."""
        with self._lock:
            return {(child.slot.label if len(child.procs) == 1 else f"{child.slot.label}.rank{rank}"):
                    proc.pid for child in self._children for rank, proc in enumerate(child.procs)
                    if proc.poll() is None}

    def restarts(self) -> dict[str, int]:
        """Label -> how many times that slot's child was started again."""
        with self._lock:
            return {child.slot.label: child.restarts for child in self._children}

    def stop(self, timeout: float | None = None) -> None:
        """Forward SIGTERM to every child, wait for them, then kill those still running.

        Each child stops claiming and finishes its current job within ``grace``; the wait here
        is ``timeout`` (default ``grace + 5`` seconds). A killed child's job is claimed again
        once its lease runs out. A group's ranks other than 0 ignore SIGTERM: rank 0 tells them
        to stop once its job is done (it needs them for it).
        """
        self._stopping.set()
        with self._lock:  # no restart can start after this point
            procs = [(child.slot.label, proc) for child in self._children for proc in child.procs]
        for _label, proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + (self.grace + 5.0 if timeout is None else timeout)
        for label, proc in procs:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("worker %s: process %d still running after the grace period; "
                            "killing it", label, proc.pid)
                proc.kill()
                proc.wait()
        if self._monitor is not None:
            self._monitor.join()
        log.info("all worker processes stopped")


def _end(procs: Sequence[subprocess.Popen[bytes]]) -> None:
    """Kill and reap ``procs`` (a broken group's remaining ranks)."""
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
    for proc in procs:
        proc.wait()


def _free_port() -> int:
    """A loopback TCP port that was free a moment ago (a group's rendezvous)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def run_supervised(settings: Settings, slots: Sequence[WorkerSlot], stop: threading.Event,
                   *, threads: int = 1, grace: float = 30.0, preload: Sequence[str] = ()) -> None:
    """``reelserve worker --gpus/--processes``: supervise the slots' children until ``stop``.

    ``preload`` is passed on: each child loads those models before it takes jobs. Profiles
    that set ``parallel`` get a group of GPUs each (:func:`~reelserve.worker.slots.plan_groups`).
    """
    from reelserve.worker.slots import plan_groups

    profiles = None
    if settings.profiles is not None:
        from reelserve.engines.diffusers.profiles import ProfileSet

        profiles = ProfileSet.load(settings.profiles)  # checked at start already: no torch here
    slots = plan_groups(slots, profiles)
    executor = ProcessExecutor(settings, slots, threads=threads, grace=grace, preload=preload)
    executor.start()
    try:
        # Poll rather than block forever, so a signal handler setting ``stop`` is seen promptly.
        while not stop.wait(0.5):
            continue
    finally:
        executor.stop()
