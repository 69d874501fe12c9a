"""Any checkpoint that ships a Hugging Face chat template.

Qwen1.5/2/2.5/3, Yi, Llama, Mistral, SmolLM, GLM-4 (transformers-native) all
take this path. The IDs are produced the way ``apply_chat_template`` does it:
render the template to text, then tokenize that text without adding special
tokens (the template already wrote them).
"""

from __future__ import annotations

import json

from backends.core.errors import UsageError
from backends.prompt.cancel import check_cancelled
from backends.prompt.tools.spans import tools_span
from backends.prompt.view import PromptView, Span, byte_level_decoder, piece_from_bytes


def _is_byte_level(tokenizer) -> bool:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    decoder = getattr(backend, "decoder", None) if backend is not None else None
    return decoder is not None and "ByteLevel" in repr(decoder)


class TokenPieces:
    """Byte-exact, readable pieces and special flags for an HF tokenizer."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.byte_level = _is_byte_level(tokenizer)
        added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
        self.added = {i: t.content for i, t in added.items()}
        self.special_ids = {i for i, t in added.items() if getattr(t, "special", False)}
        self.special_ids.update(getattr(tokenizer, "all_special_ids", []) or [])
        self._memo: dict[int, str] = {}
        # A tokenizer that knows its tokens' bytes and control tokens itself (llama.cpp's) says so.
        self._own_bytes = getattr(tokenizer, "token_bytes", None)
        self._own_special = getattr(tokenizer, "is_special", None)

    def token_bytes(self, token_id: int) -> bytes:
        if self._own_bytes is not None:
            return self._own_bytes(token_id)
        if token_id in self.added:
            return self.added[token_id].encode("utf-8")
        token = self.tokenizer.convert_ids_to_tokens(token_id)
        if token is None:
            return b""
        if self.byte_level:
            table = byte_level_decoder()
            if all(ch in table for ch in token):
                return bytes(table[ch] for ch in token)
            return token.encode("utf-8")
        if token.startswith("<0x") and token.endswith(">") and len(token) == 6:
            return bytes([int(token[3:5], 16)])
        return token.replace("\u2581", " ").encode("utf-8")

    def pieces(self, ids: list[int]) -> list[str]:
        # Memoised per token ID: a 32k-token preview is rebuilt on every keystroke.
        memo = self._memo
        out = []
        for i in ids:
            piece = memo.get(i)
            if piece is None:
                piece = memo[i] = piece_from_bytes(self.token_bytes(i))
            out.append(piece)
        return out

    def special(self, ids: list[int]) -> list[bool]:
        if self._own_special is not None:
            return [self._own_special(i) for i in ids]
        special = self.special_ids
        return [i in special for i in ids]


def _message_key(message: dict) -> tuple:
    """What of a message a template may write: its role and content, and any other field (a tool
    call's name, metadata or id) when it has one."""
    extra = {k: v for k, v in message.items() if k not in ("role", "content")}
    return (message["role"], message["content"], json.dumps(extra, sort_keys=True, default=str) if extra else "")


class ChatTemplateFamily:
    """Prompts built by the checkpoint's own Jinja chat template."""

    def __init__(self, tokenizer, *, name: str = "template", max_context: int | None = None,
                 eos_ids: list[int] | None = None, notes: list[str] | None = None) -> None:
        if not getattr(tokenizer, "chat_template", None):
            raise UsageError("this tokenizer has no chat template",
                             "use a chat/instruct checkpoint, or one whose family llm-tui knows")
        self.tokenizer = tokenizer
        self.name = name
        self.max_context = max_context
        self._pieces = TokenPieces(tokenizer)
        self._eos_ids = list(eos_ids or [])
        self._notes = list(notes or [])  # about the checkpoint's files, in every view's warnings
        self._prefix_cache: dict[tuple, str | None] = {}
        self._head: str | None = None
        self._result_role: str | None | bool = False  # False: not probed yet
        self._vocab_cache: dict[str, int] | None = None

    # -- rendering -----------------------------------------------------------
    #: Tools go to the template as ``tools=`` (the template decides where they go, or ignores them).
    supports_tools = True

    def _text(self, messages: list[dict], add_generation_prompt: bool, tools: list[dict] | None = None) -> str:
        extra = {"tools": tools} if tools else {}
        if any(m["role"] == "tool" for m in messages):
            role = self.result_role()
            if role not in (None, "tool"):
                messages = [{**m, "role": role} if m["role"] == "tool" else m for m in messages]
        try:
            return self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=add_generation_prompt, **extra
            )
        except Exception as err:  # jinja raise_exception(), bad role order …
            raise UsageError(f"the chat template rejects this conversation: {err}",
                             "check the order of roles (many templates need user/assistant alternating)") from None

    def encode(self, text: str) -> tuple[list[int], list[tuple[int, int]] | None]:
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]

    def render(self, messages: list[dict], *, add_generation_prompt: bool = True,
               max_new_tokens: int | None = None, tools: list[dict] | None = None) -> PromptView:
        check_cancelled()
        text = self._text(messages, add_generation_prompt, tools)
        check_cancelled()  # before tokenizing: a long prompt's costliest step with the spans below
        ids, offsets = self.encode(text)
        spans = self._spans(messages, text, offsets, add_generation_prompt, tools)
        notes = []
        if tools:
            plain = self._text(messages, add_generation_prompt)
            if plain == text:
                notes.append(f"the chat template ignores tools=: the {len(tools)} tool definitions are not in the "
                             "prompt (this model's template has no tool format)")
            else:
                spans = tools_span(spans, text, plain, [end for _, end in offsets] if offsets else [])
        view = PromptView(
            family=self.name,
            text=text,
            ids=ids,
            pieces=self._pieces.pieces(ids),
            special=self._pieces.special(ids),
            spans=spans,
            max_context=self.max_context,
            stop_ids=self.stop_ids(),
        )
        view.warnings.extend([*self._notes, *notes, *self._warnings(messages, view, add_generation_prompt, tools)])
        return view

    def _spans(self, messages, text, offsets, add_generation_prompt, tools=None) -> list[Span]:
        """Token ranges per message, from the text length of each prefix render.

        Prefix renders are remembered: while the user types, only the draft
        (the last message) changes, so each keystroke costs one new render.
        """
        bounds: list[int] = []
        keys = tuple(_message_key(m) for m in messages)
        for k in range(1, len(messages) + 1):
            check_cancelled()  # a template render per new prefix: many for a conversation not seen yet
            prefix = self._prefix_text(messages[:k], keys[:k], tools)
            if prefix is None or not text.startswith(prefix):
                return self._spans_by_content(messages, text, offsets)
            bounds.append(len(prefix))
        framing = self._injected_framing(messages, text, bounds)
        return _char_bounds_to_spans(messages, bounds, len(text), offsets, framing_end=framing)

    def _injected_framing(self, messages, text, bounds) -> int:
        """Characters a template writes before the first user turn on its own
        (a default system prompt, as SmolLM2 and Qwen2.5 do): 0 when none.

        The first message's text is compared with how the same template opens a
        later user turn; anything before that opening is the template's.
        """
        first = messages[0] if messages else None
        if not first or first["role"] != "user" or not first["content"]:
            return 0
        head = self._user_turn_head()
        content_at = text.find(first["content"], 0, bounds[0])
        if not head or content_at < 0:
            return 0
        opening = text[:content_at]
        if opening.endswith(head) and len(opening) > len(head):
            return content_at - len(head)
        return 0

    #: The roles templates write a tool's result in: the chat API's ``tool``, GLM-4's ``observation``,
    #: Llama 3.1's ``ipython``.
    RESULT_ROLES = ("tool", "observation", "ipython")

    def result_role(self) -> str | None:
        """The role this template writes a tool result in (None: it writes none), found by rendering
        a probe result in each role; conversations keep ``tool`` and are renamed to it here."""
        if self._result_role is False:
            marker = "\u2063llm-tui-result\u2063"
            self._result_role = None
            for role in self.RESULT_ROLES:
                probe = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                         {"role": role, "content": marker, "name": "f", "tool_call_id": "call_0"}]
                try:
                    if marker in self.tokenizer.apply_chat_template(probe, tokenize=False):
                        self._result_role = role
                        break
                except Exception:
                    continue
        return self._result_role

    def _user_turn_head(self) -> str:
        if self._head is None:
            marker = "\u2063llm-tui\u2063"
            probe = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
            try:
                before = self.tokenizer.apply_chat_template(probe, tokenize=False)
                after = self.tokenizer.apply_chat_template(probe + [{"role": "user", "content": marker}], tokenize=False)
                self._head = after[len(before):after.index(marker)] if after.startswith(before) else ""
            except Exception:
                self._head = ""
        return self._head

    def _prefix_text(self, messages: list[dict], keys: tuple, tools: list[dict] | None = None) -> str | None:
        key = (json.dumps(tools, sort_keys=True) if tools else "", keys)
        cached = self._prefix_cache.get(key)
        if cached is None and key not in self._prefix_cache:
            try:
                cached = self._text(list(messages), False, tools)
            except Exception:
                cached = None
            if len(self._prefix_cache) > 512:
                self._prefix_cache.clear()
            self._prefix_cache[key] = cached
        return cached

    def _spans_by_content(self, messages, text, offsets) -> list[Span]:
        """Fallback for templates whose prefixes change (e.g. thinking removed): find contents."""
        bounds, cursor = [], 0
        for m in messages:
            at = text.find(m["content"], cursor)
            cursor = (at + len(m["content"])) if at >= 0 else cursor
            bounds.append(cursor)
        return _char_bounds_to_spans(messages, bounds, len(text), offsets)

    def _warnings(self, messages, view: PromptView, add_generation_prompt: bool, tools=None) -> list[str]:
        found = []
        bos = getattr(self.tokenizer, "bos_token_id", None)
        if bos is not None and len(view.ids) > 1 and view.ids[0] == bos and view.ids[1] == bos:
            found.append("doubled BOS: the prompt starts with two BOS tokens")
        if add_generation_prompt and messages and messages[-1]["role"] != "assistant":
            if self._text(messages, False, tools) == view.text:
                found.append("the template adds no generation prompt: the model may continue the user's text")
        results = [i for i, m in enumerate(messages) if m["role"] == "tool"]
        if results and self.result_role() is None:
            found.append("the chat template writes no tool results: tool message "
                         + ", ".join(f"#{i}" for i in results) + " is not in the prompt")
        stops = set(view.stop_ids)
        specials = [self._pieces.added[i] for i in self._pieces.special_ids if i in self._pieces.added]
        for index, message in enumerate(messages):
            typed = sorted({tok for tok in specials if tok and tok in message["content"]})
            if typed:
                found.append(f"message #{index} ({message['role']}) contains {', '.join(typed)} as text: "
                             "the tokenizer turns it into a control token")
        vocab = self._vocab()
        for token in ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>"):
            tid = vocab.get(token) if token in view.text else None
            if tid is not None and tid not in stops:
                found.append(f"end-of-turn token {token} ({tid}) is not in the stop set: replies may run on")
        if self.max_context and len(view.ids) > self.max_context:
            found.append(f"prompt is {len(view.ids)} tokens, over the model's context of {self.max_context}")
        return found

    def _vocab(self) -> dict[str, int]:
        if self._vocab_cache is None:
            self._vocab_cache = dict(self.tokenizer.get_vocab())
        return self._vocab_cache

    # -- tokens --------------------------------------------------------------
    def stop_ids(self) -> list[int]:
        ids = list(self._eos_ids)
        eos = getattr(self.tokenizer, "eos_token_id", None)
        if isinstance(eos, int) and eos not in ids:
            ids.append(eos)
        return ids

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def pieces(self, ids: list[int]) -> list[str]:
        return self._pieces.pieces(ids)


def _char_bounds_to_spans(messages, bounds: list[int], text_len: int, offsets,
                          framing_end: int = 0) -> list[Span]:
    """Turn the end character of each message into token spans.

    ``framing_end`` > 0 marks text the template wrote on its own before the
    first message; it gets a span of its own instead of being counted as the
    user's.
    """
    spans: list[Span] = []
    token_ends = [end for _, end in offsets] if offsets else []
    start_tok = 0
    if framing_end:
        start_tok = _first_token_at_or_after(token_ends, framing_end)
        if start_tok:
            spans.append(Span(-1, "template default", 0, start_tok))
    for index, (message, end_char) in enumerate(zip(messages, bounds)):
        end_tok = _first_token_at_or_after(token_ends, end_char)
        if end_tok > start_tok:
            spans.append(Span(index, message["role"], start_tok, end_tok))
        start_tok = end_tok
    if start_tok < len(token_ends):
        spans.append(Span(-1, "generation", start_tok, len(token_ends)))
    return spans


def _first_token_at_or_after(token_ends: list[int], char: int) -> int:
    """Number of tokens whose text ends at or before ``char``."""
    lo, hi = 0, len(token_ends)
    while lo < hi:
        mid = (lo + hi) // 2
        if token_ends[mid] <= char:
            lo = mid + 1
        else:
            hi = mid
    return lo
