"""Terminal input as the app should see it: pastes kept whole and in order, wherever they come from.

Textual's xterm parser reads an ESC inside a bracketed paste as the start of
a key sequence: the characters after it leave the paste and arrive as keys,
before the paste itself, so ``AAA<ESC>[31mBBB`` reached the input as
``^[31mBBBAAA``. ``PasteFilter`` shows every ESC between the paste's start
and end markers as the visible ``␛`` before Textual's parser sees it, so a
paste is one ``Paste`` event with its text in order, and a terminal never
acts on what was pasted. Everything outside a paste passes through untouched.

A paste that arrives as keystrokes (no bracketed paste: some terminals and
multiplexers, ``tmux paste-buffer`` without ``-p``) was one key event per
character, and each one re-wrapped the whole input: 31 KB took minutes.
``PasteSafeParser`` gives a run of plain characters that cannot have been
typed (see ``TYPED_AT_MOST``) as one ``Paste`` holding that text, without
passing it through Textual's parser one character at a time; keys that can
have been typed, and every control key (Enter sends, Tab, Esc …), stay key
events, in their place in the text.

``install()`` makes the Linux driver use it; ``launch.py`` calls it for a real
terminal (the one seam where llm-tui reaches into Textual's driver).
"""

from __future__ import annotations

import re

from textual import events
from textual._xterm_parser import XTermParser

ESC = "\x1b"
PASTE_START = "\x1b[200~"
PASTE_END = "\x1b[201~"
SHOWN_ESC = "␛"

#: The most plain characters in one read that may still be keys someone typed: a laggy SSH link
#: bunches a typist's keys up, and outside the input ``t``, ``v``, ``1``-``9``, ``[`` are keys, as
#: a dialog's ``y`` is. A longer run in one read was pasted or sent (``tmux send-keys``): it goes
#: into the input in one edit, and none of its letters acts as a key, in a dialog either. The
#: focused widget is not asked: this runs in the input thread, ahead of queued keys that may move it.
TYPED_AT_MOST = 15

#: A key held down repeats one character; over a stalled link many repeats come in one read and
#: they are presses (``l`` walks tokens), unless there are more than a key repeats in seconds.
REPEATED_KEY_AT_MOST = 255

# Characters that Textual's parser turns, each on its own, into a key event with that character:
# all but the C0 and C1 controls and DEL (ESC starts a sequence; Enter, Tab, Ctrl+letter are keys).
# In a run, characters a key event would drop as unprintable (a no-break space, a zero-width
# joiner in an emoji) are kept, as a bracketed paste keeps them.
_PLAIN = re.compile("[^\x00-\x1f\x7f-\x9f]+")


class PasteFilter:
    """Rewrites terminal input so that no ESC is left inside a bracketed paste.

    Input comes in chunks of any size: a marker may be split between two of
    them. Outside a paste data passes through at once (a lone Esc key press
    must not wait); inside one, a possible start of the end marker is held
    back until the next chunk tells what it is.
    """

    def __init__(self) -> None:
        self.in_paste = False
        self._tail = ""  # the last characters seen outside a paste (a start marker may span chunks)
        self._held = ""  # inside a paste: characters that may be the start of the end marker

    def feed(self, data: str) -> str:
        return "".join(text for text, _ in self.pieces(data))

    def pieces(self, data: str) -> list[tuple[str, bool]]:
        """``data`` rewritten, in order, as ``(text, inside_a_paste)`` pieces; a start marker ends
        the piece outside, an end marker the piece inside."""
        out: list[tuple[str, bool]] = []
        while data:
            if not self.in_paste:
                probe = self._tail + data
                at = probe.find(PASTE_START)
                if at < 0:
                    out.append((data, False))
                    self._tail = probe[-(len(PASTE_START) - 1):]
                    break
                after = at + len(PASTE_START) - len(self._tail)  # where the paste starts in ``data``
                out.append((data[:after], False))
                data = data[after:]
                self._tail = ""
                self.in_paste = True
            else:
                data = self._held + data
                self._held = ""
                at = data.find(PASTE_END)
                if at < 0:
                    keep = _partial_marker(data)
                    self._held = data[len(data) - keep:]
                    out.append((data[:len(data) - keep].replace(ESC, SHOWN_ESC), True))
                    break
                out.append((data[:at].replace(ESC, SHOWN_ESC) + PASTE_END, True))
                data = data[at + len(PASTE_END):]
                self.in_paste = False
        return [(text, inside) for text, inside in out if text]


def _partial_marker(data: str) -> int:
    """How many characters at the end of ``data`` could begin the paste's end marker."""
    for size in range(min(len(PASTE_END) - 1, len(data)), 0, -1):
        if PASTE_END.startswith(data[-size:]):
            return size
    return 0


def _typed(run: str) -> bool:
    """Could these characters, arriving in one read, be keys pressed (see ``TYPED_AT_MOST``)?"""
    return len(run) <= TYPED_AT_MOST or (len(run) <= REPEATED_KEY_AT_MOST and run.count(run[0]) == len(run))


class PasteSafeParser(XTermParser):
    """Textual's parser, fed through a ``PasteFilter``; a run of plain text too long to be typed
    is one ``Paste``.

    The text of a run is held, not sent, at the end of a read: a paste comes in many reads
    (4 KB each), and one edit of the whole paste costs what one of its pieces would. It goes
    when anything else arrives (Enter behind it, a key, a bracketed paste) or at the first
    ``tick`` that follows a read-free wait (the driver ticks after every wait of at most 0.1 s).
    A key that may have been typed never waits.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._paste_filter = PasteFilter()
        self._text: list[str] = []  # the run of text being held
        self._read = False  # whether a read came since the last tick

    def feed(self, data: str) -> list:
        if not data:  # the end of the input
            return [*self._release(), *super().feed(data)]
        self._read = True
        out: list = []
        for text, inside in self._paste_filter.pieces(data):
            if inside:
                out += self._release()
                out += super().feed(text)
            else:
                out += self._outside(text)
        return out

    def tick(self) -> list:
        out = [] if self._read else self._release()
        self._read = False
        return [*out, *super().tick()]

    def _outside(self, text: str) -> list:
        out: list = []
        pos = 0
        for match in _PLAIN.finditer(text):
            out += self._others(text[pos:match.start()])
            pos = match.end()
            run = match.group()
            # Characters that finish an escape sequence (an arrow's "[A") are the parser's.
            while run and not self._between_keys():
                out += self._parse(run[0])
                run = run[1:]
            if run and (self._text or not _typed(run)):
                self._text.append(run)  # it goes on from the text held, or it is text itself
            else:
                out += self._parse(run)
        return out + self._others(text[pos:])

    def _others(self, text: str) -> list:
        """Control keys and escape sequences: after the text held, which came first."""
        return [*self._release(), *self._parse(text)] if text else []

    def _between_keys(self) -> bool:
        """The parser is waiting for a new key (not inside an escape sequence, which times out);
        the paste filter has already told pastes apart."""
        return self._awaiting.timeout is None

    def _parse(self, text: str) -> list:
        return list(super().feed(text)) if text else []

    def _release(self) -> list:
        if not self._text:
            return []
        text, self._text = "".join(self._text), []
        return [events.Paste(text)]


def install() -> None:
    """Make Textual's Linux driver parse input with ``PasteSafeParser``."""
    from textual.drivers import linux_driver

    linux_driver.XTermParser = PasteSafeParser
