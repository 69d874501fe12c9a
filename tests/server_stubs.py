"""Servers on loopback for the remote engine's tests.

``transformers_serve`` starts a real ``transformers serve`` with the default
model. ``ShapeServer`` answers with the response shapes vLLM and llama-server
document for the parts no CPU server here has (prompt IDs echoed,
``/tokenize`` with chat messages, ``/apply-template``, ``/metrics``, and
``tool_calls`` deltas for a chat request with ``tools``): it renders prompts
with the default model's real tokenizer and chat template, and streams a fixed
reply token by token. ``benchmarks/gpu_check.py`` checks
the same parts against a real ``vllm serve``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPLY = "The capital of France is Paris."


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(url: str, process: subprocess.Popen | None = None, timeout: float = 120.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} did not come up in {timeout:.0f} s")


def transformers_serve(model_dir: Path, log: Path) -> tuple[subprocess.Popen, str]:
    """``transformers serve MODEL_DIR`` on a free port; returns the process and its /v1 URL."""
    port = free_port()
    command = [str(Path(sys.executable).with_name("transformers")), "serve", str(model_dir), "--port", str(port)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}/v1"
    wait_until_up(f"http://127.0.0.1:{port}/health", process)
    return process, url


class ShapeServer:
    """A vLLM- or llama-server-shaped server (``kind``) over the default model's tokenizer."""

    def __init__(self, tokenizer, kind: str = "vllm", *, model: str = "demo/SmolLM2-135M-Instruct",
                 echo_extra: list[int] | None = None, slow_first_token: float = 0.0,
                 fault: str | None = None, tool_call: tuple[str, dict] | None = None) -> None:
        self.tokenizer = tokenizer
        #: (name, arguments): a chat request with tools whose last message is the user's is answered
        #: with this call, in the API's ``tool_calls`` deltas (vLLM with a tool parser on).
        self.tool_call = tool_call
        #: What goes wrong: "unauthorized" (401 to everything), "html" (a web page, not an API),
        #: and mid-stream after two tokens: "break" (the connection drops), "malformed" (a line
        #: that is not JSON), "silent" (nothing more is sent).
        self.fault = fault
        self.closing = threading.Event()
        self.kind = kind
        self.model = model
        self.echo_extra = echo_extra or []  # IDs the "engine" reads in front of what it was sent
        self.slow_first_token = slow_first_token
        self.requests: list[tuple[str, dict]] = []
        self.posts: list[tuple[str, dict]] = []  # the POST requests among them (completions, tokenize …)
        #: The prefix cache, as the engines report it: vLLM's running count of hits in /metrics,
        #: llama-server's ``timings.cache_n``; a prompt's hit is the prefix it shares with the last one.
        self.prefix_hits = 100.0
        self._last_prompt: list[int] = []
        self.authorizations: list[str | None] = []  # the Authorization header of each request
        self.extra_models: list[str] = []
        self.cancelled = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> "ShapeServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.closing.set()
        self._server.shutdown()
        self._server.server_close()

    # -- what the engines answer ---------------------------------------------------------------

    def models(self) -> dict:
        owner = "vllm" if self.kind == "vllm" else "llamacpp"
        entry = {"id": self.model, "object": "model", "owned_by": owner}
        if self.kind == "vllm":
            entry["max_model_len"] = 8192
        others = [{"id": name, "object": "model", "owned_by": owner} for name in self.extra_models]
        return {"object": "list", "data": [entry, *others]}

    def render(self, messages: list[dict], tools: list[dict] | None = None) -> str:
        for message in messages:  # the API's arguments are a JSON string; templates read a dict
            for call in message.get("tool_calls") or []:
                assert isinstance(call["function"]["arguments"], str), "tool call arguments go as a JSON string"
        return self.tokenizer.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=True)

    def ids_of(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def answer(self, path: str, body: dict):
        tok = self.tokenizer
        if path == "/v1/models":
            return self.models()
        if path == "/version" and self.kind == "vllm":
            return {"version": "0.11.0"}
        if path == "/props" and self.kind == "llama.cpp":
            return {"default_generation_settings": {"n_ctx": 8192}, "build_info": "b6000-stub"}
        if path == "/tokenize" and self.kind == "vllm":
            ids = self.ids_of(self.render(body["messages"], body.get("tools")))
            return {"count": len(ids), "max_model_len": 8192, "tokens": ids,
                    "token_strs": tok.convert_ids_to_tokens(ids)}
        if path == "/tokenize" and self.kind == "llama.cpp":
            ids = self.ids_of(body["content"])
            return {"tokens": [{"id": i, "piece": tok.decode([i])} for i in ids]}
        if path == "/detokenize":
            text = tok.decode(body["tokens"])
            return {"prompt": text} if self.kind == "vllm" else {"content": text}
        if path == "/apply-template" and self.kind == "llama.cpp":
            return {"prompt": self.render(body["messages"])}
        if path == "/metrics":
            if self.kind == "vllm":
                return ('# HELP vllm:kv_cache_usage_perc KV-cache usage.\n'
                        f'vllm:kv_cache_usage_perc{{model_name="{self.model}"}} 0.25\n'
                        f'vllm:num_requests_running{{model_name="{self.model}"}} 2.0\n'
                        f'vllm:num_requests_waiting{{model_name="{self.model}"}} 1.0\n'
                        f'vllm:prefix_cache_queries_total{{model_name="{self.model}"}} 400.0\n'
                        f'vllm:prefix_cache_hits_total{{model_name="{self.model}"}} {self.prefix_hits}\n')
            return "llamacpp:kv_cache_usage_ratio 0.5\nllamacpp:requests_processing 1\nllamacpp:requests_deferred 0\n"
        return None

    def stream(self, path: str, body: dict):
        """The chunks of a streamed completion: the fixed reply, one token per chunk."""
        reply = self.ids_of(REPLY) + [self.tokenizer.eos_token_id]
        if path == "/v1/completions":
            prompt = self.echo_extra + list(body["prompt"])
        else:
            prompt = self.ids_of(self.render(body["messages"], body.get("tools")))
            if self.tool_call and body.get("tools") and body["messages"][-1]["role"] == "user":
                yield from self._call_chunks(len(prompt))
                return
        shared = 0
        while shared < min(len(prompt), len(self._last_prompt)) - 1 and prompt[shared] == self._last_prompt[shared]:
            shared += 1
        self._last_prompt = prompt + reply[:-1]
        self.prefix_hits += shared
        self.last_shared = shared
        for n, token in enumerate(reply[:body.get("max_tokens", 16)]):
            if n == 2 and self.fault in ("break", "malformed", "silent"):
                yield self.fault
                return
            if n == 0 and self.slow_first_token:
                deadline = time.monotonic() + self.slow_first_token
                while time.monotonic() < deadline:
                    yield None  # keep-alive: a blank line while the "prefill" runs
                    time.sleep(0.05)
            last = token == self.tokenizer.eos_token_id
            text = "" if last else self.tokenizer.decode([token])
            choice = {"index": 0, "finish_reason": "stop" if last else None}
            if body.get("logprobs") and text:  # a fixed log-probability and one alternative, as documented
                top = {text: -0.25, "X": -1.75}
                choice["logprobs"] = ({"tokens": [text], "token_logprobs": [-0.25], "top_logprobs": [top]}
                                      if path == "/v1/completions" else
                                      {"content": [{"token": text, "logprob": -0.25, "top_logprobs": [
                                          {"token": t, "logprob": v} for t, v in top.items()]}]})
            if path == "/v1/completions":
                choice["text"] = text
                if body.get("return_token_ids"):
                    choice["token_ids"] = [token]
                    if n == 0:
                        choice["prompt_token_ids"] = prompt
            else:
                choice["delta"] = {"content": text}
            yield {"id": "cmpl-stub", "object": "text_completion", "model": self.model, "choices": [choice]}
            if last:
                break
        final = {"id": "cmpl-stub", "choices": [], "usage": {"prompt_tokens": len(prompt), "completion_tokens": n + 1}}
        if self.kind == "llama.cpp":
            final["timings"] = {"cache_n": shared, "prompt_n": len(prompt) - shared}
        yield final

    def _call_chunks(self, prompt_tokens: int):
        """The call as vLLM streams one: id, type and name first, then the arguments in pieces."""
        name, arguments = self.tool_call
        text = json.dumps(arguments)
        first = {"index": 0, "id": "call_1", "type": "function", "function": {"name": name, "arguments": ""}}
        yield {"id": "chat-stub", "choices": [{"index": 0, "delta": {"role": "assistant", "tool_calls": [first]},
                                               "finish_reason": None}]}
        for start in range(0, len(text), 5):
            piece = {"index": 0, "function": {"arguments": text[start:start + 5]}}
            yield {"id": "chat-stub", "choices": [{"index": 0, "delta": {"tool_calls": [piece]},
                                                   "finish_reason": None}]}
        yield {"id": "chat-stub", "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}
        yield {"id": "chat-stub", "choices": [], "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": 12}}

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *args) -> None:
                pass

            def _body(self) -> dict:
                size = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(size) or b"{}")

            def do_GET(self) -> None:
                self._reply(self.path, {})

            def do_POST(self) -> None:
                body = self._body()
                server.posts.append((self.path, body))
                self._reply(self.path, body)

            def _reply(self, path: str, body: dict) -> None:
                server.requests.append((path, body))
                server.authorizations.append(self.headers.get("Authorization"))
                if server.fault in ("unauthorized", "html"):
                    unauthorized = server.fault == "unauthorized"
                    data = (b'{"error": {"message": "Invalid API key", "type": "invalid_request_error"}}'
                            if unauthorized else b"<html><body><h1>Welcome to nginx!</h1></body></html>")
                    self.send_response(401 if unauthorized else 200)
                    self.send_header("Content-Type", "application/json" if unauthorized else "text/html")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                if body.get("stream") and path in ("/v1/completions", "/v1/chat/completions"):
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.end_headers()
                    try:
                        for chunk in server.stream(path, body):
                            if chunk == "break":
                                return  # the connection closes with no [DONE]
                            if chunk == "silent":
                                server.closing.wait()
                                return
                            if chunk == "malformed":
                                line = b'data: {"choices": [{"text": "oops\n\n'
                            else:
                                line = b"\n" if chunk is None else f"data: {json.dumps(chunk)}\n\n".encode()
                            self.wfile.write(line)
                            self.wfile.flush()
                        self.wfile.write(b"data: [DONE]\n\n")
                    except (BrokenPipeError, ConnectionResetError):
                        server.cancelled.set()  # the client closed the stream: the request is cancelled
                    return
                answer = server.answer(path.split("?")[0], body)
                if answer is None:
                    self.send_response(404)
                    self.end_headers()
                    self.wfile.write(b'{"detail": "Not Found"}')
                    return
                data = answer.encode() if isinstance(answer, str) else json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain" if isinstance(answer, str) else "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler
