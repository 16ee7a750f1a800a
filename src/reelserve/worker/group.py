"""One torch.distributed group per multi-GPU profile: several processes render one video.

``reelserve worker --gpus 0,1,2,3`` with a profile that sets ``parallel = { ulysses = 4 }`` runs
that profile's jobs on a group of 4 processes, one per GPU (:func:`~reelserve.worker.slots.plan_groups` lays the GPUs
out; :class:`~reelserve.worker.executors.ProcessExecutor` starts the ranks and restarts the whole
group when one dies). Inside the group (:func:`run_rank`):

* rank 0 is an ordinary worker (one slot): it claims jobs, resolves inputs, renders, encodes,
  stores and finishes them. Before a split pipeline is loaded or called, the diffusers engine
  :meth:`~GroupMember.announce` s the call (the job's spec, inputs and seeds) to the other ranks;
* every other rank waits for announcements and makes the same call
  (:meth:`~reelserve.engines.diffusers.engine.DiffusersEngine.serve_peer`); their collectives meet
  inside the transformer (diffusers' context parallelism), and their frames are dropped;
* jobs for profiles that are not split over this group (the preview engine, other profiles) are
  rendered by rank 0 alone; the others wait.

Announcements travel through the group's TCP store (hosted by rank 0), not through collectives:
a rank may wait for the next job for hours, longer than any collective timeout. When rank 0 dies
the store goes with it and the others exit; when another rank dies the supervisor sees it and
restarts the group. A pipeline failure on any rank ends that rank's process for the same reason:
the ranks can no longer be sure to meet in the same collective. The job is then claimed again
through its lease, like any crashed worker's job.

The entry point is ``python -m reelserve.worker.group`` (started by the supervisor, with the
``torchrun`` variables ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``).
torch is imported by :func:`run_rank` only; the GPU layout is planned by
:func:`reelserve.worker.slots.plan_groups`.
"""

from __future__ import annotations

import argparse
import logging
import os
import pickle
import signal
import sys
import threading
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from reelserve.errors import ValidationError

if TYPE_CHECKING:
    from reelserve.settings import Settings

log = logging.getLogger(__name__)

#: How long a rank waits in one collective (a peer loading a large model before the first
#: collective of a load can take minutes); a dead peer is normally noticed by the supervisor.
COLLECTIVE_TIMEOUT = timedelta(minutes=30)

_PREFIX = "reelserve/"


# ------------------------------------------------------------------ layout (pure)


# ------------------------------------------------------------------ one rank (torch from here on)


class GroupMember:
    """This process's place in the group: the :class:`~reelserve.engines.diffusers.parallel.RenderGroup`
    the diffusers engine renders with.

    Args:
        store: the group's TCP store (rank 0 hosts it).
        rank: this process's rank.
        size: ranks in the group.
        device: the torch device of this rank (``cuda:<local rank>`` or ``cpu``), where the
            per-step agreement tensor lives (NCCL reduces GPU tensors only).
    """

    def __init__(self, store: Any, rank: int, size: int, device: str) -> None:
        self.store = store
        self._rank = rank
        self._size = size
        self.device = device
        self._sent = 0
        self._pending: list[int] = []

    @property
    def rank(self) -> int:
        """This process's rank (0 claims and encodes)."""
        return self._rank

    @property
    def size(self) -> int:
        """Ranks in the group."""
        return self._size

    def announce(self, message: tuple[Any, ...]) -> None:
        """Rank 0: publish ``message`` as the next thing every other rank runs.

        Messages read by every rank are deleted here (each rank acknowledges what it read), so
        a long-running group does not keep every job's inputs in the store.
        """
        for n in list(self._pending):
            if self.store.add(f"{_PREFIX}ack/{n}", 0) >= self._size - 1:
                self.store.delete_key(f"{_PREFIX}msg/{n}")
                self.store.delete_key(f"{_PREFIX}ack/{n}")
                self._pending.remove(n)
        self.store.set(f"{_PREFIX}msg/{self._sent}", pickle.dumps(message))
        self._pending.append(self._sent)
        self._sent += 1

    def flush(self, timeout: float = 5.0) -> bool:
        """Rank 0: wait up to ``timeout`` seconds until every other rank has read every
        announcement (before exiting: the store lives in rank 0's process)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self.store.add(f"{_PREFIX}ack/{n}", 0) >= self._size - 1 for n in self._pending):
                return True
            time.sleep(0.05)
        return False

    def agree(self, flag: bool) -> bool:
        """Collective (every rank, once per denoising step): any rank's ``flag`` for all."""
        import torch
        import torch.distributed as dist

        value = torch.tensor([1 if flag else 0], dtype=torch.int32, device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def receive(self, stop: threading.Event, poll: float = 0.1) -> tuple[Any, ...] | None:
        """Rank > 0: the next announcement, or ``None`` once ``stop`` is set.

        Polls with ``check`` (a store ``wait`` that times out logs a c10d warning each time).

        Raises:
            torch.distributed.DistNetworkError: rank 0 (the store's host) is gone.
        """
        key = f"{_PREFIX}msg/{self._sent}"
        while not stop.is_set():
            if not self.store.check([key]):
                stop.wait(poll)
                continue
            # Written by rank 0 of this group (the store is the group's own; see docs/deployment.md).
            message: tuple[Any, ...] = pickle.loads(self.store.get(key))
            self.store.add(f"{_PREFIX}ack/{self._sent}", 1)
            self._sent += 1
            return message
        return None


def _setup(settings: Settings, rank: int, size: int, local_rank: int) -> tuple[Settings, GroupMember]:
    """Join the group: the device of this rank, the store, the process group."""
    import torch
    import torch.distributed as dist

    wanted = settings.diffusers_device or ("cuda" if torch.cuda.is_available() else "cpu")
    if wanted.startswith("cuda"):
        # Every rank sees the group's GPUs (CUDA_VISIBLE_DEVICES); rank r renders on the r-th.
        torch.cuda.set_device(local_rank)
        device, backend = f"cuda:{local_rank}", "nccl"
    else:
        device, backend = "cpu", "gloo"
    host = os.environ.get("MASTER_ADDR", "127.0.0.1")
    port = int(os.environ["MASTER_PORT"])
    store = dist.TCPStore(host, port, size, is_master=rank == 0, timeout=COLLECTIVE_TIMEOUT)
    dist.init_process_group(backend, store=store, rank=rank, world_size=size,
                            timeout=COLLECTIVE_TIMEOUT)
    log.info("rank %d of %d joined the group (%s on %s)", rank, size, backend, device)
    return settings.model_copy(update={"diffusers_device": device}), GroupMember(store, rank, size, device)


def run_rank(settings: Settings, stop: threading.Event, *, rank: int, size: int,
             local_rank: int, name: str, grace: float = 30.0, preload: Sequence[str] = ()) -> int:
    """Run one rank of a group until ``stop`` (rank 0) or rank 0's stop message (others).

    Returns the process exit code: 0 after a stop, 1 when the group broke (a peer's pipeline
    failed, rank 0 vanished); the supervisor then restarts the whole group.
    """
    from reelserve.engines.diffusers.cli import engines_at_start
    from reelserve.engines.registry import EngineRegistry

    settings, member = _setup(settings, rank, size, local_rank)
    registry = engines_at_start(settings, preload)
    if registry is None:  # REELSERVE_ENGINE_SELECTOR names another selector
        registry = EngineRegistry.from_settings(settings)
    if registry.diffusers is None:
        raise ValidationError("invalidGpus", "a worker group needs diffusers profiles "
                              "(REELSERVE_PROFILES) that set parallel", parameter="--gpus")
    registry.diffusers.group = member
    if rank == 0:
        return _lead(settings, registry, member, stop, name=name, grace=grace, preload=preload)
    return _follow(registry, member, stop)


def _lead(settings: Settings, registry: Any, member: GroupMember, stop: threading.Event, *,
          name: str, grace: float, preload: Sequence[str]) -> int:
    from reelserve.worker.executors import ThreadExecutor

    # One slot: the group renders one video at a time, on all its GPUs.
    executor = ThreadExecutor.from_settings(settings, slots=1, name=name,
                                            select_engine=registry, preload=preload)
    executor.start()
    code = 0
    try:
        while not stop.wait(0.5):
            if executor.broken:  # a split render failed: the group must restart as a whole
                log.error("rank 0: the group broke; leaving it so the supervisor restarts it")
                code = 1
                break
    finally:
        # The current job finishes (or is handed back) first: the other ranks are needed.
        if executor.stop(grace):
            executor.store.close()
        member.announce(("stop",))
        member.flush()  # the store lives in this process: let the others read the stop first
    return code


def _follow(registry: Any, member: GroupMember, stop: threading.Event) -> int:
    engine = registry.diffusers
    while True:
        try:
            message = member.receive(stop)
        except Exception as exc:
            log.warning("rank %d lost rank 0 (%s: %s); leaving the group", member.rank,
                        type(exc).__name__, exc)
            return 1
        if message is None or message[0] == "stop":
            return 0
        try:
            engine.serve_peer(message)
        except Exception:
            log.exception("rank %d: %s of %s/%s failed; the group must restart", member.rank,
                          message[0], message[1], message[2])
            return 1


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m reelserve.worker.group``: one rank of a group (started by the supervisor)."""
    parser = argparse.ArgumentParser(prog="python -m reelserve.worker.group")
    parser.add_argument("--log-level", default="info",
                        choices=["critical", "error", "warning", "info", "debug"])
    parser.add_argument("--name", required=True, help="the group's label (e.g. gpu0+1)")
    parser.add_argument("--grace", type=float, default=30.0)
    parser.add_argument("--preload", nargs="+", default=[], metavar="ID")
    parser.add_argument("--parent-pid", type=int)
    args = parser.parse_args(argv)
    rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    label = f"{args.name}.rank{rank}".replace("%", "%%")
    logging.basicConfig(level=args.log_level.upper(),
                        format=f"%(asctime)s %(levelname)s [{label}] %(name)s: %(message)s")
    stop = threading.Event()
    if rank == 0:
        signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
        signal.signal(signal.SIGINT, lambda signum, frame: stop.set())
    else:
        # The others stop when rank 0 says so, after its current job, which needs them.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    if args.parent_pid is not None and rank == 0:
        # Only rank 0 watches the supervisor: it stops after its job and tells the others, who
        # must not leave on their own while it may still announce a job it just claimed.
        threading.Thread(target=_watch_parent, args=(args.parent_pid, stop),
                         name="reelserve-parent-watch", daemon=True).start()
    from reelserve.errors import ReelserveError
    from reelserve.settings import Settings

    try:
        return run_rank(Settings(), stop, rank=rank, size=size, local_rank=local_rank,
                        name=args.name, grace=args.grace, preload=args.preload)
    except ReelserveError as exc:
        print(f"reelserve: {exc.code}: {exc.message}", file=sys.stderr)
        return 2


def _watch_parent(parent_pid: int, stop: threading.Event) -> None:
    """Rank 0 stops (after its current job) when its supervisor is gone, even by kill -9."""
    while not stop.wait(1.0):
        if os.getppid() != parent_pid:
            log.warning("supervisor process %d is gone; the group stops after its job", parent_pid)
            stop.set()


if __name__ == "__main__":
    # Run the imported module's main, so its loggers carry the module's name, not __main__.
    from reelserve.worker.group import main as _main

    sys.exit(_main())
