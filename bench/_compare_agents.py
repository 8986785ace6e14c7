"""The loop benchmark's workload, and the same scripted agent on LangGraph and on DBOS.

`bench/loop.py` runs every measurement in a child process. This module holds what all
of them share (the ~1 KB tool result, the task, how a measurement is reported) and the
two comparison agents, run as children:

    python bench/_compare_agents.py langgraph --n 1000 --saver sqlite --db PATH
    python bench/_compare_agents.py langgraph --n 1000 --saver memory
    python bench/_compare_agents.py dbos --n 1000 --db PATH [--sqlite wal-normal]

A child prints `@@progress {json}` lines while it runs and one `@@result {json}` line at
the end; anything else it prints (library logs) is ignored by the parent.

Importing this module never imports langgraph or dbos: only the child entry points do,
so `bench/loop.py` runs (and says what it skipped) when they are not installed.

The agent is the same everywhere: a scripted "model" that, looking only at how many
messages the conversation holds (O(1) per turn), calls the tool `fetch(i)` until it has
N results and then answers; the tool returns a deterministic 1,024-character text. One
step = one model turn that calls the tool + that tool call (N steps, then one final
answering turn).
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import importlib.util
import itertools
import json
import random
import resource
import sys
import time
from typing import Any

TOOL_CHARS = 1024
TASK = "Fetch every result page and say when you are done."
FINAL_ANSWER = "done: every page fetched"
PROGRESS_EVERY = 100
"""Children report progress every this many steps (used when a run is cut by a timeout)."""

_WORDS = (  # noqa: SIM905
    "the of and to in is for on with as by that from at this result page search "
    "source agent value table error file line token model journal step report data "
    "found returned status query match count index record field date price north "
    "sample test batch cache write read commit latency median figure"
).split()


def tool_output(i: int, chars: int = TOOL_CHARS) -> str:
    """The tool's result for call `i`: deterministic, realistic-looking text, `chars` long."""
    rng = random.Random(i)
    words = [f"[page {i}]"]
    size = len(words[0])
    while size < chars:
        word = rng.choice(_WORDS)
        words.append(word)
        size += len(word) + 1
    return " ".join(words)[:chars]


def outputs(n: int) -> list[str]:
    """Every tool result of an N-step run, made before the clock starts."""
    return [tool_output(i) for i in range(n + 1)]


# -- what a child reports ---------------------------------------------------------------


def emit(kind: str, data: dict[str, Any]) -> None:
    print(f"@@{kind} {json.dumps(data)}", flush=True)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def step_profile(stamps: list[float], end: float) -> dict[str, float]:
    """Mean ms per step over the first and the last tenth of the run.

    `stamps` are the times the model was called (one per step, plus the final turn), so
    the interval between two calls is one whole step: model turn, tool, journaling.
    """
    marks = [*stamps, end]
    gaps = [b - a for a, b in itertools.pairwise(marks)][: len(stamps) - 1]
    if len(gaps) < 10:
        return {"first_tenth_ms": float("nan"), "last_tenth_ms": float("nan")}
    k = len(gaps) // 10
    return {
        "first_tenth_ms": sum(gaps[:k]) / k * 1000,
        "last_tenth_ms": sum(gaps[-k:]) / k * 1000,
    }


class Progress:
    """Emits a progress line every PROGRESS_EVERY steps."""

    def __init__(self, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self.t0 = time.perf_counter()
        self.c0 = time.process_time()

    def step(self, done: int) -> None:
        if self.enabled and done and done % PROGRESS_EVERY == 0:
            emit(
                "progress",
                {
                    "steps": done,
                    "wall_s": time.perf_counter() - self.t0,
                    "cpu_s": time.process_time() - self.c0,
                },
            )


def versions() -> dict[str, str | None]:
    """Installed versions of the comparison packages, found without importing them."""
    out: dict[str, str | None] = {}
    for dist in (
        "langgraph",
        "langgraph-checkpoint",
        "langgraph-checkpoint-sqlite",
        "langchain-core",
        "dbos",
        "sqlalchemy",
    ):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    return out


def available(system: str) -> tuple[bool, str]:
    """Whether a comparison system can run here, and why not (without importing it)."""
    needs = {
        "langgraph": ("langgraph", "langgraph.checkpoint.sqlite", "langchain_core"),
        "dbos": ("dbos", "sqlalchemy"),
    }[system]
    for module in needs:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            return False, f"{module} is not installed (pip install -e '.[bench]')"
    return True, ""


# -- LangGraph ------------------------------------------------------------------------


def run_langgraph(
    n: int, saver_kind: str, db: str | None, durability: str | None = None
) -> dict[str, Any]:
    """A two-node graph (model -> tools -> model ...) with the SQLite or in-memory saver."""
    import sqlite3

    from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
    from langgraph.graph import END, START, MessagesState, StateGraph

    texts = outputs(n)
    stamps: list[float] = []
    progress = Progress()

    # No annotations on the nodes: LangGraph reads them at run time, in module scope.
    def model(state):  # type: ignore[no-untyped-def]
        stamps.append(time.perf_counter())
        done = (len(state["messages"]) - 1) // 2  # task, then (call, result) pairs
        progress.step(done)
        if done >= n:
            return {"messages": [AIMessage(content=FINAL_ANSWER)]}
        call = {"name": "fetch", "args": {"i": done}, "id": f"call_{done}"}
        return {"messages": [AIMessage(content="", tool_calls=[call])]}

    def tools(state):  # type: ignore[no-untyped-def]
        call = state["messages"][-1].tool_calls[0]
        result = ToolMessage(
            content=texts[call["args"]["i"]], tool_call_id=call["id"], name=call["name"]
        )
        return {"messages": [result]}

    def route(state):  # type: ignore[no-untyped-def]
        return "tools" if state["messages"][-1].tool_calls else END

    graph = StateGraph(MessagesState)
    graph.add_node("model", model)
    graph.add_node("tools", tools)
    graph.add_edge(START, "model")
    graph.add_conditional_edges("model", route, ["tools", END])
    graph.add_edge("tools", "model")

    conn = None
    if saver_kind == "sqlite":
        from langgraph.checkpoint.sqlite import SqliteSaver

        assert db is not None
        # As the SqliteSaver docs show; the saver turns WAL on itself.
        conn = sqlite3.connect(db, check_same_thread=False)
        saver: Any = SqliteSaver(conn)
        saver.setup()
    elif saver_kind == "memory":
        from langgraph.checkpoint.memory import InMemorySaver

        saver = InMemorySaver()
    else:  # "none": the plain graph, nothing checkpointed
        saver, durability = None, None
    app = graph.compile(checkpointer=saver)
    config = {"configurable": {"thread_id": "bench"}, "recursion_limit": 2 * n + 10}
    final = None
    gc.collect()
    t0, c0 = time.perf_counter(), time.process_time()
    for update in app.stream(
        {"messages": [HumanMessage(content=TASK)]},
        config,
        stream_mode="updates",
        **({"durability": durability} if durability else {}),
    ):
        if "model" in update:
            final = update["model"]["messages"][-1]
    t1, c1 = time.perf_counter(), time.process_time()
    if final is None or final.content != FINAL_ANSWER or len(stamps) != n + 1:
        raise SystemExit(f"langgraph run did not finish as scripted ({len(stamps)} turns)")
    default = "async (the default)" if saver is not None else None
    info = {"durability": durability or default, "journal_mode": None, "synchronous": None}
    if conn is not None:
        info["journal_mode"] = conn.execute("PRAGMA journal_mode").fetchone()[0]
        info["synchronous"] = conn.execute("PRAGMA synchronous").fetchone()[0]
        conn.close()
    return {
        "steps": n,
        "wall_s": t1 - t0,
        "cpu_s": c1 - c0,
        **step_profile(stamps, t1),
        "peak_rss_mb": peak_rss_mb(),
        "settings": info,
    }


# -- DBOS -----------------------------------------------------------------------------

_SYNC_SET: list[int] = []


def _wal_normal(db: str) -> None:
    """Put the file in WAL mode (persistent) and every new connection on synchronous=NORMAL:
    the durability Tether's default store has (safe against process crashes, not power loss)."""
    import sqlite3

    import sqlalchemy as sa
    from sqlalchemy import event

    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.close()

    def on_connect(dbapi_conn: Any, record: Any) -> None:
        dbapi_conn.execute("PRAGMA synchronous=NORMAL")
        _SYNC_SET.append(dbapi_conn.execute("PRAGMA synchronous").fetchone()[0])

    event.listen(sa.engine.Engine, "connect", on_connect)


def run_dbos(n: int, db: str, sqlite_mode: str) -> dict[str, Any]:
    """The loop as one DBOS workflow: each model turn and each tool call a @DBOS.step()."""
    if sqlite_mode == "wal-normal":
        _wal_normal(db)
    from dbos import DBOS

    texts = outputs(n)
    stamps: list[float] = []
    progress = Progress(enabled=False)  # replaced after the plain loop

    def model_turn(messages: list[dict[str, Any]]) -> dict[str, Any]:
        stamps.append(time.perf_counter())
        done = (len(messages) - 1) // 2
        progress.step(done)
        if done >= n:
            return {"content": FINAL_ANSWER, "tool_calls": []}
        return {
            "content": "",
            "tool_calls": [{"name": "fetch", "args": {"i": done}, "id": f"call_{done}"}],
        }

    def fetch(i: int) -> str:
        return texts[i]

    def agent_loop(task: str, model_fn: Any, fetch_fn: Any) -> str:
        messages: list[dict[str, Any]] = [{"role": "user", "content": task}]
        while True:
            turn = model_fn(messages)
            messages.append({"role": "assistant", **turn})
            if not turn["tool_calls"]:
                return str(turn["content"])
            call = turn["tool_calls"][0]
            result = fetch_fn(**call["args"])
            messages.append({"role": "tool", "content": result, "tool_call_id": call["id"]})

    # The same loop with plain functions: what the workflow costs over it.
    gc.collect()
    t0 = time.perf_counter()
    agent_loop(TASK, model_turn, fetch)
    plain_s = time.perf_counter() - t0
    stamps.clear()
    progress = Progress()

    DBOS(
        config={
            "name": "tether-bench",
            "system_database_url": f"sqlite:///{db}",
            "log_level": "WARNING",
        }
    )
    model_step = DBOS.step(name="model_turn")(model_turn)
    fetch_step = DBOS.step(name="fetch")(fetch)

    @DBOS.workflow(name="agent")
    def agent(task: str) -> str:
        return agent_loop(task, model_step, fetch_step)

    DBOS.launch()
    try:
        gc.collect()
        t0, c0 = time.perf_counter(), time.process_time()
        answer = agent(TASK)
        t1, c1 = time.perf_counter(), time.process_time()
    finally:
        DBOS.destroy()
    if answer != FINAL_ANSWER or len(stamps) != n + 1:
        raise SystemExit(f"dbos run did not finish as scripted ({len(stamps)} turns)")
    return {
        "steps": n,
        "wall_s": t1 - t0,
        "cpu_s": c1 - c0,
        "plain_loop_s": plain_s,
        **step_profile(stamps, t1),
        "peak_rss_mb": peak_rss_mb(),
        "settings": {
            "sqlite": sqlite_mode,
            "synchronous_set": sorted(set(_SYNC_SET)) or None,
        },
    }


# -- child entry point ------------------------------------------------------------------


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        description="One comparison measurement (a child of bench/loop.py)."
    )
    p.add_argument("system", choices=("langgraph", "dbos"))
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--db", help="SQLite file")
    p.add_argument(
        "--saver", choices=("sqlite", "memory", "none"), default="sqlite", help="langgraph"
    )
    p.add_argument(
        "--durability", choices=("sync", "async", "exit"), help="langgraph (default: its own)"
    )
    p.add_argument("--sqlite", choices=("default", "wal-normal"), default="default", help="dbos")
    args = p.parse_args(argv)
    if args.system == "langgraph":
        result = run_langgraph(args.n, args.saver, args.db, args.durability)
    else:
        result = run_dbos(args.n, args.db, args.sqlite)
    emit("result", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
