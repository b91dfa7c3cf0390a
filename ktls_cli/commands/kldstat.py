"""`ktls kldstat [-dhqv] [-i id] [-n filename] | [-dq] [-m modname]`: kldstat(8).

The kernel (id 1) and every loaded module file, in the amd64 layout:
`Id Refs Address                Size Name`, then `%2d %4d %18p %8zx %s`.
`-h` prints sizes humanized, `-v` adds each file's path and its modules,
`-m` shows one module (`Id  Refs Name`), `-d` adds module data to module lines.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ktls_cli.env import Env
from ktls_cli.getopt import GetoptError, fast_argv, getopt, lazy_command, tool_command

if TYPE_CHECKING:
    import click

    from ktls_core.kld import LinkerFile

PROG = "kldstat"
USAGE = (
    "usage: kldstat [-d] [-h] [-q] [-v] [-i id] [-n filename]\n"
    "       kldstat [-d] [-q] [-m modname]\n"
)
EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
POINTER_WIDTH = 18  # "0x" + 16 hex digits on amd64


def humanize(size: int) -> str:
    """humanize_number(buf, 5, size, "", HN_AUTOSCALE, HN_B | HN_NOSPACE | HN_DECIMAL)."""
    units = ["B", "K", "M", "G", "T"]
    value = float(size)
    i = 0
    while value >= 1000 and i < len(units) - 1 and round(value) >= 1000:
        value /= 1024
        i += 1
    if i > 0 and value < 9.95:
        return f"{value:.1f}{units[i]}"
    return f"{round(value)}{units[i]}"


def header(human: bool) -> str:
    size = f"{'Size':>5}" if human else f"{'Size':>8}"
    return f"Id Refs Address{' ' * (POINTER_WIDTH - 7)} {size} Name"


def row(f: LinkerFile, human: bool) -> str:
    size = f"{humanize(f.size):>5}" if human else f"{f.size:8x}"
    return f"{f.id:2d} {f.refs:4d} {f'0x{f.address:016x}':>{POINTER_WIDTH}} {size} {f.name}"


def file_doc(f: LinkerFile) -> dict[str, Any]:
    return {
        "id": f.id,
        "refs": f.refs,
        "address": f"0x{f.address:016x}",
        "size": f.size,
        "name": f.name,
        "path": f.path,
        "modules": [{"id": mid, "name": name} for mid, name in f.modules],
    }


def run(env: Env, argv: list[str]) -> int:
    """The command (main() of kldstat.c): the exit status."""
    from ktls_cli.render import emit
    from ktls_core import kld
    from ktls_core.errors import Errno, strerror

    try:
        opts, rest = getopt(PROG, argv, "dhi:m:n:qv")
    except GetoptError as exc:
        env.err(exc.message)
        env.stderr.write(USAGE)
        return EXIT_USAGE
    values = dict(opts)
    flags = set(values)
    if rest or ("m" in flags and flags & {"h", "v", "i", "n"}) or ("i" in flags and "n" in flags):
        env.stderr.write(USAGE)
        return EXIT_USAGE
    human, verbose, quiet, data = "h" in flags, "v" in flags, "q" in flags, "d" in flags
    enoent = strerror(Errno.ENOENT)
    with env.kernel().snapshot() as tx:
        files = kld.files(tx)
        if "m" in flags:
            modname = str(values["m"])
            found = kld.find_module(tx, modname)
            if found is None:
                if not quiet:
                    env.err(f"{PROG}: can't find module {modname}: {enoent}")
                return EXIT_FAILURE
            mid, refs, name = found
            suffix = " (0, 0, 0x0)" if data else ""
            line = f"{mid:3d} {refs:4d} {name}{suffix}"
            doc = {"modules": [{"id": mid, "refs": refs, "name": name}]}
            emit(env, "kldstat", doc, lambda: env.out(f"Id  Refs Name\n{line}"))
            return EXIT_OK
    if "i" in flags:
        word = str(values["i"])
        picked = [f for f in files if word.isdigit() and f.id == int(word)]
        if not picked:
            env.err(f"{PROG}: can't stat file id {word}: {enoent}")
            return EXIT_FAILURE
        files = picked
    elif "n" in flags:
        word = str(values["n"])
        picked = [f for f in files if kld.module_name(f.name) == kld.module_name(word)]
        if not picked:
            if not quiet:
                env.err(f"{PROG}: can't find file {word}: {enoent}")
            return EXIT_FAILURE
        files = picked

    def text() -> None:
        env.out(header(human))
        for f in files:
            line = row(f, human)
            if verbose:
                env.out(f"{line} ({f.path})")
                env.out("\tContains modules:")
                env.out("\t\t Id Name")
                for mid, name in f.modules:
                    env.out(f"\t\t{mid:3d} {name}" + (" (0, 0, 0x0)" if data else ""))
            else:
                env.out(line)

    emit(env, "kldstat", {"files": [file_doc(f) for f in files]}, text)
    return EXIT_OK


run_fast = fast_argv(run)


HELP = """Show loaded kernel files and modules (kldstat(8)).

    \b
    kldstat [-d] [-h] [-q] [-v] [-i id] [-n filename]
    kldstat [-d] [-q] [-m modname]

    Exit status: 0 success, 1 not found, 2 usage error.
    """


def _click_command() -> click.Command:
    return tool_command("kldstat", run, HELP)


__getattr__ = lazy_command(_click_command)
