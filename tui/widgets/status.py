"""The status bar: which model answers and what the last turn cost."""

from __future__ import annotations

from dataclasses import dataclass, replace

from textual.content import Content
from textual.widgets import Static

from backends.sanitize import visible_text


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
    state: str = ""  # "loading 40%", "generating", ""


class StatusBar(Static):
    """One line at the bottom, above the footer. Text is never read as markup."""

    def __init__(self, **kwargs) -> None:
        super().__init__("", **kwargs)
        self.info = StatusInfo()

    def set(self, **changes) -> None:
        self.info = replace(self.info, **changes)
        self.update(self.content(), layout=False)  # one fixed line: no layout pass per token batch

    def content(self) -> Content:
        i = self.info
        parts: list[str | tuple[str, str]] = [(visible_text(i.model), "bold")]
        details = [i.family, i.quant if i.quant and i.quant != "none" else i.dtype, i.device]
        for value in details:
            if value:
                parts += [" · ", visible_text(value)]
        if i.context_used is not None:
            limit = f"/{i.context_max}" if i.context_max else ""
            parts += [" │ ctx ", f"{i.context_used}{limit}"]
        if i.ttft_s is not None:
            parts += [" │ TTFT ", f"{i.ttft_s * 1000:.0f} ms"]
        if i.tok_s is not None:
            parts += [" · ", f"{i.tok_s:.1f} tok/s"]
        if i.state:
            parts += [" │ ", (visible_text(i.state), "italic")]
        return Content.assemble(*parts)
