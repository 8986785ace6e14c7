"""The console's ASGI app: server-rendered pages, each with a JSON twin under `/api`.

Every route reads through `_pages` (the library's views) with the reader's audience, and
every action calls the function the CLI calls, journaling the reader as the actor.
Errors become a page or `{"error": {...}}` with the right status, never a traceback;
below the audit role their text is redacted like any other string.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException

from .._clock import Clock, SystemClock, iso
from .._redact import default_redactor
from ..approvals import ApprovalConflict, parse_request_id, resolve_approval
from ..budget import BudgetLimits, check_scope
from ..cli._agents import agent_of_run
from ..cli._budget import update_limits
from ..errors import (
    CorruptionError,
    RunNotFound,
    StoreError,
    StoreUnavailable,
    TetherError,
    UsageError,
)
from ..events import EventDraft
from ..journal import Store, calls_after, fork_run, open_store, read_events
from ..journal._base import DEFAULT_QUEUE
from ..journal._leases import brief_journal
from . import _pages
from ._auth import COOKIE, Forbidden, NotLoggedIn, Reader, csrf_for
from .tokens import TokenRejected, authenticate, list_tokens

__all__ = ["create_app"]

log = logging.getLogger("tether.web")
TEMPLATES = Path(__file__).parent / "templates"


class _Console:
    """The app's state: the store (opened on first use, so a store that is down at start
    is reported per request and picked up once it is back) and the CSRF secret."""

    def __init__(self, store_url: str | None, store: Store | None, clock: Clock) -> None:
        self.store_url = store_url
        self._store = store
        self._owned = store is None
        self.clock = clock
        self.secret = secrets.token_bytes(32)
        self.doctor: dict[str, Any] | None = None

    def store(self) -> Store:
        if self._store is None:
            self._store = open_store(self.store_url, create=False)
        return self._store

    async def close(self) -> None:
        if self._owned and self._store is not None:
            await self._store.close()
            self._store = None


def _is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def create_app(
    store_url: str | None = None, *, store: Store | None = None, clock: Clock | None = None
) -> FastAPI:
    """The console for the store at `store_url` (or an open `store`, which stays open)."""
    console = _Console(store_url, store, clock or SystemClock())

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await console.close()

    app = FastAPI(
        title="Tether console",
        summary="Runs, timelines by role, the approvals inbox, budgets, health and audit.",
        lifespan=lifespan,
        docs_url="/api/docs",
        openapi_url="/api/openapi.json",
        redoc_url=None,
    )
    app.state.console = console

    @app.middleware("http")
    async def protect(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        """Pages hold what a role may read: never framed by another site, never cached."""
        response = await call_next(request)
        response.headers.setdefault("cache-control", "no-store")
        response.headers["x-frame-options"] = "DENY"
        response.headers["x-content-type-options"] = "nosniff"
        response.headers["referrer-policy"] = "no-referrer"
        if request.url.path != "/api/docs":  # the OpenAPI page loads its own scripts
            response.headers["content-security-policy"] = _CSP
        return response

    templates = Jinja2Templates(directory=str(TEMPLATES))
    templates.env.filters["tojson_pretty"] = lambda v: json.dumps(v, indent=2, sort_keys=True)
    templates.env.filters["money"] = lambda v: f"${v:.4f}" if isinstance(v, int | float) else "-"
    templates.env.filters["when"] = lambda v: str(v or "")[:19].replace("T", " ")
    templates.env.filters["epoch"] = lambda v: iso(v)[:19].replace("T", " ")

    # -- who is asking ------------------------------------------------------------------

    async def reader_of(request: Request) -> Reader:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        via_cookie = False
        if scheme.lower() != "bearer" or not token.strip():
            token = request.cookies.get(COOKIE, "")
            via_cookie = True
        if not token:
            raise NotLoggedIn("log in with a console token (tether token create)")
        try:
            record = await authenticate(console.store(), token.strip(), clock=console.clock)
        except TokenRejected as exc:
            raise NotLoggedIn(str(exc)) from None
        return Reader(record=record, via_cookie=via_cookie, csrf=csrf_for(console.secret, record))

    def page(request: Request, reader: Reader | None, name: str, **context: Any) -> Response:
        return templates.TemplateResponse(
            request, name, {"reader": reader, **context}, headers=_NO_STORE
        )

    # -- errors -------------------------------------------------------------------------

    def error(
        request: Request, status: int, message: str, reader: Reader | None = None
    ) -> Response:
        if reader is None or reader.view != "audit":
            message = default_redactor().text(message)
        if _is_api(request):
            return JSONResponse(
                {"error": {"status": status, "message": message}}, status_code=status
            )
        return templates.TemplateResponse(
            request, "error.html", {"reader": reader, "status": status, "message": message},
            status_code=status, headers=_NO_STORE,
        )  # fmt: skip

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return error(request, exc.status_code, str(exc.detail))

    @app.exception_handler(TetherError)
    async def tether_error(request: Request, exc: TetherError) -> Response:
        if isinstance(exc, NotLoggedIn):
            if _is_api(request):
                return error(request, 401, str(exc))
            if COOKIE not in request.cookies:
                return RedirectResponse("/login", status_code=303)
            # A session whose token was revoked or expired: say so, and forget it.
            response = templates.TemplateResponse(
                request, "login.html", {"reader": None, "problem": str(exc)}, status_code=401
            )
            response.delete_cookie(COOKIE)
            return response
        if isinstance(exc, Forbidden):
            return error(request, 403, str(exc))
        if isinstance(exc, RunNotFound):
            return error(request, 404, str(exc))
        if isinstance(exc, ApprovalConflict):
            return error(request, 409, str(exc))
        if isinstance(exc, UsageError):
            return error(request, 400, str(exc))
        if isinstance(exc, StoreUnavailable):
            return error(request, 503, f"the store is unavailable: {exc}")
        if isinstance(exc, CorruptionError):
            return error(request, 500, f"{exc} (tether doctor shows what is damaged)")
        if isinstance(exc, StoreError):
            return error(request, 503, f"the store could not answer: {exc}")
        return error(request, 500, str(exc))

    @app.exception_handler(Exception)
    async def any_error(request: Request, exc: Exception) -> Response:
        # A bug: the reader gets no internals; the server log gets the type and message.
        log.error("console request %s failed: %s: %s", request.url.path, type(exc).__name__, exc)
        return error(request, 500, "internal error (logged on the server)")

    # -- login --------------------------------------------------------------------------

    @app.get("/", include_in_schema=False)
    async def home() -> Response:
        return RedirectResponse("/runs", status_code=303)

    @app.get("/login", response_class=HTMLResponse, include_in_schema=False)
    async def login_form(request: Request) -> Response:
        return page(request, None, "login.html", problem=None)

    @app.post("/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        _same_site_form(request)  # no other site logs a reader in with its own token
        form = await request.form()
        token = str(form.get("token") or "").strip()
        try:
            await authenticate(console.store(), token, clock=console.clock)
        except TokenRejected as exc:
            return templates.TemplateResponse(
                request, "login.html", {"reader": None, "problem": str(exc)}, status_code=401
            )
        response = RedirectResponse("/runs", status_code=303)
        response.set_cookie(
            COOKIE, token, httponly=True, samesite="strict", secure=request.url.scheme == "https"
        )
        return response

    @app.post("/logout", include_in_schema=False)
    async def logout(request: Request) -> Response:
        reader = await reader_of(request)
        reader.check_csrf(str((await request.form()).get("csrf") or ""))
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE)
        return response

    @app.get("/api/me", summary="The token's role and the view it reads with")
    async def me(request: Request) -> Response:
        r = await reader_of(request)
        return JSONResponse(
            {"token_id": r.record.token_id, "name": r.record.name, "role": r.role,
             "view": r.view, "acts": r.acts},
        )  # fmt: skip

    # -- one route pair per page: HTML, and its JSON twin --------------------------------

    Loader = Callable[[Request, Reader], Awaitable[dict[str, Any]]]

    def pair(
        path: str, template: str, summary: str, load: Loader, query: dict[str, str] | None = None
    ) -> None:
        """The page at `path` and its JSON twin at `/api{path}` (in the OpenAPI document,
        with its path and query parameters)."""

        async def html(request: Request) -> Response:
            reader = await reader_of(request)
            return page(request, reader, template, **await load(request, reader))

        async def api(request: Request) -> Response:
            reader = await reader_of(request)
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
        from ..views import Viewer

        reader = await reader_of(request)
        lines = await Viewer(console.store(), reader.view).export_lines(run_id)
        return Response(
            b"".join(line + b"\n" for line in lines),
            media_type="application/x-ndjson",
            headers={"content-disposition": f'attachment; filename="{run_id}.jsonl"', **_NO_STORE},
        )

    # -- actions: the CLI's functions, with the reader as actor --------------------------

    async def body_of(request: Request, reader: Reader) -> dict[str, Any]:
        """A JSON body (API) or a form (pages; its CSRF token checked)."""
        if _is_api(request):
            try:
                data = json.loads(await request.body() or b"{}")
            except (ValueError, UnicodeDecodeError):
                raise UsageError("the request body is not valid JSON") from None
            if not isinstance(data, dict):
                raise UsageError("the request body must be a JSON object")
            # A bearer token cannot be forged by another site; a cookie sent to the API can.
            reader.check_csrf(request.headers.get("x-csrf-token"))
            return data
        _same_site_form(request)
        form = await request.form()
        reader.check_csrf(str(form.get("csrf") or ""))
        return {k: v for k, v in form.items() if isinstance(v, str)}

    def done(request: Request, data: dict[str, Any], to: str) -> Response:
        if _is_api(request):
            return JSONResponse(data)
        return RedirectResponse(to, status_code=303)

    async def decide(request: Request, request_id: str, decision: str) -> Response:
        reader = await reader_of(request)
        reader.require("operator", "admin")
        data = await body_of(request, reader)
        store = console.store()
        run_id, _ = parse_request_id(request_id)
        arguments = data.get("arguments")
        if isinstance(arguments, str):  # the form's textarea
            arguments = _edited(arguments, data.get("original"))
        if arguments is not None and not isinstance(arguments, dict):
            raise UsageError("arguments must be a JSON object of the fields to change")
        comment = data.get("reason") if decision == "rejected" else data.get("comment")
        comment = comment.strip() if isinstance(comment, str) and comment.strip() else None
        if decision == "rejected" and comment is None:
            raise UsageError("a rejection needs a reason: the agent reads it as the result")
        agent = await agent_of_run(store, run_id) if arguments else None
        approval = await resolve_approval(
            store, request_id, decision=decision,  # type: ignore[arg-type]
            arguments=arguments or None, agent=agent, comment=comment, actor=reader.actor,
        )  # fmt: skip
        log.info("%s %s by %s", request_id, approval.decision, reader.actor)
        return done(request, approval.to_json(redact=reader.view != "audit"), "/approvals")

    @app.post("/approvals/{request_id}/approve", include_in_schema=False)
    @app.post(
        "/api/approvals/{request_id}/approve", summary="Approve (arguments may be edited)",
        openapi_extra=_body({"arguments": {"type": "object", "description": "fields to change"},
                             "comment": {"type": "string"}}),
    )  # fmt: skip
    async def approve(request: Request, request_id: str) -> Response:
        return await decide(request, request_id, "approved")

    @app.post("/approvals/{request_id}/reject", include_in_schema=False)
    @app.post(
        "/api/approvals/{request_id}/reject", summary="Reject with a reason",
        openapi_extra=_body({"reason": {"type": "string"}}, required=["reason"]),
    )  # fmt: skip
    async def reject(request: Request, request_id: str) -> Response:
        return await decide(request, request_id, "rejected")

    @app.post("/runs/{run_id}/fork", include_in_schema=False)
    @app.post(
        "/api/runs/{run_id}/fork", summary="Start a new run from a prefix of this one",
        openapi_extra=_body({"at": {"type": "integer", "description": "last seq to keep"}},
                            required=["at"]),
    )  # fmt: skip
    async def fork(request: Request, run_id: str) -> Response:
        reader = await reader_of(request)
        reader.require("operator", "admin")
        data = await body_of(request, reader)
        at = _whole(data.get("at"))
        if at is None:
            raise UsageError("give the seq to fork at as a whole number")
        store = console.store()
        new_id = await fork_run(store, run_id, at_seq=at, owner=reader.actor)
        await _note(store, new_id, reader.actor, f"forked from {run_id} at seq {at}")
        discarded, unreadable = await calls_after(store, run_id, at)
        log.info("%s forked at %d into %s by %s", run_id, at, new_id, reader.actor)
        result = {
            "run_id": new_id, "forked_from": run_id, "at_seq": at, "by": reader.actor,
            "discarded_calls": [c.to_json() for c in discarded],
            "unreadable_events": unreadable,
        }  # fmt: skip
        return done(request, result, f"/runs/{new_id}")

    @app.post("/runs/{run_id}/queue", include_in_schema=False)
    @app.post("/api/runs/{run_id}/queue", summary="Hand the run to a worker (its queue)")
    async def queue(request: Request, run_id: str) -> Response:
        reader = await reader_of(request)
        reader.require("operator", "admin")
        await body_of(request, reader)
        store = console.store()
        record = await store.get_run(run_id)
        if record.summary.status not in ("queued", "running"):
            raise UsageError(
                f"run {run_id} is {record.summary.status}: only a queued or running run that "
                "no process drives can be handed to a worker"
            )
        created = (await read_events(store, run_id, until_seq=1))[0].payload
        name = (created.get("metadata") or {}).get("queue") or DEFAULT_QUEUE
        async with brief_journal(store, run_id, role="console") as journal:
            await store.enqueue(run_id, queue=name)  # claimable once this lease is released
            await journal.append(_note_draft(reader.actor, f"handed to the worker queue {name!r}"))
        log.info("%s queued on %s by %s", run_id, name, reader.actor)
        return done(request, {"run_id": run_id, "queue": name, "by": reader.actor},
                    f"/runs/{run_id}")  # fmt: skip

    @app.post("/budgets", include_in_schema=False)
    @app.post(
        "/api/budgets", summary="Set a scope's limits (admin)",
        openapi_extra=_body(
            {"scope": {"type": "string", "description": "global, agent:NAME or tenant:NAME"},
             **{k: {"type": "number", "description": "USD"}
                for k in ("per_call", "per_run", "hourly", "daily")},
             "daily_tz": {"type": "string"}},
            required=["scope"],
        ),
    )  # fmt: skip
    async def set_budget(request: Request) -> Response:
        reader = await reader_of(request)
        reader.require("admin")
        data = await body_of(request, reader)
        scope = check_scope(str(data.get("scope") or "").strip())
        values: dict[str, Any] = {}
        for key in ("per_call", "per_run", "hourly", "daily"):
            raw = data.get(key)
            if raw in (None, ""):
                continue
            try:
                values[key] = float(raw)
            except (TypeError, ValueError):
                raise UsageError(f"{key} must be a number of USD, not {raw!r}") from None
        if data.get("daily_tz"):
            values["daily_tz"] = str(data["daily_tz"])
        if not values:
            raise UsageError("nothing to set: give per_call, per_run, hourly, daily or daily_tz")
        limits = await update_limits(
            console.store(), scope, BudgetLimits(**values), actor=reader.actor
        )
        log.info("budget %s set to %s by %s", scope, limits.to_json(), reader.actor)
        return done(request, {"scope": scope, **limits.to_json(), "by": reader.actor}, "/budgets")

    @app.post("/health/doctor", include_in_schema=False)
    @app.post("/api/health/doctor", summary="Verify the store now (tether doctor, no repair)")
    async def doctor(request: Request) -> Response:
        reader = await reader_of(request)
        reader.require("operator", "audit", "admin")
        await body_of(request, reader)
        store = console.store()
        console.doctor = await _pages.doctor_data(store)
        record = getattr(store, "record_doctor", None)
        if record is not None:
            await record({**console.doctor, "by": f"console:{reader.actor}"})
        return done(request, console.doctor, "/health")

    return app


_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
"""No script runs on a console page (there is none to run), so injected markup is inert."""
_NO_STORE = {"cache-control": "no-store"}
"""Pages hold what a role may read: no shared cache keeps them."""


def _note_draft(actor: str, text: str) -> EventDraft:
    """What an operator did to a run that no other event records, and who did it."""
    return EventDraft(type="note", payload={"text": text}, actor=actor)


async def _note(store: Store, run_id: str, actor: str, text: str) -> None:
    async with brief_journal(store, run_id, role="console") as journal:
        await journal.append(_note_draft(actor, text))


def _body(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    """An OpenAPI request body: a JSON object with these properties (forms send the same
    fields, with a `csrf` token)."""
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return {"requestBody": {"content": {"application/json": {"schema": schema}}}}


def _same_site_form(request: Request) -> None:
    """A form posted from another site's page is refused, whatever it carries: the
    browser says where it came from (`Sec-Fetch-Site`), which no page can forge."""
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        raise Forbidden("a console form must be sent from the console's own pages")


def _whole(value: Any) -> int | None:
    """A whole number from JSON (an int, never a bool or 1.9) or a form field (digits)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*-?[0-9]{1,18}\s*", value):
        return int(value)
    return None


def _edited(text: str, original: Any) -> dict[str, Any] | None:
    """The form's arguments: None when unchanged, else the JSON object typed in."""
    if isinstance(original, str) and text.strip() == original.strip():
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"the edited arguments are not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise UsageError("the edited arguments must be a JSON object")
    return value
