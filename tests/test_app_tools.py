"""Tools in the app, end to end: a real tiny model (scripted to write a call in its own tokens), a real
MCP server over stdio, the consent dialog answered with keys, the call run, its result in the chat, the
conversation and the database, and the model going on from it with the next prompt checked ID for ID."""

from __future__ import annotations

import json

import pytest
from app_helpers import (  # noqa: F401
    command,
    mcp_config,
    one_torch_thread,
    screen_ansi,
    screen_text,
    script,
    scripted_handle,
    send,
    tool_model_dir,
    wait_for,
    wait_loaded,
)

from backends.core.spec import ModelSpec
from backends.generation.open import open_model
from backends.storage.store import Store
from tui.app import LlmTuiApp
from tui.screens.tool_consent import ToolConsentScreen
from tui.settings import AppSettings
from tui.widgets.reply import Notice
from tui.widgets.tools import ToolResult

CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
SLOW = '<tool_call>\n{"name": "slow", "arguments": {"seconds": 4}}\n</tool_call>'
BOOM = '<tool_call>\n{"name": "boom", "arguments": {}}\n</tool_call>'
ANSWER = "It is clear in Paris."
QUESTION = "What is the weather in Paris?"


@pytest.fixture(scope="module")
def tool_handle(tool_model_dir):
    return open_model(ModelSpec(source=str(tool_model_dir)))


@pytest.fixture
def calls_file(tmp_path):
    return tmp_path / "calls.jsonl"


def calls_made(calls_file) -> list[dict]:
    return [json.loads(line) for line in calls_file.read_text().splitlines()] if calls_file.exists() else []


def make_app(handle, tmp_path, calls_file, **settings) -> LlmTuiApp:
    app = LlmTuiApp(AppSettings(mcp=("test",), **settings), config=mcp_config(tmp_path, calls_file),
                    handles={0: handle})
    app.turns.params = app.turns.params.with_value("temperature", "0").with_value("max_new_tokens", "40")
    return app


async def ready(pilot, app) -> None:
    await wait_loaded(pilot, app)
    await wait_for(pilot, lambda: "get_weather" in app.tools.offered, 60)


async def ask(pilot, app, call: str = CALL, text: str = QUESTION) -> None:
    """Send ``text`` to the model scripted to answer ``call``; wait until the call waits for an answer."""
    script(app.models.handle, call)
    app.input.focus()
    app.input.load_text(text)
    await pilot.press("enter")
    await wait_for(pilot, lambda: isinstance(app.screen, ToolConsentScreen), 60)


async def answer(pilot, app, key: str) -> None:
    """Press ``key`` in the consent dialog; the model is scripted to answer ANSWER after the result: wait
    for that reply to end."""
    script(app.models.handle, ANSWER)
    before = len(app.turns_done)
    await pilot.press(key)
    await wait_for(pilot, lambda: len(app.turns_done) > before and app.turns.turn is None, 60)
    await pilot.pause()


def roles(app) -> list[str]:
    return [m["role"] for m in app.turns.conversation.messages]


def notices(app) -> list[str]:
    return [str(n.render()) for n in app.chat.query(Notice)]


def test_a_call_runs_after_yes_and_the_model_reads_its_result(tool_handle, tmp_path, calls_file):
    async def scenario():
        app = make_app(tool_handle, tmp_path, calls_file)
        async with app.run_test(size=(120, 40)) as pilot:
            await ready(pilot, app)
            # The preview offers the server's tools where the template puts them, before anything is sent.
            app.input.load_text(QUESTION)
            await wait_for(pilot, lambda: app.inspector.view is not None and "get_weather" in app.inspector.view.text)
            await ask(pilot, app)
            dialog = app.screen
            assert dialog.call.name == "get_weather" and dialog.call.arguments == {"city": "Paris"}
            assert calls_made(calls_file) == []  # nothing runs before the answer
            reply = app.chat.last_reply()
            assert reply.tool["calls"] == [{"name": "get_weather", "arguments": {"city": "Paris"},
                                            "outcome": "waiting"}]
            assert reply.text.startswith(CALL) and reply.tokens  # the token view still has the call's tokens
            with pytest.raises(Exception, match="waits for your answer"):
                app.turns.check_can_send()
            await answer(pilot, app, "y")
            assert calls_made(calls_file) == [{"name": "get_weather", "arguments": {"city": "Paris"}}]
            (result,) = app.chat.query(ToolResult)
            assert json.loads(result.text)["sky"] == "clear" and not result.error
            assert roles(app) == ["user", "assistant", "tool", "assistant"]
            assert app.turns.conversation.messages[2] == {"role": "tool", "name": "get_weather", "content": result.text}
            assert app.turns.conversation.messages[3]["content"] == ANSWER
            assert reply.tool["calls"][0]["outcome"] == "ran"
            # The model got the call and its result as rendered, ID for ID.
            done = app.turns_done[-1].done
            schemas = [o.tool.schema() for o in app.tools.offered.values()]
            expected = tool_handle.render(app.turns.conversation.messages[:3], tools=schemas)
            assert done.captured_ids == expected.ids
            assert "<|im_start|>tool\n" + result.text in expected.text
            conv_id = app.recorder.conversation_id
            db = app.recorder.store.path
        # Stored: the result is a message of role tool; the call's reply keeps its calls and their outcome.
        with Store(db) as store:
            stored = store.load_conversation(conv_id)
        assert [m.role for m in stored.messages] == ["user", "assistant", "tool", "assistant"]
        assert stored.messages[1].stats["tool"]["calls"][0]["outcome"] == "ran"
        assert stored.messages[2].stats["tool"]["name"] == "get_weather"
        assert stored.to_conversation().messages[2]["name"] == "get_weather"
        return db, conv_id

    db, conv_id = __import__("asyncio").run(scenario())

    async def reopened():  # --resume shows the call as a call and the result as a result
        app = make_app(tool_handle, tmp_path, calls_file, resume=str(conv_id))
        async with app.run_test(size=(120, 40)) as pilot:
            await ready(pilot, app)
            await wait_for(pilot, lambda: len(app.chat.query(ToolResult)) == 1)
            replies = list(app.chat.query("Reply"))
            assert replies[0].tool["calls"][0]["name"] == "get_weather" and replies[0]._calls.display
            assert roles(app) == ["user", "assistant", "tool", "assistant"]
            assert not isinstance(app.screen, ToolConsentScreen)  # a call that ran is not asked again
            await command(pilot, app, "/save json " + str(tmp_path / "out.json"))
            await wait_for(pilot, lambda: (tmp_path / "out.json").exists())
        exported = json.loads((tmp_path / "out.json").read_text())
        assert [m["role"] for m in exported["messages"]] == ["user", "assistant", "tool", "assistant"]
        assert exported["messages"][2]["stats"]["tool"]["name"] == "get_weather"

    __import__("asyncio").run(reopened())


def test_no_runs_nothing_and_the_turn_ends_at_the_call(tool_handle, tmp_path, calls_file):
    async def scenario():
        app = make_app(tool_handle, tmp_path, calls_file)
        async with app.run_test(size=(120, 40)) as pilot:
            await ready(pilot, app)
            await ask(pilot, app)
            await pilot.press("n")
            await wait_for(pilot, lambda: app.tools.round is None)
            assert calls_made(calls_file) == []
            assert roles(app) == ["user", "assistant"] and not app.chat.query(ToolResult)
            assert app.chat.last_reply().tool["calls"][0]["outcome"] == "refused"
            assert any("was not run" in n for n in notices(app))
            # The conversation goes on: the next message is answered (the call stays in it, unanswered).
            script(tool_handle, ANSWER)
            await send(pilot, app, "Never mind.")
            assert roles(app) == ["user", "assistant", "user", "assistant"]

    __import__("asyncio").run(scenario())


def test_always_runs_the_tools_later_calls_without_asking_up_to_the_step_limit(tool_handle, tmp_path, calls_file):
    async def scenario():
        app = make_app(tool_handle, tmp_path, calls_file)
        async with app.run_test(size=(120, 40)) as pilot:
            await ready(pilot, app)
            await command(pilot, app, "/tools steps 3")
            await ask(pilot, app)  # the model is scripted to call the tool every time
            await pilot.press("a")
            # One answer does it all: a second dialog would wait for a key, and this would time out.
            await wait_for(pilot, lambda: app.tools.round is None and app.turns.turn is None
                           and len(app.turns_done) == 3, 90)
            await pilot.pause()
            assert not isinstance(app.screen, ToolConsentScreen)
            assert len(calls_made(calls_file)) == 2  # the third reply's call is past the limit
            assert roles(app) == ["user", "assistant", "tool", "assistant", "tool", "assistant"]
            assert app.chat.last_reply().tool["calls"][0]["outcome"] == "step limit"
            assert any("tool step limit" in n for n in notices(app))
            # Another conversation asks again.
            await command(pilot, app, "/new")
            assert app.tools.always == set()

    __import__("asyncio").run(scenario())


def test_esc_stops_waiting_for_a_slow_tool_and_a_failing_tool_is_one_line(tool_handle, tmp_path, calls_file):
    async def scenario():
        app = make_app(tool_handle, tmp_path, calls_file)
        async with app.run_test(size=(120, 40)) as pilot:
            await ready(pilot, app)
            await ask(pilot, app, SLOW)
            await pilot.press("y")
            await wait_for(pilot, lambda: app.tools.round is not None and app.tools.round.running is not None)
            await wait_for(pilot, lambda: calls_made(calls_file))  # it is running on the server
            app.chat.focus()
            await pilot.press("escape")
            await wait_for(pilot, lambda: app.tools.round is None)
            assert app.chat.last_reply().tool["calls"][0]["outcome"] == "stopped"
            assert roles(app) == ["user", "assistant"] and not app.chat.query(ToolResult)
            assert any("stopped waiting for slow" in n for n in notices(app))
            # A tool that fails: its one line goes to the model as the result, and the model goes on.
            await ask(pilot, app, BOOM, "Try the other one.")
            await answer(pilot, app, "y")
            (result,) = app.chat.query(ToolResult)
            assert result.error and "kaboom" in result.text and "\n" not in result.text
            assert app.turns.conversation.messages[-2]["content"].startswith("error: ")

    __import__("asyncio").run(scenario())


def test_tools_lists_and_turns_tools_off_for_the_conversation(tool_handle, tmp_path, calls_file):
    async def scenario():
        app = make_app(tool_handle, tmp_path, calls_file)
        async with app.run_test(size=(120, 40)) as pilot:
            await ready(pilot, app)
            await command(pilot, app, "/tools")
            listing = notices(app)[-1]
            assert "tools: 4 of 4 on" in listing and "✓ get_weather · MCP server test" in listing
            await command(pilot, app, "/tools off all")
            app.input.load_text(QUESTION)
            await wait_for(pilot, lambda: app.inspector.view is not None and "get_weather" not in app.inspector.view.text)
            # With no tool on, a reply that looks like a call is text: nothing is asked, nothing runs.
            script(tool_handle, CALL)
            await send(pilot, app, QUESTION)
            assert app.tools.round is None and not app.chat.last_reply().tool and calls_made(calls_file) == []
            await command(pilot, app, "/tools on get_weather")
            assert "1 of 4 on" in (await _listing(pilot, app))
            await command(pilot, app, "/tools on nothing")
            assert "there is no tool 'nothing'" in notices(app)[-1]
            # A result is text: markup and escape sequences show as they are, never styled or sent to the terminal.
            await app.chat.add_tool_result("get_weather", "\x1b[31mred [bold]sky[/bold]\x07")
            await pilot.pause()
            shown = screen_text(app)
            assert "␛[31mred [bold]sky[/bold]" in shown
            assert "\x1b[31mred" not in screen_ansi(app) and "\x07" not in screen_ansi(app)

    __import__("asyncio").run(scenario())


async def _listing(pilot, app) -> str:
    await command(pilot, app, "/tools")
    return notices(app)[-1]


def test_tools_from_a_file_are_offered_and_their_calls_shown_not_run(tool_handle, tmp_path, calls_file):
    (tmp_path / "tools.json").write_text(json.dumps([{"name": "get_weather", "description": "The weather.",
                                                      "parameters": {"type": "object"}}]))

    async def scenario():
        app = LlmTuiApp(AppSettings(tools_file=str(tmp_path / "tools.json")), handles={0: tool_handle})
        app.turns.params = app.turns.params.with_value("temperature", "0").with_value("max_new_tokens", "40")
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_loaded(pilot, app)
            script(tool_handle, CALL)
            await send(pilot, app, QUESTION)
            await wait_for(pilot, lambda: app.tools.round is None and app.chat.last_reply().tool)
            assert app.chat.last_reply().tool["calls"][0]["outcome"] == "no runner"
            assert any("no MCP server runs it" in n for n in notices(app))
            assert not isinstance(app.screen, ToolConsentScreen)

    __import__("asyncio").run(scenario())


def test_a_conversation_that_ended_at_a_waiting_call_asks_again_when_reopened(tool_handle, tmp_path, calls_file):
    async def scenario():
        app = make_app(tool_handle, tmp_path, calls_file)
        async with app.run_test(size=(120, 40)) as pilot:
            await ready(pilot, app)
            await ask(pilot, app)
            conv_id = app.recorder.conversation_id
        # The app ended with the dialog open (the link dropped): the call is saved as waiting.
        app = make_app(tool_handle, tmp_path, calls_file, resume=str(conv_id))
        async with app.run_test(size=(120, 40)) as pilot:
            await ready(pilot, app)
            await wait_for(pilot, lambda: isinstance(app.screen, ToolConsentScreen), 60)
            assert app.screen.call.name == "get_weather"
            await answer(pilot, app, "y")
            assert roles(app) == ["user", "assistant", "tool", "assistant"]
            assert len(calls_made(calls_file)) == 1

    __import__("asyncio").run(scenario())


def test_a_model_whose_template_writes_no_calls_is_offered_no_tools_and_says_so(scripted_handle, tmp_path):
    (tmp_path / "tools.json").write_text(json.dumps([{"name": "get_weather", "parameters": {"type": "object"}}]))

    async def scenario():
        app = LlmTuiApp(AppSettings(tools_file=str(tmp_path / "tools.json")), handles={0: scripted_handle})
        app.turns.params = app.turns.params.with_value("temperature", "0").with_value("max_new_tokens", "8")
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_loaded(pilot, app)
            script(scripted_handle, "Hello.")
            await send(pilot, app, QUESTION)
            assert any("is offered no tools: the" in n and "writes no tool calls" in n for n in notices(app))
            done = app.turns_done[-1].done
            assert done.prompt_ids == scripted_handle.render(app.turns.conversation.messages[:1]).ids  # no tools in it

    __import__("asyncio").run(scenario())
