"""Golden journals: committed bytes that every later version must keep loading.

The files in tests/golden/ were written once by tests/golden/make_golden.py and are
committed. NEVER regenerate them to make this test pass: a failure here means a change
broke journals that already exist on users' disks (the envelope, the checksum, the chain,
or what the fold makes of them). Fix the code, or, for a deliberate format change, add an
upcaster and new golden files *beside* these ones; the old ones stay and keep passing.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from tether.events import Event, decode_event
from tether.journal import Store, load_run, read_events, verify_run
from tether.state import RunState, fold

from .helpers import import_events

GOLDEN = Path(__file__).parent.parent / "golden"
NAMES = ["completed_run", "stopped_run", "repaired_run"]


def golden_lines(name: str) -> list[bytes]:
    data = (GOLDEN / f"{name}.jsonl").read_bytes()
    assert data.endswith(b"\n")
    return data[:-1].split(b"\n")


ADDED_SINCE: dict[str, object] = {"key_base": ""}
"""State fields added after the golden files were written, with the value the fold gives
them for these journals (the files stay as written; see the module docstring)."""


def golden_state(name: str) -> dict[str, object]:
    state: dict[str, object] = json.loads((GOLDEN / f"{name}.state.json").read_text())
    return {**ADDED_SINCE, **state}


def test_every_golden_journal_has_its_expected_state() -> None:
    jsonl = sorted(p.name.removesuffix(".jsonl") for p in GOLDEN.glob("*.jsonl"))
    states = sorted(p.name.removesuffix(".state.json") for p in GOLDEN.glob("*.state.json"))
    assert jsonl == states == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
async def test_golden_journal_imports_verifies_and_folds_to_the_committed_state(
    store: Store, name: str
) -> None:
    lines = golden_lines(name)
    events: list[Event] = [decode_event(line) for line in lines]
    assert all(e.schema_version == 1 for e in events)  # written before v2: still v1
    run_id = events[0].run_id

    await import_events(store, events)

    report = await verify_run(store, run_id)
    assert report.ok, report.problems
    assert report.events == report.head_seq == len(lines)
    # The store keeps the bytes exactly; nothing is re-encoded on the way in or out.
    assert [bytes(r.raw) for r in await store.read_rows(run_id)] == lines

    expected = golden_state(name)
    folded = fold(await read_events(store, run_id))
    assert folded == RunState.from_json(expected)
    assert json.loads(json.dumps(folded.to_json())) == expected
    loaded = await load_run(store, run_id)
    assert loaded.torn_tail is None and loaded.state == folded


@pytest.mark.parametrize("name", NAMES)
def test_golden_journal_is_one_hash_chain(name: str) -> None:
    events = [decode_event(line) for line in golden_lines(name)]
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events[0].prev_hash == "0" * 64 and events[0].type == "run.created"
    for before, after in itertools.pairwise(events):
        assert after.prev_hash == before.checksum
