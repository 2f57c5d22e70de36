"""Encoded category vocabularies: GLEE's text side computed once, cached, saved and reloaded.

A category prompt needs two tensors from the CLIP text tower: one class embedding per name (the
classifier of the decoder) and the valid tokens of every name (the early-fusion input). A
:class:`Vocabulary` holds both with the names and the *fingerprint* of the text tower that made them
(tokenizer + text-encoder weights + ``lang_projection``), so that an LVIS-size list is encoded once per
model, kept in a small LRU cache (:class:`VocabularyCache`), or saved to a ``.safetensors`` file that
refuses to run on another model.
"""
from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

FORMAT = "gleekit-vocabulary/1"
TOKENIZER_ID = "clip-bpe-16e6"


class VocabularyMismatchError(ValueError):
    """A vocabulary was encoded by (or tuned for) a different text tower than the model it is used with."""


@dataclass
class Vocabulary:
    """K encoded category names.

    Attributes:
        names: the K names, in label order.
        class_embeddings: [K, C] one embedding per name (C = the model's hidden size, 256 for GLEE).
        fusion_tokens: [T, C] the projected tokens of every name (BOS..EOS), concatenated in name order.
        fingerprint: hex digest of the text tower that produced them (:func:`text_fingerprint`).
    """

    names: tuple[str, ...]
    class_embeddings: torch.Tensor
    fusion_tokens: torch.Tensor
    fingerprint: str

    def __post_init__(self) -> None:
        self.names = tuple(self.names)
        if self.class_embeddings.dim() != 2 or self.class_embeddings.shape[0] != len(self.names):
            raise ValueError(f"class_embeddings must be [K={len(self.names)}, C], "
                             f"got {tuple(self.class_embeddings.shape)}")
        if self.fusion_tokens.dim() != 2 or self.fusion_tokens.shape[1] != self.class_embeddings.shape[1]:
            raise ValueError(f"fusion_tokens must be [T, C={self.class_embeddings.shape[1]}], "
                             f"got {tuple(self.fusion_tokens.shape)}")
        if self.fusion_tokens.shape[0] == 0:
            raise ValueError("fusion_tokens is empty: a vocabulary needs at least one token")

    def __len__(self) -> int:
        return len(self.names)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Vocabulary:
        """The same vocabulary with its tensors on ``device`` / in ``dtype``."""
        return Vocabulary(self.names, self.class_embeddings.to(device=device, dtype=dtype),
                          self.fusion_tokens.to(device=device, dtype=dtype), self.fingerprint)

    def check_fingerprint(self, fingerprint: str) -> None:
        """Raise :class:`VocabularyMismatchError` unless this vocabulary was made by the text tower ``fingerprint``."""
        if fingerprint != self.fingerprint:
            raise VocabularyMismatchError(
                f"this vocabulary ({len(self)} names, e.g. {self.names[0]!r}) was encoded by another text tower "
                f"(fingerprint {self.fingerprint[:12]}…, this model {fingerprint[:12]}…); encode the names again "
                "with this model: model.encode_vocabulary(names) or `gleekit vocab encode`")

    def save(self, path: str | Path) -> Path:
        """Write a ``.safetensors`` file (tensors in float32 + names and fingerprint as metadata)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {"class_embeddings": self.class_embeddings.detach().float().cpu().contiguous(),
                   "fusion_tokens": self.fusion_tokens.detach().float().cpu().contiguous()}
        metadata = {"format": FORMAT, "names": json.dumps(list(self.names)), "fingerprint": self.fingerprint}
        save_file(tensors, str(path), metadata=metadata)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        """Read a file written by :meth:`save`; errors name the file and what is wrong with it."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"vocabulary file {path} does not exist")
        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
                tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        except (SafetensorError, OSError, ValueError) as exc:
            raise ValueError(f"{path} is not a readable safetensors file: {exc}") from exc
        if metadata.get("format") != FORMAT:
            raise ValueError(f"{path} is not a gleekit vocabulary (format {metadata.get('format')!r}, "
                             f"expected {FORMAT!r})")
        missing = {"class_embeddings", "fusion_tokens"} - tensors.keys()
        if missing or "names" not in metadata or "fingerprint" not in metadata:
            raise ValueError(f"{path} lacks {sorted(missing) or 'its names/fingerprint metadata'}")
        try:
            names = json.loads(metadata["names"])
            return cls(names, tensors["class_embeddings"], tensors["fusion_tokens"], metadata["fingerprint"])
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from exc


def text_fingerprint(text_modules: Iterable[tuple[str, torch.Tensor]], max_length: int) -> str:
    """sha256 over the tokenizer id, ``max_length`` and the named tensors (names, dtypes, shapes, bytes)."""
    digest = hashlib.sha256(f"{TOKENIZER_ID}/{max_length}".encode())
    for name, tensor in text_modules:
        data = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}:{data.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(data.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class TextFingerprint:
    """The fingerprint of a model's text tower, recomputed only after its tensors change.

    Tensors are watched through ``(data_ptr, _version)``: loading weights, an optimizer step or ``.to()``
    all change one of them.
    """

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._value = ""

    def __call__(self, text_encoder: nn.Module, lang_projection: torch.Tensor, max_length: int) -> str:
        named = [*text_encoder.state_dict(keep_vars=True).items(), ("lang_projection", lang_projection)]
        key = tuple((name, t.data_ptr(), t._version) for name, t in named) + (max_length,)
        if key != self._key:
            self._value = text_fingerprint(named, max_length)
            self._key = key
        return self._value


class VocabularyCache:
    """LRU cache of encoded vocabularies keyed by (fingerprint, names); ``max_entries`` 0 disables it."""

    def __init__(self, max_entries: int = 8):
        if max_entries < 0:
            raise ValueError(f"max_entries must be >= 0, got {max_entries}")
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[str, tuple[str, ...]], Vocabulary] = OrderedDict()

    def get(self, fingerprint: str, names: Sequence[str]) -> Vocabulary | None:
        key = (fingerprint, tuple(names))
        found = self._entries.get(key)
        if found is not None:
            self._entries.move_to_end(key)
        return found

    def put(self, vocabulary: Vocabulary) -> None:
        if self.max_entries == 0:
            return
        self._entries[(vocabulary.fingerprint, vocabulary.names)] = vocabulary
        self._entries.move_to_end((vocabulary.fingerprint, vocabulary.names))
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
