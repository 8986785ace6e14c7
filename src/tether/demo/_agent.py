"""The demo agent: research synthesis over the shipped corpus, with a cited report.

Its write tools (note, draft, publish) take the call's idempotency key and apply their
effect once per key, so they can be re-run safely when a crash hides their outcome.
The scripted policy replays `plan.json` and needs no key or network.
"""

from __future__ import annotations

import json
import re
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from ..agent import Agent, Limits
from ..errors import ToolRetry
from ..models import Model, ModelRequest, ScriptedModel, Turn
from ..tools import Tool, ToolContext, tool
from ._corpus import corpus
from ._corpus import search as search_corpus
from ._workspace import Workspace

__all__ = ["DEMO_INSTRUCTIONS", "demo_agent", "demo_plan", "demo_tools", "scripted_policy"]

DEMO_INSTRUCTIONS = """\
You are a careful research analyst. Your mission: produce a cited research report from
the document collection you can search and read.

How to work:
- Search the collection, read the documents that matter, and note each important fact
  with the id of the document it came from.
- Sources conflict and some are outdated, retracted or promotional. Prefer newer,
  independent and corrected sources; say which sources you trust and why.
- Draft each section of the report with the draft tool, citing documents as [doc-id].
  Cite only documents you have read.
- When every section is drafted, publish the report with its title and the sections in
  order. Publishing is final.
- Every tool result ends with your remaining runway. When it warns you, wrap up.
"""

CITATION = re.compile(r"\[(d\d\d-[a-z0-9-]+)\]")
PLACEHOLDERS = re.compile(r"\b(TODO|TBD|XXX|FIXME|lorem ipsum)\b|\[citation needed\]", re.I)


@cache
def demo_plan() -> dict[str, Any]:
    text = (resources.files("tether.demo") / "plan.json").read_text("utf-8")
    plan: dict[str, Any] = json.loads(text)
    return plan


def _read_docs(ws: Workspace) -> set[str]:
    return {e["doc_id"] for e in ws.of("read")}


def _unread_citations(text: str, read: set[str]) -> list[str]:
    return sorted({c for c in CITATION.findall(text) if c not in read})


def demo_tools(out: Path, *, check_citations: bool = True) -> list[Tool]:
    """The demo's tools over the workspace in `out`. `check_citations=False` lets a draft
    cite unread documents (the incidents demo leaves that to its publication guardrail)."""
    ws = Workspace(out)
    docs = corpus()

    @tool(idempotent=True, timeout_s=10)
    def search(query: str, limit: int = 5) -> str:
        """Full-text search over the document collection.

        Args:
            query: words to look for (any of them may match)
            limit: how many documents to return, at most 10
        """
        hits = search_corpus(query, max(1, min(limit, 10)))
        if not hits:
            return f"no documents match {query!r}"
        return "\n".join(
            f"- {d.id} | {d.title} ({d.kind}, {d.date}): {snippet}" for d, snippet in hits
        )

    @tool(idempotent=True, timeout_s=10)
    def read(doc_id: str, ctx: ToolContext) -> str:
        """Read one document in full.

        Args:
            doc_id: the document id shown by search, like d07-some-title
        """
        doc = docs.get(doc_id)
        if doc is None:
            raise ToolRetry(f"there is no document {doc_id!r}; use an id from search results")
        ws.apply(ctx.idempotency_key, "read", {"doc_id": doc_id})
        return doc.render()

    @tool(idempotent=True, timeout_s=10)
    def note(fact: str, source: str, ctx: ToolContext) -> str:
        """Record one fact, with the id of the document it came from.

        Args:
            fact: the fact, in one sentence
            source: id of a document you have read
        """
        if source not in _read_docs(ws):
            raise ToolRetry(f"you have not read {source!r}; read it before citing it")
        ws.apply(ctx.idempotency_key, "note", {"fact": fact, "source": source})
        return f"noted (fact {len(ws.of('note'))})"

    @tool(idempotent=True, timeout_s=10)
    def draft(section: str, text: str, ctx: ToolContext) -> str:
        """Write (or rewrite) one section of the report.

        Args:
            section: the section title
            text: the section in Markdown, citing documents as [doc-id]
        """
        unread = _unread_citations(text, _read_docs(ws)) if check_citations else []
        if unread:
            raise ToolRetry(f"the draft cites documents you have not read: {', '.join(unread)}")
        ws.apply(ctx.idempotency_key, "draft", {"section": section, "text": text})
        cites = len(set(CITATION.findall(text)))
        return f"drafted {section!r} ({len(text.split())} words, {cites} sources cited)"

    @tool(idempotent=True, timeout_s=10, requires_approval=True)
    def publish(title: str, sections: list[str], ctx: ToolContext) -> str:
        """Publish the report: the title and the drafted sections, in order. Final.

        Args:
            title: the report's title
            sections: titles of drafted sections, in the order they should appear
        """
        drafts: dict[str, str] = {}
        for effect in ws.of("draft"):
            drafts[effect["section"]] = effect["text"]
        problems = [f"section {s!r} has not been drafted" for s in sections if s not in drafts]
        if not sections:
            problems.append("no sections were given")
        body = "\n\n".join(drafts.get(s, "") for s in sections)
        unread = _unread_citations(body, _read_docs(ws))
        if unread:
            problems.append(f"citations of unread documents: {', '.join(unread)}")
        if PLACEHOLDERS.search(body):
            problems.append("the report contains placeholder text")
        if not CITATION.search(body):
            problems.append("the report cites no sources")
        if problems:
            raise ToolRetry("not published: " + "; ".join(problems))
        cited = sorted(set(CITATION.findall(body)))
        parts = [f"# {title}"]
        parts += [f"## {s}\n\n{drafts[s].strip()}" for s in sections]
        sources = [f"- [{d}] {docs[d].title}. {docs[d].author}, {docs[d].kind}, {docs[d].date}."
                   for d in cited]  # fmt: skip
        parts.append("## Sources\n\n" + "\n".join(sources))
        report = "\n\n".join(parts) + "\n"
        ws.apply(ctx.idempotency_key, "publish", {"title": title, "sections": sections})
        path = ws.write_report(report)
        return f"published {path.name}: {len(sections)} sections, {len(cited)} sources"

    return [search, read, note, draft, publish]


def scripted_policy(request: ModelRequest) -> Turn:
    """Replay the research plan: the next step is the count of successful tool results.

    A failed call (an error result) is simply tried again on the next turn.
    """
    plan = demo_plan()
    steps = plan["steps"]
    done = sum(
        1 for m in request.messages if m.role == "tool" and not m.content.startswith("error:")
    )
    if not request.tools:
        drafted = [
            json.loads(c.arguments).get("section", "?")
            for m in request.messages
            if m.role == "assistant"
            for c in m.tool_calls
            if c.name == "draft"
        ]
        return Turn(
            text=(
                f"I completed {done} of {len(steps)} research steps before the limit. "
                f"Sections drafted: {', '.join(drafted) or 'none'}. The report was not "
                "published; the notes and drafts are in the workspace."
            )
        )
    if done >= len(steps):
        final = steps[-1]["args"]
        return Turn(
            text=f"Published “{final['title']}” with {len(final['sections'])} sections: "
            + ", ".join(final["sections"])
            + ". The report is in report.md."
        )
    step = steps[done]
    return Turn(text=step["thought"], calls=((step["tool"], step["args"]),))


def demo_agent(out: str | Path = "tether-demo", model: Model | None = None) -> Agent:
    """The research-synthesis demo; `out` is where report.md and its workspace go."""
    folder = Path(out).resolve()
    return Agent(
        name="research-demo",
        version="1",
        instructions=DEMO_INSTRUCTIONS,
        tools=demo_tools(folder),
        model=model or ScriptedModel(scripted_policy, name="scripted"),
        limits=Limits(max_steps=80, max_cost_usd=1.00, max_time_s=1800),
        max_output_tokens=1_500,
    )
