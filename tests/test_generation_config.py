"""A checkpoint whose generation_config.json does not load: one warning line that reaches the
user (``run`` on stderr, the inspector's and ``inspect``'s warnings), and the model still loads
and answers, with what transformers builds for a checkpoint without the file."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from backends.core.params import SamplingParams
from backends.core.spec import ModelSpec
from backends.generation.open import open_model

ROOT = Path(__file__).resolve().parent.parent
NOT_JSON = '{"bos_token_id": 1, "eos_token_id": [2, 0],'  # cut short
REFUSED = json.dumps({"bos_token_id": 1, "eos_token_id": [2, 0], "max_new_tokens": "many"})  # JSON, a bad value
LOST = "going on without it, so its stop tokens and sampling defaults are not used"


def corrupt_copy(tiny_model_dir: Path, where: Path, text: str) -> Path:
    path = shutil.copytree(tiny_model_dir, where / "tiny-corrupt")
    (path / "generation_config.json").write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("text, why", [(NOT_JSON, "not a valid JSON file"), (REFUSED, "TypeError: ")],
                         ids=["not-json", "refused"])
def test_the_transformers_loader_says_so_and_goes_on(tiny_model_dir, tmp_path, text, why):
    path = corrupt_copy(tiny_model_dir, tmp_path, text)
    said = []
    handle = open_model(ModelSpec(source=str(path)), lambda message, fraction=None: said.append(message))
    lost = [m for m in said if "generation_config.json" in m]
    assert len(lost) == 1
    assert lost[0].startswith("warning: the generation_config.json of 'tiny-corrupt' does not load (")
    assert why in lost[0] and lost[0].endswith(LOST)
    # What from_pretrained builds without the file: config.json's IDs, not the file's [2, 0].
    assert handle.model.generation_config.eos_token_id == 2
    done = list(handle.stream([{"role": "user", "content": "hi"}], SamplingParams(temperature=0, max_new_tokens=3)))[-1]
    assert done.stop_reason != "error", done.error
    warnings = handle.render([{"role": "user", "content": "hi"}]).warnings
    if text is NOT_JSON:  # the prompt family could not read it either: the inspector says so
        assert any("generation_config.json is not valid JSON" in w and "left out" in w for w in warnings)
        assert handle.family.stop_ids() == [2]  # the tokenizer's own end of sequence only
    else:  # the family reads the JSON it needs: the file's stop tokens still stop a reply
        assert handle.family.stop_ids() == [2, 0]


def test_run_and_inspect_show_the_line(tiny_model_dir, tmp_path):
    path = corrupt_copy(tiny_model_dir, tmp_path, NOT_JSON)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    run = subprocess.run([sys.executable, "-m", "tui.cli", "run", str(path), "-p", "hi", "--max-new-tokens", "2"],
                         capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert run.returncode == 0 and run.stdout.strip(), run.stderr  # stderr is not a terminal: no progress
    warned = [line for line in run.stderr.splitlines() if "generation_config.json" in line]
    assert len(warned) == 1 and warned[0].startswith("llm-tui: warning: ") and warned[0].endswith(LOST)

    inspect = subprocess.run([sys.executable, "-m", "tui.cli", "inspect", str(path), "--messages", "-"],
                             input=json.dumps([{"role": "user", "content": "hi"}]), capture_output=True, text=True,
                             timeout=300, env=env, cwd=ROOT)
    assert inspect.returncode == 0, inspect.stderr
    assert any(line.startswith("warning: ") and "generation_config.json is not valid JSON" in line
               for line in inspect.stdout.splitlines()), inspect.stdout
