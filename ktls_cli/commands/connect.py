"""`ktls connect LOCAL FOREIGN [TLS options] [--count N]`: an application's connect(2).

The connection is ESTABLISHED at once (the handshake is not simulated); the
local address must be configured on an interface and the routing table must
reach the foreign one. With TLS options it then runs setsockopt(TCP_TXTLS_ENABLE)
as a second call: a failed enable leaves the connection open without TLS, prints
`setsockopt: TCP_TXTLS_ENABLE: <strerror>` and exits 1, as an application would.
A local port of 0 picks an ephemeral port. `--count N` creates N connections in
one transaction, stepping the foreign port (see ktls-connect(8)).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from ktls_cli.connections import conn_doc
from ktls_cli.env import Env
from ktls_cli.render import emit
from ktls_cli.tlsopts import collect, tls_options

if TYPE_CHECKING:
    from ktls_core.net.tcp import Conn
    from ktls_core.tls.session import Session

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
MAX_COUNT = 1_000_000

pass_env = click.make_pass_decorator(Env)


@click.command("connect")
@click.argument("local")
@click.argument("foreign")
@tls_options
@click.option(
    "--count",
    type=click.IntRange(1, MAX_COUNT),
    default=1,
    show_default=True,
    help="Create N connections, stepping the foreign port.",
)
@pass_env
def cli(env: Env, /, local: str, foreign: str, count: int, **kwargs: Any) -> None:
    """Open an ESTABLISHED TCP connection LOCAL -> FOREIGN (addr:port or addr.port).

    With TLS options, also enable KTLS transmit (TCP_TXTLS_ENABLE). Exit status:
    0 success, 1 failure (connect or enable), 2 usage error.
    """
    from ktls_cli.connections import ConnWordsError, parse
    from ktls_core.errors import KtlsError

    opts = collect(kwargs)
    try:
        ep = parse([local, foreign])
    except ConnWordsError as exc:
        if exc.usage:
            raise click.UsageError(exc.message) from None
        env.err(f"connect: {exc.message}")
        raise click.exceptions.Exit(EXIT_FAILURE) from None
    if count > 1 and opts.given and (opts.key or opts.iv or opts.auth_key or not opts.random_keys):
        # One key for many connections would reuse nonces across them.
        raise click.UsageError("--count with TLS options needs --random-keys (a key each)")
    kernel = env.kernel()
    from ktls_core.net import tcp

    try:
        with kernel.transaction() as tx:
            if count == 1:
                conns = [tcp.connect(tx, ep)]
            else:
                ids = tcp.connect_many(tx, ep, count)
                conns = [c for c in (tcp.get(tx, ids[0]), tcp.get(tx, ids[-1])) if c]
    except KtlsError as exc:
        env.err(f"connect: {exc.strerror}")
        raise click.exceptions.Exit(EXIT_FAILURE) from None

    sessions: dict[int, Session] = {}
    failure: KtlsError | None = None
    if opts.given:
        failure = _enable(env, kernel, conns, count, opts, sessions)

    def text() -> None:
        if count == 1:
            env.out(conns[0].name)
        else:
            env.out(f"{conns[0].name} .. {conns[-1].name} ({count} connections)")

    if count == 1:
        data: dict[str, Any] = {"connections": [conn_doc(conns[0], sessions.get(conns[0].id))]}
    else:
        data = {"count": count, "first": conns[0].name, "last": conns[-1].name}
    if failure is not None:
        data["error"] = {
            "call": "setsockopt",
            "errno": int(failure.errno),
            "error": failure.strerror,
        }
    emit(env, "connect", data, text)
    if failure is not None:
        env.err(f"setsockopt: TCP_TXTLS_ENABLE: {_enable_message(failure)}")
        raise click.exceptions.Exit(EXIT_FAILURE)


def _enable_message(exc: Exception) -> str:
    """strerror, plus why for the simulator's own refusal of a 2019 rec_seq."""
    from ktls_core.tls.enable import EnableError

    text = str(getattr(exc, "strerror", exc))
    if isinstance(exc, EnableError) and exc.rule.name.startswith("rec_seq"):
        return f"{text} ({exc.rule.description}; 'ktls state init --profile current' has it)"
    return text


def _enable(
    env: Env,
    kernel: Any,
    conns: list[Conn],
    count: int,
    opts: Any,
    sessions: dict[int, Session],
) -> Any:
    """TCP_TXTLS_ENABLE on the new connection(s); returns the first failure or None."""
    from ktls_cli.tlsopts import to_enable
    from ktls_core.errors import KtlsError
    from ktls_core.tls import session

    if count == 1:
        try:
            s = session.txtls_enable(
                kernel, conns[0].endpoints, lambda tx: to_enable(opts, tx.random_bytes)
            )
        except KtlsError as exc:
            return exc
        sessions[s.conn_id] = s
        return None
    # --count: one transaction for all; each failure is counted as FreeBSD counts it.
    from ktls_core.net import tcp

    with kernel.transaction() as tx:
        return session.enable_many(
            tx,
            tcp.id_range(tx, conns[0].id, conns[-1].id),
            lambda random_bytes: to_enable(opts, random_bytes),
        )
