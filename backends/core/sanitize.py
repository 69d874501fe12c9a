"""Make untrusted text (model output, file content) safe to show in a terminal.

Escape sequences (ANSI colours, OSC 52 clipboard writes, title changes …) and
other control characters are replaced with visible stand-ins, so text is
always shown as text and never acted on by the terminal.
"""

from __future__ import annotations

import re

# C0 controls except tab and newline, DEL, and C1 controls.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _stand_in(match: re.Match) -> str:
    char = match.group()
    if char == "\x1b":
        return "␛"
    if char == "\r":
        return "␍"
    code = ord(char)
    if code < 0x20:
        return chr(0x2400 + code)  # the Control Pictures block: ␀ ␁ …
    return f"\\x{code:02x}"


def visible_text(text: str) -> str:
    """``text`` with every control character (but tab and newline) made visible."""
    return _CONTROL.sub(_stand_in, text)
