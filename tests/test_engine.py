"""The engine on real models: answers, captured IDs, stopping, statistics."""

from __future__ import annotations

import threading
import time
import weakref

from backends.core.events import DoneEvent, TokenEvent
from backends.core.params import SamplingParams

GREEDY = SamplingParams(temperature=0, max_new_tokens=24)


def _collect(generation):
    events = list(generation)
    assert isinstance(events[-1], DoneEvent)
    return [e for e in events if isinstance(e, TokenEvent)], events[-1]


def test_default_model_answers_paris(demo_handle):
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    tokens, done = _collect(demo_handle.stream(messages, GREEDY))
    assert "Paris" in done.text
    assert "".join(t.text for t in tokens) == done.text
    assert done.stop_reason == "eos"
    assert done.stats.new_tokens >= len(tokens)
    assert done.stats.ttft_s is not None and done.stats.ttft_s > 0
    assert done.stats.prompt_tokens == len(done.prompt_ids)
    assert done.stats.peak_memory_bytes and done.stats.memory_kind == "rss"


def test_captured_ids_equal_the_preview(demo_handle):
    messages = [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Name a colour."},
    ]
    preview = demo_handle.render(messages)
    generation = demo_handle.stream(messages, SamplingParams(temperature=0, max_new_tokens=4))
    _, done = _collect(generation)
    assert done.captured_ids == preview.ids == done.prompt_ids
    assert generation.done.captured_ids == generation.view.ids


def test_chinese_and_emoji_conversation_streams_without_replacement_characters(demo_handle):
    turns = ["你好！请用中文介绍一下你自己。", "你喜欢什么颜色？🎨", "给我讲一个关于猫的笑话 🐱", "谢谢！再见 👋"]
    messages: list[dict] = []
    for question in turns:
        messages.append({"role": "user", "content": question})
        tokens, done = _collect(demo_handle.stream(messages, SamplingParams(temperature=0, max_new_tokens=32)))
        streamed = "".join(t.text for t in tokens)
        assert "\ufffd" not in streamed
        assert streamed == done.text
        messages.append({"role": "assistant", "content": done.text})
    assert len(messages) == 8


def test_stop_mid_stream_leaves_no_generation_thread(tiny_long_model_dir):
    from backends.core.spec import ModelSpec
    from backends.generation.open import open_model

    handle = open_model(ModelSpec(source=str(tiny_long_model_dir)))
    generation = handle.stream([{"role": "user", "content": "go"}], SamplingParams(temperature=0, max_new_tokens=5000))
    seen = 0
    for event in generation:
        if isinstance(event, TokenEvent):
            seen += 1
            if seen == 5:
                generation.stop()
        else:
            done = event
    generation.join(10)
    assert done.stop_reason == "stopped"
    # Every token generated before the stop took effect was reported, and it took effect long before the limit.
    assert done.stats.new_tokens == seen and seen < 100
    assert not generation.thread.is_alive()
    assert not [t for t in threading.enumerate() if t.name == "llm-tui-generate"]


def test_external_stop_event_and_max_new_tokens(tiny_long_model_dir):
    from backends.core.spec import ModelSpec
    from backends.generation.open import open_model

    handle = open_model(ModelSpec(source=str(tiny_long_model_dir)))
    _, done = _collect(handle.stream([{"role": "user", "content": "go"}], SamplingParams(temperature=0, max_new_tokens=7)))
    assert done.stop_reason == "length" and done.stats.new_tokens == 7
    stop = threading.Event()
    stop.set()
    _, done = _collect(handle.stream([{"role": "user", "content": "go"}], SamplingParams(max_new_tokens=500), stop))
    assert done.stop_reason == "stopped" and done.stats.new_tokens <= 1


def test_seed_makes_sampling_repeatable(tiny_handle):
    messages = [{"role": "user", "content": "tell me something"}]
    params = SamplingParams(temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=12, seed=1234)
    first = _collect(tiny_handle.stream(messages, params))[1]
    second = _collect(tiny_handle.stream(messages, params))[1]
    other = _collect(tiny_handle.stream(messages, params.with_value("seed", "99")))[1]
    assert first.text == second.text
    assert first.stats.new_tokens == second.stats.new_tokens
    assert other.text != first.text


def test_drain_batches_events_and_ends_with_done(tiny_long_model_dir):
    from backends.core.spec import ModelSpec
    from backends.generation.open import open_model

    handle = open_model(ModelSpec(source=str(tiny_long_model_dir)))
    generation = handle.stream([{"role": "user", "content": "go"}], SamplingParams(temperature=0, max_new_tokens=40))
    batches = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        batch = generation.drain(0.05)
        batches.append(batch)
        if batch and isinstance(batch[-1], DoneEvent):
            break
    events = [e for b in batches for e in b]
    assert isinstance(events[-1], DoneEvent)
    assert sum(isinstance(e, TokenEvent) for e in events) == 40
    assert generation.drain(0.01) == []


def test_unload_drops_the_weights(tiny_model_dir):
    from backends.core.spec import ModelSpec
    from backends.generation.open import open_model

    handle = open_model(ModelSpec(source=str(tiny_model_dir)))
    # Not just the handle's reference: nothing else (runner, family, tokenizer) may keep the
    # model or its tensors alive, or their memory is never given back.
    model = weakref.ref(handle.model)
    weights = weakref.ref(handle.model.get_input_embeddings().weight)
    assert handle.unload() is True
    assert model() is None and weights() is None


def test_a_turn_that_fails_ends_with_one_line(tiny_handle):
    """The one ``error_line`` words a turn's failure: running out of memory says what to change."""
    import torch

    def fail_with(err):
        def hook(_module, _args):
            raise err
        return tiny_handle.model.register_forward_pre_hook(hook)

    messages = [{"role": "user", "content": "hi"}]
    for err, line in ((torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
                       "out of memory during generation — try a shorter conversation (/clear), --quant nf4, "
                       "or another device"),
                      (RuntimeError("shapes do not match\n  at layer 3"),
                       "generation failed: RuntimeError: shapes do not match")):
        hook = fail_with(err)
        try:
            _, done = _collect(tiny_handle.stream(messages, GREEDY))
        finally:
            hook.remove()
        assert (done.stop_reason, done.error) == ("error", line)
    assert _collect(tiny_handle.stream(messages, GREEDY))[1].stop_reason != "error"  # the model is fine after
