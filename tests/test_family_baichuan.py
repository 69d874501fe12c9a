"""Baichuan2 build_chat_input over a small SentencePiece model laid out like Baichuan2's."""

from __future__ import annotations

import pytest

from backends.core.errors import ModelLoadError, UsageError
from backends.prompt.families.baichuan import Baichuan2Family
from backends.prompt.families.base import PromptFamily
from backends.prompt.view import Dropped, Span

try:
    from fixtures_families import MARKER, make_baichuan2_dir, write_json
except ImportError:  # tests collected as a package
    from tests.fixtures_families import MARKER, make_baichuan2_dir, write_json

USER, ASSISTANT, EOS = 195, 196, 2


@pytest.fixture(scope="module")
def bc_dir(tmp_path_factory):
    return make_baichuan2_dir(tmp_path_factory.mktemp("baichuan2-7b-chat"))


@pytest.fixture(scope="module")
def family(bc_dir) -> Baichuan2Family:
    return Baichuan2Family.from_dir(bc_dir)


@pytest.fixture(scope="module")
def sp(family):
    return family.vocab.sp


def conversation(system: str | None, rounds: list[tuple[str, str]], query: str | None) -> list[dict]:
    messages = [{"role": "system", "content": system}] if system is not None else []
    for q, r in rounds:
        messages += [{"role": "user", "content": q}, {"role": "assistant", "content": r}]
    if query is not None:
        messages.append({"role": "user", "content": query})
    return messages


def test_special_token_layout(family, sp):
    assert sp.id_to_piece(USER) == "<reserved_106>"
    assert sp.id_to_piece(ASSISTANT) == "<reserved_107>"
    assert (family.user_token_id, family.assistant_token_id) == (USER, ASSISTANT)
    assert family.stop_ids() == [EOS]
    assert (family.model_max_length, family.default_max_new_tokens) == (4096, 2048)
    assert not family.tokenizer.add_bos and not family.tokenizer.add_eos
    assert isinstance(family, PromptFamily)


def test_golden_prompt(family, sp):
    messages = conversation("be helpful", [("你好", "hello world 😀")], "the quick brown fox")
    view = family.render(messages)
    assert view.family == "baichuan2"
    assert view.ids == (sp.encode("be helpful") + [USER] + sp.encode("你好") + [ASSISTANT]
                        + sp.encode("hello world 😀") + [USER] + sp.encode("the quick brown fox") + [ASSISTANT])
    assert EOS not in view.ids
    assert view.text == ("be helpful<reserved_106>你好<reserved_107>hello world 😀"
                         "<reserved_106>the quick brown fox<reserved_107>")
    assert [s.index for s in view.spans] == [0, 1, 2, 3, -1]
    assert view.spans[-1] == Span(-1, "generation", len(view.ids) - 1, len(view.ids))
    assert [view.pieces[s.start] for s in view.spans[1:]] == ["<reserved_106>", "<reserved_107>",
                                                              "<reserved_106>", "<reserved_107>"]
    assert [view.special[s.start] for s in view.spans[1:]] == [True] * 4
    assert view.dropped == [] and view.warnings == []
    assert view.max_context == 4096
    raw = b"".join(family.vocab.token_bytes(i) for i in view.ids if not family.is_special(i))
    assert raw.decode("utf-8") == "be helpful你好hello world 😀the quick brown fox"


def test_assistant_last_gets_no_trailing_assistant_token(family):
    messages = conversation(None, [("hi", "hello")], None)
    view = family.render(messages)
    assert view.ids[-1] != ASSISTANT
    assert view.spans[-1].role == "assistant"
    view = family.render(conversation(None, [], "hi"), add_generation_prompt=False)
    assert view.ids[-1] != ASSISTANT


def sizes(family, system, rounds, query):
    full = family.render(conversation(system, rounds, query), max_new_tokens=1)
    by_index = {s.index: s.end - s.start for s in full.spans}
    return full, by_index


def test_budget_exact_fit_cuts_one_system_token(family, bc_dir, tmp_path):
    system, rounds, query = "be helpful", [("first question", "first answer")], "second question"
    full, n = sizes(family, system, rounds, query)
    s_len, r1, r2 = n[0], n[1] + n[2], n[3]
    # history budget = model_max_length - max_new_tokens - len(system) == r1 + r2: both rounds kept,
    # then the trailing assistant id makes the prompt one over and the slice cuts the first system token.
    fam = Baichuan2Family(family.tokenizer, model_max_length=s_len + r1 + r2 + 100)
    view = fam.render(conversation(system, rounds, query), max_new_tokens=100)
    assert view.ids == full.ids[1:]
    assert view.dropped == [Dropped(0, "system", 1, partial=True, reason=f"prompt cut to its last {s_len + r1 + r2}"
                                    " tokens")]
    assert view.spans[0] == Span(0, "system", 0, s_len - 1)
    assert view.text.startswith(family._text_of(full.ids[1:s_len]))


def test_budget_one_over_drops_the_older_round(family):
    system, rounds, query = "be helpful", [("first question", "first answer")], "second question"
    full, n = sizes(family, system, rounds, query)
    s_len, r1, r2 = n[0], n[1] + n[2], n[3]
    fam = Baichuan2Family(family.tokenizer, model_max_length=s_len + r1 + r2 - 1 + 100)
    view = fam.render(conversation(system, rounds, query), max_new_tokens=100)
    budget = s_len + r1 + r2 - 1
    reason = f"history over model_max_length - max_new_tokens = {budget}"
    assert view.dropped == [Dropped(1, "user", n[1], reason=reason), Dropped(2, "assistant", n[2], reason=reason)]
    assert [s.index for s in view.spans] == [0, 3, -1]
    assert len(view.ids) == s_len + r2 + 1 <= budget


def test_rounds_within_budget_with_room_to_spare(family):
    system, rounds, query = "be helpful", [("first question", "first answer")], "second question"
    full, n = sizes(family, system, rounds, query)
    fam = Baichuan2Family(family.tokenizer, model_max_length=len(full.ids) + 100)
    view = fam.render(conversation(system, rounds, query), max_new_tokens=100)
    assert view.ids == full.ids and view.dropped == []


def test_newest_round_always_kept_then_cut_into(family):
    system, query = "be helpful", "hello world " * 20
    full, n = sizes(family, system, [("a", "b")], query)
    budget = n[3] - 5
    fam = Baichuan2Family(family.tokenizer, model_max_length=budget + 10)
    view = fam.render(conversation(system, [("a", "b")], query), max_new_tokens=10)
    assert len(view.ids) == budget
    assert view.ids[-1] == ASSISTANT
    reason = f"prompt cut to its last {budget} tokens"
    older = f"history over model_max_length - max_new_tokens = {budget}"
    assert view.dropped == [Dropped(1, "user", n[1], reason=older), Dropped(2, "assistant", n[2], reason=older),
                            Dropped(0, "system", n[0], reason=reason),
                            Dropped(3, "user", 6, partial=True, reason=reason)]
    assert view.spans[0] == Span(3, "user", 0, budget - 1)


def test_max_new_tokens_sets_the_budget(family):
    messages = conversation("sys", [("hello world " * 10, "the quick brown fox " * 10)], "hi")
    full = family.render(messages)
    assert full.dropped == []
    tight = family.render(messages, max_new_tokens=4096 - 8)
    assert len(tight.ids) <= 8
    assert [d.index for d in tight.dropped] == [1, 2]
    assert [s.index for s in tight.spans] == [0, 3, -1]


def test_no_room_for_the_prompt_warns(family):
    view = family.render(conversation(None, [], "hi"), max_new_tokens=4096)
    assert any("leaves no room" in w for w in view.warnings)


def test_typed_eos_becomes_special_like_the_slow_tokenizer(family, sp):
    view = family.render(conversation(None, [], "hi </s> there"))
    assert EOS in view.ids
    assert any("</s>" in w for w in view.warnings)
    glued = family.render(conversation(None, [], "hi</s>there"))
    assert EOS not in glued.ids
    assert glued.ids[1:-1] == sp.encode("hi</s>") + sp.encode("there")


def test_bos_per_part_when_add_bos_token_is_on(tmp_path, sp):
    fam = Baichuan2Family.from_dir(make_baichuan2_dir(tmp_path / "bos", add_bos_token=True))
    view = fam.render(conversation("sys", [], "hi"))
    assert view.ids == [1] + sp.encode("sys") + [USER, 1] + sp.encode("hi") + [ASSISTANT]
    assert view.text == "<s>sys<reserved_106><s>hi<reserved_107>"
    assert any("add_bos_token" in w for w in view.warnings)


def test_decode_skips_role_and_control_tokens(family, sp):
    assert family.decode([USER] + sp.encode("你好 世界") + [ASSISTANT, EOS]) == "你好 世界"


def test_system_must_come_first(family):
    with pytest.raises(UsageError):
        family.render([{"role": "user", "content": "a"}, {"role": "system", "content": "b"}])


def test_role_ids_come_from_generation_config(bc_dir, tmp_path):
    d = make_baichuan2_dir(tmp_path / "ids")
    write_json(d / "generation_config.json", {"user_token_id": 3, "assistant_token_id": 4, "eos_token_id": 2})
    fam = Baichuan2Family.from_dir(d)
    assert fam.render(conversation(None, [], "hi")).ids[0] == 3
    write_json(d / "generation_config.json", {})
    fam = Baichuan2Family.from_dir(d)
    view = fam.render(conversation(None, [], "hi"))
    assert view.ids[0] == USER
    assert any("user_token_id" in w for w in view.warnings)


def test_from_dir_runs_no_code_and_needs_tokenizer_model(bc_dir, tmp_path):
    Baichuan2Family.from_dir(bc_dir)
    assert not (bc_dir / MARKER).exists()
    with pytest.raises(ModelLoadError, match="tokenizer.model"):
        Baichuan2Family.from_dir(tmp_path)
