"""Userland TLS handshake over ssl.MemoryBIO, and the hand-off of our transmit keys.

An application using KTLS (nginx, `openssl s_server -ktls`) negotiates in
userland and then hands the transmit key, IV and next sequence number to the
kernel with setsockopt(TCP_TXTLS_ENABLE). `TlsHandshake` is that userland part,
sans-IO: the caller owns the socket, feeds what it reads to `receive_data()`
and writes what `data_to_send()` returns. Once `complete`, and once every
pending byte is on the wire, `handoff()` returns a `HandshakeResult` whose
`enable` is the `struct tls_enable` of our direction. Reading stays in userland
(`read()`); OpenSSL may no longer write.

Python 3.11's ssl does not expose the secrets, so:

- they come from the key log (`SSLContext.keylog_filename`), written to a 0600
  file in a private 0700 directory that is removed when the handshake ends;
- TLS 1.2 also needs server_random: it is read from the ServerHello in the
  bytes passing through the BIOs, by the same scanner that counts our records;
- before the hand-off the derived keys open our own records already sent
  (Finished, session tickets), so a wrong derivation is an error, not a
  stream the peer rejects after we have "succeeded".

`cryptography` is imported only inside the functions that open records.
"""

from __future__ import annotations

import contextlib
import ctypes
import enum
import hashlib
import hmac
import os
import shutil
import ssl
import struct
import sys
import tempfile
import warnings
import weakref
from dataclasses import dataclass, field

from ktls_core.tls.enable import TlsEnable
from ktls_core.tls.suites import (
    TLS_MAJOR_VER_ONE,
    TLS_MAX_MSG_SIZE_V10_2,
    TLS_MINOR_VER_ONE,
    TLS_MINOR_VER_THREE,
    TLS_MINOR_VER_TWO,
    TLS_MINOR_VER_ZERO,
    CryptoAlg,
    Suite,
)

# OpenSSL option bits Python 3.11 has no constant for (include/openssl/ssl.h.in).
SSL_OP_NO_ENCRYPT_THEN_MAC = 1 << 19

# Record content types and handshake message types (RFC 8446 §5.1, §4).
CT_CHANGE_CIPHER_SPEC = 20
CT_ALERT = 21
CT_HANDSHAKE = 22
CT_APPLICATION_DATA = 23
HS_CLIENT_HELLO = 1
HS_SERVER_HELLO = 2
HS_KEY_UPDATE = 24

# Extensions whose presence KTLS cannot live with, or that we read.
EXT_MAX_FRAGMENT_LENGTH = 1
EXT_ENCRYPT_THEN_MAC = 22
EXT_SUPPORTED_VERSIONS = 43

# A ServerHello carrying this random is a HelloRetryRequest (RFC 8446 §4.1.3).
HRR_RANDOM = hashlib.sha256(b"HelloRetryRequest").digest()

VERSIONS: dict[str, ssl.TLSVersion] = {
    "1.0": ssl.TLSVersion.TLSv1,
    "1.1": ssl.TLSVersion.TLSv1_1,
    "1.2": ssl.TLSVersion.TLSv1_2,
    "1.3": ssl.TLSVersion.TLSv1_3,
}
# SSLObject.version() -> struct tls_enable.tls_vminor
PROTOCOL_MINORS: dict[str, int] = {
    "TLSv1": TLS_MINOR_VER_ZERO,
    "TLSv1.1": TLS_MINOR_VER_ONE,
    "TLSv1.2": TLS_MINOR_VER_TWO,
    "TLSv1.3": TLS_MINOR_VER_THREE,
}
_MACS: dict[str, tuple[CryptoAlg, int]] = {
    "sha1": (CryptoAlg.SHA1_HMAC, 20),
    "sha256": (CryptoAlg.SHA2_256_HMAC, 32),
    "sha384": (CryptoAlg.SHA2_384_HMAC, 48),
}
_MAC_HASHES: dict[int, str] = {int(alg): name for name, (alg, _) in _MACS.items()}

# Bytes a handshake may read before it must be over: certificate chains are a
# few KiB; this bounds what a hostile peer can make us buffer.
MAX_HANDSHAKE_BYTES = 1 << 20


class Role(enum.Enum):
    CLIENT = "client"
    SERVER = "server"


class HandshakeError(Exception):
    """The handshake failed, or its result cannot be handed to KTLS."""


class UnsupportedSetup(HandshakeError):
    """Negotiated something OpenSSL's KTLS path would refuse (suite, EtM, MFL, compression)."""


@dataclass(frozen=True, slots=True)
class HandshakeConfig:
    """What to negotiate. Client: verify the peer unless `verify` is False."""

    role: Role
    tls_version: str | None = None  # "1.0".."1.3" pins the version; None: OpenSSL's range
    # OpenSSL cipher list; TLS_* names (TLS 1.3 suites) are split off, since
    # set_ciphers() only governs TLS 1.2 and below.
    ciphers: str | None = None
    server_name: str | None = None  # client: SNI and the name checked in the certificate
    cafile: str | None = None
    verify: bool = True
    certfile: str | None = None  # server
    keyfile: str | None = None
    # TLS 1.3 server: tickets sent after the handshake (each one takes a
    # sequence number of our direction; the hand-off accounts for them).
    num_tickets: int = 0
    alpn: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class HandshakeResult:
    """The negotiated connection and the struct tls_enable of our transmit direction."""

    role: Role
    protocol: str  # SSLObject.version(): 'TLSv1.2'
    cipher_name: str  # OpenSSL's name: 'ECDHE-RSA-AES128-GCM-SHA256'
    enable: TlsEnable  # key, iv, auth key, version and rec_seq (the next sequence number)
    alpn: str | None = None
    records_sent: int = 0  # records of the current epoch OpenSSL sent before the hand-off

    @property
    def suite(self) -> Suite:
        return self.enable.suite

    @property
    def next_seq(self) -> int:
        return self.enable.start_seq


# --- key derivation -----------------------------------------------------------


def _p_hash(hash_name: str, secret: bytes, seed: bytes, length: int) -> bytes:
    """P_hash of RFC 5246 §5."""
    out = bytearray()
    a = seed
    while len(out) < length:
        a = hmac.digest(secret, a, hash_name)
        out += hmac.digest(secret, a + seed, hash_name)
    return bytes(out[:length])


def tls_prf(secret: bytes, label: bytes, seed: bytes, length: int, hash_name: str | None) -> bytes:
    """The TLS PRF: P_<hash_name> for TLS 1.2; None is TLS 1.0/1.1's MD5 xor SHA-1."""
    if hash_name is not None:
        return _p_hash(hash_name, secret, label + seed, length)
    half = (len(secret) + 1) // 2  # RFC 2246 §5: the halves overlap by a byte if odd
    md5 = _p_hash("md5", secret[:half], label + seed, length)
    sha1 = _p_hash("sha1", secret[-half:], label + seed, length)
    return bytes(x ^ y for x, y in zip(md5, sha1, strict=True))


def hkdf_expand_label(
    secret: bytes, label: str, context: bytes, length: int, hash_name: str
) -> bytes:
    """HKDF-Expand-Label of RFC 8446 §7.1."""
    full = b"tls13 " + label.encode("ascii")
    info = struct.pack("!HB", length, len(full)) + full + bytes([len(context)]) + context
    out = bytearray()
    block = b""
    counter = 1
    while len(out) < length:
        block = hmac.digest(secret, block + info + bytes([counter]), hash_name)
        out += block
        counter += 1
    return bytes(out[:length])


@dataclass(frozen=True, slots=True)
class _SuiteInfo:
    """What KTLS and the key schedule need to know about a negotiated suite."""

    cipher: CryptoAlg
    key_len: int
    iv_len: int  # fixed IV from the key schedule: GCM-1.2 4, ChaCha/1.3 12, CBC 16
    auth: int  # 0 for AEAD suites
    mac_len: int
    prf_hash: str | None  # TLS 1.2 PRF / TLS 1.3 HKDF hash; None: TLS 1.0/1.1 PRF


def _suite_info(name: str, symmetric: str, digest: str | None, vminor: int) -> _SuiteInfo:
    """Map OpenSSL's description of the negotiated suite onto KTLS parameters."""
    tls13 = vminor == TLS_MINOR_VER_THREE
    if vminor == TLS_MINOR_VER_TWO or tls13:
        prf: str | None = "sha384" if name.endswith("SHA384") else "sha256"
    else:
        prf = None
    if symmetric in ("aes-128-gcm", "aes-256-gcm"):
        key_len = 16 if symmetric == "aes-128-gcm" else 32
        return _SuiteInfo(CryptoAlg.AES_NIST_GCM_16, key_len, 12 if tls13 else 4, 0, 0, prf)
    if symmetric == "chacha20-poly1305":
        return _SuiteInfo(CryptoAlg.CHACHA20_POLY1305, 32, 12, 0, 0, prf)
    if symmetric in ("aes-128-cbc", "aes-256-cbc") and digest in _MACS and not tls13:
        auth, mac_len = _MACS[digest]
        key_len = 16 if symmetric == "aes-128-cbc" else 32
        return _SuiteInfo(CryptoAlg.AES_CBC, key_len, 16, int(auth), mac_len, prf)
    raise UnsupportedSetup(f"cipher suite {name} ({symmetric}) cannot be offloaded by KTLS")


# --- record opening (self-check of the derived keys) ------------------------------


@dataclass(slots=True)
class _Opener:
    """Opens records of one direction and epoch, in order; CBC 1.0 chains its IV."""

    info: _SuiteInfo
    vminor: int
    key: bytes
    iv: bytes
    mac_key: bytes = b""
    seq: int = 0

    def try_open(self, rtype: int, body: bytes) -> tuple[int, bytes] | None:
        """(inner type, plaintext) if the record opens at self.seq (then seq += 1)."""
        opened = self._open(rtype, body)
        if opened is not None:
            self.seq += 1
        return opened

    def _open(self, rtype: int, body: bytes) -> tuple[int, bytes] | None:
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

        seq8 = self.seq.to_bytes(8, "big")
        version = b"\x03\x03" if self.vminor == TLS_MINOR_VER_THREE else bytes([3, self.vminor])
        aead: AESGCM | ChaCha20Poly1305
        if self.info.cipher == CryptoAlg.AES_CBC:
            return self._open_cbc(rtype, body, seq8, version)
        aead = (
            AESGCM(self.key)
            if self.info.cipher == CryptoAlg.AES_NIST_GCM_16
            else ChaCha20Poly1305(self.key)
        )
        try:
            if self.vminor == TLS_MINOR_VER_THREE:
                header = bytes([rtype]) + version + len(body).to_bytes(2, "big")
                nonce = _xor_seq(self.iv, self.seq)
                inner = aead.decrypt(nonce, body, header).rstrip(b"\x00")
                if not inner:
                    return None
                return inner[-1], inner[:-1]
            if self.info.cipher == CryptoAlg.AES_NIST_GCM_16:
                nonce, body = self.iv + body[:8], body[8:]
            else:
                nonce = _xor_seq(self.iv, self.seq)
            plain_len = len(body) - 16
            if plain_len < 0:
                return None
            aad = seq8 + bytes([rtype]) + version + plain_len.to_bytes(2, "big")
            return rtype, aead.decrypt(nonce, body, aad)
        except InvalidTag:
            return None

    def _open_cbc(
        self, rtype: int, body: bytes, seq8: bytes, version: bytes
    ) -> tuple[int, bytes] | None:
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

        if self.vminor == TLS_MINOR_VER_ZERO:
            iv, ct = self.iv, body
        else:
            iv, ct = body[:16], body[16:]
        if not ct or len(ct) % 16:
            return None
        dec = Cipher(algorithms.AES(self.key), modes.CBC(iv)).decryptor()
        padded = dec.update(ct) + dec.finalize()
        pad = padded[-1]
        if pad + 1 + self.info.mac_len > len(padded) or padded[-pad - 1 :] != bytes([pad]) * (
            pad + 1
        ):
            return None
        plain_mac = padded[: -pad - 1]
        plain, mac = plain_mac[: -self.info.mac_len], plain_mac[-self.info.mac_len :]
        mac_input = seq8 + bytes([rtype]) + version + len(plain).to_bytes(2, "big") + plain
        if not hmac.compare_digest(
            hmac.digest(self.mac_key, mac_input, _MAC_HASHES[self.info.auth]), mac
        ):
            return None
        if self.vminor == TLS_MINOR_VER_ZERO:
            self.iv = ct[-16:]  # the next record's IV (RFC 2246 §6.2.3.2)
        return rtype, plain


def _xor_seq(iv: bytes, seq: int) -> bytes:
    padded = seq.to_bytes(len(iv), "big")
    return bytes(a ^ b for a, b in zip(iv, padded, strict=True))


# --- scanning the handshake bytes -------------------------------------------------


@dataclass(slots=True)
class _Hello:
    version: int  # legacy_version, or supported_versions for a TLS 1.3 ServerHello
    random: bytes
    cipher_suite: int  # ServerHello only
    compression: int  # ServerHello only
    extensions: dict[int, bytes]


def _parse_extensions(data: bytes) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    pos = 0
    while pos + 4 <= len(data):
        ext_type, ext_len = struct.unpack_from("!HH", data, pos)
        out[ext_type] = data[pos + 4 : pos + 4 + ext_len]
        pos += 4 + ext_len
    return out


def _parse_hello(msg_type: int, body: bytes) -> _Hello:
    """ClientHello / ServerHello (RFC 8446 §4.1.2-3, RFC 5246 §7.4.1)."""
    try:
        version = int.from_bytes(body[0:2], "big")
        random = body[2:34]
        pos = 34
        pos += 1 + body[pos]  # legacy_session_id
        if msg_type == HS_CLIENT_HELLO:
            pos += 2 + int.from_bytes(body[pos : pos + 2], "big")  # cipher_suites
            pos += 1 + body[pos]  # compression methods
            suite = compression = 0
        else:
            suite = int.from_bytes(body[pos : pos + 2], "big")
            compression = body[pos + 2]
            pos += 3
        extensions: dict[int, bytes] = {}
        if pos + 2 <= len(body):
            ext_len = int.from_bytes(body[pos : pos + 2], "big")
            extensions = _parse_extensions(body[pos + 2 : pos + 2 + ext_len])
    except IndexError:
        raise HandshakeError("malformed hello message") from None
    if len(random) != 32:
        raise HandshakeError("malformed hello message")
    sv = extensions.get(EXT_SUPPORTED_VERSIONS)
    if msg_type == HS_SERVER_HELLO and sv is not None and len(sv) == 2:
        version = int.from_bytes(sv, "big")
    return _Hello(version, random, suite, compression, extensions)


@dataclass(slots=True)
class _Scanner:
    """Cuts one direction's bytes into records, and its plaintext handshake into messages."""

    buf: bytearray = field(default_factory=bytearray)
    hs: bytearray = field(default_factory=bytearray)
    records: list[tuple[int, bytes]] = field(default_factory=list)
    messages: list[tuple[int, bytes]] = field(default_factory=list)
    ccs_at: int | None = None  # index in `records` right after the first ChangeCipherSpec
    total: int = 0

    def feed(self, data: bytes, *, tls13: bool) -> None:
        self.total += len(data)
        if self.total > MAX_HANDSHAKE_BYTES:
            raise HandshakeError(f"handshake exceeds {MAX_HANDSHAKE_BYTES} bytes")
        self.buf += data
        while len(self.buf) >= 5:
            rtype = self.buf[0]
            length = int.from_bytes(self.buf[3:5], "big")
            if len(self.buf) < 5 + length:
                break
            body = bytes(self.buf[5 : 5 + length])
            del self.buf[: 5 + length]
            self.records.append((rtype, body))
            if rtype == CT_CHANGE_CIPHER_SPEC and self.ccs_at is None:
                self.ccs_at = len(self.records)
            # TLS 1.2 encrypts handshake records after CCS; 1.3 encrypts them as type 23.
            elif rtype == CT_HANDSHAKE and (tls13 or self.ccs_at is None):
                self.hs += body
                self._messages()

    def _messages(self) -> None:
        while len(self.hs) >= 4:
            length = int.from_bytes(self.hs[1:4], "big")
            if len(self.hs) < 4 + length:
                return
            self.messages.append((self.hs[0], bytes(self.hs[4 : 4 + length])))
            del self.hs[: 4 + length]

    def hellos(self, msg_type: int) -> list[_Hello]:
        return [_parse_hello(t, body) for t, body in self.messages if t == msg_type]


# --- the TLS 1.3 cipher-suite list ------------------------------------------------


def _set_ciphersuites(ctx: ssl.SSLContext, suites: str) -> None:
    """SSL_CTX_set_ciphersuites(), which Python 3.11's ssl does not wrap.

    CPython's PySSLContext starts with the SSL_CTX pointer right after the object
    header; before calling we check that pointer reads back the context's options,
    and afterwards that get_ciphers() shows exactly the suites asked for.
    """
    wanted = [s for s in suites.split(":") if s]
    if sys.implementation.name != "cpython":
        raise HandshakeError("choosing TLS 1.3 cipher suites needs CPython")
    import _ssl

    lib = ctypes.CDLL(_ssl.__file__)
    ptr = ctypes.c_void_p.from_address(id(ctx) + object.__basicsize__).value
    get_options = lib.SSL_CTX_get_options
    get_options.argtypes = [ctypes.c_void_p]
    get_options.restype = ctypes.c_uint64
    if not ptr or get_options(ptr) != int(ctx.options):
        raise HandshakeError("cannot reach OpenSSL's SSL_CTX to set TLS 1.3 cipher suites")
    setter = lib.SSL_CTX_set_ciphersuites
    setter.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    setter.restype = ctypes.c_int
    if setter(ptr, ":".join(wanted).encode("ascii")) != 1:
        raise HandshakeError(f"OpenSSL refuses the TLS 1.3 cipher suites {suites!r}")
    have = [c["name"] for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.3"]
    if sorted(have) != sorted(wanted):
        raise HandshakeError(f"TLS 1.3 cipher suites {suites!r} not available (have {have})")


def make_context(config: HandshakeConfig) -> ssl.SSLContext:
    """An SSLContext that negotiates only what KTLS can take over."""
    if config.role is Role.CLIENT:
        ctx = ssl.create_default_context(cafile=config.cafile)
        if not config.verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        elif config.server_name is None:
            ctx.check_hostname = False  # the chain is still verified
    else:
        if config.certfile is None:
            raise HandshakeError("a TLS server needs a certificate")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            ctx.load_cert_chain(config.certfile, config.keyfile)
        except (OSError, ssl.SSLError) as exc:
            raise HandshakeError(f"cannot load certificate {config.certfile}: {exc}") from None
        ctx.num_tickets = config.num_tickets
    # KTLS needs full 16 KiB records in MAC-then-encrypt order, uncompressed,
    # and no userland writes after the hand-off (OpenSSL's ktls_meth.c checks).
    ctx.options |= (
        ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION | ssl.Options(SSL_OP_NO_ENCRYPT_THEN_MAC)
    )
    if config.tls_version is not None:
        try:
            version = VERSIONS[config.tls_version]
        except KeyError:
            raise HandshakeError(f"unknown TLS version {config.tls_version!r}") from None
        with warnings.catch_warnings():
            # Python deprecates TLS 1.0/1.1; asking for them by name is deliberate.
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.minimum_version = ctx.maximum_version = version
    if config.ciphers:
        names = [n for n in config.ciphers.split(":") if n]
        tls13 = [n for n in names if n.startswith("TLS_")]
        legacy = [n for n in names if not n.startswith("TLS_")]
        try:
            if legacy:
                ctx.set_ciphers(":".join(legacy))
        except ssl.SSLError:
            raise HandshakeError(f"no cipher suite matches {':'.join(legacy)!r}") from None
        if tls13:
            _set_ciphersuites(ctx, ":".join(tls13))
    if config.alpn:
        ctx.set_alpn_protocols(list(config.alpn))
    return ctx


def _watch_key_update(ctx: ssl.SSLContext) -> list[bool]:
    """A flag set when the peer sends KeyUpdate(update_requested).

    Uses SSLContext._msg_callback (CPython 3.8+, undocumented: the only view of
    decrypted post-handshake messages). Without it the flag never rises, and a
    request goes unanswered, as it does under OpenSSL with KTLS.
    """
    flag = [False]
    if not hasattr(ctx, "_msg_callback"):
        return flag

    def callback(
        conn: object, direction: str, version: int, content_type: int, msg_type: int, data: bytes
    ) -> None:
        if (
            direction == "read"
            and content_type == CT_HANDSHAKE
            and msg_type == HS_KEY_UPDATE
            and data[4:5] == b"\x01"  # update_requested
        ):
            flag[0] = True

    setattr(ctx, "_msg_callback", callback)  # noqa: B010 - not in typeshed
    return flag


# --- the driver -------------------------------------------------------------------


class _Keylog:
    """A private key-log file: 0600 in a 0700 directory, removed by close()."""

    def __init__(self, ctx: ssl.SSLContext) -> None:
        self._dir = tempfile.mkdtemp(prefix="ktls-keylog-")
        self.path = os.path.join(self._dir, "keylog")
        os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        self._ctx: ssl.SSLContext | None = ctx
        ctx.keylog_filename = self.path
        self._finalizer = weakref.finalize(self, shutil.rmtree, self._dir, True)

    def secrets(self, client_random: bytes) -> dict[str, bytes]:
        """label -> secret for the connection whose ClientHello carried client_random."""
        out: dict[str, bytes] = {}
        with open(self.path, encoding="ascii") as fh:
            for line in fh:
                words = line.split()
                if len(words) == 3 and bytes.fromhex(words[1]) == client_random:
                    out[words[0]] = bytes.fromhex(words[2])
        return out

    def close(self) -> None:
        if self._ctx is not None:
            self._ctx.keylog_filename = None  # type: ignore[assignment]  # closes OpenSSL's BIO
            self._ctx = None
        self._finalizer()


class TlsHandshake:
    """A TLS handshake driven by the caller's socket I/O (see the module docstring).

    Client: `data_to_send()` holds the ClientHello right after construction.
    """

    def __init__(self, config: HandshakeConfig) -> None:
        self.config = config
        self._ctx = make_context(config)
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._keylog: _Keylog | None = _Keylog(self._ctx)
        self._key_update_requested = _watch_key_update(self._ctx)
        server_name = config.server_name if config.role is Role.CLIENT else None
        self._ssl = self._ctx.wrap_bio(
            self._incoming,
            self._outgoing,
            server_side=config.role is Role.SERVER,
            server_hostname=server_name,
        )
        self._in = _Scanner()
        self._out = _Scanner()
        self._pending = bytearray()
        self._tls13 = False
        self._result: HandshakeResult | None = None
        self._handed_off = False
        self.peer_closed = False
        self.clean_close = False  # the peer sent close_notify (rather than just EOF)
        if config.role is Role.CLIENT:
            self._step()

    # -- feeding and draining --------------------------------------------------------
    @property
    def complete(self) -> bool:
        return self._result is not None

    def data_to_send(self) -> bytes:
        """Bytes OpenSSL wrote, for the caller's socket (all of them, in order)."""
        out = bytes(self._pending)
        self._pending.clear()
        return out

    def receive_data(self, data: bytes) -> None:
        """Bytes read from the socket; b"" is the peer's EOF."""
        if self._result is not None:
            if data:
                self._incoming.write(data)
            else:
                self._incoming.write_eof()
            return
        if not data:
            self._incoming.write_eof()
            self.close()
            raise HandshakeError("the peer closed the connection during the handshake")
        self._in.feed(data, tls13=self._tls13)
        self._learn_version()
        self._incoming.write(data)
        self._step()

    def _step(self) -> None:
        try:
            self._ssl.do_handshake()
            done = True
        except ssl.SSLWantReadError:
            done = False
        except ssl.SSLError as exc:
            self._drain()  # an alert for the peer, if OpenSSL wrote one
            self.close()
            raise HandshakeError(_describe(exc, self.config)) from None
        self._drain()
        if done:
            try:
                self._result = self._finish()
            finally:
                self.close()

    def _drain(self) -> None:
        data = self._outgoing.read()
        if data and self._result is None:
            self._learn_version()
            self._out.feed(data, tls13=self._tls13)
            self._learn_version()
        self._pending += data

    def _learn_version(self) -> None:
        """TLS 1.3 is known from the first ServerHello (or HelloRetryRequest) either way."""
        if not self._tls13:
            server = self._out if self.config.role is Role.SERVER else self._in
            hellos = server.hellos(HS_SERVER_HELLO)
            self._tls13 = bool(hellos) and hellos[0].version == 0x0304

    # -- the hand-off ------------------------------------------------------------------
    def handoff(self) -> HandshakeResult:
        """Our direction's keys for TCP_TXTLS_ENABLE; OpenSSL may not write after this.

        Every byte of `data_to_send()` must already be on the wire: the kernel
        continues the sequence where OpenSSL stopped.
        """
        if self._result is None:
            raise HandshakeError("the handshake is not complete")
        self._drain()
        if self._pending:
            raise HandshakeError("flush data_to_send() before handing the keys to the kernel")
        self._handed_off = True
        self._check_no_writes()
        return self._result

    def kernel_refused(self) -> bytes:
        """TCP_TXTLS_ENABLE failed: OpenSSL keeps the transmit side.

        Returns its close_notify, sealed in userland at OpenSSL's own sequence
        number, so the caller can end the connection cleanly without sending
        anything in the clear.
        """
        if self._result is None:
            raise HandshakeError("the handshake is not complete")
        self._handed_off = False
        with contextlib.suppress(ssl.SSLError):
            self._ssl.unwrap()  # writes close_notify, then wants the peer's (WantRead)
        data = bytes(self._pending) + self._outgoing.read()
        self._pending.clear()
        return data

    @property
    def result(self) -> HandshakeResult | None:
        return self._result

    # -- reading after the handshake ---------------------------------------------------
    def read(self, max_bytes: int = 1 << 20) -> bytes:
        """Application data received so far (b"" if none yet or the peer closed)."""
        if self._result is None:
            raise HandshakeError("the handshake is not complete")
        out = bytearray()
        while len(out) < max_bytes:
            try:
                chunk = self._ssl.read(max_bytes - len(out))
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                self.peer_closed = self.clean_close = True
                break
            except ssl.SSLEOFError:
                # EOF without close_notify: OpenSSL 3 writes a fatal alert for it.
                # The peer is gone, and after the hand-off the alert could not be
                # sealed at the kernel's sequence number anyway: drop it.
                self.peer_closed = True
                if self._handed_off:
                    self._outgoing.read()
                break
            except ssl.SSLError as exc:
                raise HandshakeError(
                    f"receiving from the peer failed: {exc.reason or exc}"
                ) from None
            if not chunk:
                # CPython returns b"" rather than raising once close_notify has come.
                self.peer_closed = self.clean_close = True
                break
            out += chunk
        self._check_no_writes()
        return bytes(out)

    def _check_no_writes(self) -> None:
        if self._handed_off and self._key_update_requested[0]:
            # OpenSSL would answer on its next SSL_write, which never comes; FreeBSD
            # cannot rekey a TX session, so the stream must stop here (RFC 8446 §4.6.3).
            raise HandshakeError(
                "the peer requested a TLS 1.3 KeyUpdate; KTLS cannot rekey the transmit side"
            )
        data = self._outgoing.read()
        if not data:
            return
        if self._handed_off:
            # The kernel owns the sequence numbers now: these bytes can never be sent.
            raise HandshakeError(
                f"OpenSSL tried to send {len(data)} bytes after the kernel took over the "
                "transmit side (an alert or a renegotiation answer); they were not sent"
            )
        self._pending += data

    def close(self) -> None:
        """Remove the key log (idempotent; the SSL object stays usable for reading)."""
        if self._keylog is not None:
            self._keylog.close()
            self._keylog = None

    def __enter__(self) -> TlsHandshake:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- key extraction ----------------------------------------------------------------
    def _finish(self) -> HandshakeResult:
        protocol = self._ssl.version() or ""
        cipher = self._ssl.cipher()
        if cipher is None or protocol not in PROTOCOL_MINORS:
            raise UnsupportedSetup(f"KTLS cannot take over {protocol or 'this protocol'}")
        name = cipher[0]
        vminor = PROTOCOL_MINORS[protocol]
        described = {c["name"]: c for c in self._ctx.get_ciphers()}.get(name)
        if described is None:
            raise HandshakeError(f"OpenSSL does not describe the negotiated suite {name}")
        info = _suite_info(name, str(described["symmetric"]), described["digest"], vminor)

        client_hellos = self._in_or_out(Role.CLIENT).hellos(HS_CLIENT_HELLO)
        server_hellos = [
            h
            for h in self._in_or_out(Role.SERVER).hellos(HS_SERVER_HELLO)
            if h.random != HRR_RANDOM
        ]
        if not client_hellos or not server_hellos:
            raise HandshakeError("ClientHello or ServerHello not seen in the handshake")
        ch, sh = client_hellos[0], server_hellos[-1]
        if sh.cipher_suite != int(described["id"]) & 0xFFFF:
            raise HandshakeError("the ServerHello does not match the suite OpenSSL reports")
        self._refuse_extensions(ch, sh, vminor)

        assert self._keylog is not None
        secrets = self._keylog.secrets(ch.random)
        ours = "CLIENT" if self.config.role is Role.CLIENT else "SERVER"
        if vminor == TLS_MINOR_VER_THREE:
            assert info.prf_hash is not None
            enable, sent = self._tls13_keys(info, secrets, ours)
        else:
            enable, sent = self._tls12_keys(info, vminor, secrets, ch.random, sh.random)
        alpn = self._ssl.selected_alpn_protocol()
        return HandshakeResult(self.config.role, protocol, name, enable, alpn, sent)

    def _in_or_out(self, sender: Role) -> _Scanner:
        """The scanner of the bytes `sender`'s messages travel in."""
        return self._out if sender is self.config.role else self._in

    def _refuse_extensions(self, ch: _Hello, sh: _Hello, vminor: int) -> None:
        if sh.compression != 0:
            raise UnsupportedSetup("the peer negotiated TLS compression; KTLS refuses it")
        if vminor != TLS_MINOR_VER_THREE and EXT_ENCRYPT_THEN_MAC in sh.extensions:
            raise UnsupportedSetup("encrypt-then-MAC was negotiated; KTLS is MAC-then-encrypt")
        # A TLS 1.3 server answers max_fragment_length in EncryptedExtensions, which
        # we cannot read; OpenSSL servers accept every valid request, so the
        # ClientHello decides. (We never request it as a client.)
        mfl = sh.extensions.get(EXT_MAX_FRAGMENT_LENGTH)
        if mfl is None and self.config.role is Role.SERVER:
            mfl = ch.extensions.get(EXT_MAX_FRAGMENT_LENGTH)
        if mfl is not None:
            size = {1: 512, 2: 1024, 3: 2048, 4: 4096}.get(mfl[0] if mfl else 0, 0)
            raise UnsupportedSetup(
                f"the peer negotiated max_fragment_length {size or 'unknown'}; "
                f"KTLS sends {TLS_MAX_MSG_SIZE_V10_2}-byte records"
            )

    def _tls13_keys(
        self, info: _SuiteInfo, secrets: dict[str, bytes], ours: str
    ) -> tuple[TlsEnable, int]:
        assert info.prf_hash is not None
        app = secrets.get(f"{ours}_TRAFFIC_SECRET_0")
        hs = secrets.get(f"{ours}_HANDSHAKE_TRAFFIC_SECRET")
        if app is None or hs is None:
            raise HandshakeError("the key log lacks this connection's TLS 1.3 traffic secrets")

        def opener(secret: bytes) -> _Opener:
            assert info.prf_hash is not None
            key = hkdf_expand_label(secret, "key", b"", info.key_len, info.prf_hash)
            iv = hkdf_expand_label(secret, "iv", b"", 12, info.prf_hash)
            return _Opener(info, TLS_MINOR_VER_THREE, key, iv)

        app_open, hs_open = opener(app), opener(hs)
        # Our encrypted records are handshake-epoch (EncryptedExtensions..Finished),
        # then application-epoch (the server's NewSessionTickets): each must open
        # under one of the two keys, and the application ones fix the next seq.
        for rtype, body in self._out.records:
            if rtype != CT_APPLICATION_DATA:
                continue
            if app_open.try_open(rtype, body) is None and hs_open.try_open(rtype, body) is None:
                raise HandshakeError("the extracted TLS 1.3 keys do not open our own records")
        if hs_open.seq == 0:
            raise HandshakeError("no encrypted handshake record of ours was seen")
        enable = TlsEnable(
            cipher_algorithm=int(info.cipher),
            cipher_key=app_open.key,
            iv=app_open.iv,
            tls_vmajor=TLS_MAJOR_VER_ONE,
            tls_vminor=TLS_MINOR_VER_THREE,
            rec_seq=app_open.seq,
        )
        return enable, app_open.seq

    def _tls12_keys(
        self,
        info: _SuiteInfo,
        vminor: int,
        secrets: dict[str, bytes],
        client_random: bytes,
        server_random: bytes,
    ) -> tuple[TlsEnable, int]:
        master = secrets.get("CLIENT_RANDOM")
        if master is None:
            raise HandshakeError("the key log lacks this connection's master secret")
        # RFC 5246 §6.3: client MAC, server MAC, client key, server key, client IV, server IV.
        m, k, i = info.mac_len, info.key_len, info.iv_len
        block = tls_prf(
            master, b"key expansion", server_random + client_random, 2 * (m + k + i), info.prf_hash
        )
        side = 0 if self.config.role is Role.CLIENT else 1
        mac_key = block[side * m : (side + 1) * m]
        key = block[2 * m + side * k : 2 * m + (side + 1) * k]
        iv = block[2 * (m + k) + side * i : 2 * (m + k) + (side + 1) * i]
        opener = _Opener(info, vminor, key, iv, mac_key)
        if self._out.ccs_at is None:
            raise HandshakeError("our ChangeCipherSpec was not seen")
        # Our Finished is seq 0 of the new epoch; anything after it takes the next.
        for rtype, body in self._out.records[self._out.ccs_at :]:
            opened = opener.try_open(rtype, body)
            if opened is None:
                raise HandshakeError("the extracted TLS 1.2 keys do not open our own Finished")
        if opener.seq == 0:
            raise HandshakeError("our Finished record was not seen")
        if info.cipher == CryptoAlg.AES_CBC:
            # TLS 1.0 chains the IV: the kernel continues from our last ciphertext
            # block; 1.1+ sends explicit IVs and struct tls_enable takes none.
            enable_iv = opener.iv if vminor == TLS_MINOR_VER_ZERO else b""
            auth, auth_key = info.auth, mac_key
        else:
            enable_iv, auth, auth_key = iv, 0, b""
        enable = TlsEnable(
            cipher_algorithm=int(info.cipher),
            cipher_key=key,
            iv=enable_iv,
            auth_algorithm=auth,
            auth_key=auth_key,
            tls_vmajor=TLS_MAJOR_VER_ONE,
            tls_vminor=vminor,
            rec_seq=opener.seq,
        )
        return enable, opener.seq


def _describe(exc: ssl.SSLError, config: HandshakeConfig) -> str:
    reason = exc.reason or exc.strerror or str(exc)
    text = f"TLS handshake failed: {reason}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        text = f"TLS handshake failed: {exc.verify_message or reason}"
    elif config.tls_version in ("1.0", "1.1") and "@SECLEVEL=0" not in (config.ciphers or ""):
        text += " (OpenSSL 3 needs '@SECLEVEL=0' in the cipher list for TLS 1.0/1.1)"
    return text
