"""The console's routes through httpx, for every role: who may read and do what, the
actions the CLI has (journaled with the token's name as actor), and clear errors."""

from __future__ import annotations

import asyncio
import logging
import re

import httpx
import pytest

from tether.journal import read_events
from tether.journal._postgres import PostgresStore
from tether.web import create_app
from tether.web.tokens import create_token, revoke_token

from .conftest import Console

RUN_PAGES = ["/runs", "/runs/{run}", "/runs/{run}/export", "/why/{run}:1"]
OPERATOR_PAGES = ["/approvals", "/budgets", "/audit", "/health"]
ADMIN_PAGES = ["/tokens"]
ALL = RUN_PAGES + OPERATOR_PAGES + ADMIN_PAGES


@pytest.mark.parametrize("role", ["user", "operator", "audit", "admin"])
async def test_every_page_and_its_json_twin_answer_each_role_as_its_role_allows(
    console: Console, role: str
) -> None:
    api = console.api(role)
    for template in ALL:
        path = template.format(run=console.runs[0])
        allowed = (role != "user" or template in RUN_PAGES) and (
            role == "admin" or template not in ADMIN_PAGES
        )
        for url in (path, "/api" + path):
            r = await api.get(url)
            assert r.status_code == (200 if allowed else 403), (url, r.text[:200])
            if not allowed and url.startswith("/api"):
                assert r.json()["error"]["message"].startswith(f"the {role} role may not")
    if role == "admin":
        listed = (await api.get("/api/tokens")).json()["tokens"]
        assert {t["role"] for t in listed} == {"user", "operator", "audit", "admin"}
        assert not any(token in str(listed) for token in console.tokens.values())


async def test_the_run_page_reads_with_the_roles_view(console: Console) -> None:
    run = console.runs[0]
    views = {}
    for role in ("user", "operator", "audit", "admin"):
        views[role] = (await console.api(role).get(f"/api/runs/{run}")).json()
    visibilities = {
        role: {e["visibility"] for g in v["groups"] for e in g["events"]}
        for role, v in views.items()
    }
    assert visibilities["user"] == {"visible"}
    assert "always_hidden" not in visibilities["operator"]
    assert "always_hidden" in visibilities["audit"]
    assert views["admin"] == views["operator"] | {}  # admin reads with the operator's view
    # The always-hidden tool's output is the auditor's alone, on the page as in JSON.
    for role in ("user", "operator", "admin"):
        page = (await console.api(role).get(f"/runs/{run}")).text
        assert "vault-output" not in page and "vault-output" not in str(views[role])
    assert "vault-output" in (await console.api("audit").get(f"/runs/{run}")).text
    assert views["user"]["runway"] is None and views["operator"]["runway"]["line"]


async def test_no_token_a_bad_token_and_a_revoked_token_are_refused(console: Console) -> None:
    anonymous = console.anonymous()
    r = await anonymous.get("/api/runs")
    assert r.status_code == 401 and "token" in r.json()["error"]["message"]
    r = await anonymous.get("/runs")
    assert r.status_code == 303 and r.headers["location"] == "/login"
    bad = await anonymous.get("/api/runs", headers={"authorization": "Bearer tether_nope"})
    assert bad.status_code == 401 and bad.json()["error"]["message"] == "unknown token"
    token, record = await create_token(console.store, role="operator", name="leaver")
    ok = await anonymous.get("/api/runs", headers={"authorization": f"Bearer {token}"})
    assert ok.status_code == 200
    await revoke_token(console.store, record.token_id)
    gone = await anonymous.get("/api/runs", headers={"authorization": f"Bearer {token}"})
    assert gone.status_code == 401 and "revoked" in gone.json()["error"]["message"]
    assert token not in gone.text


async def test_an_expired_token_is_refused_with_a_clear_message(console: Console) -> None:
    from tether._clock import FakeClock

    clock = FakeClock(1_000_000.0)
    token, _ = await create_token(
        console.store, role="audit", name="temp", expires_in_s=60, clock=clock
    )
    app = create_app(store=console.store, clock=clock)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://c",
        headers={"authorization": f"Bearer {token}"},
    ) as client:  # fmt: skip
        assert (await client.get("/api/me")).json()["role"] == "audit"
        clock.advance(61)
        r = await client.get("/api/me")
    assert r.status_code == 401 and "expired" in r.json()["error"]["message"]


async def test_login_sets_a_cookie_and_forms_need_its_csrf_token(console: Console) -> None:
    client = console.anonymous()
    wrong = await client.post("/login", data={"token": "tether_wrong"})
    assert wrong.status_code == 401 and "unknown token" in wrong.text
    r = await client.post("/login", data={"token": console.tokens["operator"]})
    assert r.status_code == 303 and r.headers["location"] == "/runs"
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    page = await client.get("/approvals")
    assert page.status_code == 200
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text)
    assert csrf is not None
    [request_id] = re.findall(r'data-request="([^"]+)"', page.text)[:1]
    forged = await client.post(
        f"/approvals/{request_id}/reject", data={"reason": "forged from another site"}
    )
    assert forged.status_code == 403 and "CSRF" in forged.text
    # The JSON API with the cookie (not a bearer token) needs the CSRF header as well.
    forged = await client.post(f"/api/approvals/{request_id}/reject", json={"reason": "x"})
    assert forged.status_code == 403
    done = await client.post(
        f"/approvals/{request_id}/reject", data={"reason": "not today", "csrf": csrf.group(1)}
    )
    assert done.status_code == 303
    events = await read_events(console.store, request_id.split(":")[1])
    [resolved] = [e for e in events if e.type == "approval.resolved"]
    assert resolved.payload["decision"] == "rejected"
    me = (await console.api("operator").get("/api/me")).json()
    assert resolved.actor == f"console:operator-tester({me['token_id']})"


async def test_approve_edits_arguments_checked_against_the_tools_schema(
    any_console: Console,
) -> None:
    console = any_console
    api = console.api("operator")
    [first, *_] = (await api.get("/api/approvals")).json()["approvals"]
    rid = first["request_id"]
    # The inbox shows the schema an edit is checked against.
    assert set(first["parameters"]["properties"]) == {"target", "copies"}
    assert first["parameters"]["required"] == ["target"]
    assert "where to ship" in (await api.get("/approvals")).text
    bad = await api.post(f"/api/approvals/{rid}/approve", json={"arguments": {"copies": "many"}})
    assert bad.status_code == 400
    assert "copies" in bad.json()["error"]["message"]
    assert "invalid" in bad.json()["error"]["message"]
    ok = await api.post(
        f"/api/approvals/{rid}/approve", json={"arguments": {"copies": 3}, "comment": "ok"}
    )
    assert ok.status_code == 200, ok.text
    assert ok.json()["resolved_arguments"] == {"target": "dock-1", "copies": 3}
    again = await api.post(f"/api/approvals/{rid}/reject", json={"reason": "changed my mind"})
    assert again.status_code == 409
    assert "already approved" in again.json()["error"]["message"]
    run_id = first["run_id"]
    [resolved] = [
        e for e in await read_events(console.store, run_id) if e.type == "approval.resolved"
    ]
    assert resolved.actor.startswith("console:operator-tester(tok_")
    assert resolved.payload["arguments"] == {"target": "dock-1", "copies": 3}
    # A worker continues the run from the approval, with the edited arguments.
    from .conftest import drive_until_idle

    await drive_until_idle(console.store)
    done = (await api.get(f"/api/runs/{run_id}")).json()["run"]
    assert done["status"] == "completed" and "shipped 3 to dock-1" in done["answer"]


async def test_only_operators_and_admins_act_and_only_admins_set_budgets(
    any_console: Console,
) -> None:
    console = any_console
    rid = (await console.api("audit").get("/api/approvals")).json()["approvals"][0]["request_id"]
    for role in ("user", "audit"):
        r = await console.api(role).post(f"/api/approvals/{rid}/approve", json={})
        assert r.status_code == 403
        r = await console.api(role).post(f"/api/runs/{console.runs[0]}/fork", json={"at": 3})
        assert r.status_code == 403
    limits = {"scope": "tenant:acme", "daily": 5}
    for role in ("user", "operator", "audit"):
        r = await console.api(role).post("/api/budgets", json=limits)
        assert r.status_code == 403, role
    r = await console.api("operator").get("/budgets")
    assert "needs the admin role" in r.text
    r = await console.api("admin").post("/api/budgets", json=limits)
    assert r.status_code == 200 and r.json()["daily"] == 5.0
    r = await console.api("admin").post("/api/budgets", json={"scope": "tenant:acme", "hourly": 1})
    assert (r.json()["daily"], r.json()["hourly"]) == (5.0, 1.0)  # merged, as the CLI does
    shown = (await console.api("operator").get("/api/budgets")).json()
    assert shown["limits"]["tenant:acme"]["daily"] == 5.0
    assert any(w["scope"] == "tenant:acme" for w in shown["windows"])
    # Who changed them is kept (the ledger's history of its limits), newest first.
    admin = (await console.api("admin").get("/api/me")).json()["token_id"]
    assert [(c["scope"], c["actor"], c["limits"]["hourly"]) for c in shown["changes"]] == [
        ("tenant:acme", f"console:admin-tester({admin})", 1.0),
        ("tenant:acme", f"console:admin-tester({admin})", None),
    ]
    page = (await console.api("audit").get("/budgets")).text
    assert f"console:admin-tester({admin})" in page and "daily $5.0000" in page
    for body, words in (
        ({"scope": "planet:mars", "daily": 1}, "bad budget scope"),
        ({"scope": "global", "daily": "lots"}, "must be a number"),
        ({"scope": "global", "daily": -1}, "finite number"),
        ({"scope": "global"}, "nothing to set"),
    ):
        r = await console.api("admin").post("/api/budgets", json=body)
        assert r.status_code == 400 and words in r.json()["error"]["message"], r.text


async def test_reject_needs_a_reason_and_fork_and_queue_call_the_library(
    any_console: Console,
) -> None:
    console = any_console
    api = console.api("admin")
    rid = (await api.get("/api/approvals")).json()["approvals"][0]["request_id"]
    r = await api.post(f"/api/approvals/{rid}/reject", json={"reason": "  "})
    assert r.status_code == 400 and "needs a reason" in r.json()["error"]["message"]
    run = console.runs[0]
    forked = await api.post(f"/api/runs/{run}/fork", json={"at": 3})
    assert forked.status_code == 200, forked.text
    new_id = forked.json()["run_id"]
    assert forked.json()["forked_from"] == run
    record = await console.store.get_run(new_id)
    assert record.parent_run_id == run and record.head_seq == 5  # 3 copied, run.forked, note
    [note] = [e for e in await read_events(console.store, new_id) if e.type == "note"]
    assert note.actor.startswith("console:admin-tester(tok_")
    assert note.payload["text"] == f"forked from {run} at seq 3"
    bad = await api.post(f"/api/runs/{run}/fork", json={"at": "x"})
    assert bad.status_code == 400
    beyond = await api.post(f"/api/runs/{run}/fork", json={"at": 10_000})
    assert beyond.status_code == 400 and "has no event" in beyond.json()["error"]["message"]
    # Listed with its runway although its creation event is its parent's (the list reads
    # creations by one indexed query over creation times, and the fork's is older).
    since = record.created_at
    only = (await api.get("/api/runs", params={"since": since})).json()["runs"]
    assert [r["run_id"] for r in only] == [new_id]
    page = (await api.get(f"/api/runs/{new_id}")).json()
    assert page["parent_event"] == f"{run}:3"
    assert only[0]["runway"]["line"].startswith("[step")
    # The fork is queued (nobody drives it): hand it to a worker's queue.
    queued = await api.post(f"/api/runs/{new_id}/queue", json={})
    assert queued.status_code == 200 and queued.json()["queue"] == "default"
    last = (await read_events(console.store, new_id))[-1]
    assert (last.type, last.payload["text"]) == ("note", "handed to the worker queue 'default'")
    assert last.actor.startswith("console:admin-tester(tok_")
    waiting = await api.post(f"/api/runs/{run}/queue", json={})
    assert waiting.status_code == 400 and "waiting_approval" in waiting.json()["error"]["message"]


async def test_bad_input_gets_a_clear_error_with_the_right_status(console: Console) -> None:
    api = console.api("operator")
    cases = [
        ("get", "/api/runs/run_nope", 404, "run_nope"),
        ("get", "/runs/run_nope", 404, "run_nope"),
        ("get", "/api/why/not-an-event", 400, "event"),
        ("get", "/api/runs?status=sleeping", 400, "unknown status"),
        ("get", "/api/runs?limit=ten", 400, "whole number"),
        ("get", "/api/runs?since=yesterday-ish", 400, "not a time"),
        ("get", "/api/audit?type=tool.exploded", 400, "unknown event type"),
        ("get", "/api/nowhere", 404, "Not Found"),
        ("post", "/api/approvals/apr:nope/approve", 400, "not an approval id"),
        ("post", "/api/approvals/apr:run_nope:3/approve", 404, "run_nope"),
    ]
    for method, url, status, words in cases:
        r = await getattr(api, method)(url)
        assert r.status_code == status, (url, r.text)
        assert words in (r.json()["error"]["message"] if url.startswith("/api") else r.text)
        assert "Traceback" not in r.text
    rid = (await api.get("/api/approvals")).json()["approvals"][0]["request_id"]
    for body in (b"{not json", b"[1, 2]"):
        r = await api.post(
            f"/api/approvals/{rid}/approve", content=body,
            headers={"content-type": "application/json"},
        )  # fmt: skip
        assert r.status_code == 400 and "JSON" in r.json()["error"]["message"]


async def test_a_store_that_is_down_gets_503_not_a_traceback() -> None:
    store = PostgresStore("postgresql://postgres@127.0.0.1:1/test", connect_timeout_s=1)
    app = create_app(store=store)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://c",
        headers={"authorization": "Bearer tether_whatever"},
    ) as client:  # fmt: skip
        api = await client.get("/api/runs")
        page = await client.get("/runs")
    await store.close()
    assert api.status_code == 503 and "PostgreSQL store" in api.json()["error"]["message"]
    assert page.status_code == 503 and "Store unavailable" in page.text
    assert "Traceback" not in page.text


async def test_runs_filter_by_status_agent_tenant_and_time(console: Console) -> None:
    from .conftest import drive_until_idle, submit_shipments

    [acme] = await submit_shipments(console.store, 1, tenant="acme", ships=0)
    await drive_until_idle(console.store)
    api = console.api("operator")

    async def ids(query: str) -> set[str]:
        r = await api.get("/api/runs" + query)
        assert r.status_code == 200, r.text
        return {row["run_id"] for row in r.json()["runs"]}

    everything = set(console.runs) | {acme}
    assert await ids("") == everything
    assert await ids("?tenant=acme") == {acme}
    assert await ids("?status=completed") == {acme}
    assert await ids("?status=waiting_approval") == set(console.runs)
    assert await ids("?agent=shipper&since=1h") == everything
    assert await ids("?agent=other") == set()
    assert await ids("?until=2000-01-01") == set()
    rows = (await api.get("/api/runs")).json()["runs"]
    done = next(r for r in rows if r["run_id"] == acme)
    assert done["status"] == "completed" and done["steps"] >= 2 and done["runway"]["line"]
    waiting = next(r for r in rows if r["run_id"] == console.runs[0])
    assert "tether approvals" in waiting["waiting_for"]
    # Users do not get what a run waits for (it names the queue and agent version).
    for row in (await console.api("user").get("/api/runs")).json()["runs"]:
        assert row["waiting_for"] is None and row["runway"] is None


async def test_why_audit_health_export_and_doctor(console: Console) -> None:
    run = console.runs[0]
    api = console.api("operator")
    rid = (await api.get("/api/approvals")).json()["approvals"][0]["request_id"]
    chain = (await api.get(f"/api/why/{rid}")).json()
    assert chain["chain"][-1]["target"] and chain["chain"][-1]["type"] == "tool.requested"
    page = await api.get(f"/why/{rid.removeprefix('apr:')}")
    assert page.status_code == 200 and "◀ asked" in page.text
    found = (await api.get(f"/api/audit?run={run}&type=approval.requested")).json()
    assert [e["type"] for e in found["events"]] == ["approval.requested"]
    lines = (await api.get(f"/runs/{run}/export")).text.splitlines()
    audit_lines = (await console.api("audit").get(f"/api/runs/{run}/export")).text.splitlines()
    assert 0 < len(lines) < len(audit_lines)  # the always-hidden vault call is audit-only
    assert (await api.get("/api/health")).json()["doctor"] is None
    r = await api.post("/api/health/doctor", json={})
    assert r.status_code == 200 and r.json()["ok"] is True and r.json()["runs"] == 2
    assert (await api.get("/api/health")).json()["doctor"]["ok"] is True
    assert "All intact" in (await api.get("/health")).text


async def test_the_api_is_described_by_openapi(console: Console) -> None:
    spec = (await console.anonymous().get("/api/openapi.json")).json()
    paths = set(spec["paths"])
    for path in (
        "/api/runs", "/api/runs/{run_id}", "/api/runs/{run_id}/export", "/api/why/{event}",
        "/api/approvals", "/api/approvals/{request_id}/approve",
        "/api/approvals/{request_id}/reject", "/api/runs/{run_id}/fork",
        "/api/runs/{run_id}/queue", "/api/budgets", "/api/audit", "/api/health",
        "/api/health/doctor", "/api/me", "/api/tokens",
    ):  # fmt: skip
        assert path in paths, path
    runs = spec["paths"]["/api/runs"]["get"]
    assert {p["name"] for p in runs["parameters"]} >= {"status", "agent", "tenant", "since"}
    one = spec["paths"]["/api/runs/{run_id}"]["get"]["parameters"]
    assert {"name": "run_id", "in": "path", "required": True, "schema": {"type": "string"}} in one


async def test_tokens_never_reach_the_logs(
    console: Console, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = console.anonymous()
    await client.post("/login", data={"token": console.tokens["admin"]})
    await client.get("/runs")
    api = console.api("admin")
    rid = (await api.get("/api/approvals")).json()["approvals"][0]["request_id"]
    await api.post(f"/api/approvals/{rid}/approve", json={})
    await api.get("/api/runs/run_nope")
    text = caplog.text + "".join(str(r.__dict__) for r in caplog.records)
    assert "approved by console:admin-tester" in caplog.text
    for token in console.tokens.values():
        assert token not in text


async def test_the_run_page_shows_a_window_and_its_summary_is_tether_shows(
    console: Console, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tether.views import Viewer
    from tether.web import _pages

    monkeypatch.setattr(_pages, "TIMELINE_WINDOW", 5)
    run = console.runs[0]
    for role in ("user", "operator", "audit", "admin"):
        view = "operator" if role == "admin" else role
        full = await Viewer(console.store, view).run(run)  # what `tether show --view` reads
        api = console.api(role)
        first = (await api.get(f"/api/runs/{run}")).json()
        assert first["run"] == full["run"], role
        window = first["window"]
        assert window["until_seq"] == window["head_seq"] and window["older"]
        seen: list[dict[str, object]] = []
        page = first
        while True:
            seen = [e for g in page["groups"] for e in g["events"]] + seen
            if not page["window"]["older"]:
                break
            page = (
                await api.get(f"/api/runs/{run}?before={page['window']['after_seq'] + 1}")
            ).json()
            assert page["window"]["newer"]
        strip = {"line", "minor"}
        assert [{k: v for k, v in e.items() if k not in strip} for e in seen] == full["events"]
    html = (await console.api("operator").get(f"/runs/{run}")).text
    assert "← older events" in html


async def test_every_action_refuses_the_roles_that_may_not_take_it(console: Console) -> None:
    rid = (await console.api("audit").get("/api/approvals")).json()["approvals"][0]["request_id"]
    run = console.runs[0]
    actions = {
        f"/api/approvals/{rid}/approve": {"operator", "admin"},
        f"/api/approvals/{rid}/reject": {"operator", "admin"},
        f"/api/runs/{run}/fork": {"operator", "admin"},
        f"/api/runs/{run}/queue": {"operator", "admin"},
        "/api/budgets": {"admin"},
        "/api/health/doctor": {"operator", "audit", "admin"},
    }
    for url, allowed in actions.items():
        for role in ("user", "operator", "audit", "admin"):
            r = await console.api(role).post(url, json={"reason": "no", "at": 1})
            if role in allowed:
                assert r.status_code != 403, (url, role, r.text)
            else:
                assert r.status_code == 403, (url, role, r.text)
                assert f"the {role} role may not" in r.json()["error"]["message"]


async def test_a_session_whose_token_is_revoked_is_told_why_and_logged_out(
    console: Console,
) -> None:
    token, record = await create_token(console.store, role="operator", name="session")
    client = console.anonymous()
    await client.post("/login", data={"token": token})
    assert (await client.get("/runs")).status_code == 200
    await revoke_token(console.store, record.token_id)
    r = await client.get("/runs")
    assert r.status_code == 401 and "was revoked" in r.text and "Log in" in r.text
    assert 'tether_session=""' in r.headers["set-cookie"] or "Max-Age=0" in r.headers["set-cookie"]
    page = await client.get("/approvals")
    assert page.status_code == 303  # the cookie is gone: back to the login form
    logout = await console.anonymous().post("/logout")
    assert logout.status_code == 303 and logout.headers["location"] == "/login"


async def test_markup_in_a_run_is_text_on_the_page_and_pages_are_not_framed_or_cached(
    console: Console,
) -> None:
    from tether.worker import submit_run

    from .agents import shipping_agent
    from .conftest import AGENT_SPEC

    task = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    run = await submit_run(console.store, shipping_agent(0), task, agent_spec=AGENT_SPEC)
    r = await console.api("operator").get(f"/runs/{run}")
    assert r.status_code == 200
    assert "<script>alert" not in r.text and "<img src=x" not in r.text
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in r.text
    assert r.headers["x-frame-options"] == "DENY"
    assert "script-src" not in r.headers["content-security-policy"]  # default-src 'none'
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert r.headers["cache-control"] == "no-store"
    api = await console.api("operator").get(f"/api/runs/{run}")
    assert api.headers["cache-control"] == "no-store" and api.json()["run"]["task"] == task


async def test_health_warnings_show_on_the_list_the_run_and_the_health_page(
    console: Console,
) -> None:
    from tether.events import EventDraft
    from tether.journal._leases import brief_journal

    run = console.runs[1]
    async with brief_journal(console.store, run, role="test") as journal:
        await journal.append(
            EventDraft(type="health.warning", payload={"message": "same call repeated 3 times"})
        )

    async def count(role: str) -> int:
        rows = (await console.api(role).get("/api/runs")).json()["runs"]
        return int(next(r for r in rows if r["run_id"] == run)["health_events"])

    assert (await count("operator"), await count("user")) == (1, 0)  # user_hidden
    page = (await console.api("operator").get(f"/api/runs/{run}")).json()
    assert [e["line"] for e in page["health"]] == ["same call repeated 3 times"]
    assert (await console.api("user").get(f"/api/runs/{run}")).json()["health"] == []
    listed = (await console.api("audit").get("/api/health")).json()["events"]
    assert [e["run_id"] for e in listed] == [run]
    assert "same call repeated 3 times" in (await console.api("operator").get("/health")).text


async def test_the_run_pages_runway_reads_the_limits_in_force(console: Console) -> None:
    from tether.loop._relimit import change_limits

    run = console.runs[0]
    before = (await console.api("operator").get(f"/api/runs/{run}")).json()["runway"]
    assert "/10 " in before["line"]  # the agent's max_steps
    await change_limits(console.store, run, {"max_steps": 40}, actor="test")
    after = (await console.api("operator").get(f"/api/runs/{run}")).json()["runway"]
    assert "/40 " in after["line"], after


async def test_out_of_range_times_limits_and_fork_points_are_bad_requests(
    console: Console,
) -> None:
    api = console.api("operator")
    for url in (
        "/api/runs?since=99999999999d",  # before year 1
        "/api/runs?until=9999-12-31T23:59:59-01:00",  # after year 9999 in UTC
        "/api/audit?since=1e308h",
    ):
        r = await api.get(url)
        assert r.status_code == 400 and "is not a time" in r.json()["error"]["message"], url
    r = await api.get("/api/audit?limit=10001")
    assert r.status_code == 400 and "at most 10000" in r.json()["error"]["message"]
    run = console.runs[0]
    for at in (True, 1.9, "1.9", "²", None, [1]):
        r = await api.post(f"/api/runs/{run}/fork", json={"at": at})
        assert r.status_code == 400 and "whole number" in r.json()["error"]["message"], at
    assert (await api.post(f"/api/runs/{run}/fork", json={"at": "2"})).status_code == 200


async def test_an_always_hidden_tools_question_is_audit_only_in_the_inbox() -> None:
    from tether import Agent, Runtime, tool
    from tether.agent import Limits
    from tether.approvals import ask_human
    from tether.journal import MemoryStore
    from tether.models.scripted import ScriptedModel, call

    @tool(visibility="always_hidden")
    def vault_question() -> str:
        """Asks about the vault."""
        ask_human("Is «vault-combination-1234» still right?")
        return "unreachable"

    agent = Agent(
        name="q", instructions="x", tools=[vault_question], limits=Limits(),
        model=ScriptedModel([call("vault_question"), "ok"]),
    )  # fmt: skip
    store = MemoryStore()
    await Runtime(store).start(agent, "check")
    app = create_app(store=store)
    seen = {}
    for role in ("operator", "audit"):
        token, _ = await create_token(store, role=role, name=role)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://c",
            headers={"authorization": f"Bearer {token}"},
        ) as client:  # fmt: skip
            seen[role] = (await client.get("/api/approvals")).text + (
                await client.get("/approvals")
            ).text
    assert "vault-combination" not in seen["operator"]
    assert "audit-only" in seen["operator"]
    assert "vault-combination" in seen["audit"]


async def test_the_inbox_shows_what_came_before_each_request_in_the_readers_view(
    console: Console,
) -> None:
    pages = {}
    for role in ("operator", "audit"):
        [first, *_] = (await console.api(role).get("/api/approvals")).json()["approvals"]
        pages[role] = (first, (await console.api(role).get("/approvals")).text)
    operator, html = pages["operator"]
    # The task and the turn that asked to ship: the turn that called the vault and its
    # result are the auditor's alone (an always-hidden tool).
    assert [c["type"] for c in operator["context"]] == ["message.user", "model.completed"]
    assert operator["context"][-1]["line"].startswith("shipping batch 1 → ship(")
    assert "excerpt" not in operator and "vault-output" not in html
    assert f'href="/why/{operator["context"][-1]["id"]}"' in html
    audit, html = pages["audit"]
    assert [c["type"] for c in audit["context"]] == [
        "message.user",
        "model.completed",
        "tool.completed",
        "model.completed",
    ]
    assert "vault-output" in audit["excerpt"] and "vault-output" in html


async def test_the_health_page_lists_the_newest_events_first(console: Console) -> None:
    from tether.events import EventDraft
    from tether.journal._leases import brief_journal
    from tether.web import _pages

    for i, run in enumerate([*console.runs, console.runs[0]]):
        async with brief_journal(console.store, run, role="test") as journal:
            await journal.append(
                EventDraft(type="health.warning", payload={"message": f"warning {i}"})
            )
    shown = (await console.api("operator").get("/api/health")).json()
    assert [e["line"] for e in shown["events"]] == ["warning 2", "warning 1", "warning 0"]
    assert shown["more"] is False
    # Bounded: the newest of many, and a word that older ones exist.
    newest = await _pages.health_data(console.store, "operator", limit=2)
    assert [e["line"] for e in newest["events"]] == ["warning 2", "warning 1"] and newest["more"]


async def test_forms_posted_from_another_site_are_refused(console: Console) -> None:
    """A login from another site's page would sign the reader in with that site's token
    (its actions then journaled in another name); the browser says where a form came from."""
    client = console.anonymous()
    for where in ("cross-site", "same-site"):
        r = await client.post(
            "/login", data={"token": console.tokens["operator"]},
            headers={"sec-fetch-site": where},
        )  # fmt: skip
        assert r.status_code == 403 and "own pages" in r.text
        assert "set-cookie" not in r.headers
    r = await client.post(
        "/login", data={"token": console.tokens["operator"]},
        headers={"sec-fetch-site": "same-origin"},
    )  # fmt: skip
    assert r.status_code == 303
    page = await client.get("/approvals")
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text)
    assert csrf is not None
    rid = re.findall(r'data-request="([^"]+)"', page.text)[0]
    r = await client.post(
        f"/approvals/{rid}/reject", data={"reason": "x", "csrf": csrf.group(1)},
        headers={"sec-fetch-site": "cross-site"},
    )  # fmt: skip
    assert r.status_code == 403


async def test_the_inbox_reads_approval_events_not_whole_journals(
    any_console: Console, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A waiting run of 10,000 events must not make the inbox read 10,000 events."""
    import tether.approvals as approvals_module

    console = any_console
    before = (await console.api("operator").get("/api/approvals")).json()["approvals"]
    reads: list[tuple[str, int, int | None]] = []
    real = approvals_module.read_events

    async def counted(store, run_id, *, after_seq=0, until_seq=None):  # type: ignore[no-untyped-def]
        reads.append((run_id, after_seq, until_seq))
        return await real(store, run_id, after_seq=after_seq, until_seq=until_seq)

    monkeypatch.setattr(approvals_module, "read_events", counted)
    after = (await console.api("operator").get("/api/approvals")).json()["approvals"]
    assert after == before and len(after) == 2
    assert reads == []  # the approval events came from the audit index
    rid = after[0]["request_id"]
    ok = await console.api("operator").post(f"/api/approvals/{rid}/approve", json={})
    assert ok.status_code == 200 and ok.json()["decision"] == "approved"
    again = await console.api("operator").post(f"/api/approvals/{rid}/reject", json={"reason": "x"})
    assert again.status_code == 409


async def test_the_last_doctor_result_is_kept_in_the_store_for_any_console(
    console: Console,
) -> None:
    """`tether doctor` from a terminal, or a console's own check, is what the health page
    shows, in any console process started later (it is kept in the store)."""
    from typer.testing import CliRunner

    from tether.cli import app as cli

    assert (await console.api("operator").get("/api/health")).json()["doctor"] is None
    url = console.store.url  # type: ignore[attr-defined]
    done = await asyncio.to_thread(CliRunner().invoke, cli, ["doctor", "--store", url])
    assert done.exit_code == 0, done.output
    kept = (await console.api("operator").get("/api/health")).json()["doctor"]
    assert kept["ok"] is True and kept["runs"] == 2 and kept["by"] == "tether doctor"
    assert "by tether doctor" in (await console.api("operator").get("/health")).text
    await console.api("operator").post("/api/health/doctor", json={})
    assert (await console.store.last_doctor())["by"].startswith("console:")  # type: ignore[attr-defined]
