"""Each generated token's probability and alternatives, how the model reads a prompt, and going on
from an alternative token, checked against direct computations on the same models."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from backends.core.errors import UsageError
from backends.core.events import DoneEvent, TokenEvent
from backends.core.params import SamplingParams
from backends.core.spec import ModelSpec
from backends.generation.branch import branch_prefix
from backends.generation.open import open_model
from backends.storage.tokens import StoredToken, decode_tokens, encode_tokens

ROOT = Path(__file__).resolve().parent.parent
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def stream(handle, params: SamplingParams, **kw) -> tuple[list[TokenEvent], DoneEvent]:
    events = list(handle.stream(QUESTION, params, **kw))
    return events[:-1], events[-1]


@pytest.fixture(scope="module", params=["generate", "loop"])
def engine_handle(request, tiny_model_dir):
    return open_model(ModelSpec(source=str(tiny_model_dir), engine=request.param))


def test_greedy_tokens_are_their_own_top_alternative(engine_handle):
    tokens, done = stream(engine_handle, SamplingParams(temperature=0, max_new_tokens=12, top_logprobs=5))
    assert tokens and all(t.info is not None for t in tokens)
    for token in tokens:
        info = token.info
        assert token.id == info.top[0].id and info.rank == 1
        assert info.logprob == pytest.approx(info.top[0].logprob, abs=1e-6)
        values = [a.logprob for a in info.top]
        assert values == sorted(values, reverse=True) and len(values) == 5
        assert sum(math.exp(v) for v in values) <= 1 + 1e-6
        assert info.sampled_logprob == pytest.approx(info.logprob, abs=1e-5)  # greedy: nothing was processed
        assert info.entropy >= 0


def direct_first_token(handle, temperature: float, top_k: int, top_p: float):
    """The first token's raw and processed log-softmax, computed here with plain transformers."""
    import torch
    from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    ids = torch.tensor([handle.render(QUESTION).ids])
    with torch.inference_mode():
        logits = handle.model(input_ids=ids).logits[0, -1].float()
    processors = LogitsProcessorList([TemperatureLogitsWarper(temperature), TopKLogitsWarper(top_k),
                                      TopPLogitsWarper(top_p)])
    processed = processors(ids, logits.unsqueeze(0))[0]
    return torch.log_softmax(logits, -1), torch.log_softmax(processed, -1)


def test_sampled_logprob_is_what_the_processors_make_of_the_logits(engine_handle):
    params = SamplingParams(temperature=0.7, top_k=50, top_p=0.9, max_new_tokens=1, seed=3, top_logprobs=3)
    tokens, _ = stream(engine_handle, params)
    first = tokens[0]
    raw, processed = direct_first_token(engine_handle, 0.7, 50, 0.9)
    assert first.info.logprob == pytest.approx(raw[first.id].item(), abs=1e-4)
    assert first.info.sampled_logprob == pytest.approx(processed[first.id].item(), abs=1e-4)
    assert first.info.sampled_logprob > first.info.logprob  # a sharper, narrower distribution
    assert first.info.rank == int((raw > raw[first.id]).sum()) + 1


def test_the_first_logprob_is_the_log_softmax_of_the_models_logits(demo_handle):
    import torch

    tokens, _ = stream(demo_handle, SamplingParams(temperature=0, max_new_tokens=1, top_logprobs=5))
    ids = torch.tensor([demo_handle.render(QUESTION).ids])
    with torch.inference_mode():
        reference = torch.log_softmax(demo_handle.model(input_ids=ids).logits[0, -1].float(), -1)
    assert tokens[0].info.logprob == pytest.approx(reference[tokens[0].id].item(), abs=1e-4)
    top = torch.topk(reference, 5)
    assert [a.id for a in tokens[0].info.top] == top.indices.tolist()


def test_no_alternatives_are_computed_when_none_are_asked_for(engine_handle):
    tokens, _ = stream(engine_handle, SamplingParams(temperature=0, max_new_tokens=4, top_logprobs=0))
    assert tokens and all(t.info is None for t in tokens)


def test_a_branch_goes_on_from_the_exact_ids(demo_handle):
    tokens, _ = stream(demo_handle, SamplingParams(temperature=0, max_new_tokens=10, top_logprobs=5))
    alternative = tokens[2].info.top[1]  # "2" on the third token
    prefix = branch_prefix(tokens, 2, 2)
    generation = demo_handle.stream(QUESTION, SamplingParams(temperature=0, max_new_tokens=10, top_logprobs=5),
                                    prefix=prefix)
    events = list(generation)
    branch, done = events[:-1], events[-1]
    assert [t.id for t in branch[:3]] == [tokens[0].id, tokens[1].id, alternative.id]
    assert done.captured_ids == generation.view.ids  # the continued prompt, checked like any other
    assert generation.view.ids[-3:] == [tokens[0].id, tokens[1].id, alternative.id]
    assert done.text.startswith(tokens[0].text + tokens[1].text) and done.stats.new_tokens <= 10
    taken = branch[2].info  # the model's figures for that position: its second choice, not a sure one
    assert taken.rank == 2 and taken.logprob == alternative.logprob and taken.top == tokens[2].info.top
    with pytest.raises(UsageError, match="already there"):
        branch_prefix(tokens, 2, 1)
    with pytest.raises(UsageError, match="no alternative 9"):
        branch_prefix(tokens, 2, 9)


def test_prompt_scores_are_the_models_next_token_logprobs(demo_handle):
    import torch

    view = demo_handle.render(QUESTION)
    score = demo_handle.score(view.ids)
    ids = torch.tensor([view.ids])
    with torch.inference_mode():
        logprobs = torch.log_softmax(demo_handle.model(input_ids=ids).logits[0].float(), -1)
    expected = [logprobs[i - 1, view.ids[i]].item() for i in range(1, len(view.ids))]
    assert score.logprobs[0] is None and len(score.logprobs) == len(view.ids)
    assert score.logprobs[1:] == pytest.approx(expected, abs=1e-4)
    worst = score.least_expected(3)
    assert [v for _, v in worst] == sorted(v for _, v in worst) and worst[0][1] == min(expected)


def test_tokens_are_stored_compactly_and_come_back(engine_handle):
    tokens, _ = stream(engine_handle, SamplingParams(temperature=0, max_new_tokens=40, top_logprobs=5))
    stored = [StoredToken(t.id, t.text, t.info) for t in tokens]
    blob = encode_tokens(stored)
    back = decode_tokens(blob)
    assert [(t.id, t.text) for t in back] == [(t.id, t.text) for t in tokens]
    assert [a.id for a in back[3].info.top] == [a.id for a in tokens[3].info.top]
    for old, new in zip(tokens, back):  # kept to half a thousandth of a nat
        assert new.info.logprob == pytest.approx(old.info.logprob, abs=5e-4)
        assert [a.logprob for a in new.info.top] == pytest.approx([a.logprob for a in old.info.top], abs=5e-4)
        assert new.info.rank == old.info.rank and new.info.entropy == pytest.approx(old.info.entropy, abs=5e-4)
    assert len(blob) / len(tokens) < 55  # bytes per token with five alternatives (see the note in storage.tokens)


def test_tokens_stored_in_the_first_layout_still_read():
    import json
    import zlib

    document = {"v": 1, "pieces": [" Paris", " Lyon"],
                "tokens": [[3575, " Paris", -0.25, -0.25, 1, 1.5, [[3575, 0, -0.25], [9, 1, -1.75]]], [2, "."]]}
    back = decode_tokens(zlib.compress(json.dumps(document).encode()))
    assert [(t.id, t.text) for t in back] == [(3575, " Paris"), (2, ".")]
    assert back[0].info.top[1].piece == " Lyon" and back[0].info.rank == 1 and back[1].info is None


def test_run_and_inspect_json_carry_the_figures(tiny_model_dir, tmp_path):
    run = subprocess.run([sys.executable, "-m", "tui.cli", "run", str(tiny_model_dir), "-p", "hi", "--temperature",
                          "0", "--max-new-tokens", "3", "--json", "--top-logprobs", "2"], capture_output=True,
                         text=True, cwd=ROOT, timeout=120)
    assert run.returncode == 0, run.stderr
    token = json.loads(run.stdout.splitlines()[0])
    assert set(token) >= {"id", "text", "logprob", "sampled_logprob", "rank", "entropy", "top"}
    assert len(token["top"]) == 2 and token["top"][0]["id"] == token["id"]
    plain = subprocess.run([sys.executable, "-m", "tui.cli", "run", str(tiny_model_dir), "-p", "hi", "--max-new-tokens",
                            "2", "--json"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert "logprob" not in plain.stdout.splitlines()[0]  # nothing computed unless asked for
    messages = tmp_path / "m.json"
    messages.write_text(json.dumps(QUESTION))
    inspect = subprocess.run([sys.executable, "-m", "tui.cli", "inspect", str(tiny_model_dir), "--messages",
                              str(messages), "--score", "--json"], capture_output=True, text=True, cwd=ROOT,
                             timeout=120)
    assert inspect.returncode == 0, inspect.stderr
    data = json.loads(inspect.stdout)
    assert len(data["logprobs"]) == len(data["ids"]) and data["logprobs"][0] is None
    assert data["score"]["least_expected"][0]["logprob"] == min(v for v in data["logprobs"] if v is not None)


def test_a_sampled_logprob_is_kept_apart_from_the_models():
    from backends.core.events import Alternative, TokenInfo

    top = (Alternative(5, "a", -0.5),)
    tokens = [StoredToken(5, "a", TokenInfo(-0.5, -0.001, 1, 0.7, top)),  # sampled after a warper
              StoredToken(5, "a", TokenInfo(-0.5, -0.5, 1, 0.7, top)),    # nothing changed the logits
              StoredToken(5, "a", TokenInfo(-0.5, None, 1, 0.7, top))]    # the engine cannot tell
    assert [t.info.sampled_logprob for t in decode_tokens(encode_tokens(tokens))] == [-0.001, -0.5, None]
