"""Baichuan2 chat prompts, rebuilt without the checkpoint's Python code.

Baichuan2-Chat's ``generation_utils.build_chat_input``: the system text as
plain tokens, then per message ``user_token_id`` (195, ``<reserved_106>``) or
``assistant_token_id`` (196, ``<reserved_107>``) followed by the content's
tokens, with no separator and no EOS between turns, ending with the assistant
id when the last message is not the assistant's.

Budget ``model_max_length - max_new_tokens`` (4096 and 2048 by default).
Rounds (a user message and what follows it) are walked newest to oldest: the
newest is always kept, older ones while they fit beside the system prompt,
and the walk stops at the first that does not. Finally only the last
``budget`` tokens are kept, which can cut into the system prompt.

Contents go through ``BaichuanTokenizer.encode``: a plain SentencePiece model,
``<s>``/``</s>``/``<unk>`` typed in the text split out as special tokens (as
transformers' slow tokenizers do), BOS/EOS added per call only when
``add_bos_token``/``add_eos_token`` say so (both off in Baichuan2-Chat).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path

from backends.core.errors import UsageError
from backends.core.files import read_json
from backends.prompt.families.generation_json import read_generation_json
from backends.prompt.families.sp_tokens import (
    SentencePieceVocab,
    clip_spans,
    int_setting,
    require_file,
    token_content,
)
from backends.prompt.view import Dropped, PromptView, Span, piece_from_bytes

DEFAULT_MODEL_MAX_LENGTH = 4096
DEFAULT_MAX_NEW_TOKENS = 2048
DEFAULT_USER_ID = 195
DEFAULT_ASSISTANT_ID = 196


@dataclass(frozen=True)
class _AddedToken:
    content: str
    token_id: int
    lstrip: bool = False
    rstrip: bool = False
    single_word: bool = False


class BaichuanTokenizer:
    """``BaichuanTokenizer.encode`` without its Python file: SentencePiece plus the slow-tokenizer split."""

    def __init__(self, vocab: SentencePieceVocab, *, tokenizer_config: dict | None = None) -> None:
        cfg = tokenizer_config or {}
        self.vocab = vocab
        self.add_bos = bool(cfg.get("add_bos_token", True))
        self.add_eos = bool(cfg.get("add_eos_token", False))
        defaults = {"unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>", "pad_token": None}
        self.added: dict[str, _AddedToken] = {}
        for key, default in defaults.items():
            value = cfg.get(key, default)
            content = token_content(value)
            if not content:
                continue
            token_id = vocab.id_of(content)
            if token_id == vocab.sp.unk_id() and content != vocab.piece(token_id):
                continue
            flags = value if isinstance(value, dict) else {}
            self.added[content] = _AddedToken(content, token_id, bool(flags.get("lstrip")),
                                              bool(flags.get("rstrip")), bool(flags.get("single_word")))
        self.bos_id = vocab.sp.bos_id()
        self.eos_id = vocab.sp.eos_id()
        names = sorted(self.added, key=len, reverse=True)
        self._split_re = re.compile("(" + "|".join(re.escape(n) for n in names) + ")") if names else None

    def _chunks(self, text: str) -> list[str]:
        """transformers' slow ``tokenize``: split on added tokens, then their strip/single_word rules."""
        if self._split_re is None:
            return [text]
        parts = self._split_re.split(text)
        for i, part in enumerate(parts):
            if i % 2 == 0:
                continue
            tok = self.added[part]
            left = parts[i - 1] if i > 0 else None
            right = parts[i + 1] if i < len(parts) - 1 else None
            if tok.rstrip and right:
                parts[i + 1] = right.lstrip()
            if tok.lstrip and left:
                parts[i - 1] = left.rstrip()
            if tok.single_word and left and left[-1] != " ":
                parts[i - 1] += part
                parts[i] = ""
            elif tok.single_word and right and right[0] != " ":
                parts[i] += right
                parts[i + 1] = ""
        return parts

    def encode(self, text: str) -> list[int]:
        ids = [self.bos_id] if self.add_bos else []
        for chunk in self._chunks(text):
            if not chunk:
                continue
            if chunk in self.added:
                ids.append(self.added[chunk].token_id)
            else:
                ids.extend(self.vocab.encode(chunk))
        if self.add_eos:
            ids.append(self.eos_id)
        return ids

    def framed_text(self, text: str) -> str:
        """``text`` with the BOS/EOS that :meth:`encode` adds written out."""
        bos = self.vocab.piece(self.bos_id) if self.add_bos else ""
        eos = self.vocab.piece(self.eos_id) if self.add_eos else ""
        return f"{bos}{text}{eos}"

    def typed_specials(self, text: str) -> list[str]:
        """Added tokens typed in ``text`` that become special ids."""
        return [c for c in self._chunks(text)[1::2] if c in self.added]


class Baichuan2Family:
    """Baichuan2-Chat's ``build_chat_input`` over ``tokenizer.model``."""

    def __init__(self, tokenizer: BaichuanTokenizer, *, user_token_id: int = DEFAULT_USER_ID,
                 assistant_token_id: int = DEFAULT_ASSISTANT_ID,
                 model_max_length: int = DEFAULT_MODEL_MAX_LENGTH,
                 default_max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, eos_ids: list[int] | None = None,
                 max_context: int | None = None, name: str = "baichuan2", notes: list[str] | None = None) -> None:
        self.tokenizer = tokenizer
        self.vocab = tokenizer.vocab
        self.user_token_id = user_token_id
        self.assistant_token_id = assistant_token_id
        self.model_max_length = model_max_length
        self.default_max_new_tokens = default_max_new_tokens
        self.max_context = max_context or model_max_length
        self.name = name
        self._eos_ids = list(eos_ids) if eos_ids else [tokenizer.eos_id]
        self._notes = list(notes or [])
        self._special_ids = {user_token_id, assistant_token_id}
        self._special_ids.update(t.token_id for t in tokenizer.added.values())

    @classmethod
    def from_dir(cls, model_dir: Path, *, max_context: int | None = None) -> "Baichuan2Family":
        model_dir = Path(model_dir)
        vocab = SentencePieceVocab(require_file(model_dir, "tokenizer.model",
                                                "Baichuan's SentencePiece vocabulary"))
        config = read_json(model_dir / "config.json")
        gen, note = read_generation_json(model_dir)
        tok_cfg = read_json(model_dir / "tokenizer_config.json")
        notes = [note] if note else []
        user_id = int_setting((gen, "user_token_id"), default=None)
        assistant_id = int_setting((gen, "assistant_token_id"), default=None)
        if user_id is None or assistant_id is None:
            notes.append("generation_config.json has no user_token_id/assistant_token_id: "
                         f"using Baichuan2's {DEFAULT_USER_ID}/{DEFAULT_ASSISTANT_ID}")
            user_id = DEFAULT_USER_ID if user_id is None else user_id
            assistant_id = DEFAULT_ASSISTANT_ID if assistant_id is None else assistant_id
        eos = gen.get("eos_token_id")
        eos_ids = [eos] if isinstance(eos, int) else None
        if isinstance(eos, list):
            eos_ids = [i for i in eos if isinstance(i, int)] or None
        return cls(
            BaichuanTokenizer(vocab, tokenizer_config=tok_cfg),
            user_token_id=user_id,
            assistant_token_id=assistant_id,
            model_max_length=int_setting((config, "model_max_length"), (tok_cfg, "model_max_length"),
                                         default=DEFAULT_MODEL_MAX_LENGTH),
            default_max_new_tokens=int_setting((gen, "max_new_tokens"), default=DEFAULT_MAX_NEW_TOKENS),
            eos_ids=eos_ids,
            max_context=max_context,
            notes=notes,
        )

    # -- tokens --------------------------------------------------------------
    truncation_rule = "build_chat_input's budget (whole rounds, then the start of the prompt)"

    def narrowed(self, max_prompt_tokens: int, max_new_tokens: int | None = None) -> "Baichuan2Family":
        """This family with ``model_max_length - max_new_tokens`` at most ``max_prompt_tokens``
        (see backends.truncation): its own slice then keeps the last that many tokens."""
        narrow = copy.copy(self)
        new_tokens = max_new_tokens or self.default_max_new_tokens
        narrow.model_max_length = min(self.model_max_length, max(1, int(max_prompt_tokens)) + new_tokens)
        return narrow

    def stop_ids(self) -> list[int]:
        return list(self._eos_ids)

    def is_special(self, token_id: int) -> bool:
        return token_id in self._special_ids or self.vocab.is_meta(token_id)

    def pieces(self, ids: list[int]) -> list[str]:
        return [piece_from_bytes(self.vocab.token_bytes(i)) for i in ids]

    def decode(self, ids: list[int]) -> str:
        return self.vocab.decode([i for i in ids if i not in self._special_ids])

    def _text_of(self, ids: list[int]) -> str:
        """Text of token bytes, special and control tokens written as their names."""
        out, buf = [], b""
        for i in ids:
            if self.is_special(i):
                out.append(buf.decode("utf-8", errors="replace") + self.vocab.piece(i))
                buf = b""
            else:
                buf += self.vocab.token_bytes(i)
        out.append(buf.decode("utf-8", errors="replace"))
        return "".join(out)

    # -- rendering -----------------------------------------------------------
    def render(self, messages: list[dict], *, add_generation_prompt: bool = True,
               max_new_tokens: int | None = None) -> PromptView:
        system, system_index, rounds = _split_rounds(messages)
        new_tokens = max_new_tokens or self.default_max_new_tokens
        budget = self.model_max_length - new_tokens
        warnings = list(self._notes)

        system_ids = self.tokenizer.encode(system)
        history_budget = budget - len(system_ids)

        encoded = []
        for rnd in rounds:
            parts = []
            for index in rnd:
                role = messages[index]["role"]
                marker = self.user_token_id if role == "user" else self.assistant_token_id
                parts.append((index, role, [marker] + self.tokenizer.encode(messages[index]["content"])))
            encoded.append(parts)

        kept: list[list[tuple[int, str, list[int]]]] = []
        kept_len = 0
        dropped: list[Dropped] = []
        for pos in range(len(encoded) - 1, -1, -1):
            size = sum(len(p[2]) for p in encoded[pos])
            if not kept or kept_len + size <= history_budget:
                kept.insert(0, encoded[pos])
                kept_len += size
                if kept_len < history_budget:
                    continue
                older = encoded[:pos]
            else:
                older = encoded[: pos + 1]
            reason = f"history over model_max_length - max_new_tokens = {budget}"
            dropped.extend(Dropped(i, role, len(part), reason=reason) for rnd in older for i, role, part in rnd)
            break

        pieces: list[tuple[Span, str]] = []
        ids: list[int] = []

        def add(index: int, role: str, part: list[int], text: str) -> None:
            if part:
                pieces.append((Span(index, role, len(ids), len(ids) + len(part)), text))
                ids.extend(part)

        add(system_index, "system", system_ids, self.tokenizer.framed_text(system))
        for rnd in kept:
            for index, role, part in rnd:
                text = self.tokenizer.framed_text(messages[index]["content"])
                add(index, role, part, self.vocab.piece(part[0]) + text)
        if add_generation_prompt and (not messages or messages[-1]["role"] != "assistant"):
            add(-1, "generation", [self.assistant_token_id], self.vocab.piece(self.assistant_token_id))

        if budget <= 0:
            warnings.append(f"max_new_tokens={new_tokens} leaves no room in model_max_length="
                            f"{self.model_max_length}: Baichuan2's slice ids[-{budget}:] "
                            + ("keeps everything" if budget == 0 else f"drops the first {-budget} tokens"))
        cut = len(ids) - len(ids[-budget:])
        texts = []
        reason = f"prompt cut to its last {budget} tokens"
        for span, text in pieces:
            if span.end <= cut:
                dropped.append(Dropped(span.index, span.role, span.end - span.start, reason=reason))
            elif span.start < cut:
                dropped.append(Dropped(span.index, span.role, cut - span.start, partial=True, reason=reason))
                texts.append(self._text_of(ids[cut:span.end]))
            else:
                texts.append(text)
        spans = clip_spans([span for span, _ in pieces], cut)
        ids = ids[cut:]

        for i, m in enumerate(messages):
            typed = self.tokenizer.typed_specials(m["content"])
            if typed:
                warnings.append(f"message {i} contains {', '.join(sorted(set(typed)))}, which the tokenizer "
                                "turns into special tokens")
        if self.tokenizer.add_bos and len(pieces) > 1:
            warnings.append("add_bos_token is on: every encoded part starts with BOS")

        return PromptView(
            family=self.name,
            text="".join(texts),
            ids=ids,
            pieces=self.pieces(ids),
            special=[self.is_special(i) for i in ids],
            spans=spans,
            dropped=dropped,
            warnings=warnings,
            max_context=self.max_context,
            stop_ids=self.stop_ids(),
        )


def _split_rounds(messages: list[dict]) -> tuple[str, int, list[list[int]]]:
    """``_parse_messages``: the system text (first message only), then rounds split at user messages."""
    system, system_index = "", -1
    rounds: list[list[int]] = []
    current: list[int] = []
    for i, message in enumerate(messages):
        role = message["role"]
        if role == "system":
            if i != 0:
                raise UsageError(f"message {i} is a system message; Baichuan2 takes one, first",
                                 "put the system prompt first or merge the system messages")
            system, system_index = message["content"], 0
            continue
        if role not in ("user", "assistant"):
            raise UsageError(f"message {i} has role {role!r}; Baichuan2 knows system, user and assistant",
                             "use only system, user and assistant messages")
        if role == "user" and current:
            rounds.append(current)
            current = []
        current.append(i)
    if current:
        rounds.append(current)
    return system, system_index, rounds
