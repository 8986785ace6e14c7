"""Events in words, for the CLI's run readers and the web console: one line per event,
the user view's transcript, and the pins and artifacts a run's events add up to.

Every function takes event views (`tether.views`), payloads already filtered and redacted
for their audience; nothing here reads a store.
"""

from __future__ import annotations

import json
from typing import Any

from rich.markup import escape


def _one_line(text: Any, limit: int = 110) -> str:
    flat = " ".join(str(text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def event_line(view: dict[str, Any]) -> str:
    """One line describing an event view (payload already filtered and redacted)."""
    p = view["payload"]
    kind = view["type"]
    if kind == "model.completed":
        calls = ", ".join(
            f"{c.get('name')}({_one_line(c.get('arguments'), 60)})"
            for c in p.get("tool_calls") or []
            if isinstance(c, dict)
        )
        text = _one_line(p.get("content"), 100)
        said = text + (" → " if calls and text else "") + calls
        if isinstance(p.get("budget"), dict):  # settled with it (budget/_journaled.py)
            said += f" · {_money((view.get('usage') or {}).get('cost_usd'))} spent"
        return said
    if kind in ("tool.completed", "tool.failed", "tool.unknown"):
        output = str(p.get("output") or "").strip()
        return f"{p.get('name')}: {_one_line(output.splitlines()[0] if output else '')}"
    if kind == "tool.requested":
        return f"{p.get('name')} {_one_line(p.get('arguments'), 100)}"
    if kind in ("message.user", "message.system", "context.compacted"):
        return _one_line(p.get("content") if "content" in p else p.get("text"))
    if kind in ("run.completed", "run.stopped", "run.failed", "run.cancelled"):
        return _one_line(p.get("reason")) + (" · partial" if p.get("partial") else "")
    if kind == "run.created":
        return f"{p.get('agent')} · {_one_line(p.get('task'), 90)}"
    if kind == "approval.requested":
        return f"{p.get('tool')} {_one_line(json.dumps(p.get('arguments')), 80)} ({p.get('kind')})"
    if kind == "approval.resolved":
        return f"{p.get('decision')} by {view['actor']}" + (
            f": {_one_line(p.get('comment'), 80)}" if p.get("comment") else ""
        )
    line = _short(kind, p)
    return line if line is not None else _one_line(json.dumps(p, sort_keys=True))


def _money(value: Any) -> str:
    return f"${value:.4f}" if isinstance(value, int | float) else "$?"


def _short(kind: str, p: dict[str, Any]) -> str | None:
    """Bookkeeping events in words; None for the JSON fallback."""
    if kind == "cycle.started" and "cycle" in p:
        return f"cycle {p['cycle']}"
    if kind == "model.requested":
        text = f"{p.get('model')} · {p.get('context_messages')} messages"
        if isinstance(p.get("context_tokens"), int):
            text += f", ~{p['context_tokens']:,} tokens"
        if isinstance(p.get("budget"), dict):  # its call's hold (budget/_journaled.py)
            text += f" · {_money(p['budget'].get('estimate_usd'))} reserved"
        return text + (" · wrap-up" if p.get("wrap_up") else "")
    if kind == "model.failed":
        return f"{p.get('kind')}: {_one_line(p.get('error'), 90)}"
    if kind == "tool.started":
        return f"{p.get('call_id')} started"
    if kind == "budget.reserved":
        return f"{_money(p.get('estimate_usd'))} reserved for the {p.get('kind')} call"
    if kind == "budget.settled":
        return f"{_money(p.get('actual_usd'))} spent ({_money(p.get('estimate_usd'))} reserved)"
    if kind in ("budget.denied", "limit.reached", "limit.warning"):
        return _one_line(p.get("reason") or p.get("message"), 110) or None
    if kind == "health.warning":
        return _one_line(p.get("message"), 110) or None
    if kind.startswith("health."):
        action = f" → {p['action']}" if p.get("action") not in (None, "continue") else ""
        return f"⚠ {_one_line(p.get('message'), 110)}{action}" if p.get("message") else None
    if kind == "run.resumed":
        return f"by {p.get('worker')} (lease epoch {p.get('epoch')})"
    return None


def _transcript_line(view: dict[str, Any]) -> str | None:
    """The user view: a conversation, not a timeline."""
    p = view["payload"]
    kind = view["type"]
    if kind == "message.user":
        return f"[bold]task[/bold]   {escape(str(p.get('content') or p.get('text') or ''))}"
    if kind == "model.completed":
        return f"[bold]agent[/bold]  {escape(str(p.get('content') or ''))}"
    if kind == "approval.requested":
        if p.get("kind") == "question":
            return f"[cyan]question[/cyan] {escape(str(p.get('question') or ''))}"
        args = json.dumps(p.get("arguments"), ensure_ascii=False)
        reason = f" — {escape(_one_line(p.get('reason'), 200))}" if p.get("reason") else ""
        return f"[cyan]approval needed[/cyan] {escape(str(p.get('tool')))} {escape(args)}{reason}"
    if kind == "approval.resolved":
        comment = f": {escape(str(p.get('comment')))}" if p.get("comment") else ""
        return f"[cyan]{escape(str(p.get('decision')))}[/cyan] by {escape(view['actor'])}{comment}"
    if kind in ("run.completed", "run.stopped", "run.failed", "run.cancelled"):
        status = kind.removeprefix("run.")
        reason = f": {escape(str(p.get('reason')))}" if p.get("reason") else ""
        return f"[bold]— {status}[/bold]{reason}"
    if kind == "run.created":
        return None
    return f"[dim]{escape(kind)}[/dim] {escape(event_line(view))}"


def artifacts_of(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tool outputs longer than the context showed (`read_artifact` reads them on)."""
    found = []
    for e in events:
        p = e["payload"]
        if e["type"] not in _RESULTS or not isinstance(p.get("output"), str):
            continue
        limit = p.get("max_chars", 8_000)
        if isinstance(limit, int) and len(p["output"]) > limit:
            found.append(
                {
                    "handle": e.get("id") or f"{e.get('run_id')}:{e['seq']}",
                    "tool": p.get("name"),
                    "chars": len(p["output"]),
                    "shown": limit,
                    "checksum": e.get("checksum"),
                }
            )
    return found


_RESULTS = ("tool.completed", "tool.failed", "tool.unknown")


def pins_of(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The facts pinned at the end of these events (pins, minus unpins)."""
    pins: dict[str, dict[str, Any]] = {}
    for e in events:
        p = e["payload"]
        if e["type"] == "fact.pinned" and "id" in p:
            pins[p["id"]] = {
                "id": p["id"],
                "text": p.get("text", ""),
                "source": p.get("source", ""),
                "by": e["actor"],
                "seq": e["seq"],
            }
        elif e["type"] == "fact.unpinned":
            pins.pop(p.get("id"), None)
    return list(pins.values())
