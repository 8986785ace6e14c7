"""Property: no `tether` command prints an event, a field or a secret above its role.

The same generated runs as `tests/test_views_property.py` (every event type, random
visibility overrides, secrets and markers everywhere), written to a SQLite store and read
through the command line: `show` (text and --json), `audit --json`, `why --json`,
`export`, `approvals` (text and --json) and `ls --json`, for each role a command serves.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from typer.testing import CliRunner

from tether._redact import clear_registered_secrets, register_secret
from tether.cli import app
from tether.events import EventDraft
from tether.journal import SQLiteStore

from .. import test_views_property as base
from ..journal.helpers import import_events, seal_chain

RUN = base.RUN
runner = CliRunner()


def _commands(url: str, seqs: list[int]) -> list[tuple[str, list[str]]]:
    """(role, argv) of every read a role can make."""
    out: list[tuple[str, list[str]]] = []
    for role in ("user", "operator"):
        view = ["--view", role, "--store", url]
        out += [
            (role, ["show", RUN, *view]),
            (role, ["show", RUN, "--json", *view]),
            (role, ["audit", "--run", RUN, "--limit", "1000", "--json", *view]),
            (role, ["export", RUN, *view]),
        ]
        out += [(role, ["why", f"{RUN}:{seq}", "--json", *view]) for seq in seqs[-3:]]
    # The approvals inbox and the run list are operator-level (no --view).
    out += [
        ("operator", ["approvals", "--store", url]),
        ("operator", ["approvals", "--json", "--store", url]),
        ("operator", ["ls", "--json", "--store", url]),
    ]
    return out


def _check_cli(
    tmp: Path,
    drafts: list[EventDraft],
    registered: list[str],
    secrets: list[str],
    markers: dict[int, str],
    private: dict[int, str],
) -> int:
    path = tmp / "t.db"
    sealed = seal_chain(drafts, run_id=RUN)

    async def write() -> None:
        store = SQLiteStore(path)
        try:
            await import_events(store, sealed)
        finally:
            await store.close()

    asyncio.run(write())
    visibilities = {e.seq: e.visibility for e in sealed}
    base.events_types.clear()
    base.events_types.update({e.seq: e.type for e in sealed})
    for value in registered:
        register_secret(value)
    checked = 0
    try:
        for role, argv in _commands(f"sqlite:///{path}", sorted(visibilities)):
            done = runner.invoke(app, argv)
            # A `why` of an event above the role is refused (exit 2), never shown.
            assert done.exit_code in (0, 2), (argv, done.output[-500:])
            assert done.exception is None or isinstance(done.exception, SystemExit), argv
            text: Any = done.output
            base._check(
                text, role, events=visibilities, markers=markers, private=private,  # type: ignore[arg-type]
                secrets=secrets,
            )  # fmt: skip
            checked += 1
    finally:
        clear_registered_secrets()
    return checked


@pytest.mark.slow
@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.function_scoped_fixture],
)  # fmt: skip
@given(base.runs())
def test_no_command_prints_an_event_field_or_secret_above_the_role(
    tmp_path_factory: Any,
    run: tuple[list[EventDraft], list[str], list[str], dict[int, str], dict[int, str]],
) -> None:
    checked = _check_cli(tmp_path_factory.mktemp("cli"), *run)
    assert checked >= 11
