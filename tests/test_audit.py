"""`why` and audit queries: complete, ordered chains from point lookups, and indexed search."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tether import Agent, Limits, Runtime, tool
from tether._clock import FakeClock
from tether.approvals import pending_approvals, resolve_approval
from tether.audit import AuditFilter, audit_events, context_at, why
from tether.budget._journaled import reserved_in, settled_in
from tether.demo import demo_agent, demo_plan
from tether.errors import UsageError
from tether.events import GENESIS_HASH, Event, EventDraft
from tether.journal import (
    MemoryStore,
    SQLiteStore,
    Store,
    read_events,
    sqlite_functions,
    verify_run,
)
from tether.journal._index import audit_columns
from tether.journal._schema import SCHEMA_VERSION, SQLITE_MIGRATIONS
from tether.models import ScriptedModel, Turn, call
from tether.state import fold
from tether.subagents import agent_tool

# -- the demo, once per module ------------------------------------------------------------


@dataclass(frozen=True)
class Demo:
    path: Path
    run_id: str
    events: list[Event]

    def last(self, kind: str, name: str | None = None) -> Event:
        return [
            e
            for e in self.events
            if e.type == kind and (name is None or e.payload.get("name") == name)
        ][-1]

    def first(self, kind: str, name: str | None = None) -> Event:
        return next(
            e
            for e in self.events
            if e.type == kind and (name is None or e.payload.get("name") == name)
        )


async def _run_demo(folder: Path) -> Demo:
    store = SQLiteStore(folder / "demo.db")
    try:
        runtime = Runtime(store)
        agent = demo_agent(folder / "out")
        result = await runtime.start(agent, demo_plan()["task"])
        (approval,) = await pending_approvals(store, run_id=result.run_id)
        await resolve_approval(store, approval.request_id, decision="approved", actor="cli:ann")
        result = await runtime.resume(agent, result.run_id)
        assert result.status == "completed"
        return Demo(folder / "demo.db", result.run_id, await read_events(store, result.run_id))
    finally:
        await store.close()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    return asyncio.run(_run_demo(tmp_path_factory.mktemp("demo")))


@pytest.fixture
async def demo_store(demo: Demo) -> AsyncIterator[Store]:
    store = SQLiteStore(demo.path)
    yield store
    await store.close()


def assert_linked(chain: list[dict[str, Any]]) -> None:
    """Oldest first, and every causal step names the step before it as its cause."""
    causal = [s for s in chain if not s["attached"]]
    keys = [(s["run_id"], s["seq"]) for s in chain]
    assert keys == sorted(keys, key=lambda k: ([s["run_id"] for s in chain].index(k[0]), k[1]))
    for before, after in itertools.pairwise(causal):
        if after["type"] == "run.created" and after["run_id"] != before["run_id"]:
            continue  # a child run starts: linked by its parent_event, checked separately
        if after["cause"] is not None:
            assert after["cause"] == before["id"], (before["id"], after["id"])
        else:
            assert before["implied"], before["id"]


# -- why on the demo ----------------------------------------------------------------------


def test_every_event_of_the_demo_names_an_earlier_cause(demo: Demo) -> None:
    """Invariant 8: nothing is journaled without naming the event that caused it."""
    seqs = {e.seq for e in demo.events}
    for event in demo.events[1:]:
        assert event.causation_id is not None, (event.seq, event.type)
        run, _, seq = event.causation_id.rpartition(":")
        assert run == demo.run_id and int(seq) in seqs and int(seq) < event.seq, event.id
    # A model call's hold rides on its request and its settlement on its answer, whose
    # cause is that request: the chain links the two without events of their own.
    by_seq = {e.seq: e for e in demo.events}
    answers = [e for e in demo.events if e.type == "model.completed"]
    assert answers and not any(e.type.startswith("budget.") for e in demo.events)
    for answer in answers:
        request = by_seq[int(answer.causation_id.rpartition(":")[2])]  # type: ignore[union-attr]
        held, settled = reserved_in(request), settled_in(answer)
        assert held is not None and settled is not None
        assert held.reservation_id == settled.reservation_id


async def test_why_the_final_report_is_complete_and_in_order(demo: Demo, demo_store: Store) -> None:
    done = demo.last("run.completed")
    publish_result = demo.last("tool.completed", "publish")
    data = await why(demo_store, done.id, role="operator")
    chain = data["chain"]
    assert [s["type"] for s in chain] == [
        "tool.completed",  # the trigger: the report was published
        "cycle.started",
        "model.requested",  # with its budget hold
        "model.completed",  # the decision: the final answer, with its settlement
        "run.completed",
    ]
    assert chain[2]["payload"]["budget"]["estimate_usd"] > 0
    held = chain[2]["payload"]["budget"]["reservation_id"]
    assert chain[3]["payload"]["budget"] == {"reservation_id": held}
    assert chain[0]["id"] == publish_result.id and chain[0]["trigger"]
    assert chain[-1]["target"] and chain[-1]["id"] == done.id
    assert {s["correlation_id"] for s in chain[1:]} == {done.correlation_id}
    assert_linked(chain)
    assert data["notes"] == [] and data["hidden_steps"] == 0


async def test_why_a_tool_call_shows_its_context_decision_approval_and_result(
    demo: Demo, demo_store: Store
) -> None:
    result = demo.last("tool.completed", "publish")
    data = await why(demo_store, result.id, role="operator")
    chain = data["chain"]
    types = [s["type"] for s in chain]
    assert types == [
        "tool.completed",  # trigger: the last draft
        "cycle.started",
        "model.requested",
        "model.completed",
        "tool.requested",
        "approval.requested",
        "approval.resolved",
        "tool.started",
        "tool.completed",
    ]
    assert chain[0]["payload"]["name"] == "draft" and chain[0]["trigger"]
    resolved = chain[types.index("approval.resolved")]
    assert resolved["actor"] == "cli:ann" and resolved["attached"]
    assert_linked(chain)
    # What the model had in its context when it decided to publish: exactly the fold's.
    request = chain[2]
    decision = chain[3]
    expected = fold(e for e in demo.events if e.seq < decision["seq"]).context
    context = request["context"]
    assert context["method"] == "index"
    assert context["messages"] == len(expected) == request["payload"]["context_messages"]
    system = demo.first("message.system").seq
    assert context["seqs"] == [s for s in expected if s != system]
    assert context["hidden"] == 1  # the system prompt: always hidden
    assert context["estimated_tokens"] == request["payload"]["context_tokens"]
    assert context["input_tokens"] == decision["usage"]["input_tokens"]


async def test_why_in_the_first_cycle_reaches_the_task_and_the_run(
    demo: Demo, demo_store: Store
) -> None:
    search = demo.first("tool.completed", "search")
    chain = (await why(demo_store, search.id, role="operator"))["chain"]
    assert [s["type"] for s in chain][:3] == ["run.created", "message.user", "cycle.started"]
    assert chain[1]["trigger"] and chain[-1]["id"] == search.id
    assert chain[2]["payload"] == {"cycle": 1}
    assert_linked(chain)


async def test_why_is_a_handful_of_point_lookups(demo: Demo, demo_store: Store) -> None:
    early = await why(demo_store, demo.first("tool.completed", "read").id, role="audit")
    late = await why(demo_store, demo.last("tool.completed", "publish").id, role="audit")
    # Lookups do not grow with the run's length: one per step plus a few indexed queries.
    assert early["lookups"] <= 16 and late["lookups"] <= 16


async def test_each_view_of_a_chain_keeps_to_its_role(demo: Demo, demo_store: Store) -> None:
    done = demo.last("run.completed")
    user = await why(demo_store, done.id, role="user")
    assert [s["type"] for s in user["chain"]] == ["model.completed", "run.completed"]
    assert user["hidden_steps"] == 3
    # The answer is visible; the settlement it carries is for operators only.
    assert "budget" not in user["chain"][0]["payload"]
    operator = await why(demo_store, done.id, role="operator")
    answer = next(s for s in operator["chain"] if s["type"] == "model.completed")
    assert answer["payload"]["budget"]["reservation_id"].startswith("rsv_")
    audit = await why(demo_store, demo.last("tool.completed", "publish").id, role="audit")
    request = next(s for s in audit["chain"] if s["type"] == "model.requested")
    assert request["context"]["hidden"] == 0
    assert demo.first("message.system").seq in request["context"]["seqs"]
    assert "checksum" in request
    with pytest.raises(UsageError, match=r"no event .* in the user view"):
        await why(demo_store, demo.first("tool.requested").id, role="user")
    with pytest.raises(UsageError, match="no event"):
        await why(demo_store, f"{demo.run_id}:99999", role="audit")
    with pytest.raises(UsageError, match="not an event id"):
        await why(demo_store, "nonsense", role="audit")


# -- the context the model had ------------------------------------------------------------


def _echo_model(turns: int, *, window: int) -> ScriptedModel:
    def turn(request: object) -> Turn | str:
        return "done" if model.calls > turns else call("echo", {"text": f"{model.calls}"})

    model = ScriptedModel(turn, context_window=window, max_output_tokens=200)
    return model


@tool(idempotent=True)
def echo(text: str) -> str:
    """Return the text with a big tail."""
    return text + "x" * 2_000


async def test_the_context_is_rebuilt_exactly_across_compactions(tmp_path: Path) -> None:
    """A long run whose context is compacted many times: at every decision the rebuilt
    context (indexed lookups, checked by count) equals fold(events before it).context."""
    store = SQLiteStore(tmp_path / "c.db")
    agent = Agent(
        name="compactor",
        instructions="Echo.",
        tools=[echo],
        model=_echo_model(40, window=8_000),
        limits=Limits(max_steps=60),
        max_output_tokens=200,
    )
    result = await Runtime(store, snapshot_every=50).start(agent, "echo a lot")
    assert result.status == "completed"
    events = await read_events(store, result.run_id)
    assert sum(e.type == "context.compacted" for e in events) >= 3
    methods = set()
    for decision in (e for e in events if e.type == "model.completed"):
        info = await context_at(store, result.run_id, decision.seq)
        expected = fold(e for e in events if e.seq < decision.seq).context
        assert sorted(info.seqs) == sorted(expected), decision.seq
        methods.add(info.method)
        data = await why(store, decision.id, role="audit")
        request = next(s for s in data["chain"] if s["type"] == "model.requested")
        assert request["context"]["method"] == "index", decision.seq
        assert sorted(request["context"]["seqs"]) == sorted(expected)
    assert methods == {"replay"}  # context_at alone has no count to check against
    await store.close()


async def test_a_journal_the_index_cannot_explain_is_replayed(tmp_path: Path) -> None:
    from tether.events import EventDraft
    from tether.journal import RunJournal, create_run

    store = MemoryStore()
    clock = FakeClock()
    await create_run(store, agent="a", task="t", run_id="run_odd", clock=clock)
    lease = await store.acquire_lease("run_odd", owner="w", ttl_s=60)
    journal, _ = await RunJournal.open(store, lease, clock=clock, snapshot_every=0)
    corr = "run_odd/c1"
    drafts = [
        EventDraft(type="message.user", payload={"content": f"m{i}", "pinned": False})
        for i in range(6)
    ]
    await journal.append(*drafts)
    # A compaction that removes from the middle (not whole oldest turns): not the runner's.
    await journal.append(
        EventDraft(type="context.compacted", payload={"removed": [4], "content": "s"})
    )
    started, requested = await journal.append(
        EventDraft(type="cycle.started", payload={"cycle": 1}, correlation_id=corr),
        EventDraft(
            type="model.requested",
            payload={"model": "m", "context_messages": len(journal.state.context)},
            correlation_id=corr,
            causation_id="run_odd:9",
        ),
    )
    (decision,) = await journal.append(
        EventDraft(
            type="model.completed",
            payload={"content": "ok", "tool_calls": []},
            correlation_id=corr,
            causation_id=requested.id,
        )
    )
    del started
    data = await why(store, decision.id, role="audit")
    context = next(s for s in data["chain"] if s["type"] == "model.requested")["context"]
    assert context["method"] == "replay"
    assert context["seqs"] == list(fold(await read_events(store, "run_odd", until_seq=10)).context)


# -- sub-agents ---------------------------------------------------------------------------


@tool
def lookup(city: str) -> str:
    """Weather for a city."""
    return f"{city}: rain"


def _family() -> tuple[Agent, Agent]:
    child = Agent(
        name="weather",
        instructions="Look up the weather.",
        tools=[lookup],
        model=ScriptedModel([call("lookup", {"city": "Oslo"}), "Oslo: rain"]),
    )
    parent = Agent(
        name="planner",
        instructions="Plan the day.",
        tools=[agent_tool(child)],
        model=ScriptedModel([call("weather", {"task": "Weather in Oslo?"}), "Take an umbrella."]),
    )
    return parent, child


@pytest.fixture(params=["memory", "sqlite"])
async def indexed_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """The backends with an audit index (PostgreSQL keeps the columns; its queries are to come)."""
    store: Store = MemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "i.db")
    yield store
    await store.close()


async def test_a_sub_agent_runs_as_a_child_run_on_every_backend(store: Store) -> None:
    parent, _ = _family()
    result = await Runtime(store).start(parent, "Plan my day")
    assert result.status == "completed" and result.answer == "Take an umbrella."
    events = await read_events(store, result.run_id)
    call_event = next(e for e in events if e.type == "tool.requested")
    # Named after the call's stable effect key (run, cycle, place in the turn).
    assert call_event.payload["idempotency_key"] == f"{result.run_id}/c1/t0"
    child = await store.get_run(f"{result.run_id}.c1.t0")
    assert child.parent_run_id == result.run_id and child.summary.status == "completed"


async def test_a_sub_agent_runs_as_a_child_run_and_why_crosses_into_the_parent(
    indexed_store: Store,
) -> None:
    store = indexed_store
    parent, _ = _family()
    result = await Runtime(store).start(parent, "Plan my day")
    assert result.status == "completed" and result.answer == "Take an umbrella."
    events = await read_events(store, result.run_id)
    call_event = next(e for e in events if e.type == "tool.requested")
    child_id = f"{result.run_id}.c1.t0"
    child = await store.get_run(child_id)
    assert child.parent_run_id == result.run_id and child.summary.status == "completed"
    child_events = await read_events(store, child_id)
    assert child_events[0].payload["parent_event"] == call_event.id
    assert child_events[0].payload["metadata"]["parent_correlation_id"] == call_event.correlation_id
    answer = next(e for e in events if e.type == "tool.completed")
    assert answer.payload["output"] == "Oslo: rain"
    # Why did the child answer? Its cycle, then the parent's call that started the child.
    data = await why(store, child_events[-1].id, role="operator")
    chain = data["chain"]
    runs = [s["run_id"] for s in chain]
    assert runs[0] == result.run_id and runs[-1] == child_id
    hop = next(s for s in chain if s["id"] == call_event.id)
    assert hop["child_run"] == child_id
    created = next(s for s in chain if s["run_id"] == child_id and s["type"] == "run.created")
    assert created["payload"]["parent_event"] == call_event.id
    assert_linked([s for s in chain if s["run_id"] == result.run_id])
    assert_linked([s for s in chain if s["run_id"] == child_id and s["type"] != "run.created"])
    # And from the parent's side, the call names its child.
    parent_side = await why(store, answer.id, role="operator")
    requested = next(s for s in parent_side["chain"] if s["type"] == "tool.requested")
    assert requested["child_run"] == child_id


async def test_a_re_run_sub_agent_call_resumes_the_same_child(tmp_path: Path) -> None:
    parent, child_agent = _family()
    store = SQLiteStore(tmp_path / "s.db")
    result = await Runtime(store).start(parent, "Plan my day")
    runs = [r.run_id for r in await store.list_runs()]
    assert len(runs) == 2
    # Calling the tool again with the same call (as recovery does) reuses the child run.
    from tether.tools import ToolContext, execute

    events = await read_events(store, result.run_id)
    call_event = next(e for e in events if e.type == "tool.requested")
    context = ToolContext(
        run_id=result.run_id,
        call_id="x",
        idempotency_key=call_event.payload["idempotency_key"],
        attempt=2,
        store=store,
        event_id=call_event.id,
    )
    outcome = await execute(parent.tools[0], {"task": "Weather in Oslo?"}, context)
    assert outcome.output == "Oslo: rain"
    assert len(await store.list_runs()) == 2
    del child_agent
    await store.close()


# -- audit queries ------------------------------------------------------------------------


async def test_audit_queries_by_each_dimension(demo: Demo, demo_store: Store) -> None:
    async def ids(role: str = "audit", **kw: Any) -> list[str]:
        found, _ = await audit_events(demo_store, AuditFilter(limit=10_000, **kw), role=role)  # type: ignore[arg-type]
        return [e["id"] for e in found]

    def want(pred: Any) -> list[str]:
        return [e.id for e in demo.events if pred(e)]

    publish = demo.last("tool.completed", "publish")
    assert await ids(run_id=demo.run_id) == want(lambda e: True)
    assert await ids(correlation_id=publish.correlation_id) == want(
        lambda e: e.correlation_id == publish.correlation_id
    )
    assert await ids(types=("approval.requested", "approval.resolved")) == want(
        lambda e: e.type.startswith("approval.")
    )
    assert await ids(tool="publish") == want(
        lambda e: (
            (
                e.payload.get("name") == "publish"
                and e.type.startswith("tool.")
                and e.type != "tool.started"
            )
            or (e.type == "approval.requested")
        )
    )
    assert await ids(actor="cli:ann") == want(lambda e: e.actor == "cli:ann")
    assert await ids(actor="tool:*") == want(lambda e: e.actor.startswith("tool:"))
    middle = demo.events[len(demo.events) // 2].ts
    assert await ids(actor="tool:*", since=middle) == want(
        lambda e: e.actor.startswith("tool:") and e.ts >= middle
    )
    assert await ids(since=middle) == want(lambda e: e.ts >= middle)
    assert await ids(until=middle) == want(lambda e: e.ts < middle)
    # Roles filter in the query: the user sees visible events only.
    assert await ids(role="user", run_id=demo.run_id) == want(lambda e: e.visibility == "visible")
    assert await ids(types=("message.system",), role="operator") == []
    found, more = await audit_events(
        demo_store, AuditFilter(run_id=demo.run_id, limit=5), role="audit"
    )
    assert len(found) == 5 and more


async def test_memory_and_sqlite_answer_queries_alike(tmp_path: Path) -> None:
    results = []
    for store in (MemoryStore(), SQLiteStore(tmp_path / "q.db")):
        parent, _ = _family()
        runtime = Runtime(store, clock=FakeClock())
        first = await runtime.start(
            parent,
            "Plan my day",
        )
        queries = [
            AuditFilter(types=("tool.completed",)),
            AuditFilter(tool="lookup"),
            AuditFilter(actor="model:*"),
            AuditFilter(run_id=first.run_id, types=("cycle.started", "run.completed")),
            # Schema 4: step types go by time, the others by the (partial) type index.
            AuditFilter(types=("run.completed", "approval.requested")),
            AuditFilter(types=("tool.completed", "run.completed")),
        ]
        shapes = []
        for q in queries:
            found, _ = await audit_events(store, q, role="operator")
            shapes.append([(e["type"], e["seq"], e["actor"]) for e in found])
        results.append(shapes)
        await store.close()
    assert results[0] == results[1]


# -- schema: migration and verification of the audit columns ------------------------------


def _as_v1(events: list[Event]) -> list[Event]:
    """The same journal sealed in the v1 envelope, as stores of that age hold it."""
    out: list[Event] = []
    prev = GENESIS_HASH
    for e in events:
        draft = EventDraft(
            type=e.type, payload=e.payload, correlation_id=e.correlation_id,
            causation_id=e.causation_id, visibility=e.visibility, actor=e.actor, usage=e.usage,
        )  # fmt: skip
        out.append(draft.seal(run_id=e.run_id, seq=e.seq, prev_hash=prev, ts=e.ts, version=1))
        prev = out[-1].checksum
    return out


def _old_store(path: Path, rows: list[Event]) -> None:
    """A store as schema 2 wrote it (no audit columns), holding `rows` (v1 envelopes)."""
    rows = _as_v1(rows)
    db = sqlite3.connect(path, isolation_level=None)
    sqlite_functions(db)
    db.execute("CREATE TABLE tether_meta (key TEXT PRIMARY KEY, value TEXT)")
    for version, statements in SQLITE_MIGRATIONS:
        if version <= 2:
            for statement in statements:
                db.execute(statement)
    db.execute("INSERT INTO tether_meta VALUES ('schema_version', '2')")
    first = rows[0]
    db.execute(
        "INSERT INTO runs (run_id, agent, tenant, parent_run_id, created_at, updated_at, status,"
        " steps, input_tokens, output_tokens, cost_usd, head_seq, head_hash) "
        "VALUES (?, 'a', NULL, NULL, ?, ?, 'queued', 0, 0, 0, 0, ?, ?)",
        (first.run_id, first.ts, rows[-1].ts, rows[-1].seq, rows[-1].checksum),
    )
    db.executemany(
        "INSERT INTO events (run_id, seq, type, correlation_id, data) VALUES (?,?,?,?,?)",
        [(e.run_id, e.seq, e.type, e.correlation_id, e.raw) for e in rows],
    )
    db.close()


async def test_an_older_store_is_migrated_and_its_rows_get_audit_columns(tmp_path: Path) -> None:
    source = MemoryStore()
    parent, _ = _family()
    result = await Runtime(source).start(parent, "Plan my day")
    events = await read_events(source, result.run_id)
    path = tmp_path / "old.db"
    _old_store(path, events)
    # One row is damaged (not even JSON): the migration must still open the store.
    db = sqlite3.connect(path)
    sqlite_functions(db)
    db.execute("UPDATE events SET data=? WHERE seq=5", (b"\x00garbage",))
    db.commit()
    db.close()
    store = SQLiteStore(path)
    try:
        found, _ = await audit_events(store, AuditFilter(tool="weather"), role="audit")
        assert [e["type"] for e in found] == ["tool.requested", "tool.completed"]
        report = await verify_run(store, result.run_id)
        assert [(p.kind, p.seq) for p in report.problems][:1] == [("event", 5)]
        db = sqlite3.connect(path)
        sqlite_functions(db)
        version = db.execute("SELECT value FROM tether_meta WHERE key='schema_version'").fetchone()
        assert version == (str(SCHEMA_VERSION),)
        # Schema 4: the type index leaves out the types every step writes.
        (type_index,) = db.execute(
            "SELECT sql FROM sqlite_master WHERE name='audit_by_type'"
        ).fetchone()
        # Schema 5: the audit indexes are on `audit_rows`, which holds every migrated row;
        # schema 6 stores events in `event_rows` (`events` is a view of it).
        on_events = {
            r[0]
            for r in db.execute(
                "SELECT name FROM sqlite_master WHERE type='index' AND tbl_name='event_rows'"
                " AND sql IS NOT NULL"
            )
        }
        (copied,) = db.execute("SELECT COUNT(*) FROM audit_rows").fetchone()
        db.close()
        assert "NOT IN" in type_index and "'tool.completed'" in type_index
        assert on_events == set()  # schema 6: the key (run, seq) only
        assert copied == len(events)
        found, _ = await audit_events(store, AuditFilter(types=("run.completed",)), role="audit")
        assert [e["seq"] for e in found] == [events[-1].seq]
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("column", "value"),
    [("ts", "2001-01-01T00:00:00.000000Z"), ("actor", "cli:mallory"), ("tool", "rm"),
     ("visibility", "visible")],
)  # fmt: skip
async def test_a_damaged_audit_column_is_reported(tmp_path: Path, column: str, value: str) -> None:
    """Schema 6 computes the audit columns of `events` from the stored bytes: they cannot
    be written apart from them, and a changed byte is a checksum failure at that seq."""
    store = SQLiteStore(tmp_path / "d.db")
    parent, _ = _family()
    result = await Runtime(store).start(parent, "Plan my day")
    events = await read_events(store, result.run_id)
    target = next(e for e in events if e.type == "tool.requested")
    db = sqlite3.connect(store.path)
    sqlite_functions(db)
    where = (result.run_id, target.seq)
    with pytest.raises(sqlite3.OperationalError):
        db.execute(f"UPDATE events SET {column}=? WHERE run_id=? AND seq=?", (value, *where))
    (shown,) = db.execute(f"SELECT {column} FROM events WHERE run_id=? AND seq=?", where).fetchone()
    assert shown == audit_columns(target).__getattribute__(column)
    (raw,) = db.execute("SELECT data FROM events WHERE run_id=? AND seq=?", where).fetchone()
    damaged = raw[:-2] + bytes([raw[-2] ^ 1]) + raw[-1:]  # one bit of the body
    db.execute("UPDATE events SET data=? WHERE run_id=? AND seq=?", (damaged, *where))
    db.commit()
    db.close()
    report = await verify_run(store, result.run_id)
    assert [(p.kind, p.seq) for p in report.problems] == [("event", target.seq)]
    assert "checksum" in report.problems[0].what
    await store.close()


async def test_a_store_without_an_audit_index_says_so() -> None:
    class Bare:
        url = "bare://"

    with pytest.raises(UsageError, match="does not answer audit queries"):
        await audit_events(Bare(), AuditFilter(), role="audit")  # type: ignore[arg-type]


@pytest.fixture
def _unused() -> Iterator[None]:
    yield


async def test_broken_or_looping_causes_end_the_chain_with_a_note() -> None:
    from tether.events import EventDraft
    from tether.journal import RunJournal, create_run

    store = MemoryStore()
    clock = FakeClock()
    await create_run(store, agent="a", task="t", run_id="run_loop", clock=clock)
    lease = await store.acquire_lease("run_loop", owner="w", ttl_s=60)
    journal, _ = await RunJournal.open(store, lease, clock=clock, snapshot_every=0)
    corr = "run_loop/c1"
    _, looped, _, lost = await journal.append(
        EventDraft(type="note", payload={}, correlation_id=corr, causation_id="run_loop:4"),
        EventDraft(type="note", payload={}, correlation_id=corr, causation_id="run_loop:2"),
        EventDraft(type="note", payload={}, correlation_id=corr, causation_id="run_loop:3"),
        EventDraft(type="note", payload={}, correlation_id=corr, causation_id="run_gone:7"),
    )
    looping = await why(store, looped.id, role="audit")
    assert [s["seq"] for s in looping["chain"]] == [2, 3, 4]
    assert "again" in looping["notes"][0]
    missing = await why(store, lost.id, role="audit")
    assert [s["seq"] for s in missing["chain"]] == [5]
    assert "run_gone:7" in missing["notes"][0] and "missing" in missing["notes"][0]


GOLDEN = Path(__file__).parent / "golden"


@pytest.mark.parametrize("name", ["completed_run", "stopped_run", "repaired_run"])
async def test_why_answers_for_every_event_of_the_golden_journals(
    indexed_store: Store, name: str
) -> None:
    """Journals written by earlier versions (and by hand-made writers): every event has a
    chain, oldest first, ending at it; contexts are rebuilt or replayed to the fold's."""
    from tether.events import decode_event

    from .journal.helpers import import_events

    data = (GOLDEN / f"{name}.jsonl").read_bytes()
    events = [decode_event(line) for line in data.splitlines()]
    await import_events(indexed_store, events)
    for event in events:
        chain = (await why(indexed_store, event.id, role="audit"))["chain"]
        assert chain[-1]["id"] == event.id
        seqs = [s["seq"] for s in chain]
        assert seqs == sorted(seqs)
        for step in chain:
            if "context" in step:
                at = step["context"]["at_seq"]
                expected = fold(e for e in events if e.seq < at).context
                assert sorted(step["context"]["seqs"]) == sorted(expected)
