"""A real HTTP server that accepts a request and never answers: `tether run --max-time`
must end the run `stopped` within the limit plus a few seconds, with the cut-off attempt in
the journal (the issue measured 11+ minutes frozen in step 1 before this)."""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from ..conftest import require

AGENT_FILE = """
from tether import Agent, Limits

agent = Agent(name="hung", instructions="Answer.", limits=Limits(max_steps=5))
"""


@pytest.fixture
def hung_server() -> Iterator[str]:
    """A TCP server that reads requests and never writes a byte back."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            held.append(conn)  # keep it open, say nothing

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}/v1"
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        server.close()


def test_a_hung_model_server_stops_the_run_within_max_time(
    tmp_path: Path, hung_server: str
) -> None:
    require(importlib.util.find_spec("openai") is not None, "the openai package (llm-test)")
    (tmp_path / "agent.py").write_text(AGENT_FILE)
    prices = tmp_path / "prices.json"
    prices.write_text('{"local": {"input_per_mtok": 0, "output_per_mtok": 0}}')
    env = {
        "OPENAI_BASE_URL": hung_server, "OPENAI_API_KEY": "x", "PATH": "/usr/bin:/bin",
        "TETHER_PRICES": str(prices),
    }  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "tether", "run", "agent.py:agent", "--task", "hi",
         "--model", "openai:local", "--max-time", "3", "--json",
         "--store", f"sqlite:///{tmp_path / 't.db'}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 3, done.stdout + done.stderr
    assert '"status": "stopped"' in done.stdout
    shown = subprocess.run(
        [sys.executable, "-m", "tether", "show", done.stdout.split('"run_id": "')[1][:20],
         "--store", f"sqlite:///{tmp_path / 't.db'}", "--json"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert '"type": "model.failed"' in shown.stdout and "OutOfTime" in shown.stdout
    # The run itself (journal time, so process start-up on a busy machine does not count)
    # ended within its 3 s, the wrap-up grace (a tenth of the limit) and a little slack;
    # the subprocess timeout above catches a run that hangs outright.
    events = json.loads(shown.stdout)["events"]
    took = _epoch(events[-1]["ts"]) - _epoch(events[0]["ts"])
    assert took < 3 + 0.3 + 1.5, took


def _epoch(ts: str) -> float:
    return datetime.fromisoformat(ts).timestamp()
