"""DDL and numbered migrations; one version number shared by the SQL backends.

A store written by this version must keep opening in every later one: migrations only
ever add, and a store newer than the code is refused with a clear message.

2: the work queue: `runs.queue` names the queue a run was submitted to (NULL: driven by
   the process that started it, never claimed by workers); PostgreSQL also notifies
   listening workers when a queued run becomes runnable.
3: audit columns (`events.ts`, `actor`, `tool`, `visibility`, copies of the stored
   envelope that verification checks) and the indexes audit queries and `why` use.
4: the type index leaves out the seven types every step writes (`LOOP_TYPES`): each of
   them cost every step one more page at commit, and searches for them go by time.
5: SQLite only: the audit indexes move to `audit_rows`, filled in batches (see below).
6: SQLite only: a smaller row (see `SQLITE_EVENTS_V6`): `events` stores only an integer run
   key, the seq and the bytes; its other columns are computed from the bytes (virtual), so
   nothing is stored both in `events` and in `audit_rows`.
7: SQLite only: `audit_rows` in a compact form (see `_audit_rows`).
8: SQLite only: the `events` view reads v3 envelopes (deflated bodies) through the SQL
   function `tether_event_body`, which every connection of the store registers
   (`sqlite_functions`); a plain sqlite3 shell reads `event_rows` instead.
9: SQLite only: the budget ledger's spend and holds in one table, `budget_ledger` (see
   `budget._sqlite_rows`): a step's ledger work is fewer statements and pages.
"""

from __future__ import annotations

import sqlite3

from .._envelope_v3 import body_text
from ..budget._sqlite_rows import MIGRATE_TO_V9
from ._audit_rows import MIGRATE_TO_V7
from ._index import ACTOR_INDEX_TERM, CONTEXT_INDEX_TERM, TYPE_INDEX_TERM
from ._sections import RUN_SECTION_INDEX


def _sqlite_field(path: str) -> str:
    """A string field of a stored event's JSON, or NULL (bytes that are not JSON, a
    value of another type): migrations must open damaged stores, not fail on them."""
    text = "CAST(data AS TEXT)"
    return (
        f"CASE WHEN json_valid({text}) AND json_type({text}, '{path}') = 'text' "
        f"THEN json_extract({text}, '{path}') END"
    )


AUDIT_INDEXES = [
    # Each index costs every append a page write, so the rarely queried ones are partial.
    # why: a run's messages and compactions by seq (to rebuild a model's context).
    f"CREATE INDEX events_by_run_context ON events (run_id, type, seq) WHERE {CONTEXT_INDEX_TERM}",
    # audit: by type, tool, actor and time window, each in time order; `runtime` (the loop
    # itself) is most events' actor and never what an audit looks for.
    "CREATE INDEX events_by_type ON events (type, ts)",
    "CREATE INDEX events_by_tool ON events (tool, ts) WHERE tool IS NOT NULL",
    f"CREATE INDEX events_by_actor ON events (actor, ts) WHERE {ACTOR_INDEX_TERM}",
    "CREATE INDEX events_by_ts ON events (ts)",
]

# Schema 4: the type index leaves out the types every step writes (see LOOP_TYPES).
TYPE_INDEX_V4 = [
    "DROP INDEX IF EXISTS events_by_type",
    f"CREATE INDEX events_by_type ON events (type, ts) WHERE {TYPE_INDEX_TERM}",
]

# Schema 5 (SQLite): the audit indexes move off `events` to `audit_rows`, a copy of the
# indexed columns that appends fill in batches (AUDIT_BATCH events at a time), so a step's
# commit writes no audit index page; queries add the few newest events, not yet copied,
# by scanning them. `events` is rebuilt with an explicit integer key, which VACUUM keeps,
# so `audit_rows.id` always names the same event.
SQLITE_AUDIT_COLUMNS = "id, run_id, seq, type, correlation_id, ts, actor, tool, visibility"
SQLITE_AUDIT_INDEXES = [
    "CREATE INDEX audit_by_correlation ON audit_rows (correlation_id)"
    " WHERE correlation_id IS NOT NULL",
    f"CREATE INDEX audit_by_type ON audit_rows (type, ts) WHERE {TYPE_INDEX_TERM}",
    "CREATE INDEX audit_by_tool ON audit_rows (tool, ts) WHERE tool IS NOT NULL",
    f"CREATE INDEX audit_by_actor ON audit_rows (actor, ts) WHERE {ACTOR_INDEX_TERM}",
    "CREATE INDEX audit_by_ts ON audit_rows (ts)",
]
SQLITE_AUDIT_TABLE = """CREATE TABLE audit_rows (
    id INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    type TEXT NOT NULL,
    correlation_id TEXT,
    ts TEXT,
    actor TEXT,
    tool TEXT,
    visibility TEXT
)"""
SQLITE_INDEX_TAIL = (
    f"INSERT INTO audit_rows ({SQLITE_AUDIT_COLUMNS}) SELECT {SQLITE_AUDIT_COLUMNS} FROM events "
    "WHERE id > (SELECT COALESCE(MAX(id), 0) FROM audit_rows)"
)
"""Copies every event not yet in `audit_rows` (the append that crosses a batch runs it)."""
SQLITE_AUDIT_ROWS = [SQLITE_AUDIT_TABLE, SQLITE_INDEX_TAIL, *SQLITE_AUDIT_INDEXES]
"""`audit_rows` made and filled from `events` (by the migration, and by a rebuild)."""
SQLITE_EVENTS_V5 = [
    """CREATE TABLE events_v5 (
        id INTEGER PRIMARY KEY,
        run_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        type TEXT NOT NULL,
        correlation_id TEXT,
        data BLOB NOT NULL,
        ts TEXT,
        actor TEXT,
        tool TEXT,
        visibility TEXT,
        UNIQUE (run_id, seq)
    )""",
    "INSERT INTO events_v5 (id, run_id, seq, type, correlation_id, data, ts, actor, tool,"
    " visibility) SELECT rowid, run_id, seq, type, correlation_id, data, ts, actor, tool,"
    " visibility FROM events ORDER BY rowid",
    "DROP TABLE events",
    "ALTER TABLE events_v5 RENAME TO events",
    # Per run, not per store: the context lookups of `why` stay on `events`, complete.
    f"CREATE INDEX events_by_run_context ON events (run_id, type, seq) WHERE {CONTEXT_INDEX_TERM}",
    *SQLITE_AUDIT_ROWS,
]


# Schema 6 (SQLite): events are stored in `event_rows` as (id, run key, seq, bytes) only;
# `run_keys` maps run ids to small integers. `events` is now a view with schema 5's
# columns, computed from the stored bytes when read (v1 and v2 envelopes alike, see
# tether._envelope) and the run id text joined back, so they cannot disagree with the bytes
# (a damaged blob gives NULLs, which verification reports). Computing them costs a JSON
# parse per column, so it happens on reads only: not in appends (a generated column would
# be computed by every INSERT) and not when the columns are copied into `audit_rows`,
# which the writer fills from the values it sealed (see `SQLiteStore._copy_audit`).
# INSTEAD OF triggers keep the view writable by run id and seq for tools and repairs.
#
# Schema 8: the JSON text comes from `tether_event_body` (a deterministic Python function:
# a v3 body must be inflated with its dictionary first), the same for every envelope.
_V2 = "substr(e.data, 1, 1) IN (x'02', x'03', x'04')"
"""The row holds a compact (v2 or v3) body, read with the short keys."""
_J = "tether_event_body(e.data)"


def sqlite_functions(db: sqlite3.Connection) -> None:
    """Register what the `events` view calls (schema 8) on a connection to a store: every
    connection that reads or writes through the view needs it."""
    db.create_function("tether_event_body", 1, body_text, deterministic=True)


def _text(v2_path: str, v1_path: str, v2_default: str = "NULL") -> str:
    """A string field of either envelope (`v2_default` when a v2 body omits it), or NULL:
    bytes that are not JSON, a value of another type."""
    v2 = (
        f"CASE json_type({_J}, '{v2_path}') WHEN 'text' THEN json_extract({_J}, '{v2_path}') "
        f"ELSE (CASE WHEN json_type({_J}, '{v2_path}') IS NULL THEN {v2_default} END) END"
    )
    v1 = f"CASE json_type({_J}, '{v1_path}') WHEN 'text' THEN json_extract({_J}, '{v1_path}') END"
    return f"CASE WHEN NOT json_valid({_J}) THEN NULL WHEN {_V2} THEN ({v2}) ELSE ({v1}) END"


_TS_V2 = (
    f"CASE json_type({_J}, '$.ts') WHEN 'integer' THEN "
    f"strftime('%Y-%m-%dT%H:%M:%S', json_extract({_J}, '$.ts') / 1000000, 'unixepoch') || "
    f"printf('.%06dZ', json_extract({_J}, '$.ts') % 1000000) "
    f"WHEN 'text' THEN json_extract({_J}, '$.ts') END"
)
_TYPE = _text("$.t", "$.type")
_TOOL_TYPES = "('tool.requested', 'tool.completed', 'tool.failed', 'tool.unknown')"
SQLITE_EVENT_ROWS = """CREATE TABLE event_rows (
    id INTEGER PRIMARY KEY,
    run INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    data BLOB NOT NULL,
    UNIQUE (run, seq)
)"""
SQLITE_EVENTS_VIEW = [
    f"""CREATE VIEW events (id, run_id, seq, type, correlation_id, data, ts, actor, tool,
        visibility, run) AS SELECT e.id, k.run_id, e.seq, {_TYPE},
        CASE WHEN {_V2} AND json_valid({_J}) AND json_type({_J}, '$.c') = 'text'
            THEN k.run_id || json_extract({_J}, '$.c')
            ELSE {_text("$.C", "$.correlation_id")} END,
        e.data,
        CASE WHEN NOT json_valid({_J}) THEN NULL WHEN {_V2} THEN ({_TS_V2})
            WHEN json_type({_J}, '$.ts') = 'text' THEN json_extract({_J}, '$.ts') END,
        {_text("$.a", "$.actor", "'runtime'")},
        CASE WHEN ({_TYPE}) IN {_TOOL_TYPES} THEN {_text("$.p.name", "$.payload.name")}
            WHEN ({_TYPE}) = 'approval.requested' THEN {_text("$.p.tool", "$.payload.tool")}
        END,
        {_text("$.w", "$.visibility", "'user_hidden'")},
        e.run
        FROM event_rows e JOIN run_keys k ON k.key = e.run""",
    """CREATE TRIGGER events_insert INSTEAD OF INSERT ON events BEGIN
        INSERT OR IGNORE INTO run_keys (run_id) VALUES (NEW.run_id);
        INSERT INTO event_rows (id, run, seq, data) VALUES (NEW.id,
            (SELECT key FROM run_keys WHERE run_id = NEW.run_id), NEW.seq, NEW.data);
    END""",
    """CREATE TRIGGER events_delete INSTEAD OF DELETE ON events BEGIN
        DELETE FROM event_rows WHERE id = OLD.id;
    END""",
    """CREATE TRIGGER events_update INSTEAD OF UPDATE OF data, seq ON events BEGIN
        UPDATE event_rows SET data = NEW.data, seq = NEW.seq WHERE id = OLD.id;
    END""",
]
SQLITE_AUDIT_TABLE_V6 = """CREATE TABLE audit_rows (
    id INTEGER PRIMARY KEY,
    run INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    type TEXT,
    correlation_id TEXT,
    ts TEXT,
    actor TEXT,
    tool TEXT,
    visibility TEXT
)"""
SQLITE_AUDIT_COLUMNS_V6 = "id, run, seq, type, correlation_id, ts, actor, tool, visibility"
SQLITE_INDEX_TAIL_V6 = (
    f"INSERT INTO audit_rows ({SQLITE_AUDIT_COLUMNS_V6}) SELECT {SQLITE_AUDIT_COLUMNS_V6} "
    "FROM events WHERE id > (SELECT COALESCE(MAX(id), 0) FROM audit_rows) ORDER BY id"
)
"""Copies every event not yet in `audit_rows`, computing its columns from its bytes (the
migration, a rebuild, and events another process appended)."""
SQLITE_AUDIT_ROWS_V6 = [
    SQLITE_AUDIT_TABLE_V6,
    SQLITE_INDEX_TAIL_V6,
    *SQLITE_AUDIT_INDEXES,
    # `why` rebuilds a model's context from a run's messages and compactions: the per-run
    # context index moves here from `events`, whose columns are no longer stored.
    f"CREATE INDEX audit_by_run_context ON audit_rows (run, type, seq) WHERE {CONTEXT_INDEX_TERM}",
]
"""`audit_rows` (schema 6) made and filled from `events` (the migration, a rebuild)."""
SQLITE_EVENTS_V6 = [
    "CREATE TABLE run_keys (key INTEGER PRIMARY KEY, run_id TEXT NOT NULL UNIQUE)",
    "INSERT INTO run_keys (run_id) SELECT run_id FROM runs ORDER BY created_at, run_id",
    "INSERT OR IGNORE INTO run_keys (run_id) SELECT DISTINCT run_id FROM events ORDER BY 1",
    SQLITE_EVENT_ROWS,
    "INSERT INTO event_rows (id, run, seq, data) SELECT e.id, k.key, e.seq, e.data "
    "FROM events e JOIN run_keys k ON k.run_id = e.run_id ORDER BY e.id",
    "DROP TABLE audit_rows",
    "DROP TABLE events",
    *SQLITE_EVENTS_VIEW,
    *SQLITE_AUDIT_ROWS_V6,
]

SCHEMA_VERSION = 9

SQLITE_MIGRATIONS: list[tuple[int, list[str]]] = [
    (
        1,
        [
            """CREATE TABLE runs (
                run_id TEXT PRIMARY KEY,
                agent TEXT NOT NULL,
                tenant TEXT,
                parent_run_id TEXT,
                created_at TEXT NOT NULL,
                updated_at TEXT NOT NULL,
                status TEXT NOT NULL,
                steps INTEGER NOT NULL,
                input_tokens INTEGER NOT NULL,
                output_tokens INTEGER NOT NULL,
                cost_usd REAL NOT NULL,
                head_seq INTEGER NOT NULL,
                head_hash TEXT NOT NULL,
                lease_owner TEXT,
                lease_epoch INTEGER NOT NULL DEFAULT 0,
                lease_expires_at REAL
            )""",
            "CREATE INDEX runs_by_status ON runs (status, created_at)",
            # Events are ~1 KB, too large for WITHOUT ROWID; (run_id, seq) is unique instead.
            """CREATE TABLE events (
                run_id TEXT NOT NULL,
                seq INTEGER NOT NULL,
                type TEXT NOT NULL,
                correlation_id TEXT,
                data BLOB NOT NULL,
                UNIQUE (run_id, seq)
            )""",
            "CREATE INDEX events_by_correlation ON events (correlation_id)"
            " WHERE correlation_id IS NOT NULL",
            """CREATE TABLE snapshots (
                run_id TEXT NOT NULL,
                seq INTEGER NOT NULL,
                data BLOB NOT NULL,
                PRIMARY KEY (run_id, seq)
            )""",
        ],
    ),
    (
        2,
        [
            "ALTER TABLE runs ADD COLUMN queue TEXT",
            "CREATE INDEX runs_by_queue ON runs (queue, status, created_at)"
            " WHERE queue IS NOT NULL",
        ],
    ),
    (
        3,
        [
            # Audit columns: indexed copies of the envelope, verified like the others.
            "ALTER TABLE events ADD COLUMN ts TEXT",
            "ALTER TABLE events ADD COLUMN actor TEXT",
            "ALTER TABLE events ADD COLUMN tool TEXT",
            "ALTER TABLE events ADD COLUMN visibility TEXT",
            # Existing rows get them from their stored bytes; a row whose bytes are not
            # JSON is damaged already and keeps NULLs, which verification reports.
            f"""UPDATE events SET
                ts = {_sqlite_field("$.ts")},
                actor = {_sqlite_field("$.actor")},
                visibility = {_sqlite_field("$.visibility")},
                tool = CASE
                    WHEN type IN ('tool.requested', 'tool.completed', 'tool.failed',
                                  'tool.unknown') THEN {_sqlite_field("$.payload.name")}
                    WHEN type = 'approval.requested' THEN {_sqlite_field("$.payload.tool")}
                END""",
            *AUDIT_INDEXES,
        ],
    ),
    (4, TYPE_INDEX_V4),
    (5, SQLITE_EVENTS_V5),
    (6, SQLITE_EVENTS_V6),
    # Schema 7 (SQLite): `audit_rows` in its compact form (see `_audit_rows`).
    (7, MIGRATE_TO_V7),
    # Schema 8 (SQLite): the view reads v3 bodies (dropping it drops its triggers), and a
    # run's sparse events get their per-run index (new stores have it from schema 7's
    # list; SQLite stores the statement without IF NOT EXISTS, as `_sections` expects).
    (
        8,
        [
            "DROP VIEW events",
            *SQLITE_EVENTS_VIEW,
            RUN_SECTION_INDEX.replace("CREATE INDEX", "CREATE INDEX IF NOT EXISTS", 1),
        ],
    ),
    # Schema 9 (SQLite): the ledger's tables become one (their names stay, as views).
    (9, MIGRATE_TO_V9),
]

NOTIFY_CHANNEL = "tether_runnable"
"""PostgreSQL channel on which a run of a queue becoming runnable is announced.

The payload is `SCHEMA QUEUE`: channels are per database, so stores in other schemas of
the same database can tell their own notifications apart.
"""

POSTGRES_MIGRATIONS: list[tuple[int, list[str]]] = [
    (
        1,
        [
            """CREATE TABLE runs (
                run_id TEXT PRIMARY KEY,
                agent TEXT NOT NULL,
                tenant TEXT,
                parent_run_id TEXT,
                created_at TEXT NOT NULL,
                updated_at TEXT NOT NULL,
                status TEXT NOT NULL,
                steps BIGINT NOT NULL,
                input_tokens BIGINT NOT NULL,
                output_tokens BIGINT NOT NULL,
                cost_usd DOUBLE PRECISION NOT NULL,
                head_seq BIGINT NOT NULL,
                head_hash TEXT NOT NULL,
                lease_owner TEXT,
                lease_epoch BIGINT NOT NULL DEFAULT 0,
                lease_expires_at DOUBLE PRECISION
            )""",
            "CREATE INDEX runs_by_status ON runs (status, created_at)",
            """CREATE TABLE events (
                run_id TEXT NOT NULL,
                seq BIGINT NOT NULL,
                type TEXT NOT NULL,
                correlation_id TEXT,
                data BYTEA NOT NULL,
                PRIMARY KEY (run_id, seq)
            )""",
            "CREATE INDEX events_by_correlation ON events (correlation_id)"
            " WHERE correlation_id IS NOT NULL",
            """CREATE TABLE snapshots (
                run_id TEXT NOT NULL,
                seq BIGINT NOT NULL,
                data BYTEA NOT NULL,
                PRIMARY KEY (run_id, seq)
            )""",
        ],
    ),
    (
        2,
        [
            "ALTER TABLE runs ADD COLUMN queue TEXT",
            "CREATE INDEX runs_by_queue ON runs (queue, status, created_at)"
            " WHERE queue IS NOT NULL",
            # Runnable = queued or running, in a queue, with no lease. Appends always hold a
            # lease, so this fires only when a lease is released or a run is enqueued.
            f"""CREATE FUNCTION tether_notify_runnable() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                PERFORM pg_notify('{NOTIFY_CHANNEL}', TG_TABLE_SCHEMA || ' ' || NEW.queue);
                RETURN NULL;
            END $$""",
            """CREATE TRIGGER runs_runnable AFTER UPDATE ON runs FOR EACH ROW
            WHEN (NEW.queue IS NOT NULL AND NEW.lease_owner IS NULL
                  AND NEW.status IN ('queued', 'running'))
            EXECUTE FUNCTION tether_notify_runnable()""",
        ],
    ),
    (
        3,
        [
            "ALTER TABLE events ADD COLUMN ts TEXT",
            "ALTER TABLE events ADD COLUMN actor TEXT",
            "ALTER TABLE events ADD COLUMN tool TEXT",
            "ALTER TABLE events ADD COLUMN visibility TEXT",
            # The stored bytes as JSON, or NULL when they are not (a damaged row).
            """CREATE FUNCTION tether_event_json(data BYTEA) RETURNS JSON
            LANGUAGE plpgsql IMMUTABLE AS $$
            BEGIN
                RETURN convert_from(data, 'UTF8')::json;
            EXCEPTION WHEN others THEN
                RETURN NULL;
            END $$""",
            # Rows inserted without the columns get them from their bytes, so every row has
            # them whichever code wrote it; verification checks they agree.
            """CREATE FUNCTION tether_event_audit() RETURNS trigger LANGUAGE plpgsql AS $$
            DECLARE
                j JSON;
            BEGIN
                IF NEW.ts IS NULL OR NEW.actor IS NULL OR NEW.visibility IS NULL THEN
                    j := tether_event_json(NEW.data);
                    NEW.ts := CASE WHEN json_typeof(j->'ts') = 'string' THEN j->>'ts' END;
                    NEW.actor := CASE WHEN json_typeof(j->'actor') = 'string'
                                      THEN j->>'actor' END;
                    NEW.visibility := CASE WHEN json_typeof(j->'visibility') = 'string'
                                           THEN j->>'visibility' END;
                    NEW.tool := CASE
                        WHEN NEW.type IN ('tool.requested', 'tool.completed', 'tool.failed',
                                          'tool.unknown')
                             AND json_typeof(j->'payload'->'name') = 'string'
                            THEN j->'payload'->>'name'
                        WHEN NEW.type = 'approval.requested'
                             AND json_typeof(j->'payload'->'tool') = 'string'
                            THEN j->'payload'->>'tool'
                    END;
                END IF;
                RETURN NEW;
            END $$""",
            """CREATE TRIGGER events_audit_columns BEFORE INSERT OR UPDATE OF data ON events
            FOR EACH ROW EXECUTE FUNCTION tether_event_audit()""",
            # Existing rows: the trigger fills them in (an UPDATE OF data with NULL columns).
            "UPDATE events SET data = data",
            *AUDIT_INDEXES,
        ],
    ),
    (4, TYPE_INDEX_V4),
    (5, []),  # schema 5 changes only SQLite's layout
    (6, []),  # so does schema 6 (PostgreSQL stores the v2 envelope in the same columns)
    (7, []),  # and 7 (SQLite's compact audit copy)
    # and 8 (SQLite's view of v3 bodies). PostgreSQL stores v3 rows in the same columns;
    # its `tether_event_audit` trigger parses only rows inserted without audit columns, as
    # v1 JSON: a v2 or v3 row (a tag byte first) is never JSON, so such a row gets NULL
    # columns, which verification reports, never values read from the wrong bytes.
    (8, []),
    (9, []),  # and 9 (SQLite's ledger in one table; PostgreSQL keeps its four)
]


# Console access tokens (`tether token`): outside the numbered migrations, created when
# first used (like the budget ledger's tables), so stores that never serve a console
# carry no table for it. Only the token's hash is stored.
TOKENS_TABLE = """CREATE TABLE IF NOT EXISTS console_tokens (
    token_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    expires_at TEXT,
    revoked_at TEXT,
    seal TEXT
)"""
TOKEN_COLUMNS = "token_id, name, role, token_hash, created_at, expires_at, revoked_at"
