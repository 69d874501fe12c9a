"""Keys over SSH, through a real pseudo-terminal: bursts, pastes with escapes, pastes that arrive
as keystrokes, Esc, quitting, SIGTERM.

Everything typed here arrives the way a fast typist, ``tmux send-keys`` or a
laggy SSH link delivers it: several keys in one read.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st
from terminal import TerminalApp, wait_until
from textual import events
from textual._xterm_parser import XTermParser

from backends.core.paths import config_dir, data_dir
from backends.storage.store import Store
from tui.terminal_input import PASTE_END, PASTE_START, TYPED_AT_MOST, PasteFilter, PasteSafeParser

pytestmark = pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")


def short_replies() -> None:
    config_dir().mkdir(parents=True, exist_ok=True)
    (config_dir() / "config.toml").write_text("[defaults]\nmax_new_tokens = 4\ntemperature = 0\n")


def user_messages(db) -> list[str]:
    if not db.exists():
        return []
    with Store(db) as store:
        conv = store.latest_conversation_id()
        if conv is None:
            return []
        return [m.content for m in store.load_conversation(conv).messages if m.role == "user"]


def answered(db) -> bool:
    """The last message sent has its reply stored to its end: a new one may be sent."""
    with Store(db) as store:
        conv = store.latest_conversation_id()
        last = store.load_conversation(conv).messages[-1:] if conv is not None else []
    return bool(last) and last[0].role == "assistant" and last[0].status != "partial"


def first_turn(app: TerminalApp, db, text: str) -> None:
    """Once the model has loaded, send ``text`` and wait for its reply to be stored to its end."""
    wait_until(lambda: b"model 1:" in app.output, 120, "the model did not load", app)
    app.type(text + "\r")
    wait_until(lambda: user_messages(db) == [text], 20, "the first message was not sent", app)
    wait_until(lambda: answered(db), 60, "the reply did not end", app)


def test_bursts_pastes_and_esc_keep_every_character_in_order(tiny_model_dir):
    short_replies()
    db = data_dir() / "llm-tui.sqlite3"
    app = TerminalApp(str(tiny_model_dir))
    try:
        first_turn(app, db, "Say hi")  # text and Enter in one write: the Enter must not overtake the text
        # A bracketed paste holding an escape sequence, then Enter, all in one write.
        app.type(f"{PASTE_START}AAA\x1b[31mBBB{PASTE_END}\r")
        wait_until(lambda: len(user_messages(db)) == 2, 20, "the paste was not sent", app)
        assert user_messages(db)[1] == "AAA␛[31mBBB"  # in order, the escape shown, never acted on
        wait_until(lambda: answered(db), 60, "the reply did not end", app)
        # Esc leaves the input; a paste right after it still lands there, and so do typed keys.
        app.type("\x1b")
        time.sleep(0.5)
        app.type(f"{PASTE_START}after esc{PASTE_END}")
        time.sleep(0.3)
        app.type("\x1b")
        time.sleep(0.5)
        app.type("!\r")
        wait_until(lambda: len(user_messages(db)) == 3, 20, "the paste after Esc was lost", app)
        assert user_messages(db)[2] == "after esc!"
        app.type("\x11")  # Ctrl+Q
        wait_until(lambda: app.process.poll() is not None, 20, "Ctrl+Q did not quit", app)
        assert app.process.returncode == 0
        wal = db.with_name(db.name + "-wal")
        assert not wal.exists() or wal.stat().st_size == 0  # folded into the database on the way out
    finally:
        app.close()


def test_sigterm_during_a_long_prefill_ends_the_process_with_143(demo_dir):
    db = data_dir() / "llm-tui.sqlite3"
    app = TerminalApp()
    try:
        wait_until(lambda: b"model 1:" in app.output, 120, "the model did not load", app)
        app.type(PASTE_START + "word " * 5000 + PASTE_END)  # a prefill of minutes on a CPU
        time.sleep(0.5)
        app.type("\r")
        wait_until(lambda: len(user_messages(db)) == 1, 30, "the long message was not sent", app)
        time.sleep(1.0)
        took = app.end_with(signal.SIGTERM)
        assert app.process.returncode == 143
        assert took < 8
    finally:
        app.close()


def type_in_reads(app: TerminalApp, text: str, size: int = 4096) -> None:
    """``text`` as a terminal without bracketed paste sends a paste: keystrokes, in pieces of ``size``."""
    data = text.encode()
    for at in range(0, len(data), size):
        os.write(app.master, data[at:at + size])


def test_a_paste_that_arrives_as_keystrokes_is_one_edit(tiny_model_dir):
    short_replies()
    db = data_dir() / "llm-tui.sqlite3"
    text = "The quick brown fox jumps over the lazy dog. " * 700  # 31 KB: minutes, one key at a time
    app = TerminalApp(str(tiny_model_dir))
    try:
        wait_until(lambda: b"model 1:" in app.output, 120, "the model did not load", app)
        started = time.monotonic()
        type_in_reads(app, text + "\r")
        wait_until(lambda: user_messages(db) == [text], 60, "the keystroke paste was not sent whole", app)
        took = time.monotonic() - started
        print(f"a {len(text):,}-character paste typed as keys: sent after {took:.2f} s")
        assert took < 2
        # After Esc the chat has the focus: a burst that starts there goes into the input whole,
        # and so does text with letters that are keys there (t, v, y, [, 1).
        for burst in ("hello world", "try v, y, [ or 1 to see the token keys"):
            wait_until(lambda: answered(db), 60, "the reply did not end", app)
            app.type("\x1b")
            time.sleep(0.5)
            app.type(burst + "\r")
            wait_until(lambda: burst in user_messages(db), 20, f"{burst!r} did not reach the input whole", app)
        assert user_messages(db) == [text, "hello world", "try v, y, [ or 1 to see the token keys"]
    finally:
        app.close()


# -- the paste filter on its own ---------------------------------------------------------------


def filtered(chunks: list[str]) -> str:
    pastes = PasteFilter()
    return "".join(pastes.feed(chunk) for chunk in chunks)


def test_escapes_inside_a_paste_are_shown_and_outside_left_alone():
    data = f"a\x1b[Ab{PASTE_START}x\x1b[31my\x1b{PASTE_END}\x1bOP"
    assert filtered([data]) == f"a\x1b[Ab{PASTE_START}x␛[31my␛{PASTE_END}\x1bOP"
    assert filtered(["\x1b"]) == "\x1b"  # a lone Esc press goes through at once


@given(st.lists(st.integers(min_value=0, max_value=60), max_size=8))
def test_a_paste_split_anywhere_comes_out_the_same(cuts):
    data = f"k\x1b[B{PASTE_START}pa\x1bste\x1b[201 not the end\x1b[2{PASTE_END}z\x1b"
    points = sorted({min(c, len(data)) for c in cuts})
    chunks = [data[a:b] for a, b in zip([0, *points], [*points, len(data)])]
    assert filtered(chunks) == filtered([data])


# -- keystrokes that are text: the parser on its own ----------------------------------------------


def parsed(chunks: list[str], parser=None) -> list:
    parser = parser or PasteSafeParser()
    return [event for chunk in chunks if chunk for event in parser.feed(chunk)] + list(parser.feed(""))


def what_arrives(items: list) -> list:
    """Events as the input sees them: text (typed keys and pastes, run together) and other keys."""
    out: list = []
    for event in items:
        if isinstance(event, events.Paste):
            text = event.text
        elif isinstance(event, events.Key) and event.is_printable and "+" not in event.key:
            text = event.character
        else:
            out.append(event.key if isinstance(event, events.Key) else type(event).__name__)
            continue
        if out and isinstance(out[-1], tuple):
            out[-1] = ("text", out[-1][1] + text)
        else:
            out.append(("text", text))
    return out


def test_keys_that_may_have_been_typed_stay_keys():
    assert [e.key for e in parsed(["tv"])] == ["t", "v"]  # bindings outside the input
    burst = "x" * TYPED_AT_MOST
    assert [e.key for e in parsed([burst])] == ["x"] * TYPED_AT_MOST
    held_down = "l" * 40  # a key held down over a stalled link: repeats, not text
    assert [e.key for e in parsed([held_down])] == ["l"] * 40


def test_a_longer_run_is_one_paste_held_until_the_reads_stop():
    text = "The quick brown fox jumps over the lazy dog. " * 200
    parser = PasteSafeParser()
    pieces = [text[at:at + 4096] for at in range(0, len(text), 4096)]
    for piece in pieces:
        assert parser.feed(piece) == []
        assert parser.tick() == []  # the driver ticks after every read: more may come
    [paste] = parser.tick()  # a tick after a wait with nothing read
    assert isinstance(paste, events.Paste) and paste.text == text


def test_enter_and_other_keys_keep_their_place_after_the_text():
    text = "a line longer than anyone types in one read"
    items = parsed([text[:20], text[20:] + "\r", "\x1b[A" + text + "\t" + "ok"])
    assert what_arrives(items) == [("text", text), "enter", "up", ("text", text), "tab", ("text", "ok")]
    assert [type(e).__name__ for e in items[:4]] == ["Paste", "Key", "Key", "Paste"]  # two reads, one paste


PIECES = ["a", "é", "中", "😀", " ", "\r", "\t", "\x7f", "\x1b", "\x1b[A", "\x1bOP", "\x1b[1;5C", "x" * 20,
         "The quick brown fox. ", PASTE_START + "p\x1bq" + PASTE_END]


@given(st.lists(st.sampled_from(PIECES), max_size=12),
       st.lists(st.integers(min_value=0, max_value=200), max_size=8))
def test_what_arrives_is_what_textual_parses_from_the_same_reads(parts, cuts):
    data = "".join(parts)
    points = sorted({min(c, len(data)) for c in cuts})
    chunks = [data[a:b] for a, b in zip([0, *points], [*points, len(data)])]
    pastes = PasteFilter()
    reference = parsed([pastes.feed(chunk) for chunk in chunks], XTermParser())
    assert what_arrives(parsed(chunks)) == what_arrives(reference)
