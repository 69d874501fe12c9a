"""llama.cpp as a runner: the GGUF as it is, token IDs in and out, stop between any two tokens.

The previewed IDs are evaluated as they are: a chunked prefill through
``Llama.eval`` (a stop is answered between chunks), then llama.cpp's own
sampler token by token. The IDs captured are the ones llama.cpp holds as
evaluated, read back from it.

Every turn of a model runs on one thread of its own. llama.cpp's CPU backend
parallelises with OpenMP, whose worker team belongs to the thread that calls
it: a new calling thread each turn gets a new team while the last one's idle
workers still spin, and on this 2-core machine that halved decode speed (72
against 126 tok/s, ``benchmarks/engines.py``).

llama.cpp keeps its KV cache between evaluations, with the IDs it holds
(``input_ids[:n_tokens]``): a turn cuts it back to the prefix the new prompt
shares with it and evaluates only the rest (``LlamaCppCache``).
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor

from backends.core.events import Alternative, TokenInfo
from backends.core.params import SamplingParams
from backends.core.sequences import common_prefix
from backends.generation.runners.base import Sink
from backends.generation.runners.prefill import ChunkSizer, Stopped
from backends.prompt.view import PromptView


class LlamaCppCache:
    """What llama.cpp holds between turns, seen as a prompt cache (the ``PromptCache`` surface the
    handle and the meter read). Its memory is llama.cpp's context, allocated once at load: keeping
    it costs nothing more, so ``nbytes`` is 0."""

    nbytes = 0
    device = "cpu"

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.why_not: str | None = None
        self.llm = None
        self._dropped = False  # ``release`` was asked for: the next turn starts from nothing

    @property
    def cache(self):
        return self.llm if self.tokens else None

    @property
    def tokens(self) -> int:
        if self.llm is None or not self.enabled or self._dropped:
            return 0
        return int(self.llm.n_tokens)

    def take(self, llm, prompt: list[int]) -> int:
        """Cut llama.cpp's cache to the prefix ``prompt`` shares with it (leaving its last token to
        evaluate); returns that prefix's length, 0 after a reset."""
        self.llm = llm
        dropped, self._dropped = self._dropped, False
        held = llm.input_ids[:llm.n_tokens].tolist() if self.enabled and llm.n_tokens and not dropped else []
        reuse = min(common_prefix(held, prompt), len(prompt) - 1)
        remove = getattr(getattr(llm, "_ctx", None), "kv_cache_seq_rm", None)
        if reuse > 0 and remove is not None and remove(-1, reuse, -1) is not False:
            llm.n_tokens = reuse
            return reuse
        if reuse > 0:
            self.why_not = "this model's llama.cpp memory cannot be cut to a prefix"
        llm.reset()
        return 0

    def release(self) -> int:
        """Forget what llama.cpp holds; done by the next turn, on the model's own thread (llama.cpp is
        not touched from another one)."""
        self._dropped = True
        return 0


class LlamaCppRunner:
    name = "llamacpp"
    device = "cpu"  # its memory is this process's (RSS), wherever its layers run

    def __init__(self, *, prompt_cache: bool = True) -> None:
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llm-tui-llamacpp")
        self.prompt_cache = LlamaCppCache(prompt_cache)

    def run(self, llm, view: PromptView, params: SamplingParams, sink: Sink) -> list[int]:
        """The turn, on the model's own thread (the caller waits for it)."""
        return self._thread.submit(self._run, llm, view, params, sink).result()

    def _run(self, llm, view: PromptView, params: SamplingParams, sink: Sink) -> list[int]:
        ids = list(view.ids)
        stop_ids = set(sink.stop_ids) | {llm.token_eos()}
        reused = self.prompt_cache.take(llm, ids)
        sink.reused(reused, self.prompt_cache)
        try:
            self._prefill(llm, ids[reused:-1], sink)
        except Stopped:
            sink.capture(list(llm.input_ids[:llm.n_tokens]))
            return []
        if params.seed is not None:
            llm.set_seed(params.seed)
        new_ids: list[int] = []
        tokens = llm.generate(ids[-1:], reset=False, temp=0.0 if params.greedy else params.temperature,
                              top_k=params.top_k or 0, top_p=params.top_p, min_p=0.0,
                              repeat_penalty=params.repetition_penalty)
        try:
            for token in tokens:
                if not new_ids:  # the whole prompt is evaluated now: read back what llama.cpp holds
                    sink.capture(list(llm.input_ids[:len(ids)]))
                new_ids.append(int(token))
                sink.token(int(token), self._info(llm, int(token), sink.scorer) if sink.scorer is not None else None)
                if token in stop_ids or len(new_ids) >= params.max_new_tokens or sink.stopped:
                    break
        finally:
            tokens.close()
        return new_ids

    @staticmethod
    def _info(llm, token: int, scorer) -> TokenInfo:
        """The token's figures from the logits llama.cpp sampled it from (the model's own: llama.cpp's
        sampler chain works on a copy, so the distribution it drew from is not known here).

        Read in place from llama.cpp's buffer: one exp pass gives log Z and, with one dot product,
        the entropy; the top K come from a partition, and the rank is free when the token is in them."""
        import llama_cpp
        import numpy as np

        raw = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),))
        top = float(raw.max())
        weights = np.exp(raw - top)
        total = float(weights.sum())
        log_z = top + math.log(total)
        entropy = log_z - float(np.dot(weights, raw)) / total
        best = np.argpartition(raw, -scorer.k)[-scorer.k:]
        best = best[np.argsort(-raw[best])]
        chosen = float(raw[token]) - log_z
        ids = [int(i) for i in best]
        rank = ids.index(token) + 1 if token in ids else int((raw > raw[token]).sum()) + 1
        alternatives = tuple(Alternative(i, scorer.piece_of(i), float(raw[i]) - log_z) for i in ids)
        return TokenInfo(chosen, None, rank, entropy, alternatives)

    @staticmethod
    def _prefill(llm, ids: list[int], sink: Sink) -> None:
        """Evaluate ``ids`` in chunks, checking the stop flag between them."""
        sizer = ChunkSizer()
        fed = 0
        while fed < len(ids):
            if sink.stopped:
                raise Stopped()
            chunk = ids[fed:fed + sizer.size]
            started = time.perf_counter()
            llm.eval(chunk)
            sizer.took(len(chunk), time.perf_counter() - started)
            fed += len(chunk)

    def release(self) -> None:
        self.prompt_cache.llm = None
        self._thread.shutdown(wait=False)
