"""Compare (issue 18): teacher-forced divergence between real models, checked against direct computations.

Every figure the backend gives is recomputed here from the models' own logits
on the same IDs, in one plain forward over the whole sequence (no cache, no
chunks): KL(P_ref ‖ P_other) = Σ p·(log p − log q), the likeliest tokens, each
model's log-probability of the reply's tokens.
"""

from __future__ import annotations

import json
import shutil
import threading

import pytest

from backends.core.errors import UsageError
from backends.core.params import SamplingParams
from backends.core.spec import ModelSpec
from backends.generation.compare.figures import PairFigures
from backends.generation.compare.pairs import Reading, check_comparable, compare_reply
from backends.generation.compare.replies import generate_replies, schedule
from backends.generation.compare.turn import compare_turn
from backends.generation.compare.words import word_diff
from backends.generation.open import open_model

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
GREEDY = SamplingParams(temperature=0, max_new_tokens=10, top_logprobs=0)
REPLY_TEXT = "The capital of France is Paris, a city on the Seine."


def hand_figures(reference, other, reply_ids: list[int]) -> dict[str, list]:
    """The figures of ``reply_ids`` read by two models, straight from their logits.

    ``reference`` and ``other`` are (handle, prompt IDs) pairs; each model reads its own prompt and
    then the reply, in one forward call."""
    import torch

    def logprobs(handle, prompt_ids):
        ids = torch.tensor([[*prompt_ids, *reply_ids[:-1]]])  # the reply's last token predicts nothing compared
        with torch.inference_mode():
            logits = handle.model(ids).logits[0].double()
        first = len(prompt_ids) - 1  # the prompt's last position predicts the reply's first token
        return torch.log_softmax(logits[first:], dim=-1)

    log_p, log_q = logprobs(*reference), logprobs(*other)
    p = log_p.exp()
    targets = torch.tensor(reply_ids).unsqueeze(1)
    top = log_q.topk(3, dim=-1)
    return {"kl": (p * (log_p - log_q)).sum(dim=-1).tolist(),
            "top_other": [list(zip(i, v)) for i, v in zip(top.indices.tolist(), top.values.tolist())],
            "top1_agree": (log_p.argmax(-1) == log_q.argmax(-1)).tolist(),
            "logprob_ref": log_p.gather(1, targets).squeeze(1).tolist(),
            "logprob_other": log_q.gather(1, targets).squeeze(1).tolist()}


def assert_close(found: list[float], expected: list[float], tolerance: float) -> None:
    assert len(found) == len(expected)
    worst = max(abs(a - b) for a, b in zip(found, expected))
    assert worst <= tolerance, (worst, found, expected)


def encode(handle, text: str) -> list[int]:
    return handle.tokenizer.encode(text, add_special_tokens=False)


@pytest.fixture(scope="module")
def tiny_twin(tiny_model_dir):
    """A second load of the tiny model: the same weights, its own forward passes."""
    return open_model(ModelSpec(source=str(tiny_model_dir)))


@pytest.fixture(scope="module")
def other_seed_dir(demo_dir, tmp_path_factory):
    """The tiny model's architecture and tokenizer with other random weights: one vocabulary, other opinions."""
    from conftest import build_tiny_model

    return build_tiny_model(demo_dir, tmp_path_factory.mktemp("tiny-seed-1"), seed=1)


@pytest.fixture(scope="module")
def demo_nf4(demo_dir):
    """The default model quantized on load by bitsandbytes (nf4), on the CPU.

    bitsandbytes' CPU nf4 kernel computes in bf16 and rounds differently for a call of a dozen tokens
    or fewer (logits move by up to ~0.7 against one call over the whole sequence). Without a prompt
    cache a short conversation is read in one forward over prompt + reply, the very call the hand
    computation makes, so the two see the same logits; with the cache, the reading is a call over
    the reply alone."""
    return open_model(ModelSpec(quant="nf4", prompt_cache=False))


@pytest.fixture(scope="module")
def tinyqwen_dir(tmp_path_factory):
    from remote_standins import make_tinyqwen_dir

    return make_tinyqwen_dir(tmp_path_factory.mktemp("tinyqwen-compare"))


# -- a model against itself ------------------------------------------------------------------------

def test_a_model_against_itself_gives_kl_zero_and_full_agreement(tiny_handle, tiny_twin):
    prompt = tiny_handle.render(QUESTION).ids
    reply = encode(tiny_handle, REPLY_TEXT)
    # Two loads of one checkpoint (two forwards), and one handle named twice (read once).
    twin, same = compare_reply(Reading(tiny_handle, prompt), [Reading(tiny_twin, prompt, 1),
                                                             Reading(tiny_handle, prompt, 2)], reply)
    for figures in (twin, same):
        assert figures.complete and len(figures.kl) == len(reply) > 5
        assert all(0 <= kl <= 1e-6 for kl in figures.kl)
        assert all(figures.top1_agree)
        assert_close(figures.logprob_other, figures.logprob_ref, 1e-6)
        summary = figures.summary()
        assert summary.top1_agreement == 1.0 and summary.first_difference is None
        assert summary.mean_kl <= 1e-6 and abs(summary.perplexity_ratio - 1) <= 1e-6
    assert (twin.reference, twin.other, same.other) == (0, 1, 2)


def test_a_generated_reply_against_the_same_model_through_the_whole_turn(tiny_handle, tiny_twin):
    runs = generate_replies([tiny_handle, tiny_twin], QUESTION, GREEDY)
    assert runs[0].reply_ids == runs[1].reply_ids and len(runs[0].reply_ids) == GREEDY.max_new_tokens
    (pair,) = compare_turn(runs)
    assert pair.note is None and pair.first_reply_difference is None and pair.words.similarity == 1.0
    assert all(kl <= 1e-6 for kl in pair.figures.kl) and all(pair.figures.top1_agree)
    # The reading leaves each prompt cache holding what the next turn starts from: the prompt and the
    # reply but its last token, as a turn leaves it.
    ids = [*runs[0].prompt_ids, *runs[0].reply_ids]
    assert tiny_twin.prompt_cache.ids == ids[:-1]


# -- fp32 against nf4: the figures are the hand computation's ---------------------------------------

def test_fp32_against_nf4_matches_the_hand_computation(demo_handle, demo_nf4):
    import bitsandbytes as bnb

    assert demo_nf4.info.quant == "nf4" and demo_nf4.info.device == "cpu"
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in demo_nf4.model.modules())  # nf4 really runs on the CPU
    runs = generate_replies([demo_handle, demo_nf4], QUESTION, GREEDY)
    assert all(run.done.stop_reason in ("eos", "length") for run in runs)
    (pair,) = compare_turn(runs)
    reply = runs[0].reply_ids
    expected = hand_figures((demo_handle, runs[0].prompt_ids), (demo_nf4, runs[1].prompt_ids), reply)
    figures = pair.figures
    assert figures.complete and figures.tokens == len(reply) > 3
    assert_close(figures.kl, expected["kl"], 1e-4)
    assert max(figures.kl) > 1e-4  # 4-bit weights do move the distribution: the check is not vacuous
    assert_close(figures.logprob_ref, expected["logprob_ref"], 1e-4)
    assert_close(figures.logprob_other, expected["logprob_other"], 1e-4)
    assert figures.top1_agree == expected["top1_agree"]
    summary = figures.summary()
    assert summary.top1_agreement == sum(expected["top1_agree"]) / len(reply)
    assert summary.max_kl == max(figures.kl) and figures.kl[summary.max_kl_position] == summary.max_kl
    assert summary.mean_kl == pytest.approx(sum(expected["kl"]) / len(reply), abs=1e-4)
    mean_diff = (sum(expected["logprob_other"]) - sum(expected["logprob_ref"])) / len(reply)
    assert summary.mean_logprob_diff == pytest.approx(mean_diff, abs=1e-4)


def test_top1_agreement_is_a_count_of_the_positions_where_the_likeliest_tokens_agree(demo_handle, demo_nf4):
    """A text neither model wrote, so their likeliest tokens part at some positions."""
    prompt = demo_handle.render(QUESTION).ids
    reply = encode(demo_handle, REPLY_TEXT + " It is known for its museums and its cafés.")
    (figures,) = compare_reply(Reading(demo_handle, prompt), [Reading(demo_nf4, prompt, 1)], reply)
    expected = hand_figures((demo_handle, prompt), (demo_nf4, prompt), reply)
    assert figures.top1_agree == expected["top1_agree"]
    agreeing = sum(expected["top1_agree"])
    assert 0 < agreeing < len(reply)  # 4-bit weights: they agree at most positions, not all
    summary = figures.summary()
    assert summary.top1_agreement == agreeing / len(reply)
    assert summary.first_difference == expected["top1_agree"].index(False)
    assert_close(figures.kl, expected["kl"], 1e-4)


def test_other_weights_give_a_positive_kl_at_every_token(tiny_handle, other_seed_dir):
    other = open_model(ModelSpec(source=str(other_seed_dir)))
    prompt = tiny_handle.render(QUESTION).ids
    reply = encode(tiny_handle, REPLY_TEXT)
    # Small chunks: the reading crosses several chunk boundaries, each carrying the cache.
    (figures,) = compare_reply(Reading(tiny_handle, prompt), [Reading(other, prompt, 1)], reply, chunk=4)
    expected = hand_figures((tiny_handle, prompt), (other, prompt), reply)
    assert_close(figures.kl, expected["kl"], 1e-6)
    assert all(kl > 1e-3 for kl in figures.kl)


def test_the_other_models_likeliest_tokens_and_each_reply_read_under_the_reference(tiny_handle, other_seed_dir):
    """The side-by-side token view's figures: at each token, the other model's top K (as by hand);
    and the other model's own reply read by it and by the reference, KL(P_other ‖ P_ref) per token."""
    from backends.generation.compare.turn import read_under_reference

    other = open_model(ModelSpec(source=str(other_seed_dir)))
    runs = generate_replies([tiny_handle, other], QUESTION, GREEDY)
    (pair,) = compare_turn(runs, top_k=3)
    expected = hand_figures((tiny_handle, runs[0].prompt_ids), (other, runs[0].prompt_ids), runs[0].reply_ids)
    assert [[i for i, _ in row] for row in pair.figures.top_other] == \
        [[i for i, _ in row] for row in expected["top_other"]]
    assert_close([v for row in pair.figures.top_other for _, v in row],
                 [v for row in expected["top_other"] for _, v in row], 1e-6)
    assert pair.to_json()["top_other"][0] == [[i, v] for i, v in pair.figures.top_other[0]]

    read = read_under_reference(runs, top_k=3)
    assert list(read) == [1]
    mirrored = hand_figures((other, runs[1].prompt_ids), (tiny_handle, runs[0].prompt_ids), runs[1].reply_ids)
    assert read[1].reference == 1 and read[1].other == 0 and read[1].tokens == len(runs[1].reply_ids)
    assert_close(read[1].kl, mirrored["kl"], 1e-6)
    assert [[i for i, _ in row] for row in read[1].top_other] == [[i for i, _ in row] for row in mirrored["top_other"]]


def test_each_model_reads_the_reply_after_its_own_prompt(tiny_handle, tiny_model_dir, tmp_path):
    """Another chat template over one vocabulary: other prompt IDs, the same reply IDs."""
    plain = shutil.copytree(tiny_model_dir, tmp_path / "plain-template")
    (plain / "chat_template.jinja").write_text(
        "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant:{% endif %}", encoding="utf-8")
    other = open_model(ModelSpec(source=str(plain)))
    runs = generate_replies([tiny_handle, other], QUESTION, GREEDY)
    assert runs[0].prompt_ids != runs[1].prompt_ids
    (pair,) = compare_turn(runs)
    expected = hand_figures((tiny_handle, runs[0].prompt_ids), (other, runs[1].prompt_ids), runs[0].reply_ids)
    assert_close(pair.figures.kl, expected["kl"], 1e-6)
    assert_close(pair.figures.logprob_other, expected["logprob_other"], 1e-6)
    assert max(pair.figures.kl) > 1e-3  # the same weights read another prompt: other distributions


def test_a_stopped_reading_gives_what_it_read(tiny_handle, tiny_twin):
    prompt = tiny_handle.render(QUESTION).ids
    stop = threading.Event()
    stop.set()
    (figures,) = compare_reply(Reading(tiny_handle, prompt), [Reading(tiny_twin, prompt, 1)],
                               encode(tiny_handle, REPLY_TEXT), stop)
    assert not figures.complete and figures.kl == [] and figures.summary().mean_kl is None


# -- what cannot be compared token by token ---------------------------------------------------------

def test_different_vocabularies_are_refused_with_one_line(tiny_handle, tinyqwen_dir):
    qwen = open_model(ModelSpec(source=str(tinyqwen_dir), trust_remote_code=True))
    with pytest.raises(UsageError) as refused:
        check_comparable(tiny_handle, qwen)
    line = str(refused.value)
    assert "\n" not in line and line.startswith("the vocabularies differ")
    assert "49,152" in line and "151,936" in line
    with pytest.raises(UsageError):
        compare_reply(Reading(tiny_handle, [1, 2]), [Reading(qwen, [1, 2], 1)], [3])
    # The turn still compares the replies as text.
    runs = generate_replies([tiny_handle, qwen], QUESTION, SamplingParams(temperature=0, max_new_tokens=4,
                                                                           top_logprobs=0))
    (pair,) = compare_turn(runs)
    assert pair.figures is None and pair.note == line
    assert pair.to_json()["word_diff"]["ops"] is not None and "kl" not in pair.to_json()
    # Two Qwen-vocabulary models whose family reads the vocabulary file itself (no tokenizer to list
    # it): compared by a sample of pieces over the whole ID range, and found to be one.
    check_comparable(qwen, open_model(ModelSpec(source=str(tinyqwen_dir), trust_remote_code=True)))


def test_a_model_without_full_logits_is_refused_with_what_to_do(tiny_handle, demo_dir):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    gguf = open_model(ModelSpec(engine="llamacpp"))
    assert not gguf.torch
    with pytest.raises(UsageError) as refused:
        check_comparable(tiny_handle, gguf)
    assert "\n" not in str(refused.value) and "--engine generate" in str(refused.value)


def test_other_weights_over_one_vocabulary_are_comparable(tiny_handle, other_seed_dir):
    check_comparable(tiny_handle, open_model(ModelSpec(source=str(other_seed_dir))))  # no error


# -- small pieces ----------------------------------------------------------------------------------

def test_word_diff_and_summary_on_known_values():
    diff = word_diff("The capital of France is Paris.", "The capital of France is Paris, the city of light.")
    assert diff.first_difference == 5 and 0 < diff.similarity < 1
    assert diff.inline() == "The capital of France is [-Paris.-] {+Paris, the city of light.+}"
    assert word_diff("same words", "same  words").first_difference is None
    figures = PairFigures(0, 1, 3, kl=[0.1, 0.4, 0.1], top1_agree=[True, False, True], top1_ref=[5, 6, 7],
                          top1_other=[5, 9, 7], logprob_ref=[-1.0, -2.0, -3.0], logprob_other=[-1.5, -2.5, -3.5])
    summary = figures.summary()
    assert (summary.max_kl, summary.max_kl_position, summary.first_difference) == (0.4, 1, 1)
    assert summary.mean_kl == pytest.approx(0.2) and summary.top1_agreement == pytest.approx(2 / 3)
    assert summary.mean_logprob_diff == pytest.approx(-0.5)
    assert summary.perplexity_ratio == pytest.approx(2.718281828 ** 0.5)


def test_models_on_one_device_take_turns(tiny_handle, tiny_twin):
    plan = schedule([tiny_handle, tiny_twin])
    assert not plan.together and plan.line == "the models share cpu: they answer one after another"


def test_model_arguments_with_a_quantization_or_dtype():
    from tui.compare_command import split_model_argument

    assert split_model_argument("/models/qwen@nf4") == ("/models/qwen", {"quant": "nf4"})
    assert split_model_argument("default@int8") == ("default", {"quant": "int8"})
    assert split_model_argument("DIR@bf16") == ("DIR", {"dtype": "bf16"})
    assert split_model_argument("http://user@host:8000/v1") == ("http://user@host:8000/v1", {})
    with pytest.raises(UsageError, match="unknown @q5"):
        split_model_argument("DIR@q5")


# -- the headless command -------------------------------------------------------------------------

def run_cli(capsys, *argv) -> tuple[int, str, str]:
    from tui.cli import main

    code = main(["compare", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and len(lines) == 1, err
    assert lines[0].startswith("llm-tui: error:")
    return lines[0]


def test_compare_json_end_to_end_matches_the_backend(capsys, tiny_model_dir, other_seed_dir):
    code, out, err = run_cli(capsys, str(tiny_model_dir), f"{tiny_model_dir}@bf16", str(other_seed_dir),
                             "-p", QUESTION[0]["content"], "--max-new-tokens", "6", "--json")
    assert code == 0, err
    assert "one after another" in err
    data = json.loads(out)
    assert data["reference"] == 0 and len(data["models"]) == 3 and len(data["pairs"]) == 2
    first, bf16, seeded = data["models"]
    assert bf16["label"].endswith("bf16") and bf16["dtype"] == "bfloat16" and bf16["spec"]["dtype"] == "bf16"
    for model in data["models"]:
        assert set(model) >= {"label", "spec", "text", "reply_ids", "prompt_ids", "stats", "stop_reason"}
        assert len(model["reply_ids"]) == model["stats"]["new_tokens"] == 6
    for pair, other in zip(data["pairs"], (bf16, seeded)):
        assert (pair["reference"], pair["other"]) == (0, other["index"])
        assert pair["tokens"] == 6 and pair["complete"]
        for name in ("kl", "top1_agree", "top1_ref", "top1_other", "logprob_ref", "logprob_other"):
            assert len(pair[name]) == 6
        assert set(pair["summary"]) >= {"mean_kl", "max_kl", "max_kl_position", "top1_agreement",
                                        "first_difference", "mean_logprob_diff", "perplexity_ratio"}
        assert "word_diff" in pair
    # The same figures from the backend, on fresh loads of the same models and the printed IDs.
    reference = open_model(ModelSpec(source=str(tiny_model_dir)))
    others = [open_model(ModelSpec(source=str(tiny_model_dir), dtype="bf16")),
              open_model(ModelSpec(source=str(other_seed_dir)))]
    found = compare_reply(Reading(reference, first["prompt_ids"]),
                          [Reading(h, m["prompt_ids"], i) for h, m, i in zip(others, (bf16, seeded), (1, 2))],
                          first["reply_ids"])
    for pair, figures in zip(data["pairs"], found):
        assert_close(pair["kl"], figures.kl, 1e-6)
        assert pair["top1_agree"] == figures.top1_agree
        assert pair["summary"]["top1_agreement"] == figures.summary().top1_agreement


def test_compare_text_prints_each_reply_and_the_divergence_table(capsys, tiny_model_dir, other_seed_dir):
    code, out, err = run_cli(capsys, str(tiny_model_dir), str(other_seed_dir), "-p", "Hi", "--max-new-tokens", "3")
    assert code == 0, err
    assert out.count("── ") == 2 and out.count("3 new tokens") == 2 and "stop: length" in out
    header = next(line for line in out.splitlines() if "mean KL" in line)
    for column in ("max KL @pos", "top-1 agree", "first diff", "Δ mean logprob", "ppl ratio", "tok/s", "weights"):
        assert column in header


def test_compare_json_with_another_vocabulary_gives_the_note_and_the_word_diff(capsys, tiny_model_dir,
                                                                               tinyqwen_dir):
    code, out, err = run_cli(capsys, str(tiny_model_dir), str(tinyqwen_dir), "--trust-remote-code",
                             "-p", "Hi", "--max-new-tokens", "3", "--json")
    assert code == 0, err
    (pair,) = json.loads(out)["pairs"]
    assert pair["note"].startswith("the vocabularies differ") and "kl" not in pair
    assert set(pair["word_diff"]) >= {"similarity", "ops", "first_difference"}


@pytest.mark.parametrize("argv, words", [
    (["only-one", "-p", "hi"], "compare takes 2 to 4 models, and 1 was given"),
    (["a", "b", "c", "d", "e", "-p", "hi"], "compare takes 2 to 4 models, and 5 were given"),
    (["default", "default@q5", "-p", "hi"], "unknown @q5 in 'default@q5'"),
])
def test_bad_model_arguments_are_one_usage_line(capsys, argv, words):
    code, _out, err = run_cli(capsys, *argv)
    assert code == 2
    assert words in error_line(err)


def test_a_model_that_does_not_load_is_named(capsys, tiny_model_dir, tmp_path):
    missing = tmp_path / "no-such-model"
    code, _out, err = run_cli(capsys, str(tiny_model_dir), str(missing), "-p", "hi")
    assert code in (1, 2)
    assert f"model 2 ({missing}) did not load" in error_line(err)
