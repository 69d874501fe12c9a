"""Stand-in for a remote-code model with a ``quantize(bits)`` of its own (llm-tui tests; not any vendor's file).

The tiny Qwen-like model of ``modeling_tinyqwen`` plus the method the way
ChatGLM2/3 and Baichuan offer it: ``model.quantize(4)`` imports the
checkpoint's quantization module inside the method, swaps the linear layers
of every block for weight-only quantized ones and returns the model.
"""

from .modeling_tinyqwen import TinyQWenLMHeadModel, TinyQWenModel


class TinyQuantModel(TinyQWenModel):
    """The same transformer, defined in this module: a vendor's model classes live in one file,
    and llm-tui's fixes are applied to the classes of the model class's module."""


class TinyQuantLMHeadModel(TinyQWenLMHeadModel):
    def __init__(self, config):
        super().__init__(config)
        self.transformer = TinyQuantModel(config)
        self.post_init()

    def quantize(self, bits: int, empty_init=False, device=None, **kwargs):
        from .quantization_tiny import quantize_blocks

        if getattr(self, "quantized", False):
            return self
        quantize_blocks(self.transformer.h, bits, device=device)
        self.quantized = True
        self.config.quantization_bit = bits
        return self
