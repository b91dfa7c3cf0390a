"""Helpers for the software-KTLS tests (issue 5): a booted kernel, a ready connection,
in-memory sources and wires for the transmit path."""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ktls_core import kld
from ktls_core.kernel import Kernel
from ktls_core.net import tcp
from ktls_core.tls import session
from ktls_core.tls.enable import TlsEnable
from ktls_core.tls.suites import parse_auth, parse_cipher, parse_version

CONN = ("192.0.2.10:443", "198.51.100.7:51514")
CONN_WORDS = ["192.0.2.10:443", "198.51.100.7:51514"]

# Every suite the current profile offloads: (version, cipher, key bytes, iv bytes, auth).
CURRENT_SUITES = [
    ("1.2", "aes-gcm", 16, 4, None),
    ("1.2", "aes-gcm", 32, 4, None),
    ("1.3", "aes-gcm", 16, 12, None),
    ("1.3", "aes-gcm", 32, 12, None),
    ("1.2", "chacha20-poly1305", 32, 12, None),
    ("1.3", "chacha20-poly1305", 32, 12, None),
    ("1.0", "aes-cbc", 16, 16, "hmac-sha1"),
    ("1.0", "aes-cbc", 32, 16, "hmac-sha1"),
    ("1.1", "aes-cbc", 16, 0, "hmac-sha1"),
    ("1.1", "aes-cbc", 32, 0, "hmac-sha1"),
    ("1.2", "aes-cbc", 16, 0, "hmac-sha1"),
    ("1.2", "aes-cbc", 32, 0, "hmac-sha1"),
    ("1.2", "aes-cbc", 16, 0, "hmac-sha256"),
    ("1.2", "aes-cbc", 32, 0, "hmac-sha256"),
    ("1.2", "aes-cbc", 16, 0, "hmac-sha384"),
    ("1.2", "aes-cbc", 32, 0, "hmac-sha384"),
]
MAC_LEN = {"hmac-sha1": 20, "hmac-sha256": 32, "hmac-sha384": 48}


def suite_id(s: tuple[Any, ...]) -> str:
    version, cipher, klen, _iv, auth = s
    return f"{version}-{cipher}-{klen * 8}" + (f"-{auth}" if auth else "")


def boot(tmp_path: Path, profile: str = "seed", seed: int | None = 7) -> Kernel:
    kernel = Kernel.open(str(tmp_path / "k" / "kernel.db"), create=True, boot=False)
    kernel.boot(profile, seed=seed)
    return kernel


def sw_ready(kernel: Kernel) -> None:
    """The three gates of the seed open (current: the sysctls are already right)."""
    with kernel.transaction() as tx:
        tx.set_sysctl("kern.ipc.tls.enable", 1)
        tx.set_sysctl("kern.ipc.mb_use_ext_pgs", 1)
        if not tx.profile.feature("ocf_builtin"):
            kld.kldload(tx, "ktls_ocf")


def endpoints(words: tuple[str, str] | list[str] = CONN) -> tcp.Endpoints:
    return tcp.parse_endpoints(list(words))


def connect(kernel: Kernel, words: tuple[str, str] | list[str] = CONN) -> tcp.Conn:
    with kernel.transaction() as tx:
        return tcp.connect(tx, endpoints(words))


def params(
    version: str = "1.2",
    cipher: str = "aes-gcm",
    klen: int = 16,
    ivlen: int = 4,
    auth: str | None = None,
    rec_seq: int | None = None,
) -> TlsEnable:
    return TlsEnable(
        cipher_algorithm=parse_cipher(cipher),
        cipher_key=os.urandom(klen),
        iv=os.urandom(ivlen),
        auth_algorithm=parse_auth(auth),
        auth_key=os.urandom(MAC_LEN[auth]) if auth else b"",
        tls_vminor=parse_version(version),
        rec_seq=rec_seq,
    )


def enable(kernel: Kernel, p: TlsEnable, words: tuple[str, str] = CONN) -> session.Session:
    return session.txtls_enable(kernel, endpoints(words), lambda tx: p)


def oracle_suite(p: TlsEnable) -> dict[str, Any]:
    """The dict tests/oracle.py takes, from struct tls_enable."""
    names = {25: "aes-gcm", 11: "aes-cbc", 41: "chacha20-poly1305"}
    auths = {7: "hmac-sha1", 18: "hmac-sha256", 19: "hmac-sha384"}
    versions = {1: "1.0", 2: "1.1", 3: "1.2", 4: "1.3"}
    return {
        "version": versions[p.tls_vminor],
        "cipher": names[p.cipher_algorithm],
        "key": p.cipher_key,
        "iv": p.iv,
        "auth": auths.get(p.auth_algorithm),
        "auth_key": p.auth_key,
    }


class MemSource:
    """A Source over bytes; `known` False makes it a stream of unknown size (stdin)."""

    def __init__(self, data: bytes, known: bool = True) -> None:
        self._buf = io.BytesIO(data)
        self._n = len(data)
        self._known = known

    def size(self) -> int | None:
        return self._n if self._known else None

    def fill(self, buf: memoryview) -> int:
        return self._buf.readinto(buf)


class MemWire:
    """A Wire that keeps the stream and the TCP sequence numbers it was given."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.seqs: list[tuple[int, int]] = []

    def transmit(self, data: memoryview, tcp_seq: int, link: Any) -> None:
        self.seqs.append((tcp_seq, len(data)))
        self.data += data


def counters(kernel: Kernel, prefix: str = "kern.ipc.tls") -> dict[str, int]:
    from ktls_core import counters as c

    with kernel.snapshot() as tx:
        return c.get_many(tx.conn, prefix)


def send(kernel: Kernel, data: bytes, **kw: Any) -> tuple[Any, MemWire]:
    from ktls_core.tls.output import send as do_send

    wire = MemWire()
    known = kw.pop("known", True)
    words = kw.pop("words", CONN)
    result = do_send(kernel, endpoints(words), MemSource(data, known), wire=wire, **kw)
    return result, wire


Events = list[Any]


def collector() -> tuple[Events, Callable[[object], None]]:
    events: Events = []
    return events, events.append
