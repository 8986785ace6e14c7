"""Human approval as a durable interrupt: pause, decide from anywhere, resume exactly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tether import Agent, Limits, Runtime, ToolContext, tool
from tether._clock import FakeClock
from tether.approvals import (
    ApprovalConflict,
    ask_human,
    expire_approvals,
    pending_approvals,
    resolve_approval,
)
from tether.errors import UsageError
from tether.journal import MemoryStore, read_events
from tether.models import ModelRequest, ScriptedModel, Turn, call

AGENT_FILE = """
import json, os
from pathlib import Path
from tether import Agent, Limits, tool
from tether.models import ScriptedModel, Turn, call

COUNTS = Path(os.environ["COUNTS_FILE"])

def bump(name):
    counts = json.loads(COUNTS.read_text()) if COUNTS.exists() else {}
    counts[name] = counts.get(name, 0) + 1
    COUNTS.write_text(json.dumps(counts))

@tool
def prepare() -> str:
    '''Prepare the payment.'''
    bump("prepare")
    return "prepared"

@tool(requires_approval=lambda args: args["amount"] > 100)
def pay(amount: int) -> str:
    '''Pay an amount.'''
    bump("pay")
    return f"paid {amount}"

def policy(request):
    results = [m.content for m in request.messages if m.role == "tool"]
    if not results:
        return call("prepare")
    if len(results) == 1:
        return call("pay", {"amount": 500}, text="The invoice says 500.")
    return Turn(text="final: " + results[-1].splitlines()[0])

agent = Agent(name="payer", instructions="Pay invoices.", tools=[prepare, pay],
              model=ScriptedModel(policy), limits=Limits(max_steps=10))
"""


def tether(*args: str, folder: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, COUNTS_FILE=str(folder / "counts.json"))
    return subprocess.run(
        [sys.executable, "-m", "tether", *args, "--store", f"sqlite:///{folder}/s.db"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def counts(folder: Path) -> dict[str, int]:
    data: dict[str, int] = json.loads((folder / "counts.json").read_text())
    return data


@pytest.mark.parametrize("decision", ["approve", "reject"])
def test_pause_decide_and_resume_in_three_processes(tmp_path: Path, decision: str) -> None:
    (tmp_path / "payer.py").write_text(AGENT_FILE)
    started = tether(
        "run", "payer.py:agent", "--task", "pay the invoice", "--json", folder=tmp_path
    )
    assert started.returncode == 4, started.stderr
    run = json.loads(started.stdout)
    (request_id,) = run["pending_approvals"]
    assert counts(tmp_path) == {"prepare": 1}  # the process has exited; nothing else ran

    if decision == "approve":
        done = tether("approve", request_id, "--args", '{"amount": 450}', folder=tmp_path)
    else:
        done = tether("reject", request_id, "--reason", "over budget", folder=tmp_path)
    assert done.returncode == 0, done.stderr

    resumed = tether("resume", run["run_id"], "--json", folder=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    answer = json.loads(resumed.stdout)["answer"]
    if decision == "approve":
        assert counts(tmp_path) == {"prepare": 1, "pay": 1}
        assert answer == "final: paid 450"
    else:
        assert counts(tmp_path) == {"prepare": 1}
        assert answer == "final: error: cli:" + answer.split("cli:")[1]
        assert "rejected the call: over budget" in answer
    again = tether("resume", run["run_id"], "--json", folder=tmp_path)
    assert again.returncode == 0 and counts(tmp_path).get("pay", 0) == (decision == "approve")


def test_a_kill_between_resolution_and_resume_runs_the_call_once(tmp_path: Path) -> None:
    (tmp_path / "payer.py").write_text(AGENT_FILE)
    run = json.loads(
        tether("run", "payer.py:agent", "--task", "pay", "--json", folder=tmp_path).stdout
    )
    (request_id,) = run["pending_approvals"]
    assert tether("approve", request_id, folder=tmp_path).returncode == 0
    # Find the seq the resume will write first, and die right after it is durable.
    shown = json.loads(tether("show", run["run_id"], "--json", folder=tmp_path).stdout)
    head = shown["last_seq"]
    env_kill = dict(os.environ, TETHER_CHAOS=f"kill_after_seq={head + 1}",
                    COUNTS_FILE=str(tmp_path / "counts.json"))  # fmt: skip
    killed = subprocess.run(
        [sys.executable, "-m", "tether", "resume", run["run_id"], "--store",
         f"sqlite:///{tmp_path}/s.db"],
        cwd=tmp_path, env=env_kill, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert killed.returncode == -9
    assert counts(tmp_path) == {"prepare": 1}  # killed after run.resumed, before paying
    resumed = tether("resume", run["run_id"], "--json", folder=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert counts(tmp_path) == {"prepare": 1, "pay": 1}


# -- in-process tests ---------------------------------------------------------------------


def payer(effects: dict[str, int], **tool_options: Any) -> Agent:
    @tool(requires_approval=True, **tool_options)
    def pay(amount: int) -> str:
        """Pay."""
        effects[f"pay{amount}"] = effects.get(f"pay{amount}", 0) + 1
        return f"paid {amount}"

    def policy(request: ModelRequest) -> Turn:
        results = [m.content.splitlines()[0] for m in request.messages if m.role == "tool"]
        if not results:
            return Turn(calls=(("pay", {"amount": 1}), ("pay", {"amount": 2})))
        return Turn(text=" | ".join(sorted(results)))

    return Agent(name="payer", instructions="x", tools=[pay], model=ScriptedModel(policy))


@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
async def test_parallel_approvals_each_answer_reaches_its_own_call(order: tuple[int, int]) -> None:
    effects: dict[str, int] = {}
    agent = payer(effects)
    rt = Runtime(MemoryStore())
    result = await rt.start(agent, "pay both")
    assert result.status == "waiting_approval" and len(result.pending_approvals) == 2
    pending = await pending_approvals(rt.store, run_id=result.run_id)
    by_amount = {a.arguments["amount"]: a.request_id for a in pending}
    decisions = {1: "approved", 2: "rejected"}
    first, second = (sorted(by_amount)[i] for i in order)
    await resolve_approval(rt.store, by_amount[first], decision=decisions[first])  # type: ignore[arg-type]
    # Not runnable until every approval of the turn is decided.
    half = await rt.resume(agent, result.run_id)
    assert half.status == "waiting_approval" and effects == {}
    await resolve_approval(rt.store, by_amount[second], decision=decisions[second])  # type: ignore[arg-type]
    done = await rt.resume(agent, result.run_id)
    assert done.status == "completed"
    assert effects == {"pay1": 1}
    assert done.answer == "error: user rejected the call | paid 1"


async def test_double_and_conflicting_resolutions() -> None:
    agent = payer({})
    rt = Runtime(MemoryStore())
    result = await rt.start(agent, "pay")
    request_id = result.pending_approvals[0]
    first = await resolve_approval(rt.store, request_id, decision="approved", comment="ok")
    again = await resolve_approval(rt.store, request_id, decision="approved")
    assert again.resolved_seq == first.resolved_seq  # idempotent: nothing new journaled
    with pytest.raises(ApprovalConflict, match="already approved"):
        await resolve_approval(rt.store, request_id, decision="rejected")
    with pytest.raises(UsageError, match="not an approval id"):
        await resolve_approval(rt.store, "nonsense", decision="approved")
    events = await read_events(rt.store, result.run_id)
    assert sum(e.type == "approval.resolved" for e in events) == 1


@pytest.mark.parametrize("on_expiry", ["reject", "stop"])
async def test_expiry_applies_the_default_with_a_controllable_clock(on_expiry: str) -> None:
    clock = FakeClock()
    effects: dict[str, int] = {}
    agent = payer(effects, approval_timeout_s=3600, approval_on_expiry=on_expiry)
    rt = Runtime(MemoryStore(clock=clock), clock=clock)
    result = await rt.start(agent, "pay")
    clock.advance(1800)
    assert await expire_approvals(rt.store, clock=clock) == []
    clock.advance(1801)
    expired = await expire_approvals(rt.store, clock=clock)
    assert {a.decision for a in expired} == {"expired"} and len(expired) == 2
    done = await rt.resume(agent, result.run_id)
    assert effects == {}
    if on_expiry == "stop":
        assert done.status == "stopped" and "expired" in (done.reason or "")
    else:
        assert done.status == "completed"
        assert done.answer is not None and done.answer.count("rejected the call") == 2


async def test_a_tool_can_ask_a_human_and_the_answer_is_its_result() -> None:
    asked = {"n": 0}

    @tool
    def colour() -> str:
        """Asks which colour to use."""
        asked["n"] += 1
        ask_human("Which colour should the logo be?")
        return "unreachable"

    model = ScriptedModel([call("colour"), "ok"])
    agent = Agent(name="q", instructions="x", tools=[colour], model=model, limits=Limits())
    rt = Runtime(MemoryStore())
    result = await rt.start(agent, "design")
    (approval,) = await pending_approvals(rt.store, run_id=result.run_id)
    assert approval.kind == "question" and approval.question == "Which colour should the logo be?"
    with pytest.raises(UsageError, match="answer it with --comment"):
        await resolve_approval(rt.store, approval.request_id, decision="approved")
    await resolve_approval(rt.store, approval.request_id, decision="approved", comment="teal")
    done = await rt.resume(agent, result.run_id)
    assert done.status == "completed" and asked["n"] == 1
    events = await read_events(rt.store, result.run_id)
    answer = next(e for e in events if e.type == "tool.completed")
    assert answer.payload["output"] == "teal"


async def test_global_cost_policy_gates_expensive_tools() -> None:
    @tool(cost_usd=2.0)
    def premium() -> str:
        """An expensive API."""
        return "rich data"

    agent = Agent(
        name="c", instructions="x", tools=[premium], approval_cost_usd=1.0,
        model=ScriptedModel([call("premium"), "done"]),
    )  # fmt: skip
    result = await Runtime(MemoryStore()).start(agent, "go")
    assert result.status == "waiting_approval"


async def test_approval_requests_never_show_the_system_prompt_or_secrets() -> None:
    from tether._redact import clear_registered_secrets
    from tether.views import register_secret

    register_secret("sk-live-0123456789abcdef")
    try:
        await _check_no_leak()
    finally:
        clear_registered_secrets()


async def _check_no_leak() -> None:

    @tool(requires_approval=True)
    def deploy(token: str) -> str:
        """Deploys."""
        return "deployed"

    agent = Agent(
        name="d", instructions="SYSTEM PROMPT: the vault password is hunter2", tools=[deploy],
        model=ScriptedModel([call("deploy", {"token": "sk-live-0123456789abcdef"}), "done"]),
    )  # fmt: skip
    rt = Runtime(MemoryStore())
    result = await rt.start(agent, "ship it with sk-live-0123456789abcdef")
    (approval,) = await pending_approvals(rt.store, run_id=result.run_id)
    shown = json.dumps(approval.to_json())
    assert "SYSTEM PROMPT" not in shown and "hunter2" not in shown
    assert "sk-live-0123456789abcdef" not in shown
    assert approval.to_json(redact=False)["arguments"]["token"] == "sk-live-0123456789abcdef"


def invoicer(effects: list[dict[str, Any]]) -> Agent:
    @tool(requires_approval=True)
    def invoice(amount: int, to: str, note: str = "") -> str:
        """Send an invoice."""
        effects.append({"amount": amount, "to": to, "note": note})
        return f"invoiced {amount} to {to}"

    def policy(request: ModelRequest) -> Turn:
        results = [m.content.splitlines()[0] for m in request.messages if m.role == "tool"]
        if not results:
            return Turn(calls=(("invoice", {"amount": 500, "to": "acme"}),))
        return Turn(text=results[-1])

    return Agent(name="invoicer", instructions="x", tools=[invoice], model=ScriptedModel(policy))


@pytest.mark.parametrize(
    ("edit", "runs_with"),
    [
        ({"amount": 450}, {"amount": 450, "to": "acme", "note": ""}),
        ({}, {"amount": 500, "to": "acme", "note": ""}),
        ({"note": "late fee waived"}, {"amount": 500, "to": "acme", "note": "late fee waived"}),
    ],
)
async def test_edited_arguments_merge_and_the_journal_holds_exactly_what_ran(
    edit: dict[str, Any], runs_with: dict[str, Any]
) -> None:
    effects: list[dict[str, Any]] = []
    agent = invoicer(effects)
    rt = Runtime(MemoryStore())
    result = await rt.start(agent, "invoice")
    (request_id,) = result.pending_approvals
    approval = await resolve_approval(
        rt.store, request_id, decision="approved", arguments=edit, agent=agent
    )
    assert approval.resolved_arguments == runs_with
    done = await rt.resume(agent, result.run_id)
    assert done.status == "completed" and effects == [runs_with]
    # Repeating the same edit is the same decision; another edit is a conflict.
    again = await resolve_approval(
        rt.store, request_id, decision="approved", arguments=edit, agent=agent
    )
    assert again.resolved_seq == approval.resolved_seq
    with pytest.raises(ApprovalConflict):
        await resolve_approval(
            rt.store, request_id, decision="approved", arguments={"amount": 1}, agent=agent
        )


async def test_an_edit_that_does_not_fit_the_tool_is_refused_before_it_is_journaled() -> None:
    agent = invoicer([])
    rt = Runtime(MemoryStore())
    result = await rt.start(agent, "invoice")
    (request_id,) = result.pending_approvals
    with pytest.raises(UsageError, match="invalid: amount: Input should be a valid integer"):
        await resolve_approval(
            rt.store, request_id, decision="approved", arguments={"amount": "lots"}, agent=agent
        )
    with pytest.raises(UsageError, match="invalid: cc: Extra inputs are not permitted"):
        await resolve_approval(
            rt.store, request_id, decision="approved", arguments={"cc": "x"}, agent=agent
        )
    with pytest.raises(UsageError, match="pass the agent"):
        await resolve_approval(rt.store, request_id, decision="approved", arguments={})
    events = await read_events(rt.store, result.run_id)
    assert not [e for e in events if e.type == "approval.resolved"]


async def test_a_journaled_empty_edit_is_what_the_driver_runs_never_the_original() -> None:
    """A journal that says `{}` (written by an older version, which did not merge) is obeyed."""
    from tether.events import EventDraft
    from tether.journal._journal import RunJournal

    effects: list[dict[str, Any]] = []
    agent = invoicer(effects)
    rt = Runtime(MemoryStore())
    result = await rt.start(agent, "invoice")
    (request_id,) = result.pending_approvals
    lease = await rt.store.acquire_lease(result.run_id, owner="old-cli", ttl_s=30)
    journal, _ = await RunJournal.open(rt.store, lease)
    await journal.append(
        EventDraft(
            type="approval.resolved",
            payload={"request_id": request_id, "decision": "approved", "arguments": {}},
            actor="user",
        )
    )
    await rt.store.release_lease(lease)
    done = await rt.resume(agent, result.run_id)
    assert effects == []  # not run with the original arguments the journal does not hold
    events = await read_events(rt.store, result.run_id)
    (failed,) = [e for e in events if e.type == "tool.failed"]
    assert "invalid arguments for invoice" in failed.payload["output"]
    assert done.status == "completed"


async def test_a_tool_can_ask_for_approval_itself_and_runs_again_approved() -> None:
    from tether.errors import ApprovalNeeded

    ran: list[tuple[int, bool]] = []

    @tool
    def transfer(amount: int, ctx: ToolContext) -> str:
        """Move money; large amounts need a human (a rule only the tool knows)."""
        ran.append((amount, ctx.approved))
        if amount > 100:
            raise ApprovalNeeded(f"transfer of {amount} is over the limit")  # always, even approved
        return f"moved {amount}"

    script: list[Turn | str] = [call("transfer", {"amount": 5}), call("transfer", {"amount": 500}),
                                call("transfer", {"amount": 900}), "done"]  # fmt: skip
    agent = Agent(name="payer", instructions="Pay.", tools=[transfer], model=ScriptedModel(script))
    runtime = Runtime(MemoryStore())
    first = await runtime.start(agent, "pay")
    assert first.status == "waiting_approval"
    (pending,) = await pending_approvals(runtime.store, run_id=first.run_id)
    assert pending.kind == "approval" and "500 is over the limit" in pending.reason
    await resolve_approval(runtime.store, pending.request_id, decision="approved")
    second = await runtime.resume(agent, first.run_id)
    assert second.status == "waiting_approval"
    (pending,) = await pending_approvals(runtime.store, run_id=first.run_id)
    await resolve_approval(runtime.store, pending.request_id, decision="rejected", comment="no")
    done = await runtime.resume(agent, first.run_id)
    assert done.status == "completed", done.reason
    # 5 ran; 500 asked, then ran approved (and asked again: an error, never a loop); 900
    # asked and was rejected, so it never ran again.
    assert ran == [(5, False), (500, False), (500, True), (900, False)]
    events = await read_events(runtime.store, first.run_id)
    outcomes = [(e.type, e.payload["output"]) for e in events
                if e.type in ("tool.completed", "tool.failed")]  # fmt: skip
    assert outcomes[0] == ("tool.completed", outcomes[0][1]) and "moved 5" in outcomes[0][1]
    assert outcomes[1][0] == "tool.failed" and "asked for approval again" in outcomes[1][1]
    assert outcomes[2][0] == "tool.failed" and "rejected" in outcomes[2][1]
    await runtime.close()
