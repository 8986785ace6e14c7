"""`tether demo` on a real terminal: the progress line, the inline approval prompt, Ctrl-C."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .terminal import Terminal

pytestmark = pytest.mark.slow

PROGRESS = r"run_\w+ step \d+ · [\d,]+ tokens · \$\d+\.\d{4} · \d+\.\ds"


def demo(folder: Path, *extra: str, env: dict[str, str] | None = None) -> Terminal:
    store = f"sqlite:///{folder}/t.db"
    return Terminal("demo", "--store", store, "--out", str(folder / "out"), *extra,
                    cwd=folder, env=env)  # fmt: skip


def test_readme_first_command_shows_progress_asks_and_publishes(tmp_path: Path) -> None:
    term = demo(tmp_path)
    try:
        term.expect(PROGRESS + r" · waiting_approval")  # the last line of progress stays
        term.expect(r"approval needed apr:run_\w+:\d+")
        term.expect(r"\[a\]pprove, \[r\]eject, \[e\]dit arguments, \[w\]ait")
        term.send("y\r")  # not an answer the prompt knows: it asks again
        term.expect(r"unknown answer 'y': type a, r, e or w")
        term.expect(r"\[a\]pprove")
        term.send("a\r")
        term.expect(PROGRESS + r" · completed")
        found = term.expect(r"report: (\S+report\.md)")
        assert term.wait() == 0
    finally:
        term.close()
    report = Path(found.group(1))
    assert report.parent.parent == tmp_path / "out" and report.read_text().startswith("# ")


def readme_sample() -> list[str]:
    """The README's sample of `tether demo` on a terminal, one pattern a line: any run id,
    any duration, and `…` for text the README shortens."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    (block,) = [b for b in readme.split("```") if "\napproval needed apr:" in b]
    patterns = []
    for line in block.strip().splitlines():
        if line.strip():
            pattern = re.escape(line).replace("…", ".*?")
            pattern = re.sub(r"run_[a-z0-9]+", r"run_\\w+", pattern)
            patterns.append(re.sub(r"\d\\.\ds", r"\\d+\\.\\ds", pattern))
    return patterns


def test_the_readme_first_command_prints_what_the_readme_shows(tmp_path: Path) -> None:
    """`tether demo` exactly as the README's first command runs it: default store and folder."""
    sample = readme_sample()
    assert len(sample) == 11
    term = Terminal("demo", cwd=tmp_path)
    try:
        for pattern in sample:
            if pattern.startswith(re.escape("[a]pprove")):  # the answer typed, echoed
                term.expect(pattern.removesuffix(re.escape(" a")))
                term.send("a\r")
                term.expect(r" a\n")
                continue
            term.expect(pattern)
        assert term.wait() == 0
    finally:
        term.close()
    (report,) = (tmp_path / "tether-demo").glob("run_*/report.md")
    assert report.read_text().startswith("# Ferrogel Knot Storage in 2026")


def test_edit_asks_again_on_bad_json_and_runs_the_merged_arguments(tmp_path: Path) -> None:
    term = demo(tmp_path)
    try:
        term.expect(r"\[a\]pprove")
        term.send("e\r")
        term.expect(r"arguments as JSON")
        term.send('{"title": oops\r')  # not JSON: asked again, nothing journaled
        term.expect(r"error: not valid JSON")
        term.expect(r"arguments as JSON")
        term.send('{"sections": "Summary"}\r')  # not a list: the tool's schema refuses it
        term.expect(r"error: edited arguments for publish are invalid: sections")
        term.expect(r"arguments as JSON")
        term.send('{"title": "Edited at the prompt"}\r')
        found = term.expect(r"report: (\S+report\.md)")
        assert term.wait() == 0
    finally:
        term.close()
    report = Path(found.group(1)).read_text()
    assert report.startswith("# Edited at the prompt\n")
    assert "## Open questions" in report  # the sections were kept: the edit was merged


def test_ctrl_c_at_the_prompt_leaves_the_run_waiting_and_says_so(tmp_path: Path) -> None:
    term = demo(tmp_path)
    try:
        term.expect(r"\[a\]pprove")
        term.interrupt()  # the first Ctrl-C counts
        found = term.expect(r"interrupted: run (run_\w+) waits for apr:run_\w+:\d+")
        term.expect(r"approve:  tether approve apr:")
        assert term.wait() == 4
    finally:
        term.close()
    listed = subprocess.run(
        [sys.executable, "-m", "tether", "ls", "--json", "--store", f"sqlite:///{tmp_path}/t.db"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    (row,) = json.loads(listed.stdout)
    assert row["run_id"] == found.group(1) and row["status"] == "waiting_approval"


def test_ctrl_c_during_a_run_names_the_run_and_how_to_resume_it(tmp_path: Path) -> None:
    term = demo(tmp_path, "--yes", env={"TETHER_CHAOS": "model_latency=0.2"})
    try:
        term.expect(PROGRESS)
        term.interrupt()
        found = term.expect(
            r"interrupted: run (run_\w+) is safe in its journal; continue it with: "
            r"tether resume (run_\w+) --store sqlite:///"
        )
        assert found.group(1) == found.group(2)
        assert term.wait() == 130
    finally:
        term.close()
