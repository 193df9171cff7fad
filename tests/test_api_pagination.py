"""List pagination: limit, order, after, before, has_more, and many objects in one created_at second."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from starlette.testclient import TestClient

if TYPE_CHECKING:
    from conftest import Api

N = 45


@pytest.fixture
def thread_with_messages(api: Api) -> tuple[str, list[str]]:
    """A thread with N messages created as fast as the API allows (ids in creation order)."""
    client = api.client
    thread_id = client.post("/v1/threads").json()["id"]
    ids = []
    for i in range(N):
        r = client.post(f"/v1/threads/{thread_id}/messages", json={"role": "user", "content": f"m{i}"})
        assert r.status_code == 200, r.text
        ids.append(r.json()["id"])
    return thread_id, ids


def get_page(client: TestClient, path: str, **params: Any) -> dict[str, Any]:
    r = client.get(path, params={k: v for k, v in params.items() if v is not None})
    assert r.status_code == 200, r.text
    page = r.json()
    assert set(page) == {"object", "data", "first_id", "last_id", "has_more"}
    assert page["object"] == "list"
    ids = [o["id"] for o in page["data"]]
    assert page["first_id"] == (ids[0] if ids else None)
    assert page["last_id"] == (ids[-1] if ids else None)
    return page


def walk_after(client: TestClient, path: str, order: str, limit: int) -> list[list[str]]:
    """Follow ``after`` as the SDK's auto-pagination does; return the pages' ids."""
    pages: list[list[str]] = []
    after = None
    while True:
        page = get_page(client, path, order=order, limit=limit, after=after)
        ids = [o["id"] for o in page["data"]]
        pages.append(ids)
        if not page["has_more"]:
            return pages
        assert ids, "has_more with an empty page would loop forever"
        after = page["last_id"]


def test_many_messages_share_a_second_yet_page_exactly(api: Api, thread_with_messages: tuple[str, list[str]]) -> None:
    thread_id, ids = thread_with_messages
    path = f"/v1/threads/{thread_id}/messages"
    seconds = {row[0] for row in api.sql("SELECT created_at FROM messages WHERE thread_id = ?", (thread_id,))}
    # They were created within a couple of seconds: created_at alone cannot order them.
    assert len(seconds) < N

    for order, expected in (("asc", ids), ("desc", ids[::-1])):
        for limit in (1, 7, 20, 44, 45, 100):
            pages = walk_after(api.client, path, order, limit)
            flat = [i for p in pages for i in p]
            assert flat == expected, (order, limit)
            assert [len(p) for p in pages[:-1]] == [limit] * (len(pages) - 1)
            assert len(pages) == max(1, -(-N // limit))


def test_default_list_is_20_newest_first(client: TestClient, thread_with_messages: tuple[str, list[str]]) -> None:
    thread_id, ids = thread_with_messages
    page = get_page(client, f"/v1/threads/{thread_id}/messages")
    assert [m["id"] for m in page["data"]] == ids[::-1][:20]
    assert page["has_more"] is True


def test_before_walks_back_toward_the_start(client: TestClient, thread_with_messages: tuple[str, list[str]]) -> None:
    """``before`` returns the page that precedes the cursor in the chosen order, in that order."""
    thread_id, ids = thread_with_messages
    path = f"/v1/threads/{thread_id}/messages"

    # asc: start at the end and walk back to the beginning.
    collected: list[str] = []
    cursor = ids[-1]
    page = get_page(client, path, order="asc", limit=10, before=cursor)
    assert [m["id"] for m in page["data"]] == ids[34:44]
    assert page["has_more"] is True
    while True:
        page = get_page(client, path, order="asc", limit=10, before=cursor)
        got = [m["id"] for m in page["data"]]
        collected = got + collected
        if not page["has_more"]:
            break
        cursor = page["first_id"]
    assert collected == ids[:-1]

    # desc: the page before the 3rd-newest holds the 2 newest, newest first.
    page = get_page(client, path, order="desc", limit=10, before=ids[-3])
    assert [m["id"] for m in page["data"]] == [ids[-1], ids[-2]]
    assert page["has_more"] is False
    page = get_page(client, path, order="desc", limit=2, before=ids[10])
    assert [m["id"] for m in page["data"]] == [ids[12], ids[11]]
    assert page["has_more"] is True


def test_has_more_is_exact_at_the_edges(client: TestClient, thread_with_messages: tuple[str, list[str]]) -> None:
    thread_id, ids = thread_with_messages
    path = f"/v1/threads/{thread_id}/messages"
    assert get_page(client, path, limit=N)["has_more"] is False
    assert get_page(client, path, limit=N - 1)["has_more"] is True
    assert get_page(client, path, order="asc", after=ids[-2])["data"][0]["id"] == ids[-1]
    last = get_page(client, path, order="asc", after=ids[-1])
    assert last["data"] == [] and last["has_more"] is False
    first = get_page(client, path, order="desc", after=ids[0])
    assert first["data"] == [] and first["has_more"] is False
    assert get_page(client, path, order="asc", limit=5, after=ids[-6])["has_more"] is False
    assert get_page(client, path, order="asc", limit=5, after=ids[-7])["has_more"] is True


def test_cursors_in_both_directions_from_the_middle(
    client: TestClient, thread_with_messages: tuple[str, list[str]]
) -> None:
    thread_id, ids = thread_with_messages
    path = f"/v1/threads/{thread_id}/messages"
    mid = ids[20]
    assert [m["id"] for m in get_page(client, path, order="asc", limit=3, after=mid)["data"]] == ids[21:24]
    assert [m["id"] for m in get_page(client, path, order="desc", limit=3, after=mid)["data"]] == ids[19:16:-1]
    assert [m["id"] for m in get_page(client, path, order="asc", limit=3, before=mid)["data"]] == ids[17:20]
    assert [m["id"] for m in get_page(client, path, order="desc", limit=3, before=mid)["data"]] == ids[23:20:-1]


def test_deleted_objects_leave_no_gap(client: TestClient, thread_with_messages: tuple[str, list[str]]) -> None:
    thread_id, ids = thread_with_messages
    path = f"/v1/threads/{thread_id}/messages"
    for victim in ids[5:10]:
        assert client.delete(f"{path}/{victim}").status_code == 200
    remaining = ids[:5] + ids[10:]
    flat = [i for p in walk_after(client, path, "asc", 4) for i in p]
    assert flat == remaining


@pytest.mark.parametrize("path", ["/v1/assistants", "/v1/threads/{thread}/messages"])
@pytest.mark.parametrize(
    ("params", "param", "code"),
    [
        ({"limit": 0}, "limit", "integer_below_min_value"),
        ({"limit": -5}, "limit", "integer_below_min_value"),
        ({"limit": 101}, "limit", "integer_above_max_value"),
        ({"limit": "ten"}, "limit", "invalid_type"),
        ({"limit": "2.5"}, "limit", "invalid_type"),
        ({"order": "newest"}, "order", "invalid_value"),
        ({"after": "msg_unknown"}, "after", "invalid_value"),
        ({"before": "asst_unknown"}, "before", "invalid_value"),
    ],
)
def test_bad_list_parameters_are_400(
    shared_api: Api, path: str, params: dict[str, Any], param: str, code: str, expect_error: Any
) -> None:
    client = shared_api.client
    thread = client.post("/v1/threads").json()["id"]
    expect_error(client.get(path.format(thread=thread), params=params), 400, param=param, code=code)


def test_limit_bounds_are_inclusive(api: Api) -> None:
    client = api.client
    ids = [client.post("/v1/assistants", json={"model": "m"}).json()["id"] for _ in range(3)]
    assert [a["id"] for a in get_page(client, "/v1/assistants", limit=1)["data"]] == [ids[-1]]
    assert len(get_page(client, "/v1/assistants", limit=100)["data"]) == 3


def test_cursor_from_another_list_is_rejected(client: TestClient, expect_error: Any) -> None:
    t1 = client.post("/v1/threads").json()["id"]
    t2 = client.post("/v1/threads").json()["id"]
    msg = client.post(f"/v1/threads/{t1}/messages", json={"role": "user", "content": "x"}).json()["id"]
    expect_error(
        client.get(f"/v1/threads/{t2}/messages", params={"after": msg}),
        400,
        param="after",
        code="invalid_value",
        message=f"Invalid 'after': no message with id '{msg}' is in this list.",
    )


def test_assistants_page_the_same_way(client: TestClient) -> None:
    ids = [client.post("/v1/assistants", json={"model": "m", "name": str(i)}).json()["id"] for i in range(25)]
    assert [i for p in walk_after(client, "/v1/assistants", "asc", 10) for i in p] == ids
    assert [i for p in walk_after(client, "/v1/assistants", "desc", 10) for i in p] == ids[::-1]
    default = get_page(client, "/v1/assistants")
    assert [a["id"] for a in default["data"]] == ids[::-1][:20] and default["has_more"] is True
