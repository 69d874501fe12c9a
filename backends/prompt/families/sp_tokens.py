"""Shared helpers for trust-free families: vocab files, settings, SentencePiece.

Nothing here runs a checkpoint's own Python code: the families read the vocab
files and the JSON configs directly and rebuild the vendor's prompt from them."""

from __future__ import annotations

from pathlib import Path

from backends.core.errors import MissingPackageError, ModelLoadError
from backends.prompt.view import Span, piece_from_bytes


def require_file(model_dir: Path, name: str, what: str) -> Path:
    path = model_dir / name
    if not path.is_file():
        raise ModelLoadError(f"{model_dir} has no {name} ({what})",
                             f"download the complete checkpoint, including {name}")
    return path


def int_setting(*sources: tuple[dict, str], default: int | None) -> int | None:
    """The first positive integer found among ``(mapping, key)`` pairs."""
    for mapping, key in sources:
        value = mapping.get(key)
        if isinstance(value, bool):
            continue
        if isinstance(value, int) and 0 < value < 10**8:
            return value
    return default


def token_content(value) -> str | None:
    """A special token's text from a tokenizer_config entry (a string or an AddedToken dict)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    return None


class SentencePieceVocab:
    """A SentencePiece model read from ``tokenizer.model``: encode, byte-exact pieces, decode."""

    def __init__(self, path: Path) -> None:
        try:
            import sentencepiece
        except ImportError:
            raise MissingPackageError("sentencepiece", "reading a SentencePiece tokenizer.model") from None
        self.path = path
        self.sp = sentencepiece.SentencePieceProcessor()
        try:
            self.sp.Load(str(path))
        except (OSError, RuntimeError) as err:
            raise ModelLoadError(f"{path} is not a SentencePiece model ({err})",
                                 "re-download tokenizer.model from the checkpoint") from None
        self.size = self.sp.get_piece_size()

    def encode(self, text: str) -> list[int]:
        """``SentencePieceProcessor.encode(text)``: no BOS/EOS, dummy prefix as the model says."""
        return list(self.sp.encode(text))

    def piece(self, token_id: int) -> str:
        return self.sp.id_to_piece(token_id)

    def id_of(self, piece: str) -> int:
        return self.sp.piece_to_id(piece)

    def is_meta(self, token_id: int) -> bool:
        """Control and unknown pieces (``<s>``, ``</s>``, ``<unk>``, reserved controls)."""
        return bool(self.sp.is_control(token_id) or self.sp.is_unknown(token_id))

    def token_bytes(self, token_id: int) -> bytes:
        if not 0 <= token_id < self.size:
            return b""
        piece = self.sp.id_to_piece(token_id)
        if self.sp.is_byte(token_id):
            return bytes([int(piece[3:5], 16)])
        return piece.replace("\u2581", " ").encode("utf-8")

    def readable(self, token_id: int) -> str:
        return piece_from_bytes(self.token_bytes(token_id))

    def decode(self, ids: list[int]) -> str:
        return self.sp.decode([i for i in ids if 0 <= i < self.size and not self.is_meta(i)])


def clip_spans(spans: list[Span], cut: int) -> list[Span]:
    """Spans after the first ``cut`` tokens were removed from the front."""
    out = []
    for span in spans:
        start, end = max(span.start - cut, 0), span.end - cut
        if end > start:
            out.append(Span(span.index, span.role, start, end))
    return out
