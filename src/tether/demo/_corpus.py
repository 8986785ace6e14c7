"""The demo's document collection, shipped in the package and searched with SQLite FTS5."""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from functools import cache
from importlib import resources

__all__ = ["Document", "corpus", "search"]


@dataclass(frozen=True, kw_only=True, slots=True)
class Document:
    id: str
    title: str
    date: str
    kind: str
    author: str
    body: str

    def render(self) -> str:
        return (
            f"# {self.title}\nid: {self.id} · {self.kind} · {self.date} · {self.author}\n\n"
            f"{self.body.strip()}"
        )


def _parse(text: str) -> Document:
    _, front, body = text.split("---\n", 2)
    fields = dict(line.split(": ", 1) for line in front.strip().splitlines())
    return Document(
        id=fields["id"],
        title=fields["title"],
        date=fields["date"],
        kind=fields["kind"],
        author=fields["author"],
        body=body,
    )


@cache
def corpus() -> dict[str, Document]:
    folder = resources.files("tether.demo") / "corpus"
    docs = [_parse(f.read_text("utf-8")) for f in folder.iterdir() if f.name.endswith(".md")]
    return {d.id: d for d in sorted(docs, key=lambda d: d.id)}


@cache
def _index() -> sqlite3.Connection:
    db = sqlite3.connect(":memory:", check_same_thread=False)
    db.execute("CREATE VIRTUAL TABLE docs USING fts5(id UNINDEXED, title, body, tokenize='porter')")
    db.executemany(
        "INSERT INTO docs (id, title, body) VALUES (?, ?, ?)",
        [(d.id, d.title, d.body) for d in corpus().values()],
    )
    return db


def search(query: str, limit: int = 5) -> list[tuple[Document, str]]:
    """Documents matching any of the query's words, best first (bm25), with a snippet."""
    words = re.findall(r"[A-Za-z0-9]+", query.lower())
    if not words:
        return []
    match = " OR ".join(f'"{w}"' for w in words)
    rows = (
        _index()
        .execute(
            "SELECT id, snippet(docs, 2, '', '', ' … ', 16) FROM docs WHERE docs MATCH ? "
            "ORDER BY bm25(docs), id LIMIT ?",
            (match, limit),
        )
        .fetchall()
    )
    docs = corpus()
    return [(docs[r[0]], " ".join(r[1].split())) for r in rows]
