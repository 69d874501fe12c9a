"""Copying the last reply, or its last code block, to the clipboard (OSC 52, so it works over SSH)."""

from __future__ import annotations

from backends.core.sanitize import visible_text

from ..widgets.chat import ChatLog
from ..widgets.reply import last_code_block


def copy_reply(app, chat: ChatLog) -> None:
    reply = chat.last_reply()
    if reply is None or not reply.text:
        app.notify("there is no reply to copy yet", severity="warning", markup=False)
        return
    app.copy_to_clipboard(visible_text(reply.text))
    app.notify(f"copied the last reply ({len(reply.text):,} characters)", markup=False)


def copy_code(app, chat: ChatLog) -> None:
    reply = chat.last_reply()
    code = last_code_block(reply.text) if reply is not None else None
    if code is None:
        app.notify("the last reply has no code block", severity="warning", markup=False)
        return
    app.copy_to_clipboard(visible_text(code))
    app.notify(f"copied a code block ({len(code.splitlines())} lines)", markup=False)
