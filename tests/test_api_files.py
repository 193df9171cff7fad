"""/v1/files: multipart upload, list, retrieve, raw content, delete (on SQLite and on PostgreSQL)."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from starlette.testclient import TestClient

if TYPE_CHECKING:
    from conftest import Api

FILE_RE = re.compile(r"^file-[A-Za-z0-9]{24}$")
UPLOAD_PURPOSES = ["assistants", "vision", "batch", "user_data", "fine-tune", "evals"]
# OpenAIFile.purpose in the spec lists what the API returns; `evals` is accepted on upload (it is in
# CreateFileRequest) but missing from that enum, so file objects with it are checked field by field.
SPEC_PURPOSES = {"assistants", "vision", "batch", "user_data", "fine-tune"}


def upload(
    client: TestClient,
    name: str = "notes.txt",
    data: bytes = b"hello world",
    purpose: str = "assistants",
    form: dict[str, str] | None = None,
) -> Any:
    """POST /v1/files as the SDK does: the bytes as the ``file`` part, ``purpose`` and any other fields."""
    return client.post("/v1/files", files={"file": (name, data)}, data={"purpose": purpose, **(form or {})})


def uploaded(client: TestClient, *args: Any, **kwargs: Any) -> dict[str, Any]:
    r = upload(client, *args, **kwargs)
    assert r.status_code == 200, r.text
    return r.json()


def stored_bytes(api: Api) -> list[tuple[str, bytes]]:
    """(key, bytes) of every blob the server holds: in the data folder on SQLite, in the database on
    PostgreSQL (where the data folder must hold none); half-written ones included."""
    root = Path(api.settings.data_dir) / "files"
    on_disk = sorted((p.name, p.read_bytes()) for p in root.rglob("*") if p.is_file())
    if api.backend == "sqlite":
        return on_disk
    assert on_disk == []
    keys = [r[0] for r in api.sql("SELECT key FROM blobs ORDER BY key")]
    return [
        (k, b"".join(bytes(r[0]) for r in api.sql("SELECT data FROM blob_chunks WHERE key = ? ORDER BY seq", (k,))))
        for k in keys
    ]


def file_object(obj: dict[str, Any], conforms: Any) -> None:
    """The spec types the optional ``expires_at`` and ``status_details`` as non-null, but OpenAI sends
    ``null`` for both and the SDK models them as Optional; everything else is checked by the schema."""
    assert set(obj) == {
        "id",
        "object",
        "bytes",
        "created_at",
        "expires_at",
        "filename",
        "purpose",
        "status",
        "status_details",
    }
    assert obj["status_details"] is None
    checked = {k: v for k, v in obj.items() if v is not None or k not in ("expires_at", "status_details")}
    if obj["purpose"] in SPEC_PURPOSES:
        conforms(checked, "OpenAIFile")


@pytest.mark.parametrize("purpose", UPLOAD_PURPOSES)
def test_upload_every_client_purpose(shared_client: TestClient, purpose: str, conforms: Any) -> None:
    before = int(time.time())
    obj = uploaded(shared_client, "report.jsonl", b'{"a": 1}\n', purpose)
    assert FILE_RE.match(obj["id"])
    assert before <= obj["created_at"] <= int(time.time())
    assert obj == {
        "id": obj["id"],
        "object": "file",
        "bytes": 9,
        "created_at": obj["created_at"],
        "expires_at": None,
        "filename": "report.jsonl",
        "purpose": purpose,
        "status": "processed",
        "status_details": None,
    }
    file_object(obj, conforms)
    assert shared_client.get(f"/v1/files/{obj['id']}").json() == obj


def test_upload_stores_the_exact_bytes_and_serves_them_back(api: Api) -> None:
    client = api.client
    data = bytes(range(256)) * 40 + b"\x00\xff"
    obj = uploaded(client, "blob.bin", data)
    assert obj["bytes"] == len(data)
    r = client.get(f"/v1/files/{obj['id']}/content")
    assert r.status_code == 200
    assert r.content == data
    assert r.headers["content-type"] == "application/octet-stream"
    assert r.headers["content-length"] == str(len(data))
    assert 'filename="blob.bin"' in r.headers["content-disposition"]
    assert [b for _, b in stored_bytes(api)] == [data]


@pytest.mark.parametrize(
    ("name", "media_type"),
    [
        ("notes.txt", "text/plain"),
        ("data.json", "application/json"),
        ("photo.png", "image/png"),
        ("photo.jpeg", "image/jpeg"),
        ("paper.pdf", "application/pdf"),
        ("no-extension", "application/octet-stream"),
    ],
)
def test_content_type_follows_the_filename(shared_client: TestClient, name: str, media_type: str) -> None:
    obj = uploaded(shared_client, name, b"content")
    r = shared_client.get(f"/v1/files/{obj['id']}/content")
    assert r.status_code == 200
    assert r.headers["content-type"].split(";")[0] == media_type
    assert r.content == b"content"


def test_a_path_in_the_filename_keeps_only_the_base_name(shared_client: TestClient) -> None:
    assert uploaded(shared_client, "../../etc/passwd")["filename"] == "passwd"
    assert uploaded(shared_client, "C:\\Users\\me\\doc.txt")["filename"] == "doc.txt"


def test_expires_after_sets_expires_at(shared_client: TestClient, conforms: Any) -> None:
    obj = uploaded(shared_client, form={"expires_after[anchor]": "created_at", "expires_after[seconds]": "3600"})
    assert obj["expires_at"] == obj["created_at"] + 3600
    file_object(obj, conforms)
    assert shared_client.get(f"/v1/files/{obj['id']}").json()["expires_at"] == obj["expires_at"]


def test_list_filters_by_purpose_newest_first(client: TestClient, conforms: Any) -> None:
    a = uploaded(client, purpose="assistants")["id"]
    v = uploaded(client, purpose="vision")["id"]
    b = uploaded(client, purpose="assistants")["id"]

    page = client.get("/v1/files").json()
    assert [f["id"] for f in page["data"]] == [b, v, a]
    assert (page["first_id"], page["last_id"], page["has_more"]) == (b, a, False)
    assert page["object"] == "list"
    for item in page["data"]:
        file_object(item, conforms)

    only = client.get("/v1/files", params={"purpose": "assistants"}).json()
    assert [f["id"] for f in only["data"]] == [b, a]
    assert [f["id"] for f in client.get("/v1/files", params={"purpose": "vision"}).json()["data"]] == [v]
    assert client.get("/v1/files", params={"purpose": "batch"}).json()["data"] == []


def test_list_paginates(client: TestClient) -> None:
    ids = [uploaded(client, f"f{i}.txt")["id"] for i in range(5)]
    seen: list[str] = []
    after = None
    while True:
        params: dict[str, Any] = {"limit": 2, "order": "asc"}
        if after:
            params["after"] = after
        page = client.get("/v1/files", params=params).json()
        seen += [f["id"] for f in page["data"]]
        assert page["has_more"] is (len(seen) < 5)
        if not page["has_more"]:
            break
        after = page["last_id"]
    assert seen == ids
    desc = client.get("/v1/files", params={"limit": 3, "after": ids[3]}).json()
    assert [f["id"] for f in desc["data"]] == ids[2::-1]
    assert desc["has_more"] is False


def test_list_limit_bounds_follow_the_files_api(client: TestClient, expect_error: Any) -> None:
    # /files takes up to 10,000 per page (and that is its default), unlike the 100 of other lists.
    for _ in range(3):
        uploaded(client)
    assert len(client.get("/v1/files", params={"limit": 10_000}).json()["data"]) == 3
    expect_error(client.get("/v1/files", params={"limit": 0}), 400, code="integer_below_min_value", param="limit")
    expect_error(client.get("/v1/files", params={"limit": 10_001}), 400, code="integer_above_max_value", param="limit")
    expect_error(
        client.get("/v1/files", params={"after": "file-unknown"}),
        400,
        code="invalid_value",
        param="after",
        contains=("file-unknown",),
    )


def test_retrieve_and_content_of_unknown_file_are_404(shared_client: TestClient, expect_error: Any) -> None:
    expect_error(shared_client.get("/v1/files/file-nope"), 404, message="No such File object: file-nope", param="id")
    expect_error(shared_client.get("/v1/files/file-nope/content"), 404, param="id")
    expect_error(shared_client.delete("/v1/files/file-nope"), 404, param="id")


def test_delete_removes_record_and_bytes(api: Api, conforms: Any, expect_error: Any) -> None:
    client = api.client
    keep = uploaded(client, "keep.txt", b"keep")
    gone = uploaded(client, "gone.txt", b"gone")
    assert len(stored_bytes(api)) == 2
    r = client.delete(f"/v1/files/{gone['id']}")
    assert r.status_code == 200, r.text
    assert r.json() == {"id": gone["id"], "object": "file", "deleted": True}
    conforms(r.json(), "DeleteFileResponse")
    expect_error(client.get(f"/v1/files/{gone['id']}"), 404)
    expect_error(client.get(f"/v1/files/{gone['id']}/content"), 404)
    assert [f["id"] for f in client.get("/v1/files").json()["data"]] == [keep["id"]]
    assert [b for _, b in stored_bytes(api)] == [b"keep"]
    assert api.count("files") == 1


def test_upload_without_purpose_or_file_or_multipart(shared_client: TestClient, expect_error: Any) -> None:
    expect_error(
        shared_client.post("/v1/files", files={"file": ("a.txt", b"x")}),
        400,
        code="missing_required_parameter",
        param="purpose",
        message="Missing required parameter: 'purpose'.",
    )
    expect_error(
        shared_client.post("/v1/files", data={"purpose": "assistants"}, files={"other": ("a.txt", b"x")}),
        400,
        code="missing_required_parameter",
        param="file",
    )
    expect_error(
        shared_client.post("/v1/files", json={"purpose": "assistants"}),
        400,
        code="invalid_content_type",
        contains=("multipart/form-data",),
    )


@pytest.mark.parametrize("purpose", ["assistants_output", "batch_output", "fine-tune-results", "nonsense"])
def test_upload_rejects_purposes_clients_may_not_set(
    shared_client: TestClient, purpose: str, expect_error: Any
) -> None:
    expect_error(
        upload(shared_client, purpose=purpose),
        400,
        code="invalid_value",
        param="purpose",
        contains=(f"'{purpose}'", "'assistants'", "'evals'"),
    )


@pytest.mark.parametrize(
    ("fields", "param", "code"),
    [
        (
            {"expires_after[anchor]": "last_active_at", "expires_after[seconds]": "3600"},
            "expires_after.anchor",
            "invalid_value",
        ),
        ({"expires_after[seconds]": "3600"}, "expires_after.anchor", "invalid_value"),
        (
            {"expires_after[anchor]": "created_at", "expires_after[seconds]": "soon"},
            "expires_after.seconds",
            "invalid_type",
        ),
        (
            {"expires_after[anchor]": "created_at", "expires_after[seconds]": "3599"},
            "expires_after.seconds",
            "invalid_value",
        ),
        (
            {"expires_after[anchor]": "created_at", "expires_after[seconds]": "2592001"},
            "expires_after.seconds",
            "invalid_value",
        ),
    ],
)
def test_upload_rejects_bad_expiry(
    shared_api: Api, fields: dict[str, str], param: str, code: str, expect_error: Any
) -> None:
    files, blobs = shared_api.count("files"), stored_bytes(shared_api)
    expect_error(upload(shared_api.client, form=fields), 400, code=code, param=param)
    # Checked before the bytes are stored: no record, and no bytes left behind.
    assert shared_api.count("files") == files
    assert stored_bytes(shared_api) == blobs


def test_upload_over_the_size_limit_is_413_and_leaves_nothing(make_api: Any, expect_error: Any) -> None:
    api = make_api(max_upload_bytes=100)
    ok = uploaded(api.client, "small.txt", b"x" * 100)
    assert ok["bytes"] == 100
    expect_error(
        upload(api.client, "big.txt", b"x" * 101),
        413,
        code="request_too_large",
        param="file",
        contains=("100 bytes",),
    )
    assert api.count("files") == 1
    assert [k for k, _ in stored_bytes(api)] == [ok["id"]]
