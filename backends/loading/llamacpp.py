"""A GGUF file as llama.cpp runs it (llama-cpp-python, the ``llamacpp`` extra): quantized as it is,
in this process, with llama.cpp's own tokenizer.

The prompt is the GGUF's own chat template, rendered the way transformers'
``apply_chat_template`` renders one (Jinja, in a sandbox) and tokenized by
llama.cpp itself, so the IDs the inspector shows are the IDs llama.cpp
evaluates. ``GgufTokenizer`` gives llama.cpp's vocabulary the small surface
``ChatTemplateFamily`` reads (spans, pieces, warnings come for free).
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

from backends.core.errors import MissingPackageError, ModelLoadError, UsageError
from backends.core.packages import import_problem, installed
from backends.core.spec import ModelSpec
from backends.prompt.families.template import ChatTemplateFamily


def llamacpp_installed() -> bool:
    """llama-cpp-python can run here: installed, and its native library loads."""
    return installed("llama_cpp") and llamacpp_problem() is None


def llamacpp_problem() -> str | None:
    """Why llama-cpp-python, installed, does not load here, in one line (None: it loads, or it is
    not installed). Its import loads the native library, which can fail (built for another CPU,
    a missing libllama.so or CUDA runtime) with OSError or RuntimeError rather than ImportError."""
    problem = import_problem("llama_cpp")
    return f"llama.cpp is installed but does not load ({problem})" if problem else None


def require_llamacpp() -> None:
    """Before anything is read for llama.cpp: one line when it is missing or does not load."""
    if not installed("llama_cpp"):
        raise MissingPackageError("llama-cpp-python", "running a GGUF file with llama.cpp", extra="llamacpp")
    problem = llamacpp_problem()
    if problem:
        raise ModelLoadError(problem, "reinstall llama-cpp-python for this machine, or use --engine generate "
                                      "(transformers)")


def load_gguf(path: Path, spec: ModelSpec, progress=None):
    """``Llama`` over a GGUF file: a context as long as the model's, all threads, GPU layers from
    ``--n-gpu-layers`` (``spec.n_gpu_layers``)."""
    require_llamacpp()
    from llama_cpp import Llama
    if progress:
        progress(f"loading {path.name} with llama.cpp", None)
    try:
        # n_ctx 0: the context the model was trained with, as the GGUF says.
        return Llama(model_path=str(path), n_ctx=0, n_batch=512, n_gpu_layers=spec.n_gpu_layers,
                     n_threads=max(1, os.cpu_count() or 1), verbose=False, seed=0)
    except (ValueError, RuntimeError, OSError) as err:
        raise ModelLoadError(f"llama.cpp could not load '{path.name}': {err}",
                             "check that the file is a complete GGUF model (re-download it), or use "
                             "--engine generate (transformers)") from None


class GgufTokenizer:
    """llama.cpp's tokenizer and the GGUF's chat template, as ``ChatTemplateFamily`` reads a tokenizer."""

    def __init__(self, llm) -> None:
        self.llm = llm
        meta = llm.metadata
        self.chat_template = meta.get("tokenizer.chat_template")
        self.eos_token_id = llm.token_eos()
        self.bos_token_id = llm.token_bos()
        self.bos_token = self._text_of(self.bos_token_id)
        self.eos_token = self._text_of(self.eos_token_id)
        self._special: dict[int, bool] = {}
        self._template = None

    def _text_of(self, token_id: int) -> str:
        if token_id is None or token_id < 0:
            return ""
        return self.llm.detokenize([token_id], special=True).decode("utf-8", errors="replace")

    # -- what ChatTemplateFamily and TokenPieces read -------------------------------------------

    def apply_chat_template(self, messages: list[dict], *, tokenize: bool = False,
                            add_generation_prompt: bool = True) -> str:
        if self._template is None:
            from jinja2.sandbox import ImmutableSandboxedEnvironment

            def raise_exception(message):
                raise UsageError(f"the chat template says: {message}")

            env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
            env.globals["raise_exception"] = raise_exception
            env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
            self._template = env.from_string(self.chat_template)
        return self._template.render(messages=messages, add_generation_prompt=add_generation_prompt,
                                     bos_token=self.bos_token, eos_token=self.eos_token)

    def __call__(self, text: str, *, add_special_tokens: bool = False, return_offsets_mapping: bool = False):
        ids = self.llm.tokenize(text.encode("utf-8"), add_bos=add_special_tokens, special=True)
        out = {"input_ids": ids}
        if return_offsets_mapping:
            out["offset_mapping"] = self._offsets(text, ids)
        return out

    def _offsets(self, text: str, ids: list[int]) -> list[tuple[int, int]]:
        """Character span of each token in ``text``, from the bytes llama.cpp gives each one."""
        raw = text.encode("utf-8")
        char_at = [0] * (len(raw) + 1)
        position = 0
        for index, ch in enumerate(text):
            size = len(ch.encode("utf-8"))
            for k in range(size):
                char_at[position + k] = index
            position += size
        char_at[len(raw)] = len(text)
        out, start = [], 0
        for token in ids:
            end = min(start + len(self.token_bytes(token)), len(raw))
            out.append((char_at[start], char_at[end]))
            start = end
        return out

    def token_bytes(self, token_id: int) -> bytes:
        return self.llm.detokenize([token_id], special=True)

    def is_special(self, token_id: int) -> bool:
        """A control token: llama.cpp writes it only when asked for special tokens."""
        known = self._special.get(token_id)
        if known is None:
            plain = self.llm.detokenize([token_id], special=False)
            known = self._special[token_id] = plain == b"" and self.token_bytes(token_id) != b""
        return known

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return self.llm.detokenize(list(ids), special=not skip_special_tokens).decode("utf-8", errors="replace")

    def convert_ids_to_tokens(self, token_id: int) -> str:
        return self.token_bytes(token_id).decode("utf-8", errors="replace")

    def get_vocab(self) -> dict[str, int]:
        """The end-of-turn tokens the family's warnings look for, where this vocabulary has them
        (reading all of a GGUF's vocabulary token by token would be slow)."""
        found = {}
        for text in ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>"):
            ids = self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
            if len(ids) == 1 and self.is_special(ids[0]):
                found[text] = ids[0]
        return found


def gguf_family(llm) -> ChatTemplateFamily:
    """The prompt family of a GGUF run by llama.cpp: its own template, llama.cpp's tokenizer."""
    tokenizer = GgufTokenizer(llm)
    if not tokenizer.chat_template:
        raise UsageError("this GGUF file has no chat template (tokenizer.chat_template)",
                         "use a chat/instruct GGUF, or --engine generate with a checkpoint that has one")
    eos = [tokenizer.eos_token_id]
    eot = llm.metadata.get("tokenizer.ggml.eot_token_id")
    if eot is not None and int(eot) not in eos:
        eos.append(int(eot))
    return ChatTemplateFamily(tokenizer, name="gguf (llama.cpp)", max_context=llm.n_ctx(), eos_ids=eos)
