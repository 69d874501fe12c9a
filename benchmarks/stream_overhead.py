"""Decode speed of llm-tui's engine stream versus bare ``model.generate``.

Same model, same prompt, greedy, runs interleaved in one process so both see
the same machine state. The engine computes each token's probabilities as the
app does (top_logprobs 5; --top-logprobs 0 turns them off). Prints tokens/s
for each and the ratio (target >= 0.97).

    python benchmarks/stream_overhead.py [--rounds 5] [--tokens 128] [--top-logprobs 5] [--prompt-cache on|off]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

import _setup  # noqa: F401
import torch

from backends.checkpoint.demo import ensure_demo
from backends.core.events import DoneEvent
from backends.core.params import SamplingParams
from backends.core.spec import ModelSpec
from backends.generation.open import open_model

PROMPT = [{"role": "user", "content": "Write a long story about a lighthouse keeper and a storm."}]


def bare_generate(handle, ids: list[int], params: SamplingParams) -> tuple[int, float]:
    """generate() with nothing attached, in a worker thread like the engine's.

    Thread placement matters on CPU: torch's intra-op thread team behaves
    differently in the main thread, so both sides run in a fresh thread.
    """
    from backends.generation.runners.generate import generation_config

    input_ids = torch.tensor([ids])
    config = generation_config(handle.model, params, handle.family.stop_ids())
    result = {}

    def work():
        start = time.perf_counter()
        with torch.inference_mode():
            out = handle.model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                        generation_config=config)
        result["n"], result["t"] = out.shape[1] - input_ids.shape[1], time.perf_counter() - start

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    return result["n"], result["t"]


def engine_stream(handle, params: SamplingParams) -> tuple[int, float]:
    start = time.perf_counter()
    done = None
    for event in handle.stream(PROMPT, params):
        if isinstance(event, DoneEvent):
            done = event
    elapsed = time.perf_counter() - start
    assert done is not None and done.stop_reason != "error", done
    return done.stats.new_tokens, elapsed


def compare(name: str, handle, tokens: int, rounds: int, top_logprobs: int) -> float:
    params = SamplingParams(temperature=0, max_new_tokens=tokens, top_logprobs=top_logprobs)
    ids = handle.render(PROMPT).ids
    bare_generate(handle, ids, params)  # warm-up both paths
    engine_stream(handle, params)
    bare, eng = [], []
    for r in range(rounds):
        order = (0, 1) if r % 2 == 0 else (1, 0)  # alternate who goes first
        for which in order:
            n, t = bare_generate(handle, ids, params) if which == 0 else engine_stream(handle, params)
            (bare if which == 0 else eng).append(n / t)
    b, e = statistics.median(bare), statistics.median(eng)
    print(f"{name:28} bare generate {b:8.1f} tok/s   engine stream {e:8.1f} tok/s   ratio {e / b:.3f}")
    return e / b


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--top-logprobs", type=int, default=5, help="alternatives per token the engine computes")
    parser.add_argument("--prompt-cache", choices=("on", "off"), default="on",
                        help="the engine keeps each turn's cache (the app's default) or reads every turn whole")
    args = parser.parse_args()
    cache = args.prompt_cache == "on"
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, {args.rounds} rounds x {args.tokens} tokens, median")
    demo = ensure_demo()
    with tempfile.TemporaryDirectory() as tmp:
        tiny_dir = _setup.build_tiny_model(demo, Path(tmp) / "tiny", layers=1, hidden=32, suppress_eos=True)
        tiny = open_model(ModelSpec(source=str(tiny_dir), engine="generate", prompt_cache=cache))
        compare("tiny (1 layer, random)", tiny, args.tokens * 4, args.rounds, args.top_logprobs)
    handle = open_model(ModelSpec(engine="generate", prompt_cache=cache))
    compare("SmolLM2-135M (default)", handle, args.tokens, args.rounds, args.top_logprobs)


if __name__ == "__main__":
    main()
