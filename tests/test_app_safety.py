"""Model output and file content are shown as text: escape sequences, markup and links are never acted on."""

from __future__ import annotations

import asyncio

from app_helpers import (  # noqa: F401
    command,
    one_torch_thread,
    screen_ansi,
    screen_text,
    script,
    scripted_handle,
    send,
    wait_loaded,
)

from tui.app import LlmTuiApp
from tui.settings import AppSettings

HOSTILE = ("Hello \x1b]52;c;SGFjaw==\x07\n\nthen \x1b]0;pwned\x07\n\nand \x1b[31mred\x1b[0m\n\n"
           "[bold red]markup[/]\n\n[link=file:///etc/passwd]click[/link]\n\n\x9b31m\r\n\n"
           "```python\nprint('\x1b[2J')\n```\n")


def test_escape_sequences_and_markup_from_the_model_are_shown_not_run(scripted_handle):
    script(scripted_handle, HOSTILE)

    async def scenario():
        app = LlmTuiApp(AppSettings(system="[b]sys[/b]"), handles={0: scripted_handle})
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_loaded(pilot, app)
            await command(pilot, app, "/set temperature 0")
            await send(pilot, app, "say it \x1b]52;c;AAAA\x07 [i]now[/i]")
            reply = app.chat.last_reply()
            assert reply.text == HOSTILE  # the conversation keeps what the model said …
            assert "\x1b" not in reply._markdown.source  # … the screen gets visible stand-ins
            text = screen_text(app)
            assert "␛]52;c;SGFjaw==␇" in text and "␛]0;pwned␇" in text and "␛[31mred" in text
            assert "[bold red]markup[/]" in text and "[link=file:///etc/passwd]click[/link]" in text
            assert "say it ␛]52;c;AAAA␇ [i]now[/i]" in text
            ansi = screen_ansi(app)  # what a terminal would receive for this screen
            for sequence in ("\x1b]52", "\x1b]0;", "\x1b[2J", "\x9b"):
                assert sequence not in ansi

            await command(pilot, app, "/set [red]x[/red] 1")  # error lines are text too
            assert "[red]x[/red]" in screen_text(app)

            app.chat.focus()
            await pilot.press("y")  # copy the reply: OSC 52 carries it base64-encoded, made visible first
            assert "\x1b" not in app.clipboard and "␛]52;c;SGFjaw==␇" in app.clipboard
            await pilot.press("c")
            assert app.clipboard == "print('␛[2J')\n"

    asyncio.run(scenario())
