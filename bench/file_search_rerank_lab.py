"""Offline measurement of reranking ideas over the candidates the search endpoint returns.

For each question of ``file_search_eval.py`` this asks an ingested store (SQLite, ``--label``) the 50 best
chunks with ``ranker: "none"`` through ``POST /v1/vector_stores/{id}/search``, then reads every chunk's
vector, file and position from the store's database file (read-only), so that a reranker using evidence
the endpoint does not show (a file's other chunks, its title, the query's neighbours) can be tried in
seconds instead of an ingestion. The keyword part of each result is recovered from its fused score
(``0.8 * cosine + 0.2 * keyword``). The ``fused``/``spread`` rows reproduce the endpoint's ``none`` and
``default-2024-11-15`` figures, which checks the reconstruction; ``lead (auto)`` is the shipped ``auto``
within about 0.005 MRR (it knows a first chunk's keyword part only when that chunk is a candidate).
Judged as ``file_search_eval.py`` judges.

    python bench/file_search_eval.py --split dev                 # the stores must exist
    python bench/file_search_rerank_lab.py --split dev
"""

from __future__ import annotations

import argparse
import json
import pickle
import re
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
import file_search_eval as ev  # noqa: E402

from assistantd.tools.file_search.rank import VECTOR_WEIGHT  # noqa: E402


def store_chunks(data_dir: Path) -> dict[str, Any]:
    dbs = [p for p in data_dir.glob("*.db") if p.stat().st_size > 0] + list(data_dir.glob("*.sqlite*"))
    if not dbs:
        sys.exit(f"no database file in {data_dir}")
    conn = sqlite3.connect(f"file:{dbs[0]}?mode=ro", uri=True)
    rows = conn.execute(
        "SELECT c.seq, c.vsf_seq, c.chunk_index, c.text, c.embedding, f.filename FROM vector_store_chunks c "
        "JOIN vector_store_files f ON f.seq = c.vsf_seq ORDER BY c.vsf_seq, c.chunk_index"
    ).fetchall()
    conn.close()
    return {
        "seq": np.asarray([r[0] for r in rows]),
        "file": np.asarray([r[1] for r in rows]),
        "index": np.asarray([r[2] for r in rows]),
        "text": [r[3] for r in rows],
        "vec": np.stack([np.frombuffer(r[4], np.float32) for r in rows]),
        "filename": [r[5] for r in rows],
    }


def collect(name: str, label: str, embedder: Any, folder: Path | None = None) -> dict[str, Any]:
    cache = ev.RESULTS / "lab" / f"{name}-{label}.pkl"
    corpus = ev.load_corpus(name, folder)
    if cache.exists():
        got: dict[str, Any] = pickle.loads(cache.read_bytes())
        known = {q["id"] for q in got["questions"]}
        if known == {q["id"] for q in corpus["questions"]}:
            return got
    data_dir = ev.RESULTS / "sqlite" / f"{name}-{label}"
    state = json.loads((data_dir / "ingested.json").read_text())
    chunks = store_chunks(data_dir)
    by_text: dict[tuple[str, str], int] = {}
    for i, (t, f) in enumerate(zip(chunks["text"], chunks["filename"], strict=True)):
        by_text.setdefault((f, t), i)
    headers = {"Authorization": "Bearer eval", "OpenAI-Beta": "assistants=v2"}
    found = []
    with ev.serve(data_dir, "", 2, []) as (base, _), httpx.Client(base_url=base, timeout=300, headers=headers) as http:
        for q in corpus["questions"]:
            body = {"query": q["q"], "max_num_results": 50, "ranking_options": {"ranker": "none"}}
            r = http.post(f"/vector_stores/{state['store_id']}/search", json=body)
            r.raise_for_status()
            found.append([(by_text[(d["filename"], d["content"][0]["text"])], d["score"]) for d in r.json()["data"]])
    qv = embedder.embed([q["q"] for q in corpus["questions"]])
    got = {"questions": corpus["questions"], "found": found, "qv": qv, "chunks": chunks}
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_bytes(pickle.dumps(got))
    return got


# --- rerankers: (data, question index) -> chunk ids best first -----------------------------------


def spread(order: list[int], file_of: np.ndarray, head: int = 5) -> list[int]:
    first, later, taken = [], [], set()
    for c in order:
        f = int(file_of[c])
        if len(first) < head and f not in taken:
            taken.add(f)
            first.append(c)
        else:
            later.append(c)
    return first + later


def judge_order(d: dict[str, Any], qi: int, order: list[int]) -> dict[str, float]:
    ch = d["chunks"]
    res = [{"filename": ch["filename"][c], "content": [{"text": ch["text"][c]}]} for c in order[:20]]
    return ev.judge(res, d["questions"][qi])


def title_of(text: str) -> str:
    return text.split("\n", 1)[0].strip()


def prepare(d: dict[str, Any], embedder: Any) -> None:
    ch = d["chunks"]
    files = sorted(set(ch["file"].tolist()))
    first = {}
    for i, f in enumerate(ch["file"].tolist()):
        if f not in first or ch["index"][i] < ch["index"][first[f]]:
            first[f] = i
    titles = [title_of(ch["text"][first[f]]) for f in files]
    tv = embedder.embed(titles)
    d["title_vec"] = {f: tv[k] for k, f in enumerate(files)}
    d["titles"] = dict(zip(files, titles, strict=True))
    # each file's chunks
    members: dict[int, list[int]] = {}
    for i, f in enumerate(ch["file"].tolist()):
        members.setdefault(f, []).append(i)
    d["members"] = members
    cent = {}
    for f, ids in members.items():
        v = ch["vec"][ids].mean(0)
        cent[f] = v / np.linalg.norm(v)
    d["centroid"] = cent
    d["head"] = {f: ch["vec"][first[f]] for f in files}
    d["first"] = first
    d["mean"] = ch["vec"].mean(0)


def candidates(d: dict[str, Any], qi: int) -> tuple[list[int], np.ndarray, np.ndarray, np.ndarray]:
    ids = [c for c, _ in d["found"][qi]]
    fused = np.asarray([s for _, s in d["found"][qi]])
    cos = np.clip(d["chunks"]["vec"][ids] @ d["qv"][qi], 0, 1)
    kw = np.clip((fused - VECTOR_WEIGHT * cos) / (1 - VECTOR_WEIGHT), 0, 1)
    return ids, fused, cos, kw


Reranker = Callable[[dict[str, Any], int], list[int]]


def r_fused(d: dict[str, Any], qi: int) -> list[int]:
    return [c for c, _ in d["found"][qi]]


def r_spread(d: dict[str, Any], qi: int) -> list[int]:
    return spread(r_fused(d, qi), d["chunks"]["file"])


def by_score(
    ids: list[int], score: np.ndarray, file_of: np.ndarray, do_spread: bool = True, head: int = 5
) -> list[int]:
    order = [ids[k] for k in np.argsort(-score, kind="stable")]
    return spread(order, file_of, head) if do_spread else order


def make_lead(a: float = 0.4, head: int = 10) -> Reranker:
    """What ``auto`` ships: ``a`` x the fused score of the file's first chunk, then ``head`` spread places."""

    def run(d: dict[str, Any], qi: int) -> list[int]:
        ids, fused, _cos, kw = candidates(d, qi)
        fo = d["chunks"]["file"]
        kw_of = dict(zip(ids, kw, strict=True))
        opening = []
        for c in ids:
            f = int(fo[c])
            cosine = float(np.clip(d["head"][f] @ d["qv"][qi], 0, 1))
            opening.append(VECTOR_WEIGHT * cosine + (1 - VECTOR_WEIGHT) * kw_of.get(d["first"][f], 0.0))
        return by_score(ids, fused + a * np.asarray(opening), fo, head=head)

    return run


def make_title(a: float, w: float = VECTOR_WEIGHT) -> Reranker:
    def run(d: dict[str, Any], qi: int) -> list[int]:
        ids, fused, _cos, _kw = candidates(d, qi)
        f = d["chunks"]["file"][ids]
        tc = np.clip(np.asarray([d["title_vec"][int(x)] @ d["qv"][qi] for x in f]), 0, 1)
        return by_score(ids, fused + a * tc, d["chunks"]["file"])

    return run


def make_centroid(a: float) -> Reranker:
    def run(d: dict[str, Any], qi: int) -> list[int]:
        ids, fused, _cos, _kw = candidates(d, qi)
        f = d["chunks"]["file"][ids]
        cc = np.clip(np.asarray([d["centroid"][int(x)] @ d["qv"][qi] for x in f]), 0, 1)
        return by_score(ids, fused + a * cc, d["chunks"]["file"])

    return run


def make_head(a: float) -> Reranker:
    """Add ``a`` x the cosine of the file's first chunk (its title and opening) to each of its chunks."""

    def run(d: dict[str, Any], qi: int) -> list[int]:
        ids, fused, _cos, _kw = candidates(d, qi)
        f = d["chunks"]["file"][ids]
        hc = np.clip(np.asarray([d["head"][int(x)] @ d["qv"][qi] for x in f]), 0, 1)
        return by_score(ids, fused + a * hc, d["chunks"]["file"])

    return run


def make_filebest(a: float, k: int = 2, within: bool = True) -> Reranker:
    """Add ``a`` x the mean fused score of the file's next best candidates (other than this chunk)."""

    def run(d: dict[str, Any], qi: int) -> list[int]:
        ids, fused, _cos, _kw = candidates(d, qi)
        fo = d["chunks"]["file"]
        per: dict[int, list[float]] = {}
        for c, s in zip(ids, fused, strict=True):
            per.setdefault(int(fo[c]), []).append(float(s))
        bonus = []
        for c, s in zip(ids, fused, strict=True):
            others = sorted(per[int(fo[c])], reverse=True)
            others.remove(float(s))
            others = others[:k]
            bonus.append(sum(others) / k if others else 0.0)
        return by_score(ids, fused + a * np.asarray(bonus), fo)

    return run


def make_filecos(a: float, k: int = 2) -> Reranker:
    """Add ``a`` x the mean of the k best cosines of the file's chunks (all chunks, not just candidates)."""

    def run(d: dict[str, Any], qi: int) -> list[int]:
        ids, fused, _cos, _kw = candidates(d, qi)
        fo = d["chunks"]["file"]
        cache: dict[int, float] = {}
        bonus = []
        for c in ids:
            f = int(fo[c])
            if f not in cache:
                sims = np.sort(d["chunks"]["vec"][d["members"][f]] @ d["qv"][qi])[::-1]
                cache[f] = float(np.clip(sims[:k], 0, 1).mean())
            bonus.append(cache[f])
        return by_score(ids, fused + a * np.asarray(bonus), fo)

    return run


def make_prf(g: float, k: int = 3, w: float = VECTOR_WEIGHT) -> Reranker:
    """Rocchio: q' = q + g * mean(top-k candidate vectors), cosines recomputed on the candidates."""

    def run(d: dict[str, Any], qi: int) -> list[int]:
        ids, _fused, _cos, kw = candidates(d, qi)
        V = d["chunks"]["vec"][ids]
        q = d["qv"][qi] + g * V[:k].mean(0)
        q /= np.linalg.norm(q)
        cos2 = np.clip(V @ q, 0, 1)
        return by_score(ids, w * cos2 + (1 - w) * kw, d["chunks"]["file"])

    return run


def make_center(b: float, w: float = VECTOR_WEIGHT, scale: float = 1.0) -> Reranker:
    """Cosines after taking ``b`` x the store's mean chunk vector off both sides (the direction every
    chunk shares says little about which one answers), rescaled by ``scale``."""

    def run(d: dict[str, Any], qi: int) -> list[int]:
        ids, _fused, _cos, kw = candidates(d, qi)
        mu = b * d["mean"]
        V = d["chunks"]["vec"][ids] - mu
        q = d["qv"][qi] - mu
        c2 = (V @ q) / (np.linalg.norm(V, axis=1) * np.linalg.norm(q))
        return by_score(ids, w * np.clip(scale * c2, 0, 1) + (1 - w) * kw, d["chunks"]["file"])

    return run


BOILER = re.compile(
    r"^(?:(?:how|what|where|when|why|which|who)\s+(?:do|does|did|can|could|should|would|is|are|will)\s+"
    r"(?:i|we|you|one|it|they|my|the)?\s*|is\s+there\s+(?:a\s+)?(?:way|option|setting|command)\s+to\s+|"
    r"can\s+(?:i|we|you)\s+|could\s+(?:i|we|you)\s+|i\s+want\s+to\s+|what\s+is\s+|what\s+are\s+)",
    re.IGNORECASE,
)


def strip_question(q: str) -> str:
    out = BOILER.sub("", q.strip()).rstrip("?").strip()
    return out or q


def make_stripped(mode: str, w: float = VECTOR_WEIGHT) -> Reranker:
    def run(d: dict[str, Any], qi: int) -> list[int]:
        ids, _fused, cos, kw = candidates(d, qi)
        V = d["chunks"]["vec"][ids]
        c2 = np.clip(V @ d["qv2"][qi], 0, 1)
        c = {"max": np.maximum(cos, c2), "mean": (cos + c2) / 2, "only": c2}[mode]
        return by_score(ids, w * c + (1 - w) * kw, d["chunks"]["file"])

    return run


def make_adaptive(t: float, hi: float) -> Reranker:
    """Trust the vector side more (weight ``hi``) when no candidate matches the keywords well (< t)."""

    def run(d: dict[str, Any], qi: int) -> list[int]:
        ids, _fused, cos, kw = candidates(d, qi)
        w = hi if kw.max() < t else VECTOR_WEIGHT
        return by_score(ids, w * cos + (1 - w) * kw, d["chunks"]["file"])

    return run


def evaluate(ds: list[dict[str, Any]], rr: Reranker, split: str) -> dict[str, float]:
    got, para = [], []
    for d in ds:
        for qi, q in enumerate(d["questions"]):
            if split != "all" and q["split"] != split:
                continue
            m = judge_order(d, qi, rr(d, qi))
            got.append(m)
            if q["kind"] == "paraphrase":
                para.append(m["mrr"])
    out = {k: float(np.mean([g[k] for g in got])) for k in got[0]}
    out["para"] = float(np.mean(para)) if para else float("nan")
    out["n"] = len(got)
    return out


def variants() -> dict[str, Reranker]:
    v: dict[str, Reranker] = {"fused": r_fused, "spread": r_spread, "lead (auto)": make_lead()}
    for a in (0.05, 0.1, 0.2, 0.3):
        v[f"title a={a}"] = make_title(a)
    for a in (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0):
        v[f"head a={a}"] = make_head(a)
    for a in (0.05, 0.1, 0.2):
        v[f"centroid a={a}"] = make_centroid(a)
    for a in (0.1, 0.2, 0.3):
        for k in (1, 2):
            v[f"filebest a={a} k={k}"] = make_filebest(a, k)
    for a in (0.1, 0.2, 0.3):
        for k in (1, 2, 3):
            v[f"filecos a={a} k={k}"] = make_filecos(a, k)
    for mode in ("max", "mean", "only"):
        v[f"stripped {mode}"] = make_stripped(mode)
    for t in (0.3, 0.4, 0.5, 0.6):
        for hi in (0.9, 1.0):
            v[f"adaptive t={t} hi={hi}"] = make_adaptive(t, hi)
    for b in (0.5, 1.0):
        for w in (0.7, 0.8, 0.9):
            v[f"center b={b} w={w}"] = make_center(b, w)
    for g in (0.3, 0.5, 1.0):
        for k in (1, 3, 5):
            v[f"prf g={g} k={k}"] = make_prf(g, k)
    return v


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpora", default="sqlite,git")
    p.add_argument("--label", default="default")
    p.add_argument("--questions", type=Path, default=ev.CORPORA, help="the folder of the corpus files")
    p.add_argument("--split", default="dev")
    p.add_argument("--only", default="", help="variants whose name contains this")
    args = p.parse_args()
    from assistantd.tools.file_search.embed import LocalEmbedder, local_model_dir

    model_dir = local_model_dir()
    if model_dir is None:
        sys.exit("the local embedding model is not installed")
    embedder = LocalEmbedder(model_dir)
    ds = [collect(n, args.label, embedder, args.questions) for n in args.corpora.split(",")]
    for d in ds:
        prepare(d, embedder)
        d["qv2"] = embedder.embed([strip_question(q["q"]) for q in d["questions"]])
    print("| variant | split | n | recall@5 | recall@20 | MRR | passage@20 | paraphrase MRR |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, rr in variants().items():
        if args.only and args.only not in name and name not in ("fused", "spread", "lead (auto)"):
            continue
        for split in args.split.split(","):
            m = evaluate(ds, rr, split)
            print(f"| {name} | {split} | {m['n']} | {m['recall@5']:.3f} | {m['recall@20']:.3f} | {m['mrr']:.3f} | "
                  f"{m['passage@20']:.3f} | {m['para']:.3f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
