"""`ktls kldload [-nqv] file ...`: load kernel modules, as kldload(8) does.

The only module file is ktls_ocf (ktls_ocf.ko): in the seed profile loading it
registers the OCF software backend (dmesg: `KTLS: Registering crypto method
OCF with prio 5`); in the current profile OCF is compiled into the kernel, so
the answer is EEXIST as for any module the kernel already has. Exit status: 0,
1 when any file failed, 2 usage error (FreeBSD exits 1 there).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ktls_cli.env import Env
from ktls_cli.getopt import GetoptError, fast_argv, getopt, lazy_command, tool_command

if TYPE_CHECKING:
    import click

PROG = "kldload"
USAGE = "usage: kldload [-nqv] file ...\n"
EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def _complete(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    from click.shell_completion import CompletionItem

    return [CompletionItem(n) for n in ("ktls_ocf",) if n.startswith(incomplete)]


def run(env: Env, argv: list[str]) -> int:
    """The command (main() of kldload.c): the exit status."""
    from ktls_cli.render import document
    from ktls_core import kld
    from ktls_core.errors import Errno, KtlsError

    try:
        opts, files = getopt(PROG, argv, "nqv")
    except GetoptError as exc:
        env.err(exc.message)
        env.stderr.write(USAGE)
        return EXIT_USAGE
    if not files:
        env.stderr.write(USAGE)
        return EXIT_USAGE
    flags = {ch for ch, _ in opts}
    code = EXIT_OK
    entries: list[dict[str, Any]] = []
    kernel = env.kernel()
    for word in files:
        name = kld.module_name(word)
        with kernel.transaction() as tx:
            present = kld.find_module(tx, name) is not None
            if present and "n" in flags:
                if "v" in flags and not env.machine:
                    env.out(f"{name} is already loaded")
                entries.append({"file": word, "result": "already loaded"})
                continue
            try:
                f = kld.kldload(tx, word)
            except KtlsError as exc:
                failure: KtlsError | None = exc
            else:
                failure = None
        if failure is not None:
            code = EXIT_FAILURE
            entries.append({"file": word, "result": "error", "error": failure.strerror})
            if "q" not in flags:
                if failure.errno == Errno.EEXIST:
                    env.err(f"{PROG}: can't load {word}: module already loaded or in kernel")
                else:
                    env.err(f"{PROG}: can't load {word}: {failure.strerror}")
            continue
        entries.append({"file": word, "result": "loaded", "id": f.id, "name": f.name})
        if "v" in flags and not env.machine:
            env.out(f"Loaded {word}, id={f.id}")
    if env.machine:
        document(env, "kldload", {"files": entries})
    return code


run_fast = fast_argv(run)


HELP = """Load kernel modules (kldload(8)): ktls_ocf.

    \b
    kldload [-nqv] file ...

    -n: do nothing for a module already loaded or compiled in; -q: no error
    messages; -v: say what was loaded. Exit status: 0 success, 1 a file failed,
    2 usage error.
    """


def _click_command() -> click.Command:
    return tool_command("kldload", run, HELP, complete=_complete)


__getattr__ = lazy_command(_click_command)
