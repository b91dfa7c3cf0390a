"""`ktls setsockopt CONN OPTION [VALUE] [TLS options]`: setsockopt(2) at level IPPROTO_TCP.

Options (netinet/tcp.h): TCP_TXTLS_ENABLE (39) takes the TLS options (struct
tls_enable) and runs ktls_enable_tx() in FreeBSD's order, each failure with its
errno: `setsockopt: TCP_TXTLS_ENABLE: Operation not supported`, exit 1.
TCP_TXTLS_MODE (40) with `sw|ifnet|1|2` is ktls_set_tx_mode() (the ifnet
issue registers it in SETTERS). Any other option is ENOPROTOOPT, as a kernel
without it answers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from ktls_cli.connections import complete
from ktls_cli.connections import resolve as resolve  # its home moved; getsockopt, decode use it
from ktls_cli.env import Env
from ktls_cli.render import emit
from ktls_cli.tlsopts import TlsOptions, collect, tls_options

if TYPE_CHECKING:
    from ktls_core.net.tcp import Endpoints

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2

# netinet/tcp.h option numbers.
OPTIONS = {
    "TCP_TXTLS_ENABLE": 39,
    "TCP_TXTLS_MODE": 40,
    "TCP_RXTLS_ENABLE": 41,
    "TCP_RXTLS_MODE": 42,
}
OPTION_NAMES = {v: k for k, v in OPTIONS.items()}

pass_env = click.make_pass_decorator(Env)

# What setsockopt does per option: (env, endpoints, value words, TLS options) -> JSON data.
# A setter raises KtlsError for the kernel's answer and click.UsageError for bad words.
Setter = Callable[[Env, "Endpoints", list[str], TlsOptions], dict[str, Any]]
SETTERS: dict[str, Setter] = {}


def split_words(words: tuple[str, ...]) -> tuple[list[str], str, list[str]]:
    """CONN words (2 or 4), the option (name or number), then its value words."""
    for i, word in enumerate(words):
        if i in (2, 4) and (word.upper() in OPTIONS or word.isdigit()):
            name = word.upper() if word.upper() in OPTIONS else OPTION_NAMES.get(int(word), word)
            return list(words[:i]), name, list(words[i + 1 :])
    raise click.UsageError("expected CONN (2 or 4 words) followed by an option name")


def set_enable(env: Env, ep: Endpoints, value: list[str], opts: TlsOptions) -> dict[str, Any]:
    """TCP_TXTLS_ENABLE: struct tls_enable from the TLS options."""
    from ktls_cli.tlsopts import to_enable
    from ktls_core.tls import session

    if value:
        raise click.UsageError("TCP_TXTLS_ENABLE takes TLS options, not a value")
    if not opts.given:
        raise click.UsageError("TCP_TXTLS_ENABLE needs TLS options (--key ... or --random-keys)")
    s = session.txtls_enable(env.kernel(), ep, lambda tx: to_enable(opts, tx.random_bytes))
    return {
        "mode": s.mode_name,
        "version": s.suite.version,
        "suite": s.suite.name,
        "first_seq": s.start_seq,
        "backend": s.backend,
        "send_tag": s.tag_port,
    }


SETTERS["TCP_TXTLS_ENABLE"] = set_enable


def set_mode(env: Env, ep: Endpoints, value: list[str], opts: TlsOptions) -> dict[str, Any]:
    """TCP_TXTLS_MODE: ktls_set_tx_mode() (the ifnet issue's txmode.txtls_mode())."""
    from ktls_core.tls import ifnet_tls, txmode

    if len(value) != 1:
        raise click.UsageError("TCP_TXTLS_MODE takes one value: sw, ifnet, 1 or 2")
    change = txmode.txtls_mode(env.kernel(), ep, ifnet_tls.parse_mode(value[0]))
    return {
        "old": ifnet_tls.mode_name(change.old),
        "new": ifnet_tls.mode_name(change.new),
        "changed": change.changed,
    }


SETTERS["TCP_TXTLS_MODE"] = set_mode


@click.command(
    "setsockopt",
    context_settings={"ignore_unknown_options": False, "help_option_names": ["--help"]},
)
@click.argument("words", nargs=-1, required=True, shell_complete=complete)
@tls_options
@pass_env
def cli(env: Env, /, words: tuple[str, ...], **kwargs: Any) -> None:
    """Set a TCP socket option on connection CONN.

    \b
    ktls setsockopt CONN TCP_TXTLS_ENABLE [TLS options]
    ktls setsockopt CONN TCP_TXTLS_MODE sw|ifnet

    CONN is `laddr lport faddr fport` or `laddr:lport faddr:fport`. Exit status:
    0 success, 1 the kernel refused (the errno is printed), 2 usage error.
    """
    from ktls_cli.commands.connect import _enable_message
    from ktls_core.errors import Errno, KtlsError

    opts = collect(kwargs)
    conn_words, name, value = split_words(words)
    ep = resolve(env, "setsockopt", conn_words)
    setter = SETTERS.get(name)
    try:
        if setter is None:
            raise KtlsError(Errno.ENOPROTOOPT, f"{name} is not supported")
        if name != "TCP_TXTLS_ENABLE" and opts.given:
            raise click.UsageError(f"TLS options go with TCP_TXTLS_ENABLE, not {name}")
        data = setter(env, ep, value, opts)
    except KtlsError as exc:
        env.err(f"setsockopt: {name}: {_enable_message(exc)}")
        raise click.exceptions.Exit(EXIT_FAILURE) from None
    doc = {"connection": str(ep), "option": name, **data}
    emit(env, "setsockopt", doc, lambda: None)
