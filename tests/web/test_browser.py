"""The console in a real browser: Playwright drives Debian's chromium (never a downloaded
browser) against `tether serve` and `tether worker` running as real processes.

An operator logs in, opens the runs list and a run, approves a waiting call from the
inbox with edited arguments and watches the worker complete the run, rejects another
call with a reason, and is refused an admin page. The screenshots in `docs/` come from
this test (`TETHER_UPDATE_SCREENSHOTS=1` writes them there; otherwise to a temp folder).
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tether.journal import SQLiteStore, read_events
from tether.web.tokens import create_token

from ..conftest import require
from .conftest import drive_until_idle, submit_shipments

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"

pytestmark = pytest.mark.slow


def _browser_problem() -> str | None:
    if not CHROMIUM.exists():
        return f"no browser at {CHROMIUM} (apt-get install chromium; .ci/run does)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as exc:
        return f"playwright is not installed ({exc})"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _process(args: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tether", *args], cwd=ROOT, stdout=out, stderr=out,
            # This checkout's package (not another one installed in the venv) and its tests.
            env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])},
        )  # fmt: skip
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_until_serving(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"tether serve exited: {log.read_text()}")
        try:
            with urllib.request.urlopen(url + "/login", timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"tether serve did not answer: {log.read_text()}")


async def _prepare(db: Path) -> tuple[list[str], dict[str, str]]:
    store = SQLiteStore(db)
    try:
        runs = await submit_shipments(store, 2)
        await drive_until_idle(store)  # both wait for approval now
        tokens = {
            role: (await create_token(store, role=role, name=f"{role[:3]}-browser"))[0]
            for role in ("operator", "admin")
        }
        return runs, tokens
    finally:
        await store.close()


async def _journal(db: Path, run_id: str) -> list[tuple[str, str, dict[str, object]]]:
    store = SQLiteStore(db, create=False)
    try:
        return [(e.type, e.actor, dict(e.payload)) for e in await read_events(store, run_id)]
    finally:
        await store.close()


def test_an_operator_approves_in_the_browser_and_the_worker_completes_the_run(
    tmp_path: Path,
) -> None:
    problem = _browser_problem()
    require(problem is None, problem or "")
    from playwright.sync_api import expect, sync_playwright

    db = tmp_path / "console.db"
    runs, tokens = asyncio.run(_prepare(db))
    url = f"sqlite:///{db}"
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    shots = DOCS if os.environ.get("TETHER_UPDATE_SCREENSHOTS") == "1" else tmp_path
    serve_log, worker_log = tmp_path / "serve.log", tmp_path / "worker.log"
    worker_args = ["worker", "--store", url, "--agent", "tests.web.agents:shipping_agent",
                   "--lease-ttl", "5"]  # fmt: skip
    with (
        _process(["serve", "--store", url, "--port", str(port)], serve_log) as server,
        _process(worker_args, worker_log),
        sync_playwright() as p,
    ):
        _wait_until_serving(base, server, serve_log)
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            page.set_default_timeout(20_000)

            # Log in: every page needs a token.
            page.goto(base + "/runs")
            expect(page).to_have_url(base + "/login")
            page.fill("input[name=token]", "tether_not-a-token")
            page.click("button[type=submit]")
            expect(page.locator("[role=alert]")).to_contain_text("unknown token")
            page.fill("input[name=token]", tokens["operator"])
            page.click("button[type=submit]")
            expect(page).to_have_url(base + "/runs")

            # The runs list, then a run.
            expect(page.locator("#runs tbody tr")).to_have_count(2)
            expect(page.locator("#runs")).to_contain_text("waiting_approval")
            page.screenshot(path=str(shots / "console-runs.png"))
            page.click(f"a[href='/runs/{runs[0]}']")
            expect(page.locator("#status")).to_have_text("waiting_approval")
            expect(page.locator("body")).not_to_contain_text("vault-output")  # audit-only

            # The inbox: approve the first run's call with edited arguments.
            page.click("header >> text=Approvals")
            first = page.locator(f".approval[data-request^='apr:{runs[0]}:']")
            second = page.locator(f".approval[data-request^='apr:{runs[1]}:']")
            expect(first).to_contain_text("dock-1")
            page.screenshot(path=str(shots / "console-inbox.png"), full_page=True)
            first.locator("textarea[name=arguments]").fill('{"target": "dock-9", "copies": "two"}')
            first.locator("button", has_text="Approve").click()
            expect(page.locator("[role=alert]")).to_contain_text("copies")  # schema-checked
            page.go_back()
            page.reload()
            first.locator("textarea[name=arguments]").fill('{"target": "dock-9", "copies": 2}')
            first.locator("button", has_text="Approve").click()
            expect(first).to_have_count(0)

            # The worker continues the run; its page refreshes itself while it moves.
            page.goto(base + f"/runs/{runs[0]}")
            expect(page.locator("#status")).to_have_text("completed", timeout=45_000)
            expect(page.locator("#outcome")).to_contain_text("shipped 2 to dock-9")
            page.screenshot(path=str(shots / "console-run.png"), full_page=False)

            # Reject the other with a reason; the agent reads it and finishes.
            page.goto(base + "/approvals")
            second.locator("input[name=reason]").fill("wrong dock for this batch")
            second.locator("button", has_text="Reject").click()
            expect(page.locator("#empty")).to_be_visible()
            page.goto(base + f"/runs/{runs[1]}")
            expect(page.locator("#status")).to_have_text("completed", timeout=45_000)

            # An operator is refused the admin page.
            response = page.goto(base + "/tokens")
            assert response is not None and response.status == 403
            expect(page.locator("[role=alert]")).to_contain_text("the operator role may not")
        finally:
            browser.close()

    for run_id, decision in ((runs[0], "approved"), (runs[1], "rejected")):
        journal = asyncio.run(_journal(db, run_id))
        [(_, actor, payload)] = [j for j in journal if j[0] == "approval.resolved"]
        assert payload["decision"] == decision and actor.startswith("console:ope-browser(tok_")
        assert journal[-1][0] == "run.completed"
    assert payload["comment"] == "wrong dock for this batch"
    logs = serve_log.read_text() + worker_log.read_text()
    assert "POST /approvals/" in logs  # the access log is on...
    for token in tokens.values():
        assert token not in logs  # ...and names no token
    if shots is tmp_path:
        assert all((tmp_path / f"console-{n}.png").stat().st_size > 10_000
                   for n in ("runs", "run", "inbox"))  # fmt: skip
