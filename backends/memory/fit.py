"""Before a turn: does it fit the model's context and the free memory, and if not, what would.

The context is a hard limit: a prompt plus ``max_new_tokens`` past it is never
sent as it is. What would make it fit is worked out here: the family's
truncation to a prompt budget (the smaller of what the context and the memory
allow), or, for the context, a shorter reply. Memory is a softer limit (an
estimate): the app may still send such a turn when the user says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from backends.memory.turn import check_turn, prompt_budget, turn_devices
from backends.memory.verdicts import MemoryVerdict, check_mode
from backends.prompt.truncation import OLDEST_FIRST, truncation_rule
from backends.prompt.view import PromptView

#: What a turn is over: the model's context (a hard limit) or the free memory (an estimate).
Limit = Literal["context", "memory"]


@dataclass(frozen=True)
class TurnFit:
    """Will the next turn fit, and what truncating the history (or a shorter reply) would leave."""

    verdict: MemoryVerdict
    prompt_tokens: int
    #: The longest prompt that fits with room to spare (None: unknown).
    budget: int | None = None
    #: The prompt cut to ``budget`` by the family's truncation (None when no cut is possible).
    cut: PromptView | None = None
    #: How the family truncates, in words.
    rule: str = OLDEST_FIRST
    #: None when the turn fits; else what it is over.
    over: Limit | None = None
    max_new_tokens: int = 0
    max_context: int | None = None
    #: Why the memory could not be estimated (the turn then goes without that check; the
    #: context, a hard limit, is checked all the same), or "" when it was.
    estimate_error: str = ""

    @property
    def fits(self) -> bool:
        return self.over is None

    @property
    def can_truncate(self) -> bool:
        """Truncating leaves a prompt that fits (at least the last message survives)."""
        return bool(self.budget) and self.cut is not None and len(self.cut.ids) <= self.budget

    @property
    def reply_room(self) -> int:
        """Over the context: the longest reply that fits after the prompt as it is (0: none)."""
        if self.over != "context" or not self.max_context:
            return 0
        return max(self.max_context - self.prompt_tokens, 0)

    @property
    def message(self) -> str:
        """The one line that says what the turn is over, with the numbers."""
        if self.over == "context":
            total = self.prompt_tokens + self.max_new_tokens
            return (f"the prompt ({self.prompt_tokens:,} tokens) plus max_new_tokens ({self.max_new_tokens:,}) is "
                    f"{total:,} tokens, past the model's context of {self.max_context:,}")
        return self.verdict.message


def plan_turn(handle, messages: list[dict], params, tools: list[dict] | None = None) -> TurnFit:
    """The context and memory checks before a turn, with what would fit worked out when it does not.

    ``handle`` is a ModelHandle; ``params`` a SamplingParams (its ``max_prompt_tokens``
    is applied first, as the turn itself will); ``tools``: the schemas the turn offers.
    """
    new = params.max_new_tokens
    # The prompt is rendered as the turn will render it: a failure here is the turn's own, not an estimate's.
    view = handle.render(messages, max_new_tokens=new, max_prompt_tokens=params.max_prompt_tokens,
                         **({"tools": tools} if tools else {}))
    context = view.max_context or getattr(getattr(handle, "info", None), "max_context", None)
    devices: list = []
    estimate_error = ""
    if getattr(handle, "torch", True):
        try:
            devices = [] if check_mode() == "off" else turn_devices(handle)
            verdict = check_turn(handle, len(view.ids), new, devices=devices)
        except Exception as err:  # noqa: BLE001 — an estimate that fails is said, and skipped
            estimate_error = f"memory not estimated for this turn ({type(err).__name__}: {err}); sent without that check"
            verdict = _not_estimated(len(view.ids) + new, estimate_error)
    else:  # a server's or llama.cpp's memory: not estimated here, only the context is checked
        verdict = _not_estimated(len(view.ids) + new, "memory is not estimated for this engine")
    over_context = bool(context) and len(view.ids) + new > context
    if not over_context and verdict.level != "refuse":
        return TurnFit(verdict, len(view.ids), max_new_tokens=new, max_context=context, estimate_error=estimate_error)
    budgets = [context - new] if over_context else []
    if verdict.level == "refuse":
        room = prompt_budget(handle, new, devices=devices)
        if room is not None:
            budgets.append(room)
    budget = max(min(budgets), 0) if budgets else None
    cut = handle.render(messages, max_new_tokens=new, max_prompt_tokens=budget,
                        **({"tools": tools} if tools else {})) if budget else None
    return TurnFit(verdict, len(view.ids), budget, cut, truncation_rule(getattr(handle, "family", None)),
                   over="context" if over_context else "memory", max_new_tokens=new, max_context=context,
                   estimate_error=estimate_error)


def _not_estimated(context_tokens: int, why: str) -> MemoryVerdict:
    return MemoryVerdict("ok", 0, None, 0, 0, 0, context_tokens, 0, (), why)
