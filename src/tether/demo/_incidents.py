"""`tether demo --incidents`: the research demo with every health defence put to work.

The same research plan, with four incidents along the way, each answered by a policy:

- the agent repeats a search that keeps returning the same results, until the
  degradation monitor tells it it is looping;
- a market-data feed returns different figures when asked again: the consistency policy
  records both and tells the agent which is newer and what changed;
- a citation index is down: three failures in a row open its circuit breaker, and the
  tool disappears from the agent's list instead of being hammered;
- the first publish attempt misses a section and cites a document the agent never read:
  the publication guardrail sends it back, the agent reads the source and writes the
  section, and the second attempt goes out.

The run still ends with a correct, cited report. The scripted model replays the plan by
turn, so every run is identical; the incidents come from the tools, not the script.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from ..agent import Agent, Limits
from ..events import Event
from ..models import Model, ModelRequest, ScriptedModel, Turn
from ..policies import (
    BeforeTool,
    CircuitBreaker,
    DegradationMonitor,
    Freshness,
    PublicationGuardrail,
    SameCallDifferentData,
    TruncatedAnswers,
    Verdict,
)
from ..policies._base import CONTINUE
from ..tools import Tool, ToolContext, tool
from ._agent import DEMO_INSTRUCTIONS, demo_plan, demo_tools
from ._workspace import Workspace

__all__ = ["incidents_agent", "incidents_plan", "incidents_policy", "incidents_task"]

FEED = {
    "ferrogel cartridge shipments 2025": [
        "Ferrogel cartridge shipments, 2025: 1.2 PB (preliminary; Q4 estimated)",
        "Ferrogel cartridge shipments, 2025: 1.6 PB (revised with Q4 actuals)",
    ]
}
COST_SENTENCE = (
    " At archive scale it still costs several times more than tape per TB-year, with parity "
    "not expected before 2031 [d21-cost-model]."
)


def _step(thought: str, tool_name: str, **args: Any) -> dict[str, Any]:
    return {"thought": thought, "tool": tool_name, "args": args}


@cache
def incidents_plan() -> list[dict[str, Any]]:
    """The research plan with the incidents spliced in (see the module docstring)."""
    base = demo_plan()["steps"]
    query = base[0]["args"]["query"]
    repeat = [
        _step("Search again to make sure nothing was missed.", "search", query=query),
        _step("One more search with the same words, just in case.", "search", query=query),
    ]
    metric = next(iter(FEED))
    feed = [
        _step("Check current shipment volumes in the market feed.", "market_feed", metric=metric),
        _step("Query the feed again to confirm the figure.", "market_feed", metric=metric),
    ]
    index = [
        _step("Check who cites the 2025 benchmark in the citation index.", "citation_index",
              doc_id="d18-northmere-benchmark-2025"),
        _step("The index did not answer; try again.", "citation_index",
              doc_id="d18-northmere-benchmark-2025"),
        _step("Try the citation index once more.", "citation_index",
              doc_id="d18-northmere-benchmark-2025"),
    ]  # fmt: skip
    drafts = [dict(s) for s in base[41:45]]
    summary = dict(drafts[0]["args"])
    summary["text"] = summary["text"].rstrip() + COST_SENTENCE
    drafts[0] = {**drafts[0], "args": summary}
    publish = base[46]
    fix = [
        _step("The guardrail is right: read the cost model before citing it.", "read",
              doc_id="d21-cost-model"),
        _step("Note the cost comparison for the summary.", "note",
              fact="At 2027 prices a 180 K gel-only archive costs about $18 per TB-year "
                   "against about $2.50 for tape, with no parity before 2031.",
              source="d21-cost-model"),
        base[45],
        {**publish, "thought": "Every section is drafted and every source read: publish."},
    ]  # fmt: skip
    return [
        base[0], *repeat, *base[1:17], *feed, *index, *base[17:41], *drafts,
        {**publish, "thought": "The sections look done; publish the report."}, *fix,
    ]  # fmt: skip


def incidents_policy(request: ModelRequest) -> Turn:
    """Replay the incidents plan, one step per turn, whatever each step returned."""
    steps = incidents_plan()
    turn = sum(1 for m in request.messages if m.role == "assistant")
    if not request.tools:
        return Turn(text=f"Stopped after {turn} of {len(steps)} steps; the report was not "
                         "published. Notes and drafts are in the workspace.")  # fmt: skip
    if turn >= len(steps):
        final = steps[-1]["args"]
        return Turn(
            text=f"Published “{final['title']}” with {len(final['sections'])} sections: "
            + ", ".join(final["sections"])
            + ". The report is in report.md."
        )
    step = steps[turn]
    return Turn(text=step["thought"], calls=((step["tool"], step["args"]),))


def incident_tools(out: Path) -> list[Tool]:
    """The two tools that misbehave: a feed that revises itself and an index that is down."""
    ws = Workspace(out)

    @tool(read_only=True, idempotent=True, fresh_for_s=600, timeout_s=10)
    def market_feed(metric: str, ctx: ToolContext) -> str:
        """Current market figures for a metric (the feed revises itself as data arrives).

        Args:
            metric: the metric, e.g. "ferrogel cartridge shipments 2025"
        """
        versions = FEED.get(metric)
        if versions is None:
            return f"no data for {metric!r}; known metrics: {', '.join(FEED)}"
        effect, _ = ws.apply(ctx.idempotency_key, "feed", {"metric": metric})
        asked = [e["key"] for e in ws.of("feed") if e["metric"] == metric]
        return versions[min(asked.index(effect["key"]), len(versions) - 1)]

    @tool(read_only=True, idempotent=True, timeout_s=5)
    def citation_index(doc_id: str) -> str:
        """Which documents cite a given document (an external service).

        Args:
            doc_id: the document id
        """
        raise ConnectionError("citation index unreachable (HTTP 503)")

    return [market_feed, citation_index]


class _ReportGuardrail(PublicationGuardrail):
    """The guardrail on what a publish call would write: the drafted sections it names.

    The drafts are read from the run's journal (its completed `draft` calls), not from
    the workspace: the journal is what a replay reproduces (it runs no tool, so its
    workspace stays empty), and a publish is rare enough to read the journal for."""

    async def before_tool(self, call: BeforeTool) -> Verdict:
        if call.tool.name != self.publish_tool:
            return CONTINUE
        drafts = _drafts(await call.history()) if call.history is not None else {}
        sections = [s for s in call.arguments.get("sections", []) if isinstance(s, str)]
        parts = [f"# {call.arguments.get('title', '')}"]
        parts += [f"## {s}\n\n{drafts[s]}" for s in sections if s in drafts]
        text = "\n\n".join(parts)
        return self.verdict(
            await self.problems(text, call.history, call.now), action="refuse", where=call.tool.name
        )


def _drafts(events: list[Event]) -> dict[str, str]:
    """Section → text of the run's completed `draft` calls (a rewrite replaces)."""
    asked: dict[tuple[str | None, str], dict[str, Any]] = {}
    drafts: dict[str, str] = {}
    for e in events:
        p = e.payload
        if e.type == "tool.requested" and p.get("name") == "draft":
            try:
                args = json.loads(p.get("arguments") or "{}")
            except ValueError:
                continue
            if isinstance(args, dict):
                asked[(e.correlation_id, p["call_id"])] = args
        elif e.type == "tool.completed":
            args = asked.pop((e.correlation_id, p.get("call_id", "")), {})
            if isinstance(args.get("section"), str) and isinstance(args.get("text"), str):
                drafts[args["section"]] = args["text"]
    return drafts


def incidents_agent(out: str | Path = "tether-demo", model: Model | None = None) -> Agent:
    """The incidents demo; `out` is where report.md and its workspace go."""
    folder = Path(out).resolve()
    sections = incidents_plan()[-1]["args"]["sections"]
    guardrail = _ReportGuardrail(
        required_sections=sections,
        source_tools={"read": "doc_id"},
        citations=r"\[(d\d\d-[a-z0-9-]+)\]",
        require_citations=True,
        publish_tool="publish",
    )
    return Agent(
        name="research-incidents",
        version="1",
        instructions=DEMO_INSTRUCTIONS,
        tools=[*demo_tools(folder, check_citations=False), *incident_tools(folder)],
        model=model or ScriptedModel(incidents_policy, name="scripted"),
        limits=Limits(max_steps=90, max_cost_usd=1.00, max_time_s=1800),
        max_output_tokens=1_500,
        policies=[
            TruncatedAnswers(),
            CircuitBreaker(failures=3, backoff_s=600),
            SameCallDifferentData(),
            Freshness(),
            DegradationMonitor(),
            guardrail,
        ],
    )


def incidents_task() -> str:
    """The task: the same research question as the plain demo."""
    return str(demo_plan()["task"])
