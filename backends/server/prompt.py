"""The prompt as the server itself renders it, where it can say: prompt families over HTTP.

``VllmPrompt`` asks vLLM's ``/tokenize`` to render the chat messages with the
served model's own template (IDs and token strings); ``LlamaServerPrompt``
asks llama-server's ``/apply-template`` for the text and ``/tokenize`` for
its IDs and pieces. Either gives a real ``PromptView`` of what that server
will read, and the IDs can be sent back as the prompt. ``NoPreview`` is what
remains for a server that renders prompts privately: it says so.
"""

from __future__ import annotations

from backends.checkpoint.locate import locate
from backends.core.errors import LlmTuiError
from backends.core.spec import ModelSpec
from backends.prompt.family_for import family_for
from backends.prompt.view import PromptView, byte_level_decoder, piece_from_bytes
from backends.server.chat_api import api_messages
from backends.server.client import ServerClient
from backends.server.probe import ServerInfo


def readable_piece(token: str) -> str:
    """A token string as a tokenizer's vocabulary spells it (``Ġthe``, ``▁the``, ``<0x0A>``) → its text."""
    if token.startswith("<") and token.endswith(">") and len(token) > 2:
        return token  # a special token, or a byte token the inspector shows as it is
    table = byte_level_decoder()
    if all(ch in table for ch in token):
        return piece_from_bytes(bytes(table[ch] for ch in token))
    return token.replace("▁", " ")


def _is_special(token: str) -> bool:
    return token.startswith("<") and token.endswith(">") and len(token) > 2 and not token.startswith("<0x")


class VllmPrompt:
    """vLLM renders the messages with the served model's chat template (``/tokenize``)."""

    def __init__(self, client: ServerClient, info: ServerInfo) -> None:
        self.client = client
        self.info = info
        self.name = "server template (vLLM)"
        self.max_context = info.max_context

    #: Tools go to the server, which renders them with the model's template (``/tokenize``'s ``tools``).
    supports_tools = True

    def render(self, messages: list[dict], *, add_generation_prompt: bool = True,
               max_new_tokens: int | None = None, tools: list[dict] | None = None) -> PromptView:
        body = {"model": self.info.model, "messages": api_messages(messages),
                "add_generation_prompt": add_generation_prompt, "return_token_strs": True}
        if tools:
            body["tools"] = tools
        data = self.client.post_json("/tokenize", body)
        ids = [int(i) for i in data.get("tokens") or []]
        strs = data.get("token_strs") or [None] * len(ids)
        pieces = [readable_piece(s) if s is not None else f"<{i}>" for s, i in zip(strs, ids)]
        text = self.client.post_json("/detokenize", {"model": self.info.model, "tokens": ids}).get("prompt", "")
        return PromptView(self.name, text, ids, pieces, [bool(s) and _is_special(s) for s in strs],
                          max_context=data.get("max_model_len") or self.max_context)

    def stop_ids(self) -> list[int]:
        return []  # the server stops at the model's own end-of-turn tokens

    def decode(self, ids: list[int]) -> str:
        return self.client.post_json("/detokenize", {"model": self.info.model, "tokens": list(ids)}).get("prompt", "")


class LlamaServerPrompt:
    """llama-server renders the messages with the GGUF's chat template (``/apply-template``) and
    tokenizes the text as it will (``/tokenize`` with pieces)."""

    def __init__(self, client: ServerClient, info: ServerInfo) -> None:
        self.client = client
        self.info = info
        self.name = "server template (llama.cpp)"
        self.max_context = info.max_context

    #: Tools go to the server, which renders them with the GGUF's template (``/apply-template``'s ``tools``).
    supports_tools = True

    def render(self, messages: list[dict], *, add_generation_prompt: bool = True,
               max_new_tokens: int | None = None, tools: list[dict] | None = None) -> PromptView:
        body = {"messages": api_messages(messages), **({"tools": tools} if tools else {})}
        text = self.client.post_json("/apply-template", body).get("prompt", "")
        data = self.client.post_json("/tokenize", {"content": text, "add_special": True, "parse_special": True,
                                                   "with_pieces": True})
        ids, pieces, special = [], [], []
        for token in data.get("tokens") or []:
            if isinstance(token, dict):
                ids.append(int(token["id"]))
                piece = token.get("piece", "")
                pieces.append(piece if isinstance(piece, str) else piece_from_bytes(bytes(piece)))
            else:
                ids.append(int(token))
                pieces.append(f"<{token}>")
            special.append(_is_special(pieces[-1]))
        return PromptView(self.name, text, ids, pieces, special, max_context=self.max_context)

    def stop_ids(self) -> list[int]:
        return []

    def decode(self, ids: list[int]) -> str:
        return self.client.post_json("/detokenize", {"tokens": list(ids)}).get("content", "")


class NoPreview:
    """A server that renders its prompt privately, and no local tokenizer for it: nothing to show."""

    def __init__(self, info: ServerInfo) -> None:
        self.info = info
        self.name = f"server template ({info.kind})"
        self.max_context = info.max_context

    #: Tools go to the server with the messages; how it renders them is not seen here either.
    supports_tools = True

    def render(self, messages: list[dict], *, add_generation_prompt: bool = True,
               max_new_tokens: int | None = None, tools: list[dict] | None = None) -> PromptView:
        return PromptView(self.name, "", [], [], [], max_context=self.max_context, warnings=[
            f"{self.info.kind} renders the prompt itself and does not show it; give --tokenizer DIR (the "
            "model's tokenizer files) to preview it, and the token count is then checked after each turn"])

    def stop_ids(self) -> list[int]:
        return []

    def decode(self, ids: list[int]) -> str:
        return ""


def server_prompt(client: ServerClient, info: ServerInfo, tokenizer: str | None = None):
    """The best preview of a server's prompt: a local tokenizer's (``--tokenizer``, or the served
    model's id when it names a local checkpoint), else the server's own rendering, else none.

    Returns ``(family, local)``; a local family renders the model's template here.
    """
    for source in (tokenizer, info.model):
        if not source:
            continue
        try:
            located = locate(ModelSpec(source=source))
            return family_for(located, trust_remote_code=False), True
        except LlmTuiError:
            if source == tokenizer:
                raise
    if info.tokenizes_messages:
        return VllmPrompt(client, info), False
    if info.applies_template:
        return LlamaServerPrompt(client, info), False
    return NoPreview(info), False
