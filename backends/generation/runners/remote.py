"""A turn on a server: the OpenAI-compatible API, streamed, with the prompt checked as far as the server allows.

Where the server takes token IDs as the prompt (vLLM, llama-server), the
previewed IDs themselves are sent to ``/v1/completions``: what the engine
reads is the preview, by construction, and vLLM echoes the IDs back for the
check. Elsewhere the messages go to ``/v1/chat/completions`` and the prompt
token count in ``usage`` is compared with the preview's. Stopping closes the
stream, which makes the server cancel the request.

Tools: where the calls can be read here from the reply's text (the local
template's format), they are in the previewed IDs like any prompt. Otherwise
the messages and the tools go to the chat API, and the server reads the calls
itself: its ``tool_calls`` deltas are joined and handed to the sink.
"""

from __future__ import annotations

import threading

from backends.core.events import Alternative, TokenInfo
from backends.core.params import SamplingParams
from backends.generation.runners.base import Sink
from backends.prompt.view import PromptView
from backends.server.chat_api import api_messages
from backends.server.client import EventStream, ServerClient, ServerError
from backends.server.metrics import ServerMetrics, prefix_cache_hits, read_metrics, server_cached_tokens
from backends.server.probe import ServerInfo

#: How often a waiting stream looks at the stop flag (a server may be silent for a long prefill).
STOP_POLL_SECONDS = 0.05
#: Servers that take the sampling parameters beyond OpenAI's (top_k, repetition_penalty).
_EXTENDED = ("vllm", "llama.cpp", "sglang")
_ENDED = {"stop": "eos", "eos": "eos", "length": "length"}


class RemoteRunner:
    name = "remote"

    def __init__(self, client: ServerClient, info: ServerInfo, *, sends_ids: bool, reads_calls: bool = False) -> None:
        self.client = client
        self.info = info
        #: The prompt goes as the previewed token IDs (False: as chat messages).
        self.sends_ids = sends_ids
        self.takes_ids = sends_ids  # a branch can go on from token IDs
        #: Tool calls can be read here from the reply's text (the local template's format is known);
        #: otherwise a turn with tools goes to the chat API and the server reads them.
        self.reads_calls = reads_calls

    def run(self, model, view: PromptView, params: SamplingParams, sink: Sink) -> list[int]:
        body = self._sampling(params)
        if view.stop_texts:  # a stop word of the prompt's format (Qwen v1's ReAct "Observation:")
            body["stop"] = list(view.stop_texts)
        as_ids = self.sends_ids and bool(view.ids) and not (view.tools and not self.reads_calls)
        if params.top_logprobs:  # where the server gives them: the token's and the K likeliest
            body.update({"logprobs": params.top_logprobs} if as_ids else
                        {"logprobs": True, "top_logprobs": params.top_logprobs})
        if as_ids:
            path = "/v1/completions"
            body["prompt"] = list(view.ids)
            if self.info.echoes_ids:
                body["return_token_ids"] = True
            sink.check = "ids"
            sink.capture(view.ids)  # sent as IDs: what the engine reads, unless it echoes otherwise
        else:
            path = "/v1/chat/completions"
            body["messages"] = api_messages(view.messages)
            if view.tools:
                body["tools"] = view.tools
            sink.check = "count" if view.ids else "none"
        hits_before = self._prefix_hits()
        stream = self.client.stream(path, body)
        done = threading.Event()
        threading.Thread(target=self._close_on_stop, args=(stream, sink, done), daemon=True,
                         name="llm-tui-remote-stop").start()
        new_ids: list[int] = []
        calls: dict[int, dict] = {}  # the server's tool calls, by index, as their deltas come
        counted = False
        try:
            for chunk in stream:
                counted = self._read(chunk, as_ids, sink, new_ids) or counted
                _join_calls(chunk, calls)
            if not (stream.finished or sink.stopped or sink.ended):
                raise ServerError("the stream from the server ended before the reply did",
                                  "the server may have restarted or dropped the connection; the reply so far is kept")
        finally:
            done.set()
            stream.close()
        if calls:
            sink.tool_calls([calls[i] for i in sorted(calls)])
        if sink.check == "count" and not counted:
            sink.check = "none"  # the server reported no prompt token count: nothing could be checked
        if getattr(sink, "cached_tokens", None) is None and hits_before is not None:
            after = self._prefix_hits()
            if after is not None and after >= hits_before:
                sink.reused(int(after - hits_before))  # vLLM's counter: this turn's hits, if it ran alone
        return new_ids

    def _prefix_hits(self) -> float | None:
        """vLLM's running count of prompt tokens found in its prefix cache (None elsewhere)."""
        if self.info.kind != "vllm":
            return None
        try:
            return prefix_cache_hits(self.client)
        except Exception:  # noqa: BLE001 — a figure the server may not give
            return None

    def _sampling(self, params: SamplingParams) -> dict:
        body = {"model": self.info.model, "stream": True, "stream_options": {"include_usage": True},
                "max_tokens": params.max_new_tokens, "temperature": 0.0 if params.greedy else params.temperature}
        if not params.greedy:
            body["top_p"] = params.top_p
            if params.top_k and self.info.kind in _EXTENDED:
                body["top_k"] = params.top_k
        if params.repetition_penalty != 1.0 and self.info.kind in _EXTENDED:
            body["repetition_penalty"] = params.repetition_penalty
        if params.seed is not None:
            body["seed"] = params.seed
        return body

    @staticmethod
    def _close_on_stop(stream: EventStream, sink: Sink, done: threading.Event) -> None:
        while not done.wait(STOP_POLL_SECONDS):
            if sink.stopped:
                stream.close()  # the server sees the connection go and cancels the request
                return

    @staticmethod
    def _read(chunk: dict, as_ids: bool, sink: Sink, new_ids: list[int]) -> bool:
        """Take one chunk; True when it carried the server's token counts."""
        usage = chunk.get("usage")
        counted = isinstance(usage, dict) and usage.get("prompt_tokens") is not None
        if counted:
            sink.usage(usage.get("prompt_tokens"), usage.get("completion_tokens"))
        cached = server_cached_tokens(chunk)
        if cached is not None:
            sink.reused(cached)
        prompt_ids = chunk.get("prompt_token_ids")
        for choice in chunk.get("choices") or []:
            prompt_ids = choice.get("prompt_token_ids", prompt_ids)
            text = choice.get("text") if as_ids else (choice.get("delta") or {}).get("content")
            ids = choice.get("token_ids") or []
            end_of_turn = choice.get("finish_reason") == "stop" and not text
            if (text or ids) and not end_of_turn:  # the end-of-turn token is not reply text
                sink.text(text or "", ids[0] if len(ids) == 1 else None, _info(choice.get("logprobs")))
            new_ids.extend(int(i) for i in ids)
            if choice.get("finish_reason"):
                sink.ended = _ENDED.get(choice["finish_reason"], "eos")
        if prompt_ids:
            sink.echoed(prompt_ids)  # the server's own account of what it read
        return counted

    def metrics(self) -> ServerMetrics:
        """What the server reports about its load now (for the meter)."""
        return read_metrics(self.client)

    def release(self) -> None:
        self.client.close()


def _join_calls(chunk: dict, calls: dict[int, dict]) -> None:
    """Add a chunk's ``tool_calls`` deltas: the first of a call has its id and name, the rest pieces of
    its arguments (a JSON string, whole only at the end)."""
    for choice in chunk.get("choices") or []:
        for delta in (choice.get("delta") or {}).get("tool_calls") or []:
            call = calls.setdefault(int(delta.get("index", len(calls))), {"id": "", "name": "", "arguments": ""})
            call["id"] = delta.get("id") or call["id"]
            function = delta.get("function") or {}
            call["name"] += function.get("name") or ""
            call["arguments"] += function.get("arguments") or ""


def _info(logprobs) -> TokenInfo | None:
    """A server's logprobs for one streamed token, in TokenInfo's shape (the alternatives' IDs and
    the entropy are not given by the OpenAI API)."""
    if not isinstance(logprobs, dict):
        return None
    content = logprobs.get("content")
    if isinstance(content, list) and content:  # chat: [{token, logprob, top_logprobs: [{token, logprob}]}]
        entry = content[0]
        chosen, value = entry.get("token", ""), entry.get("logprob")
        top = [(t.get("token", ""), t.get("logprob")) for t in entry.get("top_logprobs") or []]
    elif logprobs.get("token_logprobs"):  # completions: parallel lists, top as {token: logprob}
        chosen = (logprobs.get("tokens") or [""])[0]
        value = logprobs["token_logprobs"][0]
        top = list(((logprobs.get("top_logprobs") or [{}])[0] or {}).items())
    else:
        return None
    if value is None:
        return None
    top = sorted((t for t in top if t[1] is not None), key=lambda t: -t[1])
    rank = next((n + 1 for n, (token, _) in enumerate(top) if token == chosen), None)
    return TokenInfo(float(value), None, rank, None, tuple(Alternative(None, token, float(lp)) for token, lp in top))
