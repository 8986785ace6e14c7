"""A live progress line for long runs: step, tokens, cost, elapsed and the current tool.

The line stays on the terminal when the run ends or pauses, so even a run that is over
in half a second (the scripted demo) shows where it got to.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.live import Live
from rich.text import Text

from ..loop import Progress
from ..loop._runner import Observer

__all__ = ["live_progress"]


@contextmanager
def live_progress(console: Console, *, enabled: bool, run_id: str) -> Iterator[Observer | None]:
    """An observer that redraws one status line; a no-op when not on a terminal."""
    if not enabled or not console.is_terminal:
        yield None
        return
    current: dict[str, str | None] = {"tool": None}

    def render(update: Progress | None) -> Text:
        text = Text()
        text.append(f"{run_id} ", style="bold")
        if update is not None:
            s = update.state
            # The run's working time, across pauses and processes; ticks during a call.
            seconds = update.elapsed_s if update.elapsed_s is not None else s.active_s
            text.append(
                f"step {s.steps} · {s.tokens:,} tokens · ${s.cost_usd:.4f} · {seconds:.1f}s"
            )
            if s.status != "running":
                text.append(f" · {s.status}")
            elif current["tool"]:
                text.append(f" · {current['tool']}", style="cyan")
            elif update.event == "model.waiting":
                text.append(" · waiting for the model", style="cyan")
        else:
            text.append("starting…")
        return text

    with Live(render(None), console=console, refresh_per_second=8, transient=False) as live:

        def observe(update: Progress) -> None:
            if update.event == "tool.started":
                current["tool"] = update.tool
            elif update.event.startswith("cycle.") or update.event.startswith("run."):
                current["tool"] = None
            live.update(render(update))

        yield observe
