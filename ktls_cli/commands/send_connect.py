"""`ktls send --connect HOST:PORT ...`: the send over a real TLS connection.

What an OpenSSL application with KTLS does: a real TCP connection, the TLS
handshake in userland (ktls_core.handshake), the connection registered in the
simulated kernel under its real 4-tuple (the simulated routes pick its egress
and so what ifnet TLS can do), the transmit keys handed over with
TCP_TXTLS_ENABLE on the path `ktls setsockopt` takes, the data through the
simulated transmit path onto the socket, and a close_notify as a type-21
record through sendmsg(2). Reading stays in userland. The connection leaves
the state when the command ends, whatever happened.

When the kernel refuses the keys (KTLS disabled, a suite the profile cannot
offload, ...) the data is not sent: OpenSSL, which still owns the transmit
side, ends the connection with its own close_notify.

send.py owns the command; it calls `run()` when --connect is given, and
`connect_options` adds the handshake options to it.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import click

from ktls_cli.env import Env

if TYPE_CHECKING:
    from ktls_core.errors import KtlsError
    from ktls_core.handshake import HandshakeConfig
    from ktls_core.tls.output import SendResult

EXIT_FAILURE = 1
TOOL = "send"


class ConnectOptions(NamedTuple):
    target: str  # HOST:PORT
    tls_version: str | None
    ciphers: str | None
    cafile: str | None
    insecure: bool
    server_name: str | None

    def config(self, host: str) -> HandshakeConfig:
        from ktls_core.handshake import HandshakeConfig, Role

        return HandshakeConfig(
            Role.CLIENT,
            tls_version=self.tls_version,
            ciphers=self.ciphers,
            server_name=self.server_name or host,
            cafile=self.cafile,
            verify=not self.insecure,
        )


F = Callable[..., Any]


def connect_options(func: F) -> F:
    """Adds --connect and the handshake options; the command gets `connect=ConnectOptions|None`."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kw: Any) -> Any:
        target = kw.pop("connect_to")
        fields = {
            k: kw.pop(k) for k in ("tls_version", "ciphers", "cafile", "insecure", "server_name")
        }
        if target is None:
            given = [f"--{k.replace('_', '-')}" for k, v in fields.items() if v]
            if given:
                raise click.UsageError(f"{', '.join(given)}: only with --connect")
            kw["connect"] = None
        else:
            if fields["cafile"] and fields["insecure"]:
                raise click.UsageError("--cafile and --insecure exclude each other")
            kw["connect"] = ConnectOptions(target, **fields)
        return func(*args, **kw)

    options = [
        click.option(
            "--connect",
            "connect_to",
            metavar="HOST:PORT",
            help="Open a real TLS connection to HOST:PORT instead of naming CONN.",
        ),
        click.option(
            "--tls-version",
            type=click.Choice(["1.2", "1.3"]),
            help="With --connect: the only TLS version to offer.",
        ),
        click.option(
            "--ciphers",
            metavar="LIST",
            help="With --connect: OpenSSL cipher list (TLS_* names: TLS 1.3).",
        ),
        click.option(
            "--cafile",
            type=click.Path(exists=True, dir_okay=False),
            help="With --connect: trust these CA certificates.",
        ),
        click.option(
            "--insecure",
            is_flag=True,
            help="With --connect: do not verify the server's certificate.",
        ),
        click.option(
            "--server-name",
            metavar="NAME",
            help="With --connect: SNI and the name to verify (default HOST).",
        ),
    ]
    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper


class Failure(Exception):
    """One line for stderr; the command exits 1."""


def run(
    env: Env,
    connect: ConnectOptions,
    conn_words: tuple[str, ...],
    data: str | None,
    hexdata: str | None,
    path: str | None,
    use_stdin: bool,
    syscall: str,
    record_type: str | None,
    out_path: str | None,
    pcap_path: str | None,
    trace: bool,
) -> None:
    """The whole of `ktls send --connect`; raises click's Exit with the status."""
    from ktls_cli import realpeer
    from ktls_cli.commands import send_run as send_cmd

    if conn_words:
        raise click.UsageError("give CONN or --connect, not both")
    if sum([x is not None for x in (data, hexdata, path)] + [use_stdin]) != 1:
        raise click.UsageError("give exactly one of --data, --hex, --file, --stdin")
    if syscall == "sendfile" and path is None:
        raise click.UsageError("--syscall sendfile reads a regular file: use --file")
    if out_path == "-" and env.machine:
        raise click.UsageError("--out - and --format json both want stdout")
    try:
        host, port = realpeer.parse_hostport(connect.target)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--connect'") from None
    rtype = send_cmd._record_type(record_type, syscall)
    source = send_cmd._source(env, data, hexdata, path, use_stdin)
    wires: list[Any] = []
    stream: Any = None  # the document, streamed record by record (render.DocumentStream)
    try:
        if out_path is not None:
            wires.append(send_cmd._out_wire(env, out_path))
        if pcap_path is not None:
            from ktls_cli.adapters import PcapWire

            wires.append(PcapWire(pcap_path))
        if env.machine:
            from ktls_cli.render import DocumentStream

            stream = DocumentStream(env, TOOL, "records")
        on_event = send_cmd.event_sink(env, trace, stream)
        doc = _connect_and_send(
            env,
            connect,
            host,
            port,
            source,
            syscall,
            rtype,
            wires,
            on_event if trace or env.machine else None,
        )
    except Failure as exc:
        env.err(f"{TOOL}: {exc}")
        if stream is not None:
            stream.finish({"error": str(exc)})
        raise click.exceptions.Exit(EXIT_FAILURE) from None
    except OSError as exc:  # --out / --pcap / --file
        env.err(f"{TOOL}: {exc.filename or path or 'stdin'}: {exc.strerror}")
        if stream is not None:
            stream.finish({"error": f"{exc.filename or path or 'stdin'}: {exc.strerror}"})
        raise click.exceptions.Exit(EXIT_FAILURE) from None
    finally:
        send_cmd._close(source, wires)
    data_result: SendResult = doc.pop("result")
    if stream is not None:
        stream.finish({**send_cmd.result_doc(data_result), **doc})
    else:
        text_out = env.stderr if out_path == "-" else env.stdout
        hsk = doc["handshake"]
        text_out.write(
            f"{data_result.conn}: {hsk['protocol']} {hsk['cipher']}, KTLS {data_result.mode}\n"
        )
        text_out.write(send_cmd.summary(data_result) + "\n")
        text_out.write(f"{data_result.conn}: close_notify, seq {doc['close_notify_seq']}\n")


def _connect_and_send(
    env: Env,
    connect: ConnectOptions,
    host: str,
    port: int,
    source: Any,
    syscall: str,
    rtype: int | None,
    wires: list[Any],
    on_event: Any,
) -> dict[str, Any]:
    from ktls_cli import realpeer
    from ktls_cli.adapters import TeeWire
    from ktls_core.errors import KtlsError
    from ktls_core.handshake import HandshakeError, TlsHandshake

    kernel = env.kernel()
    realpeer.drop_stale(kernel)
    try:
        sock = realpeer.connect(host, port)
    except realpeer.PeerError as exc:
        raise Failure(str(exc)) from None
    ks: realpeer.KernelSocket | None = None
    hs: TlsHandshake | None = None
    try:
        try:
            ks = realpeer.KernelSocket(kernel, sock, realpeer.owner_tag(TOOL))
        except KtlsError as exc:
            ep = realpeer.endpoints(sock)
            raise Failure(f"{ep}: the simulated kernel refuses it: {_why(exc)}") from None
        try:
            hs = TlsHandshake(connect.config(host))
            result = realpeer.handshake(sock, hs)
        except (HandshakeError, realpeer.PeerError) as exc:
            raise Failure(str(exc)) from None
        try:
            session = ks.enable(result.enable)
        except KtlsError as exc:
            with contextlib.suppress(OSError):
                sock.sendall(hs.kernel_refused())
            message = realpeer.enable_failure(kernel, result.enable, exc)
            raise Failure(f"{message}; nothing was sent") from None
        wire = TeeWire([ks.wire, *wires]) if wires else ks.wire
        try:
            data_result = ks.send(
                source, syscall=syscall, record_type=rtype, wire=wire, on_event=on_event
            )
            notify = ks.close_notify(wire=wire, on_event=on_event)
        except KtlsError as exc:
            raise Failure(f"{syscall}: {_why(exc)}") from None
        except OSError as exc:
            if exc.filename is not None:
                raise
            reset = isinstance(exc, ConnectionResetError | BrokenPipeError)
            reason = "connection reset by peer" if reset else (exc.strerror or str(exc))
            raise Failure(f"{ks.ep}: {reason} after {ks.wire.sent} bytes on the wire") from None
        realpeer.linger_close(sock, hs)
        return {
            "result": data_result,
            "handshake": {
                "protocol": result.protocol,
                "cipher": result.cipher_name,
                "suite": result.suite.name,
                "mode": session.mode_name,
            },
            "close_notify_seq": notify.first_seq,
        }
    finally:
        if ks is not None:
            with contextlib.suppress(KtlsError):
                ks.unregister()
        sock.close()


def _why(exc: KtlsError) -> str:
    return exc.strerror + (f" ({exc.detail})" if exc.detail else "")
