"""`tether doctor` and `tether fork`: checking a store for damage, and the repair path
(a new run from a verified prefix of a damaged one)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Annotated, Any

import typer
from rich.markup import escape

from ..budget._verify import LedgerProblem, verify_ledger
from ..errors import StoreError, StoreUnavailable, UsageError
from ..journal import DiscardedCall, RunReport, calls_after, fork_run, verify_run
from ._app import JsonOpt, StoreOpt, _print_json, _run, _store, _store_url, app, err, out


def _report_json(report: RunReport) -> dict[str, Any]:
    return {
        "run_id": report.run_id,
        "ok": report.ok,
        "events": report.events,
        "head_seq": report.head_seq,
        "snapshots": report.snapshots,
        "problems": [p.to_json() for p in report.problems],
    }


@app.command()
def doctor(
    run_id: Annotated[str | None, typer.Argument(help="One run; all runs when omitted.")] = None,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
    rebuild_index: Annotated[
        bool,
        typer.Option(
            "--rebuild-index",
            help="First copy the audit index again from the events (SQLite; it holds "
            "nothing else, so this loses nothing).",
        ),
    ] = False,
    rebuild_ledger: Annotated[
        bool,
        typer.Option(
            "--rebuild-ledger",
            help="First count the budget ledger's spend again from the journals (its "
            "settled costs are a running sum of what they record).",
        ),
    ] = False,
) -> None:
    """Verify every run's checksums and hash chain, snapshots, indexes, ledger and pages.

    Checks the run index, the budget ledger, the audit index and the file's pages too.
    Exit 1 on corruption, 3 when the store could not be checked (locked, unreadable, out
    of space), which says nothing about its data.
    """
    index: dict[str, object] = {}
    whole: dict[str, Any] = {}

    async def go() -> list[RunReport]:
        s = _store(store, create=False)
        try:
            check = getattr(s, "check_audit_index", None)
            if rebuild_index:
                rebuild = getattr(s, "rebuild_audit_index", None)
                if rebuild is None:
                    raise UsageError("--rebuild-index: this store keeps no separate audit index")
                index["rebuilt"] = await rebuild()
            ids = [run_id] if run_id else await s.run_ids()
            lost = getattr(s, "lost_synced_commits", None)
            if run_id is None and lost is not None:
                # A run the store lost whole after a synced commit is still reported.
                ids += sorted({r.run_id for r in await lost()} - set(ids))
            reports = [await verify_run(s, r) for r in ids]
            if run_id is None:
                if check is not None:
                    index["problem"] = await check()
                pages = getattr(s, "check_file_integrity", None)
                if pages is not None:
                    whole["file"] = await pages()
                secrets = getattr(s, "check_secrets", None)
                if secrets is not None:
                    whole["secrets"] = await secrets()
                tokens = getattr(s, "check_tokens", None)
                if tokens is not None:
                    whole["tokens"] = await tokens()
                if getattr(s, "read_only", False) and rebuild_ledger:
                    raise UsageError("--rebuild-ledger: the store is open read-only")
                if getattr(s, "read_only", False):
                    whole["ledger_note"] = "not checked: the store is open read-only"
                else:
                    problems, counted = await verify_ledger(s, rebuild=rebuild_ledger)
                    whole["ledger"] = problems
                    whole["ledger_rebuilt"] = counted
                record = getattr(s, "record_doctor", None)
                if record is not None and not getattr(s, "read_only", False):
                    # For the console's health page (it shows the last result); a store
                    # too damaged or full to take it still gets its verdict printed.
                    with contextlib.suppress(StoreError, OSError):
                        await record(_doctor_record(reports, index.get("problem"), whole))
            return reports
        finally:
            await s.close()

    url = _store_url(store)
    try:
        reports = asyncio.run(go())
    except UsageError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None
    except StoreUnavailable as exc:
        if as_json:
            _print_json({"store": url, "ok": None, "runs": [], "cannot_verify": str(exc)})
        else:
            err.print(f"[yellow]CANNOT VERIFY[/yellow] {escape(str(exc))}")
            err.print("        nothing was found damaged: the store could not be read")
        raise typer.Exit(3) from None
    except StoreError as exc:
        if as_json:
            _print_json({"store": url, "ok": False, "runs": [], "store_error": str(exc)})
        else:
            err.print(f"[red]CORRUPT[/red] {escape(str(exc))}")
        raise typer.Exit(1) from None
    bad = [r for r in reports if not r.ok]
    index_problem = index.get("problem")
    ledger: list[LedgerProblem] = whole.get("ledger") or []
    if whole.get("ledger_rebuilt") is not None:
        # What was found is reported; the rebuild replaced the spend and dropped damaged
        # holds, not the limits.
        ledger = [p for p in ledger if p.where.startswith("limits ")]
    file_problem = whole.get("file")
    secrets_problem = whole.get("secrets")
    tokens_problem = whole.get("tokens")
    damaged = bool(
        bad or index_problem or ledger or file_problem or secrets_problem or tokens_problem
    )
    if as_json:
        doc: dict[str, object] = {
            "store": url,
            "ok": not damaged,
            "runs": [_report_json(r) for r in reports],
        }
        if "problem" in index or "rebuilt" in index:
            doc["audit_index"] = {"ok": not index_problem, **index}
        if "ledger" in whole or "ledger_note" in whole:
            doc["ledger"] = {
                "ok": not ledger,
                "problems": [p.to_json() for p in whole.get("ledger") or []],
                "rebuilt_costs": whole.get("ledger_rebuilt"),
                "note": whole.get("ledger_note"),
            }
        if "file" in whole:
            doc["file"] = {"ok": not file_problem, "problem": file_problem}
        if "secrets" in whole:
            doc["secrets"] = {"ok": not secrets_problem, "problem": secrets_problem}
        if "tokens" in whole:
            doc["console_tokens"] = {"ok": not tokens_problem, "problem": tokens_problem}
        _print_json(doc)
    else:
        if "rebuilt" in index:
            out.print(f"audit index rebuilt: {index['rebuilt']} events copied")
        for p in whole.get("ledger") or []:
            out.print(f"[red]CORRUPT[/red] budget ledger, {escape(p.where)}: {escape(p.what)}")
        if whole.get("ledger_rebuilt") is not None:
            out.print(f"budget ledger rebuilt from the journals: {whole['ledger_rebuilt']} costs")
        if whole.get("ledger_note"):
            out.print(f"budget ledger {whole['ledger_note']}")
        if file_problem:
            out.print(f"[red]CORRUPT[/red] store file pages: {escape(str(file_problem))}")
            out.print("        repair: restore the store from a backup")
        if secrets_problem:
            out.print(f"[red]CORRUPT[/red] recorded secrets: {escape(str(secrets_problem))}")
        if tokens_problem:
            out.print(f"[red]CORRUPT[/red] console tokens: {escape(str(tokens_problem))}")
        for r in reports:
            if r.ok:
                out.print(f"[green]ok[/green]      {r.run_id}  {r.events} events, "
                          f"{r.snapshots} snapshots")  # fmt: skip
            else:
                out.print(f"[red]CORRUPT[/red] {r.run_id}")
                for p in r.problems:
                    where = f"seq {p.seq}" if p.seq is not None else "index"
                    out.print(f"        {where}: {escape(p.what)} [{p.kind}]")
                last_good = _last_good(r)
                if last_good:
                    out.print(f"        repair: tether fork {r.run_id} --at {last_good}")
        if index_problem:
            out.print(f"[red]CORRUPT[/red] audit index: {escape(str(index_problem))}")
            out.print("        repair: tether doctor --rebuild-index")
        total = len(reports)
        out.print(
            f"{total} run{'s' if total != 1 else ''} checked in {url}: "
            + ("all intact" if not damaged else f"{len(bad)} with problems")
            + ("; the audit index is damaged" if index_problem else "")
            + ("; the budget ledger disagrees with the journals" if ledger else "")
            + ("; the file has damaged pages" if file_problem else "")
            + ("; recorded secrets are damaged" if secrets_problem else "")
            + ("; console tokens are damaged" if tokens_problem else "")
        )
    raise typer.Exit(1 if damaged else 0)


def _doctor_record(
    reports: list[RunReport], index_problem: object, whole: dict[str, Any]
) -> dict[str, Any]:
    """A doctor result as the console shows it (the first 20 damaged runs)."""
    damaged = [
        {"run_id": r.run_id, "problems": [p.to_json() for p in r.problems]}
        for r in reports
        if not r.ok
    ]
    ledger = [p.to_json() for p in whole.get("ledger") or []]
    problems = [whole.get(k) for k in ("file", "secrets", "tokens")]
    return {
        "at": time.time(),
        "by": "tether doctor",
        "runs": len(reports),
        "damaged": damaged[:20],
        "audit_index": index_problem,
        "file": whole.get("file"),
        "secrets": whole.get("secrets"),
        "tokens": whole.get("tokens"),
        "ledger": ledger,
        "ok": not (damaged or index_problem or ledger or any(problems)),
    }


def _last_good(report: RunReport) -> int:
    seqs = [p.seq for p in report.problems if p.seq is not None and p.kind != "snapshot"]
    return (min(seqs) - 1) if seqs else report.head_seq


@app.command()
def fork(
    run_id: Annotated[str, typer.Argument(help="The run to copy from.")],
    at: Annotated[int, typer.Option("--at", help="Last seq to keep (a good point).")],
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Start a new run from a verified prefix of RUN_ID (the repair path for damage).

    Lists the tool calls recorded after --at: the fork does not know they happened, so
    any that had effects may be made again (the fork presents the same idempotency keys,
    so a deduplicating tool recognises them)."""

    async def go() -> tuple[str, list[DiscardedCall], int]:
        s = _store(store, create=False)
        try:
            new_id = await fork_run(s, run_id, at_seq=at)
            discarded, unreadable = await calls_after(s, run_id, at)
            return new_id, discarded, unreadable
        finally:
            await s.close()

    new_id, discarded, unreadable = _run(go)
    if as_json:
        _print_json(
            {
                "run_id": new_id,
                "forked_from": run_id,
                "at_seq": at,
                "discarded_calls": [c.to_json() for c in discarded],
                "unreadable_events": unreadable,
            }
        )
        return
    out.print(f"forked {run_id} at seq {at} → [bold]{new_id}[/bold]")
    if discarded:
        n = len(discarded)
        out.print(f"{n} tool call(s) after seq {at} are discarded; they may have had effects:")
        for c in discarded:
            safe = {True: "idempotent", False: "NOT idempotent", None: "idempotency unknown"}
            out.print(
                f"  seq {c.seq}  {escape(c.name)}  {c.outcome}  key {escape(c.key or '-')}"
                f"  ({safe[c.idempotent]})"
            )
    if unreadable:
        out.print(
            f"{unreadable} damaged event(s) after seq {at} could not be read: "
            "they may record more calls"
        )
    out.print(f"continue it: tether resume {new_id}")
