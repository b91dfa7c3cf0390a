"""`ktls sysctl`: sysctl(8) over the simulated kernel's MIB.

The flow is parse() of sbin/sysctl/sysctl.c: each argument (the `-f` file's lines
first, then the command line) is looked up, printed, or set and printed as
`name: old -> new`; a failing argument prints a `sysctl: ` diagnostic and the run
goes on. All arguments run in one transaction (a snapshot when nothing is set), and
the output is written after it commits, so a state error never leaves half a report.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from ktls_cli.env import Env
from ktls_cli.getopt import lazy_command

if TYPE_CHECKING:
    import click
    from click.shell_completion import CompletionItem

    from ktls_core.errors import KtlsError
    from ktls_core.kernel import Tx
    from ktls_core.profile import Oid
    from ktls_core.sysctl import Mib, SysctlError

TOOL = "sysctl"
USAGE = (
    "usage: ktls sysctl [-bdehiNnoqTtWx] [-f filename] name[=value] ...\n"
    "       ktls sysctl [-bdehNnoqTtWx] -a\n"
)
# getopt(3) string of sbin/sysctl/sysctl.c for the options this sysctl has.
OPTSTRING = "AabdehiNnoqTtWwxXf:"
EXIT_USAGE = 2  # ktls policy (FreeBSD's usage() exits 1)
STATS_KINDS = ("counter", "gauge")  # CTLFLAG_STATS: what -W leaves out


class UsageError(Exception):
    """sysctl(8) calls usage(): print the warning (if any) and the usage, exit 2."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or "usage")
        self.message = message


class Flags:
    """The option letters of one run; False unless given (plain class: no dataclass
    machinery on the start-up path of the fastest command)."""

    a = b = d = e = h = i = N = n = o = q = T = t = W = x = False

    def __init__(self, **given: bool) -> None:
        for letter, value in given.items():
            if not hasattr(Flags, letter):
                raise TypeError(f"unknown sysctl flag {letter!r}")
            setattr(self, letter, value)


class Output:
    """What one run prints, in order: ("out", str), ("bytes", bytes), ("err", str)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self.entries: list[dict[str, Any]] = []  # --format json|yaml

    def out(self, text: str) -> None:
        self.events.append(("out", text))

    def raw(self, data: bytes) -> None:
        self.events.append(("bytes", data))

    def warn(self, text: str) -> None:
        self.events.append(("err", f"{TOOL}: {text}\n"))

    def replay(self, env: Env) -> None:
        for kind, data in self.events:
            if kind == "out":
                env.stdout.write(data)
            elif kind == "bytes":
                env.out_bytes(data)
            else:
                env.stdout.flush()
                env.stderr.write(data)
                env.stderr.flush()


# -- reading the -f file ----------------------------------------------------------------


def _strip_comment(line: str) -> str:
    """parsefile(): cut at the first `#`, unless it is escaped or inside quotes."""
    squote, dquote = line.find("'"), line.find('"')
    p = line.find("#")
    while p >= 0:
        if squote >= 0 and p > squote:
            end = line.find("'", squote + 1)
            return line if end < 0 else line[: end + 1]
        if dquote >= 0 and p > dquote:
            end = line.find('"', dquote + 1)
            return line if end < 0 else line[: end + 1]
        if p == 0 or line[p - 1] != "\\":
            return line[:p]
        p = line.find("#", p + 1)
    return line


MAX_FILE = 1 << 20  # -f: a sysctl.conf is small; /dev/zero or a log is not one


def read_file(path: str) -> list[tuple[str, int]]:
    """The `name=value` lines of a sysctl.conf(5)-style file, with their line numbers.

    OSError EFBIG past MAX_FILE characters (read that far only, so `-f /dev/zero`
    ends)."""
    with open(path, encoding="utf-8", errors="replace", newline="") as fh:
        text = fh.read(MAX_FILE + 1)
    if len(text) > MAX_FILE:
        import errno
        import os

        raise OSError(errno.EFBIG, os.strerror(errno.EFBIG), path)
    items = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        stripped = _strip_comment(line).strip(" \t\n\v\f\r")
        if stripped:
            items.append((stripped, lineno))
    return items


# -- one argument ------------------------------------------------------------------------


class Run:
    """One invocation: flags, the transaction's MIB, and what it prints."""

    def __init__(self, env: Env, flags: Flags, tx: Tx, mib: Mib) -> None:
        self.env = env
        self.flags = flags
        self.tx = tx
        self.mib = mib
        self.output = Output()
        self.failures = 0

    def warn(self, message: str, lineno: int, *, at_line: bool = True) -> None:
        self.output.warn(message + (f" at line {lineno}" if lineno and at_line else ""))

    def warn_error(self, exc: SysctlError, lineno: int) -> None:
        self.warn(exc.message, lineno, at_line=exc.at_line)
        for extra in exc.extra:
            self.output.warn(extra)

    def show(self, oid: Oid, *, nflag: bool | None = None, value: int | None = None) -> bool:
        """show_var(): print one oid without the newline; False if it printed nothing."""
        from ktls_core import sysctl

        f = self.flags
        nflag = f.n if nflag is None else nflag
        if f.W and (not oid.writable or oid.kind in STATS_KINDS):
            return False
        if f.T and not oid.tunable:
            return False
        if self.env.machine:
            entry: dict[str, Any] = {"name": oid.name, "type": oid.type}
            if not oid.is_node:
                entry["value"] = sysctl.read(self.tx, oid) if value is None else value
            if f.d:
                entry["description"] = oid.descr
            self.output.entries.append(entry)
            return True
        if f.N:
            self.output.out(oid.name)
            return True
        sep = "=" if f.e else ": "
        prefix = "" if nflag else oid.name + sep
        if f.t or f.d:
            if f.t and f.d:
                self.output.out(prefix + oid.type + sep + oid.descr)
            else:
                self.output.out(prefix + (oid.type if f.t else oid.descr))
            return True
        if oid.is_node:  # a node has no value of its own
            return False
        current = sysctl.read(self.tx, oid) if value is None else value
        if f.b:
            self.output.raw(sysctl.raw_bytes(oid.type, current))
            return True
        text = sysctl.format_value(oid.type, current, hex_=f.x, human=f.h)
        self.output.out(prefix + text)
        return True

    def line(self, oid: Oid) -> None:
        """show_var() plus the newline sysctl(8) adds after anything it printed."""
        if self.show(oid) and not self.flags.b and not self.env.machine:
            self.output.out("\n")

    def parse(self, arg: str, lineno: int = 0) -> bool:
        """parse() of sysctl.c for one argument; returns False if the argument failed."""
        from ktls_core import sysctl
        from ktls_core.errors import KtlsError

        f = self.flags
        name, text = sysctl.split_assignment(arg)
        if text is not None and (f.T or f.W):
            raise UsageError("Can't set variables when using -T or -W")
        oid = self.mib.lookup(name)
        if oid is None:
            if f.i:
                return True
            if not f.q:
                self.warn(sysctl.UnknownOid(name).message, lineno)
            return False
        if text is None or f.d:
            if oid.is_node:
                if f.d:
                    self.line(oid)
                for leaf in self.mib.leaves(oid.name):
                    self.line(leaf)
            else:
                self.line(oid)
            return True
        try:
            sysctl.check_settable(oid)
            values = sysctl.parse_values(oid, text)
        except sysctl.SysctlError as exc:
            self.warn_error(exc, lineno)
            return False
        old = sysctl.read(self.tx, oid)
        if self.env.machine:
            try:
                sysctl.write(self.tx, oid, values)
            except KtlsError as exc:
                self._write_failed(arg, lineno, exc)
                return False
            new = sysctl.read(self.tx, oid)
            self.output.entries.append({"name": oid.name, "type": oid.type, "old": old, "new": new})
            return True
        printed = self.show(oid, value=old)
        try:
            sysctl.write(self.tx, oid, values)
        except KtlsError as exc:
            if printed and not f.b:
                self.output.out("\n")
            self._write_failed(arg, lineno, exc)
            return False
        if not f.b:
            self.output.out(" -> ")
        if self.show(oid, nflag=True) and not f.b:
            self.output.out("\n")
        return True

    def _write_failed(self, arg: str, lineno: int, exc: KtlsError) -> None:
        from ktls_core.errors import Errno

        suffix = f" at line {lineno}" if lineno else ""
        if exc.errno == Errno.EOPNOTSUPP:
            self.output.warn(f"{arg}: value is not available{suffix}")
        else:  # warn(3): the message, then strerror
            self.output.warn(f"{arg}{suffix}: {exc.strerror}")


# -- the command -------------------------------------------------------------------------


def _complete_names(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """Sysctl names from the state's profile (the seed table if there is no state)."""
    try:
        from click.shell_completion import CompletionItem

        from ktls_core.sysctl import completion_names

        if "=" in incomplete or ":" in incomplete:
            return []
        state_path = ctx.find_root().params.get("state_path")
        return [
            CompletionItem(name)
            for name in completion_names(state_path)
            if name.startswith(incomplete)
        ]
    except Exception:  # completion never raises
        return []


def _options(words: list[str]) -> dict[str, Any]:
    """sysctl(8)'s getopt(3) over the words: the command's parameters (GetoptError)."""
    from ktls_cli.getopt import getopt

    opts, operands = getopt(TOOL, list(words), OPTSTRING)
    params: dict[str, Any] = {"filename": None, "names": tuple(operands)}
    params.update((f"flag_{c}", False) for c in OPTSTRING.replace("f:", ""))
    for letter, value in opts:
        if letter == "f":
            params["filename"] = value
        else:
            params[f"flag_{letter}"] = True
    return params


def run(env: Env, filename: str | None, names: tuple[str, ...], **letters: bool) -> int:
    """The command, from its parameters: the exit status."""
    flags = Flags(**{k.removeprefix("flag_"): v for k, v in letters.items() if k[-1] not in "AXw"})
    if letters["flag_A"]:
        flags.a = flags.o = True
    if letters["flag_X"]:
        flags.a = flags.x = True
    try:
        failures = _main(env, flags, filename, list(names))
    except UsageError as exc:
        if exc.message:
            env.err(f"{TOOL}: {exc.message}")
        env.stderr.write(USAGE)
        return EXIT_USAGE
    return 1 if failures else 0


def run_fast(env: Env, words: list[str]) -> int | None:
    """main's fast path (no click): what the click command does, or None for --help."""
    from ktls_cli.getopt import GetoptError

    try:
        params = _options(words)
    except GetoptError as exc:
        if "--help" in words:
            return None  # click's help, as SysctlCommand gives it
        env.stderr.write(f"{exc.message}\n{USAGE}")
        return EXIT_USAGE
    return run(env, **params)


def _click_command() -> click.Command:
    """The click command (help, completion, `ktls_cli.main.cli`): built on first use, so
    that the fast path never imports click."""
    import click

    from ktls_cli.outcome import ExitStatus

    class SysctlCommand(click.Command):
        """A click command whose usage lines are sysctl(8)'s and whose options getopt(3) reads."""

        def format_usage(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
            formatter.write(USAGE)

        def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
            """sysctl(8)'s getopt(3) over the arguments; click keeps --help and completion.

            Every option of sysctl is one letter. click would try each `-n` as a long
            option first and build a NoSuchOption (difflib, gettext, locale: 1.4 ms)
            before it finds the short one; BSD getopt also gives FreeBSD's grouping and
            diagnostics (`illegal option -- z`).
            """
            from ktls_cli.getopt import GetoptError

            if ctx.resilient_parsing:
                return super().parse_args(ctx, args)
            try:
                ctx.params.update(_options(args))
            except GetoptError as exc:
                if "--help" in args:
                    return super().parse_args(ctx, args)
                env = ctx.find_object(Env)
                err = env.stderr if env is not None else sys.stderr
                err.write(f"{exc.message}\n{USAGE}")
                raise click.exceptions.Exit(EXIT_USAGE) from None
            ctx.args = []
            return []

    F = TypeVar("F", bound=Callable[..., Any])

    def flag(letter: str, help_text: str, *, hidden: bool = False) -> Callable[[F], F]:
        return click.option(
            f"-{letter}", f"flag_{letter}", is_flag=True, help=help_text, hidden=hidden
        )

    @click.command(
        "sysctl",
        cls=SysctlCommand,
        # BSD getopt stops at the first name: `ktls sysctl kern.ipc.tls -d` asks for `-d`.
        context_settings={"allow_interspersed_args": False},
    )
    @flag("a", "List all the oids of the kernel (ignored when names are given).")
    @flag("A", "Same as -o -a (compatibility).", hidden=True)
    @flag("b", "Print values as raw binary, without names or newlines.")
    @flag("d", "Print the description of each oid instead of its value.")
    @flag("e", "Separate name and value with '=' (output that sysctl can read back).")
    @click.option(
        "-f", "filename", metavar="filename", help="Process name=value lines from a file."
    )
    @flag("h", "Format numbers with thousands separators.")
    @flag("i", "Ignore unknown oids (the argument does not fail).")
    @flag("N", "Print names only.")
    @flag("n", "Print values only.")
    @flag("o", "Show opaque values too (there are none in the KTLS MIB).")
    @flag("q", "Do not report unknown oids (the argument still fails).")
    @flag("T", "Show only loader tunables.")
    @flag("t", "Print the type of each oid.")
    @flag("W", "Show only writable oids that are not statistics.")
    @flag("w", "Ignored (compatibility).", hidden=True)
    @flag("x", "Print values in hexadecimal.")
    @flag("X", "Same as -x -a (compatibility).", hidden=True)
    @click.argument("names", nargs=-1, metavar="name[=value] ...", shell_complete=_complete_names)
    @click.pass_obj
    def cli(env: Env, /, filename: str | None, names: tuple[str, ...], **letters: bool) -> None:
        """Get or set kernel state, as sysctl(8) does.

        A node (kern.ipc.tls) prints every leaf below it in the profile's fixed order;
        NAME=VALUE (or NAME:VALUE) sets a value and prints 'name: old -> new'.
        Exit status: 0 success, 1 if any argument failed, 2 usage error.
        """
        code = run(env, filename, names, **letters)
        if code:
            raise ExitStatus(code)

    return cli


__getattr__ = lazy_command(_click_command)


def _main(env: Env, flags: Flags, filename: str | None, names: list[str]) -> int:
    from ktls_core.sysctl import Mib, split_assignment

    if flags.N and flags.n:
        raise UsageError()
    list_all = flags.a and not names
    if not list_all and not names and filename is None:
        raise UsageError()
    items: list[tuple[str, int]] = []
    if filename is not None and not list_all:
        try:
            items = read_file(filename)
        except OSError as exc:  # err(EX_NOINPUT, "%s", filename): FreeBSD exits 66
            env.err(f"{TOOL}: {filename}: {exc.strerror}")
            return 1
    items += [(name, 0) for name in names]
    sets = (
        not flags.d
        and not (flags.T or flags.W)
        and any(split_assignment(arg)[1] is not None for arg, _ in items)
    )
    kernel = env.kernel()
    usage: UsageError | None = None
    with kernel.transaction() if sets else kernel.snapshot() as tx:
        run = Run(env, flags, tx, Mib.of(tx))
        if list_all:
            for leaf in run.mib.leaves():
                run.line(leaf)
        else:
            try:
                for arg, lineno in items:
                    if not run.parse(arg, lineno):
                        run.failures += 1
            except UsageError as exc:
                usage = exc  # what came before it is still printed, as sysctl(8) does
    run.output.replay(env)
    if usage is not None:
        raise usage
    if env.machine:
        from ktls_cli.render import document

        document(env, "sysctl", run.output.entries)
    return run.failures
