"""`Store.list_runs` filters by agent, tenant and creation time on every backend, over the
whole run index (the console's runs list passes its filters down: none are applied to a
prefix of the newest runs)."""

from __future__ import annotations

from tether._clock import FakeClock, iso
from tether.journal import Store, create_run


async def test_list_runs_filters_by_agent_tenant_and_creation_time(store: Store) -> None:
    clock = FakeClock(start=1_800_000_000.0)
    made = [("run_0", "a", "acme"), ("run_1", "b", "acme"), ("run_2", "a", None),
            ("run_3", "b", "globex"), ("run_4", "a", "acme")]  # fmt: skip
    for run_id, agent, tenant in made:
        clock.advance(60)
        await create_run(store, agent=agent, task="t", run_id=run_id, tenant=tenant, clock=clock)

    async def ids(**where: object) -> list[str]:
        return [r.run_id for r in await store.list_runs(**where)]  # type: ignore[arg-type]

    assert await ids(agent="a") == ["run_4", "run_2", "run_0"]
    assert await ids(tenant="acme") == ["run_4", "run_1", "run_0"]
    assert await ids(agent="b", tenant="acme") == ["run_1"]
    # The oldest match is found however many newer runs come before it.
    assert await ids(agent="a", tenant="acme", limit=1) == ["run_4"]
    assert await ids(agent="b", tenant="globex", limit=1) == ["run_3"]
    second, fourth = iso(1_800_000_120.0), iso(1_800_000_240.0)  # run_1's and run_3's
    assert await ids(since=second, until=fourth) == ["run_2", "run_1"]  # until: before it
    assert await ids(since=second, agent="a", status="queued") == ["run_4", "run_2"]
    assert await ids(agent="nobody") == [] and await ids(until=iso(0.0)) == []
