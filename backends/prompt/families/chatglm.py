"""ChatGLM3 prompts, rebuilt without the checkpoint's Python code.

ChatGLM3-6B's ``tokenization_chatglm.py`` wraps a SentencePiece model and
appends its own specials right after the SentencePiece vocabulary, in this
order: ``[MASK] [gMASK] [sMASK] sop eop <|system|> <|user|> <|assistant|>
<|observation|>`` (64789..64797 with the real vocabulary).

``build_chat_input`` writes ``[gMASK] sop``, then per message
``<|role|>`` + encode(f"{metadata}\\n") + encode(content), each encode a
separate SentencePiece call (so each starts with the dummy-prefix piece and
special tokens typed in a message stay plain text), then a bare
``<|assistant|>``. Nothing is truncated; ``max_length`` (8192) counts the
prompt and the reply together. ``stream_chat`` with ``past_key_values`` sends
only the new turn (again prefixed with ``[gMASK] sop``): see
:meth:`ChatGLM3Family.render_incremental`.
"""

from __future__ import annotations

from pathlib import Path

from backends.core.errors import UsageError
from backends.core.files import read_json
from backends.prompt.families.sp_tokens import (
    SentencePieceVocab,
    int_setting,
    require_file,
)
from backends.prompt.tools.formats import chatglm3_tools_text
from backends.prompt.view import TOOLS_SPAN, PromptView, Span, piece_from_bytes

SPECIAL_TOKENS = ("[MASK]", "[gMASK]", "[sMASK]", "sop", "eop",
                  "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>")
ROLES = ("system", "user", "assistant", "observation")
DEFAULT_MAX_LENGTH = 8192


class ChatGLM3Family:
    """ChatGLM3's ``build_chat_input`` over a SentencePiece ``tokenizer.model``."""

    def __init__(self, vocab: SentencePieceVocab, *, max_context: int | None = DEFAULT_MAX_LENGTH,
                 name: str = "chatglm3") -> None:
        self.vocab = vocab
        self.name = name
        self.max_context = max_context
        self.special = {tok: vocab.size + i for i, tok in enumerate(SPECIAL_TOKENS)}
        self._special_text = {i: tok for tok, i in self.special.items()}
        self.eos_id = vocab.sp.eos_id()

    @classmethod
    def from_dir(cls, model_dir: Path, *, max_context: int | None = None) -> "ChatGLM3Family":
        model_dir = Path(model_dir)
        vocab = SentencePieceVocab(require_file(model_dir, "tokenizer.model",
                                                "ChatGLM3's SentencePiece vocabulary"))
        config = read_json(model_dir / "config.json")
        context = max_context or int_setting((config, "seq_length"), (config, "max_position_embeddings"),
                                             default=DEFAULT_MAX_LENGTH)
        return cls(vocab, max_context=context)

    # -- tokens --------------------------------------------------------------
    def command(self, token: str) -> int:
        return self.special[token]

    def stop_ids(self) -> list[int]:
        return [self.eos_id, self.special["<|user|>"], self.special["<|observation|>"]]

    def is_special(self, token_id: int) -> bool:
        return token_id in self._special_text or self.vocab.is_meta(token_id)

    def token_bytes(self, token_id: int) -> bytes:
        if token_id in self._special_text:
            return self._special_text[token_id].encode("utf-8")
        return self.vocab.token_bytes(token_id)

    def pieces(self, ids: list[int]) -> list[str]:
        return [piece_from_bytes(self.token_bytes(i)) for i in ids]

    def decode(self, ids: list[int]) -> str:
        return self.vocab.decode([i for i in ids if i not in self._special_text])

    # -- rendering -----------------------------------------------------------
    def message_ids(self, role: str, content: str, metadata: str = "") -> list[int]:
        """``build_single_message``: role token, encode(metadata + newline), encode(content)."""
        if role not in ROLES:
            raise UsageError(f"ChatGLM3 has no role {role!r}",
                             "use system, user, assistant, tool or observation messages")
        return ([self.special[f"<|{role}|>"]] + self.vocab.encode(f"{metadata}\n")
                + self.vocab.encode(content))

    @staticmethod
    def message_text(role: str, content: str, metadata: str = "") -> str:
        return f"<|{role}|>{metadata}\n{content}"

    #: Tools go in a system message of their own, as the vendor's tool demo writes it; calls come
    #: back as a tool name line and ``tool_call(...)`` (``backends.prompt.tools.calls``).
    supports_tools = True
    tool_call_format = "chatglm3"

    def render(self, messages: list[dict], *, add_generation_prompt: bool = True,
               max_new_tokens: int | None = None, tools: list[dict] | None = None) -> PromptView:
        return self._render(list(enumerate(messages)), add_generation_prompt, max_new_tokens, "full", tools)

    def render_incremental(self, messages: list[dict], *, add_generation_prompt: bool = True,
                           max_new_tokens: int | None = None) -> PromptView:
        """What ``stream_chat(..., past_key_values=...)`` feeds: the last message only.

        The earlier turns (and the previous reply, minus its stop token) are in
        the cache; the new input starts again with ``[gMASK] sop``.
        """
        if not messages:
            raise UsageError("no messages to render", "add a user message")
        last = len(messages) - 1
        return self._render([(last, messages[last])], add_generation_prompt, max_new_tokens, "incremental")

    def _render(self, indexed: list[tuple[int, dict]], add_generation_prompt: bool,
                max_new_tokens: int | None, mode: str, tools: list[dict] | None = None) -> PromptView:
        ids = [self.special["[gMASK]"], self.special["sop"]]
        text = "[gMASK]sop"
        spans = [Span(-1, "prefix", 0, 2)]
        if tools:  # build_chat_input: a system message's tools follow its content, json.dumps(indent=4)
            content = chatglm3_tools_text(tools)
            part = self.message_ids("system", content)
            spans.append(Span(TOOLS_SPAN, "tools", len(ids), len(ids) + len(part)))
            ids += part
            text += self.message_text("system", content)
        for index, message in indexed:
            metadata = message.get("metadata") or ""
            role = "observation" if message["role"] == "tool" else message["role"]  # a tool's result
            part = self.message_ids(role, message["content"], metadata)
            spans.append(Span(index, role, len(ids), len(ids) + len(part)))
            ids += part
            text += self.message_text(role, message["content"], metadata)
        if add_generation_prompt:
            spans.append(Span(-1, "generation", len(ids), len(ids) + 1))
            ids.append(self.special["<|assistant|>"])
            text += "<|assistant|>"
        view = PromptView(
            family=self.name,
            text=text,
            ids=ids,
            pieces=self.pieces(ids),
            special=[self.is_special(i) for i in ids],
            spans=spans,
            max_context=self.max_context,
            stop_ids=self.stop_ids(),
            mode=mode,
        )
        view.warnings.extend(self._warnings(len(ids), max_new_tokens, mode))
        return view

    def _warnings(self, length: int, max_new_tokens: int | None, mode: str) -> list[str]:
        if not self.max_context:
            return []
        what = "this turn" if mode == "incremental" else "prompt"
        if length >= self.max_context:
            return [f"{what} is {length} tokens, at or over max_length={self.max_context} (prompt and reply "
                    "together); ChatGLM3 does not truncate: shorten the conversation"]
        if max_new_tokens and length + max_new_tokens > self.max_context:
            return [f"{what} is {length} tokens: only {self.max_context - length} of max_new_tokens="
                    f"{max_new_tokens} fit in max_length={self.max_context}"]
        return []
