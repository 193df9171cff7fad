"""The pieces of file search without a database: chunking, the local model, a remote embeddings
endpoint, query terms, attribute filters and rank fusion."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from file_search_support import EmbeddingsServer, letters

from assistantd.tools.file_search.chunk import RegexTokenizer, WordPieceTokenizer, plan_chunks
from assistantd.tools.file_search.embed import (
    EmbeddingError,
    LocalEmbedder,
    OpenAICompatEmbedder,
    build_embedder,
    local_model_dir,
)
from assistantd.tools.file_search.pipeline import EMBED_BATCH, Stopped, embed_plan
from assistantd.tools.file_search.rank import (
    Ranked,
    combine,
    fuse_rrf,
    lead,
    matches,
    rank,
    rewrite,
    spread,
    terms,
)


@pytest.fixture(scope="module")
def model_dir() -> Any:
    path = local_model_dir()
    assert path is not None, "the local model is part of the install (setup.py fetches it)"
    return path


@pytest.fixture(scope="module")
def local(model_dir: Any) -> LocalEmbedder:
    return LocalEmbedder(model_dir)


@pytest.fixture(scope="module")
def wordpieces(model_dir: Any) -> WordPieceTokenizer:
    return WordPieceTokenizer(model_dir / "tokenizer.json")


PROSE = " ".join(
    f"Paragraph {i} explains how the ingestion worker parses, chunks and embeds document number {i}."
    for i in range(400)
)


# --- chunking ------------------------------------------------------------------------------------


def test_auto_chunks_are_800_tokens_overlapping_by_400_on_a_shared_window_grid(wordpieces: WordPieceTokenizer) -> None:
    spans = wordpieces.spans(PROSE)
    plan = plan_chunks(PROSE, wordpieces, max_tokens=800, overlap=400)
    assert len(plan.chunks) >= 3
    for chunk in plan.chunks[:-1]:
        assert 800 - 16 <= chunk.tokens <= 800 + 16
        assert len(chunk.windows) == 4  # four 200-token windows
    for before, after in zip(plan.chunks, plan.chunks[1:], strict=False):
        assert before.windows[2:] == after.windows[:2]  # the overlap is two shared windows
        assert PROSE[after.start : before.end]  # they overlap in the text too
    assert all(w.tokens <= 254 for w in plan.windows)
    # every window is read once, and together they cover the text from first to last token
    assert plan.windows[0].start == spans[0][0] and plan.windows[-1].end == spans[-1][1]
    assert plan.chunks[0].start == 0 and plan.chunks[-1].end == len(PROSE)
    # chunk edges never split a word
    for chunk in plan.chunks:
        assert chunk.start == 0 or not PROSE[chunk.start - 1].isalnum()


def test_static_chunking_without_a_common_grid_gives_each_chunk_its_own_windows(
    wordpieces: WordPieceTokenizer,
) -> None:
    plan = plan_chunks(PROSE, wordpieces, max_tokens=333, overlap=100)
    assert all(c.tokens <= 333 for c in plan.chunks)
    assert all(w.tokens <= 254 for w in plan.windows)
    assert all(len(c.windows) == 2 for c in plan.chunks[:-1])
    shared = [w for c in plan.chunks for w in c.windows]
    assert len(shared) == len(set(shared))  # no window is shared
    spans = wordpieces.spans(PROSE)
    assert plan.chunks[-1].end == spans[-1][1]


def test_short_text_is_one_chunk_and_the_regex_fallback_counts_words() -> None:
    plan = plan_chunks("Just a few words here.", RegexTokenizer(), max_tokens=800, overlap=400)
    assert [plan.chunk_text(c) for c in plan.chunks] == ["Just a few words here."]
    text = " ".join(f"w{i}" for i in range(1000))
    plan = plan_chunks(text, RegexTokenizer(), max_tokens=100, overlap=50)
    assert [c.tokens for c in plan.chunks[:3]] == [100, 100, 100]
    assert plan.chunk_text(plan.chunks[1]).startswith("w50 ")
    assert plan_chunks("", RegexTokenizer(), max_tokens=100, overlap=0).chunks == []
    with pytest.raises(ValueError):
        plan_chunks(text, RegexTokenizer(), max_tokens=100, overlap=60)


# --- the local model -----------------------------------------------------------------------------


def test_local_vectors_are_unit_length_deterministic_and_semantic(local: LocalEmbedder) -> None:
    texts = [
        "The dog barked at the mail carrier.",
        "A canine made loud noises at the postman.",
        "Stars form in dense clouds of interstellar gas.",
        "",
    ]
    a = local.embed(texts)
    b = local.embed(texts)
    assert a.shape == (4, 384) and a.dtype == np.float32
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(a, b)
    sims = a @ a.T
    assert sims[0, 1] > 0.5 > sims[0, 2]
    # batching does not change a vector
    assert np.allclose(local.embed([texts[2]])[0], a[2], atol=1e-5)


def test_onnxruntime_vectors_equal_the_numpy_reference_and_int8_ones_are_close_under_the_same_name(
    model_dir: Any,
) -> None:
    # uneven lengths so the numpy reference's batches carry padding, one text past the 254-piece window,
    # an empty one
    texts = [
        "How do I undo my last commit but keep the changes?",
        "A canine made loud noises at the postman.",
        " ".join(["Kubernetes schedules containers onto nodes."] * 60),
        "",
        *(f"Section {i}: the writer flushes pages to disk every {i} seconds." for i in range(20)),
    ]
    reference = LocalEmbedder(model_dir, "numpy")
    float32 = LocalEmbedder(model_dir, "onnxruntime")
    expected = reference.embed(texts)
    assert np.abs(float32.embed(texts) - expected).max() < 1e-5
    int8 = LocalEmbedder(model_dir)
    assert int8.runtime == "onnxruntime-int8"  # the default
    # one name: a store ingested with one runtime is searched with vectors under any other
    assert int8.name == float32.name == reference.name == "local:all-MiniLM-L6-v2"
    cosines = (int8.embed(texts) * expected).sum(1)
    worded = np.array([bool(t) for t in texts])  # the empty text, [CLS][SEP] alone, is the outlier (0.98)
    assert cosines[worded].min() > 0.99 and cosines[worded].mean() > 0.995 and cosines.min() > 0.97
    assert not np.allclose(cosines, 1.0, atol=1e-4)  # really quantized
    with pytest.raises(ValueError, match="onnxruntime-int8"):
        LocalEmbedder(model_dir, "torch")


def test_the_outlier_channels_own_product_is_exact_in_float_and_what_keeps_int8_close(model_dir: Any) -> None:
    """Splitting the down projections by channel changes no vector in float, so all the int8 runtime
    changes is the quantization; and keeping those channels float is what brings int8 close to float."""
    import onnxruntime

    from assistantd.tools.file_search.minilm_onnx import DOWN_OUTLIERS, build_graph

    rng = np.random.default_rng(7)
    ids = rng.integers(1000, 29000, size=(3, 40)).astype(np.int64)
    mask = np.ones_like(ids)
    mask[2, 25:] = 0
    plain, split = (
        onnxruntime.InferenceSession(g, providers=["CPUExecutionProvider"]).run(
            ["pooled"], {"input_ids": ids, "attention_mask": mask}
        )[0]
        for g in (build_graph(model_dir), build_graph(model_dir, DOWN_OUTLIERS))
    )
    assert np.abs(plain - split).max() < 1e-4
    assert len(DOWN_OUTLIERS) == 6 and all(len(set(c)) == 16 and max(c) < 1536 for c in DOWN_OUTLIERS)

    texts = [
        "How do I undo my last commit but keep the changes?",
        " ".join(["Kubernetes schedules containers onto nodes."] * 20),
        *(f"Section {i}: the writer flushes pages to disk every {i} seconds." for i in range(10)),
    ]
    tokenizer = LocalEmbedder(model_dir, "numpy").model.tokenizer
    windows = [[101, *e.ids, 102] for e in tokenizer.encode_batch(texts, add_special_tokens=False)]

    def vectors(graph: bytes) -> Any:
        session = onnxruntime.InferenceSession(graph, providers=["CPUExecutionProvider"])
        run = [
            session.run(["pooled"], {"input_ids": np.array([w]), "attention_mask": np.ones((1, len(w)), np.int64)})
            for w in windows
        ]
        out = np.concatenate([r[0] for r in run])
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    reference = vectors(build_graph(model_dir))
    kept = (vectors(build_graph(model_dir, DOWN_OUTLIERS, int8=True)) * reference).sum(1)
    every = (vectors(build_graph(model_dir, int8=True)) * reference).sum(1)
    # measured 0.9967 / 0.9958 against 0.9944 / 0.9919 (mean / worst)
    assert kept.mean() > every.mean() + 0.001 and kept.min() > every.min()


def test_text_longer_than_the_model_reads_is_embedded_by_windows(local: LocalEmbedder) -> None:
    long_text = " ".join(["Kubernetes schedules containers onto nodes."] * 40 + ["Sourdough needs a starter."] * 40)
    tail_only = " ".join(["Sourdough needs a starter."] * 40)
    head_only = " ".join(["Kubernetes schedules containers onto nodes."] * 40)
    v_long, v_tail, v_head = local.embed([long_text, tail_only, head_only])
    # a model truncating at 256 word pieces would never see the sourdough half
    assert float(v_long @ v_tail) > 0.3
    assert float(v_long @ v_head) > 0.3


def test_embed_plan_averages_shared_windows(local: LocalEmbedder, wordpieces: WordPieceTokenizer) -> None:
    text = PROSE[:7000]  # about 1700 tokens: three chunks
    plan = plan_chunks(text, wordpieces, max_tokens=800, overlap=400)
    assert len(plan.chunks) == 3
    texts = [plan.chunk_text(c) for c in plan.chunks]
    vectors = embed_plan(plan, texts, local)
    assert vectors.shape == (len(plan.chunks), 384)
    windows = local.embed([plan.window_text(w) for w in plan.windows])
    weights = np.asarray([w.tokens for w in plan.windows], dtype=np.float32)
    ids = list(plan.chunks[1].windows)
    expected = (windows[ids] * weights[ids, None]).sum(0)
    expected /= np.linalg.norm(expected)
    assert np.allclose(vectors[1], expected, atol=1e-5)


def test_a_large_file_is_embedded_on_several_threads_in_order_and_stops_when_asked(
    local: LocalEmbedder, wordpieces: WordPieceTokenizer
) -> None:
    assert local.threads == (os.cpu_count() or 1)  # onnxruntime: one call a core
    plan = plan_chunks(PROSE, wordpieces, max_tokens=800, overlap=400)
    assert len(plan.windows) > 2 * EMBED_BATCH  # several batches in flight
    texts = [plan.chunk_text(c) for c in plan.chunks]
    windows = local.embed([plan.window_text(w) for w in plan.windows])
    weights = np.asarray([w.tokens for w in plan.windows], dtype=np.float32)
    vectors = embed_plan(plan, texts, local)
    for i, chunk in enumerate(plan.chunks):
        ids = list(chunk.windows)
        expected = (windows[ids] * weights[ids, None]).sum(0)
        assert np.allclose(vectors[i], expected / np.linalg.norm(expected), atol=1e-5)
    stop = threading.Event()
    stop.set()
    with pytest.raises(Stopped):
        embed_plan(plan, texts, local, stop)


# --- a remote embeddings endpoint ----------------------------------------------------------------


@pytest.fixture
def embeddings_server() -> Iterator[EmbeddingsServer]:
    with EmbeddingsServer() as server:
        yield server


def test_remote_embedder_batches_orders_normalises_and_authenticates(embeddings_server: EmbeddingsServer) -> None:
    embedder = OpenAICompatEmbedder(embeddings_server.base_url, "test-embed", api_key="sk-embed")
    try:
        texts = [f"text number {i} {'z' * i}" for i in range(70)]
        vectors = embedder.embed(texts)
        assert vectors.shape == (70, 26) and embedder.dims == 26
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
        expected = np.asarray(letters(texts[5]))
        assert np.allclose(vectors[5], expected / np.linalg.norm(expected), atol=1e-5)  # order kept
        assert [len(r["body"]["input"]) for r in embeddings_server.requests] == [64, 6]
        assert all(r["body"]["model"] == "test-embed" for r in embeddings_server.requests)
        assert all(r["auth"] == "Bearer sk-embed" for r in embeddings_server.requests)
        embeddings_server.fail_next = 1  # one 503 is retried
        assert embedder.embed(["retry me"]).shape == (1, 26)
        embeddings_server.fail_next = 5
        with pytest.raises(EmbeddingError, match="503"):
            embedder.embed(["down"])
    finally:
        embedder.close()


def test_unreachable_endpoint_is_an_embedding_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    embedder = OpenAICompatEmbedder(f"http://127.0.0.1:{port}/v1", "m", timeout=2)
    try:
        with pytest.raises(EmbeddingError, match="failed"):
            embedder.embed(["x"])
    finally:
        embedder.close()


def test_build_embedder_says_what_search_runs_on() -> None:
    remote, said = build_embedder(base_url="http://h/v1", model="m", api_key="", local=True)
    assert isinstance(remote, OpenAICompatEmbedder) and "hybrid" in said and "m at http://h/v1" in said
    remote.close()
    none, said = build_embedder(base_url="", model="", api_key="", local=False)
    assert none is None and "keywords only" in said
    local, said = build_embedder(base_url="", model="", api_key="", local=True)
    assert isinstance(local, LocalEmbedder) and "all-MiniLM-L6-v2" in said


# --- queries, filters, fusion --------------------------------------------------------------------


def test_terms_drop_stopwords_and_rewrite_drops_question_framing() -> None:
    assert terms("What is the return policy for shoes?") == ["return", "policy", "shoes"]
    assert terms("the THE the") == ["the"]  # only stopwords: keep them rather than search nothing
    assert terms("Köln café") == ["köln", "café"]
    assert rewrite("Can you please tell me what the return policy is?") == "return policy"
    assert rewrite("the") == "the"


EQ_ADA = {"type": "eq", "key": "author", "value": "ada"}
DRAFT = {"type": "eq", "key": "draft", "value": True}
EQ_BOB = {"type": "eq", "key": "author", "value": "bob"}
ATTRS = {"author": "ada", "year": 2020, "rating": 4.5, "draft": False, "date": "2024-03-01"}


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        ({"type": "eq", "key": "author", "value": "ada"}, True),
        ({"type": "eq", "key": "author", "value": "Ada"}, False),
        ({"type": "eq", "key": "year", "value": 2020.0}, True),
        ({"type": "eq", "key": "draft", "value": False}, True),
        ({"type": "eq", "key": "draft", "value": 0}, False),  # a boolean is not a number
        ({"type": "ne", "key": "author", "value": "bob"}, True),
        ({"type": "ne", "key": "missing", "value": "x"}, True),
        ({"type": "eq", "key": "missing", "value": "x"}, False),
        ({"type": "gt", "key": "year", "value": 2019}, True),
        ({"type": "gt", "key": "year", "value": 2020}, False),
        ({"type": "gte", "key": "year", "value": 2020}, True),
        ({"type": "lt", "key": "rating", "value": 5}, True),
        ({"type": "lte", "key": "rating", "value": 4.5}, True),
        ({"type": "lt", "key": "rating", "value": 4.5}, False),
        ({"type": "gt", "key": "author", "value": 3}, False),  # across types: false
        ({"type": "gte", "key": "date", "value": "2024-01-01"}, True),  # ISO dates order as strings
        ({"type": "in", "key": "author", "value": ["bob", "ada"]}, True),
        ({"type": "in", "key": "year", "value": [2019, 2021]}, False),
        ({"type": "nin", "key": "author", "value": ["bob"]}, True),
        ({"type": "nin", "key": "missing", "value": ["x"]}, True),
        ({"type": "and", "filters": [EQ_ADA, {"type": "lt", "key": "year", "value": 2000}]}, False),
        ({"type": "or", "filters": [EQ_BOB, {"type": "gte", "key": "year", "value": 2000}]}, True),
        (
            {
                "type": "and",
                "filters": [
                    {"type": "or", "filters": [DRAFT, {"type": "gt", "key": "rating", "value": 4}]},
                    {"type": "nin", "key": "author", "value": ["eve"]},
                ],
            },
            True,
        ),
    ],
)  # fmt: skip
def test_attribute_filters(flt: dict[str, Any], expected: bool) -> None:
    assert matches(flt, ATTRS) is expected
    assert matches(None, ATTRS) is True


def test_scores_combine_cosine_and_keyword_relevance() -> None:
    keyword = [(1, 0.6), (2, 0.3)]
    vector = {1: 0.5, 2: 0.9, 3: 0.7, 4: -0.2}
    scores = combine(keyword, vector)
    assert scores == pytest.approx({1: 0.8 * 0.5 + 0.2 * 0.6, 2: 0.8 * 0.9 + 0.2 * 0.3, 3: 0.8 * 0.7, 4: 0.0})
    assert combine(keyword, None) == {1: 0.6, 2: 0.3}  # keywords alone
    ranked = rank([scores, {3: 0.95}])  # several queries: a chunk keeps its best score
    assert [r.chunk for r in ranked] == [3, 2, 1, 4]
    assert ranked[0].score == 0.95 and all(0 <= r.score <= 1 for r in ranked)
    assert rank([]) == []


def test_reciprocal_rank_fusion_for_comparison() -> None:
    fused = fuse_rrf([[1, 2, 3], [2, 1, 4]])
    assert [r.chunk for r in fused] == [1, 2, 3, 4]
    assert fused[0].score == fused[1].score < 1.0
    assert fuse_rrf([[7], [7]])[0].score == 1.0
    assert fuse_rrf([[9], []], n_lists=2)[0].score == pytest.approx(0.5)


def test_spread_keeps_one_chunk_per_file_in_the_head() -> None:
    ranked = [Ranked(1, 0.9), Ranked(2, 0.8), Ranked(3, 0.7), Ranked(4, 0.6), Ranked(5, 0.5), Ranked(6, 0.4)]
    files = {1: 10, 2: 10, 3: 20, 4: 10, 5: 30}  # chunk 6 is gone (deleted since the search)
    got = spread(ranked, files, head=3)
    assert [r.chunk for r in got] == [1, 3, 5, 2, 4]
    assert [r.score for r in got] == [0.9, 0.7, 0.5, 0.5, 0.5]  # never above the last of the head
    assert spread(ranked, {}, head=3) == []
    assert [r.chunk for r in spread(ranked[:2], files, head=3)] == [1, 2]  # fewer files than places


def test_lead_ranks_up_chunks_of_files_whose_opening_matches() -> None:
    ranked = [Ranked(1, 0.70), Ranked(2, 0.66), Ranked(3, 0.60), Ranked(4, 0.50)]
    # chunk 2's file opens on the question's subject; chunk 1's does not; chunk 4's file is unknown
    openings = {1: 0.1, 2: 0.9, 3: 0.2, 4: 0.0}
    got = lead(ranked, openings, weight=0.3)
    assert [r.chunk for r in got] == [2, 1, 3, 4]  # 0.93 > 0.73 > 0.66 > 0.50
    # the scores shown are the fused ones, never rising down the list (and so still above any threshold)
    assert [r.score for r in got] == [0.66, 0.66, 0.60, 0.50]
    assert [r.chunk for r in lead(ranked, {}, weight=0.3)] == [1, 2, 3, 4]  # no openings: unchanged
    assert [r.chunk for r in lead(ranked, {3: 5.0, 1: -2.0}, weight=0.3)] == [3, 1, 2, 4]  # cosines clamped
    assert lead([], openings) == []
