"""Who is asking: a bearer token (the API) or the session cookie set by the login form.

The cookie holds the token itself (HttpOnly, SameSite=Strict), so the store stays the one
place a token is checked and a revoked token stops working on its next request. Forms
sent with the cookie carry a CSRF token: an HMAC of the token's hash under a secret of
this server process, so a page on another site cannot post in the reader's name.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from ..errors import TetherError
from ..journal._base import TokenRecord
from ..views import Role
from .tokens import ACTING_ROLES, ConsoleRole, parse_console_role, view_of

__all__ = ["COOKIE", "Forbidden", "NotLoggedIn", "Reader", "csrf_for"]

COOKIE = "tether_session"


class NotLoggedIn(TetherError):
    """No token, or one the store refused (the reason is in the message)."""


class Forbidden(TetherError):
    """The reader's role may not do this."""


def csrf_for(secret: bytes, record: TokenRecord) -> str:
    return hmac.new(secret, record.token_hash.encode(), hashlib.sha256).hexdigest()[:32]


@dataclass(frozen=True, kw_only=True, slots=True)
class Reader:
    """The authenticated reader of one request."""

    record: TokenRecord
    via_cookie: bool
    csrf: str

    @property
    def role(self) -> ConsoleRole:
        return parse_console_role(self.record.role)

    @property
    def view(self) -> Role:
        """The audience this reader reads with (`tether show --view`)."""
        return view_of(self.role)

    @property
    def actor(self) -> str:
        """Who did it, as journaled: the token's name and id, never the token."""
        return f"console:{self.record.name}({self.record.token_id})"

    @property
    def acts(self) -> bool:
        return self.role in ACTING_ROLES

    def require(self, *roles: ConsoleRole) -> None:
        if self.role not in roles:
            raise Forbidden(f"the {self.role} role may not do this (it needs {' or '.join(roles)})")

    def check_csrf(self, sent: str | None) -> None:
        """Forms sent with the session cookie must carry this session's CSRF token."""
        if self.via_cookie and not hmac.compare_digest(sent or "", self.csrf):
            raise Forbidden("the form's CSRF token is missing or stale: reload the page")
