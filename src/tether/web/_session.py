"""Logging in and out: the login form sets the session cookie (the token itself, HttpOnly,
SameSite=Strict), and `/api/me` says what a token reads and may do."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from ._auth import COOKIE
from ._console import Console, same_site_form
from .tokens import TokenRejected, authenticate

__all__ = ["add_session_routes"]


def add_session_routes(app: FastAPI, console: Console) -> None:
    @app.get("/", include_in_schema=False)
    async def home() -> Response:
        return RedirectResponse("/runs", status_code=303)

    @app.get("/login", response_class=HTMLResponse, include_in_schema=False)
    async def login_form(request: Request) -> Response:
        return console.page(request, None, "login.html", problem=None)

    @app.post("/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        same_site_form(request)  # no other site logs a reader in with its own token
        form = await request.form()
        token = str(form.get("token") or "").strip()
        try:
            await authenticate(console.store(), token, clock=console.clock)
        except TokenRejected as exc:
            return console.templates.TemplateResponse(
                request, "login.html", {"reader": None, "problem": str(exc)}, status_code=401
            )
        response = RedirectResponse("/runs", status_code=303)
        response.set_cookie(
            COOKIE, token, httponly=True, samesite="strict", secure=request.url.scheme == "https"
        )
        return response

    @app.post("/logout", include_in_schema=False)
    async def logout(request: Request) -> Response:
        reader = await console.reader_of(request)
        reader.check_csrf(str((await request.form()).get("csrf") or ""))
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE)
        return response

    @app.get("/api/me", summary="The token's role and the view it reads with")
    async def me(request: Request) -> Response:
        r = await console.reader_of(request)
        return JSONResponse(
            {"token_id": r.record.token_id, "name": r.record.name, "role": r.role,
             "view": r.view, "acts": r.acts},
        )  # fmt: skip
