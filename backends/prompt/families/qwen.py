"""Qwen (v1) chat prompts, rebuilt without the checkpoint's Python code.

Qwen-7B/14B/72B/1.8B-Chat build their prompt in ``qwen_generation_utils.make_context``
(ChatML) and tokenise with ``tokenization_qwen.QWenTokenizer``: tiktoken over
``qwen.tiktoken`` with Qwen's pre-tokenizer regex, specials numbered from
151643 (``<|endoftext|>``, ``<|im_start|>``, ``<|im_end|>``, ``<|extra_0|>`` ...
``<|extra_204|>``). Text is NFC-normalised before encoding. Role names and
contents are encoded with no special tokens allowed, so a user who types
``<|im_start|>`` gets plain-text tokens.

History is walked newest to oldest; a past round is kept while
``system + kept + round < max_window_size`` (``generation_config.json``,
default 6144); the first round that does not fit is dropped with every older
one. The current query is never counted.
"""

from __future__ import annotations

import base64
import copy
import unicodedata
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

from backends.core.errors import MissingPackageError, ModelLoadError, UsageError
from backends.core.files import read_json
from backends.core.sequences import common_prefix
from backends.prompt.families.generation_json import read_generation_json
from backends.prompt.families.sp_tokens import int_setting, require_file
from backends.prompt.tools.formats import QWEN_REACT_STOP, qwen_react_query
from backends.prompt.tools.spans import split_spans
from backends.prompt.view import Dropped, PromptView, Span, piece_from_bytes

PAT_STR = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"""
           r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""")
ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_START_ID = 151643
SPECIAL_TOKENS = (ENDOFTEXT, IM_START, IM_END) + tuple(f"<|extra_{i}|>" for i in range(205))
DEFAULT_SYSTEM = "You are a helpful assistant."
DEFAULT_MAX_WINDOW = 6144


def load_tiktoken_ranks(path: Path) -> dict[bytes, int]:
    """``qwen.tiktoken``: one ``base64(token) rank`` pair per line."""
    ranks: dict[bytes, int] = {}
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ModelLoadError(f"cannot read {path} ({err})", "check the file's permissions") from None
    for number, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token, validate=True)] = int(rank)
        except ValueError:
            raise ModelLoadError(f"{path} line {number} is not 'base64-token rank'",
                                 "re-download qwen.tiktoken from the checkpoint") from None
    if not ranks:
        raise ModelLoadError(f"{path} is empty", "re-download qwen.tiktoken from the checkpoint")
    return ranks


class QwenTokenizer:
    """Qwen v1's tokenizer rebuilt from ``qwen.tiktoken`` (what QWenTokenizer does, minus transformers)."""

    def __init__(self, ranks: dict[bytes, int]) -> None:
        try:
            import tiktoken
        except ImportError:
            raise MissingPackageError("tiktoken", "Qwen (v1) prompts") from None
        self.special = {tok: SPECIAL_START_ID + i for i, tok in enumerate(SPECIAL_TOKENS)}
        clash = [t for t, i in self.special.items() if i < len(ranks)]
        if clash:
            raise ModelLoadError(f"qwen.tiktoken has {len(ranks)} ranks, overlapping Qwen's special ids from "
                                 f"{SPECIAL_START_ID}", "this is not a Qwen (v1) vocabulary")
        self.encoding = tiktoken.Encoding("qwen-v1", pat_str=PAT_STR, mergeable_ranks=ranks,
                                          special_tokens=self.special)
        self.ranks_size = len(ranks)
        self._bytes = {rank: token for token, rank in ranks.items()}
        self._bytes.update({i: tok.encode("utf-8") for tok, i in self.special.items()})
        self.eod_id = self.special[ENDOFTEXT]
        self.im_start_id = self.special[IM_START]
        self.im_end_id = self.special[IM_END]

    @classmethod
    def from_file(cls, path: Path) -> "QwenTokenizer":
        """Cached per file (path, size and mtime): building the BPE tables takes about half a second."""
        path = Path(path).resolve()
        try:
            stat = path.stat()
        except OSError as err:
            raise ModelLoadError(f"cannot read {path} ({err})", "check the file's permissions") from None
        return _cached_tokenizer(str(path), stat.st_size, stat.st_mtime_ns)

    def encode(self, text: str, *, allow_special: bool = False) -> list[int]:
        """NFC, then tiktoken; specials typed in ``text`` are plain text unless ``allow_special``."""
        text = unicodedata.normalize("NFC", text)
        allowed = "all" if allow_special else set()
        return self.encoding.encode(text, allowed_special=allowed, disallowed_special=())

    def is_special(self, token_id: int) -> bool:
        return token_id >= SPECIAL_START_ID

    def token_bytes(self, token_id: int) -> bytes:
        return self._bytes.get(token_id, b"")

    def pieces(self, ids: list[int]) -> list[str]:
        return [piece_from_bytes(self.token_bytes(i)) for i in ids]

    def decode(self, ids: list[int], *, skip_special: bool = True) -> str:
        keep = [i for i in ids if i in self._bytes and not (skip_special and i >= self.eod_id)]
        return b"".join(self._bytes[i] for i in keep).decode("utf-8", errors="replace")


@lru_cache(maxsize=4)
def _cached_tokenizer(path: str, size: int, mtime_ns: int) -> QwenTokenizer:
    return QwenTokenizer(load_tiktoken_ranks(Path(path)))


@dataclass
class _Part:
    """One message's tokens in the prompt (leading newline and framing included)."""

    index: int
    role: str
    text: str
    ids: list[int]


class QwenFamily:
    """Qwen (v1) ``make_context`` for ``chat_format`` "chatml" (and "raw")."""

    def __init__(self, tokenizer: QwenTokenizer, *, chat_format: str = "chatml",
                 max_window_size: int = DEFAULT_MAX_WINDOW, max_context: int | None = None,
                 default_system: str = DEFAULT_SYSTEM, name: str = "qwen", notes: list[str] | None = None) -> None:
        if chat_format not in ("chatml", "raw"):
            raise ModelLoadError(f"unknown Qwen chat_format {chat_format!r} in generation_config.json",
                                 "use a Qwen (v1) chat checkpoint (chat_format 'chatml')")
        self.tokenizer = tokenizer
        self.chat_format = chat_format
        self.max_window_size = max_window_size
        self.max_context = max_context
        self.default_system = default_system
        self.name = name
        self._notes = list(notes or [])  # about the checkpoint's files, in every view's warnings
        self._nl = tokenizer.encode("\n")

    @classmethod
    def from_dir(cls, model_dir: Path, *, max_context: int | None = None) -> "QwenFamily":
        model_dir = Path(model_dir)
        vocab = require_file(model_dir, "qwen.tiktoken", "the Qwen tokenizer's vocabulary")
        config = read_json(model_dir / "config.json")
        gen, note = read_generation_json(model_dir)
        tok_cfg = read_json(model_dir / "tokenizer_config.json")
        window = int_setting((gen, "max_window_size"), default=DEFAULT_MAX_WINDOW)
        context = max_context or int_setting((config, "seq_length"), (config, "max_position_embeddings"),
                                             (tok_cfg, "model_max_length"), default=None)
        return cls(QwenTokenizer.from_file(vocab), chat_format=gen.get("chat_format") or "chatml",
                   max_window_size=window, max_context=context, notes=[note] if note else [])

    # -- tokens --------------------------------------------------------------
    truncation_rule = "make_context's window (whole rounds, oldest first)"

    def narrowed(self, max_prompt_tokens: int, max_new_tokens: int | None = None) -> "QwenFamily":
        """This family with make_context's window at most ``max_prompt_tokens`` (see backends.truncation)."""
        narrow = copy.copy(self)
        narrow.max_window_size = max(1, min(self.max_window_size, int(max_prompt_tokens)))
        return narrow

    def stop_ids(self) -> list[int]:
        t = self.tokenizer
        if self.chat_format == "raw":
            return [t.eod_id]
        return [t.im_end_id, t.im_start_id, t.eod_id]

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids)

    def pieces(self, ids: list[int]) -> list[str]:
        return self.tokenizer.pieces(ids)

    # -- rendering -----------------------------------------------------------
    def _turn(self, role: str, content: str) -> tuple[str, list[int]]:
        """``<|im_start|>{role}\\n{content}<|im_end|>`` as make_context's _tokenize_str builds it."""
        t = self.tokenizer
        content = unicodedata.normalize("NFC", content)
        ids = [t.im_start_id] + t.encode(role) + self._nl + t.encode(content) + [t.im_end_id]
        return f"{IM_START}{role}\n{content}{IM_END}", ids

    #: Tools go into the question as the vendor's ReAct prompt asks it (``tools.formats``).
    supports_tools = True
    tool_call_format = "react"

    def render(self, messages: list[dict], *, add_generation_prompt: bool = True,
               max_new_tokens: int | None = None, tools: list[dict] | None = None) -> PromptView:
        if self.chat_format == "raw":
            return self._render_raw(messages)
        if any(m["role"] == "tool" for m in messages):  # tool rounds: each one reply, as openai_api.py has it
            merged, origin, continued = react_rounds(messages)
            view = (self._render_continued(merged, tools) if continued else
                    self.render(merged, add_generation_prompt=add_generation_prompt, tools=tools))
            view.spans = [replace(s, index=origin[s.index]) if s.index >= 0 else s for s in view.spans]
            view.dropped = [replace(d, index=origin[d.index]) for d in view.dropped]
            return view
        view = self._render_chat(messages, add_generation_prompt, tools)
        if tools:
            view.stop_texts = [QWEN_REACT_STOP]
        return view

    def _render_chat(self, messages: list[dict], add_generation_prompt: bool, tools: list[dict] | None) -> PromptView:
        system, system_index, history, query = _split_chat(messages)
        asked = messages[query]["content"] if query is not None else None
        warnings = _nfc_warnings(messages)

        sys_text, sys_ids = self._turn("system", system)
        sys_part = _Part(system_index, "system", sys_text, sys_ids)

        rounds = []
        for user_i, asst_i in history:
            u_text, u_ids = self._turn("user", messages[user_i]["content"])
            a_text, a_ids = self._turn("assistant", messages[asst_i]["content"])
            rounds.append((_Part(user_i, "user", "\n" + u_text, self._nl + u_ids),
                           _Part(asst_i, "assistant", "\n" + a_text, self._nl + a_ids)))

        kept: list[tuple[_Part, _Part]] = []
        kept_len = 0
        dropped: list[Dropped] = []
        for pos in range(len(rounds) - 1, -1, -1):
            user, asst = rounds[pos]
            size = len(user.ids) + len(asst.ids)
            if len(sys_ids) + size + kept_len < self.max_window_size:
                kept.insert(0, (user, asst))
                kept_len += size
                continue
            reason = f"history over max_window_size={self.max_window_size}"
            for old_user, old_asst in rounds[: pos + 1]:
                dropped.append(Dropped(old_user.index, "user", len(old_user.ids), reason=reason))
                dropped.append(Dropped(old_asst.index, "assistant", len(old_asst.ids), reason=reason))
            break

        parts = [sys_part] + [p for pair in kept for p in pair]
        tools_at = None
        if query is not None:
            q_text, q_ids = self._turn("user", qwen_react_query(tools, asked) if tools else asked)
            if tools:  # the instruction's tokens: where this question differs from the plain one
                plain = self._turn("user", asked)[1]
                start = common_prefix(q_ids, plain)
                end = len(q_ids) - common_prefix(q_ids[start:][::-1], plain[start:][::-1])
                before = sum(len(p.ids) for p in parts) + len(self._nl)
                tools_at = (before + start, before + end)
            parts.append(_Part(query, "user", "\n" + q_text, self._nl + q_ids))
        if add_generation_prompt and query is not None:
            t = self.tokenizer
            gen_ids = self._nl + [t.im_start_id] + t.encode("assistant") + self._nl
            parts.append(_Part(-1, "generation", f"\n{IM_START}assistant\n", gen_ids))
        elif add_generation_prompt:
            warnings.append("the conversation ends with an assistant reply: no generation prompt added"
                            if history else "no user message: the prompt is the system prompt alone")

        if tools and query is None:
            warnings.append("no question to put the tools in: Qwen's ReAct prompt asks the last user message")
        view = self._view(parts, dropped, warnings)
        if tools_at is not None:
            view.spans = split_spans(view.spans, *tools_at)
        if self.max_context and len(view.ids) > self.max_context:
            view.warnings.append(f"prompt is {len(view.ids)} tokens, over the model's context of {self.max_context}")
        return view

    def _render_continued(self, merged: list[dict], tools: list[dict] | None) -> PromptView:
        """``text_complete_last_message``: the reply that called a tool goes on after its observation.

        The prompt is written as one text — system, every round, the last reply left open (no
        ``<|im_end|>``) — and encoded whole with special tokens live (``tokenizer.encode(prompt)``);
        the last round's question carries the ReAct instruction. No window is applied, as there.
        """
        system, system_index, history, _ = _split_chat(merged)
        system = system.lstrip("\n").rstrip()
        parts = [self._text_part(system_index, "system", f"{IM_START}system\n{system}{IM_END}")]
        tools_at = None
        for n, (user_i, asst_i) in enumerate(history):
            last = n == len(history) - 1
            asked = merged[user_i]["content"].lstrip("\n").rstrip()
            if last and tools:
                plain = self._text_part(user_i, "user", f"\n{IM_START}user\n{asked}{IM_END}").ids
                asked = qwen_react_query(tools, asked)
            part = self._text_part(user_i, "user", f"\n{IM_START}user\n{asked}{IM_END}")
            if last and tools:
                start = common_prefix(part.ids, plain)
                end = len(part.ids) - common_prefix(part.ids[start:][::-1], plain[start:][::-1])
                before = sum(len(p.ids) for p in parts)
                tools_at = (before + start, before + end)
            parts.append(part)
            said = merged[asst_i]["content"].lstrip("\n").rstrip()
            parts.append(self._text_part(asst_i, "assistant",
                                         f"\n{IM_START}assistant\n{said}" + ("" if last else IM_END)))
        view = self._view(parts, [], ["the reply goes on after the tool's result in the same assistant turn, as "
                                      "Qwen's openai_api.py does it: the prompt is encoded as one text"])
        view.stop_texts = [QWEN_REACT_STOP]
        if tools_at is not None:
            view.spans = split_spans(view.spans, *tools_at)
        return view

    def _text_part(self, index: int, role: str, text: str) -> _Part:
        text = unicodedata.normalize("NFC", text)
        return _Part(index, role, text, self.tokenizer.encode(text, allow_special=True))

    def _render_raw(self, messages: list[dict]) -> PromptView:
        """``chat_format`` "raw": the prompt is the query alone, specials in it are live."""
        if not messages:
            raise UsageError("no messages to render", "add a user message")
        index = len(messages) - 1
        content = unicodedata.normalize("NFC", messages[index]["content"])
        ids = self.tokenizer.encode(content, allow_special=True)
        warnings = _nfc_warnings(messages, only=index)
        if index:
            warnings.append(f"chat_format 'raw' sends only the last message; {index} earlier ignored")
        warnings.append("chat_format 'raw' also stops on the text 'Human:'")
        return self._view([_Part(index, messages[index]["role"], content, ids)], [], warnings)

    def _view(self, parts: list[_Part], dropped: list[Dropped], warnings: list[str]) -> PromptView:
        ids: list[int] = []
        spans: list[Span] = []
        for part in parts:
            if part.ids:
                spans.append(Span(part.index, part.role, len(ids), len(ids) + len(part.ids)))
            ids.extend(part.ids)
        return PromptView(
            family=self.name,
            text="".join(p.text for p in parts),
            ids=ids,
            pieces=self.tokenizer.pieces(ids),
            special=[self.tokenizer.is_special(i) for i in ids],
            spans=spans,
            dropped=dropped,
            warnings=[*self._notes, *warnings],
            max_context=self.max_context,
            stop_ids=self.stop_ids(),
        )


def _split_chat(messages: list[dict]) -> tuple[str, int, list[tuple[int, int]], int | None]:
    """(system text, its index or -1, [(user_i, assistant_i)...], query index or None)."""
    rest = list(range(len(messages)))
    system, system_index = DEFAULT_SYSTEM, -1
    if messages and messages[0]["role"] == "system":
        system, system_index = messages[0]["content"], 0
        rest = rest[1:]
    for i in rest:
        role = messages[i]["role"]
        if role == "system":
            raise UsageError(f"message {i} is a system message; Qwen (v1) takes one, first",
                             "put the system prompt first or merge the system messages")
        if role not in ("user", "assistant"):
            raise UsageError(f"message {i} has role {role!r}; Qwen (v1) knows system, user and assistant",
                             "use only system, user and assistant messages")
    query = None
    if rest and messages[rest[-1]]["role"] == "user":
        query = rest.pop()
    if len(rest) % 2:
        raise UsageError("Qwen (v1) history must be user/assistant pairs",
                         "alternate user and assistant messages, ending with a user message")
    pairs = []
    for k in range(0, len(rest), 2):
        u, a = rest[k], rest[k + 1]
        if messages[u]["role"] != "user" or messages[a]["role"] != "assistant":
            raise UsageError(f"messages {u} and {a} are not a user message followed by an assistant reply",
                             "alternate user and assistant messages, ending with a user message")
        pairs.append((u, a))
    return system, system_index, pairs, query


def react_rounds(messages: list[dict]) -> tuple[list[dict], list[int], bool]:
    """``parse_messages`` of Qwen's openai_api.py: a tool's result joins the reply that called it as
    ``\nObservation: RESULT\nThought:``, and what the model went on with joins the same reply.

    Returns the merged messages, the index in ``messages`` each one starts at, and whether the last
    reply is to be continued (the conversation ends with a result)."""
    merged: list[dict] = []
    origin: list[int] = []
    for index, message in enumerate(messages):
        role, content = message["role"], message["content"]
        if role == "tool":
            if not merged or merged[-1]["role"] != "assistant":
                raise UsageError(f"message {index} is a tool's result with no reply before it that called the tool",
                                 "a tool result follows the assistant reply that made the call")
            merged[-1]["content"] += f"\nObservation: {content.lstrip(chr(10)).rstrip()}\nThought:"
        elif role == "assistant" and merged and merged[-1]["role"] == "assistant":
            after_result = merged[-1]["content"].endswith("\nThought:")
            merged[-1]["content"] += ("" if after_result else "\n") + content.lstrip("\n").rstrip()
        else:  # each content as parse_messages takes it: no newlines before, no space after
            merged.append({**message, "content": content.lstrip("\n").rstrip() if role == "assistant" else content})
            origin.append(index)
    return merged, origin, messages[-1]["role"] == "tool"


def _nfc_warnings(messages: list[dict], only: int | None = None) -> list[str]:
    changed = [str(i) for i, m in enumerate(messages)
               if (only is None or i == only) and unicodedata.normalize("NFC", m["content"]) != m["content"]]
    if not changed:
        return []
    return [f"message(s) {', '.join(changed)} are not NFC-normalised; the tokenizer normalises them "
            "(text shows the normalised form)"]
