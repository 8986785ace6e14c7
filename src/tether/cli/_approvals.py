"""`tether approvals`, `approve` and `reject`: the approval requests waiting for a person,
and deciding them from the command line."""

from __future__ import annotations

import getpass
import json
from typing import Annotated

import typer
from rich.markup import escape

from ..approvals import (
    Approval,
    Decision,
    expire_approvals,
    parse_request_id,
    pending_approvals,
    resolve_approval,
)
from ._agents import agent_of_run
from ._app import (
    JsonOpt,
    StoreOpt,
    _print_json,
    _run,
    _store,
    _store_arg,
    _store_url,
    app,
    err,
    out,
)
from ._hints import next_step
from ._prompt import json_object


@app.command()
def approvals(
    store: StoreOpt = None,
    run_id: Annotated[str | None, typer.Option("--run", help="Only this run.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List approval requests waiting for a decision (expired ones get their default)."""

    async def go() -> list[Approval]:
        s = _store(store, create=False)
        try:
            await expire_approvals(s, run_id=run_id)
            return await pending_approvals(s, run_id=run_id)
        finally:
            await s.close()

    pending = _run(go)
    if as_json:
        _print_json([a.to_json() for a in pending])
        return
    if not pending:
        out.print("no approvals waiting")
        return
    for shown in (a.to_json() for a in pending):  # the redacted, operator-level view
        out.print(
            f"[bold]{shown['request_id']}[/bold]  {shown['kind']}  "
            f"requested {shown['requested_at'][:19]}"
        )
        if shown["kind"] == "question":
            out.print(f"  question: {escape(shown['question'] or '')}")
        else:
            out.print(f"  tool {shown['tool']} {escape(json.dumps(shown['arguments']))}")
        if shown["reason"] and shown["kind"] != "question":
            out.print(f"  reason: {escape(shown['reason'][:300])}")
        if shown["expires_at"]:
            out.print(f"  expires {shown['expires_at'][:19]} (then: {shown['on_expiry']})")


def _resolve(
    store: str | None,
    request_id: str,
    *,
    decision: Decision,
    arguments: str | None,
    comment: str | None,
    as_json: bool,
    agent: str | None = None,
) -> None:
    store_url = _store_url(store)

    async def go() -> tuple[Approval, str]:
        s = _store(store_url, create=False)
        try:
            args = json_object(arguments) if arguments is not None else None
            definition = None
            if args is not None:
                # Edits are checked against the tool's schema before anything is journaled.
                definition = await agent_of_run(s, parse_request_id(request_id)[0], agent)
            approval = await resolve_approval(
                s, request_id, decision=decision, arguments=args, agent=definition,
                comment=comment, actor=f"cli:{getpass.getuser()}",
            )  # fmt: skip
            return approval, await next_step(s, approval.run_id, store_arg=_store_arg(store_url))
        finally:
            await s.close()

    approval, hint = _run(go)
    if as_json:
        _print_json(approval.to_json())
        return
    out.print(f"{approval.request_id} {approval.decision}")
    if approval.resolved_arguments is not None:  # as --json shows them: redacted
        shown = approval.to_json()["resolved_arguments"]
        out.print(f"runs with: {escape(json.dumps(shown, ensure_ascii=False))}")
    out.print(hint)


@app.command()
def approve(
    request_id: Annotated[str, typer.Argument(help="The approval id (apr:RUN_ID:SEQ).")],
    store: StoreOpt = None,
    args: Annotated[
        str | None,
        typer.Option("--args", help='Arguments to change, as JSON: \'{"title": "..."}\'.'),
    ] = None,
    comment: Annotated[
        str | None, typer.Option(help="A note for the journal; for a question, the answer.")
    ] = None,
    agent: Annotated[
        str | None,
        typer.Option(help="The run's agent (module:attr), to check --args, if it moved."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Approve a waiting call (optionally with edited arguments), or answer a question.

    --args JSON changes only the arguments it names; the rest stay as the agent asked.
    The result is checked against the tool's schema before the approval is journaled."""
    _resolve(
        store, request_id, decision="approved", arguments=args, comment=comment,
        as_json=as_json, agent=agent,
    )  # fmt: skip


@app.command()
def reject(
    request_id: Annotated[str, typer.Argument(help="The approval id (apr:RUN_ID:SEQ).")],
    reason: Annotated[str, typer.Option(help="Why: the agent reads this as the call's result.")],
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Reject a waiting call; the agent sees the rejection and carries on."""
    if not reason.strip():
        err.print("[red]error:[/red] --reason is empty: the agent reads it as the call's result")
        raise typer.Exit(2)
    _resolve(
        store, request_id, decision="rejected", arguments=None, comment=reason, as_json=as_json
    )
