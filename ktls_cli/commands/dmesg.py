"""`ktls dmesg [-ac]`: the kernel message buffer, as dmesg(8) prints it.

The simulated kernel keeps the last lines in a bounded ring (kernel.DMESG_LINES),
so the oldest messages fall out as new ones come. Every line is a kernel line
(-a changes nothing); -c clears the buffer after printing it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ktls_cli.env import Env
from ktls_cli.getopt import GetoptError, fast_argv, getopt, lazy_command, tool_command

if TYPE_CHECKING:
    import click

PROG = "dmesg"
USAGE = "usage: dmesg [-ac] [-M core [-N system]]\n"
EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def run(env: Env, argv: list[str]) -> int:
    """The command (what main() of dmesg.c does): the exit status."""
    from ktls_cli.render import emit

    try:
        opts, rest = getopt(PROG, argv, "acM:N:")
    except GetoptError as exc:
        env.err(exc.message)
        env.stderr.write(USAGE)
        return EXIT_USAGE
    flags = {ch for ch, _ in opts}
    if rest or flags & {"M", "N"}:
        # No crash dumps here: -M/-N name a core file the simulator cannot have.
        if flags & {"M", "N"} and not rest:
            env.err(f"{PROG}: -M and -N need a kernel core, which the simulator has none of")
        env.stderr.write(USAGE)
        return EXIT_USAGE
    kernel = env.kernel()
    if "c" in flags:
        with kernel.transaction() as tx:
            lines = tx.dmesg()
            tx.conn.execute("DELETE FROM dmesg")
    else:
        with kernel.snapshot() as tx:
            lines = tx.dmesg()

    def text() -> None:
        for line in lines:
            env.out(line)

    emit(env, "dmesg", {"lines": lines}, text)
    return EXIT_OK


run_fast = fast_argv(run)


HELP = """Print the kernel message buffer (dmesg(8)).

    \b
    dmesg [-ac]

    -a: all messages (the simulated kernel keeps only kernel messages);
    -c: clear the buffer after printing. Exit status: 0, 2 usage error.
    """


def _click_command() -> click.Command:
    return tool_command("dmesg", run, HELP)


__getattr__ = lazy_command(_click_command)
