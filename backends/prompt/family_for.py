"""The tokenizer side of a model: its prompt family, without loading weights.

``llm-tui inspect`` and the engine both get their family here, so the preview
the inspector shows and the IDs a run sends come from the same code.
"""

from __future__ import annotations

from backends.checkpoint.locate import Located, locate
from backends.core.spec import ModelSpec
from backends.prompt.families.base import PromptFamily
from backends.prompt.families.detect import family_for_dir
from backends.prompt.families.template import ChatTemplateFamily


def family_for(located: Located, *, trust_remote_code: bool = False, tokenizer=None) -> PromptFamily:
    """The prompt family for a located model (``tokenizer``: reuse one already loaded)."""

    if located.gguf_file:
        from transformers import AutoTokenizer

        tokenizer = tokenizer or AutoTokenizer.from_pretrained(str(located.path), gguf_file=located.gguf_file)
        return ChatTemplateFamily(tokenizer, name="gguf", eos_ids=[tokenizer.eos_token_id])

    # Each family knows its own context length (Qwen v1: seq_length, not max_position_embeddings).
    return family_for_dir(located.path, trust_remote_code=trust_remote_code)


def open_family(spec: ModelSpec, progress=None) -> tuple[PromptFamily, Located]:
    located = locate(spec, progress)
    return family_for(located, trust_remote_code=spec.trust_remote_code), located
