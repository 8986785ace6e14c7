"""Deciding an approval at the terminal, inline in `demo`, `run` and `resume`.

An answer the prompt does not know, or arguments that are not valid JSON or do not fit
the tool, are asked for again; nothing is journaled until a decision is whole. Ctrl-C
(or the end of input) leaves the approval waiting, and says how to decide it later.
"""

from __future__ import annotations

import contextlib
import json
import select
import signal
import sys
from collections.abc import Iterator
from typing import Any

from rich.console import Console
from rich.markup import escape

from ..agent import Agent
from ..approvals import Approval, resolve_approval
from ..errors import UsageError
from ..journal import Store

__all__ = ["LeftWaiting", "ask_inline", "json_object"]

CHOICES = "[a]pprove, [r]eject, [e]dit arguments, [w]ait"
ANSWERS = frozenset({"a", "r", "e", "w", "approve", "reject", "edit", "wait"})


class LeftWaiting(Exception):
    """The person at the terminal pressed Ctrl-C (or closed input) at a prompt."""


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def json_object(text: str) -> dict[str, Any]:
    """A JSON object typed by a person; anything else is a one-line usage error."""
    try:
        value = json.loads(text, parse_constant=_no_constant)
        json.dumps(value, allow_nan=False, ensure_ascii=False).encode()  # "\ud800" decodes unpaired
    except json.JSONDecodeError as exc:
        raise UsageError(f"not valid JSON: {exc.msg} (at character {exc.pos})") from None
    except (ValueError, RecursionError) as exc:
        raise UsageError(f"not usable JSON: {exc}") from None
    if not isinstance(value, dict):
        raise UsageError('the arguments must be a JSON object, like {"title": "..."}')
    return value


@contextlib.contextmanager
def _interruptible() -> Iterator[None]:
    """Let Ctrl-C interrupt a blocking prompt inside the event loop.

    asyncio.run's own SIGINT handler only cancels the main task, which a thread blocked
    reading the terminal never notices: the first Ctrl-C would be swallowed.
    """
    try:
        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    except ValueError:  # not the main thread: nothing to change
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _read_line() -> str:
    """One line from stdin, waking every 0.2 s so a Ctrl-C is never missed.

    `input()` checks for signals only when its blocking read is interrupted: a Ctrl-C
    arriving just before the read starts waits for the next Enter. A terminal in line mode
    reports stdin readable only once a whole line (or the end of input) is there.
    """
    try:
        fd = sys.stdin.fileno()
    except (AttributeError, OSError, ValueError):
        fd = -1
    while fd >= 0 and not select.select([fd], [], [], 0.2)[0]:
        pass  # between waits, Python runs the SIGINT handler
    line = sys.stdin.readline()
    if not line:
        raise EOFError
    return line.rstrip("\r\n")


def _ask(text: str, *, default: str | None = None) -> str:
    shown = f"{text} [{default}]: " if default is not None else f"{text}: "
    try:
        with _interruptible():
            while True:
                sys.stderr.write(shown)
                sys.stderr.flush()
                answer = _read_line()
                if answer:
                    return answer
                if default is not None:
                    return default
    except (KeyboardInterrupt, EOFError):
        raise LeftWaiting from None


async def ask_inline(console: Console, store: Store, approval: Approval, *, agent: Agent) -> bool:
    """Offer approve / reject / edit; False if the person chose to leave it waiting.

    Raises LeftWaiting on Ctrl-C. `agent` is the run's agent: edits are checked against
    its tool's schema.
    """
    console.print()
    console.print(f"[bold cyan]approval needed[/bold cyan] {approval.request_id}")
    if approval.kind == "question":
        console.print(f"question from {approval.tool}: {escape(approval.question or '')}")
        answer = _ask("answer (empty to leave it waiting)", default="")
        if not answer:
            return False
        await resolve_approval(
            store, approval.request_id, decision="approved", comment=answer, actor="cli"
        )
        return True
    console.print(f"tool {approval.tool} {escape(json.dumps(approval.arguments))}")
    if approval.reason:
        console.print(f"agent's reason: {escape(approval.reason)}")
    while True:
        choice = _ask(CHOICES, default="a").strip().lower()
        if choice in ANSWERS:
            break
        console.print(f"[red]unknown answer {escape(repr(choice))}[/red]: type a, r, e or w")
    if choice.startswith("a"):
        await resolve_approval(store, approval.request_id, decision="approved", actor="cli")
    elif choice.startswith("r"):
        reason = _ask("reason", default="rejected at the terminal")
        await resolve_approval(
            store, approval.request_id, decision="rejected", comment=reason, actor="cli"
        )
    elif choice.startswith("e"):
        console.print("type the arguments to change as JSON; they are merged onto the call's")
        while True:
            text = _ask("arguments as JSON", default=json.dumps(approval.arguments))
            try:
                await resolve_approval(
                    store, approval.request_id, decision="approved", arguments=json_object(text),
                    agent=agent, actor="cli",
                )  # fmt: skip
            except UsageError as exc:
                console.print(f"[red]error:[/red] {escape(str(exc))}; try again (Ctrl-C to leave)")
                continue
            break
    else:
        return False
    return True
