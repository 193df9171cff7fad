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
    python bench/file_search_eval_check.py                # exits 1 if a question is malformed
    python bench/file_search_eval_check.py --corpora git --rare 0.1
"""

from __future__ import annotations

import argparse
import itertools
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


def check_corpus(corpus: dict[str, Any], dup: float, rare: float) -> tuple[list[str], list[str]]:
    """(errors, notes) for one corpus."""
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
    return errors, notes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpora", default="sqlite,git")
    p.add_argument("--dup", type=float, default=0.5, help="Jaccard overlap of two questions' words to list")
    p.add_argument("--rare", type=float, default=0.1, help="a word in at most this share of pages is rare")
    args = p.parse_args()
    errors: list[str] = []
    rows = []
    for name in args.corpora.split(","):
        corpus = load_corpus(name)
        errs, notes = check_corpus(corpus, args.dup, args.rare)
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
    if errors:
        print("\n".join(errors), file=sys.stderr)
        sys.exit(1)
    print("ok: ids, kinds, splits, gold files and passages are valid")


if __name__ == "__main__":
    main()
