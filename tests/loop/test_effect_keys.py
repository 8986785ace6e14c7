"""Invariant 2's second half: effect keys survive re-execution, and the write-ahead record
of an effect in the outside world is synced before the effect.

Lost commits (SQLite falling back to an earlier commit after WAL damage, or a power cut
under `synchronous=normal`) make the loop redo steps whose effects already happened. A
redone call must present the key it had the first time, so an effect store recognises it.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tether import Agent, Limits, Runtime, ToolContext, tool
from tether.approvals import resolve_approval
from tether.journal import SQLiteStore, calls_after, fork_run, read_events
from tether.models import ScriptedModel, Turn, call


class EffectStore:
    """An outside world that deduplicates by key, and remembers every attempt."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def apply(self, key: str, what: str) -> bool:
        attempts = self.attempts()
        with self.path.open("a") as f:
            f.write(json.dumps({"key": key, "what": what}) + "\n")
        return all(a["key"] != key for a in attempts)

    def attempts(self) -> list[dict[str, str]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines()]

    def applied(self) -> list[str]:
        """Effects as the world saw them: the first attempt of each key."""
        seen: dict[str, str] = {}
        for a in self.attempts():
            seen.setdefault(a["key"], a["what"])
        return list(seen.values())


def world_agent(world: EffectStore, *, backup_at: int | None, db: Path, copy: Path) -> Agent:
    @tool(idempotent=True)
    def note(n: int, ctx: ToolContext) -> str:
        """Record fact n (deduplicated by the call's key)."""
        world.apply(ctx.idempotency_key, f"note {n}")
        if n == backup_at:
            # A consistent copy of the store as it was before this call's result: what
            # SQLite falls back to when later commits are lost.
            src, dst = sqlite3.connect(db), sqlite3.connect(copy)
            src.backup(dst)
            src.close()
            dst.close()
        return f"noted {n}"

    script: list[Turn | str] = [
        Turn(calls=(("note", {"n": 2 * i}), ("note", {"n": 2 * i + 1}))) for i in range(5)
    ]
    return Agent(
        name="world",
        instructions="Record the facts.",
        tools=[note],
        model=ScriptedModel([*script, "done"]),
        limits=Limits(max_steps=20),
    )


def lose_commits(db: Path, older: Path) -> None:
    """Only unsynced commits lost, as a power cut loses them: the sync log goes too (it
    would name the run's synced end and refuse the run; tests/journal/test_synclog.py)."""
    for suffix in ("", "-wal", "-shm", "-synclog"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(older, db)


async def keys_of(store: SQLiteStore, run_id: str) -> dict[str, str]:
    return {
        e.payload["idempotency_key"]: e.payload["arguments"]
        for e in await read_events(store, run_id)
        if e.type == "tool.requested"
    }


async def test_a_call_redone_after_lost_commits_presents_the_same_key(tmp_path: Path) -> None:
    db, copy = tmp_path / "run.db", tmp_path / "older.db"
    world = EffectStore(tmp_path / "world.jsonl")
    agent = world_agent(world, backup_at=5, db=db, copy=copy)
    rt = Runtime(SQLiteStore(db), worker_id="w1")
    first = await rt.start(agent, "go")
    assert first.status == "completed"
    original = await keys_of(rt.store, first.run_id)  # type: ignore[arg-type]
    await rt.close()
    # The commits after the copy are lost; the loop redoes those steps.
    lose_commits(db, copy)
    rt = Runtime(SQLiteStore(db), worker_id="w1")
    assert (await rt.get(first.run_id)).status == "running"
    again = await rt.resume(agent, first.run_id)
    assert again.status == "completed"
    redone = await keys_of(rt.store, first.run_id)  # type: ignore[arg-type]
    await rt.close()
    # Same calls, same keys, although the redo's events sit at other seqs (run.resumed).
    assert redone == original
    assert [k.rpartition("/")[0] for k in sorted(original)][:2] == [
        f"{first.run_id}/c1",
        f"{first.run_id}/c1",
    ]
    attempts = world.attempts()
    assert len(attempts) > len(original)  # some calls really ran twice...
    assert sorted(world.applied()) == sorted(f"note {n}" for n in range(10))  # ...applied once


class SyncSpy:
    """Wraps a store and remembers each append's event types and its `sync` flag."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.appends: list[tuple[list[str], bool]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def append(self, lease: Any, events: Any, **kw: Any) -> None:
        self.appends.append(([e.type for e in events], kw.get("sync", False)))
        await self.inner.append(lease, events, **kw)


def synced(spy: SyncSpy, event_type: str) -> list[bool]:
    return [sync for types, sync in spy.appends if event_type in types]


async def test_only_the_boundary_with_the_outside_world_is_synced(tmp_path: Path) -> None:
    @tool(idempotent=True)
    def look(q: str) -> str:
        """A read."""
        return q

    @tool
    def pay(amount: int) -> str:
        """A payment: not idempotent."""
        return "paid"

    @tool(requires_approval=True)
    def send(text: str) -> str:
        """Needs a human."""
        return "sent"

    model = ScriptedModel([call("look", {"q": "a"}), call("pay", {"amount": 3}),
                           call("send", {"text": "hi"}), "done"])  # fmt: skip
    agent = Agent(name="b", instructions="x", tools=[look, pay, send], model=model)
    store = SQLiteStore(tmp_path / "b.db")
    spy = SyncSpy(store)
    rt = Runtime(spy)  # type: ignore[arg-type]
    waiting = await rt.start(agent, "go")
    assert waiting.status == "waiting_approval"
    await resolve_approval(spy, waiting.pending_approvals[0], decision="approved")  # type: ignore[arg-type]
    done = await rt.resume(agent, waiting.run_id)
    assert done.status == "completed"
    requested = [(types, sync) for types, sync in spy.appends if "tool.requested" in types]
    # look (idempotent): the cheap path; pay: synced before it runs; send: gated, not run yet.
    assert [sync for _, sync in requested] == [False, True, False]
    assert synced(spy, "tool.started") == [True]  # the approved call, before it runs
    assert synced(spy, "run.completed") == [True]  # the published answer
    assert not any(synced(spy, "cycle.started")[:1])  # model calls keep the cheap path
    # The safety level was raised around those commits only.
    assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    await rt.close()


async def test_a_synced_commit_runs_under_synchronous_full_then_returns_to_normal(
    tmp_path: Path,
) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    statements: list[str] = []
    store._db.set_trace_callback(statements.append)
    rt = Runtime(store)

    @tool
    def pay(amount: int) -> str:
        """Not idempotent."""
        return "paid"

    agent = Agent(name="s", instructions="x", tools=[pay],
                  model=ScriptedModel([call("pay", {"amount": 1}), "done"]))  # fmt: skip
    await rt.start(agent, "go")
    text = "\n".join(statements)
    # Each synced commit is wrapped: FULL, BEGIN … COMMIT, NORMAL.
    assert text.count("PRAGMA synchronous=FULL") == text.count("PRAGMA synchronous=NORMAL") >= 3
    first = statements.index("PRAGMA synchronous=FULL")
    assert statements[first + 1] == "BEGIN IMMEDIATE"
    await rt.close()


async def test_a_store_with_full_sync_is_left_alone(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "f.db", synchronous="full")
    statements: list[str] = []
    store._db.set_trace_callback(statements.append)
    agent = Agent(name="f", instructions="x", tools=[], model=ScriptedModel(["done"]))
    rt = Runtime(store)
    await rt.start(agent, "go")
    assert not [s for s in statements if s.startswith("PRAGMA synchronous")]
    await rt.close()


async def test_a_fork_lists_what_it_discards_and_redoes_it_with_the_parents_keys(
    tmp_path: Path,
) -> None:
    world = EffectStore(tmp_path / "world.jsonl")
    agent = world_agent(world, backup_at=None, db=tmp_path / "x", copy=tmp_path / "y")
    store = SQLiteStore(tmp_path / "f.db")
    rt = Runtime(store)
    parent = await rt.start(agent, "go")
    events = await read_events(store, parent.run_id)
    # Fork just after the second cycle's request: cycles 2..5's calls are discarded.
    second = next(e for e in events if e.type == "cycle.started" and e.payload["cycle"] == 2)
    discarded, unreadable = await calls_after(store, parent.run_id, second.seq)
    assert unreadable == 0
    assert [(c.name, c.outcome, c.idempotent) for c in discarded] == [
        ("note", "completed", True)
    ] * 8
    assert discarded[0].key == f"{parent.run_id}/c2/t0"
    fork = await fork_run(store, parent.run_id, at_seq=second.seq)
    before = len(world.attempts())
    result = await rt.resume(agent, fork)
    assert result.status == "completed"
    # The fork's calls present the parent's keys: the world applies nothing twice.
    assert {a["key"] for a in world.attempts()[before:]} <= {c.key for c in discarded}
    assert sorted(world.applied()) == sorted(f"note {n}" for n in range(10))
    await rt.close()


@pytest.mark.parametrize("legacy", [True, False])
def test_child_run_ids_follow_the_key(legacy: bool) -> None:
    from tether.subagents import child_run_id

    if legacy:
        assert child_run_id("run_a:17") == "run_a.17"
    else:
        assert child_run_id("run_a/c3/t1") == "run_a.c3.t1"
