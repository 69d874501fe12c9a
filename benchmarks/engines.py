"""The default model on two engines, side by side in one run: transformers (fp32 safetensors) and
llama.cpp (its Q4_1 GGUF as it is), through llm-tui's own stream.

Prints, for each engine, the time to open the model, time to first token and
decode tokens/s (median of ``--rounds`` interleaved runs, greedy, same prompt),
and the llama.cpp/transformers ratios.

    python benchmarks/engines.py [--rounds 3] [--tokens 128]
"""

from __future__ import annotations

import argparse
import statistics
import time

import _setup  # noqa: F401

from backends.core.params import SamplingParams
from backends.core.spec import ModelSpec
from backends.generation.open import open_model

PROMPT = [{"role": "user", "content": "Write a long story about a lighthouse keeper and a storm."}]


def turn(handle, tokens: int) -> tuple[float, float]:
    done = list(handle.stream(PROMPT, SamplingParams(temperature=0, max_new_tokens=tokens)))[-1]
    return done.stats.ttft_s, done.stats.decode_tok_s


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
    results = {name: [] for name in handles}
    for _ in range(args.rounds):
        for name, handle in handles.items():
            results[name].append(turn(handle, args.tokens))
    rows = {}
    for name, runs in results.items():
        ttft = statistics.median(r[0] for r in runs)
        rate = statistics.median(r[1] for r in runs)
        rows[name] = (opened[name], ttft, rate)
        print(f"{name:13} open {opened[name]:6.2f} s · TTFT {ttft * 1000:6.0f} ms · decode {rate:6.1f} tok/s")
    (o1, t1, r1), (o2, t2, r2) = rows["transformers"], rows["llama.cpp"]
    print(f"llama.cpp / transformers: open {o2 / o1:.2f}x the time, TTFT {t2 / t1:.2f}x, decode {r2 / r1:.2f}x the speed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
