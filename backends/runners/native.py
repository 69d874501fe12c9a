"""``--engine native``: the checkpoint's own streaming method, as the vendor demos call it.

Three methods are known, by name and signature:

- Qwen v1 ``chat_stream(tokenizer, query, history, system, ..., **kwargs)``
  yields the reply so far as text;
- Baichuan2 ``chat(tokenizer, messages, stream=True, generation_config)``
  returns an iterator of the reply so far as text (``generate()`` runs in a
  thread of its own, feeding a streamer);
- ChatGLM3 ``stream_chat(tokenizer, query, history, role, past_key_values, ...,
  **kwargs)`` yields ``(response, history[, past_key_values])``. The cache it
  returns is passed back on the next turn, as the vendor's demos do, so that
  turn sends only the new message: the prompt family's ``render_incremental``
  is then the preview.

Where the token IDs come from. The methods report text, not IDs. Each of them
passes extra keyword arguments down to its generation loop (for Baichuan2,
``generate()`` is wrapped for the turn), so a stopping criterion is handed in
that sees the whole sequence after every token: the token events carry the
IDs the model really sampled, and the same criterion stops the method between
two tokens. A method that never calls it falls back to re-tokenising the text
it yields with the prompt family's tokenizer; those IDs are one valid
tokenisation of the text, not necessarily the sampled ones. The captured
prompt IDs always come from a forward pre-hook on the first forward call.

Before the first turn, :meth:`NativeRunner.for_model` reads the method's source
(and the checkpoint's own methods it calls) and refuses, in one line, when it
needs attributes this transformers no longer provides or packages that do not
import here.
"""

from __future__ import annotations

import copy
import importlib
import inspect
import json
import re
import textwrap
import threading
from dataclasses import dataclass

from ..errors import GenerationError, LlmTuiError, ModelLoadError, UsageError
from ..params import SamplingParams
from ..prompt import PromptView
from .loop import capture_first_forward

QWEN_DEFAULT_SYSTEM = "You are a helpful assistant."


@dataclass(frozen=True)
class Method:
    """One known streaming method: its name and what it is called in messages."""

    kind: str  # "chat_stream" | "stream_chat" | "chat"
    title: str


CHAT_STREAM = Method("chat_stream", "chat_stream(tokenizer, query, history, system)")
STREAM_CHAT = Method("stream_chat", "stream_chat(tokenizer, query, history, role, past_key_values)")
CHAT_MESSAGES = Method("chat", "chat(tokenizer, messages, stream=True)")


def find_method(model) -> Method | None:
    """The streaming method ``model`` offers, recognised by name and parameters."""
    for method, needed in ((CHAT_STREAM, ("tokenizer", "query", "history")),
                           (STREAM_CHAT, ("tokenizer", "query", "history")),
                           (CHAT_MESSAGES, ("tokenizer", "messages", "stream"))):
        func = getattr(model, method.kind, None)
        if func is None or not callable(func):
            continue
        try:
            params = inspect.signature(func).parameters
        except (TypeError, ValueError):
            continue
        if all(name in params for name in needed):
            return method
    return None


# -- what a method needs ------------------------------------------------------------
_SELF_ATTR = re.compile(r"\bself\.(\w+)")
_SELF_ASSIGN = re.compile(r"\bself(?:\.__class__)?\.(\w+)\s*=(?!=)")
_IMPORT = re.compile(r"^\s*(?:from\s+([A-Za-z_][\w.]*)\s+import\b|import\s+([A-Za-z_][\w.]*))", re.MULTILINE)


def missing_requirements(model, method_name: str) -> list[str]:
    """What ``method_name`` (and the checkpoint's own methods it calls) uses that is not here.

    Read from the source: attributes used on ``self`` that the model lacks, and
    packages imported inside the methods that do not import (or are llm-tui's
    stand-ins). An empty list means nothing is known to be missing.
    """
    from ..remote.fixes import standin_reason

    cls = type(model)
    home = _home_module(cls, method_name)
    missing: list[str] = []
    seen: set[str] = set()
    queue = [method_name]
    while queue:
        name = queue.pop(0)
        if name in seen:
            continue
        seen.add(name)
        func = getattr(cls, name, None)
        if func is None or getattr(func, "__module__", None) != home:
            continue
        try:
            source = textwrap.dedent(inspect.getsource(func))
        except (OSError, TypeError):
            continue
        assigned = set(_SELF_ASSIGN.findall(source))
        for attr in dict.fromkeys(_SELF_ATTR.findall(source)):
            if attr in assigned or attr.startswith("__"):
                continue
            if not hasattr(model, attr):
                _add(missing, f"{attr}()" if f"self.{attr}(" in source else attr)
            elif callable(getattr(cls, attr, None)):
                queue.append(attr)
        for found in _IMPORT.findall(source):
            module = found[0] or found[1]
            reason = standin_reason(module) or _import_problem(module)
            if reason:
                _add(missing, f"the '{module.split('.')[0]}' package ({reason})")
    return missing


def _home_module(cls, method_name: str) -> str | None:
    func = getattr(cls, method_name, None)
    return getattr(func, "__module__", None)


def _add(items: list[str], item: str) -> None:
    if item not in items:
        items.append(item)


def _import_problem(module: str) -> str | None:
    try:
        importlib.import_module(module)
    except ModuleNotFoundError:
        return "not installed"
    except Exception as err:
        text = (str(err).strip().splitlines() or [type(err).__name__])[0]
        return f"does not import: {text[:120]}"
    return None


def _transformers_version() -> str:
    try:
        import transformers

        return transformers.__version__
    except Exception:
        return "?"


# -- the family, remembering what it rendered ---------------------------------------------
class NativeFamily:
    """The prompt family, plus what the native runner needs from ``render()``.

    The runner gets the rendered view, but a streaming method takes messages;
    this wrapper remembers which messages each view came from. For ChatGLM3's
    ``stream_chat`` it renders the incremental prompt when the runner holds the
    cache of exactly the conversation so far.
    """

    def __init__(self, family, runner: "NativeRunner") -> None:
        self._family = family
        self._runner = runner
        self._rendered: list[tuple[PromptView, list[dict]]] = []

    def __getattr__(self, name):
        return getattr(self._family, name)

    def render(self, messages: list[dict], *, add_generation_prompt: bool = True,
               max_new_tokens: int | None = None) -> PromptView:
        incremental = getattr(self._family, "render_incremental", None)
        if incremental is not None and add_generation_prompt and self._runner.continues(messages):
            view = incremental(messages, add_generation_prompt=True, max_new_tokens=max_new_tokens)
        else:
            view = self._family.render(messages, add_generation_prompt=add_generation_prompt,
                                       max_new_tokens=max_new_tokens)
        self._rendered = [(v, m) for v, m in self._rendered[-7:]] + [(view, [dict(m) for m in messages])]
        return view

    def narrowed(self, max_prompt_tokens: int, max_new_tokens: int | None = None):
        # The model's own method applies its own window to the history it is given.
        raise UsageError(f"a prompt budget of {max_prompt_tokens:,} tokens cannot be kept with --engine native: "
                         "the model's own chat method truncates by its own rule",
                         "use --engine loop, or /budget off")

    def messages_for(self, view: PromptView) -> list[dict]:
        for rendered, messages in reversed(self._rendered):
            if rendered is view:
                return messages
        raise GenerationError("the native engine got a prompt it did not render",
                              "render the conversation through the model handle")


# -- token IDs from the method ----------------------------------------------------------------
def _tap_class():
    from transformers import StoppingCriteria

    class TokenTap(StoppingCriteria):
        """Sees the sequence after every token: reports new IDs, stops when asked."""

        def __init__(self, sink, max_new_tokens: int) -> None:
            self.sink = sink
            self.max_new_tokens = max_new_tokens
            self.ids: list[int] = []
            self.calls = 0
            self.start: int | None = None
            self.lock = threading.Lock()

        def __call__(self, input_ids, scores=None, **kwargs):
            import torch

            with self.lock:
                self.calls += 1
                row = input_ids[0].tolist()
                if self.start is None:
                    self.start = len(self.sink.captured) if self.sink.captured else len(row) - 1
                for token in row[self.start + len(self.ids):]:
                    self.ids.append(int(token))
                    self.sink.token(int(token))
                done = self.sink.stopped or len(self.ids) >= self.max_new_tokens
            return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)

    return TokenTap


class TextTokens:
    """Token IDs for a growing text, by re-tokenising it (the fallback when no IDs are reported).

    Text up to the last whitespace is settled (tokenizers split words before
    their leading space, so later text cannot change its tokens) and is
    tokenised and released; a long run without whitespace (CJK text) is
    released all but its last token. IDs are only released while they stay a
    prefix of the new tokenisation; at the end the whole text is taken.
    """

    #: Characters after the last whitespace before they are released anyway.
    LONG_RUN = 16

    def __init__(self, encode, decode) -> None:
        self.encode = encode
        self.decode = decode
        self.ids: list[int] = []

    def update(self, text: str, *, final: bool = False) -> list[int]:
        if final:
            ids, hold = (self.encode(text) if text else []), 0
        else:
            cut = max(text.rfind(" "), text.rfind("\n"), text.rfind("\t"))
            if len(text) - cut > self.LONG_RUN:
                ids, hold = self.encode(text), 1
            else:
                ids, hold = (self.encode(text[:cut]) if cut > 0 else []), 0
        if ids[: len(self.ids)] == self.ids:
            new = ids[len(self.ids):max(len(self.ids), len(ids) - hold)]
        elif final:
            sent = self.decode(self.ids)
            new = self.encode(text[len(sent):]) if text.startswith(sent) and len(text) > len(sent) else []
        else:
            new = []
        self.ids.extend(new)
        return new


def text_encoder(family):
    """``text -> ids`` with the family's tokenizer, no special tokens added."""
    vocab = getattr(family, "vocab", None)
    if vocab is not None and hasattr(vocab, "encode"):
        return vocab.encode
    tokenizer = getattr(family, "tokenizer", None)
    if tokenizer is not None and "allow_special" in _params(tokenizer.encode):
        return tokenizer.encode
    if tokenizer is not None:
        return lambda text: tokenizer.encode(text, add_special_tokens=False)
    raise GenerationError("the native engine cannot tokenise the reply with this prompt family")


def _params(func) -> set[str]:
    try:
        return set(inspect.signature(func).parameters)
    except (TypeError, ValueError):
        return set()


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
    def run(self, model, view: PromptView, params: SamplingParams, sink) -> list[int]:
        messages = self.family.messages_for(view)
        tap = _tap_class()(sink, params.max_new_tokens)
        texts = TextTokens(self._encode, self._decode)
        past = self._past if view.mode == "incremental" else None
        self._past, self._after = None, None
        hook = capture_first_forward(model, sink)
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
            hook.remove()
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
        from .loop import split_output

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
