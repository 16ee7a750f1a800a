"""Worker process slots: which supervised processes ``reelserve worker`` runs, on which GPUs.

Pure planning, no processes: :func:`gpu_slots` parses ``--gpus``, :func:`process_slots`
``--processes``, and :func:`plan_groups` lays GPUs out as torch.distributed groups for the
profiles that set ``parallel`` (run by :mod:`reelserve.worker.group`). The supervisor in
:mod:`reelserve.worker.executors` starts one child (or one group of ranks) per slot.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from reelserve.errors import ValidationError

if TYPE_CHECKING:
    from reelserve.engines.diffusers.profiles import ProfileSet

log = logging.getLogger("reelserve.worker.group")


@dataclass(frozen=True)
class WorkerSlot:
    """One supervised worker process: a label for ids and logs and the GPUs it may see.

    ``devices`` becomes the child's ``CUDA_VISIBLE_DEVICES``; ``None`` leaves the variable as
    the supervisor has it (``--processes``). ``ranks > 1`` makes the slot a torch.distributed
    group of that many processes (rank ``r`` renders on the ``r``-th of ``devices``), which
    splits each video of a ``parallel`` profile over them (:mod:`reelserve.worker.group`).
    """

    label: str
    devices: tuple[str, ...] | None = None
    ranks: int = 1


_RANGE = re.compile(r"\d+-\d+")
_DEVICE = re.compile(r"[A-Za-z0-9_:.\-/]+")


def gpu_slots(spec: str, per_worker: int | None = None) -> list[WorkerSlot]:
    """Parse ``--gpus``: commas separate worker processes, ``+`` joins GPUs of one process.

    ``0,1,2,3`` is four workers with one GPU each; ``0+1,2+3`` is two workers with two GPUs
    each, as is ``0,1,2,3`` with ``per_worker=2`` (``--gpus-per-worker 2``). A device is what
    ``CUDA_VISIBLE_DEVICES`` accepts: an index, a ``GPU-<uuid>`` or a ``MIG-<uuid>``.

    Raises:
        ValidationError: an empty or repeated device, an ``N-M`` range (ambiguous: it is
            refused with both spellings it may have meant), or ``per_worker`` that does not
            divide the GPUs given.
    """
    groups: list[tuple[str, ...]] = []
    for part in spec.split(","):
        devices = tuple(device.strip() for device in part.split("+"))
        for device in devices:
            if not device:
                raise ValidationError(
                    "invalidGpus", f"--gpus {spec!r} has an empty device; write GPUs as "
                    "0,1,2,3 (one worker each) or 0+1,2+3 (one worker per group)",
                    parameter="--gpus")
            if _RANGE.fullmatch(device):
                first, _, last = device.partition("-")
                listed = ",".join(str(i) for i in range(int(first), int(last) + 1))
                raise ValidationError(
                    "invalidGpus", f"--gpus {device!r} is ambiguous: write {listed} for one "
                    f"worker per GPU or {listed.replace(',', '+')} for one worker with all of "
                    "them", parameter="--gpus")
            if not _DEVICE.fullmatch(device):
                raise ValidationError(
                    "invalidGpus", f"--gpus device {device!r} is not a GPU index, GPU-<uuid> or "
                    "MIG-<uuid>", parameter="--gpus")
        groups.append(devices)
    flat = [device for group in groups for device in group]
    repeated = sorted({device for device in flat if flat.count(device) > 1})
    if repeated:
        raise ValidationError(
            "invalidGpus", f"--gpus {spec!r} gives GPU {', '.join(repeated)} to more than one "
            "worker; each GPU belongs to one worker process", parameter="--gpus")
    if per_worker is not None:
        if per_worker < 1:
            raise ValidationError("invalidGpus", f"--gpus-per-worker must be 1 or more, not "
                                  f"{per_worker}", parameter="--gpus-per-worker")
        if any(len(group) > 1 for group in groups):
            raise ValidationError(
                "invalidGpus", f"--gpus {spec!r} already groups GPUs with '+'; drop "
                "--gpus-per-worker or list the GPUs with commas only", parameter="--gpus-per-worker")
        if len(flat) % per_worker:
            raise ValidationError(
                "invalidGpus", f"--gpus-per-worker {per_worker} does not divide the {len(flat)} "
                f"GPUs of --gpus {spec!r}", parameter="--gpus-per-worker")
        groups = [tuple(flat[i : i + per_worker]) for i in range(0, len(flat), per_worker)]
    return [WorkerSlot(label="gpu" + "+".join(group) if all(d.isdigit() for d in group)
                       else f"gpu-slot{index}", devices=group)
            for index, group in enumerate(groups)]


def process_slots(count: int) -> list[WorkerSlot]:
    """``--processes N``: N workers that keep the supervisor's ``CUDA_VISIBLE_DEVICES``."""
    if count < 1:
        raise ValidationError("invalidProcesses", f"--processes must be 1 or more, not {count}",
                              parameter="--processes")
    return [WorkerSlot(label=f"proc{index}") for index in range(count)]


def plan_groups(slots: Sequence[WorkerSlot], profiles: ProfileSet | None) -> list[WorkerSlot]:
    """Lay ``--gpus`` slots out for the profiles that ask for ``parallel``.

    Each distinct split pipeline (entries sharing weights and options share one) gets a group of
    ``degree`` GPUs: a ``+``-joined slot of exactly that many GPUs if there is one, else the
    next single-GPU slots. Slots left over stay as they were (one worker process each); they
    render split profiles' jobs too, on their one device, when the group is busy.

    Raises:
        ValidationError: ``invalidGpus`` when too few GPUs are given for a group, naming the
            profile entry and its degree.
    """
    wanted: list[tuple[str, int]] = []  # (entry label, degree), one per distinct pipeline
    seen: set[Any] = set()
    for entry in profiles or ():
        option = entry.profile.parallel
        key = entry.profile.resident_key()
        if option is not None and key not in seen:
            seen.add(key)
            wanted.append((entry.label, option.degree))
    if not wanted:
        return list(slots)
    free = list(slots)
    groups: list[WorkerSlot] = []
    for label, degree in wanted:
        joined = next((s for s in free if s.devices is not None and len(s.devices) == degree
                       and s.ranks == 1), None)
        if joined is not None:
            free.remove(joined)
            chosen = [joined]
        else:
            chosen = [s for s in free if s.devices is not None and len(s.devices) == 1][:degree]
            if len(chosen) < degree:
                source = f"profiles file {profiles.source}" if profiles and profiles.source else "profiles"
                raise ValidationError(
                    "invalidGpus", f"{source}: {label}: parallel asks for a group of {degree} "
                    f"GPUs, but --gpus leaves {len(chosen)} single GPU(s) for it; give it "
                    f"{degree} more (e.g. --gpus {','.join(str(i) for i in range(degree))})",
                    parameter="--gpus")
            for slot in chosen:
                free.remove(slot)
        devices = tuple(d for slot in chosen for d in slot.devices or ())
        name = ("gpu" + "+".join(devices) if all(d.isdigit() for d in devices)
                else f"gpu-group{len(groups)}")
        groups.append(WorkerSlot(label=name, devices=devices, ranks=degree))
        log.info("%s renders %s split over GPUs %s", name, label, ",".join(devices))
    return groups + free
