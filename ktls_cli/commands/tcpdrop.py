"""`ktls tcpdrop`: drop TCP connections, as tcpdrop(8) of FreeBSD 13 does.

Arguments are read with getopt "alS:s:" (options first), then four words or two
`addr:port` / `addr.port` words split at the later of the last `.` or `:`.
`-a` drops every connection that is not listening, `-S stack` those on a TCP
stack (only "freebsd" exists), `-s state` those in a state; `-l` prints the
`tcpdrop` commands instead of dropping. Dropping a connection frees its KTLS
session (ktls_destroy(): active and the mode's gauge go down). Messages are
FreeBSD's byte for byte; exit 0 on success, 1 when any connection failed,
2 for a usage error (FreeBSD exits 1 there).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

from ktls_cli.connections import conn_entry, tcp_service
from ktls_cli.env import Env
from ktls_cli.getopt import (
    GetoptError,
    UsageProblem,
    fast_argv,
    getopt,
    lazy_command,
    tool_command,
)

if TYPE_CHECKING:
    import click

PROG = "tcpdrop"
USAGE = (
    "usage: tcpdrop local-address local-port foreign-address foreign-port\n"
    "       tcpdrop local-address:local-port foreign-address:foreign-port\n"
    "       tcpdrop local-address.local-port foreign-address.foreign-port\n"
    "       tcpdrop [-l] -a\n"
    "       tcpdrop [-l] -S stack\n"
    "       tcpdrop [-l] -s state\n"
    "       tcpdrop [-l] -S stack -s state\n"
)
EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
# The only TCP stack of the simulated kernel (net.inet.tcp.functions_available).
STACKS = ("freebsd",)


class Request(NamedTuple):
    all: bool = False
    stack: str | None = None
    state: str | None = None
    list_only: bool = False
    words: tuple[str, ...] = ()

    @property
    def bulk(self) -> bool:
        return self.all or self.stack is not None or self.state is not None


def parse_args(argv: list[str]) -> Request:
    """main() of tcpdrop.c up to the lookups."""
    from ktls_core.net.tcp import TCP_STATES

    try:
        opts, words = getopt(PROG, argv, "alS:s:")
    except GetoptError as exc:
        raise UsageProblem(exc.message) from None
    drop_all = list_only = False
    stack: str | None = None
    state: str | None = None
    for ch, arg in opts:
        if ch == "a":
            drop_all = True
        elif ch == "l":
            list_only = True
        elif ch == "S":
            stack = arg
        elif ch == "s":
            # tcpstates[]; CLOSED and LISTEN cannot be dropped by state.
            if arg not in TCP_STATES or arg in ("CLOSED", "LISTEN"):
                raise UsageProblem()
            state = arg
    if drop_all and (stack is not None or state is not None):
        raise UsageProblem()
    if drop_all or stack is not None or state is not None:
        if words:
            raise UsageProblem()
        return Request(drop_all, stack, state, list_only)
    if len(words) not in (2, 4) or list_only:
        raise UsageProblem()
    return Request(words=tuple(words))


def run(env: Env, argv: list[str]) -> int:
    """The command (what main() of tcpdrop.c does): the exit status."""
    try:
        request = parse_args(argv)
    except UsageProblem as problem:
        return problem.report(env, USAGE)
    return _run(env, request)


run_fast = fast_argv(run)


HELP = """Drop TCP connections (tcpdrop(8)).

    \b
    tcpdrop local-address local-port foreign-address foreign-port
    tcpdrop local-address:local-port foreign-address:foreign-port
    tcpdrop local-address.local-port foreign-address.foreign-port
    tcpdrop [-l] -a
    tcpdrop [-l] -S stack
    tcpdrop [-l] -s state
    tcpdrop [-l] -S stack -s state

    Exit status: 0 success, 1 when any connection failed, 2 usage error.
    """


def _click_command() -> click.Command:
    return tool_command("tcpdrop", run, HELP)


__getattr__ = lazy_command(_click_command)


def _run(env: Env, request: Request) -> int:
    from ktls_cli.render import document
    from ktls_core.net import tcp

    lines: list[str] = []
    errors: list[str] = []
    entries: list[dict[str, Any]] = []
    code = EXIT_OK
    if request.bulk:
        kernel = env.kernel()
        stack_ok = request.stack is None or request.stack in STACKS
        with kernel.transaction() as tx:
            victims = [
                c
                for c in tcp.iter_conns(tx, include_listen=False)
                if stack_ok and (request.state is None or c.state == request.state)
            ]
            for conn in victims:
                if request.list_only:
                    lines.append(f"{PROG} {conn.name}")
                    entries.append(conn_entry(conn.name, "listed"))
                else:
                    tcp.drop(tx, conn)
                    lines.append(f"{conn.name}: dropped")
                    entries.append(conn_entry(conn.name, "dropped"))
    else:
        code = _drop_one(env, request.words, lines, errors, entries)
    if env.machine:
        document(env, "tcpdrop", {"connections": entries})
    else:
        for line in lines:
            env.out(line)
    for line in errors:
        env.err(line)
    return code


def _drop_one(
    env: Env,
    words: tuple[str, ...],
    lines: list[str],
    errors: list[str],
    entries: list[dict[str, Any]],
) -> int:
    from ktls_core.errors import Errno, strerror
    from ktls_core.net import tcp

    try:
        ep = tcp.parse_endpoints(list(words), tcp_service)
    except tcp.ConnSyntaxError:
        env.stderr.write(USAGE)
        return EXIT_USAGE
    except tcp.ResolveError as exc:
        errors.append(f"{PROG}: {exc}")
        return EXIT_FAILURE
    except tcp.FamilyError as exc:
        errors.append(f"{PROG}: {exc}")
        return EXIT_FAILURE
    with env.kernel().transaction() as tx:
        conn = tcp.lookup(tx, ep)
        if conn is not None:
            tcp.drop(tx, conn)
    if conn is None:
        # sysctl net.inet.tcp.drop finds no pcb: ESRCH, warn()ed with the numeric names.
        errors.append(f"{PROG}: {ep}: {strerror(Errno.ESRCH)}")
        entries.append(conn_entry(str(ep), "error", Errno.ESRCH))
        return EXIT_FAILURE
    lines.append(f"{conn.name}: dropped")
    entries.append(conn_entry(conn.name, "dropped"))
    return EXIT_OK
