"""Files through the official SDK: upload, list, retrieve, content, delete, expiry, and paging."""

from __future__ import annotations

import re
import time
from pathlib import Path

import openai
import pytest

from .remote import E2E_MARKS, accepts, pages_with_data

pytestmark = E2E_MARKS

FILE_ID = re.compile(r"^file-[0-9A-Za-z]{24}$")


def test_upload_retrieve_and_download(client: openai.OpenAI) -> None:
    payload = b"name,score\nada,10\ngrace,9\n"

    uploaded = client.files.create(file=("scores.csv", payload, "text/csv"), purpose="assistants")

    assert FILE_ID.match(uploaded.id)
    assert uploaded.object == "file"
    assert uploaded.bytes == len(payload)
    assert uploaded.filename == "scores.csv"
    assert uploaded.purpose == "assistants"
    assert uploaded.status == "processed"
    assert abs(uploaded.created_at - time.time()) < 60
    assert client.files.retrieve(uploaded.id) == uploaded
    assert client.files.content(uploaded.id).read() == payload
    assert client.files.wait_for_processing(uploaded.id).status == "processed"


def test_upload_from_a_path_and_binary_bytes_round_trip(client: openai.OpenAI, tmp_path: Path) -> None:
    blob = bytes(range(256)) * 12_289  # about 3 MB, every byte value, not a multiple of any chunk size
    path = tmp_path / "blob.bin"
    path.write_bytes(blob)

    uploaded = client.files.create(file=path, purpose="assistants")

    assert uploaded.filename == "blob.bin"
    assert uploaded.bytes == len(blob)
    content = client.files.content(uploaded.id)
    assert content.content == blob
    assert content.response.headers["content-length"] == str(len(blob))


def test_non_ascii_filename(client: openai.OpenAI) -> None:
    uploaded = client.files.create(file=("résumé 2024.txt", "Grüße".encode()), purpose="assistants")

    assert uploaded.filename == "résumé 2024.txt"
    assert client.files.retrieve(uploaded.id).filename == "résumé 2024.txt"
    assert client.files.content(uploaded.id).text == "Grüße"


def test_expires_after_sets_expires_at(client: openai.OpenAI) -> None:
    expiry = {"anchor": "created_at", "seconds": 3600}
    if accepts(client.files.create, "expires_after"):
        uploaded = client.files.create(file=("tmp.txt", b"x"), purpose="assistants", expires_after=expiry)  # type: ignore[call-arg, arg-type, unused-ignore]
    else:
        # SDK 1.40 has no parameter for it; the same multipart fields go through extra_body.
        uploaded = client.files.create(
            file=("tmp.txt", b"x"), purpose="assistants", extra_body={"expires_after": expiry}
        )

    assert uploaded.expires_at == uploaded.created_at + 3600
    assert client.files.retrieve(uploaded.id).expires_at == uploaded.created_at + 3600


def test_delete_then_the_file_is_gone(client: openai.OpenAI) -> None:
    uploaded = client.files.create(file=("bye.txt", b"bye"), purpose="assistants")

    deleted = client.files.delete(uploaded.id)

    assert (deleted.id, deleted.object, deleted.deleted) == (uploaded.id, "file", True)
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(uploaded.id)
    with pytest.raises(openai.NotFoundError):
        client.files.content(uploaded.id)
    with pytest.raises(openai.NotFoundError):
        client.files.delete(uploaded.id)
    assert uploaded.id not in {f.id for f in client.files.list()}


def test_list_and_filter_by_purpose_in_a_fresh_project(fresh_client: openai.OpenAI) -> None:
    client = fresh_client
    assert client.files.list().data == []
    a = client.files.create(file=("a.txt", b"a"), purpose="assistants")
    v = client.files.create(file=("v.png", b"\x89PNG"), purpose="vision")
    b = client.files.create(file=("b.txt", b"bb"), purpose="assistants")

    assert [f.id for f in client.files.list()] == [b.id, v.id, a.id]
    assert [f.id for f in client.files.list(purpose="assistants")] == [b.id, a.id]
    assert [f.id for f in client.files.list(purpose="vision")] == [v.id]
    assert client.files.list(purpose="batch").data == []
    assert [f.bytes for f in client.files.list()] == [2, 4, 1]


def test_listing_more_than_100_files(fresh_client: openai.OpenAI) -> None:
    client = fresh_client
    ids = [client.files.create(file=(f"f{i}.txt", b"%d" % i), purpose="assistants").id for i in range(105)]

    if accepts(client.files.list, "limit"):
        # Newer SDKs page through /files with a cursor.
        assert [f.id for f in client.files.list(limit=20)] == ids[::-1]
        assert [f.id for f in client.files.list(order="asc", limit=40)] == ids
        pages = pages_with_data(client.files.list(order="asc", limit=100))
        assert [len(p.data) for p in pages] == [100, 5]
    else:
        # SDK 1.40 takes no paging parameters: the server must return every file in one page.
        page = client.files.list()
        assert [f.id for f in page.data] == ids[::-1]
        assert [f.id for f in client.files.list()] == ids[::-1]
