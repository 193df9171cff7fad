"""The engine's one lease helper, on both job queues (runs and ingestion) and both databases: claims
exclude each other until a lease lapses, renewal keeps them and reports the jobs lost, a graceful
release does not count an attempt, and every time comes from the helper's one clock."""

from __future__ import annotations

from typing import Any

from conftest import run

from assistantd.engine.leases import FILES, RUNS, Leases
from assistantd.store import Conn, Database
from assistantd.store import objects as rows
from assistantd.store import vector_stores as vrows


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def add_files(db: Database, n: int) -> list[int]:
    def tx(conn: Conn) -> list[int]:
        for i in range(n):
            obj = {"id": f"file-{i}", "object": "vector_store.file", "vector_store_id": "vs_1", "created_at": 1,
                   "status": "in_progress"}  # fmt: skip
            vrows.insert_file(conn, "p", obj, filename=f"f{i}.txt", batch_id=None)
        return [int(r[0]) for r in conn.fetchall("SELECT seq FROM vector_store_files ORDER BY seq")]

    return run(db.write(tx))


def columns(db: Database, sql: str) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in run(db.read(lambda c: c.fetchall(sql)))]


def test_claims_exclude_each_other_until_a_lease_lapses(db: Database) -> None:
    clock = Clock()
    a = Leases(db, FILES, seconds=30, owner="a", clock=clock)
    b = Leases(db, FILES, seconds=30, owner="b", clock=clock)
    first, second = add_files(db, 2)
    assert run(db.write(a.claim_next)) == first
    assert run(db.write(b.claim_next)) == second
    assert run(db.write(a.claim_next)) is None  # both held
    assert columns(db, "SELECT lease_owner, lease_until, attempts FROM vector_store_files ORDER BY seq") == [
        ("a", 1_000_030.0, 1),
        ("b", 1_000_030.0, 1),
    ]
    clock.now += 20
    assert run(a.renew([first])) == set()  # renewed to now + 30; b's lapses first
    clock.now += 15
    assert run(db.write(lambda c: a.claim(c, first))) is False
    assert run(db.write(a.claim_next)) == second  # b's lease lapsed: a takes it over, an attempt more
    assert run(b.renew([second])) == {second}  # b learns it is no longer its job
    assert columns(db, "SELECT lease_owner, attempts FROM vector_store_files ORDER BY seq") == [("a", 1), ("a", 2)]


def test_graceful_release_gives_jobs_back_without_an_attempt(db: Database) -> None:
    clock = Clock()
    a = Leases(db, FILES, seconds=30, owner="a", clock=clock)
    seqs = add_files(db, 3)
    for _ in seqs:
        run(db.write(a.claim_next))
    assert run(db.write(lambda c: a.release(c, [seqs[0]]))) == 1  # a failure: the attempt stands
    assert run(db.write(lambda c: a.release(c, attempt=False))) == 2  # shutting down: not an attempt
    assert columns(db, "SELECT lease_owner, lease_until, attempts FROM vector_store_files ORDER BY seq") == [
        (None, None, 1),
        (None, None, 0),
        (None, None, 0),
    ]


def test_embedded_start_drops_other_owners_leases_only(db: Database) -> None:
    clock = Clock()
    old, new = (Leases(db, FILES, seconds=30, owner=o, clock=clock) for o in ("old", "new"))
    seqs = add_files(db, 2)
    run(db.write(old.claim_next))
    run(db.write(new.claim_next))
    assert run(db.write(new.release_others)) == 1
    assert columns(db, "SELECT seq, lease_owner FROM vector_store_files ORDER BY seq") == [
        (seqs[0], None),
        (seqs[1], "new"),
    ]


def test_runs_are_held_only_while_executing(db: Database) -> None:
    clock = Clock()
    leases = Leases(db, RUNS, seconds=30, owner="me", clock=clock)

    def add(conn: Conn) -> None:
        for run_id, status in (("run_1", "in_progress"), ("run_2", "requires_action"), ("run_3", "queued")):
            obj = {"id": run_id, "object": "thread.run", "created_at": 1, "thread_id": f"t_{run_id}", "status": status}
            rows.insert(conn, rows.RUNS, "p", obj, thread_id=obj["thread_id"], status=status, expires_at=None,
                        lease_owner=None, lease_until=None, state="{}")  # fmt: skip
        leases.take(conn, "run_1")
        leases.take(conn, "run_2")

    run(db.write(add))
    assert run(db.read(lambda c: leases.held(c, ["run_1", "run_2", "run_3"]))) == {"run_1"}
    clock.now += 10
    ids = ["run_1", "run_2", "run_3"]
    many = ids + [f"run_x{i}" for i in range(1200)]  # more keys than one statement takes
    assert run(leases.renew(many)) == set(many) - {"run_1"}
    assert columns(db, "SELECT id, lease_owner, lease_until FROM runs ORDER BY id") == [
        ("run_1", "me", 1_000_040.0),
        ("run_2", "me", 1_000_040.0),  # renewal never stops a job: lost ones are only reported
        ("run_3", None, None),
    ]
    assert run(db.write(lambda c: leases.claim(c, "run_3"))) is True
    assert run(db.write(lambda c: leases.release(c, ["run_1", "run_3"]))) == 2
