"""CFG batching: the conditional and unconditional transformer passes of a step as one batch.

Wan pipelines call the transformer twice per step, with the same latents and timestep objects and
different text embeddings; the unconditional result is needed only after both. On the first
(conditional) call :class:`CfgBatch` runs both passes batched and keeps the unconditional half;
the second call, recognised by its identical latents and timestep objects and the negative
embeddings, gets it back without a model run. Same math (up to the rounding of larger matmuls),
half the kernel launches. The negative embeddings are learnt by wrapping the pipeline's
``encode_prompt``, so the denoising loop itself is untouched.

Imported only when a profile sets ``cfg_batch = true`` (it imports torch).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


class CfgBatch(torch.nn.Module):
    """Wraps one transformer; the original stays reachable (and counted) as ``inner``."""

    def __init__(self, inner: torch.nn.Module, negative: Callable[[], torch.Tensor | None]) -> None:
        super().__init__()
        self.inner = inner
        self._negative = negative
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
        self._stash = (hidden, timestep, uncond)
        return _output(cond, kwargs)


def _output(sample: torch.Tensor, kwargs: dict[str, Any]) -> Any:
    if kwargs.get("return_dict", True):
        from diffusers.models.modeling_outputs import Transformer2DModelOutput

        return Transformer2DModelOutput(sample=sample)
    return (sample,)


def _same(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    return a is not None and b is not None and (
        a is b or (a.shape == b.shape and a.data_ptr() == b.data_ptr()))


def install_cfg_batch(pipe: Any) -> None:
    """Wrap the transformer(s) of a Wan pipeline in :class:`CfgBatch`."""
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
            object.__setattr__(pipe, name, CfgBatch(module, lambda: state["negative"]))
