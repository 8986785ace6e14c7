"""Write the golden incidents in this folder: journals of real demo runs, exported as
`tether export RUN --view audit` writes them (the stored bytes, one event a line).

    python tests/golden/incidents/make_incidents.py           # refuses to overwrite
    python tests/golden/incidents/make_incidents.py --force   # only for a new incident

tests/kit/test_replay.py replays each with today's code (`assert_replays`):
the recorded model answers and tool results are fed back, nothing is called, and the
replay must do exactly what the recording did. Old files are never regenerated to make
that test pass; a deliberate change of behaviour or format adds new files beside them.

- `demo.jsonl`: the demo, approved at the publish step.
- `demo_crash_resumed.jsonl`: the demo crashed three times (twice with a model request
  open, once with a tool call requested and not finished) and resumed by a new worker.
- `demo_faults.jsonl`: the demo under tool failures, corrupted tool results, malformed
  model answers and model outages (a seeded fault plan).
- `incidents.jsonl`: `tether demo --incidents` (a looping search, a feed that revises its
  data, a citation index whose breaker opens, a publish the guardrail sends back).

The first three were written as stored v1 bytes; files written now are v2 portable lines,
as `tether export --view audit` writes them. Both must keep replaying.

- `demo_folded_budget.jsonl`, `demo_crash_resumed_folded_budget.jsonl`: the first two
  again, written after a model call's reservation and settlement moved into its
  `model.requested` / `model.completed` (`budget` field, see `tether/budget/_journaled.py`).
  The four above keep the separate `budget.reserved` / `budget.settled` events: both
  layouts must keep replaying.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import sys
import tempfile
from pathlib import Path

from tether import Runtime
from tether._clock import FakeClock
from tether.chaos import FaultPlan
from tether.demo import demo_agent, demo_plan, incidents_agent, incidents_task
from tether.errors import SimulatedCrash
from tether.events import decode_event
from tether.journal import Lease, MemoryStore
from tether.testing import run_to_end
from tether.testing._replay import _CrashAt

HERE = Path(__file__).parent
START = 1_790_000_000.0
META = {"agent_spec": "tether.demo:demo_agent", "agent_args": {"out": "tether-demo"}}


async def _export(store: MemoryStore, run_id: str) -> bytes:
    rows = await store.read_rows(run_id)
    events = [decode_event(row.raw, run_id=row.run_id, seq=row.seq) for row in rows]
    return b"".join(e.portable() + b"\n" for e in events)


async def demo() -> bytes:
    clock = FakeClock(START)
    store = MemoryStore(clock=clock)
    runtime = Runtime(store, clock=clock, worker_id="golden-0")
    agent = demo_agent("tether-demo")
    run_id = await runtime.create(agent, demo_plan()["task"], run_id="run_incident_demo",
                                  metadata=META)  # fmt: skip
    result = await run_to_end(agent, runtime=runtime, run_id=run_id)
    assert result.status == "completed", result
    return await _export(store, run_id)


async def crash_resumed() -> bytes:
    clock = FakeClock(START)
    store = MemoryStore(clock=clock)
    runtime = Runtime(store, clock=clock, worker_id="golden-0")
    agent = demo_agent("tether-demo")
    run_id = await runtime.create(agent, demo_plan()["task"], run_id="run_incident_crash",
                                  metadata=META)  # fmt: skip
    for n, after in enumerate((40, 121, 230), start=1):
        runtime.store = _CrashAt(store, after)
        try:
            await runtime.resume(agent, run_id)
        except SimulatedCrash:
            record = await store.get_run(run_id)
            if record.lease_owner is not None:  # a dead process leaves its lease behind
                lease = Lease(run_id=run_id, owner=record.lease_owner,
                              epoch=record.lease_epoch, expires_at=0)  # fmt: skip
                await store.release_lease(lease)
            runtime.worker_id = f"golden-{n}"
    runtime.store = store
    result = await run_to_end(agent, runtime=runtime, run_id=run_id)
    assert result.status == "completed", result
    return await _export(store, run_id)


async def faults() -> bytes:
    clock = FakeClock(START)
    store = MemoryStore(clock=clock)
    runtime = Runtime(store, clock=clock, worker_id="golden-0", model_retry_backoff_s=0.0)
    plan = FaultPlan(seed=14, tool_fail_rate=0.1, tool_corrupt_rate=0.1,
                     model_malformed_rate=0.08, model_fail_rate=0.08)  # fmt: skip
    base = demo_agent("tether-demo")
    tools = [dataclasses.replace(t, retry_backoff_s=0.0) for t in base.tools]
    agent = dataclasses.replace(
        base, tools=plan.wrap_tools(tools), model=plan.wrap_model(base.model)
    )  # type: ignore[arg-type]
    run_id = await runtime.create(agent, demo_plan()["task"], run_id="run_incident_faults",
                                  metadata=META)  # fmt: skip
    result = await run_to_end(agent, runtime=runtime, run_id=run_id)
    assert result.status in ("completed", "failed"), result
    return await _export(store, run_id)


async def incidents() -> bytes:
    clock = FakeClock(START)
    store = MemoryStore(clock=clock)
    runtime = Runtime(store, clock=clock, worker_id="golden-0")
    agent = incidents_agent("tether-demo")
    meta = {"agent_spec": "tether.demo:incidents_agent", "agent_args": {"out": "tether-demo"}}
    run_id = await runtime.create(agent, incidents_task(), run_id="run_incident_incidents",
                                  metadata=meta)  # fmt: skip
    result = await run_to_end(agent, runtime=runtime, run_id=run_id)
    assert result.status == "completed", result
    return await _export(store, run_id)


MAKERS = {"demo": demo, "demo_crash_resumed": crash_resumed, "demo_faults": faults,
          "incidents": incidents, "demo_folded_budget": demo,
          "demo_crash_resumed_folded_budget": crash_resumed}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--force", action="store_true")
    force = parser.parse_args().force
    with tempfile.TemporaryDirectory() as folder:
        os.chdir(folder)  # the demo's workspace (tether-demo/RUN_ID) goes here
        for name, make in MAKERS.items():
            path = HERE / f"{name}.jsonl"
            if path.exists() and not force:
                print(f"{path.name} exists; not overwritten (use --force for a new incident)")
                continue
            path.write_bytes(asyncio.run(make()))
            print(f"wrote {path.name}")


if __name__ == "__main__":
    sys.exit(main())
