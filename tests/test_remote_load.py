"""Loading remote-code checkpoints without from_pretrained, the fixes applied from outside,
and the buffer guard.

The checkpoints are llm-tui's own stand-ins (tests/remote_standins), written in
the vendors' style and loaded with trust_remote_code=True like real ones.
"""

from __future__ import annotations

import json
import sys

import pytest

from backends.checkpoint.locate import Located
from backends.core.errors import MissingPackageError, ModelLoadError, RemoteCodeRefused
from backends.core.spec import ModelSpec


@pytest.fixture(scope="module")
def tinyqwen_dir(tmp_path_factory):
    from remote_standins import make_tinyqwen_dir

    return make_tinyqwen_dir(tmp_path_factory.mktemp("tinyqwen-load"))


def _spec(path, **kw):
    return ModelSpec(source=str(path), trust_remote_code=True, **kw)


def _load(path, **kw):
    from backends.loading.remote.load import load_remote

    return load_remote(_spec(path, **kw), Located(path))


def _logits(model, ids=(151644, 872, 198, 14990, 151645)):
    import torch

    with torch.inference_mode():
        return model(torch.tensor([list(ids) * 12]))[0][0, -1]  # 60 tokens: past seq_length (logn in use)


def _copy_checkpoint(src, dst, weights="safetensors", shards=1):
    import shutil

    from remote_standins import save_weights

    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.safetensors", "*.index.json", "__pycache__"))
    model = _load(src).model
    save_weights(model.state_dict(), dst, shards=shards, weights=weights)
    return dst


def test_consent_is_required_before_any_code_runs(tinyqwen_dir):
    from backends.generation.open import open_model
    from backends.loading.remote.load import load_remote

    with pytest.raises(RemoteCodeRefused, match="--trust-remote-code"):
        open_model(ModelSpec(source=str(tinyqwen_dir)))
    with pytest.raises(RemoteCodeRefused):
        load_remote(ModelSpec(source=str(tinyqwen_dir)), Located(tinyqwen_dir))


def test_builds_on_cpu_with_computed_buffers_and_loaded_weights(tinyqwen_dir):
    import math

    import torch
    from safetensors.torch import load_file

    loaded = _load(tinyqwen_dir)
    model = loaded.model
    assert loaded.device == "cpu" and loaded.dtype == "float32" and loaded.tokenizer is None
    assert not any(p.is_meta for p in model.parameters())
    saved = load_file(str(tinyqwen_dir / "model.safetensors"))
    assert torch.equal(model.lm_head.weight, saved["lm_head.weight"])
    assert "transformer.rotary_emb.inv_freq" not in saved  # computed, not stored
    inv_freq = model.transformer.rotary_emb.inv_freq
    assert torch.allclose(inv_freq, 1.0 / (10000 ** (torch.arange(0, 8, 2).float() / 8)))
    logn = model.transformer.h[0].attn.logn
    assert float(logn[0, 0, 0, 0]) == 1.0 and math.isclose(float(logn[0, 99, 0, 0]), math.log(100, 48), rel_tol=1e-6)
    assert model.generation_config.chat_format == "chatml"  # the checkpoint's own keys kept


def test_bf16_is_built_in_that_dtype(tinyqwen_dir):
    import torch

    model = _load(tinyqwen_dir, dtype="bf16").model
    assert model.lm_head.weight.dtype == torch.bfloat16
    assert torch.isfinite(_logits(model).float()).all()


def test_sharded_safetensors_and_bin_load_the_same_weights(tinyqwen_dir, tmp_path):
    import torch

    reference = _logits(_load(tinyqwen_dir).model)
    sharded = _copy_checkpoint(tinyqwen_dir, tmp_path / "sharded", shards=3)
    assert len(list(sharded.glob("model-*.safetensors"))) == 3
    assert torch.equal(_logits(_load(sharded).model), reference)
    binary = _copy_checkpoint(tinyqwen_dir, tmp_path / "bin", weights="bin")
    assert (binary / "pytorch_model.bin").is_file()
    assert torch.equal(_logits(_load(binary).model), reference)


def test_missing_or_misfit_weights_are_one_line(tinyqwen_dir, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    broken = tmp_path / "missing"
    shutil.copytree(tinyqwen_dir, broken, ignore=shutil.ignore_patterns("__pycache__"))
    state = load_file(str(broken / "model.safetensors"))
    del state["transformer.h.1.w1.weight"]
    save_file(state, str(broken / "model.safetensors"))
    with pytest.raises(ModelLoadError) as err:
        _load(broken)
    assert "transformer.h.1.w1.weight" in str(err.value) and "\n" not in str(err.value)

    misfit = tmp_path / "misfit"
    shutil.copytree(tinyqwen_dir, misfit, ignore=shutil.ignore_patterns("__pycache__"))
    config = json.loads((misfit / "config.json").read_text())
    config["intermediate_size"] = 96
    (misfit / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="do not fit") as err:
        _load(misfit)
    assert "\n" not in str(err.value)


def test_the_import_check_needs_the_stand_in_for_transformers_stream_generator(tinyqwen_dir, monkeypatch, tmp_path):
    import shutil

    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    from backends.loading.remote.fixes import install_import_standins, standin_reason

    for name in ("transformers_stream_generator", "transformers_stream_generator.main"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    fresh = tmp_path / "fresh-tinyqwen"  # a new dynamic-module name, so transformers runs its import check
    shutil.copytree(tinyqwen_dir, fresh, ignore=shutil.ignore_patterns("__pycache__"))
    with pytest.raises(ImportError, match="transformers_stream_generator"):
        get_class_from_dynamic_module("modeling_tinyqwen.TinyQWenLMHeadModel", str(fresh))
    assert install_import_standins() == ["transformers_stream_generator"]
    assert standin_reason("transformers_stream_generator.main")
    cls = get_class_from_dynamic_module("modeling_tinyqwen.TinyQWenLMHeadModel", str(fresh))
    assert cls.__name__ == "TinyQWenLMHeadModel"
    with pytest.raises(ImportError, match="not available"):
        from transformers_stream_generator.main import NewGenerationMixin  # noqa: F401


def test_a_missing_package_is_one_line(tinyqwen_dir, tmp_path):
    import shutil

    broken = tmp_path / "needs-package"
    shutil.copytree(tinyqwen_dir, broken, ignore=shutil.ignore_patterns("__pycache__"))
    code = broken / "modeling_tinyqwen.py"
    code.write_text("import llm_tui_no_such_package\n" + code.read_text())
    with pytest.raises(MissingPackageError, match="llm_tui_no_such_package") as err:
        _load(broken)
    assert "\n" not in str(err.value)


def test_fixes_for_removed_transformers_helpers(tinyqwen_dir):
    import torch
    from transformers import PretrainedConfig

    from backends.loading.remote.fixes import _get_head_mask, fix_config

    config = PretrainedConfig()
    config.seq_length = 2048
    assert fix_config(config) == ["config.max_length"] and config.max_length == 2048
    model = _load(tinyqwen_dir).model
    assert model.max_sequence_length == 48  # the stand-in reads config.max_length in __init__
    assert _get_head_mask(model, None, 3) == [None, None, None]
    mask = _get_head_mask(model, torch.ones(4), 2)
    assert mask.shape == (2, 1, 4, 1, 1)


def test_from_pretrained_leaves_buffers_corrupt_and_the_guard_rebuilds_them(tinyqwen_dir):
    """On transformers 5, from_pretrained builds on the meta device: computed buffers come out
    uninitialised and the model runs without error. The guard puts back what the model's code computes."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from backends.loading.remote.buffers import guard_buffers
    from backends.loading.remote.fixes import fix_model_classes, install_import_standins

    install_import_standins()
    config = AutoConfig.from_pretrained(str(tinyqwen_dir), trust_remote_code=True)
    config.max_length = config.seq_length
    model = AutoModelForCausalLM.from_pretrained(str(tinyqwen_dir), config=config, trust_remote_code=True).eval()
    fix_model_classes(type(model))
    reference = _logits(_load(tinyqwen_dir).model)
    report = guard_buffers(model)
    assert "transformer.rotary_emb.inv_freq" in report.checked
    assert torch.equal(_logits(model), reference)
    assert not guard_buffers(model).rebuilt  # now they hold the right values


def test_guard_rebuilds_corrupted_buffers_and_meta_tensors(tinyqwen_dir):
    import torch

    from backends.loading.remote.buffers import guard_buffers

    model = _load(tinyqwen_dir).model
    reference = _logits(model)
    model.transformer.rotary_emb.inv_freq.fill_(float("nan"))
    model.transformer.h[1].attn.logn.zero_()
    model.transformer.h[0].attn.masked_bias = torch.empty((), device="meta")
    model.transformer.h[1].attn.scale = torch.empty((), device="meta")  # a plain computed tensor attribute
    report = guard_buffers(model)
    assert set(report.rebuilt) == {"transformer.rotary_emb.inv_freq", "transformer.h.1.attn.logn",
                                   "transformer.h.0.attn.masked_bias", "transformer.h.1.attn.scale"}
    assert torch.equal(_logits(model), reference)
    model.transformer.h[0].attn.stray = torch.empty(3, device="meta")  # nothing to rebuild it from
    with pytest.raises(ModelLoadError, match="transformer.h.0.attn.stray"):
        guard_buffers(model)


def test_guard_fails_loudly_when_buffers_stay_non_finite(tinyqwen_dir):
    from backends.loading.remote.buffers import guard_buffers, reference_instance

    model = _load(tinyqwen_dir).model
    reference = reference_instance(type(model), model.config)
    assert all(p.is_meta for p in reference.parameters())  # no weight memory for the reference
    reference.transformer.h[0].attn.logn.fill_(float("inf"))
    model.transformer.h[0].attn.logn.fill_(float("inf"))
    with pytest.raises(ModelLoadError, match="transformer.h.0.attn.logn") as err:
        guard_buffers(model, reference, label="tinyqwen")
    assert "\n" not in str(err.value)


def test_tokenizer_fixes_load_sp_model_first_and_drop_padding_side(tmp_path):
    """A tokenizer class of ours written like Baichuan2's (sp_model set after the base __init__)
    and ChatGLM3's (_pad without padding_side)."""
    import sentencepiece as spm
    from fixtures_families import baichuan_sp_model
    from transformers import PreTrainedTokenizer

    from backends.loading.remote.fixes import fix_tokenizer_class

    vocab = tmp_path / "tokenizer.model"
    vocab.write_bytes(baichuan_sp_model())

    class LateSpTokenizer(PreTrainedTokenizer):
        def __init__(self, vocab_file, **kwargs):
            super().__init__(**kwargs)
            self.vocab_file = vocab_file
            self.sp_model = spm.SentencePieceProcessor()
            self.sp_model.Load(vocab_file)

        @property
        def vocab_size(self):
            return self.sp_model.get_piece_size()

        def get_vocab(self):
            return {self.sp_model.id_to_piece(i): i for i in range(self.vocab_size)}

        def _tokenize(self, text):
            return self.sp_model.encode(text, out_type=str)

        def _convert_token_to_id(self, token):
            return self.sp_model.piece_to_id(token)

        def _convert_id_to_token(self, index):
            return self.sp_model.id_to_piece(index)

        def _pad(self, encoded_inputs, max_length=None, padding_strategy=None, pad_to_multiple_of=None,
                 return_attention_mask=None):
            return encoded_inputs

    with pytest.raises((AttributeError, TypeError)):  # the base __init__ asks for the vocabulary first
        LateSpTokenizer(str(vocab))
    applied = fix_tokenizer_class(LateSpTokenizer)
    assert len(applied) == 2 and fix_tokenizer_class(LateSpTokenizer) == []
    tokenizer = LateSpTokenizer(str(vocab))
    assert tokenizer.vocab_size > 100
    assert tokenizer._pad({"input_ids": [1]}, padding_side="left") == {"input_ids": [1]}


@pytest.mark.parametrize("corrupt", ['{"chat_format": "chatml", "eos_token_id": 151643,',  # cut short
                                     '{"chat_format": "chatml", "eos_token_id": 151643, "max_new_tokens": "many"}'])
def test_a_generation_config_that_does_not_load_is_said_and_the_load_goes_on(tinyqwen_dir, tmp_path, corrupt):
    import shutil

    from backends.core.params import SamplingParams
    from backends.generation.open import open_model

    path = shutil.copytree(tinyqwen_dir, tmp_path / "tinyqwen", ignore=shutil.ignore_patterns("__pycache__"))
    (path / "generation_config.json").write_text(corrupt, encoding="utf-8")
    said = []
    handle = open_model(_spec(path), lambda message, fraction=None: said.append(message))
    lost = [m for m in said if "generation_config.json" in m]
    assert len(lost) == 1 and lost[0].startswith("warning: the generation_config.json of 'tinyqwen' does not load (")
    assert lost[0].endswith("going on without it, so its stop tokens and sampling defaults are not used")
    # The model's own defaults stay (the checkpoint's keys did not load), and it answers.
    assert getattr(getattr(handle.model, "generation_config", None), "chat_format", None) is None
    done = list(handle.stream([{"role": "user", "content": "hi"}], SamplingParams(temperature=0, max_new_tokens=3)))[-1]
    assert done.stop_reason != "error", done.error
    view = handle.render([{"role": "user", "content": "hi"}])
    if corrupt.endswith(","):  # not JSON: the prompt family read nothing from it either, and says so
        assert any("generation_config.json is not valid JSON" in w and "left out" in w for w in view.warnings)
    else:  # JSON that transformers refuses: the family still reads what it needs (its stop token)
        assert handle.family.stop_ids() and not any("generation_config" in w for w in view.warnings)
