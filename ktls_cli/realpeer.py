"""Real TCP peers for `ktls send --connect` and `ktls serve`: the socket adapter.

The core stays sans-IO: `ktls_core.handshake.TlsHandshake` takes and returns
bytes, and the transmit path returns the bytes for the wire. This module owns
the sockets: connecting, the handshake loop under a deadline, the 4-tuple the
simulated kernel registers the connection under, and a self-signed certificate
for `serve`. Its errors are `PeerError`, one line for the user.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ktls_core.errors import KtlsError
    from ktls_core.handshake import HandshakeResult, TlsHandshake
    from ktls_core.kernel import Kernel
    from ktls_core.net.tcp import Endpoints
    from ktls_core.tls.enable import TlsEnable
    from ktls_core.tls.output import EventSink, Link, SendResult, Source, Wire
    from ktls_core.tls.session import Session
    from ktls_core.tls.worker import WorkerPool

HANDSHAKE_TIMEOUT = 30.0  # seconds for the whole handshake
IO_TIMEOUT = 30.0  # seconds for one send or receive once connected


class PeerError(Exception):
    """A real-peer failure, worded for one line on stderr."""


def parse_hostport(text: str, *, allow_zero: bool = False) -> tuple[str, int]:
    """`HOST:PORT` or `[IPV6]:PORT` (a bare `::1:443` would be ambiguous)."""
    host, sep, port = text.rpartition(":")
    lowest = 0 if allow_zero else 1
    if not sep or not host or not port.isdigit() or not lowest <= int(port) <= 65535:
        raise ValueError(f"{text!r} is not HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"{text!r}: write an IPv6 address as [ADDRESS]:PORT")
    return host, int(port)


def connect(host: str, port: int, timeout: float = IO_TIMEOUT) -> socket.socket:
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except socket.gaierror as exc:
        raise PeerError(f"{host}: {exc.strerror}") from None
    except UnicodeError:  # the IDNA encoding of a name that cannot be one (a label > 63)
        raise PeerError(f"{host}: not a valid host name") from None
    except OSError as exc:
        raise PeerError(f"connect to {host} port {port}: {exc.strerror or exc}") from None
    sock.settimeout(timeout)
    return sock


def _canonical(addr: str) -> tuple[int, str]:
    ip = ipaddress.ip_address(addr.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # a dual-stack socket's IPv4 peer is an IPv4 connection
    return ip.version, ip.compressed


def endpoints(sock: socket.socket) -> Endpoints:
    """The socket's real 4-tuple, as the simulated kernel names connections."""
    from ktls_core.net.tcp import Endpoints

    local, peer = sock.getsockname(), sock.getpeername()
    lfam, laddr = _canonical(str(local[0]))
    ffam, faddr = _canonical(str(peer[0]))
    if lfam != ffam:  # cannot happen for one TCP socket; keeps the types honest
        raise PeerError(f"mixed address families {laddr} / {faddr}")
    return Endpoints(lfam, laddr, int(local[1]), faddr, int(peer[1]))


def handshake(
    sock: socket.socket, hs: TlsHandshake, timeout: float = HANDSHAKE_TIMEOUT
) -> HandshakeResult:
    """Run `hs` to completion over `sock`, flush OpenSSL's last bytes, hand off the keys.

    Raises PeerError for a peer that resets, closes or stalls, and lets
    HandshakeError (the TLS failure itself) through.
    """
    deadline = time.monotonic() + timeout
    try:
        sock.sendall(hs.data_to_send())
        while not hs.complete:
            left = deadline - time.monotonic()
            if left <= 0:
                raise PeerError(f"TLS handshake timed out after {timeout:g} s")
            sock.settimeout(min(left, IO_TIMEOUT))
            data = sock.recv(65536)
            try:
                hs.receive_data(data)
            finally:
                # An alert OpenSSL wrote for a failure still goes to the peer.
                pending = hs.data_to_send()
                if pending:
                    sock.sendall(pending)
    except TimeoutError:
        raise PeerError(f"TLS handshake timed out after {timeout:g} s") from None
    except OSError as exc:
        raise PeerError(f"TLS handshake: {exc.strerror or exc}") from None
    finally:
        sock.settimeout(IO_TIMEOUT)
    return hs.handoff()


def self_signed_certificate(
    directory: str,
    names: tuple[str, ...] = ("localhost",),
    addresses: tuple[str, ...] = ("127.0.0.1", "::1"),
) -> tuple[str, str]:
    """A fresh P-256 certificate and key in `directory` (key file 0600): (cert, key)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0] if names else "ktls")])
    now = datetime.datetime.now(datetime.UTC)
    alt: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    alt += [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path = os.path.join(directory, "cert.pem")
    key_path = os.path.join(directory, "key.pem")
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    with open(cert_path, "wb") as fh:
        fh.write(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


# --- the connection in the simulated kernel ----------------------------------------------


class SocketWire:
    """tcp_output()'s ready bytes onto the real socket (output.Wire); counts what left."""

    # A socket takes about its send buffer at a time (Linux autotunes it up to a few
    # MiB): 1 MiB batches keep `serve`'s 64 downloads at ~3 MiB of buffers each.
    batch_bytes = 1 << 20

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sent = 0

    def transmit(self, data: memoryview, tcp_seq: int, link: Link) -> None:
        self.sock.sendall(data)
        self.sent += len(data)


CLOSE_NOTIFY = bytes([1, 0])  # alert level warning(1), description close_notify(0)
ALERT = 21


def owner_tag(command: str) -> str:
    """`serve:PID`: whose connections these are (removed when the process exits)."""
    return f"{command}:{os.getpid()}"


def drop_stale(kernel: Kernel, commands: tuple[str, ...] = ("send", "serve")) -> int:
    """Remove connections whose owning `ktls send --connect`/`serve` process is gone."""
    from ktls_core.net import tcp

    dropped = 0
    with kernel.transaction() as tx:
        owners = {c.owner for c in tcp.iter_conns(tx) if c.owner}
        for owner in sorted(owners):
            command, _, pid = owner.partition(":")
            if command in commands and pid.isdigit() and not _alive(int(pid)):
                dropped += tcp.drop_owned(tx, owner)
    return dropped


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def thread_kernel(kernel: Kernel) -> Kernel:
    """Another handle on `kernel`'s state, for a thread (sqlite3 ties a connection to one).

    Not Kernel.open(): Store.open() reads the file's header with open() and
    close(), and a close() drops every POSIX lock this process holds on the file,
    also the SHARED lock SQLite's open connections keep in WAL mode; a process
    that then closes its own connection believes it is the last, checkpoints and
    removes the WAL under ours (SQLITE_IOERR_SHORT_READ). The file was checked
    when `kernel` was opened, so this handle connects without touching it.
    """
    import sqlite3

    from ktls_core.kernel import Kernel
    from ktls_core.store import BUSY_TIMEOUT_MS, Store

    conn = sqlite3.connect(kernel.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    return Kernel(Store(kernel.path, conn, False))


class KernelSocket:
    """A real connected socket, registered in the simulated kernel under its 4-tuple.

    The simulated routing table decides the egress (and so what ifnet TLS can
    do); the real socket carries the bytes. `close()` removes the connection.
    """

    def __init__(self, kernel: Kernel, sock: socket.socket, owner: str) -> None:
        from ktls_core.net import tcp

        self.kernel = kernel
        self.sock = sock
        self.ep = endpoints(sock)
        self.wire = SocketWire(sock)
        with kernel.transaction() as tx:
            self.conn = tcp.connect(tx, self.ep, owner=owner)

    def enable(self, params: TlsEnable) -> Session:
        """setsockopt(TCP_TXTLS_ENABLE) on the same path as `ktls setsockopt`:
        every gate, errno and counter applies (a failure's counters are committed)."""
        from ktls_core.tls import session as sessions

        return sessions.txtls_enable(self.kernel, self.ep, lambda tx: params)

    def send(
        self,
        source: Source,
        *,
        syscall: str = "write",
        record_type: int | None = None,
        on_event: EventSink | None = None,
        progress: Callable[[int], None] | None = None,
        pool: WorkerPool | None = None,
        wire: Wire | None = None,
    ) -> SendResult:
        """One syscall through the simulated transmit path onto the socket (or `wire`,
        which should include `self.wire`)."""
        from ktls_core.tls import output

        return output.send(
            self.kernel, self.ep, source, syscall=syscall, record_type=record_type,
            wire=wire or self.wire, on_event=on_event, progress=progress, pool=pool,
        )  # fmt: skip

    def close_notify(
        self,
        *,
        pool: WorkerPool | None = None,
        wire: Wire | None = None,
        on_event: EventSink | None = None,
    ) -> SendResult:
        """The alert KTLS applications send at the end: a type-21 record via sendmsg."""
        from ktls_cli.adapters import BytesSource

        return self.send(
            BytesSource(CLOSE_NOTIFY), syscall="sendmsg", record_type=ALERT, pool=pool,
            wire=wire, on_event=on_event,
        )  # fmt: skip

    def mode(self) -> str:
        """The session's mode as stored now: none, sw or ifnet (switch_tls may change it)."""
        from ktls_core.net import tcp
        from ktls_core.tls import session as sessions

        with self.kernel.snapshot() as tx:
            conn = tcp.lookup(tx, self.ep)
            s = None if conn is None else sessions.get(tx, conn.id)
        return "gone" if conn is None else ("none" if s is None else s.mode_name)

    def unregister(self) -> None:
        """The connection leaves the simulated kernel (and its session with it)."""
        from ktls_core.net import tcp

        with self.kernel.transaction() as tx:
            conn = tcp.lookup(tx, self.ep)
            if conn is not None:
                tcp.drop(tx, conn)


def linger_close(sock: socket.socket, hs: TlsHandshake | None, timeout: float = 5.0) -> None:
    """Close after our last record: FIN, then read until the peer's EOF (bounded).

    Closing with unread input makes the host send RST, which can destroy records
    the peer has not read yet; reading also lets userland see the peer's close_notify.
    """
    deadline = time.monotonic() + timeout
    try:
        sock.shutdown(socket.SHUT_WR)
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            data = sock.recv(65536)
            if hs is not None:
                from ktls_core.handshake import HandshakeError

                with contextlib.suppress(HandshakeError):
                    hs.receive_data(data)
                    hs.read()
            if not data:
                break
    except OSError:
        pass
    finally:
        sock.close()


def enable_failure(kernel: Kernel, params: TlsEnable, exc: KtlsError) -> str:
    """TCP_TXTLS_ENABLE's error and what would make it work, on one line."""
    from ktls_core import kld
    from ktls_core.tls.enable import EnableContext, EnableError, first_failure

    text = f"TCP_TXTLS_ENABLE: {exc.strerror}"
    suite = params.suite.name
    rule = exc.rule.name if isinstance(exc, EnableError) else None
    hints = {
        "enable_off": "KTLS is disabled (kern.ipc.tls.enable=0);"
        " turn it on with `ktls sysctl kern.ipc.tls.enable=1`",
        "no_ext_pgs": "unmapped mbufs are off (kern.ipc.mb_use_ext_pgs=0);"
        " turn them on with `ktls sysctl kern.ipc.mb_use_ext_pgs=1`",
        "cbc_disabled": f"{suite} needs kern.ipc.tls.cbc_enable=1",
    }
    if rule in hints:
        return f"{text}: {hints[rule]}"
    with kernel.snapshot() as tx:
        era, backend = tx.era, kld.ocf_present(tx)
    if era == "seed" and rule is None and not backend:
        return f"{text}: no software backend; load it with `ktls kldload ktls_ocf`"
    if era == "seed":
        modern = EnableContext(
            enable=True, listening=False, is_tcp=True, has_session=False, cbc_enable=True,
            mb_use_ext_pgs=True, era="current",
        )  # fmt: skip
        if first_failure(modern, params) is None:
            return (
                f"{text}: the seed kernel cannot offload {suite};"
                " `ktls state init --profile current` can"
            )
    detail = f" ({exc.detail})" if exc.detail else ""
    return f"{text}: the kernel cannot offload {suite}{detail}"
