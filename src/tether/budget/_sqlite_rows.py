"""The SQLite ledger's rows in one table (schema 9): settled spend and open holds.

A settlement counts its cost in the minute and the hour of each of its scopes and in its
run, and deletes the call's hold, which the call's first commit inserted. Kept in four
tables (`budget_usage`, `budget_usage_hourly`, `budget_runs`, `budget_reservations`, as
PostgreSQL still does) that was four statements and four B-tree pages a step's commits
wrote besides the journal's; here each is one kind of row in `budget_ledger`: a
settlement is two statements (the hold deleted, every sum in one upsert), and while the
ledger is small both commits of a step write it one page. Holds sort last (their ids are
time-ordered), just after the runs' totals (run ids are too), so in a large ledger a
step's hold and its run's total still tend to share the last page.

The four old names stay as views (with INSTEAD OF triggers), so readers, `doctor` and
operators' SQL keep working; the ledger's own writes go to the table (a view's
`rowcount` does not count what its triggers change). Nothing of Tether's is imported: the
journal's migrations use these statements.
"""

from __future__ import annotations

import functools

MINUTE, HOUR, RUN, HOLD = 0, 1, 2, 3
"""`budget_ledger.kind`: a scope's minute bucket, its hourly roll-up, a run's total, an
open (or reclaimed) hold."""

TABLE = """CREATE TABLE IF NOT EXISTS budget_ledger (
    kind INTEGER NOT NULL,
    key TEXT NOT NULL,
    bucket INTEGER NOT NULL,
    spent REAL NOT NULL DEFAULT 0,
    run_id TEXT,
    scopes TEXT,
    minute INTEGER,
    estimate REAL,
    actual REAL,
    state TEXT,
    created_at REAL,
    expires_at REAL,
    PRIMARY KEY (kind, key, bucket)
) WITHOUT ROWID"""
"""`key` is the scope (minute, hour rows), the run id (its total) or the reservation id
(a hold); `bucket` the minute, the hour, or 0. Only holds use the columns after `spent`
(NULL elsewhere, one byte each)."""


def _spend_view(name: str, kind: int, columns: tuple[str, ...]) -> list[str]:
    """A view with a spend table's old columns over one kind of row, writable as before."""
    key, bucket = columns[0], columns[1] if len(columns) == 4 else None
    picked = f"key, {'bucket, ' if bucket else ''}spent, 0"
    new_bucket = f"NEW.{bucket}" if bucket else "0"
    old_row = f"kind = {kind} AND key = OLD.{key}" + (
        f" AND bucket = OLD.{bucket}" if bucket else ""
    )
    return [
        f"CREATE VIEW IF NOT EXISTS {name} ({', '.join(columns)}) AS "
        f"SELECT {picked} FROM budget_ledger WHERE kind = {kind}",
        f"""CREATE TRIGGER IF NOT EXISTS {name}_insert INSTEAD OF INSERT ON {name} BEGIN
            INSERT INTO budget_ledger (kind, key, bucket, spent)
            VALUES ({kind}, NEW.{key}, {new_bucket}, COALESCE(NEW.spent, 0));
        END""",
        f"""CREATE TRIGGER IF NOT EXISTS {name}_update INSTEAD OF UPDATE ON {name} BEGIN
            UPDATE budget_ledger SET key = NEW.{key}, bucket = {new_bucket}, spent = NEW.spent
            WHERE {old_row};
        END""",
        f"""CREATE TRIGGER IF NOT EXISTS {name}_delete INSTEAD OF DELETE ON {name} BEGIN
            DELETE FROM budget_ledger WHERE {old_row};
        END""",
    ]


HOLD_COLUMNS = "run_id, scopes, minute, estimate, actual, state, created_at, expires_at"
_HOLD_NEW = ", ".join(f"NEW.{c.strip()}" for c in HOLD_COLUMNS.split(","))
_HOLD_SET = ", ".join(f"{c.strip()} = NEW.{c.strip()}" for c in HOLD_COLUMNS.split(","))
HOLDS_VIEW = [
    f"CREATE VIEW IF NOT EXISTS budget_reservations (id, {HOLD_COLUMNS}) AS "
    f"SELECT key, {HOLD_COLUMNS} FROM budget_ledger WHERE kind = {HOLD}",
    f"""CREATE TRIGGER IF NOT EXISTS budget_reservations_insert
        INSTEAD OF INSERT ON budget_reservations BEGIN
        INSERT INTO budget_ledger (kind, key, bucket, {HOLD_COLUMNS})
        VALUES ({HOLD}, NEW.id, 0, {_HOLD_NEW});
    END""",
    f"""CREATE TRIGGER IF NOT EXISTS budget_reservations_update
        INSTEAD OF UPDATE ON budget_reservations BEGIN
        UPDATE budget_ledger SET key = NEW.id, {_HOLD_SET}
        WHERE kind = {HOLD} AND key = OLD.id;
    END""",
    f"""CREATE TRIGGER IF NOT EXISTS budget_reservations_delete
        INSTEAD OF DELETE ON budget_reservations BEGIN
        DELETE FROM budget_ledger WHERE kind = {HOLD} AND key = OLD.id;
    END""",
]

VIEWS = [
    *_spend_view("budget_usage", MINUTE, ("scope", "minute", "spent", "reserved")),
    *_spend_view("budget_usage_hourly", HOUR, ("scope", "hour", "spent", "reserved")),
    *_spend_view("budget_runs", RUN, ("run_id", "spent", "reserved")),
    *HOLDS_VIEW,
]

SCHEMA = [TABLE, *VIEWS]
"""Where a schema-9 store's ledger keeps its spend and holds (made by the migration, and
again, IF NOT EXISTS, by the ledger when it opens)."""

_OLD_TABLES = [
    # Schema 8's tables, made empty where the store never had a ledger, so that one
    # list of statements moves the rows of every schema-8 store.
    """CREATE TABLE IF NOT EXISTS budget_usage (
        scope TEXT NOT NULL, minute INTEGER NOT NULL, spent REAL NOT NULL DEFAULT 0,
        reserved REAL NOT NULL DEFAULT 0, PRIMARY KEY (scope, minute)) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS budget_usage_hourly (
        scope TEXT NOT NULL, hour INTEGER NOT NULL, spent REAL NOT NULL DEFAULT 0,
        reserved REAL NOT NULL DEFAULT 0, PRIMARY KEY (scope, hour)) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS budget_runs (
        run_id TEXT PRIMARY KEY, spent REAL NOT NULL DEFAULT 0,
        reserved REAL NOT NULL DEFAULT 0) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS budget_reservations (
        id TEXT PRIMARY KEY, run_id TEXT NOT NULL, scopes TEXT NOT NULL,
        minute INTEGER NOT NULL, estimate REAL NOT NULL, actual REAL, state TEXT NOT NULL,
        created_at REAL NOT NULL, expires_at REAL NOT NULL) WITHOUT ROWID""",
]

MIGRATE_TO_V9 = [
    *_OLD_TABLES,
    TABLE,
    # Values are copied as stored (a damaged one stays damaged, for doctor to name).
    f"INSERT INTO budget_ledger (kind, key, bucket, spent) "
    f"SELECT {MINUTE}, scope, minute, spent FROM budget_usage",
    f"INSERT INTO budget_ledger (kind, key, bucket, spent) "
    f"SELECT {HOUR}, scope, hour, spent FROM budget_usage_hourly",
    f"INSERT INTO budget_ledger (kind, key, bucket, spent) "
    f"SELECT {RUN}, run_id, 0, spent FROM budget_runs",
    f"INSERT INTO budget_ledger (kind, key, bucket, {HOLD_COLUMNS}) "
    f"SELECT {HOLD}, id, 0, {HOLD_COLUMNS} FROM budget_reservations",
    "DROP TABLE budget_usage",
    "DROP TABLE budget_usage_hourly",
    "DROP TABLE budget_runs",
    "DROP TABLE budget_reservations",
    *VIEWS,
]
"""Schema 9 (SQLite): schema 8's three spend tables and its holds moved into
`budget_ledger`."""

INSERT_HOLD = (
    f"INSERT INTO budget_ledger (kind, key, bucket, run_id, scopes, minute, estimate, state, "
    f"created_at, expires_at) VALUES ({HOLD},?,0,?,?,?,?,?,?,?)"
)
DELETE_HOLD = f"DELETE FROM budget_ledger WHERE kind = {HOLD} AND key=? AND state=?"
UPDATE_HOLD = (
    f"UPDATE budget_ledger SET state=?, actual=? WHERE kind = {HOLD} AND key=? AND state=?"
)


@functools.cache
def add_spend_sql(scopes: int) -> str:
    """One statement counting a cost in the minute and the hour of each of `scopes` scopes
    and in its run (parameters: per scope `scope, minute, cost, scope, hour, cost`, then
    `run_id, cost`)."""
    values = [f"({MINUTE},?,?,?),({HOUR},?,?,?)"] * scopes + [f"({RUN},?,0,?)"]
    return (
        "INSERT INTO budget_ledger (kind, key, bucket, spent) VALUES "
        + ",".join(values)
        + " ON CONFLICT (kind, key, bucket) DO UPDATE SET spent = budget_ledger.spent + "
        "excluded.spent"
    )
