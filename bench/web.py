"""Console benchmark: the runs page with 1,000 runs and a run page with 10,000 events.

Builds two SQLite stores with `bench/audit.py`'s generator (runs shaped like real ones:
cycles with model requests and answers, budget checks, tool calls with ~800-character
results, approvals, compactions), then times whole requests through the console's ASGI
app (httpx, no sockets): authentication, the views, and the Jinja page or JSON twin.

Targets (2-core machine): each page renders in under 300 ms (median over the samples,
warm caches, operator view).

    .venv/bin/python bench/web.py            # full run, rewrites the web section
    .venv/bin/python bench/web.py --quick    # fewer samples, writes nothing
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent / "src"))
sys.path.insert(0, str(BENCH))

import audit as generator  # noqa: E402
from _args import at_least  # noqa: E402
from _results import write_section  # noqa: E402

from tether.journal import SQLiteStore, load_run, seal_snapshot  # noqa: E402
from tether.web._pages import SECTION_SIZE, TIMELINE_WINDOW  # noqa: E402

SECTION = "web"
TARGET_MS = 300.0


def build(path: Path, runs: int, events_per_run: int) -> str:
    """A store of `runs` runs of about `events_per_run` events; returns the first run's id.

    The generator bulk-loads rows without snapshots; a journal written by the runtime has
    one every 200 events, so the first run gets one at its head, as it would have."""
    generator.EVENTS_PER_RUN = events_per_run
    generator.build(path, runs)
    run_id = "run_bench00000"
    asyncio.run(_snapshot(path, run_id))
    return run_id


async def _snapshot(path: Path, run_id: str) -> None:
    store = SQLiteStore(path)
    try:
        state = (await load_run(store, run_id)).state
        lease = await store.acquire_lease(run_id, owner="bench", ttl_s=60)
        await store.put_snapshot(lease, run_id, state.last_seq, seal_snapshot(state), keep=2)
        await store.release_lease(lease)
    finally:
        await store.close()


async def timed(client: Any, url: str, samples: int) -> dict[str, float]:
    r = await client.get(url)  # warm-up (and a check)
    assert r.status_code == 200, (url, r.status_code, r.text[:300])
    size = len(r.content)
    seconds, cpu = [], []
    for _ in range(samples):
        t0, c0 = time.perf_counter(), time.process_time()
        r = await client.get(url)
        seconds.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        assert r.status_code == 200
    ms = sorted(s * 1000 for s in seconds)
    return {
        "cpu": statistics.median(cpu) * 1000,
        "n": len(ms),
        "median": statistics.median(ms),
        "p95": ms[max(0, int(len(ms) * 0.95) - 1)],
        "max": ms[-1],
        "bytes": size,
    }


async def measure(path: Path, urls: list[str], samples: int) -> dict[str, dict[str, float]]:
    import httpx

    from tether.web import create_app
    from tether.web.tokens import create_token

    store = SQLiteStore(path)
    try:
        token, _ = await create_token(store, role="operator", name="bench")
        app = create_app(store=store)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://bench",
            headers={"authorization": f"Bearer {token}"}, timeout=60,
        ) as client:  # fmt: skip
            return {url: await timed(client, url, samples) for url in urls}
    finally:
        await store.close()


def row(label: str, d: dict[str, float]) -> str:
    verdict = "PASS" if d["median"] < TARGET_MS else "FAIL"
    return (
        f"| {label} | {d['median']:.1f} | {d['p95']:.1f} | {d['max']:.1f} | {d['cpu']:.1f} | "
        f"{d['bytes'] / 1024:,.0f} KiB | < {TARGET_MS:.0f} ms | {verdict} |"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 samples; write nothing")
    parser.add_argument("--samples", type=at_least(1), default=20)
    args = parser.parse_args()
    samples = 5 if args.quick else args.samples
    with tempfile.TemporaryDirectory(prefix="tether-bench-web-") as folder:
        many, long = Path(folder) / "runs.db", Path(folder) / "long.db"
        t0 = time.perf_counter()
        build(many, 1_000, 30)
        run_id = build(long, 1, 10_000)
        print(f"built the stores in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        lists = asyncio.run(measure(many, ["/runs?limit=1000", "/api/runs?limit=1000"], samples))
        run = asyncio.run(measure(long, [f"/runs/{run_id}", f"/api/runs/{run_id}"], samples))
    results = {**lists, **run}
    labels = {
        "/runs?limit=1000": "runs page, 1,000 runs (HTML)",
        "/api/runs?limit=1000": "runs page, 1,000 runs (JSON twin)",
        f"/runs/{run_id}": "run page, 10,000 events (HTML)",
        f"/api/runs/{run_id}": "run page, 10,000 events (JSON twin)",
    }
    table = [
        "| page | median ms | p95 ms | max ms | CPU ms (median) | size | target | result |",
        "|---|---|---|---|---|---|---|---|",
        *(row(labels[url], d) for url, d in results.items()),
    ]
    print("\n".join(table))
    if args.quick:
        return 0
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    body = "\n".join(
        [
            "## Console: runs page with 1,000 runs, run page with 10,000 events",
            "",
            f"Measured {when}.",
            "",
            f"- **Machine:** {generator.machine()}.",
            "- **Stores:** SQLite, built with `bench/audit.py`'s generator: 1,000 runs of ~30 "
            "events (the runs page) and one run of 10,000 events (cycles of model calls, "
            "budget checks, tool calls with ~800-character results, approvals, compactions) "
            "with a snapshot at its head, as the runtime writes one every 200 events.",
            "- **What a page reads:** the runs page reads the run index, each run's first "
            "event and one indexed health query; the run page reads the snapshot and tail, "
            "one window of the timeline (the newest "
            f"{TIMELINE_WINDOW} events; older ones are a link away), the pins the fold "
            f"keeps, and the newest {SECTION_SIZE} approvals, health events and compactions "
            "by queries by type (on SQLite, without the per-run section index, those walk "
            "the run's audit rows, no event bytes: this part still grows with the run).",
            f"- **Method:** {samples} timed requests per page after one warm-up, through the "
            "console's ASGI app with httpx (token check, `tether.views`, Jinja or JSON), "
            "operator token; time.perf_counter around each request (wall time, the target), "
            "and time.process_time (this process's CPU, which other processes on the "
            "machine do not inflate).",
            "- **Reproduce:** `.venv/bin/python bench/web.py` (from the repository root).",
            "",
            *table,
            "",
        ]
    )
    target = write_section(SECTION, body)
    print(f"wrote section {SECTION!r} of {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
