"""`tether pin` and `tether unpin`: an operator's facts in a run's context."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from ._app import JsonOpt, StoreOpt, _print_json, _run, _store, app, out


@app.command()
def pin(
    run_id: Annotated[str, typer.Argument(help="The run.")],
    fact: Annotated[str, typer.Argument(help="The fact, short and self-contained.")],
    source: Annotated[str, typer.Option(help="Where the fact comes from.")] = "",
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Pin a fact into a run's context: the model sees it every turn, compaction never drops it."""

    async def go() -> dict[str, str]:
        from ..loop._pins import pin_fact  # the loop is imported only when needed

        s = _store(store, create=False)  # a run must exist: never a new store
        try:
            pinned = await pin_fact(s, run_id, fact, source=source, actor="operator")
            return {"run_id": run_id, "id": pinned.id, "text": pinned.text, "source": pinned.source}
        finally:
            await s.close()

    data = _run(go)
    if as_json:
        _print_json(data)
    else:
        out.print(f"pinned {data['id']} in {run_id}: {escape(data['text'])}")


@app.command()
def unpin(
    run_id: Annotated[str, typer.Argument(help="The run.")],
    fact_id: Annotated[str, typer.Argument(help="The fact's id (e.g. F12, see tether show).")],
    store: StoreOpt = None,
) -> None:
    """Unpin a fact from a run's context."""

    async def go() -> None:
        from ..loop._pins import unpin_fact

        s = _store(store, create=False)  # a run must exist: never a new store
        try:
            await unpin_fact(s, run_id, fact_id, actor="operator")
        finally:
            await s.close()

    _run(go)
    out.print(f"unpinned {fact_id} from {run_id}")
