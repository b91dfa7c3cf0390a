"""`ktls getsockopt CONN OPTION`: getsockopt(2) at level IPPROTO_TCP.

TCP_TXTLS_MODE (40) gives the session's mode: TCP_TLS_MODE_NONE 0 without a
session, SW 1, IFNET 2 (a listening socket: EINVAL). TCP_TXTLS_ENABLE cannot be
read back (ENOPROTOOPT: keys are write-only), nor can any other option here.
Text output: `TCP_TXTLS_MODE: 1 (sw)`.
"""

from __future__ import annotations

from typing import Any

import click

from ktls_cli.commands.setsockopt import resolve, split_words
from ktls_cli.connections import complete
from ktls_cli.env import Env
from ktls_cli.render import emit

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2

pass_env = click.make_pass_decorator(Env)


@click.command("getsockopt")
@click.argument("words", nargs=-1, required=True, shell_complete=complete)
@pass_env
def cli(env: Env, words: tuple[str, ...]) -> None:
    """Read a TCP socket option of connection CONN.

    \b
    ktls getsockopt CONN TCP_TXTLS_MODE

    Exit status: 0 success, 1 the kernel refused, 2 usage error.
    """
    from ktls_core.errors import Errno, KtlsError
    from ktls_core.net import tcp
    from ktls_core.tls import session

    conn_words, name, value = split_words(words)
    if value:
        raise click.UsageError(f"getsockopt {name} takes no value")
    ep = resolve(env, "getsockopt", conn_words)
    try:
        with env.kernel().snapshot() as tx:
            conn = tcp.find(tx, ep)
            if name != "TCP_TXTLS_MODE":
                raise KtlsError(Errno.ENOPROTOOPT, f"{name} cannot be read")
            mode = session.get_mode(tx, conn)
    except KtlsError as exc:
        env.err(f"getsockopt: {name}: {exc.strerror}")
        raise click.exceptions.Exit(EXIT_FAILURE) from None
    data: dict[str, Any] = {
        "connection": conn.name,
        "option": name,
        "value": mode,
        "mode": session.mode_name(mode),
    }
    emit(env, "getsockopt", data, lambda: env.out(f"{name}: {mode} ({session.mode_name(mode)})"))
