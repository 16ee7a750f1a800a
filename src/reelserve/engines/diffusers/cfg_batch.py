"""The two guidance passes of a step, paired: as one batch (``cfg_batch``) or on two GPUs
(``parallel = { cfg = 2 }``).

Wan pipelines call the transformer twice per step, with the same latents and timestep objects and
different text embeddings; the unconditional result is needed only after both. On the first
(conditional) call :class:`CfgPairs` computes both results at once and keeps the unconditional
one; the second call, recognised by its identical latents and timestep objects and the negative
embeddings, gets it back without a model run. How "at once" is done:

* batched (one GPU): both passes as one batch of two. Same math (up to the rounding of larger
  matmuls), half the kernel launches.
* split (a group of two ranks, ``cfg = 2``): rank 0 runs the conditional pass, rank 1 the
  unconditional one, and one ``all_gather`` of the noise predictions gives both to both ranks, so
  every rank holds the same latents after the step. Each GPU runs half the transformer work.

The negative embeddings are learnt by wrapping the pipeline's ``encode_prompt``, so the denoising
loop itself is untouched. Imported only when a profile asks for either (it imports torch).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


class CfgPairs(torch.nn.Module):
    """Wraps one transformer; the original stays reachable (and counted) as ``inner``.

    Args:
        inner: the transformer.
        negative: the negative embeddings of the current call (None before/without them).
        split: run the pair split over the default torch.distributed group of two ranks (rank 0
            conditional, rank 1 unconditional) instead of as one batch.
    """

    def __init__(self, inner: torch.nn.Module, negative: Callable[[], torch.Tensor | None],
                 *, split: bool = False) -> None:
        super().__init__()
        self.inner = inner
        self._negative = negative
        self._split = split
        self._stash: tuple[Any, Any, torch.Tensor] | None = None

    def __getattr__(self, name: str) -> Any:
        # Pipelines read dtype, config, cache_context ... from their transformer.
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.inner, name)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The transformer call, batched with its unconditional twin when it is the first of two."""
        hidden = kwargs.get("hidden_states")
        timestep = kwargs.get("timestep")
        text = kwargs.get("encoder_hidden_states")
        negative = self._negative()
        stash, self._stash = self._stash, None
        if stash is not None and stash[0] is hidden and stash[1] is timestep and _same(text, negative):
            return _output(stash[2], kwargs)
        if (args or negative is None or hidden is None or text is None or _same(text, negative)
                or negative.shape != text.shape):
            return self.inner(*args, **kwargs)
        cond, uncond = (self._pair_split if self._split else self._pair_batched)(
            hidden, text, negative, kwargs)
        self._stash = (hidden, timestep, uncond)
        return _output(cond, kwargs)

    def _pair_batched(self, hidden: torch.Tensor, text: torch.Tensor, negative: torch.Tensor,
                      kwargs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        both: dict[str, Any] = {}
        for key, value in kwargs.items():
            if key == "encoder_hidden_states":
                both[key] = torch.cat([text, negative.to(text.dtype)])
            elif isinstance(value, torch.Tensor) and value.ndim and value.shape[0] == hidden.shape[0]:
                both[key] = torch.cat([value, value])  # latents, timesteps, image embeddings
            else:
                both[key] = value
        both["return_dict"] = False
        cond, uncond = self.inner(**both)[0].chunk(2)
        return cond, uncond

    def _pair_split(self, hidden: torch.Tensor, text: torch.Tensor, negative: torch.Tensor,
                    kwargs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        import torch.distributed as dist

        mine = text if dist.get_rank() == 0 else negative.to(text.dtype)
        sample = self.inner(**{**kwargs, "encoder_hidden_states": mine, "return_dict": False})[0]
        sample = sample.contiguous()
        halves = [torch.empty_like(sample) for _ in range(dist.get_world_size())]
        dist.all_gather(halves, sample)  # [conditional (rank 0), unconditional (rank 1)]
        return halves[0], halves[1]


def _output(sample: torch.Tensor, kwargs: dict[str, Any]) -> Any:
    if kwargs.get("return_dict", True):
        from diffusers.models.modeling_outputs import Transformer2DModelOutput

        return Transformer2DModelOutput(sample=sample)
    return (sample,)


def _same(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    return a is not None and b is not None and (
        a is b or (a.shape == b.shape and a.data_ptr() == b.data_ptr()))


def install_cfg_pairs(pipe: Any, *, split: bool = False) -> None:
    """Wrap the transformer(s) of a Wan pipeline in :class:`CfgPairs` (``split``: over the
    default torch.distributed group of two ranks, which must be up)."""
    state: dict[str, torch.Tensor | None] = {"negative": None}
    original = pipe.encode_prompt
    dtype = pipe.transformer.dtype

    def encode_prompt(*args: Any, **kwargs: Any) -> Any:
        positive, negative = original(*args, **kwargs)
        # The pipeline casts the embeddings to the transformer's dtype; casting here first makes
        # its cast a no-op that returns this very tensor, which the wrapper then recognises.
        if negative is not None:
            negative = negative.to(dtype)
        state["negative"] = negative
        return positive, negative

    pipe.encode_prompt = encode_prompt
    for name in ("transformer", "transformer_2"):
        module = getattr(pipe, name, None)
        if module is not None:
            # Plain attribute set: DiffusionPipeline.__setattr__ would rewrite its config.
            object.__setattr__(pipe, name,
                               CfgPairs(module, lambda: state["negative"], split=split))
