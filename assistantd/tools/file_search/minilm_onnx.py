"""all-MiniLM-L6-v2's forward pass in onnxruntime, built here from the same ``model.safetensors``.

``minilm.MiniLM`` (numpy) stays the reference: it matches sentence-transformers to 3e-7. This module
writes the very same computation (embeddings, six BERT layers, masked mean pooling) as an ONNX graph
with ``onnx.helper`` when the model is first loaded: nothing is downloaded or converted ahead of time,
and no PyTorch is involved. Tokenization and the splitting of long texts into windows are MiniLM's.

Why: the numpy pass spends most of its time between matrix products (Python-level element-wise
passes with the GIL held), so calls on two threads do not use two cores. onnxruntime runs the whole
graph in C++ with the GIL released, so two calls at once use both cores; with one window a call
(``OnnxMiniLM._encode``) ingestion on this project's 2-core machine runs 1.6-1.7x numpy's in float32,
vectors equal to numpy's to 1e-5 (bench/README.md).

``int8=True`` (the server's default) writes each product with a weight matrix as onnxruntime's
``DynamicQuantizeMatMul``: weights quantized here, symmetric, one scale per output column; activations
quantized on the fly, one scale a tensor. The few outlier channels of each feed-forward layer
(``DOWN_OUTLIERS``) take a small float product of their own so they do not coarsen the others' steps.
The model alone runs 2.3x the float graph on one thread, its vectors at a cosine of 0.997 (0.994 at
worst) with the float ones, and the file search evaluation ranks the same with either, within one
question of 151 on each measure (bench/README.md).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from assistantd.tools.file_search.minilm import F32, MiniLM

# Per layer, the 16 channels of the feed-forward's GELU output (the down projection's input) that reach
# ~8-25 where the others stay under ~5: found by ``bench/minilm_int8.py --calibrate`` over 256 windows
# of the Python library docs (not one of the evaluation's corpora). They are a property of the
# weights, not of the text: on the Git and SQLite manuals, keeping them float gives nearly the vectors
# of keeping the whole down projections float (cosine with the float model 0.9974-0.9976 against
# 0.9979-0.9981) at 1.6x the speed, where quantizing them too gives 0.9945-0.9947.
DOWN_OUTLIERS: tuple[tuple[int, ...], ...] = (
    (329, 433, 691, 826, 829, 856, 915, 984, 1096, 1163, 1170, 1191, 1261, 1337, 1383, 1389),
    (82, 116, 251, 278, 505, 588, 607, 646, 821, 869, 898, 947, 951, 1072, 1184, 1200),
    (145, 218, 304, 311, 389, 393, 606, 805, 874, 1004, 1042, 1166, 1265, 1309, 1445, 1484),
    (117, 201, 228, 287, 318, 322, 358, 456, 548, 662, 750, 1037, 1155, 1238, 1329, 1506),
    (128, 192, 242, 621, 637, 682, 716, 769, 852, 918, 1031, 1097, 1257, 1313, 1321, 1357),
    (81, 119, 256, 372, 423, 486, 541, 745, 784, 923, 959, 1191, 1226, 1297, 1300, 1302),
)


def build_graph(model_dir: Path, split_down: Sequence[Sequence[int]] | None = None, *, int8: bool = False) -> bytes:
    """The serialized ONNX model: inputs ``input_ids``/``attention_mask`` (int64, batch x time), output
    ``pooled`` (float, batch x 384), the mean of the last layer's token vectors over the mask.
    ``split_down``: per layer, channels whose share of the down projection is a product of its own
    (the same result in float). ``int8``: every product with a weight matrix runs on int8 weights,
    all but those channels' own (``DOWN_OUTLIERS`` for the server)."""
    from onnx import TensorProto, helper, numpy_helper
    from safetensors.numpy import load_file

    config = json.loads((model_dir / "config.json").read_text())
    w = load_file(str(model_dir / "model.safetensors"))
    d = int(config["hidden_size"])
    heads = int(config["num_attention_heads"])
    eps = float(config["layer_norm_eps"])
    initializers: list[Any] = []
    nodes: list[Any] = []

    def const(name: str, value: Any) -> str:
        initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def op(kind: str, inputs: list[str], name: str | None = None, **attrs: Any) -> str:
        out = f"n{len(nodes)}"
        nodes.append(helper.make_node(kind, inputs, [out], name=name or out, **attrs))
        return out

    def layer_norm(x: str, prefix: str) -> str:
        gamma = const(f"{prefix}.weight", w[f"{prefix}.weight"])
        beta = const(f"{prefix}.bias", w[f"{prefix}.bias"])
        return op("LayerNormalization", [x, gamma, beta], axis=-1, epsilon=eps)

    def product(x: str, weight: Any, name: str, bias: Any = None, *, quantized: bool = int8) -> str:
        """``x @ weight (+ bias)``, ``weight`` laid out (in, out)."""
        if not quantized:
            out = op("MatMul", [x, const(f"{name}.weight", weight)], name=name)
            return out if bias is None else op("Add", [out, const(f"{name}.bias", bias)])
        # int8 weights, symmetric, one scale per output column; onnxruntime quantizes x on the fly (one
        # scale for the tensor) and adds the bias in the same kernel
        scale = np.maximum(np.abs(weight).max(axis=0), 1e-8) / 127.0
        q = np.clip(np.rint(weight / scale), -127, 127).astype(np.int8)
        inputs = [x, const(f"{name}.qweight", q), const(f"{name}.scale", scale.astype(f32))]
        inputs.append(const(f"{name}.zero", np.zeros(q.shape[1], np.int8)))
        if bias is not None:
            inputs.append(const(f"{name}.bias", bias))
        return op("DynamicQuantizeMatMul", inputs, name=name, domain="com.microsoft")

    def linear(x: str, prefix: str) -> str:
        # torch stores (out, in); MatMul wants (in, out)
        return product(x, w[f"{prefix}.weight"].T, prefix, w[f"{prefix}.bias"])

    i64 = np.int64
    f32 = np.float32
    mask = op("Cast", ["attention_mask"], to=TensorProto.FLOAT)
    width = op("Shape", ["input_ids"], start=1, end=2)
    positions = op(
        "Slice",
        [
            const("position", w["embeddings.position_embeddings.weight"]),
            const("zero", np.array([0], i64)),
            width,
            const("axis0", np.array([0], i64)),
        ],
    )
    x = op("Gather", [const("word", w["embeddings.word_embeddings.weight"]), "input_ids"], axis=0)
    x = op("Add", [op("Add", [x, positions]), const("token_type", w["embeddings.token_type_embeddings.weight"][0])])
    x = layer_norm(x, "embeddings.LayerNorm")
    # padding gets a large negative score before the softmax (batch, 1, 1, time)
    pad = op("Mul", [op("Sub", [const("one", np.array(1, f32)), mask]), const("minus", np.array(-1e4, f32))])
    pad = op("Unsqueeze", [pad, const("axes12", np.array([1, 2], i64))])
    split_heads = const("split_heads", np.array([0, 0, heads, d // heads], i64))
    join_heads = const("join_heads", np.array([0, 0, d], i64))
    scale = const("scale", np.array(1.0 / math.sqrt(d // heads), f32))
    half, one, root_half = (
        const(n, np.array(v, f32)) for n, v in (("half", 0.5), ("one_", 1.0), ("root_half", 0.5**0.5))
    )
    up_width = int(config["intermediate_size"])

    def gelu(up: str, half: str) -> str:
        # exact GELU, as BERT's: x/2 * (1 + erf(x / sqrt 2)); ``half`` is 0.5, or per channel
        return op("Mul", [op("Mul", [up, half]), op("Add", [op("Erf", [op("Mul", [up, root_half])]), one])])

    for i in range(int(config["num_hidden_layers"])):
        p = f"encoder.layer.{i}."

        def heads_of(name: str, perm: list[int], x: str = x, p: str = p) -> str:
            return op("Transpose", [op("Reshape", [linear(x, f"{p}attention.self.{name}"), split_heads])], perm=perm)

        q, k, v = heads_of("query", [0, 2, 1, 3]), heads_of("key", [0, 2, 3, 1]), heads_of("value", [0, 2, 1, 3])
        scores = op("Add", [op("Mul", [op("MatMul", [q, k]), scale]), pad])
        context = op("MatMul", [op("Softmax", [scores], axis=-1), v])
        context = op("Reshape", [op("Transpose", [context], perm=[0, 2, 1, 3]), join_heads])
        x = layer_norm(op("Add", [linear(context, f"{p}attention.output.dense"), x]), f"{p}attention.output.LayerNorm")
        up = linear(x, f"{p}intermediate.dense")
        down = f"{p}output.dense"
        if split_down is None:
            x = layer_norm(op("Add", [linear(gelu(up, half), down), x]), f"{p}output.LayerNorm")
            continue
        # The feed-forward's few outlier channels (GELU outputs up to ~25 where the rest stay under ~5)
        # take their own float product, so the int8 product's per-tensor scale is set by the others.
        # Their half of the GELU is zeroed in the main path by the constant it already multiplies by.
        channels = np.asarray(split_down[i], i64)
        keep = np.full(up_width, 0.5, f32)
        keep[channels] = 0.0
        main = product(gelu(up, const(f"{p}half_kept", keep)), w[f"{down}.weight"].T, down, w[f"{down}.bias"])
        outliers = gelu(op("Gather", [up, const(f"{p}outlier_channels", channels)], axis=2), half)
        side = product(outliers, w[f"{down}.weight"].T[channels], f"{down}.outliers", quantized=False)
        x = layer_norm(op("Add", [op("Add", [main, side]), x]), f"{p}output.LayerNorm")
    summed = op(
        "ReduceSum",
        [
            op("Mul", [x, op("Unsqueeze", [mask, const("axis2", np.array([2], i64))])]),
            const("axis1", np.array([1], i64)),
        ],
        keepdims=0,
    )
    count = op("ReduceSum", [mask, const("axis1_", np.array([1], i64))], keepdims=1)
    nodes.append(helper.make_node("Div", [summed, op("Max", [count, const("tiny", np.array(1e-9, f32))])], ["pooled"]))
    graph = helper.make_graph(
        nodes,
        "all-MiniLM-L6-v2",
        [
            helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "time"])
            for n in ("input_ids", "attention_mask")
        ],
        [helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["batch", d])],
        initializers,
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8  # what every onnxruntime since 1.14 reads
    return bytes(model.SerializeToString())  # onnxruntime validates it as it loads it


class OnnxMiniLM(MiniLM):
    """MiniLM whose forward pass runs in onnxruntime. Thread-safe: ``InferenceSession.run`` is."""

    def __init__(self, model_dir: Path, *, int8: bool = False) -> None:
        import onnxruntime
        from tokenizers import Tokenizer

        config = json.loads((model_dir / "config.json").read_text())
        self.dims = int(config["hidden_size"])
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        graph = build_graph(model_dir, DOWN_OUTLIERS, int8=True) if int8 else build_graph(model_dir)
        options = onnxruntime.SessionOptions()
        # one core a call: ingestion runs as many calls at once as there are cores, and a query's
        # single call is short; intra-op threads on matrices this small cost more than they give
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = onnxruntime.InferenceSession(graph, options, providers=["CPUExecutionProvider"])

    def _encode(self, sequences: list[list[int]]) -> F32:
        """One sequence a call, where the numpy pass batches 32: a sequence's activations (200 x 1536 floats
        at most) stay in the core's cache where a batch's do not, so this is ~1.25x faster in float and
        int8 alike (bench/README.md), with no padding; and int8's activation scales are then each text's
        own, so a vector does not depend on which texts were embedded beside it."""
        out = np.empty((len(sequences), self.dims), np.float32)
        for i, sequence in enumerate(sequences):
            ids = np.asarray([sequence], np.int64)
            out[i] = self._forward(ids, np.ones(ids.shape, np.float32))[0]
        return out

    def _forward(self, ids: NDArray[np.int64], mask: F32) -> F32:
        (pooled,) = self.session.run(["pooled"], {"input_ids": ids, "attention_mask": mask.astype(np.int64)})
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.maximum(norms, 1e-12)).astype(np.float32)
