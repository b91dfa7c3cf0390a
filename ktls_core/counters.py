"""counter(9)-like statistics kept in the state.

Counters are u64 that only go up (they wrap at 2**64 as counter_u64 does);
gauges (the "Active number of ..." sysctls, stats.active, the inqueue values)
go up and down and never below zero. Both are updated with one UPDATE inside
the command's transaction, so concurrent commands never lose an increment.
"""

from __future__ import annotations

import sqlite3

from ktls_core.store import from_db, to_db

U64 = 1 << 64


def create(conn: sqlite3.Connection, names: list[str]) -> None:
    conn.executemany(
        "INSERT OR IGNORE INTO counters (name, value) VALUES (?, 0)", [(n,) for n in names]
    )


def get(conn: sqlite3.Connection, name: str) -> int:
    row = conn.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
    if row is None:
        raise KeyError(name)
    return from_db(int(row[0]))


def get_many(conn: sqlite3.Connection, prefix: str) -> dict[str, int]:
    rows = conn.execute(
        "SELECT name, value FROM counters WHERE name >= ? AND name < ?", (prefix, prefix + "\uffff")
    )
    return {name: from_db(int(value)) for name, value in rows}


def add(conn: sqlite3.Connection, name: str, delta: int = 1) -> None:
    """counter_u64_add(): a counter goes up by `delta` (>= 0), modulo 2**64."""
    if delta < 0:
        raise ValueError(f"counter {name} only goes up")
    _update(conn, name, delta, gauge=False)


def gauge_add(conn: sqlite3.Connection, name: str, delta: int) -> None:
    """A gauge moves by `delta`; it never drops below zero."""
    _update(conn, name, delta, gauge=True)


def _update(conn: sqlite3.Connection, name: str, delta: int, *, gauge: bool) -> None:
    current = get(conn, name)
    value = max(0, current + delta) if gauge else (current + delta) % U64
    conn.execute("UPDATE counters SET value = ? WHERE name = ?", (to_db(value), name))


class Batch:
    """counter_u64_add() and gauge moves of many calls kept in memory, written by flush().

    Each move applies to the running value exactly as add()/gauge_add() would
    (wrap at 2**64, gauges clamped at zero), so the stored result is the same as
    one UPDATE per move; `connect --count` makes 100,000 sessions this way.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._values: dict[str, int] = {}

    def _value(self, name: str) -> int:
        value = self._values.get(name)
        if value is None:
            value = self._values[name] = get(self._conn, name)
        return value

    def count(self, name: str, delta: int = 1) -> None:
        if delta < 0:
            raise ValueError(f"counter {name} only goes up")
        self._values[name] = (self._value(name) + delta) % U64

    def gauge(self, name: str, delta: int) -> None:
        self._values[name] = max(0, self._value(name) + delta)

    def flush(self) -> None:
        """Store every value touched (one executemany), then start afresh."""
        self._conn.executemany(
            "UPDATE counters SET value = ? WHERE name = ?",
            [(to_db(value), name) for name, value in self._values.items()],
        )
        self._values.clear()
