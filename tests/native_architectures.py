"""Tiny random-weight checkpoints of the transformers-native architectures the
families table lists (Qwen2, Llama for Yi, GLM-4), each with its family's chat
template written the way the released checkpoints write it.

The vocabulary is the real SmolLM2 tokenizer with each family's special tokens
added, so prompts tokenise exactly as a real tokenizer would.
"""

from __future__ import annotations

from pathlib import Path

QWEN25_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if not (message.role == 'system' and loop.first) %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

YI_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set system_message = messages[0]['content'] %}{% endif %}"
    "{% if system_message is defined %}{{ system_message }}{% endif %}"
    "{% for message in messages %}{% set content = message['content'] %}"
    "{% if message['role'] == 'user' %}{{ '<|im_start|>user\\n' + content + '<|im_end|>\\n<|im_start|>assistant\\n' }}"
    "{% elif message['role'] == 'assistant' %}{{ content + '<|im_end|>' + '\\n' }}{% endif %}{% endfor %}"
)

GLM4_TEMPLATE = (
    "[gMASK]<sop>{% for item in messages %}"
    "{% if item['role'] == 'system' %}<|system|>\n{{ item['content'] }}"
    "{% elif item['role'] == 'user' %}<|user|>\n{{ item['content'] }}"
    "{% elif item['role'] == 'assistant' %}<|assistant|>\n{{ item['content'] }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

ARCHITECTURES = {
    "qwen2": (QWEN25_TEMPLATE, [], "<|im_end|>"),
    "yi": (YI_TEMPLATE, ["<|im_sep|>"], "<|im_end|>"),
    "glm4": (GLM4_TEMPLATE, ["[gMASK]", "<sop>", "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>"], "<|user|>"),
}


def build(kind: str, demo_dir: Path, out: Path, seed: int = 0) -> Path:
    import torch
    from transformers import AutoTokenizer

    template, specials, eos = ARCHITECTURES[kind]
    tokenizer = AutoTokenizer.from_pretrained(str(demo_dir))
    if specials:
        tokenizer.add_special_tokens({"additional_special_tokens": specials})
    tokenizer.chat_template = template
    eos_id = tokenizer.convert_tokens_to_ids(eos)
    vocab = len(tokenizer)
    small = dict(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                 eos_token_id=eos_id, pad_token_id=eos_id)
    torch.manual_seed(seed)
    if kind == "qwen2":
        from transformers import Qwen2Config, Qwen2ForCausalLM

        model = Qwen2ForCausalLM(Qwen2Config(**small))
    elif kind == "yi":
        from transformers import LlamaConfig, LlamaForCausalLM

        model = LlamaForCausalLM(LlamaConfig(**small))
    else:
        from transformers import Glm4Config, Glm4ForCausalLM

        model = Glm4ForCausalLM(Glm4Config(**small, head_dim=16))
    model.generation_config.eos_token_id = eos_id
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
