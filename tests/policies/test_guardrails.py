"""Publication guardrails: a failing draft goes back with its reasons, a bounded number of
times; every failed draft stays in the journal; past the bound nothing is published."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tether import Agent, Runtime, tool
from tether.errors import SimulatedCrash, UsageError
from tether.journal import Lease, MemoryStore, SQLiteStore, read_events
from tether.models import ScriptedModel, call
from tether.policies import PublicationGuardrail

GOOD = "# Findings\nIt works [d1].\n# Sources\n- d1"


@tool(idempotent=True)
def read(doc_id: str) -> str:
    """Read a document."""
    return f"contents of {doc_id}"


def guardrail(**kw: Any) -> PublicationGuardrail:
    return PublicationGuardrail(
        required_sections=["Findings", "Sources"], source_tools={"read": "doc_id"}, **kw
    )


def agent(script: list[Any], *tools: Any, policy: PublicationGuardrail) -> Agent:
    return Agent(name="t", instructions="test", model=ScriptedModel(script),
                 tools=list(tools or [read]), policies=[policy])  # fmt: skip


async def test_a_bad_draft_goes_back_with_reasons_and_stays_in_the_journal() -> None:
    bad = "# Findings\nIt works [d1] and [d9]. TODO: numbers"
    script = [call("read", {"doc_id": "d1"}), bad, GOOD]
    rt = Runtime(MemoryStore())
    result = await rt.start(agent(script, policy=guardrail()), "go")
    assert result.status == "completed" and result.answer == GOOD
    events = await read_events(rt.store, result.run_id)
    (rejected,) = [e.payload for e in events if e.type == "health.guardrail"]
    assert rejected["problems"] == [
        "missing section 'Sources'",
        "placeholder text: TODO",
        "cites sources the run never read: d9",
    ]
    drafts = [e for e in events if e.type == "model.completed" and not e.payload["tool_calls"]]
    assert drafts[0].payload["content"] == bad and drafts[0].visibility == "user_hidden"
    told = [
        e.payload["content"] for e in events if e.type == "message.user" and e.actor == "runtime"
    ]
    assert told and "missing section 'Sources'" in told[-1]


async def test_past_the_bound_the_run_stops_and_never_publishes() -> None:
    script = ["draft one TBD", "draft two TBD", "draft three TBD"]
    rt = Runtime(MemoryStore())
    result = await rt.start(agent(script, policy=guardrail(max_rejections=2)), "go")
    assert result.status == "stopped" and result.partial and result.exit_code == 3
    assert result.answer is not None and result.answer.startswith("[PARTIAL")
    events = await read_events(rt.store, result.run_id)
    assert not [e for e in events if e.type == "run.completed"]
    actions = [e.payload["action"] for e in events if e.type == "health.guardrail"]
    assert actions == ["tell", "tell", "stop"]


async def test_a_publish_tool_is_refused_without_running_until_the_draft_passes() -> None:
    published: list[str] = []

    @tool
    def publish(title: str, body: str) -> str:
        """Publish. Final."""
        published.append(body)
        return "published"

    script = [
        call("publish", {"title": "R", "body": "# Findings\nsee [d1]\n# Sources"}),
        call("read", {"doc_id": "d1"}),
        call("publish", {"title": "R", "body": "# Findings\nsee [d1]\n# Sources"}),
        "done",
    ]
    rt = Runtime(MemoryStore())
    policy = guardrail(publish_tool="publish")
    result = await rt.start(agent(script, read, publish, policy=policy), "go")
    assert result.status == "completed"
    assert len(published) == 1  # the first attempt never ran
    events = await read_events(rt.store, result.run_id)
    first = next(e.payload for e in events if e.type == "tool.failed")
    assert first["error"] == "refused" and "never read: d1" in first["output"]


async def test_the_rejection_count_survives_a_crash(tmp_path: Path) -> None:
    crashed = {"n": 0}

    @tool(idempotent=True)
    def boom() -> str:
        """Crashes once."""
        crashed["n"] += 1
        if crashed["n"] == 1:
            raise SimulatedCrash()
        return "ok"

    script = ["TBD", call("boom"), "TBD again", "never"]
    db = tmp_path / "r.db"
    policy = guardrail(max_rejections=1)
    rt = Runtime(SQLiteStore(db), worker_id="w1")
    with pytest.raises(SimulatedCrash):
        await rt.start(agent(script, read, boom, policy=policy), "go")
    run_id = (await rt.list())[0].run_id
    await rt.store.release_lease(Lease(run_id=run_id, owner="w1", epoch=1, expires_at=0))
    result = await Runtime(SQLiteStore(db), worker_id="w2").resume(
        agent(script, read, boom, policy=policy), run_id
    )
    # One rejection before the crash, so the second bad draft is past the bound.
    assert result.status == "stopped"


async def test_reads_older_than_the_window_are_found_in_the_journal(tmp_path: Path) -> None:
    crashed = {"n": 0}

    @tool(idempotent=True)
    def noise(i: int) -> str:
        """Filler; crashes the process once."""
        if i == 3 and crashed["n"] == 0:
            crashed["n"] += 1
            raise SimulatedCrash()
        return f"noise {i}"

    script: list[Any] = [call("read", {"doc_id": "d1"})]
    script += [call("noise", {"i": i}) for i in range(5)]
    script += [GOOD]
    policy = guardrail()
    policy.window = 0  # a resume folds nothing: the read must be looked up in the journal
    db = tmp_path / "r.db"
    rt = Runtime(SQLiteStore(db), worker_id="w1")
    with pytest.raises(SimulatedCrash):
        await rt.start(agent(script, read, noise, policy=policy), "go")
    run_id = (await rt.list())[0].run_id
    await rt.store.release_lease(Lease(run_id=run_id, owner="w1", epoch=1, expires_at=0))
    result = await Runtime(SQLiteStore(db), worker_id="w2").resume(
        agent(script, read, noise, policy=policy), run_id
    )
    assert result.status == "completed" and result.answer == GOOD


def test_bad_settings_are_refused() -> None:
    with pytest.raises(UsageError):
        PublicationGuardrail(max_rejections=-1)
    with pytest.raises(UsageError):
        PublicationGuardrail(citations=None, source_tools={"read": "doc_id"})


async def test_fresh_sources_can_be_required() -> None:
    import asyncio

    from tether.policies import Freshness

    @tool(idempotent=True, fresh_for_s=0.2)
    def quote(doc_id: str) -> str:
        """A live quote."""
        return f"quote {doc_id}"

    @tool
    async def wait() -> str:
        """Time passes."""
        await asyncio.sleep(0.3)
        return "waited"

    answer = "# Findings\nprice [q1]\n# Sources"
    script = [call("quote", {"doc_id": "q1"}), call("wait"), answer,
              call("quote", {"doc_id": "q1"}), answer]  # fmt: skip
    policy = PublicationGuardrail(
        required_sections=["Findings", "Sources"], source_tools={"quote": "doc_id"},
        require_fresh=True,
    )  # fmt: skip
    a = Agent(name="t", instructions="t", model=ScriptedModel(script), tools=[quote, wait],
              policies=[Freshness(), policy])  # fmt: skip
    rt = Runtime(MemoryStore())
    result = await rt.start(a, "go")
    assert result.status == "completed"
    events = await read_events(rt.store, result.run_id)
    (rejected,) = [e.payload for e in events if e.type == "health.guardrail"]
    assert rejected["problems"] == ["cites sources read too long ago (stale): q1"]


def test_a_subclass_keeps_its_overrides_in_each_run() -> None:
    class Stricter(PublicationGuardrail):
        pass

    fresh = Stricter(required_sections=["Findings"]).for_run()
    assert type(fresh) is Stricter and fresh.sections == ("Findings",)
