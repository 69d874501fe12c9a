"""The output side of the chat: replies coloured by how sure the model was, the token under
the cursor, and how the model reads the prompt.

The token under the cursor goes to the inspector's output view; when the
inspector is out of sight (a narrow terminal, or hidden with F5) the line
under the chat shows it in short, so the figures are never off screen.
Scoring the prompt is one forward pass: it runs in a worker thread, and an
error comes back as one line in the chat.
"""

from __future__ import annotations

from functools import partial

from textual.widgets import Static

from backends.core.errors import error_line

from ..widgets.chat import ChatLog
from ..widgets.compared import ComparedTurn, compared_output_lines, compared_turn_of, divergence_legend
from ..widgets.inspector import Inspector
from ..widgets.reply import Reply
from ..widgets.token_view import legend, output_lines, token_line


class OutputSide:
    def __init__(self, app, *, chat: ChatLog, inspector: Inspector, line: Static, status, models) -> None:
        self.app = app
        self.chat = chat
        self.inspector = inspector
        self.line = line  # the legend while colouring, the token in short while the inspector is away
        self.status = status
        self.models = models
        self.divergence_shown = False

    def toggle_colour(self) -> None:
        self.chat.set_colour(not self.chat.colour)
        self._show_line()

    def toggle_divergence(self) -> None:
        """``d``: the compared turns' replies coloured by their divergence from the reference (or not)."""
        turns = [t for t in self.chat.query(ComparedTurn) if t.divergence]
        if not turns:
            self.app.notify("no compared turn has divergence figures: /compare 1 2, then send a message",
                            severity="warning", markup=False)
            return
        on = not turns[-1].coloured
        cursor = self.chat.cursor
        for turn in turns:
            turn.colour(on, *(cursor if cursor is not None else (None, None)), probability=self.chat.colour)
        self.divergence_shown = on
        self._show_line()

    def focused(self, reply: Reply, index: int) -> None:
        compared = compared_turn_of(reply)
        figures = compared.divergence.get(compared.panes.index(reply)) if compared is not None else None
        if figures is not None:
            label = reply.model
            self.inspector.show_output(lambda width: compared_output_lines(reply.tokens, index, width, figures, label,
                                                                           self.inspector.palette))
            self._show_line(token_line(reply.tokens, index) if not self._inspector_in_sight() else None)
            return
        branch = f"branch {reply.branch[0]} of {reply.branch[1]}" if reply.branch else ""
        self.inspector.show_output(lambda width: output_lines(reply.tokens, index, width, self.inspector.palette,
                                                              branch=branch))
        self._show_line(token_line(reply.tokens, index) if not self._inspector_in_sight() else None)

    def left(self) -> None:
        self.inspector.hide_output()
        self._show_line()

    def _inspector_in_sight(self) -> bool:
        side = self.inspector.parent
        return bool(self.inspector.display and side is not None and side.display
                    and not self.app.screen.has_class("-narrow"))

    def _show_line(self, content=None) -> None:
        if content is None and self.divergence_shown:
            content = divergence_legend()
        elif content is None and self.chat.colour:
            content = legend()
        if content is not None:
            self.line.update(content)
        self.line.display = content is not None

    # -- how the model reads the prompt --------------------------------------------------------

    def score(self, view) -> None:
        handle = self.models.handle
        if handle is None:
            return
        self.status.set(scoring="scoring the prompt…")
        self.app.run_worker(partial(self._score_work, handle, view), name="score", group="score", thread=True,
                            exit_on_error=False)

    def _score_work(self, handle, view) -> None:
        try:
            score = handle.score(view.ids)
        except Exception as err:  # noqa: BLE001 — one line in the chat, the app goes on
            self.app.call_from_thread(self.chat.add_notice, f"scoring the prompt failed: {error_line(err)}",
                                      error=True)
            return
        finally:
            self.app.call_from_thread(self.status.set, scoring="")
        self.app.call_from_thread(self.inspector.show_score, view, score)
