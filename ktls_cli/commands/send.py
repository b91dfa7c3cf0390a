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

import click

from ktls_cli.commands.send_connect import ConnectOptions, connect_options
from ktls_cli.commands.send_run import MAX_REPEAT, SYSCALLS, SendArgs, run_send
from ktls_cli.connections import complete
from ktls_cli.env import Env
from ktls_cli.outcome import ExitStatus

pass_env = click.make_pass_decorator(Env)


@click.command("send")
@click.argument("conn", nargs=-1, shell_complete=complete)
@click.option("--data", metavar="TEXT", help="Send TEXT (UTF-8).")
@click.option("--hex", "hexdata", metavar="HEX", help="Send these bytes.")
@click.option("--file", "path", type=click.Path(dir_okay=False), help="Send the file's bytes.")
@click.option("--stdin", "use_stdin", is_flag=True, help="Send standard input until EOF.")
@click.option(
    "--syscall",
    type=click.Choice(SYSCALLS),
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
    if repeat > 1 and connect is not None:
        raise click.UsageError("--repeat is for a simulated connection (CONN), not --connect")
    if connect is not None:
        from ktls_cli.commands.send_connect import run

        return run(env, connect, conn, data, hexdata, path, use_stdin, syscall, record_type,
                   out_path, pcap_path, trace)  # fmt: skip
    args = SendArgs(conn, data, hexdata, path, use_stdin, syscall, record_type, out_path,
                    pcap_path, trace, repeat)  # fmt: skip
    code = run_send(env, args)
    if code:
        raise ExitStatus(code)
