"""Prompt budgets: each family's truncation narrowed to a token budget, and the memory plan before a turn."""

from __future__ import annotations

import pytest

from backends.core.params import SamplingParams
from backends.core.spec import ModelSpec
from backends.hardware.free_memory import DeviceMemory
from backends.memory.fit import plan_turn
from backends.memory.turn import check_turn, prompt_budget, turn_devices, turn_needs
from backends.memory.weights import weights_on
from backends.prompt.families.baichuan import Baichuan2Family
from backends.prompt.families.chatglm import ChatGLM3Family
from backends.prompt.families.qwen import QwenFamily
from backends.prompt.family_for import open_family
from backends.prompt.truncation import render_within

try:
    from fixtures_families import make_baichuan2_dir, make_chatglm3_dir, make_qwen_dir
except ImportError:  # tests collected as a package
    from tests.fixtures_families import (
        make_baichuan2_dir,
        make_chatglm3_dir,
        make_qwen_dir,
    )


def conversation(rounds: int, *, system: str | None = "Be brief.", words: int = 20) -> list[dict]:
    messages = [{"role": "system", "content": system}] if system else []
    for n in range(rounds):
        messages += [{"role": "user", "content": f"question {n} " + "word " * words},
                     {"role": "assistant", "content": f"answer {n} " + "text " * (words + 10)}]
    messages.append({"role": "user", "content": "and the last question?"})
    return messages


@pytest.fixture(scope="module")
def template_family(demo_dir):
    family, _ = open_family(ModelSpec(source=str(demo_dir)))
    return family


@pytest.fixture(scope="module")
def qwen_family(tmp_path_factory):
    return QwenFamily.from_dir(make_qwen_dir(tmp_path_factory.mktemp("qwen")))


@pytest.fixture(scope="module")
def baichuan_family(tmp_path_factory):
    return Baichuan2Family.from_dir(make_baichuan2_dir(tmp_path_factory.mktemp("baichuan2")))


@pytest.fixture(scope="module")
def chatglm_family(tmp_path_factory):
    return ChatGLM3Family.from_dir(make_chatglm3_dir(tmp_path_factory.mktemp("chatglm3")))


def message_sizes(view) -> dict[int, int]:
    sizes: dict[int, int] = {}
    for span in view.spans:
        if span.index >= 0:
            sizes[span.index] = sizes.get(span.index, 0) + span.end - span.start
    return sizes


def test_no_budget_or_a_prompt_within_it_is_the_family_render(template_family):
    messages = conversation(3)
    full = template_family.render(messages)
    assert render_within(template_family, messages, None).ids == full.ids
    same = render_within(template_family, messages, len(full.ids))
    assert same.ids == full.ids and not same.dropped


def test_template_family_drops_the_oldest_rounds_and_keeps_the_system_prompt(template_family):
    messages = conversation(6)
    full = template_family.render(messages)
    budget = len(full.ids) // 2
    view = render_within(template_family, messages, budget)
    assert len(view.ids) <= budget
    dropped = [d.index for d in view.dropped]
    assert dropped == list(range(1, 1 + len(dropped))) and len(dropped) % 2 == 0  # whole rounds, oldest first
    kept = [0] + list(range(1 + len(dropped), len(messages)))
    # Exactly the family's render of what is left, with span indices pointing at the original messages.
    alone = template_family.render([messages[i] for i in kept])
    assert view.ids == alone.ids
    assert sorted({s.index for s in view.spans if s.index >= 0}) == kept
    assert view.text.startswith("<|im_start|>system\nBe brief.")
    sizes = message_sizes(full)
    assert [d.tokens for d in view.dropped] == [sizes[i] for i in dropped]
    assert all("budget" in d.reason for d in view.dropped)
    # The fewest messages that fit: keeping one more round would go over.
    one_more = template_family.render([messages[0]] + messages[len(dropped) - 1:])
    assert len(one_more.ids) > budget


def test_last_message_alone_over_the_budget_is_warned(template_family):
    messages = conversation(2) + [{"role": "assistant", "content": "ok"},
                                  {"role": "user", "content": "word " * 300}]
    view = render_within(template_family, messages, 50)
    assert len(view.ids) > 50
    assert messages[-1]["content"] in view.text  # the last message is never dropped
    assert any("over the budget of 50" in w for w in view.warnings)


def test_qwen_keeps_make_context_rule_within_the_budget(qwen_family):
    messages = conversation(6)
    full = qwen_family.render(messages)
    budget = len(full.ids) - 60
    view = render_within(qwen_family, messages, budget)
    assert len(view.ids) <= budget
    assert view.dropped and all("max_window_size" in d.reason for d in view.dropped)
    # make_context drops whole rounds from the oldest: what is kept is the family's render of the rest.
    first_kept = 1 + len(view.dropped)
    assert view.ids == qwen_family.render([messages[0]] + messages[first_kept:]).ids
    assert qwen_family.max_window_size == 6144  # narrowing works on a copy


def test_baichuan_is_build_chat_input_with_a_smaller_model_max_length(baichuan_family, tmp_path):
    messages = conversation(6)
    full = baichuan_family.render(messages, max_new_tokens=64)
    budget = len(full.ids) - 25
    view = render_within(baichuan_family, messages, budget, max_new_tokens=64)
    assert len(view.ids) <= budget
    assert view.dropped
    # The same checkpoint configured with model_max_length = budget + max_new_tokens builds this prompt.
    smaller = Baichuan2Family.from_dir(make_baichuan2_dir(tmp_path / "small", model_max_length=budget + 64))
    assert view.ids == smaller.render(messages, max_new_tokens=64).ids
    assert baichuan_family.model_max_length == 4096  # narrowing works on a copy


def test_chatglm3_drops_whole_messages(chatglm_family):
    messages = conversation(5)
    full = chatglm_family.render(messages)
    view = render_within(chatglm_family, messages, len(full.ids) - 30)
    assert len(view.ids) <= len(full.ids) - 30
    assert [d.index for d in view.dropped][:2] == [1, 2]
    assert view.ids[:2] == full.ids[:2]  # [gMASK] sop stay


def test_a_budget_travels_to_the_model(tiny_handle):
    messages = conversation(4)
    params = SamplingParams(temperature=0, max_new_tokens=4, max_prompt_tokens=120)
    generation = tiny_handle.stream(messages, params)
    done = list(generation)[-1]
    view = generation.view
    assert len(view.ids) <= 120 and view.dropped
    assert done.stop_reason in ("eos", "length")
    assert done.captured_ids == view.ids  # the model received the truncated prompt
    assert tiny_handle.render(messages, max_new_tokens=4, max_prompt_tokens=120).ids == view.ids


def test_prompt_budget_is_the_longest_prompt_that_fits(tiny_handle):
    room = 4 * 2**20
    devices = [DeviceMemory("cpu", room, 8 * 2**30)]
    budget = prompt_budget(tiny_handle, 64, devices=devices)
    assert budget and budget > 0
    assert check_turn(tiny_handle, budget, 64, devices=devices).level == "ok"
    assert turn_needs(tiny_handle, budget + 1, 64) > room * 0.85
    assert prompt_budget(tiny_handle, 64, devices=[DeviceMemory("cpu", 1000, 2**30)]) == 0


def test_max_memory_cap_counts_the_weights(tiny_model_dir, monkeypatch):
    from backends.generation.open import open_model

    monkeypatch.setenv("LLM_TUI_MEMORY_CHECK", "warn")  # the cap is far below what a 2k context needs
    plain = open_model(ModelSpec(source=str(tiny_model_dir)))
    weights = weights_on(plain.model, "cpu")
    assert weights == sum(p.nbytes for p in plain.model.parameters()) + sum(b.nbytes for b in plain.model.buffers())
    cap = weights + turn_needs(plain, 150, 16)
    handle = open_model(ModelSpec(source=str(tiny_model_dir), max_memory=f"cpu={cap}"))
    (device,) = turn_devices(handle)
    assert device.limit == cap - weights and device.usable == cap - weights

    messages = conversation(6)
    params = SamplingParams(max_new_tokens=16)
    fit = plan_turn(handle, messages, params)
    assert not fit.fits and "under --max-memory" in fit.verdict.message
    assert fit.can_truncate and 0 < fit.budget < 150
    assert len(fit.cut.ids) <= fit.budget and fit.cut.dropped
    after = plan_turn(handle, messages, SamplingParams(max_new_tokens=16, max_prompt_tokens=fit.budget))
    assert after.fits and after.prompt_tokens == len(fit.cut.ids)

    monkeypatch.setenv("LLM_TUI_MEMORY_CHECK", "off")
    assert plan_turn(handle, messages, params).fits  # the check is skipped


def test_max_prompt_tokens_is_a_parameter():
    params = SamplingParams().with_value("max_prompt_tokens", "2048")
    assert params.max_prompt_tokens == 2048
    assert params.with_value("max_prompt_tokens", "off").max_prompt_tokens is None
    from backends.core.errors import UsageError

    with pytest.raises(UsageError):
        params.with_value("max_prompt_tokens", "0")
