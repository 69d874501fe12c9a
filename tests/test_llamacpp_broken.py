"""llama-cpp-python installed but its native library failing to load: the default model goes to
transformers and says why in one line; ``--engine llamacpp`` fails with that line.

The broken install is a real package on the path whose import raises what a missing or
mismatched ``libllama.so`` raises (OSError, not ImportError); the real command runs on it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BROKEN = "OSError: libllama.so: cannot open shared object file"
WARNING = f"llm-tui: warning: llama.cpp is installed but does not load ({BROKEN}): using transformers"


@pytest.fixture
def broken_llamacpp(tmp_path) -> Path:
    package = tmp_path / "site" / "llama_cpp"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text('raise OSError("libllama.so: cannot open shared object file")\n')
    return package.parent


def llm_tui(*args, path: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(path) if path else "", str(ROOT),
                                                    env.get("PYTHONPATH", "")) if p)
    return subprocess.run([sys.executable, "-m", "tui.cli", *args], capture_output=True, text=True,
                          timeout=300, env=env, cwd=ROOT)


def test_the_package_is_broken_for_real(broken_llamacpp):
    probe = subprocess.run([sys.executable, "-c", "import llama_cpp"], capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": str(broken_llamacpp)}, timeout=60)
    assert probe.returncode == 1 and BROKEN in probe.stderr.splitlines()[-1]


def test_the_default_model_falls_back_to_transformers_and_says_why_once(demo_dir, broken_llamacpp):
    result = llm_tui("run", "-p", "hi", "--max-new-tokens", "2", "--temperature", "0", path=broken_llamacpp)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()  # transformers answered
    lines = result.stderr.splitlines()
    assert lines.count(WARNING) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[-1].startswith("llm-tui: ") and "2 new tokens" in lines[-1]

    # Transformers asked for by name gives the same greedy answer, and no warning.
    chosen = llm_tui("run", "-p", "hi", "--max-new-tokens", "2", "--temperature", "0", "--engine", "generate",
                     path=broken_llamacpp)
    assert chosen.returncode == 0 and "warning" not in chosen.stderr, chosen.stderr
    assert chosen.stdout == result.stdout


def test_an_explicit_llamacpp_engine_fails_with_that_line(demo_dir, broken_llamacpp):
    result = llm_tui("run", "-p", "hi", "--max-new-tokens", "2", "--engine", "llamacpp", path=broken_llamacpp)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"llm-tui: error: llama.cpp is installed but does not load ({BROKEN}) — ")
    assert "--engine generate" in lines[0]
