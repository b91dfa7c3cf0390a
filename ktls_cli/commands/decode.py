"""`ktls decode FILE (CONN | TLS options) [--first-seq N] [--pcap] [--plaintext OUT]`.

The peer's view of a TLS byte stream (an `ktls send --out` file, or with --pcap
the payload of a capture reassembled in TCP sequence order): every record is
opened with the session's keys and the sequence number it must carry, from
--first-seq on (default: the session's first sequence number, else 0). With
CONN the keys come from the state's session; otherwise from the TLS options.
TLS 1.0 AES-CBC chains IVs across records: for a stream that does not start at
the session's first record, give the chain IV with --iv.

Text output is one line per record and a summary; a record that does not open
(bad tag, MAC, padding, length) is reported with its sequence number and the
decoding goes on. A capture cut short in its last frame (its writer killed) is
decoded up to that frame, then the cut is reported on stderr. Exit 0 when every
record opened from a whole file, 1 otherwise.
"""

from __future__ import annotations

from typing import IO, TYPE_CHECKING, Any

import click

from ktls_cli.connections import complete
from ktls_cli.env import Env
from ktls_cli.tlsopts import collect, tls_options

if TYPE_CHECKING:
    from ktls_core.tls.record import SessionKeys
    from ktls_core.wire.pcap import PcapCut

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
READ_CHUNK = 1 << 20

pass_env = click.make_pass_decorator(Env)


@click.command("decode")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.argument("conn", nargs=-1, shell_complete=complete)
@tls_options
@click.option(
    "--first-seq", type=click.IntRange(0, 2**64 - 1), help="Sequence of the first record."
)
@click.option("--pcap", "is_pcap", is_flag=True, help="FILE is a pcap capture, not a byte stream.")
@click.option(
    "--plaintext", "plain_path", metavar="OUT", help="Write the plaintext to OUT (- stdout)."
)
@pass_env
def cli(
    env: Env,
    /,
    file: str,
    conn: tuple[str, ...],
    first_seq: int | None,
    is_pcap: bool,
    plain_path: str | None,
    **kwargs: Any,
) -> None:
    """Open every TLS record of FILE with CONN's keys (or the TLS options given).

    Exit status: 0 every record opened, 1 a record failed or FILE could not be
    read (or is a capture cut short), 2 usage error.
    """
    opts = collect(kwargs)
    keys, start, flow = _keys(env, conn, opts, first_seq)
    if plain_path == "-" and env.machine:
        raise click.UsageError("--plaintext - and --format json both want stdout")
    try:
        chunks, cut = _read(file, is_pcap, flow)
    except OSError as exc:
        env.err(f"decode: {file}: {exc.strerror}")
        raise click.exceptions.Exit(EXIT_FAILURE) from None
    except ValueError as exc:  # pcap.PcapError
        env.err(f"decode: {file}: {exc}")
        raise click.exceptions.Exit(EXIT_FAILURE) from None
    _decode(env, keys, start, chunks, plain_path, file, cut)


def _keys(
    env: Env, conn: tuple[str, ...], opts: Any, first_seq: int | None
) -> tuple[SessionKeys, int, tuple[str, int] | None]:
    """The keys, the first sequence number and (with CONN) the flow to take from a pcap."""
    from ktls_cli.commands.setsockopt import resolve
    from ktls_cli.tlsopts import session_keys
    from ktls_core.errors import KtlsError

    if not conn:
        if opts.random_keys:
            raise click.UsageError("decode cannot guess keys (--random-keys)")
        try:
            start = first_seq if first_seq is not None else opts.rec_seq or 0
            return session_keys(opts), start, None
        except KtlsError as exc:
            raise click.UsageError(f"bad TLS options: {exc.detail or exc.strerror}") from None
    if opts.given and (opts.key or opts.cipher or opts.version or opts.auth or opts.auth_key):
        raise click.UsageError("give CONN or TLS options, not both (only --iv goes with CONN)")
    ep = resolve(env, "decode", list(conn))
    from ktls_core.net import tcp
    from ktls_core.tls import session
    from ktls_core.tls.record import SessionKeys

    with env.kernel().snapshot() as tx:
        c = tcp.lookup(tx, ep)
        s = session.get(tx, c.id) if c is not None else None
    if c is None:
        env.err(f"decode: {ep}: No such process")
        raise click.exceptions.Exit(EXIT_FAILURE)
    if s is None:
        env.err(f"decode: {ep}: no KTLS session")
        raise click.exceptions.Exit(EXIT_FAILURE)
    keys = SessionKeys.from_enable(session.tls_enable(s))
    if opts.iv is not None:
        try:
            keys = keys.replace(iv=opts.iv)
        except KtlsError as exc:
            raise click.UsageError(f"--iv: {exc.detail}") from None
    return keys, s.start_seq if first_seq is None else first_seq, (c.laddr, c.lport)


def _read(path: str, is_pcap: bool, flow: tuple[str, int] | None) -> tuple[Any, PcapCut | None]:
    """The stream's bytes in chunks (a capture is reassembled first), and where the
    capture was cut short, if it was."""
    if is_pcap:
        from ktls_core.wire.pcap import NoPayloadError, PcapError, read_capture, reassemble

        capture = read_capture(_slurp(path))
        src, sport = flow if flow is not None else (None, None)
        try:
            stream, _key = reassemble(capture.segments, src=src, sport=sport)
        except NoPayloadError:
            if capture.cut is None:
                raise
            # The connection's payload may all lie past the cut: say that instead.
            raise PcapError(str(capture.cut)) from None
        return iter([stream]), capture.cut
    import sys

    # Opened here, so a missing file is reported before any output.
    fh: IO[bytes] = sys.stdin.buffer if path == "-" else open(path, "rb")  # noqa: SIM115
    return _chunks(fh), None


def _slurp(path: str) -> bytes:
    """A capture, whole (reassembly needs every segment); its magic number is checked
    first, so `--pcap /dev/zero` is refused at once instead of read forever."""
    import sys

    from ktls_core.wire.pcap import PCAP_MAGIC, PcapError

    fh: IO[bytes] = sys.stdin.buffer if path == "-" else open(path, "rb")  # noqa: SIM115
    try:
        head = fh.read(4)
        magics = (PCAP_MAGIC.to_bytes(4, "little"), PCAP_MAGIC.to_bytes(4, "big"))
        if len(head) == 4 and head not in magics:
            raise PcapError("not a pcap file (bad magic number)")
        return head + fh.read()
    finally:
        if fh is not sys.stdin.buffer:
            fh.close()


def _chunks(fh: IO[bytes]) -> Any:
    import sys

    try:
        while True:
            chunk = fh.read(READ_CHUNK)
            if not chunk:
                return
            yield chunk
    finally:
        if fh is not sys.stdin.buffer:
            fh.close()


def _decode(
    env: Env,
    keys: SessionKeys,
    start: int,
    chunks: Any,
    plain_path: str | None,
    file: str,
    cut: PcapCut | None,
) -> None:
    from ktls_cli.render import DocumentStream
    from ktls_core.errors import strerror
    from ktls_core.tls.suites import record_type_name
    from ktls_core.wire.decode import BadRecord, StreamDecoder

    decoder = StreamDecoder(keys, start)
    plain_out: IO[bytes] | None = None
    if plain_path == "-":
        env.stdout.flush()
        plain_out = env.stdout.buffer  # type: ignore[attr-defined]
    elif plain_path is not None:
        try:
            plain_out = open(plain_path, "wb")  # noqa: SIM115
        except OSError as exc:
            env.err(f"decode: {plain_path}: {exc.strerror}")
            raise click.exceptions.Exit(EXIT_FAILURE) from None
    text = env.stderr if plain_path == "-" else env.stdout
    # A long stream holds no list of its records: the document is written as it goes.
    stream = DocumentStream(env, "decode", "records") if env.machine else None
    good = bad = nbytes = 0
    first_bad: BadRecord | None = None

    def handle(events: list[Any]) -> None:
        nonlocal good, bad, nbytes, first_bad
        for ev in events:
            if isinstance(ev, BadRecord):
                bad += 1
                first_bad = first_bad or ev
                line = f"record {ev.index}: seq {ev.seq}, offset {ev.offset}: {strerror(ev.errno)}"
                doc = {"index": ev.index, "seq": ev.seq, "offset": ev.offset, "ok": False,
                       "errno": int(ev.errno), "error": ev.reason}  # fmt: skip
                line += f" ({ev.reason})"
            else:
                good += 1
                nbytes += ev.length
                if plain_out is not None:
                    plain_out.write(ev.plaintext)
                line = (
                    f"record {ev.index}: seq {ev.seq}, type {ev.type}"
                    f" ({record_type_name(ev.type)}), length {ev.length}, wire {ev.wire_length}"
                )
                doc = {"index": ev.index, "seq": ev.seq, "type": ev.type,
                       "type_name": record_type_name(ev.type), "version": f"0x{ev.version:04x}",
                       "length": ev.length, "wire_length": ev.wire_length, "ok": True}  # fmt: skip
            if stream is not None:
                stream.item(doc)
            else:
                text.write(line + "\n")

    try:
        for chunk in chunks:
            handle(decoder.feed(chunk))
        handle(decoder.close())
    except OSError as exc:
        if stream is not None:
            stream.finish({"error": {"errno": exc.errno, "error": exc.strerror}})
        env.err(f"decode: {exc.strerror}")
        raise click.exceptions.Exit(EXIT_FAILURE) from None
    finally:
        if plain_out is not None and plain_path != "-":
            plain_out.close()
        elif plain_out is not None:
            plain_out.flush()
    if stream is not None:
        summary: dict[str, Any] = {
            "record_count": good + bad, "bad_records": bad, "bytes": nbytes,
            "first_seq": start, "next_seq": decoder.next_seq,
        }  # fmt: skip
        if cut is not None:  # only then: a good capture's document is unchanged
            summary["capture_cut"] = {**cut._asdict(), "error": str(cut)}
        stream.finish(summary)
    else:
        verdict = "all authentic" if not bad else f"{bad} bad"
        count = "1 record" if good + bad == 1 else f"{good + bad} records"
        text.write(f"{count}, {nbytes} bytes, {verdict}\n")
    if first_bad is not None:
        # The report above may be redirected: the failure is said on stderr too.
        env.err(
            f"decode: {file}: {bad} bad record{'s' if bad > 1 else ''}, the first is record"
            f" {first_bad.index} (seq {first_bad.seq}, offset {first_bad.offset}):"
            f" {strerror(first_bad.errno)}"
        )
    if cut is not None:
        # As tcpdump's "truncated dump file": the frames before the cut are decoded
        # above, and the damaged capture fails the run even if every record opened.
        env.err(f"decode: {file}: {cut}")
    if first_bad is not None or cut is not None:
        raise click.exceptions.Exit(EXIT_FAILURE)
