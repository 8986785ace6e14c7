"""Counts for bench/workers.py section 1 that the host's load cannot move: the PostgreSQL
server's work (transactions and rows, from the statistics of a database of the round's
own) and the workers' system calls (`strace -f -c`).

Why: CPU time per step on a shared 2-CPU machine rises when processes preempt each other,
without any more work being done; counts say whether the work itself grew.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

SERVER_COUNTERS = (
    "xact_commit", "xact_rollback", "tup_returned", "tup_fetched", "tup_inserted",
    "tup_updated", "tup_deleted",
)  # fmt: skip
"""Per database (`pg_stat_database`): transactions (each autocommit statement is one) and
rows read and written."""


def database_url(base: str, name: str) -> str:
    parts = urlsplit(base)
    return urlunsplit(parts._replace(path=f"/{name}"))


@contextlib.contextmanager
def own_database(base: str) -> Iterator[str]:
    """A fresh database on `base`'s server (its URL), dropped afterwards: its statistics
    count only this round's statements, whatever else the server is doing."""
    import psycopg
    from psycopg import sql

    name = f"bench_{os.getpid()}_{secrets.token_hex(3)}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield database_url(base, name)
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def server_counters(url: str) -> dict[str, int]:
    """The database's counters, once they stop moving: a backend publishes its counts when
    its session ends (or at most once a second), so after the workers exit this waits for
    their backends' last counts (up to 5 s). Its own reads add about one transaction a
    second, nothing per step."""
    import psycopg

    last: dict[str, int] | None = None
    with psycopg.connect(url, autocommit=True) as conn:
        for _ in range(50):
            conn.execute("SELECT pg_stat_clear_snapshot()")
            row = conn.execute(
                f"SELECT {', '.join(SERVER_COUNTERS)} FROM pg_stat_database "
                "WHERE datname = current_database()"
            ).fetchone()
            now = dict(zip(SERVER_COUNTERS, (int(x) for x in row or ()), strict=True))
            if now == last:
                return now
            last = now
            time.sleep(0.2)
    assert last is not None
    return last


def strace_prefix(out: Path) -> list[str]:
    """Prefix of a worker's command: count its system calls, every thread (`-f`)."""
    return ["strace", "-f", "-c", "-o", str(out)]


_ROW = re.compile(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:(\d+)\s+)?(\w+)\s*$")


def strace_calls(out: Path) -> dict[str, int]:
    """Calls per system call from an `strace -c` summary."""
    calls: dict[str, int] = {}
    for line in out.read_text().splitlines():
        m = _ROW.match(line)
        if m and m.group(3) != "total":
            calls[m.group(3)] = calls.get(m.group(3), 0) + int(m.group(1))
    return calls


def callgrind_prefix(out: Path) -> list[str]:
    """Prefix of a worker's command: count its user-space instructions (every thread)."""
    return ["valgrind", "--tool=callgrind", "--quiet", f"--callgrind-out-file={out}"]


def callgrind_total(out: Path) -> int:
    """Instructions executed, from a callgrind output file's `totals:` (or `summary:`)."""
    for line in out.read_text().splitlines():
        if line.startswith(("totals:", "summary:")):
            return int(line.split()[1])
    raise ValueError(f"no totals in {out}")
