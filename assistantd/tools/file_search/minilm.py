"""all-MiniLM-L6-v2 (a 6-layer BERT sentence encoder, 384 dimensions) run in numpy.

The weights are read from ``model.safetensors`` and the text is split by the model's own
``tokenizer.json``; the forward pass is BERT's (embeddings, then six layers of self-attention and a
GELU feed-forward, each followed by a residual and LayerNorm), and the sentence vector is the mean of
the token vectors over the attention mask, L2-normalised, as sentence-transformers computes it. On
the test corpus the vectors agree with sentence-transformers on PyTorch to within 3e-7 per component.

Attention runs one sequence and one head at a time through ``np.dot``: numpy's batched ``matmul``
over many small matrices is several times slower, and so is multi-threaded BLAS on matrices this small,
so BLAS is held to one thread (concurrency comes from running several embedders' calls at once).
"""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

MAX_PIECES = 256  # the model was trained on at most 256 word pieces, [CLS] and [SEP] included
CLS, SEP = 101, 102
BATCH = 16

F32 = NDArray[np.float32]

_blas_limited = False
_blas_lock = threading.Lock()


def _limit_blas_threads() -> None:
    global _blas_limited
    with _blas_lock:
        if _blas_limited:
            return
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=1, user_api="blas")
        _blas_limited = True


def _erf(x: F32) -> F32:
    """erf by Abramowitz and Stegun 7.1.26 (error below 1.5e-7), in place where possible."""
    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + np.float32(0.3275911) * a)
    poly = np.float32(1.061405429) * t
    poly += np.float32(-1.453152027)
    poly *= t
    poly += np.float32(1.421413741)
    poly *= t
    poly += np.float32(-0.284496736)
    poly *= t
    poly += np.float32(0.254829592)
    poly *= t
    np.multiply(a, a, out=a)
    np.negative(a, out=a)
    np.exp(a, out=a)
    poly *= a
    np.subtract(1.0, poly, out=poly)
    poly *= sign
    return poly


def _gelu(h: F32) -> F32:
    out = _erf(h * np.float32(1.0 / math.sqrt(2.0)))
    out += 1.0
    out *= h
    out *= 0.5
    return out


class MiniLM:
    """Sentence vectors from all-MiniLM-L6-v2. Thread-safe: calls share only read-only weights."""

    dims = 384

    def __init__(self, model_dir: Path) -> None:
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        _limit_blas_threads()
        config = json.loads((model_dir / "config.json").read_text())
        w = load_file(str(model_dir / "model.safetensors"))
        self.heads = int(config["num_attention_heads"])
        self.eps = np.float32(config["layer_norm_eps"])
        self.word = w["embeddings.word_embeddings.weight"]
        self.position = w["embeddings.position_embeddings.weight"]
        self.token_type = w["embeddings.token_type_embeddings.weight"][0]
        self.embed_norm = (w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        self.dims = int(config["hidden_size"])
        self.layers: list[dict[str, Any]] = []
        for i in range(int(config["num_hidden_layers"])):
            p = f"encoder.layer.{i}."
            qkv = [w[f"{p}attention.self.{n}.weight"] for n in ("query", "key", "value")]
            self.layers.append(
                {
                    "qkv_w": np.ascontiguousarray(np.concatenate(qkv).T),
                    "qkv_b": np.concatenate([w[f"{p}attention.self.{n}.bias"] for n in ("query", "key", "value")]),
                    "out_w": np.ascontiguousarray(w[f"{p}attention.output.dense.weight"].T),
                    "out_b": w[f"{p}attention.output.dense.bias"],
                    "norm1": (w[f"{p}attention.output.LayerNorm.weight"], w[f"{p}attention.output.LayerNorm.bias"]),
                    "up_w": np.ascontiguousarray(w[f"{p}intermediate.dense.weight"].T),
                    "up_b": w[f"{p}intermediate.dense.bias"],
                    "down_w": np.ascontiguousarray(w[f"{p}output.dense.weight"].T),
                    "down_b": w[f"{p}output.dense.bias"],
                    "norm2": (w[f"{p}output.LayerNorm.weight"], w[f"{p}output.LayerNorm.bias"]),
                }
            )
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()

    # --- public ----------------------------------------------------------------------------------

    def embed(self, texts: list[str]) -> F32:
        """One unit vector per text. A text longer than the model reads is cut into windows of at most
        254 word pieces and gets the normalised mean of their vectors."""
        if not texts:
            return np.zeros((0, self.dims), np.float32)
        encodings = self.tokenizer.encode_batch(texts, add_special_tokens=False)
        room = MAX_PIECES - 2
        pieces: list[list[int]] = []
        owner: list[int] = []
        for i, enc in enumerate(encodings):
            ids = enc.ids
            count = max(1, math.ceil(len(ids) / room))
            for k in range(count):
                a, b = len(ids) * k // count, len(ids) * (k + 1) // count
                pieces.append([CLS, *ids[a:b], SEP])
                owner.append(i)
        vectors = self._encode(pieces)
        if len(pieces) == len(texts):
            return vectors
        out = np.zeros((len(texts), self.dims), np.float32)
        np.add.at(out, np.asarray(owner), vectors)
        return _normalise(out)

    # --- the forward pass ------------------------------------------------------------------------

    def _encode(self, sequences: list[list[int]]) -> F32:
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
        out = np.empty((len(sequences), self.dims), np.float32)
        for start in range(0, len(order), BATCH):
            batch = order[start : start + BATCH]
            width = max(len(sequences[i]) for i in batch)
            ids = np.zeros((len(batch), width), np.int64)
            mask = np.zeros((len(batch), width), np.float32)
            for row, i in enumerate(batch):
                ids[row, : len(sequences[i])] = sequences[i]
                mask[row, : len(sequences[i])] = 1.0
            out[batch] = self._forward(ids, mask)
        return out

    def _norm(self, x: F32, params: tuple[F32, F32]) -> F32:
        mean = x.mean(-1, keepdims=True)
        x = x - mean
        var = np.mean(x * x, axis=-1, keepdims=True)
        x /= np.sqrt(var + self.eps)
        x *= params[0]
        x += params[1]
        return x

    def _forward(self, ids: NDArray[np.int64], mask: F32) -> F32:
        b, t = ids.shape
        d, h = self.dims, self.heads
        hd = d // h
        x = self.word[ids] + self.position[:t][None] + self.token_type
        x = self._norm(x.reshape(b * t, d), self.embed_norm)
        bias = (1.0 - mask) * np.float32(-1e9)
        scale = np.float32(1.0 / math.sqrt(hd))
        scores = np.empty((h, t, t), np.float32)
        context = np.empty((b, t, d), np.float32)
        head_out = np.empty((t, hd), np.float32)
        for layer in self.layers:
            qkv = np.dot(x, layer["qkv_w"])
            qkv += layer["qkv_b"]
            qkv = qkv.reshape(b, t, 3, h, hd)
            for s in range(b):
                q = np.ascontiguousarray(qkv[s, :, 0].transpose(1, 0, 2))
                q *= scale
                k = np.ascontiguousarray(qkv[s, :, 1].transpose(1, 2, 0))
                v = np.ascontiguousarray(qkv[s, :, 2].transpose(1, 0, 2))
                for j in range(h):
                    np.dot(q[j], k[j], out=scores[j])
                scores += bias[s]
                scores -= scores.max(-1, keepdims=True)
                np.exp(scores, out=scores)
                scores /= scores.sum(-1, keepdims=True)
                for j in range(h):
                    np.dot(scores[j], v[j], out=head_out)
                    context[s, :, j * hd : (j + 1) * hd] = head_out
            attended = np.dot(context.reshape(b * t, d), layer["out_w"])
            attended += layer["out_b"]
            attended += x
            x = self._norm(attended, layer["norm1"])
            up = np.dot(x, layer["up_w"])
            up += layer["up_b"]
            down = np.dot(_gelu(up), layer["down_w"])
            down += layer["down_b"]
            down += x
            x = self._norm(down, layer["norm2"])
        tokens = x.reshape(b, t, d) * mask[..., None]
        pooled = tokens.sum(1) / np.maximum(mask.sum(1, keepdims=True), 1e-9)
        return _normalise(pooled.astype(np.float32))


def _normalise(v: F32) -> F32:
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return (v / np.maximum(norms, 1e-12)).astype(np.float32)
