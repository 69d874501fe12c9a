"""The check a headless turn goes through before it is sent (``run``, ``compare``)."""

from __future__ import annotations

import sys

from backends.core.errors import LlmTuiError
from backends.core.params import SamplingParams
from backends.memory.fit import plan_turn


def check_turn_fits(handle, messages: list[dict], params: SamplingParams, who: str = "") -> None:
    """A turn past the model's context is refused (one line naming the numbers and the flags
    that fix it, exit 1); one that may not fit in memory gets a warning on stderr. ``who``
    starts each line (``model 2 (label): `` where several models answer)."""
    fit = plan_turn(handle, messages, params)  # the context is always checked; a failed estimate is said
    if fit.estimate_error:
        print(f"llm-tui: warning: {who}{fit.estimate_error}", file=sys.stderr)
    if fit.fits:
        return
    fixes = [f"--max-prompt-tokens {fit.budget} keeps the prompt within it by {fit.rule}"] if fit.can_truncate else []
    if fit.over == "context":
        if fit.reply_room:
            fixes.append(f"--max-new-tokens {fit.reply_room} leaves the prompt whole")
        if not fixes:
            fixes.append("the last message alone is too long for the context: shorten it")
        raise LlmTuiError(who + fit.message, "; ".join(fixes))
    print(f"llm-tui: warning: {who}{fit.message}" + (f"; {fixes[0]}" if fixes else ""), file=sys.stderr)
