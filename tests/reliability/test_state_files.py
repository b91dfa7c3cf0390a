"""State files that cannot be used: a clear error naming the file, nothing overwritten,
and a way back.

tests/cli/test_state.py already proves, for truncated, zero-length, random-byte,
foreign-SQLite, newer-schema, world-readable and read-only files, that four commands
fail with one line naming the file and leave it byte-for-byte alone. This module
reuses those cases and adds:

- `ktls state reset` recovers from each of them (the next command boots afresh);
- `state init --force` and `state import` replace each of them too (renamed over:
  no ktls can be using such a file), leaving nothing else beside the new state;
- a read-only state directory (SQLite needs it for -wal/-shm even to read): refused
  by its mode, so root is refused too; nothing is created or changed in it; after
  the chmod the message names, the same state works again;
- a missing directory is created 0700 on first use; one that cannot be created (a
  file is in the way) is a clear error and nothing is made; a reset that cannot
  remove the file says so in one line;
- a full disk, simulated by fault injection: every SQLite connection the store
  opens gets `PRAGMA max_page_count` = its current page count, so any transaction
  that must grow the database fails with SQLITE_FULL exactly as ENOSPC makes it
  fail (a tmpfs of a few KiB cannot be mounted here). The command fails with one
  line, the state is unchanged and still usable, the error names the state the
  user asked for (not a temporary file), and once space is back the same command
  works; `state reset` works even while the disk is full. A replacement
  (`state import`) that runs out of space on the state is rolled back: the old
  state stays, in the same file, and is never renamed over instead.
"""

from __future__ import annotations

import importlib.util
import os
import sqlite3
import stat
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

_spec = importlib.util.spec_from_file_location(
    "ktls_test_state", Path(__file__).resolve().parents[1] / "cli" / "test_state.py"
)
assert _spec is not None and _spec.loader is not None
test_state = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("ktls_test_state", test_state)
_spec.loader.exec_module(test_state)
CASES: dict[str, Callable[[str, bytes], str]] = test_state.CASES


def _listing(directory: str) -> dict[str, bytes]:
    return {n: Path(directory, n).read_bytes() for n in sorted(os.listdir(directory))}


def _fresh_and_private(ktls: Any, state: str) -> None:
    r = ktls("sysctl", "-n", "kern.ipc.tls.enable")
    assert (r.exit, r.stdout, r.stderr) == (0, "0\n", "")
    assert stat.S_IMODE(os.stat(state).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(state)).st_mode) == 0o700


@pytest.mark.parametrize("case", sorted(CASES))
def test_state_reset_recovers(case: str, state: str, init_state: Any, ktls: Any) -> None:
    init_state(state)
    problem = CASES[case](state, Path(state).read_bytes())
    failed = ktls("sysctl", "kern.ipc.tls.enable=1", env={"KTLS_DEBUG": None})
    assert (failed.exit, failed.stderr) == (1, f"ktls: {state}: {problem}{test_state.RESET}")
    reset = ktls("state", "reset")
    assert (reset.exit, reset.stdout, reset.stderr) == (0, f"{state}: removed\n", "")
    _fresh_and_private(ktls, state)


@pytest.mark.parametrize("how", ["init", "import"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_state_init_force_and_import_recover(
    case: str, how: str, state: str, init_state: Any, ktls: Any, tmp_path: Path
) -> None:
    init_state(state, "current")
    export = tmp_path / "export.yaml"
    export.write_text(ktls("state", "export").stdout)
    CASES[case](state, Path(state).read_bytes())
    replace = ["init", "--force"] if how == "init" else ["import", str(export)]
    r = ktls("state", *replace)
    assert (r.exit, r.stderr) == (0, ""), r
    profile = "seed" if how == "init" else "current"
    assert f"profile: {profile}\n" in ktls("state", "show").stdout
    assert ktls("sysctl", "kern.ipc.tls.enable=1").exit == 0
    assert stat.S_IMODE(os.stat(state).st_mode) == 0o600
    assert os.listdir(os.path.dirname(state)) == ["kernel.db"]


@pytest.fixture
def read_only_dir(state: str, init_state: Any) -> Iterator[str]:
    init_state(state)
    directory = os.path.dirname(state)
    os.chmod(directory, 0o500)
    try:
        yield directory
    finally:
        os.chmod(directory, 0o700)


@pytest.mark.parametrize(
    "command", [["sysctl", "kern.ipc.tls.enable"], ["sysctl", "kern.ipc.tls.enable=1"],
                ["state", "export"], ["connect", "192.0.2.10:443", "198.51.100.7:1"]],
)  # fmt: skip
def test_read_only_directory(command: list[str], read_only_dir: str, state: str, ktls: Any) -> None:
    before = _listing(read_only_dir)
    r = ktls(*command, env={"KTLS_DEBUG": None})
    assert (r.exit, r.stdout) == (1, "")
    assert r.stderr == (
        f"ktls: {state}: its directory is read-only (mode 0500); SQLite keeps the -wal and"
        f" -shm files there; chmod 700 {read_only_dir}\n"
    )
    assert _listing(read_only_dir) == before  # root too: nothing created, nothing changed
    os.chmod(read_only_dir, 0o700)
    assert ktls(*command).exit == 0


def test_reset_that_cannot_remove_says_so(
    state: str, init_state: Any, ktls: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read-only directory stops unlink(2) for anyone but root: fault-injected here."""
    init_state(state)

    def refuse(path: Any, *args: Any, **kwargs: Any) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(os, "unlink", refuse)
    r = ktls("state", "reset", env={"KTLS_DEBUG": None})
    directory = os.path.dirname(state)
    assert (r.exit, r.stdout) == (1, "")
    assert r.stderr == (
        f"ktls: {state}: cannot remove {state}: Permission denied; make {directory} writable"
        " (chmod 700) and try again\n"
    )
    monkeypatch.undo()
    assert ktls("state", "reset").exit == 0
    _fresh_and_private(ktls, state)


def test_missing_directory_is_made_private(tmp_path: Path, run_ktls: Any) -> None:
    state = str(tmp_path / "a" / "b" / "c" / "kernel.db")
    r = run_ktls("sysctl", "-n", "kern.ipc.tls.enable", state=state)
    assert (r.exit, r.stdout, r.stderr) == (0, "0\n", "")
    assert stat.S_IMODE(os.stat(os.path.dirname(state)).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(state).st_mode) == 0o600
    assert os.listdir(os.path.dirname(state)) == ["kernel.db"]


def test_directory_that_cannot_be_made(tmp_path: Path, run_ktls: Any) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory\n")
    state = str(blocker / "ktls" / "kernel.db")
    r = run_ktls("sysctl", "kern.ipc.tls.enable=1", state=state, env={"KTLS_DEBUG": None})
    assert (r.exit, r.stdout) == (1, "")
    assert r.stderr == (
        f"ktls: {blocker / 'ktls'}: cannot create state directory: Not a directory; choose"
        " another path (--state PATH or $KTLS_STATE)\n"
    )
    assert sorted(os.listdir(tmp_path)) == ["file"] and blocker.read_text() == "not a directory\n"
    reset = run_ktls("state", "reset", state=state)  # nothing there: nothing to do
    assert reset.exit == 0


@pytest.fixture
def full_disk(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[[bool], None]:
    """Fault injection: the file system of tmp_path is full while switched on."""
    real = sqlite3.connect
    full = [False]

    def connect(database: Any, *args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = real(database, *args, **kwargs)
        if full[0] and str(database).startswith(str(tmp_path)):
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            conn.execute(f"PRAGMA max_page_count = {max(1, pages)}")
        return conn

    monkeypatch.setattr(sqlite3, "connect", connect)

    def switch(on: bool) -> None:
        full[0] = on

    return switch


FULL = "no space left on device; free some space and try again\n"


def test_full_disk_changes_nothing(
    state: str, init_state: Any, ktls: Any, full_disk: Callable[[bool], None]
) -> None:
    init_state(state)
    grow = ["connect", "192.0.2.10:443", "198.51.100.7:1000", "--count", "3000"]
    export = ktls("state", "export", "--include-keys").stdout
    before = _listing(os.path.dirname(state))
    full_disk(True)
    r = ktls(*grow, env={"KTLS_DEBUG": None})
    assert (r.exit, r.stdout, r.stderr) == (1, "", f"ktls: {state}: {FULL}")
    assert _listing(os.path.dirname(state)) == before
    assert ktls("state", "export", "--include-keys").stdout == export
    # What fits still works while the disk is full.
    assert ktls("sysctl", "kern.ipc.tls.enable=1").exit == 0
    full_disk(False)
    r = ktls(*grow)
    assert r.exit == 0, r
    assert "connections: 3000" in ktls("state", "show").stdout


def test_full_disk_on_first_use_names_the_state(
    state: str, ktls: Any, full_disk: Callable[[bool], None]
) -> None:
    full_disk(True)
    r = ktls("sysctl", "kern.ipc.tls.enable", env={"KTLS_DEBUG": None})
    assert (r.exit, r.stdout, r.stderr) == (1, "", f"ktls: {state}: {FULL}")
    assert os.listdir(os.path.dirname(state)) == []  # no half-made state, no temporary file
    assert ktls("state", "reset").exit == 0  # works on a full disk
    full_disk(False)
    _fresh_and_private(ktls, state)


def test_full_disk_during_a_replacement_keeps_the_old_state(
    state: str, init_state: Any, ktls: Any, run_ktls: Any, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Only the state's own file system is full: the new state is built, the copy over
    the old one fails and rolls back."""
    other = str(tmp_path / "other" / "kernel.db")
    assert run_ktls("connect", "192.0.2.10:443", "198.51.100.7:1000", "--count", "3000",
                    state=other).exit == 0  # fmt: skip
    big = tmp_path / "big.yaml"
    big.write_text(run_ktls("state", "export", state=other).stdout)
    init_state(state)
    export = ktls("state", "export").stdout
    inode = os.stat(state).st_ino
    real = sqlite3.connect

    def connect(database: Any, *args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = real(database, *args, **kwargs)
        if str(database) == state:
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            conn.execute(f"PRAGMA max_page_count = {max(1, pages)}")
        return conn

    monkeypatch.setattr(sqlite3, "connect", connect)
    r = ktls("state", "import", str(big), env={"KTLS_DEBUG": None})
    assert (r.exit, r.stdout, r.stderr) == (1, "", f"ktls: {state}: {FULL}")
    assert os.stat(state).st_ino == inode  # not renamed over as a fallback
    assert ktls("state", "export").stdout == export
    assert os.listdir(os.path.dirname(state)) == ["kernel.db"]
    monkeypatch.undo()
    assert ktls("state", "import", str(big)).exit == 0
    assert "connections: 3000" in ktls("state", "show").stdout
