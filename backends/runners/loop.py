"""A plain decode loop over the model's forward: no transformers generation code.

Remote-code checkpoints (Qwen v1, ChatGLM3, Baichuan2) were written for the
``generate()`` of their day; today's ``generate()`` hands them cache objects
and calls helpers they do not have. This loop only calls ``model(...)``:
the first call gets the whole prompt, every later call gets the one token
just chosen plus whatever cache object the previous call returned (a tuple
of tuples for the vendor models, a ``Cache`` for transformers-native ones),
passed back untouched. A model that returns no cache gets the whole
sequence again at every step.

Sampling uses transformers' public logits processors (repetition penalty,
the generation config's suppressed tokens, temperature, top-k, top-p) and
``torch.multinomial``; temperature 0 is greedy (argmax). The stop flag is
checked before every forward call, so a turn stops between any two tokens.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

from ..errors import GenerationError
from ..params import SamplingParams
from ..prompt import PromptView

#: Names a forward may give its cache argument, most common first.
_CACHE_NAMES = ("past_key_values", "past", "past_key_value", "kv_caches", "layer_past")


@dataclass(frozen=True)
class ForwardCall:
    """How to call one model's forward, read from its signature once."""

    ids_name: str | None  # None: pass the input IDs positionally
    cache_name: str | None
    positions: bool
    use_cache: bool
    return_dict: bool

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
        return cls(ids_name=ids_name, cache_name=cache_name, positions="position_ids" in names,
                   use_cache="use_cache" in names or open_kwargs,
                   return_dict="return_dict" in names or open_kwargs)

    def __call__(self, model, ids, cache, start: int):
        import torch

        kwargs: dict = {}
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
        return logits, getattr(output, "past_key_values", None)
    if isinstance(output, (tuple, list)) and output:
        return output[0], (output[1] if len(output) > 1 else None)
    raise GenerationError(f"the model's forward returned {type(output).__name__}, not logits",
                          "this checkpoint cannot run in the decode loop: try --engine generate")


def logits_processors(model, params: SamplingParams):
    """transformers' public processors and warpers for one turn's sampling parameters."""
    from transformers import (LogitsProcessorList, RepetitionPenaltyLogitsProcessor, SuppressTokensLogitsProcessor,
                              TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper)

    processors = LogitsProcessorList()
    if params.repetition_penalty != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(params.repetition_penalty))
    suppress = getattr(getattr(model, "generation_config", None), "suppress_tokens", None)
    if suppress:
        processors.append(_suppress(SuppressTokensLogitsProcessor, list(suppress)))
    if not params.greedy:
        if params.temperature != 1.0:
            processors.append(TemperatureLogitsWarper(params.temperature))
        if params.top_k:
            processors.append(TopKLogitsWarper(params.top_k))
        if params.top_p < 1.0:
            processors.append(TopPLogitsWarper(params.top_p))
    return processors


def _suppress(cls, tokens: list[int]):
    try:
        return cls(tokens)
    except TypeError:  # newer transformers also want the device
        return cls(tokens, device="cpu")


def choose(scores, greedy: bool):
    import torch

    if greedy:
        return torch.argmax(scores, dim=-1)
    probs = torch.softmax(scores, dim=-1)
    return torch.multinomial(probs, num_samples=1).squeeze(1)


def capture_first_forward(model, sink):
    """A forward pre-hook that hands the first call's input IDs to ``sink.capture`` (then removes itself)."""

    def capture(_module, args, kwargs):
        ids = kwargs.get("input_ids")
        if ids is None and args:
            ids = args[0]
        if ids is not None and hasattr(ids, "tolist"):
            sink.capture(ids[0].tolist() if ids.dim() > 1 else ids.tolist())
        hook.remove()

    hook = model.register_forward_pre_hook(capture, with_kwargs=True)
    return hook


class LoopRunner:
    """Token-by-token decoding over ``model(...)``, reporting to a ``TurnSink``."""

    name = "loop"

    def run(self, model, view: PromptView, params: SamplingParams, sink) -> list[int]:
        import torch

        device = input_device(model)
        call = ForwardCall.for_model(model)
        processors = logits_processors(model, params)
        stop_ids = set(sink.stop_ids)
        sequence = torch.tensor([view.ids], dtype=torch.long, device=device)
        step_ids = sequence
        cache = None
        fed = 0
        new_ids: list[int] = []
        hook = capture_first_forward(model, sink)
        try:
            with torch.inference_mode():
                while len(new_ids) < params.max_new_tokens and not sink.stopped:
                    logits, cache = split_output(call(model, step_ids, cache, fed))
                    fed += step_ids.shape[1]
                    scores = logits[:, -1, :].float()
                    if torch.isnan(scores).any() or torch.isposinf(scores).any():
                        raise GenerationError("the model produced NaN/inf logits",
                                              "the weights or the model's computed buffers are broken; "
                                              "try --dtype fp32 or re-convert the checkpoint")
                    scores = processors(sequence, scores)
                    token = choose(scores, params.greedy)
                    token_id = int(token[0])
                    new_ids.append(token_id)
                    sink.token(token_id)
                    if token_id in stop_ids:
                        break
                    sequence = torch.cat([sequence, token.reshape(1, 1).to(device)], dim=-1)
                    if cache is None:  # no cache came back: the next call sees the whole sequence again
                        step_ids, fed = sequence, 0
                    else:
                        step_ids = sequence[:, -1:]
        finally:
            hook.remove()
        return new_ids


def input_device(model):
    try:
        return model.get_input_embeddings().weight.device
    except Exception:
        try:
            return next(model.parameters()).device
        except StopIteration:
            import torch

            return torch.device("cpu")
