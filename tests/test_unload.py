"""Unloading gives the memory back: the model object is gone and process RSS returns to its baseline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import weakref
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

_SCRIPT = textwrap.dedent("""
    import json, sys, weakref
    import psutil
    from backends.generation.open import open_model
    from backends.hardware.release import release_memory
    from backends.core.params import SamplingParams
    from backends.core.spec import ModelSpec

    rss = lambda: psutil.Process().memory_info().rss
    question = [{"role": "user", "content": "What is the capital of France?"}]

    def turn(handle, tokens):
        generation = handle.stream(question, SamplingParams(temperature=0, max_new_tokens=tokens))
        list(generation)
        return generation.done.text

    # Warm up the code paths (imports, tokenizer, kernels) on a tiny model, so the
    # baseline is the process as it is just before loading real weights.
    warm = open_model(ModelSpec(source=sys.argv[1]))
    turn(warm, 2)
    warm.unload()
    del warm
    baseline = release_memory()
    handle = open_model(ModelSpec(engine="generate"))  # transformers, whatever else is installed
    answer = turn(handle, 6)
    loaded = rss()
    ref = weakref.ref(handle.model)
    handle.unload()
    after = rss()
    print("RESULT " + json.dumps({"baseline": baseline, "loaded": loaded, "after": after,
                                  "answer": answer, "model_alive": ref() is not None,
                                  "footprint": handle.info.footprint_bytes}))
""")


@pytest.mark.slow
def test_unloading_the_default_model_returns_rss_to_baseline(demo_dir, tiny_model_dir):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    result = subprocess.run([sys.executable, "-c", _SCRIPT, str(tiny_model_dir)], capture_output=True, text=True,
                            env=env, timeout=300, cwd=str(ROOT))
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert result.returncode == 0 and lines, result.stderr[-3000:]
    data = json.loads(lines[-1][len("RESULT "):])
    assert "Paris" in data["answer"]
    assert data["loaded"] - data["baseline"] > 0.6 * data["footprint"]  # the weights really were resident
    assert not data["model_alive"]
    assert data["after"] <= data["baseline"] * 1.10, data


def test_unload_drops_the_model_and_is_idempotent(tiny_model_dir):
    from backends.core.params import SamplingParams
    from backends.core.spec import ModelSpec
    from backends.generation.open import open_model

    handle = open_model(ModelSpec(source=str(tiny_model_dir)))
    generation = handle.stream([{"role": "user", "content": "Hi"}], SamplingParams(temperature=0, max_new_tokens=2))
    list(generation)
    ref = weakref.ref(handle.model)
    del generation
    handle.unload()
    assert handle.model is None and ref() is None
    handle.unload()
