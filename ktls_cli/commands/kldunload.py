"""`ktls kldunload [-fv] [-n] name ... | -i id ...`: unload kernel modules (kldunload(8)).

ktls_ocf's unload handler refuses with EBUSY unless the loader tunable
kern.ipc.tls.allow_unload is 1 (dmesg: `KTLS: Deregistering crypto method OCF
is not supported`), and while any software session uses the backend; `-f` does
not help. Like kldunload(8), the first failure ends the run with exit 1.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ktls_cli.env import Env
from ktls_cli.getopt import GetoptError, fast_argv, getopt, lazy_command, tool_command

if TYPE_CHECKING:
    import click

PROG = "kldunload"
USAGE = "usage: kldunload [-fv] -i id ...\n       kldunload [-fv] [-n] name ...\n"
EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class _Failed(Exception):
    """errx(1, ...): the message is out, the run ends with exit 1."""


def run(env: Env, argv: list[str]) -> int:
    """The command (main() of kldunload.c): the exit status."""
    from ktls_cli.render import document
    from ktls_core import kld
    from ktls_core.errors import Errno, KtlsError, strerror

    try:
        opts, words = getopt(PROG, argv, "finv")
    except GetoptError as exc:
        env.err(exc.message)
        env.stderr.write(USAGE)
        return EXIT_USAGE
    flags = {ch for ch, _ in opts}
    if not words or ("i" in flags and "n" in flags):
        env.stderr.write(USAGE)
        return EXIT_USAGE
    entries: list[dict[str, Any]] = []
    kernel = env.kernel()

    def fail(message: str) -> None:
        if env.machine:
            document(env, "kldunload", {"files": entries})
        env.err(f"{PROG}: {message}")
        raise _Failed

    try:
        for word in words:
            with kernel.transaction() as tx:
                if "i" in flags:
                    if not word.lstrip("-").isdigit() or int(word) < 0:
                        fail(f"Invalid ID {word}")
                    f = next((x for x in kld.files(tx) if x.id == int(word)), None)
                else:
                    f = kld.find_file(tx, word)
                    if f is None:
                        fail(f"can't find file {word}")
                if f is None:
                    what = "can't stat file" if "v" in flags else "can't unload file"
                    fail(f"{what}: {strerror(Errno.ENOENT)}")
                assert f is not None
                if "v" in flags and not env.machine:
                    env.out(f"Unloading {f.name}, id={f.id}")
                try:
                    kld.kldunload(tx, f)
                except KtlsError as exc:
                    failure: KtlsError | None = exc
                else:
                    failure = None
            if failure is not None:
                entries.append({"file": f.name, "id": f.id, "result": "error"})
                fail(f"can't unload file: {failure.strerror}")
            entries.append({"file": f.name, "id": f.id, "result": "unloaded"})
    except _Failed:
        return EXIT_FAILURE
    if env.machine:
        document(env, "kldunload", {"files": entries})
    return EXIT_OK


run_fast = fast_argv(run)


HELP = """Unload kernel modules (kldunload(8)).

    \b
    kldunload [-fv] -i id ...
    kldunload [-fv] [-n] name ...

    Exit status: 0 success, 1 failure, 2 usage error.
    """


def _click_command() -> click.Command:
    return tool_command("kldunload", run, HELP)


__getattr__ = lazy_command(_click_command)
