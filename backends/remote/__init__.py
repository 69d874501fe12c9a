"""Running checkpoints that ship their own Python code (Qwen v1, ChatGLM3, Baichuan2 ...).

``load`` builds the checkpoint's model class and reads its weights without
``from_pretrained``; ``fixes`` holds the compatibility fixes applied from
outside at load time; ``buffers`` guards the tensors a model computes in
``__init__`` against silent corruption. The checkpoint's files are never
edited, and nothing runs without the user's consent (``--trust-remote-code``).
"""

from .buffers import BufferReport, guard_buffers, reference_instance
from .load import is_remote_model, load_remote, load_vendor_tokenizer, load_weights, model_class_ref

__all__ = ["BufferReport", "guard_buffers", "is_remote_model", "load_remote", "load_vendor_tokenizer",
           "load_weights", "model_class_ref", "reference_instance"]
