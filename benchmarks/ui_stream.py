"""Does the screen hold generation back? Streams long replies into the real app, headless.

A tiny random-weight model (real SmolLM2 tokenizer, never emits EOS) streams
1000- and 4000-token replies into ``LlmTuiApp`` run with ``App.run_test``.
Rounds alternate between the same engine with no UI and the app, so both see
the same machine load. Printed side by side:

- engine tokens/s with the app displaying vs with no UI (target ratio >= 0.95)
- last token -> reply fully on screen (target < 250 ms)
- longest event-loop stall seen by a 10 ms timer (target < 50 ms)
- display time of 4000 tokens / display time of 1000 tokens (target <= 4.5)

The 10 ms timer itself costs the UI thread about 2% of a core, which on a
tiny, GIL-bound model shows up as lost tokens/s; so it runs in separate app
rounds (one per length), and tokens/s is compared on rounds without it.

With --colour the app rounds run with replies coloured by token probability
(the `t` key), so the figures show what colouring costs on screen.

Run: .venv/bin/python benchmarks/ui_stream.py [--rounds 3] [--lengths 1000,4000] [--colour]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path


def build_model(out: Path, layers: int, hidden: int) -> Path:
    """A random-weight Llama with the default model's tokenizer that never ends a reply early."""
    import shutil

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from backends.checkpoint.demo import ensure_demo

    demo = ensure_demo()
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=49152, hidden_size=hidden, intermediate_size=hidden * 2,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=8192, bos_token_id=1, eos_token_id=2, pad_token_id=2,
                         tie_word_embeddings=True)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = 2
    model.generation_config.suppress_tokens = list(range(0, 17))  # no special tokens: no early end
    model.save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (demo / name).exists():
            shutil.copy(demo / name, out / name)
    return out


MESSAGES = [{"role": "user", "content": "Tell me a long story."}]


def run_headless(handle, tokens: int) -> dict:
    """The engine alone, read the way `llm-tui run` reads it."""
    from backends.core.events import DoneEvent
    from backends.core.params import SamplingParams

    generation = handle.stream(MESSAGES, SamplingParams(temperature=0, max_new_tokens=tokens), threading.Event())
    start = time.perf_counter()
    done = None
    while done is None:
        for event in generation.drain(0.1):
            if isinstance(event, DoneEvent):
                done = event
    generation.join()
    return {"tok_s": done.stats.decode_tok_s, "total_s": time.perf_counter() - start,
            "tokens": done.stats.new_tokens}


async def run_app(handle, model_dir: Path, tokens: int, watch_stalls: bool = False, colour: bool = False) -> dict:
    """The same turn typed into the real app; the app shows every token as it comes."""
    from tui.app import LlmTuiApp
    from tui.messages import TurnDone
    from tui.settings import AppSettings

    app = LlmTuiApp(AppSettings(models=[str(model_dir)], frozen=True), handles={0: handle})
    app.turns.params = app.turns.params.with_value("max_new_tokens", str(tokens)).with_value("temperature", "0")
    stall = {"max": 0.0, "last": None, "on": False}
    loop = asyncio.get_running_loop()

    def tick() -> None:
        # A bare asyncio 10 ms timer: it sees every stall of the event loop.
        now = time.perf_counter()
        if stall["on"] and stall["last"] is not None:
            stall["max"] = max(stall["max"], now - stall["last"] - 0.010)
        stall["last"] = now
        if stall["on"]:
            loop.call_later(0.010, tick)

    ended: list = []  # the turn's TurnDone, seen as the app receives it

    def hook(message) -> None:
        if isinstance(message, TurnDone) and not ended:
            ended.append(message)

    async with app.run_test(size=(160, 48), message_hook=hook) as pilot:
        while app.models.handle is None:
            await pilot.pause(0.05)
        if colour:
            app.output.toggle_colour()
        app.input.load_text(MESSAGES[0]["content"])
        await pilot.pause(0.3)  # let the preview settle before timing starts
        stall["on"] = watch_stalls
        if watch_stalls:
            tick()
        busy_start = time.thread_time()  # CPU time of the UI thread (the event loop runs here)
        sent = time.perf_counter()
        await pilot.press("enter")
        while not ended:
            await asyncio.sleep(0.25)
        while app.turns.turn is not None:  # the reply is on screen once the app has finished the turn
            await asyncio.sleep(0.002)
        displayed_t = time.perf_counter()
        stall["on"] = False
        ui_cpu = time.thread_time() - busy_start
        turn_done = ended[0]
        reply = app.chat.last_reply()
        shown = reply is not None and reply.text == turn_done.done.text
        await pilot.pause(0.05)
    done, last_token_t = turn_done.done, turn_done.last_token_t
    return {"tok_s": done.stats.decode_tok_s, "tokens": done.stats.new_tokens,
            "display_s": displayed_t - sent,
            "tail_ms": (displayed_t - last_token_t) * 1000 if last_token_t else float("nan"),
            "stall_ms": stall["max"] * 1000 if watch_stalls else None, "complete": shown,
            "ui_busy": ui_cpu / max(displayed_t - sent, 1e-9)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="1000,4000")
    parser.add_argument("--rounds", type=int, default=3, help="alternating no-UI/app rounds per length")
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for a tiny model)")
    parser.add_argument("--colour", action="store_true", help="the app colours replies by token probability")
    args = parser.parse_args(argv)
    lengths = [int(x) for x in args.lengths.split(",")]

    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="llm-tui-bench-") as tmp:
        os.environ.setdefault("LLM_TUI_DATA_DIR", str(Path(tmp) / "data"))
        os.environ.setdefault("LLM_TUI_CONFIG_DIR", str(Path(tmp) / "config"))
        from backends.core.spec import ModelSpec
        from backends.generation.open import open_model

        model_dir = build_model(Path(tmp) / "bench-tiny", args.layers, args.hidden)
        handle = open_model(ModelSpec(source=str(model_dir)))
        run_headless(handle, 50)  # warm-up: first calls, imports and caches on both sides
        asyncio.run(run_app(handle, model_dir, 50))
        results: dict[int, dict[str, list]] = {}
        for tokens in lengths:
            rows: dict[str, list] = {"plain": [], "app": [], "stalls": []}
            for _ in range(args.rounds):
                rows["plain"].append(run_headless(handle, tokens))
                rows["app"].append(asyncio.run(run_app(handle, model_dir, tokens, colour=args.colour)))
            rows["stalls"].append(asyncio.run(run_app(handle, model_dir, tokens, watch_stalls=True,
                                                      colour=args.colour)))
            results[tokens] = rows
    print("replies coloured by token probability" if args.colour else "replies as Markdown (colouring off)")
    report(results, lengths)
    return 0


def report(results: dict[int, dict[str, list]], lengths: list[int]) -> None:
    med = statistics.median
    print(f"{'tokens':>7} {'no-UI tok/s':>12} {'app tok/s':>10} {'ratio':>6} {'tail ms':>8} {'stall ms':>9} "
          f"{'display s':>10} {'UI busy':>8}")
    display = {}
    for tokens in lengths:
        plain, app = results[tokens]["plain"], results[tokens]["app"]
        p = med(r["tok_s"] for r in plain)
        a = med(r["tok_s"] for r in app)
        ratio = med(x["tok_s"] / y["tok_s"] for x, y in zip(app, plain))  # pairs run back to back
        display[tokens] = med(r["display_s"] for r in app)
        print(f"{tokens:>7} {p:>12.1f} {a:>10.1f} {ratio:>6.3f} {med(r['tail_ms'] for r in app):>8.0f} "
              f"{max(r['stall_ms'] for r in results[tokens]['stalls']):>9.1f} {display[tokens]:>10.2f}"
              f" {med(r['ui_busy'] for r in app):>8.0%}"
              + ("" if all(r["complete"] for r in app + results[tokens]["stalls"])
                 else "  (reply incomplete on screen!)"))
    if len(lengths) >= 2:
        short, long = lengths[0], lengths[-1]
        print(f"display time {long}/{short}: {display[long] / display[short]:.2f} "
              f"(token ratio {long / short:.1f})")
    print("targets: ratio >= 0.95 · tail < 250 ms · stall < 50 ms · display ratio <= 4.5 "
          "(medians over rounds, the ratio over back-to-back pairs; stall from its own rounds)")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    raise SystemExit(main())
