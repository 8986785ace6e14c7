"""`tether show`, `why`, `audit` and `export` as a user drives them."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tether.cli import app
from tether.events import GENESIS_HASH, decode_event
from tether.journal import SQLiteStore

runner = CliRunner()


def tether(*args: str, store: Path) -> tuple[int, str, str]:
    result = runner.invoke(app, [*args, "--store", f"sqlite:///{store}"])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, list[dict[str, object]]]:
    folder = tmp_path_factory.mktemp("cli")
    store = folder / "t.db"
    code, out, _ = tether("demo", "--yes", "--json", "--out", str(folder / "out"), store=store)
    assert code == 0
    run_id = json.loads(out)["run_id"]
    _, out, _ = tether("show", run_id, "--json", "--view", "audit", store=store)
    return store, run_id, json.loads(out)["events"]


def find(events: list[dict[str, object]], kind: str, name: str | None = None) -> dict[str, object]:
    return [
        e
        for e in events
        if e["type"] == kind and (name is None or e["payload"].get("name") == name)  # type: ignore[union-attr]
    ][-1]


def test_why_prints_the_chain_oldest_first(demo: tuple[Path, str, list[dict[str, object]]]) -> None:
    store, _, events = demo
    publish = find(events, "tool.completed", "publish")
    code, out, _ = tether("why", str(publish["id"]), "--json", store=store)
    assert code == 0
    chain = json.loads(out)["chain"]
    assert [s["seq"] for s in chain] == sorted(s["seq"] for s in chain)
    for step in chain:
        assert {"seq", "type", "visibility", "correlation_id", "cause", "payload"} <= set(step)
    assert chain[0]["trigger"] and chain[-1]["id"] == publish["id"]
    assert "approval.resolved" in [s["type"] for s in chain]
    code, out, _ = tether("why", str(publish["id"]), store=store)
    assert code == 0
    assert "trigger" in out and "◀ asked" in out and "context:" in out
    assert "approval.resolved" in out and "cycle 47" in out


def test_why_takes_an_approval_id_for_the_call_it_gated(
    demo: tuple[Path, str, list[dict[str, object]]],
) -> None:
    store, _, events = demo
    request = find(events, "approval.requested")
    code, out, _ = tether("why", str(request["payload"]["request_id"]), "--json", store=store)  # type: ignore[index]
    assert code == 0
    assert json.loads(out)["chain"][-1]["type"] == "tool.requested"


def test_why_in_the_user_view_shows_only_visible_steps(
    demo: tuple[Path, str, list[dict[str, object]]],
) -> None:
    store, _, events = demo
    done = find(events, "run.completed")
    code, out, _ = tether("why", str(done["id"]), "--view", "user", "--json", store=store)
    data = json.loads(out)
    assert code == 0 and {s["visibility"] for s in data["chain"]} == {"visible"}
    assert data["hidden_steps"] > 0


def test_audit_searches_by_tool_actor_type_and_time(
    demo: tuple[Path, str, list[dict[str, object]]],
) -> None:
    store, run_id, events = demo
    code, out, _ = tether("audit", "--tool", "publish", "--json", store=store)
    found = json.loads(out)["events"]
    assert code == 0 and {e["type"] for e in found} == {
        "tool.requested", "approval.requested", "tool.completed",
    }  # fmt: skip
    code, out, _ = tether("audit", "--actor", "cli:*", "--type", "approval.resolved", store=store)
    assert code == 0 and "approval.resolved" in out and "cli:--yes" in out
    code, out, _ = tether(
        "audit", "--since", "1h", "--run", run_id, "--limit", "1000", "--json", store=store
    )
    assert code == 0 and len(json.loads(out)["events"]) == len(events) - 1  # not the system prompt
    code, out, _ = tether("audit", "--until", "2000-01-01", store=store)
    assert code == 0 and "no events match" in out
    code, out, _ = tether("audit", "--correlation", f"{run_id}/c1", "--limit", "2", store=store)
    assert code == 0 and "more events match" in out


def test_export_writes_one_event_per_line_and_audit_lines_verify(
    demo: tuple[Path, str, list[dict[str, object]]], tmp_path: Path
) -> None:
    store, run_id, events = demo
    code, out, _ = tether("export", run_id, "--view", "audit", store=store)
    assert code == 0
    lines = out.encode().splitlines()
    assert len(lines) == len(events)
    prev = GENESIS_HASH
    for line in lines:
        event = decode_event(line)  # checksum and canonical bytes verified
        assert event.follows(prev)  # the chain link (a prefix of it in v3 envelopes)
        prev = event.checksum
    code, out, _ = tether("export", run_id, "--view", "user", store=store)
    users = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and {e["visibility"] for e in users} == {"visible"}
    assert all("checksum" not in e for e in users)
    target = tmp_path / "run.jsonl"
    code, _, err = tether("export", run_id, "--out", str(target), store=store)
    assert code == 0 and "wrote" in err
    operator = target.read_text().splitlines()
    assert len(operator) == len(events) - 1


def test_show_user_view_is_a_transcript(demo: tuple[Path, str, list[dict[str, object]]]) -> None:
    store, run_id, _ = demo
    code, out, _ = tether("show", run_id, "--view", "user", store=store)
    assert code == 0
    assert "task" in out and "agent" in out and "approval needed" in out
    assert "tool.completed" not in out and "model.requested" not in out
    code, out, _ = tether("show", run_id, "--view", "audit", store=store)
    assert code == 0 and "message.system" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["why", "nonsense"], "not an event id"),
        (["why", "run_nope:3"], "no run 'run_nope'"),
        (["why", "x:1", "--view", "boss"], "unknown view 'boss'"),
        (["audit", "--since", "yesterday"], "--since 'yesterday' is not a time"),
        (["audit", "--type", "tool.exploded"], "unknown event type"),
        (["audit", "--run", "run_nope"], "no run 'run_nope'"),
        (["audit", "--limit", "0"], "--limit must be 1 or more"),
        (["export", "run_nope"], "no run 'run_nope'"),
        (["export", "x", "--view", "boss"], "unknown view 'boss'"),
        (["show", "x", "--view", "boss"], "unknown view 'boss'"),
    ],
)
def test_mistakes_are_one_line_errors_with_exit_2(
    tmp_path: Path, args: list[str], message: str
) -> None:
    asyncio.run(SQLiteStore(tmp_path / "empty.db").close())  # readers never create a store
    code, out, err = tether(*args, store=tmp_path / "empty.db")
    assert code == 2, (out, err)
    assert message in err and "Traceback" not in err + out
    assert len(err.strip().splitlines()) == 1


def test_why_of_a_missing_event_is_exit_2(demo: tuple[Path, str, list[dict[str, object]]]) -> None:
    store, run_id, _ = demo
    code, _, err = tether("why", f"{run_id}:99999", store=store)
    assert code == 2 and "no event" in err and len(err.strip().splitlines()) == 1


def test_every_audit_command_has_help() -> None:
    for command in ("show", "why", "audit", "export"):
        result = runner.invoke(app, [command, "--help"])
        assert result.exit_code == 0 and "Usage" in result.stdout, command
        assert "--view" in result.stdout


def test_the_timeline_says_what_a_model_call_reserved_and_spent_in_both_layouts() -> None:
    from tether.cli._audit import event_line

    def view(kind: str, payload: dict[str, object], cost: float | None = None) -> dict[str, object]:
        usage = None if cost is None else {"input_tokens": 1, "output_tokens": 1, "cost_usd": cost}
        return {"type": kind, "payload": payload, "usage": usage, "actor": "runtime"}

    request = {"model": "m", "context_messages": 3, "context_tokens": 40, "wrap_up": False}
    held = {"reservation_id": "rsv_1", "estimate_usd": 0.0125, "priced": True}
    assert event_line(view("model.requested", {**request, "budget": held})) == (
        "m · 3 messages, ~40 tokens · $0.0125 reserved"
    )
    assert event_line(view("model.requested", request)) == "m · 3 messages, ~40 tokens"
    answer = {"content": "done", "tool_calls": []}
    settled = {**answer, "budget": {"reservation_id": "rsv_1"}}
    assert event_line(view("model.completed", settled, cost=0.0031)) == "done · $0.0031 spent"
    assert event_line(view("model.completed", answer, cost=0.0031)) == "done"
    # Journals of before: the separate events read as they always did.
    old = {"reservation_id": "rsv_1", "kind": "model", "estimate_usd": 0.0125}
    assert event_line(view("budget.reserved", old)) == "$0.0125 reserved for the model call"
    spent = {"reservation_id": "rsv_1", "estimate_usd": 0.0125, "actual_usd": 0.0031}
    assert event_line(view("budget.settled", spent)) == "$0.0031 spent ($0.0125 reserved)"
