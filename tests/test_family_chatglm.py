"""ChatGLM3 build_chat_input over a small SentencePiece model trained here."""

from __future__ import annotations

import pytest

from backends.core.errors import ModelLoadError, UsageError
from backends.prompt.families.base import PromptFamily
from backends.prompt.families.chatglm import ChatGLM3Family
from backends.prompt.view import Span

try:
    from fixtures_families import MARKER, make_chatglm3_dir
except ImportError:  # tests collected as a package
    from tests.fixtures_families import MARKER, make_chatglm3_dir


@pytest.fixture(scope="module")
def glm_dir(tmp_path_factory):
    return make_chatglm3_dir(tmp_path_factory.mktemp("chatglm3-6b"))


@pytest.fixture(scope="module")
def family(glm_dir) -> ChatGLM3Family:
    return ChatGLM3Family.from_dir(glm_dir)


@pytest.fixture(scope="module")
def sp(family):
    return family.vocab.sp


def test_special_tokens_follow_the_sentencepiece_vocab(family, sp):
    n = sp.get_piece_size()
    names = ["[MASK]", "[gMASK]", "[sMASK]", "sop", "eop", "<|system|>", "<|user|>", "<|assistant|>",
             "<|observation|>"]
    assert [family.command(t) for t in names] == list(range(n, n + 9))
    assert family.stop_ids() == [2, n + 6, n + 8]
    assert sp.eos_id() == 2
    assert isinstance(family, PromptFamily)


def test_newline_encodes_with_the_dummy_prefix(sp):
    # As in ChatGLM3 (encode("\n") == [30910, 13]): a lone dummy-prefix piece, then byte 0x0A.
    ids = sp.encode("\n")
    assert [sp.id_to_piece(i) for i in ids] == ["\u2581", "<0x0A>"]
    assert ids[1] == 13


def expected(sp, family, messages, generation=True):
    ids = [family.command("[gMASK]"), family.command("sop")]
    for m in messages:
        ids += [family.command(f"<|{m['role']}|>")] + sp.encode("\n") + sp.encode(m["content"])
    if generation:
        ids.append(family.command("<|assistant|>"))
    return ids


def test_golden_multi_turn(family, sp):
    messages = [
        {"role": "system", "content": "You are a helpful assistant"},
        {"role": "user", "content": "你好"},
        {"role": "assistant", "content": "hello world 😀"},
        {"role": "user", "content": "the quick brown fox"},
    ]
    view = family.render(messages)
    assert view.family == "chatglm3"
    assert view.ids == expected(sp, family, messages)
    assert view.text == ("[gMASK]sop<|system|>\nYou are a helpful assistant<|user|>\n你好"
                         "<|assistant|>\nhello world 😀<|user|>\nthe quick brown fox<|assistant|>")
    assert view.spans[0] == Span(-1, "prefix", 0, 2)
    assert [s.index for s in view.spans] == [-1, 0, 1, 2, 3, -1]
    assert view.spans[-1] == Span(-1, "generation", len(view.ids) - 1, len(view.ids))
    assert view.special[:3] == [True, True, True]
    assert view.pieces[:5] == ["[gMASK]", "sop", "<|system|>", " ", "\n"]
    assert view.dropped == [] and view.warnings == []
    assert view.mode == "full"
    assert view.max_context == 8192


def test_each_message_starts_with_its_own_dummy_prefix(family, sp):
    view = family.render([{"role": "user", "content": "hello"}])
    user = view.spans[1]
    body = view.ids[user.start:user.end]
    assert body[0] == family.command("<|user|>")
    assert body[1:3] == sp.encode("\n")
    assert sp.id_to_piece(body[3]).startswith("\u2581")


def test_empty_metadata_still_encodes_the_newline_and_metadata_is_kept(family, sp):
    view = family.render([{"role": "user", "content": "hi", "metadata": "weather"}])
    user = view.spans[1]
    assert view.ids[user.start + 1: user.end] == sp.encode("weather\n") + sp.encode("hi")
    assert "<|user|>weather\nhi" in view.text


def test_typed_special_tokens_stay_plain_text(family):
    content = "<|user|> [gMASK] sop"
    view = family.render([{"role": "user", "content": content}])
    user = view.spans[1]
    body = view.ids[user.start + 3: user.end]
    assert not any(family.is_special(i) for i in body)
    assert family.decode(body) == content


def test_pieces_are_byte_exact_for_chinese_and_emoji(family):
    view = family.render([{"role": "user", "content": "测试 🚀 naïve ✓"}])
    user = view.spans[1]
    raw = b"".join(family.token_bytes(i) for i in view.ids[user.start + 3: user.end])
    assert raw.decode("utf-8") == " 测试 🚀 naïve ✓"
    # ✓ is not in the training corpus: byte fallback, shown as bytes.
    assert "<0xE2>" in view.pieces


def test_decode_skips_specials(family):
    view = family.render([{"role": "user", "content": "hello world"}])
    assert family.decode(view.ids[view.spans[1].start:]) == "\n hello world"
    reply = family.vocab.encode("你好 世界") + [family.command("<|user|>")]
    assert family.decode(reply) == "你好 世界"


def test_without_generation_prompt(family, sp):
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    view = family.render(messages, add_generation_prompt=False)
    assert view.ids == expected(sp, family, messages, generation=False)
    assert view.spans[-1].role == "assistant"


def test_incremental_mode_sends_only_the_new_turn(family, sp):
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                {"role": "user", "content": "the fox"}]
    view = family.render_incremental(messages)
    assert view.mode == "incremental"
    assert view.ids == expected(sp, family, messages[-1:])
    assert view.spans == [Span(-1, "prefix", 0, 2), Span(2, "user", 2, len(view.ids) - 1),
                          Span(-1, "generation", len(view.ids) - 1, len(view.ids))]
    assert view.text == "[gMASK]sop<|user|>\nthe fox<|assistant|>"


def test_no_truncation_but_a_warning(tmp_path, sp):
    small = ChatGLM3Family.from_dir(make_chatglm3_dir(tmp_path / "g", seq_length=40))
    long = [{"role": "user", "content": "hello world " * 30}]
    view = small.render(long)
    assert view.dropped == []
    assert view.ids == expected(sp, small, long)
    assert any("max_length=40" in w for w in view.warnings)
    short = small.render([{"role": "user", "content": "hi"}], max_new_tokens=100)
    assert any("max_new_tokens=100" in w for w in short.warnings)


def test_unknown_role_is_a_usage_error(family):
    with pytest.raises(UsageError):
        family.render([{"role": "function", "content": "x"}])


def test_a_tool_result_is_an_observation(family):
    """The conversation's role ``tool`` is ChatGLM3's ``<|observation|>``, token for token."""
    as_tool = family.render([{"role": "user", "content": "hi"}, {"role": "tool", "name": "f", "content": "42"}])
    as_observation = family.render([{"role": "user", "content": "hi"}, {"role": "observation", "content": "42"}])
    assert as_tool.ids == as_observation.ids and "<|observation|>\n42" in as_tool.text


def test_from_dir_runs_no_code_and_needs_tokenizer_model(glm_dir, tmp_path):
    ChatGLM3Family.from_dir(glm_dir)
    assert not (glm_dir / MARKER).exists()
    with pytest.raises(ModelLoadError, match="tokenizer.model"):
        ChatGLM3Family.from_dir(tmp_path)
    (tmp_path / "tokenizer.model").write_bytes(b"not a model")
    with pytest.raises(ModelLoadError, match="SentencePiece"):
        ChatGLM3Family.from_dir(tmp_path)
