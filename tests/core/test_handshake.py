"""ktls_core.handshake against real TLS peers over loopback.

Each test runs a real handshake (openssl s_server / s_client, or Python's own
ssl), takes the extracted struct tls_enable, encrypts records with the
test-local `Sealer` below (written from RFC 5246/5288/7905/8446, sharing no code
with the module) and checks the peer prints exactly the bytes sent: a wrong
key, IV, MAC key or starting sequence number gives bad_record_mac instead.
"""

from __future__ import annotations

import hmac
import os
import socket
import ssl
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from ktls_core import handshake as hs_mod
from ktls_core.handshake import (
    HandshakeConfig,
    HandshakeError,
    HandshakeResult,
    Role,
    TlsHandshake,
    UnsupportedSetup,
    hkdf_expand_label,
    tls_prf,
)
from ktls_core.tls.enable import TlsEnable

TIMEOUT = 10.0  # every socket operation and every wait on a peer


# --- tools and certificates -----------------------------------------------------------


@pytest.fixture
def openssl(require_tool: Callable[[str], str]) -> str:
    """The openssl binary (conftest's require_tool: fails under KTLS_REQUIRE_TOOLS=1)."""
    return require_tool("openssl")


class Cert(Protocol):
    """The conftest `cert` fixture: PEM paths of a self-signed localhost certificate."""

    cert: str
    key: str


# --- an independent record sealer -----------------------------------------------------


@dataclass
class Sealer:
    """Encrypts records the way a TLS stack does, from a struct tls_enable."""

    enable: TlsEnable
    seq: int
    cbc_iv: bytes = field(default=b"")  # TLS 1.0 chained IV

    def __post_init__(self) -> None:
        self.cbc_iv = self.enable.iv

    def seal(self, rtype: int, data: bytes) -> bytes:
        e, seq = self.enable, self.seq
        self.seq += 1
        seq8 = seq.to_bytes(8, "big")
        nonce12 = bytes(a ^ b for a, b in zip(e.iv, seq.to_bytes(12, "big"), strict=False))
        if e.tls_vminor == 4:  # RFC 8446 §5.2: inner type, outer header as AAD
            inner = data + bytes([rtype])
            header = b"\x17\x03\x03" + (len(inner) + 16).to_bytes(2, "big")
            aead13 = (
                AESGCM(e.cipher_key) if e.cipher_algorithm == 25 else ChaCha20Poly1305(e.cipher_key)
            )
            return header + aead13.encrypt(nonce12, inner, header)
        version = bytes([3, e.tls_vminor])
        aad = seq8 + bytes([rtype]) + version + len(data).to_bytes(2, "big")
        if e.cipher_algorithm == 25:  # RFC 5288: salt || explicit nonce (any unique value)
            explicit = os.urandom(8)
            body = explicit + AESGCM(e.cipher_key).encrypt(e.iv + explicit, data, aad)
        elif e.cipher_algorithm == 41:  # RFC 7905: IV xor seq, no explicit nonce
            body = ChaCha20Poly1305(e.cipher_key).encrypt(nonce12, data, aad)
        else:  # RFC 5246 §6.2.3.2: MAC-then-encrypt, minimal padding
            hash_name = {7: "sha1", 18: "sha256", 19: "sha384"}[e.auth_algorithm]
            mac = hmac.digest(e.auth_key, aad + data, hash_name)
            plain = data + mac
            pad = 15 - len(plain) % 16
            plain += bytes([pad]) * (pad + 1)
            iv = self.cbc_iv if e.tls_vminor == 1 else os.urandom(16)
            enc = Cipher(algorithms.AES(e.cipher_key), modes.CBC(iv)).encryptor()
            ct = enc.update(plain) + enc.finalize()
            if e.tls_vminor == 1:
                self.cbc_iv, body = ct[-16:], ct
            else:
                body = iv + ct
        return bytes([rtype]) + version + len(body).to_bytes(2, "big") + body


CLOSE_NOTIFY = b"\x01\x00"


def payload() -> list[bytes]:
    """Records to send: text, a full 16 KiB binary record, a short binary one."""
    return [b"hello from ktls\n", os.urandom(16384), b"\x00\xff\r\nend\n"]


def send_records(sock: socket.socket, result: HandshakeResult, chunks: list[bytes]) -> Sealer:
    sealer = Sealer(result.enable, result.next_seq)
    for chunk in chunks:
        sock.sendall(sealer.seal(23, chunk))
    sock.sendall(sealer.seal(21, CLOSE_NOTIFY))
    return sealer


# --- driving the handshake over a real socket -----------------------------------------


def drive(sock: socket.socket, hs: TlsHandshake) -> HandshakeResult:
    """Run the handshake to completion, flush, hand off (bounded by the socket timeout)."""
    sock.sendall(hs.data_to_send())
    for _ in range(100):
        if hs.complete:
            break
        hs.receive_data(sock.recv(65536))
        sock.sendall(hs.data_to_send())
    else:
        raise AssertionError("handshake did not finish in 100 reads")
    return hs.handoff()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Peer:
    proc: subprocess.Popen[bytes]
    out: Path

    def output(self) -> bytes:
        return self.out.read_bytes()

    def stderr(self) -> str:
        assert self.proc.stderr is not None
        return self.proc.stderr.read().decode(errors="replace")

    def wait(self) -> int:
        return self.proc.wait(timeout=TIMEOUT)


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[[list[str]], Peer]]:
    """Start openssl with stdout in a file and stdin held open (EOF on stdin ends s_server)."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(argv: list[str]) -> Peer:
        out = tmp_path / f"peer{len(procs)}.out"
        with out.open("wb") as fh:
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=fh, stderr=subprocess.PIPE)
        procs.append(proc)
        return Peer(proc, out)

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=TIMEOUT)
        for stream in (proc.stdin, proc.stderr):
            if stream is not None:
                stream.close()


def s_server(
    openssl: str,
    cert: Cert,
    spawn: Callable[[list[str]], Peer],
    args: list[str],
    *,
    quiet: bool = True,
) -> tuple[Peer, socket.socket]:
    """openssl s_server for one connection, and our connected socket to it.

    The first successful connect is the one accepted (-naccept 1), so polling
    with connect() consumes nothing; a port lost to a race is retried.
    """
    for _attempt in range(3):
        port = free_port()
        peer = spawn(
            [openssl, "s_server", "-accept", str(port), "-naccept", "1",
             *(["-quiet"] if quiet else []), "-cert", cert.cert, "-key", cert.key, *args]
        )  # fmt: skip
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline and peer.proc.poll() is None:
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
            except OSError:
                time.sleep(0.05)
                continue
            return peer, sock
    raise AssertionError("openssl s_server did not start")


def client_config(**kw: object) -> HandshakeConfig:
    return HandshakeConfig(Role.CLIENT, verify=False, **kw)  # type: ignore[arg-type]


# --- known answers --------------------------------------------------------------------


def test_hkdf_expand_label_rfc8448() -> None:
    # RFC 8448 §3 application traffic secrets -> write key and IV (reference V1).
    client = bytes.fromhex("9e40646ce79a7f9dc05af8889bce6552875afa0b06df0087f792ebb7c17504a5")
    server = bytes.fromhex("a11af9f05531f856ad47116b45a950328204b4f44bfb6b3a4b4f1f3fcb631643")
    assert hkdf_expand_label(client, "key", b"", 16, "sha256").hex() == (
        "17422dda596ed5d9acd890e3c63f5051"
    )
    assert hkdf_expand_label(client, "iv", b"", 12, "sha256").hex() == "5b78923dee08579033e523d9"
    assert hkdf_expand_label(server, "key", b"", 16, "sha256").hex() == (
        "9f02283b6c9c07efc26bb9f2ac92e356"
    )
    assert hkdf_expand_label(server, "iv", b"", 12, "sha256").hex() == "cf782b88dd83549aadf1e984"


@pytest.mark.parametrize(
    ("digest", "hash_name", "secret_len"),
    [("SHA256", "sha256", 48), ("SHA384", "sha384", 48), ("MD5-SHA1", None, 47)],
)
def test_tls_prf_matches_openssl_kdf(
    openssl: str, digest: str, hash_name: str | None, secret_len: int
) -> None:
    # OpenSSL's TLS1-PRF is an independent implementation; its "seed" is label || seed.
    # The odd secret length exercises TLS 1.0's overlapping halves.
    secret, seed = os.urandom(secret_len), os.urandom(64)
    label = b"key expansion"
    out = subprocess.run(
        [openssl, "kdf", "-keylen", "136", "-kdfopt", f"digest:{digest}",
         "-kdfopt", f"hexsecret:{secret.hex()}", "-kdfopt", f"hexseed:{(label + seed).hex()}",
         "TLS1-PRF"],
        check=True, capture_output=True, text=True, timeout=TIMEOUT,
    ).stdout  # fmt: skip
    expected = bytes.fromhex(out.strip().replace(":", ""))
    assert tls_prf(secret, label, seed, 136, hash_name) == expected


# --- client side against openssl s_server ------------------------------------------------

# (tls version, s_server suite argument, suite, cipher id, key len, iv len, auth id, MAC len)
CLIENT_SUITES = [
    ("1.2", ["-cipher", "ECDHE-RSA-AES128-GCM-SHA256"], None, 25, 16, 4, 0, 0),
    ("1.2", ["-cipher", "ECDHE-RSA-AES256-GCM-SHA384"], None, 25, 32, 4, 0, 0),
    ("1.2", ["-cipher", "ECDHE-RSA-CHACHA20-POLY1305"], None, 41, 32, 12, 0, 0),
    ("1.3", ["-ciphersuites", "TLS_AES_128_GCM_SHA256"], None, 25, 16, 12, 0, 0),
    ("1.3", ["-ciphersuites", "TLS_AES_256_GCM_SHA384"], None, 25, 32, 12, 0, 0),
    ("1.3", ["-ciphersuites", "TLS_CHACHA20_POLY1305_SHA256"], None, 41, 32, 12, 0, 0),
    # CBC (current profile): the SHA1 suites are outside Python's default list, so
    # the client names them; both ends offer them at the default security level.
    ("1.2", ["-cipher", "ECDHE-RSA-AES128-SHA"], "ECDHE-RSA-AES128-SHA", 11, 16, 0, 7, 20),
    ("1.2", ["-cipher", "ECDHE-RSA-AES256-SHA"], "ECDHE-RSA-AES256-SHA", 11, 32, 0, 7, 20),
    ("1.2", ["-cipher", "ECDHE-RSA-AES128-SHA256"], None, 11, 16, 0, 18, 32),
    ("1.2", ["-cipher", "ECDHE-RSA-AES256-SHA384"], None, 11, 32, 0, 19, 48),
    # OpenSSL 3 allows TLS 1.0/1.1 only at security level 0: set here, in the test only.
    ("1.1", ["-cipher", "ECDHE-RSA-AES128-SHA:@SECLEVEL=0"], "ECDHE-RSA-AES128-SHA:@SECLEVEL=0",
     11, 16, 0, 7, 20),
    # TLS 1.0 hands the kernel the chained IV: the last ciphertext block of our Finished.
    ("1.0", ["-cipher", "ECDHE-RSA-AES256-SHA:@SECLEVEL=0"], "ECDHE-RSA-AES256-SHA:@SECLEVEL=0",
     11, 32, 16, 7, 20),
]  # fmt: skip
VERSION_FLAGS = {"1.0": "-tls1", "1.1": "-tls1_1", "1.2": "-tls1_2", "1.3": "-tls1_3"}


@pytest.mark.parametrize(
    ("version", "server_args", "ciphers", "cipher", "key_len", "iv_len", "auth", "mac_len"),
    CLIENT_SUITES,
    ids=[f"{c[0]}-{c[1][1].split(':')[0]}" for c in CLIENT_SUITES],
)
def test_client_keys_against_s_server(
    openssl: str,
    cert: Cert,
    spawn: Callable[[list[str]], Peer],
    version: str,
    server_args: list[str],
    ciphers: str | None,
    cipher: int,
    key_len: int,
    iv_len: int,
    auth: int,
    mac_len: int,
) -> None:
    peer, sock = s_server(openssl, cert, spawn, [VERSION_FLAGS[version], *server_args])
    with sock:
        hs = TlsHandshake(client_config(tls_version=version, ciphers=ciphers))
        result = drive(sock, hs)
        e = result.enable
        assert (e.cipher_algorithm, e.cipher_key_len, e.iv_len) == (cipher, key_len, iv_len)
        assert (e.auth_algorithm, e.auth_key_len) == (auth, mac_len)
        assert e.tls_vminor == {"1.0": 1, "1.1": 2, "1.2": 3, "1.3": 4}[version]
        # 1.2: our Finished was seq 0 of the epoch. 1.3: the client starts at 0.
        assert e.rec_seq == (0 if version == "1.3" else 1)
        chunks = payload()
        send_records(sock, result, chunks)
        assert peer.wait() == 0
        assert peer.output() == b"".join(chunks)


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_wrong_sequence_is_rejected_by_s_server(
    openssl: str, cert: Cert, spawn: Callable[[list[str]], Peer], version: str
) -> None:
    """The control: one sequence number off and the peer takes nothing."""
    peer, sock = s_server(openssl, cert, spawn, [VERSION_FLAGS[version]])
    with sock:
        result = drive(sock, TlsHandshake(client_config(tls_version=version)))
        sealer = Sealer(result.enable, result.next_seq + 1)
        sock.sendall(sealer.seal(23, b"must not arrive\n"))
        peer.wait()
        assert peer.output() == b""
        assert "bad record mac" in peer.stderr().lower()


def test_client_chooses_tls13_suite(
    openssl: str, cert: Cert, spawn: Callable[[list[str]], Peer]
) -> None:
    # set_ciphers() cannot restrict TLS 1.3; the module sets the 1.3 list itself.
    peer, sock = s_server(openssl, cert, spawn, ["-tls1_3"])
    with sock:
        hs = TlsHandshake(client_config(ciphers="TLS_CHACHA20_POLY1305_SHA256"))
        result = drive(sock, hs)
        assert result.cipher_name == "TLS_CHACHA20_POLY1305_SHA256"
        assert result.suite.name == "TLS1.3 CHACHA20-POLY1305"
        send_records(sock, result, [b"chacha\n"])
        peer.wait()
        assert peer.output() == b"chacha\n"


def test_handoff_needs_flushed_finished(
    openssl: str, cert: Cert, spawn: Callable[[list[str]], Peer]
) -> None:
    # A TLS 1.3 client writes its Finished in the step that completes the handshake.
    peer, sock = s_server(openssl, cert, spawn, ["-tls1_3"])
    with sock:
        hs = TlsHandshake(client_config())
        sock.sendall(hs.data_to_send())
        for _ in range(100):
            if hs.complete:
                break
            hs.receive_data(sock.recv(65536))
            if not hs.complete:
                sock.sendall(hs.data_to_send())
        with pytest.raises(HandshakeError, match="flush"):
            hs.handoff()
        sock.sendall(hs.data_to_send())
        send_records(sock, hs.handoff(), [b"after flush\n"])
        peer.wait()
        assert peer.output() == b"after flush\n"


def test_keylog_is_private_and_removed(
    openssl: str, cert: Cert, spawn: Callable[[list[str]], Peer]
) -> None:
    _peer, sock = s_server(openssl, cert, spawn, ["-tls1_3"])
    with sock:
        hs = TlsHandshake(client_config())
        keylog = hs._keylog
        assert keylog is not None
        path = Path(keylog.path)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        drive(sock, hs)
        assert not path.exists() and not path.parent.exists()
        assert hs._ctx.keylog_filename is None


# --- refusals and failures --------------------------------------------------------------


def test_unsupported_suite_is_named(
    openssl: str, cert: Cert, spawn: Callable[[list[str]], Peer]
) -> None:
    _peer, sock = s_server(
        openssl, cert, spawn, ["-tls1_3", "-ciphersuites", "TLS_AES_128_CCM_SHA256"]
    )
    with sock, pytest.raises(UnsupportedSetup, match="TLS_AES_128_CCM_SHA256"):
        drive(sock, TlsHandshake(client_config(ciphers="TLS_AES_128_CCM_SHA256")))


def test_encrypt_then_mac_is_detected(
    openssl: str, cert: Cert, spawn: Callable[[list[str]], Peer], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without our SSL_OP_NO_ENCRYPT_THEN_MAC OpenSSL negotiates EtM for CBC;
    # the ServerHello check must then refuse the hand-off.
    monkeypatch.setattr(hs_mod, "SSL_OP_NO_ENCRYPT_THEN_MAC", 0)
    _peer, sock = s_server(openssl, cert, spawn, ["-tls1_2", "-cipher", "ECDHE-RSA-AES128-SHA256"])
    with sock, pytest.raises(UnsupportedSetup, match="encrypt-then-MAC"):
        drive(sock, TlsHandshake(client_config()))


def test_untrusted_certificate_fails(
    openssl: str, cert: Cert, spawn: Callable[[list[str]], Peer]
) -> None:
    _peer, sock = s_server(openssl, cert, spawn, [])
    hs = TlsHandshake(HandshakeConfig(Role.CLIENT, server_name="localhost"))
    with sock, pytest.raises(HandshakeError, match=r"self.signed certificate"):
        drive(sock, hs)
    assert hs._keylog is None  # removed on failure too


def test_verified_client_with_cafile(
    openssl: str, cert: Cert, spawn: Callable[[list[str]], Peer]
) -> None:
    peer, sock = s_server(openssl, cert, spawn, [])
    hs = TlsHandshake(HandshakeConfig(Role.CLIENT, server_name="localhost", cafile=cert.cert))
    with sock:
        send_records(sock, drive(sock, hs), [b"verified\n"])
        peer.wait()
        assert peer.output() == b"verified\n"


def test_peer_closing_during_handshake() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        sock = socket.create_connection(listener.getsockname(), timeout=TIMEOUT)
        conn, _ = listener.accept()
        conn.close()
        with sock, pytest.raises(HandshakeError, match="closed the connection"):
            drive(sock, TlsHandshake(client_config()))


# --- server side ------------------------------------------------------------------------


def serve_once(
    cert: Cert, config_kw: dict[str, object], start_client: Callable[[int], None]
) -> tuple[TlsHandshake, HandshakeResult, socket.socket]:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.settimeout(TIMEOUT)
        start_client(listener.getsockname()[1])
        conn, _ = listener.accept()
    conn.settimeout(TIMEOUT)
    config = HandshakeConfig(Role.SERVER, certfile=cert.cert, keyfile=cert.key, **config_kw)  # type: ignore[arg-type]
    hs = TlsHandshake(config)
    return hs, drive(conn, hs), conn


SERVER_CASES = [
    ("1.2", "ECDHE-RSA-AES128-GCM-SHA256", 0),
    ("1.2", "ECDHE-RSA-AES256-GCM-SHA384", 2),  # 1.2 tickets precede CCS: no effect
    ("1.2", "ECDHE-RSA-CHACHA20-POLY1305", 0),
    ("1.2", "ECDHE-RSA-AES256-SHA384", 0),
    ("1.3", "TLS_AES_128_GCM_SHA256", 0),
    ("1.3", "TLS_AES_256_GCM_SHA384", 2),  # two NewSessionTickets: seq 0 and 1
    ("1.3", "TLS_CHACHA20_POLY1305_SHA256", 3),
]


@pytest.mark.parametrize(("version", "suite", "tickets"), SERVER_CASES)
def test_server_keys_against_s_client(
    openssl: str,
    cert: Cert,
    spawn: Callable[[list[str]], Peer],
    version: str,
    suite: str,
    tickets: int,
) -> None:
    peers: list[Peer] = []
    flag = "-ciphersuites" if version == "1.3" else "-cipher"

    def start(port: int) -> None:
        peers.append(spawn([openssl, "s_client", "-connect", f"127.0.0.1:{port}", "-quiet",
                            VERSION_FLAGS[version], flag, suite]))  # fmt: skip

    _hs, result, conn = serve_once(cert, {"num_tickets": tickets}, start)
    with conn:
        assert result.cipher_name == suite
        # The kernel continues after every record OpenSSL sent in this epoch.
        assert result.next_seq == (tickets if version == "1.3" else 1)
        chunks = payload()
        send_records(conn, result, chunks)
        assert peers[0].wait() == 0
        assert peers[0].output() == b"".join(chunks)


@pytest.mark.parametrize(("version", "tickets"), [("1.2", 0), ("1.3", 0), ("1.3", 2)])
def test_server_against_python_client(cert: Cert, version: str, tickets: int) -> None:
    """Python's ssl client verifies our certificate, sends a request, reads our records."""
    received: list[bytes] = []
    errors: list[BaseException] = []

    def client(port: int) -> None:
        try:
            ctx = ssl.create_default_context(cafile=cert.cert)
            ctx.minimum_version = ctx.maximum_version = hs_mod.VERSIONS[version]
            with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as raw, \
                    ctx.wrap_socket(raw, server_hostname="localhost") as tls:  # fmt: skip
                tls.sendall(b"GET / HTTP/1.1\r\n\r\n")
                buf = bytearray()
                for _ in range(1000):
                    chunk = tls.recv(65536)  # b"" on close_notify
                    if not chunk:
                        break
                    buf += chunk
                received.append(bytes(buf))
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    thread: list[threading.Thread] = []

    def start(port: int) -> None:
        thread.append(threading.Thread(target=client, args=(port,), daemon=True))
        thread[0].start()

    hs, result, conn = serve_once(cert, {"num_tickets": tickets}, start)
    with conn:
        assert result.protocol == f"TLSv{version}"
        # Reading stays in userland: the request comes out of the SSL object.
        request = b""
        for _ in range(100):
            if request.endswith(b"\r\n\r\n"):
                break
            hs.receive_data(conn.recv(65536))
            request += hs.read()
        assert request == b"GET / HTTP/1.1\r\n\r\n"
        chunks = payload()
        send_records(conn, result, chunks)
        thread[0].join(TIMEOUT)
    assert not thread[0].is_alive()
    assert not errors, errors
    assert received == [b"".join(chunks)]


def test_server_refuses_max_fragment_length(
    openssl: str, cert: Cert, spawn: Callable[[list[str]], Peer]
) -> None:
    # OpenSSL's KTLS path refuses any max_fragment_length; Python cannot turn it off.
    def start(port: int) -> None:
        spawn([openssl, "s_client", "-connect", f"127.0.0.1:{port}", "-quiet",
               "-maxfraglen", "1024"])  # fmt: skip

    with pytest.raises(UnsupportedSetup, match="max_fragment_length 1024"):
        serve_once(cert, {}, start)


def test_peer_key_update_after_handoff_is_an_error(
    openssl: str, cert: Cert, spawn: Callable[[list[str]], Peer]
) -> None:
    """A KeyUpdate request makes OpenSSL want to write: the kernel owns that side now."""
    peers: list[Peer] = []

    def start(port: int) -> None:
        # Without -quiet, "K" on stdin sends KeyUpdate(update_requested).
        peers.append(spawn([openssl, "s_client", "-connect", f"127.0.0.1:{port}", "-tls1_3"]))

    hs, _result, conn = serve_once(cert, {}, start)
    with conn:
        stdin = peers[0].proc.stdin
        assert stdin is not None
        conn.settimeout(0.2)
        with pytest.raises(HandshakeError, match=r"requested a TLS 1\.3 KeyUpdate"):
            # s_client ignores "K" until its side of the handshake is done: repeat it.
            for _ in range(50):
                stdin.write(b"K\n")
                stdin.flush()
                try:
                    hs.receive_data(conn.recv(65536))
                except TimeoutError:
                    continue
                hs.read()


def test_renegotiation_request_after_handoff_is_an_error(
    openssl: str, cert: Cert, spawn: Callable[[list[str]], Peer]
) -> None:
    """A HelloRequest makes OpenSSL write a no_renegotiation alert: it must not go out."""
    # Without -quiet, "r" on s_server's stdin sends a HelloRequest (TLS 1.2).
    peer, sock = s_server(openssl, cert, spawn, ["-tls1_2"], quiet=False)
    with sock:
        hs = TlsHandshake(client_config())
        drive(sock, hs)
        stdin = peer.proc.stdin
        assert stdin is not None
        sock.settimeout(0.2)
        with pytest.raises(HandshakeError, match=r"tried to send \d+ bytes after the kernel"):
            for _ in range(50):
                stdin.write(b"r\n")
                stdin.flush()
                try:
                    hs.receive_data(sock.recv(65536))
                except TimeoutError:
                    continue
                hs.read()


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_kernel_refused_ends_with_userland_close_notify(
    openssl: str, cert: Cert, spawn: Callable[[list[str]], Peer], version: str
) -> None:
    """TCP_TXTLS_ENABLE failed: OpenSSL still owns the transmit side and closes cleanly."""
    peer, sock = s_server(openssl, cert, spawn, [VERSION_FLAGS[version]])
    with sock:
        hs = TlsHandshake(client_config(tls_version=version))
        drive(sock, hs)
        notify = hs.kernel_refused()
        assert notify[:1] == bytes([21 if version == "1.2" else 23])  # 1.3 hides the type
        sock.sendall(notify)
        assert peer.wait() == 0
        assert peer.output() == b""
        assert "bad record mac" not in peer.stderr().lower()
