"""Incremental decoding with the real SmolLM2 tokenizer: multi-byte characters
split across byte-level tokens must come out whole."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backends.prompt.textstream import IncrementalDecoder


@pytest.fixture(scope="module")
def tokenizer(demo_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(demo_dir))


def _stream(tokenizer, ids):
    decoder = IncrementalDecoder(lambda part: tokenizer.decode(part, skip_special_tokens=True))
    deltas = [decoder.push(i) for i in ids]
    deltas.append(decoder.flush())
    return deltas, decoder


def test_chinese_and_emoji_split_across_tokens_come_out_whole(tokenizer):
    text = "你好，世界！今天天气很好。😀🎉👨‍👩‍👧 naïve café — 東京"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    single = [tokenizer.decode([i]) for i in ids]
    assert any("\ufffd" in s for s in single), "the test needs characters split across tokens"
    deltas, decoder = _stream(tokenizer, ids)
    assert all("\ufffd" not in d for d in deltas)
    assert "".join(deltas) == text
    assert decoder.text == text


def test_partial_character_waits_for_the_token_that_completes_it(tokenizer):
    ids = tokenizer("😀", add_special_tokens=False)["input_ids"]
    assert len(ids) >= 2
    decoder = IncrementalDecoder(lambda part: tokenizer.decode(part))
    assert [decoder.push(i) for i in ids[:-1]] == [""] * (len(ids) - 1)
    assert decoder.push(ids[-1]) == "😀"


def test_reply_cut_inside_a_character_ends_with_whole_characters(tokenizer):
    ids = tokenizer("ok 😀", add_special_tokens=False)["input_ids"]
    decoder = IncrementalDecoder(lambda part: tokenizer.decode(part))
    pushed = [decoder.push(i) for i in ids[:-1]]
    pushed.append(decoder.flush())
    assert "".join(pushed) == "ok " and decoder.text == "ok "


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cn", "Co")), max_size=40))
def test_deltas_always_join_to_the_full_decode(tokenizer, text):
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    deltas, _ = _stream(tokenizer, ids)
    # Whatever the vocabulary cannot represent, streaming must agree with a whole decode.
    assert "".join(deltas) == tokenizer.decode(ids, skip_special_tokens=True).rstrip("\ufffd")
