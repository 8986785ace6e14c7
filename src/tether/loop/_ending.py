"""How a run ends on the driver: a model answer, checked; a wrap-up; a labelled stop.

A final answer goes past the policies' `after_model` and `before_answer` hooks before it
is published: a truncated answer is continued or ends the run `stopped`, never
`completed`; a draft a guardrail rejects stays in the journal (for operators) and goes
back to the agent with the reasons.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from ..budget import Denial, Reservation
from ..budget._journaled import settlement_field
from ..events import EventDraft
from ..models import ModelRequest, ModelResponse
from ..policies import AfterModel, BeforeAnswer, Verdict
from ._driver_base import DECISIVE
from ._guard import turn_visibility
from ._pauses import ANSWER_HOOKS, Resolved
from ._recovery import Recovery

__all__ = ["WRAP_UP_PROMPT", "Ending"]

WRAP_UP_PROMPT = (
    "A limit has been reached: {reason}. Tools are now disabled. Write your best final "
    "answer from what you have gathered so far. Say clearly what is complete and what is "
    "missing. It will be published labelled as a partial answer."
)


def _decision(verdicts: list[Verdict]) -> Verdict | None:
    return verdicts[-1] if verdicts and verdicts[-1].action in DECISIVE else None


class Ending(Recovery):
    """Answers, wrap-ups and stops."""

    async def record_response(
        self,
        response: ModelResponse,
        corr: str,
        request_seq: int,
        hold: Reservation | None = None,
    ) -> None:
        run_id = self.state.run_id
        verdicts = await self.consult(
            "after_model", AfterModel(state=self.state, response=response)
        )
        decision = _decision(verdicts)
        tells = [v.message for v in verdicts if v.action == "tell" and v.message]
        final = not response.tool_calls
        held_back = final and (decision is not None or bool(tells))
        completed = EventDraft(
            type="model.completed",
            payload={
                "content": response.content,
                "tool_calls": [c.to_json() for c in response.tool_calls],
                "finish_reason": response.finish_reason,
                "model": response.model,
                # Settled at this event's usage cost, in this event's commit.
                **settlement_field(hold),
            },
            correlation_id=corr,
            causation_id=f"{run_id}:{request_seq}",
            actor=f"model:{self.model.name}",
            usage=self.usage_of(response),
            # An answer that is not published (cut off, rejected) is for operators only.
            visibility="user_hidden" if held_back else turn_visibility(response, self.agent.tool),
        )
        actual = self.usage_of(response).cost_usd
        completed_seq = self.state.last_seq + 1
        ledger = self.ledger
        settle_too: Callable[[], None] | None = None
        if hold is not None and ledger is not None and self.joined:

            def settle_too() -> None:
                ledger.settle_now(hold, actual)

        drafts = [completed, *self.health_drafts(verdicts, corr)]
        prefix = "".join(str(v.data.get("answer_prefix", "")) for v in verdicts)
        answer = prefix + response.content
        if decision is not None and decision.action == "stop":
            limit = str(decision.data.get("limit", decision.policy))
            reason = decision.message or f"{decision.policy} stopped the run"
            await self.stop(limit, reason, corr, answer=answer, extra=drafts, also=settle_too)
            return
        if not final:
            # A notice cannot come between a turn's calls and their results: it is
            # journaled with the turn (on its first call) and rides on that call's result.
            await self.record_calls(
                [(c.id, c.name, c.arguments) for c in response.tool_calls], drafts,
                corr=corr, completed_seq=completed_seq, reason=response.content,
                settle_too=settle_too, notes=tells,
                pause=decision if decision is not None and decision.action == "pause" else None,
            )  # fmt: skip
            return
        if decision is not None and decision.action == "pause":
            # The answer is held back (hidden) until an operator decides.
            if tells:
                drafts.append(self.runtime_note("\n".join(tells), corr))
            pause = self.pause(drafts, "after_model", decision, corr, answer=answer)
            await self.append(*drafts, pause, also=settle_too, sync=True)
            return
        if tells:
            await self.append(*drafts, self.runtime_note("\n".join(tells), corr),
                              also=settle_too)  # fmt: skip
            return
        await self.publish(answer, corr, completed_seq, drafts, also=settle_too)

    async def publish(
        self,
        answer: str,
        corr: str,
        completed_seq: int,
        drafts: list[EventDraft],
        *,
        also: Callable[[], None] | None = None,
    ) -> None:
        """Past `before_answer`, publish `answer` (the answer of `completed_seq`) with
        `drafts` (its turn, when it is not journaled yet) in one commit."""
        run_id = self.state.run_id
        checks = await self.consult(
            "before_answer",
            BeforeAnswer(
                state=self.state, answer=answer, now=self.clock.time(), history=self.history
            ),
        )
        drafts.extend(self.health_drafts(checks, corr))
        check = _decision(checks)
        notes = [v.message for v in checks if v.action in ("tell", "refuse") and v.message]
        if check is not None and check.action == "stop":
            limit = str(check.data.get("limit", check.policy))
            reason = check.message or f"{check.policy} stopped the run"
            await self.stop(limit, reason, corr, answer=answer, extra=drafts, also=also)
            return
        if (
            drafts
            and drafts[0].type == "model.completed"
            and (notes or (check is not None and check.action == "pause"))
        ):
            # The draft is not published: it stays in the journal, hidden from end users.
            drafts[0] = _hidden(drafts[0])
        if check is not None and check.action == "pause":
            pause = self.pause(drafts, "before_answer", check, corr, answer=answer)
            await self.append(*drafts, pause, also=also, sync=True)
            return
        if notes:
            # The agent is told why its draft was not published.
            await self.append(*drafts, self.runtime_note("\n".join(notes), corr), also=also)
            return
        await self.append(
            *drafts,
            EventDraft(
                type="run.completed",
                payload={"answer": answer, "partial": False, "reason": "answered"},
                correlation_id=corr,
                causation_id=f"{run_id}:{completed_seq}",
            ),
            also=also,
        )

    async def after_pause(self, paused: Resolved) -> bool:
        """Carry out an operator's decision on a pause at a hook; True when that took
        this cycle's place (the loop goes round again), False to go on with the cycle."""
        corr = self.correlation(self.state.cycle + 1)
        who = paused.by or "an operator"
        why = f": {paused.comment}" if paused.comment else ""
        if paused.hook in ANSWER_HOOKS and paused.answer is not None:
            if paused.approved:
                if paused.hook == "before_answer":
                    self.waived = ("before_answer", paused.policy)
                try:
                    await self.publish(paused.answer, corr, paused.resolved_seq, [])
                finally:
                    self.waived = None
                return True
            note = (
                f"{who} rejected your final answer; it was not published{why}. "
                "Revise it and answer again."
            )
            await self.append(self.runtime_note(note, corr))
            return True
        if paused.approved:
            self.waived = (paused.hook, paused.policy)
            return False
        reason = f"{who} rejected going on after a pause ({paused.reason}){why}"
        await self.wrap_up("operator", reason)
        return True

    def runtime_note(self, text: str, corr: str) -> EventDraft:
        """A message from the runtime to the agent, in its context, hidden from end users."""
        return EventDraft(
            type="message.user",
            payload={"content": text, "pinned": False},
            correlation_id=corr,
            actor="runtime",
            visibility="user_hidden",
        )

    async def wrap_up(self, limit: str, reason: str) -> None:
        """One last turn without tools, then stop with a labelled partial answer."""
        run_id = self.state.run_id
        corr = self.correlation("wrap-up")
        prompt = WRAP_UP_PROMPT.format(reason=reason)
        await self.append(
            EventDraft(
                type="limit.reached",
                payload={"limit": limit, "reason": reason},
                correlation_id=corr,
                causation_id=f"{run_id}:{self.state.last_seq}",
            ),
            EventDraft(
                type="message.user",
                payload={"content": prompt, "pinned": False},
                correlation_id=corr,
                actor="runtime",
                visibility="user_hidden",
            ),
        )
        request = self.build_request(tools_enabled=False)
        hold = await self.hold(request, corr)
        if isinstance(hold, Denial):
            await self.stop(limit, reason, corr, answer=None, extra=[])
            return
        events = await self.append(
            EventDraft(
                type="model.requested",
                payload={
                    **self.request_payload(limit=limit, reason=reason),
                    **self.reservation(hold),
                },
                correlation_id=corr,
            ),
        )
        await self.finish_wrap_up(events[0].seq, limit, reason, request, hold)

    async def finish_wrap_up(
        self,
        request_seq: int,
        limit: str,
        reason: str,
        request: ModelRequest | None = None,
        hold: Reservation | None = None,
    ) -> None:
        run_id = self.state.run_id
        corr = self.correlation("wrap-up")
        if request is None:  # resuming a wrap-up a crash interrupted
            request = self.build_request(tools_enabled=False)
            held = await self.hold(request, corr)
            if isinstance(held, Denial):
                await self.stop(limit, reason, corr, answer=None, extra=[])
                return
            hold = held
            if hold is not None:
                await self.append(*self.reserved_drafts(hold, corr, cause=request_seq))
        response = await self.call_model(corr, request_seq, request, hold)
        if response is None or self.state.terminal:
            if not self.state.terminal:
                await self.stop(limit, reason, corr, answer=None, extra=[])
            return
        if response.finish_reason == "length":
            reason = f"{reason}; its wrap-up answer was cut off at the output limit"
        extra = [
            EventDraft(
                type="model.completed",
                payload={
                    "content": response.content,
                    "tool_calls": [],
                    "finish_reason": response.finish_reason,
                    "model": response.model,
                    "ignored_tool_calls": len(response.tool_calls),
                    **settlement_field(hold),
                },
                correlation_id=corr,
                causation_id=f"{run_id}:{request_seq}",
                actor=f"model:{self.model.name}",
                usage=self.usage_of(response),
                visibility="visible",
            )
        ]
        await self.stop(limit, reason, corr, answer=response.content, extra=extra)

    async def stop(
        self,
        limit: str,
        reason: str,
        corr: str,
        *,
        answer: str | None,
        extra: list[EventDraft],
        also: Callable[[], None] | None = None,
    ) -> None:
        """End the run `stopped`, with an answer labelled partial and a report."""
        state = self.state
        if answer is None:
            answer = (
                "No final answer: there was no room left for a wrap-up turn. "
                f"Done so far: {state.steps} steps, {state.tool_calls} tool calls."
            )
        await self.append(
            *extra,
            EventDraft(
                type="run.stopped",
                payload={
                    "answer": f"[PARTIAL — {reason}]\n\n{answer}".rstrip(),
                    "partial": True,
                    "reason": reason,
                    "limit": limit,
                    "report": {
                        "steps": state.steps,
                        "tool_calls": state.tool_calls,
                        "tool_errors": state.tool_errors,
                        "tokens": state.tokens,
                        "cost_usd": state.cost_usd,
                        "missing": f"the run was stopped before it finished: {reason}",
                    },
                },
                correlation_id=corr,
            ),
            also=also,
        )


def _hidden(draft: EventDraft) -> EventDraft:
    return dataclasses.replace(draft, visibility="user_hidden")
