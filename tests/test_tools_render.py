"""Tool definitions in the prompt: loaded from a file, rendered where each family's format puts them,
and shown as a span of their own (checked against the template's own rendering)."""

from __future__ import annotations

import json

import pytest
import tool_templates
from fixtures_families import make_template_dir

from backends.core.errors import UsageError
from backends.core.spec import ModelSpec
from backends.prompt.family_for import open_family
from backends.prompt.tools.definitions import Tool, load_tools
from backends.prompt.tools.spans import split_spans
from backends.prompt.truncation import render_within
from backends.prompt.view import TOOLS_SPAN, Span

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city now.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}

#: A tool-aware ChatML template of the common shape: the tools go into the system turn.
TOOLS_CHATML = (
    "{% if tools %}<|im_start|>system\n"
    "{% if messages[0].role == 'system' %}{{ messages[0].content }}{% else %}You are helpful.{% endif %}"
    "\n\n# Tools\n<tools>{% for t in tools %}\n{{ t | tojson }}{% endfor %}\n</tools>\n"
    "Call a tool as <tool_call>{name, arguments}</tool_call><|im_end|>\n"
    "{% elif messages[0].role == 'system' %}<|im_start|>system\n{{ messages[0].content }}<|im_end|>\n{% endif %}"
    "{% for m in messages %}{% if m.role != 'system' %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Paris?"}]


@pytest.fixture(scope="module")
def tools_dir(tmp_path_factory):
    return make_template_dir(tmp_path_factory.mktemp("tools-template"), config={"model_type": "llama"},
                             specials=("<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"),
                             chat_template=TOOLS_CHATML, eos_token="<|im_end|>")


def test_a_template_family_renders_tools_as_the_template_does_with_a_span_of_their_own(tools_dir):
    from transformers import AutoTokenizer

    family, _ = open_family(ModelSpec(source=str(tools_dir)))
    tools = [Tool("get_weather", WEATHER["function"]["description"], WEATHER["function"]["parameters"]).schema()]
    view = family.render(MESSAGES, tools=tools)
    tokenizer = AutoTokenizer.from_pretrained(str(tools_dir))
    reference = tokenizer.apply_chat_template(MESSAGES, tools=tools, tokenize=False, add_generation_prompt=True)
    assert view.text == reference
    assert view.ids == tokenizer(reference, add_special_tokens=False)["input_ids"]
    # The spans still cover every token once, in order; the tools have theirs, inside the system turn.
    assert [s.start for s in view.spans[1:]] == [s.end for s in view.spans[:-1]]
    assert view.spans[0].start == 0 and view.spans[-1].end == len(view.ids)
    (span,) = [s for s in view.spans if s.index == TOOLS_SPAN]
    shown = "".join(view.pieces[span.start:span.end])
    assert '"get_weather"' in shown and "Be brief." not in shown and "Paris" not in shown
    before = [s for s in view.spans if s.end <= span.start]
    assert before and before[-1].index == 0 and before[-1].role == "system"
    assert not any("ignores tools" in w for w in view.warnings)


# -- the template families' own shapes: where the tools go, the call, the result's role --------------

#: name: (template, specials, eos, the reply as the model writes it after the generation prompt,
#: the round as the family's own code writes it: the call's message and the result's).
SHAPES = {
    "qwen2.5": (tool_templates.QWEN25, tool_templates.QWEN25_SPECIALS, "<|im_end|>",
                '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
                lambda reply: [{"role": "assistant", "content": reply},
                               {"role": "tool", "content": "sunny, 21 C"}]),
    "llama3.1": (tool_templates.LLAMA31, tool_templates.LLAMA31_SPECIALS, "<|eot_id|>",
                 '{"name": "get_weather", "parameters": {"city": "Paris"}}',
                 lambda reply: [{"role": "assistant", "content": reply},
                                {"role": "ipython", "content": "sunny, 21 C"}]),
    "glm-4": (tool_templates.GLM4, tool_templates.GLM4_SPECIALS, "<|endoftext|>",
              'get_weather\n{"city": "Paris"}',
              lambda reply: [{"role": "assistant", "metadata": "get_weather", "content": '{"city": "Paris"}'},
                             {"role": "observation", "content": "sunny, 21 C"}]),
}


@pytest.fixture(scope="module", params=sorted(SHAPES))
def shaped(request, tmp_path_factory):
    template, specials, eos, reply, vendor_round = SHAPES[request.param]
    root = make_template_dir(tmp_path_factory.mktemp(request.param), config={"model_type": "llama"},
                             specials=specials, chat_template=template, eos_token=eos,
                             bos_token="<|begin_of_text|>" if "<|begin_of_text|>" in specials else None)
    return request.param, root, reply, vendor_round


def test_each_template_familys_tools_are_rendered_as_its_template_does_and_only_they_are_the_tools_spans(shaped):
    from transformers import AutoTokenizer

    name, root, _, _ = shaped
    family, _ = open_family(ModelSpec(source=str(root)))
    tokenizer = AutoTokenizer.from_pretrained(str(root))
    view = family.render(MESSAGES, tools=[WEATHER])
    reference = tokenizer.apply_chat_template(MESSAGES, tools=[WEATHER], tokenize=False, add_generation_prompt=True)
    assert view.text == reference and view.ids == tokenizer(reference, add_special_tokens=False)["input_ids"]
    assert [s.start for s in view.spans[1:]] == [s.end for s in view.spans[:-1]]
    assert view.spans[0].start == 0 and view.spans[-1].end == len(view.ids)
    shown = {s: "".join(view.pieces[s.start:s.end]) for s in view.spans}
    tools = "".join(text for s, text in shown.items() if s.index == TOOLS_SPAN)
    assert '"get_weather"' in tools and "The weather in a city now." in tools
    # The messages keep their words: none is counted as the tools' (Llama 3.1 writes the tools twice
    # apart, a line in the system turn and the definitions in the first user turn, around them).
    assert "Be brief." in "".join(text for s, text in shown.items() if s.role == "system")
    assert "Weather in Paris?" in "".join(text for s, text in shown.items() if s.role == "user")
    assert "Be brief." not in tools and "Paris" not in tools
    if name == "llama3.1":
        assert [s.index for s in view.spans].count(TOOLS_SPAN) == 2
        assert shown[[s for s in view.spans if s.index == TOOLS_SPAN][0]] == "Environment: ipython\n"


def test_each_template_family_writes_a_tool_round_back_as_its_own_code_does(shaped):
    """The call is kept as the model wrote it, the result goes in the role the template reads results
    in (GLM-4's observation; a tool message it would drop), and the next prompt goes on from the
    model's own tokens."""
    from transformers import AutoTokenizer

    from backends.generation.tool_loop import ToolOutcome, call_message, result_message
    from backends.prompt.tools.calls import call_format, parse_reply

    name, root, reply, vendor_round = shaped
    family, _ = open_family(ModelSpec(source=str(root)))
    tokenizer = AutoTokenizer.from_pretrained(str(root))
    fmt = call_format(family)
    parsed = parse_reply(fmt, reply, known={"get_weather"})
    assert parsed.problem is None and [(c.name, c.arguments) for c in parsed.calls] == [("get_weather", {"city": "Paris"})]
    ours = MESSAGES + [call_message(fmt, reply, parsed.calls), result_message(ToolOutcome(parsed.calls[0], "sunny, 21 C"))]
    view = family.render(ours, tools=[WEATHER])
    reference = tokenizer.apply_chat_template(MESSAGES + vendor_round(reply), tools=[WEATHER], tokenize=False,
                                              add_generation_prompt=True)
    assert view.text == reference and "sunny, 21 C" in view.text
    asked = family.render(MESSAGES, tools=[WEATHER]).text
    assert view.text.startswith(asked + reply)
    assert not view.warnings
    assert [s.role for s in view.spans if s.index >= 0][-2:] == ["assistant", "tool"]


def test_a_template_that_writes_no_tool_results_says_the_result_is_not_in_the_prompt(tmp_path):
    bare = ("{% for m in messages %}{% if m.role in ['user', 'assistant'] %}<|im_start|>{{ m.role }}\n{{ m.content }}"
            "<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    root = make_template_dir(tmp_path / "bare", config={"model_type": "llama"},
                             specials=("<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"), chat_template=bare)
    family, _ = open_family(ModelSpec(source=str(root)))
    view = family.render([{"role": "user", "content": "Weather?"}, {"role": "assistant", "content": "call"},
                          {"role": "tool", "name": "get_weather", "content": "sunny"}])
    assert "sunny" not in view.text
    assert "the chat template writes no tool results: tool message #2 is not in the prompt" in view.warnings


def test_a_template_without_a_tool_format_says_the_tools_are_not_in_the_prompt(demo_dir):
    family, _ = open_family(ModelSpec())
    view = family.render(MESSAGES, tools=[WEATHER])
    assert view.text == family.render(MESSAGES).text
    assert any("ignores tools=: the 1 tool definitions are not in the prompt" in w for w in view.warnings)
    assert not any(s.index == TOOLS_SPAN for s in view.spans)


def test_a_family_without_a_tool_format_refuses_tools_in_one_line(tmp_path):
    from fixtures_families import make_baichuan2_dir

    family, _ = open_family(ModelSpec(source=str(make_baichuan2_dir(tmp_path / "baichuan"))))
    with pytest.raises(UsageError, match="prompt format has no place for tools"):
        render_within(family, MESSAGES, None, tools=[WEATHER])


def test_tool_files_in_both_forms_and_what_is_wrong_with_a_bad_one(tmp_path):
    good = tmp_path / "tools.json"
    good.write_text(json.dumps([WEATHER, {"name": "now", "description": "The time."}]))
    weather, now = load_tools(good)
    assert weather.schema() == WEATHER and weather.source == "tools.json"
    assert now.schema()["function"]["parameters"] == {"type": "object", "properties": {}}
    for content, said in (("[1]", "is not a JSON object"), ('[{"name": "a b"}]', "no usable name"),
                          ("{not json", "is not JSON"), (json.dumps([WEATHER, WEATHER]), "two tools are named"),
                          ('[{"name": "x", "parameters": 3}]', "parameters must be a JSON schema object")):
        bad = tmp_path / "bad.json"
        bad.write_text(content)
        with pytest.raises(UsageError, match=said):
            load_tools(bad)
    with pytest.raises(UsageError, match="there is no tools file"):
        load_tools(tmp_path / "missing.json")


def test_splitting_spans_keeps_a_partition():
    spans = [Span(-1, "framing", 0, 3), Span(0, "system", 3, 10), Span(1, "user", 10, 14)]
    assert split_spans(spans, 5, 8) == [Span(-1, "framing", 0, 3), Span(0, "system", 3, 5), Span(TOOLS_SPAN, "tools", 5, 8),
                                        Span(0, "system", 8, 10), Span(1, "user", 10, 14)]
    assert split_spans(spans, 3, 10) == [Span(-1, "framing", 0, 3), Span(TOOLS_SPAN, "tools", 3, 10),
                                         Span(1, "user", 10, 14)]


def test_inspect_tools_json_shows_the_tools_span_and_its_token_count(tools_dir, tmp_path):
    import subprocess
    import sys

    (tmp_path / "tools.json").write_text(json.dumps([WEATHER]))
    (tmp_path / "messages.json").write_text(json.dumps(MESSAGES))
    done = subprocess.run([sys.executable, "-m", "tui", "inspect", str(tools_dir), "--messages",
                           str(tmp_path / "messages.json"), "--tools", str(tmp_path / "tools.json"), "--json"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    family, _ = open_family(ModelSpec(source=str(tools_dir)))
    view = family.render(MESSAGES, tools=[WEATHER])
    (span,) = [s for s in view.spans if s.index == TOOLS_SPAN]
    assert data["ids"] == view.ids and data["tools"] == {"count": 1, "tokens": span.end - span.start}
    assert {"index": TOOLS_SPAN, "role": "tools", "start": span.start, "end": span.end} in data["spans"]
    bad = subprocess.run([sys.executable, "-m", "tui", "inspect", str(tools_dir), "--messages",
                          str(tmp_path / "messages.json"), "--tools", str(tmp_path / "nope.json")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "there is no tools file" in bad.stderr


# -- the families whose format is the vendor's code ---------------------------------------------------

TOOLS_PROMPT = "Answer the following questions as best as you can. You have access to the following tools:"


def test_chatglm3_puts_the_tools_in_a_system_message_as_build_chat_input_does(tmp_path):
    """The vendor's tool demo: {"role": "system", "content": TOOLS_PROMPT, "tools": [...]}; build_chat_input
    appends json.dumps(tools, indent=4, ensure_ascii=False) to its content after a newline."""
    from fixtures_families import make_chatglm3_dir

    from backends.prompt.families.chatglm import ChatGLM3Family

    family = ChatGLM3Family.from_dir(make_chatglm3_dir(tmp_path / "chatglm3"))
    sp = family.vocab.sp
    tools = [WEATHER, {"type": "function", "function": {"name": "汇率", "description": "换算", "parameters": {}}}]
    view = family.render(MESSAGES[1:], tools=tools)
    content = TOOLS_PROMPT + "\n" + json.dumps([t["function"] for t in tools], indent=4, ensure_ascii=False)
    expected = [family.command("[gMASK]"), family.command("sop")]
    for role, text in (("system", content), ("user", MESSAGES[1]["content"])):
        expected += [family.command(f"<|{role}|>")] + sp.encode("\n") + sp.encode(text)
    expected.append(family.command("<|assistant|>"))
    assert view.ids == expected
    assert view.text == f"[gMASK]sop<|system|>\n{content}<|user|>\n{MESSAGES[1]['content']}<|assistant|>"
    assert [s.index for s in view.spans] == [-1, TOOLS_SPAN, 0, -1]
    assert '"get_weather"' in "".join(view.pieces[view.spans[1].start:view.spans[1].end])


def test_qwen_v1_asks_the_question_through_its_react_prompt(tmp_path):
    """openai_api.py: the instruction lists each tool as TOOL_DESC, then 'Question: ...'."""
    from fixtures_families import make_qwen_dir

    from backends.prompt.families.qwen import QwenFamily

    family = QwenFamily.from_dir(make_qwen_dir(tmp_path / "qwen"))
    view = family.render(MESSAGES, tools=[WEATHER])
    parameters = json.dumps(WEATHER["function"]["parameters"], ensure_ascii=False)
    question = (
        "Answer the following questions as best you can. You have access to the following APIs:\n\n"
        "get_weather: Call this tool to interact with the get_weather API. What is the get_weather API useful "
        f"for? The weather in a city now. Parameters: {parameters}\n\n"
        "Use the following format:\n\n"
        "Question: the input question you must answer\n"
        "Thought: you should always think about what to do\n"
        "Action: the action to take, should be one of [get_weather]\n"
        "Action Input: the input to the action\n"
        "Observation: the result of the action\n"
        "... (this Thought/Action/Action Input/Observation can be repeated zero or more times)\n"
        "Thought: I now know the final answer\n"
        "Final Answer: the final answer to the original input question\n\n"
        "Begin!\n\nQuestion: Weather in Paris?")
    plain = family.render([MESSAGES[0], {"role": "user", "content": question}])
    assert view.text == plain.text and view.ids == plain.ids  # make_context over the ReAct question
    (span,) = [s for s in view.spans if s.index == TOOLS_SPAN]
    shown = "".join(view.pieces[span.start:span.end])
    assert shown.startswith("Answer the following questions") and "Weather in Paris" not in shown
    assert [s.index for s in view.spans].count(1) == 2  # the question around the instruction: before and after
    assert family.tool_call_format == "react"


REACT_CALL = 'Thought: I should look it up.\nAction: get_weather\nAction Input: {"city": "Paris"}\n'
RESULT = '{"sky": "clear"}'


def test_qwen_v1_goes_on_after_a_tools_result_as_its_openai_api_does(tmp_path):
    """parse_messages + text_complete_last_message: the result joins the reply as '\\nObservation: ...\\nThought:',
    the reply is left open, and the prompt is encoded as one text with special tokens live."""
    from fixtures_families import make_qwen_dir

    from backends.prompt.families.qwen import QwenFamily
    from backends.prompt.tools.formats import qwen_react_query

    family = QwenFamily.from_dir(make_qwen_dir(tmp_path / "qwen"))
    messages = [*MESSAGES, {"role": "assistant", "content": REACT_CALL},
                {"role": "tool", "name": "get_weather", "content": RESULT}]
    view = family.render(messages, tools=[WEATHER])
    question = qwen_react_query([WEATHER], "Weather in Paris?")
    reply = REACT_CALL.strip() + f"\nObservation: {RESULT}\nThought:"
    prompt = (f"<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n{question}<|im_end|>\n"
              f"<|im_start|>assistant\n{reply}")
    assert view.text == prompt
    assert view.ids == family.tokenizer.encoding.encode(prompt, allowed_special="all")
    assert view.stop_texts == ["Observation:"]
    (span,) = [s for s in view.spans if s.index == TOOLS_SPAN]
    assert "".join(view.pieces[span.start:span.end]).startswith("Answer the following questions")
    assert view.spans[-1].index == 2 and view.spans[-1].role == "assistant"  # the call and its result: one reply
    # The next question: the round is one reply of the history, the instruction goes on the new question.
    final = " I now know the final answer.\nFinal Answer: Clear."
    later = family.render([*messages, {"role": "assistant", "content": final},
                           {"role": "user", "content": "And tomorrow?"}], tools=[WEATHER])
    plain = family.render([MESSAGES[0], MESSAGES[1], {"role": "assistant", "content": reply + final},
                           {"role": "user", "content": "And tomorrow?"}], tools=[WEATHER])
    assert later.ids == plain.ids and later.text == plain.text
    with pytest.raises(UsageError, match="tool's result with no reply before it"):
        family.render([MESSAGES[1], {"role": "tool", "content": RESULT}], tools=[WEATHER])


def test_a_stop_text_ends_the_reply_before_it(demo_tokenizer):
    """The sink ends the turn where the reply's text holds a stop word, and the reply's text stops before it."""
    import threading

    from backends.generation.sink import TurnSink

    events = []
    sink = TurnSink(events.append, demo_tokenizer.decode, [], threading.Event(), None, [1, 2, 3])
    sink.stop_texts = ["Observation:"]
    sink.begin()
    for token in demo_tokenizer.encode("Action: f\nAction Input: {}\nObservation: x", add_special_tokens=False):
        if sink.stopped:
            break
        sink.token(token)
    done = sink.finish([])
    assert done.stop_reason == "eos" and done.text == "Action: f\nAction Input: {}\n"
    assert "Observation" in "".join(e.text for e in events)  # the tokens the model wrote are all there
