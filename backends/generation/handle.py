"""ModelHandle: one loaded model; render a conversation, stream a reply in a background thread, stop it, unload it."""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace

from backends.core.errors import UsageError, error_line, is_out_of_memory
from backends.core.events import TokenEvent
from backends.core.params import SamplingParams
from backends.core.spec import ModelSpec
from backends.generation.runners.generate import GenerateRunner
from backends.generation.runners.logprobs import scorer_for
from backends.generation.score import PromptScore, score_ids
from backends.generation.sink import TurnSink
from backends.generation.stream import Generation
from backends.generation.tool_support import NATIVE_NO_TOOLS
from backends.hardware.devices import input_device
from backends.hardware.release import release_memory
from backends.prompt.families.base import PromptFamily, token_pieces
from backends.prompt.textstream import IncrementalDecoder
from backends.prompt.truncation import render_within
from backends.prompt.view import PromptView, Span


@dataclass(frozen=True)
class ModelInfo:
    label: str
    family: str
    dtype: str
    quant: str
    device: str
    max_context: int | None
    parameters: int
    footprint_bytes: int
    path: str


class ModelHandle:
    """One model ready to answer: its tokenizer-side family, and its weights in this process or a
    client of the server that holds them (``model``; ``info`` then comes from the opener)."""

    def __init__(self, model, tokenizer, family: PromptFamily, spec: ModelSpec, *,
                 device: str = "cpu", dtype: str = "float32", path: str = "", runner=None,
                 quant: str | None = None, info: ModelInfo | None = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.family = family
        self.spec = spec
        self._lock = threading.Lock()  # one turn at a time per model
        #: How tokens are produced: transformers' generate() by default; remote-code
        #: checkpoints get a plain decode loop or their own streaming method.
        self.runner = runner or GenerateRunner()
        self._current: Generation | None = None
        #: A torch model in this process (not a server's, not llama.cpp's): memory estimates,
        #: KV projections and profiles apply to it.
        self.torch = hasattr(model, "parameters")
        if info is not None:
            self.info = info
            return
        config = getattr(model, "config", None)
        params = sum(p.numel() for p in model.parameters()) if model is not None else 0
        footprint = model.get_memory_footprint() if hasattr(model, "get_memory_footprint") else 0
        self.info = ModelInfo(
            label=spec.label,
            family=family.name,
            dtype=dtype,
            quant=quant or spec.quant,
            device=device,
            max_context=getattr(family, "max_context", None) or getattr(config, "max_position_embeddings", None),
            parameters=params,
            footprint_bytes=footprint,
            path=path,
        )

    # -- prompt --------------------------------------------------------------
    def render(self, messages: list[dict], *, add_generation_prompt: bool = True,
               max_new_tokens: int | None = None, max_prompt_tokens: int | None = None,
               cancel: threading.Event | None = None, tools: list[dict] | None = None) -> PromptView:
        """The exact prompt for ``messages``; with ``max_prompt_tokens``, cut to that many
        tokens by the family's truncation (``backends.truncation``). Once ``cancel`` is set the
        render stops at its next check with ``RenderCancelled`` (a preview typing has replaced).
        ``tools`` (OpenAI function schemas) are put where the family's format puts them."""
        return render_within(self.family, messages, max_prompt_tokens, add_generation_prompt=add_generation_prompt,
                             max_new_tokens=max_new_tokens, cancel=cancel, tools=tools)

    # -- generation ----------------------------------------------------------
    def stream(self, messages: list[dict], params: SamplingParams | None = None,
               stop_event: threading.Event | None = None, *, prefix: list[TokenEvent] | None = None,
               tools: list[dict] | None = None) -> Generation:
        """Answer ``messages`` in a background thread. With ``prefix`` (tokens a reply already has: a
        branch taken from an alternative token), the reply goes on from those exact IDs: they are
        appended to the prompt as IDs, never re-tokenised, and come first in the stream. ``tools``
        (OpenAI function schemas) are in the prompt as the family's format puts them."""
        params = (params or SamplingParams()).validate()
        if tools and getattr(self.runner, "name", "") == "native":
            raise UsageError(*NATIVE_NO_TOOLS)
        view = self.render(messages, max_new_tokens=params.max_new_tokens, max_prompt_tokens=params.max_prompt_tokens,
                           tools=tools)
        if prefix:
            view = self._continued(view, prefix)
        generation = Generation(view, stop_event or threading.Event())
        device = input_device(self.model) if self.torch else getattr(self.runner, "device", None)
        sink = TurnSink(generation.emit, self.family.decode, list(view.stop_ids) or list(self.family.stop_ids()),
                        generation.stop_event, device, list(view.ids))
        sink.scorer = scorer_for(self.family, params.top_logprobs)
        sink.stop_texts = list(view.stop_texts)
        for token in prefix or ():
            sink.given(token)
        generation.follow_text(lambda: sink.reply)
        self._current = generation
        thread = threading.Thread(target=self._run, args=(generation, sink, params),
                                  name="llm-tui-generate", daemon=True)
        generation.thread = thread
        thread.start()
        return generation

    def prefill_tokens(self, text: str) -> list[TokenEvent]:
        """``text`` as the first tokens of a reply (``run --prefill``), in this model's own tokenization;
        each token's text is what it adds to the decoded whole, so the pieces join to ``text``."""
        # The checkpoint's tokenizer, else the prompt family's own (Qwen v1's, rebuilt without its code).
        encode = getattr(self.tokenizer, "encode", None) or getattr(getattr(self.family, "tokenizer", None),
                                                                    "encode", None)
        if encode is None:
            raise UsageError(f"starting a reply from text needs a local tokenizer; {self.info.label} has none here",
                             "use a checkpoint folder or a GGUF with transformers (--engine generate)")
        try:
            ids = list(encode(text, add_special_tokens=False))
        except TypeError:  # a vendor tokenizer without that argument adds no special tokens anyway
            ids = list(encode(text))
        decoder = IncrementalDecoder(self.family.decode)  # as a reply's own tokens become text
        return [TokenEvent(i, decoder.push(i), 0.0) for i in ids]

    # -- the prompt cache ------------------------------------------------------
    @property
    def prompt_cache(self):
        """The runner's ``PromptCache`` (the KV cache kept between turns), or None for an engine
        that keeps none here (a server keeps its own)."""
        return getattr(self.runner, "prompt_cache", None)

    def release_cache(self) -> int:
        """Drop the kept KV cache and give its memory back; returns the bytes it held. A turn in
        progress holds the cache itself: what it leaves is not kept either."""
        cache = self.prompt_cache
        if cache is None:
            return 0
        freed = cache.release()
        if freed:
            release_memory()
        return freed

    def score(self, ids: list[int], stop: threading.Event | None = None) -> PromptScore:
        """How the model reads a prompt: each token's log-probability given those before it."""
        if not self.torch:
            raise UsageError(f"scoring a prompt needs the model's logits at every position; {self.info.label} "
                             f"runs on {self.info.device}", "score with a transformers model (--engine generate)")
        cache = self.prompt_cache
        with self._lock:  # one forward at a time on a model
            if cache is not None:
                cache.take([])  # what it held is replaced by what the scoring builds
            return score_ids(self.model, ids, stop, leave=cache.keep if cache is not None else None)

    def _continued(self, view: PromptView, prefix: list[TokenEvent]) -> PromptView:
        """The prompt with a reply's first tokens after it, as IDs: what a branch goes on from."""
        if not getattr(self.runner, "takes_ids", True):
            raise UsageError("a branch goes on from token IDs, and this server takes chat messages only",
                             "branch on a model in this process, or on vLLM or llama-server")
        if any(t.id is None for t in prefix):
            raise UsageError("this reply's tokens have no IDs to go on from", "regenerate it (Ctrl+R) instead")
        ids = [int(t.id) for t in prefix]
        pieces = token_pieces(self.family, ids)
        start = len(view.ids)
        return replace(view, text=view.text + "".join(t.text for t in prefix), ids=[*view.ids, *ids],
                       pieces=[*view.pieces, *pieces], special=[*view.special, *([False] * len(ids))],
                       spans=[*view.spans, Span(-1, "reply so far", start, start + len(ids))])

    def _run(self, generation: Generation, sink: TurnSink, params: SamplingParams) -> None:
        with self._lock:
            try:
                if params.seed is not None and self.torch:  # other engines take the seed themselves
                    import torch

                    torch.manual_seed(params.seed)
                sink.begin()
                new_ids = self.runner.run(self.model, generation.view, params, sink)
                done = sink.finish(new_ids)
            except BaseException as err:  # the thread must always end with a DoneEvent
                if is_out_of_memory(err):
                    release_memory(err)  # frees the KV cache still held by the traceback's frames
                done = sink.failed(error_line(err, "generation"))
            generation.finish(done)

    def unload(self, wait: float = 30.0) -> bool:
        """Drop the weights and give their memory back; True when that is done.

        A turn still generating is asked to stop, and whatever holds the model (that turn, a
        profile step, a scoring) is given ``wait`` seconds to let go. Weights a thread still
        uses are never freed under it: if it has not let go by then, a thread of its own frees
        them once it does, and this returns False.
        """
        running = self._current
        if running is not None and running.thread is not None and running.thread.is_alive():
            running.stop()  # a turn still generating would keep the weights alive
        if self._lock.acquire(timeout=wait):
            try:
                self._release()
            finally:
                self._lock.release()
            return True
        threading.Thread(target=self._release_when_free, name="llm-tui-release", daemon=True).start()
        return False

    def _release_when_free(self) -> None:
        with self._lock:
            self._release()

    def _release(self) -> None:
        release = getattr(self.runner, "release", None)
        if release is not None:  # e.g. a cache a native runner keeps between turns, a server's connection
            release()
        self.model = None
        self.tokenizer = None
        release_memory()

