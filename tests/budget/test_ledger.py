"""The budget ledger: windows, scopes, reservations, settlement and reclaiming."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tether import Agent, Limits, Runtime, tool
from tether._clock import FakeClock
from tether.budget import BudgetLimits, Denial, Ledger, Reservation, ledger_for
from tether.budget._journaled import reserved_in, settled_in
from tether.errors import ModelError, UsageError
from tether.journal import MemoryStore, SQLiteStore, Store, read_events
from tether.models import ModelRequest, ModelResponse, PriceTable, ScriptedModel, Turn, call
from tether.models._base import TextSink

from ..conftest import postgres_store


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def parts(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[Store, Ledger, FakeClock]]:
    clock = FakeClock(start=1_800_000_000.0)
    if request.param == "postgres":
        async with postgres_store(clock=clock) as pg:
            ledger = ledger_for(pg, clock=clock, reservation_ttl_s=600)
            yield pg, ledger, clock
        return
    store: Store = (
        MemoryStore(clock=clock)
        if request.param == "memory"
        else SQLiteStore(tmp_path / "b.db", clock=clock)
    )
    yield store, ledger_for(store, clock=clock, reservation_ttl_s=600), clock
    await store.close()


async def spend(ledger: Ledger, usd: float, *, run: str = "r1", agent: str = "a") -> Reservation:
    held = await ledger.reserve(run_id=run, agent=agent, tenant=None, estimate_usd=usd)
    assert isinstance(held, Reservation), held
    await ledger.settle(held, usd)
    return held


def windows(status: list[Any], scope: str) -> dict[str, Any]:
    return {s.window: s for s in status if s.scope == scope}


async def test_hourly_spend_leaves_the_window_after_an_hour(parts: Any) -> None:
    _, ledger, clock = parts
    await ledger.set_limits("global", BudgetLimits(hourly=1.0))
    await spend(ledger, 0.8)
    denied = await ledger.reserve(run_id="r2", agent="a", tenant=None, estimate_usd=0.3)
    assert isinstance(denied, Denial) and denied.window == "hourly" and denied.scope == "global"
    assert denied.spent == pytest.approx(0.8) and denied.frees_at is not None
    clock.advance(3000)
    assert isinstance(
        await ledger.reserve(run_id="r2", agent="a", tenant=None, estimate_usd=0.3), Denial
    )
    clock.advance(600 + 60)  # one hour and the bucket's minute have passed
    assert clock.time() >= denied.frees_at
    ok = await ledger.reserve(run_id="r2", agent="a", tenant=None, estimate_usd=0.3)
    assert isinstance(ok, Reservation)


async def test_daily_spend_leaves_the_window_after_a_day(parts: Any) -> None:
    _, ledger, clock = parts
    await ledger.set_limits("tenant:acme", BudgetLimits(daily=2.0))
    for _ in range(4):
        held = await ledger.reserve(run_id="r", agent="a", tenant="acme", estimate_usd=0.5)
        assert isinstance(held, Reservation)
        await ledger.settle(held, 0.5)
        clock.advance(3600)
    blocked = await ledger.reserve(run_id="r", agent="a", tenant="acme", estimate_usd=0.5)
    assert isinstance(blocked, Denial) and blocked.window == "daily"
    # Another tenant is not affected.
    assert isinstance(
        await ledger.reserve(run_id="r", agent="a", tenant="other", estimate_usd=0.5), Reservation
    )
    clock.advance(86400 - 4 * 3600 + 61)  # the first spend is now more than a day old
    assert isinstance(
        await ledger.reserve(run_id="r", agent="a", tenant="acme", estimate_usd=0.5), Reservation
    )


async def test_calendar_day_in_a_time_zone_resets_at_local_midnight(parts: Any) -> None:
    _, ledger, clock = parts
    clock.now = 1_800_000_000.0 - (1_800_000_000.0 % 86400) + 22 * 3600  # 22:00 UTC
    await ledger.set_limits("global", BudgetLimits(daily=1.0, daily_tz="UTC"))
    await spend(ledger, 1.0)
    denial = await ledger.reserve(run_id="r", agent="a", tenant=None, estimate_usd=0.01)
    assert isinstance(denial, Denial) and denial.frees_at == clock.now + 2 * 3600
    clock.advance(2 * 3600 + 1)
    assert isinstance(
        await ledger.reserve(run_id="r", agent="a", tenant=None, estimate_usd=0.01), Reservation
    )


async def test_per_call_and_per_run_limits(parts: Any) -> None:
    _, ledger, _ = parts
    await ledger.set_limits("agent:a", BudgetLimits(per_call=0.1, per_run=0.25))
    big = await ledger.reserve(run_id="r", agent="a", tenant=None, estimate_usd=0.2)
    assert isinstance(big, Denial) and big.window == "per_call"
    await spend(ledger, 0.1)
    await spend(ledger, 0.1)
    third = await ledger.reserve(run_id="r1", agent="a", tenant=None, estimate_usd=0.1)
    assert isinstance(third, Denial) and third.window == "per_run"
    other_run = await ledger.reserve(run_id="r9", agent="a", tenant=None, estimate_usd=0.1)
    assert isinstance(other_run, Reservation)
    other_agent = await ledger.reserve(run_id="r1", agent="b", tenant=None, estimate_usd=0.2)
    assert isinstance(other_agent, Reservation)


async def test_reservations_count_until_settled_released_or_expired(parts: Any) -> None:
    _, ledger, clock = parts
    await ledger.set_limits("global", BudgetLimits(hourly=1.0))
    held = await ledger.reserve(run_id="r", agent="a", tenant=None, estimate_usd=0.9)
    assert isinstance(held, Reservation)
    assert isinstance(
        await ledger.reserve(run_id="s", agent="a", tenant=None, estimate_usd=0.2), Denial
    )
    await ledger.settle(held, 0.3)  # actual below the estimate: the difference is refunded
    second = await ledger.reserve(run_id="s", agent="a", tenant=None, estimate_usd=0.6)
    assert isinstance(second, Reservation)
    await ledger.release(second)
    hourly = windows(await ledger.status(), "global")["hourly"]
    assert hourly.spent == pytest.approx(0.3) and hourly.reserved == pytest.approx(0.0)
    orphan = await ledger.reserve(run_id="dead", agent="a", tenant=None, estimate_usd=0.7)
    assert isinstance(orphan, Reservation)
    clock.advance(601)  # the reservation TTL: a dead call's hold is reclaimed
    hourly = windows(await ledger.status(), "global")["hourly"]
    assert hourly.reserved == pytest.approx(0.0) and hourly.spent == pytest.approx(0.3)
    # A settle that arrives after reclaiming still counts the money that was spent.
    assert await ledger.settle(orphan, 0.2) is False
    assert windows(await ledger.status(), "global")["hourly"].spent == pytest.approx(0.5)


async def test_release_run_reclaims_a_dead_sessions_holds(parts: Any) -> None:
    _, ledger, _ = parts
    for _ in range(3):
        await ledger.reserve(run_id="r", agent="a", tenant=None, estimate_usd=0.1)
    assert windows(await ledger.status(), "global")["daily"].reserved == pytest.approx(0.3)
    assert await ledger.release_run("r") == 3
    # Nothing held and nothing spent: the scope no longer shows at all.
    assert windows(await ledger.status(), "global") == {}


async def test_limits_are_stored_and_bad_input_is_refused(parts: Any) -> None:
    _, ledger, _ = parts
    await ledger.set_limits("global", BudgetLimits(daily=5.0))
    assert (await ledger.limits())["global"].daily == 5.0
    await ledger.set_limits("global", None)
    assert await ledger.limits() == {}
    with pytest.raises(UsageError):
        BudgetLimits(daily=-1)
    with pytest.raises(UsageError):
        BudgetLimits(daily=1, daily_tz="Mars/Olympus")


async def test_every_limit_change_is_kept_with_who_made_it(parts: Any) -> None:
    store, ledger, clock = parts
    assert await ledger.limit_changes() == []  # none yet (on PostgreSQL: no table yet)
    await ledger.set_limits("global", BudgetLimits(daily=5.0), actor="console:ann(tok_1)")
    clock.advance(60)
    await ledger.set_limits("tenant:acme", BudgetLimits(hourly=1.0, daily_tz="Europe/Paris"))
    clock.advance(60)
    await ledger.set_limits("global", None, actor="cli:bob")
    changes = await ledger_for(store, clock=clock).limit_changes()  # another ledger reads them
    assert [(c.scope, c.actor, c.at) for c in changes] == [
        ("global", "cli:bob", 1_800_000_120.0),
        ("tenant:acme", "python", 1_800_000_060.0),
        ("global", "console:ann(tok_1)", 1_800_000_000.0),
    ]
    assert changes[0].limits is None and changes[2].limits == BudgetLimits(daily=5.0)
    assert changes[1].limits == BudgetLimits(hourly=1.0, daily_tz="Europe/Paris")
    assert [c.scope for c in await ledger.limit_changes(1)] == ["global"]
    assert changes[2].to_json()["limits"]["daily"] == 5.0


# -- the loop and the ledger ---------------------------------------------------------------


@tool
def work() -> str:
    """Does some work."""
    return "done some work"


def looping(**kw: Any) -> Agent:
    def policy(request: ModelRequest) -> Turn:
        return Turn(text="partial summary") if not request.tools else call("work")

    model = kw.pop("model", None) or ScriptedModel(policy)
    return Agent(name="looper", instructions="Work.", tools=[work], model=model,
                 limits=Limits(max_steps=200), max_output_tokens=300, **kw)  # fmt: skip


async def ledger_totals(rt: Runtime) -> dict[str, Any]:
    """The global daily window; a scope with nothing spent or held is not listed."""
    assert rt.ledger is not None
    daily = windows(await rt.ledger.status(), "global").get("daily")
    return daily.to_json() if daily is not None else {"spent": 0, "reserved": 0}


async def test_a_denial_is_journaled_and_the_run_stops_with_a_report() -> None:
    rt = Runtime(MemoryStore())
    await rt.set_budget("global", BudgetLimits(daily=0.003))
    result = await rt.start(looping(), "loop")
    assert result.status == "stopped" and result.exit_code == 3
    assert result.answer is not None and result.answer.startswith("[PARTIAL — budget global daily")
    events = await read_events(rt.store, result.run_id)
    denied = [e for e in events if e.type == "budget.denied"]
    assert denied and denied[0].payload["window"] == "daily" and denied[0].payload["limit"] == 0.003
    stopped = events[-1]
    assert stopped.type == "run.stopped" and stopped.payload["report"]["steps"] == result.steps
    totals = await ledger_totals(rt)
    assert totals["spent"] == pytest.approx(result.cost_usd) and totals["reserved"] == 0
    assert result.cost_usd <= 0.003


async def test_every_reservation_is_settled_with_the_actual_cost() -> None:
    rt = Runtime(MemoryStore())
    result = await rt.start(looping(model=ScriptedModel([call("work")] * 5 + ["done"])), "go")
    events = await read_events(rt.store, result.run_id)
    # Each call's hold rides on its own events: no budget.reserved / budget.settled.
    assert not any(e.type in ("budget.reserved", "budget.settled") for e in events)
    requested = [e for e in events if e.type == "model.requested"]
    completed = [e for e in events if e.type == "model.completed"]
    reserved = [reserved_in(e) for e in requested]
    settled = [settled_in(e) for e in completed]
    assert len(reserved) == len(settled) == 6
    assert all(r is not None and r.kind == "model" and r.priced for r in reserved)
    assert all(s is not None for s in settled)
    assert [r.reservation_id for r in reserved if r] == [s.reservation_id for s in settled if s]
    for r, s, done in zip(reserved, settled, completed, strict=True):
        assert r is not None and s is not None and r.estimate_usd is not None
        assert done.usage is not None and s.actual_usd == done.usage.cost_usd
        assert s.actual_usd <= r.estimate_usd
    assert sum(s.actual_usd for s in settled if s) == pytest.approx(result.cost_usd)
    assert (await ledger_totals(rt))["spent"] == pytest.approx(result.cost_usd)


async def test_unpriced_models_are_charged_conservatively_or_refused() -> None:
    model = ScriptedModel(["hello"], name="mystery-model")
    rt = Runtime(MemoryStore())
    result = await rt.start(looping(model=model), "hi")
    events = await read_events(rt.store, result.run_id)
    reserved = next(reserved_in(e) for e in events if e.type == "model.requested")
    assert reserved is not None and reserved.priced is False
    warning = next(e for e in events if e.type == "health.warning")
    assert (
        "mystery-model" in warning.payload["message"]
        and "conservative" in warning.payload["message"]
    )
    assert result.cost_usd > PriceTable().cost("gpt-4o", result.input_tokens, result.output_tokens)

    strict = Runtime(MemoryStore(), prices=PriceTable(fail_closed=True))
    refused_model = ScriptedModel(["hello"], name="mystery-model")
    result = await strict.start(looping(model=refused_model), "hi")
    assert result.status == "stopped" and refused_model.calls == 0
    events = await read_events(strict.store, result.run_id)
    assert any(
        "fails closed" in e.payload.get("reason", "") for e in events if e.type == "budget.denied"
    )


async def test_the_output_bound_not_the_budget_sizes_a_reservation() -> None:
    model = ScriptedModel(["ok"], max_output_tokens=100)
    agent = looping(model=model)
    agent = Agent(**{**agent.__dict__, "max_output_tokens": 10**9})
    rt = Runtime(MemoryStore())
    await rt.set_budget("global", BudgetLimits(daily=100.0))
    result = await rt.start(agent, "hi")
    reserved = next(
        reserved_in(e)
        for e in await read_events(rt.store, result.run_id)
        if e.type == "model.requested"
    )
    input_tokens = next(
        e for e in await read_events(rt.store, result.run_id) if e.type == "model.completed"
    ).usage
    assert input_tokens is not None
    ceiling = PriceTable().cost("scripted", input_tokens.input_tokens, 100)
    assert reserved is not None and reserved.estimate_usd == pytest.approx(ceiling)


async def test_a_failed_call_releases_its_reservation() -> None:
    class Broken(ScriptedModel):
        async def complete(
            self, request: ModelRequest, *, on_text: TextSink | None = None
        ) -> ModelResponse:
            raise ModelError("bad request")

    rt = Runtime(MemoryStore())
    result = await rt.start(looping(model=Broken(["x"])), "go")
    assert result.status == "failed"
    totals = await ledger_totals(rt)
    assert totals["spent"] == 0 and totals["reserved"] == 0


async def test_a_cancelled_call_releases_its_reservation() -> None:
    entered = asyncio.Event()

    class Hanging(ScriptedModel):
        async def complete(
            self, request: ModelRequest, *, on_text: TextSink | None = None
        ) -> ModelResponse:
            entered.set()
            await asyncio.sleep(3600)
            raise AssertionError("unreachable")

    rt = Runtime(MemoryStore())
    task = asyncio.create_task(rt.start(looping(model=Hanging(["x"])), "go"))
    await asyncio.wait_for(entered.wait(), 5)
    assert (await ledger_totals(rt))["reserved"] > 0
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    totals = await ledger_totals(rt)
    assert totals["reserved"] == 0 and totals["spent"] == 0


async def test_paid_tools_are_reserved_and_denied_like_model_calls() -> None:
    uses = {"n": 0}

    @tool(cost_usd=0.01)
    def paid_lookup() -> str:
        """A paid API."""
        uses["n"] += 1
        return "data"

    def policy(request: ModelRequest) -> Turn:
        return Turn(text="wrapped") if not request.tools else call("paid_lookup")

    agent = Agent(name="payer", instructions="x", tools=[paid_lookup], model=ScriptedModel(policy),
                  limits=Limits(max_steps=50), max_output_tokens=100)  # fmt: skip
    rt = Runtime(MemoryStore())
    await rt.set_budget("agent:payer", BudgetLimits(daily=0.035))
    result = await rt.start(agent, "go")
    assert result.status == "stopped"
    assert uses["n"] == 3  # three calls ($0.03) and the model turns fit; a fourth would not
    events = await read_events(rt.store, result.run_id)
    assert any(e.type == "budget.denied" for e in events)
    assert (await ledger_totals(rt))["spent"] <= 0.035


async def test_holds_are_counted_from_the_open_reservations_only(parts: Any) -> None:
    """Held money is what open reservations hold: each hold once, gone when it ends, and
    a usage row's `reserved` column (written by earlier versions) is never added to it."""
    store, ledger, _ = parts
    await ledger.set_limits("global", BudgetLimits(hourly=1.0))
    if isinstance(store, SQLiteStore):
        with ledger.tables.transaction():
            ledger.tables.db.execute(
                "INSERT INTO budget_usage (scope, minute, spent, reserved) VALUES (?,?,?,?)",
                ("global", 30_000_000, 0.0, 5.0),
            )
    held = await ledger.reserve(run_id="r1", agent="a", tenant=None, estimate_usd=0.4)
    assert isinstance(held, Reservation)
    again = await ledger.reserve(run_id="r2", agent="a", tenant=None, estimate_usd=0.4)
    assert isinstance(again, Reservation)
    assert windows(await ledger.status(), "global")["hourly"].reserved == pytest.approx(0.8)
    # A third hold would pass 1.0 only because the first two are counted.
    third = await ledger.reserve(run_id="r3", agent="a", tenant=None, estimate_usd=0.4)
    assert isinstance(third, Denial) and third.reserved == pytest.approx(0.8)
    await ledger.settle(held, 0.1)
    await ledger.release(again)
    hourly = windows(await ledger.status(), "global")["hourly"]
    assert hourly.reserved == pytest.approx(0.0) and hourly.spent == pytest.approx(0.1)


async def test_limits_changed_by_another_ledger_apply_to_the_very_next_call(parts: Any) -> None:
    """A ledger asks ahead for the sums the limits it saw last time need (on PostgreSQL
    they share a round trip with the limits' read); limits changed meanwhile elsewhere
    must still be the ones checked, with sums for their windows."""
    store, ledger, clock = parts
    other = ledger_for(store, clock=clock)
    await spend(ledger, 0.3, run="r1")
    # Seen by `ledger`: no limits. Another process sets an hourly and a per-run one.
    await other.set_limits("global", BudgetLimits(hourly=0.5))
    await other.set_limits("agent:a", BudgetLimits(per_run=0.35))
    denied = await ledger.reserve(run_id="r1", agent="a", tenant=None, estimate_usd=0.1)
    assert isinstance(denied, Denial) and denied.window == "per_run"
    allowed = await ledger.reserve(run_id="r2", agent="a", tenant=None, estimate_usd=0.1)
    assert isinstance(allowed, Reservation)
    # Now the guess is right: the hold just made counts in the next check.
    third = await ledger.reserve(run_id="r3", agent="a", tenant=None, estimate_usd=0.15)
    assert isinstance(third, Denial) and third.window == "hourly"
    assert third.spent == pytest.approx(0.3) and third.reserved == pytest.approx(0.1)
    # And a change of window (daily instead of hourly) is read with its own sums.
    await other.set_limits("global", BudgetLimits(daily=0.45))
    fourth = await ledger.reserve(run_id="r4", agent="a", tenant=None, estimate_usd=0.1)
    assert isinstance(fourth, Denial) and fourth.window == "daily"
    assert fourth.spent == pytest.approx(0.3) and fourth.reserved == pytest.approx(0.1)


@pytest.mark.parametrize("bad", [-0.5, float("nan"), float("inf")])
async def test_no_amount_can_credit_the_ledger(parts: Any, bad: float) -> None:
    """Whoever computed it (a price table, a tool's price, a provider's usage), a negative
    or non-finite amount is refused: it would credit every budget it is counted in."""
    _, ledger, _ = parts
    await ledger.set_limits("global", BudgetLimits(daily=1.0))
    await spend(ledger, 0.4)
    with pytest.raises(UsageError, match="finite number"):
        await ledger.reserve(run_id="r", agent="a", tenant=None, estimate_usd=bad)
    held = await ledger.reserve(run_id="r", agent="a", tenant=None, estimate_usd=0.1)
    assert isinstance(held, Reservation)
    with pytest.raises(UsageError, match="finite number"):
        await ledger.settle(held, bad)
    await ledger.settle(held, 0.1)
    assert windows(await ledger.status(), "global")["daily"].spent == pytest.approx(0.5)


def test_a_negative_or_non_finite_price_is_refused_where_it_is_declared() -> None:
    from tether.models import Price

    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(UsageError, match="finite number"):
            Price(input_per_mtok=bad, output_per_mtok=1.0)
        with pytest.raises(UsageError, match="finite number"):

            @tool(cost_usd=bad)
            def paid() -> str:
                """Costs money."""
                return "x"
