"""The default model on two engines, side by side in one run: transformers (fp32 safetensors) and
llama.cpp (its Q4_1 GGUF as it is), through llm-tui's own stream; and bare llama-cpp-python on
the same GGUF and the same prompt IDs, to show what llm-tui's stream costs on top of it.

Prints, for each, the time to open the model, time to first token and decode
tokens/s (median of ``--rounds`` interleaved runs, greedy, same prompt), the
llama.cpp/transformers ratios, and llm-tui's llama.cpp engine / bare (target
>= 0.95).

    python benchmarks/engines.py [--rounds 3] [--tokens 128]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import _setup  # noqa: F401

from backends.core.params import SamplingParams
from backends.core.spec import ModelSpec
from backends.generation.open import open_model

PROMPT = [{"role": "user", "content": "Write a long story about a lighthouse keeper and a storm."}]


def turn(handle, tokens: int) -> tuple[float, float]:
    done = list(handle.stream(PROMPT, SamplingParams(temperature=0, max_new_tokens=tokens)))[-1]
    return done.stats.ttft_s, done.stats.decode_tok_s


def bare_llamacpp(llm, ids: list[int], tokens: int) -> tuple[float, float]:
    """llama-cpp-python's own generate() on the same IDs: (TTFT, decode tok/s from the first token on).

    Called on one persistent thread, as llm-tui's runner does (see runners/llamacpp.py: OpenMP's
    worker team belongs to the calling thread), with the cache emptied so the prompt is read whole."""
    llm.reset()
    started = time.perf_counter()
    times = []
    for token in llm.generate(ids, top_k=1, temp=0.0, reset=True):
        times.append(time.perf_counter())
        if token == llm.token_eos() or len(times) >= tokens:
            break
    return times[0] - started, (len(times) - 1) / (times[-1] - times[0])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=128)
    args = parser.parse_args()
    handles, opened = {}, {}
    for name, spec in (("transformers", ModelSpec(engine="generate")), ("llama.cpp", ModelSpec(engine="llamacpp"))):
        started = time.perf_counter()
        handles[name] = open_model(spec)
        opened[name] = time.perf_counter() - started
    from llama_cpp import Llama

    from backends.checkpoint.demo import demo_gguf

    started = time.perf_counter()
    bare = Llama(model_path=str(demo_gguf()), n_ctx=0, n_batch=512, n_threads=max(1, os.cpu_count() or 1),
                 verbose=False, seed=0)
    opened["bare llama.cpp"] = time.perf_counter() - started
    ids = handles["llama.cpp"].render(PROMPT).ids
    own_thread = ThreadPoolExecutor(max_workers=1)
    results = {name: [] for name in (*handles, "bare llama.cpp")}
    for r in range(args.rounds):
        results["transformers"].append(turn(handles["transformers"], args.tokens))
        pair = ("llama.cpp", "bare llama.cpp") if r % 2 == 0 else ("bare llama.cpp", "llama.cpp")
        for name in pair:  # the two llama.cpp runs back to back, who goes first alternating
            results[name].append(turn(handles[name], args.tokens) if name == "llama.cpp" else
                                 own_thread.submit(bare_llamacpp, bare, ids, args.tokens).result())
    rows = {}
    for name, runs in results.items():
        ttft = statistics.median(r[0] for r in runs)
        rate = statistics.median(r[1] for r in runs)
        rows[name] = (opened[name], ttft, rate)
        print(f"{name:15} open {opened[name]:6.2f} s · TTFT {ttft * 1000:6.0f} ms · decode {rate:6.1f} tok/s")
    (o1, t1, r1), (o2, t2, r2) = rows["transformers"], rows["llama.cpp"]
    print(f"llama.cpp / transformers: open {o2 / o1:.2f}x the time, TTFT {t2 / t1:.2f}x, decode {r2 / r1:.2f}x the speed")
    print(f"llm-tui's llama.cpp engine / bare llama-cpp-python: decode {r2 / rows['bare llama.cpp'][2]:.3f} "
          "(target >= 0.95)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
