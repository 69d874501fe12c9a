"""Stand-in for a remote-code checkpoint's quantization module (llm-tui tests; not any vendor's file).

Weight-only quantization in the manner of the ChatGLM2/3 and Baichuan-13B
files: each linear layer of a block becomes a :class:`RowQuantLinear` that
keeps its weight as signed integers with one scale per output row (the
row's largest magnitude maps to the largest integer), int4 packed two to a
byte, and dequantizes the whole weight in ``forward``. Plain torch, so it
runs on the CPU.
"""

import torch
from torch import nn
from torch.nn import functional as F


def pack_int4(values: torch.Tensor) -> torch.Tensor:
    """Signed 4-bit values (-7..7) in int8, two to a byte (low nibble first); an odd last column is padded."""
    if values.shape[1] % 2:
        values = F.pad(values, (0, 1))
    biased = (values + 8).to(torch.uint8)
    return (biased[:, 0::2] | (biased[:, 1::2] << 4)).contiguous()


def unpack_int4(packed: torch.Tensor, columns: int) -> torch.Tensor:
    low = (packed & 0x0F).to(torch.int8) - 8
    high = (packed >> 4).to(torch.int8) - 8
    return torch.stack((low, high), dim=-1).reshape(packed.shape[0], -1)[:, :columns]


class RowQuantLinear(nn.Module):
    def __init__(self, linear: nn.Linear, bits: int, device=None):
        super().__init__()
        if bits not in (4, 8):
            raise ValueError(f"quantize supports 4 or 8 bits, not {bits}")
        weight = linear.weight.detach()
        self.bits = bits
        self.in_features, self.out_features = linear.in_features, linear.out_features
        top = 2 ** (bits - 1) - 1
        scale = weight.abs().amax(dim=1).float().clamp(min=1e-12) / top
        values = torch.clamp(torch.round(weight.float() / scale[:, None]), -top, top).to(torch.int8)
        if bits == 4:
            values = pack_int4(values)
        device = weight.device if device is None else device
        self.register_buffer("qweight", values.to(device))
        self.register_buffer("scale", scale.to(weight.dtype).to(device))
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().to(device),
                                                                  requires_grad=False)

    def weight(self, dtype) -> torch.Tensor:
        values = unpack_int4(self.qweight, self.in_features) if self.bits == 4 else self.qweight
        return values.to(dtype) * self.scale.to(dtype)[:, None]

    def forward(self, x):
        return F.linear(x, self.weight(x.dtype), None if self.bias is None else self.bias.to(x.dtype))


def quantize_blocks(blocks, bits: int, device=None):
    for block in blocks:
        block.attn.c_attn = RowQuantLinear(block.attn.c_attn, bits, device)
        block.attn.c_proj = RowQuantLinear(block.attn.c_proj, bits, device)
        block.w1 = RowQuantLinear(block.w1, bits, device)
        block.w2 = RowQuantLinear(block.w2, bits, device)
        block.c_proj = RowQuantLinear(block.c_proj, bits, device)
    return blocks
