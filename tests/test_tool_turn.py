"""A turn with tools, end to end: a real tiny model whose reply starts from a call's exact token IDs
(the branch-prefix mechanism), the call parsed from its tokens, consent asked, the call run on a real
MCP server, the result fed back in the family's role, and the next prompt checked ID for ID."""

from __future__ import annotations

import json
import sys

import pytest
from app_helpers import tool_model_dir  # noqa: F401
from test_mcp_client import SERVER

from backends.core.events import TokenEvent
from backends.core.params import SamplingParams
from backends.core.spec import ModelSpec
from backends.generation.open import open_model
from backends.generation.tool_loop import ToolOutcome, tool_turn
from backends.mcp.client import McpServer, ServerConfig
from backends.prompt.tools.calls import ToolCall

@pytest.fixture(scope="module")
def tool_model(tool_model_dir):
    return open_model(ModelSpec(source=str(tool_model_dir)))


@pytest.fixture
def server(tmp_path):
    running = McpServer(ServerConfig("test", command=sys.executable, args=(str(SERVER),),
                                     env={"MCP_CALLS": str(tmp_path / "calls.jsonl")}))
    running.calls_file = tmp_path / "calls.jsonl"
    running.start()
    yield running
    running.close()


def starting_with(handle, text: str) -> list[TokenEvent]:
    ids = handle.tokenizer.encode(text, add_special_tokens=False)
    return [TokenEvent(i, handle.tokenizer.decode([i]), 0.0) for i in ids]


def calls_made(server) -> list[dict]:
    path = server.calls_file
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


QUESTION = [{"role": "user", "content": "What is the weather in Paris?"}]


def run_turn(handle, server, call_text: str, *, decide=lambda call: True, timeout: float = 30.0):
    prefix = starting_with(handle, call_text)
    params = SamplingParams(temperature=0, max_new_tokens=len(prefix) + 3)
    heard: list = []
    steps, added = tool_turn(handle, QUESTION, params, server.tools, decide=decide,
                             run=lambda call: _run(server, call, timeout), prefix=prefix, max_steps=2,
                             on_event=heard.append)
    return steps, added, heard


def _run(server, call, timeout):
    result = server.call(call.name, call.arguments, timeout=timeout)
    return result.text, result.is_error


CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'


def test_a_call_in_the_models_tokens_runs_on_the_server_and_the_result_goes_back(tool_model, server):
    asked: list[ToolCall] = []
    steps, added, heard = run_turn(tool_model, server, CALL, decide=lambda call: asked.append(call) or True)
    assert [c.to_json() for c in asked] == [{"name": "get_weather", "arguments": {"city": "Paris"}}]
    assert calls_made(server) == [{"name": "get_weather", "arguments": {"city": "Paris"}}]
    first, second = steps
    assert first.done.text.startswith(CALL) and first.parsed.calls[0].name == "get_weather"
    (outcome,) = first.outcomes
    assert not outcome.error and json.loads(outcome.text)["sky"] == "clear"
    said, result = added[0], added[1]
    assert said == {"role": "assistant", "content": first.done.text}
    assert result == {"role": "tool", "name": "get_weather", "content": outcome.text}
    # The next prompt holds the call and its result, as rendered; what the model received is that, ID for ID.
    preview = tool_model.render([*QUESTION, said, result], tools=[t.schema() for t in server.tools])
    assert second.done.captured_ids == preview.ids
    assert "<|im_start|>tool\n" + outcome.text in preview.text
    assert [type(e).__name__ for e in heard].count("ToolCall") == 1 and isinstance(heard[-1], object)


def test_no_consent_runs_nothing_and_the_turn_ends_at_the_call(tool_model, server):
    steps, added, _ = run_turn(tool_model, server, CALL, decide=lambda call: False)
    assert calls_made(server) == []
    (step,) = steps
    assert step.outcomes == [ToolOutcome(step.parsed.calls[0], refused=True)]
    assert added == [{"role": "assistant", "content": step.done.text}]


def test_a_malformed_call_stays_text_with_one_line(tool_model, server):
    steps, added, _ = run_turn(tool_model, server, '<tool_call>\n{"name": "get_weather", "arguments": {city}}\n'
                                                  "</tool_call>")
    (step,) = steps
    assert step.parsed.calls == [] and "is not JSON" in step.parsed.problem
    assert calls_made(server) == [] and added == [{"role": "assistant", "content": step.done.text}]


def test_a_tool_past_its_timeout_is_one_line_and_the_model_goes_on(tool_model, server):
    steps, added, _ = run_turn(tool_model, server, '<tool_call>\n{"name": "slow", "arguments": {"seconds": 5}}\n'
                                                  "</tool_call>", timeout=1)
    (outcome,) = steps[0].outcomes
    assert outcome.error and "did not answer within 1 s" in outcome.text
    assert added[1]["content"].startswith("error: ") and len(steps) == 2


def test_a_server_that_exits_mid_call_is_one_line_and_the_model_goes_on(tool_model, server):
    steps, _, _ = run_turn(tool_model, server, '<tool_call>\n{"name": "exit_now", "arguments": {}}\n</tool_call>')
    (outcome,) = steps[0].outcomes
    assert outcome.error and "\n" not in outcome.text and len(steps) == 2


# -- headless: run --tools / --mcp / --allow-tool -------------------------------------------------------

def run_cli(model_dir, *flags, env_extra=None):
    import os
    import subprocess

    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "tui", "run", str(model_dir), "-p", QUESTION[0]["content"],
                           "--temperature", "0", "--max-new-tokens", "40", "--prefill", CALL, "--json", *flags],
                          capture_output=True, text=True, timeout=180, env=env)


def events(done) -> list[dict]:
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_headless_stops_at_a_call_it_may_not_run(tool_model, tmp_path):
    (tmp_path / "tools.json").write_text(json.dumps([{"name": "get_weather", "description": "The weather.",
                                                      "parameters": {"type": "object"}}]))
    done = run_cli(tool_model.info.path, "--tools", str(tmp_path / "tools.json"))
    assert done.returncode == 0, done.stderr
    found = events(done)
    calls = [e for e in found if e["type"] == "tool_call"]
    assert calls == [{"type": "tool_call", "name": "get_weather", "arguments": {"city": "Paris"}, "allowed": False}]
    assert not any(e["type"] == "tool_result" for e in found) and found[-1]["type"] == "done"
    assert "stopped at the call to get_weather: no MCP server offers it" in done.stderr


def test_headless_runs_an_allowed_call_on_an_mcp_server_from_the_config(tool_model, tmp_path):
    from backends.core.paths import config_dir

    calls = tmp_path / "calls.jsonl"
    config_dir().mkdir(parents=True, exist_ok=True)
    (config_dir() / "config.toml").write_text(
        f'[mcp.servers.test]\ncommand = {json.dumps(sys.executable)}\nargs = [{json.dumps(str(SERVER))}]\n'
        f'env = {{ MCP_CALLS = {json.dumps(str(calls))} }}\n')
    import os

    env = {"LLM_TUI_CONFIG_DIR": os.environ["LLM_TUI_CONFIG_DIR"]}
    refused = run_cli(tool_model.info.path, "--mcp", "test", "--max-tool-steps", "2", env_extra=env)
    assert refused.returncode == 0 and "--allow-tool get_weather lets it run" in refused.stderr
    assert not calls.exists()
    done = run_cli(tool_model.info.path, "--mcp", "test", "--allow-tool", "get_weather", "--max-tool-steps", "2",
                   env_extra=env)
    assert done.returncode == 0, done.stderr
    found = events(done)
    (result,) = [e for e in found if e["type"] == "tool_result"]
    assert json.loads(result["text"])["city"] == "Paris" and result["error"] is False
    assert [json.loads(line) for line in calls.read_text().splitlines()] == \
        [{"name": "get_weather", "arguments": {"city": "Paris"}}]
    last = found[-1]
    assert last["type"] == "done" and last["steps"] == 2 and last["captured_ids"] == last["prompt_ids"]
    missing = run_cli(tool_model.info.path, "--mcp", "nope", env_extra=env)
    assert missing.returncode == 2 and "there is no MCP server 'nope' in the config (known: test)" in missing.stderr


def test_qwen_v1_react_round_stops_at_observation_and_goes_on_in_the_same_reply(tmp_path_factory, server):
    """Qwen v1 (its own code, the real vocabulary): the reply stops at the ReAct stop word, the call runs, and the
    next prompt continues the same assistant turn after the observation, ID for ID as previewed."""
    from remote_standins import make_tinyqwen_dir

    handle = open_model(ModelSpec(source=str(make_tinyqwen_dir(tmp_path_factory.mktemp("react"))),
                                  trust_remote_code=True))
    call = 'Thought: I should look it up.\nAction: get_weather\nAction Input: {"city": "Paris"}\nObservation:'
    prefix = handle.prefill_tokens(call)
    params = SamplingParams(temperature=0, max_new_tokens=len(prefix) + 4)
    steps, added = tool_turn(handle, QUESTION, params, server.tools, decide=lambda c: True,
                             run=lambda c: _run(server, c, 30), prefix=prefix, max_steps=2)
    first, second = steps
    assert first.done.text == call[:-len("Observation:")] and first.done.stop_reason == "eos"
    assert [c.to_json() for c in first.parsed.calls] == [{"name": "get_weather", "arguments": {"city": "Paris"}}]
    assert calls_made(server) == [{"name": "get_weather", "arguments": {"city": "Paris"}}]
    said, result = added[:2]
    assert said == {"role": "assistant", "content": first.done.text} and result["role"] == "tool"
    preview = handle.render([*QUESTION, said, result], tools=[t.schema() for t in server.tools])
    assert preview.text.endswith(f"\nObservation: {result['content']}\nThought:")
    assert second.done.captured_ids == preview.ids


# -- the same round in the shapes of Llama 3.1's and GLM-4's templates --------------------------------

#: The call as each writes it, and how its template writes the result back.
SHAPED_CALLS = {
    "llama3.1": ('{"name": "get_weather", "parameters": {"city": "Paris"}}',
                 lambda text: "<|start_header_id|>ipython<|end_header_id|>\n\n" + json.dumps(text) + "<|eot_id|>"),
    "glm-4": ('get_weather\n{"city": "Paris"}', lambda text: "<|observation|>\n" + text),
}


@pytest.mark.parametrize("shape", sorted(SHAPED_CALLS))
def test_a_round_in_a_templates_own_shape_runs_and_the_next_prompt_goes_on_from_the_models_tokens(
        shape, demo_dir, tmp_path_factory, server):
    """A real tiny model with the template of that shape: the call is read in the family's format, runs
    on the server, its result is written in the role the template reads results in (GLM-4's
    observation), and the next prompt is the first one, the model's own tokens and the result."""
    import tool_templates
    from conftest import build_tiny_model

    template = {"llama3.1": tool_templates.LLAMA31, "glm-4": tool_templates.GLM4}[shape]
    folder = build_tiny_model(demo_dir, tmp_path_factory.mktemp(shape) / f"tiny-{shape}")
    config = folder / "tokenizer_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "chat_template": template}))
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    handle = open_model(ModelSpec(source=str(folder)))
    call_text, written = SHAPED_CALLS[shape]
    prefix = starting_with(handle, call_text)
    eos = handle.model.generation_config.eos_token_id
    eos = eos[0] if isinstance(eos, list) else eos
    # The reply ends where the call does, as a trained model's would: the end of turn after its tokens.
    handle.model.generation_config.sequence_bias = [[[t.id for t in prefix[-8:]] + [eos], 1000.0]]
    tools = [t.schema() for t in server.tools]
    steps, added = tool_turn(handle, QUESTION, SamplingParams(temperature=0, max_new_tokens=4),
                             server.tools, decide=lambda c: True, run=lambda c: _run(server, c, 30),
                             prefix=prefix, max_steps=2)
    first, second = steps
    assert first.done.text == call_text
    assert [c.to_json() for c in first.parsed.calls] == [{"name": "get_weather", "arguments": {"city": "Paris"}}]
    assert calls_made(server) == [{"name": "get_weather", "arguments": {"city": "Paris"}}]
    said, result = added[:2]
    assert result["role"] == "tool"
    preview = handle.render([*QUESTION, said, result], tools=tools)
    assert second.done.captured_ids == preview.ids
    asked = handle.render(QUESTION, tools=tools)
    assert preview.text.startswith(asked.text + call_text) and written(result["content"]) in preview.text
    assert not preview.warnings
