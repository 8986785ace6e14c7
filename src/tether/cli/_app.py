"""The `tether` app and what its commands share: the consoles, the common options, running
a command's coroutine with one-line errors, and opening the store it names.

The commands live in modules by what they act on (`_runs`, `_demo`, `_doctor`,
`_approvals`, `_audit`, ...); each registers itself on `app` when `tether.cli` imports it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shlex
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from .._redact import default_redactor
from ..errors import TetherError, UsageError
from ..journal import Store, open_store, store_url_from_env
from ..loop import Runtime
from ..views import Role, parse_role
from ._numbers import finite

T = TypeVar("T")

app = typer.Typer(
    name="tether",
    help="Tether: a durable runtime for long-running LLM agents.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Piped output keeps whole lines (no wrapping at 80 columns) so scripts can grep it.
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False, soft_wrap=True)

StoreOpt = Annotated[
    str | None,
    typer.Option(
        "--store",
        envvar="TETHER_STORE",
        help="Store URL: sqlite:///path.db (default sqlite:///./tether.db) or memory://.",
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
ViewOpt = Annotated[
    str,
    typer.Option(
        "--view",
        help="Audience: user (decisions), operator (debugging, the default) or audit (all, "
        "unredacted).",
    ),
]
YesOpt = Annotated[bool, typer.Option("--yes", help="Approve every approval request.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", help="No live progress.")]
MaxStepsOpt = Annotated[int | None, typer.Option(help="Step (model turn) limit.")]
MaxCostOpt = Annotated[float | None, typer.Option(help="Cost limit in USD.", callback=finite)]
MaxTimeOpt = Annotated[
    float | None, typer.Option(help="Active time limit in seconds.", callback=finite)
]
TenantOpt = Annotated[
    str | None, typer.Option(help="Tenant the run's spend counts against (budget scope).")
]
DetachOpt = Annotated[
    bool,
    typer.Option("--detach", help="Leave approval requests waiting and print how to resolve."),
]
OTEL_HELP = escape(
    "OpenTelemetry spans: set TETHER_OTEL=console (spans on stderr, one JSON object a line) "
    "or TETHER_OTEL=otlp (an OTLP exporter set up by the OTEL_EXPORTER_OTLP_* variables; "
    "OTEL_SERVICE_NAME defaults to tether). Needs pip install 'tether-runtime[otel]'."
)  # the epilog of run, resume, demo and worker (rich markup: `[otel]` escaped)


def _run(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine; user mistakes become one line on stderr and exit code 2."""
    try:
        return asyncio.run(make())
    except UsageError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None
    except TetherError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        if _driving:
            run_id, store_url = _driving[-1]
            err.print(
                f"interrupted: run {run_id} is safe in its journal; continue it with: "
                f"tether resume {run_id}{_store_arg(store_url)}"
            )
        else:
            err.print("interrupted")
        raise typer.Exit(130) from None


def _role(view: str) -> Role:
    try:
        return parse_role(view)
    except UsageError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None


def _default_store_url() -> str | None:
    try:
        return store_url_from_env(None)
    except UsageError:
        return None


def _store_url(url: str | None) -> str:
    """The store URL a command uses; a mistake in it is one line and exit 2."""
    try:
        return store_url_from_env(url)
    except UsageError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None


def _store(url: str | None, *, create: bool = True) -> Store:
    """The store at `url`; readers pass `create=False`, so a mistyped path is an error,
    not a new empty store (a store they cannot write is opened read-only)."""
    if url is not None and not url.strip():
        raise UsageError("--store is empty: give a store URL or leave the option out")
    return open_store(url, create=create)


_driving: list[tuple[str, str]] = []
"""The run this process drives and its store, for the message Ctrl-C prints."""


def _store_arg(store_url: str) -> str:
    """` --store URL` when a printed command needs it to find the same store, quoted for
    the shell (a PostgreSQL URL's `?schema=` is a glob that zsh refuses unquoted)."""
    return "" if store_url == _default_store_url() else f" --store {shlex.quote(store_url)}"


@contextlib.asynccontextmanager
async def _runtime(store_url: str, *, create: bool = True) -> AsyncIterator[Runtime]:
    """A Runtime on the store, closed on the way out; its appends become OpenTelemetry
    spans when TETHER_OTEL asks (every span exported before the process exits).
    `create=False` for commands on an existing run: a missing store is an error."""
    from ..telemetry import instrument, observer_from_env

    observer = observer_from_env()
    runtime = Runtime(store_url if create else _store(store_url, create=False))
    if observer is not None:
        runtime.store = instrument(runtime.store, observer)
    try:
        yield runtime
    finally:
        try:
            await runtime.close()
        finally:
            if observer is not None:
                await asyncio.to_thread(observer.close)


def _print_json(value: Any, *, role: str = "operator") -> None:
    """Print JSON for scripts; below the audit role every string is redacted first."""
    if role != "audit":
        value = default_redactor().value(value)
    out.print_json(data=value) if sys.stdout.isatty() else print(json.dumps(value))


def _limits_overrides(
    max_steps: int | None, max_cost: float | None, max_time: float | None
) -> dict[str, Any]:
    return {"max_steps": max_steps, "max_cost_usd": max_cost, "max_time_s": max_time}
