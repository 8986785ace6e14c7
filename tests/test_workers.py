"""Workers serving a store's queue (in process, on every backend; and `tether worker`).

Claims: submitted runs are driven to the end and never-submitted ones are left alone; a
run paused for approval is claimed again once it is resolved (by a human, or by the
worker when it was submitted with --yes); a run whose agent version the worker lacks is
refused with a clear error and left for a worker that has it; a worker that cannot renew
its lease stops writing before the lease expires, and another takes the run over after
expiry and continues from the journal, while the old lease is fenced; a dead local
holder is taken over at once; store outages while claiming are retried and logged;
workers wake promptly on new work; SIGTERM hands runs back at a step boundary, releases
every lease and exits 0; `tether submit` and `tether demo --submit` queue runs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tether import Agent, Limits, ToolContext, tool
from tether.approvals import pending_approvals, resolve_approval
from tether.errors import LeaseLost, StoreError
from tether.events import EventDraft
from tether.journal import MemoryStore, SQLiteStore, Store, read_events, verify_run
from tether.journal._base import summary_of
from tether.models import ModelRequest, ScriptedModel, Turn
from tether.state import fold
from tether.worker import AgentRegistry, AgentSource, Worker, submit_run

from .conftest import POSTGRES_URL, drop_postgres_schema, postgres_problem, require

TETHER = [sys.executable, "-m", "tether"]


def counting_agent(
    steps: int = 4, approve: bool = False, version: str = "1", log: str | None = None
) -> Agent:
    """`steps` idempotent work calls, an optional approval-gated `ship`, then an answer."""

    @tool(idempotent=True)
    def work(i: int, ctx: ToolContext) -> str:
        """Do one unit of work.

        Args:
            i: the unit
        """
        if log:
            with open(log, "a") as f:
                f.write(f"{ctx.idempotency_key} {ctx.attempt}\n")
        return f"unit {i} done"

    @tool(idempotent=True, requires_approval=True)
    def ship() -> str:
        """Ship the result."""
        return "shipped"

    def policy(request: ModelRequest) -> Turn:
        done = sum(1 for m in request.messages if m.role == "tool")
        if done < steps:
            return Turn(text=f"step {done}", calls=(("work", {"i": done}),))
        if approve and done == steps:
            return Turn(text="shipping", calls=(("ship", {}),))
        return Turn(text=f"all {steps} units done")

    return Agent(
        name="counter",
        version=version,
        instructions="Count units of work.",
        tools=[work, ship] if approve else [work],
        model=ScriptedModel(policy),
        limits=Limits(max_steps=steps + 5),
    )


def registry(*versions: str) -> AgentRegistry:
    return AgentRegistry(
        AgentSource(
            name="counter",
            version=v,
            spec=f"tests:counting_agent@{v}",
            target=lambda v=v, **kw: counting_agent(**{**kw, "version": v}),
        )
        for v in (versions or ("1",))
    )


async def submit(store: Store, n: int = 1, **args: Any) -> list[str]:
    auto = bool(args.pop("auto_approve", False))
    agent = counting_agent(**args)
    return [
        await submit_run(
            store,
            agent,
            f"task {i}",
            agent_spec="tests:counting_agent",
            agent_args=args,
            auto_approve=auto,
        )
        for i in range(n)
    ]


def worker(store: Store, **options: Any) -> Worker:
    options.setdefault("agents", registry())
    options.setdefault("lease_ttl_s", 3.0)
    options.setdefault("poll_max_s", 0.5)
    return Worker(store, **options)


async def statuses(store: Store, run_ids: list[str]) -> list[str]:
    return [(await store.get_run(r)).summary.status for r in run_ids]


async def serve_until_idle(w: Worker, within: float = 60) -> None:
    await asyncio.wait_for(w.serve(until_idle=True), timeout=within)


# -- driving, pausing, refusing ----------------------------------------------------------


async def test_a_worker_drives_submitted_runs_to_the_end_and_leaves_local_runs_alone(
    store: Store,
) -> None:
    from tether.journal import create_run

    await create_run(store, agent="counter", task="local", run_id="run_local")
    ids = await submit(store, 5)
    w = worker(store, concurrency=3)
    await serve_until_idle(w)
    assert await statuses(store, ids) == ["completed"] * 5
    assert (await store.get_run("run_local")).summary.status == "queued"
    assert (w.stats.claimed, w.stats.finished, w.stats.errors) == (5, 5, 0)
    for run_id in ids:
        assert (await verify_run(store, run_id)).ok
        record = await store.get_run(run_id)
        assert record.lease_owner is None  # released when the run ended
        assert record.summary.steps == 5


async def test_a_run_submitted_with_yes_is_approved_by_the_worker_and_finishes(
    store: Store,
) -> None:
    [run_id] = await submit(store, approve=True, auto_approve=True)
    w = worker(store)
    await serve_until_idle(w)
    assert await statuses(store, [run_id]) == ["completed"]
    assert (w.stats.paused, w.stats.finished) == (1, 1)
    events = await read_events(store, run_id)
    resolved = [e for e in events if e.type == "approval.resolved"]
    assert len(resolved) == 1 and resolved[0].actor.endswith(":auto-approve")


async def test_a_worker_that_dies_while_approving_frees_the_run_within_its_own_lease_time(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker's decision lease lasts the worker's lease time, not the CLI's default: a
    worker killed mid-approval (here: its release never reaches the store) leaves the run
    to the others as soon as a killed worker's runs are, not 30 s later."""
    [run_id] = await submit(store, approve=True, auto_approve=True)
    release = store.release_lease

    async def dies_before_releasing(lease: Any) -> None:
        if ":approver-" not in lease.owner:
            await release(lease)

    monkeypatch.setattr(store, "release_lease", dies_before_releasing)
    w = worker(store, lease_ttl_s=1.0, local_takeover=False)
    start = time.monotonic()
    await serve_until_idle(w, within=60)
    # The run paused, was approved under a lease left behind, and was taken over when
    # that lease ran out: within about a second, not the 30 s an operator's decision gets.
    assert time.monotonic() - start < 10
    assert w.stats.taken_over == 1
    assert await statuses(store, [run_id]) == ["completed"]
    resolved = [e for e in await read_events(store, run_id) if e.type == "approval.resolved"]
    assert len(resolved) == 1


async def test_a_run_waiting_for_a_human_is_claimed_again_once_the_approval_resolves(
    store: Store,
) -> None:
    [run_id] = await submit(store, approve=True)
    w = worker(store, poll_max_s=30.0 if not isinstance(store, SQLiteStore) else 1.0)
    serving = asyncio.create_task(w.serve())
    try:
        await _eventually(lambda: _status_is(store, run_id, "waiting_approval"))
        # Pausing holds no lease: the worker hands it back right after journaling the pause.
        await _eventually(lambda: _lease_released(store, run_id), within=5)
        [approval] = await pending_approvals(store, run_id=run_id)
        await asyncio.sleep(0.3)  # the worker is idle now, waiting for work
        start = time.monotonic()
        await resolve_approval(store, approval.request_id, decision="approved", actor="alice")
        await _eventually(lambda: _status_is(store, run_id, "completed"))
        woke = time.monotonic() - start
    finally:
        w.request_stop()
        await serving
    # LISTEN/NOTIFY (PostgreSQL) and the in-process wake (memory) are prompt; SQLite polls
    # (at most 1 s apart here). The bounds leave room for a loaded CI machine.
    assert woke < (3.0 if isinstance(store, SQLiteStore) else 1.0)


async def test_a_worker_wakes_promptly_when_a_run_is_submitted(store: Store) -> None:
    w = worker(store, poll_max_s=30.0 if not isinstance(store, SQLiteStore) else 1.0)
    serving = asyncio.create_task(w.serve())
    try:
        await asyncio.sleep(1.0)  # idle long enough for the poll backoff to grow
        start = time.monotonic()
        [run_id] = await submit(store)
        await _eventually(lambda: _status_is(store, run_id, "completed"))
        woke = time.monotonic() - start
    finally:
        w.request_stop()
        await serving
    assert woke < (3.0 if isinstance(store, SQLiteStore) else 1.0)


async def test_a_run_of_an_agent_version_the_worker_lacks_is_refused_and_left_for_others(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    [run_id] = await submit(store, version="2")
    old = worker(store, agents=registry("1"))
    with caplog.at_level(logging.ERROR, logger="tether.worker"):
        await serve_until_idle(old)
    assert old.stats.refused == 1
    [message] = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert f"refusing run={run_id}" in message
    assert "agent 'counter' version '2' is needed, but this worker has version '1'" in message
    record = await store.get_run(run_id)
    assert (record.summary.status, record.lease_owner, record.head_seq) == ("queued", None, 1)
    new = worker(store, agents=registry("1", "2"))
    await serve_until_idle(new)
    assert await statuses(store, [run_id]) == ["completed"]


async def test_a_run_whose_committed_tail_is_damaged_is_refused_by_a_worker_never_cut(
    store: Store, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """A committed event that does not verify is damage: the worker names the run, the
    seq and the ways out, cuts nothing and redoes no call."""
    from .journal.helpers import poker

    log = tmp_path / "keys.log"
    [run_id] = await submit(store, steps=2, approve=True, log=str(log))
    await serve_until_idle(worker(store))
    assert await statuses(store, [run_id]) == ["waiting_approval"]
    [approval] = await pending_approvals(store, run_id=run_id)
    await resolve_approval(store, approval.request_id, decision="approved", actor="alice")
    head = (await store.get_run(run_id)).head_seq
    last = (await store.read_rows(run_id))[-1]
    poker(store).event(run_id, head, bytes(last.raw[:-2]) + bytes([last.raw[-2] ^ 1, last.raw[-1]]))
    rows = [(r.seq, bytes(r.raw)) for r in await store.read_rows(run_id)]
    calls = log.read_text()
    w = worker(store)
    with caplog.at_level(logging.ERROR, logger="tether.worker"):
        await serve_until_idle(w)
    assert w.stats.refused == 1
    [message] = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert f"refusing run={run_id}" in message and f"seq {head}" in message
    assert f"tether fork {run_id} --at {head - 1}" in message and "backup" in message
    assert [(r.seq, bytes(r.raw)) for r in await store.read_rows(run_id)] == rows
    assert log.read_text() == calls


async def test_a_run_of_an_agent_the_worker_does_not_know_is_never_claimed(store: Store) -> None:
    agent = Agent(name="stranger", instructions="x", model=ScriptedModel(["hi"]))
    run_id = await submit_run(store, agent, "t", agent_spec="x:y")
    w = worker(store)
    await serve_until_idle(w)
    assert w.stats.claimed == 0
    assert (await store.get_run(run_id)).lease_epoch == 0


async def test_a_worker_logs_once_each_queued_run_whose_agent_it_lacks(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    agent = Agent(name="stranger", instructions="x", model=ScriptedModel(["hi"]))
    run_id = await submit_run(store, agent, "t", agent_spec="my_agent.py:agent")
    w = worker(store, sweep_every_s=0.0)
    with caplog.at_level(logging.WARNING, logger="tether.worker"):
        await serve_until_idle(w)
        await w._sweep()  # a later sweep does not repeat it
    skipped = [r.getMessage() for r in caplog.records if "skipping" in r.getMessage()]
    assert skipped == [
        f"skipping run={run_id}: this worker has no agent 'stranger' (it has counter@1); "
        "start it with --agent module:attr or install the package that provides it "
        "(the run was submitted with my_agent.py:agent)"
    ]
    assert w.stats.claimed == 0


# -- leases, fencing, takeover -----------------------------------------------------------


class Partition:
    """A store that can be cut off: calls fail (slowly, like a dead network); `only` limits
    the failure to some methods (say, lease renewals)."""

    def __init__(self, inner: Store, only: set[str] | None = None) -> None:
        self.inner = inner
        self.url = inner.url
        self.down = False
        self.only = only
        self.appended: list[tuple[float, int]] = []
        """(when the call started, last seq) of every append that went through."""

    def __getattr__(self, name: str) -> Any:
        target = getattr(self.inner, name)
        if not asyncio.iscoroutinefunction(target):
            return target

        async def call(*args: Any, **kwargs: Any) -> Any:
            if self.down and (self.only is None or name in self.only):
                await asyncio.sleep(0.05)
                raise StoreError("partitioned: the store is unreachable")
            started = time.time()
            result = await target(*args, **kwargs)
            if name == "append":
                self.appended.append((started, args[1][-1].seq))
            return result

        return call


async def test_a_worker_that_cannot_renew_stops_writing_before_its_lease_expires(
    store: Store, tmp_path: Path
) -> None:
    """Renewals (and claims) fail, but appends would still go through: the worker must
    fence itself."""
    ttl = 2.0
    log = str(tmp_path / "calls.log")
    [run_id] = await submit(store, steps=60, log=log)
    cut = Partition(store, only={"renew_lease", "claim_runnable"})

    def slow_factory(**kw: Any) -> Agent:
        agent = counting_agent(**kw)
        return dataclasses.replace(agent, model=_Slow(agent.model, 0.03))

    a = worker(cut, agents=AgentRegistry([AgentSource.of(slow_factory, "slow")]), lease_ttl_s=ttl)
    serving = asyncio.create_task(a.serve())
    await _eventually(lambda: _head_at_least(store, run_id, 20))
    cut.down = True
    record = await store.get_run(run_id)
    expires = record.lease_expires_at
    assert expires is not None and record.lease_owner == a.owner
    await _eventually(lambda: _true(a.stats.lost == 1), within=ttl + 2)
    stopped_at = time.time()
    # A kept writing while its lease was safe, then stopped before the lease could expire:
    # no append started later than an eighth of the lease before its expiry.
    assert stopped_at < expires
    last_write = max(t for t, _ in cut.appended)
    assert cut.appended[-1][1] > record.head_seq  # it did go on after the renewals failed
    assert last_write <= expires - ttl / 8 + 0.01  # (the guard checks a moment earlier)
    head = (await store.get_run(run_id)).head_seq
    await asyncio.sleep(0.3)
    assert (await store.get_run(run_id)).head_seq == head  # and nothing after
    a.request_stop()
    await serving


async def test_another_worker_takes_over_after_the_lease_expires_and_continues_from_the_journal(
    store: Store, tmp_path: Path
) -> None:
    ttl = 2.0
    log = str(tmp_path / "calls.log")
    [run_id] = await submit(store, steps=40, log=log)
    cut = Partition(store)

    def slow_factory(**kw: Any) -> Agent:
        agent = counting_agent(**kw)
        return dataclasses.replace(agent, model=_Slow(agent.model, 0.03))

    a = worker(cut, agents=AgentRegistry([AgentSource.of(slow_factory, "slow")]), lease_ttl_s=ttl)
    serving = asyncio.create_task(a.serve())
    await _eventually(lambda: _head_at_least(store, run_id, 30))
    cut.down = True  # A is cut off from the store entirely (a network partition)
    record = await store.get_run(run_id)
    expires = record.lease_expires_at
    assert expires is not None
    await _eventually(lambda: _true(a.stats.lost == 1), within=ttl + 2)
    assert time.time() < expires  # A gave up before its lease could expire
    a_lease = await store.get_run(run_id)
    assert a_lease.lease_owner == a.owner and a_lease.summary.status == "running"
    # B takes the run over once the lease has expired, and continues from the journal.
    b = worker(store, agents=registry(), lease_ttl_s=ttl)
    b_serving = asyncio.create_task(b.serve(until_idle=True))
    await asyncio.wait_for(b_serving, timeout=30)
    assert b.stats.taken_over == 1
    assert await statuses(store, [run_id]) == ["completed"]
    events = await read_events(store, run_id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert (await verify_run(store, run_id)).ok
    resumed = [e for e in events if e.type == "run.resumed"]
    assert resumed and resumed[-1].payload["worker"] == b.owner
    # Completed calls ran once; a call in flight at the cut may have run again (idempotent).
    keys = [line.split()[0] for line in Path(log).read_text().splitlines()]  # noqa: ASYNC240
    assert len(keys) - len(set(keys)) <= 1
    # A's lease is fenced: even an append that continues the head is refused.
    stale = _lease_of(a_lease, a.owner)
    head = events[-1]
    extra = EventDraft(type="note", payload={"i": 1}).seal(
        run_id=run_id, seq=head.seq + 1, prev_hash=head.checksum, ts=head.ts
    )
    with pytest.raises(LeaseLost):
        await store.append(stale, [extra], summary=summary_of(fold([*events, extra])))
    cut.down = False
    a.request_stop()
    await serving


async def test_a_run_held_by_a_dead_process_on_this_host_is_taken_over_at_once(
    store: Store,
) -> None:
    [run_id] = await submit(store)
    gone = await asyncio.create_subprocess_exec("true")
    await gone.wait()
    ghost = f"{socket.gethostname()}:{gone.pid}:dead"
    [claim] = await store.claim_runnable(owner=ghost, ttl_s=300)
    w = worker(store)
    start = time.monotonic()
    await serve_until_idle(w, within=20)
    assert time.monotonic() - start < 5  # not 300 s
    assert w.stats.taken_over == 1
    assert await statuses(store, [run_id]) == ["completed"]
    assert (await store.get_run(run_id)).lease_epoch > claim.lease.epoch


def test_a_takeover_pass_asks_about_each_holder_once_not_each_lease(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every other worker holds many leases: asking the OS about each one made a pass cost
    more the more workers there were. The verdicts stay per holder."""
    import tether.worker as worker_module
    from tether.journal import Lease

    w = worker(MemoryStore(), owner="me")
    asked: list[str] = []

    def dead(owner: str) -> bool:
        asked.append(owner)
        return owner == "gone"

    monkeypatch.setattr(worker_module, "holder_is_dead", dead)
    now = 1000.0
    leases = [
        Lease(run_id=f"{owner}-{i}", owner=owner, epoch=1, expires_at=now + 30)
        for owner in ("alive", "gone", "me", "other")
        for i in range(25)
    ]
    leases.append(Lease(run_id="expired", owner="stale", epoch=1, expires_at=now - 1))
    assert w._plan_takeovers(leases, now) is True
    assert w._dead == {"gone", "me"}
    assert sorted(asked) == ["alive", "gone", "other"]
    asked.clear()
    assert w._plan_takeovers(leases, now) is False  # nothing new to take over
    assert sorted(asked) == ["alive", "gone", "other"]


async def test_a_store_outage_while_claiming_is_retried_and_logged(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    ids = await submit(store, 2)
    cut = Partition(store)
    cut.down = True
    w = worker(cut)
    with caplog.at_level(logging.WARNING, logger="tether.worker"):
        serving = asyncio.create_task(w.serve(until_idle=True))
        await asyncio.sleep(1.0)
        cut.down = False
        await asyncio.wait_for(serving, timeout=30)
    retries = [r.getMessage() for r in caplog.records if "claiming from" in r.getMessage()]
    assert len(retries) >= 2 and "partitioned" in retries[0]
    assert await statuses(store, ids) == ["completed", "completed"]


# -- `tether worker`, `tether submit`, `tether demo --submit` ---------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/w.db"
        return
    problem = postgres_problem()
    require(problem is None, problem or "")
    schema = f"test_{os.getpid()}_{int(time.time() * 1000) % 10**9}"
    yield f"{POSTGRES_URL}?schema={schema}"
    drop_postgres_schema(schema)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TETHER_CHAOS", "TETHER_STORE")}
    env.update(extra)
    return env


def test_submit_and_demo_submit_queue_runs_and_print_their_ids(
    store_url: str, tmp_path: Path
) -> None:
    from tether.cli import app

    runner = CliRunner()
    done = runner.invoke(
        app, ["demo", "--submit", "--yes", "--json", "--store", store_url,
              "--out", str(tmp_path / "out")],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    demo = json.loads(done.stdout)
    assert demo["agent"] == "research-demo" and demo["auto_approve"] is True
    done = runner.invoke(
        app, ["submit", "research-demo", "--task", "Survey the field", "--store", store_url,
              "--arg", f"out={tmp_path / 'o2'}", "--max-steps", "60"],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    plain = done.stdout.strip()
    assert plain.startswith("run_") and "\n" not in plain
    bad = runner.invoke(app, ["submit", "nobody", "--task", "x", "--store", store_url])
    assert bad.exit_code == 2 and "no agent named 'nobody'" in bad.stderr

    async def check() -> None:
        from tether.journal import open_store

        s = open_store(store_url)
        try:
            first = (await read_events(s, demo["run_id"], until_seq=1))[0]
            meta = first.payload["metadata"]
            assert first.payload["agent_version"] == "1"
            assert meta["auto_approve"] is True
            assert meta["agent_args"]["out"] == str(tmp_path / "out" / demo["run_id"])
            second = (await read_events(s, plain, until_seq=1))[0]
            assert second.payload["task"] == "Survey the field"
            assert second.payload["limits"]["max_steps"] == 60
            assert second.payload["metadata"]["auto_approve"] is False
            claims = await s.claim_runnable(owner="t", ttl_s=5, limit=5)
            assert {c.lease.run_id for c in claims} == {demo["run_id"], plain}
        finally:
            await s.close()

    asyncio.run(check())


@pytest.mark.slow
def test_sigterm_hands_runs_back_releases_leases_and_exits_0(
    store_url: str, tmp_path: Path
) -> None:
    env = _env(TETHER_STORE=store_url)
    ids = []
    for _ in range(3):
        done = subprocess.run(
            [*TETHER, "demo", "--submit", "--yes", "--out", str(tmp_path / "out")],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        ids.append(done.stdout.strip())
    proc = subprocess.Popen(
        [*TETHER, "worker", "--concurrency", "3", "--lease-ttl", "60"],
        env={**env, "TETHER_CHAOS": "model_latency=0.1"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        asyncio.run(_wait_for_heads(store_url, ids, at_least=20, within=60))
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert time.monotonic() - start < 10
    assert stderr.count("handed back run=") == 3, stderr

    async def after() -> None:
        from tether.journal import open_store

        s = open_store(store_url)
        try:
            assert await s.queue_leases() == []  # every lease was released
            for run_id in ids:
                record = await s.get_run(run_id)
                assert record.summary.status == "running" and record.lease_owner is None
                state = fold(await read_events(s, run_id))
                assert not state.pending_calls and state.open_model_request is None
        finally:
            await s.close()

    asyncio.run(after())
    listed = subprocess.run(
        [*TETHER, "ls", "--json"], env=env, capture_output=True, text=True, check=True
    )
    # The journal last said `running`; nobody drives them, so they list as queued.
    assert {(r["run_id"], r["status"], r["waiting_for"]) for r in json.loads(listed.stdout)} == {
        (run_id, "queued", "a worker on queue 'default' that has agent research-demo@1")
        for run_id in ids
    }
    done = subprocess.run(
        [*TETHER, "worker", "--until-idle", "--concurrency", "3"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    listed = subprocess.run(
        [*TETHER, "ls", "--json"], env=env, capture_output=True, text=True, check=True
    )
    assert {r["run_id"]: r["status"] for r in json.loads(listed.stdout)} == {
        run_id: "completed" for run_id in ids
    }


def test_worker_with_a_bad_agent_spec_fails_with_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [*TETHER, "worker", "--store", f"sqlite:///{tmp_path}/x.db", "--agent", "nope.py:x"],
        env=_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip() == "error: agent file not found: nope.py"


# -- helpers -------------------------------------------------------------------------------


class _Slow:
    """A model that takes `delay` seconds per call."""

    def __init__(self, inner: Any, delay: float) -> None:
        self.inner = inner
        self.delay = delay
        self.name = inner.name
        self.context_window = inner.context_window
        self.max_output_tokens = inner.max_output_tokens

    def count_tokens(self, *args: Any) -> int:
        return int(self.inner.count_tokens(*args))

    async def complete(self, request: Any, **kw: Any) -> Any:
        await asyncio.sleep(self.delay)
        return await self.inner.complete(request, **kw)


def _lease_of(record: Any, owner: str) -> Any:
    from tether.journal import Lease

    return Lease(
        run_id=record.run_id, owner=owner, epoch=record.lease_epoch,
        expires_at=record.lease_expires_at or 0.0,
    )  # fmt: skip


async def _true(value: bool) -> bool:
    return value


async def _status_is(store: Store, run_id: str, status: str) -> bool:
    return (await store.get_run(run_id)).summary.status == status


async def _lease_released(store: Store, run_id: str) -> bool:
    return (await store.get_run(run_id)).lease_owner is None


async def _head_at_least(store: Store, run_id: str, seq: int) -> bool:
    return (await store.get_run(run_id)).head_seq >= seq


async def _eventually(check: Callable[[], Awaitable[bool]], within: float = 20) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


async def _wait_for_heads(url: str, run_ids: list[str], *, at_least: int, within: float) -> None:
    from tether.journal import open_store

    s = open_store(url)
    try:
        deadline = time.monotonic() + within
        while True:
            heads = [(await s.get_run(r)).head_seq for r in run_ids]
            if min(heads) >= at_least:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"runs did not progress: heads {heads}")
            await asyncio.sleep(0.1)
    finally:
        await s.close()


_ = MemoryStore  # the `store` fixture covers memory, SQLite and PostgreSQL


async def test_a_run_a_worker_errs_on_says_why_and_stays_resumable(store: Store) -> None:
    """An unexpected error (here: the agent's factory fails) is counted, journaled in the
    run for an operator, and the run is left for `tether resume`, not silently dropped."""
    (run_id,) = await submit(store)

    def broken(**kw: Any) -> Any:
        raise RuntimeError("factory exploded")

    w = worker(
        store,
        agents=AgentRegistry(
            [AgentSource(name="counter", version="1", spec="tests:broken", target=broken)]
        ),
    )
    await serve_until_idle(w)
    assert w.stats.errors == 1
    events = await read_events(store, run_id)
    warned = [e for e in events if e.type == "health.warning"]
    assert warned and warned[-1].payload["kind"] == "worker_error"
    assert "RuntimeError" in warned[-1].payload["message"]
    assert (await store.get_run(run_id)).summary.status in ("queued", "running")


BREAKING_AGENT = """
import os
from tether import Agent, Limits
from tether.models import ScriptedModel

def make(n: int = 0) -> Agent:
    if n and os.environ.get("TETHER_TEST_BREAK_AGENT"):
        raise RuntimeError("the factory broke")
    return Agent(name="breaker", instructions="x", tools=[], model=ScriptedModel(["ok"]),
                 limits=Limits(max_steps=3))
"""


def test_worker_until_idle_exits_non_zero_when_a_run_errs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = tmp_path / "breaker.py"
    module.write_text(BREAKING_AGENT)
    store_url = f"sqlite:///{tmp_path / 'w.db'}"
    from tether.cli import app

    runner = CliRunner()
    spec = f"{module}:make"
    done = runner.invoke(
        app, ["submit", spec, "--task", "x", "--arg", "n=1", "--store", store_url]
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    monkeypatch.setenv("TETHER_TEST_BREAK_AGENT", "1")
    served = runner.invoke(
        app, ["worker", "--until-idle", "--agent", spec, "--store", store_url,
              "--log-level", "error"],
    )  # fmt: skip
    assert served.exit_code == 1, served.output
    assert "1 run(s) stopped on an unexpected error" in served.stderr
    assert "Traceback" not in served.stderr.split("error:")[-1]


def test_worker_json_reports_what_it_did_and_the_cpu_it_spent_serving(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--json` is how a script (and bench/workers.py) learns a worker's serving CPU: the
    process's start-up and exit are not in it, so per-step figures need no estimate of
    them."""
    module = tmp_path / "breaker.py"
    module.write_text(BREAKING_AGENT)
    store_url = f"sqlite:///{tmp_path / 'w.db'}"
    from tether.cli import app

    runner = CliRunner()
    spec = f"{module}:make"
    for _ in range(2):
        done = runner.invoke(app, ["submit", spec, "--task", "x", "--store", store_url])
        assert done.exit_code == 0, done.output
    monkeypatch.delenv("TETHER_TEST_BREAK_AGENT", raising=False)
    cpu = time.process_time()
    served = runner.invoke(
        app, ["worker", "--until-idle", "--agent", spec, "--store", store_url,
              "--log-level", "error", "--json"],
    )  # fmt: skip
    cpu = time.process_time() - cpu
    assert served.exit_code == 0, served.output
    stats = json.loads(served.stdout)
    assert stats["claimed"] == 2 and stats["finished"] == 2 and stats["errors"] == 0
    assert 0 < stats["cpu_s"] <= cpu
    # The split bench/workers.py shows per step: user and kernel CPU, and context switches.
    assert stats["user_s"] > 0 and stats["sys_s"] >= 0
    assert abs(stats["user_s"] + stats["sys_s"] - stats["cpu_s"]) <= 0.05 * stats["cpu_s"] + 0.01
    assert stats["voluntary_switches"] >= 0 and stats["involuntary_switches"] >= 0


def test_process_usage_counts_the_window_between_two_instants() -> None:
    """A worker's usage is the difference of two `getrusage` readings: the CPU, kernel time
    and context switches of the serving window only, never the process's life so far."""
    from tether._process_usage import ProcessUsage

    start = ProcessUsage.now()
    sum(i * i for i in range(200_000))  # some user CPU
    time.sleep(0.01)  # one wait: a voluntary switch
    used = ProcessUsage.now().since(start)
    assert used.user_s > 0 and used.sys_s >= 0
    assert used.voluntary_switches >= 1 and used.involuntary_switches >= 0
    assert used.user_s < start.user_s  # a window, not the life so far (imports cost more)
    same = ProcessUsage(1.0, 2.0, 3, 4)
    assert same.since(same) == ProcessUsage(0.0, 0.0, 0, 0)
