"""Publication guardrails: nothing goes out until it passes its checks.

Before a final answer, or a call of a designated publish tool, the draft is checked:
required sections, no placeholders (TODO, TBD, lorem ipsum, "[citation needed]"), every
citation resolves to a source the run actually read (its reads are looked up in the
journal), and any custom checks. A failing draft goes back to the agent with the reasons
(a final answer is kept in the journal for operators, hidden from end users; a publish
call is refused without running), at most `max_rejections` times; past that the run stops
with a labelled partial answer and never publishes. Each rejection is a
`health.guardrail` event, so the bound holds across crashes and resumes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

from ..errors import UsageError
from ..events import Event
from ._base import CONTINUE, BeforeAnswer, BeforeTool, Health, Policy, Verdict

__all__ = ["Check", "PublicationGuardrail"]

Check = Callable[[str], str | None]
"""A custom check: the draft's text in, a problem (or None) out."""

PLACEHOLDERS = re.compile(
    r"\b(?:TODO|TBD|FIXME|XXX)\b|lorem ipsum|\[citation needed\]", re.IGNORECASE
)
DEFAULT_CITATION = r"\[([A-Za-z0-9][\w.:/-]*)\]"
"""`[doc-id]`: the citation style the built-in demo and most prompts use."""


def _heading(section: str) -> re.Pattern[str]:
    """A section is present as a Markdown heading or a line of its own (`Name:` too)."""
    name = re.escape(section.strip())
    return re.compile(rf"^\s*(?:#{{1,6}}\s*)?{name}\s*:?\s*$", re.IGNORECASE | re.MULTILINE)


class PublicationGuardrail(Policy):
    """Checks a draft before it is published; thresholds and checks are per agent."""

    name = "guardrail"
    window = 200
    observes = frozenset(
        {"health.guardrail", "tool.requested", "tool.completed", "tool.failed", "tool.unknown"}
    )

    def __init__(
        self,
        *,
        required_sections: Sequence[str] = (),
        placeholders: bool = True,
        citations: str | None = DEFAULT_CITATION,
        source_tools: Mapping[str, str] | None = None,
        require_citations: bool = False,
        checks: Sequence[Check] = (),
        publish_tool: str | None = None,
        text_of: Callable[[Mapping[str, Any]], str] | None = None,
        max_rejections: int = 3,
        require_fresh: bool = False,
    ) -> None:
        """`source_tools` maps each tool that reads a source to the argument naming it
        (`{"read": "doc_id"}`); a citation must name a source read by one of them.
        `text_of` turns a publish call's arguments into the text to check (default: the
        arguments' strings, joined). `require_fresh` refuses citations of sources whose
        read has outlived the reading tool's `fresh_for_s` (recorded on results by the
        `Freshness` policy, which must then be on too)."""
        if max_rejections < 0:
            raise UsageError("guardrail: max_rejections must be 0 or more")
        if source_tools and citations is None:
            raise UsageError("guardrail: source_tools needs a citations pattern")
        self.sections = tuple(required_sections)
        self.placeholders = placeholders
        self.citations = re.compile(citations) if citations else None
        self.source_tools = dict(source_tools or {})
        self.require_citations = require_citations
        self.checks = tuple(checks)
        self.publish_tool = publish_tool
        self.text_of = text_of or _strings
        self.max_rejections = max_rejections
        self.require_fresh = require_fresh
        self.read: set[str] = set()
        self.expires: dict[str, float] = {}
        """Source → when its latest read goes stale (sources read by a tool that declares
        `fresh_for_s`)."""
        self.open_reads: dict[str, str] = {}
        self.rejections = 0

    def for_run(self) -> PublicationGuardrail:
        # Custom checks and `text_of` may be closures over a workspace: share them.
        # The same class as this one, so a subclass keeps its overrides.
        fresh = type(self).__new__(type(self))
        fresh.__dict__.update(self.__dict__)
        fresh.read, fresh.open_reads, fresh.rejections = set(), {}, 0
        fresh.expires = {}
        return fresh

    def observe(self, event: Event) -> None:
        if event.type == "health.guardrail" and event.payload.get("action") in ("tell", "refuse"):
            self.rejections += 1
        else:
            self.note_read(event)

    def checkpoint(self) -> Any:
        return {"rejections": self.rejections}

    def restore(self, state: Any) -> None:
        self.rejections = int(state["rejections"])

    def note_read(self, event: Event) -> None:
        p = event.payload
        if event.type == "tool.requested" and p["name"] in self.source_tools:
            source = _argument(p.get("arguments", ""), self.source_tools[p["name"]])
            if source is not None:
                self.open_reads[p["call_id"]] = source
        elif event.type in ("tool.completed", "tool.failed", "tool.unknown"):
            source = self.open_reads.pop(p["call_id"], None)
            if source is not None and event.type == "tool.completed":
                self.read.add(source)
                fresh_for = p.get("fresh_for_s")
                if isinstance(fresh_for, int | float):
                    at = datetime.fromisoformat(event.ts).timestamp()
                    self.expires[source] = at + float(fresh_for)

    async def problems(
        self, text: str, history: Callable[[], Awaitable[list[Event]]] | None, now: float
    ) -> list[str]:
        found = [f"missing section {s!r}" for s in self.sections if not _heading(s).search(text)]
        if self.placeholders:
            marks = sorted({m.group(0) for m in PLACEHOLDERS.finditer(text)})
            if marks:
                found.append(f"placeholder text: {', '.join(marks)}")
        if self.citations is not None:
            cited = sorted(set(self.citations.findall(text)))
            if self.require_citations and not cited:
                found.append("no sources are cited")
            if self.source_tools:
                unread = [c for c in cited if c not in self.read]
                if unread and history is not None:
                    # Reads older than the policy's window: look them up in the journal.
                    for event in await history():
                        self.note_read(event)
                    unread = [c for c in cited if c not in self.read]
                if unread:
                    found.append(f"cites sources the run never read: {', '.join(unread)}")
                stale = [c for c in cited if self.require_fresh and self.expires.get(c, now) < now]
                if stale:
                    found.append(f"cites sources read too long ago (stale): {', '.join(stale)}")
        for check in self.checks:
            problem = check(text)
            if problem:
                found.append(problem)
        return found

    def verdict(
        self, problems: list[str], *, action: Literal["tell", "refuse"], where: str
    ) -> Verdict:
        if not problems:
            return CONTINUE
        reasons = "; ".join(problems)
        evidence = {"problems": problems, "where": where, "rejection": self.rejections + 1}
        if self.rejections >= self.max_rejections:
            message = (
                f"the draft failed the publication checks {self.rejections + 1} times "
                f"(last: {reasons}); it was not published"
            )
            return Verdict(
                action="stop", message=message, data={"limit": "guardrail"},
                health=Health(kind="guardrail", message=message, evidence=evidence),
            )  # fmt: skip
        told = (
            f"Not published: the draft failed its checks: {reasons}. Fix every point, "
            f"then try again ({self.max_rejections - self.rejections} attempt(s) left)."
        )
        health = Health(kind="guardrail", message=f"draft rejected: {reasons}", evidence=evidence)
        return Verdict(action=action, message=told, health=health)

    async def before_answer(self, draft: BeforeAnswer) -> Verdict:
        if self.publish_tool is not None:
            return CONTINUE  # the publish tool is what goes out; the answer only reports it
        return self.verdict(
            await self.problems(draft.answer, draft.history, draft.now),
            action="tell",
            where="answer",
        )

    async def before_tool(self, call: BeforeTool) -> Verdict:
        if self.publish_tool is None or call.tool.name != self.publish_tool:
            return CONTINUE
        text = self.text_of(call.arguments)
        return self.verdict(
            await self.problems(text, call.history, call.now), action="refuse", where=call.tool.name
        )


def _argument(raw: str, name: str) -> str | None:
    try:
        value = json.loads(raw) if raw.strip() else {}
    except ValueError:
        return None
    found = value.get(name) if isinstance(value, dict) else None
    return found if isinstance(found, str) else None


def _strings(arguments: Mapping[str, Any]) -> str:
    parts: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, str):
            parts.append(value)
        elif isinstance(value, Mapping):
            for item in value.values():
                walk(item)
        elif isinstance(value, Collection) and not isinstance(value, bytes):
            for item in value:
                walk(item)

    walk(arguments)
    return "\n".join(parts)
