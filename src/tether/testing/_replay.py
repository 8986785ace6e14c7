"""Replaying a recorded run: the code of today, fed the answers and results of then.

`replay(agent, path)` reads a journal exported with `tether export RUN --view audit`
(checksums and hash chain verified), creates the same run in a fresh memory store and
drives `agent` on it with a model that returns the recorded answers in order and tools
that return the recorded results by idempotency key (a tool source such as an MCP server
gives the tool list the recording journaled): no model, tool or server is called. A
recorded crash (a `run.resumed` that no pause and no outside input explains) is replayed
as a crash at the same position followed by a resume; what came from outside the loop
(approval decisions, new limits, an operator's pins) is applied where the recording has
it; a fork's copied history (up to its `run.forked`) is imported as it is. Then the two
journals are compared event by event (type, tool name, arguments, idempotency key,
decision, reason, error; a model answer's text and calls; the results of one turn's
parallel calls as a batch, since they are journaled as they finish) and the first
divergence is named. With `script=True` an agent's own `ScriptedModel` answers instead of
the recording (recorded model failures are still replayed), so a change to its script
shows.

What a replay cannot reproduce: limits stored in the original store (budget events are
not compared for that reason), an operator's pin made while the loop was running (it is
applied at the next pause instead, which shows as a divergence), and a policy that reads
the world a tool changed (a file it wrote) rather than the journal: no tool runs, so that
world stays as it is.
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
from collections import defaultdict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from .._clock import FakeClock
from ..agent import Agent, Limits
from ..approvals import parse_request_id, request_id_for, resolve_approval
from ..errors import (
    ApprovalNeeded,
    ContextOverflow,
    HumanInputRequired,
    ModelError,
    ModelUnavailable,
    SimulatedCrash,
    ToolRetry,
    UsageError,
)
from ..events import GENESIS_HASH, Event, EventDecodeError, decode_event
from ..journal import Lease, MemoryStore, RunSummary, Store, read_events, summary_of
from ..journal._wrapper import StoreWrapper
from ..loop import Runtime
from ..loop._sources import LISTING_NOTE
from ..models import (
    Message,
    Model,
    ModelRequest,
    ModelResponse,
    ModelUsage,
    ScriptedModel,
    ToolCall,
    ToolSpec,
)
from ..models._base import TextSink
from ..state import RunState, fold
from ..state._fold import apply
from ..tools import Tool, ToolSession, ToolSource

__all__ = ["Divergence", "ReplayError", "ReplayReport", "assert_replays", "load_journal", "replay"]

IGNORED = frozenset({"budget.reserved", "budget.settled", "budget.denied"})
"""Not compared: they depend on the store's budgets and on the environment, not on what
the agent did (a replay runs without the original store's limits). Nor is the `budget`
field of a model call's events (`project` never reads it): journals of before had the
call's hold as these separate events, today's carry it inside the call's own."""
IGNORED_PREFIXES = ("health.",)
"""Health events are the loop's observations (a new policy adds some to an old journal);
when one changes what the run does, the events that follow show it."""
COMPARED_FIELDS = ("name", "arguments", "idempotency_key", "decision", "reason", "error")
MODEL_FIELDS = ("content", "tool_calls")
_CTX = "_tether_replay_ctx"


class ReplayError(UsageError):
    """The file is not a journal that can be replayed (unreadable, damaged, not one run)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Divergence:
    """The first place where the replay did something other than the recording."""

    position: int
    """Index in the compared events (budget and health events are skipped)."""
    recorded_seq: int | None
    recorded: dict[str, Any] | None
    """What the recording has there (None: it had ended)."""
    now: dict[str, Any] | None
    """What the code did now (None: the replay ended there)."""

    def __str__(self) -> str:
        where = (
            f"recorded event {self.recorded_seq}" if self.recorded_seq else "the recording's end"
        )
        return f"first divergence at {where}: recorded {self.recorded}, now {self.now}"


@dataclass(frozen=True, kw_only=True, slots=True)
class ReplayReport:
    run_id: str
    recorded_events: int
    replayed_events: int
    recorded_status: str
    replayed_status: str
    divergence: Divergence | None

    @property
    def ok(self) -> bool:
        return self.divergence is None

    def to_json(self) -> dict[str, Any]:
        d = self.divergence
        return {
            "ok": self.ok, "run_id": self.run_id, "recorded_events": self.recorded_events,
            "replayed_events": self.replayed_events, "recorded_status": self.recorded_status,
            "replayed_status": self.replayed_status,
            "divergence": None if d is None else {
                "position": d.position, "recorded_seq": d.recorded_seq,
                "recorded": d.recorded, "now": d.now,
            },
        }  # fmt: skip


def load_journal(path: Path) -> list[Event]:
    """The events of an exported audit journal, verified (checksums, chain, one run)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ReplayError(f"cannot read {path}: {exc.strerror}") from None
    events: list[Event] = []
    for n, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            event = decode_event(line)
        except EventDecodeError as exc:
            raise ReplayError(
                f"{path} line {n} is not a stored event ({exc}); export the run with "
                "`tether export RUN --view audit`"
            ) from None
        prev = events[-1] if events else None
        if event.seq != (prev.seq + 1 if prev else 1) or not event.follows(
            prev.checksum if prev else GENESIS_HASH
        ):
            raise ReplayError(f"{path} line {n}: the hash chain is broken at seq {event.seq}")
        if prev is not None and event.run_id != prev.run_id:
            raise ReplayError(f"{path} line {n}: events of more than one run")
        events.append(event)
    if not events or events[0].type != "run.created":
        raise ReplayError(f"{path} holds no run (its first event must be run.created)")
    return events


def _epoch(ts: str) -> float:
    return datetime.fromisoformat(ts).timestamp()


class _Recorded:
    """What the recording answered, in the order it was asked."""

    def __init__(self, events: Sequence[Event]) -> None:
        by_seq = {e.seq: e for e in events}
        self.turns: deque[Event] = deque()
        self.summaries: deque[Event] = deque()
        self.results: dict[str, deque[Event]] = defaultdict(deque)
        self.questions: dict[str, str] = {}
        """Calls whose tool asked a human (`ask_human`), by key: the question."""
        self.asked: dict[str, str] = {}
        """Calls whose tool asked for approval (`ApprovalNeeded`), by key: the reason."""
        key_of_call: dict[tuple[str | None, str], str] = {}
        for e in events:
            cause = by_seq.get(_seq_of(e.causation_id))
            if e.type == "model.completed":
                self.turns.append(e)
            elif e.type == "summary.completed":
                self.summaries.append(e)
            elif e.type == "model.failed":
                summary = e.payload.get("purpose") == "summary"
                (self.summaries if summary else self.turns).append(e)
            elif e.type == "tool.requested":
                key_of_call[(e.correlation_id, e.payload["call_id"])] = e.payload["idempotency_key"]
            elif e.type in ("tool.completed", "tool.failed"):
                key = (
                    cause.payload["idempotency_key"]
                    if cause is not None and cause.type == "tool.requested"
                    else key_of_call.get((e.correlation_id, e.payload["call_id"]))
                )
                if key is not None:
                    self.results[key].append(e)
            elif e.type == "approval.requested" and e.payload.get("kind") == "question":
                call = by_seq.get(int(e.payload.get("call_seq") or 0))
                if call is not None and call.type == "tool.requested":
                    text = e.payload.get("question") or e.payload.get("reason") or ""
                    self.questions[call.payload["idempotency_key"]] = str(text)
            elif e.type == "approval.requested" and e.payload.get("by_tool"):
                call = by_seq.get(int(e.payload.get("call_seq") or 0))
                if call is not None and call.type == "tool.requested":
                    reason = str(e.payload.get("reason") or "")
                    self.asked[call.payload["idempotency_key"]] = reason


def _seq_of(event_id: str | None) -> int:
    if not event_id:
        return 0
    _, _, seq = event_id.rpartition(":")
    return int(seq) if seq.isdigit() else 0


class _ReplayModel:
    """Answers with the recorded model outcomes, in order; calls nothing. Window, output
    bound and token counts are the agent's own model's (counted locally), so context and
    budget decisions are taken as they were. With `script`, the agent's own scripted model
    answers instead (recorded failures still come back where they happened: they were
    the provider's, not the script's)."""

    def __init__(
        self,
        name: str,
        recorded: _Recorded,
        clock: FakeClock,
        counter: Model | None,
        *,
        script: ScriptedModel | None = None,
    ) -> None:
        self.name = name
        self.recorded = recorded
        self.clock = clock
        self.counter = counter
        self.script = script
        self.context_window = counter.context_window if counter else 128_000
        self.max_output_tokens = counter.max_output_tokens if counter else 4_096

    def count_tokens(self, messages: Sequence[Message], tools: tuple[ToolSpec, ...] = ()) -> int:
        if self.counter is None:
            from ..models._tokens import estimate_tokens

            return estimate_tokens(messages, tools)
        # A provider's counter may ask its server (llama.cpp's /tokenize, a count-tokens
        # API); with real requests switched off it counts locally, so nothing is called.
        from ..models import _base

        allowed, _base.ALLOW_MODEL_REQUESTS = _base.ALLOW_MODEL_REQUESTS, False
        try:
            return self.counter.count_tokens(messages, tools)
        finally:
            _base.ALLOW_MODEL_REQUESTS = allowed

    async def complete(
        self, request: ModelRequest, *, on_text: TextSink | None = None
    ) -> ModelResponse:
        queue = self.recorded.summaries if request.purpose == "summary" else self.recorded.turns
        if not queue:
            if self.script is not None:  # past the recording: the script goes on
                return await self.script.complete(request, on_text=on_text)
            raise ModelError("replay: the recording has no more model answers")
        event = queue.popleft()
        self.clock.now = max(self.clock.now, _epoch(event.ts))
        if event.type == "model.failed":
            kind, text = event.payload.get("kind"), str(event.payload.get("error", ""))
            raise {"ModelUnavailable": ModelUnavailable, "ContextOverflow": ContextOverflow}.get(
                str(kind), ModelError
            )(text)
        if self.script is not None:
            return await self.script.complete(request, on_text=on_text)
        p, usage = event.payload, event.usage
        return ModelResponse(
            content=p.get("content", ""),
            tool_calls=tuple(ToolCall(**c) for c in p.get("tool_calls", ())),
            finish_reason=p.get("finish_reason", "stop"),
            usage=ModelUsage(
                input_tokens=usage.input_tokens if usage else 0,
                output_tokens=usage.output_tokens if usage else 0,
            ),
            model=p.get("model", self.name),
        )


def _recorded_tool(tool: Tool, recorded: _Recorded, clock: FakeClock) -> Tool:
    """The tool with its body replaced by the recorded result for the call's key.

    A recorded failure is raised so that the executor gives it the recorded kind
    (`exception`, `timeout`, `retry_requested`) and text: policies such as a circuit
    breaker count failures by kind, so a replay that changed the kind would diverge
    silently. A sync tool stays sync (a timeout's text says whether it was abandoned)."""

    def answer(**kwargs: Any) -> Any:
        key = kwargs[_CTX].idempotency_key
        question = recorded.questions.pop(key, None)
        if question is not None:
            raise HumanInputRequired(question)  # the recorded answer is applied at the pause
        if key in recorded.asked and not kwargs[_CTX].approved:
            raise ApprovalNeeded(recorded.asked[key])  # the recorded decision is applied
        queue = recorded.results.get(key)
        if not queue:
            raise ToolRetry(f"replay: no recorded result for {tool.name} under key {key}")
        event = queue.popleft()
        clock.now = max(clock.now, _epoch(event.ts))
        output = str(event.payload.get("output", ""))
        error = event.payload.get("error")
        if error:
            raise _recorded_failure(tool.name, str(error), output)
        return output

    async def answer_async(**kwargs: Any) -> Any:
        return answer(**kwargs)

    return dataclasses.replace(tool, fn=answer if tool.is_sync else answer_async,
                               context_param=_CTX, retries=0)  # fmt: skip


def _recorded_failure(name: str, kind: str, output: str) -> BaseException:
    """The exception the executor turns into the recorded failure: `error: NAME failed:
    TYPE: MESSAGE` for an exception (TYPE named as recorded, and not transient, so it is
    not retried), a TimeoutError for a timeout, a ToolRetry otherwise."""
    if kind == "timeout":
        return TimeoutError()
    if kind == "exception":
        prefix = f"error: {name} failed: "
        type_name, sep, message = output.removeprefix(prefix).partition(": ")
        if output.startswith(prefix) and sep and type_name.isidentifier():
            recorded_type: type[_RecordedException] = type(type_name, (_RecordedException,), {})
            return recorded_type(message)
    return ToolRetry(output.removeprefix("error: "))


class _RecordedException(Exception):
    """A recorded tool exception, raised again under its recorded type name."""


class _RecordedSource:
    """A tool source (an MCP server) as the recording knew it: its journaled tool list and
    recorded results. It never connects, so a replay neither lists nor calls the server."""

    def __init__(
        self, inner: ToolSource, listings: dict[str, list[Any]], recorded: _Recorded,
        clock: FakeClock,
    ) -> None:  # fmt: skip
        self.inner, self.name = inner, inner.name
        self.listing = listings.get(inner.name)
        self.recorded, self.clock = recorded, clock

    def open(self, run_id: str) -> _RecordedSession:
        return _RecordedSession(self, self.inner.open(run_id))


class _RecordedSession:
    def __init__(self, source: _RecordedSource, inner: ToolSession) -> None:
        self.source, self.inner = source, inner

    async def list_tools(self) -> list[dict[str, Any]]:
        if self.source.listing is None:
            raise ReplayError(f"the recording has no tool list of source {self.source.name!r}")
        return self.source.listing

    def tools(self, listing: list[dict[str, Any]]) -> Sequence[Tool]:
        return [
            _recorded_tool(t, self.source.recorded, self.source.clock)
            for t in self.inner.tools(listing)
        ]

    async def aclose(self) -> None:
        await self.inner.aclose()  # nothing was opened: the inner session was never used


def _listings(events: Sequence[Event]) -> dict[str, list[Any]]:
    """The tool lists the recording journaled, by source (the first of each)."""
    found: dict[str, list[Any]] = {}
    for e in events:
        if e.type == "note" and e.payload.get("kind") == LISTING_NOTE:
            found.setdefault(str(e.payload["source"]), list(e.payload["tools"]))
    return found


class _CrashAt(StoreWrapper):
    """A store that raises SimulatedCrash once an append has made `after_seq` durable."""

    def __init__(self, inner: Store, after_seq: int) -> None:
        super().__init__(inner)
        self.after_seq = after_seq

    async def append(
        self,
        lease: Lease,
        events: Sequence[Event],
        *,
        summary: RunSummary,
        also: Callable[[], None] | None = None,
        sync: bool = False,
    ) -> None:
        await self.inner.append(lease, events, summary=summary, also=also, sync=sync)
        if events and self._reached(events):
            raise SimulatedCrash()

    def _reached(self, events: Sequence[Event]) -> bool:
        return events[-1].seq >= self.after_seq


class _CrashAtPosition(_CrashAt):
    """The same, once the `target`-th compared event is durable: a replay places a
    recorded crash by position, since events the recording lacks (health) shift seqs."""

    def __init__(self, inner: Store, target: int, have: int) -> None:
        super().__init__(inner, 0)
        self.target, self.have = target, have

    def _reached(self, events: Sequence[Event]) -> bool:
        self.have += len(_compared(events))
        return self.have >= self.target


def _crash_points(events: Sequence[Event]) -> list[int]:
    """Seqs after which the recorded process stopped (died, or a worker handed the run
    back): a `run.resumed` that no outside input or fork led to and no pause explains."""
    points, state = [], RunState()
    for i, e in enumerate(events):
        after_input = i > 0 and (_external(events[i - 1]) or events[i - 1].type == "run.forked")
        paused = state.status in ("waiting_approval", "stopped")
        if e.type == "run.resumed" and not after_input and not paused:
            points.append(e.seq - 1)
        state = apply(state, e)
    return points


def _external(event: Event) -> bool:
    """Appended from outside the loop: a human's decision, new limits, an operator's pin."""
    if event.type in ("approval.resolved", "limit.changed"):
        return True
    return event.type in ("fact.pinned", "fact.unpinned") and event.correlation_id is None


async def _apply_inputs(
    store: Store, run_id: str, recorded: Sequence[Event], agent: Agent, clock: FakeClock
) -> int:
    """Append the outside inputs the recording has right where the replay stopped (a
    pause, a stop); how many (0: the replay is over)."""
    from ..loop._pins import pin_fact, unpin_fact
    from ..loop._relimit import change_limits

    applied = 0
    now = _compared(await read_events(store, run_id))
    at = _after_position(recorded, len(now))
    position = {e.seq: i for i, e in enumerate(_compared(recorded))}
    while at < len(recorded) and _external(recorded[at]):
        e, p = recorded[at], recorded[at].payload
        clock.now = max(clock.now, _epoch(e.ts))
        if e.type == "approval.resolved":
            edited = p.get("arguments")
            # The request is named by its call's seq: find that call in the replay by
            # position, since events the recording lacks (health) shift seqs.
            request_id = p["request_id"]
            with contextlib.suppress(UsageError):
                call = position.get(parse_request_id(request_id)[1])
                if call is not None and call < len(now):
                    request_id = request_id_for(run_id, now[call].seq)
            await resolve_approval(
                store, request_id, decision=p["decision"], arguments=edited,
                agent=agent if edited is not None else None, comment=p.get("comment"),
                actor=e.actor, clock=clock,
            )  # fmt: skip
        elif e.type == "limit.changed":
            await change_limits(store, run_id, p["limits"], actor=e.actor, clock=clock)
        elif e.type == "fact.pinned":
            await pin_fact(store, run_id, p["text"], source=p.get("source", ""), actor=e.actor,
                           clock=clock)  # fmt: skip
        else:
            await unpin_fact(store, run_id, p["id"], actor=e.actor, clock=clock)
        applied += 1
        at += 1
        while at < len(recorded) and _ignored(recorded[at]):
            at += 1
    return applied


def _after_position(recorded: Sequence[Event], count: int) -> int:
    """The index in `recorded` just after its `count`-th compared event, past any ignored
    events that follow it."""
    seen, at = 0, 0
    while at < len(recorded) and (seen < count or _ignored(recorded[at])):
        if not _ignored(recorded[at]):
            seen += 1
        at += 1
    return at


def _ignored(event: Event) -> bool:
    return event.type in IGNORED or event.type.startswith(IGNORED_PREFIXES)


async def _import(store: Store, events: Sequence[Event]) -> None:
    """Put recorded events into the store as they are (sealed bytes, same seqs)."""
    first = events[0]
    forked = events[-1].payload if events[-1].type == "run.forked" else {}
    await store.create_run(
        first, agent=first.payload["agent"], tenant=first.payload.get("tenant"),
        parent_run_id=forked.get("from_run"), summary=summary_of(fold(events[:1])),
        created_at=events[-1].ts,
    )  # fmt: skip
    lease = await store.acquire_lease(first.run_id, owner="replay-import", ttl_s=60)
    try:
        if len(events) > 1:
            await store.append(lease, events[1:], summary=summary_of(fold(events)))
    finally:
        await store.release_lease(lease)


def project(event: Event) -> dict[str, Any]:
    """What is compared: the type and the fields that say what the agent did (for a model
    answer, its text and calls)."""
    shown: dict[str, Any] = {"type": event.type}
    fields = MODEL_FIELDS if event.type == "model.completed" else COMPARED_FIELDS
    for name in fields:
        if name in event.payload:
            shown[name] = event.payload[name]
    return shown


RESULT_TYPES = frozenset({"tool.completed", "tool.failed", "tool.unknown"})


def _compared(events: Sequence[Event]) -> list[Event]:
    return [e for e in events if not _ignored(e)]


def _in_call_order(events: list[Event]) -> list[Event]:
    """`events` with each batch of consecutive tool results in call order.

    Parallel calls of one turn are journaled as they finish; a replay has every result at
    once and finishes them in call order. Sorting a batch by its calls' ids (stable) makes
    the two comparable without letting a result that differs go unseen."""
    start = 0
    for i in range(len(events) + 1):
        if i < len(events) and events[i].type in RESULT_TYPES:
            continue
        if i - start > 1:
            events[start:i] = sorted(events[start:i], key=lambda e: str(e.payload.get("call_id")))
        start = i + 1
    return events


async def replay(agent: Agent, path: Path | str, *, script: bool = False) -> ReplayReport:
    """Re-drive `agent` on what the exported journal at `path` recorded; see the module.

    `script=True` lets the agent's own `ScriptedModel` (and scripted summariser) answer
    instead of the recording, so a change to the script shows as a divergence; a model
    that is not a script is refused, since it would be called."""
    own = agent.model if isinstance(agent.model, ScriptedModel) else None
    if script and own is None:
        name = agent.model.name if agent.model is not None else "no model"
        raise UsageError(
            f"a replay with the agent's script needs a ScriptedModel, not {name!r} "
            "(it would be called)"
        )
    recorded_events = load_journal(Path(path))
    created = recorded_events[0]
    forked_at = next((e.seq for e in recorded_events if e.type == "run.forked"), 0)
    recorded = _Recorded(recorded_events[forked_at:])
    clock = FakeClock(_epoch(created.ts))
    store = MemoryStore(clock=clock)
    model = _ReplayModel(str(created.payload.get("model", "replay")), recorded, clock,
                         agent.model, script=own if script else None)  # fmt: skip
    summarizer = agent.summary_model
    agent = dataclasses.replace(
        agent,
        model=model,
        summary_model=None if summarizer is None else _ReplayModel(
            summarizer.name, recorded, clock, summarizer,
            script=summarizer if script and isinstance(summarizer, ScriptedModel) else None,
        ),
        tools=[_recorded_tool(t, recorded, clock) for t in agent.tools],
        tool_sources=[
            _RecordedSource(s, _listings(recorded_events), recorded, clock)
            for s in agent.tool_sources
        ],
    )  # fmt: skip
    p = created.payload
    run_id = created.run_id
    runtime = Runtime(store, clock=clock, model_retry_backoff_s=0.0, worker_id="replay-0")
    forked = next((e.seq for e in recorded_events if e.type == "run.forked"), 0)
    if forked:
        # A fork starts from a copy of its parent's history: history, not behaviour.
        await _import(store, recorded_events[:forked])
        clock.now = max(clock.now, _epoch(recorded_events[forked - 1].ts))
    else:
        await runtime.create(
            agent, p["task"], limits=Limits.from_json(p.get("limits") or {}),
            tenant=p.get("tenant"), run_id=run_id, metadata=p.get("metadata") or None,
        )  # fmt: skip
    compared_seqs = [e.seq for e in _compared(recorded_events)]
    crashes = deque(
        bisect.bisect_right(compared_seqs, seq)  # compared events durable at the crash
        for seq in _crash_points(recorded_events)
        if seq >= forked
    )
    workers = 0
    while True:
        if crashes:
            have = len(_compared(await read_events(store, run_id)))
            runtime.store = _CrashAtPosition(store, crashes[0], have)
        else:
            runtime.store = store
        try:
            await runtime.resume(agent, run_id)
        except SimulatedCrash:
            crashes.popleft()
            record = await store.get_run(run_id)
            if record.lease_owner is not None:  # a dead process leaves its lease behind
                lease = Lease(run_id=run_id, owner=record.lease_owner,
                              epoch=record.lease_epoch, expires_at=0)  # fmt: skip
                await store.release_lease(lease)
            workers += 1
            runtime.worker_id = f"replay-{workers}"
            continue
        if not await _apply_inputs(store, run_id, recorded_events, agent, clock):
            break
    replayed_events = await read_events(store, run_id)
    await store.close()
    return ReplayReport(
        run_id=run_id, recorded_events=len(recorded_events), replayed_events=len(replayed_events),
        recorded_status=fold(recorded_events).status, replayed_status=fold(replayed_events).status,
        divergence=first_divergence(recorded_events, replayed_events),
    )  # fmt: skip


def first_divergence(recorded: Sequence[Event], now: Sequence[Event]) -> Divergence | None:
    a, b = _in_call_order(_compared(recorded)), _in_call_order(_compared(now))
    for i in range(max(len(a), len(b))):
        left = project(a[i]) if i < len(a) else None
        right = project(b[i]) if i < len(b) else None
        if left != right:
            seq = a[i].seq if i < len(a) else None
            return Divergence(position=i, recorded_seq=seq, recorded=left, now=right)
    return None


async def assert_replays(agent: Agent, path: Path | str, *, script: bool = False) -> ReplayReport:
    """`replay`, failing the test with the first divergence when there is one."""
    report = await replay(agent, path, script=script)
    if report.divergence is not None:
        raise AssertionError(f"{path} no longer replays: {report.divergence}")
    return report
