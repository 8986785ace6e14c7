"""Tool calls on the driver: journal the calls a model asked for, gate, run and record them.

Each valid call goes past the policies' `before_tool` hook before it is journaled (an
approval is a `pause` verdict; an open circuit breaker a `refuse`), and each outcome past
`after_tool` before the model sees it (the runway line, notices, health events). A
verdict's health event commits with the effect it describes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Any

from .._clock import iso
from ..approvals import approval_visibility, request_id_for
from ..budget import Denial, Reservation
from ..errors import ApprovalNeeded, HumanInputRequired
from ..events import EventDraft, Usage, Visibility
from ..models._validate import clean_text
from ..policies import AfterTool, BeforeTool, Verdict
from ..state import PendingCall
from ..tools import Tool, ToolContext, ToolOutcome, execute, parse_arguments
from ..tools._validate import json_safe
from ._artifacts import ARTIFACT_TOOLS, source_visibility
from ._model_calls import ModelCalls
from ._pauses import pause_draft
from ._pins import PIN_TOOLS, pin_call
from ._results import Progress

__all__ = ["ToolCalls", "canonical_arguments"]

TOOL_GRACE_S = 5.0
"""A tool call may run this far past the run's time limit before it is abandoned."""


def canonical_arguments(arguments: dict[str, Any] | str) -> str:
    """One spelling of a call's arguments, so equal calls compare equal."""
    value: Any = arguments
    if isinstance(arguments, str):
        try:
            value = json.loads(arguments) if arguments.strip() else {}
        except ValueError:
            return arguments
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    except (TypeError, ValueError):
        return repr(value)


class ToolCalls(ModelCalls):
    """Journaling, gating, running and recording the calls of one model turn."""

    async def record_calls(
        self,
        response_calls: list[tuple[str, str, str]],
        drafts: list[EventDraft],
        *,
        corr: str,
        completed_seq: int,
        reason: str,
        settle_too: Any,
        notes: list[str] | None = None,
        pause: Verdict | None = None,
    ) -> None:
        """Journal `drafts` (the model's turn) with one `tool.requested` per call, then
        run the calls; `response_calls` is (call id, tool name, raw arguments).

        `notes` (told at `after_model`) are journaled on the first call, whose result
        carries them (so they survive a crash); `pause` (at `after_model`) gates every
        valid call of the turn on an approval with the policy's reason."""
        run_id = self.state.run_id
        first_call_seq = completed_seq + len(drafts)
        refused: list[tuple[int, str, str, str, ToolOutcome, Tool | None]] = []
        runnable: list[tuple[PendingCall, Tool, dict[str, Any], str, str]] = []
        gated: list[tuple[PendingCall, Tool, dict[str, Any], str]] = []
        health: list[EventDraft] = []
        for index, (call_id, name, raw) in enumerate(response_calls):
            seq = first_call_seq + index
            tool = self.tool(name)
            parsed = parse_arguments(tool, name, raw)
            told = {"notes": notes} if notes and index == 0 else {}
            if told:
                self.call_notes[call_id] = list(notes or ())
            drafts.append(
                EventDraft(
                    type="tool.requested",
                    payload={
                        "call_id": call_id,
                        "name": name,
                        "arguments": raw,
                        "idempotency_key": self.state.effect_key(index),
                        "idempotent": tool.idempotent if tool else None,
                        "valid": not isinstance(parsed, ToolOutcome),
                        **told,
                    },
                    correlation_id=corr,
                    causation_id=f"{run_id}:{completed_seq}",
                    visibility=tool.visibility if tool else None,
                )
            )
            if isinstance(parsed, ToolOutcome):
                refused.append((seq, call_id, name, raw, parsed, None))
                continue
            assert tool is not None
            pending = PendingCall(call_id=call_id, name=name, seq=seq)
            verdicts = await self.consult(
                "before_tool",
                BeforeTool(
                    state=self.state,
                    now=self.clock.time(),
                    tool=tool,
                    arguments=parsed,
                    reason=reason,
                    history=self.history,
                ),
            )
            health.extend(self.health_drafts(verdicts, corr))
            tells = [v.message for v in verdicts if v.action == "tell" and v.message]
            if tells:
                self.call_notes.setdefault(call_id, []).extend(tells)
            decision = verdicts[-1] if verdicts else None
            action = decision.action if decision else "continue"
            if pause is not None and action not in ("refuse", "stop", "pause"):
                action, decision = "pause", pause
            if action == "pause":
                assert decision is not None
                gated.append((pending, tool, parsed, decision.message or reason))
            elif action in ("refuse", "stop"):
                assert decision is not None
                message = decision.message or f"{decision.policy} refused the call"
                if action == "stop":
                    self.halt = (decision.policy, message)
                outcome = ToolOutcome(output=f"error: {message}", error="refused")
                refused.append((seq, call_id, name, raw, outcome, tool))
            else:
                runnable.append((pending, tool, parsed, self.state.effect_key(index), raw))
        drafts.extend(health)
        for pending, tool, parsed, why in gated:
            drafts.append(self.approval_draft(pending, tool, parsed, corr, reason=why,
                                              kind="approval"))  # fmt: skip
        # The write-ahead record of a call that cannot be safely repeated reaches stable
        # storage before the call runs (DESIGN invariant 1), whatever the store's sync mode;
        # idempotent calls keep the cheap path: redone after a power cut, they present the
        # same key.
        effects = any(not tool.idempotent for _, tool, _, _, _ in runnable)
        await self.append(*drafts, also=settle_too, sync=effects)
        for seq, call_id, name, raw, outcome, known in refused:
            # A refused call of a known tool keeps the tool's visibility, never its cost.
            await self.record_result(
                call_id, name, seq, outcome, tool=known, corr=corr, arguments=raw
            )
        calls = [
            self.run_tool(call, tool, args, corr, attempt=1, key=key, raw=raw)
            for call, tool, args, key, raw in runnable
        ]
        if len(calls) == 1:
            await calls[0]  # one call: in this task (a task of its own is an extra loop turn)
        else:
            await asyncio.gather(*calls)

    async def run_tool(
        self,
        call: PendingCall,
        tool: Tool,
        args: dict[str, Any],
        corr: str,
        *,
        attempt: int,
        key: str,
        raw: str | None = None,
        approved: bool = False,
    ) -> None:
        """Run one call and record its outcome; `raw` is the arguments as the model sent
        them (what policies compare calls by); `approved`: a human approved this call."""
        if self.observer:
            self.observer(Progress(state=self.state, event="tool.started", tool=tool.name))
        arguments = raw if raw is not None else canonical_arguments(args)
        if tool.name in PIN_TOOLS and self.builtins.get(tool.name) is tool:
            # Pins change the state, so the loop journals them itself, before the result.
            outcome, pinned = pin_call(
                self.state, tool.name, args, call_seq=call.seq, budget=self.agent.pin_tokens
            )
            if pinned is not None:
                await self.append(dataclasses.replace(pinned, correlation_id=corr))
            await self.record_result(
                call.call_id, tool.name, call.seq, outcome, tool=tool, corr=corr,
                arguments=arguments,
            )  # fmt: skip
            return
        context = ToolContext(
            run_id=self.state.run_id,
            call_id=call.call_id,
            idempotency_key=key,
            attempt=attempt,
            store=self.journal.store,
            correlation_id=corr,
            event_id=f"{self.state.run_id}:{call.seq}",
            approved=approved,
        )
        hold: Reservation | Denial | None = None
        if tool.cost_usd and self.ledger is not None:
            hold = await self.reserve(tool.cost_usd, corr, kind="tool")
            if isinstance(hold, Denial):
                self.denied = hold
                denied = ToolOutcome(output=f"error: {hold.reason}", error="budget_denied")
                await self.record_result(
                    call.call_id, tool.name, call.seq, denied, tool=None, corr=corr,
                    arguments=arguments,
                )  # fmt: skip
                return
        try:
            outcome = await self.timed_tool(tool, args, context)
        except HumanInputRequired as question:
            if isinstance(hold, Reservation) and self.ledger is not None:
                await self.ledger.settle(hold, tool.cost_usd)
            await self.append(
                self.approval_draft(
                    call, tool, args, corr, reason=question.question, kind="question"
                )
            )
            return
        except ApprovalNeeded as asked:
            # Raised before any effect: nothing was spent, and the call runs again approved.
            if isinstance(hold, Reservation) and self.ledger is not None:
                await self.ledger.release(hold)
            hold = None
            if not approved:
                draft = self.approval_draft(call, tool, args, corr, reason=asked.reason,
                                            kind="approval")  # fmt: skip
                draft.payload["by_tool"] = True  # the tool asked (a replay asks again)
                await self.append(draft)
                return
            outcome = ToolOutcome(
                output=f"error: {tool.name} asked for approval again after it was approved",
                error="exception",
            )
        except BaseException:
            if isinstance(hold, Reservation) and self.ledger is not None:
                await self.ledger.release(hold)
            raise
        if isinstance(hold, Reservation) and self.ledger is not None:
            if outcome.ok:
                await self.ledger.settle(hold, tool.cost_usd)
            else:
                await self.ledger.release(hold)
        visibility: Visibility | None = None
        if outcome.ok and self.builtins.get(tool.name) is tool and tool.name in ARTIFACT_TOOLS:
            # A slice of an output is as private as the output.
            handle = str(args.get("handle", ""))
            visibility = await source_visibility(self.journal.store, self.state.run_id, handle)
        await self.record_result(
            call.call_id, tool.name, call.seq, outcome, tool=tool, corr=corr,
            arguments=arguments, visibility=visibility,
        )  # fmt: skip

    async def timed_tool(
        self, tool: Tool, args: dict[str, Any], context: ToolContext
    ) -> ToolOutcome:
        """Execute a call within the run's remaining time (its own timeout applies inside),
        sending progress ticks while it runs."""
        left = self.time_left()
        ticker = (
            asyncio.create_task(self.tick("tool.waiting", tool.name)) if self.observer else None
        )
        try:
            if left is None:
                return await execute(tool, args, context)
            bound = left + TOOL_GRACE_S
            try:
                async with asyncio.timeout(bound):
                    return await execute(tool, args, context)
            except TimeoutError:
                abandoned = " (abandoned; it may still be running)" if tool.is_sync else ""
                return ToolOutcome(
                    output=(
                        f"error: {tool.name} was cut off after {bound:.1f}s by the run's "
                        f"time limit{abandoned}"
                    ),
                    error="timeout",
                )
        finally:
            if ticker is not None:
                ticker.cancel()
                await asyncio.gather(ticker, return_exceptions=True)

    def approval_draft(
        self,
        call: PendingCall,
        tool: Tool,
        arguments: dict[str, Any],
        corr: str,
        *,
        reason: str,
        kind: str,
    ) -> EventDraft:
        run_id = self.state.run_id
        timeout = tool.approval_timeout_s
        return EventDraft(
            type="approval.requested",
            payload={
                "request_id": request_id_for(run_id, call.seq),
                "call_id": call.call_id,
                "call_seq": call.seq,
                "tool": tool.name,
                "arguments": json_safe(arguments),
                "kind": kind,
                "question": clean_text(reason) if kind == "question" else None,
                "reason": clean_text(reason),
                "excerpt": self.excerpt(),
                "expires_at": iso(self.clock.time() + timeout) if timeout else None,
                "on_expiry": tool.approval_on_expiry,
            },
            correlation_id=corr,
            causation_id=f"{run_id}:{call.seq}",
            visibility=approval_visibility(tool.visibility),
        )

    def pause(
        self,
        before: list[EventDraft],
        hook: str,
        verdict: Verdict,
        corr: str | None,
        *,
        answer: str | None = None,
    ) -> EventDraft:
        """The approval request of a pause, journaled right after `before` (same commit)."""
        return pause_draft(
            run_id=self.state.run_id, seq=self.state.last_seq + len(before) + 1, hook=hook,
            verdict=verdict, excerpt=self.excerpt(), corr=corr, answer=answer,
        )  # fmt: skip

    def excerpt(self, limit: int = 400) -> str:
        """The last few messages of the context, for the human deciding.

        Never the system prompt (always hidden): an approver is an operator.
        """
        messages = [m for m in self.cache.build(self.state) if m.role != "system"][-3:]
        text = " | ".join(f"{m.role}: {' '.join(m.content.split())}" for m in messages)
        return text if len(text) <= limit else "…" + text[-(limit - 1) :]

    async def record_result(
        self,
        call_id: str,
        name: str,
        request_seq: int,
        outcome: ToolOutcome,
        *,
        tool: Tool | None,
        corr: str,
        kind: str | None = None,
        arguments: str = "",
        visibility: Visibility | None = None,
    ) -> None:
        """Journal a call's outcome, with what the policies add to it: notices, the runway
        line, and their health events, all in one commit; `visibility` overrides the tool's."""
        verdicts = await self.consult(
            "after_tool",
            AfterTool(
                state=self.state, now=self.clock.time(), name=name, tool=tool,
                arguments=arguments, outcome=outcome,
                limits=self.limits, elapsed_s=self.elapsed(), context_fill=self.last_fill,
            ),
            first_decides=False,
        )  # fmt: skip
        notes = [v.message for v in verdicts if v.message and v.action != "continue"]
        suffix = "".join(str(v.data["runway"]) for v in verdicts if "runway" in v.data)
        if suffix and notes:
            # Added to the runway line itself (its first line), e.g. " · 2 stale".
            first, newline, rest = notes[0].partition("\n")
            notes[0] = f"{first}{suffix}{newline}{rest}"
        notes[1:1] = self.call_notes.pop(call_id, [])  # after the runway line
        paused = next((v for v in verdicts if v.action == "pause"), None)
        extra: dict[str, Any] = {}
        for verdict in verdicts:
            extra.update({k: v for k, v in verdict.data.items() if k not in _NOT_PAYLOAD})
            if verdict.action == "stop" and self.halt is None:
                limit = str(verdict.data.get("limit", verdict.policy))
                self.halt = (limit, verdict.message or f"{verdict.policy} stopped the run")
        cost = tool.cost_usd if tool is not None and outcome.error not in _FREE else 0.0
        draft = EventDraft(
            type=kind or ("tool.completed" if outcome.ok else "tool.failed"),
            payload={
                "call_id": call_id,
                "name": name,
                "output": outcome.output,
                "error": outcome.error,
                "attempts": outcome.attempts,
                "status": "\n".join(notes),
                "level": "ok",
                "max_chars": self.head_chars(tool),
                **extra,
            },
            correlation_id=corr,
            causation_id=f"{self.state.run_id}:{request_seq}",
            actor=f"tool:{name}",
            visibility=visibility or (tool.visibility if tool else None),
            usage=Usage(cost_usd=cost) if cost else None,
        )
        drafts = [draft, *self.health_drafts(verdicts, corr)]
        if paused is not None and self.halt is None:
            # A durable interrupt once the turn's calls are done: the run waits for an
            # operator with the policy's reason (see `_pauses.py`).
            async with self.pausing:
                drafts.append(self.pause(drafts, "after_tool", paused, corr))
                await self.append(*drafts, sync=True)
            return
        others = [c for c in self.state.pending_calls if c.seq != request_seq]
        if others or self.interrupted() or self.state.status != "running":
            await self.append(*drafts)
        else:
            # The turn's last outcome: the next step's first commit carries it to disk.
            # Nothing acts on it before then, and a crash in between is a crash with the
            # call in flight, which recovery already handles (DESIGN invariant 2).
            await self.stage(*drafts)

    def head_chars(self, tool: Tool | None) -> int:
        """Characters of a result the context shows (the rest is read with `read_artifact`):
        the tool's own limit, or less when the turn called so many tools that their heads
        would not fit half the compaction trigger together. A character is at most a token
        for every tokenizer we count with, so the last turn, which compaction keeps, fits."""
        limit = tool.max_output_chars if tool is not None else 8_000
        share = self.model.context_window * self.limits.context_threshold * 0.5
        room = int(share) // self.cache.turn_width(self.state)
        return min(limit, max(MIN_HEAD_CHARS, room))

    def interrupted(self) -> bool:
        """A budget denial or a policy's stop waits for the next cycle to wrap up."""
        return self.denied is not None or self.halt is not None


_NOT_PAYLOAD = frozenset({"limit", "runway"})
"""Verdict data the loop uses itself rather than adding to the result's payload."""

MIN_HEAD_CHARS = 200
"""The least of a result the context shows, however many calls share the turn."""

_FREE = frozenset({"unknown_outcome", "refused"})
"""Outcomes of calls that did not run (or may not have), so cost nothing."""
