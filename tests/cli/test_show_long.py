"""`tether show` of a long run reads what it prints: the newest events, the state from
the newest snapshot and its tail, pins from the fold, health by an indexed query.

Shown by really damaging an early event: the text view, which never reads it, still
prints; `--last 0` and `--json`, which read the whole journal, refuse the run.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from typer.testing import CliRunner

from tether.cli import app
from tether.events import EventDraft
from tether.journal import SQLiteStore

from ..journal.helpers import RUN_ID, write_run

runner = CliRunner()


def tether(db: Path, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, [*args, "--store", f"sqlite:///{db}"])
    return result.exit_code, result.stdout, result.stderr


def cycle(n: int) -> list[EventDraft]:
    """A loop turn as the runtime journals it: a model call and two tool calls."""
    corr = f"{RUN_ID}/c{n}"
    calls = [{"id": f"call_{n}_{t}", "name": "search", "arguments": "{}"} for t in range(2)]
    return [
        EventDraft(type="cycle.started", payload={"cycle": n}, correlation_id=corr),
        EventDraft(type="model.requested", payload={"model": "m"}, correlation_id=corr),
        EventDraft(type="model.completed", correlation_id=corr,
                   payload={"content": f"turn {n}", "tool_calls": calls}),
        *(EventDraft(type=kind, correlation_id=corr,
                     payload={"call_id": c["id"], "name": "search", "output": f"result {n}"})
          for c in calls for kind in ("tool.requested", "tool.completed")),
    ]  # fmt: skip


def health(i: int) -> EventDraft:
    return EventDraft(type="health.warning", payload={"message": f"warning {i}"})


async def build(db: Path) -> int:
    """A run of 100 cycles (and 15 health warnings among them), snapshotted every 200
    events as the runtime does; returns its head seq."""
    store = SQLiteStore(db)
    drafts: list[EventDraft] = []
    for n in range(1, 101):
        drafts += cycle(n)
        if n % 6 == 0 and n <= 90:
            drafts.append(health(n))
    journal, lease = await write_run(store, drafts, snapshot_every=200, batch=7)
    await store.release_lease(lease)
    await store.close()
    return journal.state.last_seq


def flip_a_byte(db: Path, seq: int) -> None:
    con = sqlite3.connect(db)
    (data,) = con.execute("SELECT data FROM event_rows WHERE seq=?", (seq,)).fetchone()
    damaged = bytearray(data)
    damaged[len(damaged) // 2] ^= 0x01
    con.execute("UPDATE event_rows SET data=? WHERE seq=?", (bytes(damaged), seq))
    con.commit()
    con.close()


def timeline(text: str) -> list[int]:
    return [int(line[:5]) for line in text.splitlines() if line[:5].strip().isdigit()]


def test_show_reads_only_the_events_it_prints(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    head = asyncio.run(build(db))
    assert head > 600
    flip_a_byte(db, 5)
    code, out, err = tether(db, "show", RUN_ID, "--last", "20")
    assert code == 0, err
    assert timeline(out) == list(range(head - 19, head + 1))
    assert f"… {head - 20:,} earlier events (--last 0 shows them all)" in out
    assert "steps 100" in out  # the summary: the snapshot and its tail
    for args in (["--last", "0"], ["--json"]):
        code, out, err = tether(db, "show", RUN_ID, *args)
        assert code != 0 and "seq 5" in err and "Traceback" not in err, (args, err)


def test_show_lists_the_newest_health_events(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    asyncio.run(build(db))
    code, out, _ = tether(db, "show", RUN_ID, "--last", "5")
    assert code == 0
    (line,) = [line for line in out.splitlines() if line.startswith("health events:")]
    # 15 warnings: the newest 12 are listed, with where to find the older ones.
    assert line.count("warning @") == 12 and f"tether audit --run {RUN_ID}" in out
    code, full, _ = tether(db, "show", RUN_ID, "--last", "0")
    seqs = [int(part.split("@")[1]) for part in line.split(":", 1)[1].split(";")[0].split(",")]
    warnings = [
        int(row[:5]) for row in full.splitlines() if row[5:].split()[1:2] == ["health.warning"]
    ]
    assert len(warnings) == 15 and seqs == warnings[-12:]


def test_a_user_view_reads_back_a_bounded_amount(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    asyncio.run(build(db))
    flip_a_byte(db, 2)  # far behind what `--last 3` may read back (3 x 20 events)
    code, out, err = tether(db, "show", RUN_ID, "--view", "user", "--last", "3")
    assert code == 0, err
    assert "earlier events (--last 0 shows them all)" in out
