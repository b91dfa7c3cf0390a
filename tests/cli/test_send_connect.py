"""`ktls send --connect`: a real TLS server receives exactly what was sent through KTLS.

The server is `openssl s_server` (TLS 1.2 and 1.3, every suite KTLS offloads in
the current profile) or, for the failure cases, a small Python TLS server. What
s_server prints is what it decrypted: a wrong key, IV or sequence number shows
as bad_record_mac and no output.
"""

from __future__ import annotations

import json
import os
import re
import socket
import ssl
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest

TIMEOUT = 20.0
Ktls = Callable[..., Any]


class Cert(Protocol):
    """The conftest `cert` fixture: PEM paths of a self-signed localhost certificate."""

    cert: str
    key: str


@dataclass
class SServer:
    proc: subprocess.Popen[bytes]
    out: Path
    port: int

    def received(self) -> bytes:
        """What s_server decrypted, once it has ended (it ends on close_notify)."""
        self.proc.wait(timeout=TIMEOUT)
        return self.out.read_bytes()


@pytest.fixture
def s_server(
    cert: Cert, tmp_path: Path, require_tool: Callable[[str], str]
) -> Iterator[Callable[..., SServer]]:
    openssl = require_tool("openssl")
    procs: list[subprocess.Popen[bytes]] = []

    def start(*args: str) -> SServer:
        """One s_server; a probe connection takes the first of its two accepts."""
        for _attempt in range(3):
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            out = tmp_path / f"s_server{len(procs)}.out"
            with out.open("wb") as fh:
                proc = subprocess.Popen(
                    [openssl, "s_server", "-accept", str(port), "-naccept", "2", "-quiet",
                     "-cert", cert.cert, "-key", cert.key, *args],
                    stdin=subprocess.PIPE, stdout=fh, stderr=subprocess.DEVNULL,
                )  # fmt: skip
            procs.append(proc)
            deadline = time.monotonic() + TIMEOUT
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT).close()
                except OSError:
                    time.sleep(0.05)
                    continue
                return SServer(proc, out, port)
        raise AssertionError("openssl s_server did not start")

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=TIMEOUT)
        assert proc.stdin is not None
        proc.stdin.close()


@pytest.fixture
def current(state: str, ktls: Ktls, init_state: Ktls) -> str:
    init_state(state, "current")
    assert ktls("sysctl", "kern.ipc.tls.enable=1").exit == 0
    return state


def counter(ktls: Ktls, name: str) -> int:
    return int(ktls("sysctl", "-n", name).stdout)


def connections(ktls: Ktls) -> list[Any]:
    return list(json.loads(ktls("--format", "json", "netstat").stdout)["netstat"]["connections"])


# (version, s_server suite option, suite name as ktls prints it)
SUITES = [
    ("1.2", ["-cipher", "ECDHE-RSA-AES128-GCM-SHA256"], "TLS1.2 AES-128-GCM"),
    ("1.2", ["-cipher", "ECDHE-RSA-AES256-GCM-SHA384"], "TLS1.2 AES-256-GCM"),
    ("1.2", ["-cipher", "ECDHE-RSA-CHACHA20-POLY1305"], "TLS1.2 CHACHA20-POLY1305"),
    ("1.2", ["-cipher", "ECDHE-RSA-AES128-SHA256"], "TLS1.2 AES-128-CBC-SHA256"),
    ("1.2", ["-cipher", "ECDHE-RSA-AES256-SHA384"], "TLS1.2 AES-256-CBC-SHA384"),
    ("1.3", ["-ciphersuites", "TLS_AES_128_GCM_SHA256"], "TLS1.3 AES-128-GCM"),
    ("1.3", ["-ciphersuites", "TLS_AES_256_GCM_SHA384"], "TLS1.3 AES-256-GCM"),
    ("1.3", ["-ciphersuites", "TLS_CHACHA20_POLY1305_SHA256"], "TLS1.3 CHACHA20-POLY1305"),
]


@pytest.mark.parametrize(("version", "server_args", "suite"), SUITES,
                         ids=[f"{v}-{a[1]}" for v, a, _ in SUITES])  # fmt: skip
def test_s_server_receives_exactly_what_was_sent(
    current: str,
    ktls: Ktls,
    s_server: Callable[..., SServer],
    tmp_path: Path,
    version: str,
    server_args: list[str],
    suite: str,
) -> None:
    # 100 KiB by sendfile: seven records, the last one short.
    data = os.urandom(100 * 1024)
    src = tmp_path / "data.bin"
    src.write_bytes(data)
    server = s_server(f"-tls{version.replace('.', '_')}", *server_args)
    result = ktls("--format", "json", "send", "--connect", f"127.0.0.1:{server.port}",
                  "--insecure", "--tls-version", version, "--file", str(src),
                  "--syscall", "sendfile")  # fmt: skip
    assert result.exit == 0, result
    assert server.received() == data
    doc = json.loads(result.stdout)["send"]
    assert doc["suite"] == suite and doc["mode"] == "sw" and doc["bytes"] == len(data)
    # TLS 1.2 continues after the client's Finished (seq 0); TLS 1.3 starts afresh.
    first = 1 if version == "1.2" else 0
    assert (doc["first_seq"], doc["next_seq"]) == (first, first + 7)
    assert [r["type"] for r in doc["records"]] == [23] * 7 + [21]  # then close_notify
    assert doc["close_notify_seq"] == first + 7
    assert doc["handshake"]["protocol"] == f"TLSv{version}"
    # The connection was in the kernel for the send only.
    assert counter(ktls, "kern.ipc.tls.stats.offload_total") == 1
    assert counter(ktls, "kern.ipc.tls.stats.active") == 0
    assert connections(ktls) == []


def test_text_output_and_verified_certificate(
    current: str, ktls: Ktls, s_server: Callable[..., SServer], cert: Cert
) -> None:
    server = s_server("-tls1_3")
    result = ktls("send", "--connect", f"127.0.0.1:{server.port}", "--cafile", cert.cert,
                  "--server-name", "localhost", "--data", "hello, KTLS\n")  # fmt: skip
    assert result.exit == 0, result
    assert server.received() == b"hello, KTLS\n"
    lines = result.stdout.splitlines()
    conn = r"127\.0\.0\.1 \d+ 127\.0\.0\.1 \d+"
    assert re.fullmatch(rf"{conn}: TLSv1\.3 TLS_\S+, KTLS sw", lines[0]), lines
    assert re.fullmatch(rf"{conn}: 1 record, 12 bytes \(34 on the wire\), seq 0 to 0, next seq 1",
                        lines[1]), lines  # fmt: skip
    assert re.fullmatch(rf"{conn}: close_notify, seq 1", lines[2]), lines


def test_untrusted_certificate_fails(
    current: str, ktls: Ktls, s_server: Callable[..., SServer]
) -> None:
    server = s_server()
    result = ktls("send", "--connect", f"127.0.0.1:{server.port}", "--data", "x")
    assert result.exit == 1
    assert re.fullmatch(r"send: TLS handshake failed: .*self.signed certificate.*\n", result.stderr)
    assert server.received() == b""
    assert connections(ktls) == []


def test_ktls_disabled_sends_nothing(
    state: str, ktls: Ktls, init_state: Ktls, s_server: Callable[..., SServer]
) -> None:
    init_state(state, "current")  # kern.ipc.tls.enable=0
    server = s_server("-tls1_2")
    result = ktls("send", "--connect", f"127.0.0.1:{server.port}", "--insecure",
                  "--data", "must not leave")  # fmt: skip
    assert result.exit == 1
    assert result.stdout == ""
    assert result.stderr == (
        "send: TCP_TXTLS_ENABLE: Operation not supported: KTLS is disabled"
        " (kern.ipc.tls.enable=0); turn it on with `ktls sysctl kern.ipc.tls.enable=1`;"
        " nothing was sent\n"
    )
    # s_server saw OpenSSL's own close_notify: a clean end, and no data.
    assert server.received() == b""
    assert server.proc.returncode == 0
    assert connections(ktls) == []


def test_seed_profile_names_the_way_out(
    state: str, ktls: Ktls, init_state: Ktls, s_server: Callable[..., SServer]
) -> None:
    init_state(state, "seed")
    for setting in ("kern.ipc.tls.enable=1", "kern.ipc.mb_use_ext_pgs=1"):
        assert ktls("sysctl", setting).exit == 0
    assert ktls("kldload", "ktls_ocf").exit == 0
    # TLS 1.2 continues at sequence 1: the 2019 struct tls_enable has no rec_seq.
    server = s_server("-tls1_2")
    result = ktls("send", "--connect", f"127.0.0.1:{server.port}", "--insecure", "--data", "x")
    assert result.exit == 1
    assert "`ktls state init --profile current`" in result.stderr
    assert server.received() == b""
    # TLS 1.3 AES-GCM starts at 0: the seed kernel takes it.
    server = s_server("-tls1_3", "-ciphersuites", "TLS_AES_128_GCM_SHA256")
    result = ktls("send", "--connect", f"127.0.0.1:{server.port}", "--insecure", "--data", "y")
    assert result.exit == 0, result
    assert server.received() == b"y"


def test_connection_refused(current: str, ktls: Ktls) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here
    result = ktls("send", "--connect", f"127.0.0.1:{port}", "--insecure", "--data", "x")
    assert result.exit == 1
    assert result.stderr == f"send: connect to 127.0.0.1 port {port}: Connection refused\n"


def test_peer_reset_mid_stream(current: str, ktls: Ktls, cert: Cert, tmp_path: Path) -> None:
    """A server that resets after the first bytes: one line, exit 1, the state clean."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(TIMEOUT)
    port = listener.getsockname()[1]

    def serve_then_reset() -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert.cert, cert.key)
        conn, _ = listener.accept()
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
        with ctx.wrap_socket(conn, server_side=True) as tls:
            tls.settimeout(TIMEOUT)
            tls.recv(1024)
            tls.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    thread = threading.Thread(target=serve_then_reset, daemon=True)
    thread.start()
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(16 << 20))  # far more than the socket buffers hold
    try:
        result = ktls("send", "--connect", f"127.0.0.1:{port}", "--insecure",
                      "--file", str(big), "--syscall", "sendfile")  # fmt: skip
    finally:
        thread.join(TIMEOUT)
        listener.close()
    assert result.exit == 1
    assert re.fullmatch(
        r"send: 127\.0\.0\.1 \d+ 127\.0\.0\.1 \d+: connection reset by peer after \d+ bytes"
        r" on the wire\n", result.stderr
    ), result.stderr  # fmt: skip
    assert connections(ktls) == []
    assert counter(ktls, "kern.ipc.tls.stats.active") == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["127.0.0.1", "1", "127.0.0.1", "2"], "give CONN or --connect, not both"),
        (["--cafile", "/dev/null", "--insecure"], "--cafile and --insecure exclude each other"),
        (["--ciphers", "x"], None),
    ],
)
def test_usage_errors(current: str, ktls: Ktls, args: list[str], message: str | None) -> None:
    if message is None:  # handshake options without --connect
        result = ktls("send", "127.0.0.1", "1", "127.0.0.1", "2", "--data", "x", *args)
        assert result.exit == 2
        assert "--ciphers: only with --connect" in result.stderr
        return
    result = ktls("send", "--connect", "127.0.0.1:9", "--data", "x", *args)
    assert result.exit == 2
    assert message in result.stderr
