"""What every route of the console shares: the store, who is asking, and how an answer or
an error is rendered (a page, or JSON under `/api`)."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from fastapi.templating import Jinja2Templates

from .._clock import Clock, iso
from .._redact import default_redactor
from ..journal import Store, open_store
from ._auth import COOKIE, Forbidden, NotLoggedIn, Reader, csrf_for
from .tokens import TokenRejected, authenticate

__all__ = ["CSP", "NO_STORE", "Console", "is_api", "same_site_form"]

TEMPLATES = Path(__file__).parent / "templates"

CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
"""No script runs on a console page (there is none to run), so injected markup is inert."""
NO_STORE = {"cache-control": "no-store"}
"""Pages hold what a role may read: no shared cache keeps them."""


def is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def same_site_form(request: Request) -> None:
    """A form posted from another site's page is refused, whatever it carries: the
    browser says where it came from (`Sec-Fetch-Site`), which no page can forge."""
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        raise Forbidden("a console form must be sent from the console's own pages")


def _templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=str(TEMPLATES))
    templates.env.filters["tojson_pretty"] = lambda v: json.dumps(v, indent=2, sort_keys=True)
    templates.env.filters["money"] = lambda v: f"${v:.4f}" if isinstance(v, int | float) else "-"
    templates.env.filters["when"] = lambda v: str(v or "")[:19].replace("T", " ")
    templates.env.filters["epoch"] = lambda v: iso(v)[:19].replace("T", " ")
    return templates


class Console:
    """The app's state: the store (opened on first use, so a store that is down at start
    is reported per request and picked up once it is back), the CSRF secret, the last
    doctor result of this process and the templates."""

    def __init__(self, store_url: str | None, store: Store | None, clock: Clock) -> None:
        self.store_url = store_url
        self._store = store
        self._owned = store is None
        self.clock = clock
        self.secret = secrets.token_bytes(32)
        self.doctor: dict[str, Any] | None = None
        self.templates = _templates()

    def store(self) -> Store:
        if self._store is None:
            self._store = open_store(self.store_url, create=False)
        return self._store

    async def close(self) -> None:
        if self._owned and self._store is not None:
            await self._store.close()
            self._store = None

    async def reader_of(self, request: Request) -> Reader:
        """The token of the request: a bearer header, else the session cookie."""
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        via_cookie = False
        if scheme.lower() != "bearer" or not token.strip():
            token = request.cookies.get(COOKIE, "")
            via_cookie = True
        if not token:
            raise NotLoggedIn("log in with a console token (tether token create)")
        try:
            record = await authenticate(self.store(), token.strip(), clock=self.clock)
        except TokenRejected as exc:
            raise NotLoggedIn(str(exc)) from None
        return Reader(record=record, via_cookie=via_cookie, csrf=csrf_for(self.secret, record))

    def page(self, request: Request, reader: Reader | None, name: str, **context: Any) -> Response:
        return self.templates.TemplateResponse(
            request, name, {"reader": reader, **context}, headers=NO_STORE
        )

    def error(
        self, request: Request, status: int, message: str, reader: Reader | None = None
    ) -> Response:
        """The error as a page or `{"error": {...}}`; below the audit role, redacted."""
        if reader is None or reader.view != "audit":
            message = default_redactor().text(message)
        if is_api(request):
            return JSONResponse(
                {"error": {"status": status, "message": message}}, status_code=status
            )
        return self.templates.TemplateResponse(
            request, "error.html", {"reader": reader, "status": status, "message": message},
            status_code=status, headers=NO_STORE,
        )  # fmt: skip
