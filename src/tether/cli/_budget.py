"""`tether budget`: spend per scope and window, and the limits stored in the store."""

from __future__ import annotations

import getpass
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from ..budget import BudgetLimits, LimitChange, WindowStatus, check_scope, ledger_for
from ..errors import UsageError
from ._app import JsonOpt, StoreOpt, _print_json, _run, _store, app, out
from ._numbers import finite, money

budget_app = typer.Typer(
    help="Budget guardrails: spend, reservations and limits per scope.",
    invoke_without_command=True,
    no_args_is_help=False,
)
app.add_typer(budget_app, name="budget")


def UsdOpt(help_text: str) -> Any:
    return typer.Option(help=help_text, callback=finite)


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _money(value: float | None) -> str:
    return "-" if value is None else money(value)


@budget_app.callback()
def show_budget(ctx: typer.Context, store: StoreOpt = None, as_json: JsonOpt = False) -> None:
    """Show every scope and window: limit, spent, reserved, remaining, when it frees up."""
    if ctx.invoked_subcommand is not None:
        return

    async def go() -> list[WindowStatus]:
        s = _store(store, create=False)  # a reader: never a new store
        try:
            return await ledger_for(s).status()
        finally:
            await s.close()

    rows = _run(go)
    if as_json:
        _print_json([r.to_json() for r in rows])
        return
    if not rows:
        out.print(
            "no spend and no limits yet — set one with: tether budget set --scope global --daily 5"
        )
        return
    table = Table(box=None)
    for column in ("scope", "window", "limit", "spent", "reserved", "remaining", "frees up"):
        table.add_column(column, no_wrap=True)
    for r in rows:
        table.add_row(
            r.scope, r.window, _money(r.limit), _money(r.spent), _money(r.reserved),
            _money(r.remaining), _when(r.frees_at),
        )  # fmt: skip
    out.print(table)


def _cli_actor() -> str:
    return f"cli:{getpass.getuser()}"


async def update_limits(
    store: Any, scope: str, limits: BudgetLimits, *, actor: str
) -> BudgetLimits:
    """Store `limits` for `scope`, keeping the scope's other stored limits (the ones not
    given here), with `actor` kept as who did it; returns what is now stored.
    `tether budget set` and the console share it."""
    scope = check_scope(scope)
    ledger = ledger_for(store)
    current = (await ledger.limits()).get(scope)
    if current is not None:
        merged = current.to_json()
        merged.update({k: v for k, v in limits.to_json().items() if v is not None})
        limits = BudgetLimits.from_json(merged)
    await ledger.set_limits(scope, limits, actor=actor)
    return limits


@budget_app.command("set")
def set_budget(
    scope: Annotated[str, typer.Option(help="global, agent:NAME or tenant:NAME.")],
    store: StoreOpt = None,
    per_call: Annotated[float | None, UsdOpt("USD per model or tool call.")] = None,
    per_run: Annotated[float | None, UsdOpt("USD per run.")] = None,
    hourly: Annotated[float | None, UsdOpt("USD per rolling hour.")] = None,
    daily: Annotated[float | None, UsdOpt("USD per rolling day.")] = None,
    daily_tz: Annotated[
        str | None, typer.Option(help="Count days by the calendar in this time zone instead.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Store limits for a scope; every process sharing the store obeys them."""

    async def go() -> BudgetLimits:
        checked = check_scope(scope)
        if all(v is None for v in (per_call, per_run, hourly, daily, daily_tz)):
            raise UsageError(
                "nothing to set: give --per-call, --per-run, --hourly, --daily or --daily-tz "
                f"(tether budget clear --scope {scope} removes limits)"
            )
        limits = BudgetLimits(
            per_call=per_call, per_run=per_run, hourly=hourly, daily=daily, daily_tz=daily_tz
        )
        s = _store(store)
        try:
            return await update_limits(s, checked, limits, actor=_cli_actor())
        finally:
            await s.close()

    limits = _run(go)
    if as_json:
        _print_json({"scope": scope, **limits.to_json()})
        return
    shown = ", ".join(f"{k} {_money(v) if k != 'daily_tz' else v}"
                      for k, v in limits.to_json().items() if v is not None)  # fmt: skip
    out.print(f"{scope}: {shown or 'no limits'}")


@budget_app.command("clear")
def clear_budget(
    scope: Annotated[str, typer.Option(help="global, agent:NAME or tenant:NAME.")],
    store: StoreOpt = None,
) -> None:
    """Remove every stored limit of a scope."""

    async def go() -> None:
        s = _store(store)
        try:
            await ledger_for(s).set_limits(check_scope(scope), None, actor=_cli_actor())
        finally:
            await s.close()

    _run(go)
    out.print(f"{scope}: limits removed")


@budget_app.command("changes")
def budget_changes(
    store: StoreOpt = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 50,
    as_json: JsonOpt = False,
) -> None:
    """Who changed which limits and when (tether budget set and clear, the console)."""

    async def go() -> list[LimitChange]:
        if limit < 1:
            raise UsageError("--limit must be 1 or more")
        s = _store(store, create=False)
        try:
            return await ledger_for(s).limit_changes(limit)
        finally:
            await s.close()

    changes = _run(go)
    if as_json:
        _print_json([c.to_json() for c in changes])
        return
    if not changes:
        out.print("no limit changes recorded")
        return
    table = Table(box=None)
    for column in ("when", "scope", "limits", "by"):
        table.add_column(column, no_wrap=column != "limits")
    for c in changes:
        shown = "removed" if c.limits is None else ", ".join(
            f"{k} {v if k == 'daily_tz' else _money(v)}"
            for k, v in c.limits.to_json().items() if v is not None
        )  # fmt: skip
        table.add_row(_when(c.at), c.scope, shown, escape(c.actor))
    out.print(table)
