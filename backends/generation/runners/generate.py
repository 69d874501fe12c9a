"""transformers' ``generate()`` as a runner: a token-ID streamer, a stop criterion, a forward pre-hook that captures the prompt IDs."""

from __future__ import annotations

from backends.core.errors import GenerationError, LlmTuiError, first_line
from backends.core.params import SamplingParams
from backends.generation.runners.base import Sink
from backends.generation.runners.loop import sampling_warpers
from backends.generation.runners.prefill import (
    CHUNK_FIRST,
    PrefillCapture,
    Stopped,
    prefill,
)
from backends.generation.runners.prompt_cache import PromptCache
from backends.hardware.devices import input_device
from backends.core.errors import is_out_of_memory
from backends.loading.forward_call import ForwardCall, split_output
from backends.prompt.view import PromptView


class GenerateRunner:
    """transformers' ``generate()`` with a token-ID streamer and a stop criterion.

    A long prompt is fed first as a chunked prefill into the model's own cache
    (``runners.prefill``: a stop is answered between chunks); ``generate()``
    then takes the cache and feeds only the prompt's last token. The cache a
    turn leaves is kept (``prompt_cache``): the next turn reads only what
    follows the prefix it shares with it.
    """

    def __init__(self, own_code: str | None = None, *, prompt_cache: bool = True) -> None:
        #: The label of a remote-code checkpoint run here (``--engine generate``): its failures
        #: inside generate() are its code's, and the message says so.
        self.own_code = own_code
        self.prompt_cache = PromptCache(prompt_cache)

    def release(self) -> None:
        self.prompt_cache.release()

    def run(self, model, view: PromptView, params: SamplingParams, sink: Sink) -> list[int]:
        try:
            return self._run(model, view, params, sink)
        except Exception as err:
            if self.own_code is None or isinstance(err, LlmTuiError) or is_out_of_memory(err):
                raise
            raise GenerationError(f"the code of '{self.own_code}' fails inside transformers' generate(): "
                                  f"{type(err).__name__}: {first_line(err)}",
                                  "use --engine auto: llm-tui's own decode loop runs it") from None

    def _run(self, model, view: PromptView, params: SamplingParams, sink: Sink) -> list[int]:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList
        from transformers.generation.streamers import BaseStreamer

        input_ids = torch.tensor([view.ids], dtype=torch.long, device=input_device(model))
        new_ids: list[int] = []

        class Stopper(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return torch.full((input_ids.shape[0],), sink.stopped, dtype=torch.bool, device=input_ids.device)

        config = generation_config(model, params, sink.stop_ids)
        seen = _Logits(model, sampling_warpers(params), changes_logits(config)) if sink.scorer is not None else None

        class TokenStreamer(BaseStreamer):
            prompt_seen = False

            def put(self, value):
                if not self.prompt_seen:  # generate() first hands over the prompt
                    self.prompt_seen = True
                    return
                for token in value.reshape(-1).tolist():
                    new_ids.append(int(token))
                    info = sink.scorer.info(seen.raw, seen.processed, int(token)) if seen is not None else None
                    sink.token(int(token), info)

            def end(self):
                pass

        kept, reused = self.prompt_cache.take(view.ids)
        sink.reused(reused, self.prompt_cache)
        capture = PrefillCapture(model, sink, known=view.ids[:reused])
        try:
            with torch.inference_mode():
                try:
                    cache = self._prefill(model, input_ids, sink, kept, reused)
                except Stopped as stop:  # what was read stays for the next turn
                    self.prompt_cache.keep(stop.cache, view.ids[:stop.fed])
                    return new_ids
                capture.expect(capture.seen + 1)  # and generate()'s first call, with the rest of the prompt
                carried = ({ForwardCall.for_model(model).cache_name or "past_key_values": cache}
                           if cache is not None else {})
                out = model.generate(
                    input_ids=input_ids, attention_mask=torch.ones_like(input_ids), **carried,
                    generation_config=config, return_dict_in_generate=True,
                    streamer=TokenStreamer(), stopping_criteria=StoppingCriteriaList([Stopper()]),
                    **({"logits_processor": seen.processor()} if seen is not None else {}),
                )
                # The cache now holds the prompt and every new token but the last (never fed back).
                left = getattr(out, "past_key_values", None)
                self.prompt_cache.keep(left if left is not None else cache, [*view.ids, *new_ids[:-1]])
        finally:
            capture.finish()
            if seen is not None:
                seen.remove()
        return new_ids

    @staticmethod
    def _prefill(model, input_ids, sink: Sink, cache=None, start: int = 0):
        """All but the prompt's last token, in chunks, into a cache ``generate()`` continues from
        (``cache`` already holds the first ``start``); None for a short prompt, or a model whose
        forward keeps no cache of transformers' kind."""
        from transformers import Cache

        if cache is None and input_ids.shape[1] <= CHUNK_FIRST:
            return None  # it takes a moment: one call
        call = ForwardCall.for_model(model)

        class NoCache(Exception):
            pass

        def forward(ids, cache, start):
            logits, cache = split_output(call(model, ids, cache, start))
            if not isinstance(cache, Cache):
                raise NoCache()  # a remote-code model's own cache: generate() prefills it in one call
            return logits, cache

        try:
            _, cache, _ = prefill(forward, input_ids, sink, keep_last=1, cache=cache, start=start)
        except NoCache:
            return None
        return cache


class _Logits:
    """What generate() computed for the token being chosen: the model's raw logits (a forward hook)
    and the scores it sampled from. A custom logits processor runs after transformers' own processors
    but before its sampling warpers, so it applies those warpers (the same classes, the same values)."""

    def __init__(self, model, warpers, changes: bool) -> None:
        self.raw = None
        self.processed = None
        self.warpers = warpers
        self.changes = changes  # False: nothing alters the logits (greedy, no penalties), processed stays None
        self._hook = model.register_forward_hook(self._forward)

    def _forward(self, _module, _args, output) -> None:
        logits = split_output(output)[0]
        self.raw = logits[0, -1]

    def processor(self):
        from transformers import LogitsProcessor, LogitsProcessorList

        seen = self

        class Last(LogitsProcessor):
            def __call__(self, input_ids, scores):
                if seen.changes:
                    seen.processed = seen.warpers(input_ids, scores)[0] if seen.warpers else scores[0]
                return scores

        return LogitsProcessorList([Last()])

    def remove(self) -> None:
        self._hook.remove()


def changes_logits(config) -> bool:
    """Whether generate() with ``config`` samples from anything but the model's raw logits."""
    return bool(config.do_sample or (config.repetition_penalty or 1.0) != 1.0 or config.suppress_tokens
                or config.begin_suppress_tokens or config.no_repeat_ngram_size or config.bad_words_ids
                or config.sequence_bias)


def generation_config(model, params: SamplingParams, stop_ids: list[int]):
    """The model's own generation config with the turn's sampling parameters applied."""
    from transformers import GenerationConfig

    config = GenerationConfig.from_dict(model.generation_config.to_dict())
    config.max_new_tokens = params.max_new_tokens
    config.max_length = None
    config.eos_token_id = stop_ids or None
    if config.pad_token_id is None:
        config.pad_token_id = (stop_ids or [0])[0]
    config.repetition_penalty = params.repetition_penalty
    if params.greedy:
        config.do_sample = False
        config.temperature = config.top_p = config.top_k = None
    else:
        config.do_sample = True
        config.temperature = params.temperature
        config.top_p = params.top_p
        config.top_k = params.top_k
    return config
