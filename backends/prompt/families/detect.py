"""Pick a prompt family from the files in a model directory.

Only files are read; nothing in the directory is executed and the network is
never touched. Qwen (v1), ChatGLM3 and Baichuan2 get trust-free families
rebuilt from their vocab files; everything else goes through the checkpoint's
chat template (:class:`~backends.prompt.families.template.ChatTemplateFamily`)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from backends.checkpoint.remote_code import needs_remote_code
from backends.core.errors import (
    MissingPackageError,
    ModelLoadError,
    RemoteCodeRefused,
    UsageError,
)
from backends.core.files import read_json
from backends.prompt.families.baichuan import Baichuan2Family
from backends.prompt.families.base import PromptFamily
from backends.prompt.families.chatglm import ChatGLM3Family
from backends.prompt.families.generation_json import read_generation_json
from backends.prompt.families.qwen import QwenFamily
from backends.prompt.families.sp_tokens import int_setting
from backends.prompt.families.template import ChatTemplateFamily

#: Families that are rebuilt from vocab files, no remote code, no transformers.
TRUST_FREE = ("qwen", "chatglm3", "baichuan2")
#: Families llm-tui recognises but cannot build prompts for.
UNSUPPORTED = {
    "chatglm": "ChatGLM-6B (v1) prompts are not supported",
    "chatglm2": "ChatGLM2 prompts are not supported",
}
#: Display names for transformers-native model types that route to the chat template.
_TEMPLATE_NAMES = {
    "qwen2": "qwen2", "qwen2_moe": "qwen2", "qwen3": "qwen3", "qwen3_moe": "qwen3",
    "glm": "glm4", "glm4": "glm4", "glm4_moe": "glm4",
    "llama": "llama", "mistral": "mistral", "mixtral": "mistral",
    "gemma": "gemma", "gemma2": "gemma", "gemma3": "gemma", "gemma3_text": "gemma",
    "phi3": "phi3", "internlm2": "internlm2", "deepseek_v2": "deepseek", "deepseek_v3": "deepseek",
}
_VOCAB_FILES = ("tokenizer.json", "tokenizer.model", "qwen.tiktoken", "vocab.json", "ice_text.model")
_TIKTOKEN_LINE = re.compile(rb"^[A-Za-z0-9+/]+=* \d+\r?$")


@dataclass
class ModelFiles:
    """What detection reads from a model directory."""

    path: Path
    config: dict
    tokenizer_config: dict
    generation_config: dict
    #: Why generation_config.json was left out (not JSON), for the family's warnings; None when read.
    generation_note: str | None = None

    def has(self, name: str) -> bool:
        return (self.path / name).is_file()

    @property
    def model_type(self) -> str:
        return str(self.config.get("model_type") or "").lower()

    @property
    def architectures(self) -> list[str]:
        archs = self.config.get("architectures") or []
        return [a for a in archs if isinstance(a, str)]

    def names(self) -> str:
        """Lower-cased names the checkpoint gives itself (for telling versions apart)."""
        keys = ("_name_or_path", "name_or_path")
        return " ".join(str(d.get(k, "")) for d in (self.config, self.tokenizer_config) for k in keys).lower()

    def chat_template(self) -> str:
        template = self.tokenizer_config.get("chat_template")
        if isinstance(template, list):
            template = " ".join(str(t.get("template", "")) for t in template if isinstance(t, dict))
        if isinstance(template, str) and template:
            return template
        if self.has("chat_template.jinja"):
            return (self.path / "chat_template.jinja").read_text(encoding="utf-8", errors="replace")
        if self.has("chat_template.json"):
            data = read_json(self.path / "chat_template.json")
            if isinstance(data.get("chat_template"), str):
                return data["chat_template"]
        return ""


def load_files(model_dir: str | os.PathLike) -> ModelFiles:
    """Validate ``model_dir`` and read its JSON configs."""
    path = Path(model_dir).expanduser()
    if not path.exists():
        raise ModelLoadError(f"model directory not found: {path}",
                             "check the path, or give a model alias or Hugging Face cache id")
    if not path.is_dir():
        raise ModelLoadError(f"{path} is a file, not a model directory",
                             "point at the folder that holds config.json and the tokenizer files")
    files = ModelFiles(path, read_json(path / "config.json"), read_json(path / "tokenizer_config.json"),
                       *read_generation_json(path))
    if not (files.config or files.tokenizer_config or any(files.has(n) for n in _VOCAB_FILES)):
        raise ModelLoadError(f"{path} is not a model directory (no config.json, tokenizer_config.json "
                             "or vocab file)", "point at the folder that holds config.json and the tokenizer files")
    return files


def detect_family(model_dir: str | os.PathLike) -> str:
    """The family name for the checkpoint in ``model_dir``, from its files alone.

    ``qwen``, ``chatglm3`` and ``baichuan2`` are built trust-free; ``yi``,
    ``qwen2``, ``qwen3``, ``glm4``, ``llama``, ``smollm``, ``mistral`` ... and
    ``template`` use the checkpoint's chat template; ``chatglm``/``chatglm2``
    are recognised but unsupported; ``base`` means no chat format was found.
    """
    return _detect(load_files(model_dir))


def _detect(files: ModelFiles) -> str:
    mtype, archs = files.model_type, files.architectures
    if mtype == "qwen" or any(a.lower().startswith("qwenlm") for a in archs) or (
            not mtype and files.has("qwen.tiktoken")):
        return "qwen"
    if mtype == "chatglm" or any(a.startswith("ChatGLM") for a in archs):
        return _chatglm_version(files)
    if mtype == "baichuan" or any(a.lower().startswith("baichuan") for a in archs):
        return "baichuan2"
    template = files.chat_template()
    if not template:
        return "base"
    if mtype in ("yi",) or _is_yi(files):
        return "yi"
    if mtype == "llama" and _is_smollm(files, template):
        return "smollm"
    return _TEMPLATE_NAMES.get(mtype, "template")


def _chatglm_version(files: ModelFiles) -> str:
    tok_class = str(files.tokenizer_config.get("tokenizer_class") or "")
    if tok_class == "ChatGLM4Tokenizer" or _is_tiktoken_file(files.path / "tokenizer.model"):
        return "glm4"
    if files.has("ice_text.model") and not files.has("tokenizer.model"):
        return "chatglm"
    code = files.path / "tokenization_chatglm.py"
    if code.is_file():
        text = code.read_text(encoding="utf-8", errors="replace")
        return "chatglm3" if "<|user|>" in text else "chatglm2"
    if "<|user|>" in files.chat_template() or "chatglm3" in files.names():
        return "chatglm3"
    if "chatglm2" in files.names():
        return "chatglm2"
    return "chatglm3"


def _is_tiktoken_file(path: Path) -> bool:
    if not path.is_file():
        return False
    with path.open("rb") as fh:
        first = fh.readline(256)
    return bool(_TIKTOKEN_LINE.match(first.rstrip(b"\n")))


def _added_tokens(files: ModelFiles) -> dict[int, str]:
    """Added tokens by id, from tokenizer_config.json and tokenizer.json."""
    found: dict[int, str] = {}
    for key, value in (files.tokenizer_config.get("added_tokens_decoder") or {}).items():
        if isinstance(value, dict) and str(key).isdigit() and isinstance(value.get("content"), str):
            found[int(key)] = value["content"]
    if not found and files.has("tokenizer.json"):
        head = (files.path / "tokenizer.json").read_text(encoding="utf-8", errors="replace")[:200_000]
        for m in re.finditer(r'\{\s*"id"\s*:\s*(\d+)\s*,\s*"content"\s*:\s*"((?:[^"\\]|\\.)*)"', head):
            found.setdefault(int(m.group(1)), m.group(2))
    return found


def _is_yi(files: ModelFiles) -> bool:
    """Yi's vocabulary puts <|im_start|> <|im_end|> <|im_sep|> at 6, 7, 8; <|im_sep|>
    on a Llama-architecture checkpoint is Yi's alone."""
    added = _added_tokens(files)
    if added.get(6) == "<|im_start|>" and added.get(7) == "<|im_end|>" and added.get(8) == "<|im_sep|>":
        return True
    return files.model_type == "llama" and "<|im_sep|>" in added.values()


def _is_smollm(files: ModelFiles, template: str) -> bool:
    if "smollm" in files.names():
        return True
    return files.config.get("vocab_size") == 49152 and "<|im_start|>" in template


def context_length(model_dir: str | os.PathLike) -> int | None:
    """The model's context window from config.json (or tokenizer_config.json), if stated."""
    files = load_files(model_dir)
    return _context_length(files)


def _context_length(files: ModelFiles) -> int | None:
    return int_setting((files.config, "max_position_embeddings"), (files.config, "seq_length"),
                       (files.config, "model_max_length"), (files.config, "n_positions"),
                       (files.tokenizer_config, "model_max_length"), default=None)


# -- building a family ---------------------------------------------------------
def family_for_dir(model_dir: str | os.PathLike, *, trust_remote_code: bool = False,
                   max_context: int | None = None) -> PromptFamily:
    """The prompt family for ``model_dir``, built from local files only.

    Qwen (v1), ChatGLM3 and Baichuan2 never run the checkpoint's code, whatever
    ``trust_remote_code`` says. Other checkpoints load their tokenizer with
    ``AutoTokenizer.from_pretrained(dir, local_files_only=True)``; its code runs
    only with ``trust_remote_code=True``.
    """
    files = load_files(model_dir)
    name = _detect(files)
    if name == "qwen":
        return QwenFamily.from_dir(files.path, max_context=max_context)
    if name == "chatglm3":
        return ChatGLM3Family.from_dir(files.path, max_context=max_context)
    if name == "baichuan2":
        return Baichuan2Family.from_dir(files.path, max_context=max_context)
    if name in UNSUPPORTED:
        raise ModelLoadError(f"{UNSUPPORTED[name]} ({files.path})", "use ChatGLM3 or GLM-4")
    if name == "base":
        raise UsageError(f"{files.path} has no chat template and is not a family llm-tui knows",
                         "use a chat/instruct checkpoint (one whose tokenizer_config.json has a chat_template)")
    tokenizer = _auto_tokenizer(files, trust_remote_code)
    return ChatTemplateFamily(tokenizer, name=name, max_context=max_context or _context_length(files),
                              eos_ids=_eos_ids(files), notes=[files.generation_note] if files.generation_note else [])


def _eos_ids(files: ModelFiles) -> list[int]:
    eos = files.generation_config.get("eos_token_id")
    if isinstance(eos, bool):
        return []
    if isinstance(eos, int):
        return [eos]
    if isinstance(eos, list):
        return [i for i in eos if isinstance(i, int) and not isinstance(i, bool)]
    return []


def _auto_tokenizer(files: ModelFiles, trust_remote_code: bool):
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise MissingPackageError("transformers", "loading this checkpoint's tokenizer") from None
    try:
        return AutoTokenizer.from_pretrained(str(files.path), trust_remote_code=trust_remote_code,
                                             local_files_only=True)
    except Exception as err:  # transformers raises ValueError, OSError, KeyError ...
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        custom = "trust_remote_code" in str(err) or bool(files.tokenizer_config.get("auto_map"))
        if not trust_remote_code and custom:
            code = ", ".join(p.name for p in needs_remote_code(files.path)) or "custom code"
            raise RemoteCodeRefused(f"the tokenizer in {files.path} needs its own Python code ({code})",
                                    "pass --trust-remote-code to run it") from None
        raise ModelLoadError(f"cannot load the tokenizer in {files.path}: {first}",
                             "check that the tokenizer files are complete") from None
