"""`ktls serve`: a small HTTPS/1.1 static-file server whose bodies go out by KTLS.

What nginx with `ssl_conf_command Options KTLS; sendfile on;` does, on the
simulated kernel: each accepted connection is registered under its real 4-tuple
(the simulated routes decide its egress), the TLS handshake runs in userland
(ktls_core.handshake), the transmit keys go through TCP_TXTLS_ENABLE, the
response head is written with write(2) and the file with sendfile(2) through the
simulated transmit path onto the real socket, and a close_notify ends the
connection as a type-21 record sent with sendmsg(2). Requests are read in
userland. `ktls switch_tls` from another shell moves a live download: the
transmit path re-reads the session between record batches.

Ctrl-C (or SIGTERM) stops the server: open connections are shut, and every
connection it registered leaves the state.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ktls_cli.env import Env

if TYPE_CHECKING:
    from types import FrameType

    from ktls_cli.realpeer import KernelSocket
    from ktls_core.handshake import HandshakeConfig, TlsHandshake
    from ktls_core.kernel import Kernel
    from ktls_core.tls.worker import WorkerPool

TOOL = "serve"
EXIT_OK, EXIT_FAILURE = 0, 1
MAX_CONNECTIONS = 64  # connections served at once; more wait in the listen queue
IDLE_TIMEOUT = 30.0  # seconds a keep-alive connection may sit between requests
ACCEPT_POLL = 0.2  # seconds between looks at the stop flag
SNDBUF = 256 * 1024  # bytes the host may hold ahead of the client

pass_env = click.make_pass_decorator(Env)


@dataclass
class Served:
    """One request, as the access log and the JSON document report it."""

    foreign_address: str
    foreign_port: int
    local_port: int
    method: str
    target: str
    status: int
    bytes: int  # body bytes sent
    version: str  # TLSv1.3
    cipher: str  # OpenSSL's suite name
    mode: str  # KTLS mode when the body started (sw, ifnet)
    mode_end: str  # and when it ended (switch_tls may have moved it)


@dataclass
class Failed:
    foreign_address: str
    foreign_port: int
    error: str


class Server:
    """The accept loop and its connection threads."""

    def __init__(
        self,
        env: Env,
        kernel: Kernel,
        listener: socket.socket,
        root: Path,
        config: HandshakeConfig,
    ) -> None:
        self.env = env
        self.kernel = kernel  # the main thread's; each connection thread gets its own
        self.listener = listener
        self.root = root
        self.config = config
        self.owner = f"serve:{os.getpid()}"
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.active: dict[threading.Thread, socket.socket] = {}
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self.served: list[Served] = []
        self.failed: list[Failed] = []

    # -- output (threads write whole lines under the lock) --

    def log(self, entry: Served) -> None:
        with self.lock:
            self.served.append(entry)
            if not self.env.machine:
                mode = (
                    entry.mode
                    if entry.mode == entry.mode_end
                    else f"{entry.mode}->{entry.mode_end}"
                )
                self.env.out(
                    f'{entry.foreign_address} {entry.foreign_port} "{entry.method} {entry.target}"'
                    f" {entry.status} {entry.bytes} {entry.version} {entry.cipher} {mode}"
                )
                self.env.stdout.flush()

    def fail(self, addr: tuple[str, int], message: str) -> None:
        with self.lock:
            self.failed.append(Failed(addr[0], addr[1], message))
            self.env.err(f"ktls {TOOL}: {addr[0]} {addr[1]}: {message}")

    # -- the loop --

    def run(self) -> None:
        self.listener.settimeout(ACCEPT_POLL)
        while not self.stop.is_set():
            if not self.slots.acquire(timeout=ACCEPT_POLL):
                continue
            try:
                sock, addr = self.listener.accept()
            except TimeoutError:
                self.slots.release()
                continue
            except OSError:
                self.slots.release()
                if self.stop.is_set():
                    break
                raise
            thread = threading.Thread(target=self._connection, args=(sock, addr), daemon=True)
            with self.lock:
                self.active[thread] = sock
            thread.start()

    def shutdown(self) -> None:
        """Stop accepting, cut open connections, wait for their threads, clean the state."""
        self.stop.set()
        self.listener.close()
        with self.lock:
            live = list(self.active.items())
        for _thread, sock in live:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in send or recv
        deadline = time.monotonic() + 10
        for thread, _sock in live:
            thread.join(max(0.0, deadline - time.monotonic()))
        from ktls_core.net import tcp

        with self.kernel.transaction() as tx:
            tcp.drop_owned(tx, self.owner)

    # -- one connection (its own thread and its own handle on the state) --

    def _connection(self, sock: socket.socket, addr: Any) -> None:
        from ktls_cli.realpeer import KernelSocket, PeerError, linger_close, thread_kernel
        from ktls_core.errors import KtlsError, StateError
        from ktls_core.handshake import HandshakeError, TlsHandshake

        peer = (str(addr[0]), int(addr[1]))
        kernel: Kernel | None = None
        ks: KernelSocket | None = None
        hs: TlsHandshake | None = None
        pool: WorkerPool | None = None
        try:
            sock.settimeout(IDLE_TIMEOUT)
            # A bounded send buffer (FreeBSD's sb_hiwat is too): the transmit path then
            # runs at the client's pace, so switch_tls acts on the rest of a download.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SNDBUF)
            kernel = thread_kernel(self.kernel)
            ks = KernelSocket(kernel, sock, self.owner)
            hs = TlsHandshake(self.config)
            pool = self._serve(ks, hs)
        except (HandshakeError, PeerError) as exc:
            self.fail(peer, str(exc))
        except KtlsError as exc:
            self.fail(peer, f"{exc.strerror}" + (f" ({exc.detail})" if exc.detail else ""))
        except StateError as exc:
            self.fail(peer, str(exc))
        except OSError as exc:
            if not self.stop.is_set():
                self.fail(peer, _os_error(exc))
        finally:
            if pool is not None:
                pool.shutdown()
            if ks is not None:
                try:
                    ks.unregister()
                except (KtlsError, StateError) as exc:
                    self.fail(peer, f"leaving the state: {exc}")
            linger_close(sock, hs, timeout=0.5 if self.stop.is_set() else 5.0)
            if kernel is not None:
                kernel.store.close()
            with self.lock:
                self.active.pop(threading.current_thread(), None)
            self.slots.release()

    def _serve(self, ks: KernelSocket, hs: TlsHandshake) -> WorkerPool | None:
        from ktls_cli import realpeer
        from ktls_core.errors import KtlsError
        from ktls_core.tls.worker import WorkerPool

        result = realpeer.handshake(ks.sock, hs)
        try:
            ks.enable(result.enable)
        except KtlsError as exc:
            # OpenSSL still owns the transmit side: end with its close_notify,
            # never with the response in the clear.
            ks.sock.sendall(hs.kernel_refused())
            raise realpeer.PeerError(
                realpeer.enable_failure(ks.kernel, result.enable, exc) + "; nothing was sent"
            ) from None
        with ks.kernel.snapshot() as tx:
            threads = tx.sysctl("kern.ipc.tls.stats.threads")
        pool = WorkerPool(max(1, threads))
        self._requests(ks, hs, result.protocol, result.cipher_name, pool)
        ks.close_notify(pool=pool)
        return pool

    def _requests(
        self, ks: KernelSocket, hs: TlsHandshake, protocol: str, cipher: str, pool: WorkerPool
    ) -> None:
        from ktls_cli import static_http as http
        from ktls_cli.adapters import BytesSource, FdSource

        buf = bytearray()
        peer = (ks.ep.faddr, ks.ep.fport)
        while not self.stop.is_set():
            try:
                request = http.parse_request(buf)
            except http.HttpError as exc:
                head, body = http.error_response(exc.status)
                ks.send(BytesSource(head + body), pool=pool)
                self.log(Served(*peer, ks.ep.lport, "-", "-", exc.status, len(body), protocol,
                                cipher, ks.mode(), ks.mode()))  # fmt: skip
                return
            if request is None:
                # The request may have come with the client's Finished: read what
                # OpenSSL holds before waiting on the socket.
                more = hs.read()
                if not more and not hs.peer_closed:
                    data = ks.sock.recv(65536)
                    hs.receive_data(data)
                    more = hs.read()
                    if not data:
                        hs.peer_closed = True
                buf += more
                if not more and hs.peer_closed:
                    return
                continue
            status, path = 200, None
            if request.method not in ("GET", "HEAD"):
                status = 405
            else:
                path = http.resolve(self.root, request.target)
                status = 200 if path is not None else 404
            keep_alive = request.keep_alive and status == 200
            head_only = request.method == "HEAD"
            mode = ks.mode()
            sent = 0
            if status != 200 or path is None:
                head, body = http.error_response(status, head_only=head_only)
                if status == 405:
                    head = head.replace(b"\r\n\r\n", b"\r\nAllow: GET, HEAD\r\n\r\n", 1)
                ks.send(BytesSource(head + body), pool=pool)
                sent = len(body)
            else:
                source = FdSource.open(str(path))
                try:
                    st = os.fstat(source.fd)
                    headers = [
                        ("Content-Type", http.content_type(path)),
                        ("Content-Length", str(st.st_size)),
                        ("Last-Modified", _http_date(st.st_mtime)),
                    ]
                    head = http.response_head(200, headers, keep_alive=keep_alive)
                    ks.send(BytesSource(head), pool=pool)
                    if not head_only and st.st_size:
                        result = ks.send(source, syscall="sendfile", pool=pool)
                        sent = result.bytes
                finally:
                    source.close()
            self.log(Served(*peer, ks.ep.lport, request.method, request.target, status, sent,
                            protocol, cipher, mode, ks.mode()))  # fmt: skip
            if not keep_alive:
                return


def _http_date(mtime: float) -> str:
    from email.utils import formatdate

    return formatdate(mtime, usegmt=True)


def _os_error(exc: OSError) -> str:
    if isinstance(exc, ConnectionResetError | BrokenPipeError):
        return "connection reset by peer"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return exc.strerror or str(exc)


def _listen(text: str) -> socket.socket:
    from ktls_cli.realpeer import parse_hostport

    try:
        host, port = parse_hostport(text, allow_zero=True)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--listen") from None
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise click.ClickException(f"listen {text}: {exc.strerror}") from None
    except UnicodeError:  # the IDNA encoding of a name that cannot be one (a label > 63)
        raise click.ClickException(f"listen {text}: not a valid host name") from None
    family, _, _, _, sockaddr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(sockaddr)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise click.ClickException(f"bind {text}: {exc.strerror or exc}") from None
    return sock


@click.command("serve")
@click.option(
    "--listen",
    default="127.0.0.1:8443",
    show_default=True,
    metavar="ADDR:PORT",
    help="Address to listen on ([ADDR]:PORT for IPv6; port 0 picks one).",
)
@click.option(
    "--root",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Directory whose files are served.",
)
@click.option(
    "--cert",
    "certfile",
    type=click.Path(exists=True, dir_okay=False),
    help="PEM certificate (chain); a self-signed one is made when omitted.",
)
@click.option(
    "--key",
    "keyfile",
    type=click.Path(exists=True, dir_okay=False),
    help="PEM private key (default: in the --cert file).",
)
@click.option("--tls-version", type=click.Choice(["1.2", "1.3"]), help="Accept only this version.")
@click.option("--ciphers", metavar="LIST", help="OpenSSL cipher list; TLS_* names set TLS 1.3's.")
@pass_env
def cli(
    env: Env,
    listen: str,
    root: Path,
    certfile: str | None,
    keyfile: str | None,
    tls_version: str | None,
    ciphers: str | None,
) -> None:
    """Serve files over HTTPS/1.1 with KTLS (GET and HEAD) until Ctrl-C.

    Each connection appears in `ktls netstat` while it runs; its response
    bodies go out by sendfile(2) through the simulated KTLS transmit path.
    Prints one line per request (client, request, status, bytes, TLS version,
    suite, KTLS mode); --format json prints one document when it stops.
    Exit status: 0 after Ctrl-C, 1 when it cannot start.
    """
    from ktls_cli import realpeer
    from ktls_core.handshake import HandshakeConfig, HandshakeError, Role, make_context

    if keyfile is not None and certfile is None:
        raise click.BadParameter("--key needs --cert", param_hint="--key")
    kernel = env.kernel()
    realpeer.drop_stale(kernel)
    tmpdir: str | None = None
    listener: socket.socket | None = None
    try:
        if certfile is None:
            tmpdir = tempfile.mkdtemp(prefix="ktls-serve-")
            certfile, keyfile = realpeer.self_signed_certificate(tmpdir)
            env.err(
                f"ktls {TOOL}: self-signed certificate for localhost, 127.0.0.1, ::1: {certfile}"
            )
        config = HandshakeConfig(Role.SERVER, tls_version=tls_version, ciphers=ciphers,
                                 certfile=certfile, keyfile=keyfile)  # fmt: skip
        try:
            make_context(config)  # a bad certificate or cipher list fails now, not per client
        except HandshakeError as exc:
            raise click.ClickException(str(exc)) from None
        _warn_disabled(env, kernel)
        listener = _listen(listen)
        host, port = listener.getsockname()[:2]
        shown = f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
        server = Server(env, kernel, listener, root, config)
        _run_until_signal(server, f"ktls {TOOL}: listening on https://{shown}/ (root {root})")
    finally:
        if listener is not None:
            listener.close()
        if tmpdir is not None:
            import shutil

            shutil.rmtree(tmpdir, ignore_errors=True)
    if env.machine:
        from ktls_cli.render import document

        document(env, TOOL, {
            "listen": shown,
            "root": str(root),
            "requests": [asdict(s) for s in server.served],
            "errors": [asdict(f) for f in server.failed],
        })  # fmt: skip
    raise click.exceptions.Exit(EXIT_OK)


def _warn_disabled(env: Env, kernel: Kernel) -> None:
    with kernel.snapshot() as tx:
        enabled = tx.sysctl("kern.ipc.tls.enable")
    if not enabled:
        env.err(
            f"ktls {TOOL}: warning: kern.ipc.tls.enable is 0: connections will be closed"
            " after the handshake (`ktls sysctl kern.ipc.tls.enable=1`)"
        )


def _run_until_signal(server: Server, announce: str) -> None:
    """Serve until SIGINT or SIGTERM, then shut down cleanly.

    `announce` (the listening line) is printed inside the guarded region: a
    script that signals as soon as it reads the line still gets a clean stop.
    """
    previous = signal.getsignal(signal.SIGTERM)

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        server.env.err(announce)
        server.env.stderr.flush()
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.shutdown()
