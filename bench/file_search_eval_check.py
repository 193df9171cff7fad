"""Check the question files of ``file_search_eval.py`` without starting a server.

For each corpus in ``bench/file_search_eval/*.json``: every question has a unique id, a known kind and
split, gold files that are in the corpus' file list and installed, and an answer passage that is inside
(one of) its gold page(s) as the server parses them (``parse.parse``, whitespace and case folded, the
same test ``file_search_eval.py`` applies). Then it prints the counts per corpus, kind and split, and two
lists that do not fail the check but are worth reading when questions are added:

- near-duplicates: two questions of a corpus that share three content words or more, and at least
  ``--dup`` of their content words (Jaccard);
- paraphrases that share a rare word with their answer: a word of the question (three letters or more,
  not a stop word, crudely stemmed) that is in the passage or the gold page's name or title and in at
  most ``--rare`` of the corpus' pages. A paraphrase should say what the user wants in other words.

    apt-get install -y sqlite3-doc git-doc
With ``--keyword-baseline`` it also ranks the corpus' whole pages for each question by BM25 over plain
words (no server, no model) and prints recall@5 and MRR per kind: a paraphrase that a keyword ranking
finds easily probably shares the answer's words.

    python bench/file_search_eval_check.py                # exits 1 if a question is malformed
    python bench/file_search_eval_check.py --corpora git --rare 0.1 --keyword-baseline
"""

from __future__ import annotations

import argparse
import itertools
import math
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from file_search_eval import KINDS, fold, load_corpus  # noqa: E402

SPLITS = ("dev", "test")
STOP = frozenset(
    str.split(
        """
    a an the of to in on for and or but is are was were be been it its this that these those i my me we our
    you your can could do does did how what which who whom when where why will would should may might must
    with without from into out by at as if then than so not no any some all each every there their them they
    he she his her just only also more most much many one two get got have has had up down over under again
    after before while about like want need make made use used using way ways here thing things don doesn
    """
    )
)


def words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z][a-z0-9_]+", text.lower()) if w not in STOP and len(w) > 2}


def stem(word: str) -> str:
    for suffix in ("ing", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 4:
            return word[: -len(suffix)]
    return word


def check_corpus(corpus: dict[str, Any], dup: float, rare: float) -> tuple[list[str], list[str], dict[str, str]]:
    """(errors, notes, the pages' parsed text) for one corpus."""
    from assistantd.tools.file_search.parse import parse

    root = Path(corpus["root"])
    name = corpus["name"]
    errors: list[str] = []
    notes: list[str] = []
    texts: dict[str, str] = {}
    for f in corpus["files"]:
        path = root / f
        if not path.is_file():
            errors.append(f"{name}: corpus file {f} is not installed (apt-get install -y {corpus['package']})")
            continue
        texts[f] = parse(path, f).text
    folded = {f: fold(t) for f, t in texts.items()}
    doc_freq: Counter[str] = Counter()
    for t in texts.values():
        doc_freq.update(words(t))
    seen: set[str] = set()
    for q in corpus["questions"]:
        qid = q.get("id", "?")
        missing = {"id", "q", "files", "passage", "kind", "split"} - set(q)
        if missing:
            errors.append(f"{qid}: missing {sorted(missing)}")
            continue
        if qid in seen:
            errors.append(f"{qid}: duplicate id")
        seen.add(qid)
        if not qid.startswith(f"{name}-"):
            errors.append(f"{qid}: id does not start with {name}-")
        if q["kind"] not in KINDS:
            errors.append(f"{qid}: kind {q['kind']!r} not one of {KINDS}")
        if q["split"] not in SPLITS:
            errors.append(f"{qid}: split {q['split']!r} not one of {SPLITS}")
        if not q["files"] or len(set(q["files"])) != len(q["files"]):
            errors.append(f"{qid}: gold files empty or repeated")
        for f in q["files"]:
            if f not in corpus["files"]:
                errors.append(f"{qid}: gold file {f} is not in the corpus' file list")
        passage = fold(q["passage"])
        if not passage or not any(passage in folded.get(f, "") for f in q["files"]):
            errors.append(f"{qid}: passage not in its gold page(s) as parsed: {q['passage']!r}")
        if q["kind"] == "paraphrase":
            answer = {stem(w) for w in words(q["passage"])}
            for f in q["files"]:
                title = texts.get(f, "").split("\n", 1)[0]
                answer |= {stem(w) for w in words(title + " " + re.sub(r"[-_.]", " ", f))}
            shared = sorted(w for w in words(q["q"]) if stem(w) in answer and doc_freq[w] <= rare * max(1, len(texts)))
            if shared:
                notes.append(f"{qid}: paraphrase shares {', '.join(shared)} with its answer")
    bags = [(q["id"], words(q["q"])) for q in corpus["questions"] if "q" in q]
    for (a, wa), (b, wb) in itertools.combinations(bags, 2):
        if len(wa & wb) >= 3 and len(wa & wb) / len(wa | wb) >= dup:
            notes.append(f"{a} ~ {b}: near-duplicate questions ({len(wa & wb)} shared words)")
    return errors, notes, texts


def keyword_baseline(corpus: dict[str, Any], texts: dict[str, str]) -> list[str]:
    """Recall@5 and MRR (0 past 20) per kind of a BM25 ranking of whole pages (k1 1.2, b 0.75)."""
    bags = {f: Counter(re.findall(r"[a-z0-9_]+", t.lower())) for f, t in texts.items()}
    lengths = {f: sum(b.values()) for f, b in bags.items()}
    mean_length = sum(lengths.values()) / max(1, len(bags))
    doc_freq: Counter[str] = Counter(w for b in bags.values() for w in b)
    n = len(bags)
    got: dict[str, list[tuple[float, float]]] = {}
    for q in corpus["questions"]:
        terms = set(re.findall(r"[a-z0-9_]+", q["q"].lower()))
        scores = []
        for f, bag in bags.items():
            norm = 1.2 * (0.25 + 0.75 * lengths[f] / mean_length)
            score = sum(
                math.log(1 + (n - doc_freq[w] + 0.5) / (doc_freq[w] + 0.5)) * bag[w] * 2.2 / (bag[w] + norm)
                for w in terms
                if w in bag
            )
            scores.append((score, f))
        ranked = [f for _, f in sorted(scores, reverse=True)[:20]]
        rank = next((i for i, f in enumerate(ranked) if f in q["files"]), None)
        hit = (float(rank is not None and rank < 5), 0.0 if rank is None else 1 / (rank + 1))
        got.setdefault(q["kind"], []).append(hit)
    rows = []
    for kind in KINDS:
        if v := got.get(kind):
            recall, mrr = sum(h for h, _ in v) / len(v), sum(r for _, r in v) / len(v)
            rows.append(f"| {corpus['name']} | {kind} | {len(v)} | {recall:.3f} | {mrr:.3f} |")
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpora", default="sqlite,git")
    p.add_argument("--dup", type=float, default=0.5, help="Jaccard overlap of two questions' words to list")
    p.add_argument("--rare", type=float, default=0.1, help="a word in at most this share of pages is rare")
    p.add_argument("--keyword-baseline", action="store_true", help="rank whole pages by BM25 for each question")
    args = p.parse_args()
    errors: list[str] = []
    baseline: list[str] = []
    rows = []
    for name in args.corpora.split(","):
        corpus = load_corpus(name)
        errs, notes, texts = check_corpus(corpus, args.dup, args.rare)
        if args.keyword_baseline:
            baseline += keyword_baseline(corpus, texts)
        errors += errs
        for note in notes:
            print(f"note: {note}")
        counts = Counter((q.get("kind"), q.get("split")) for q in corpus["questions"])
        for kind in KINDS:
            rows.append((name, kind, counts[(kind, "dev")], counts[(kind, "test")]))
        pages = len({f for q in corpus["questions"] for f in q.get("files", [])})
        print(f"{name}: {len(corpus['questions'])} questions over {pages} of {len(corpus['files'])} pages")
    print("| corpus | kind | dev | test | all |")
    print("| --- | --- | ---: | ---: | ---: |")
    for name, kind, dev, test in rows:
        print(f"| {name} | {kind} | {dev} | {test} | {dev + test} |")
    for kind in KINDS:
        dev = sum(r[2] for r in rows if r[1] == kind)
        test = sum(r[3] for r in rows if r[1] == kind)
        print(f"| all | {kind} | {dev} | {test} | {dev + test} |")
    dev, test = sum(r[2] for r in rows), sum(r[3] for r in rows)
    print(f"| all | all | {dev} | {test} | {dev + test} |")
    if baseline:
        print("\nBM25 over whole pages (a keyword baseline, no server):")
        print("| corpus | kind | n | recall@5 | MRR |")
        print("| --- | --- | ---: | ---: | ---: |")
        print("\n".join(baseline))
    if errors:
        print("\n".join(errors), file=sys.stderr)
        sys.exit(1)
    print("ok: ids, kinds, splits, gold files and passages are valid")


if __name__ == "__main__":
    main()
