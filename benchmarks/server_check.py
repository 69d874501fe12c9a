"""A real ``vllm serve`` of the default model, and the remote engine against it.

Checks what the tests only see as documented shapes: the probe says vLLM,
``/tokenize`` renders the messages, the previewed IDs go in as IDs and come
back echoed (``return_token_ids``), and ``/metrics`` carries the names the
meter reads. With tools, the turn goes to the chat API with ``tools`` (the
server's ``hermes`` tool parser on): ``/tokenize`` takes the same tools, the
prompt's count is checked, and any ``tool_calls`` the server read are kept. Used by ``gpu_check.py --vllm``; also runs alone:

    python benchmarks/server_check.py
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import _setup  # noqa: F401


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_and_check(model_dir: Path) -> dict:
    import httpx

    from backends.core.params import SamplingParams
    from backends.core.spec import ModelSpec
    from backends.generation.open import open_model
    from backends.prompt.check import PromptCheck
    from backends.server.client import ServerClient
    from backends.server.metrics import read_metrics

    port = _port()
    log = open("vllm_serve.log", "w")
    process = subprocess.Popen([sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model",
                                str(model_dir), "--port", str(port), "--max-model-len", "4096",
                                "--gpu-memory-utilization", "0.3", "--enable-auto-tool-choice",
                                "--tool-call-parser", "hermes"], stdout=log, stderr=subprocess.STDOUT,
                               env={**os.environ, "HF_HUB_OFFLINE": "1"})
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 300
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"vllm serve exited with {process.returncode} (see vllm_serve.log)")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("vllm serve did not come up in 300 s")
            time.sleep(1)
        handle = open_model(ModelSpec(source=url))
        runner = handle.runner
        question = [{"role": "user", "content": "What is the capital of France?"}]
        view = handle.render(question)
        events = list(handle.stream(question, SamplingParams(temperature=0, max_new_tokens=16)))
        done = events[-1]
        check = PromptCheck.of(view, done.captured_ids, done.prompt_count, level=done.prompt_check)
        weather = {"type": "function", "function": {"name": "get_weather", "description": "The weather in a city.",
                                                    "parameters": {"type": "object", "properties": {
                                                        "city": {"type": "string"}}, "required": ["city"]}}}
        asked = [{"role": "user", "content": "What is the weather in Paris? Use the tool."}]
        tools_view = handle.render(asked, tools=[weather])
        tools_done = list(handle.stream(asked, SamplingParams(temperature=0, max_new_tokens=48), tools=[weather]))[-1]
        tools_check = PromptCheck.of(tools_view, tools_done.captured_ids, tools_done.prompt_count,
                                     level=tools_done.prompt_check)
        metrics = read_metrics(ServerClient(url))
        assert runner.info.kind == "vllm", runner.info.kind
        assert done.prompt_check == "ids" and check.verified, (done.prompt_check, check.mismatch)
        assert metrics.kv_usage is not None and metrics.running is not None, metrics
        assert tools_done.stop_reason != "error", tools_done.error
        assert tools_check.verified, ("tools", tools_done.prompt_check, tools_check.mismatch)
        return {"kind": runner.info.kind, "version": runner.info.version, "family": handle.family.name,
                "sends_ids": runner.sends_ids, "prompt_tokens": len(view.ids), "check": done.prompt_check,
                "verified": check.verified, "echoed": done.captured_ids is not None, "text": done.text,
                "ttft_s": done.stats.ttft_s, "decode_tok_s": done.stats.decode_tok_s,
                "tools": {"check": tools_done.prompt_check, "verified": tools_check.verified,
                          "prompt_tokens": len(tools_view.ids), "tool_calls": tools_done.tool_calls,
                          "text": tools_done.text},
                "metrics": {"kv_usage": metrics.kv_usage, "running": metrics.running, "waiting": metrics.waiting}}
    finally:
        process.terminate()
        process.wait(30)


if __name__ == "__main__":
    from backends.checkpoint.demo import ensure_demo

    print(serve_and_check(ensure_demo()))
