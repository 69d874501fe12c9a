"""A plain decode loop over the model's forward: the runner for remote-code checkpoints.

Remote-code checkpoints often break transformers' ``generate()``; their forward
still runs. The loop samples with transformers' logits processors and checks
the stop flag between any two tokens."""

from __future__ import annotations

from backends.core.errors import GenerationError
from backends.core.params import SamplingParams
from backends.generation.runners.base import Sink
from backends.generation.runners.prefill import PrefillCapture, Stopped, prefill
from backends.generation.runners.prompt_cache import PromptCache
from backends.hardware.devices import input_device
from backends.loading.forward_call import (
    ForwardCall,
    split_output,
)
from backends.prompt.view import PromptView


def logits_processors(model, params: SamplingParams):
    """transformers' public processors and warpers for one turn's sampling parameters."""
    from transformers import (
        LogitsProcessorList,
        RepetitionPenaltyLogitsProcessor,
        SuppressTokensLogitsProcessor,
    )

    processors = LogitsProcessorList()
    if params.repetition_penalty != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(params.repetition_penalty))
    suppress = getattr(getattr(model, "generation_config", None), "suppress_tokens", None)
    if suppress:
        processors.append(_suppress(SuppressTokensLogitsProcessor, list(suppress)))
    processors.extend(sampling_warpers(params))
    return processors


def sampling_warpers(params: SamplingParams):
    """The warpers sampling applies last, in transformers' order: temperature, top-k, top-p."""
    from transformers import (
        LogitsProcessorList,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    warpers = LogitsProcessorList()
    if not params.greedy:
        if params.temperature != 1.0:
            warpers.append(TemperatureLogitsWarper(params.temperature))
        if params.top_k:
            warpers.append(TopKLogitsWarper(params.top_k))
        if params.top_p < 1.0:
            warpers.append(TopPLogitsWarper(params.top_p))
    return warpers


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


class LoopRunner:
    """Token-by-token decoding over ``model(...)``, reporting to a ``Sink``.

    The prompt goes in as a chunked prefill (``generation.prefill``), so a stop
    is answered between chunks; then one token per forward call. The cache a
    turn leaves is kept when it is transformers' kind (``prompt_cache``); a
    vendor's own tuple cache is not, and such a model reads each turn whole.
    """

    name = "loop"

    def __init__(self, *, prompt_cache: bool = True) -> None:
        self.prompt_cache = PromptCache(prompt_cache)

    def release(self) -> None:
        self.prompt_cache.release()

    def run(self, model, view: PromptView, params: SamplingParams, sink: Sink) -> list[int]:
        import torch

        device = input_device(model)
        call = ForwardCall.for_model(model)

        def forward(ids, cache, start):
            return split_output(call(model, ids, cache, start))

        processors = logits_processors(model, params)
        stop_ids = set(sink.stop_ids)
        sequence = torch.tensor([view.ids], dtype=torch.long, device=device)
        new_ids: list[int] = []
        kept, reused = self.prompt_cache.take(view.ids)
        sink.reused(reused, self.prompt_cache)
        capture = PrefillCapture(model, sink, known=view.ids[:reused])
        with torch.inference_mode():
            try:
                # The cache holds all but the last token: read it now, for the first new token's logits.
                logits, cache, fed = prefill(forward, sequence, sink, cache=kept, start=reused)
            except Stopped as stop:  # what was read stays for the next turn
                self.prompt_cache.keep(stop.cache, view.ids[:stop.fed])
                return new_ids
            finally:
                capture.finish()
            while len(new_ids) < params.max_new_tokens and not sink.stopped:
                scores = logits[:, -1, :].float()
                if torch.isnan(scores).any() or torch.isposinf(scores).any():
                    raise GenerationError("the model produced NaN/inf logits",
                                          "the weights or the model's computed buffers are broken; "
                                          "try --dtype fp32 or re-convert the checkpoint")
                processed = processors(sequence, scores)
                token = choose(processed, params.greedy)
                token_id = int(token[0])
                new_ids.append(token_id)
                info = (sink.scorer.info(logits[0, -1], processed[0] if processors else None, token_id)
                        if sink.scorer is not None else None)
                sink.token(token_id, info)
                if token_id in stop_ids or len(new_ids) >= params.max_new_tokens or sink.stopped:
                    break
                sequence = torch.cat([sequence, token.reshape(1, 1).to(device)], dim=-1)
                if cache is None:  # no cache came back: the next call sees the whole sequence again
                    logits, cache = forward(sequence, None, 0)
                else:
                    logits, cache = forward(sequence[:, -1:], cache, fed)
                fed = sequence.shape[1]
        # The cache holds what was fed: the prompt and the new tokens fed back (all but the last, mostly).
        self.prompt_cache.keep(cache, [*view.ids, *new_ids][:fed])
        return new_ids
