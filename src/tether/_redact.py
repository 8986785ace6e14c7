"""Secret redaction for every view below audit (DESIGN invariant 7).

Two sources of secrets: values that look like credentials (API keys and tokens of common
providers, bearer and basic authorization headers, passwords in URLs, private keys,
`api_key=...`-style assignments) and values the user registers — `register_secret(value)`
in Python, or `TETHER_SECRETS` (comma-separated) in the environment. Every string of a
user or operator view passes through `Redactor.value`; the audit view never does.

Redaction fails closed: if a registered value can still be found in a string after
redaction (a value that overlaps the marker in some contrived way), the whole string is
replaced by the marker.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Iterable
from typing import Any

from .errors import UsageError

__all__ = [
    "MIN_SECRET_LENGTH",
    "REDACTED",
    "Redactor",
    "clear_registered_secrets",
    "default_redactor",
    "process_secrets",
    "register_secret",
    "register_secrets",
    "registered_secrets",
    "remember_stored_secrets",
    "secrets_generation",
]

REDACTED = "[REDACTED]"
MIN_SECRET_LENGTH = 4
"""Shorter registered values would blank out ordinary words; they are refused."""

_SECRETS_ENV = "TETHER_SECRETS"

# Between a credential's name and its value: a quoted name (JSON) or `=` (env, query) is
# always an assignment; after an unquoted `name:` the value is skipped when it reads as
# prose, one plain word followed by another ("Password: must be reset yearly").
_PROSE = r"(?!(?i:bearer|basic|token)\b)(?-i:[A-Z]?[a-z]+(?:-[a-z]+)*)[ \t]+[A-Za-z]"
_SEPARATOR = rf"(?:[\"']\s*[:=]\s*[\"']?|\s*=\s*[\"']?|\s*:\s*[\"']|\s*:(?![ \t]+{_PROSE})\s*)"

# Credentials recognised by shape. Each pattern's group "s" (or the whole match) is what
# gets replaced; the rest (a header name, a key name) is kept so a reader sees what was
# there. Boundaries are strict on the left so ordinary words ("task-…", "risk-…") pass.
_PATTERNS: tuple[re.Pattern[str], ...] = tuple(
    re.compile(p)
    for p in (
        # Private key blocks.
        r"(?P<s>-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z0-9 ]*PRIVATE KEY-----)",
        # OpenAI (sk-, sk-proj-, sk-svcacct-), Anthropic (sk-ant-…), DeepSeek and friends.
        r"(?<![A-Za-z0-9_-])(?P<s>sk-[A-Za-z0-9_-]{20,})",
        # Stripe secret and restricted keys.
        r"(?<![A-Za-z0-9])(?P<s>(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,})",
        # AWS access key ids.
        r"(?<![A-Z0-9])(?P<s>(?:AKIA|ASIA|AGPA|AIDA|AROA)[A-Z0-9]{16})(?![A-Z0-9])",
        # GitHub tokens (classic and fine-grained), GitLab personal access tokens.
        r"(?<![A-Za-z0-9])(?P<s>gh[pousr]_[A-Za-z0-9]{30,})",
        r"(?<![A-Za-z0-9])(?P<s>github_pat_[A-Za-z0-9_]{22,})",
        r"(?<![A-Za-z0-9])(?P<s>glpat-[A-Za-z0-9_-]{20,})",
        # Slack tokens and webhooks.
        r"(?<![A-Za-z0-9])(?P<s>xox[abposr]-[A-Za-z0-9-]{10,})",
        r"(?P<s>https://hooks\.slack\.com/services/[A-Za-z0-9/_-]+)",
        # Google API keys, Hugging Face tokens.
        r"(?<![A-Za-z0-9])(?P<s>AIza[0-9A-Za-z_-]{35})",
        r"(?<![A-Za-z0-9])(?P<s>hf_[A-Za-z0-9]{30,})",
        # JSON Web Tokens.
        r"(?<![A-Za-z0-9_-])(?P<s>eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,})",
        # Authorization headers and bearer / basic credentials anywhere in text.
        r"(?i)(?:authorization|proxy-authorization|x-api-key|api-key)"
        + _SEPARATOR
        + r"(?:(?:bearer|basic|token)\s+)?(?P<s>[^\s\"',;]{6,})",
        # The credential must look like one (a digit, +/=, inner . _ ~, or a capital after a
        # small letter, matched case-sensitively) so prose ("the basic mechanism", "a basic
        # ATP-driven step") passes.
        r"(?i)\b(?:bearer|basic)\s+"
        r"(?=(?-i:[A-Za-z0-9._~+/=-]*?(?:[0-9+/=]|[._~][A-Za-z0-9]|[a-z][A-Za-z0-9]*[A-Z])))"
        r"(?P<s>[A-Za-z0-9._~+/=-]{8,})",
        # Passwords in URLs: scheme://user:PASSWORD@host
        r"(?i)\b[a-z][a-z0-9+.-]*://[^/\s:@\"']+:(?P<s>[^@\s/\"']+)@",
        # key = value assignments whose key names a credential (JSON, YAML, env, query).
        r"(?i)(?:api[_-]?key|apikey|secret|password|passwd|pwd|access[_-]?token|auth[_-]?token"
        r"|refresh[_-]?token|session[_-]?token|id[_-]?token|client[_-]?secret|private[_-]?key"
        r"|credentials?)(?:[_.-][a-z0-9_.-]*)?" + _SEPARATOR + r"(?P<s>[^\s\"',;&}]{4,})",
    )
)

# Literals (lower case) every pattern above needs: text with none of them skips the
# patterns, which is most text. Plain substring tests: far cheaper than a regex here.
_GATES = (
    "-----begin", "sk-", "sk_", "rk_", "akia", "asia", "agpa", "aida", "aroa", "github_pat_",
    "glpat-", "xox", "hooks.slack", "aiza", "hf_", "eyj", "authoriz", "bearer", "basic", "://",
    "secret", "passw", "pwd", "credential",
)  # fmt: skip
_KEYED = ("api_key", "api-key", "apikey", "private_key", "private-key", "privatekey")
_TOKENED = tuple(
    f"{name}{sep}token"
    for name in ("access", "auth", "refresh", "session", "id")
    for sep in ("_", "-", "")
)
_GITHUB = ("ghp_", "gho_", "ghu_", "ghs_", "ghr_")


def _may_hold_a_credential(text: str) -> bool:
    low = text.lower()
    return (
        any(g in low for g in _GATES)
        or ("key" in low and any(k in low for k in _KEYED))
        or ("token" in low and any(t in low for t in _TOKENED))
        or ("gh" in low and any(g in low for g in _GITHUB))
    )


_SECRET_KEY = re.compile(
    r"(?i)^[a-z0-9_.-]*(?:api[_-]?key|apikey|secret|password|passwd|access[_-]?token"
    r"|auth[_-]?token|refresh[_-]?token|session[_-]?token|client[_-]?secret|private[_-]?key"
    r"|authorization|credentials?)(?:[_.-][a-z0-9_.-]*)?$"
)
"""Dictionary keys whose string values are secrets whatever they look like."""

_lock = threading.Lock()
_registered: set[str] = set()
_stored: set[str] = set()
"""Values a store recorded as secrets (whichever process registered them): a reader
that opens the store redacts them too, without knowing them itself."""
_generation = 0


def _check(value: str) -> str:
    if not isinstance(value, str):
        raise UsageError(f"a secret must be a string, not {type(value).__name__}")
    if len(value) < MIN_SECRET_LENGTH:
        raise UsageError(
            f"a registered secret must be at least {MIN_SECRET_LENGTH} characters "
            "(shorter values would blank out ordinary words)"
        )
    if value in REDACTED:
        raise UsageError(f"{value!r} cannot be registered as a secret: it is part of {REDACTED}")
    return value


def register_secret(value: str) -> None:
    """Redact `value` from every user and operator view from now on: in this process, and
    in every process that reads a store this process writes a run to (the store records
    the value before the run journals anything more)."""
    global _generation
    with _lock:
        _registered.add(_check(value))
        _generation += 1


def register_secrets(values: Iterable[str]) -> None:
    """`register_secret` for each value; the generation changes only when one is new, so a
    source that registers its secrets again for every run costs writers nothing."""
    global _generation
    checked = {_check(value) for value in values}
    with _lock:
        if checked - _registered:
            _registered.update(checked)
            _generation += 1


def secrets_generation() -> int:
    """Changes whenever a secret is registered: a writer compares it to know, in constant
    time per append, whether there is anything new to record in its store."""
    return _generation


def remember_stored_secrets(values: Iterable[str]) -> None:
    """Redact values a store recorded as secrets; a value that is not a valid secret (a
    damaged row) is skipped, never an error for the reader."""
    valid: set[str] = set()
    for value in values:
        try:
            valid.add(_check(value))
        except UsageError:
            continue
    with _lock:
        _stored.update(valid)


def clear_registered_secrets() -> None:
    """Forget every value given to `register_secret` or read from a store (the
    environment's stay)."""
    global _generation
    with _lock:
        _registered.clear()
        _stored.clear()
        _generation += 1


def _env_secrets() -> set[str]:
    text = os.environ.get(_SECRETS_ENV, "")
    out: set[str] = set()
    for index, part in enumerate(text.split(","), start=1):
        value = part.strip()
        if not value:
            continue
        try:
            out.add(_check(value))
        except UsageError as exc:
            raise UsageError(f"{_SECRETS_ENV}: value #{index}: {exc}") from None
    return out


def registered_secrets() -> frozenset[str]:
    """Values registered in this process, in TETHER_SECRETS, and in the stores it opened."""
    with _lock:
        known = _registered | _stored
    return frozenset(known | _env_secrets())


def process_secrets() -> frozenset[str]:
    """The secrets this process was given (registered or TETHER_SECRETS): what a writer
    records in its store for later readers."""
    with _lock:
        mine = set(_registered)
    return frozenset(mine | _env_secrets())


def _variants(value: str) -> set[str]:
    """The value as it appears raw and inside JSON strings, up to two levels deep (a JSON
    document quoted in another, like tool-call arguments), with and without \\uXXXX."""
    out = {value}
    for _ in range(2):
        for item in list(out):
            for ascii_only in (False, True):
                out.add(json.dumps(item, ensure_ascii=ascii_only)[1:-1])
    return {v for v in out if v}


class Redactor:
    """Replaces secrets in strings and in nested JSON values."""

    def __init__(self, secrets: Iterable[str] = (), *, patterns: bool = True) -> None:
        values = {_check(s) for s in secrets}
        self._secrets = frozenset(values)
        literals = sorted({v for s in values for v in _variants(s)}, key=len, reverse=True)
        self._literal = re.compile("|".join(re.escape(v) for v in literals)) if literals else None
        self._patterns = _PATTERNS if patterns else ()

    @property
    def secrets(self) -> frozenset[str]:
        return self._secrets

    def text(self, text: str) -> str:
        if not text:
            return text
        out = text
        for _ in range(4):
            before = out
            if self._literal is not None:
                out = self._literal.sub(REDACTED, out)
            if self._patterns and _may_hold_a_credential(out):
                for pattern in self._patterns:
                    out = pattern.sub(_replace_group, out)
            if out == before:
                break
        if self._literal is not None and (
            self._literal.search(out) or ("\\" in out and self._literal.search(_unescaped(out)))
        ):
            return REDACTED  # fail closed, also on a value spelt with JSON escapes
        return out

    def value(self, value: Any) -> Any:
        """A copy of a JSON value with every string (and dictionary key) redacted."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            out: dict[str, Any] = {}
            for key, item in value.items():
                name = self.text(key) if isinstance(key, str) else key
                if (
                    isinstance(key, str)
                    and isinstance(item, str)
                    and item
                    and _SECRET_KEY.match(key)
                ):
                    out[name] = REDACTED
                else:
                    out[name] = self.value(item)
            return out
        if isinstance(value, list | tuple):
            return [self.value(v) for v in value]
        return value


_ESCAPE = re.compile(r"\\u([0-9a-fA-F]{4})|\\([\\/\"bfnrt])")
_SIMPLE = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


def _unescaped(text: str) -> str:
    """`text` with JSON escapes undone, at any depth: a model may spell any character of a
    secret as `\\uXXXX` or `\\/`, which the literal variants do not list."""
    for _ in range(6):
        before = text
        text = _ESCAPE.sub(
            lambda m: (
                chr(int(m.group(1), 16)) if m.group(1) else _SIMPLE.get(m.group(2), m.group(2))
            ),
            text,
        )
        if text == before:
            break
    return text


def _replace_group(match: re.Match[str]) -> str:
    whole = match.group(0)
    start, end = match.span("s")
    offset = match.start(0)
    return whole[: start - offset] + REDACTED + whole[end - offset :]


def default_redactor() -> Redactor:
    """The patterns plus every registered value (process and TETHER_SECRETS), read now."""
    return Redactor(registered_secrets())
