"""How fast the inspector lays out and draws a ~32k-token prompt.

Run: .venv/bin/python benchmarks/inspector_render.py [--tokens 32000] [--width 100] [--height 40]

Uses the default model's real tokenizer (no weights) to build the prompt, then
times, for each mode: the layout alone (cold piece cache, then warm); in a
headless Textual app, the first ``show_preview`` and then one per simulated
keystroke (the last message growing a character at a time), each followed by
drawing the whole screen; and scrolling keys. Prints milliseconds; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def build_view(tokens: int):
    from backends.core.spec import ModelSpec
    from backends.prompt.family_for import open_family

    family, _ = open_family(ModelSpec())
    messages = []
    i = 0
    view = None
    while view is None or len(view) < tokens:
        for _ in range(20):
            role = "user" if i % 2 == 0 else "assistant"
            messages.append({"role": role, "content": f"message {i}: " + "The quick brown fox jumps over it.\n" * 20})
            i += 1
        start = time.perf_counter()
        view = family.render(messages)
        render_s = time.perf_counter() - start
    return family, messages, view, render_s


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.2f} ms"


def time_layouts(view, width: int) -> None:
    from tui.widgets.token_layout import MODES, Layout
    from tui.widgets.visible import PIECE_CACHE

    print(f"\nLayout of {len(view):,} tokens at width {width} (build only; lines are drawn on demand)")
    for mode in MODES:
        PIECE_CACHE.clear()
        start = time.perf_counter()
        layout = Layout(replace(view), mode, width)
        cold = time.perf_counter() - start
        warm = []
        for _ in range(10):
            start = time.perf_counter()
            Layout(replace(view), mode, width)
            warm.append(time.perf_counter() - start)
        start = time.perf_counter()
        for index in range(len(layout) - 40, len(layout)):
            layout.line(index)
        draw = time.perf_counter() - start
        print(f"  {mode:<7} {len(layout):>6} lines   cold {ms(cold)}   warm median {ms(statistics.median(warm))}"
              f"   draw 40 lines {ms(draw)}")


async def time_widget(view, typing: list, width: int, height: int) -> None:
    """``typing``: views of the same conversation with the last message one keystroke longer each."""
    from textual.app import App, ComposeResult

    from tui.widgets.inspector import Inspector

    class Host(App):
        def compose(self) -> ComposeResult:
            yield Inspector(id="inspector")

    app = Host()
    async with app.run_test(size=(width, height)) as pilot:
        inspector = app.query_one(Inspector)
        inspector.focus()
        await pilot.pause()

        def draw_screen() -> float:
            inspector._strips.clear()
            start = time.perf_counter()
            for y in range(inspector.size.height):
                inspector.render_line(y)
            return time.perf_counter() - start

        print(f"\nInspector widget {width}x{height}, {len(view):,}-token prompt: show_preview, then draw the whole screen")
        for mode in ("pieces", "text", "ids"):
            inspector.mode = mode
            inspector.show_preview(None)
            start = time.perf_counter()
            inspector.show_preview(replace(typing[0]))
            first = time.perf_counter() - start
            first_draw = draw_screen()
            await pilot.pause()
            shows, draws = [], []
            for step in typing[1:]:
                start = time.perf_counter()
                inspector.show_preview(step)
                shows.append(time.perf_counter() - start)
                draws.append(draw_screen())
                await pilot.pause()
            print(f"  {mode:<7} first preview {ms(first)} (+ draw {ms(first_draw)})   "
                  f"per keystroke: show_preview median {ms(statistics.median(shows))} max {ms(max(shows))}"
                  f", draw median {ms(statistics.median(draws))}")
        inspector.mode = "pieces"
        await pilot.pause()
        gc.collect()  # the many views kept for the typing run make a later full collection slow
        print("  keys (press, scroll, redraw, as the test pilot measures them; 'x' is unbound: the pilot's own cost)")
        for key in ("x", "home", "end", "pageup", "pageup", "up", "x"):
            start = time.perf_counter()
            await pilot.press(key)
            print(f"    {key:<7} {ms(time.perf_counter() - start)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=32_000)
    parser.add_argument("--width", type=int, default=100)
    parser.add_argument("--height", type=int, default=40)
    parser.add_argument("--keys", type=int, default=6, help="keystrokes to simulate (each one a family.render)")
    args = parser.parse_args()
    family, messages, view, render_s = build_view(args.tokens)
    print(f"prompt: {len(view):,} tokens, {len(view.spans)} spans; family.render took {ms(render_s)} "
          "(the app's cost per preview, not the inspector's)")
    draft = "How would you summarise all of that in one line"
    typing = [family.render(messages + [{"role": "user", "content": draft[:n]}]) for n in range(8, 8 + args.keys)]
    time_layouts(view, args.width - 1)
    asyncio.run(time_widget(view, typing, args.width, args.height))


if __name__ == "__main__":
    main()
