"""Calling a model's forward with a KV cache whatever its code calls the cache argument, and reading its outputs."""

from __future__ import annotations

import inspect
from dataclasses import dataclass

from backends.core.errors import GenerationError

#: Names a forward may give its cache argument, most common first.
_CACHE_NAMES = ("cache", "past_key_values", "past", "past_key_value", "kv_caches", "layer_past")


@dataclass(frozen=True)
class ForwardCall:
    """How to call one model's forward, read from its signature once."""

    ids_name: str | None  # None: pass the input IDs positionally
    cache_name: str | None
    positions: bool
    use_cache: bool
    return_dict: bool
    keep_name: str | None = None  # "logits_to_keep" where the forward can return the last position's logits only

    @classmethod
    def for_model(cls, model) -> "ForwardCall":
        try:
            params = inspect.signature(model.forward).parameters
        except (TypeError, ValueError):
            params = {}
        names = set(params)
        open_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        ids_name = "input_ids" if "input_ids" in names else None
        cache_name = next((n for n in _CACHE_NAMES if n in names), None)
        if cache_name is None and open_kwargs:
            cache_name = "past_key_values"
        keep_name = next((n for n in ("logits_to_keep", "num_logits_to_keep") if n in names), None)
        return cls(ids_name=ids_name, cache_name=cache_name, positions="position_ids" in names,
                   use_cache="use_cache" in names or open_kwargs,
                   return_dict="return_dict" in names or open_kwargs, keep_name=keep_name)

    def __call__(self, model, ids, cache, start: int, *, every_position: bool = False):
        """Logits for ``ids`` after ``start`` tokens held in ``cache``: the last position's only where
        the forward can skip the others (a prefill chunk's full logits would dwarf its cache), or
        ``every_position``'s (scoring a prompt)."""
        import torch

        kwargs: dict = {}
        if self.keep_name is not None and not every_position:
            kwargs[self.keep_name] = 1
        if self.cache_name is not None and cache is not None:
            kwargs[self.cache_name] = cache
        if self.use_cache:
            kwargs["use_cache"] = True
        if self.return_dict:
            kwargs["return_dict"] = True
        if self.positions:
            kwargs["position_ids"] = torch.arange(start, start + ids.shape[1], device=ids.device).unsqueeze(0)
        if self.ids_name is None:
            return model(ids, **kwargs)
        return model(**{self.ids_name: ids}, **kwargs)


def split_output(output) -> tuple:
    """(logits, cache) from a model output object or the tuple a vendor forward returns."""
    logits = getattr(output, "logits", None)
    if logits is not None:
        cache = getattr(output, "cache", None)  # transformers 5.25 renamed past_key_values
        return logits, cache if cache is not None else getattr(output, "past_key_values", None)
    if isinstance(output, (tuple, list)) and output:
        return output[0], (output[1] if len(output) > 1 else None)
    raise GenerationError(f"the model's forward returned {type(output).__name__}, not logits",
                          "this checkpoint cannot run in the decode loop: try --engine generate")
