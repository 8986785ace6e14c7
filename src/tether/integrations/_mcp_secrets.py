"""Which parts of an MCP server's configuration are secrets, registered for redaction.

A server is often started with a credential in its environment (`GITHUB_TOKEN`) or sent
one in a header (`Authorization: Bearer …`), and a server can echo it back in a result
or an error. `MCPServer` registers these values with `register_secret` when it is built
and again when a run opens a session, so every view below audit redacts them, in this
process and (through the store's recorded secrets) in every later reader.

The rule, so ordinary configuration (`LOG_LEVEL=debug`, a `PATH`) is not blanked out:

- an environment variable whose name names a credential (a word such as TOKEN, SECRET,
  PASSWORD, PASSPHRASE, KEY, APIKEY, AUTH, CREDENTIAL(S), COOKIE, SESSION, PAT, DSN, and
  not ending in FILE, PATH, DIR or ID, which say where or which a credential is), or
  that the server's `secret_env` lists, or whose value the redactor's credential patterns
  recognise (an `sk-…` key, a JWT, a URL with a password in it);
- every HTTP header whose name names a credential (`Authorization`, `Cookie`,
  `X-Api-Key`, …), as a whole and without its `Bearer`/`Basic`/`Token` scheme;
- a command-line argument given to a credential-named flag (`--api-key VALUE`,
  `--token=VALUE`);
- the password of a URL (`postgres://user:PASSWORD@host`) and the value of a query
  parameter whose name names a credential (`?api_key=…`), in the server's URL, its
  arguments or an environment value.

Values shorter than `MIN_SECRET_LENGTH` are not registered (they would blank out
ordinary words); a `secret_env` name whose value is that short is refused.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from urllib.parse import parse_qsl, urlsplit

from .._redact import MIN_SECRET_LENGTH, REDACTED, Redactor
from ..errors import UsageError

__all__ = ["credential_name", "server_secrets"]

_WORDS = frozenset({
    "TOKEN", "TOKENS", "SECRET", "SECRETS", "PASSWORD", "PASSWORDS", "PASSWD", "PASS",
    "PASSPHRASE", "PWD", "KEY", "KEYS", "APIKEY", "AUTH", "AUTHORIZATION", "CREDENTIAL",
    "CREDENTIALS", "COOKIE", "COOKIES", "SESSION", "PAT", "DSN", "SIGNATURE",
})  # fmt: skip
_INSIDE = ("TOKEN", "SECRET", "PASSWORD", "PASSWD", "APIKEY", "CREDENTIAL", "PASSPHRASE")
"""Found inside a name without separators too (`GITHUBTOKEN`, `MYAPIKEY`)."""
_NOT_SECRET = frozenset({"PWD", "OLDPWD"})
"""Shell variables that only look like credentials (the working directory)."""
_WHERE = frozenset({"FILE", "PATH", "DIR", "DIRECTORY", "ID"})
"""A last word that says the variable names where a credential is, or which one
(`KEY_FILE`, `GOOGLE_APPLICATION_CREDENTIALS_PATH`, `SESSION_DIR`, `AWS_ACCESS_KEY_ID`)."""
_SPLIT = re.compile(r"[^A-Z0-9]+")
_SCHEME = re.compile(r"(?i)^(?:bearer|basic|token|digest)\s+(\S+)$")
_patterns = Redactor()


def credential_name(name: str) -> bool:
    """True for a variable, header or parameter name that names a credential."""
    upper = name.upper()
    if upper in _NOT_SECRET:
        return False
    words = [w for w in _SPLIT.split(upper) if w]
    if words and words[-1] in _WHERE:
        return False
    return bool(set(words) & _WORDS) or any(part in upper for part in _INSIDE)


def _url_secrets(text: str) -> list[str]:
    """The password and credential-named query values of a URL (none for other text)."""
    if "://" not in text:
        return []
    try:
        parts = urlsplit(text.strip())
        password = parts.password
        query = parse_qsl(parts.query, keep_blank_values=False)
    except ValueError:
        return []
    found = [password] if password else []
    found += [value for name, value in query if credential_name(name)]
    return found


def _usable(value: str) -> bool:
    return len(value) >= MIN_SECRET_LENGTH and value not in REDACTED


def server_secrets(
    *,
    env: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    url: str | None = None,
    secret_env: Iterable[str] = (),
    args: Sequence[str] = (),
) -> list[str]:
    """The values of a server's configuration that views must never show (see above)."""
    env = env or {}
    found: list[str] = []
    for name in secret_env:
        if name not in env:
            raise UsageError(f"secret_env names {name!r}, which the server's env does not set")
        if not _usable(env[name]):
            raise UsageError(
                f"secret_env {name!r}: a secret must be at least {MIN_SECRET_LENGTH} characters"
            )
        found.append(env[name])
    for name, value in env.items():
        if credential_name(name) or _patterns.text(value) != value:
            found.append(value)
        found += _url_secrets(value)
    for name, value in (headers or {}).items():
        if credential_name(name):
            found.append(value)
            scheme = _SCHEME.match(value.strip())
            if scheme:
                found.append(scheme.group(1))
            if name.lower() == "cookie":
                found += [v.strip() for _, _, v in (c.partition("=") for c in value.split(";"))]
    for index, arg in enumerate(args):
        flag, equals, value = arg.partition("=")
        if not flag.startswith("-") or not credential_name(flag.lstrip("-")):
            found += _url_secrets(arg)
        elif equals:
            found.append(value)
        elif index + 1 < len(args) and not args[index + 1].startswith("-"):
            found.append(args[index + 1])
    if url:
        found += _url_secrets(url)
    return sorted({value for value in found if _usable(value)})
