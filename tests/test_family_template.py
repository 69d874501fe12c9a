"""The chat-template family with the real SmolLM2 tokenizer."""

from __future__ import annotations

import pytest

from backends.core.errors import UsageError


@pytest.fixture(scope="module")
def family(demo_dir):
    from backends.core.spec import ModelSpec
    from backends.prompt.family_for import open_family

    return open_family(ModelSpec())[0]


def test_template_default_system_prompt_is_not_counted_as_the_users(family):
    view = family.render([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"},
                          {"role": "user", "content": "Q"}])
    first = view.spans[0]
    assert (first.index, first.role) == (-1, "template default")
    assert "SmolLM" in "".join(view.pieces[first.start:first.end])
    user = view.spans[1]
    assert (user.index, user.role) == (0, "user")
    assert "".join(view.pieces[user.start:user.end]) == "<|im_start|>user\nHi<|im_end|>\n"
    assert view.spans[-1].role == "generation"
    assert "".join(view.pieces[view.spans[-1].start:]) == "<|im_start|>assistant\n"
    # spans tile the whole prompt with no gap
    assert [s.start for s in view.spans[1:]] == [s.end for s in view.spans[:-1]]
    assert view.spans[-1].end == len(view.ids)


def test_explicit_system_message_has_its_own_span(family):
    view = family.render([{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}])
    assert [(s.index, s.role) for s in view.spans] == [(0, "system"), (1, "user"), (-1, "generation")]


def test_pieces_are_byte_exact_and_specials_flagged(family):
    import re

    view = family.render([{"role": "user", "content": "naïve 😀 <|im_start|>"}])
    # a character split across tokens shows as its bytes, <0xF0><0x9F>…, one piece per token
    assert any(p.startswith("<0x") for p in view.pieces)
    joined = "".join(view.pieces).encode()
    raw = re.sub(rb"<0x([0-9A-F]{2})>", lambda m: bytes([int(m.group(1), 16)]), joined)
    assert raw.decode("utf-8") == view.text
    flagged = {p for p, s in zip(view.pieces, view.special) if s}
    assert flagged == {"<|im_start|>", "<|im_end|>"}
    # what the user typed became a control token: the view says so
    assert view.ids.count(1) == 4  # system, user, the typed one, assistant
    assert any("#0 (user) contains <|im_start|> as text" in w for w in view.warnings)


def test_preview_of_a_growing_draft_reuses_earlier_renders(family):
    history = []
    for i in range(30):
        history += [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]
    first = family.render(history + [{"role": "user", "content": "dra"}])
    second = family.render(history + [{"role": "user", "content": "draft"}])
    assert first.spans[:-2] == second.spans[:-2]
    assert second.text.endswith("draft<|im_end|>\n<|im_start|>assistant\n")


def test_a_conversation_the_template_rejects_is_one_clear_error(tmp_path, tiny_model_dir):
    import shutil

    from backends.prompt.families.detect import family_for_dir

    strict = tmp_path / "strict"
    shutil.copytree(tiny_model_dir, strict, ignore=shutil.ignore_patterns("*.safetensors"))
    (strict / "chat_template.jinja").write_text(
        "{% for m in messages %}{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('roles must alternate user/assistant') }}{% endif %}"
        "{{ m['role'] + ': ' + m['content'] + '\\n' }}{% endfor %}")
    family = family_for_dir(strict)
    with pytest.raises(UsageError, match="rejects this conversation.*alternate"):
        family.render([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])


def test_missing_generation_prompt_and_stop_token_warnings(tmp_path, tiny_model_dir):
    import json
    import shutil

    from backends.prompt.families.detect import family_for_dir

    odd = tmp_path / "odd"
    shutil.copytree(tiny_model_dir, odd, ignore=shutil.ignore_patterns("*.safetensors"))
    (odd / "chat_template.jinja").write_text(
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|endoftext|>' }}{% endfor %}")
    config = json.loads((odd / "generation_config.json").read_text())
    config["eos_token_id"] = 2
    (odd / "generation_config.json").write_text(json.dumps(config))
    view = family_for_dir(odd).render([{"role": "user", "content": "hi"}])
    assert any("no generation prompt" in w for w in view.warnings)
    assert any("<|endoftext|>" in w and "stop set" in w for w in view.warnings)
