"""A request's messages view the context cache's lists: a request never changes afterwards.

The cache extends its lists as the run goes on and replaces them on a compaction or a mark;
a view built earlier must still read the context its request was built from.
"""

from __future__ import annotations

from itertools import pairwise

from tether import Agent, Limits, Runtime, tool
from tether.journal import MemoryStore
from tether.loop._context import ContextCache
from tether.models import Message, MessageView, ModelRequest, ScriptedModel
from tether.models.scripted import Turn, call

FACT = "the archive key is K-7731"


@tool(idempotent=True)
async def page(n: int) -> str:
    """One page of about 600 characters."""
    return f"page {n}: " + "lorem ipsum " * 50


def summary(request: ModelRequest) -> str:
    return "Open tasks:\n- count the remaining pages\nDone so far:\n- read some pages"


async def test_requests_keep_their_context_through_pins_parallel_calls_and_compactions() -> None:
    kept: list[tuple[ModelRequest, tuple[Message, ...]]] = []

    def script(request: ModelRequest) -> Turn | str:
        kept.append((request, tuple(request.messages)))
        n = len(kept)
        if n == 80:
            return "done"
        if n == 3:
            return call("pin_fact", {"fact": FACT, "source": "page 1"})
        if n % 5 == 0:  # results arrive out of call order: the tail is re-sorted
            return Turn(calls=(("page", {"n": n}), ("page", {"n": n + 1})))
        return call("page", {"n": n})

    model = ScriptedModel(script, context_window=6_000, summaries=summary)
    agent = Agent(
        name="long",
        instructions="You survey an archive.",
        tools=[page],
        model=model,
        limits=Limits(max_steps=200),
        max_output_tokens=200,
        wrap_up_output_tokens=100,
    )
    store = MemoryStore()
    result = await Runtime(store, ledger=False).start(agent, "count the pages")
    assert result.status == "completed", result
    assert any(len(b) < len(a) for (_, a), (_, b) in pairwise(kept))
    assert any(any(FACT in m.content for m in snapshot) for _, snapshot in kept)
    for request, snapshot in kept:
        assert isinstance(request.messages, MessageView)
        assert request.messages == snapshot


async def test_a_mark_shows_in_later_builds_only() -> None:
    model = ScriptedModel([call("page", {"n": n}) for n in range(3)] + ["done"])
    agent = Agent(name="a", instructions="Read.", tools=[page], model=model)
    store = MemoryStore()
    result = await Runtime(store, ledger=False).start(agent, "go")
    state = await Runtime(store, ledger=False).get(result.run_id)
    cache = ContextCache(store, result.run_id)
    await cache.load(state)
    before = cache.build(state)
    snapshot = tuple(before)
    for seq in state.context:
        if cache.messages[seq].role in ("tool", "assistant"):
            cache.mark(seq, "(stale)")
    after = cache.build(state)
    assert before == snapshot
    marked = [m for m in after if m.content.endswith("\n(stale)")]
    assert len(marked) == sum(1 for m in snapshot if m.role in ("tool", "assistant"))
    assert [m.role for m in after] == [m.role for m in snapshot]
