"""`tether replay` and `tether.testing.replay`: recorded runs re-driven with nothing called.

Claims: the golden incidents (a clean demo, a crash-resumed demo, a demo under faults,
the incidents demo) replay without divergence on today's code, recorded failures with
their kind; an exported demo journal replays from the
command line (exit 0); a change to what the agent's code does (an approval dropped, a
tool renamed) makes the replay exit 1 naming the first diverging event; a damaged or
foreign file is refused in one line (exit 2); no model and no tool is called.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tether import Agent, Runtime
from tether.cli._agents import load_agent
from tether.demo import demo_agent
from tether.errors import UsageError
from tether.events import decode_event
from tether.journal import MemoryStore, read_events
from tether.journal._base import StoredRow
from tether.models import ScriptedModel
from tether.testing import ReplayError, assert_replays, replay, run_to_end
from tether.testing._replay import load_journal

from .agents import (
    TURNS,
    demo_plan_changed,
    demo_publish_unguarded,
    demo_search_renamed,
    payments,
)

HERE = Path(__file__).parent


def _line(row: StoredRow) -> bytes:
    """A stored event as an audit export writes it (`Event.portable`)."""
    return decode_event(row.raw, run_id=row.run_id, seq=row.seq).portable()


INCIDENTS = sorted((HERE.parent / "golden" / "incidents").glob("*.jsonl"))
AGENTS = str(HERE / "agents.py")
TETHER = [sys.executable, "-m", "tether"]


def tether(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TETHER, *args], capture_output=True, text=True, cwd=cwd, timeout=120)


FOLDED = ("budget.reserved", "budget.settled")
"""A model call's hold: separate events in journals written before it moved into the
call's `model.requested` / `model.completed` (tether/budget/_journaled.py)."""


def test_the_golden_incidents_are_there() -> None:
    names = {p.stem for p in INCIDENTS}
    assert {"demo", "demo_crash_resumed", "demo_faults", "incidents"} <= names
    # Both layouts of a model call's budget hold are kept as fixtures.
    assert {"demo_folded_budget", "demo_crash_resumed_folded_budget"} <= names
    old = load_journal(HERE.parent / "golden" / "incidents" / "demo.jsonl")
    new = load_journal(HERE.parent / "golden" / "incidents" / "demo_folded_budget.jsonl")
    assert sum(e.type in FOLDED for e in old) == 96
    assert not any(e.type in FOLDED for e in new)
    assert all("budget" in e.payload for e in new if e.type.startswith("model."))


def _recorded_agent(path: Path, out: Path) -> Agent:
    """The agent the incident recorded (`metadata.agent_spec`), writing under `out`."""
    meta = load_journal(path)[0].payload["metadata"]
    return load_agent(meta["agent_spec"], {**meta["agent_args"], "out": str(out)})


@pytest.mark.parametrize("path", INCIDENTS, ids=lambda p: p.stem)
async def test_golden_incident_replays_on_todays_code(path: Path, tmp_path: Path) -> None:
    report = await assert_replays(_recorded_agent(path, tmp_path / "never-written"), path)
    # Journals recorded before a health policy existed replay with its events added
    # (`health.*` is not compared); every other event is the same, in the same order,
    # but for the model calls' separate budget events of an older journal, which today's
    # code writes inside the calls' own events.
    separate = sum(e.type in FOLDED for e in load_journal(path))
    assert report.replayed_events >= report.recorded_events - separate
    assert report.replayed_status == "completed"
    assert not (tmp_path / "never-written").exists()  # no tool ran


async def test_the_incidents_demo_replays_with_its_health_events(tmp_path: Path) -> None:
    """Recorded with today's policies, the incidents demo replays event for event, health
    included: the breaker opens on the recorded failures (counted by their kind), the
    guardrail sends the first publish back, and no clock jump reopens the breaker."""
    path = HERE.parent / "golden" / "incidents" / "incidents.jsonl"
    report = await assert_replays(_recorded_agent(path, tmp_path / "never-written"), path)
    # Recorded before a model call's hold moved into its own events: 58 calls' 116
    # budget.reserved / budget.settled are not written again, nothing else differs.
    assert report.recorded_events == 416
    assert report.replayed_events == 416 - 116


async def test_crash_resumed_incident_is_replayed_with_its_crashes() -> None:
    path = HERE.parent / "golden" / "incidents" / "demo_crash_resumed.jsonl"
    report = await replay(demo_agent("unused"), path)
    # 4 run.resumed, 3 of them crashes; of its 98 budget events only the 2 holds taken
    # again for a request a crash left open are still events of their own.
    assert report.ok and report.replayed_events == 347 - 96


async def test_a_crash_resumed_incident_of_todays_layout_replays_event_for_event() -> None:
    path = HERE.parent / "golden" / "incidents" / "demo_crash_resumed_folded_budget.jsonl"
    events = load_journal(path)
    assert sum(e.type == "budget.reserved" for e in events) == 2  # the resumed holds
    report = await replay(demo_agent("unused"), path)
    assert report.ok and report.replayed_events == report.recorded_events == 251


@pytest.mark.parametrize("name", ["demo", "demo_folded_budget"])
async def test_a_dropped_approval_diverges_at_the_approval_request(name: str) -> None:
    path = HERE.parent / "golden" / "incidents" / f"{name}.jsonl"
    recorded = load_journal(path)
    expected = next(e.seq for e in recorded if e.type == "approval.requested")
    report = await replay(demo_publish_unguarded("unused"), path)
    d = report.divergence
    assert d is not None and d.recorded_seq == expected
    assert d.recorded is not None and d.recorded["type"] == "approval.requested"
    assert d.recorded["arguments"] == recorded[expected - 1].payload["arguments"]
    assert d.now is not None and d.now["type"] == "tool.completed"


async def test_a_renamed_tool_diverges_at_its_first_result() -> None:
    path = HERE.parent / "golden" / "incidents" / "demo.jsonl"
    report = await replay(demo_search_renamed("unused"), path)
    d = report.divergence
    assert d is not None and d.recorded is not None and d.now is not None
    assert (d.recorded["type"], d.now["type"]) == ("tool.completed", "tool.failed")
    assert d.recorded["name"] == d.now["name"] == "search"


async def test_a_replay_calls_neither_the_model_nor_the_tools(tmp_path: Path) -> None:
    store = MemoryStore()
    agent = payments(str(tmp_path))
    result = await run_to_end(agent, "pay", store=store)
    assert result.status == "completed"
    journal = tmp_path / "run.jsonl"
    journal.write_bytes(b"".join(_line(r) + b"\n" for r in await store.read_rows(result.run_id)))
    paid = (tmp_path / "world.jsonl").read_text()
    fresh = payments(str(tmp_path))
    assert isinstance(fresh.model, ScriptedModel)
    report = await assert_replays(fresh, journal)
    assert report.replayed_status == "completed"
    assert fresh.model.calls == 0
    assert (tmp_path / "world.jsonl").read_text() == paid  # nobody paid again
    assert len(paid.splitlines()) == TURNS


async def test_a_damaged_journal_is_refused(tmp_path: Path) -> None:
    data = bytearray((HERE.parent / "golden" / "incidents" / "demo.jsonl").read_bytes())
    data[5000] ^= 0x01
    damaged = tmp_path / "damaged.jsonl"
    damaged.write_bytes(bytes(data))
    with pytest.raises(ReplayError, match="line"):
        await replay(demo_agent("unused"), damaged)


@pytest.mark.slow
def test_cli_replays_an_exported_demo_and_names_the_divergence_of_a_changed_one(
    tmp_path: Path,
) -> None:
    store = f"sqlite:///{tmp_path}/t.db"
    demo = tether("demo", "--yes", "--quiet", "--json", "--out", "out", "--store", store,
                  cwd=tmp_path)  # fmt: skip
    assert demo.returncode == 0, demo.stderr
    run_id = json.loads(demo.stdout)["run_id"]
    exported = tether("export", run_id, "--view", "audit", "--store", store,
                      "--out", str(tmp_path / "run.jsonl"))  # fmt: skip
    assert exported.returncode == 0, exported.stderr

    same = tether("replay", str(tmp_path / "run.jsonl"))
    assert same.returncode == 0, same.stdout + same.stderr
    assert f"{run_id} replays" in same.stdout and "its answers were checked" in same.stdout
    recorded = tether("replay", str(tmp_path / "run.jsonl"), "--recorded")
    assert recorded.returncode == 0, recorded.stdout + recorded.stderr
    assert "--script checks the script too" in recorded.stdout

    changed = tether("replay", str(tmp_path / "run.jsonl"),
                     "--agent", f"{AGENTS}:demo_publish_unguarded", "--json")  # fmt: skip
    assert changed.returncode == 1, changed.stderr
    divergence = json.loads(changed.stdout)["divergence"]
    assert divergence["recorded"]["type"] == "approval.requested"
    assert divergence["now"]["type"] == "tool.completed"

    # The demo's plan is its script: by default it answers, and a changed plan shows;
    # fed the recorded answers instead, the change is invisible.
    plan = tether("replay", str(tmp_path / "run.jsonl"),
                  "--agent", f"{AGENTS}:demo_plan_changed")  # fmt: skip
    assert plan.returncode == 1, plan.stdout + plan.stderr
    assert "diverges at event" in plan.stdout and "(model.completed)" in plan.stdout
    assert "orrimek retention claims" in plan.stdout and "--recorded" in plan.stdout
    blind = tether("replay", str(tmp_path / "run.jsonl"), "--recorded",
                   "--agent", f"{AGENTS}:demo_plan_changed")  # fmt: skip
    assert blind.returncode == 0, blind.stdout + blind.stderr

    text = tether("replay", str(tmp_path / "run.jsonl"), "--agent", f"{AGENTS}:demo_search_renamed")
    assert text.returncode == 1
    assert "diverges at event" in text.stdout and "(tool.completed)" in text.stdout


def test_cli_refuses_what_it_cannot_replay_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "not.jsonl").write_text('{"hello": 1}\n')
    for path in (tmp_path / "missing.jsonl", tmp_path / "not.jsonl"):
        done = tether("replay", str(path))
        assert done.returncode == 2
        assert done.stderr.startswith("error:") and "Traceback" not in done.stderr


async def test_a_runtime_given_to_run_to_end_is_used(tmp_path: Path) -> None:
    runtime = Runtime(MemoryStore())
    result = await run_to_end(payments(str(tmp_path)), "pay", runtime=runtime)
    assert (await runtime.get(result.run_id)).status == "completed"


async def test_new_limits_and_operator_pins_are_applied_where_they_were_recorded(
    tmp_path: Path,
) -> None:
    from tether import Limits
    from tether.loop._pins import pin_fact
    from tether.loop._relimit import change_limits

    store = MemoryStore()
    agent = payments(str(tmp_path))
    result = await run_to_end(agent, "pay", store=store, limits=Limits(max_steps=4))
    assert result.status == "stopped"
    await change_limits(store, result.run_id, {"max_steps": 40})
    await pin_fact(store, result.run_id, "bills over 10 need a receipt", source="finance")
    result = await run_to_end(agent, store=store, run_id=result.run_id)
    assert result.status == "completed"
    journal = tmp_path / "run.jsonl"
    journal.write_bytes(b"".join(_line(r) + b"\n" for r in await store.read_rows(result.run_id)))
    report = await assert_replays(payments(str(tmp_path)), journal)
    assert report.replayed_status == "completed"
    kinds = [decode_event(line).type for line in journal.read_bytes().splitlines()]
    assert "limit.changed" in kinds and "fact.pinned" in kinds


async def test_a_run_that_compacted_with_a_summary_model_replays(tmp_path: Path) -> None:
    import dataclasses

    def summaries(request: object) -> str:
        return "Paid the first bills.\nOpen tasks:\n- pay the rest"

    base = payments(str(tmp_path))
    assert isinstance(base.model, ScriptedModel)
    agent = dataclasses.replace(
        base,
        model=ScriptedModel(base.model.script, context_window=1_600),
        summary_model=ScriptedModel([], name="summariser", summaries=summaries),
        limits=dataclasses.replace(base.limits, max_steps=40),
    )
    store = MemoryStore()
    result = await run_to_end(agent, "pay", store=store)
    rows = await store.read_rows(result.run_id)
    kinds = [r.type for r in rows]
    assert "summary.completed" in kinds and "context.compacted" in kinds, result
    journal = tmp_path / "run.jsonl"
    journal.write_bytes(b"".join(_line(r) + b"\n" for r in rows))
    again = dataclasses.replace(agent, summary_model=ScriptedModel([], name="summariser"))
    report = await assert_replays(again, journal)  # its summariser has nothing to say
    assert report.replayed_status == result.status


@pytest.mark.parametrize("after_seq", [1, 3, 7, 20])
async def test_a_run_crashed_anywhere_replays_with_its_crash(
    tmp_path: Path, after_seq: int
) -> None:
    from tether.errors import SimulatedCrash
    from tether.journal import Lease
    from tether.testing._replay import _CrashAt

    store = MemoryStore()
    agent = payments(str(tmp_path))
    runtime = Runtime(store, worker_id="w0")
    run_id = await runtime.create(agent, "pay")
    runtime.store = _CrashAt(store, after_seq)
    with pytest.raises(SimulatedCrash):
        await runtime.resume(agent, run_id)
    record = await store.get_run(run_id)
    if record.lease_owner is not None:
        await store.release_lease(Lease(run_id=run_id, owner=record.lease_owner,
                                        epoch=record.lease_epoch, expires_at=0))  # fmt: skip
    runtime.store, runtime.worker_id = store, "w1"
    assert (await runtime.resume(agent, run_id)).status == "completed"
    journal = tmp_path / "run.jsonl"
    journal.write_bytes(b"".join(_line(r) + b"\n" for r in await store.read_rows(run_id)))
    assert b'"run.resumed"' in journal.read_bytes()
    await assert_replays(payments(str(tmp_path)), journal)


async def test_token_counts_never_reach_a_model_server(tmp_path: Path) -> None:
    """An OpenAI-compatible model at an unreachable base_url would count with the server's
    /tokenize; during a replay real requests are off, so it counts locally."""
    import dataclasses

    from tether.models import _base
    from tether.models.openai import OpenAIModel

    asked: list[str] = []

    class Counting(OpenAIModel):
        def count_tokens(self, messages, tools=()):  # type: ignore[no-untyped-def]
            asked.append("allowed" if _base.ALLOW_MODEL_REQUESTS else "off")
            return super().count_tokens(messages, tools)

    store = MemoryStore()
    result = await run_to_end(payments(str(tmp_path)), "pay", store=store)
    journal = tmp_path / "run.jsonl"
    journal.write_bytes(b"".join(_line(r) + b"\n" for r in await store.read_rows(result.run_id)))
    before = _base.ALLOW_MODEL_REQUESTS
    model = Counting("local-model", base_url="http://127.0.0.1:9/v1", api_key="x")
    await replay(dataclasses.replace(payments(str(tmp_path)), model=model), journal)
    assert asked and set(asked) == {"off"}
    assert _base.ALLOW_MODEL_REQUESTS is before


async def test_run_to_pause_stops_at_the_approval_and_run_to_end_decides_it(
    tmp_path: Path,
) -> None:
    from tether.demo import demo_plan
    from tether.testing import run_to_pause

    store = MemoryStore()
    agent = demo_agent(tmp_path / "out")
    paused = await run_to_pause(agent, demo_plan()["task"], store=store)
    assert paused.status == "waiting_approval"
    done = await run_to_end(agent, run_id=paused.run_id, store=store)
    assert done.status == "completed"
    assert list((tmp_path / "out").rglob("report.md"))  # the approved publish ran
    with pytest.raises(UsageError, match="not both"):
        await run_to_pause(agent, "task", run_id=paused.run_id, store=store)


async def test_a_fork_replays_from_its_copied_history(tmp_path: Path) -> None:
    from tether import fork_run

    store = MemoryStore()
    agent = payments(str(tmp_path))
    result = await run_to_end(agent, "pay", store=store)
    # Forked with the fourth payment in flight (requested, no result).
    paid = [e.seq for e in await read_events(store, result.run_id) if e.type == "tool.requested"]
    fork = await fork_run(store, result.run_id, at_seq=paid[3])
    done = await run_to_end(agent, run_id=fork, store=store)
    assert done.status == "completed"
    journal = tmp_path / "fork.jsonl"
    journal.write_bytes(b"".join(_line(r) + b"\n" for r in await store.read_rows(fork)))
    report = await assert_replays(payments(str(tmp_path)), journal)
    assert report.replayed_events == report.recorded_events
    # Declared idempotent, the call the fork left in flight would be run again, not
    # reported as of unknown outcome: the replay names that event.
    rerun = await replay(payments(str(tmp_path), idempotent=True), journal)
    d = rerun.divergence
    assert d is not None and d.recorded is not None and d.recorded["type"] == "tool.unknown"
    import dataclasses

    renamed = payments(str(tmp_path))
    renamed = dataclasses.replace(
        renamed, tools=[dataclasses.replace(t, name="pay2") for t in renamed.tools]
    )
    diverged = await replay(renamed, journal)
    assert diverged.divergence is not None and diverged.divergence.recorded_seq is not None
    # After the copied history and run.forked.
    assert diverged.divergence.recorded_seq > paid[3] + 1


async def test_a_tool_that_asked_a_human_replays_with_the_recorded_answer(
    tmp_path: Path,
) -> None:
    from tether import Agent, tool
    from tether.approvals import ask_human, pending_approvals, resolve_approval
    from tether.models import call
    from tether.testing import run_to_pause

    asked: list[str] = []

    @tool
    def account() -> str:
        """Ask which account to pay from."""
        asked.append("asked")
        ask_human("Which account?")
        return "unreachable"

    agent = Agent(name="asker", instructions="Ask, then finish.", tools=[account],
                  model=ScriptedModel([call("account"), "done"]))  # fmt: skip
    store = MemoryStore()
    paused = await run_to_pause(agent, "pay", store=store)
    (question,) = await pending_approvals(store, run_id=paused.run_id)
    assert question.kind == "question"
    await resolve_approval(store, question.request_id, decision="approved", comment="savings")
    done = await run_to_end(agent, run_id=paused.run_id, store=store)
    assert done.status == "completed" and asked == ["asked"]
    journal = tmp_path / "run.jsonl"
    journal.write_bytes(b"".join(_line(r) + b"\n" for r in await store.read_rows(done.run_id)))
    assert b"savings" in journal.read_bytes()
    await assert_replays(agent, journal)
    assert asked == ["asked"]  # the tool was not called again


async def test_recorded_failures_replay_with_their_kind_and_text(tmp_path: Path) -> None:
    """A recorded exception, timeout and refusal come back as the same outcome (kind and
    text), so a policy counting failures by kind (a circuit breaker) decides as it did."""
    import asyncio

    from tether import tool
    from tether.errors import ToolRetry
    from tether.models import call
    from tether.policies import CircuitBreaker

    @tool(idempotent=True)
    def down() -> str:
        """An upstream that is down."""
        raise ConnectionError("upstream unreachable (HTTP 503)")

    @tool(idempotent=True)
    def picky() -> str:
        """Asks for another try."""
        raise ToolRetry("try a smaller n")

    @tool(idempotent=True, timeout_s=0.01)
    async def slow() -> str:
        """Never answers in time."""
        await asyncio.sleep(5)
        return "late"

    agent = Agent(
        name="failing", instructions="Call.", tools=[down, picky, slow],
        model=ScriptedModel([call("down"), call("picky"), call("slow"), "done"]),
        policies=[CircuitBreaker(failures=1, backoff_s=600)],
    )  # fmt: skip
    store = MemoryStore()
    result = await run_to_end(agent, "go", store=store)
    rows = await store.read_rows(result.run_id)
    events = [decode_event(r.raw, run_id=r.run_id, seq=r.seq) for r in rows]
    kinds = [e.payload["error"] for e in events if e.type == "tool.failed"]
    assert kinds == ["exception", "retry_requested", "timeout"]
    assert sum(e.type == "health.breaker" for e in events) == 2  # `down` and `slow` opened it
    journal = tmp_path / "run.jsonl"
    journal.write_bytes(b"".join(_line(r) + b"\n" for r in rows))
    report = await assert_replays(agent, journal)
    assert report.replayed_events == report.recorded_events  # the breaker opened twice again


async def test_run_to_end_dates_decisions_by_the_runtimes_clock(tmp_path: Path) -> None:
    from tether._clock import FakeClock
    from tether.demo import demo_plan

    clock = FakeClock(1_790_000_000.0)
    store = MemoryStore(clock=clock)
    runtime = Runtime(store, clock=clock)
    done = await run_to_end(demo_agent(tmp_path / "out"), demo_plan()["task"], runtime=runtime)
    rows = await store.read_rows(done.run_id)
    events = [decode_event(r.raw, run_id=r.run_id, seq=r.seq) for r in rows]
    (resolved,) = [e for e in events if e.type == "approval.resolved"]
    assert resolved.ts == events[0].ts  # the fake clock never moved


async def _journal_naming(tmp_path: Path, spec: str, args: dict[str, object]) -> Path:
    """A valid journal whose run.created names `spec` (anyone can write such a file)."""
    store = MemoryStore()
    run_id = await Runtime(store).create(
        payments(str(tmp_path)), "pay", metadata={"agent_spec": spec, "agent_args": args}
    )
    path = tmp_path / f"named-{abs(hash(spec))}.jsonl"
    path.write_bytes(b"".join(_line(r) + b"\n" for r in await store.read_rows(run_id)))
    return path


async def test_cli_calls_only_an_agent_the_journal_names(tmp_path: Path) -> None:
    """A journal is data: its spec is loaded only when it names an Agent or a factory
    declared to return one, in an installed module or a file under the current folder."""
    marker = tmp_path / "pwned"
    evil = await _journal_naming(tmp_path, "os:system", {"command": f"touch {marker}"})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "agent.py").write_text(
        "from tether import Agent\nfrom tether.demo import demo_agent\n\n"
        "def make() -> Agent:\n    return demo_agent('out')\n"
    )
    outside = await _journal_naming(tmp_path, f"{elsewhere}/agent.py:make", {})
    here = tmp_path / "here"
    here.mkdir()
    for path in (evil, outside):
        done = tether("replay", str(path), cwd=here)
        assert done.returncode == 2, done.stdout + done.stderr
        assert "pass --agent" in done.stderr and "Traceback" not in done.stderr
    assert not marker.exists()
    # Named by the user, the agent is loaded (given the recorded arguments it takes:
    # `payments` has no `out`) and driven past the one recorded event.
    demo = HERE.parent / "golden" / "incidents" / "demo.jsonl"
    other = tether("replay", str(demo), "--agent", f"{AGENTS}:payments", cwd=here)
    assert other.returncode == 1 and "diverges at event" in other.stdout, other.stderr
    chosen = tether("replay", str(outside), "--agent", f"{AGENTS}:payments", cwd=here)
    assert chosen.returncode == 1 and "diverges at the recording's end" in chosen.stdout


async def test_a_changed_script_diverges_only_when_the_script_answers() -> None:
    """The demo's plan is its script. Fed the recorded answers, a replay does not see a
    changed plan; with `script=True` the agent's own script answers, and the first answer
    that differs is named (a recorded outage is still replayed where it happened)."""
    golden = HERE.parent / "golden" / "incidents"
    await assert_replays(demo_plan_changed("unused"), golden / "demo.jsonl")
    await assert_replays(demo_agent("unused"), golden / "demo.jsonl", script=True)
    await assert_replays(demo_agent("unused"), golden / "demo_crash_resumed.jsonl", script=True)
    report = await replay(demo_plan_changed("unused"), golden / "demo.jsonl", script=True)
    d = report.divergence
    assert d is not None and d.recorded is not None and d.now is not None
    assert d.recorded["type"] == d.now["type"] == "model.completed"
    assert "orrimek retention claims" in json.dumps(d.now["tool_calls"])
    with pytest.raises(UsageError, match="needs a ScriptedModel"):
        from tether.models.openai import OpenAIModel

        model = OpenAIModel("m", base_url="http://127.0.0.1:9/v1", api_key="x")
        await replay(demo_agent("unused", model=model), golden / "demo.jsonl", script=True)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("agent", "outcome"), [("demo_agent", "1 passed"), ("demo_publish_unguarded", "1 failed")]
)
def test_the_readme_incident_test_runs_as_written(tmp_path: Path, agent: str, outcome: str) -> None:
    """The README's three lines, run by a pytest with no plugins: the incident replays
    (or, for a changed agent, fails naming the divergence), never silently skipped."""
    readme = (HERE.parent.parent / "README.md").read_text()
    block = next(b for b in readme.split("```python\n")[1:] if "assert_replays" in b)
    code = block.split("```")[0]
    incident = HERE.parent / "golden" / "incidents" / "demo.jsonl"
    (tmp_path / "my_agent.py").write_text(
        f"from tests.kit.agents import {agent}\nagent = {agent}('out')\n"
    )
    (tmp_path / "test_incident.py").write_text(
        code.replace("tests/incidents/1234.jsonl", str(incident))
    )
    env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
           "PYTHONPATH": os.pathsep.join([str(tmp_path), str(HERE.parent.parent),
                                          os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", os.devnull,
         str(tmp_path / "test_incident.py")],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300,
    )  # fmt: skip
    assert outcome in done.stdout, done.stdout[-2000:] + done.stderr
    if outcome == "1 failed":
        assert "no longer replays" in done.stdout
