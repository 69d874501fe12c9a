"""Stand-in for a remote-code model (llm-tui tests; not any vendor's file).

Shaped like the checkpoints llm-tui must run: its own forward signature,
tuple-of-tuples caches laid out (batch, seq, heads, dim), buffers computed
in ``__init__`` and not saved (buffers ``inv_freq``, ``logn``, ``masked_bias``; the
plain tensor attribute ``scale``), a call
to ``get_head_mask`` (gone from transformers 5), a read of
``config.max_length`` (gone from transformers 5 configs), and a streaming
method that imports ``transformers_stream_generator``. Like Qwen v1's
``modeling_qwen.py`` it imports ``einops`` at the top, so loading it needs the
package the install must provide.
"""

import math

import torch
from einops import rearrange
from torch import nn
from transformers import PreTrainedModel

from .configuration_tinyqwen import TinyQWenConfig


class TinyRMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        normed = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.type_as(x) * self.weight


class TinyRotary(nn.Module):
    def __init__(self, dim, base):
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, positions):
        freqs = torch.outer(positions.float(), self.inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos()[None, :, None, :], emb.sin()[None, :, None, :]


def rotate(x, cos, sin):
    half = x.shape[-1] // 2
    turned = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return (x.float() * cos + turned.float() * sin).type_as(x)


class TinyAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.c_attn = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.c_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=False)
        self.use_logn_attn = config.use_logn_attn
        logn = [math.log(i, config.seq_length) if i > config.seq_length else 1.0 for i in range(1, 4096)]
        self.register_buffer("logn", torch.tensor(logn)[None, :, None, None], persistent=False)
        self.register_buffer("masked_bias", torch.tensor(-1e4), persistent=False)
        self.scale = torch.tensor(1.0 / math.sqrt(self.head_dim))  # a plain tensor attribute, not a buffer

    def forward(self, hidden, rotary, layer_past=None, head_mask=None, use_cache=False):
        batch, length, _ = hidden.shape
        q, k, v = self.c_attn(hidden).split(hidden.shape[-1], dim=2)
        q = q.view(batch, length, self.heads, self.head_dim)
        k = k.view(batch, length, self.heads, self.head_dim)
        v = v.view(batch, length, self.heads, self.head_dim)
        cos, sin = rotary
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        if layer_past is not None:
            k = torch.cat((layer_past[0], k), dim=1)
            v = torch.cat((layer_past[1], v), dim=1)
        present = (k, v) if use_cache else None
        if self.use_logn_attn:
            start = k.shape[1] - q.shape[1]
            q = q * self.logn[:, start:k.shape[1], :, :].type_as(q)
        q, k, v = (t.permute(0, 2, 1, 3) for t in (q, k, v))
        scores = torch.matmul(q, k.transpose(-1, -2)) * self.scale.to(q.device, q.dtype)
        total = k.shape[2]
        causal = torch.ones(total, total, dtype=torch.bool, device=q.device).tril()[total - length:, :]
        scores = torch.where(causal, scores, self.masked_bias.to(scores.dtype))
        weights = torch.softmax(scores.float(), dim=-1).type_as(v)
        if head_mask is not None:
            weights = weights * head_mask
        out = rearrange(torch.matmul(weights, v), "b h s d -> b s (h d)")
        return self.c_proj(out), present


class TinyBlock(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.ln_1 = TinyRMSNorm(config.hidden_size, config.layer_norm_epsilon)
        self.attn = TinyAttention(config)
        self.ln_2 = TinyRMSNorm(config.hidden_size, config.layer_norm_epsilon)
        self.w1 = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.w2 = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.c_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, hidden, rotary, layer_past=None, head_mask=None, use_cache=False):
        attn, present = self.attn(self.ln_1(hidden), rotary, layer_past, head_mask, use_cache)
        hidden = hidden + attn
        normed = self.ln_2(hidden)
        hidden = hidden + self.c_proj(self.w1(normed) * torch.nn.functional.silu(self.w2(normed)))
        return hidden, present


class TinyQWenPreTrainedModel(PreTrainedModel):
    config_class = TinyQWenConfig
    base_model_prefix = "transformer"
    _no_split_modules = ["TinyBlock"]

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.data.normal_(mean=0.0, std=0.02)


class TinyQWenModel(TinyQWenPreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.wte = nn.Embedding(config.vocab_size, config.hidden_size)
        self.rotary_emb = TinyRotary(config.hidden_size // config.num_attention_heads, config.rotary_emb_base)
        self.h = nn.ModuleList([TinyBlock(config) for _ in range(config.num_hidden_layers)])
        self.ln_f = TinyRMSNorm(config.hidden_size, config.layer_norm_epsilon)
        self.post_init()

    def get_input_embeddings(self):
        return self.wte

    def forward(self, input_ids, past_key_values=None, position_ids=None, head_mask=None, use_cache=False):
        past_length = 0 if past_key_values is None else past_key_values[0][0].shape[1]
        if position_ids is None:
            position_ids = torch.arange(past_length, past_length + input_ids.shape[1], device=input_ids.device)
        rotary = self.rotary_emb(position_ids.reshape(-1))
        head_mask = self.get_head_mask(head_mask, self.config.num_hidden_layers)
        hidden = self.wte(input_ids)
        presents = ()
        for index, block in enumerate(self.h):
            layer_past = None if past_key_values is None else past_key_values[index]
            hidden, present = block(hidden, rotary, layer_past, head_mask[index], use_cache)
            presents = presents + (present,)
        return self.ln_f(hidden), (presents if use_cache else None)


class TinyQWenLMHeadModel(TinyQWenPreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.max_sequence_length = config.max_length
        self.transformer = TinyQWenModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.transformer.wte

    def forward(self, input_ids, past_key_values=None, position_ids=None, head_mask=None, use_cache=False):
        hidden, presents = self.transformer(input_ids, past_key_values, position_ids, head_mask, use_cache)
        return self.lm_head(hidden), presents

    def chat_stream(self, tokenizer, query, history, system="You are a helpful assistant.", stop_words_ids=None,
                    logits_processor=None, generation_config=None, **kwargs):
        from transformers_stream_generator.main import NewGenerationMixin

        raise RuntimeError(f"unreachable with {NewGenerationMixin}")
