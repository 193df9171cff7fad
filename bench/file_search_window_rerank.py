"""Would scoring a chunk by its best window help? An offline measurement for the next reranking stage.

Today a chunk's vector is the token-weighted mean of its 200-token windows' vectors (``pipeline.py``), and
the window vectors are not stored. This script measures, before any schema change, what a reranker that
also used the windows would give on ``file_search_eval.py``'s questions:

1. it embeds every window of a corpus itself, with the bundled model on the same 800/400 grid the server
   uses (cached under bench/results/file_search_eval/windows/; about 2-3 minutes a corpus on 2 cores);
2. it asks a running store (the one ``file_search_eval.py --label LABEL`` ingested on SQLite) the 50 best
   chunks of every question through ``POST /v1/vector_stores/{id}/search`` with ``ranker: "none"``;
3. it matches each result's text to its chunk, recovers the chunk's cosine (mean vector) and its keyword
   part from the fused score (``0.8 * cosine + 0.2 * keyword``), and reranks the 50 by
   ``w * (a * best window cosine + (1 - a) * mean cosine) + (1 - w) * keyword``, with and without the
   one-chunk-per-file spread of ``ranker: "auto"``; judged as ``file_search_eval.py`` judges.

The ``fused`` rows reproduce the endpoint's own figures for ``none`` and ``auto`` exactly, which checks
the reconstruction.

    python bench/file_search_eval.py --label base --split dev        # the stores must exist
    python bench/file_search_window_rerank.py --label base
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
import file_search_eval as ev  # noqa: E402

from assistantd.tools.file_search.rank import VECTOR_WEIGHT  # noqa: E402

CACHE = ev.RESULTS / "windows"


def windows(name: str, corpus: dict[str, Any], embedder: Any) -> tuple[np.ndarray, dict[str, list[int]], np.ndarray]:
    """Every window vector of the corpus, {chunk text: its window ids}, and the windows' token counts."""
    from assistantd.tools.file_search.chunk import plan_chunks
    from assistantd.tools.file_search.embed import chunk_tokenizer
    from assistantd.tools.file_search.parse import parse

    tok = chunk_tokenizer()
    texts: list[str] = []
    tokens: list[int] = []
    chunks: dict[str, list[int]] = {}
    for f in corpus["files"]:
        plan = plan_chunks(parse(Path(corpus["root"]) / f, f).text, tok, max_tokens=800, overlap=400, window_tokens=254)
        base = len(texts)
        texts += [plan.window_text(w) for w in plan.windows]
        tokens += [w.tokens for w in plan.windows]
        for c in plan.chunks:
            chunks[plan.chunk_text(c)] = [base + i for i in c.windows]
    path = CACHE / f"{name}.npy"
    if path.exists():
        vectors = np.load(path)
    else:
        vectors = np.zeros((len(texts), 384), np.float32)

        def run(ids: list[int]) -> None:
            for k in range(0, len(ids), 16):
                vectors[ids[k : k + 16]] = embedder.embed([texts[i] for i in ids[k : k + 16]])

        with ThreadPoolExecutor(2) as pool:
            list(pool.map(run, [list(range(i, len(texts), 2)) for i in range(2)]))
        CACHE.mkdir(parents=True, exist_ok=True)
        np.save(path, vectors)
    return vectors, chunks, np.asarray(tokens, np.float32)


def results(name: str, corpus: dict[str, Any], label: str) -> list[dict[str, Any]]:
    data_dir = ev.RESULTS / "sqlite" / f"{name}-{label}"
    state = json.loads((data_dir / "ingested.json").read_text())
    headers = {"Authorization": "Bearer eval", "OpenAI-Beta": "assistants=v2"}
    out = []
    with ev.serve(data_dir, "", 2, []) as (base, _), httpx.Client(base_url=base, timeout=300, headers=headers) as http:
        for q in corpus["questions"]:
            body = {"query": q["q"], "max_num_results": 50, "ranking_options": {"ranker": "none"}}
            r = http.post(f"/vector_stores/{state['store_id']}/search", json=body)
            r.raise_for_status()
            out.append({"q": q, "data": r.json()["data"]})
    return out


def mixed(it: dict[str, Any], a: float, w: float) -> float:
    return float(w * (a * it["max"] + (1 - a) * it["mean"]) + (1 - w) * it["kw"])


def spread(order: list[dict[str, Any]], head: int = 5) -> list[dict[str, Any]]:
    first, later, taken = [], [], set()
    for it in order:
        if len(first) < head and it["file"] not in taken:
            taken.add(it["file"])
            first.append(it)
        else:
            later.append(it)
    return first + later


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpora", default="sqlite,git")
    p.add_argument("--label", default="base")
    args = p.parse_args()
    from assistantd.tools.file_search.embed import LocalEmbedder, local_model_dir

    model_dir = local_model_dir()
    if model_dir is None:
        sys.exit("the local embedding model is not installed")
    embedder = LocalEmbedder(model_dir)
    rows: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
    for name in args.corpora.split(","):
        corpus = ev.load_corpus(name)
        vectors, chunks, tokens = windows(name, corpus, embedder)
        found = results(name, corpus, args.label)
        queries = embedder.embed([r["q"]["q"] for r in found])
        for r, v in zip(found, queries, strict=True):
            items = []
            for d in r["data"]:
                text = d["content"][0]["text"]
                ids = chunks[text]  # KeyError: the store was chunked otherwise than 800/400
                w = vectors[ids]
                mean = (w * tokens[ids, None]).sum(0)
                mean /= np.linalg.norm(mean)
                cos = float(np.clip(mean @ v, 0, 1))
                best = float(np.clip((w @ v).max(), 0, 1))
                keyword = (d["score"] - VECTOR_WEIGHT * cos) / (1 - VECTOR_WEIGHT)
                items.append({"file": d["filename"], "text": text, "fused": d["score"], "mean": cos, "max": best,
                              "kw": keyword})  # fmt: skip
            rows.append((r["q"], items))
    variants: dict[str, Any] = {"fused": lambda it: it["fused"]}
    for a in (0.25, 0.5, 0.75, 1.0):
        for w in (0.7, 0.8):
            variants[f"best window a={a}, w={w}"] = functools.partial(mixed, a=a, w=w)
    print("| scoring | spread | split | n | recall@5 | recall@20 | MRR | passage@20 | paraphrase MRR |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for vname, score in variants.items():
        for spreading in (False, True):
            for split in ("dev", "test"):
                got, para = [], []
                for q, items in rows:
                    if q["split"] != split:
                        continue
                    order = sorted(items, key=lambda it: -score(it))
                    order = spread(order) if spreading else order
                    m = ev.judge([{"filename": it["file"], "content": [{"text": it["text"]}]} for it in order[:20]], q)
                    got.append(m)
                    if q["kind"] == "paraphrase":
                        para.append(m["mrr"])
                mean = {k: float(np.mean([g[k] for g in got])) for k in got[0]}
                print(f"| {vname} | {'yes' if spreading else 'no'} | {split} | {len(got)} | {mean['recall@5']:.3f} | "
                      f"{mean['recall@20']:.3f} | {mean['mrr']:.3f} | {mean['passage@20']:.3f} | "
                      f"{float(np.mean(para)):.3f} |")  # fmt: skip


if __name__ == "__main__":
    main()
