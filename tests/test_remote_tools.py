"""Tools through the remote engine: the tools go to the chat API where the server reads the calls itself
(``tool_calls`` deltas joined, the call's id carried to its result), and in the previewed IDs where the
calls can be read here from the text. Servers shaped as vLLM documents its responses (``server_stubs``),
a real MCP server over stdio, the headless run and the app."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from app_helpers import mcp_config, one_torch_thread, tool_model_dir, wait_for, wait_loaded  # noqa: F401
from server_stubs import REPLY, ShapeServer
from test_mcp_client import SERVER

from backends.core.params import SamplingParams
from backends.core.spec import ModelSpec
from backends.generation.open import open_model
from backends.prompt.check import PromptCheck
from tui.app import LlmTuiApp
from tui.screens.tool_consent import ToolConsentScreen
from tui.settings import AppSettings
from tui.widgets.tools import ToolResult

QUESTION = [{"role": "user", "content": "What is the weather in Paris?"}]
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "The weather in a city now.",
                                            "parameters": {"type": "object",
                                                           "properties": {"city": {"type": "string"}}}}}
GREEDY = SamplingParams(temperature=0, max_new_tokens=16)


def test_a_server_reads_the_call_itself_and_the_stream_joins_its_pieces(demo_tokenizer):
    with ShapeServer(demo_tokenizer, "vllm", tool_call=("get_weather", {"city": "Paris"})) as server:
        handle = open_model(ModelSpec(source=server.url))
        assert handle.runner.sends_ids and not handle.runner.reads_calls  # the server's template: format unknown
        view = handle.render(QUESTION, tools=[WEATHER])
        generation = handle.stream(QUESTION, GREEDY, tools=[WEATHER])
        done = list(generation)[-1]
        path, body = server.posts[-1]
        # With tools, the turn goes to the chat API, which reads the calls; the prompt is checked by count.
        assert path == "/v1/chat/completions" and body["tools"] == [WEATHER] and body["messages"] == QUESTION
        assert done.tool_calls == [{"id": "call_1", "name": "get_weather", "arguments": '{"city": "Paris"}'}]
        assert done.text == "" and done.stop_reason == "eos"
        # The preview asked the server's /tokenize with the same tools: the counts agree.
        tokenize = [b for p, b in server.posts if p == "/tokenize"][-1]
        assert tokenize["tools"] == [WEATHER]
        assert PromptCheck.of(view, done.captured_ids, done.prompt_count, level=done.prompt_check).verified


def test_where_the_format_is_known_the_tools_are_in_the_ids_sent(demo_tokenizer, tool_model_dir):
    with ShapeServer(demo_tokenizer, "vllm") as server:
        handle = open_model(ModelSpec(source=server.url, tokenizer=str(tool_model_dir)))
        assert handle.runner.sends_ids and handle.runner.reads_calls
        view = handle.render(QUESTION, tools=[WEATHER])
        done = list(handle.stream(QUESTION, GREEDY, tools=[WEATHER]))[-1]
        path, body = server.posts[-1]
        assert path == "/v1/completions" and body["prompt"] == view.ids and "get_weather" in view.text
        assert "tools" not in body and done.text == REPLY and done.tool_calls is None


def _config_dir(tmp_path, calls) -> dict:
    folder = tmp_path / "config"
    folder.mkdir()
    (folder / "config.toml").write_text(
        f"[mcp.servers.test]\ncommand = {json.dumps(sys.executable)}\nargs = [{json.dumps(str(SERVER))}]\n"
        f"env = {{ MCP_CALLS = {json.dumps(str(calls))} }}\n")
    return {**os.environ, "LLM_TUI_CONFIG_DIR": str(folder)}


def test_headless_runs_a_server_read_call_and_sends_its_result_with_the_calls_id(demo_tokenizer, tmp_path):
    calls = tmp_path / "calls.jsonl"
    with ShapeServer(demo_tokenizer, "vllm", tool_call=("get_weather", {"city": "Paris"})) as server:
        done = subprocess.run([sys.executable, "-m", "tui", "run", server.url, "-p", QUESTION[0]["content"],
                               "--temperature", "0", "--max-new-tokens", "16", "--mcp", "test",
                               "--allow-tool", "get_weather", "--json"],
                              capture_output=True, text=True, timeout=180, env=_config_dir(tmp_path, calls))
        assert done.returncode == 0, done.stderr
        events = [json.loads(line) for line in done.stdout.splitlines()]
        (call,) = [e for e in events if e["type"] == "tool_call"]
        assert call["name"] == "get_weather" and call["arguments"] == {"city": "Paris"} and call["allowed"]
        (result,) = [e for e in events if e["type"] == "tool_result"]
        assert json.loads(result["text"])["sky"] == "clear"
        assert events[-1]["type"] == "done" and events[-1]["steps"] == 2
        chats = [b for p, b in server.posts if p == "/v1/chat/completions"]
        said, answer = chats[-1]["messages"][-2:]
        # The call goes back as the API has it (arguments a JSON string), the result names its id.
        assert said["tool_calls"] == [{"id": "call_1", "type": "function", "function": {
            "name": "get_weather", "arguments": '{"city": "Paris"}'}}]
        assert answer == {"role": "tool", "name": "get_weather", "content": result["text"], "tool_call_id": "call_1"}
    assert [json.loads(line)["name"] for line in calls.read_text().splitlines()] == ["get_weather"]


def test_the_app_asks_before_a_server_read_call_and_the_server_gets_the_result(demo_tokenizer, tmp_path):
    async def scenario():
        with ShapeServer(demo_tokenizer, "vllm", tool_call=("get_weather", {"city": "Paris"})) as server:
            app = LlmTuiApp(AppSettings(models=[server.url], mcp=("test",)), config=mcp_config(tmp_path))
            async with app.run_test(size=(120, 40)) as pilot:
                await wait_loaded(pilot, app)
                await wait_for(pilot, lambda: "get_weather" in app.tools.offered, 60)
                app.input.load_text(QUESTION[0]["content"])
                await pilot.press("enter")
                await wait_for(pilot, lambda: isinstance(app.screen, ToolConsentScreen), 60)
                reply = app.chat.last_reply()
                assert reply.tool["calls"][0]["id"] == "call_1" and reply.text == ""
                await pilot.press("y")
                await wait_for(pilot, lambda: len(app.turns_done) == 2 and app.turns.turn is None, 60)
                assert app.chat.query(ToolResult) and app.chat.last_reply().text == REPLY
                chats = [b for p, b in server.posts if p == "/v1/chat/completions"]
                assert chats[-1]["messages"][-1]["tool_call_id"] == "call_1"
                assert [m["role"] for m in app.turns.conversation.messages] == ["user", "assistant", "tool",
                                                                                 "assistant"]
                conv_id, store = app.recorder.conversation_id, app.recorder.store
                stored = store.load_conversation(conv_id).to_conversation().messages
        # The reply had no words, only the call: it is kept, and comes back as the API's tool_calls.
        assert stored[1]["tool_calls"][0]["id"] == "call_1" and stored[2]["tool_call_id"] == "call_1"

    __import__("asyncio").run(scenario())
