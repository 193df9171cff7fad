"""all-MiniLM-L6-v2's forward pass in onnxruntime, built here from the same ``model.safetensors``.

``minilm.MiniLM`` (numpy) stays the reference: it matches sentence-transformers to 3e-7. This module
writes the very same computation (embeddings, six BERT layers, masked mean pooling) as an ONNX graph
with ``onnx.helper`` when the model is first loaded: nothing is downloaded or converted ahead of time,
and no PyTorch is involved. Tokenization and the splitting of long texts into windows are MiniLM's.

Why: the numpy pass spends most of its time between matrix products (Python-level element-wise
passes with the GIL held), so calls on two threads do not use two cores. onnxruntime runs the whole
graph in C++ with the GIL released; on this project's 2-core machine the model alone on two threads is
~1.3-1.75x faster idle (2.5x+ when the cores are contended), with
vectors equal to numpy's to 1e-5, and two calls at once use both cores (bench/README.md).

``int8=True`` quantizes the weights of the matrix products per output channel (onnxruntime's dynamic
quantization: activations are quantized on the fly), all but the feed-forward down projections. About
1.5x faster again at a cosine of 0.996-0.999 with
the float vectors; vectors are stored under a model name of their own, so they are never compared
with float ones.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from assistantd.tools.file_search.minilm import F32, MiniLM


def build_graph(model_dir: Path) -> bytes:
    """The serialized ONNX model: inputs ``input_ids``/``attention_mask`` (int64, batch x time), output
    ``pooled`` (float, batch x 384), the mean of the last layer's token vectors over the mask."""
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

    def linear(x: str, prefix: str) -> str:
        # torch stores (out, in); MatMul wants (in, out)
        weight = const(f"{prefix}.weight", np.ascontiguousarray(w[f"{prefix}.weight"].T))
        # named for its weights, so quantize() can pick which products stay float
        return op("Add", [op("MatMul", [x, weight], name=prefix), const(f"{prefix}.bias", w[f"{prefix}.bias"])])

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
        # exact GELU, as BERT's: x/2 * (1 + erf(x / sqrt 2))
        gelu = op("Mul", [op("Mul", [up, half]), op("Add", [op("Erf", [op("Mul", [up, root_half])]), one])])
        x = layer_norm(op("Add", [linear(gelu, f"{p}output.dense"), x]), f"{p}output.LayerNorm")
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
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what every onnxruntime since 1.14 reads
    return bytes(model.SerializeToString())  # onnxruntime validates it as it loads it


def quantize(graph: bytes, layers: int) -> bytes:
    """Int8 weights, per output channel, for the matrix products only (the embedding table and the
    LayerNorms stay float: quantizing them costs accuracy and saves no time). The feed-forward down
    projections stay float too: their input is the GELU's output, whose long tail the per-tensor
    activation scale clips; kept float, the vectors' cosine with the float model's rose from 0.9947 to
    0.9977 (minimum 0.989 -> 0.996) at the same speed."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # onnxruntime advises "pre-processing" (shape inference for conv nets) on the root logger; it does
    # nothing for this graph, and the server's log should not carry a foreign warning at every start
    logging.getLogger().addFilter(_drop_preprocessing_advice)
    with tempfile.TemporaryDirectory(prefix="assistantd-minilm-") as tmp:
        source, target = Path(tmp, "float.onnx"), Path(tmp, "int8.onnx")
        source.write_bytes(graph)
        down = [f"encoder.layer.{i}.output.dense" for i in range(layers)]
        quantize_dynamic(
            source,
            target,
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul"],
            nodes_to_exclude=down,
        )
        return target.read_bytes()


def _drop_preprocessing_advice(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("Please consider to run pre-processing before quantization")


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
        graph = build_graph(model_dir)
        if int8:
            graph = quantize(graph, int(config["num_hidden_layers"]))
        options = onnxruntime.SessionOptions()
        # one core a call: ingestion runs as many calls at once as there are cores, and a query's
        # single call is short; intra-op threads on matrices this small cost more than they give
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = onnxruntime.InferenceSession(graph, options, providers=["CPUExecutionProvider"])

    def _forward(self, ids: NDArray[np.int64], mask: F32) -> F32:
        (pooled,) = self.session.run(["pooled"], {"input_ids": ids, "attention_mask": mask.astype(np.int64)})
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.maximum(norms, 1e-12)).astype(np.float32)
