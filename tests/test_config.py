"""Config: loading, validation messages, alias specs, and comment-keeping writes."""

from __future__ import annotations

import os
import textwrap
import tomllib
from pathlib import Path

import pytest

from backends.core.errors import UsageError
from backends.core.params import SamplingParams
from backends.core.spec import ModelSpec
from backends.storage.config import (
    CONFIG_NAME,
    Config,
    Defaults,
    ModelAlias,
    load_config,
)
from backends.storage.config_edit import remove_alias, save_alias, save_default

FULL = """\
# my llm-tui settings
[defaults]
model = "qwen"          # the usual one
quant = "nf4"
dtype = "bf16"
device_map = "cuda:0"
system = "You are helpful."
temperature = 0.2
top_p = 0.95
top_k = 40
repetition_penalty = 1.1
max_new_tokens = 256
theme = "gruvbox"

# models I use
[models.qwen]
path = "/models/Qwen-7B-Chat"   # v1 checkpoint
trust_remote_code = true
dtype = "fp16"

[models.smol]
path = "~/models/smol"
engine = "generate"
device_map = "cpu"
quant = "none"

[keys]
send = "ctrl+j,alt+enter"
stop = ["escape", "ctrl+c"]
"""


def write(tmp_path: Path, text: str) -> Path:
    file = tmp_path / CONFIG_NAME
    file.write_text(textwrap.dedent(text), encoding="utf-8")
    return file


def test_missing_file_gives_defaults(tmp_path):
    config = load_config(tmp_path / "nope.toml")
    assert not config.exists
    assert config.defaults == Defaults()
    assert config.aliases == ()
    assert config.keys == {} and config.warnings == ()
    assert config.sampling_params() == SamplingParams()
    assert config.spec_for(None) == ModelSpec()


def test_default_location_follows_config_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_TUI_CONFIG_DIR", str(tmp_path / "cfg"))
    assert load_config().path == tmp_path / "cfg" / CONFIG_NAME
    save_default("theme", "nord")
    assert load_config().defaults.theme == "nord"


def test_full_file(tmp_path):
    config = load_config(write(tmp_path, FULL))
    assert config.exists and config.warnings == ()
    d = config.defaults
    assert (d.model, d.quant, d.dtype, d.device_map, d.system, d.theme) == (
        "qwen", "nf4", "bf16", "cuda:0", "You are helpful.", "gruvbox")
    assert config.sampling_params() == SamplingParams(
        temperature=0.2, top_p=0.95, top_k=40, repetition_penalty=1.1, max_new_tokens=256)
    assert config.aliases == ("qwen", "smol")
    assert config.models["smol"].path == os.path.expanduser("~/models/smol")
    assert config.keys == {"send": "ctrl+j,alt+enter", "stop": "escape,ctrl+c"}


def test_alias_spec_fills_gaps_from_defaults(tmp_path):
    config = load_config(write(tmp_path, FULL))
    spec = config.model_spec("qwen")
    assert spec == ModelSpec(source="/models/Qwen-7B-Chat", quant="nf4", dtype="fp16", device_map="cuda:0",
                             trust_remote_code=True, engine="auto", alias="qwen")
    assert spec.label == "qwen · nf4"  # the alias, and how it is quantized
    smol = config.model_spec("smol")
    assert (smol.quant, smol.dtype, smol.device_map, smol.engine, smol.trust_remote_code) == (
        "none", "bf16", "cpu", "generate", False)


def test_spec_for_alias_path_and_default(tmp_path):
    config = load_config(write(tmp_path, FULL))
    assert config.spec_for(None) == config.model_spec("qwen")  # [defaults] model is an alias
    other = config.spec_for("/models/yi")
    assert (other.source, other.quant, other.dtype, other.alias) == ("/models/yi", "nf4", "bf16", None)


def test_unknown_alias(tmp_path):
    config = load_config(write(tmp_path, FULL))
    with pytest.raises(UsageError, match="no model alias 'llama'") as err:
        config.model_spec("llama")
    assert "qwen, smol" in str(err.value)
    with pytest.raises(UsageError, match=r"add a \[models.x\]"):
        Config(path=tmp_path / "c.toml").model_spec("x")


def test_unknown_keys_are_warnings(tmp_path):
    file = write(tmp_path, """
        [defaults]
        colour = "red"
        temperature = 0.1
        [models.a]
        path = "/a"
        speed = "fast"
        [plugins]
        x = 1
        """)
    config = load_config(file)
    assert config.defaults.temperature == 0.1
    assert config.models["a"] == ModelAlias(name="a", path="/a")
    assert len(config.warnings) == 3
    joined = "\n".join(config.warnings)
    assert "[defaults] colour" in joined and "[models.a] speed" in joined and "[plugins]" in joined
    assert all(str(file) in w for w in config.warnings)


@pytest.mark.parametrize("body, key, hint", [
    ("[defaults]\ntemperature = 'hot'", "[defaults] temperature = 'hot' is not a number", "a number"),
    ("[defaults]\ntemperature = 500.0", "[defaults] temperature = 500.0 is out of range", "from 0.0 to 100.0"),
    ("[defaults]\ntemperature = true", "[defaults] temperature = true is not a number", "a number"),
    ("[defaults]\ntop_k = 4.5", "[defaults] top_k = 4.5 is not an integer", "an integer"),
    ("[defaults]\nquant = 'q4'", "[defaults] quant = 'q4' is not known", '"nf4"'),
    ("[defaults]\ndtype = 'float16'", "[defaults] dtype = 'float16' is not known", '"fp16"'),
    ("[defaults]\ndevice_map = 'gpu0'", "[defaults] device_map = 'gpu0' is not understood", "cuda:0"),
    ("[defaults]\nsystem = 3", "[defaults] system = 3 is not a string", "quotes"),
    ("[models.q]\npath = '/q'\ntrust_remote_code = 'yes'", "[models.q] trust_remote_code = 'yes' is not true or false",
     "true or false"),
    ("[models.q]\npath = '/q'\nengine = 'vllm'", "[models.q] engine = 'vllm' is not known", '"generate"'),
    ("[models.q]\nquant = 'nf4'", "[models.q] has no path", 'path = "/models/q"'),
    ("[models]\nq = '/q'", "models.q is not a table", "[models.q]"),
    ("[models.default]\npath = '/q'", "[models.default] uses the reserved name", "rename"),
    ("defaults = 3", "defaults must be a table", "[defaults]"),
    ("[keys]\nsend = ''", "[keys] send is not a key list", "ctrl+j"),
])
def test_bad_values_name_file_key_and_fix(tmp_path, body, key, hint):
    file = write(tmp_path, body + "\n")
    with pytest.raises(UsageError) as err:
        load_config(file)
    line = str(err.value)
    assert "\n" not in line
    assert line.startswith(f"{file}: {key}")
    assert hint in err.value.fix


def test_invalid_toml(tmp_path):
    file = write(tmp_path, "[defaults\nmodel = 1\n")
    with pytest.raises(UsageError, match="is not valid TOML") as err:
        load_config(file)
    assert str(file) in str(err.value) and "line 1" in str(err.value)


def test_int_accepted_for_float(tmp_path):
    config = load_config(write(tmp_path, "[defaults]\ntemperature = 1\n"))
    assert config.defaults.temperature == 1.0 and isinstance(config.defaults.temperature, float)


def test_save_alias_keeps_comments_and_other_settings(tmp_path):
    file = write(tmp_path, FULL)
    alias = save_alias("yi", "/models/Yi-6B-Chat", quant="int8", config_path=file)
    assert alias == ModelAlias(name="yi", path="/models/Yi-6B-Chat", quant="int8")
    text = file.read_text(encoding="utf-8")
    for comment in ("# my llm-tui settings", "# the usual one", "# models I use", "# v1 checkpoint"):
        assert comment in text
    config = load_config(file)
    assert config.aliases == ("qwen", "smol", "yi")
    assert config.defaults.temperature == 0.2
    assert config.model_spec("yi").quant == "int8"


def test_save_alias_replaces_in_place(tmp_path):
    file = write(tmp_path, FULL)
    save_alias("qwen", "/models/Qwen-7B-Chat", dtype="bf16", trust_remote_code=True, config_path=file)
    text = file.read_text(encoding="utf-8")
    assert "# v1 checkpoint" in text  # the kept key keeps its comment
    entry = load_config(file).models["qwen"]
    assert entry == ModelAlias(name="qwen", path="/models/Qwen-7B-Chat", dtype="bf16", trust_remote_code=True)
    assert text.count("[models.qwen]") == 1


def test_save_alias_creates_the_file(tmp_path):
    file = tmp_path / "new" / CONFIG_NAME
    save_alias("my model", "/m", device_map="cuda:0,cuda:1", config_path=file)
    data = tomllib.loads(file.read_text(encoding="utf-8"))
    assert data["models"]["my model"] == {"path": "/m", "device_map": "cuda:0,cuda:1"}
    assert load_config(file).model_spec("my model").device_map == "cuda:0,cuda:1"
    assert not list(file.parent.glob(".*.tmp"))


def test_save_alias_validates_before_writing(tmp_path):
    file = write(tmp_path, FULL)
    before = file.read_text(encoding="utf-8")
    with pytest.raises(UsageError, match=r"\[models.x\] quant = 'q3' is not known"):
        save_alias("x", "/x", quant="q3", config_path=file)
    with pytest.raises(UsageError, match="cannot be a model alias"):
        save_alias("default", "/x", config_path=file)
    assert file.read_text(encoding="utf-8") == before


def test_save_refuses_to_rewrite_a_broken_file(tmp_path):
    file = write(tmp_path, "[defaults]\ntemperature = 'hot'\n")
    with pytest.raises(UsageError, match="temperature"):
        save_alias("x", "/x", config_path=file)
    assert file.read_text(encoding="utf-8") == "[defaults]\ntemperature = 'hot'\n"


def test_remove_alias(tmp_path):
    file = write(tmp_path, FULL)
    assert remove_alias("smol", config_path=file)
    assert not remove_alias("smol", config_path=file)
    assert not remove_alias("x", config_path=tmp_path / "missing.toml")
    config = load_config(file)
    assert config.aliases == ("qwen",)
    assert "# my llm-tui settings" in file.read_text(encoding="utf-8")


def test_save_default(tmp_path):
    file = write(tmp_path, FULL)
    save_default("theme", "nord", config_path=file)
    save_default("temperature", 0.9, config_path=file)
    save_default("system", None, config_path=file)
    config = load_config(file)
    assert (config.defaults.theme, config.defaults.temperature, config.defaults.system) == ("nord", 0.9, None)
    assert "# the usual one" in file.read_text(encoding="utf-8")
    with pytest.raises(UsageError, match="not a \\[defaults\\] setting"):
        save_default("colour", "red", config_path=file)
    with pytest.raises(UsageError, match="out of range"):
        save_default("top_p", 2.0, config_path=file)


def test_config_never_imports_textual():
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    code = "import sys, backends.storage.config, backends.storage.store, backends.core.paths; print('textual' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("env, func", [
    ("LLM_TUI_DATA_DIR", "data_dir"),
    ("LLM_TUI_CONFIG_DIR", "config_dir"),
    ("LLM_TUI_CACHE_DIR", "cache_dir"),
])
def test_each_folder_can_be_moved_by_environment(tmp_path, monkeypatch, env, func):
    from backends.core import paths

    monkeypatch.delenv(env, raising=False)
    default = getattr(paths, func)()
    assert "llm-tui" in str(default)
    monkeypatch.setenv(env, str(tmp_path / "x"))
    assert getattr(paths, func)() == tmp_path / "x"
    monkeypatch.setenv(env, "  ")  # blank means "not set"
    assert getattr(paths, func)() == default
