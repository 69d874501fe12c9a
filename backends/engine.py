"""ModelHandle: render a conversation, stream a reply in a background thread, stop it.

``stream()`` starts a ``threading.Thread`` that runs the model and returns a
:class:`Generation`, an iterator of typed events (``TokenEvent`` … then one
``DoneEvent``). A ``threading.Event`` checked between any two tokens stops it.
A forward pre-hook records the input IDs the model's first forward call of the
turn really received; those captured IDs are the ground truth the inspector
compares its preview against.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from typing import Iterator

from .events import DoneEvent, Event, Stats, TokenEvent
from .families.base import PromptFamily
from .params import SamplingParams
from .prompt import PromptView
from .spec import ModelSpec
from .textstream import IncrementalDecoder
from .truncation import render_within

_END = object()


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


class Generation:
    """A running turn. Iterate it for events; ``stop()`` ends it between two tokens."""

    def __init__(self, view: PromptView, stop_event: threading.Event) -> None:
        self.view = view
        self.stop_event = stop_event
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self.thread: threading.Thread | None = None
        self.done: DoneEvent | None = None

    def stop(self) -> None:
        self.stop_event.set()

    def _emit(self, event: Event) -> None:
        self._queue.put(event)

    def _finish(self, done: DoneEvent) -> None:
        self.done = done
        self._queue.put(done)
        self._queue.put(_END)

    def __iter__(self) -> Iterator[Event]:
        while True:
            item = self._queue.get()
            if item is _END:
                return
            yield item

    def drain(self, timeout: float) -> list[Event]:
        """Wait up to ``timeout`` s for one event, then take all that are ready.

        Returns [] on timeout; the list ends with the DoneEvent when the turn is over.
        """
        items: list[Event] = []
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            return items
        while True:
            if item is _END:
                self._queue.put(_END)  # keep the end visible to later calls
                return items
            items.append(item)
            if isinstance(item, DoneEvent):
                return items
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return items

    def join(self, timeout: float | None = None) -> None:
        if self.thread is not None:
            self.thread.join(timeout)


class ModelHandle:
    """One loaded model: its tokenizer-side family and its weights."""

    def __init__(self, model, tokenizer, family: PromptFamily, spec: ModelSpec, *,
                 device: str = "cpu", dtype: str = "float32", path: str = "", runner=None,
                 quant: str | None = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.family = family
        self.spec = spec
        self._lock = threading.Lock()  # one turn at a time per model
        #: How tokens are produced: transformers' generate() by default; remote-code
        #: checkpoints get a plain decode loop or their own streaming method.
        self.runner = runner or GenerateRunner()
        self._current: Generation | None = None
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
               max_new_tokens: int | None = None, max_prompt_tokens: int | None = None) -> PromptView:
        """The exact prompt for ``messages``; with ``max_prompt_tokens``, cut to that many
        tokens by the family's truncation (``backends.truncation``)."""
        return render_within(self.family, messages, max_prompt_tokens, add_generation_prompt=add_generation_prompt,
                             max_new_tokens=max_new_tokens)

    # -- generation ----------------------------------------------------------
    def stream(self, messages: list[dict], params: SamplingParams | None = None,
               stop_event: threading.Event | None = None) -> Generation:
        params = (params or SamplingParams()).validate()
        view = self.render(messages, max_new_tokens=params.max_new_tokens, max_prompt_tokens=params.max_prompt_tokens)
        generation = Generation(view, stop_event or threading.Event())
        self._current = generation
        thread = threading.Thread(target=self._run, args=(generation, params),
                                  name="llm-tui-generate", daemon=True)
        generation.thread = thread
        thread.start()
        return generation

    def _run(self, generation: Generation, params: SamplingParams) -> None:
        with self._lock:
            try:
                self._generate(generation, params)
            except BaseException as err:  # the thread must always end with a DoneEvent
                generation._finish(_error_done(generation, err))

    def _generate(self, generation: Generation, params: SamplingParams) -> None:
        view = generation.view
        stop_ids = list(view.stop_ids) or list(self.family.stop_ids())
        sink = TurnSink(generation, self.family.decode, stop_ids, _input_device(self.model))
        if params.seed is not None:
            import torch

            torch.manual_seed(params.seed)
        sink.begin()
        new_ids = self.runner.run(self.model, view, params, sink)
        generation.view.captured = list(sink.captured)
        generation._finish(sink.finish(new_ids))

    def unload(self) -> None:
        """Drop the weights and give their memory back."""
        from .loader import release_memory

        running = self._current
        if running is not None and running.thread is not None and running.thread.is_alive():
            running.stop()  # a turn still generating would keep the weights alive
            running.join(30)
        if self._lock.acquire(timeout=30):  # a profile step in progress ends first (it was asked to stop)
            self._lock.release()
        release = getattr(self.runner, "release", None)
        if release is not None:  # e.g. a cache a native runner keeps between turns
            release()
        self.model = None
        self.tokenizer = None
        release_memory()


class TurnSink:
    """What a runner reports to: tokens as they come, the captured prompt IDs.

    It turns token IDs into TokenEvents (decoding text without splitting
    characters, leaving stop tokens out of the text), timestamps them for the
    statistics and watches memory. Runners call ``token()`` once per generated
    token and ``capture()`` with the IDs the model's first forward received.
    """

    def __init__(self, generation: Generation, decode, stop_ids: list[int], device) -> None:
        self.generation = generation
        self.stop_event = generation.stop_event
        self.stop_ids = stop_ids
        self.decoder = IncrementalDecoder(decode)
        self.captured: list[int] = []
        self.times: list[float] = []
        self.memory = _MemoryWatch(device)
        self.start = 0.0

    def begin(self) -> None:
        self.memory.start()
        self.start = time.perf_counter()

    def capture(self, ids) -> None:
        if not self.captured:
            self.captured.extend(int(i) for i in ids)

    def token(self, token_id: int) -> None:
        now = time.perf_counter()
        self.times.append(now)
        if token_id not in self.stop_ids:  # end-of-turn tokens are not reply text
            self.generation._emit(TokenEvent(int(token_id), self.decoder.push(int(token_id)), now))
        if len(self.times) % 16 == 0:
            self.memory.sample()

    @property
    def stopped(self) -> bool:
        return self.stop_event.is_set()

    def finish(self, new_ids: list[int]) -> DoneEvent:
        end = time.perf_counter()
        tail = self.decoder.flush()
        if tail:
            self.generation._emit(TokenEvent(-1, tail, end))
        view = self.generation.view
        stats = Stats(prompt_tokens=len(view.ids), new_tokens=len(new_ids), total_s=end - self.start)
        if self.times:
            stats.ttft_s = self.times[0] - self.start
            if len(self.times) > 1 and self.times[-1] > self.times[0]:
                stats.decode_tok_s = (len(self.times) - 1) / (self.times[-1] - self.times[0])
        stats.peak_memory_bytes, stats.memory_kind = self.memory.peak()
        if self.stopped:
            reason = "stopped"
        elif new_ids and new_ids[-1] in self.stop_ids:
            reason = "eos"
        else:
            reason = "length"
        return DoneEvent(stats=stats, stop_reason=reason, text=self.decoder.text,
                         prompt_ids=list(view.ids), captured_ids=list(self.captured))


class GenerateRunner:
    """transformers' ``generate()`` with a token-ID streamer and a stop criterion."""

    def run(self, model, view: PromptView, params: SamplingParams, sink: TurnSink) -> list[int]:
        import torch
        from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList
        from transformers.generation.streamers import BaseStreamer

        input_ids = torch.tensor([view.ids], dtype=torch.long, device=_input_device(model))

        def capture(_module, args, kwargs):
            ids = kwargs.get("input_ids")
            if ids is None and args:
                ids = args[0]
            if ids is not None:
                sink.capture(ids[0].tolist())
            hook.remove()

        hook = model.register_forward_pre_hook(capture, with_kwargs=True)

        class Stopper(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return torch.full((input_ids.shape[0],), sink.stopped, dtype=torch.bool, device=input_ids.device)

        class TokenStreamer(BaseStreamer):
            prompt_seen = False

            def put(self, value):
                if not self.prompt_seen:  # generate() first hands over the prompt
                    self.prompt_seen = True
                    return
                for token in value.reshape(-1).tolist():
                    sink.token(int(token))

            def end(self):
                pass

        try:
            with torch.inference_mode():
                output = model.generate(
                    input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                    generation_config=generation_config(model, params, sink.stop_ids),
                    streamer=TokenStreamer(), stopping_criteria=StoppingCriteriaList([Stopper()]),
                )
        finally:
            hook.remove()
        return output[0, input_ids.shape[1]:].tolist()


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


class _MemoryWatch:
    """Peak memory during a turn: torch's allocator on CUDA, process RSS on CPU."""

    def __init__(self, device) -> None:
        self.cuda = getattr(device, "type", str(device)) == "cuda"
        self._peak = 0

    def start(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.reset_peak_memory_stats()
        self.sample()

    def sample(self) -> None:
        if not self.cuda:
            import psutil

            self._peak = max(self._peak, psutil.Process().memory_info().rss)

    def peak(self) -> tuple[int, str]:
        if self.cuda:
            import torch

            return int(torch.cuda.max_memory_allocated()), "cuda"
        self.sample()
        return self._peak, "rss"


def _input_device(model):
    try:
        return model.get_input_embeddings().weight.device
    except Exception:
        return next(model.parameters()).device


def _error_done(generation: Generation, err: BaseException) -> DoneEvent:
    from .errors import LlmTuiError

    if isinstance(err, LlmTuiError):
        line = str(err)
    elif "out of memory" in str(err).lower() or type(err).__name__ == "OutOfMemoryError":
        from .loader import release_memory

        release_memory(err)  # frees the KV cache still held by the traceback's frames
        line = "out of memory during generation — try a shorter conversation (/clear), --quant nf4, or another device"
    else:
        text = str(err).strip().splitlines()
        line = f"generation failed: {type(err).__name__}: {text[0] if text else ''}"
    return DoneEvent(stats=Stats(prompt_tokens=len(generation.view.ids)), stop_reason="error", text="",
                     prompt_ids=list(generation.view.ids), captured_ids=None, error=line)


def open_model(spec: ModelSpec, progress=None) -> ModelHandle:
    """Locate, load and wrap a model: the one entry point the CLI and the app use.

    The prompt family comes from the same place ``inspect`` gets it
    (``tokenizer_side.family_for``), so a preview and a run always agree.
    ``spec.engine`` and the checkpoint pick the loading path and the runner
    (``backends.runners.prepare``).
    """
    from .runners import prepare

    prepared = prepare(spec, progress)
    loaded = prepared.loaded
    return ModelHandle(loaded.model, loaded.tokenizer, prepared.family, spec, device=loaded.device,
                       dtype=loaded.dtype, path=str(loaded.located.path), runner=prepared.runner,
                       quant=getattr(loaded, "quant", None))
