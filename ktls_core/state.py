"""State lifecycle: init (boot with options), summary, export and import.

A new state is always built at a temporary path beside the old one, then put in
place by store.install: copied over the old state in one write transaction, so
`state init --force` and `state import` replace the state atomically even while
other commands have it open: each sees the old kernel or the new one, and one
that read the old kernel cannot write into the new one (it fails, one line).
"""

from __future__ import annotations

import os
import sqlite3
from typing import Any

from ktls_core.errors import StateError
from ktls_core.kernel import Kernel
from ktls_core.store import (
    EXPORT_TABLES,
    SCHEMA_VERSION,
    SECRET_COLUMNS,
    Store,
    install,
    remove_state,
)

EXPORT_FORMAT = 1  # the layout of an export document (not the database schema)
EXPORT_KEY = "ktls_state"


def init_state(
    path: str,
    *,
    profile: str,
    topology: str | None,
    seed: int | None,
    tunables: list[str],
    force: bool,
) -> dict[str, Any]:
    """`state init`: boot a new kernel at `path`; refuses to replace one without force.

    Bad options raise ValueError before anything is touched.
    """
    from ktls_core.profile import load_profile
    from ktls_core.sysctl import parse_tunables

    path = os.path.abspath(path)
    if os.path.lexists(path) and not force:
        raise StateError(path, "state already exists (use --force to replace it)")
    # Everything is checked before the old state is touched.
    values = parse_tunables(load_profile(profile), tunables)
    if topology is not None:
        from ktls_core.net.topology import load_topology

        load_topology(topology)
    tmp = _tmp_path(path, "init")
    remove_state(tmp)  # left by a killed init of a process with our pid
    try:
        kernel = Kernel.open(tmp, create=True, boot=False)
        try:
            kernel.boot(profile, topology=topology, seed=seed, tunables=values)
        finally:
            kernel.store.close()
        install(tmp, path)
    finally:
        remove_state(tmp)
    return {"path": path, "profile": profile, "seed": seed, "tunables": values}


def _tmp_path(path: str, what: str) -> str:
    return f"{path}.{what}-{os.getpid()}"


# -- summary ------------------------------------------------------------------------------


def _tables(conn: sqlite3.Connection) -> set[str]:
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    return {str(r[0]) for r in rows}


def _count_items(value: Any) -> int | None:
    return len(value) if isinstance(value, list | dict) else None


def summary(kernel: Kernel) -> dict[str, Any]:
    """`state show`: what the state holds, generically (no subsystem is assumed)."""
    from ktls_core.kld import loaded_modules

    with kernel.snapshot() as tx:
        info: dict[str, Any] = {
            "path": kernel.path,
            "schema": kernel.store.schema,
            "profile": tx.profile.name,
            "description": tx.profile.description,
            "seed": tx.meta("seed"),
            "modules": loaded_modules(tx),
        }
        # Interfaces live in the 'net' document; connections and sessions in tables.
        net = tx.doc("net")
        if isinstance(net, dict):
            for key in ("interfaces", "ifnets", "routes"):
                count = _count_items(net.get(key))
                if count is not None:
                    info["interfaces" if key == "ifnets" else key] = count
        tables = _tables(tx.conn)
        for label, table in (("connections", "conns"), ("sessions", "sessions")):
            if table in tables:
                info[label] = int(tx.conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
        info["dmesg_lines"] = int(tx.conn.execute("SELECT count(*) FROM dmesg").fetchone()[0])
    return info


# -- export and import --------------------------------------------------------------------


def _columns(conn: sqlite3.Connection, table: str) -> list[tuple[str, int]]:
    """(column, position in the primary key or 0) in declaration order."""
    return [(str(r[1]), int(r[5])) for r in conn.execute(f"PRAGMA table_info({table})")]


def _encode(value: Any) -> Any:
    # Blobs (keys, IVs) become hex; everything else SQLite holds is a YAML scalar.
    return {"hex": value.hex()} if isinstance(value, bytes) else value


def _decode(value: Any, where: str) -> Any:
    if isinstance(value, dict):
        if set(value) != {"hex"} or not isinstance(value["hex"], str):
            raise ValueError(f"{where}: a blob is written {{hex: HEXDIGITS}}")
        try:
            return bytes.fromhex(value["hex"])
        except ValueError:
            raise ValueError(f"{where}: bad hex digits") from None
    if value is None or (isinstance(value, int | float | str) and not isinstance(value, bool)):
        return value
    raise ValueError(f"{where}: unexpected value {value!r}")


def export_state(kernel: Kernel, *, include_keys: bool = False) -> str:
    """`state export`: every table of store.EXPORT_TABLES, in order, as YAML text.

    Columns in store.SECRET_COLUMNS (session keys) are left out unless asked for; the
    document then says which, so that import can refuse it. The text is deterministic:
    exporting an imported export gives the same text again.
    """
    import yaml

    tables: dict[str, Any] = {}
    with kernel.snapshot() as tx:
        present = _tables(tx.conn)
        for table in EXPORT_TABLES:
            if table not in present:
                continue
            cols = _columns(tx.conn, table)
            secret = SECRET_COLUMNS.get(table, frozenset())
            keep = [c for c, _ in cols if include_keys or c not in secret]
            pk = [c for c, n in sorted(cols, key=lambda x: x[1]) if n > 0]
            order = ", ".join(pk) if pk else "rowid"
            rows = tx.conn.execute(f"SELECT {', '.join(keep)} FROM {table} ORDER BY {order}")
            entry: dict[str, Any] = {"columns": keep}
            omitted = sorted(c for c, _ in cols if c not in keep)
            if omitted:
                entry["omitted"] = omitted
            entry["rows"] = [[_encode(v) for v in row] for row in rows]
            tables[table] = entry
        schema = kernel.store.schema
    doc = {
        EXPORT_KEY: {
            "format": EXPORT_FORMAT,
            "schema": schema,
            "keys": include_keys,
            "tables": tables,
        }
    }
    header = (
        f"# ktls state export (schema {schema}); restore with 'ktls state import FILE'.\n"
        + ("# It holds session keys: keep it private.\n" if include_keys else "")
    )
    body = yaml.safe_dump(
        doc, sort_keys=False, default_flow_style=None, allow_unicode=True, width=1 << 30
    )
    return header + body


def _load_export(text: str, source: str) -> tuple[int, dict[str, Any]]:
    """Parse and check the outer shape of an export; returns (schema, tables)."""
    import yaml

    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ValueError(f"{source}: not a ktls state export (YAML error{where})") from None
    body = doc.get(EXPORT_KEY) if isinstance(doc, dict) else None
    if not isinstance(body, dict):
        raise ValueError(f"{source}: not a ktls state export (no '{EXPORT_KEY}' document)")
    if body.get("format") != EXPORT_FORMAT:
        raise ValueError(f"{source}: unknown export format {body.get('format')!r}")
    schema = body.get("schema")
    if not isinstance(schema, int) or isinstance(schema, bool) or schema < 1:
        raise ValueError(f"{source}: bad schema version {schema!r}")
    if schema > SCHEMA_VERSION:
        raise ValueError(
            f"{source}: export schema {schema} is newer than this ktls understands "
            f"({SCHEMA_VERSION})"
        )
    tables = body.get("tables")
    if not isinstance(tables, dict):
        raise ValueError(f"{source}: no tables")
    return schema, tables


def import_state(path: str, text: str, *, source: str = "export") -> dict[str, Any]:
    """`state import`: replace the state at `path` with an export, atomically.

    The export is loaded into a new database at its own schema version, migrated to
    the current one, checked to boot (it has a profile), and only then installed
    over the old state (store.install). Raises ValueError (naming `source`) for a
    bad export; the old state is untouched then.
    """
    path = os.path.abspath(path)
    schema, tables = _load_export(text, source)
    tmp = _tmp_path(path, "import")
    remove_state(tmp)
    try:
        store = Store.open(tmp, create=True, schema=schema)
        try:
            with store.write() as conn:
                expected = [t for t in EXPORT_TABLES if t in _tables(conn)]
                missing = [t for t in expected if t not in tables]
                unknown = [t for t in tables if t not in expected]
                if missing or unknown:
                    what = "missing" if missing else "unknown"
                    raise ValueError(
                        f"{source}: {what} table(s) {', '.join(missing or unknown)} "
                        f"for schema {schema}"
                    )
                for table in expected:
                    _import_table(conn, table, tables[table], source)
            store.migrate()
            kernel = Kernel(store)
            with kernel.snapshot() as tx:
                try:
                    profile = tx.profile.name
                except (ValueError, KeyError, TypeError) as exc:
                    raise ValueError(f"{source}: meta 'profile' is not a profile ({exc})") from None
        except StateError as exc:
            if exc.path == tmp:  # a problem with the export's content, not a file
                raise ValueError(f"{source}: {exc.problem}") from None
            raise
        finally:
            store.close()
        install(tmp, path)
    finally:
        remove_state(tmp)
    return {"path": path, "source": source, "schema": schema, "profile": profile}


def _import_table(conn: sqlite3.Connection, table: str, entry: Any, source: str) -> None:
    where = f"{source}: table {table}"
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: not a mapping")
    columns, rows = entry.get("columns"), entry.get("rows")
    omitted = entry.get("omitted") or []
    if not isinstance(columns, list) or not isinstance(rows, list):
        raise ValueError(f"{where}: needs 'columns' and 'rows' lists")
    declared = [c for c, _ in _columns(conn, table)]
    if omitted and rows:
        secret = sorted(set(omitted) & SECRET_COLUMNS.get(table, frozenset()))
        raise ValueError(
            f"{source}: exported without --include-keys, so table {table} lacks "
            f"{', '.join(secret or omitted)}; export again with 'ktls state export "
            "--include-keys'"
        )
    if sorted(columns) != sorted(c for c in declared if c not in omitted):
        raise ValueError(f"{where}: columns {columns} do not match the schema {declared}")
    marks = ", ".join("?" for _ in columns)
    statement = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, list) or len(row) != len(columns):
            raise ValueError(f"{where}: row {number} does not have {len(columns)} values")
        values = [_decode(v, f"{where}: row {number}") for v in row]
        try:
            conn.execute(statement, values)
        except sqlite3.IntegrityError as exc:
            raise ValueError(f"{where}: row {number}: {exc}") from None
