"""The int8 forward pass of the bundled all-MiniLM-L6-v2 against the float one, on real text, model alone.

Two jobs:

1. ``--calibrate``: find the feed-forward outlier channels. The GELU outputs that feed each layer's down
   projection are mostly under ~5, but a few channels reach ~25; onnxruntime's dynamic quantization
   scales a product's whole activation tensor at once, so those few set the step for all. The script
   runs the float graph over one corpus (the Python library docs by default: not one of the file
   search evaluation's corpora) and prints, per layer, the channels with the largest magnitude, in the
   form ``minilm_onnx.DOWN_OUTLIERS`` holds.
2. Always: compare variants on held-out corpora (the Git and SQLite manuals): cosine of each window's
   vector with the float model's, how often each window's nearest neighbour stays the same (vectors
   computed one window a call, as the server does), and pieces per second on one thread over 32
   windows, one a call and in one batch of 32 (best of five rounds).

    python bench/minilm_int8.py                  # compare, with the shipped outlier channels
    python bench/minilm_int8.py --calibrate      # recompute them first (and compare with those)

Needs the Debian packages python3-doc, git-doc and sqlite3-doc (as the other file search benchmarks).
"""

from __future__ import annotations

import argparse
import glob
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from assistantd.tools.file_search import minilm_onnx
from assistantd.tools.file_search.embed import local_model_dir
from assistantd.tools.file_search.parse import html_to_text

CORPORA = {
    "python": "/usr/share/doc/python3.11/html/library/*.html",
    "git": "/usr/share/doc/git-doc/*.html",
    "sqlite": "/usr/share/doc/sqlite3/*.html",
}
WINDOW = 200  # the ingestion grid's window (chunk.py)


def windows(tokenizer: object, pattern: str, count: int, seed: int) -> list[list[int]]:
    """``count`` windows of 200 word pieces from the pages of a corpus, in a seeded random page order."""
    files = sorted(glob.glob(pattern))
    random.Random(seed).shuffle(files)
    out: list[list[int]] = []
    for name in files:
        text = html_to_text(Path(name).read_text(errors="replace"))
        ids = tokenizer.encode(text, add_special_tokens=False).ids  # type: ignore[attr-defined]
        for start in range(0, max(1, len(ids) - WINDOW // 4), WINDOW):
            out.append([101, *ids[start : start + WINDOW], 102])
            if len(out) == count:
                return out
    return out


def batches(seqs: list[list[int]], size: int = 32):  # type: ignore[no-untyped-def]
    for start in range(0, len(seqs), size):
        part = seqs[start : start + size]
        width = max(map(len, part))
        ids = np.zeros((len(part), width), np.int64)
        mask = np.zeros_like(ids)
        for row, seq in enumerate(part):
            ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1
        yield ids, mask


def session(graph: bytes):  # type: ignore[no-untyped-def]
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(graph, options, providers=["CPUExecutionProvider"])


def calibrate(graph: bytes, seqs: list[list[int]], top: int) -> list[list[int]]:
    """Per layer, the ``top`` channels of the down projections' input with the largest magnitude."""
    import onnx

    model = onnx.load_from_string(graph)
    inputs = [n.input[0] for n in model.graph.node if n.name.endswith(".output.dense") and ".attention." not in n.name]
    for name in inputs:
        model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    run = session(model.SerializeToString())
    peak = [np.zeros(0, np.float32) for _ in inputs]
    for ids, mask in batches(seqs):
        outs = run.run(inputs, {"input_ids": ids, "attention_mask": mask})
        tokens = mask.astype(bool)  # padding positions carry no real activations
        for layer, out in enumerate(outs):
            seen = np.abs(out[tokens]).max(0)
            peak[layer] = seen if peak[layer].size == 0 else np.maximum(peak[layer], seen)
    for layer, p in enumerate(peak):
        order = np.argsort(-p)
        print(f"layer {layer}: max {p[order[0]]:.1f}, {top}th {p[order[top - 1]]:.1f}, median {np.median(p):.2f}")
    return [sorted(int(c) for c in np.argsort(-p)[:top]) for p in peak]


def vectors(graph: bytes, seqs: list[list[int]]) -> np.ndarray:
    """One sequence a call, as the server runs the model (minilm_onnx.OnnxMiniLM._encode)."""
    run = session(graph)
    out = np.concatenate([run.run(["pooled"], {"input_ids": i, "attention_mask": m})[0] for i, m in batches(seqs, 1)])
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def speed(graph: bytes, seqs: list[list[int]], size: int) -> float:
    """Pieces a second over the first 32 windows in batches of ``size``, best of five rounds."""
    run = session(graph)
    parts = list(batches(seqs[:32], size))
    run.run(["pooled"], {"input_ids": parts[0][0], "attention_mask": parts[0][1]})
    best = min(_timed(run, parts) for _ in range(5))
    return float(sum(int(m.sum()) for _, m in parts)) / best


def _timed(run: object, parts: list[tuple[np.ndarray, np.ndarray]]) -> float:
    start = time.perf_counter()
    for ids, mask in parts:
        run.run(["pooled"], {"input_ids": ids, "attention_mask": mask})  # type: ignore[attr-defined]
    return time.perf_counter() - start


def quantize_down_float(graph: bytes, layers: int) -> bytes:
    """The previous int8 option: onnxruntime's quantizer on the float graph, down projections left float."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        source, target = Path(tmp, "f.onnx"), Path(tmp, "q.onnx")
        source.write_bytes(graph)
        down = [f"encoder.layer.{i}.output.dense" for i in range(layers)]
        quantize_dynamic(
            source, target, weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=["MatMul"],
            nodes_to_exclude=down,
        )  # fmt: skip
        return target.read_bytes()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calibrate", action="store_true", help="recompute the outlier channels (Python docs)")
    p.add_argument("--calibration-windows", type=int, default=256)
    p.add_argument("--top", type=int, default=len(minilm_onnx.DOWN_OUTLIERS[0]))
    p.add_argument("--windows", type=int, default=256, help="per held-out corpus")
    args = p.parse_args()
    from tokenizers import Tokenizer

    model_dir = local_model_dir()
    if model_dir is None:
        raise SystemExit("the bundled model is missing")
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.no_truncation()
    float_graph = minilm_onnx.build_graph(model_dir)
    outliers: list[list[int]] = [list(c) for c in minilm_onnx.DOWN_OUTLIERS]
    if args.calibrate:
        seqs = windows(tokenizer, CORPORA["python"], args.calibration_windows, seed=1)
        print(f"calibration: {len(seqs)} windows of the Python library docs")
        outliers = calibrate(float_graph, seqs, args.top)
        print("DOWN_OUTLIERS = (")
        for channels in outliers:
            print(f"    ({', '.join(map(str, channels))}),")
        print(")")
        shipped = [set(c) for c in minilm_onnx.DOWN_OUTLIERS]
        print(
            "shared with the shipped channels per layer:",
            [len(set(c) & s) for c, s in zip(outliers, shipped, strict=True)],
        )
    layers = len(outliers)
    variants = {
        "float": float_graph,
        "int8, every product": minilm_onnx.build_graph(model_dir, int8=True),
        "int8, down projections float": quantize_down_float(float_graph, layers),
        "int8, outlier channels float": minilm_onnx.build_graph(model_dir, outliers, int8=True),
    }
    held_out = {name: windows(tokenizer, CORPORA[name], args.windows, seed=2) for name in ("git", "sqlite")}
    reference = {name: vectors(float_graph, seqs) for name, seqs in held_out.items()}
    head = f"{'cos mean':>9s} {'cos min':>8s} {'same NN':>8s} {'pieces/s':>9s} {'batched 32':>10s}"
    print(f"\n{'variant':32s} {'corpus':7s} {head}")
    for label, graph in variants.items():
        rate, batched = speed(graph, held_out["git"], 1), speed(graph, held_out["git"], 32)
        for name, seqs in held_out.items():
            got = vectors(graph, seqs)
            ref = reference[name]
            cos = (got * ref).sum(1)
            a, b = ref @ ref.T, got @ got.T
            np.fill_diagonal(a, -9)
            np.fill_diagonal(b, -9)
            same = float(np.mean(a.argmax(1) == b.argmax(1)))
            print(f"{label:32s} {name:7s} {cos.mean():9.5f} {cos.min():8.5f} {same:8.3f} {rate:9.0f} {batched:10.0f}")


if __name__ == "__main__":
    main()
