"""The console's ASGI app: server-rendered pages, each with a JSON twin under `/api`.

Every route reads through `_pages` (the library's views) with the reader's audience, and
every action calls the function the CLI calls, journaling the reader as the actor.
Errors become a page or `{"error": {...}}` with the right status, never a traceback;
below the audit role their text is redacted like any other string.

This module assembles the app; each area is its own module: `_console` (the store, who is
asking, rendering), `_errors` (statuses), `_session` (login, logout, `/api/me`), `_reads`
(the pages and their JSON twins, the export) and `_actions` (approve, reject, fork, hand
to a worker, budgets, doctor).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import Response

from .._clock import Clock, SystemClock
from ..journal import Store
from ._actions import add_action_routes
from ._console import CSP, Console
from ._errors import install_error_pages
from ._reads import add_read_routes
from ._session import add_session_routes

__all__ = ["create_app"]


def create_app(
    store_url: str | None = None, *, store: Store | None = None, clock: Clock | None = None
) -> FastAPI:
    """The console for the store at `store_url` (or an open `store`, which stays open)."""
    console = Console(store_url, store, clock or SystemClock())

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
            response.headers["content-security-policy"] = CSP
        return response

    install_error_pages(app, console)
    add_session_routes(app, console)
    add_read_routes(app, console)
    add_action_routes(app, console)
    return app
