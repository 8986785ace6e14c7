"""`tether demo --incidents`: every defence fires once, and the run still ends with a
correct, cited report."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path

from typer.testing import CliRunner

from tether.cli import app
from tether.journal import SQLiteStore, read_events


def test_the_incidents_demo_exits_0_with_a_cited_report_and_every_health_event(
    tmp_path: Path,
) -> None:
    store = tmp_path / "t.db"
    out_dir = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        ["demo", "--incidents", "--yes", "--json", "--out", str(out_dir),
         "--store", f"sqlite:///{store}"],
    )  # fmt: skip
    assert result.exit_code == 0, result.stdout + result.stderr
    data = json.loads(result.stdout)
    assert data["status"] == "completed"
    report = (out_dir / data["run_id"] / "report.md").read_text()
    assert "## Open questions" in report  # the section the first attempt missed
    assert "[d21-cost-model]" in report and "- [d21-cost-model]" in report  # cited and listed

    async def events() -> list[dict[str, object]]:
        s = SQLiteStore(store)
        try:
            return [
                {"type": e.type, "seq": e.seq, **e.payload}
                for e in await read_events(s, data["run_id"])
            ]
        finally:
            await s.close()

    journal = asyncio.run(events())
    health = [e for e in journal if str(e["type"]).startswith("health.")]
    kinds = Counter(str(e["type"]) for e in health)
    assert kinds == {
        "health.monitor": 1, "health.inconsistent": 1, "health.breaker": 1,
        "health.guardrail": 1,
    }  # fmt: skip
    by_type = {e["type"]: e for e in health}
    assert by_type["health.breaker"]["state"] == "open"
    assert by_type["health.monitor"]["signal"] == "loop"
    assert "1.2 PB" in str(by_type["health.inconsistent"]["earlier_output"])
    assert "1.6 PB" in str(by_type["health.inconsistent"]["newer_output"])
    assert by_type["health.guardrail"]["problems"] == [
        "missing section 'Open questions'",
        "cites sources the run never read: d21-cost-model",
    ]
    # The refused attempt never ran; the second one was approved and published once.
    publishes = [e for e in journal if e["type"] in ("tool.completed", "tool.failed")
                 and e["name"] == "publish"]  # fmt: skip
    assert [e["type"] for e in publishes] == ["tool.failed", "tool.completed"]
    assert publishes[0]["error"] == "refused"
    # The broken tool was hidden once its breaker opened: called three times, never again.
    calls = [e for e in journal if e["type"] == "tool.requested"]
    assert sum(1 for e in calls if e["name"] == "citation_index") == 3

    shown = CliRunner().invoke(app, ["show", data["run_id"], "--store", f"sqlite:///{store}"])
    assert "health events: monitor @" in shown.stdout and "guardrail @" in shown.stdout


def test_incidents_cannot_be_submitted_to_a_worker(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["demo", "--incidents", "--submit", "--store", f"sqlite:///{tmp_path / 't.db'}"]
    )
    assert result.exit_code == 2 and "cannot be combined with --submit" in result.stderr
