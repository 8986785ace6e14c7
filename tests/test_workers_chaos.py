"""Chaos: 4 `tether worker` processes on one PostgreSQL store drive 40 demo runs while a
random worker is SIGKILLed every few seconds (and replaced), and PostgreSQL itself is
restarted (immediate shutdown, i.e. crash recovery) once mid-test.

It runs twice: with every commit flushed (the default) and with `synchronous=normal`, where
the crash can lose the newest appends that no effect waited for (the summary says how much
WAL was unwritten when it came). The claims are the same, but for one the mode allows: an
idempotent call whose request the crash took back may run once more, from scratch, after it.

Claims: every run completes; every journal is one verified chain (no fork); no tool call
whose outcome was durable ever runs again, and no call has two first executions (counted
by the tools themselves, outside the journal); every report is byte-identical; runs of a
killed worker are taken over within the lease time (the measured latencies are printed).

The test runs its own throwaway PostgreSQL cluster, so restarting it cannot disturb tests
running in parallel against the shared server.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tether.journal import open_store, read_events, verify_run
from tether.worker import submit_run

from .conftest import require

pytestmark = [pytest.mark.chaos, pytest.mark.slow, pytest.mark.postgres]

RUNS = 40
WORKERS = 4
CONCURRENCY = 16
"""Three workers can hold every run, so the runs of a killed worker never wait for a free
slot (or for its replacement to start): what is measured is the lease, not the backlog."""
LEASE_TTL = 3.0
MODEL_LATENCY = 0.8
"""Seconds per model call: a run lasts about 40 s, so every run sees several kills."""
KILL_EVERY = (2.0, 4.0)
STEPS_PER_RUN = 48
SEED = int(os.environ.get("TETHER_CHAOS_SEED", "7"))
WRITE_TOOLS = ("read", "note", "draft", "publish")

AGENT_MODULE = '''
"""The demo agent, with every keyed tool call counted in a log outside the journal."""
import dataclasses, json, os, time
from tether.demo import demo_agent as _demo

def _counted(tool):
    inner, param = tool.fn, tool.context_param

    def counted(**kwargs):
        ctx = kwargs[param]
        line = json.dumps({"key": ctx.idempotency_key, "attempt": ctx.attempt,
                           "tool": tool.name, "pid": os.getpid(), "t": time.time()})
        fd = os.open(os.environ["CHAOS_EXEC_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, (line + "\\n").encode())
        finally:
            os.close(fd)
        return inner(**kwargs)

    return dataclasses.replace(tool, fn=counted)

def agent(out="tether-demo"):
    base = _demo(out)
    return dataclasses.replace(
        base, tools=[_counted(t) if t.context_param else t for t in base.tools]
    )
'''


# -- a private PostgreSQL cluster --------------------------------------------------------


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if found:
        return Path(found[-1]).parent
    which = shutil.which("pg_ctl")
    return Path(which).parent if which else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Cluster:
    bin: Path
    data: Path
    port: int
    as_postgres: bool

    def _cmd(self, *args: str) -> list[str]:
        prefix = ["runuser", "-u", "postgres", "--"] if self.as_postgres else []
        return [*prefix, *args]

    def run(self, *args: str, timeout: float = 60) -> None:
        subprocess.run(self._cmd(*args), check=True, capture_output=True, timeout=timeout)

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1 "
            "-c max_connections=300 -c shared_buffers=32MB"
        )
        self.run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options,
                 "-l", str(self.data / "server.log"), "-w", "-t", "60", "start")  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self.run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    pg = _pg_bin()
    require(pg is not None, "PostgreSQL server binaries (pg_ctl, initdb) are not installed")
    assert pg is not None
    as_postgres = os.geteuid() == 0
    if as_postgres:
        require(shutil.which("runuser") is not None, "running as root needs runuser")
    data = Path(tempfile.mkdtemp(prefix="tether-pg-"))
    if as_postgres:
        shutil.chown(data, "postgres", "postgres")
    c = Cluster(bin=pg, data=data / "data", port=_free_port(), as_postgres=as_postgres)
    try:
        c.run(str(pg / "initdb"), "-D", str(c.data), "-U", "postgres", "--auth=trust",
              "-E", "UTF8", "--no-sync")  # fmt: skip
        c.start()
        yield c
    finally:
        with_log = c.data / "server.log"
        with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
            c.stop("immediate")
        if os.environ.get("TETHER_CHAOS_KEEP_LOG") and with_log.exists():
            shutil.copy(with_log, os.environ["TETHER_CHAOS_KEEP_LOG"])
        shutil.rmtree(data, ignore_errors=True)


# -- workers -----------------------------------------------------------------------------


@dataclass
class Workers:
    url: str
    agent_spec: str
    folder: Path
    env: dict[str, str]
    procs: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    kills: dict[int, float] = field(default_factory=dict)
    started: int = 0

    def spawn(self) -> None:
        self.started += 1
        log = open(self.folder / f"worker-{self.started}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "tether", "worker", "--store", self.url,
             "--concurrency", str(CONCURRENCY), "--lease-ttl", str(LEASE_TTL),
             "--no-local-takeover", "--grace", "5", "--agent", self.agent_spec],
            env=self.env, stdout=subprocess.DEVNULL, stderr=log,
        )  # fmt: skip
        log.close()
        self.procs[proc.pid] = proc

    def kill_one(self, rng: random.Random) -> None:
        pid = rng.choice(sorted(self.procs))
        proc = self.procs.pop(pid)
        proc.send_signal(signal.SIGKILL)
        self.kills[pid] = time.time()
        proc.wait()

    def stop_all(self) -> dict[int, int]:
        for proc in self.procs.values():
            proc.send_signal(signal.SIGTERM)
        codes = {}
        for pid, proc in self.procs.items():
            try:
                codes[pid] = proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[pid] = -9
        self.procs.clear()
        return codes


def _counts(url: str) -> Counter[str]:
    """Runs per status, and the steps taken (`steps`), with a plain connection."""
    import psycopg

    with psycopg.connect(url, connect_timeout=2) as conn:
        rows = conn.execute(
            "SELECT status, count(*), sum(steps) FROM chaos.runs GROUP BY status"
        ).fetchall()
    counts = Counter({status: n for status, n, _ in rows})
    counts["steps"] = sum(int(steps or 0) for _, _, steps in rows)
    return counts


def _unwritten_wal(url: str) -> int:
    """WAL the server had inserted but not yet written when asked: what an immediate stop
    loses (with `synchronous=normal`, the newest appends that were not at a boundary)."""
    import psycopg

    with psycopg.connect(url, connect_timeout=2) as conn:
        row = conn.execute("SELECT pg_current_wal_insert_lsn() - pg_current_wal_lsn()").fetchone()
    return int(row[0]) if row else 0


_TAKEOVER = re.compile(r"took over run=(\S+) epoch=(\d+) from=(\S+) expired_ago=(\S+) t=([\d.]+)")


def _epoch(ts: str) -> float:
    return datetime.fromisoformat(ts).timestamp()


@pytest.mark.parametrize("synchronous", ["full", "normal"])
def test_four_workers_drive_forty_runs_through_kills_and_a_database_restart(
    cluster: Cluster, tmp_path: Path, record_property: Any, synchronous: str
) -> None:
    rng = random.Random(SEED)
    url = f"{cluster.url}?schema=chaos&pool_max=6&synchronous={synchronous}"
    agent_file = tmp_path / "chaos_agent.py"
    agent_file.write_text(AGENT_MODULE)
    exec_log = tmp_path / "executions.jsonl"
    outs = tmp_path / "out"

    async def submit_all() -> list[str]:
        from tether.demo import demo_agent, demo_plan

        store = open_store(url)
        try:
            ids = []
            for i in range(RUNS):
                folder = outs / f"r{i:02d}"
                ids.append(
                    await submit_run(
                        store,
                        demo_agent(folder),
                        demo_plan()["task"],
                        agent_spec="tether.demo:demo_agent",
                        agent_args={"out": str(folder)},
                        model_spec="scripted",
                        auto_approve=True,
                    )
                )
            return ids
        finally:
            await store.close()

    run_ids = asyncio.run(submit_all())
    env = {k: v for k, v in os.environ.items() if k != "TETHER_STORE"}
    env.update(TETHER_CHAOS=f"model_latency={MODEL_LATENCY}", CHAOS_EXEC_LOG=str(exec_log))
    workers = Workers(url=url, agent_spec=f"{agent_file}:agent", folder=tmp_path, env=env)
    for _ in range(WORKERS):
        workers.spawn()

    start = time.time()
    deadline = start + 170
    next_kill = start + rng.uniform(*KILL_EVERY)
    restarted_at: float | None = None
    unwritten = 0
    restart_s = 0.0
    done = 0
    try:
        while time.time() < deadline:
            try:
                counts = _counts(cluster.url)
                done = counts["completed"] + counts["failed"] + counts["stopped"]
            except Exception:
                counts = Counter()
            if done >= RUNS:
                break
            if restarted_at is None and counts["steps"] >= RUNS * STEPS_PER_RUN * 0.35:
                unwritten = _unwritten_wal(cluster.url)
                restarted_at = time.time()
                cluster.stop("immediate")  # a crash: every connection drops at once
                time.sleep(0.5)
                cluster.start()
                restart_s = time.time() - restarted_at
                next_kill = max(next_kill, time.time() + 1.0)
            if time.time() >= next_kill:
                workers.kill_one(rng)
                workers.spawn()
                next_kill = time.time() + rng.uniform(*KILL_EVERY)
            time.sleep(0.2)
        elapsed = time.time() - start
    finally:
        codes = workers.stop_all()

    logs = "\n".join(p.read_text(errors="replace") for p in sorted(tmp_path.glob("worker-*.log")))
    assert done >= RUNS, f"only {done}/{RUNS} runs ended in {elapsed:.0f}s\n{logs[-5000:]}"
    # Every worker serving when SIGTERM came exited 0 (one still starting may have exited
    # by the default action, before it could claim anything).
    serving = {int(pid) for pid in re.findall(r"worker \S+?:(\d+):\S+ serving", logs)}
    assert all(code == 0 for pid, code in codes.items() if pid in serving), codes
    assert restarted_at is not None, "the database restart never happened"

    # -- every run completed, on one verified chain, with an identical report ------------
    async def journals() -> dict[str, list[Any]]:
        store = open_store(url)
        try:
            out = {}
            for run_id in run_ids:
                report = await verify_run(store, run_id)
                assert report.ok, (run_id, report.problems)
                record = await store.get_run(run_id)
                assert record.summary.status == "completed", (run_id, record.summary)
                events = await read_events(store, run_id)
                assert [e.seq for e in events] == list(range(1, len(events) + 1))
                out[run_id] = events
            return out
        finally:
            await store.close()

    events_of = asyncio.run(journals())
    reports = {(outs / f"r{i:02d}" / "report.md").read_bytes() for i in range(RUNS)}
    assert len(reports) == 1 and b"## Sources" in next(iter(reports))

    # -- no completed call ran again; no call had two first executions -------------------
    outcome_at: dict[str, float] = {}
    idempotent: dict[str, bool] = {}
    for events in events_of.values():
        requested = {e.seq: e for e in events if e.type == "tool.requested"}
        for e in requested.values():
            idempotent[e.payload["idempotency_key"]] = bool(e.payload.get("idempotent"))
        for e in events:
            if e.type in ("tool.completed", "tool.failed", "tool.unknown"):
                seq = int((e.causation_id or ":0").rpartition(":")[2])
                if seq in requested:
                    key = requested[seq].payload["idempotency_key"]
                    outcome_at[key] = _epoch(e.ts)
    executions: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for line in exec_log.read_text().splitlines():
        record = json.loads(line)
        executions[record["key"]].append(record)
    late = [
        (key, x) for key, xs in executions.items() for x in xs
        if key in outcome_at and x["t"] > outcome_at[key] + 0.001
    ]  # fmt: skip
    assert not late, f"calls executed after their outcome was durable: {late[:5]}"
    firsts = {
        key: sorted(x["t"] for x in xs if x["attempt"] == 1) for key, xs in executions.items()
    }
    doubled = [key for key, ts in firsts.items() if len(ts) > 1]
    if synchronous == "full":
        assert not doubled, f"calls executed twice from scratch: {doubled[:5]}"
    else:
        # The crash may take back the unflushed request of an idempotent call that had
        # already run: its redo presents the same key as a first execution, as after a
        # power cut on SQLite's default. Only such calls: idempotent, run once before the
        # database was back (a worker acknowledged just before the crash may run the call
        # a moment into it) and once after.
        back = restarted_at + restart_s
        wrong = [
            key for key in doubled
            if not (idempotent.get(key) and len(firsts[key]) == 2
                    and firsts[key][0] < back <= firsts[key][1])
        ]  # fmt: skip
        assert not wrong, f"calls executed twice from scratch, not across the crash: {wrong[:5]}"
    reruns = sum(len(xs) - 1 for xs in executions.values())
    unanswered = [key for key in executions if key not in outcome_at]
    assert not unanswered, f"executed calls without an outcome in the journal: {unanswered[:5]}"

    # -- takeovers of killed workers' runs happened within the lease time --------------
    # A takeover from a live worker (one that fenced itself while the database was down)
    # is not a kill's: only takeovers after the holder was killed are measured.
    # Kills whose lease ran out while the database was down are taken over once it is back,
    # and for one lease after it is back every worker is re-claiming the runs it fenced (a
    # burst of resumes on two shared cores): those kills are measured apart, with the outage
    # added to their bound.
    outage = (restarted_at - LEASE_TTL, restarted_at + restart_s + LEASE_TTL)
    latencies: list[float] = []
    during_outage: list[float] = []
    details: list[tuple[float, str, float]] = []
    others = 0
    for match in _TAKEOVER.finditer(logs):
        _, _, previous, expired_ago, at = match.groups()
        # host:pid:nonce, or host:pid:approver-worker:host:pid:nonce:auto-approve (a
        # worker killed while it approved a run: that lease lasts the worker's lease time).
        found = re.search(r":(\d+):", previous)
        killed = workers.kills.get(int(found.group(1))) if found else None
        if killed is None or float(at) < killed:
            others += 1
        elif outage[0] <= killed <= outage[1]:
            during_outage.append(float(at) - killed)
        else:
            latencies.append(float(at) - killed)
            details.append((round(float(at) - killed, 3), expired_ago, round(killed - start, 1)))
    assert latencies, "no run of a killed worker was taken over"
    # Workers wake 5 ms after the expiry they saw; on 2 cores shared with PostgreSQL, three
    # other workers and the other test process, that wake can come late: 3.98 s was seen in
    # a clean full-suite run. Two seconds of slack still fails a takeover that waited for a
    # second lease (6 s or more).
    slack = 2.0
    restart = round(restarted_at - start, 1)
    assert max(latencies) <= LEASE_TTL + slack, (
        f"takeovers (latency, expired_ago, killed at) {sorted(details)[-8:]}; "
        f"database restarted at {restart}s for {restart_s:.1f}s"
    )
    assert all(x <= LEASE_TTL + restart_s + 2.0 for x in during_outage), during_outage
    summary = {
        "runs": RUNS,
        "workers": WORKERS,
        "elapsed_s": round(elapsed, 1),
        "kills": len(workers.kills),
        "db_restart_s": round(restart_s, 2),
        "takeovers_of_killed": len(latencies),
        "takeover_latency_s": {
            "min": round(min(latencies), 3),
            "median": round(statistics.median(latencies), 3),
            "max": round(max(latencies), 3),
            "lease_ttl": LEASE_TTL,
        },
        "takeovers_of_kills_during_the_outage": len(during_outage),
        "other_takeovers": others,
        "tool_reruns_in_flight": reruns,
        "lost_runs_logged": logs.count("lost run="),
        "synchronous": synchronous,
        "unwritten_wal_bytes_at_the_crash": unwritten,
        "idempotent_calls_redone_across_the_crash": len(doubled),
    }
    print("\nchaos summary: " + json.dumps(summary))
    record_property("report", "workers chaos: " + json.dumps(summary))  # in the run's summary
    out_file = os.environ.get("TETHER_CHAOS_SUMMARY")
    if out_file:
        Path(out_file).write_text(json.dumps(summary, indent=2))
