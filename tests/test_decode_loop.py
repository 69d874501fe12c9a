"""The decode loop (``--engine loop``, the default for remote-code checkpoints) on real models.

The remote-code model is llm-tui's own stand-in (tests/remote_standins): its
own forward signature, tuple caches, buffers computed in ``__init__``, loaded
from a model directory with config.json ``auto_map`` + .py files + safetensors
with ``trust_remote_code=True``, exactly like a real checkpoint.
"""

from __future__ import annotations

import pytest
from remote_standins import ListSink

from backends.core.events import DoneEvent, TokenEvent
from backends.core.params import SamplingParams
from backends.core.spec import ModelSpec

GREEDY = SamplingParams(temperature=0, max_new_tokens=12)
MESSAGES = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Name a colour."}]


@pytest.fixture(scope="module")
def tinyqwen_dir(tmp_path_factory):
    from remote_standins import make_tinyqwen_dir

    return make_tinyqwen_dir(tmp_path_factory.mktemp("tinyqwen-loop"))


@pytest.fixture(scope="module")
def remote_handle(tinyqwen_dir):
    from backends.generation.open import open_model

    return open_model(ModelSpec(source=str(tinyqwen_dir), trust_remote_code=True))


def _collect(generation):
    events = list(generation)
    assert isinstance(events[-1], DoneEvent)
    return [e for e in events if isinstance(e, TokenEvent)], events[-1]


def test_loop_greedy_tokens_equal_generate_on_a_native_model(tiny_model_dir):
    from backends.generation.open import open_model
    from backends.generation.runners.generate import GenerateRunner
    from backends.generation.runners.loop import LoopRunner

    generate = open_model(ModelSpec(source=str(tiny_model_dir)))
    loop = open_model(ModelSpec(source=str(tiny_model_dir), engine="loop"))
    assert isinstance(generate.runner, GenerateRunner) and isinstance(loop.runner, LoopRunner)
    params = SamplingParams(temperature=0, max_new_tokens=20)
    for messages in ([{"role": "user", "content": "What is the capital of France?"}], MESSAGES):
        gen_tokens, gen_done = _collect(generate.stream(messages, params))
        loop_tokens, loop_done = _collect(loop.stream(messages, params))
        assert [t.id for t in loop_tokens] == [t.id for t in gen_tokens]
        assert loop_done.text == gen_done.text
        assert loop_done.stop_reason == gen_done.stop_reason
        assert loop_done.captured_ids == loop_done.prompt_ids == gen_done.captured_ids


def test_remote_code_checkpoint_runs_in_the_loop_by_default(remote_handle):
    from backends.generation.runners.loop import LoopRunner

    assert isinstance(remote_handle.runner, LoopRunner)
    assert remote_handle.info.family == "qwen"
    generation = remote_handle.stream(MESSAGES, GREEDY)
    tokens, done = _collect(generation)
    assert done.error is None
    assert done.captured_ids == done.prompt_ids == remote_handle.render(MESSAGES).ids
    assert generation.done.captured_ids == generation.view.ids
    assert done.stats.new_tokens == GREEDY.max_new_tokens and done.stop_reason == "length"
    assert "".join(t.text for t in tokens) == done.text
    again = _collect(remote_handle.stream(MESSAGES, GREEDY))[1]
    assert again.text == done.text


def test_loop_with_tuple_cache_equals_recomputing_without_cache(remote_handle):
    """Passing the model's own tuple cache back gives what a cache-free recomputation gives."""
    import torch

    stop_ids = set(remote_handle.family.stop_ids())
    tokens, done = _collect(remote_handle.stream(MESSAGES, SamplingParams(temperature=0, max_new_tokens=40)))
    ids, expected = list(done.prompt_ids), []
    with torch.inference_mode():
        for _ in range(40):
            logits, _ = remote_handle.model(torch.tensor([ids]))
            expected.append(int(logits[0, -1].argmax()))
            ids.append(expected[-1])
            if expected[-1] in stop_ids:
                break
    assert len(done.prompt_ids) + len(expected) > 48  # past seq_length, where the logn buffer scales queries
    assert [t.id for t in tokens] == [t for t in expected if t not in stop_ids]
    assert done.stats.new_tokens == len(expected)


def test_stop_between_tokens_and_stop_ids(remote_handle):
    from backends.generation.runners.loop import LoopRunner

    view = remote_handle.render(MESSAGES)
    params = SamplingParams(temperature=0, max_new_tokens=200)
    sink = ListSink(stop_after=3)
    new = LoopRunner().run(remote_handle.model, view, params, sink)
    assert new == sink.tokens and len(new) == 3
    assert sink.captured == view.ids
    first = new[0]
    sink = ListSink(stop_ids=[first])
    assert LoopRunner().run(remote_handle.model, view, params, sink) == [first]


def test_stop_from_another_thread_ends_the_turn(remote_handle):
    generation = remote_handle.stream(MESSAGES, SamplingParams(temperature=0, max_new_tokens=5000))
    seen = 0
    for event in generation:
        if isinstance(event, TokenEvent):
            seen += 1
            if seen == 4:
                generation.stop()
        else:
            done = event
    generation.join(10)
    assert done.stop_reason == "stopped" and 4 <= done.stats.new_tokens < 5000
    assert not generation.thread.is_alive()


def test_seeded_sampling_is_repeatable(remote_handle):
    params = SamplingParams(temperature=1.0, top_p=0.95, top_k=40, repetition_penalty=1.1, max_new_tokens=10,
                            seed=7)
    first = _collect(remote_handle.stream(MESSAGES, params))[1]
    second = _collect(remote_handle.stream(MESSAGES, params))[1]
    other = _collect(remote_handle.stream(MESSAGES, params.with_value("seed", "8")))[1]
    assert first.text == second.text and first.stats.new_tokens == second.stats.new_tokens
    assert other.text != first.text


def test_forward_signature_is_read_not_assumed():
    import torch

    from backends.loading.forward_call import ForwardCall, split_output

    class Positional(torch.nn.Module):
        def forward(self, ids, past=None):
            return ids.float(), ("cache", ids.shape[1])

    call = ForwardCall.for_model(Positional())
    assert call.ids_name is None and call.cache_name == "past" and not call.positions and not call.use_cache
    logits, cache = split_output(call(Positional(), torch.tensor([[1, 2]]), None, 0))
    assert cache == ("cache", 2) and logits.shape == (1, 2)


def test_sampling_uses_transformers_processors():
    from transformers import (
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    from backends.generation.runners.loop import logits_processors

    kinds = [type(p) for p in logits_processors(None, SamplingParams(temperature=0.5, top_k=5, top_p=0.9,
                                                                     repetition_penalty=1.2))]
    assert kinds == [RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper]
    assert list(logits_processors(None, SamplingParams(temperature=0))) == []


def test_a_model_without_a_cache_sees_the_whole_sequence_each_step():
    import torch

    from backends.generation.runners.loop import LoopRunner
    from backends.prompt.view import PromptView

    class Counter(torch.nn.Module):
        """Predicts last token + 1 and returns no cache; records what each call received."""

        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))
            self.seen: list[list[int]] = []

        def forward(self, input_ids):
            self.seen.append(input_ids[0].tolist())
            return (torch.nn.functional.one_hot((input_ids + 1) % 50, 50).float(),)

    model = Counter()
    view = PromptView(family="t", text="", ids=[3, 4], pieces=["", ""], special=[False, False])
    sink = ListSink()
    assert LoopRunner().run(model, view, SamplingParams(temperature=0, max_new_tokens=3), sink) == [5, 6, 7]
    assert model.seen == [[3, 4], [3, 4, 5], [3, 4, 5, 6]] and sink.captured == [3, 4]
