"""Writing the one summary of compacted turns: by a model, checked, or extractively.

The summary has its own token budget and folds the previous summary into itself, so it
converges instead of growing with the run. A model's summary is accepted only if it is
non-empty, not an error message, within budget and keeps the open-task list; otherwise
the deterministic extractive summary is used, bounded to the same budget.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ..models import Message, ModelRequest
from ..models._tokens import estimate_text_tokens
from ._context import SUMMARY_HEADER

__all__ = [
    "OPEN_TASKS",
    "check_summary",
    "extractive_summary",
    "summary_request",
]

OPEN_TASKS = "Open tasks:"
"""The section every summary keeps: what is still to do (a summary without it is refused)."""
DONE = "Done so far:"

SUMMARY_INSTRUCTIONS = (
    "You maintain the working memory of an agent whose older turns no longer fit its "
    "context. Merge the previous summary and the turns below into one new summary of at "
    "most {budget} tokens. Keep every open task, every decision with its reason, and the "
    "source (tool call, document, URL) of every fact you keep; drop chatter and raw output. "
    "Write plain text in exactly this form:\n"
    f"{OPEN_TASKS}\n- ...\n{DONE}\n- ...\n"
    "Answer with the summary only."
)

_ERROR_TEXT = re.compile(
    r"^\s*(error\b|exception\b|traceback\b|i('m| am) sorry|sorry,|i can(no|')t|"
    r"as an ai\b|unable to)",
    re.IGNORECASE,
)


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _transcript(messages: Sequence[Message], room_tokens: int) -> str:
    """The removed turns as plain lines, newest kept when they do not all fit `room_tokens`."""
    lines: list[str] = []
    for message in messages:
        if message.role == "assistant":
            if message.content.strip():
                lines.append(f"assistant: {_clip(message.content, 2_000)}")
            for call in message.tool_calls:
                lines.append(f"assistant called {call.name}({_clip(call.arguments, 500)})")
        elif message.role == "tool":
            lines.append(f"{message.name} returned: {_clip(_output(message.content), 2_000)}")
        elif message.role == "user":
            lines.append(f"user: {_clip(message.content, 2_000)}")
    kept: list[str] = []
    used = 0
    for line in reversed(lines):
        cost = estimate_text_tokens(line) + 1
        if used + cost > room_tokens:
            kept.append("(older turns left out: they did not fit the summariser's window)")
            break
        kept.append(line)
        used += cost
    return "\n".join(reversed(kept))


def _output(content: str) -> str:
    """A tool message without its runway line and artifact notice."""
    return content.split("\n[", 1)[0]


def summary_request(
    previous: str | None,
    removed: Sequence[Message],
    *,
    budget_tokens: int,
    room_tokens: int,
) -> ModelRequest:
    """The summariser's request: fits `room_tokens` of input, answers within the budget."""
    prior = previous.removeprefix(SUMMARY_HEADER).strip() if previous else "(none yet)"
    head = f"Previous summary:\n{prior}\n\nTurns to fold in:\n"
    instructions = SUMMARY_INSTRUCTIONS.format(budget=budget_tokens)
    room = room_tokens - estimate_text_tokens(head + instructions) - 64
    return ModelRequest(
        messages=(
            Message(role="system", content=instructions),
            Message(role="user", content=head + _transcript(removed, max(0, room))),
        ),
        max_tokens=budget_tokens,
        purpose="summary",
    )


def check_summary(text: str, *, budget_tokens: int, previous: str | None) -> str | None:
    """Why a model's summary is refused, or None when it is usable."""
    body = text.strip()
    if not body:
        return "the summary is empty"
    if _ERROR_TEXT.match(body):
        return f"the summary reads as an error: {_clip(body, 80)!r}"
    full = body if body.startswith(SUMMARY_HEADER) else f"{SUMMARY_HEADER}\n{body}"
    if estimate_text_tokens(full) > budget_tokens:
        return f"the summary is over its budget of {budget_tokens} tokens"
    if OPEN_TASKS.lower() not in body.lower():
        return "the summary dropped the open-task list"
    if previous is not None and _open_tasks(previous) and not _open_tasks(body):
        return "the summary dropped the open tasks the previous summary listed"
    return None


def _sections(text: str) -> tuple[list[str], list[str]]:
    """The open-task lines and the done lines of a summary (without their headings)."""
    tasks: list[str] = []
    done: list[str] = []
    target: list[str] | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.lower() == OPEN_TASKS.lower():
            target = tasks
        elif stripped.lower() == DONE.lower():
            target = done
        elif stripped and target is not None:
            target.append(line)
        elif stripped and line != SUMMARY_HEADER:
            done.append(line)  # an older, unsectioned summary: its lines are history
    return tasks, done


def _open_tasks(text: str) -> list[str]:
    return [t for t in _sections(text)[0] if t.strip("- ").strip()]


def extractive_summary(
    previous: str | None, removed: Sequence[Message], *, budget_tokens: int
) -> str:
    """A deterministic, model-free summary within `budget_tokens`.

    The previous summary's open tasks are kept; what was called and what came back is
    added to the history, and the oldest history lines go first when over budget.
    """
    tasks, done = _sections(previous) if previous else ([], [])
    for message in removed:
        if message.role == "assistant":
            if message.content.strip():
                done.append(f"- you said: {_clip(message.content, 200)}")
            for call in message.tool_calls:
                done.append(f"- you called {call.name}({_clip(call.arguments, 120)})")
        elif message.role == "tool":
            done.append(f"  -> {message.name}: {_clip(_output(message.content), 160)}")
    if not tasks:
        tasks = ["- the task above (no other open task recorded)"]
    fixed = [SUMMARY_HEADER, OPEN_TASKS, *tasks, DONE]
    used = sum(estimate_text_tokens(line) + 1 for line in fixed)
    kept: list[str] = []
    for line in reversed(done):
        cost = estimate_text_tokens(line) + 1
        if used + cost > budget_tokens:
            break
        kept.append(line)
        used += cost
    text = "\n".join([*fixed, *reversed(kept)])
    while estimate_text_tokens(text) > budget_tokens and kept:
        kept.pop()  # the oldest line kept
        text = "\n".join([*fixed, *reversed(kept)])
    while estimate_text_tokens(text) > budget_tokens and len(fixed) > 4:
        # Open tasks alone over budget: keep the newest ones.
        fixed.pop(2)
        text = "\n".join(fixed)
    return text
