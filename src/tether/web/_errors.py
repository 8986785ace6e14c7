"""Errors become a page or `{"error": {...}}` with the right status, never a traceback."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..approvals import ApprovalConflict
from ..errors import (
    CorruptionError,
    RunNotFound,
    StoreError,
    StoreUnavailable,
    TetherError,
    UsageError,
)
from ._auth import COOKIE, Forbidden, NotLoggedIn
from ._console import Console, is_api

__all__ = ["install_error_pages"]

log = logging.getLogger("tether.web")


def install_error_pages(app: FastAPI, console: Console) -> None:
    """Each error as its status: a refused token 401 (pages go to the login form), a role
    that may not 403, no such run 404, a conflicting decision 409, a mistake 400, a store
    that cannot answer 503, damage and bugs 500 (a bug's internals only in the log)."""
    error = console.error

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return error(request, exc.status_code, str(exc.detail))

    @app.exception_handler(TetherError)
    async def tether_error(request: Request, exc: TetherError) -> Response:
        if isinstance(exc, NotLoggedIn):
            if is_api(request):
                return error(request, 401, str(exc))
            if COOKIE not in request.cookies:
                return RedirectResponse("/login", status_code=303)
            # A session whose token was revoked or expired: say so, and forget it.
            response = console.templates.TemplateResponse(
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
