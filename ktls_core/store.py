"""The persistent state of the simulated kernel: one SQLite database.

Every command is one transaction (BEGIN IMMEDIATE for commands that change
anything), so concurrent shell scripts serialise on the database and never lose
an update. The file is created 0600 in a 0700 directory; a file that is not ours,
is newer than this code, or is damaged raises StateError naming the file.

A state in use is replaced (`install`) in place, by one write transaction, never
by renaming a new file over it: SQLite finds the -wal and -shm by name, so a
rename lets a command pair the new file with the old WAL (replayed into it) or
keep writing into the unlinked old file. Each transaction checks, under its lock,
that the path is still the file it opened and that the state's generation (the
schema cookie, which only a replacement or a migration moves) is the one its
earlier transactions saw, and fails with one line otherwise.
"""

from __future__ import annotations

import collections
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from ktls_core.errors import StateError

# PRAGMA application_id: "kTLS" tells our databases from other applications' SQLite files.
APPLICATION_ID = 0x6B544C53
BUSY_TIMEOUT_MS = 60_000
BUSY = "state is busy (another ktls holds it)"
BUSY_HINT = "try again when that command is done"
RERUN_HINT = "run the command again"
REPLACED = "state was replaced (state init --force or state import) while this command ran"
MOVED = "state file was replaced or removed while this command ran"

# Migrations: MIGRATIONS[n] brings a database from schema version n to n + 1.
# A migration is a list of statements; never edit one that has shipped, append a new one.
MIGRATIONS: list[list[str]] = [
    [
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        # Stored values of writable and tunable sysctls (defaults live in the profile).
        "CREATE TABLE sysctl (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
        # counter(9) values and gauges; u64 kept as signed 64-bit (see to_db/from_db).
        "CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
        # Small JSON documents: the network ('net'), loaded modules ('kld'), ...
        "CREATE TABLE docs (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        # The kernel message buffer, a bounded ring (see kernel.DMESG_LINES).
        "CREATE TABLE dmesg (id INTEGER PRIMARY KEY AUTOINCREMENT, line TEXT NOT NULL)",
    ],
    [
        # TCP connections (ktls_core/net/tcp.py). AUTOINCREMENT: an id is never reused,
        # so a session, a worker pin or a live sender never meets a new connection
        # under an old id. u32 TCP sequence values; owner names a live process
        # (`ktls serve`) that registered the connection, NULL for `ktls connect`;
        # tx_bytes/rxt_bytes/nic_xmit_dis are tcpcb's t_sndbytes, t_snd_rxt_bytes and
        # t_nic_ktls_xmit_dis (ifnet_max_rexmit_pct).
        "CREATE TABLE conns (id INTEGER PRIMARY KEY AUTOINCREMENT,"
        " family INTEGER NOT NULL, laddr TEXT NOT NULL, lport INTEGER NOT NULL,"
        " faddr TEXT NOT NULL, fport INTEGER NOT NULL, state TEXT NOT NULL,"
        " iss INTEGER NOT NULL, snd_nxt INTEGER NOT NULL, irs INTEGER NOT NULL,"
        " flowid INTEGER NOT NULL, owner TEXT, tx_bytes INTEGER NOT NULL DEFAULT 0,"
        " rxt_bytes INTEGER NOT NULL DEFAULT 0, nic_xmit_dis INTEGER NOT NULL DEFAULT 0,"
        " UNIQUE (laddr, lport, faddr, fport))",
        "CREATE INDEX conns_owner ON conns (owner) WHERE owner IS NOT NULL",
        # KTLS transmit sessions (ktls_core/tls/session.py), one per connection.
        # u64 columns (start_seq, next_seq, nonce_ctr) go through to_db/from_db;
        # tag_* is the ifnet send tag (type, route interface, physical port).
        "CREATE TABLE sessions (conn_id INTEGER PRIMARY KEY, mode INTEGER NOT NULL,"
        " vminor INTEGER NOT NULL, cipher INTEGER NOT NULL, auth INTEGER NOT NULL,"
        " cipher_key BLOB NOT NULL, iv BLOB NOT NULL, auth_key BLOB NOT NULL,"
        " start_seq INTEGER NOT NULL, next_seq INTEGER NOT NULL, nonce_ctr INTEGER,"
        " cbc_iv BLOB, max_frame_len INTEGER NOT NULL, backend TEXT,"
        " tag_type INTEGER, tag_ifname TEXT, tag_port TEXT,"
        " reset_pending INTEGER NOT NULL DEFAULT 0,"
        " records INTEGER NOT NULL DEFAULT 0, bytes INTEGER NOT NULL DEFAULT 0,"
        " worker INTEGER NOT NULL)",
    ],
]
SCHEMA_VERSION = len(MIGRATIONS)

# Table order for export/import, and the columns that hold secrets (exported only
# with --include-keys). Modules that add tables in a migration register them here.
EXPORT_TABLES: list[str] = ["meta", "sysctl", "counters", "docs", "dmesg"]
SECRET_COLUMNS: dict[str, frozenset[str]] = {}
EXPORT_TABLES += ["conns", "sessions"]
SECRET_COLUMNS["sessions"] = frozenset({"cipher_key", "iv", "auth_key", "cbc_iv"})

_SQLITE_MAGIC = b"SQLite format 3\x00"


def to_db(value: int) -> int:
    """A u64 as SQLite's signed 64-bit integer (two's complement)."""
    return value - (1 << 64) if value >= (1 << 63) else value


def from_db(value: int) -> int:
    return value + (1 << 64) if value < 0 else value


def default_path(environ: dict[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    if env.get("KTLS_STATE"):
        return env["KTLS_STATE"]
    base = env.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "ktls", "kernel.db")


def _check_existing(path: str) -> os.stat_result:
    """Refuse, before SQLite touches it, a file that cannot be our state; its stat."""
    try:
        st = os.stat(path)
    except PermissionError as exc:
        raise StateError(path, f"cannot read state file: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise StateError(path, "not a regular file")
    if st.st_mode & 0o077:
        raise StateError(
            path,
            f"permissions {stat.S_IMODE(st.st_mode):04o} let others read or write the state "
            "(it holds session keys); chmod 600 it",
        )
    if not st.st_mode & stat.S_IWUSR or not os.access(path, os.W_OK):
        # Checked by mode too: root may write a 0400 file, and SQLite would let it.
        raise StateError(
            path, f"state file is read-only (mode {stat.S_IMODE(st.st_mode):04o}); chmod 600 it"
        )
    directory = os.path.dirname(path)
    dmode = stat.S_IMODE(os.stat(directory).st_mode)
    if not dmode & stat.S_IWUSR or not os.access(directory, os.W_OK | os.X_OK):
        # SQLite writes the -wal and -shm files beside the state, even to read it.
        # Checked by mode too: root may write there, and nothing else would stop it.
        raise StateError(
            path,
            f"its directory is read-only (mode {dmode:04o}); SQLite keeps the -wal and -shm"
            " files there",
            f"chmod 700 {directory}",
        )
    if st.st_size == 0:
        raise StateError(path, "state file is empty (zero length)")
    if path in _OPEN_PATHS:
        # close() of any descriptor on the file drops every POSIX lock this process
        # holds on it, SQLite's WAL locks included; this process checked it already.
        return st
    try:
        with open(path, "rb") as fh:
            head = fh.read(100)
    except OSError as exc:
        raise StateError(path, f"cannot read state file: {exc.strerror}") from None
    if not head.startswith(_SQLITE_MAGIC):
        raise StateError(path, "not a ktls state file (not an SQLite database)")
    if len(head) < 100:
        raise StateError(path, "state file is truncated")
    app_id = int.from_bytes(head[68:72], "big")
    if app_id != APPLICATION_ID:
        raise StateError(path, "not a ktls state file (another application's SQLite database)")
    version = int.from_bytes(head[60:64], "big")
    if version > SCHEMA_VERSION:
        raise StateError(
            path, f"state schema {version} is newer than this ktls understands ({SCHEMA_VERSION})"
        )
    return st


# State files this process has open through SQLite, with how many connections
# (see _check_existing).
_OPEN_PATHS: collections.Counter[str] = collections.Counter()
_OPEN_PATHS_LOCK = threading.Lock()  # serve's threads open and close their own Stores


_UNSET = (-1, -1)  # a Store made without open(): its file is taken at the first transaction


class Store:
    """An open state database. `created` is True when open() had to create it."""

    def __init__(
        self, path: str, conn: sqlite3.Connection, created: bool, ident: tuple[int, int] = _UNSET
    ) -> None:
        self.path = path
        self.conn = conn
        self.created = created
        # (st_dev, st_ino) of the file opened, and the generation the caller's first
        # transaction saw (see _check_same_state).
        self._ident = ident
        self._generation: int | None = None
        with _OPEN_PATHS_LOCK:
            _OPEN_PATHS[path] += 1

    @classmethod
    def open(cls, path: str, *, create: bool = True, schema: int | None = None) -> Store:
        """Open the state at `path`, creating it when missing (and `create`).

        `schema` stops the migrations at that version (state import of an older
        export migrates the rest itself); None means the newest.
        """
        path = os.path.abspath(path)
        created = False
        if not os.path.lexists(path):
            if not create:
                raise StateError(path, "no state file")
            created = _create(path, schema)
        st = _check_existing(path)
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise _state_error(path, exc) from None
        store = cls(path, conn, created, (st.st_dev, st.st_ino))
        try:
            store._verify()
            store.migrate(schema)
            store._generation = None  # the caller's first transaction sets it
        except sqlite3.DatabaseError as exc:
            store.close()
            raise _state_error(path, exc) from None
        except BaseException:
            store.close()
            raise
        return store

    def _verify(self) -> None:
        """The header checks again, as SQLite sees the database (the WAL may hold a
        newer page 1 than the file on disk)."""
        app_id = self.conn.execute("PRAGMA application_id").fetchone()[0]
        if app_id != APPLICATION_ID:
            raise StateError(
                self.path, "not a ktls state file (another application's SQLite database)"
            )
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StateError(
                self.path,
                f"state schema {version} is newer than this ktls understands ({SCHEMA_VERSION})",
            )

    @property
    def schema(self) -> int:
        return int(self.conn.execute("PRAGMA user_version").fetchone()[0])

    def migrate(self, to: int | None = None) -> None:
        """Run the migrations from the stored schema version up to `to` (default: newest)."""
        target = SCHEMA_VERSION if to is None else to
        if self.schema >= target:
            return
        with self.write() as conn:
            # Re-read under the write lock: a concurrent process may have migrated already.
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version >= target:
                return
            if version == 0:
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            for step in MIGRATIONS[version:target]:
                for statement in step:
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {target}")
            self._generation = None  # our own schema change: not a replacement

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: applies whole or not at all."""
        self._begin("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException as exc:
            self._rollback()
            if _is_storage_error(exc):
                raise _state_error(self.path, exc) from None  # type: ignore[arg-type]
            raise
        try:
            self.conn.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            self._rollback()
            raise _state_error(self.path, exc) from None

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A consistent read-only snapshot."""
        self._begin("BEGIN")
        try:
            yield self.conn
        except sqlite3.DatabaseError as exc:
            if _is_storage_error(exc):
                raise _state_error(self.path, exc) from None
            raise
        finally:
            self._rollback()

    def _rollback(self) -> None:
        # No transaction may be left (SQLite rolled back itself), or the file is gone.
        with suppress(sqlite3.Error):
            self.conn.execute("ROLLBACK")

    def _begin(self, statement: str) -> None:
        # busy_timeout covers lock waits; this loop covers the rare SQLITE_BUSY that
        # WAL returns at once (e.g. while another process checkpoints).
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        while True:
            begun = False
            try:
                self.conn.execute(statement)
                begun = True
                # The generation read starts the snapshot of a deferred BEGIN, so the
                # checks below see the state this transaction works on.
                generation = int(self.conn.execute("PRAGMA schema_version").fetchone()[0])
                break
            except sqlite3.DatabaseError as exc:
                if begun:
                    self._rollback()
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise _state_error(self.path, exc) from None
                if time.monotonic() > deadline:
                    raise StateError(self.path, BUSY, BUSY_HINT) from None
                time.sleep(0.005)
        try:
            self._check_same_state(generation)
        except BaseException:
            self._rollback()
            raise

    def _check_same_state(self, generation: int) -> None:
        """Refuse to go on with a state that is not the one this Store worked on.

        The path no longer names the file SQLite has open (state reset, a file moved
        over it): everything written would go into a file nobody will read. Or the
        state was replaced in place since the caller's first transaction: what the
        caller read then (a session, a connection id, the profile) belongs to
        another kernel. One stat() and one PRAGMA, no table read.
        """
        try:
            st = os.stat(self.path)
            ident = (st.st_dev, st.st_ino)
        except (FileNotFoundError, NotADirectoryError):
            raise StateError(self.path, MOVED, RERUN_HINT) from None
        except OSError as exc:
            raise StateError(self.path, f"cannot read state file: {exc.strerror}") from None
        if self._ident == _UNSET:
            self._ident = ident
        elif ident != self._ident:
            raise StateError(self.path, MOVED, RERUN_HINT)
        if self._generation is None:
            self._generation = generation
        elif generation != self._generation:
            raise StateError(self.path, REPLACED, RERUN_HINT)

    def replace_with(self, source: str) -> None:
        """Make this state a copy of the database at `source`, in one write transaction.

        The transaction waits for the command writing the state, and the next
        writers wait for it: each command sees the old kernel or the new one, and no
        file is renamed under a process that has it open (see the module docstring).
        """
        # Zero the old state's freed pages: its session keys must not linger in the file.
        self.conn.execute("PRAGMA secure_delete = ON")
        self.conn.execute("ATTACH DATABASE ? AS new", (source,))
        try:
            with self.write() as conn:
                _copy_attached(conn)
                self._generation = None  # our own replacement
        finally:
            with suppress(sqlite3.Error):
                self.conn.execute("DETACH DATABASE new")

    def close(self) -> None:
        self.conn.close()
        with _OPEN_PATHS_LOCK:
            _OPEN_PATHS[self.path] -= 1
            if _OPEN_PATHS[self.path] <= 0:
                del _OPEN_PATHS[self.path]


def _copy_attached(conn: sqlite3.Connection) -> None:
    """Inside a write transaction: make `main` what the attached database `new` is.

    Every table is dropped and created again from `new`'s schema, so the schema
    cookie (the generation other Stores check) moves.
    """
    internal = "name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"
    old = conn.execute(
        f"SELECT type, name FROM main.sqlite_master WHERE type IN ('table', 'view') AND {internal}"
    ).fetchall()
    for kind, name in old:
        conn.execute(f'DROP {kind.upper()} main."{name}"')
    # Tables (with their rows) before the indexes on them.
    objects = conn.execute(
        f"SELECT type, name, sql FROM new.sqlite_master WHERE sql IS NOT NULL AND {internal}"
        " ORDER BY type != 'table', rowid"
    ).fetchall()
    for kind, name, sql in objects:
        conn.execute(sql)  # unqualified: created in main
        if kind == "table":
            conn.execute(f'INSERT INTO main."{name}" SELECT * FROM new."{name}"')
    tables = {r[0] for r in conn.execute("SELECT name FROM new.sqlite_master")}
    if "sqlite_sequence" in tables:  # AUTOINCREMENT's high-water marks, as they were
        conn.execute("DELETE FROM main.sqlite_sequence")
        conn.execute("INSERT INTO main.sqlite_sequence SELECT * FROM new.sqlite_sequence")
    for pragma in ("application_id", "user_version"):
        value = int(conn.execute(f"PRAGMA new.{pragma}").fetchone()[0])
        conn.execute(f"PRAGMA main.{pragma} = {value}")


def install(source: str, path: str) -> None:
    """Make the closed, complete database `source` the state at `path`, atomically.

    No state yet: `source` is linked into place. A state that opens is replaced in
    place (Store.replace_with), safe against every process that has it open. A state
    that this ktls cannot open (damaged, not ours, newer) is not in use by it:
    `source` is renamed over it, after its -wal and -shm, which SQLite would
    otherwise replay into the new file (nothing in a WAL names its database).
    """
    path = os.path.abspath(path)
    for _attempt in range(10):
        try:
            os.link(source, path)
            return
        except FileExistsError:
            pass
        except OSError:
            if not os.path.lexists(path):  # no hard links here
                _rename_over(source, path)
                return
        try:
            store = Store.open(path, create=False, schema=0)
        except StateError as exc:
            if exc.problem == "no state file":  # reset meanwhile: link again
                continue
            if not _unusable(exc):
                raise
            _rename_over(source, path)
            return
        try:
            store.replace_with(source)
            return
        except StateError as exc:
            if exc.problem == MOVED:  # another file was put there meanwhile: replace that
                continue
            # Only a state damaged beyond its header (a truncated table) is renamed
            # over; any other failure must not fall back to the unsafe rename.
            if not _unusable(exc) or not _damaged(store):
                raise
        finally:
            store.close()
        _rename_over(source, path)
        return
    raise StateError(path, "cannot replace state file: it keeps disappearing")


def _unusable(exc: StateError) -> bool:
    """A problem with the old file itself, not one that passes (busy, full, I/O)."""
    transient = exc.problem.startswith(("no space", "input/output")) or exc.problem == REPLACED
    return exc.hint != BUSY_HINT and not transient


def _damaged(store: Store) -> bool:
    try:
        return bool(store.conn.execute("PRAGMA quick_check").fetchall() != [("ok",)])
    except sqlite3.DatabaseError:
        return True


def _rename_over(source: str, path: str) -> None:
    try:
        for suffix in ("-wal", "-shm", "-journal"):
            if os.path.lexists(path + suffix):
                os.unlink(path + suffix)
        os.replace(source, path)
    except OSError as exc:
        raise StateError(path, f"cannot replace state file: {exc.strerror}") from None


def _create(path: str, schema: int | None) -> bool:
    """Build a new state beside `path` and link it into place when it is complete.

    A concurrent command thus sees either no file or a whole database, never the
    empty file of a half-done create (which would read as a corrupt state).
    Returns False when another process created `path` first (use theirs).
    """
    import secrets

    _make_private_dir(os.path.dirname(path))
    tmp = f"{path}.new-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        conn = sqlite3.connect(tmp, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        try:
            # WAL lets readers go on while one command writes; the mode persists in the file.
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            store = Store(tmp, conn, True)
            try:
                store.migrate(schema)
            finally:
                store.close()  # the last connection checkpoints the WAL into the file
        except BaseException:
            conn.close()  # a no-op when the store closed it
            raise
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError:
            # No hard links on this file system: a plain rename, which can lose the
            # (harmless) race against another creator.
            if os.path.lexists(path):
                return False
            os.rename(tmp, path)
        return True
    except OSError as exc:
        raise StateError(path, f"cannot create state file: {exc.strerror}") from None
    except sqlite3.DatabaseError as exc:
        raise _state_error(path, exc) from None
    except StateError as exc:  # about the temporary file: name the state the user asked for
        raise StateError(path, exc.problem, exc.hint) from None
    finally:
        remove_state(tmp)


def _is_storage_error(exc: BaseException) -> bool:
    """An SQLite error that says something about the file (not a bug in a query)."""
    return isinstance(exc, sqlite3.DatabaseError) and not isinstance(
        exc, sqlite3.IntegrityError | sqlite3.ProgrammingError | sqlite3.InterfaceError
    )


def _make_private_dir(directory: str) -> None:
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise StateError(
            directory,
            f"cannot create state directory: {exc.strerror}",
            "choose another path (--state PATH or $KTLS_STATE)",
        ) from None


def _state_error(path: str, exc: sqlite3.Error) -> StateError:
    text = str(exc)
    if "readonly" in text or "read-only" in text:
        return StateError(path, "state file is read-only")
    if "disk is full" in text or "full" in text:
        # The transaction rolled back: the state is as it was, nothing to reset.
        return StateError(path, "no space left on device", "free some space and try again")
    if "disk I/O error" in text:
        return StateError(path, "input/output error on the state file")
    if "unable to open" in text:
        return StateError(path, "cannot open state file")
    if "locked" in text or "busy" in text:
        return StateError(path, BUSY, BUSY_HINT)
    return StateError(path, f"state file is corrupt ({text})")


def remove_state(path: str) -> None:
    """Delete the database and its WAL companions (state reset).

    StateError when a file cannot be removed (its directory is read-only)."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        try:
            os.unlink(path + suffix)
        except (FileNotFoundError, NotADirectoryError):
            pass  # nothing there
        except OSError as exc:
            raise StateError(
                path, f"cannot remove {path + suffix}: {exc.strerror}",
                f"make {os.path.dirname(path)} writable (chmod 700) and try again",
            ) from None
