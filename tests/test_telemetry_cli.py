"""OpenTelemetry from the command line: `TETHER_OTEL` on `tether demo`, `run`, `resume`
and `worker` (real processes), and `observer_from_env` itself.

Claims: with TETHER_OTEL=console a command writes its spans to stderr, one JSON object a
line, before it exits (stdout keeps only the --json answer): `invoke_agent` > `cycle` >
`chat` / `execute_tool`, every cycle and call carrying `tether.correlation_id`; a worker
run with --until-idle exports the spans of the runs it drove, and one stopped by SIGTERM
those of the runs it handed back (and still exits 0); a run paused for approval and
resumed in another process gives two segments of the same run; a bad TETHER_OTEL value
is a one-line usage error (exit 2), a missing exporter or SDK a UsageError saying what to
install; unset, there is no telemetry.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

import pytest

from tether.errors import UsageError
from tether.telemetry import TelemetryObserver, observer_from_env

from .cli.test_cli import AGENT_FILE

TETHER = [sys.executable, "-m", "tether"]


def _env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("TETHER_CHAOS", "TETHER_STORE", "TETHER_OTEL") and not k.startswith("OTEL_")
    }
    env.update(extra)
    return env


def tether(*args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TETHER, *args], env=_env(**env), capture_output=True, text=True, timeout=timeout
    )


def spans_in(stderr: str) -> list[dict[str, Any]]:
    """The spans ConsoleSpanExporter wrote, one JSON object a line, among other lines."""
    spans = []
    for line in stderr.splitlines():
        if line.startswith("{"):
            item = json.loads(line)
            if isinstance(item, dict) and "context" in item and "name" in item:
                spans.append(item)
    return spans


def named(spans: list[dict[str, Any]], prefix: str) -> list[dict[str, Any]]:
    return [s for s in spans if s["name"].startswith(prefix)]


def check_tree(spans: list[dict[str, Any]], run_id: str) -> None:
    """One run's spans: the GenAI shape, nested, every one of them ended and attributed."""
    mine = [s for s in spans if s["attributes"].get("tether.run_id") == run_id]
    assert mine, f"no spans of {run_id}"
    by_id = {s["context"]["span_id"]: s for s in mine}
    agents = named(mine, "invoke_agent ")
    cycles = named(mine, "cycle ")
    chats = named(mine, "chat ")
    tools = named(mine, "execute_tool ")
    assert agents and cycles and chats and tools, sorted({s["name"] for s in mine})
    for span in agents:
        assert span["attributes"]["gen_ai.operation.name"] == "invoke_agent"
        assert span["parent_id"] is None
    for span in cycles:
        assert by_id[span["parent_id"]]["name"].startswith("invoke_agent ")
    for span in chats + tools:
        assert by_id[span["parent_id"]]["name"].startswith("cycle ")
        assert span["attributes"]["gen_ai.operation.name"] in ("chat", "execute_tool")
    for span in cycles + chats + tools:
        corr = span["attributes"]["tether.correlation_id"]
        assert isinstance(corr, str) and corr
    for span in chats + tools:  # a call shares its cycle's correlation id
        cycle = by_id[span["parent_id"]]["attributes"]["tether.correlation_id"]
        assert span["attributes"]["tether.correlation_id"] == cycle
    assert all(s["end_time"] for s in mine)
    assert len({s["context"]["trace_id"] for s in mine}) == len(agents)


# -- tether demo / run / resume -----------------------------------------------------------


def test_demo_with_console_writes_its_spans_to_stderr(tmp_path: Path) -> None:
    done = tether(
        "demo", "--store", f"sqlite:///{tmp_path}/s.db", "--out", str(tmp_path / "out"),
        "--yes", "--quiet", "--json",
        TETHER_OTEL="console", OTEL_SERVICE_NAME="tether-test",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)  # stdout holds the answer only
    assert result["status"] == "completed"
    spans = spans_in(done.stderr)
    check_tree(spans, result["run_id"])
    names = {s["name"] for s in spans}
    assert {"invoke_agent research-demo", "chat scripted", "execute_tool search",
            "execute_tool publish"} <= names  # fmt: skip
    agents = named(spans, "invoke_agent ")
    assert agents[-1]["attributes"]["tether.status"] == "completed"
    assert {a["attributes"]["gen_ai.agent.name"] for a in agents} == {"research-demo"}
    assert {s["resource"]["attributes"]["service.name"] for s in spans} == {"tether-test"}
    assert any(e["name"] == "approval.requested" for s in spans for e in s["events"])


def test_run_with_console_writes_its_spans_and_unset_writes_none(tmp_path: Path) -> None:
    (tmp_path / "shout.py").write_text(AGENT_FILE)
    store = f"sqlite:///{tmp_path}/s.db"
    args = ("run", f"{tmp_path / 'shout.py'}:agent", "--task", "hi", "--store", store, "--json")
    done = tether(*args, TETHER_OTEL="console")
    assert done.returncode == 0, done.stderr
    run_id = json.loads(done.stdout)["run_id"]
    spans = spans_in(done.stderr)
    check_tree(spans, run_id)
    assert {"invoke_agent shouter", "execute_tool shout"} <= {s["name"] for s in spans}
    assert {s["resource"]["attributes"]["service.name"] for s in spans} == {"tether"}

    quiet = tether(*args)
    assert quiet.returncode == 0, quiet.stderr
    assert spans_in(quiet.stderr) == [] and quiet.stderr == ""


def test_a_run_paused_then_resumed_elsewhere_gives_two_segments(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path}/s.db"
    paused = tether(
        "demo", "--store", store, "--out", str(tmp_path / "out"), "--detach", "--quiet",
        "--json", TETHER_OTEL="console",
    )  # fmt: skip
    assert paused.returncode == 4, paused.stderr  # waiting for a human
    result = json.loads(paused.stdout)
    run_id = result["run_id"]
    (request,) = result["pending_approvals"]
    first = spans_in(paused.stderr)
    check_tree(first, run_id)
    (segment,) = named(first, "invoke_agent ")
    assert segment["attributes"]["tether.segment"] == "start"
    assert segment["attributes"]["tether.status"] == "released"

    approved = tether("approve", request, "--store", store)
    assert approved.returncode == 0, approved.stderr
    resumed = tether("resume", run_id, "--store", store, "--quiet", "--json", TETHER_OTEL="console")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["status"] == "completed"
    second = spans_in(resumed.stderr)
    (segment,) = named(second, "invoke_agent ")
    assert segment["attributes"]["tether.run_id"] == run_id
    assert segment["attributes"]["tether.segment"] == "continued"
    assert segment["attributes"]["tether.status"] == "completed"
    assert named(second, "execute_tool publish")


# -- tether worker --------------------------------------------------------------------------


def test_worker_until_idle_exports_the_spans_of_the_runs_it_drove(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path}/s.db"
    ids = []
    for _ in range(2):
        done = tether("demo", "--submit", "--yes", "--store", store, "--out", str(tmp_path / "o"))
        assert done.returncode == 0, done.stderr
        ids.append(done.stdout.strip())
    served = tether("worker", "--until-idle", "--store", store, TETHER_OTEL="console")
    assert served.returncode == 0, served.stderr
    spans = spans_in(served.stderr)
    for run_id in ids:
        check_tree(spans, run_id)
        agents = [
            s for s in named(spans, "invoke_agent ") if s["attributes"]["tether.run_id"] == run_id
        ]
        assert {a["name"] for a in agents} == {"invoke_agent research-demo"}
        assert agents[-1]["attributes"]["tether.status"] == "completed"
    assert served.stderr.count("finished run=") == 2


async def _wait_for_head(url: str, run_id: str, *, at_least: int, within: float) -> None:
    from tether.journal import open_store

    s = open_store(url)
    try:
        deadline = time.monotonic() + within
        while (await s.get_run(run_id)).head_seq < at_least:
            assert time.monotonic() < deadline, "the run did not progress"
            await asyncio.sleep(0.05)
    finally:
        await s.close()


def test_worker_stopped_by_sigterm_exports_the_spans_of_the_run_it_handed_back(
    tmp_path: Path,
) -> None:
    store = f"sqlite:///{tmp_path}/s.db"
    done = tether("demo", "--submit", "--yes", "--store", store, "--out", str(tmp_path / "o"))
    assert done.returncode == 0, done.stderr
    run_id = done.stdout.strip()
    proc = subprocess.Popen(
        [*TETHER, "worker", "--store", store, "--lease-ttl", "60"],
        env=_env(TETHER_OTEL="console", TETHER_CHAOS="model_latency=0.2"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        asyncio.run(_wait_for_head(store, run_id, at_least=12, within=30))
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    assert "handed back run=" in stderr, stderr
    spans = spans_in(stderr)
    check_tree(spans, run_id)
    (agent,) = named(spans, "invoke_agent ")
    assert agent["attributes"]["tether.status"] == "released"


# -- usage errors ---------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["demo", "run", "resume", "worker"])
def test_a_bad_tether_otel_value_is_a_one_line_usage_error(command: str, tmp_path: Path) -> None:
    (tmp_path / "shout.py").write_text(AGENT_FILE)
    args = {
        "demo": ["demo", "--out", str(tmp_path / "out"), "--quiet"],
        "run": ["run", f"{tmp_path / 'shout.py'}:agent", "--task", "hi"],
        "resume": ["resume", "run_nope"],
        "worker": ["worker", "--until-idle"],
    }[command]
    done = tether(*args, "--store", f"sqlite:///{tmp_path}/s.db", TETHER_OTEL="jaeger")
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == (
        "error: unknown TETHER_OTEL='jaeger': use console (spans on stderr) or otlp "
        "(OTEL_EXPORTER_OTLP_* settings), or leave it unset"
    )
    assert done.stdout == ""


@pytest.mark.parametrize("command", ["demo", "run", "resume", "worker"])
def test_help_mentions_tether_otel(command: str) -> None:
    from typer.testing import CliRunner

    from tether.cli import app

    done = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert done.exit_code == 0, done.output
    text = " ".join(done.output.split())
    assert "TETHER_OTEL=console" in text and "TETHER_OTEL=otlp" in text
    assert "pip install 'tether-runtime[otel]'" in text


# -- observer_from_env ----------------------------------------------------------------------


def test_unset_or_empty_means_no_telemetry() -> None:
    assert observer_from_env({}) is None
    assert observer_from_env({"TETHER_OTEL": ""}) is None
    assert observer_from_env({"TETHER_OTEL": "  "}) is None


def test_unknown_values_protocols_and_missing_exporters_are_usage_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(UsageError, match="unknown TETHER_OTEL='stdout': use console"):
        observer_from_env({"TETHER_OTEL": "stdout"})
    with pytest.raises(UsageError, match="'http/json' is not supported"):
        observer_from_env({"TETHER_OTEL": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"})

    # A module set to None in sys.modules cannot be imported: the exporters are "missing"
    # whether or not they are installed here.
    for name in ("http", "grpc"):
        module = f"opentelemetry.exporter.otlp.proto.{name}.trace_exporter"
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(UsageError) as missing:
        observer_from_env({"TETHER_OTEL": "otlp"})
    assert str(missing.value) == (
        "TETHER_OTEL=otlp (http/protobuf) needs the OTLP exporter: "
        "pip install opentelemetry-exporter-otlp-proto-http"
    )
    with pytest.raises(UsageError, match="pip install opentelemetry-exporter-otlp-proto-grpc"):
        observer_from_env({"TETHER_OTEL": "otlp", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"})


def test_without_the_sdk_it_says_to_install_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)
    with pytest.raises(UsageError, match=r"pip install 'tether-runtime\[otel\]'"):
        observer_from_env({"TETHER_OTEL": "console"})


def test_otlp_uses_the_exporter_and_close_exports_then_shuts_down(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    made: list[InMemorySpanExporter] = []

    def make() -> InMemorySpanExporter:
        made.append(InMemorySpanExporter())
        return made[-1]

    fake = types.ModuleType("fake_otlp")
    fake.OTLPSpanExporter = make  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.http.trace_exporter", fake)
    observer = observer_from_env({"TETHER_OTEL": "OTLP", "OTEL_SERVICE_NAME": "svc"})
    assert isinstance(observer, TelemetryObserver) and observer.owns_provider
    observer.tracer.start_span("done").end()
    observer.close()  # ends, exports (batch processor), shuts the provider down
    (exporter,) = made
    (span,) = exporter.get_finished_spans()
    assert span.name == "done" and span.resource.attributes["service.name"] == "svc"
    assert exporter._stopped  # shut down with the provider
