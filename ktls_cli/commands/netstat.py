"""`ktls netstat`: TCP connections in netstat(1)'s `-an` layout, plus their KTLS sessions.

The connection columns are protopr()'s (inet.c, libxo version): `Proto Recv-Q
Send-Q Local Address Foreign Address (state)`, each address `host.port` with the
host cut at 16 characters and the column at 22 (-W: 45). After the state come
the TLS columns FreeBSD's netstat does not have: the session's mode (none, sw,
ifnet), the port holding its send tag (ifnet: the NIC behind any lagg or vlan),
TLS version, suite, next record sequence number, records and bytes sent.
Without -a, listening sockets are left out. `-r` shows the routing table with
route(8)'s renderer (ktls route show).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ktls_cli.env import Env
from ktls_cli.getopt import GetoptError, fast_argv, getopt, lazy_command, tool_command

if TYPE_CHECKING:
    import click

    from ktls_core.net.tcp import Conn
    from ktls_core.tls.session import Session

PROG = "netstat"
USAGE = (
    "usage: netstat [-46anW] [-f address_family] [-p protocol]\n"
    "       netstat -r [-46nW] [-f address_family]\n"
)
EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
FAMILIES = {"inet": 4, "inet6": 6}
# The send tag's port (an ifnet session's NIC: cc0 behind lagg0), "-" otherwise.
_TLS_HEAD = f" {'TLS':<5} {'Tag':<6} {'Ver':<3} {'Suite':<18}"
TLS_HEADER = _TLS_HEAD + f" {'Next-Seq':>10} {'Records':>8} {'Bytes':>12}"


def _addr(host: str, port: int, width: int, wide: bool) -> str:
    """inetprint(): `host.port`, the host cut at 16 characters unless -W."""
    text = f"{host if wide else host[:16]}.{port if port else '*'} "
    return f"{text:<{width}.{width}} "


def header(wide: bool) -> str:
    w = 45 if wide else 22
    return (
        f"{'Proto':<5.5} {'Recv-Q':<6.6} {'Send-Q':<6.6} {'Local Address':<{w}.{w}} "
        f"{'Foreign Address':<{w}.{w}} {'(state)':<11.11}" + TLS_HEADER
    )


def row(conn: Conn, sess: Session | None, wide: bool) -> str:
    w = 45 if wide else 22
    proto = f"{'tcp':<3.3}{conn.family!s:<2.2}"
    laddr = "*" if conn.laddr in ("0.0.0.0", "::") else conn.laddr
    faddr = "*" if conn.faddr in ("0.0.0.0", "::") else conn.faddr
    line = (
        f"{proto} {0:6d} {0:6d} {_addr(laddr, conn.lport, w, wide)}"
        f"{_addr(faddr, conn.fport, w, wide)}{conn.state:<11}"
    )
    if sess is None:
        tls = f" {'none':<5} {'-':<6} {'-':<3} {'-':<18} {'-':>10} {'-':>8} {'-':>12}"
    else:
        suite = sess.suite.name.split(" ", 1)[-1]
        tls = (
            f" {sess.mode_name:<5} {sess.tag_port or '-':<6} {sess.suite.version:<3} {suite:<18}"
            f" {sess.next_seq:>10} {sess.records:>8} {sess.bytes:>12}"
        )
    return line + tls


def run(env: Env, argv: list[str]) -> int:
    """The command (netstat -an, -r): the exit status."""
    try:
        opts, rest = getopt(PROG, argv, "46af:np:rW")
    except GetoptError as exc:
        env.err(exc.message)
        env.stderr.write(USAGE)
        return EXIT_USAGE
    values = dict(opts)
    flags = set(values)
    families: set[int] = set()
    if "4" in flags:
        families.add(4)
    if "6" in flags:
        families.add(6)
    if "f" in flags:
        fam = FAMILIES.get(str(values["f"]))
        if fam is None:
            env.err(f"{PROG}: {values['f']}: unknown address family")
            return EXIT_FAILURE
        families.add(fam)
    if rest or ("r" in flags and "p" in flags):
        env.stderr.write(USAGE)
        return EXIT_USAGE
    if "r" in flags:
        _routes(env, families, numeric="n" in flags)
        return EXIT_OK
    proto = values.get("p")
    if proto is not None and proto not in ("tcp", "udp", "raw", "ip", "icmp", "ip6"):
        env.err(f"{PROG}: {proto}: unknown or uninstrumented protocol")
        return EXIT_FAILURE
    _connections(env, families, all_sockets="a" in flags, wide="W" in flags, proto=proto)
    return EXIT_OK


run_fast = fast_argv(run)


HELP = """Show TCP connections and their KTLS sessions (netstat -an), or routes (-r).

    \b
    netstat [-46anW] [-f address_family] [-p protocol]
    netstat -r [-46nW] [-f address_family]

    Exit status: 0 success, 2 usage error.
    """


def _click_command() -> click.Command:
    return tool_command("netstat", run, HELP)


__getattr__ = lazy_command(_click_command)


def _connections(
    env: Env, families: set[int], *, all_sockets: bool, wide: bool, proto: str | None
) -> None:
    from ktls_core.net import tcp
    from ktls_core.tls import session

    show_tcp = proto in (None, "tcp")
    with env.kernel().snapshot() as tx:
        conns = [
            c
            for c in (tcp.iter_conns(tx, include_listen=all_sockets) if show_tcp else ())
            if not families or c.family in families
        ]
        sessions = session.all_sessions(tx) if conns else {}
    if env.machine:
        from ktls_cli.connections import conn_doc
        from ktls_cli.render import document

        docs: list[dict[str, Any]] = [conn_doc(c, sessions.get(c.id)) for c in conns]
        document(env, "netstat", {"connections": docs})
        return
    if not conns:
        return  # protopr() prints its title and header with the first socket only
    title = "Active Internet connections"
    if all_sockets:
        title += " (including servers)"
    out = [title, header(wide)]
    out += [row(c, sessions.get(c.id), wide) for c in conns]
    env.stdout.write("\n".join(out) + "\n")


def _routes(env: Env, families: set[int], *, numeric: bool) -> None:
    """netstat -r: issue 4's routing-table renderer (the same as `ktls route show`)."""
    from ktls_cli.commands.route import netstat_r_document, render_netstat_r
    from ktls_cli.render import emit
    from ktls_core.net import store as net_store

    names = tuple(n for n, v in FAMILIES.items() if not families or v in families)
    with env.kernel().snapshot() as tx:
        net = net_store.load(tx)
    lines = render_netstat_r(net, numeric=numeric, families=names)
    doc = netstat_r_document(net, numeric=numeric, families=names)
    emit(env, "netstat", doc, lambda: env.out("\n".join(lines)))
