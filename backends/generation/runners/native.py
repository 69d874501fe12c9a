"""NativeRunner: a checkpoint's own streaming method (``--engine native``).

The vendor's ``chat_stream`` / ``stream_chat`` / ``chat(stream=True)`` yields
text; the runner watches the model's forward calls to recover the token IDs,
captures the prompt the first forward received, and stops between steps."""

from __future__ import annotations

import copy
import json
import threading

from backends.core.errors import (
    GenerationError,
    LlmTuiError,
    ModelLoadError,
    UsageError,
)
from backends.core.params import SamplingParams
from backends.generation.runners.base import Sink
from backends.generation.runners.native_family import (
    NativeFamily,
    TextTokens,
    _tap_class,
    text_encoder,
)
from backends.generation.runners.native_methods import (
    CHAT_MESSAGES,
    CHAT_STREAM,
    QWEN_DEFAULT_SYSTEM,
    STREAM_CHAT,
    Method,
    _transformers_version,
    find_method,
    missing_requirements,
)
from backends.generation.runners.prefill import PrefillCapture
from backends.loading.forward_call import split_output
from backends.prompt.view import PromptView


# -- the runner ---------------------------------------------------------------------------------
class NativeRunner:
    """Runs a turn through the checkpoint's own streaming method (see the module docstring)."""

    name = "native"

    def __init__(self, method: Method, tokenizer, family, *, label: str = "the model") -> None:
        self.method = method
        self.tokenizer = tokenizer
        self.label = label
        self.family = NativeFamily(family, self)
        self._encode = text_encoder(family)
        self._decode = family.decode
        #: ChatGLM3: the cache after the last turn, and the conversation it holds.
        self._past = None
        self._after: list[tuple] | None = None

    @classmethod
    def for_model(cls, model, tokenizer, family, *, label: str = "the model",
                  load_tokenizer=None) -> "NativeRunner":
        """The runner for ``model``'s streaming method, or one line saying why there is none.

        ``load_tokenizer``: called for the checkpoint's tokenizer when ``tokenizer``
        is None, once the method is known to be runnable.
        """
        method = find_method(model)
        if method is None:
            raise UsageError(f"'{label}' has no streaming method of its own (chat_stream, stream_chat or "
                             "chat(..., stream=True))", "use --engine auto or --engine loop")
        missing = missing_requirements(model, method.kind)
        if missing:
            raise ModelLoadError(f"--engine native: {method.kind}() of '{label}' cannot run with transformers "
                                 f"{_transformers_version()}: it needs {', '.join(missing[:4])}",
                                 "use --engine loop (the default for this checkpoint)")
        if tokenizer is None and load_tokenizer is not None:
            tokenizer = load_tokenizer()
        if tokenizer is None:
            raise ModelLoadError(f"--engine native: '{label}' needs its own tokenizer, which was not loaded",
                                 "use --engine loop")
        return cls(method, tokenizer, family, label=label)

    # -- ChatGLM3 cache across turns -------------------------------------------
    def release(self) -> None:
        """Drop the cache held between turns (its tensors live on the model's device)."""
        self._past, self._after = None, None

    def continues(self, messages: list[dict]) -> bool:
        """True when the held cache is exactly ``messages`` minus its last (user) message."""
        if self.method is not STREAM_CHAT or self._past is None or self._after is None:
            return False
        if not messages or messages[-1].get("role") not in ("user", "observation"):
            return False
        return _key(messages[:-1]) == self._after

    # -- a turn ---------------------------------------------------------------------------
    def run(self, model, view: PromptView, params: SamplingParams, sink: Sink) -> list[int]:
        messages = self.family.messages_for(view)
        tap = _tap_class()(sink, params.max_new_tokens)
        texts = TextTokens(self._encode, self._decode)
        past = self._past if view.mode == "incremental" else None
        self._past, self._after = None, None
        capture = PrefillCapture(model, sink, calls=1)  # the vendor's prefill is one forward call
        steps = _StepWatch(model)
        emitted: list[int] = []
        last_past = None
        stream = None
        guard = _GenerateGuard(model, tap) if self.method is CHAT_MESSAGES else None
        try:
            stream = self._start(model, messages, params, tap, past)
            yields = 0
            text = ""
            for item in stream:
                yields += 1
                text, last_past = _text_of(item)
                if tap.calls == 0 and yields >= 2:
                    emitted += _emit(sink, texts.update(text))
                if sink.stopped:
                    break
            if tap.calls == 0 and not sink.stopped:
                emitted += _emit(sink, texts.update(text, final=True))
        except LlmTuiError:
            raise
        except Exception as err:
            raise self._failure(err) from None
        finally:
            if stream is not None and hasattr(stream, "close"):
                stream.close()
            if guard is not None:
                guard.finish()
            capture.finish()
            steps.remove()
        if guard is not None and guard.error is not None:
            raise self._failure(guard.error)
        new_ids = list(tap.ids) if tap.calls else emitted
        ended_itself = not sink.stopped and steps.calls < params.max_new_tokens
        unseen = steps.calls > len(new_ids) if tap.calls else not (new_ids and new_ids[-1] in sink.stop_ids)
        if ended_itself and unseen and sink.stop_ids:
            new_ids += _emit(sink, [steps.likeliest(sink.stop_ids)])
        if (self.method is STREAM_CHAT and last_past is not None and not sink.stopped and new_ids
                and new_ids[-1] in sink.stop_ids):
            reply = self._decode([i for i in new_ids if i not in sink.stop_ids]).rstrip("\ufffd")
            self._past = last_past
            self._after = _key(messages + [{"role": "assistant", "content": reply}])
        return new_ids

    def _start(self, model, messages: list[dict], params: SamplingParams, tap, past):
        from transformers import StoppingCriteriaList

        criteria = StoppingCriteriaList([tap])
        if self.method is CHAT_STREAM:
            system, history, query = _qwen_args(messages)
            return model.chat_stream(self.tokenizer, query, history, system,
                                     generation_config=_vendor_generation_config(model, params),
                                     stopping_criteria=criteria)
        if self.method is STREAM_CHAT:
            history, query, role = _chatglm_args(messages)
            kwargs = {"do_sample": not params.greedy, "max_new_tokens": params.max_new_tokens,
                      "repetition_penalty": params.repetition_penalty, "stopping_criteria": criteria,
                      "return_past_key_values": True}
            if not params.greedy:
                kwargs.update(temperature=params.temperature, top_p=params.top_p, top_k=params.top_k)
            return model.stream_chat(self.tokenizer, query, None if past is not None else history, role=role,
                                     past_key_values=past, **kwargs)
        return model.chat(self.tokenizer, [dict(m) for m in messages], stream=True,
                          generation_config=_vendor_generation_config(model, params))

    def _failure(self, err: BaseException) -> GenerationError:
        text = (str(err).strip().splitlines() or [""])[0][:200]
        return GenerationError(f"{self.method.kind}() of '{self.label}' failed with transformers "
                               f"{_transformers_version()}: {type(err).__name__}: {text}",
                               "use --engine loop (the default for this checkpoint)")


def _emit(sink, ids: list[int]) -> list[int]:
    for token in ids:
        sink.token(token)
    return ids


def _text_of(item) -> tuple[str, object]:
    """(reply text, cache or None) from what a method yields."""
    past = None
    if isinstance(item, tuple):
        if len(item) >= 3:
            past = item[2]
        item = item[0]
    if not isinstance(item, str):
        item = json.dumps(item, ensure_ascii=False, default=str)
    return item, past


def _key(messages: list[dict]) -> list[tuple]:
    return [(m.get("role"), m.get("content"), m.get("metadata") or "") for m in messages]


def _vendor_generation_config(model, params: SamplingParams):
    """The checkpoint's generation config (its own keys kept) with the turn's sampling parameters."""
    base = getattr(model, "generation_config", None)
    config = copy.deepcopy(base) if base is not None else None
    if config is None:
        from transformers import GenerationConfig

        config = GenerationConfig()
    config.max_new_tokens = params.max_new_tokens
    config.repetition_penalty = params.repetition_penalty
    config.do_sample = not params.greedy
    if not params.greedy:
        config.temperature, config.top_p, config.top_k = params.temperature, params.top_p, params.top_k
    return config


def _qwen_args(messages: list[dict]) -> tuple[str, list[tuple[str, str]], str]:
    rest = list(messages)
    system = QWEN_DEFAULT_SYSTEM
    if rest and rest[0]["role"] == "system":
        system = rest.pop(0)["content"]
    if not rest or rest[-1]["role"] != "user":
        raise UsageError("Qwen's chat_stream answers a user message", "end the conversation with a user message")
    query = rest.pop()["content"]
    if len(rest) % 2 or any(m["role"] != want for m, want in zip(rest, ["user", "assistant"] * len(rest))):
        raise UsageError("Qwen's chat_stream takes history as user/assistant pairs",
                         "alternate user and assistant messages")
    history = [(rest[i]["content"], rest[i + 1]["content"]) for i in range(0, len(rest), 2)]
    return system, history, query


def _chatglm_args(messages: list[dict]) -> tuple[list[dict], str, str]:
    if not messages or messages[-1]["role"] not in ("user", "observation"):
        raise UsageError("ChatGLM3's stream_chat answers a user (or observation) message",
                         "end the conversation with a user message")
    history = []
    for m in messages[:-1]:
        item = {"role": m["role"], "content": m["content"]}
        if m.get("metadata"):
            item["metadata"] = m["metadata"]
        history.append(item)
    return history, messages[-1]["content"], messages[-1]["role"]


class _StepWatch:
    """Counts forward calls (one per sampled token) and keeps the last step's logits.

    The methods end on a stop token without passing it to any callback; it is
    identified as the stop token with the highest logit at the last step:
    exact for greedy decoding, the most likely stop token when sampling.
    """

    def __init__(self, model) -> None:
        self.calls = 0
        self.logits = None

        def after(_module, _args, output):
            self.calls += 1
            try:
                logits, _cache = split_output(output)
                self.logits = logits[0, -1].detach()
            except Exception:
                self.logits = None

        self.handle = model.register_forward_hook(after)

    def likeliest(self, stop_ids: list[int]) -> int:
        if self.logits is None:
            return stop_ids[0]
        valid = [i for i in stop_ids if 0 <= i < self.logits.shape[-1]]
        return max(valid, key=lambda i: float(self.logits[i])) if valid else stop_ids[0]

    def remove(self) -> None:
        self.handle.remove()


class _GenerateGuard:
    """For the turn, ``model.generate`` is wrapped: the token tap is added to its stopping
    criteria, its thread is remembered, and an exception ends the streamer instead of
    leaving the reader waiting forever."""

    def __init__(self, model, tap) -> None:
        self.model = model
        self.error: BaseException | None = None
        self.thread: threading.Thread | None = None
        original = model.generate

        def generate(*args, **kwargs):
            from transformers import StoppingCriteriaList

            self.thread = threading.current_thread()
            criteria = kwargs.get("stopping_criteria") or StoppingCriteriaList()
            criteria.append(tap)
            kwargs["stopping_criteria"] = criteria
            streamer = kwargs.get("streamer")
            try:
                return original(*args, **kwargs)
            except BaseException as err:
                self.error = err
                if streamer is not None and hasattr(streamer, "end"):
                    streamer.end()
                return None

        model.__dict__["generate"] = generate

    def finish(self) -> None:
        self.model.__dict__.pop("generate", None)
        thread = self.thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(60)
