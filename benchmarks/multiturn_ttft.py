"""Time to first token as a chat grows: does turn N cost turn N's words, or the whole conversation?

The default model, a chat of ~150-token notes with short greedy replies, then
a short question. At 2, 6, 12 and 20 turns it prints the TTFT of:

- llm-tui's engine with the prompt cache off (every turn reads the whole conversation),
- llm-tui's engine with the prompt cache on (the default),
- a reference that reuses the prefix by hand on the same prompt IDs: plain transformers
  keeping a ``DynamicCache`` cut to the common prefix, or bare llama-cpp-python's own
  ``generate()`` (its prefix matching),

for the transformers engine and, when llama-cpp-python is installed, the llama.cpp engine;
then cache-on / reference at each length (target <= 1.2) and cache-on TTFT at 20 turns /
at 2 turns (target <= 1.5). Each conversation is run turn by turn, so each turn finds the
cache its previous turn left.

    python benchmarks/multiturn_ttft.py [--turns 2,6,12,20] [--engines generate,llamacpp]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import time
from concurrent.futures import ThreadPoolExecutor

import _setup  # noqa: F401

from backends.core.params import SamplingParams
from backends.core.sequences import common_prefix
from backends.core.spec import ModelSpec
from backends.generation.open import open_model
from backends.loading.forward_call import ForwardCall

TOPICS = ["rivers", "mountains", "forests", "deserts", "oceans", "cities", "islands", "glaciers", "volcanoes",
          "lakes", "caves", "plains", "valleys", "reefs", "marshes", "canyons", "dunes", "fjords", "steppes",
          "jungles"]
REPLY = SamplingParams(temperature=0, max_new_tokens=8)


def note(n: int) -> str:
    topic = TOPICS[n % len(TOPICS)]
    return (f"Note {n + 1}, about {topic}: " + f"{topic} shape the land around them and the lives of those "
            "who live nearby; people have studied them for a long time. " * 5).strip()


def messages_at(history: list[dict], n: int) -> list[dict]:
    return [*history, {"role": "user", "content": note(n)}]


def llm_tui_turns(handle, turns: list[int]) -> dict[int, tuple[int, float]]:
    """Run the chat turn by turn through llm-tui's stream; (prompt tokens, TTFT) at each of ``turns``."""
    history: list[dict] = []
    out = {}
    for n in range(max(turns)):
        messages = messages_at(history, n)
        done = list(handle.stream(messages, REPLY))[-1]
        if n + 1 in turns:
            out[n + 1] = (done.stats.prompt_tokens, done.stats.ttft_s)
        history = [*messages, {"role": "assistant", "content": done.text}]
    return out


class TransformersReference:
    """Plain transformers with the prefix reused by hand: a DynamicCache cut to the common prefix."""

    def __init__(self, model) -> None:
        self.model = model
        self.cache = None
        self.ids: list[int] = []
        # The keyword this transformers takes the cache by (``cache`` since 5.25, ``past_key_values`` before).
        self.cache_name = ForwardCall.for_model(model).cache_name or "past_key_values"

    def first_token(self, ids: list[int]) -> tuple[int, float]:
        import torch
        from transformers import DynamicCache

        start = time.perf_counter()
        keep = min(common_prefix(self.ids, ids), len(ids) - 1)
        if self.cache is None or keep == 0:
            self.cache, keep = DynamicCache(config=self.model.config), 0
        else:
            self.cache.crop(keep - self.cache.get_seq_length())
        with torch.inference_mode():
            logits = self.model(input_ids=torch.tensor([ids[keep:]]), **{self.cache_name: self.cache},
                                use_cache=True, logits_to_keep=1).logits
        token = int(logits[0, -1].argmax())
        elapsed = time.perf_counter() - start
        self.ids = list(ids)
        return token, elapsed


def reference_turns(handle, turns: list[int], make) -> dict[int, float]:
    """The same chat's prompts (llm-tui's IDs, the replies llm-tui's engine gave) through ``make``'s
    reference; TTFT at each of ``turns``."""
    history: list[dict] = []
    out = {}
    ref = make()
    for n in range(max(turns)):
        messages = messages_at(history, n)
        ids = handle.render(messages).ids
        reply_ids, ttft = ref.turn(ids)
        if n + 1 in turns:
            out[n + 1] = ttft
        history = [*messages, {"role": "assistant", "content": handle.family.decode(
            [i for i in reply_ids if i not in handle.family.stop_ids()])}]
    return out


class TransformersChat:
    def __init__(self, model) -> None:
        self.ref = TransformersReference(model)

    def turn(self, ids: list[int]) -> tuple[list[int], float]:
        import torch

        token, ttft = self.ref.first_token(ids)
        reply = [token]
        with torch.inference_mode():
            while len(reply) < REPLY.max_new_tokens:
                logits = self.ref.model(input_ids=torch.tensor([[reply[-1]]]), **{self.ref.cache_name: self.ref.cache},
                                        use_cache=True, logits_to_keep=1).logits
                reply.append(int(logits[0, -1].argmax()))
        self.ref.ids = [*ids, *reply[:-1]]
        return reply, ttft


class LlamaCppChat:
    """Bare llama-cpp-python: its own generate() with its prefix matching, on one persistent thread."""

    def __init__(self, llm) -> None:
        self.llm = llm
        self.thread = ThreadPoolExecutor(max_workers=1)

    def turn(self, ids: list[int]) -> tuple[list[int], float]:
        return self.thread.submit(self._turn, ids).result()

    def _turn(self, ids: list[int]) -> tuple[list[int], float]:
        start = time.perf_counter()
        reply: list[int] = []
        ttft = 0.0
        for token in self.llm.generate(ids, temp=0.0, reset=True):
            if not reply:
                ttft = time.perf_counter() - start
            reply.append(int(token))
            if len(reply) >= REPLY.max_new_tokens or token == self.llm.token_eos():
                break
        return reply, ttft


def engine_table(engine: str, turns: list[int]) -> list[str]:
    spec = ModelSpec(engine=engine)
    off = open_model(spec.with_(prompt_cache=False))
    off_figures = llm_tui_turns(off, turns)
    off.unload()
    on = open_model(spec)
    on_figures = llm_tui_turns(on, turns)
    if engine == "generate":
        reference = reference_turns(on, turns, lambda: TransformersChat(on.model))
        name = "plain transformers, prefix reused"
    else:
        reference = reference_turns(on, turns, lambda: LlamaCppChat(on.model))
        name = "bare llama-cpp-python"
    on.unload()
    lines = [f"\n{engine} engine (reference: {name})",
             f"{'turns':>5} {'prompt':>7} {'cache off':>10} {'cache on':>9} {'reference':>10} {'on/ref':>7}"]
    for n in turns:
        prompt, ttft_off = off_figures[n]
        _, ttft_on = on_figures[n]
        ref = reference[n]
        lines.append(f"{n:>5} {prompt:>7,} {ttft_off:>9.3f}s {ttft_on:>8.3f}s {ref:>9.3f}s {ttft_on / ref:>7.2f}")
    first, last = on_figures[turns[0]][1], on_figures[turns[-1]][1]
    lines.append(f"cache on: TTFT at {turns[-1]} turns / at {turns[0]} turns = {last / first:.2f} (target <= 1.5); "
                 f"cache off: {off_figures[turns[-1]][1] / off_figures[turns[0]][1]:.2f}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", default="2,6,12,20")
    parser.add_argument("--engines", default="generate,llamacpp")
    args = parser.parse_args()
    turns = sorted(int(t) for t in args.turns.split(","))
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    print(f"default model, greedy, {REPLY.max_new_tokens}-token replies; CPU threads {torch.get_num_threads()}")
    for engine in args.engines.split(","):
        if engine == "llamacpp" and importlib.util.find_spec("llama_cpp") is None:
            print("\nllamacpp engine: skipped (llama-cpp-python is not installed: pip install 'llm-tui[llamacpp]')")
            continue
        for line in engine_table(engine, turns):
            print(line, flush=True)


if __name__ == "__main__":
    main()
