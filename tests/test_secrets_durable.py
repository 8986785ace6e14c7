"""A secret registered by the process that drives a run stays redacted for every later
reader of the store: another process, without the value, through the CLI and the API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import POSTGRES_URL, drop_postgres_schema, postgres_problem, require

SECRET = "vault-phrase-ORCHID-7731"
LATER = "minted-token-QUARTZ-0042"

WRITER = f'''
import asyncio, sys
from tether import Agent, Limits, Runtime, tool
from tether.models import ScriptedModel, call
from tether.views import register_secret

register_secret({SECRET!r})

@tool(idempotent=True)
def fetch(what: str) -> str:
    """Returns a credential; registers one it mints mid-run."""
    register_secret({LATER!r})
    return f"the phrase is {SECRET} and the new token is {LATER}"

agent = Agent(
    name="keeper", instructions="Fetch.", tools=[fetch],
    model=ScriptedModel([call("fetch", {{"what": "x"}}), "done: {SECRET} / {LATER}"]),
    limits=Limits(max_steps=5),
)

async def main():
    rt = Runtime(sys.argv[1])
    try:
        result = await rt.start(agent, "fetch it")
        print(result.run_id)
    finally:
        await rt.close()

asyncio.run(main())
'''


def run_py(code: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120, env=env
    )


def tether(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tether", *args], capture_output=True, text=True, timeout=120,
        env=env,
    )  # fmt: skip


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TETHER_SECRETS", "TETHER_STORE")}
    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    return env


def check_readers(url: str, env: dict[str, str]) -> None:
    made = run_py(WRITER, url, env=env)
    assert made.returncode == 0, made.stderr[-2000:]
    run_id = made.stdout.split()[-1]
    for view in ("user", "operator"):
        shown = tether("show", run_id, "--store", url, "--view", view, "--json", env=env)
        assert shown.returncode == 0, shown.stderr
        assert SECRET not in shown.stdout and LATER not in shown.stdout, view
        assert "[REDACTED]" in shown.stdout
    export = tether("export", run_id, "--store", url, "--view", "operator", env=env)
    assert export.returncode == 0, export.stderr
    assert SECRET not in export.stdout and LATER not in export.stdout
    audit = tether("show", run_id, "--store", url, "--view", "audit", "--json", env=env)
    assert SECRET in audit.stdout and LATER in audit.stdout  # audit sees what happened
    # The library API in a process that never saw the values redacts them too.
    api = run_py(
        "import asyncio, json, sys\n"
        "from tether.journal import open_store\n"
        "from tether.views import Viewer\n"
        "async def main():\n"
        "    store = open_store(sys.argv[1])\n"
        "    try:\n"
        "        view = await Viewer(store, role='operator').run(sys.argv[2])\n"
        "        print(json.dumps(view, default=str))\n"
        "    finally:\n"
        "        await store.close()\n"
        "asyncio.run(main())\n",
        url, run_id, env=env,
    )  # fmt: skip
    assert api.returncode == 0, api.stderr[-2000:]
    assert SECRET not in api.stdout and LATER not in api.stdout


def test_secrets_stay_redacted_for_later_readers_of_a_sqlite_store(tmp_path: Path) -> None:
    check_readers(f"sqlite:///{tmp_path / 't.db'}", clean_env())


@pytest.mark.postgres
def test_secrets_stay_redacted_for_later_readers_of_a_postgres_store() -> None:
    problem = postgres_problem()
    require(problem is None, problem or "")
    schema = f"test_secrets_{os.getpid()}"
    try:
        check_readers(f"{POSTGRES_URL}?schema={schema}", clean_env())
    finally:
        drop_postgres_schema(schema)


def test_the_store_records_secrets_only_once(tmp_path: Path) -> None:
    import sqlite3

    url = f"sqlite:///{tmp_path / 't.db'}"
    env = clean_env()
    for _ in range(2):
        made = run_py(WRITER, url, env=env)
        assert made.returncode == 0, made.stderr[-2000:]
    db = sqlite3.connect(tmp_path / "t.db")
    rows = db.execute("SELECT value FROM tether_meta WHERE key LIKE 'secret %'").fetchall()
    db.close()
    assert sorted(r[0] for r in rows) == sorted([SECRET, LATER])
    assert json.dumps(rows)  # plain strings


def check_a_reader_opened_before(url: str) -> None:
    """A long-lived reader (the console) opened the store before the run was written."""
    import asyncio

    from tether.audit import AuditFilter, audit_events
    from tether.journal import open_store
    from tether.views import Viewer

    async def read() -> None:
        store = open_store(url)
        try:
            await store.run_ids()  # open, before the writer runs
            made = run_py(WRITER, url, env=clean_env())
            assert made.returncode == 0, made.stderr[-2000:]
            run_id = made.stdout.split()[-1]
            view = json.dumps(await Viewer(store, "operator").run(run_id))
            found, _ = await audit_events(store, AuditFilter(run_id=run_id), role="operator")
            for text in (view, json.dumps(found)):
                assert SECRET not in text and LATER not in text
        finally:
            await store.close()

    from tether._redact import clear_registered_secrets

    clear_registered_secrets()
    try:
        asyncio.run(read())
    finally:
        clear_registered_secrets()


def test_a_reader_that_opened_a_sqlite_store_earlier_redacts_later_secrets(tmp_path: Path) -> None:
    check_a_reader_opened_before(f"sqlite:///{tmp_path / 't.db'}")


@pytest.mark.postgres
def test_a_reader_that_opened_a_postgres_store_earlier_redacts_later_secrets() -> None:
    problem = postgres_problem()
    require(problem is None, problem or "")
    schema = f"test_secrets_early_{os.getpid()}"
    try:
        check_a_reader_opened_before(f"{POSTGRES_URL}?schema={schema}")
    finally:
        drop_postgres_schema(schema)
