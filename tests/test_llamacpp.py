"""GGUF files run by llama.cpp in this process (the ``llamacpp`` extra): the default model's own GGUF,
its template and tokenizer, IDs in and out, stopping, and llama-cpp-python's own server.

llama-cpp-python has no wheel on PyPI for this platform (it builds from source
in about ten minutes), so these tests run where the extra is installed and
say so where it is not.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from backends.core.errors import UsageError
from backends.core.params import SamplingParams
from backends.core.spec import ModelSpec
from backends.generation.open import open_model

llama_cpp = pytest.importorskip(
    "llama_cpp", reason="llama-cpp-python is not installed: pip install 'llm-tui[llamacpp]' (a source build, "
    "~10 min; on CPUs with AMX use CMAKE_ARGS=\"-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_AVX512=ON\")")

ROOT = Path(__file__).resolve().parent.parent
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def gguf_handle(demo_dir):
    return open_model(ModelSpec())  # the default model: auto picks llama.cpp when it is installed


def test_the_default_model_runs_from_its_gguf_with_llamacpp_tokens(gguf_handle, demo_dir):
    from transformers import AutoTokenizer

    assert gguf_handle.family.name == "gguf (llama.cpp)" and gguf_handle.info.quant == "Q4_1"
    view = gguf_handle.render(QUESTION)
    tokenizer = AutoTokenizer.from_pretrained(str(demo_dir))
    text = tokenizer.apply_chat_template(QUESTION, tokenize=False, add_generation_prompt=True)
    assert view.text == text  # the GGUF's template rendered as transformers renders it
    assert view.ids == tokenizer(text, add_special_tokens=False)["input_ids"]  # and llama.cpp tokenizes alike
    assert view.special[0] and view.pieces[0] == "<|im_start|>" and [s.role for s in view.spans][-1] == "generation"

    events = list(gguf_handle.stream(QUESTION, SamplingParams(temperature=0, max_new_tokens=12)))
    done = events[-1]
    assert done.prompt_check == "ids" and done.captured_ids == view.ids  # read back from llama.cpp
    # The same IDs through llama.cpp's own generate() give the same tokens.
    reference = []
    for token in gguf_handle.model.generate(view.ids, temp=0.0):
        reference.append(token)
        if len(reference) == len(events) - 1:
            break
    assert [e.id for e in events[:-1]] == reference
    assert done.text == gguf_handle.model.detokenize(reference).decode("utf-8")


def test_llamacpp_token_figures_are_the_log_softmax_of_its_logits(gguf_handle):
    import numpy as np

    view = gguf_handle.render(QUESTION)
    events = list(gguf_handle.stream(QUESTION, SamplingParams(temperature=0, max_new_tokens=6, top_logprobs=5)))
    first = events[0].info
    llm = gguf_handle.model
    llm.reset()
    llm.eval(view.ids)  # the prompt again: the logits the first token was chosen from
    raw = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),))
    logprobs = raw.astype(np.float64) - np.logaddexp.reduce(raw.astype(np.float64))
    assert first.logprob == pytest.approx(logprobs[events[0].id], abs=1e-4)
    assert [a.id for a in first.top] == list(np.argsort(-logprobs)[:5])
    assert first.entropy == pytest.approx(float(-(np.exp(logprobs) * logprobs).sum()), abs=1e-3)
    for event in events[:-1]:  # greedy: each token is its own likeliest alternative
        assert event.info.rank == 1 and event.info.top[0].id == event.id
        assert event.info.logprob == pytest.approx(event.info.top[0].logprob)


def test_a_stop_during_a_long_prefill_is_answered_between_chunks(gguf_handle):
    stop = threading.Event()
    generation = gguf_handle.stream([{"role": "user", "content": "word " * 6000}],
                                    SamplingParams(temperature=0, max_new_tokens=4), stop)
    time.sleep(0.3)
    stop.set()
    done = list(generation)[-1]
    assert done.stop_reason == "stopped"
    # Stopped between two chunks of the prefill, not after the whole prompt was read.
    assert done.captured_ids is not None and 0 < len(done.captured_ids) < len(done.prompt_ids)
    assert done.captured_ids == done.prompt_ids[:len(done.captured_ids)]  # exactly what llama.cpp evaluated


def test_engines_are_chosen_and_refused_in_one_line(tiny_model_dir):
    assert open_model(ModelSpec(engine="generate")).family.name == "smollm"  # transformers, as asked
    with pytest.raises(UsageError, match="--engine llamacpp runs GGUF files"):
        open_model(ModelSpec(source=str(tiny_model_dir), engine="llamacpp"))
    with pytest.raises(UsageError, match="a GGUF file is quantized already"):
        open_model(ModelSpec(engine="llamacpp", quant="nf4"))


def test_run_json_on_the_gguf(demo_dir):
    result = subprocess.run([sys.executable, "-m", "tui.cli", "run", "-p", QUESTION[0]["content"], "--temperature",
                             "0", "--max-new-tokens", "8", "--json"], capture_output=True, text=True, cwd=ROOT,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    done = json.loads(result.stdout.splitlines()[-1])
    assert done["family"] == "gguf (llama.cpp)" and done["prompt_check"] == "ids"
    assert done["captured_ids"] == done["prompt_ids"]


def test_llama_cpp_server_on_loopback(demo_dir, tmp_path):
    for module in ("sse_starlette", "starlette_context", "pydantic_settings"):  # llama-cpp-python[server]
        pytest.importorskip(module, reason="llama-cpp-python's server needs 'llama-cpp-python[server]'")
    from server_stubs import free_port, wait_until_up

    from backends.checkpoint.demo import demo_gguf

    port = free_port()
    log = open(tmp_path / "server.log", "w")
    process = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(demo_gguf()), "--port",
                                str(port), "--n_ctx", "2048"], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until_up(f"http://127.0.0.1:{port}/v1/models", process)
        handle = open_model(ModelSpec(source=f"http://127.0.0.1:{port}/v1", tokenizer=str(demo_dir)))
        events = list(handle.stream(QUESTION, SamplingParams(temperature=0, max_new_tokens=8)))
        done = events[-1]
        assert done.stop_reason in ("eos", "length") and done.text
        # Chat messages, and this server streams no usage: nothing could be checked, and it says so.
        assert done.prompt_check == "none" and done.prompt_count is None and done.captured_ids is None
    finally:
        process.terminate()
        process.wait(20)


def test_llamacpp_reuses_what_it_holds_and_answers_the_same(gguf_handle):
    plain = open_model(ModelSpec(prompt_cache=False))
    params = SamplingParams(temperature=0, max_new_tokens=8)
    notes = ["Rivers carry water to the sea.", "Mountains are high and cold.", "Forests hold many trees.",
             "What did I talk about?"]

    def chat(handle):
        messages, out = [], []
        for note in notes:
            messages.append({"role": "user", "content": note})
            events = list(handle.stream(messages, params))
            done = events[-1]
            out.append(([e.id for e in events[:-1]], done))
            messages.append({"role": "assistant", "content": done.text})
        return out

    gguf_handle.release_cache()
    with_cache, without = chat(gguf_handle), chat(plain)
    assert [ids for ids, _ in with_cache] == [ids for ids, _ in without]
    for _, done in with_cache[1:]:
        assert done.stats.cached_tokens > 0 and done.captured_ids == done.prompt_ids  # read back from llama.cpp
    assert all(done.stats.cached_tokens == 0 for _, done in without)
    assert gguf_handle.prompt_cache.tokens > 0
    plain.unload()
