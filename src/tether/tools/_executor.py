"""Where synchronous tools run: daemon threads, a bounded number per run.

`asyncio.to_thread` shares one pool per process, whose threads the interpreter joins at
exit: six blocked tools starved every later call, and one blocked call kept a finished
`tether run` from exiting. Here each call gets a daemon thread of its own, at most
`limit` at a time per executor (one executor per driven run). A call whose awaiting
coroutine is cancelled (its timeout passed, or the run was cancelled) is *abandoned*: its
slot is freed at once and its thread, which Python cannot stop, finishes or not on its
own and never holds the process open. Executors count what they abandoned, and refuse
new calls once `max_abandoned` threads are still stuck, rather than grow without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

__all__ = ["SyncExecutor", "current_executor", "use_executor"]

T = TypeVar("T")


class SyncExecutor:
    """Runs synchronous callables on daemon threads, at most `limit` at once."""

    def __init__(self, *, limit: int = 8, max_abandoned: int = 32) -> None:
        self.limit = limit
        self.max_abandoned = max_abandoned
        self._slots: asyncio.Semaphore | None = None
        self._stuck = 0
        self._lock = threading.Lock()
        self.abandoned = 0
        """Calls given up on while their thread was still running."""

    @property
    def stuck(self) -> int:
        """Abandoned threads that have not finished yet."""
        with self._lock:
            return self._stuck

    async def run(self, fn: Callable[[], T]) -> T:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.limit)
        if self.stuck >= self.max_abandoned:
            raise RuntimeError(
                f"{self.stuck} abandoned tool calls are still running; refusing more threads"
            )
        async with self._slots:
            return await self._start(fn)

    async def _start(self, fn: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        context = contextvars.copy_context()
        state = {"abandoned": False, "finished": False}

        def deliver(ok: bool, value: Any) -> None:
            if future.done():
                return
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

        def work() -> None:
            try:
                outcome: tuple[bool, Any] = (True, context.run(fn))
            except BaseException as exc:  # handed to the awaiting task
                outcome = (False, exc)
            with self._lock:
                if state["abandoned"]:
                    self._stuck -= 1
                    return
                state["finished"] = True
            # A closed loop raises RuntimeError: nobody is waiting any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(deliver, *outcome)

        threading.Thread(target=work, name="tether-tool", daemon=True).start()
        try:
            return await future
        except asyncio.CancelledError:
            # Cancelling this task cancelled `future` too; whether the thread still runs
            # is what the thread itself recorded.
            with self._lock:
                if not state["finished"]:
                    state["abandoned"] = True
                    self._stuck += 1
                    self.abandoned += 1
            raise


_current: contextvars.ContextVar[SyncExecutor | None] = contextvars.ContextVar(
    "tether_sync_executor", default=None
)
_fallback = SyncExecutor()


def current_executor() -> SyncExecutor:
    """The executor of the run being driven, or a process-wide one outside a run."""
    return _current.get() or _fallback


@contextmanager
def use_executor(executor: SyncExecutor) -> Iterator[SyncExecutor]:
    """Run synchronous tools started inside this block on `executor`."""
    token = _current.set(executor)
    try:
        yield executor
    finally:
        _current.reset(token)
