"""The styles the inspector draws with; the widget fills them from its CSS component classes."""

from __future__ import annotations

from dataclasses import dataclass, fields

from rich.style import Style


@dataclass(frozen=True)
class Palette:
    """The styles the drawing uses; the inspector fills it from its CSS component classes."""

    piece: Style = Style(bgcolor="#2b303b")
    piece_alt: Style = Style(bgcolor="#3b4252")
    token_id: Style = Style(color="#7c8794")
    special: Style = Style(color="#ff79c6", bold=True)
    whitespace: Style = Style(color="#6b7785")
    role: Style = Style(color="#56b6c2", bold=True)
    dropped: Style = Style(color="#6c6c6c", italic=True)
    warning: Style = Style(color="#e5c07b")
    error: Style = Style(color="#e06c75", bold=True)
    ok: Style = Style(color="#98c379", bold=True)
    mismatch: Style = Style(color="#ffffff", bgcolor="#c0392b", bold=True)
    gutter: Style = Style(color="#5c6370")
    muted: Style = Style(color="#8b949e")
    bar_ok: Style = Style(color="#98c379")
    bar_warn: Style = Style(color="#e5c07b")
    bar_full: Style = Style(color="#e06c75")
    bar_empty: Style = Style(color="#3b4252")
    #: How expected a prompt token was (a score): 50-90%, 20-50%, below 20%.
    prob_mid: Style = Style(bgcolor="#2f4a3a")
    prob_low: Style = Style(bgcolor="#5a4a25")
    prob_lowest: Style = Style(bgcolor="#5a2a2a")

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


DEFAULT_PALETTE = Palette()
