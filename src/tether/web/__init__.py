"""The operator console and JSON API (`tether serve`): runs, timelines by role, the
approvals inbox, budgets, health and audit search, behind role-scoped tokens.

`create_app` needs the `web` extra (FastAPI, Jinja2); `tether.web.tokens` does not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["create_app"]


def create_app(store_url: str | None = None, **options: Any) -> FastAPI:
    """The console's ASGI app for the store at `store_url` (see `_app.create_app`)."""
    try:
        from ._app import create_app as make
    except ImportError as exc:
        from ..errors import UsageError

        raise UsageError(
            f"the console needs the web extra: pip install 'tether-runtime[web]' ({exc.name} "
            "is missing)"
        ) from None
    return make(store_url, **options)
