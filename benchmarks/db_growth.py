"""How the conversation database grows with a conversation, and how long a long one takes to open.

Run: .venv/bin/python benchmarks/db_growth.py [--turns 100] [--synthetic] [--no-app]

A benchmark conversation of ``--turns`` turns is written twice, side by side
in one run: the old way (schema 2: every reply's prompt IDs and captured IDs
as JSON lists, written here exactly as the old store wrote them) and through
today's ``Store`` (each turn's prompt as a change of the one before,
``storage/prompts.py``). Each turn's prompt is the whole conversation so far,
rendered by the default model's chat template and tokenizer (no weights;
``--synthetic`` makes up IDs instead), and the engine is taken to have
received it as sent (captured = prompt). Reply tokens (the ``tokens`` blob)
are left out of both: they are the same in either layout.

Printed:

- bytes of prompt + captured IDs stored for turn 1, 20 and the last, and the
  database file in all (after a clean close);
- opening the last: ``PRAGMA quick_check``, reading the conversation (the old
  way: ``SELECT`` and ``json.loads``; today: ``Store.load_conversation``),
  and upgrading the old file (the v3 migration and VACUUM);
- in the real app (headless, a tiny random-weight model, the heap frozen as
  after a load) opening it with ``--resume`` and from F3: the worker's wall
  time, the message handler's wall time, and the longest stall of the event
  loop seen by a 5 ms timer from start (``--resume``) or from the choice (F3)
  to the conversation on screen (target: under 50 ms). A 2-turn
  conversation opened the same way, side by side, is the reference: its
  stalls are the app's own frames (starting, leaving a screen), not the
  conversation's length.

Asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _setup import ROOT, build_tiny_model  # noqa: E402,F401  (puts the repo on sys.path)

WORDS = ("the model reads every token of the prompt and answers in kind while the screen keeps up with "
         "what arrives from the engine so nothing waits for anything else and each figure is checked").split()


def sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."


def conversation(turns: int, synthetic: bool) -> list[tuple[str, str, list[int]]]:
    """``(question, answer, prompt IDs)`` per turn; each prompt is the whole conversation so far."""
    rng = random.Random(0)
    texts = [(sentence(rng, rng.randint(15, 40)), " ".join(sentence(rng, 12) for _ in range(rng.randint(6, 14))))
             for _ in range(turns)]
    if synthetic:
        out, prompt = [], [1, 2, 3]
        for question, answer in texts:
            prompt = prompt + [rng.randrange(49152) for _ in range(len(question.split()) * 4 // 3 + 5)]
            out.append((question, answer, prompt))
            prompt = prompt + [rng.randrange(49152) for _ in range(len(answer.split()) * 4 // 3 + 2)]
        return out
    from backends.core.spec import ModelSpec
    from backends.prompt.family_for import open_family

    family, _ = open_family(ModelSpec())
    messages: list[dict] = [{"role": "system", "content": "You are a helpful assistant."}]
    out = []
    for question, answer in texts:
        messages.append({"role": "user", "content": question})
        out.append((question, answer, list(family.render(messages).ids)))
        messages.append({"role": "assistant", "content": answer})
    return out


# -- the two layouts -------------------------------------------------------------------------------


def write_old(path: Path, turns) -> list[int]:
    """Schema 2, written as the old store did (JSON lists, one commit a write); returns each turn's ID bytes."""
    from backends.storage.migrations import MIGRATIONS

    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    for step in MIGRATIONS[:2]:
        step(db)
    db.execute("PRAGMA user_version = 2")
    now = time.time()
    db.execute("INSERT INTO conversations (title, created, updated, model, params, meta) VALUES ('', ?, ?, 'm', '{}', '{}')",
               (now, now))
    sizes = []
    for n, (question, answer, prompt) in enumerate(turns):
        db.execute("INSERT INTO messages (conversation_id, position, role, content, created) VALUES (1, ?, 'user', ?, ?)",
                   (2 * n, question, now))
        ids = json.dumps(prompt), json.dumps(prompt)
        db.execute("INSERT INTO messages (conversation_id, position, role, content, status, model, stats, prompt_ids,"
                   " captured_ids, created) VALUES (1, ?, 'assistant', ?, 'complete', 'm', ?, ?, ?, ?)",
                   (2 * n + 1, answer, json.dumps({"new_tokens": 100}), *ids, now))
        sizes.append(sum(len(part.encode()) for part in ids))
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return sizes


def write_new(path: Path, turns) -> tuple[list[int], int, list[float]]:
    """Through today's Store, as the recorder writes a turn; returns ID bytes, the conversation id
    and each turn's write time (the finished reply: its prompt encoded against the one before)."""
    from backends.storage.store import Store

    store = Store(path)
    conv = store.new_conversation("m", None, {})
    times = []
    for question, answer, prompt in turns:
        store.add_message(conv, "user", question)
        reply = store.add_message(conv, "assistant", "", status="partial", model="m")
        start = time.perf_counter()
        store.update_message(reply, content=answer, status="complete", stats={"new_tokens": 100},
                             prompt_ids=prompt, captured_ids=list(prompt))
        times.append(time.perf_counter() - start)
    store.close()
    db = sqlite3.connect(path)
    sizes = [row[0] for row in db.execute("SELECT length(prompt) + length(captured) FROM messages"
                                          " WHERE role = 'assistant' ORDER BY position")]
    db.close()
    return sizes, conv, times


def file_size(path: Path) -> int:
    return sum(Path(str(path) + suffix).stat().st_size for suffix in ("", "-wal") if Path(str(path) + suffix).exists())


def best_of(fn, rounds: int = 5) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def quick_check(path: Path) -> None:
    db = sqlite3.connect(path)
    db.execute("PRAGMA quick_check").fetchall()
    db.close()


def load_old(path: Path) -> None:
    """The old store's read of a conversation: every row, its JSON lists parsed."""
    db = sqlite3.connect(path)
    db.row_factory = sqlite3.Row
    for row in db.execute("SELECT * FROM messages WHERE conversation_id = 1 ORDER BY position").fetchall():
        for name in ("stats", "prompt_ids", "captured_ids"):
            if row[name] is not None:
                json.loads(row[name])
    db.close()


def load_new(path: Path, conv: int) -> None:
    from backends.storage.store import Store

    with Store(path) as store:
        store.load_conversation(conv)


def upgrade(old: Path, work: Path) -> None:
    from backends.storage.store import Store

    copy = work / "upgrade.sqlite3"
    shutil.copy(old, copy)
    Store(copy).close()
    copy.unlink()


# -- the app ---------------------------------------------------------------------------------------


async def open_in_app(handle, db: Path, conv: int, turns: int, how: str) -> dict:
    """Open conversation ``conv`` in the real app (``resume`` or ``f3``) and time it."""
    from backends.hardware.release import freeze_heap
    from tui.app import LlmTuiApp
    from tui.settings import AppSettings

    timing: dict = {}

    class Timed(LlmTuiApp):
        CSS_PATH = str(Path(sys.modules[LlmTuiApp.__module__].__file__).parent / LlmTuiApp.CSS_PATH)  # not beside this file

        async def on_conversation_loaded(self, message) -> None:
            start = time.perf_counter()
            await super().on_conversation_loaded(message)
            timing["worker_s"], timing["handler_s"] = message.seconds, time.perf_counter() - start

        async def on_mount(self) -> None:
            await super().on_mount()
            if how == "f3":  # the heap as the app leaves it once a model's load has finished after its
                self.call_after_refresh(freeze_heap)  # start: frozen with the app's own objects in it

        def on_store_opened(self, message) -> None:
            timing["store_s"] = message.seconds
            super().on_store_opened(message)

    stall = {"max": 0.0, "on": True}

    async def watch() -> None:
        while stall["on"]:
            before = time.perf_counter()
            await asyncio.sleep(0.005)
            stall["max"] = max(stall["max"], time.perf_counter() - before - 0.005)

    app = Timed(AppSettings(store_path=str(db), resume=str(conv) if how == "resume" else None, frozen=True),
                handles={0: handle})
    # On screen: the last messages (the earlier ones wait behind a line, ChatLog.show_saved).
    shown = lambda: len(app.chat.reply_models()) == turns and "handler_s" in timing  # noqa: E731
    watcher = asyncio.get_running_loop().create_task(watch())  # --resume: from the app's start on
    start = time.perf_counter()
    async with app.run_test(size=(120, 40)) as pilot:
        if how == "f3":
            while "store_s" not in timing:
                await pilot.pause(0.01)
            await pilot.pause(0.2)
            await pilot.press("f3")
            while type(app.screen).__name__ != "SessionsScreen":
                await pilot.pause(0.01)
            await pilot.pause(0.2)
            stall["max"], start = 0.0, time.perf_counter()  # from the choice on
            await pilot.press("enter")  # the newest first: the long conversation
        while not shown():
            await pilot.pause(0.005)
        timing["wall_s"] = time.perf_counter() - start
        await pilot.pause(0.3)  # what the screen does after: drawing, the preview of the next prompt
        stall["on"] = False
        await watcher
    timing["stall_s"] = stall["max"]
    return timing


def app_rounds(dbs: list[tuple[Path, int, int]], rounds: int) -> None:
    """Each ``(database, conversation, turns)`` opened both ways; the first is the reference: the
    same app opening a 2-turn conversation, whose frames are the app's own cost, not the length's."""
    from backends.checkpoint.demo import ensure_demo
    from backends.core.spec import ModelSpec
    from backends.generation.open import open_model
    from backends.hardware.release import freeze_heap

    with tempfile.TemporaryDirectory() as tmp:
        handle = open_model(ModelSpec(source=str(build_tiny_model(ensure_demo(), Path(tmp) / "tiny"))))
        print(f"\nOpening it in the app (headless, a tiny model), best of {rounds}:")
        print(f"  {'how':8} {'turns':>5} {'check ms':>9} {'worker ms':>10} {'handler ms':>11} {'on screen ms':>13}"
              f" {'longest stall ms':>17}")
        for how in ("resume", "f3"):
            for db, conv, turns in dbs:
                results = []
                for _ in range(rounds):
                    freeze_heap()  # as after a load; the app before's garbage is not this one's
                    results.append(asyncio.run(open_in_app(handle, db, conv, turns, how)))
                best = min(results, key=lambda r: r["stall_s"])
                print(f"  {how:8} {turns:5} {best.get('store_s', 0) * 1000:9.1f}"
                      f" {min(r['worker_s'] for r in results) * 1000:10.1f}"
                      f" {min(r['handler_s'] for r in results) * 1000:11.1f} {min(r['wall_s'] for r in results) * 1000:13.1f}"
                      f" {best['stall_s'] * 1000:17.1f}   (each round: "
                      + ", ".join(f"{r['stall_s'] * 1000:.0f}" for r in results) + ")")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=100)
    parser.add_argument("--synthetic", action="store_true", help="made-up IDs instead of the real tokenizer's")
    parser.add_argument("--no-app", action="store_true", help="leave out the app's opening times")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    start = time.perf_counter()
    turns = conversation(args.turns, args.synthetic)
    lengths = [len(p) for _, _, p in turns]
    print(f"{args.turns} turns, prompts of {lengths[0]:,} to {lengths[-1]:,} tokens "
          f"({'synthetic IDs' if args.synthetic else 'the default model’s template and tokenizer'};"
          f" built in {time.perf_counter() - start:.1f} s)")

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        old, new = work / "old.sqlite3", work / "new.sqlite3"
        old_sizes = write_old(old, turns)
        new_sizes, conv, write_times = write_new(new, turns)
        picks = sorted({0, min(19, args.turns - 1), args.turns - 1})
        print("\nPrompt + captured IDs stored per turn (bytes):")
        print(f"  {'layout':26}" + "".join(f"{f'turn {n + 1}':>12}" for n in picks) + f"{'all turns':>12}{'database file':>15}")
        for name, sizes, path in (("old (JSON lists, v2)", old_sizes, old), ("new (change of the last, v3)", new_sizes, new)):
            print(f"  {name:26}" + "".join(f"{sizes[n]:>12,}" for n in picks) + f"{sum(sizes):>12,}"
                  f"{file_size(path):>15,}")
        print(f"  writing a finished reply (new layout): turn 1 {write_times[0] * 1000:.2f} ms,"
              f" turn {args.turns} {write_times[-1] * 1000:.2f} ms")

        print(f"\nOpening turn {args.turns}'s conversation (best of 5):")
        print(f"  {'':26}{'quick_check ms':>16}{'read ms':>10}")
        print(f"  {'old (JSON lists, v2)':26}{best_of(lambda: quick_check(old)) * 1000:16.1f}"
              f"{best_of(lambda: load_old(old)) * 1000:10.1f}")
        print(f"  {'new (change of the last, v3)':26}{best_of(lambda: quick_check(new)) * 1000:16.1f}"
              f"{best_of(lambda: load_new(new, conv)) * 1000:10.1f}   (Store: the check, migrate and the read)")
        print(f"  upgrading the old file to v3 (migration + VACUUM): {best_of(lambda: upgrade(old, work), 3) * 1000:.1f} ms")
        if not args.no_app:
            short = work / "short.sqlite3"
            _, short_conv, _ = write_new(short, turns[:2])
            app_rounds([(short, short_conv, 2), (new, conv, args.turns)], args.rounds)


if __name__ == "__main__":
    main()
