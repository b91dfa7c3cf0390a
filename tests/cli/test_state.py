"""`ktls state`: init, show, path, reset, export/import, and every unusable-state case."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ktls_core import store
from ktls_core.kernel import Kernel

RESET = "; run 'ktls state reset' to start over\n"


# -- unusable state files ----------------------------------------------------------------


def _good(state: str, init_state: Callable[..., Any]) -> bytes:
    init_state(state)
    return Path(state).read_bytes()


def _truncated_header(state: str, good: bytes) -> str:
    Path(state).write_bytes(good[:50])
    return "state file is truncated"


def _truncated_pages(state: str, good: bytes) -> str:
    Path(state).write_bytes(good[: 4096 + 1000])
    return "state file is corrupt (database disk image is malformed)"


def _zero_length(state: str, good: bytes) -> str:
    Path(state).write_bytes(b"")
    return "state file is empty (zero length)"


def _random_bytes(state: str, good: bytes) -> str:
    Path(state).write_bytes(bytes((i * 151 + 7) % 256 for i in range(8192)))
    return "not a ktls state file (not an SQLite database)"


def _foreign_sqlite(state: str, good: bytes) -> str:
    os.unlink(state)
    conn = sqlite3.connect(state)
    conn.execute("CREATE TABLE photos (id INTEGER PRIMARY KEY, path TEXT)")
    conn.commit()
    conn.close()
    os.chmod(state, 0o600)
    return "not a ktls state file (another application's SQLite database)"


def _newer_schema(state: str, good: bytes) -> str:
    conn = sqlite3.connect(state)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    return f"state schema 99 is newer than this ktls understands ({store.SCHEMA_VERSION})"


def _world_readable(state: str, good: bytes) -> str:
    os.chmod(state, 0o644)
    return (
        "permissions 0644 let others read or write the state (it holds session keys); "
        "chmod 600 it"
    )


def _read_only(state: str, good: bytes) -> str:
    os.chmod(state, 0o400)
    return "state file is read-only (mode 0400); chmod 600 it"


CASES: dict[str, Callable[[str, bytes], str]] = {
    "truncated-header": _truncated_header,
    "truncated-pages": _truncated_pages,
    "zero-length": _zero_length,
    "random-bytes": _random_bytes,
    "foreign-sqlite": _foreign_sqlite,
    "newer-schema": _newer_schema,
    "world-readable": _world_readable,
    "read-only": _read_only,
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize(
    "command",
    [
        ["sysctl", "kern.ipc.tls.enable"],
        ["sysctl", "kern.ipc.tls.enable=1"],
        ["state", "show"],
        ["state", "export"],
    ],
)
def test_unusable_state_is_one_line_and_untouched(
    case: str, command: list[str], state: str, init_state: Any, ktls: Any
) -> None:
    problem = CASES[case](state, _good(state, init_state))
    before = Path(state).read_bytes(), stat.S_IMODE(os.stat(state).st_mode)
    siblings = sorted(os.listdir(os.path.dirname(state)))
    result = ktls(*command, env={"KTLS_DEBUG": None})
    assert result.exit == 1
    assert result.stdout == ""
    assert result.stderr == f"ktls: {state}: {problem}{RESET}"
    assert (Path(state).read_bytes(), stat.S_IMODE(os.stat(state).st_mode)) == before
    assert sorted(os.listdir(os.path.dirname(state))) == siblings


def test_newer_schema_still_in_the_wal_is_caught(state: str, init_state: Any, ktls: Any) -> None:
    """The file's header may lag behind its WAL: SQLite's own view is checked too."""
    init_state(state)
    holder = sqlite3.connect(state, isolation_level=None)
    try:
        holder.execute("PRAGMA user_version = 7")  # lands in the WAL; holder keeps it there
        with open(state, "rb") as fh:
            assert int.from_bytes(fh.read(100)[60:64], "big") == store.SCHEMA_VERSION
        result = ktls("sysctl", "kern.ipc.tls.enable", env={"KTLS_DEBUG": None})
        assert result.stderr == (
            f"ktls: {state}: state schema 7 is newer than this ktls understands "
            f"({store.SCHEMA_VERSION}){RESET}"
        )
    finally:
        holder.close()


def test_state_init_force_replaces_an_unusable_state(
    state: str, init_state: Any, ktls: Any
) -> None:
    _zero_length(state, _good(state, init_state))
    result = ktls("state", "init", "--force", "--profile", "current")
    assert result.exit == 0
    assert ktls("sysctl", "-n", "kern.ipc.tls.ifnet_max_rexmit_pct").stdout == "2\n"


# -- init ----------------------------------------------------------------------------------


def test_init_refuses_to_replace_without_force(state: str, init_state: Any, ktls: Any) -> None:
    init_state(state, "seed")
    ktls("sysctl", "kern.ipc.tls.enable=1")
    result = ktls("state", "init", "--profile", "current")
    assert result.exit == 1
    assert result.stderr == (
        f"ktls: {state}: state already exists (use --force to replace it){RESET}"
    )
    assert ktls("sysctl", "-n", "kern.ipc.tls.enable").stdout == "1\n"


def test_init_force_replaces_a_state_in_use(state: str, init_state: Any, ktls: Any) -> None:
    init_state(state, "seed")
    # Another connection keeps the old WAL alive: it must not leak into the new state.
    holder = sqlite3.connect(state, isolation_level=None)
    holder.execute("UPDATE sysctl SET value = value")  # touch the WAL
    ktls("sysctl", "kern.ipc.tls.enable=1")
    try:
        result = ktls("state", "init", "--force", "--profile", "current")
        assert (result.exit, result.stdout) == (0, f"{state}: booted profile current\n")
    finally:
        holder.close()
    assert ktls("sysctl", "-n", "kern.ipc.tls.enable").stdout == "0\n"
    show = json.loads(ktls("--format", "json", "state", "show").stdout)["state"]
    assert show["profile"] == "current"
    assert stat.S_IMODE(os.stat(state).st_mode) == 0o600
    leftovers = [n for n in os.listdir(os.path.dirname(state)) if ".init-" in n or ".new-" in n]
    assert leftovers == []


@pytest.mark.parametrize("how", ["init", "import"])
def test_replacing_a_state_that_a_command_holds(
    how: str, state: str, init_state: Any, ktls: Any, tmp_path: Path
) -> None:
    """In place (the same file: its -wal and -shm stay its own), and a command that read
    the old kernel cannot write what it read into the new one: one line, no write."""
    init_state(state, "current", "--seed", "1")
    export = tmp_path / "export.yaml"
    export.write_text(ktls("state", "export").stdout)
    inode = os.stat(state).st_ino
    running = Kernel.open(state)
    with running.snapshot() as tx:
        assert tx.meta("seed") == "1"
    if how == "init":
        result = ktls("state", "init", "--force", "--seed", "2")
    else:
        ktls("sysctl", "kern.ipc.tls.enable=1")
        result = ktls("state", "import", str(export))
    assert (result.exit, result.stderr) == (0, "")
    assert os.stat(state).st_ino == inode
    with pytest.raises(store.StateError) as info, running.transaction() as tx:
        tx.set_meta("seed", "mixed")
    running.store.close()
    assert str(info.value) == (
        f"{state}: state was replaced (state init --force or state import) while this"
        " command ran; run the command again"
    )
    show = json.loads(ktls("--format", "json", "state", "show").stdout)["state"]
    assert (show["seed"], show["profile"]) == (("2", "seed") if how == "init" else ("1", "current"))
    assert ktls("sysctl", "-n", "kern.ipc.tls.enable").stdout == "0\n"


def test_init_tunables(state: str, ktls: Any) -> None:
    result = ktls(
        "state", "init", "--profile", "current",
        "--tunable", "kern.ipc.tls.bind_threads=0x2",
        "--tunable", "kern.ipc.tls.enable=2",
        "--tunable", 'kern.ipc.tls.maxlen="4096"',
    )  # fmt: skip
    assert result.exit == 0, result
    names = ["kern.ipc.tls.bind_threads", "kern.ipc.tls.enable", "kern.ipc.tls.maxlen"]
    out = ktls("sysctl", "-n", *names)
    assert out.stdout == "2\n1\n4096\n"
    # RDTUN stays read only once booted.
    assert ktls("sysctl", "kern.ipc.tls.bind_threads=1").exit == 1


@pytest.mark.parametrize(
    ("profile", "tunable", "message"),
    [
        ("seed", "kern.ipc.tls.enable=1",
         "kern.ipc.tls.enable: not a loader tunable in profile seed (RW); "
         "set it with 'ktls sysctl kern.ipc.tls.enable=1'"),
        ("seed", "kern.ipc.tls.stats.active=1",
         "kern.ipc.tls.stats.active: not a loader tunable in profile seed (RD); "
         "set it with 'ktls sysctl kern.ipc.tls.stats.active=1'"),
        ("seed", "kern.ipc.tls.nope=1", "kern.ipc.tls.nope: no such sysctl in profile seed"),
        ("seed", "kern.ipc.tls=1", "kern.ipc.tls: a node, not a tunable"),
        ("seed", "kern.ipc.tls.maxlen", "'kern.ipc.tls.maxlen': expected NAME=VALUE"),
        ("seed", "kern.ipc.tls.maxlen=big", "kern.ipc.tls.maxlen: invalid unsigned integer 'big'"),
        ("seed", "kern.ipc.tls.maxlen=", "kern.ipc.tls.maxlen: empty numeric value"),
        ("current", "kern.ipc.tls.allow_unload=1",
         "kern.ipc.tls.allow_unload: no such sysctl in profile current"),
    ],
)  # fmt: skip
def test_init_bad_tunable_is_a_usage_error(
    profile: str, tunable: str, message: str, state: str, ktls: Any
) -> None:
    result = ktls("state", "init", "--profile", profile, "--tunable", tunable)
    assert result.exit == 2
    assert result.stderr.rstrip().endswith(f"Invalid value for '--tunable': {message}")
    assert not os.path.exists(state)


# -- show, path, reset -----------------------------------------------------------------------


def test_show_path_reset(state: str, init_state: Any, ktls: Any) -> None:
    init_state(state, "current", "--seed", "7")
    assert ktls("state", "path").stdout == f"{state}\n"
    show = json.loads(ktls("--format", "json", "state", "show").stdout)["state"]
    assert show["path"] == state
    assert show["schema"] == store.SCHEMA_VERSION
    assert (show["profile"], show["seed"], show["modules"]) == ("current", "7", [])
    assert show["connections"] == 0 and show["sessions"] == 0
    assert show["interfaces"] == 6  # lo0 em0 cc0 cc1 mce0 lagg0
    text = ktls("state", "show").stdout
    assert f"path: {state}\n" in text and "profile: current\n" in text
    assert ktls("state", "reset").stdout == f"{state}: removed\n"
    assert not os.path.exists(state)


# -- export and import ----------------------------------------------------------------------


def test_export_import_round_trip(
    state: str, init_state: Any, ktls: Any, run_ktls: Any, tmp_path: Path
) -> None:
    init_state(state, "seed", "--seed", "3", "--tunable", "kern.ipc.tls.bind_threads=1")
    ktls("sysctl", "kern.ipc.tls.enable=1", "kern.ipc.tls.maxlen=9000")
    with Kernel.open(state).transaction() as tx:
        # A blob somewhere: exported as {hex: ...}
        tx.conn.execute("INSERT INTO meta (key, value) VALUES ('blob', X'00ff10')")
        tx.count("kern.ipc.tls.stats.enable_calls", 5)
    first = ktls("state", "export")
    assert first.exit == 0 and "{hex: 00ff10}" in first.stdout
    export = tmp_path / "state.yaml"
    export.write_text(first.stdout)

    other = str(tmp_path / "other" / "kernel.db")
    result = run_ktls("state", "import", str(export), state=other)
    assert (result.exit, result.stdout) == (0, f"{other}: imported {export}\n")
    assert run_ktls("state", "export", state=other).stdout == first.stdout
    read = run_ktls(
        "sysctl", "-n", "kern.ipc.tls.enable", "kern.ipc.tls.maxlen",
        "kern.ipc.tls.bind_threads", "kern.ipc.tls.stats.enable_calls", state=other,
    )  # fmt: skip
    assert read.stdout == "1\n9000\n1\n5\n"
    # Over an existing state, and from stdin.
    ktls("sysctl", "kern.ipc.tls.enable=0")
    assert ktls("state", "import", "-", input=first.stdout).exit == 0
    assert ktls("state", "export").stdout == first.stdout


def test_import_of_an_older_schema_migrates(state: str, ktls: Any, tmp_path: Path) -> None:
    old = str(tmp_path / "old" / "kernel.db")
    kernel = Kernel(store.Store.open(old, schema=1))
    kernel.boot("seed")
    from ktls_core.state import export_state

    text = export_state(kernel)
    kernel.store.close()
    assert "schema: 1\n" in text and "sessions:" not in text
    path = tmp_path / "old.yaml"
    path.write_text(text)
    assert ktls("state", "import", str(path)).exit == 0
    again = ktls("state", "export").stdout
    assert f"schema: {store.SCHEMA_VERSION}\n" in again and "sessions:" in again


def test_secret_columns(
    state: str, init_state: Any, ktls: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keys stay out unless asked for; an export without them cannot be imported."""
    init_state(state)
    ktls("sysctl", "kern.ipc.tls.enable=1")
    monkeypatch.setitem(store.SECRET_COLUMNS, "sysctl", frozenset({"value"}))
    without = ktls("state", "export").stdout
    assert "omitted: [value]" in without and "kern.ipc.tls.enable, 1" not in without
    path = tmp_path / "nokeys.yaml"
    path.write_text(without)
    result = ktls("state", "import", str(path))
    assert result.exit == 1
    assert result.stderr == (
        f"ktls: {path}: exported without --include-keys, so table sysctl lacks value; "
        "export again with 'ktls state export --include-keys'\n"
    )
    with_keys = ktls("state", "export", "--include-keys").stdout
    assert with_keys.startswith("# ktls state export") and "keep it private" in with_keys
    path.write_text(with_keys)
    assert ktls("state", "import", str(path)).exit == 0
    assert ktls("state", "export", "--include-keys").stdout == with_keys


def test_session_keys_are_secret_columns() -> None:
    assert {"cipher_key", "iv", "auth_key"} <= store.SECRET_COLUMNS["sessions"]


def _mangle(text: str, old: str, new: str) -> str:
    assert old in text
    return text.replace(old, new, 1)


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (lambda t: "just: [text", "not a ktls state export (YAML error at line 1)"),
        (lambda t: "other: 1\n", "not a ktls state export (no 'ktls_state' document)"),
        (lambda t: _mangle(t, "format: 1", "format: 9"), "unknown export format 9"),
        (lambda t: _mangle(t, f"schema: {store.SCHEMA_VERSION}", "schema: 99"),
         f"export schema 99 is newer than this ktls understands ({store.SCHEMA_VERSION})"),
        (lambda t: _mangle(t, "    dmesg:", "    dmesgs:"),
         f"missing table(s) dmesg for schema {store.SCHEMA_VERSION}"),
        (lambda t: _mangle(t, "columns: [name, value]", "columns: [name, valeur]"),
         "table sysctl: columns ['name', 'valeur'] do not match the schema ['name', 'value']"),
        (lambda t: _mangle(t, "- [kern.ipc.tls.enable, 1]", "- [kern.ipc.tls.enable]"),
         "table sysctl: row 1 does not have 2 values"),
        (lambda t: _mangle(t, "- [kern.ipc.tls.enable, 1]", "- [kern.ipc.tls.enable, {hex: zz}]"),
         "table sysctl: row 1: bad hex digits"),
        (lambda t: _mangle(t, "- [kern.ipc.tls.enable, 1]", "- [kern.ipc.tls.enable, [1]]"),
         "table sysctl: row 1: unexpected value [1]"),
        (lambda t: _mangle(t, "- [kern.ipc.tls.enable, 1]", "- [kern.ipc.tls.enable, null]"),
         "table sysctl: row 1: NOT NULL constraint failed: sysctl.value"),
        (lambda t: _mangle(t, "- [profile, '{", "- [profilx, '{"),
         "state has no profile (not booted)"),
    ],
)  # fmt: skip
def test_import_errors_keep_the_old_state(
    edit: Callable[[str], str], problem: str, state: str, init_state: Any, ktls: Any,
    tmp_path: Path,
) -> None:  # fmt: skip
    init_state(state)
    ktls("sysctl", "kern.ipc.tls.enable=1")
    good = ktls("state", "export").stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(edit(good))
    before = Path(state).read_bytes()
    result = ktls("state", "import", str(bad))
    assert (result.exit, result.stdout, result.stderr) == (1, "", f"ktls: {bad}: {problem}\n")
    assert Path(state).read_bytes() == before
    assert [n for n in os.listdir(os.path.dirname(state)) if ".import-" in n] == []


def test_import_missing_file(ktls: Any, tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    result = ktls("state", "import", str(missing))
    assert (result.exit, result.stderr) == (1, f"ktls: {missing}: No such file or directory\n")
