"""The body of `ktls send` on a simulated connection, and its click-free fast path.

send.py declares the command to click (options, help, completion, --connect);
this module does the work and never imports click, so that `ktls send CONN
--data x` can run from main's fast path: `run_fast()` reads the words itself
when they are plain long options (OPTIONS) and gives up (None) on anything
click should say or handle: --help, --connect and its options, --hex, a
repeated option, an unknown word, a value click would refuse. A usage error
found later (UsageFailure) also goes back to click, which runs the command
from the start and words it; nothing was changed before it. A test holds
OPTIONS and send.py's click options to the same names, kinds and choices.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any, NamedTuple

from ktls_cli.env import Env
from ktls_cli.outcome import ExitStatus, UsageFailure

if TYPE_CHECKING:
    from ktls_core.tls.output import Framed, SendResult, Source, Wire

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
MAX_INLINE = 1 << 20  # --data / --hex: a command-line argument, bounded
MAX_REPEAT = 1_000_000_000
PROGRESS_MIN_BYTES = 8 << 20  # a progress bar only for inputs this large, on a terminal
SYSCALLS = ("write", "aio_write", "sendfile", "sendmsg")


class SendArgs(NamedTuple):
    """The command's arguments, as click or run_fast() read them."""

    conn: tuple[str, ...] = ()
    data: str | None = None
    hexdata: str | None = None
    path: str | None = None
    use_stdin: bool = False
    syscall: str = "write"
    record_type: str | None = None
    out_path: str | None = None
    pcap_path: str | None = None
    trace: bool = False
    repeat: int = 1


# The options run_fast() reads: option -> (SendArgs field, takes a value).
# --hex and the --connect options are click's alone.
OPTIONS: dict[str, tuple[str, bool]] = {
    "--data": ("data", True),
    "--file": ("path", True),
    "--stdin": ("use_stdin", False),
    "--syscall": ("syscall", True),
    "--record-type": ("record_type", True),
    "--out": ("out_path", True),
    "--pcap": ("pcap_path", True),
    "--trace": ("trace", False),
    "--repeat": ("repeat", True),
}


def parse_fast(words: list[str]) -> SendArgs | None:
    """SendArgs when click would read `words` to exactly these, else None."""
    given: dict[str, Any] = {}
    conn: list[str] = []
    i = 0
    while i < len(words):
        word = words[i]
        i += 1
        if not word.startswith("-") or word == "-":
            conn.append(word)
            continue
        name, eq, value = word.partition("=")
        spec = OPTIONS.get(name)
        if spec is None:
            return None  # --help, --hex, --connect..., --, a typo: click's
        field, takes_value = spec
        if field in given:
            return None
        if not takes_value:
            if eq:
                return None
            given[field] = True
            continue
        if not eq:
            if i >= len(words):
                return None
            value = words[i]
            i += 1
        given[field] = value
    if given.get("syscall", "write") not in SYSCALLS:
        return None
    if "repeat" in given:
        text = given["repeat"]
        if not (text.isascii() and text.isdigit() and 1 <= int(text) <= MAX_REPEAT):
            return None
        given["repeat"] = int(text)
    if "path" in given and os.path.isdir(given["path"]):
        return None  # click.Path(dir_okay=False) says so
    return SendArgs(conn=tuple(conn), **given)


def run_fast(env: Env, words: list[str]) -> int | None:
    """main's fast path: the exit status, or None to let click run the command."""
    args = parse_fast(words)
    if args is None:
        return None
    try:
        return run_send(env, args)
    except UsageFailure:
        return None
    except ExitStatus as exc:
        return exc.code


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


def event_sink(env: Env, trace: bool, stream: Any) -> Callable[[object], None]:
    """on_event for the transmit path: --trace lines on stderr, and each framed record
    into the streamed document (render.DocumentStream) when there is one."""

    def on_event(ev: object) -> None:
        from ktls_core.tls.output import Framed

        if trace:
            describe = getattr(ev, "describe", None)
            if describe is not None:
                env.stderr.write(f"{describe()}\n")
        if isinstance(ev, Framed) and stream is not None:
            stream.item(record_doc(ev))

    return on_event


def record_doc(ev: Framed) -> dict[str, Any]:
    """One entry of the document's `records` list."""
    return {
        "seq": ev.seq,
        "type": ev.type,
        "length": ev.length,
        "wire_length": ev.wire_length,
        "mode": ev.mode,
    }


def run_send(env: Env, a: SendArgs) -> int:
    """The send on a simulated connection (not --connect): the exit status.

    UsageFailure is raised only before anything is opened or changed, so the
    fast path can hand the whole command to click to say it.
    """
    conn, data, hexdata, path, use_stdin = a.conn, a.data, a.hexdata, a.path, a.use_stdin
    syscall, record_type, out_path, pcap_path = a.syscall, a.record_type, a.out_path, a.pcap_path
    trace, repeat = a.trace, a.repeat
    from ktls_cli.connections import resolve
    from ktls_cli.render import DocumentStream
    from ktls_core.errors import Errno, KtlsError

    if not conn:
        raise UsageFailure("missing CONN (or --connect HOST:PORT)")

    sources = [x is not None for x in (data, hexdata, path)] + [use_stdin]
    if sum(sources) != 1:
        raise UsageFailure("give exactly one of --data, --hex, --file, --stdin")
    if repeat > 1 and use_stdin:
        raise UsageFailure("--repeat sends the same data again: standard input is read once")
    rtype = _record_type(record_type, syscall)
    if syscall == "sendfile" and path is None:
        env.err("sendfile: Invalid argument (sendfile(2) reads a regular file: use --file)")
        return EXIT_FAILURE
    if (out_path == "-") and env.machine:
        raise UsageFailure("--out - and --format json both want stdout")
    ep = resolve(env, syscall, list(conn))
    source = _source(env, data, hexdata, path, use_stdin, repeat)
    if repeat > 1 and source.size() == 0:
        _close(source, [])
        raise UsageFailure("--repeat: there is no data to repeat")
    if syscall == "sendfile" and not getattr(source, "regular", False):
        env.err(f"sendfile: Invalid argument ({path} is not a regular file)")
        return EXIT_FAILURE
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
        return EXIT_FAILURE
    text_out = env.stderr if out_path == "-" else env.stdout
    # Every machine format is streamed record by record: a long send holds no list.
    stream = DocumentStream(env, "send", "records") if env.machine else None

    on_event = event_sink(env, trace, stream)
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
        return EXIT_FAILURE
    except OSError as exc:
        if stream is not None:
            stream.finish({"error": {"errno": exc.errno, "error": exc.strerror}})
        where = exc.filename or path or "stdin"
        env.err(f"send: {where}: {exc.strerror}")
        return EXIT_FAILURE
    finally:
        _close(source, wires)
    if stream is not None:
        stream.finish(result_doc(result))
    else:
        text_out.write(summary(result) + "\n")
    return EXIT_OK


def _record_type(text: str | None, syscall: str) -> int | None:
    from ktls_core.errors import KtlsError
    from ktls_core.tls.suites import parse_record_type

    if text is None:
        return None
    if syscall != "sendmsg":
        raise UsageFailure(
            "--record-type needs --syscall sendmsg (only sendmsg(2) carries the"
            " TLS_SET_RECORD_TYPE control message)"
        )
    try:
        return parse_record_type(text)
    except KtlsError as exc:
        raise UsageFailure(exc.detail, param_hint="'--record-type'") from None


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
            raise UsageFailure("more than 1 MiB: use --file", param_hint="'--data'")
        return BytesSource(raw, repeat)
    if hexdata is not None:
        from ktls_cli.tlsopts import parse_hex

        # The text first (separators allowed: "aa:bb" is 3 characters a byte), then the bytes.
        raw = b"" if len(hexdata) > 3 * MAX_INLINE else parse_hex(hexdata, "--hex")
        if len(hexdata) > 3 * MAX_INLINE or len(raw) > MAX_INLINE:
            raise UsageFailure("more than 1 MiB: use --file", param_hint="'--hex'")
        return BytesSource(raw, repeat)
    if path is not None:
        try:
            return FdSource.open(path, repeat)
        except OSError as exc:
            env.err(f"send: {path}: {exc.strerror}")
            raise ExitStatus(EXIT_FAILURE) from None
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
            raise UsageFailure("--out -: standard output takes no bytes here")
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
