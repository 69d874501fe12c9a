"""Before a turn: will it fit in memory, and if not, the family's truncation that would."""

from __future__ import annotations

from dataclasses import dataclass

from backends.memory.turn import check_turn, prompt_budget, turn_devices
from backends.memory.verdicts import check_mode
from backends.prompt.truncation import (
    OLDEST_FIRST,
    truncation_rule,
)
from backends.prompt.view import PromptView

# -- when a turn would not fit in memory ----------------------------------------------------


@dataclass(frozen=True)
class TurnFit:
    """Will the next turn fit in memory, and what truncating the history would leave."""

    verdict: object  # backends.memory.MemoryVerdict
    prompt_tokens: int
    #: The longest prompt that fits with room to spare (None: free memory unknown).
    budget: int | None = None
    #: The prompt cut to ``budget`` by the family's truncation (None when no cut is possible).
    cut: PromptView | None = None
    #: How the family truncates, in words.
    rule: str = OLDEST_FIRST

    @property
    def fits(self) -> bool:
        return self.verdict.level != "refuse"

    @property
    def can_truncate(self) -> bool:
        """Truncating leaves a prompt that fits (at least the last message survives)."""
        return bool(self.budget) and self.cut is not None and len(self.cut.ids) <= self.budget


def plan_turn(handle, messages: list[dict], params) -> TurnFit:
    """The memory check before a turn, with the family's truncation worked out when it would not fit.

    ``handle`` is a ModelHandle; ``params`` a SamplingParams (its ``max_prompt_tokens``
    is applied first, as the turn itself will).
    """

    view = handle.render(messages, max_new_tokens=params.max_new_tokens, max_prompt_tokens=params.max_prompt_tokens)
    devices = [] if check_mode() == "off" else turn_devices(handle)
    verdict = check_turn(handle, len(view.ids), params.max_new_tokens, devices=devices)
    if verdict.level != "refuse":
        return TurnFit(verdict, len(view.ids))
    budget = prompt_budget(handle, params.max_new_tokens, devices=devices)
    cut = None
    if budget:
        cut = handle.render(messages, max_new_tokens=params.max_new_tokens, max_prompt_tokens=budget)
    return TurnFit(verdict, len(view.ids), budget, cut, truncation_rule(getattr(handle, "family", None)))
