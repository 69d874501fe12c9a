"""Stand-in for a remote-code config class (llm-tui tests; not any vendor's file)."""

from transformers import PretrainedConfig


class TinyQWenConfig(PretrainedConfig):
    model_type = "qwen"

    def __init__(self, vocab_size=151936, hidden_size=32, num_attention_heads=4, num_hidden_layers=2,
                 intermediate_size=64, seq_length=48, rotary_emb_base=10000.0, layer_norm_epsilon=1e-6,
                 use_logn_attn=True, **kwargs):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_attention_heads = num_attention_heads
        self.num_hidden_layers = num_hidden_layers
        self.intermediate_size = intermediate_size
        self.seq_length = seq_length
        self.rotary_emb_base = rotary_emb_base
        self.layer_norm_epsilon = layer_norm_epsilon
        self.use_logn_attn = use_logn_attn
        super().__init__(**kwargs)
