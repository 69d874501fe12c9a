"""The remote engine against a bare streaming client, on the same ``transformers serve`` in one run.

Starts ``transformers serve`` with the default model on loopback, then
alternates: llm-tui's remote engine (``open_model(URL).stream``, with the
prompt checked and tokens decoded as the app does) and a bare httpx client
posting the same chat request and reading the SSE stream. Both measure
decode tokens/s at the client from the first token to the last. Prints the
medians and the ratio (target >= 0.95).

    python benchmarks/remote_overhead.py [--rounds 5] [--tokens 64]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import _setup  # noqa: F401

from backends.checkpoint.demo import ensure_demo
from backends.core.params import SamplingParams
from backends.core.spec import ModelSpec
from backends.generation.open import open_model

PROMPT = [{"role": "user", "content": "Write a long story about a lighthouse keeper and a storm."}]


def bare_stream(url: str, model: str, tokens: int) -> float:
    """Decode chunks/s of the plain OpenAI streaming request (one chunk per token on this server)."""
    import httpx

    body = {"model": model, "messages": PROMPT, "stream": True, "max_tokens": tokens, "temperature": 0.0}
    times = []
    with httpx.stream("POST", f"{url}/chat/completions", json=body, timeout=120) as response:
        for line in response.iter_lines():
            if not line.startswith("data:") or line[5:].strip() == "[DONE]":
                continue
            chunk = json.loads(line[5:])
            if any((c.get("delta") or {}).get("content") for c in chunk.get("choices") or []):
                times.append(time.perf_counter())
    return (len(times) - 1) / (times[-1] - times[0])


def engine_stream(handle, tokens: int) -> float:
    done = list(handle.stream(PROMPT, SamplingParams(temperature=0, max_new_tokens=tokens, top_logprobs=0)))[-1]
    assert done.stop_reason != "error", done.error
    return done.stats.decode_tok_s


def main() -> int:
    from server_stubs import transformers_serve

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        process, url = transformers_serve(ensure_demo(), Path(tmp) / "serve.log")
        try:
            handle = open_model(ModelSpec(source=url))
            model = handle.runner.info.model
            engine_stream(handle, 8)  # warm-up both
            bare_stream(url, model, 8)
            engine, bare = [], []
            for r in range(args.rounds):
                for which in ((0, 1) if r % 2 == 0 else (1, 0)):
                    (engine if which == 0 else bare).append(
                        engine_stream(handle, args.tokens) if which == 0 else bare_stream(url, model, args.tokens))
        finally:
            process.terminate()
            process.wait(20)
    e, b = statistics.median(engine), statistics.median(bare)
    print(f"transformers serve, default model, {args.rounds} rounds x {args.tokens} tokens, median")
    print(f"bare httpx stream {b:7.1f} tok/s   llm-tui remote engine {e:7.1f} tok/s   ratio {e / b:.3f} (target >= 0.95)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
