"""``--engine native``: the wrappers around the vendors' streaming methods.

The streaming methods here are STAND-INS written for these tests
(tests/remote_standins/native_methods.py): small classes of ours with the
signatures of Qwen v1 ``chat_stream``, ChatGLM3 ``stream_chat`` and Baichuan2
``chat(..., stream=True)``, running real forward passes of a small remote-code
stand-in model. The prompt families and vocabularies are llm-tui's real ones.
"""

from __future__ import annotations

import threading
import time

import pytest

from backends.core.errors import ModelLoadError, UsageError
from backends.core.events import DoneEvent, TokenEvent
from backends.core.params import SamplingParams
from backends.core.spec import ModelSpec

GREEDY = SamplingParams(temperature=0, max_new_tokens=10)


def _lm(root, vocab_size: int, qwen_vocab: bool = False):
    from remote_standins import make_tinyqwen_dir

    from backends.checkpoint.locate import Located
    from backends.loading.remote.load import load_remote

    path = make_tinyqwen_dir(root, vocab_size=vocab_size, qwen_vocab=qwen_vocab)
    return load_remote(ModelSpec(source=str(path), trust_remote_code=True), Located(path)).model, path


@pytest.fixture(scope="module")
def qwen_parts(tmp_path_factory):
    from backends.prompt.families.detect import family_for_dir

    lm, path = _lm(tmp_path_factory.mktemp("native-qwen"), 151936, qwen_vocab=True)
    return lm, family_for_dir(path), path


@pytest.fixture(scope="module")
def chatglm_parts(tmp_path_factory):
    from fixtures_families import make_chatglm3_dir

    from backends.prompt.families.chatglm import ChatGLM3Family

    family = ChatGLM3Family.from_dir(make_chatglm3_dir(tmp_path_factory.mktemp("glm-family"), with_code=False))
    lm, _ = _lm(tmp_path_factory.mktemp("native-glm"), family.vocab.size + 9)
    return lm, family


@pytest.fixture(scope="module")
def baichuan_parts(tmp_path_factory):
    from fixtures_families import make_baichuan2_dir

    from backends.prompt.families.baichuan import Baichuan2Family

    family = Baichuan2Family.from_dir(make_baichuan2_dir(tmp_path_factory.mktemp("bc-family")))
    lm, _ = _lm(tmp_path_factory.mktemp("native-bc"), family.vocab.size)
    return lm, family


def _handle(model, tokenizer, family, label="stand-in"):
    from backends.generation.handle import ModelHandle
    from backends.generation.runners.native import NativeRunner

    runner = NativeRunner.for_model(model, tokenizer, family, label=label)
    return ModelHandle(model, tokenizer, runner.family, ModelSpec(engine="native", alias=label), runner=runner)


def _collect(generation):
    events = list(generation)
    assert isinstance(events[-1], DoneEvent)
    return [e for e in events if isinstance(e, TokenEvent)], events[-1]


def _loop_ids(model, view, params):
    """What the decode loop samples for the same prompt (the reference)."""
    from remote_standins import ListSink

    from backends.generation.runners.loop import LoopRunner

    return LoopRunner().run(model, view, params, ListSink(stop_ids=view.stop_ids))


def _generation_config(**kw):
    from transformers import GenerationConfig

    return GenerationConfig(**kw)


# -- Qwen v1 chat_stream -----------------------------------------------------------------
def test_qwen_chat_stream_reports_the_sampled_ids(qwen_parts):
    from remote_standins.native_methods import (
        QwenChatStreamStandin,
        QwenTokenizerAdapter,
    )

    lm, family, _ = qwen_parts
    model = QwenChatStreamStandin(lm, _generation_config(chat_format="chatml", max_window_size=6144))
    handle = _handle(model, QwenTokenizerAdapter(family), family)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"}, {"role": "user", "content": "你好 😀"}]
    generation = handle.stream(messages, GREEDY)
    tokens, done = _collect(generation)
    assert done.error is None
    assert done.captured_ids == family.render(messages).ids == done.prompt_ids
    assert generation.done.captured_ids == generation.view.ids
    assert [t.id for t in tokens] == _loop_ids(model, generation.view, GREEDY)
    assert done.stop_reason == "length" and done.stats.new_tokens == GREEDY.max_new_tokens


def test_the_stop_token_the_method_never_reports_is_recovered(qwen_parts):
    from remote_standins.native_methods import (
        QwenChatStreamStandin,
        QwenTokenizerAdapter,
    )

    lm, family, _ = qwen_parts
    im_end = family.tokenizer.im_end_id
    model = QwenChatStreamStandin(lm, _generation_config(chat_format="chatml"), end_after=4, end_token=im_end)
    handle = _handle(model, QwenTokenizerAdapter(family), family)
    tokens, done = _collect(handle.stream([{"role": "user", "content": "hi"}], GREEDY))
    assert done.stop_reason == "eos" and done.stats.new_tokens == 5
    assert len(tokens) == 4 and done.text == "".join(t.text for t in tokens)


# -- ChatGLM3 stream_chat ---------------------------------------------------------------------
def test_chatglm_stream_chat_reuses_its_cache_and_the_preview_says_so(chatglm_parts):
    from remote_standins.native_methods import (
        ChatGLMStreamChatStandin,
        ChatGLMTokenizerAdapter,
    )

    lm, family = chatglm_parts
    model = ChatGLMStreamChatStandin(lm, _generation_config(), end_after=5, end_token=family.command("<|user|>"))
    handle = _handle(model, ChatGLMTokenizerAdapter(family), family)
    first = [{"role": "system", "content": "You are helpful."}, {"role": "user", "content": "hello world"}]
    gen1 = handle.stream(first, GREEDY)
    tokens1, done1 = _collect(gen1)
    assert gen1.view.mode == "full" and done1.captured_ids == family.render(first).ids
    assert done1.stop_reason == "eos" and done1.stats.new_tokens == 6
    assert [t.id for t in tokens1] == _loop_ids(model, gen1.view, GREEDY)[:-1]

    second = first + [{"role": "assistant", "content": done1.text}, {"role": "user", "content": "and again"}]
    preview = handle.render(second)
    assert preview.mode == "incremental" and preview.ids == family.render_incremental(second).ids
    gen2 = handle.stream(second, GREEDY)
    _, done2 = _collect(gen2)
    assert gen2.view.mode == "incremental"
    assert done2.captured_ids == preview.ids and gen2.done.captured_ids == gen2.view.ids
    # the cache handed back holds turn one: its prompt and reply, less the stop token never fed back
    assert model.seen_past == [0, len(done1.prompt_ids) + done1.stats.new_tokens - 1]

    edited = first + [{"role": "assistant", "content": "something else"}, {"role": "user", "content": "and again"}]
    assert handle.render(edited).mode == "full"


def test_tools_are_refused_through_the_native_engine_whose_method_would_run_a_calls_text(chatglm_parts):
    """ChatGLM3's stream_chat passes a call's text to eval() once the history has tools: the native engine
    is offered none, and says which engine reads the calls as data."""
    from remote_standins.native_methods import ChatGLMStreamChatStandin, ChatGLMTokenizerAdapter

    from backends.core.errors import UsageError
    from backends.generation.tool_support import tool_support

    lm, family = chatglm_parts
    model = ChatGLMStreamChatStandin(lm, _generation_config(), end_after=2, end_token=family.command("<|user|>"))
    handle = _handle(model, ChatGLMTokenizerAdapter(family), family)
    fmt, why = tool_support(handle)
    assert fmt is None and "passes it to eval()" in why and "--engine auto" in why
    tool = {"type": "function", "function": {"name": "f", "description": "", "parameters": {"type": "object"}}}
    with pytest.raises(UsageError, match="not sent through the native engine") as refused:
        handle.stream([{"role": "user", "content": "hi"}], GREEDY, tools=[tool])
    assert "--engine auto" in refused.value.fix and model.seen_past == []


def test_a_method_needing_removed_transformers_internals_is_refused_in_one_line(chatglm_parts):
    import torch
    from remote_standins.native_methods import (
        ChatGLMTokenizerAdapter,
        StreamChatNeedsOldTransformers,
    )

    from backends.generation.runners.native import NativeRunner

    lm, family = chatglm_parts
    model = StreamChatNeedsOldTransformers(lm, _generation_config())
    with pytest.raises(ModelLoadError, match=r"_get_logits_warper\(\)") as err:
        NativeRunner.for_model(model, ChatGLMTokenizerAdapter(family), family, label="old-glm")
    assert "--engine loop" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(UsageError, match="no streaming method"):
        NativeRunner.for_model(torch.nn.Linear(2, 2), None, family, label="plain")


# -- Baichuan2 chat(stream=True) ---------------------------------------------------------------
def test_baichuan_chat_stream_gives_exact_ids_and_stops_between_tokens(baichuan_parts):
    from remote_standins.native_methods import (
        BaichuanChatStandin,
        BaichuanTokenizerAdapter,
    )

    lm, family = baichuan_parts
    model = BaichuanChatStandin(lm, _generation_config(eos_token_id=2, max_new_tokens=2048))
    handle = _handle(model, BaichuanTokenizerAdapter(family), family)
    messages = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"},
                {"role": "user", "content": "what now"}]
    generation = handle.stream(messages, GREEDY)
    tokens, done = _collect(generation)
    assert done.captured_ids == family.render(messages, max_new_tokens=GREEDY.max_new_tokens).ids
    assert [t.id for t in tokens] == _loop_ids(model, generation.view, GREEDY)
    assert "generate" not in model.__dict__  # the per-turn wrapper is gone

    before = threading.active_count()
    generation = handle.stream(messages, SamplingParams(temperature=0, max_new_tokens=1000))
    seen = 0
    for event in generation:
        if isinstance(event, TokenEvent):
            seen += 1
            if seen == 3:
                generation.stop()
        else:
            done = event
    generation.join(10)
    assert done.stop_reason == "stopped" and 3 <= done.stats.new_tokens < 50, done.error
    assert threading.active_count() <= before


def test_a_failing_generate_thread_is_one_line_not_a_hang(baichuan_parts):
    from remote_standins.native_methods import (
        BaichuanChatStandin,
        BaichuanTokenizerAdapter,
    )

    lm, family = baichuan_parts
    model = BaichuanChatStandin(lm, _generation_config(eos_token_id=2, max_new_tokens=2048))
    model.fail_after = 2
    handle = _handle(model, BaichuanTokenizerAdapter(family), family)
    generation = handle.stream([{"role": "user", "content": "hello"}], GREEDY)
    events: list = []
    deadline = time.monotonic() + 60
    while not (events and isinstance(events[-1], DoneEvent)) and time.monotonic() < deadline:
        events += generation.drain(1.0)
    done = events[-1]
    assert done.stop_reason == "error"
    assert "DynamicCache" in done.error and "--engine loop" in done.error and "\n" not in done.error


# -- dispatch and fallbacks ---------------------------------------------------------------------
def test_open_model_native_needs_a_runnable_method(qwen_parts, tiny_model_dir):
    from backends.generation.open import open_model

    _, _, path = qwen_parts
    with pytest.raises(ModelLoadError, match="transformers_stream_generator") as err:
        open_model(ModelSpec(source=str(path), trust_remote_code=True, engine="native"))
    assert "\n" not in str(err.value)
    with pytest.raises(UsageError, match="no code of its own"):
        open_model(ModelSpec(source=str(tiny_model_dir), engine="native"))


@pytest.mark.parametrize("which", ["qwen", "chatglm"])
def test_retokenising_growing_text_reproduces_it(which, qwen_parts, chatglm_parts):
    from backends.generation.runners.native_family import TextTokens, text_encoder

    family = qwen_parts[1] if which == "qwen" else chatglm_parts[1]
    text = "Hello, world! quick brown fox 你好 世界 ok"
    tokens = TextTokens(text_encoder(family), family.decode)
    ids: list[int] = []
    for end in range(1, len(text) + 1):
        ids += tokens.update(text[:end])
    ids += tokens.update(text, final=True)
    assert family.decode(ids) == text
