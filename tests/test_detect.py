"""Family detection from model-directory files, and building families without remote code."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from backends.checkpoint.remote_code import needs_remote_code
from backends.core.errors import ModelLoadError, RemoteCodeRefused, UsageError
from backends.prompt.families.baichuan import Baichuan2Family
from backends.prompt.families.base import PromptFamily
from backends.prompt.families.chatglm import ChatGLM3Family
from backends.prompt.families.detect import (
    context_length,
    detect_family,
    family_for_dir,
)
from backends.prompt.families.qwen import QwenFamily
from backends.prompt.families.template import ChatTemplateFamily

try:
    from fixtures_families import (
        MARKER,
        booby_trap,
        make_baichuan2_dir,
        make_chatglm3_dir,
        make_qwen_dir,
        make_template_dir,
        write_json,
    )
except ImportError:  # tests collected as a package
    from tests.fixtures_families import (
        MARKER,
        booby_trap,
        make_baichuan2_dir,
        make_chatglm3_dir,
        make_qwen_dir,
        make_template_dir,
        write_json,
    )

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {
        "qwen": make_qwen_dir(root / "Qwen-7B-Chat"),
        "chatglm3": make_chatglm3_dir(root / "chatglm3-6b"),
        "baichuan2": make_baichuan2_dir(root / "Baichuan2-7B-Chat"),
        "yi": make_template_dir(
            root / "Yi-6B-Chat",
            config={"architectures": ["LlamaForCausalLM"], "model_type": "llama", "max_position_embeddings": 4096,
                    "vocab_size": 64000},
            specials=("<unk>", "<|startoftext|>", "<|endoftext|>", "<fim_prefix>", "<fim_middle>",
                      "<fim_suffix>", "<|im_start|>", "<|im_end|>", "<|im_sep|>"),
            eos_token="<|im_end|>", bos_token="<|startoftext|>",
            generation_config={"bos_token_id": 1, "eos_token_id": 2},
            tokenizer_config_extra={"added_tokens_decoder": {
                "6": {"content": "<|im_start|>", "special": True},
                "7": {"content": "<|im_end|>", "special": True},
                "8": {"content": "<|im_sep|>", "special": True}}},
        ),
        "smollm": make_template_dir(
            root / "SmolLM2-135M-Instruct",
            config={"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 49152,
                    "max_position_embeddings": 8192},
            specials=("<|endoftext|>", "<|im_start|>", "<|im_end|>"),
            eos_token="<|im_end|>", bos_token="<|im_start|>",
        ),
        "qwen2": make_template_dir(
            root / "Qwen2.5-0.5B-Instruct",
            config={"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "max_position_embeddings": 32768},
            specials=("<|endoftext|>", "<|im_start|>", "<|im_end|>"), eos_token="<|im_end|>", bos_token=None,
            generation_config={"eos_token_id": [2, 0]},
        ),
        "base": make_template_dir(
            root / "llama-base", config={"model_type": "llama", "max_position_embeddings": 2048},
            chat_template=None,
        ),
    }


@pytest.mark.parametrize("name", ["qwen", "chatglm3", "baichuan2", "yi", "smollm", "qwen2", "base"])
def test_detect_family(dirs, name):
    assert detect_family(dirs[name]) == name
    assert detect_family(str(dirs[name])) == name


@pytest.mark.parametrize("name, cls", [("qwen", QwenFamily), ("chatglm3", ChatGLM3Family),
                                       ("baichuan2", Baichuan2Family)])
def test_trust_free_families_run_no_checkpoint_code(dirs, name, cls):
    for trust in (False, True):
        family = family_for_dir(dirs[name], trust_remote_code=trust)
        assert type(family) is cls
        assert family.name == name
        assert isinstance(family, PromptFamily)
    view = family.render([{"role": "user", "content": "hello"}])
    assert view.family == name and view.ids
    assert not (dirs[name] / MARKER).exists()


@pytest.mark.parametrize("name", ["yi", "smollm", "qwen2"])
def test_template_families(dirs, name):
    family = family_for_dir(dirs[name])
    assert isinstance(family, ChatTemplateFamily)
    assert family.name == name
    view = family.render([{"role": "user", "content": "hello world"}])
    assert view.family == name
    assert view.text.startswith("<|im_start|>user\nhello world<|im_end|>\n")


def test_template_stop_ids_and_context(dirs):
    yi = family_for_dir(dirs["yi"])
    assert 7 in yi.stop_ids() and 2 in yi.stop_ids()
    assert yi.max_context == 4096
    qwen2 = family_for_dir(dirs["qwen2"])
    assert qwen2.stop_ids()[:2] == [2, 0]
    assert family_for_dir(dirs["qwen2"], max_context=1024).max_context == 1024
    assert context_length(dirs["smollm"]) == 8192


def test_max_context_override_reaches_trust_free_families(dirs):
    assert family_for_dir(dirs["qwen"]).max_context == 8192
    assert family_for_dir(dirs["qwen"], max_context=2048).max_context == 2048
    assert family_for_dir(dirs["chatglm3"], max_context=100).max_context == 100


def test_base_model_without_template_is_a_usage_error(dirs):
    with pytest.raises(UsageError, match="no chat template"):
        family_for_dir(dirs["base"])


def test_chatglm_versions(tmp_path):
    v2 = make_chatglm3_dir(tmp_path / "chatglm2-6b")
    (v2 / "tokenization_chatglm.py").write_text("special_tokens = ['[MASK]', '[gMASK]', '[sMASK]', 'sop', 'eop']\n")
    assert detect_family(v2) == "chatglm2"
    with pytest.raises(ModelLoadError, match="ChatGLM2"):
        family_for_dir(v2)

    named = make_chatglm3_dir(tmp_path / "no-code", with_code=False)
    assert detect_family(named) == "chatglm3"

    glm4 = make_chatglm3_dir(tmp_path / "glm-4-9b-chat", with_code=False)
    (glm4 / "tokenizer.model").write_text("IQ== 0\nIg== 1\n")
    assert detect_family(glm4) == "glm4"
    cfg = json.loads((glm4 / "tokenizer_config.json").read_text())
    cfg["tokenizer_class"] = "ChatGLM4Tokenizer"
    write_json(glm4 / "tokenizer_config.json", cfg)
    assert detect_family(glm4) == "glm4"

    hf = tmp_path / "glm-4-9b-chat-hf"
    hf.mkdir()
    write_json(hf / "config.json", {"model_type": "glm", "architectures": ["GlmForCausalLM"]})
    write_json(hf / "tokenizer_config.json", {"chat_template": "[gMASK]<sop>{% for m in messages %}{% endfor %}"})
    assert detect_family(hf) == "glm4"


def test_other_detection_clues(tmp_path):
    only_vocab = tmp_path / "qwen-no-config"
    only_vocab.mkdir()
    (only_vocab / "qwen.tiktoken").write_text("IQ== 0\n")
    assert detect_family(only_vocab) == "qwen"

    jinja = tmp_path / "mistral"
    jinja.mkdir()
    write_json(jinja / "config.json", {"model_type": "mistral"})
    (jinja / "chat_template.jinja").write_text("{{ messages }}")
    assert detect_family(jinja) == "mistral"

    other = tmp_path / "exotic"
    other.mkdir()
    write_json(other / "config.json", {"model_type": "exotic"})
    write_json(other / "tokenizer_config.json", {"chat_template": [{"name": "default", "template": "{{ x }}"}]})
    assert detect_family(other) == "template"


def test_not_a_model_directory(tmp_path):
    with pytest.raises(ModelLoadError, match="not found"):
        detect_family(tmp_path / "missing")
    file = tmp_path / "config.json"
    file.write_text("{}")
    with pytest.raises(ModelLoadError, match="not a model directory"):
        family_for_dir(file)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelLoadError, match="not a model directory"):
        detect_family(empty)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="not valid JSON"):
        detect_family(broken)


def test_missing_vocab_file_is_one_clear_line(dirs, tmp_path):
    qdir = make_qwen_dir(tmp_path / "q")
    (qdir / "qwen.tiktoken").unlink()
    with pytest.raises(ModelLoadError) as err:
        family_for_dir(qdir)
    assert "qwen.tiktoken" in str(err.value) and "\n" not in str(err.value)
    gdir = make_chatglm3_dir(tmp_path / "g")
    (gdir / "tokenizer.model").unlink()
    with pytest.raises(ModelLoadError, match="tokenizer.model"):
        family_for_dir(gdir)


def test_needs_remote_code_lists_auto_map_files_and_their_imports(dirs):
    names = [p.name for p in needs_remote_code(dirs["qwen"])]
    assert names == ["configuration_qwen.py", "modeling_qwen.py", "qwen_generation_utils.py", "tokenization_qwen.py"]
    names = [p.name for p in needs_remote_code(dirs["baichuan2"])]
    assert names == ["configuration_baichuan.py", "generation_utils.py", "modeling_baichuan.py", "quantizer.py",
                     "tokenization_baichuan.py"]
    assert all(p.parent == dirs["baichuan2"] for p in needs_remote_code(dirs["baichuan2"]))
    assert needs_remote_code(dirs["yi"]) == []


def test_custom_tokenizer_is_refused_without_trust(tmp_path):
    d = tmp_path / "custom"
    d.mkdir()
    write_json(d / "config.json", {"model_type": "custom_lm", "architectures": ["CustomLM"],
                                   "auto_map": {"AutoConfig": "configuration_custom.CustomConfig"}})
    write_json(d / "tokenizer_config.json", {
        "tokenizer_class": "CustomTokenizer", "chat_template": "{{ messages }}",
        "auto_map": {"AutoTokenizer": ["tokenization_custom.CustomTokenizer", None]}})
    booby_trap(d, "tokenization_custom.py")
    booby_trap(d, "configuration_custom.py")
    assert detect_family(d) == "template"
    with pytest.raises(RemoteCodeRefused) as err:
        family_for_dir(d)
    assert "tokenization_custom.py" in str(err.value) and "--trust-remote-code" in str(err.value)
    assert not (d / MARKER).exists()


def test_trust_free_path_imports_neither_textual_nor_transformers(dirs):
    code = (
        "import sys\n"
        "from backends.prompt.families.detect import family_for_dir\n"
        f"family = family_for_dir({str(dirs['chatglm3'])!r})\n"
        "family.render([{'role': 'user', 'content': 'hi'}])\n"
        "assert 'textual' not in sys.modules, 'textual imported'\n"
        "assert 'transformers' not in sys.modules, 'transformers imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
