"""The prompt family of a native runner: the vendor method's own prompt, tokenized as it does."""

from __future__ import annotations

import inspect
import threading
from dataclasses import replace

from backends.core.errors import GenerationError, UsageError
from backends.prompt.view import PromptView


# -- the family, remembering what it rendered ---------------------------------------------
class NativeFamily:
    """The prompt family, plus what the native runner needs from ``render()``.

    The runner gets the rendered view, but a streaming method takes messages;
    this wrapper remembers which messages each view came from. For ChatGLM3's
    ``stream_chat`` it renders the incremental prompt when the runner holds the
    cache of exactly the conversation so far.
    """

    def __init__(self, family, runner) -> None:
        self._family = family
        self._runner = runner

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
        return replace(view, messages=[dict(m) for m in messages])

    def narrowed(self, max_prompt_tokens: int, max_new_tokens: int | None = None):
        # The model's own method applies its own window to the history it is given.
        raise UsageError(f"a prompt budget of {max_prompt_tokens:,} tokens cannot be kept with --engine native: "
                         "the model's own chat method truncates by its own rule",
                         "use --engine loop, or /budget off")

    def messages_for(self, view: PromptView) -> list[dict]:
        """The messages the method is called with: those the view was rendered from."""
        if view.messages:
            return view.messages
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
