"""`tether serve`: the operator console and JSON API over a store."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from ..errors import UsageError
from ..journal import store_url_from_env
from ._app import StoreOpt, _run, _store, app, err


@app.command()
def serve(
    store: StoreOpt = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8321,
) -> None:
    """Serve the console (runs, timelines, approvals inbox, budgets, health, audit) and
    its JSON API (OpenAPI at /api/docs). Every request needs a token: tether token create.

    The console reads and acts through the store; runs never wait for it."""
    try:
        import uvicorn

        from ..web import create_app
    except ImportError as exc:
        missing = escape(str(exc.name))
        err.print(f"[red]error:[/red] tether serve needs the web extra: "
                  f"pip install 'tether-runtime\\[web]' ({missing} is missing)")  # fmt: skip
        raise typer.Exit(2) from None
    if not 0 < port < 65536:
        err.print(f"[red]error:[/red] --port {port} is not a TCP port")
        raise typer.Exit(2)

    async def check() -> str:
        url = store_url_from_env(store)
        s = _store(url, create=False)  # a mistyped path is an error, not a new empty store
        await s.close()
        return url

    url = _run(check)
    try:
        application = create_app(url)
    except UsageError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None
    err.print(f"Tether console on http://{host}:{port} (store {escape(url)}); Ctrl-C stops it")
    # The access log names paths only; tokens travel in a header, a cookie or a form body.
    uvicorn.run(application, host=host, port=port, log_level="info", server_header=False)
