"""Helpers of the reliability tests (imported by path, as tests/oracle.py is).

- `invariant_problems(state)`: what is wrong with a state at rest: the database's
  own integrity check, and every gauge against what the tables hold (`active`
  equals the sessions, `<mode>.<cipher>` the sessions in that mode with that
  cipher, the inqueue gauges 0, no session without its connection).
- `session_info(state)`: every session's keys and sequence state, by connection name.
- `split_records(stream)`: the whole TLS records of a byte stream (a killed send's
  stream ends anywhere).
- `oracle_suite(info)`: the session as tests/oracle.py's `suite` dict.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

MODE_NODES = {1: "sw", 2: "ifnet", 3: "toe"}
CIPHER_GAUGE = {25: "gcm", 11: "cbc", 41: "chacha20"}  # CryptoAlg values (suites.py)
INQUEUE = ("so_inqueue", "sw_tx_inqueue", "sw_rx_inqueue", "sw_tx_pending")


def _gauges(db: sqlite3.Connection) -> dict[str, int]:
    from ktls_core.profile import Profile

    text = db.execute("SELECT value FROM meta WHERE key = 'profile'").fetchone()[0]
    profile = Profile.from_json(text)
    names = [o.name for o in profile.oids if o.kind == "gauge"]
    rows = dict(db.execute("SELECT name, value FROM counters").fetchall())
    return {n: int(rows[n]) for n in names}


def invariant_problems(state: str) -> list[str]:
    """Empty when the state at rest is whole and every gauge is true."""
    db = sqlite3.connect(f"file:{state}?mode=ro", uri=True)
    try:
        problems: list[str] = []
        check = db.execute("PRAGMA integrity_check").fetchall()
        if check != [("ok",)]:
            problems.append(f"integrity_check: {check}")
        gauges = _gauges(db)
        sessions = db.execute("SELECT conn_id, mode, cipher FROM sessions").fetchall()
        expected: dict[str, int] = dict.fromkeys(gauges, 0)
        for _cid, mode, cipher in sessions:
            expected["kern.ipc.tls.stats.active"] += 1
            if mode not in MODE_NODES:
                problems.append(f"session {_cid} has mode {mode}")
                continue
            expected[f"kern.ipc.tls.{MODE_NODES[mode]}.{CIPHER_GAUGE[cipher]}"] += 1
        for name, value in gauges.items():
            if value != expected[name]:
                problems.append(f"{name} is {value}, the tables say {expected[name]}")
        orphans = db.execute(
            "SELECT count(*) FROM sessions WHERE conn_id NOT IN (SELECT id FROM conns)"
        ).fetchone()[0]
        if orphans:
            problems.append(f"{orphans} session(s) without a connection")
        return problems
    finally:
        db.close()


def counters(state: str) -> dict[str, int]:
    db = sqlite3.connect(f"file:{state}?mode=ro", uri=True)
    try:
        return {str(n): int(v) for n, v in db.execute("SELECT name, value FROM counters")}
    finally:
        db.close()


@dataclass(frozen=True)
class SessionInfo:
    conn: str  # "laddr lport faddr fport"
    vminor: int
    cipher: int
    auth: int
    key: bytes
    iv: bytes
    auth_key: bytes
    next_seq: int
    nonce_ctr: int | None
    cbc_iv: bytes | None
    mode: int
    records: int
    bytes: int
    tx_bytes: int


def session_info(state: str) -> dict[str, SessionInfo]:
    from ktls_core.store import from_db

    db = sqlite3.connect(f"file:{state}?mode=ro", uri=True)
    try:
        rows = db.execute(
            "SELECT c.laddr, c.lport, c.faddr, c.fport, s.vminor, s.cipher, s.auth,"
            " s.cipher_key, s.iv, s.auth_key, s.next_seq, s.nonce_ctr, s.cbc_iv, s.mode,"
            " s.records, s.bytes, c.tx_bytes FROM sessions s JOIN conns c ON c.id = s.conn_id"
        ).fetchall()
    finally:
        db.close()
    out = {}
    for r in rows:
        name = f"{r[0]} {r[1]} {r[2]} {r[3]}"
        out[name] = SessionInfo(
            name, r[4], r[5], r[6], bytes(r[7]), bytes(r[8]), bytes(r[9]), from_db(r[10]),
            None if r[11] is None else from_db(r[11]), None if r[12] is None else bytes(r[12]),
            r[13], r[14], r[15], r[16],
        )  # fmt: skip
    return out


VERSIONS = {1: "1.0", 2: "1.1", 3: "1.2", 4: "1.3"}
CIPHERS = {25: "aes-gcm", 11: "aes-cbc", 41: "chacha20-poly1305"}
AUTHS = {0: None, 7: "hmac-sha1", 18: "hmac-sha256", 19: "hmac-sha384"}


def oracle_suite(s: SessionInfo, chain_iv: bytes | None = None) -> dict[str, Any]:
    """tests/oracle.py's suite dict; `chain_iv` for a TLS 1.0 CBC stream mid-session."""
    iv = s.iv if chain_iv is None else chain_iv
    auth = AUTHS.get(s.auth)
    return {
        "version": VERSIONS[s.vminor],
        "cipher": CIPHERS[s.cipher],
        "key": s.key,
        "iv": iv,
        "auth": auth,
        "auth_key": s.auth_key,
    }


def split_records(stream: bytes) -> tuple[list[tuple[int, bytes]], int]:
    """(offset, record bytes) of each whole record, and where the whole records end."""
    out = []
    pos = 0
    while pos + 5 <= len(stream):
        length = int.from_bytes(stream[pos + 3 : pos + 5], "big")
        if pos + 5 + length > len(stream):
            break
        out.append((pos, stream[pos : pos + 5 + length]))
        pos += 5 + length
    return out, pos
