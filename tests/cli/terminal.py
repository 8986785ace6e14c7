"""Drive the real `tether` command in a pseudo-terminal, as a person at a keyboard would."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][0-9A-B]|\r")


class Terminal:
    """`tether ARGS` with stdin, stdout and stderr on one pty; `expect` reads its screen."""

    def __init__(self, *args: str, cwd: Path, env: dict[str, str] | None = None) -> None:
        master, slave = os.openpty()
        os.set_blocking(master, False)
        self.master = master
        self.seen = ""
        self.pos = 0
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tether", *args],
            cwd=cwd,
            env={**os.environ, "COLUMNS": "200", "TERM": "xterm", **(env or {})},
            stdin=slave,
            stdout=slave,
            stderr=slave,
            start_new_session=True,  # its own process group: Ctrl-C reaches only it
        )
        os.close(slave)

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return True
        try:
            chunk = os.read(self.master, 65536)
        except OSError:  # the other side closed: the process has exited
            return False
        if not chunk:
            return False
        self.seen += chunk.decode("utf-8", "replace")
        return True

    @property
    def text(self) -> str:
        """What was printed so far, without terminal control sequences."""
        return ANSI.sub("", self.seen)

    def expect(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        """Wait until `pattern` is printed after what the previous expect matched."""
        deadline = time.monotonic() + timeout
        while True:
            found = re.compile(pattern).search(self.text, self.pos)
            if found:
                self.pos = found.end()
                return found
            if time.monotonic() > deadline or not self._read(0.1):
                raise AssertionError(f"{pattern!r} not printed; the screen:\n{self.text}")

    def send(self, text: str) -> None:
        os.write(self.master, text.encode())

    def interrupt(self) -> None:
        """Ctrl-C: SIGINT to the foreground process group, as the terminal sends it."""
        os.killpg(self.proc.pid, signal.SIGINT)

    def wait(self, timeout: float = 60.0) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self._read(0.1)
        code = self.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        while select.select([self.master], [], [], 0.05)[0] and self._read(0):
            pass  # what it printed last
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)
