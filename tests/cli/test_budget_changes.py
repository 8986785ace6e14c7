"""`tether budget changes`: who set or removed which limits, and when."""

from __future__ import annotations

import asyncio
import getpass
import json
from pathlib import Path

from typer.testing import CliRunner

from tether.cli import app
from tether.journal import SQLiteStore

runner = CliRunner()


def test_budget_set_and_clear_are_kept_with_the_user_who_ran_them(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    asyncio.run(SQLiteStore(db).close())
    url = f"sqlite:///{db}"
    empty = runner.invoke(app, ["budget", "changes", "--store", url])
    assert empty.exit_code == 0 and "no limit changes" in empty.stdout
    for args in (["set", "--scope", "global", "--daily", "5", "--daily-tz", "Europe/Paris"],
                 ["set", "--scope", "global", "--hourly", "1"],
                 ["clear", "--scope", "global"]):  # fmt: skip
        done = runner.invoke(app, ["budget", *args, "--store", url])
        assert done.exit_code == 0, done.output
    shown = runner.invoke(app, ["budget", "changes", "--json", "--store", url])
    changes = json.loads(shown.stdout)
    assert [c["actor"] for c in changes] == [f"cli:{getpass.getuser()}"] * 3
    assert changes[0]["limits"] is None  # newest first: the clear
    assert (changes[1]["limits"]["hourly"], changes[1]["limits"]["daily"]) == (1.0, 5.0)
    table = runner.invoke(app, ["budget", "changes", "--store", url, "--limit", "2"])
    assert "removed" in table.stdout and "hourly $1" in table.stdout
    assert table.stdout.count("cli:") == 2  # the clear, and the set merged with the first
    bad = runner.invoke(app, ["budget", "changes", "--store", url, "--limit", "0"])
    assert bad.exit_code == 2 and "--limit" in bad.stderr
