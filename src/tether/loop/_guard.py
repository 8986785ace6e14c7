"""The loop's last line (DESIGN invariant 10): no exception escapes, no run is left running.

The boundaries (`models/_validate.py`, `tools/_validate.py`, `tools/_call.py`) turn what
models and tools do wrong into journaled outcomes. Whatever still escapes the loop is a
bug or data nobody foresaw; it must not leave the run `running`, where every resume would
crash the same way. `ended_on_error` ends such a run `failed` with a reason. Store errors
are the exception: the journal could not be written (an outage, a lost lease), so the run
is left as it is for the next holder to resume.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from ..errors import StoreError
from ..events import EventDraft, Visibility
from ..journal import RunJournal
from ..models import ModelResponse
from ..models._validate import clean_text
from ..state import RunState
from ..tools import Tool

__all__ = ["bad_output_warning", "ended_on_error", "failed_draft", "turn_visibility"]

MAX_DETAIL_CHARS = 2_000


def failed_draft(
    reason: str, *, retryable: bool = False, detail: BaseException | None = None
) -> EventDraft:
    """`run.failed`; the error's own text goes in `detail` (audit only, see views)."""
    payload: dict[str, object] = {"reason": reason, "retryable": retryable, "answer": None}
    if detail is not None:
        try:
            text = clean_text(str(detail))[:MAX_DETAIL_CHARS]
        except Exception:  # an exception's own __str__ may raise
            text = ""
        payload["detail"] = f"{type(detail).__name__}: {text}" if text else type(detail).__name__
    return EventDraft(type="run.failed", payload=payload)


def bad_output_warning(warnings: Sequence[str], corr: str) -> EventDraft:
    """What the model boundary had to repair in an answer (see `models/_validate.py`)."""
    return EventDraft(
        type="health.warning",
        payload={"kind": "bad_model_output", "message": "; ".join(warnings)},
        correlation_id=corr,
    )


def turn_visibility(
    response: ModelResponse, tool_of: Callable[[str], Tool | None]
) -> Visibility | None:
    """A model turn's audience: a final answer is `visible`; a turn that calls an
    always-hidden tool carries that tool's arguments, so it is always hidden too."""
    if not response.tool_calls:
        return "visible"
    for call in response.tool_calls:
        tool = tool_of(call.name)
        if tool is not None and tool.visibility == "always_hidden":
            return "always_hidden"
    return None


async def ended_on_error(run: Awaitable[RunState], journal: RunJournal) -> RunState:
    """Await the loop; an unexpected exception ends the run `failed` instead of escaping."""
    try:
        return await run
    except StoreError:
        raise
    except Exception as exc:
        if journal.state.terminal:
            raise
        reason = f"the run stopped on an unexpected {type(exc).__name__}"
        try:
            await journal.append(failed_draft(reason, detail=exc))
        except Exception:
            raise exc from None
        return journal.state
