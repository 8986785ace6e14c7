"""Event queries on the SQLite store: a run's rows, rows by seq, and `query_rows` through
the audit copy's indexes (schema 5) with the uncopied tail read directly."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from ._audit_rows import audit_order, audit_where, copied_row
from ._base import StoredRow
from ._index import RowQuery, row_matches, sql_order, sql_where, sqlite_audit_hint
from ._sections import RUN_SECTION_INDEX, SECTION_INDEX_NAME, SECTION_INDEX_TERM
from ._sqlite_meta import SQLiteMeta
from ._sqlite_stored import (
    _EVENT_COLUMNS,
    _UNCOPIED,
    _bounds_only,
    _context_only,
    _ordered,
    _sections_only,
    _stored,
    _type_filter,
)


class SQLiteReads(SQLiteMeta):
    """The reading part of `SQLiteStore`."""

    async def read_rows(
        self, run_id: str, *, after_seq: int = 0, until_seq: int | None = None
    ) -> list[StoredRow]:
        rows = self._read(
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE run_id=? AND seq>? AND seq<=? ORDER BY seq",
            (run_id, after_seq, until_seq if until_seq is not None else 2**62),
        )
        self._refresh_secrets()
        return [_stored(r) for r in rows]

    async def read_rows_at(self, run_id: str, seqs: Sequence[int]) -> list[StoredRow]:
        out: list[StoredRow] = []
        unique = sorted(set(seqs))
        for i in range(0, len(unique), 500):
            chunk = unique[i : i + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._read(
                f"SELECT {_EVENT_COLUMNS} FROM events "
                f"WHERE run_id=? AND seq IN ({marks}) ORDER BY seq",
                (run_id, *chunk),
            )
            out.extend(_stored(r) for r in rows)
        self._refresh_secrets()
        return out

    async def query_rows(self, query: RowQuery) -> list[StoredRow]:
        rows = self._query_rows(query)
        self._refresh_secrets()
        return rows

    def _query_rows(self, query: RowQuery) -> list[StoredRow]:
        # Only `audit_rows` filters in SQL on stored columns. Rows read from `event_rows`
        # (a run's events, the tail not copied yet) get their columns in Python and are
        # filtered by the reference semantics (`row_matches`), then ordered and cut here.
        where, params = sql_where(query)
        order = sql_order(query)
        limit = "" if query.limit is None else f" LIMIT {int(query.limit)}"
        if query.run_id is not None and query.correlation_id is None:
            if _bounds_only(query):
                # By the run's (run, seq) key alone: SQL cuts (the join may reorder).
                return _ordered(self._rows(f"WHERE {where} ORDER BY {order}{limit}", params), query)
            if _context_only(query):
                # `why`'s context lookups: the copied rows by the per-run context index,
                # and the run's rows not copied yet. A limit is applied in SQL to the copied
                # rows (a run page's newest compactions), then again to the whole.
                copied_where, copied_params = audit_where(query)
                found = self._rows(
                    "WHERE id IN (SELECT id FROM (SELECT a.id AS id FROM audit_rows a INDEXED BY "
                    f"audit_by_run_context JOIN run_keys k ON k.key = a.run WHERE {copied_where}"
                    f" ORDER BY {audit_order(query)}{limit}))",
                    copied_params,
                )
                seen = {r.seq for r in found}
                found += [r for r in self._uncopied(query.run_id) if r.seq not in seen]
            elif _sections_only(query) and self._has_section_index():
                return self._section_rows(query, query.run_id)
            else:
                found = self._run_rows(query)
            return _ordered([r for r in found if row_matches(r, query)], query)
        # Across runs: the indexed copies in `audit_rows` (filtered, ordered and cut in
        # SQL), plus the newest events no append has copied yet (about AUDIT_BATCH).
        copied_where, copied_params = audit_where(query)
        copied = self._rows(
            "WHERE id IN (SELECT id FROM (SELECT a.id AS id FROM audit_rows a "
            f"{sqlite_audit_hint(query)}JOIN run_keys k ON k.key = a.run "
            f"WHERE {copied_where} ORDER BY {audit_order(query)}{limit}))",
            copied_params,
        )
        newest = self._rows(f"WHERE {_UNCOPIED}")
        return _ordered([*copied, *(r for r in newest if row_matches(r, query))], query)

    def _uncopied(self, run_id: str) -> list[StoredRow]:
        """The run's events not copied to `audit_rows` yet (at most about AUDIT_BATCH).
        `+run_id`: driven by the (short) id range, not the whole run's key."""
        return self._rows(f"WHERE {_UNCOPIED} AND +run_id=?", (run_id,))

    def _run_rows(self, query: RowQuery) -> list[StoredRow]:
        """Candidates for a query within one run: by type, the rows whose copied type
        matches (found through the copy's small rows, so the run's other events are never
        read), those not copied yet and those whose copy has no type (damaged bytes,
        which verification must still see); without types, all of the run's rows."""
        bounds = (
            query.run_id,
            0 if query.after_seq is None else query.after_seq,
            2**62 if query.before_seq is None else query.before_seq,
        )
        if not query.types:
            return self._rows("WHERE run_id=? AND seq>? AND seq<? ORDER BY seq", bounds)
        marks = ",".join("?" * len(query.types))
        return self._rows(
            "WHERE id IN (SELECT e.id FROM event_rows e LEFT JOIN audit_rows a ON a.id = e.id "
            "WHERE e.run=(SELECT key FROM run_keys WHERE run_id=?) AND e.seq>? AND e.seq<? "
            f"AND (a.type IS NULL OR a.type IN ({marks}))) ORDER BY seq",
            (*bounds, *query.types),
            types=query.types,
        )

    def _has_section_index(self) -> bool:
        """Whether `audit_rows` has the per-run index of sparse events, exactly as
        `_sections` defines it (looked up per query: a rebuild of the copy drops it)."""
        found = self._read(
            "SELECT sql FROM sqlite_master WHERE type='index' AND name=?", (SECTION_INDEX_NAME,)
        )
        return bool(found) and " ".join(str(found[0][0]).split()) == RUN_SECTION_INDEX

    def _section_rows(self, query: RowQuery, run_id: str) -> list[StoredRow]:
        """A run's sparse events by the section index: per type, its newest (or oldest)
        `limit` in SQL, so the work is bounded by the limit, not by the run's length; the
        run's rows not copied yet are matched as they are read."""
        order = "a.seq DESC" if query.newest_first else "a.seq"
        limit = "" if query.limit is None else f" LIMIT {int(query.limit)}"
        arms: list[str] = []
        params: list[Any] = []
        for kind in sorted(set(query.types)):
            where, values = audit_where(dataclasses.replace(query, types=(kind,)))
            arms.append(
                f"SELECT id FROM (SELECT a.id AS id FROM audit_rows a INDEXED BY "
                f"{SECTION_INDEX_NAME} JOIN run_keys k ON k.key = a.run WHERE {where} "
                f"AND {SECTION_INDEX_TERM} ORDER BY {order}{limit})"
            )
            params += values
        found = self._rows(f"WHERE id IN ({' UNION ALL '.join(arms)})", params)
        newest = self._uncopied(run_id)
        return _ordered([*found, *(r for r in newest if row_matches(r, query))], query)

    def _rows(
        self,
        sql: str,
        params: Sequence[Any] = (),
        *,
        types: Sequence[str] = (),
    ) -> list[StoredRow]:
        """Events selected from the `events` view by `sql`, with their query columns.

        Rows already copied to `audit_rows` take their columns from there (no parse: a
        `why` lists dozens of rows by type and visibility and verifies only a few); the
        newest rows, not copied yet, are parsed. `types` filters on those columns.
        """
        found = self._read(
            "SELECT v.run_id, v.seq, v.data, a.type, a.corr, a.ts, a.actor, a.tool,"
            f" a.visibility FROM (SELECT id, {_EVENT_COLUMNS} FROM events {sql}) v"
            " LEFT JOIN audit_rows a ON a.id = v.id",
            params,
        )
        keep = _type_filter(types)
        out: list[StoredRow] = []
        for r in found:
            if r[3] is None:  # not copied yet, or its bytes were unreadable when copied
                if keep is None or keep(r[2]):
                    out.append(_stored(r))
            elif not types or r[3] in types:
                out.append(copied_row(r))
        return out

    async def read_snapshots(self, run_id: str) -> list[tuple[int, bytes]]:
        rows = self._read(
            "SELECT seq, data FROM snapshots WHERE run_id=? ORDER BY seq DESC", (run_id,)
        )
        return [(r[0], r[1]) for r in rows]
