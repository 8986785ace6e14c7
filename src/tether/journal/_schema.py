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
"""

from __future__ import annotations

from ._index import ACTOR_INDEX_TERM, CONTEXT_INDEX_TERM, TYPE_INDEX_TERM


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

SCHEMA_VERSION = 5

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
]
