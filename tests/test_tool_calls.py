"""Tool calls read back from replies in each family's format, and the replies that only look like one."""

from __future__ import annotations

import pytest

from backends.prompt.tools.calls import ToolCall, call_format, parse_reply

PARIS = {"city": "Paris"}


@pytest.mark.parametrize("fmt, text, rest", [
    ("hermes", '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>', ""),
    ("hermes", 'Let me look.\n<tool_call>\n{"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}\n'
               "</tool_call>", "Let me look."),
    ("llama3", '{"name": "get_weather", "parameters": {"city": "Paris"}}', ""),
    ("llama3", '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}', ""),
    ("chatglm3", "get_weather\n```python\ntool_call(city='Paris')\n```", ""),
    ("glm4", 'get_weather\n{"city": "Paris"}', ""),
    ("react", 'Thought: I need the weather.\nAction: get_weather\nAction Input: {"city": "Paris"}\nObservation:',
     "Thought: I need the weather."),
])
def test_a_call_in_each_format(fmt, text, rest):
    parsed = parse_reply(fmt, text, {"get_weather"})
    assert parsed.problem is None
    assert [(c.name, c.arguments) for c in parsed.calls] == [("get_weather", PARIS)]
    assert parsed.text == rest


def test_two_hermes_calls_and_the_text_between():
    text = ('<tool_call>{"name": "a", "arguments": {}}</tool_call> and <tool_call>{"name": "b", '
            '"arguments": {"x": 1}}</tool_call>')
    parsed = parse_reply("hermes", text)
    assert [c.to_json() for c in parsed.calls] == [{"name": "a", "arguments": {}}, {"name": "b", "arguments": {"x": 1}}]
    assert parsed.text == "and"


@pytest.mark.parametrize("fmt, text", [
    ("hermes", "The weather in Paris is mild."),
    ("llama3", "It is sunny."),
    ("chatglm3", "Paris is sunny today.\nEnjoy it."),
    ("glm4", "Paris\nis sunny"),
    ("react", "Final Answer: sunny"),
])
def test_plain_replies_are_text(fmt, text):
    parsed = parse_reply(fmt, text, {"get_weather"})
    assert parsed == parse_reply(fmt, text) and parsed.calls == [] and parsed.text == text and parsed.problem is None


@pytest.mark.parametrize("fmt, text, said", [
    ("hermes", '<tool_call>{"name": "get_weather", "arguments": {"city": }</tool_call>', "is not JSON"),
    ("hermes", '<tool_call>{"arguments": {}}</tool_call>', 'without a "name"'),
    ("llama3", '{"name": "get_weather", "parameters": [1, 2]}', "are not an object"),
    ("chatglm3", "get_weather\n```python\ntool_call(city=open('/etc/passwd').read())\n```", "not a plain value"),
    ("chatglm3", "get_weather\n```python\nimport os\n```", "not tool_call"),
    ("glm4", "get_weather\n{city: Paris}", "are not JSON"),
    ("react", "Action: get_weather\nAction Input: city=Paris", "is not JSON"),
    ("hermes", '<tool_call>{"name": "rm_rf", "arguments": {}}</tool_call>', "not one of the tools on offer"),
])
def test_a_call_that_does_not_parse_stays_text_with_one_line(fmt, text, said):
    parsed = parse_reply(fmt, text, {"get_weather"})
    assert parsed.calls == [] and parsed.text == text
    assert said in parsed.problem and "\n" not in parsed.problem


def test_nothing_in_a_chatglm3_call_is_executed(tmp_path):
    marker = tmp_path / "ran"
    text = f"get_weather\n```python\ntool_call(city=__import__('pathlib').Path({str(marker)!r}).touch())\n```"
    assert parse_reply("chatglm3", text).problem is not None and not marker.exists()


def test_the_format_comes_from_the_family_or_its_template():
    class Family:
        tool_call_format = "react"

    class Tokenizer:
        chat_template = "{% for m in messages %}...<tool_call>...{% endfor %}"

    class Templated:
        tokenizer = Tokenizer()

    assert call_format(Family()) == "react" and call_format(Templated()) == "hermes"
    Tokenizer.chat_template = "{{ '<|python_tag|>' }}"
    assert call_format(Templated()) == "llama3"
    Tokenizer.chat_template = "plain"
    assert call_format(Templated()) is None and parse_reply(None, "x") .calls == []
    assert ToolCall("a", {}).to_json() == {"name": "a", "arguments": {}}


def test_calls_a_server_read_are_data_and_bad_arguments_are_one_line():
    from backends.prompt.tools.calls import calls_from_api

    parsed = calls_from_api("", [{"id": "c1", "name": "get_weather", "arguments": '{"city": "Paris"}'}],
                            {"get_weather"})
    assert parsed.calls == [ToolCall("get_weather", {"city": "Paris"}, '{"city": "Paris"}', "c1")]
    assert parsed.calls[0].to_json() == {"name": "get_weather", "arguments": {"city": "Paris"}, "id": "c1"}
    bad = calls_from_api("", [{"id": "c1", "name": "get_weather", "arguments": '{"city": '}])
    assert bad.calls == [] and "not JSON" in bad.problem
    other = calls_from_api("", [{"id": "c2", "name": "rm", "arguments": "{}"}], {"get_weather"})
    assert other.calls == [] and "not one of the tools" in other.problem


def test_tool_messages_keep_their_names_and_ids_through_validation():
    from backends.core.conversation import validate_messages

    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": {}}}
    clean = validate_messages([{"role": "user", "content": "q"},
                               {"role": "assistant", "content": "", "tool_calls": [call], "extra": 1},
                               {"role": "tool", "name": "f", "tool_call_id": "c1", "content": "42"}])
    assert clean[1] == {"role": "assistant", "content": "", "tool_calls": [call]}
    assert clean[2] == {"role": "tool", "name": "f", "tool_call_id": "c1", "content": "42"}
