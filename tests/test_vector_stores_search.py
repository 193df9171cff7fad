"""POST /v1/vector_stores/{id}/search: hybrid retrieval, attribute filters, thresholds and the tool-facing
``search`` of the service, on SQLite (FTS5 + in-process vectors) and PostgreSQL (tsvector + pgvector)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from file_search_support import call, create_store, execute, search, store_with, upload, wait_store

from assistantd.store import chunks as chunk_rows
from assistantd.store import dense_search, keyword_search
from assistantd.store import vector_stores as vrows

if TYPE_CHECKING:
    from conftest import Api, MakeApi

DOCS = {
    "astronomy.txt": "Neutron stars are the collapsed cores of massive stars. A teaspoon of neutron star material "
    "weighs about a billion tonnes. Pulsars are rotating neutron stars that emit beams of radiation.",
    "baking.md": "# Sourdough\nA sourdough loaf rises because wild yeast and lactobacilli ferment the flour. Knead "
    "the dough, let it proof overnight, then bake it in a hot Dutch oven for a crisp crust.",
    "databases.txt": "PostgreSQL offers B-tree, hash, GiST, SP-GiST, GIN and BRIN indexes. A GIN index suits "
    "full-text search on tsvector columns; BRIN suits very large, naturally ordered tables.",
    "gardening.txt": "Tomatoes need six to eight hours of sun a day. Water them deeply at the roots and stake the "
    "plants so the fruit stays off the soil.",
    "pets.txt": "The canine barked furiously whenever the mail carrier walked up to the porch.",
}


@pytest.fixture
def corpus(api: Api) -> tuple[str, dict[str, str]]:
    return store_with(api.client, DOCS)


def names(result: dict[str, Any]) -> list[str]:
    return [d["filename"] for d in result["data"]]


def test_search_finds_the_right_document_with_a_well_formed_page(
    api: Api, corpus: tuple[str, dict[str, str]], conforms: Any
) -> None:
    vs, ids = corpus
    result = search(api.client, vs, query="Which index type should I use for full-text search?")
    conforms(result, "VectorStoreSearchResultsPage")
    assert result["object"] == "vector_store.search_results.page"
    assert result["search_query"] == ["Which index type should I use for full-text search?"]
    assert result["has_more"] is False and result["next_page"] is None
    top = result["data"][0]
    assert top["filename"] == "databases.txt" and top["file_id"] == ids["databases.txt"]
    assert top["content"] == [{"type": "text", "text": DOCS["databases.txt"]}]
    assert top["attributes"] == {}
    scores = [d["score"] for d in result["data"]]
    assert all(0 <= s <= 1 for s in scores) and scores == sorted(scores, reverse=True)
    assert len(result["data"]) == len(DOCS)  # every chunk is a candidate for the vector list


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("how heavy is a teaspoon of neutron star", "astronomy.txt"),
        ("why does my loaf of bread rise", "baking.md"),
        ("how much sunlight do tomato plants need", "gardening.txt"),
    ],
)
def test_hybrid_ranks_the_answering_document_first(
    api: Api, corpus: tuple[str, dict[str, str]], query: str, expected: str
) -> None:
    assert names(search(api.client, corpus[0], query=query))[0] == expected


def test_vectors_find_what_no_keyword_matches(api: Api, corpus: tuple[str, dict[str, str]]) -> None:
    vs, _ = corpus
    query = "dog noise postman"  # no word in common with the pets document
    service = api.app.state.services.vector_stores
    keyword = call(api, service.search, "default", [vs], [query], max_num_results=5, modes=("keyword",))
    vector = call(api, service.search, "default", [vs], [query], max_num_results=5, modes=("vector",))
    assert "pets.txt" not in [h.filename for h in keyword]
    assert vector[0].filename == "pets.txt"
    assert names(search(api.client, vs, query=query))[0] == "pets.txt"


def test_keywords_find_exact_terms(api: Api, corpus: tuple[str, dict[str, str]]) -> None:
    vs, _ = corpus
    service = api.app.state.services.vector_stores
    hits = call(api, service.search, "default", [vs], ["BRIN"], max_num_results=5, modes=("keyword",))
    assert [h.filename for h in hits] == ["databases.txt"]
    assert 0 < hits[0].score < 1  # BM25 saturated: s / (s + K)


def test_max_num_results_threshold_and_several_queries(
    api: Api, corpus: tuple[str, dict[str, str]], expect_error: Any
) -> None:
    vs, _ = corpus
    c = api.client
    assert len(search(c, vs, query="stars", max_num_results=2)["data"]) == 2
    everything = search(c, vs, query="neutron stars pulsars")
    assert names(everything)[0] == "astronomy.txt" and len(everything["data"]) == len(DOCS)
    cut = (everything["data"][0]["score"] + everything["data"][1]["score"]) / 2
    strict = search(c, vs, query="neutron stars pulsars", ranking_options={"score_threshold": cut})
    assert names(strict) == ["astronomy.txt"] and strict["data"][0]["score"] >= cut
    # scores are absolute, not relative to the best result: an off-topic chunk scores low
    assert everything["data"][0]["score"] > 0.4 > everything["data"][-1]["score"]
    assert search(c, vs, query="neutron", ranking_options={"score_threshold": 1.0, "ranker": "none"})["data"] == []
    both = search(c, vs, query=["tomato sunlight", "sourdough yeast"], max_num_results=2)
    assert both["search_query"] == ["tomato sunlight", "sourdough yeast"]
    assert sorted(names(both)) == ["baking.md", "gardening.txt"]
    expect_error(c.post(f"/v1/vector_stores/{vs}/search", json={"query": "x", "max_num_results": 0}), 400,
                 param="max_num_results")  # fmt: skip
    expect_error(c.post(f"/v1/vector_stores/{vs}/search", json={"query": "x", "max_num_results": 51}), 400)
    expect_error(c.post(f"/v1/vector_stores/{vs}/search", json={"query": []}), 400, param="query")
    expect_error(c.post(f"/v1/vector_stores/{vs}/search", json={}), 400, code="missing_required_parameter")
    bad_rank = {"query": "x", "ranking_options": {"ranker": "best"}}
    expect_error(c.post(f"/v1/vector_stores/{vs}/search", json=bad_rank), 400, param="ranking_options.ranker")
    expect_error(c.post("/v1/vector_stores/vs_nope/search", json={"query": "x"}), 404)
    assert search(c, vs, query="   ")["data"] == []


def test_default_is_ten_results(api: Api) -> None:
    docs = {f"note{i}.txt": f"Note {i} about the weather in city number {i}." for i in range(12)}
    vs, _ = store_with(api.client, docs)
    assert len(search(api.client, vs, query="weather")["data"]) == 10


def test_rewrite_query_reports_the_rewritten_query(api: Api, corpus: tuple[str, dict[str, str]]) -> None:
    result = search(
        api.client, corpus[0], query="Can you please tell me how tomatoes should be watered?", rewrite_query=True
    )
    assert result["search_query"] == ["tomatoes watered"]
    assert names(result)[0] == "gardening.txt"


# --- attribute filters ---------------------------------------------------------------------------

CORE = {"type": "eq", "key": "team", "value": "core"}
WEB = {"type": "eq", "key": "team", "value": "web"}
ATTRIBUTES = {
    "a.txt": {"team": "core", "year": 2021, "score": 3.5, "public": True},
    "b.txt": {"team": "web", "year": 2023, "score": 4.8, "public": False},
    "c.txt": {"team": "core", "year": 2024, "score": 2.0, "public": False},
    "d.txt": {"year": 2019},
}


@pytest.fixture
def filtered(api: Api) -> str:
    c = api.client
    vs = create_store(c)["id"]
    files = [
        {
            "file_id": upload(c, name, f"Release notes {name}: the deployment pipeline was improved."),
            "attributes": attrs,
        }
        for name, attrs in ATTRIBUTES.items()
    ]
    c.post(f"/v1/vector_stores/{vs}/file_batches", json={"files": files})
    assert wait_store(c, vs)["file_counts"]["completed"] == 4
    return str(vs)


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        ({"type": "eq", "key": "team", "value": "core"}, {"a.txt", "c.txt"}),
        ({"type": "ne", "key": "team", "value": "core"}, {"b.txt", "d.txt"}),
        ({"type": "gt", "key": "year", "value": 2021}, {"b.txt", "c.txt"}),
        ({"type": "gte", "key": "year", "value": 2021}, {"a.txt", "b.txt", "c.txt"}),
        ({"type": "lt", "key": "score", "value": 3.5}, {"c.txt"}),
        ({"type": "lte", "key": "score", "value": 3.5}, {"a.txt", "c.txt"}),
        ({"type": "eq", "key": "public", "value": True}, {"a.txt"}),
        ({"type": "in", "key": "year", "value": [2019, 2024]}, {"c.txt", "d.txt"}),
        ({"type": "nin", "key": "team", "value": ["web"]}, {"a.txt", "c.txt", "d.txt"}),
        ({"type": "and", "filters": [CORE, {"type": "gt", "key": "year", "value": 2022}]}, {"c.txt"}),
        ({"type": "or", "filters": [WEB, {"type": "lt", "key": "year", "value": 2020}]}, {"b.txt", "d.txt"}),
        ({"type": "eq", "key": "team", "value": "nobody"}, set()),
    ],
)  # fmt: skip
def test_filters_narrow_the_files_searched(api: Api, filtered: str, flt: dict[str, Any], expected: set[str]) -> None:
    result = search(api.client, filtered, query="deployment pipeline release notes", filters=flt)
    assert set(names(result)) == expected
    for item in result["data"]:
        assert item["attributes"] == ATTRIBUTES[item["filename"]]


def test_filter_validation(api: Api, filtered: str, expect_error: Any) -> None:
    url = f"/v1/vector_stores/{filtered}/search"
    bad = {"query": "x", "filters": {"type": "in", "key": "year", "value": 2020}}
    expect_error(api.client.post(url, json=bad), 400, param="filters")
    bad = {"query": "x", "filters": {"type": "between", "key": "year", "value": 1}}
    expect_error(api.client.post(url, json=bad), 400, param="filters.type")
    bad = {"query": "x", "filters": {"type": "and", "filters": [{"type": "eq", "key": "k"}]}}
    expect_error(api.client.post(url, json=bad), 400, param="filters.filters[0].value")


# --- the service as the run engine calls it -------------------------------------------------------


def test_service_search_over_several_stores(api: Api) -> None:
    c = api.client
    vs1, _ = store_with(c, {"one.txt": DOCS["astronomy.txt"]})
    vs2, _ = store_with(c, {"two.txt": DOCS["baking.md"]})
    service = api.app.state.services.vector_stores
    hits = call(api, service.search, "default", [vs1, vs2], ["sourdough", "neutron star"], max_num_results=5)
    assert {h.filename for h in hits} == {"one.txt", "two.txt"}
    assert {h.vector_store_id for h in hits} == {vs1, vs2}
    assert all(0 <= h.score <= 1 and h.content for h in hits)
    top = call(api, service.search, "default", [vs1, vs2], ["sourdough"], max_num_results=1, score_threshold=0.0)
    assert [h.filename for h in top] == ["two.txt"]
    assert (
        call(
            api,
            service.search,
            "default",
            [vs1],
            ["x"],
            max_num_results=3,
            filters={"type": "eq", "key": "k", "value": 1},
        )
        == []
    )


def test_search_moves_last_active_at_and_expiry(api: Api) -> None:
    c = api.client
    vs, _ = store_with(c, {"a.txt": DOCS["gardening.txt"]}, expires_after={"anchor": "last_active_at", "days": 1})
    old = 1_000_000
    now = c.get(f"/v1/vector_stores/{vs}").json()["last_active_at"]
    update = "UPDATE vector_stores SET data = replace(data, ?, ?) WHERE id = ?"
    execute(api, update, (f'"last_active_at":{now}', f'"last_active_at":{old}', vs))
    assert c.get(f"/v1/vector_stores/{vs}").json()["last_active_at"] == old
    search(c, vs, query="tomatoes")
    obj = c.get(f"/v1/vector_stores/{vs}").json()
    assert obj["last_active_at"] > old and obj["expires_at"] == obj["last_active_at"] + 86400


def test_keyword_only_when_embeddings_are_off(make_api: MakeApi, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="assistantd.vector_stores"):
        api = make_api(local_embeddings=False)
    assert any("keywords only" in r.getMessage() for r in caplog.records)
    vs, _ = store_with(api.client, DOCS)
    assert api.sql("SELECT count(*) FROM vector_store_chunks WHERE embedding IS NOT NULL")[0][0] == 0
    result = search(api.client, vs, query="sourdough proof overnight")
    assert names(result) == ["baking.md"] and 0 < result["data"][0]["score"] < 1
    assert search(api.client, vs, query="dog noise postman")["data"] == []  # no shared word: nothing


def test_sqlite_vector_cache_stays_within_its_bound(api: Api) -> None:
    service = api.app.state.services.vector_stores
    if api.backend == "postgres":
        assert service.searcher.dense.matrix is None  # pgvector searches in the database: no vectors in memory
        return
    c = api.client
    vs1, _ = store_with(c, {"one.txt": DOCS["astronomy.txt"]})
    vs2, _ = store_with(c, {"two.txt": DOCS["baking.md"]})
    service.searcher.dense.matrix.max_rows = 1
    assert names(search(c, vs1, query="neutron star"))[0] == "one.txt"
    assert service.searcher.dense.matrix.cached_rows == 1
    assert names(search(c, vs2, query="sourdough"))[0] == "two.txt"
    assert service.searcher.dense.matrix.cached_rows == 1  # the first store left to make room
    assert names(search(c, vs1, query="neutron star"))[0] == "one.txt"  # and comes back when searched


def test_words_common_to_most_chunks_are_left_out_of_the_keyword_query(api: Api) -> None:
    c = api.client
    docs = {f"r{i}.txt": f"Release notes {i}: the release pipeline shipped version {i}." for i in range(4)}
    docs["zebra.txt"] = "Release of the zebra exhibit at the zoo."
    vs, _ = store_with(c, docs)
    if api.backend == "postgres":
        # PostgreSQL goes by the planner's statistics of common lexemes, which ANALYZE (autovacuum) keeps.
        execute(api, "ANALYZE vector_store_chunks")
        shares = call(api, api.app.state.services.db.read, keyword_search.pg_lexeme_shares)
        assert shares["releas"] == 1.0 and shares["zebra"] == pytest.approx(0.2)
    else:
        shares = None

    def keyword(words: list[str]) -> list[str]:
        def tx(conn: Any) -> list[str]:
            row = vrows.get_store(conn, "default", vs)
            assert row is not None
            found = keyword_search.keyword_search(
                conn,
                store_seqs={vs: row.seq},
                files=None,
                words=words,
                limit=10,
                chunks=5,
                common_min=3,
                common_share=0.5,  # a budget of 3 matches
                lexeme_shares=shares,
            )
            assert all(0 < score < 1 for _, score in found)
            return sorted(text for _, text in chunk_rows.chunk_texts(conn, [seq for seq, _ in found]).values())

        return call(api, api.app.state.services.db.read, tx)

    # "release" is in all five chunks: only "zebra" decides
    assert keyword(["release", "zebra"]) == [docs["zebra.txt"]]
    # every word common: chunks must hold them all (the zebra chunk has no "pipeline")
    assert keyword(["release", "pipeline"]) == sorted(docs[f"r{i}.txt"] for i in range(4))
    assert keyword(["notes", "zebra"]) == [docs["zebra.txt"]]  # "notes" (4 of 5 chunks) is common too


def test_a_query_ranks_its_rarest_words_within_the_match_budget(api: Api) -> None:
    c = api.client
    docs = {
        "a1.txt": "Alpha particles and the detector.",
        "a2.txt": "Alpha decay of radium.",
        "b1.txt": "Beta testers filed reports.",
        "b2.txt": "Beta blockers slow the heart.",
        "g.txt": "Gamma rays from a pulsar.",
        "other.txt": "Nothing to see here.",
    }
    vs, _ = store_with(c, docs)
    if api.backend == "postgres":
        execute(api, "ANALYZE vector_store_chunks")
        shares = call(api, api.app.state.services.db.read, keyword_search.pg_lexeme_shares)
    else:
        shares = None

    def keyword(words: list[str], **budget: Any) -> list[str]:
        def tx(conn: Any) -> list[str]:
            row = vrows.get_store(conn, "default", vs)
            assert row is not None
            found = keyword_search.keyword_search(
                conn, store_seqs={vs: row.seq}, files=None, words=words, limit=10, chunks=6,
                lexeme_shares=shares, **budget,
            )  # fmt: skip
            return sorted(name for name, text in docs.items() if text in texts(conn, found))

        return call(api, api.app.state.services.db.read, tx)

    def texts(conn: Any, found: list[tuple[int, float]]) -> set[str]:
        return {text for _, text in chunk_rows.chunk_texts(conn, [seq for seq, _ in found]).values()}

    # Each word is in at most 2 of 6 chunks, but together they match 5. With a budget of 3 matches the
    # rarest words are ranked (gamma: 1, then alpha: 2) and beta, as common as alpha but later, is left out.
    assert keyword(["alpha", "beta", "gamma"], common_min=3, common_share=0.25) == ["a1.txt", "a2.txt", "g.txt"]
    # A budget that fits them all ranks them all.
    assert keyword(["beta", "alpha", "gamma"], common_min=5, common_share=0.25) == [
        "a1.txt", "a2.txt", "b1.txt", "b2.txt", "g.txt",
    ]  # fmt: skip
    # The ceiling holds however large the share would make the budget.
    assert keyword(["beta", "gamma"], common_min=1, common_share=1.0, ceiling=1) == ["g.txt"]
    # Words that match nothing cost nothing and do not stop the others.
    assert keyword(["zzyzx", "gamma"], common_min=1, common_share=0.0) == ["g.txt"]


def test_affordable_keeps_the_rarest_words_in_query_order() -> None:
    counts = {"common": 50, "mid": 20, "rare": 3, "rarer": 1, "none": 0}
    assert keyword_search.affordable(["common", "mid", "rare", "rarer", "none"], counts, 24) == ["mid", "rare", "rarer"]
    assert keyword_search.affordable(["common", "mid", "rare", "rarer"], counts, 10) == ["rare", "rarer"]
    assert keyword_search.affordable(["common", "mid"], counts, 10) == []  # even the rarest is over: caller ANDs them
    assert keyword_search.affordable(["none"], counts, 10) == []


def test_the_vector_index_agrees_with_an_exact_scan(api: Api, corpus: tuple[str, dict[str, str]]) -> None:
    """PostgreSQL: the HNSW path (taken for large stores) against the exact scan; SQLite: the in-process
    matrix against cosines computed here from the stored vectors."""
    vs, _ = corpus
    service = api.app.state.services.vector_stores
    searcher = service.searcher
    [query] = call(api, searcher.embed_queries, ["loud dog"])
    model = searcher.embedder.name

    def both(conn: Any) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
        row = vrows.get_store(conn, "default", vs)
        assert row is not None
        if conn.dialect == "postgres":
            args = {"store_ids": [vs], "files": None, "model": model, "dims": 384, "query": query, "limit": 3}
            fast = dense_search.pg_vector_search(conn, total_chunks=10**6, **args)  # as for a huge store: HNSW
            exact = dense_search.pg_vector_search(conn, total_chunks=1, **args)
            return fast, exact
        files = vrows.searchable_files(conn, [vs])
        fast = searcher.dense.matrix.search(
            conn, store_id=vs, generation=row.generation, files=files, allowed=None, model=model, query=query, limit=3
        )
        exact = []
        for f in files:
            seqs, matrix = chunk_rows.load_vectors(conn, f.seq, model)
            exact += [(int(s), float(v)) for s, v in zip(seqs, matrix @ query, strict=True)]
        return fast, sorted(exact, key=lambda item: -item[1])[:3]

    fast, exact = call(api, api.app.state.services.db.read, both)
    assert [seq for seq, _ in fast] == [seq for seq, _ in exact]
    assert [round(score, 4) for _, score in fast] == [round(score, 4) for _, score in exact]
    if api.backend == "postgres":
        assert api.sql("SELECT count(*) FROM pg_indexes WHERE indexname = 'vector_store_chunks_hnsw_384'") == [(1,)]


STARS = "\n\n".join(
    f"Part {i}. Neutron stars and pulsars: {text}"
    for i, text in enumerate(
        [
            "a neutron star forms when the core of a massive star collapses in a supernova and its protons and "
            "electrons merge into neutrons, leaving a ball about twenty kilometres across.",
            "pulsars are neutron stars that spin many times a second and sweep beams of radio waves across the "
            "sky, so that telescopes on Earth see regular pulses like a lighthouse.",
            "the magnetic field of a neutron star is a trillion times stronger than the Earth's; the strongest "
            "neutron stars, magnetars, flare with bursts of gamma rays and X-rays.",
            "two neutron stars orbiting each other lose energy to gravitational waves, spiral inwards and merge, "
            "forging gold and platinum in the collision that observatories detect.",
        ]
    )
)
SMALL_CHUNKS = {"type": "static", "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 0}}


def test_the_ranker_gives_each_file_one_of_the_first_places(api: Api) -> None:
    """``auto`` (the default) and OpenAI's dated name rerank the fused list so a file takes at most one of
    the first five places; ``none`` keeps the fused order, where one long page fills the first places."""
    c = api.client
    vs, _ = store_with(c, {**DOCS, "stars.txt": STARS}, chunking_strategy=SMALL_CHUNKS)
    query = "neutron stars and pulsars"
    fused = search(c, vs, query=query, max_num_results=20, ranking_options={"ranker": "none"})["data"]
    assert names({"data": fused[:5]}).count("stars.txt") >= 2  # the case the reranker is for
    for ranking in ({}, {"ranking_options": {"ranker": "auto"}}, {"ranking_options": {"ranker": "default-2024-11-15"}}):
        got = search(c, vs, query=query, max_num_results=20, **ranking)["data"]
        first = names({"data": got[:5]})
        assert len(set(first)) == len(first) == 5, first
        assert first[:2] == ["stars.txt", "astronomy.txt"] or first[:2] == ["astronomy.txt", "stars.txt"]
        # the same chunks as the fused list, reordered; a file's further chunks follow the first places
        key = [(d["filename"], d["content"][0]["text"]) for d in got]
        assert sorted(key) == sorted((d["filename"], d["content"][0]["text"]) for d in fused)
        assert names({"data": got[5:]}).count("stars.txt") == names({"data": fused}).count("stars.txt") - 1
        scores = [d["score"] for d in got]
        assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
    # a threshold still holds for every result after reranking, and the tool-facing search reranks too
    cut = fused[2]["score"]
    strict = search(c, vs, query=query, max_num_results=20, ranking_options={"score_threshold": cut})["data"]
    assert strict and all(d["score"] >= cut for d in strict)
    assert len(set(names({"data": strict[:2]}))) == min(2, len(strict))
    service = api.app.state.services.vector_stores
    hits = call(api, service.search, "default", [vs], [query], max_num_results=5)
    assert len({h.filename for h in hits}) == 5


GARDEN = "\n\n".join(
    [
        "Growing ferns in a shady garden. Ferns like moist soil rich in leaf mould, dappled light and "
        "shelter from the wind; water them in dry spells and mulch them every spring.",
        "Dividing ferns. Lift a clump in early spring, cut it into pieces that each have roots and a "
        "crown, and replant them at the same depth; keep them watered until new fronds unfold.",
        "Tree ferns need their trunks watered as well as their roots, and a wrap of straw in winter "
        "where frosts are hard.",
        "The old sundial by the fern bed tells the time from the shadow its pointer casts as the sun "
        "crosses the sky; to read the hour, note which line the shadow of the pointer falls on.",
    ]
)
SUNDIALS = (
    "Sundials. Sundials were made of stone or brass and set up in gardens, squares and on church walls; "
    "many carry a motto about the passing hours."
)


def test_the_auto_ranker_puts_the_page_about_the_subject_first(api: Api) -> None:
    """``auto`` weighs each file by its opening too (``rank.lead``): the page about sundials goes before a
    gardening page that mentions one in its last paragraph; ``default-2024-11-15`` (``spread`` alone) and
    ``none`` keep the fused order, where that paragraph comes first."""
    c = api.client
    vs, _ = store_with(c, {"garden.txt": GARDEN, "sundials.txt": SUNDIALS}, chunking_strategy=SMALL_CHUNKS)
    query = "how does a sundial tell the time from the shadow"
    order: dict[str, list[str]] = {}
    for ranker in ("none", "default-2024-11-15", "auto"):
        got = search(c, vs, query=query, max_num_results=5, ranking_options={"ranker": ranker})["data"]
        order[ranker] = [d["filename"] for d in got]
        scores = [d["score"] for d in got]
        assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
    assert order["none"][0] == order["default-2024-11-15"][0] == "garden.txt", order
    assert order["auto"][0] == "sundials.txt", order
    assert search(c, vs, query=query, max_num_results=5)["data"][0]["filename"] == "sundials.txt"  # the default
