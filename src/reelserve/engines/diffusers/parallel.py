"""Several GPUs for one video: a profile's ``parallel`` key and diffusers' context parallelism.

A profile may ask for (docs/diffusers.md, "Several GPUs for one video")::

    parallel = { ulysses = 4 }       # or { ring = 2 }, or { ulysses = 2, ring = 2 }
    parallel = { cfg = 2 }           # the conditional and unconditional passes on two GPUs

The degrees multiply to the size of the torch.distributed group that renders the profile's jobs:
``reelserve worker --gpus ...`` forms one such group per profile that asks for it
(:mod:`reelserve.worker.group`). Each rank holds the whole model; the video's token sequence is
split over the ranks inside the transformer by diffusers' own ``ContextParallelConfig`` +
``enable_parallelism`` (Ulysses: all-to-all of heads; ring: K/V passed around the ranks). The
math is exact attention either way, so the output matches one GPU's up to rounding.

Checking (:func:`check_parallel`) is pure (no torch): the server refuses a bad profile at start.
Applying (:func:`enable_parallel`) happens at load, inside a group only; a worker that is
not a group (threads beside ``serve``, a single-GPU slot) renders such a profile on its one device
and says so in its log.

``cfg = 2`` puts the two passes of classifier-free guidance on two ranks: each runs one pass of
the whole sequence per step and the two results are exchanged with one ``all_gather`` of the
(small) noise prediction (:class:`~reelserve.engines.diffusers.cfg_batch.CfgPairs`). diffusers
0.42 has no CFG parallelism of its own (``_modeling_parallel`` marks it as not yet written), so
this is reelserve's, built on the same pass pairing as ``cfg_batch`` (its single-GPU sibling, so
the two exclude each other). It takes the kinds ``cfg_batch`` takes and, in this version, no
``ulysses``/``ring`` beside it: diffusers' context parallelism spans the whole group.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from reelserve.engines.diffusers.options import CFG_BATCH_KINDS, transformers_of
from reelserve.errors import EngineError, ErrorKind

log = logging.getLogger(__name__)

#: Pipeline kinds whose transformer(s) diffusers can split (``_cp_plan`` on WanTransformer3DModel)
#: and whose token sequence this engine can keep divisible by the group size (:func:`fit_tokens`).
#: Not wan-vace (WanVACETransformer3DModel has no plan in diffusers 0.42); not the LTX kinds:
#: their transformers have plans, but conditioning frames (ltx-condition) and the audio stream
#: (ltx2) change the sequence length per request, which is untested on GPUs so far.
PARALLEL_KINDS = frozenset({"wan-t2v", "wan-i2v", "wan-flf2v", "wan22-i2v", "wan22-ti2v"})

#: Attention backends diffusers 0.42 registers with ``supports_context_parallel=True``
#: (``attention_dispatch``). The profile's ``attention_backend`` (default ``native``) must be one.
CONTEXT_PARALLEL_BACKENDS: tuple[str, ...] = (
    "native", "_native_cudnn", "_native_flash", "_native_npu", "flash", "flash_hub",
    "flash_varlen_hub", "_flash_3_hub", "_flash_3_varlen_hub", "sage", "sage_hub",
)

#: Ring attention merges partial results with their log-sum-exp, which ``native`` (SDPA) and the
#: NPU backend do not return: ring needs one of these.
RING_BACKENDS: tuple[str, ...] = tuple(
    b for b in CONTEXT_PARALLEL_BACKENDS if b not in ("native", "_native_npu"))


class ParallelOption(BaseModel):
    """``parallel = { ulysses = N, ring = M, cfg = 1 }``: how one video is split over a group."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ulysses: int = Field(default=1, ge=1, le=64, description="Ulysses (all-to-all) degree")
    ring: int = Field(default=1, ge=1, le=64, description="ring attention degree")
    cfg: int = Field(default=1, ge=1, le=2, description="CFG parallel degree (the two guidance "
                     "passes on two GPUs)")

    @property
    def degree(self) -> int:
        """Processes (GPUs) one video is rendered on: the product of the degrees."""
        return self.ulysses * self.ring * self.cfg

    @property
    def sequence_degree(self) -> int:
        """Parts the token sequence is split into (``ulysses * ring``; 1 for CFG parallel alone)."""
        return self.ulysses * self.ring


def _fail(where: str, label: str, key: str, message: str, allowed: Any = None) -> EngineError:
    return EngineError(
        "invalidProfile", f"{where}: {label}: {key}: {message}", parameter="profiles",
        allowed_values=allowed, kind=ErrorKind.UNAVAILABLE)


def check_parallel(profile: Any, where: str, label: str, *, check_weights: bool = True) -> None:
    """Refuse a ``parallel`` table that cannot work for ``profile`` (a :class:`~.profiles.Profile`).

    Pure: reads at most the transformer's ``config.json`` (head count) when ``check_weights``.

    Raises:
        EngineError: code ``invalidProfile`` naming ``where`` (the file), ``label`` (the entry),
            the key and what is allowed.
    """
    option: ParallelOption | None = profile.parallel
    if option is None:
        return
    if option.degree < 2:
        raise _fail(where, label, "parallel", "every degree is 1, which splits nothing; set "
                    "ulysses and/or ring to the GPUs one video should use (2 or more), or "
                    "cfg = 2 for the two guidance passes on two GPUs")
    if profile.offload != "none":
        raise _fail(where, label, "parallel", f"cannot split over GPUs with offload = "
                    f"{profile.offload!r}: each rank keeps the whole model on its own GPU; set "
                    "offload = 'none'", ["none"])
    if option.cfg > 1:
        _check_cfg_parallel(profile, option, where, label)
        return
    if profile.pipeline not in PARALLEL_KINDS:
        raise _fail(where, label, "parallel", f"pipeline {profile.pipeline!r} cannot be split "
                    f"over GPUs here; kinds that can: {sorted(PARALLEL_KINDS)}",
                    sorted(PARALLEL_KINDS))
    backend = profile.attention_backend or "native"
    if backend not in CONTEXT_PARALLEL_BACKENDS:
        raise _fail(where, label, "attention_backend", f"{backend!r} cannot run split over GPUs "
                    f"(parallel); backends that can: {list(CONTEXT_PARALLEL_BACKENDS)}",
                    list(CONTEXT_PARALLEL_BACKENDS))
    if option.ring > 1 and backend not in RING_BACKENDS:
        raise _fail(where, label, "parallel.ring", f"ring attention needs an attention_backend "
                    f"that returns its log-sum-exp, not {backend!r}; set attention_backend to one "
                    f"of {list(RING_BACKENDS)} (e.g. '_native_flash'), or use ulysses",
                    list(RING_BACKENDS))
    if check_weights and option.ulysses > 1:
        for name in ("transformer", "transformer_2"):
            heads = _config_value(Path(profile.weights) / name / "config.json", "num_attention_heads")
            if heads is not None and heads % option.ulysses:
                divisors = [d for d in range(2, heads + 1) if heads % d == 0]
                raise _fail(where, label, "parallel.ulysses", f"{option.ulysses} does not divide "
                            f"the {heads} attention heads of {name} (Ulysses gives each GPU whole "
                            f"heads); allowed: {divisors}", divisors)


def _check_cfg_parallel(profile: Any, option: ParallelOption, where: str, label: str) -> None:
    """``cfg = 2``: a kind whose passes pair up, alone in the group, not with ``cfg_batch``."""
    if option.sequence_degree > 1:
        raise _fail(where, label, "parallel.cfg", f"cfg = {option.cfg} with ulysses = "
                    f"{option.ulysses}, ring = {option.ring}: this version runs CFG parallel alone "
                    "(diffusers' context parallelism spans the whole group); use either cfg = 2 "
                    "or ulysses/ring", [1])
    if profile.pipeline not in CFG_BATCH_KINDS:
        raise _fail(where, label, "parallel.cfg", f"pipeline {profile.pipeline!r} cannot put its "
                    f"guidance passes on two GPUs; kinds that can: {sorted(CFG_BATCH_KINDS)}",
                    sorted(CFG_BATCH_KINDS))
    if profile.cfg_batch:
        raise _fail(where, label, "cfg_batch", "cfg_batch = true batches the two guidance passes "
                    "on one GPU, parallel.cfg = 2 puts them on two: choose one", [False])


def _config_value(path: Path, key: str) -> int | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8")).get(key)
    except (OSError, ValueError):
        return None
    return value if isinstance(value, int) else None


# ------------------------------------------------------------------ token sequence


def token_grid(kind: str) -> tuple[int, int]:
    """(pixels per token side, frames per latent frame) of a parallel kind: the Wan 2.1 VAE
    (8x spatial) with 2x2 patches is 16 px; Wan 2.2 TI2V's 16x VAE with 2x2 patches is 32 px."""
    return (32 if kind == "wan22-ti2v" else 16), 4


def tokens(kind: str, width: int, height: int, frames: int) -> int:
    """Length of the transformer's token sequence for one video of this size."""
    side, step = token_grid(kind)
    return ((frames - 1) // step + 1) * (height // side) * (width // side)


def fit_tokens(kind: str, width: int, height: int, frames: int, degree: int,
               multiple: int) -> tuple[int, int]:
    """The generation size nearest ``width x height`` whose token sequence divides by ``degree``.

    diffusers shards the sequence in equal parts (it asserts divisibility; its "anything" modes
    gather uneven parts, which gloo refuses), so a size whose sequence does not divide is moved
    by a few grid steps (``multiple``, the kind's side multiple); the engine's cover-fit absorbs
    the small change of aspect. Most sizes need no change (832x480 x 81 frames divides by 2-8).
    """
    if tokens(kind, width, height, frames) % degree == 0:
        return width, height
    best: tuple[float, int, int] | None = None
    reach = max(2, degree) * 2
    for dw in range(-reach, reach + 1):
        for dh in range(-reach, reach + 1):
            w, h = width + dw * multiple, height + dh * multiple
            if w < multiple or h < multiple or tokens(kind, w, h, frames) % degree:
                continue
            cost = abs(math.log(w / width)) + abs(math.log(h / height))
            if best is None or cost < best[0]:
                best = (cost, w, h)
    if best is None:  # pragma: no cover - some neighbour always divides within the reach
        raise EngineError("engineFailed", f"no generation size near {width}x{height} splits "
                          f"into {degree} equal token parts", kind=ErrorKind.INTERNAL)
    return best[1], best[2]


# ------------------------------------------------------------------ the group, as the engine sees it


class RenderGroup(Protocol):
    """The torch.distributed group an engine renders with (:class:`reelserve.worker.group.GroupMember`).

    Rank 0 claims jobs and runs the worker loop; before a parallel load or pipeline call it
    :meth:`announce` s it, so every other rank makes the same call (their collectives meet inside
    the transformer). :meth:`agree` is a collective every rank calls once per denoising step, so a
    cancellation seen by rank 0 stops all ranks at the same step.
    """

    @property
    def rank(self) -> int:
        """This process's rank (0 claims and encodes)."""
        ...

    @property
    def size(self) -> int:
        """Ranks in the group (the GPUs one video is rendered on)."""
        ...

    def announce(self, message: tuple[Any, ...]) -> None:
        """Rank 0: have every other rank run ``message`` (``("load"|"render", ...)``)."""
        ...

    def agree(self, flag: bool) -> bool:
        """Collective: True on every rank when ``flag`` is True on any rank."""
        ...


# ------------------------------------------------------------------ applying (torch from here on)


@contextlib.contextmanager
def _cpu_device_count() -> Iterator[None]:
    """diffusers 0.42 computes each rank's device as ``rank % torch.accelerator.device_count()``,
    which is 0 on a machine without an accelerator (ZeroDivisionError). On the CPU, report one
    device while ``enable_parallelism`` runs: the device it computes is only recorded, and the
    CPU (gloo) path is what the tests exercise. Never used on a GPU."""
    import torch

    original = torch.accelerator.device_count
    torch.accelerator.device_count = lambda: 1
    try:
        yield
    finally:
        torch.accelerator.device_count = original


def enable_parallel(loaded: Any, option: ParallelOption, device: str) -> None:
    """Split a freshly loaded pipeline (a :class:`~.pipelines.LoadedPipeline`) over the group as
    ``option`` says: the guidance passes (``cfg = 2``, on every front of the pipeline) or the
    token sequence (``ulysses``/``ring``). torch.distributed must be up."""
    if option.cfg > 1:
        from reelserve.engines.diffusers.cfg_batch import install_cfg_pairs

        for front in (loaded.pipe, loaded.image_pipe):
            if front is not None:
                install_cfg_pairs(front, split=True)
        log.info("cfg parallel (the two guidance passes on %d ranks) on %s", option.cfg, device)
    if option.sequence_degree > 1:
        enable_context_parallel(loaded.pipe, option, device)


def enable_context_parallel(pipe: Any, option: ParallelOption, device: str) -> None:
    """``transformer.enable_parallelism(config=ContextParallelConfig(...))`` on every
    transformer of ``pipe`` (both experts of Wan 2.2 A14B). torch.distributed must be up.

    Raises:
        EngineError: ``invalidProfile`` when diffusers refuses the configuration here.
    """
    from diffusers import ContextParallelConfig

    for module in transformers_of(pipe):
        module = getattr(module, "inner", module)  # under a CFG batch wrapper
        config = ContextParallelConfig(
            ulysses_degree=option.ulysses if option.ulysses > 1 else None,
            ring_degree=option.ring if option.ring > 1 else None)
        guard = _cpu_device_count() if device.startswith("cpu") else contextlib.nullcontext()
        try:
            with guard:
                module.enable_parallelism(config=config)
        except (ValueError, RuntimeError, AssertionError) as exc:
            raise EngineError(
                "invalidProfile", f"parallel {option.model_dump()} cannot run here: {exc}",
                parameter="profiles", kind=ErrorKind.UNAVAILABLE) from exc
    log.info("context parallel (ulysses %d, ring %d) on %s", option.ulysses, option.ring, device)
