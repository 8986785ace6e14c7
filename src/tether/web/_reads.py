"""The console's pages, each with its JSON twin under `/api`, and the run export.

Every loader reads through `_pages` (the library's views) with the reader's audience;
the page and its twin render the same dictionary.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from ..errors import UsageError
from ..views import Viewer
from . import _pages
from ._auth import Reader
from ._console import NO_STORE, Console
from .tokens import list_tokens

__all__ = ["add_read_routes"]

Loader = Callable[[Request, Reader], Awaitable[dict[str, Any]]]


def q(request: Request, name: str) -> str | None:
    value = request.query_params.get(name)
    return value if value not in (None, "") else None


def q_int(request: Request, name: str, default: int) -> int:
    value = q(request, name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"{name} must be a whole number, not {value!r}") from None


def _pair(
    app: FastAPI,
    console: Console,
    path: str,
    template: str,
    summary: str,
    load: Loader,
    query: dict[str, str] | None = None,
) -> None:
    """The page at `path` and its JSON twin at `/api{path}` (in the OpenAPI document,
    with its path and query parameters)."""

    async def html(request: Request) -> Response:
        reader = await console.reader_of(request)
        return console.page(request, reader, template, **await load(request, reader))

    async def api(request: Request) -> Response:
        reader = await console.reader_of(request)
        return JSONResponse(await load(request, reader))

    parameters = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in re.findall(r"{(\w+)}", path)
    ] + [
        {"name": name, "in": "query", "required": False, "description": text,
         "schema": {"type": "string"}}
        for name, text in (query or {}).items()
    ]  # fmt: skip
    app.add_api_route(path, html, methods=["GET"], include_in_schema=False)
    app.add_api_route(
        "/api" + path, api, methods=["GET"], summary=summary,
        openapi_extra={"parameters": parameters} if parameters else None,
        responses={401: {"description": "no token, or one refused"},
                   403: {"description": "the role may not read this"}},
    )  # fmt: skip


def add_read_routes(app: FastAPI, console: Console) -> None:
    async def load_runs(request: Request, reader: Reader) -> dict[str, Any]:
        where = _pages.RunFilter(
            status=q(request, "status"), agent=q(request, "agent"), tenant=q(request, "tenant"),
            since=q(request, "since"), until=q(request, "until"),
            limit=q_int(request, "limit", 100),
        )  # fmt: skip
        return await _pages.runs_data(console.store(), reader.view, where)

    async def load_run(request: Request, reader: Reader) -> dict[str, Any]:
        before = q(request, "before")
        return await _pages.run_data(
            console.store(), reader.view, request.path_params["run_id"],
            before=q_int(request, "before", 0) if before is not None else None,
        )  # fmt: skip

    async def load_why(request: Request, reader: Reader) -> dict[str, Any]:
        return await _pages.why_data(console.store(), reader.view, request.path_params["event"])

    async def load_inbox(request: Request, reader: Reader) -> dict[str, Any]:
        reader.require("operator", "audit", "admin")
        return await _pages.inbox_data(console.store(), reader.view)

    async def load_budgets(request: Request, reader: Reader) -> dict[str, Any]:
        reader.require("operator", "audit", "admin")
        return await _pages.budgets_data(console.store())

    async def load_audit(request: Request, reader: Reader) -> dict[str, Any]:
        reader.require("operator", "audit", "admin")
        where = _pages.audit_filter(
            run_id=q(request, "run"), correlation=q(request, "correlation"),
            types=[t for t in request.query_params.getlist("type") if t],
            tool=q(request, "tool"), actor=q(request, "actor"), since=q(request, "since"),
            until=q(request, "until"), limit=q_int(request, "limit", 100),
        )  # fmt: skip
        if where.limit > _pages.SCAN_LIMIT:  # one request reads at most this many events
            raise UsageError(f"limit must be at most {_pages.SCAN_LIMIT}")
        data = await _pages.audit_data(console.store(), reader.view, where)
        return {**data, "query": {k: v for k, v in request.query_params.items() if v}}

    async def load_health(request: Request, reader: Reader) -> dict[str, Any]:
        reader.require("operator", "audit", "admin")
        store = console.store()
        data = await _pages.health_data(store, reader.view)
        last = getattr(store, "last_doctor", None)
        kept = await last() if console.doctor is None and last is not None else None
        return {**data, "doctor": console.doctor or kept}

    async def load_tokens(request: Request, reader: Reader) -> dict[str, Any]:
        reader.require("admin")
        records = await list_tokens(console.store())
        return {
            "tokens": [
                {"token_id": t.token_id, "name": t.name, "role": t.role,
                 "created_at": t.created_at, "expires_at": t.expires_at,
                 "revoked_at": t.revoked_at}
                for t in records
            ]
        }  # fmt: skip

    def pair(
        path: str, template: str, summary: str, load: Loader, query: dict[str, str] | None = None
    ) -> None:
        _pair(app, console, path, template, summary, load, query)

    pair("/tokens", "tokens.html", "Console tokens (admin; never the tokens)", load_tokens)
    when = "ISO-8601 (UTC unless an offset is given) or a duration ago: 30m, 2h, 7d"
    pair(
        "/runs",
        "runs.html",
        "Runs, filtered by status, agent, tenant and time",
        load_runs,
        {
            "status": "one run status",
            "agent": "agent name",
            "tenant": "tenant",
            "since": f"created at or after: {when}",
            "until": f"created before: {when}",
            "limit": "at most this many runs, newest first (default 100, at most 10,000)",
        },
    )
    pair(
        "/runs/{run_id}",
        "run.html",
        "A run: summary and timeline for the reader",
        load_run,
        {"before": "show the timeline window of events before this seq (default: newest)"},
    )
    pair("/why/{event}", "why.html", "Why did the agent do this? (the causal chain)", load_why)
    pair("/approvals", "approvals.html", "Pending approvals across runs", load_inbox)
    pair("/budgets", "budgets.html", "Budget limits, spend and reservations", load_budgets)
    pair(
        "/audit",
        "audit.html",
        "Search every journal (tether audit filters)",
        load_audit,
        {
            "run": "run id",
            "correlation": "cycle (RUN_ID/cN)",
            "type": "event type (repeatable)",
            "tool": "tool name",
            "actor": "actor; end with * for a prefix",
            "since": when,
            "until": when,
            "limit": "at most this many events, oldest first (default 100, at most 10,000)",
        },
    )
    pair("/health", "health.html", "Health events and the last doctor result", load_health)

    @app.get("/runs/{run_id}/export", include_in_schema=False)
    @app.get("/api/runs/{run_id}/export", summary="The run as JSON Lines, for the reader's view")
    async def export(request: Request, run_id: str) -> Response:
        reader = await console.reader_of(request)
        lines = await Viewer(console.store(), reader.view).export_lines(run_id)
        return Response(
            b"".join(line + b"\n" for line in lines),
            media_type="application/x-ndjson",
            headers={"content-disposition": f'attachment; filename="{run_id}.jsonl"', **NO_STORE},
        )
