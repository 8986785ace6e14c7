"""The console's actions: each calls the function the CLI calls, journaling the reader as
the actor, from a form (CSRF-checked, same site only) or a JSON body under `/api`."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from ..approvals import parse_request_id, resolve_approval
from ..budget import BudgetLimits, check_scope
from ..cli._agents import agent_of_run
from ..cli._budget import update_limits
from ..errors import UsageError
from ..events import EventDraft
from ..journal import Store, calls_after, fork_run, read_events
from ..journal._base import DEFAULT_QUEUE
from ..journal._leases import brief_journal
from . import _pages
from ._auth import Reader
from ._console import Console, is_api, same_site_form

__all__ = ["add_action_routes"]

log = logging.getLogger("tether.web")


def add_action_routes(app: FastAPI, console: Console) -> None:
    async def body_of(request: Request, reader: Reader) -> dict[str, Any]:
        """A JSON body (API) or a form (pages; its CSRF token checked)."""
        if is_api(request):
            try:
                data = json.loads(await request.body() or b"{}")
            except (ValueError, UnicodeDecodeError):
                raise UsageError("the request body is not valid JSON") from None
            if not isinstance(data, dict):
                raise UsageError("the request body must be a JSON object")
            # A bearer token cannot be forged by another site; a cookie sent to the API can.
            reader.check_csrf(request.headers.get("x-csrf-token"))
            return data
        same_site_form(request)
        form = await request.form()
        reader.check_csrf(str(form.get("csrf") or ""))
        return {k: v for k, v in form.items() if isinstance(v, str)}

    def done(request: Request, data: dict[str, Any], to: str) -> Response:
        if is_api(request):
            return JSONResponse(data)
        return RedirectResponse(to, status_code=303)

    async def decide(request: Request, request_id: str, decision: str) -> Response:
        reader = await console.reader_of(request)
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
        reader = await console.reader_of(request)
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
        reader = await console.reader_of(request)
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
        reader = await console.reader_of(request)
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
        reader = await console.reader_of(request)
        reader.require("operator", "audit", "admin")
        await body_of(request, reader)
        store = console.store()
        console.doctor = await _pages.doctor_data(store)
        record = getattr(store, "record_doctor", None)
        if record is not None:
            await record({**console.doctor, "by": f"console:{reader.actor}"})
        return done(request, console.doctor, "/health")


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
