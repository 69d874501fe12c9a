"""What per-token probabilities cost: decode tok/s with top_logprobs K=5 versus K=0.

Same model, prompt and greedy settings, runs interleaved in one process (who
goes first alternates), for each in-process engine, on a tiny model (where any
per-token overhead shows most) and on the default model. Prints the median
tok/s of each and the ratio K=5 / K=0 (target >= 0.97).

    python benchmarks/logprobs_cost.py [--rounds 5] [--tokens 128]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import _setup  # noqa: F401
import torch

from backends.checkpoint.demo import ensure_demo
from backends.core.events import DoneEvent
from backends.core.params import SamplingParams
from backends.core.spec import ModelSpec
from backends.generation.open import open_model

PROMPT = [{"role": "user", "content": "Write a long story about a lighthouse keeper and a storm."}]


def decode_rate(handle, params: SamplingParams) -> float:
    """Decode tok/s as the engine measures it (first token to last), with every event read."""
    done = None
    with_info = 0
    for event in handle.stream(PROMPT, params):
        if isinstance(event, DoneEvent):
            done = event
        elif event.info is not None:
            with_info += 1
    assert done is not None and done.stop_reason != "error", done
    assert (with_info > 0) == (params.top_logprobs > 0), "the figures were not computed as asked"
    return done.stats.decode_tok_s


def compare(name: str, handle, tokens: int, rounds: int) -> float:
    off = SamplingParams(temperature=0, max_new_tokens=tokens, top_logprobs=0)
    on = SamplingParams(temperature=0, max_new_tokens=tokens, top_logprobs=5)
    decode_rate(handle, off)  # warm-up both
    decode_rate(handle, on)
    rates: dict[int, list[float]] = {0: [], 5: []}
    for r in range(rounds):
        for params in ((off, on) if r % 2 == 0 else (on, off)):
            rates[params.top_logprobs].append(decode_rate(handle, params))
    k0, k5 = statistics.median(rates[0]), statistics.median(rates[5])
    print(f"{name:36} K=0 {k0:8.1f} tok/s   K=5 {k5:8.1f} tok/s   ratio {k5 / k0:.3f}")
    return k5 / k0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=128)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"{args.rounds} rounds x {args.tokens} tokens, median")
    demo = ensure_demo()
    with tempfile.TemporaryDirectory() as tmp:
        tiny_dir = _setup.build_tiny_model(demo, Path(tmp) / "tiny", layers=1, hidden=32, suppress_eos=True)
        for engine in ("generate", "loop"):
            tiny = open_model(ModelSpec(source=str(tiny_dir), engine=engine))
            compare(f"tiny (1 layer, random) · {engine}", tiny, args.tokens * 4, args.rounds)
    for engine in ("generate", "loop"):
        handle = open_model(ModelSpec(engine=engine))
        compare(f"SmolLM2-135M (default) · {engine}", handle, args.tokens, args.rounds)
        handle.unload()


if __name__ == "__main__":
    main()
