"""What the SQLite store keeps in `tether_meta` beside the journal: the registered secrets,
the sync log's lost commits once found, the last doctor result."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from .._redact import remember_stored_secrets
from ..errors import StoreError
from ..events import EventDecodeError
from ._integrity import verify_row
from ._secrets import COUNT_SECRETS, SECRET_KEY_PREFIX, SECRET_KEYS_END, damaged_secrets, secret_key
from ._sqlite_core import SQLiteCore, log
from ._sqlite_stored import _EVENT_COLUMNS, _stored
from ._synclog import Synced, lost_records

_LOST = "lost-synced"
"""`tether_meta` keys naming synced commits found missing: once found, always refused."""


def _doctor_json(value: Any) -> dict[str, Any] | None:
    """A kept doctor result; a damaged one reads as none (the next doctor run replaces it)."""
    try:
        found = json.loads(value)
    except (TypeError, ValueError, RecursionError):
        return None
    return found if isinstance(found, dict) else None


class SQLiteMeta(SQLiteCore):
    """The `tether_meta` part of `SQLiteStore`."""

    async def lost_synced_commits(self, run_id: str | None = None) -> list[Synced]:
        """Commits the sync log says were synced before an effect and this file no longer
        holds (see `_synclog`): found once per open, then remembered in the store itself."""
        if self._lost is None:
            try:
                found = lost_records(self._synclog, self._holds)
            except StoreError as exc:
                if not self.read_only:
                    raise  # a writer never resumes a run it cannot check
                log.warning("%s; runs are shown without that check", exc)
                found = []
            if found and not self.read_only:
                with self._write(sync=True) as db:
                    db.executemany(
                        # REPLACE: registering a secret again repairs a damaged copy of it.
                        "INSERT OR REPLACE INTO tether_meta(key, value) VALUES (?, ?)",
                        [(f"{_LOST} {r.run_id} {r.seq}", r.checksum) for r in found],
                    )
            known = {(r.run_id, r.seq): r for r in found}
            for key, checksum in self._read(
                f"SELECT key, value FROM tether_meta WHERE key LIKE '{_LOST} %'"
            ):
                _, lost_run, seq = str(key).split(" ")
                known.setdefault((lost_run, int(seq)), Synced(lost_run, int(seq), str(checksum)))
            self._lost = sorted(known.values(), key=lambda r: (r.run_id, r.seq))
        return [r for r in self._lost if run_id is None or r.run_id == run_id]

    def _holds(self, record: Synced) -> bool:
        rows = self._read(
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE run_id=? AND seq=?",
            (record.run_id, record.seq),
        )
        if not rows:
            return False
        try:
            return verify_row(_stored(rows[0])).checksum == record.checksum
        except EventDecodeError:
            return True  # there, but damaged: the journal's own checks name that

    async def store_secrets(self, values: Sequence[str]) -> None:
        """Record registered secrets for every later reader (see `_secrets`)."""
        with self._write(sync=True) as db:
            db.executemany(
                # REPLACE: registering a secret again repairs a damaged copy of it.
                "INSERT OR REPLACE INTO tether_meta(key, value) VALUES (?, ?)",
                [(secret_key(v), v) for v in values],
            )

    def _load_secrets(self) -> None:
        try:
            rows = self._read(
                f"SELECT value FROM tether_meta WHERE key LIKE '{SECRET_KEY_PREFIX}%'"
            )
        except StoreError as exc:
            log.warning(
                "the secrets recorded in %s cannot be read (%s): views redact only the "
                "patterns and this process's secrets", self.path, exc,
            )  # fmt: skip
            return
        remember_stored_secrets(str(r[0]) for r in rows if isinstance(r[0], str))
        self._secrets_seen = len(rows)

    def _refresh_secrets(self) -> None:
        """Load the secrets recorded since this store was opened (see `COUNT_SECRETS`)."""
        try:
            rows = self._read(COUNT_SECRETS.format(m="?"), (SECRET_KEY_PREFIX, SECRET_KEYS_END))
        except StoreError:
            return  # `_load_secrets` warned when the store was opened
        if rows and rows[0][0] != self._secrets_seen:
            self._load_secrets()

    async def check_secrets(self) -> str | None:
        """The recorded secrets against their keys (see `_secrets.damaged_secrets`)."""
        return damaged_secrets(
            self._read(f"SELECT key, value FROM tether_meta WHERE key LIKE '{SECRET_KEY_PREFIX}%'")
        )

    async def record_doctor(self, result: dict[str, Any]) -> None:
        """Keep the last `doctor` result for the console (see `tether.doctor_record`)."""
        with self._write() as db:
            db.execute(
                "INSERT OR REPLACE INTO tether_meta(key, value) VALUES ('doctor.last', ?)",
                (json.dumps(result, ensure_ascii=False),),
            )

    async def last_doctor(self) -> dict[str, Any] | None:
        rows = self._read("SELECT value FROM tether_meta WHERE key='doctor.last'")
        return _doctor_json(rows[0][0]) if rows else None
