"""ktls_core.store: creating, opening and migrating the state database."""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
from pathlib import Path
from typing import Any

import pytest

from ktls_core import store
from ktls_core.errors import StateError
from ktls_core.kernel import Kernel
from ktls_core.store import SCHEMA_VERSION, Store, from_db, to_db


def _tables(path: str) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        conn.close()


def test_new_state_is_private_and_complete(tmp_path: Path) -> None:
    path = str(tmp_path / "a" / "b" / "kernel.db")
    s = Store.open(path)
    try:
        assert s.created and s.schema == SCHEMA_VERSION
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
        assert s.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert s.conn.execute("PRAGMA application_id").fetchone()[0] == store.APPLICATION_ID
    finally:
        s.close()
    assert set(store.EXPORT_TABLES) <= _tables(path)
    assert os.listdir(os.path.dirname(path)) == ["kernel.db"]  # no temporary files left


def test_concurrent_creation_never_sees_a_half_made_file(tmp_path: Path) -> None:
    """Many openers of a missing state: one creates it, the others open that one.

    A create that made an empty file first let a racing opener read it as a
    zero-length (corrupt) state.
    """
    path = str(tmp_path / "race" / "kernel.db")
    barrier = threading.Barrier(8)
    results: list[bool | str] = []

    def open_it() -> None:
        barrier.wait()
        try:
            s = Store.open(path)
            results.append(s.created)
            s.close()
        except StateError as exc:
            results.append(str(exc))

    threads = [threading.Thread(target=open_it) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results, key=str) == [False] * 7 + [True]


def test_open_without_create(tmp_path: Path) -> None:
    path = str(tmp_path / "none.db")
    with pytest.raises(StateError, match="no state file"):
        Store.open(path, create=False)
    assert not os.path.exists(path)


def test_migrations_stop_where_asked(tmp_path: Path) -> None:
    path = str(tmp_path / "kernel.db")
    s = Store.open(path, schema=1)
    try:
        assert s.schema == 1
        assert "sysctl" in _tables(path) and "conns" not in _tables(path)
        s.migrate()
        assert s.schema == SCHEMA_VERSION
        assert {"conns", "sessions"} <= _tables(path)
        s.migrate(to=1)  # never downgrades
        assert s.schema == SCHEMA_VERSION
    finally:
        s.close()


def test_u64_round_trip() -> None:
    for value in (0, 1, 2**63 - 1, 2**63, 2**64 - 1):
        assert -(2**63) <= to_db(value) < 2**63
        assert from_db(to_db(value)) == value


def test_negative_integer_sysctl_reads_back(tmp_path: Path) -> None:
    kernel = Kernel.open(str(tmp_path / "kernel.db"))
    try:
        with kernel.transaction() as tx:
            tx.set_sysctl("kern.ipc.mb_use_ext_pgs", -5)
        with kernel.snapshot() as tx:
            assert tx.sysctl("kern.ipc.mb_use_ext_pgs") == -5
    finally:
        kernel.store.close()


def test_storage_error_inside_a_transaction_names_the_file(tmp_path: Path) -> None:
    path = str(tmp_path / "kernel.db")
    Kernel.open(path).store.close()
    # Damaged before this Store's first transaction: a schema change after it would
    # read as a replaced state (test_replaced_in_place_mid_command).
    damage = sqlite3.connect(path)
    damage.execute("DROP TABLE dmesg")
    damage.close()
    kernel = Kernel(Store.open(path))
    try:
        with pytest.raises(StateError) as info, kernel.snapshot() as tx:
            tx.dmesg()
        assert info.value.path == path
        assert info.value.problem == "state file is corrupt (no such table: dmesg)"
        # A bug in a query (a constraint) is not dressed up as a damaged file.
        with pytest.raises(sqlite3.IntegrityError), kernel.transaction() as tx:
            tx.conn.execute("INSERT INTO meta (key, value) VALUES ('x', NULL)")
    finally:
        kernel.store.close()


@pytest.mark.parametrize("profile", ["seed", "current"])
def test_boot_threads(profile: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """stats.threads is ncpu at boot in 2019; modern kernels start the pool lazily."""
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    kernel = Kernel.open(str(tmp_path / "kernel.db"), boot=False)
    try:
        kernel.boot(profile)
        with kernel.snapshot() as tx:
            threads = tx.sysctl("kern.ipc.tls.stats.threads")
            log = tx.dmesg()
    finally:
        kernel.store.close()
    if profile == "seed":
        assert threads == 6 and "KTLS: Initialized 6 threads" in log
    else:
        assert threads == 0 and not any("Initialized" in line for line in log)


def test_second_open_in_one_process_keeps_the_first_connections_locks(tmp_path, monkeypatch):
    """close() of any descriptor drops this process's POSIX locks on the file, SQLite's
    WAL locks included; a second Store.open must not read the header with open()."""
    import builtins
    import subprocess
    import sys

    from ktls_core import store as store_mod
    from ktls_core.kernel import Kernel

    path = str(tmp_path / "kernel.db")
    first = Kernel.open(path)
    assert store_mod._OPEN_PATHS[path] == 1
    real_open = builtins.open

    def guarded_open(file, *args, **kwargs):  # type: ignore[no-untyped-def]
        assert os.path.abspath(str(file)) != path, "raw open() of a state this process holds"
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded_open)
    second = Kernel.open(path)
    second.store.close()
    monkeypatch.setattr(builtins, "open", real_open)
    assert store_mod._OPEN_PATHS[path] == 1
    other = subprocess.run(
        [sys.executable, "-m", "ktls_cli.main", "--state", path, "sysctl",
         "kern.ipc.tls.enable=1"],
        capture_output=True, text=True, check=False,
    )
    assert other.returncode == 0, other.stderr
    with first.snapshot() as tx:
        assert tx.sysctl("kern.ipc.tls.enable") == 1
    first.store.close()
    assert path not in store_mod._OPEN_PATHS


# -- replacing a state in use (store.install) ----------------------------------------------


def _source(tmp_path: Path, marker: str) -> str:
    """A closed, booted database with meta 'marker', as state init builds one."""
    path = str(tmp_path / f"source-{marker}.db")
    kernel = Kernel.open(path)
    with kernel.transaction() as tx:
        tx.set_meta("marker", marker)
    kernel.store.close()
    return path


def _marker(path: str) -> str:
    kernel = Kernel(Store.open(path))
    try:
        with kernel.snapshot() as tx:
            return str(tx.meta("marker"))
    finally:
        kernel.store.close()


def test_replacement_is_in_place_and_refused_to_a_store_that_used_the_old(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "kernel.db")
    busy = Kernel.open(path)
    with busy.transaction() as tx:
        tx.set_meta("marker", "old")
    idle = Store.open(path)  # opened, no transaction yet
    inode = os.stat(path).st_ino
    store.install(_source(tmp_path, "new"), path)
    # No rename: every process keeps the file, -wal and -shm that belong together.
    assert os.stat(path).st_ino == inode
    # What `busy` read belongs to the old kernel: its next transaction is refused.
    with pytest.raises(StateError) as info, busy.transaction() as tx:
        tx.set_meta("marker", "mixed")
    assert str(info.value) == f"{path}: {store.REPLACED}; {store.RERUN_HINT}"
    with pytest.raises(StateError, match="was replaced"), busy.snapshot():
        pass
    busy.store.close()
    # `idle` had read nothing: it simply works on the new state.
    with Kernel(idle).transaction() as tx:
        assert tx.meta("marker") == "new"
    idle.close()
    assert _marker(path) == "new"
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    db.close()
    assert sorted(os.listdir(tmp_path)) == ["kernel.db", "source-new.db"]


def test_replacement_waits_for_a_running_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The write lock: a transaction that began before the replacement commits into the
    state that the replacement then replaces (so it is in what that one saw), never
    into a file nobody reads."""
    path = str(tmp_path / "kernel.db")
    writer = Kernel.open(path)
    source = _source(tmp_path, "new")
    seen: list[object] = []
    real = store._copy_attached

    def recording(conn: sqlite3.Connection) -> None:
        seen.append(conn.execute("SELECT value FROM main.meta WHERE key = 'w'").fetchone())
        real(conn)

    monkeypatch.setattr(store, "_copy_attached", recording)
    swapper = threading.Thread(target=store.install, args=(source, path))
    with writer.transaction() as tx:
        tx.set_meta("w", "1")
        swapper.start()
        swapper.join(0.3)
        assert swapper.is_alive() and seen == []  # waiting for our lock
    swapper.join()
    assert seen == [("1",)]
    assert _marker(path) == "new"
    writer.store.close()


def test_a_file_removed_or_moved_under_a_store_is_refused(tmp_path: Path) -> None:
    path = str(tmp_path / "kernel.db")
    kernel = Kernel.open(path)
    with kernel.transaction() as tx:
        tx.set_meta("marker", "first")
    store.remove_state(path)  # state reset
    with pytest.raises(StateError) as info, kernel.transaction() as tx:
        tx.set_meta("marker", "into the void")
    assert str(info.value) == f"{path}: {store.MOVED}; {store.RERUN_HINT}"
    kernel.store.close()
    kernel = Kernel.open(path)
    with kernel.snapshot() as tx:
        assert tx.meta("marker") is None
    # Renamed over it, as install does to a state that cannot be opened (after the
    # -wal and -shm, which would otherwise pair the new file with the old WAL).
    store._rename_over(_source(tmp_path, "moved"), path)
    with pytest.raises(StateError, match="replaced or removed"), kernel.snapshot():
        pass
    kernel.store.close()
    assert _marker(path) == "moved"


def test_install_links_a_missing_state(tmp_path: Path) -> None:
    path = str(tmp_path / "kernel.db")
    source = _source(tmp_path, "new")
    store.install(source, path)
    assert os.path.samefile(source, path) and _marker(path) == "new"


def test_replacement_leaves_no_old_secret_in_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The old state's freed pages are zeroed (as the unlinked old file was gone), also
    with an SQLite built without SQLITE_SECURE_DELETE (simulated: off by default)."""
    real = sqlite3.connect

    def insecure(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = real(*args, **kwargs)
        conn.execute("PRAGMA secure_delete = OFF")
        return conn

    monkeypatch.setattr(sqlite3, "connect", insecure)
    path = str(tmp_path / "kernel.db")
    secret = os.urandom(32).hex()
    kernel = Kernel.open(path)
    with kernel.transaction() as tx:  # pages of them, more than the new state reuses
        for n in range(300):
            tx.log(f"{n:04d} {secret} " + "x" * 500)
    kernel.store.close()
    assert secret.encode() in Path(path).read_bytes()
    store.install(_source(tmp_path, "new"), path)
    assert not os.path.exists(path + "-wal")  # the last close checkpointed
    assert secret.encode() not in Path(path).read_bytes()
    assert _marker(path) == "new"
