"""Stand-in remote-code checkpoints for the tests, built in tmp_path.

The .py files here are llm-tui's own small model classes written in the
style of the remote-code checkpoints (Qwen v1 / ChatGLM3 / Baichuan2); they
are not the vendors' files. A checkpoint directory gets them beside a
config.json whose ``auto_map`` points at them and random weights saved as
safetensors (or ``.bin``), so it loads exactly like a real checkpoint with
``trust_remote_code=True``.
"""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

HERE = Path(__file__).resolve().parent
CODE_FILES = ("configuration_tinyqwen.py", "modeling_tinyqwen.py")
#: A model class with its own ``quantize(bits)`` and the module it uses (``own_quantize=True``).
QUANT_FILES = ("modeling_tinyquant.py", "quantization_tiny.py")


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")


def make_tinyqwen_dir(root: Path, *, vocab_size: int = 151936, seed: int = 0, shards: int = 1,
                      weights: str = "safetensors", qwen_vocab: bool = True, own_quantize: bool = False,
                      **config) -> Path:
    """A Qwen-v1-like remote-code checkpoint: stand-in code, random weights, the real Qwen vocabulary.

    ``own_quantize``: its model class is ``TinyQuantLMHeadModel``, which has a
    ``quantize(bits)`` of its own like ChatGLM2/3 and Baichuan (same weights).
    """
    root.mkdir(parents=True, exist_ok=True)
    for name in CODE_FILES + (QUANT_FILES if own_quantize else ()):
        shutil.copyfile(HERE / name, root / name)
    model_ref = ("modeling_tinyquant.TinyQuantLMHeadModel" if own_quantize
                 else "modeling_tinyqwen.TinyQWenLMHeadModel")
    settings = {"vocab_size": vocab_size, "hidden_size": 32, "num_attention_heads": 4, "num_hidden_layers": 2,
                "intermediate_size": 64, "seq_length": 48, "use_logn_attn": True}
    settings.update(config)
    write_json(root / "config.json", {
        "architectures": ["QWenLMHeadModel"],
        "auto_map": {"AutoConfig": "configuration_tinyqwen.TinyQWenConfig",
                     "AutoModelForCausalLM": model_ref},
        "model_type": "qwen",
        **settings,
    })
    write_json(root / "generation_config.json", {
        "chat_format": "chatml", "eos_token_id": 151643, "pad_token_id": 151643,
        "max_window_size": 6144, "max_new_tokens": 512, "do_sample": True, "top_k": 0, "top_p": 0.8,
    })
    if qwen_vocab:
        from fixtures_families import qwen_tiktoken_path

        shutil.copyfile(qwen_tiktoken_path(), root / "qwen.tiktoken")
    model = build_model(root, seed=seed)
    save_weights(model.state_dict(), root, shards=shards, weights=weights)
    return root


def build_model(root: Path, *, seed: int = 0):
    """The stand-in class built from the directory's config with seeded random weights."""
    import torch

    package = _import_as_package(root)
    config = package.configuration_tinyqwen.TinyQWenConfig.from_pretrained(str(root))
    model_cls = package.modeling_tinyqwen.TinyQWenLMHeadModel
    config.max_length = config.seq_length
    if not hasattr(model_cls, "get_head_mask"):
        model_cls.get_head_mask = lambda self, mask, layers: [None] * layers
    torch.manual_seed(seed)
    model = model_cls(config)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() > 1:
                param.normal_(0.0, 0.5)
    return model.eval()


def _import_as_package(root: Path):
    """The directory's .py files as a throw-away package (without transformers' import check)."""
    import importlib
    import sys
    import types

    name = f"llm_tui_standin_{abs(hash(str(root)))}"
    package = types.ModuleType(name)
    package.__path__ = [str(root)]
    sys.modules[name] = package
    for module in ("configuration_tinyqwen", "modeling_tinyqwen"):
        setattr(package, module, importlib.import_module(f"{name}.{module}"))
    return package


def save_weights(state: dict, root: Path, *, shards: int = 1, weights: str = "safetensors") -> None:
    import torch

    state = {k: v.detach().contiguous().clone() for k, v in state.items()}
    names = sorted(state)
    if weights == "bin":
        torch.save(state, root / "pytorch_model.bin")
        return
    from safetensors.torch import save_file

    if shards == 1:
        save_file(state, str(root / "model.safetensors"), metadata={"format": "pt"})
        return
    weight_map = {}
    for index in range(shards):
        part = names[index::shards]
        file = f"model-{index + 1:05d}-of-{shards:05d}.safetensors"
        save_file({k: state[k] for k in part}, str(root / file), metadata={"format": "pt"})
        weight_map.update({k: file for k in part})
    write_json(root / "model.safetensors.index.json", {"metadata": {}, "weight_map": weight_map})


class ListSink:
    """The TurnSink interface, recording plainly (for calling a runner directly)."""

    def __init__(self, stop_ids=(), stop_after=None):
        self.stop_ids = list(stop_ids)
        self.captured: list[int] = []
        self.tokens: list[int] = []
        self.stop_after = stop_after
        self.event = threading.Event()
        self.scorer = None  # no per-token probabilities asked for
        self.infos: list = []

    def capture(self, ids):
        if not self.captured:
            self.captured.extend(int(i) for i in ids)

    def reused(self, tokens, cache=None):
        self.cached_tokens = tokens

    def token(self, token_id, info=None):
        self.tokens.append(int(token_id))
        self.infos.append(info)
        if self.stop_after is not None and len(self.tokens) >= self.stop_after:
            self.event.set()

    @property
    def stopped(self):
        return self.event.is_set()
