"""The status bar: which model answers, what the last turn cost, and what is going on.

Each field has one owner, the controller that owns the fact: the model
registry sets the model's details and ``load``, ``Turns`` the last turn's
figures and ``turn``, ``Comparing`` ``compare``, ``Profiles`` ``profile``, the output side ``scoring``,
the sessions ``alert``. What is going on is all of the activity fields at
once, so no owner's line overwrites another's ("1 message waiting" stays
while the load reports its progress; a finished scoring leaves
"generating" alone).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from textual.content import Content
from textual.widget import Widget

from backends.core.sanitize import visible_text


@dataclass(frozen=True)
class StatusInfo:
    model: str = "no model"
    family: str = ""
    dtype: str = ""
    quant: str = ""
    device: str = ""
    context_used: int | None = None
    context_max: int | None = None
    ttft_s: float | None = None
    tok_s: float | None = None
    load: str = ""  # ModelRegistry: "loading qwen… 40%", "F2 picks a model"
    turn: str = ""  # Turns: "generating · 120 tokens", "stopping…", "1 message waiting"
    profile: str = ""  # Profiles: "profiling 1,024 (2/5)"
    scoring: str = ""  # OutputSide: "scoring the prompt…"
    compare: str = ""  # Comparing: "compare 1·2", "comparing · 2 answering", "comparing · reading the replies"
    kv: str = ""  # the KV cache after the last turn and how much more context fits
    budget: int | None = None  # /budget: prompts are kept within this many tokens
    alert: str = ""  # a lasting problem (conversations are not being saved), shown until it is fixed


class StatusBar(Widget):
    """One line at the bottom, above the footer. Text is never read as markup.

    When the line is too long for the terminal, the KV figure goes first, then
    the model's details, then the context figure, so the numbers of the last
    turn stay visible.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.info = StatusInfo()

    def set(self, **changes) -> None:
        """Change some fields; each caller passes only the fields it owns."""
        info = replace(self.info, **changes)
        if info != self.info:
            self.info = info
            self.refresh()  # one fixed line: no layout pass per update

    @property
    def activity(self) -> str:
        """What is going on now, every owner's part of it."""
        i = self.info
        return " · ".join(part for part in (i.load, i.turn, i.compare, i.profile, i.scoring) if part)

    def render(self) -> Content:
        width = self.content_region.width or 80
        variants = [self.content(details=True, context=True, kv=True),
                    self.content(details=True, context=True),
                    self.content(details=False, context=True),
                    self.content(details=False, context=False)]
        for content in variants:
            if content.cell_length <= width:
                return content
        return variants[-1]

    def content(self, *, details: bool = True, context: bool = True, kv: bool = False) -> Content:
        i = self.info
        parts: list[str | tuple[str, str]] = [(visible_text(i.model), "bold")]
        if details:
            weights = i.quant if i.quant and i.quant != "none" and not i.model.endswith(i.quant) else i.dtype
            for value in (i.family, weights, i.device):
                if value:
                    parts += [" · ", visible_text(value)]
        if context and i.context_used is not None:
            limit = f"/{i.context_max}" if i.context_max else ""
            parts += [" │ ctx ", f"{i.context_used}{limit}"]
            if i.budget:
                parts += [" · budget ", f"{i.budget:,}"]
        if kv and i.kv:
            parts += [" · ", visible_text(i.kv)]
        if i.ttft_s is not None:
            parts += [" │ TTFT ", f"{i.ttft_s * 1000:.0f} ms"]
        if i.tok_s is not None:
            parts += [" · ", f"{i.tok_s:.1f} tok/s"]
        if self.activity:
            parts += [" │ ", (visible_text(self.activity), "italic")]
        if i.alert:
            parts = [(f"⚠ {visible_text(i.alert)}", "bold $error"), " │ ", *parts]
        return Content.assemble(*parts)
