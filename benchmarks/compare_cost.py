"""What a compare costs: two models' turns plus the teacher-forced scoring, against the two turns alone.

The default model in full precision and quantized to nf4 on load (the question
``compare DIR DIR@nf4`` answers), the same prompt, greedy. In each round, in
one process and alternating which goes first: the two turns run alone, one
after the other; then the compare (the same two turns, then the reference's
reply read by both models); then the reading again with the prompt caches
dropped first (what the cache that the turns leave saves). Every turn starts
without a kept cache, so each round measures the same work. Prints medians and
the ratios.

    python benchmarks/compare_cost.py [--rounds 3] [--tokens 64]
"""

from __future__ import annotations

import argparse
import statistics
import time

import _setup  # noqa: F401
import torch

from backends.checkpoint.demo import ensure_demo
from backends.core.events import DoneEvent
from backends.core.params import SamplingParams
from backends.core.spec import ModelSpec
from backends.generation.compare.replies import generate_replies
from backends.generation.compare.turn import compare_turn
from backends.generation.open import open_model

PROMPT = [{"role": "user", "content": "Write a long story about a lighthouse keeper and a storm."}]


def turn_alone(handle, params: SamplingParams) -> tuple[float, int]:
    """Wall seconds of one turn with every event read, and its new tokens."""
    handle.release_cache()
    started = time.perf_counter()
    done = [e for e in handle.stream(PROMPT, params) if isinstance(e, DoneEvent)][0]
    assert done.stop_reason != "error", done.error
    return time.perf_counter() - started, done.stats.new_tokens


def compare_once(handles, params: SamplingParams) -> dict[str, float]:
    """One compare as the command runs it: the turns, then the scoring (which reuses the caches they leave)."""
    for handle in handles:
        handle.release_cache()
    started = time.perf_counter()
    runs = generate_replies(handles, PROMPT, params)
    generated = time.perf_counter()
    (pair,) = compare_turn(runs)
    scored = time.perf_counter()
    assert pair.figures is not None and pair.figures.complete
    for handle in handles:  # the same reading, without a kept prompt
        handle.release_cache()
    again = time.perf_counter()
    compare_turn(runs)
    uncached = time.perf_counter() - again
    return {"total": scored - started, "turns": generated - started, "scoring": scored - generated,
            "scoring_uncached": uncached, "reply_tokens": len(runs[0].reply_ids),
            "prompt_tokens": len(runs[0].prompt_ids), "mean_kl": pair.figures.summary().mean_kl}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()
    ensure_demo()
    handles = [open_model(ModelSpec(engine="generate")), open_model(ModelSpec(quant="nf4"))]
    params = SamplingParams(temperature=0, max_new_tokens=args.tokens, top_logprobs=0)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, {args.rounds} rounds, median; "
          f"{' vs '.join(h.info.label for h in handles)} on {handles[0].info.device}")
    for handle in handles:  # warm-up
        turn_alone(handle, params)
    alone: list[list[float]] = [[], []]
    compares: list[dict[str, float]] = []
    for r in range(args.rounds):
        for step in (("alone", "compare") if r % 2 == 0 else ("compare", "alone")):
            if step == "alone":
                for i, handle in enumerate(handles):
                    alone[i].append(turn_alone(handle, params)[0])
            else:
                compares.append(compare_once(handles, params))
    each = [statistics.median(times) for times in alone]
    two_alone = sum(each)
    median = {key: statistics.median(c[key] for c in compares) for key in compares[0]}
    tokens = int(median["reply_tokens"])
    decode_per_token = two_alone / (2 * args.tokens)  # what a generated token costs, the two models averaged
    scoring_per_token = median["scoring"] / tokens
    print(f"prompt {int(median['prompt_tokens'])} tokens; reference reply {tokens} tokens "
          f"(each turn up to {args.tokens}); mean KL {median['mean_kl']:.4f} nats")
    print(f"two turns alone          {two_alone:7.2f} s   ({each[0]:.2f} s + {each[1]:.2f} s)")
    print(f"compare                  {median['total']:7.2f} s   (turns {median['turns']:.2f} s + scoring "
          f"{median['scoring']:.2f} s)   ratio compare / alone {median['total'] / two_alone:.3f}")
    print(f"scoring per reply token  {scoring_per_token * 1000:7.2f} ms  (both models)   ratio to a generated "
          f"token {scoring_per_token / decode_per_token:.3f}")
    print(f"scoring without the kept prompt caches {median['scoring_uncached']:.2f} s   ratio cached / uncached "
          f"{median['scoring'] / median['scoring_uncached']:.3f}")


if __name__ == "__main__":
    main()
