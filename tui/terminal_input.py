"""Bracketed pastes that contain an escape character, kept whole and in order.

Textual's xterm parser reads an ESC inside a bracketed paste as the start of
a key sequence: the characters after it leave the paste and arrive as keys,
before the paste itself, so ``AAA<ESC>[31mBBB`` reached the input as
``^[31mBBBAAA``. This parser shows every ESC between the paste's start and
end markers as the visible ``␛`` before Textual's parser sees it, so a paste
is one ``Paste`` event with its text in order, and a terminal never acts on
what was pasted. Everything outside a paste passes through untouched.

``install()`` makes the Linux driver use it; ``launch.py`` calls it for a real
terminal (the one seam where llm-tui reaches into Textual's driver).
"""

from __future__ import annotations

from textual._xterm_parser import XTermParser

ESC = "\x1b"
PASTE_START = "\x1b[200~"
PASTE_END = "\x1b[201~"
SHOWN_ESC = "␛"


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
        out: list[str] = []
        while data:
            if not self.in_paste:
                probe = self._tail + data
                at = probe.find(PASTE_START)
                if at < 0:
                    out.append(data)
                    self._tail = probe[-(len(PASTE_START) - 1):]
                    break
                after = at + len(PASTE_START) - len(self._tail)  # where the paste starts in ``data``
                out.append(data[:after])
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
                    out.append(data[:len(data) - keep].replace(ESC, SHOWN_ESC))
                    break
                out.append(data[:at].replace(ESC, SHOWN_ESC) + PASTE_END)
                data = data[at + len(PASTE_END):]
                self.in_paste = False
        return "".join(out)


def _partial_marker(data: str) -> int:
    """How many characters at the end of ``data`` could begin the paste's end marker."""
    for size in range(min(len(PASTE_END) - 1, len(data)), 0, -1):
        if PASTE_END.startswith(data[-size:]):
            return size
    return 0


class PasteSafeParser(XTermParser):
    """Textual's parser, fed through a ``PasteFilter``."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._paste_filter = PasteFilter()

    def feed(self, data: str):
        return super().feed(self._paste_filter.feed(data) if data else data)


def install() -> None:
    """Make Textual's Linux driver parse input with ``PasteSafeParser``."""
    from textual.drivers import linux_driver

    linux_driver.XTermParser = PasteSafeParser
