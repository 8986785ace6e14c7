"""Recovery on the driver: settle the calls a stopped process or a pause left open.

A call gated by an approval runs once it is approved (it never ran before); a rejection
becomes its result. Any other call without an outcome was in flight when a process
stopped: it is re-run only if idempotent (or its policy says so), otherwise the model is
told the outcome is unknown (DESIGN invariants 2 and 9).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from ..approvals import approvals_in
from ..events import EventDraft
from ..journal import read_events
from ..state import PendingCall
from ..tools import Tool, ToolOutcome, parse_arguments
from ._tool_calls import ToolCalls

__all__ = ["UNKNOWN_OUTCOME", "Recovery"]

UNKNOWN_OUTCOME = (
    "error: outcome unknown. The process running {name} stopped while the call was in "
    "flight, so it may or may not have taken effect. It was not repeated automatically "
    "because {name} is not idempotent. Check its effect before calling it again."
)


class Recovery(ToolCalls):
    """Settling calls with no outcome yet."""

    async def recover_calls(self) -> None:
        """Settle calls that have no outcome yet (DESIGN invariants 2 and 9).

        A call gated by an approval runs now if it was approved (it never ran before);
        a rejection becomes its result. Any other call without an outcome was in flight
        when a process stopped: it is re-run only if idempotent (or its policy says so),
        otherwise the model is told the outcome is unknown.
        """
        state = self.state
        pending = state.pending_calls
        since = await read_events(
            self.journal.store, state.run_id, after_seq=min(c.seq for c in pending) - 1
        )
        requested = {e.seq: e for e in since if e.type == "tool.requested"}
        approvals = {a.call_seq: a for a in approvals_in(since).values()}
        started = {e.payload["call_seq"] for e in since if e.type == "tool.started"}
        corr = self.correlation(state.cycle)
        for call in pending:
            # Notices journaled with the turn (an `after_model` tell) ride on this result.
            told = requested[call.seq].payload.get("notes") if call.seq in requested else None
            if told:
                self.call_notes[call.call_id] = list(told)
        rerun: list[tuple[PendingCall, Tool, dict[str, Any], int, str, str | None, bool]] = []
        for call in pending:
            tool = self.tool(call.name)
            approval = approvals.get(call.seq)
            if approval is not None and approval.pending:
                continue
            if approval is not None and approval.action == "rejected":
                who = approval.resolved_by or "a human"
                why = f": {approval.comment}" if approval.comment else ""
                verb = "declined to answer" if approval.kind == "question" else "rejected the call"
                outcome = ToolOutcome(
                    output=f"error: {who} {verb}{why}",
                    error="no_answer" if approval.kind == "question" else "rejected",
                )
                await self.record_result(
                    call.call_id, call.name, call.seq, outcome, tool=tool, corr=corr
                )
                continue
            if approval is not None and approval.kind == "question":
                answer = ToolOutcome(output=approval.comment or "")
                await self.record_result(
                    call.call_id, call.name, call.seq, answer, tool=tool, corr=corr
                )
                continue
            request = requested[call.seq].payload
            raw = request["arguments"]
            # The key the call was first given (journals before stable keys hold RUN:SEQ).
            key = request.get("idempotency_key") or f"{state.run_id}:{call.seq}"
            parsed = parse_arguments(tool, call.name, raw)
            if isinstance(parsed, ToolOutcome) or tool is None:
                assert isinstance(parsed, ToolOutcome)
                await self.record_result(
                    call.call_id, call.name, call.seq, parsed, tool=None, corr=corr,
                    arguments=raw,
                )  # fmt: skip
                continue
            if approval is not None:
                # `{}` is an edit too: the journaled arguments are the ones that run.
                edit = approval.resolved_arguments
                args = parsed if edit is None else edit
                if approval.resolved_arguments is not None:
                    edited = parse_arguments(tool, call.name, json.dumps(args))
                    if isinstance(edited, ToolOutcome):
                        await self.record_result(
                            call.call_id, call.name, call.seq, edited, tool=tool, corr=corr
                        )
                        continue
                    args = edited
                if call.seq not in started:
                    # Approved and never started: say so durably, then run it for the first time.
                    await self.append(
                        EventDraft(
                            type="tool.started",
                            payload={"call_id": call.call_id, "call_seq": call.seq},
                            correlation_id=corr,
                            causation_id=f"{state.run_id}:{approval.resolved_seq}",
                        ),
                        sync=True,
                    )
                    rerun.append(
                        (call, tool, args, 1, key, None if edit is not None else raw, True)
                    )
                    continue
                parsed = args
            if tool.idempotent or tool.on_unknown == "retry":
                unedited = approval is None or approval.resolved_arguments is None
                rerun.append(
                    (call, tool, parsed, 2, key, raw if unedited else None, approval is not None)
                )
            else:
                outcome = ToolOutcome(
                    output=UNKNOWN_OUTCOME.format(name=tool.name), error="unknown_outcome"
                )
                await self.record_result(
                    call.call_id, tool.name, call.seq, outcome, tool=tool, corr=corr,
                    kind="tool.unknown",
                )  # fmt: skip
        await asyncio.gather(
            *(
                # The arguments as journaled, unless an approver edited them.
                self.run_tool(
                    call, tool, args, corr, attempt=n, key=key, raw=raw, approved=approved
                )
                for call, tool, args, n, key, raw, approved in rerun
            )
        )
