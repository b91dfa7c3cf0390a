"""Connection names on the command line, and their shell completion.

A connection is named as tcpdrop(8) and switch_tls name it: four words
`laddr lport faddr fport`, or two words `laddr:lport faddr:fport` /
`laddr.lport faddr.fport` (split at the later of the last `:` and `.`).
Completion reads the state read-only, offers `laddr:lport` first and then the
foreign ends of the connections on that local end; it is cheap (indexed, a
bounded number of rows) and never raises.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ktls_cli.outcome import ExitStatus, UsageFailure

if TYPE_CHECKING:
    import click
    from click.shell_completion import CompletionItem

    from ktls_cli.env import Env
    from ktls_core.net.tcp import Conn, Endpoints
    from ktls_core.tls.session import Session

COMPLETION_LIMIT = 200


def conn_entry(
    name: str, result: str, errno: int = 0, command: str | None = None
) -> dict[str, object]:
    """One connection of a tcpdrop/switch_tls JSON document (`name` as printed)."""
    lhost, lport, fhost, fport = name.split(" ")
    entry: dict[str, object] = {
        "local_address": lhost,
        "local_port": int(lport),
        "foreign_address": fhost,
        "foreign_port": int(fport),
        "result": result,
    }
    if errno:
        from ktls_core.errors import strerror

        entry["errno"] = errno
        entry["error"] = strerror(errno)
    if command is not None:
        entry["command"] = command
    return entry


def conn_doc(conn: Conn, sess: Session | None) -> dict[str, Any]:
    """A connection as JSON (connect, netstat)."""
    doc: dict[str, Any] = {
        "connection": conn.name,
        "proto": f"tcp{conn.family}",
        "local_address": conn.laddr,
        "local_port": conn.lport,
        "foreign_address": conn.faddr,
        "foreign_port": conn.fport,
        "state": conn.state,
        "tls": None,
    }
    if sess is not None:
        doc["tls"] = {
            "mode": sess.mode_name,
            "version": sess.suite.version,
            "suite": sess.suite.name,
            "next_seq": sess.next_seq,
            "records": sess.records,
            "bytes": sess.bytes,
            "backend": sess.backend,
            "send_tag": sess.tag_port,
            "send_tag_interface": sess.tag_ifname,
        }
    return doc


def tcp_service(name: str) -> int | None:
    """getservbyname(name, "tcp"): a service name's port from this host's services
    database (/etc/services), as getaddrinfo(3) reads a port that is not a number."""
    import socket

    try:
        return socket.getservbyname(name, "tcp")
    except (OSError, UnicodeError):
        return None


class ConnWordsError(Exception):
    """The words do not name a connection; `message` is the one line to print."""

    def __init__(self, message: str, usage: bool) -> None:
        super().__init__(message)
        self.message = message
        self.usage = usage  # a usage error (exit 2) rather than a lookup failure (exit 1)


def parse(words: Sequence[str]) -> Endpoints:
    """Endpoints from 2 or 4 words; ConnWordsError with tcpdrop's wording otherwise."""
    from ktls_core.net import tcp

    try:
        return tcp.parse_endpoints(list(words), tcp_service)
    except tcp.ConnSyntaxError as exc:
        raise ConnWordsError(str(exc), usage=True) from None
    except tcp.ResolveError as exc:
        raise ConnWordsError(str(exc), usage=False) from None
    except tcp.FamilyError as exc:
        raise ConnWordsError(str(exc), usage=False) from None


def resolve(env: Env, call: str, conn_words: list[str]) -> Endpoints:
    """The connection the words name, for a command: a usage error (exit 2) for words
    that cannot name one, else `call: message` and exit 1 (outcome exceptions: the
    command's callback runs under click_outcomes)."""
    try:
        return parse(conn_words)
    except ConnWordsError as exc:
        if exc.usage:
            raise UsageFailure(exc.message) from None
        env.err(f"{call}: {exc.message}")
        raise ExitStatus(1) from None


def _state_path(ctx: click.Context) -> str | None:
    root = ctx.find_root()
    path = root.params.get("state_path")
    if path:
        return str(path)
    from ktls_core.store import default_path

    candidate = default_path()
    return candidate if os.path.exists(candidate) else None


def complete(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """shell_complete for a CONN argument: `laddr:lport`, then `faddr:fport`."""
    from click.shell_completion import CompletionItem

    try:
        done = [w for w in (ctx.params.get(param.name or "") or ()) if isinstance(w, str)]
        path = _state_path(ctx)
        if path is None or len(done) >= 2:
            return []
        names = _names(path, done[0] if done else None, incomplete)
        return [CompletionItem(n) for n in names]
    except Exception:  # completion must never raise
        return []


def _names(path: str, local: str | None, incomplete: str) -> list[str]:
    import sqlite3

    from ktls_core.net import tcp

    uri = f"file:{path}?mode=ro"
    conn = sqlite3.connect(uri, uri=True, timeout=0.2)
    try:
        if local is None:
            rows = conn.execute(
                "SELECT DISTINCT laddr, lport FROM conns WHERE state != 'LISTEN'"
                " ORDER BY id LIMIT ?",
                (COMPLETION_LIMIT,),
            )
        else:
            host, port = tcp.split_endpoint(local)
            _fam, addr, lport = tcp.resolve(host, port, tcp_service)
            rows = conn.execute(
                "SELECT faddr, fport FROM conns WHERE laddr = ? AND lport = ? ORDER BY id LIMIT ?",
                (addr, lport, COMPLETION_LIMIT),
            )
        out = [f"{a}:{p}" if ":" not in a else f"{a}.{p}" for a, p in rows]
    finally:
        conn.close()
    return [n for n in out if n.startswith(incomplete)]
