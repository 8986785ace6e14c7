"""The SQLite ledger's settled spend in one table (schema 9).

A settlement counts its cost in the minute and the hour of each of its scopes and in its
run. Kept in three tables (`budget_usage`, `budget_usage_hourly`, `budget_runs`, as
PostgreSQL still does) that was three statements and three more B-tree pages written by
every step's commit; here it is one row kind each in `budget_spend`, written by one
statement, and while the ledger is small all of it on one page.

The three old names stay as views (with INSTEAD OF triggers), so readers, `doctor` and
operators' SQL keep working. Nothing of Tether's is imported: the journal's migrations
use these statements.
"""

from __future__ import annotations

import functools

MINUTE, HOUR, RUN = 0, 1, 2
"""`budget_spend.kind`: a scope's minute bucket, its hourly roll-up, a run's total."""

SPEND_TABLE = """CREATE TABLE IF NOT EXISTS budget_spend (
    kind INTEGER NOT NULL,
    key TEXT NOT NULL,
    bucket INTEGER NOT NULL,
    spent REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (kind, key, bucket)
) WITHOUT ROWID"""
"""`key` is the scope (minute, hour rows) or the run id; `bucket` the minute, the hour,
or 0 for a run's row."""


def _view(name: str, kind: int, columns: tuple[str, ...]) -> list[str]:
    """A view with the old table's columns over one kind of row, writable as before."""
    key, bucket = columns[0], columns[1] if len(columns) == 4 else None
    picked = f"key, {'bucket, ' if bucket else ''}spent, 0"
    new_bucket = f"NEW.{bucket}" if bucket else "0"
    old_row = f"kind = {kind} AND key = OLD.{key}" + (
        f" AND bucket = OLD.{bucket}" if bucket else ""
    )
    return [
        f"CREATE VIEW IF NOT EXISTS {name} ({', '.join(columns)}) AS "
        f"SELECT {picked} FROM budget_spend WHERE kind = {kind}",
        f"""CREATE TRIGGER IF NOT EXISTS {name}_insert INSTEAD OF INSERT ON {name} BEGIN
            INSERT INTO budget_spend (kind, key, bucket, spent)
            VALUES ({kind}, NEW.{key}, {new_bucket}, COALESCE(NEW.spent, 0));
        END""",
        f"""CREATE TRIGGER IF NOT EXISTS {name}_update INSTEAD OF UPDATE ON {name} BEGIN
            UPDATE budget_spend SET key = NEW.{key}, bucket = {new_bucket}, spent = NEW.spent
            WHERE {old_row};
        END""",
        f"""CREATE TRIGGER IF NOT EXISTS {name}_delete INSTEAD OF DELETE ON {name} BEGIN
            DELETE FROM budget_spend WHERE {old_row};
        END""",
    ]


SPEND_VIEWS = [
    *_view("budget_usage", MINUTE, ("scope", "minute", "spent", "reserved")),
    *_view("budget_usage_hourly", HOUR, ("scope", "hour", "spent", "reserved")),
    *_view("budget_runs", RUN, ("run_id", "spent", "reserved")),
]

SPEND_SCHEMA = [SPEND_TABLE, *SPEND_VIEWS]
"""What a schema-9 store's ledger keeps its spend in (made by the migration, and again,
IF NOT EXISTS, by the ledger when it opens)."""

_OLD_TABLES = [
    # Schema 8's tables, made empty where the store never had a ledger, so that one
    # list of statements moves the spend of every schema-8 store.
    """CREATE TABLE IF NOT EXISTS budget_usage (
        scope TEXT NOT NULL, minute INTEGER NOT NULL, spent REAL NOT NULL DEFAULT 0,
        reserved REAL NOT NULL DEFAULT 0, PRIMARY KEY (scope, minute)) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS budget_usage_hourly (
        scope TEXT NOT NULL, hour INTEGER NOT NULL, spent REAL NOT NULL DEFAULT 0,
        reserved REAL NOT NULL DEFAULT 0, PRIMARY KEY (scope, hour)) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS budget_runs (
        run_id TEXT PRIMARY KEY, spent REAL NOT NULL DEFAULT 0,
        reserved REAL NOT NULL DEFAULT 0) WITHOUT ROWID""",
]

MIGRATE_TO_V9 = [
    *_OLD_TABLES,
    SPEND_TABLE,
    # Values are copied as stored (a damaged one stays damaged, for doctor to name).
    f"INSERT INTO budget_spend (kind, key, bucket, spent) "
    f"SELECT {MINUTE}, scope, minute, spent FROM budget_usage",
    f"INSERT INTO budget_spend (kind, key, bucket, spent) "
    f"SELECT {HOUR}, scope, hour, spent FROM budget_usage_hourly",
    f"INSERT INTO budget_spend (kind, key, bucket, spent) "
    f"SELECT {RUN}, run_id, 0, spent FROM budget_runs",
    "DROP TABLE budget_usage",
    "DROP TABLE budget_usage_hourly",
    "DROP TABLE budget_runs",
    *SPEND_VIEWS,
]
"""Schema 9 (SQLite): schema 8's three spend tables moved into `budget_spend`."""


@functools.cache
def add_spend_sql(scopes: int) -> str:
    """One statement counting a cost in the minute and the hour of each of `scopes` scopes
    and in its run (parameters: per scope `scope, minute, cost, scope, hour, cost`, then
    `run_id, cost`)."""
    values = [f"({MINUTE},?,?,?),({HOUR},?,?,?)"] * scopes + [f"({RUN},?,0,?)"]
    return (
        "INSERT INTO budget_spend (kind, key, bucket, spent) VALUES "
        + ",".join(values)
        + " ON CONFLICT (kind, key, bucket) DO UPDATE SET spent = budget_spend.spent + "
        "excluded.spent"
    )
