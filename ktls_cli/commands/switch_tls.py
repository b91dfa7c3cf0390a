"""`ktls switch_tls`: move TLS connections between software and ifnet (tools/tools/switch_tls).

Arguments are read as FreeBSD's switch_tls reads them: getopt "ailS:s" (options
before operands, grouped flags, `-Sstack` or `-S stack`), then four words or two
`addr:port` / `addr.port` words split at the later of the last `.` or `:`.
Messages are FreeBSD's, byte for byte; the exit status follows ktls: 0 success,
1 when any connection failed (or getaddrinfo did), 2 for a usage error (FreeBSD
exits 1 there).
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
    from click.shell_completion import CompletionItem

    from ktls_core.net.tcp import Endpoints

PROG = "switch_tls"
USAGE = (
    "usage: switch_tls [-i | -s] local-address local-port foreign-address foreign-port\n"
    "       switch_tls [-i | -s] local-address:local-port foreign-address:foreign-port\n"
    "       switch_tls [-i | -s] local-address.local-port foreign-address.foreign-port\n"
    "       switch_tls [-l | -i | -s] -a\n"
    "       switch_tls [-l | -i | -s] -S stack\n"
)
OPTSTRING = "ailS:s"
# tcp_def_funcblk's name: the only TCP stack (ktls_core.tls.txmode.DEFAULT_STACK).
DEFAULT_STACK = "freebsd"
EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2





class Request(NamedTuple):
    ifnet: bool = False  # -i; -s (the default) is software
    all: bool = False  # -a
    stack: str | None = None  # -S stack
    list_only: bool = False  # -l
    words: tuple[str, ...] = ()

    @property
    def flag(self) -> str:
        return "-i" if self.ifnet else "-s"


def parse_args(argv: list[str]) -> Request:
    """main() of switch_tls.c up to the point where it looks connections up."""
    try:
        opts, words = getopt(PROG, argv, OPTSTRING)
    except GetoptError as exc:
        raise UsageProblem(exc.message) from None
    ifnet = switch_all = list_only = False
    stack: str | None = None
    for ch, arg in opts:
        if ch == "a":
            switch_all = True
        elif ch == "i":
            ifnet = True
        elif ch == "s":
            ifnet = False
        elif ch == "l":
            list_only = True
        elif ch == "S":
            stack = arg
    if switch_all and stack is not None:
        raise UsageProblem()
    if switch_all or stack is not None:
        if words:
            raise UsageProblem()
        return Request(ifnet, switch_all, stack, list_only)
    if len(words) not in (2, 4) or list_only:
        raise UsageProblem()
    if len(words) == 2:
        pairs = [_findport(w) for w in words]
        if any(p is None for p in pairs):
            raise UsageProblem()
        words = [part for pair in pairs if pair is not None for part in pair]
    return Request(ifnet, False, None, False, tuple(words))


def _findport(word: str) -> tuple[str, str] | None:
    """findport(): split at whichever of the last '.' or last ':' comes later."""
    cut = max(word.rfind("."), word.rfind(":"))
    if cut < 0 or cut == len(word) - 1:
        return None
    return word[:cut], word[cut + 1 :]


def complete_words(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """TAB: the stack after -S, else the connection's ends (ktls_cli.connections)."""
    from click.shell_completion import CompletionItem

    from ktls_cli.connections import complete

    try:
        words = [w for w in (ctx.params.get(param.name or "") or ()) if isinstance(w, str)]
        if words and words[-1].startswith("-") and words[-1].endswith("S"):
            stacks = [DEFAULT_STACK] if DEFAULT_STACK.startswith(incomplete) else []
            return [CompletionItem(s) for s in stacks]
        opts, operands = getopt(PROG, words, OPTSTRING)
        if any(ch in "aS" for ch, _ in opts):
            return []
        ctx.params[param.name or "argv"] = tuple(operands)
        return complete(ctx, param, incomplete)
    except Exception:  # completion must never raise
        return []


def run(env: Env, argv: list[str]) -> int:
    """The command (what main() of switch_tls.c does): the exit status."""
    try:
        request = parse_args(argv)
    except UsageProblem as problem:
        return problem.report(env, USAGE)
    return _run(env, request)


run_fast = fast_argv(run)


HELP = """Switch TLS connections between software (-s, the default) and ifnet (-i).

    \b
    switch_tls [-i | -s] local-address local-port foreign-address foreign-port
    switch_tls [-i | -s] local-address:local-port foreign-address:foreign-port
    switch_tls [-i | -s] local-address.local-port foreign-address.foreign-port
    switch_tls [-l | -i | -s] -a
    switch_tls [-l | -i | -s] -S stack

    -a switches every connection that is not listening, -S only those on the
    TCP stack named (only "freebsd" exists), -l prints the switch_tls commands
    instead of running them. Exit status: 0 success, 1 when any connection
    failed, 2 usage error.
    """


def _click_command() -> click.Command:
    return tool_command("switch_tls", run, HELP, complete=complete_words)


__getattr__ = lazy_command(_click_command)


def _run(env: Env, request: Request) -> int:
    from ktls_core.tls import txmode

    mode = txmode.TCP_TLS_MODE_IFNET if request.ifnet else txmode.TCP_TLS_MODE_SW
    kernel = env.kernel()
    if request.all or request.stack is not None:
        stack = request.stack
        if request.list_only:
            with kernel.snapshot() as tx:
                names = txmode.connection_names(tx, stack=stack)
            prefix = f"{PROG} {request.flag} "
            if env.machine:
                listed = [conn_entry(n, "listed", 0, prefix + n) for n in names]
                return _document(env, request, listed)
            _write_lines(env, [prefix + n for n in names])
            return EXIT_OK
        with kernel.transaction() as tx:
            results = txmode.switch_all(tx, mode, stack=stack)
        return _report(env, request, results)
    return _switch_by_name(env, request, mode)


def _switch_by_name(env: Env, request: Request, mode: int) -> int:
    """tcpswitchbyname(): resolve both ends, then switch every same-family pair."""
    from ktls_core.net.tcp import Endpoints, FamilyError, ResolveError, resolve

    lhost, lport, fhost, fport = request.words
    try:
        lfam, laddr, lp = resolve(lhost, lport, tcp_service)
        ffam, faddr, fp = resolve(fhost, fport, tcp_service)
        if lfam != ffam:
            raise FamilyError((lhost, lport, fhost, fport))
    except ResolveError as exc:
        # errx(1): nothing else runs.
        env.err(f"{PROG}: {exc}")
        if env.machine:
            _document(env, request, [], error=str(exc))
        return EXIT_FAILURE
    except FamilyError as exc:
        env.err(f"{PROG}: {exc}")
        if env.machine:
            _document(env, request, [], error=str(exc))
        return EXIT_FAILURE
    ep: Endpoints = Endpoints(lfam, laddr, lp, faddr, fp)
    from ktls_core.tls import txmode

    with env.kernel().transaction() as tx:
        errno = txmode.switch_one(tx, ep, mode)
    return _report(env, request, [(str(ep), errno)])


def _report(env: Env, request: Request, results: list[tuple[str, int]]) -> int:
    failed = any(errno for _, errno in results)
    if env.machine:
        entries = [
            conn_entry(name, "failed" if errno else "switched", errno) for name, errno in results
        ]
        _document(env, request, entries)
        _warn_failures(env, results)
        return EXIT_FAILURE if failed else EXIT_OK
    if not failed:
        _write_lines(env, [f"{name}: switched" for name, _ in results])
        return EXIT_OK
    # warn() goes to stderr in between the stdout lines, in order.
    from ktls_core.errors import strerror

    for name, errno in results:
        if errno:
            env.stdout.flush()
            env.err(f"{PROG}: {name}: {strerror(errno)}")
        else:
            env.out(f"{name}: switched")
    return EXIT_FAILURE


def _warn_failures(env: Env, results: list[tuple[str, int]]) -> None:
    from ktls_core.errors import strerror

    for name, errno in results:
        if errno:
            env.err(f"{PROG}: {name}: {strerror(errno)}")


def _write_lines(env: Env, lines: list[str]) -> None:
    """One write for many lines: `-a` over 100,000 connections stays cheap."""
    if lines:
        env.stdout.write("\n".join(lines) + "\n")


def _document(
    env: Env, request: Request, entries: list[dict[str, Any]], error: str | None = None
) -> int:
    from ktls_cli.render import document

    data: dict[str, Any] = {
        "mode": "ifnet" if request.ifnet else "sw",
        "all": request.all,
        "stack": request.stack,
        "list": request.list_only,
        "connections": entries,
    }
    if error is not None:
        data["error"] = error
    document(env, "switch_tls", data)
    return EXIT_OK
