"""`ktls serve` with real clients over loopback: curl, Python's ssl, switch_tls mid-download.

The server runs as its own process (it is stopped with SIGINT, as a user would);
the checks look at what the clients received (the sha256 of a 5 MiB random file),
at the access log, and at the simulated kernel through the CLI.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

TIMEOUT = 30.0  # any single wait on the server or a client
BIG = 5 * 1024 * 1024


# --- the server process -------------------------------------------------------------------


@dataclass
class Server:
    proc: subprocess.Popen[str]
    out: list[str] = field(default_factory=list)
    err: list[str] = field(default_factory=list)
    ready: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)
    port: int = 0
    cert: str = ""

    def _pump(self, stream: Any, lines: list[str]) -> None:
        for line in stream:
            lines.append(line.rstrip("\n"))
            match = re.search(r"listening on https://127\.0\.0\.1:(\d+)/", line)
            if match:
                self.port = int(match.group(1))
                self.ready.set()
            match = re.search(r"self-signed certificate .*: (\S+)$", line.rstrip("\n"))
            if match:
                self.cert = match.group(1)

    def start(self) -> None:
        for stream, lines in ((self.proc.stdout, self.out), (self.proc.stderr, self.err)):
            t = threading.Thread(target=self._pump, args=(stream, lines), daemon=True)
            t.start()
            self.threads.append(t)
        if not self.ready.wait(TIMEOUT):
            self.proc.kill()
            raise AssertionError(f"ktls serve did not start: {self.err}")

    def stop(self) -> int:
        """SIGINT, as Ctrl-C sends it; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(timeout=TIMEOUT)
        for t in self.threads:
            t.join(TIMEOUT)
        return code

    def url(self, path: str) -> str:
        return f"https://127.0.0.1:{self.port}{path}"


@pytest.fixture
def www(tmp_path: Path) -> Path:
    root = tmp_path / "www"
    root.mkdir()
    (root / "big.bin").write_bytes(os.urandom(BIG))
    (root / "index.html").write_text("<p>hello</p>\n")
    (tmp_path / "secret.txt").write_text("outside the root\n")
    return root


Ktls = Callable[..., Any]


@pytest.fixture
def current(state: str, ktls: Ktls, init_state: Ktls) -> str:
    """A current-profile state with KTLS on."""
    init_state(state, "current")
    assert ktls("sysctl", "kern.ipc.tls.enable=1").exit == 0
    return state


@pytest.fixture
def serve(state: str, www: Path) -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def start(*extra: str, fmt: str = "text") -> Server:
        argv = [sys.executable, "-m", "ktls_cli.main", "--state", state, "--format", fmt]
        argv += ["serve", "--listen", "127.0.0.1:0", "--root", str(www), *extra]
        proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=www.parent
        )
        server = Server(proc)
        servers.append(server)
        server.start()
        return server

    yield start
    for server in servers:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait(timeout=TIMEOUT)


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def netstat(ktls: Ktls) -> list[dict[str, Any]]:
    result = ktls("--format", "json", "netstat")
    assert result.exit == 0, result
    conns: list[dict[str, Any]] = json.loads(result.stdout)["netstat"]["connections"]
    return conns


def counter(ktls: Ktls, name: str) -> int:
    result = ktls("sysctl", "-n", name)
    assert result.exit == 0, result
    return int(result.stdout)


# --- curl ----------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_curl_downloads_5mib(
    current: str,
    ktls: Ktls,
    serve: Callable[..., Server],
    www: Path,
    tmp_path: Path,
    require_tool: Callable[[str], str],
    version: str,
) -> None:
    curl = require_tool("curl")
    server = serve()
    out = tmp_path / "download"
    flags = ["--tlsv1.2", "--tls-max", "1.2"] if version == "1.2" else ["--tlsv1.3"]
    # --cacert: the self-signed certificate serve made must verify for 127.0.0.1.
    result = subprocess.run(
        [curl, "-sS", "--fail", "--max-time", "60", "--cacert", server.cert, *flags,
         "-o", str(out), server.url("/big.bin")],
        capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert sha256_file(out) == sha256_file(www / "big.bin")
    assert server.stop() == 0
    (line,) = server.out
    assert re.fullmatch(
        rf'127\.0\.0\.1 \d+ "GET /big\.bin" 200 {BIG} TLSv{re.escape(version)} \S+ sw', line
    ), line
    # The connection was registered, offloaded, and is gone again.
    assert counter(ktls, "kern.ipc.tls.stats.offload_total") == 1
    assert counter(ktls, "kern.ipc.tls.stats.active") == 0
    assert netstat(ktls) == []
    assert not Path(server.cert).exists()  # the throwaway certificate went with the server


# --- Python's ssl ----------------------------------------------------------------------------


def https_get(
    port: int,
    cafile: str,
    requests: list[tuple[str, str]],
    *,
    src: str | None = None,
    version: str | None = None,
) -> list[tuple[int, dict[str, str], bytes]]:
    """Several requests on one keep-alive connection (http.client over ssl)."""
    import http.client

    ctx = ssl.create_default_context(cafile=cafile)
    if version is not None:
        pinned = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}[version]
        ctx.minimum_version = ctx.maximum_version = pinned
    conn = http.client.HTTPSConnection(
        "127.0.0.1", port, context=ctx, timeout=TIMEOUT,
        source_address=(src, 0) if src else None,
    )  # fmt: skip
    out = []
    try:
        for method, target in requests:
            conn.request(method, target)
            resp = conn.getresponse()
            body = resp.read()
            out.append((resp.status, {k.lower(): v for k, v in resp.getheaders()}, body))
    finally:
        conn.close()
    return out


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_python_client_keep_alive_head_and_errors(
    current: str, ktls: Ktls, serve: Callable[..., Server], www: Path, version: str
) -> None:
    server = serve()
    replies = https_get(server.port, server.cert, version=version, requests=[
        ("GET", "/big.bin"), ("HEAD", "/big.bin"), ("GET", "/"),
    ])  # fmt: skip
    (s1, _h1, b1), (s2, h2, b2), (s3, _h3, b3) = replies
    assert (s1, hashlib.sha256(b1).digest()) == (
        200,
        hashlib.sha256((www / "big.bin").read_bytes()).digest(),
    )
    assert (s2, h2["content-length"], b2) == (200, str(BIG), b"")
    assert (s3, b3) == (200, b"<p>hello</p>\n")
    # Errors close the connection: one request each.
    assert https_get(server.port, server.cert, [("GET", "/nope")])[0][0] == 404
    assert https_get(server.port, server.cert, [("GET", "/../secret.txt")])[0][0] == 404
    assert https_get(server.port, server.cert, [("GET", "/%2e%2e/secret.txt")])[0][0] == 404
    assert https_get(server.port, server.cert, [("DELETE", "/big.bin")])[0][0] == 405
    assert server.stop() == 0
    assert len(server.out) == 7
    assert all(f" TLSv{version} " in line for line in server.out[:3]), server.out
    # Three requests on the first connection, one TLS session: 4 more connections after it.
    assert counter(ktls, "kern.ipc.tls.stats.offload_total") == 5
    assert netstat(ktls) == []


def test_json_document_when_stopped(current: str, serve: Callable[..., Server], www: Path) -> None:
    server = serve(fmt="json")
    https_get(server.port, server.cert, [("GET", "/")])
    assert server.stop() == 0
    doc = json.loads("\n".join(server.out))["serve"]
    assert doc["listen"] == f"127.0.0.1:{server.port}"
    (req,) = doc["requests"]
    assert (req["method"], req["target"], req["status"], req["bytes"]) == ("GET", "/", 200, 13)
    assert (req["mode"], req["mode_end"]) == ("sw", "sw")
    assert doc["errors"] == []


# --- a slow client: the download is live while we look at it ---------------------------------


class SlowDownload(threading.Thread):
    """GET a file with a small receive buffer; pause after `pause_at` bytes until resumed."""

    def __init__(self, port: int, cafile: str, target: str, pause_at: int, src: str) -> None:
        super().__init__(daemon=True)
        self.port, self.cafile, self.target, self.pause_at, self.src = (
            port, cafile, target, pause_at, src
        )  # fmt: skip
        self.paused = threading.Event()
        self.resume = threading.Event()
        self.body = b""
        self.local_port = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            ctx = ssl.create_default_context(cafile=self.cafile)
            raw = socket.socket()
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            raw.bind((self.src, 0))
            raw.settimeout(TIMEOUT)
            raw.connect(("127.0.0.1", self.port))
            self.local_port = raw.getsockname()[1]
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                tls.sendall(f"GET {self.target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                            .encode())  # fmt: skip
                buf = bytearray()
                for _ in range(100_000):
                    chunk = tls.recv(16384)
                    if not chunk:
                        break
                    buf += chunk
                    if not self.paused.is_set() and len(buf) >= self.pause_at:
                        self.paused.set()
                        if not self.resume.wait(TIMEOUT):
                            raise TimeoutError("never resumed")
                self.body = bytes(buf).partition(b"\r\n\r\n")[2]
        except BaseException as exc:  # reported by the test
            self.error = exc
            self.paused.set()


@pytest.fixture
def nic_route(current: str, ktls: Ktls) -> str:
    """127.0.0.3 (the client's source) routed out of mce0, a NIC with TLS offload on."""
    assert ktls("ifconfig", "mce0", "txtls").exit == 0
    assert ktls("route", "add", "-host", "127.0.0.3", "-interface", "mce0").exit == 0
    return "127.0.0.3"


def _ocf_records(ktls: Ktls) -> int:
    return counter(ktls, "kern.ipc.tls.stats.ocf.tls13_gcm_encrypts") + counter(
        ktls, "kern.ipc.tls.stats.ocf.tls12_gcm_encrypts"
    )


@pytest.mark.parametrize(("start", "switch_flag", "end"), [("sw", "-i", "ifnet"),
                                                            ("ifnet", "-s", "sw")])  # fmt: skip
def test_switch_tls_during_a_download(
    nic_route: str,
    ktls: Ktls,
    serve: Callable[..., Server],
    www: Path,
    start: str,
    switch_flag: str,
    end: str,
) -> None:
    if start == "ifnet":
        # Allowed at enable time: the session starts on the NIC.
        assert ktls("sysctl", "kern.ipc.tls.ifnet.permitted=1").exit == 0
    server = serve()
    client = SlowDownload(server.port, server.cert, "/big.bin", 1 << 20, nic_route)
    client.start()
    assert client.paused.wait(TIMEOUT) and client.error is None, client.error
    # The connection is in the kernel, mid-download, in the starting mode.
    (conn,) = netstat(ktls)
    assert (conn["foreign_address"], conn["foreign_port"]) == (nic_route, client.local_port)
    assert conn["tls"]["mode"] == start
    name = f"127.0.0.1 {server.port} {nic_route} {client.local_port}"
    result = ktls("switch_tls", switch_flag, *name.split())
    assert result.stdout == f"{name}: switched\n", result
    assert netstat(ktls)[0]["tls"]["mode"] == end
    client.resume.set()
    client.join(TIMEOUT)
    assert client.error is None, client.error
    assert (
        hashlib.sha256(client.body).digest()
        == hashlib.sha256((www / "big.bin").read_bytes()).digest()
    )
    assert server.stop() == 0
    (line,) = server.out
    assert line.endswith(f" {start}->{end}"), line
    assert counter(ktls, f"kern.ipc.tls.stats.switch_to_{end}") == 1
    # Records went out both ways: software ones are counted by the OCF backend.
    records = 1 + BIG // 16384 + 1  # head, body, close_notify
    sealed_by_ocf = _ocf_records(ktls)
    assert 0 < sealed_by_ocf < records


# --- failures --------------------------------------------------------------------------------


def test_ktls_disabled_sends_nothing_in_the_clear(
    state: str, ktls: Ktls, init_state: Ktls, serve: Callable[..., Server]
) -> None:
    init_state(state, "current")  # kern.ipc.tls.enable stays 0
    server = serve()
    assert any("kern.ipc.tls.enable is 0" in line for line in server.err)
    ctx = ssl.create_default_context(cafile=server.cert)
    with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:  # fmt: skip
        tls.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        # Only OpenSSL's own close_notify comes back: no response, in the clear or not.
        assert tls.recv(65536) == b""
    assert server.stop() == 0
    assert server.out == []
    (message,) = [line for line in server.err if "TCP_TXTLS_ENABLE" in line]
    assert "KTLS is disabled (kern.ipc.tls.enable=0)" in message
    assert message.endswith("nothing was sent")
    assert counter(ktls, "kern.ipc.tls.stats.active") == 0
    assert netstat(ktls) == []


def test_client_reset_mid_download(
    current: str, ktls: Ktls, serve: Callable[..., Server], www: Path
) -> None:
    server = serve()
    ctx = ssl.create_default_context(cafile=server.cert)
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    raw.settimeout(TIMEOUT)
    raw.connect(("127.0.0.1", server.port))
    tls = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
    tls.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
    assert len(tls.recv(16384)) > 0
    # RST instead of FIN: close with a zero linger time.
    tls.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    tls.close()
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline and not any("by peer" in line for line in server.err):
        time.sleep(0.05)
    assert any(re.search(r"127\.0\.0\.1 \d+: connection reset by peer", e) for e in server.err), (
        server.err
    )
    for _ in range(100):  # the thread removes the connection right after it logs
        if not netstat(ktls):
            break
        time.sleep(0.05)
    assert netstat(ktls) == []
    # The server goes on serving.
    assert https_get(server.port, server.cert, [("GET", "/")])[0][0] == 200
    assert server.stop() == 0


def test_stop_removes_open_connections(
    current: str, ktls: Ktls, serve: Callable[..., Server]
) -> None:
    server = serve()
    ctx = ssl.create_default_context(cafile=server.cert)
    with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:  # fmt: skip
        tls.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # keep-alive: stays open
        assert b"200 OK" in tls.recv(65536)
        assert len(netstat(ktls)) == 1
        assert server.stop() == 0
    assert netstat(ktls) == []
    assert counter(ktls, "kern.ipc.tls.stats.active") == 0


def test_stale_connections_of_a_killed_server_are_removed(
    current: str, ktls: Ktls, serve: Callable[..., Server]
) -> None:
    first = serve()
    ctx = ssl.create_default_context(cafile=first.cert)
    with socket.create_connection(("127.0.0.1", first.port), timeout=TIMEOUT) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:  # fmt: skip
        tls.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"200 OK" in tls.recv(65536)
        first.proc.kill()  # SIGKILL: no cleanup
        first.proc.wait(TIMEOUT)
    assert len(netstat(ktls)) == 1
    second = serve()
    assert netstat(ktls) == []
    assert second.stop() == 0, second.err
