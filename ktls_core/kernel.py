"""The simulated kernel: the state store plus the transaction every call runs in.

`Kernel.open()` finds (or boots) the state; `kernel.transaction()` yields a `Tx`,
the handle each subsystem (sysctl, net, tcp, tls) works through. A command is one
transaction: it applies whole or not at all.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ktls_core import counters
from ktls_core.errors import StateError
from ktls_core.profile import DEFAULT_PROFILE, Profile, load_profile
from ktls_core.store import Store, default_path, from_db, to_db

# The message buffer keeps this many lines, like a fixed-size msgbuf(4).
DMESG_LINES = 1000


class Tx:
    """One transaction on the kernel state. Only core modules use `conn` directly."""

    def __init__(self, kernel: Kernel, conn: sqlite3.Connection, *, write: bool) -> None:
        self.kernel = kernel
        self.conn = conn
        self.write = write
        self._profile: Profile | None = kernel._profile

    # -- profile and meta ------------------------------------------------------------
    @property
    def profile(self) -> Profile:
        if self._profile is None:
            text = self.meta("profile")
            if text is None:
                raise StateError(self.kernel.path, "state has no profile (not booted)")
            self._profile = self.kernel._profile = Profile.from_json(text)
        return self._profile

    @property
    def era(self) -> str:
        return self.profile.era

    def meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self.conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    # -- sysctl values -----------------------------------------------------------------
    def sysctl(self, name: str) -> int:
        """The value of a leaf oid: a stored parameter, or a counter/gauge."""
        oid = self.profile.by_name[name]
        if oid.kind in ("counter", "gauge"):
            return counters.get(self.conn, name)
        row = self.conn.execute("SELECT value FROM sysctl WHERE name = ?", (name,)).fetchone()
        if row is None:
            return oid.default
        # Only a uint64_t needs from_db(); a negative `integer` is stored as itself.
        return from_db(int(row[0])) if oid.type == "uint64_t" else int(row[0])

    def set_sysctl(self, name: str, value: int) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO sysctl (name, value) VALUES (?, ?)", (name, to_db(value))
        )

    # -- counters ----------------------------------------------------------------------
    def counter(self, name: str) -> int:
        return counters.get(self.conn, name)

    def count(self, name: str, delta: int = 1) -> None:
        """counter_u64_add() on a counter; gauges move with `gauge()`."""
        counters.add(self.conn, name, delta)

    def gauge(self, name: str, delta: int) -> None:
        counters.gauge_add(self.conn, name, delta)

    # -- documents ---------------------------------------------------------------------
    def doc(self, key: str) -> Any:
        row = self.conn.execute("SELECT value FROM docs WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def put_doc(self, key: str, value: Any) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO docs (key, value) VALUES (?, ?)",
            (key, json.dumps(value, sort_keys=True, separators=(",", ":"))),
        )

    # -- kernel messages ---------------------------------------------------------------
    def log(self, line: str) -> None:
        """printf() to the message buffer, which keeps the last DMESG_LINES lines."""
        cur = self.conn.execute("INSERT INTO dmesg (line) VALUES (?)", (line,))
        newest = cur.lastrowid or 0
        if newest > DMESG_LINES and newest % 64 == 0:
            self.conn.execute("DELETE FROM dmesg WHERE id <= ?", (newest - DMESG_LINES,))

    def dmesg(self) -> list[str]:
        rows = self.conn.execute(
            "SELECT line FROM (SELECT id, line FROM dmesg ORDER BY id DESC LIMIT ?) ORDER BY id",
            (DMESG_LINES,),
        )
        return [str(r[0]) for r in rows]

    # -- randomness --------------------------------------------------------------------
    def random_bytes(self, n: int) -> bytes:
        """arc4rand(): os.urandom, or a reproducible stream after `state init --seed N`.

        Code that needs much randomness outside the transaction (a long send) takes
        32 bytes here as the key of its own generator.
        """
        seed = self.meta("seed")
        if seed is None:
            return os.urandom(n)
        import hashlib  # only seeded states need it (startup: _hashlib loads OpenSSL)

        counter = int(self.meta("rng_counter") or "0")
        out = bytearray()
        while len(out) < n:
            out += hashlib.sha256(f"ktls-rng:{seed}:{counter}".encode()).digest()
            counter += 1
        self.set_meta("rng_counter", str(counter))
        return bytes(out[:n])

    def random_stream(self) -> RandomStream:
        """random_bytes() for many draws in one transaction (connect --count)."""
        return RandomStream(self)


class RandomStream:
    """The bytes `tx.random_bytes()` would give call by call, with the seed read at the
    first draw and the seeded counter stored by `save()` instead of at every draw."""

    def __init__(self, tx: Tx) -> None:
        self._tx = tx
        self._seed: str | None = None
        self._counter: int | None = None  # None: nothing drawn yet

    def __call__(self, n: int) -> bytes:
        if self._counter is None:
            self._seed = self._tx.meta("seed")
            self._counter = int(self._tx.meta("rng_counter") or "0")
        if self._seed is None:
            return os.urandom(n)
        import hashlib

        out = bytearray()
        while len(out) < n:
            out += hashlib.sha256(f"ktls-rng:{self._seed}:{self._counter}".encode()).digest()
            self._counter += 1
        return bytes(out[:n])

    def save(self) -> None:
        """Store the seeded counter (as the last random_bytes() call would have)."""
        if self._seed is not None and self._counter is not None:
            self._tx.set_meta("rng_counter", str(self._counter))


class Kernel:
    """The simulated kernel behind one state file."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.path = store.path
        self._profile: Profile | None = None

    @classmethod
    def open(cls, path: str | None = None, *, create: bool = True, boot: bool = True) -> Kernel:
        """Open the state at `path` (default: $KTLS_STATE or the XDG path); boot if new."""
        store = Store.open(path or default_path(), create=create)
        kernel = cls(store)
        if boot and (store.created or kernel._needs_boot()):
            kernel.boot()
        return kernel

    def _needs_boot(self) -> bool:
        with self.store.read() as conn:
            return conn.execute("SELECT 1 FROM meta WHERE key = 'profile'").fetchone() is None

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        with self.store.write() as conn:
            yield Tx(self, conn, write=True)

    @contextmanager
    def snapshot(self) -> Iterator[Tx]:
        with self.store.read() as conn:
            yield Tx(self, conn, write=False)

    def boot(
        self,
        profile_name: str = DEFAULT_PROFILE,
        *,
        topology: str | None = None,
        seed: int | None = None,
        tunables: dict[str, int] | None = None,
    ) -> None:
        """Boot a fresh kernel: profile, loader tunables, counters, network.

        Runs once per state; a concurrent process that booted first wins.
        """
        profile = load_profile(profile_name)
        with self.transaction() as tx:
            if tx.meta("profile") is not None:
                return
            tx.set_meta("profile", profile.to_json())
            if seed is not None:
                tx.set_meta("seed", str(seed))
            self._profile = tx._profile = profile
            counters.create(
                tx.conn, [o.name for o in profile.oids if o.kind in ("counter", "gauge")]
            )
            for name, value in (tunables or {}).items():
                tx.set_sysctl(name, value)
            from ktls_core.net import store as net_store

            net_store.boot(tx, topology)
            tx.put_doc("kld", {"loaded": []})
            if profile.feature("threads_lazy"):
                # Modern kernels start the pool with the first session: until then
                # stats.threads reads 0 (the oid's default is the pool size, ncpu).
                tx.set_sysctl("kern.ipc.tls.stats.threads", 0)
            else:
                # ktls_init() in 2019 started the pool at boot and always said so.
                tx.log(f"KTLS: Initialized {tx.sysctl('kern.ipc.tls.stats.threads')} threads")
