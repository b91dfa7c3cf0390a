"""`ktls send CONN (--data|--hex|--file|--stdin) [...]`: write data on a connection.

One syscall (write(2), aio_write(2), sendfile(2) or sendmsg(2)) through the
simulated transmit path (ktls_core.tls.output): with KTLS the data becomes TLS
records (sequence numbers reserved in the state first), without it the plain
bytes go out as TCP would send them. `--out FILE` receives the byte stream the
peer's TCP delivers, `--pcap FILE` the frames on the egress interface.

`--record-type` is sendmsg's TLS_SET_RECORD_TYPE control message: only
sendmsg(2) carries control messages, so `--record-type` without
`--syscall sendmsg` is a usage error (FreeBSD offers no other way to set it).
sendfile(2) reads from a regular file, so it needs `--file`.

`--repeat N` is an application making that syscall N times with the same data:
each call frames its own records (100 bytes x 100,000 calls = 100,000 records of
100 bytes), and the N calls are reserved together.
"""

from __future__ import annotations

import sys
from typing import IO, TYPE_CHECKING, Any

import click

from ktls_cli.commands.send_connect import ConnectOptions, connect_options
from ktls_cli.connections import complete
from ktls_cli.env import Env

if TYPE_CHECKING:
    from ktls_core.tls.output import Framed, SendResult, Source, Wire

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
MAX_INLINE = 1 << 20  # --data / --hex: a command-line argument, bounded
MAX_REPEAT = 1_000_000_000
PROGRESS_MIN_BYTES = 8 << 20  # a progress bar only for inputs this large, on a terminal

pass_env = click.make_pass_decorator(Env)


def result_doc(r: SendResult) -> dict[str, Any]:
    return {
        "connection": r.conn,
        "syscall": r.syscall,
        "mode": r.mode,
        "version": r.version,
        "suite": r.suite,
        "record_type": r.record_type,
        "bytes": r.bytes,
        "wire_bytes": r.wire_bytes,
        "records_sent": r.records,
        "first_seq": r.first_seq,
        "next_seq": r.next_seq,
        "tcp_seq": r.tcp_seq,
        "interface": r.ifname,
        "calls": r.calls,
    }


def summary(r: SendResult) -> str:
    calls = f" in {r.calls} calls" if r.calls > 1 else ""
    if r.mode == "none" or r.first_seq is None:
        return f"{r.conn}: {r.bytes} bytes{calls}, no KTLS (TCP seq {r.tcp_seq})"
    last = f"{r.first_seq} to {r.next_seq - 1}" if r.records and r.next_seq else "none"
    records = "1 record" if r.records == 1 else f"{r.records} records"
    return (
        f"{r.conn}: {records}, {r.bytes} bytes{calls} ({r.wire_bytes} on the wire),"
        f" seq {last}, next seq {r.next_seq}"
    )


def record_doc(ev: Framed) -> dict[str, Any]:
    """One entry of the document's `records` list."""
    return {
        "seq": ev.seq,
        "type": ev.type,
        "length": ev.length,
        "wire_length": ev.wire_length,
        "mode": ev.mode,
    }


@click.command("send")
@click.argument("conn", nargs=-1, shell_complete=complete)
@click.option("--data", metavar="TEXT", help="Send TEXT (UTF-8).")
@click.option("--hex", "hexdata", metavar="HEX", help="Send these bytes.")
@click.option("--file", "path", type=click.Path(dir_okay=False), help="Send the file's bytes.")
@click.option("--stdin", "use_stdin", is_flag=True, help="Send standard input until EOF.")
@click.option(
    "--syscall",
    type=click.Choice(["write", "aio_write", "sendfile", "sendmsg"]),
    default="write",
    show_default=True,
    help="The system call that sends.",
)
@click.option(
    "--record-type",
    metavar="N|NAME",
    help="TLS record type (sendmsg TLS_SET_RECORD_TYPE): 0-255, alert, handshake, ...",
)
@click.option("--out", "out_path", metavar="FILE", help="Write the byte stream to FILE (- stdout).")
@click.option("--pcap", "pcap_path", metavar="FILE", help="Write the frames as a pcap file.")
@click.option("--trace", is_flag=True, help="Print the kernel's events on stderr.")
@click.option(
    "--repeat",
    type=click.IntRange(1, MAX_REPEAT),
    default=1,
    metavar="N",
    help="Make the system call N times with the same data (each call its own records).",
)
@connect_options  # --connect HOST:PORT and its handshake options (issue 7, send_connect.py)
@pass_env
def cli(
    env: Env,
    conn: tuple[str, ...],
    data: str | None,
    hexdata: str | None,
    path: str | None,
    use_stdin: bool,
    syscall: str,
    record_type: str | None,
    out_path: str | None,
    pcap_path: str | None,
    trace: bool,
    repeat: int,
    connect: ConnectOptions | None,
) -> None:
    """Send data on connection CONN through the simulated transmit path.

    CONN is `laddr lport faddr fport` or `laddr:lport faddr:fport`; or, with
    --connect HOST:PORT, a real TLS connection (handshake in userland, then
    KTLS). Exactly one of --data, --hex, --file, --stdin. Exit status: 0
    success, 1 the send failed (the syscall's errno is printed), 2 usage error.
    """
    from ktls_cli.connections import resolve
    from ktls_cli.render import DocumentStream
    from ktls_core.errors import Errno, KtlsError

    if repeat > 1 and connect is not None:
        raise click.UsageError("--repeat is for a simulated connection (CONN), not --connect")
    if connect is not None:
        from ktls_cli.commands.send_connect import run

        return run(env, connect, conn, data, hexdata, path, use_stdin, syscall, record_type,
                   out_path, pcap_path, trace)  # fmt: skip
    if not conn:
        raise click.UsageError("missing CONN (or --connect HOST:PORT)")

    sources = [x is not None for x in (data, hexdata, path)] + [use_stdin]
    if sum(sources) != 1:
        raise click.UsageError("give exactly one of --data, --hex, --file, --stdin")
    if repeat > 1 and use_stdin:
        raise click.UsageError("--repeat sends the same data again: standard input is read once")
    rtype = _record_type(record_type, syscall)
    if syscall == "sendfile" and path is None:
        env.err("sendfile: Invalid argument (sendfile(2) reads a regular file: use --file)")
        raise click.exceptions.Exit(EXIT_FAILURE)
    if (out_path == "-") and env.machine:
        raise click.UsageError("--out - and --format json both want stdout")
    ep = resolve(env, syscall, list(conn))
    source = _source(env, data, hexdata, path, use_stdin, repeat)
    if repeat > 1 and source.size() == 0:
        _close(source, [])
        raise click.UsageError("--repeat: there is no data to repeat")
    if syscall == "sendfile" and not getattr(source, "regular", False):
        env.err(f"sendfile: Invalid argument ({path} is not a regular file)")
        raise click.exceptions.Exit(EXIT_FAILURE)
    wires: list[Any] = []
    try:
        if out_path is not None:
            wires.append(_out_wire(env, out_path))
        if pcap_path is not None:
            from ktls_cli.adapters import PcapWire

            wires.append(PcapWire(pcap_path))
    except OSError as exc:
        _close(source, wires)
        env.err(f"send: {exc.filename}: {exc.strerror}")
        raise click.exceptions.Exit(EXIT_FAILURE) from None
    text_out = env.stderr if out_path == "-" else env.stdout
    # Every machine format is streamed record by record: a long send holds no list.
    stream = DocumentStream(env, "send", "records") if env.machine else None

    def on_event(ev: object) -> None:
        from ktls_core.tls.output import Framed

        if trace:
            describe = getattr(ev, "describe", None)
            if describe is not None:
                env.stderr.write(f"{describe()}\n")
        if isinstance(ev, Framed) and stream is not None:
            stream.item(record_doc(ev))

    want_events = trace or env.machine
    try:
        result = _run(
            env, ep, source, syscall, rtype, wires, on_event if want_events else None, repeat
        )
    except KtlsError as exc:
        if stream is not None:
            stream.finish({"error": {"errno": int(exc.errno), "error": exc.strerror}})
        if exc.errno == Errno.ESRCH:  # no such connection
            env.err(f"{syscall}: {ep}: {exc.strerror}")
        else:
            env.err(f"{syscall}: {exc.strerror}")
        raise click.exceptions.Exit(EXIT_FAILURE) from None
    except OSError as exc:
        if stream is not None:
            stream.finish({"error": {"errno": exc.errno, "error": exc.strerror}})
        where = exc.filename or path or "stdin"
        env.err(f"send: {where}: {exc.strerror}")
        raise click.exceptions.Exit(EXIT_FAILURE) from None
    finally:
        _close(source, wires)
    if stream is not None:
        stream.finish(result_doc(result))
    else:
        text_out.write(summary(result) + "\n")


def _record_type(text: str | None, syscall: str) -> int | None:
    from ktls_core.errors import KtlsError
    from ktls_core.tls.suites import parse_record_type

    if text is None:
        return None
    if syscall != "sendmsg":
        raise click.UsageError(
            "--record-type needs --syscall sendmsg (only sendmsg(2) carries the"
            " TLS_SET_RECORD_TYPE control message)"
        )
    try:
        return parse_record_type(text)
    except KtlsError as exc:
        raise click.BadParameter(exc.detail, param_hint="'--record-type'") from None


def _source(
    env: Env,
    data: str | None,
    hexdata: str | None,
    path: str | None,
    use_stdin: bool,
    repeat: int = 1,
) -> Source:
    from ktls_cli.adapters import BytesSource, FdSource, StreamSource

    if data is not None:
        raw = data.encode("utf-8", errors="surrogateescape")
        if len(raw) > MAX_INLINE:
            raise click.BadParameter("more than 1 MiB: use --file", param_hint="'--data'")
        return BytesSource(raw, repeat)
    if hexdata is not None:
        from ktls_cli.tlsopts import parse_hex

        # The text first (separators allowed: "aa:bb" is 3 characters a byte), then the bytes.
        raw = b"" if len(hexdata) > 3 * MAX_INLINE else parse_hex(hexdata, "--hex")
        if len(hexdata) > 3 * MAX_INLINE or len(raw) > MAX_INLINE:
            raise click.BadParameter("more than 1 MiB: use --file", param_hint="'--hex'")
        return BytesSource(raw, repeat)
    if path is not None:
        try:
            return FdSource.open(path, repeat)
        except OSError as exc:
            env.err(f"send: {path}: {exc.strerror}")
            raise click.exceptions.Exit(EXIT_FAILURE) from None
    buffer: IO[bytes] = sys.stdin.buffer if hasattr(sys.stdin, "buffer") else sys.stdin  # type: ignore[assignment]
    try:
        fd = buffer.fileno()
    except (OSError, AttributeError, ValueError):
        return StreamSource(buffer)
    return FdSource(fd, regular=False, size=None)


def _out_wire(env: Env, out_path: str) -> Wire:
    from ktls_cli.adapters import OutWire, StreamWire

    if out_path == "-":
        env.stdout.flush()
        buffer = getattr(env.stdout, "buffer", None)
        if buffer is not None:
            try:
                buffer.fileno()
            except (OSError, ValueError, AttributeError):
                return StreamWire(buffer)
            buffer.flush()
        else:
            raise click.UsageError("--out -: standard output takes no bytes here")
    return OutWire.open(out_path)


def _close(source: object, wires: list[Any]) -> None:
    close = getattr(source, "close", None)
    if close is not None:
        close()
    for wire in wires:
        wire.close()


def _run(
    env: Env,
    ep: Any,
    source: Source,
    syscall: str,
    rtype: int | None,
    wires: list[Any],
    on_event: Any,
    calls: int = 1,
) -> SendResult:
    from ktls_cli.adapters import TeeWire
    from ktls_core.tls.output import send

    wire = None if not wires else wires[0] if len(wires) == 1 else TeeWire(wires)
    size = source.size()
    kernel = env.kernel()
    if env.stderr_is_tty and size is not None and size >= PROGRESS_MIN_BYTES:
        return _with_progress(env, size, lambda cb: send(
            kernel, ep, source, syscall=syscall, record_type=rtype, wire=wire,
            on_event=on_event, progress=cb, calls=calls,
        ))  # fmt: skip
    return send(kernel, ep, source, syscall=syscall, record_type=rtype, wire=wire,
                on_event=on_event, calls=calls)  # fmt: skip


def _with_progress(env: Env, size: int, run: Any) -> SendResult:
    """A transient rich progress bar on stderr (people only; never when piped)."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    with Progress(
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=env.err_console(),
        transient=True,
    ) as progress:
        task = progress.add_task("send", total=size)
        result: SendResult = run(lambda done: progress.update(task, completed=done))
    return result
