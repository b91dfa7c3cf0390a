"""Sans-IO TLS record protection for every KTLS suite: framing, seal and open.

Bytes in, bytes out: no sockets, no randomness of its own (the caller passes
the TLS 1.2 GCM nonce counter and the CBC IVs, so simulations can be seeded),
no cryptography import until a protector is built.

Suites and wire formats (reference freebsd-ktls.md §3, peers-and-vectors.md §4):

- TLS 1.2 AES-GCM: hdr(5) | explicit nonce(8) | ct | tag(16); nonce = salt(4) |
  explicit; AAD = seq | type | version | plaintext length. FreeBSD's explicit
  nonce is the session's counter (random start, +1 per record), not the seq.
- TLS 1.2 ChaCha20-Poly1305 (RFC 7905): hdr | ct | tag; nonce = iv XOR seq.
- TLS 1.3 AES-GCM / ChaCha20: hdr(23, 3.3) | enc(payload | type) | tag;
  nonce = iv XOR seq, AAD = the header. We send no padding; we accept it.
- AES-CBC + HMAC (TLS 1.0-1.2): MAC-then-encrypt, minimal padding; 1.0 chains
  the IV from the previous record's last ciphertext block, 1.1+ send a fresh
  16-byte IV after the header.

Sequence numbers and GCM nonce counters are 64-bit and never wrap: the value
2**64-1 (`U64_MAX`) is refused with EOVERFLOW and nothing is sealed, because
the record after it would reuse 0. (Linux refuses a rec_seq of all 0xFF the
same way.)

A protector keeps per-session scratch buffers: it is not thread-safe; use one
per session (FreeBSD likewise serialises a session on one worker).
"""

from __future__ import annotations

import abc
import operator
import struct
import sys
from collections import deque
from collections.abc import Callable, Iterator
from itertools import repeat
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeAlias

from ktls_core.errors import Errno, KtlsError
from ktls_core.frozen import Frozen
from ktls_core.tls.suites import (
    AEAD_TAG_LEN,
    AES_BLOCK_LEN,
    GCM12_EXPLICIT_LEN,
    MAC_LEN,
    TLS12_MAX_CIPHERTEXT,
    TLS13_MAX_CIPHERTEXT,
    TLS_1_3_GCM_IV_LEN,
    TLS_AEAD_GCM_LEN,
    TLS_CBC_IMPLICIT_IV_LEN,
    TLS_CHACHA20_IV_LEN,
    TLS_HEADER_LEN,
    TLS_MAJOR_VER_ONE,
    TLS_MAX_MSG_SIZE_V10_2,
    TLS_MINOR_VER_THREE,
    TLS_MINOR_VER_TWO,
    TLS_MINOR_VER_ZERO,
    U64_MAX,
    CryptoAlg,
    RecordType,
    Suite,
    parse_auth,
    parse_cipher,
    parse_version,
)

if TYPE_CHECKING:
    from ktls_core.tls.enable import TlsEnable

ReadableBuffer: TypeAlias = bytes | bytearray | memoryview
WritableBuffer: TypeAlias = bytearray | memoryview
# Per-record explicit input: GCM 1.2 nonce counter (int), CBC IV (16 bytes), or None.
Explicit: TypeAlias = int | bytes | bytearray | memoryview | None
# For a stream: GCM 1.2 first counter, CBC 1.0 chain IV, or for CBC 1.1/1.2 an
# os.urandom-like source called with 16 per record.
StreamExplicit: TypeAlias = int | bytes | Callable[[int], bytes] | None
ExplicitKind = Literal["counter", "chain", "random", "none"]


class SealInto(Protocol):
    """RecordProtector.seal_into: write one record at out[0:], return its length."""

    def __call__(
        self,
        out: WritableBuffer,
        rtype: int,
        payload: ReadableBuffer,
        seq: int,
        explicit: Explicit = None,
    ) -> int: ...


_HDR = struct.Struct(">BBBH")  # struct tls_record_layer
_AAD12 = struct.Struct(">QBBBH")  # seq, type, version, length (AEAD 1.2 AAD and CBC MAC prefix)
_U64 = struct.Struct(">Q")
# AAD(13) then nonce(12) in one scratch: seq | type,ver,len,nonce head (9) | nonce tail
_AAD_NONCE = struct.Struct(">Q9sQ")
_HDR_EXPLICIT = struct.Struct(">5sQ")  # GCM 1.2 header + explicit nonce
_AN_LEN = _AAD_NONCE.size  # 25

# Bytes of plaintext a stream seals per yielded chunk: one send batch
# (output.BATCH_BYTES), so a batch of full records is one group and one buffer.
STREAM_CHUNK_BYTES = 4 << 20
# Output buffers a protector keeps for reuse.
_POOL_SIZE = 4


def _records_per_chunk(max_frame_len: int) -> int:
    """Records a stream seals per yielded chunk (a batch of the GCM fast path too)."""
    return max(1, min(256, STREAM_CHUNK_BYTES // max_frame_len))


class _OutBuffer:
    """An output buffer, reused only while nothing outside the protector refers to it.

    Every chunk handed out is a view made from its own memoryview(buf), which
    holds a reference to buf for as long as that view or any slice of it lives.
    So buf's reference count back at its baseline means no caller still reads
    it, and sealing over it again cannot change bytes someone kept (CPython
    reference counts; a warm reused buffer is what keeps streaming fast).
    """

    def __init__(self, size: int) -> None:
        self.buf = bytearray(size)
        self.base = 0

    def settle(self) -> None:
        """Record the baseline once the owner's own views of buf exist."""
        self.base = sys.getrefcount(self.buf)

    @property
    def free(self) -> bool:
        return sys.getrefcount(self.buf) <= self.base

    def view(self, start: int, end: int) -> memoryview:
        return memoryview(self.buf)[start:end]


def _take(pool: list[Any], fits: Callable[[Any], bool], make: Callable[[], Any]) -> Any:
    """A free pooled buffer that fits, else a new one (pooled while there is room)."""
    for item in pool:
        if item.free and fits(item):
            return item
    item = make()
    pool[:] = [b for b in pool if not b.free][: _POOL_SIZE - 1]
    pool.append(item)
    return item


def _overflow(what: str, value: int) -> KtlsError:
    return KtlsError(
        Errno.EOVERFLOW, f"{what} {value:#x} would wrap after this record; refusing to seal it"
    )


def split_records(total_len: int, max_frame_len: int, allow_empty: bool) -> list[int]:
    """Plaintext lengths of the records one send of total_len bytes becomes (sosend).

    A zero-length send is one empty record where allowed (TLS 1.0 CBC empty
    fragment), else EINVAL.
    """
    if not 0 < max_frame_len <= TLS_MAX_MSG_SIZE_V10_2:
        raise KtlsError(Errno.EINVAL, f"max_frame_len {max_frame_len} not in 1..16384")
    if total_len < 0:
        raise KtlsError(Errno.EINVAL, "negative length")
    if total_len == 0:
        if allow_empty:
            return [0]
        raise KtlsError(Errno.EINVAL, "zero-length send (only TLS 1.0 CBC allows empty records)")
    full, rest = divmod(total_len, max_frame_len)
    return [max_frame_len] * full + ([rest] if rest else [])


def count_records(total_len: int, max_frame_len: int, allow_empty: bool) -> int:
    """len(split_records(...)) without building the list."""
    if total_len == 0:
        return len(split_records(0, max_frame_len, allow_empty))
    split_records(1, max_frame_len, allow_empty)  # validates max_frame_len
    return -(-total_len // max_frame_len)


# --- keys --------------------------------------------------------------------


def _check_keys(k: SessionKeys) -> None:
    """What a record layer can protect; EINVAL for bad sizes, EPROTONOSUPPORT otherwise."""
    if k.cipher == CryptoAlg.AES_NIST_GCM_16:
        if k.vminor not in (TLS_MINOR_VER_TWO, TLS_MINOR_VER_THREE):
            raise KtlsError(Errno.EPROTONOSUPPORT, "AES-GCM records need TLS 1.2 or 1.3")
        if len(k.key) not in (16, 32):
            raise KtlsError(Errno.EINVAL, f"AES-GCM key of {len(k.key)} bytes (16 or 32)")
        want = TLS_AEAD_GCM_LEN if k.vminor == TLS_MINOR_VER_TWO else TLS_1_3_GCM_IV_LEN
        if len(k.iv) != want:
            raise KtlsError(Errno.EINVAL, f"AES-GCM IV of {len(k.iv)} bytes ({want})")
    elif k.cipher == CryptoAlg.CHACHA20_POLY1305:
        if k.vminor not in (TLS_MINOR_VER_TWO, TLS_MINOR_VER_THREE):
            raise KtlsError(Errno.EPROTONOSUPPORT, "ChaCha20-Poly1305 needs TLS 1.2 or 1.3")
        if len(k.key) != 32:
            raise KtlsError(Errno.EINVAL, f"ChaCha20 key of {len(k.key)} bytes (32)")
        if len(k.iv) != TLS_CHACHA20_IV_LEN:
            raise KtlsError(Errno.EINVAL, f"ChaCha20 IV of {len(k.iv)} bytes (12)")
    elif k.cipher == CryptoAlg.AES_CBC:
        if not TLS_MINOR_VER_ZERO <= k.vminor <= TLS_MINOR_VER_TWO:
            raise KtlsError(Errno.EPROTONOSUPPORT, "AES-CBC needs TLS 1.0, 1.1 or 1.2")
        if k.auth not in MAC_LEN:
            raise KtlsError(Errno.EINVAL, "AES-CBC needs HMAC-SHA1, -SHA256 or -SHA384")
        if k.auth != CryptoAlg.SHA1_HMAC and k.vminor != TLS_MINOR_VER_TWO:
            raise KtlsError(Errno.EPROTONOSUPPORT, "HMAC-SHA256/384 exist only with TLS 1.2")
        if len(k.key) not in (16, 32):
            raise KtlsError(Errno.EINVAL, f"AES-CBC key of {len(k.key)} bytes (16 or 32)")
        if not k.auth_key:
            raise KtlsError(Errno.EINVAL, "AES-CBC needs an auth key")
        want = TLS_CBC_IMPLICIT_IV_LEN if k.vminor == TLS_MINOR_VER_ZERO else 0
        if len(k.iv) != want:
            raise KtlsError(Errno.EINVAL, f"AES-CBC TLS {k.suite.version} IV of {len(k.iv)} bytes")
        return
    else:
        raise KtlsError(Errno.EPROTONOSUPPORT, f"cipher algorithm {k.cipher} not supported")
    if k.auth or k.auth_key:
        raise KtlsError(Errno.EINVAL, "AEAD suites take no auth algorithm or key")


class SessionKeys(Frozen):
    """Key material of one direction; kept apart from framing. Keys never print."""

    _fields = ("cipher", "vminor", "key", "iv", "auth", "auth_key")
    __slots__ = _fields
    _secret = frozenset({"key", "iv", "auth_key"})
    cipher: int
    vminor: int
    key: bytes
    iv: bytes  # GCM 1.2 salt(4), 1.3/ChaCha iv(12), CBC 1.0 iv(16), else b""
    auth: int
    auth_key: bytes

    def __init__(
        self, cipher: int, vminor: int, key: bytes, iv: bytes, auth: int = 0, auth_key: bytes = b""
    ) -> None:
        self._init(locals())
        _check_keys(self)

    @classmethod
    def from_enable(cls, params: TlsEnable) -> SessionKeys:
        """The keys a session built from struct tls_enable uses (CBC 1.1+ drops the IV)."""
        aead = params.cipher_algorithm != CryptoAlg.AES_CBC
        return cls(
            cipher=params.cipher_algorithm,
            vminor=params.tls_vminor,
            key=bytes(params.cipher_key),
            iv=bytes(params.effective_iv),
            auth=0 if aead else params.auth_algorithm,  # GCM may name a GMAC alg: unused
            auth_key=b"" if aead else bytes(params.auth_key),
        )

    @classmethod
    def from_names(
        cls,
        version: str,
        cipher: str,
        key: bytes,
        iv: bytes = b"",
        auth: str | None = None,
        auth_key: bytes = b"",
    ) -> SessionKeys:
        """From CLI spellings: ('1.2', 'aes-gcm', key, salt)."""
        calg = parse_cipher(cipher)
        vminor = parse_version(version)
        if calg == CryptoAlg.AES_CBC and vminor != TLS_MINOR_VER_ZERO:
            iv = b""  # 1.1+ carry the IV in each record
        return cls(calg, vminor, bytes(key), bytes(iv), parse_auth(auth), bytes(auth_key))

    @property
    def suite(self) -> Suite:
        return Suite(self.cipher, len(self.key), self.vminor, self.auth)


# --- protectors --------------------------------------------------------------


def make_protector(
    keys: SessionKeys, max_frame_len: int = TLS_MAX_MSG_SIZE_V10_2
) -> RecordProtector:
    """The protector for this suite; build it once per session (it caches ciphers)."""
    if keys.cipher == CryptoAlg.AES_CBC:
        return CbcProtector(keys, max_frame_len)
    if keys.vminor == TLS_MINOR_VER_THREE:
        return Tls13Protector(keys, max_frame_len)
    if keys.cipher == CryptoAlg.AES_NIST_GCM_16:
        return Gcm12Protector(keys, max_frame_len)
    return Chacha12Protector(keys, max_frame_len)


def _aead(keys: SessionKeys) -> Any:
    """The cached AEAD object; imported lazily (the CLI's fast paths never load it)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

    if keys.cipher == CryptoAlg.AES_NIST_GCM_16:
        return AESGCM(keys.key)
    return ChaCha20Poly1305(keys.key)


class RecordProtector(abc.ABC):
    """Seal and open records of one session.

    seal_into(out, rtype, payload, seq, explicit) writes header | body | trailer
    at out[0:] and returns the record's length; `explicit` is the TLS 1.2 GCM
    nonce counter value (int), the CBC 1.1/1.2 random IV or the CBC 1.0 chain IV
    (16 bytes), and None for the other suites. Pass a memoryview for speed.

    seal_into is a closure each suite builds once (`_make_seal_into`): on 16 KiB
    records the Python around encrypt_into is what costs, and cell loads are
    cheaper than attribute loads.
    """

    explicit_kind: ExplicitKind = "none"
    seal_into: SealInto
    # Bytes of room a sender may leave after each payload so that sealing copies
    # nothing (seal_slots): TLS 1.3's inner content type. 0: no such path.
    slot_room = 0

    def __init__(self, keys: SessionKeys, max_frame_len: int = TLS_MAX_MSG_SIZE_V10_2) -> None:
        if not 0 < max_frame_len <= TLS_MAX_MSG_SIZE_V10_2:
            raise KtlsError(Errno.EINVAL, f"max_frame_len {max_frame_len} not in 1..16384")
        self.keys = keys
        self.suite = keys.suite
        self.hlen = self.suite.hlen
        self.tlen = self.suite.tlen
        self.max_frame_len = max_frame_len
        self.allows_empty = self.suite.allows_empty
        # TLS 1.3 records claim to be TLS 1.2 on the wire.
        self.wire_vminor = min(keys.vminor, TLS_MINOR_VER_TWO)
        self.max_ciphertext = (
            TLS13_MAX_CIPHERTEXT if keys.vminor == TLS_MINOR_VER_THREE else TLS12_MAX_CIPHERTEXT
        )
        self._chunks: list[_OutBuffer] = []

    def _ready(self) -> None:
        """Subclasses call this at the end of __init__, once their state exists."""
        self.seal_into = self._make_seal_into()

    # -- lengths --

    def wire_length(self, payload_len: int) -> int:
        """Exact bytes on the wire for one record (CBC padding included)."""
        return self.suite.wire_length(payload_len)

    def record_lengths(self, total_len: int) -> list[int]:
        return split_records(total_len, self.max_frame_len, self.allows_empty)

    def stream_wire_length(self, total_len: int) -> int:
        """Bytes on the wire for a send of total_len plaintext bytes."""
        if self.suite.cipher == CryptoAlg.AES_CBC:
            return sum(self.wire_length(n) for n in self.record_lengths(total_len))
        count = count_records(total_len, self.max_frame_len, self.allows_empty)
        return total_len + count * (self.hlen + self.tlen)

    # -- sealing --

    @abc.abstractmethod
    def _make_seal_into(self) -> SealInto:
        """Build this suite's seal_into."""

    def seal(
        self, rtype: int, payload: ReadableBuffer, seq: int, explicit: Explicit = None
    ) -> bytes:
        out = bytearray(self.wire_length(len(payload)))
        n = self.seal_into(out, rtype, payload, seq, explicit)
        return bytes(out[:n])

    def seal_stream(
        self,
        rtype: int,
        data: ReadableBuffer,
        first_seq: int,
        explicit: StreamExplicit = None,
    ) -> SealStream:
        """Cut data into records (max_frame_len each) and seal them in order.

        Iterating yields the wire bytes in chunks (memoryviews, valid for as long
        as they are kept: a buffer is sealed over again only once nothing refers
        to it, so consuming each chunk at once keeps one warm buffer). Everything is
        checked before the first byte is sealed, sequence wrap included.
        """
        return SealStream(self, rtype, data, first_seq, explicit)

    def seal_slots(self, rtype: int, slots: memoryview, n: int, count: int, seq: int) -> memoryview:
        """Seal `count` records of n bytes whose payloads lie in `slots` at a stride of
        n + slot_room, the room after each payload being the protector's to write.
        Returns the wire bytes (valid as seal_stream's chunks are)."""
        raise KtlsError(Errno.EOPNOTSUPP, f"{self.suite.name} seals no slots")

    def _chunk_buffer(self, size: int) -> _OutBuffer:
        def make() -> _OutBuffer:
            out = _OutBuffer(size)
            out.settle()
            return out

        chunk: _OutBuffer = _take(self._chunks, lambda c: len(c.buf) >= size, make)
        return chunk

    def _seal_full_group(
        self, rtype: int, data: memoryview, n: int, k: int, seq: int, ex: int | None
    ) -> memoryview | None:
        """Fast path hook: seal k records of n bytes each, or None to fall back."""
        return None

    # -- opening --

    def _check_header(self, header: ReadableBuffer, body_len: int) -> int:
        """Common header checks; returns the header's record type."""
        if len(header) != TLS_HEADER_LEN:
            raise KtlsError(Errno.EMSGSIZE, f"header of {len(header)} bytes")
        rtype, vmajor, vminor, length = _HDR.unpack(header)
        if vmajor != TLS_MAJOR_VER_ONE or vminor != self.wire_vminor:
            want = f"{TLS_MAJOR_VER_ONE}.{self.wire_vminor}"
            raise KtlsError(Errno.EBADMSG, f"record version {vmajor}.{vminor}, expected {want}")
        if length != body_len:
            raise KtlsError(Errno.EMSGSIZE, f"header length {length}, body {body_len} bytes")
        if length > self.max_ciphertext:
            raise KtlsError(
                Errno.EMSGSIZE, f"record of {length} bytes exceeds {self.max_ciphertext}"
            )
        return int(rtype)

    @abc.abstractmethod
    def open_record(
        self,
        header: ReadableBuffer,
        body: ReadableBuffer,
        seq: int,
        chain_iv: ReadableBuffer | None = None,
    ) -> tuple[int, bytes]:
        """(type, plaintext) of one record; EBADMSG on tag/MAC/padding, EMSGSIZE on lengths.

        chain_iv is needed for TLS 1.0 CBC only: the session IV for the first
        record, then the last 16 bytes of the previous record.
        """


def _check_open_seq(seq: int) -> None:
    if not 0 <= seq <= U64_MAX:
        raise KtlsError(Errno.EINVAL, f"sequence number {seq} is not a u64")


def _check_rtype(rtype: int) -> None:
    if not 0 <= rtype <= 255:
        raise KtlsError(Errno.EINVAL, f"record type {rtype} is not a byte")


class _Aead12Base(RecordProtector):
    """TLS 1.2 AEAD: AAD = seq | type | version | plaintext length."""

    _explicit_len = 0

    def __init__(self, keys: SessionKeys, max_frame_len: int = TLS_MAX_MSG_SIZE_V10_2) -> None:
        super().__init__(keys, max_frame_len)
        aead = _aead(keys)
        self._encrypt_into = aead.encrypt_into
        self._decrypt = aead.decrypt
        # scratch: AAD(13) | nonce(12), views made once
        self._an = bytearray(_AN_LEN)
        scratch = memoryview(self._an)
        self._aad = scratch[:13]
        self._nonce = scratch[13:]
        self._pack_an = _AAD_NONCE.pack_into
        # per (type, length) constants, rebuilt when either changes
        self._rtype = -1
        self._n = -1
        self._mid = b""
        self._h5 = b""
        self._end = 0
        self._overhead = self.hlen + self.tlen

    def _nonce_head(self) -> bytes:
        return self.keys.iv[:4]

    def _prepare(self, rtype: int, n: int) -> tuple[bytes, bytes, int]:
        """Constants of records of this type and length: AAD tail + nonce head, header, end."""
        _check_rtype(rtype)
        if not 0 < n <= self.max_frame_len:
            raise KtlsError(Errno.EINVAL, f"record of {n} bytes (1..{self.max_frame_len})")
        self._mid = struct.pack(">BBBH4s", rtype, 3, self.wire_vminor, n, self._nonce_head())
        self._h5 = _HDR.pack(rtype, 3, self.wire_vminor, n + self._explicit_len + AEAD_TAG_LEN)
        self._end = n + self._overhead
        self._rtype = rtype
        self._n = n
        return self._mid, self._h5, self._end


def _invalid(exc: Exception) -> KtlsError:
    return KtlsError(Errno.EINVAL, f"cannot seal: {exc}")


class Gcm12Protector(_Aead12Base):
    """TLS 1.2 AES-GCM (ktls_ocf_tls12_aead_encrypt)."""

    explicit_kind: ExplicitKind = "counter"
    _explicit_len = GCM12_EXPLICIT_LEN

    def __init__(self, keys: SessionKeys, max_frame_len: int = TLS_MAX_MSG_SIZE_V10_2) -> None:
        super().__init__(keys, max_frame_len)
        self._pack_hdr = _HDR_EXPLICIT.pack_into
        self._groups: list[_Gcm12Group] = []
        self._ready()

    def _make_seal_into(self) -> SealInto:
        pack_an, pack_hdr, an = self._pack_an, self._pack_hdr, self._an
        encrypt_into, nonce, aad = self._encrypt_into, self._nonce, self._aad
        prepare, mv_type = self._prepare, memoryview
        last_n = last_type = -1
        mid = h5 = b""
        end = 0

        def seal_into(
            out: WritableBuffer,
            rtype: int,
            payload: ReadableBuffer,
            seq: int,
            explicit: Explicit = None,
        ) -> int:
            # Hot path: two pack_into calls and one view per record.
            nonlocal last_n, last_type, mid, h5, end
            n = len(payload)
            if n != last_n or rtype != last_type:
                mid, h5, end = prepare(rtype, n)
                last_n, last_type = n, rtype
            try:
                if seq >= U64_MAX:
                    raise _overflow("sequence number", seq)
                if explicit >= U64_MAX:  # type: ignore[operator]
                    raise _overflow("GCM nonce counter", explicit)  # type: ignore[arg-type]
                pack_an(an, 0, seq, mid, explicit)
                pack_hdr(out, 0, h5, explicit)
                body = (out if type(out) is mv_type else mv_type(out))[13:end]
                encrypt_into(nonce, payload, aad, body)
            except (struct.error, TypeError, ValueError) as exc:
                raise _invalid(exc) from exc
            return end

        return seal_into

    def _seal_full_group(
        self, rtype: int, data: memoryview, n: int, k: int, seq: int, ex: int | None
    ) -> memoryview | None:
        if ex is None:
            return None
        group: _Gcm12Group = _take(
            self._groups, lambda g: g.n == n and g.k >= k, lambda: _Gcm12Group(self, n, k)
        )
        if n != self._n or rtype != self._rtype:
            self._prepare(rtype, n)
        return group.seal(self._mid, self._h5, data, k, seq, ex)

    def open_record(
        self,
        header: ReadableBuffer,
        body: ReadableBuffer,
        seq: int,
        chain_iv: ReadableBuffer | None = None,
    ) -> tuple[int, bytes]:
        _check_open_seq(seq)
        rtype = self._check_header(header, len(body))
        ptlen = len(body) - GCM12_EXPLICIT_LEN - AEAD_TAG_LEN
        if ptlen < 0:
            raise KtlsError(Errno.EMSGSIZE, f"AES-GCM record body of {len(body)} bytes")
        if ptlen > TLS_MAX_MSG_SIZE_V10_2:
            raise KtlsError(Errno.EMSGSIZE, f"plaintext of {ptlen} bytes exceeds 16384")
        mv = memoryview(body)
        nonce = self.keys.iv + bytes(mv[:GCM12_EXPLICIT_LEN])
        aad = _AAD12.pack(seq, rtype, 3, self.wire_vminor, ptlen)
        return rtype, _aead_open(self._decrypt, nonce, mv[GCM12_EXPLICIT_LEN:], aad)


class _Gcm12Group:
    """Seal many full-size GCM 1.2 records with C-driven loops (map over pack/encrypt).

    Per record Python costs dominate 16 KiB records; doing the loop in map()
    over views made once keeps sealing near a bare encrypt_into loop.
    """

    def __init__(self, prot: Gcm12Protector, n: int, k: int) -> None:
        # k records at most: sized to the send, so a two-record send does not zero
        # (and touch) a whole chunk's buffer.
        self.n = n
        self.k = k
        self.stride = stride = n + GCM12_EXPLICIT_LEN + TLS_HEADER_LEN + AEAD_TAG_LEN
        self.scratch = scratch = _AN_LEN * k
        self.out = _OutBuffer(scratch + stride * k)
        self.buf = self.out.buf
        mv = memoryview(self.buf)
        self.aads = [mv[i * _AN_LEN : i * _AN_LEN + 13] for i in range(k)]
        self.nonces = [mv[i * _AN_LEN + 13 : (i + 1) * _AN_LEN] for i in range(k)]
        self.bodies = [mv[scratch + i * stride + 13 : scratch + (i + 1) * stride] for i in range(k)]
        self.hdr_offsets = list(range(scratch, scratch + k * stride, stride))
        self.slices = [slice(i * n, (i + 1) * n) for i in range(k)]
        self.args: list[object] = [0, b"", 0] * k
        self.pack_all = struct.Struct(">" + "Q9sQ" * k).pack_into
        self.pack_hdr = _HDR_EXPLICIT.pack_into
        self.encrypt_into = prot._encrypt_into
        self.out.settle()

    @property
    def free(self) -> bool:
        return self.out.free

    def seal(
        self, mid: bytes, h5: bytes, data: memoryview, k: int, seq: int, ex: int
    ) -> memoryview:
        """k <= self.k records from data[0 : k*n]; seq/ex ranges checked by the caller."""
        args = self.args
        if args[1] is not mid:
            args[1::3] = repeat(mid, self.k)
        args[0 : 3 * k : 3] = range(seq, seq + k)
        args[2 : 3 * k : 3] = range(ex, ex + k)
        self.pack_all(self.buf, 0, *args)
        buf = self.buf
        deque(map(self.pack_hdr, repeat(buf), self.hdr_offsets, repeat(h5), range(ex, ex + k)), 0)
        slices = self.slices if k == self.k else self.slices[:k]
        payloads = map(operator.getitem, repeat(data), slices)
        deque(map(self.encrypt_into, self.nonces, payloads, self.aads, self.bodies), 0)
        return self.out.view(self.scratch, self.scratch + k * self.stride)


class Chacha12Protector(_Aead12Base):
    """TLS 1.2 ChaCha20-Poly1305 (RFC 7905): nonce = iv XOR seq, no explicit nonce."""

    def __init__(self, keys: SessionKeys, max_frame_len: int = TLS_MAX_MSG_SIZE_V10_2) -> None:
        super().__init__(keys, max_frame_len)
        self._iv_tail = int.from_bytes(keys.iv[4:], "big")
        self._ready()

    def _make_seal_into(self) -> SealInto:
        pack_an, an, iv_tail = self._pack_an, self._an, self._iv_tail
        encrypt_into, nonce, aad = self._encrypt_into, self._nonce, self._aad
        prepare, mv_type = self._prepare, memoryview
        last_n = last_type = -1
        mid = h5 = b""
        end = 0

        def seal_into(
            out: WritableBuffer,
            rtype: int,
            payload: ReadableBuffer,
            seq: int,
            explicit: Explicit = None,
        ) -> int:
            nonlocal last_n, last_type, mid, h5, end
            n = len(payload)
            if n != last_n or rtype != last_type:
                mid, h5, end = prepare(rtype, n)
                last_n, last_type = n, rtype
            try:
                if seq >= U64_MAX:
                    raise _overflow("sequence number", seq)
                pack_an(an, 0, seq, mid, iv_tail ^ seq)
                out[0:5] = h5
                body = (out if type(out) is mv_type else mv_type(out))[5:end]
                encrypt_into(nonce, payload, aad, body)
            except (struct.error, TypeError, ValueError) as exc:
                raise _invalid(exc) from exc
            return end

        return seal_into

    def open_record(
        self,
        header: ReadableBuffer,
        body: ReadableBuffer,
        seq: int,
        chain_iv: ReadableBuffer | None = None,
    ) -> tuple[int, bytes]:
        _check_open_seq(seq)
        rtype = self._check_header(header, len(body))
        ptlen = len(body) - AEAD_TAG_LEN
        if ptlen < 0:
            raise KtlsError(Errno.EMSGSIZE, f"ChaCha20 record body of {len(body)} bytes")
        if ptlen > TLS_MAX_MSG_SIZE_V10_2:
            raise KtlsError(Errno.EMSGSIZE, f"plaintext of {ptlen} bytes exceeds 16384")
        nonce = self.keys.iv[:4] + _U64.pack(self._iv_tail ^ seq)
        aad = _AAD12.pack(seq, rtype, 3, self.wire_vminor, ptlen)
        return rtype, _aead_open(self._decrypt, nonce, body, aad)


class Tls13Protector(RecordProtector):
    """TLS 1.3 AES-GCM and ChaCha20-Poly1305 (ktls_ocf_tls13_aead_encrypt)."""

    slot_room = 1  # the inner content type follows the payload in the AEAD input

    def __init__(self, keys: SessionKeys, max_frame_len: int = TLS_MAX_MSG_SIZE_V10_2) -> None:
        super().__init__(keys, max_frame_len)
        aead = _aead(keys)
        self._encrypt_into = aead.encrypt_into
        self._decrypt = aead.decrypt
        self._iv_tail = int.from_bytes(keys.iv[4:], "big")
        self._nonce = bytearray(keys.iv)
        # payload | inner type is one AEAD input: assembled here, never in the caller's buffer
        self._inner = bytearray(max_frame_len + 1)
        self._inner_mv = memoryview(self._inner)
        self._groups: list[_Tls13Group] = []
        self._ready()

    def _seal_full_group(
        self, rtype: int, data: memoryview, n: int, k: int, seq: int, ex: int | None
    ) -> memoryview | None:
        if not 0 < rtype <= 255:
            return None  # seal_into says why
        group: _Tls13Group = _take(
            self._groups, lambda g: g.n == n and g.k >= k, lambda: _Tls13Group(self, n, k)
        )
        return group.seal(rtype, data, k, seq)

    def seal_slots(self, rtype: int, slots: memoryview, n: int, count: int, seq: int) -> memoryview:
        """The AEAD input of a record is payload | type: with the payloads read into
        slots of n + 1 bytes, each slot is its record's input as it lies."""
        _check_rtype(rtype)
        if rtype == 0:
            raise KtlsError(Errno.EINVAL, "TLS 1.3 record type 0 would read as padding")
        if not 0 < n <= self.max_frame_len:
            raise KtlsError(Errno.EINVAL, f"record of {n} bytes (1..{self.max_frame_len})")
        if count <= 0 or len(slots) < count * (n + 1):
            raise KtlsError(Errno.EINVAL, f"{len(slots)} bytes of slots for {count} records")
        if not 0 <= seq <= U64_MAX:
            raise KtlsError(Errno.EINVAL, f"sequence number {seq} is not a u64")
        if seq + count - 1 >= U64_MAX:
            raise _overflow("sequence number", U64_MAX)
        group: _Tls13Group = _take(
            self._groups, lambda g: g.n == n and g.k >= count, lambda: _Tls13Group(self, n, count)
        )
        return group.seal_slots(rtype, slots, count, seq)

    def _prepare(self, n: int) -> tuple[bytes, memoryview, int]:
        """Header, the AEAD input view (payload | type) and the record end for length n."""
        if not 0 < n <= self.max_frame_len:
            raise KtlsError(Errno.EINVAL, f"record of {n} bytes (1..{self.max_frame_len})")
        h5 = _HDR.pack(RecordType.APPLICATION_DATA, 3, 3, n + 1 + AEAD_TAG_LEN)
        return h5, self._inner_mv[: n + 1], TLS_HEADER_LEN + n + 1 + AEAD_TAG_LEN

    def _make_seal_into(self) -> SealInto:
        pack_u64, nonce, iv_tail = _U64.pack_into, self._nonce, self._iv_tail
        encrypt_into, inner = self._encrypt_into, self._inner
        prepare, mv_type = self._prepare, memoryview
        last_n = -1
        h5 = b""
        inner_view = self._inner_mv[:0]
        end = 0

        def seal_into(
            out: WritableBuffer,
            rtype: int,
            payload: ReadableBuffer,
            seq: int,
            explicit: Explicit = None,
        ) -> int:
            nonlocal last_n, h5, inner_view, end
            n = len(payload)
            if n != last_n:
                h5, inner_view, end = prepare(n)
                last_n = n
            try:
                if not 0 < rtype <= 255:
                    # FreeBSD does not check, but an inner type 0 reads as padding (RFC 8446
                    # §5.4): every peer would take the last non-zero payload byte as the type.
                    raise KtlsError(Errno.EINVAL, f"TLS 1.3 record type {rtype} (1..255)")
                if seq >= U64_MAX:
                    raise _overflow("sequence number", seq)
                pack_u64(nonce, 4, iv_tail ^ seq)
                inner[:n] = payload
                inner[n] = rtype
                out[0:5] = h5
                body = (out if type(out) is mv_type else mv_type(out))[5:end]
                encrypt_into(nonce, inner_view, h5, body)
            except (struct.error, TypeError, ValueError) as exc:
                raise _invalid(exc) from exc
            return end

        return seal_into

    def open_record(
        self,
        header: ReadableBuffer,
        body: ReadableBuffer,
        seq: int,
        chain_iv: ReadableBuffer | None = None,
    ) -> tuple[int, bytes]:
        _check_open_seq(seq)
        outer = self._check_header(header, len(body))
        if outer != RecordType.APPLICATION_DATA:
            raise KtlsError(Errno.EBADMSG, f"TLS 1.3 outer record type {outer}, expected 23")
        if len(body) < AEAD_TAG_LEN + 1:
            raise KtlsError(Errno.EMSGSIZE, f"TLS 1.3 record body of {len(body)} bytes")
        if len(body) - AEAD_TAG_LEN > TLS_MAX_MSG_SIZE_V10_2 + 1:
            raise KtlsError(Errno.EMSGSIZE, "TLS 1.3 inner plaintext exceeds 2^14 + 1")
        nonce = self.keys.iv[:4] + _U64.pack(self._iv_tail ^ seq)
        inner = _aead_open(self._decrypt, nonce, body, bytes(header))
        # RFC 8446 §5.4: strip zero padding; the last non-zero byte is the type.
        content = inner.rstrip(b"\x00")
        if not content:
            raise KtlsError(Errno.EBADMSG, "TLS 1.3 record without a non-zero content type")
        return content[-1], content[:-1]


class _Tls13Group:
    """Seal many full-size TLS 1.3 records with C-driven loops, as _Gcm12Group does.

    Per record: nonce = iv XOR seq (packed for the whole group at once), payload
    copied into its own inner buffer, followed by the type byte (together the AEAD
    input), encrypt_into with the header as AAD. The headers are the same for
    every record of this length (the outer type is always application data), so
    they are written once, when the buffer is made.
    """

    def __init__(self, prot: Tls13Protector, n: int, k: int) -> None:
        self.n = n
        self.k = k
        self.stride = stride = TLS_HEADER_LEN + n + 1 + AEAD_TAG_LEN
        self.h5 = h5 = _HDR.pack(RecordType.APPLICATION_DATA, 3, 3, n + 1 + AEAD_TAG_LEN)
        self.out = _OutBuffer(stride * k)
        out = memoryview(self.out.buf)
        for i in range(k):
            out[i * stride : i * stride + TLS_HEADER_LEN] = h5
        self.bodies = [out[i * stride + TLS_HEADER_LEN : (i + 1) * stride] for i in range(k)]
        del out
        # Scratch (never handed out): k nonces; the inner plaintexts (k of n + 1 bytes)
        # only once seal() needs them: seal_slots() seals the sender's slots in place.
        self.scratch = bytearray(12 * k)
        mv = memoryview(self.scratch)
        self.nonces = [mv[i * 12 : (i + 1) * 12] for i in range(k)]
        self.inner_buf: bytearray | None = None
        self.inners: list[memoryview] = []
        self.payloads: list[memoryview] = []
        self.rtype = -1
        self.slices = [slice(i * n, (i + 1) * n) for i in range(k)]
        self.slot_slices = [slice(i * (n + 1), (i + 1) * (n + 1)) for i in range(k)]
        self.iv_tail = prot._iv_tail
        self.args: list[object] = [prot.keys.iv[:4], 0] * k
        self.pack_all = struct.Struct(">" + "4sQ" * k).pack_into
        self.encrypt_into = prot._encrypt_into
        self.out.settle()

    def _inners(self) -> list[memoryview]:
        if self.inner_buf is None:
            n, k = self.n, self.k
            self.inner_buf = buf = bytearray((n + 1) * k)
            mv = memoryview(buf)
            self.inners = [mv[i * (n + 1) : (i + 1) * (n + 1)] for i in range(k)]
            self.payloads = [v[:n] for v in self.inners]
        return self.inners

    def _nonces_for(self, k: int, seq: int) -> None:
        args = self.args
        args[1 : 2 * k : 2] = map(operator.xor, repeat(self.iv_tail), range(seq, seq + k))
        self.pack_all(self.scratch, 0, *args)

    @property
    def free(self) -> bool:
        return self.out.free

    def seal(self, rtype: int, data: memoryview, k: int, seq: int) -> memoryview:
        """k <= self.k records from data[0 : k*n]; the seq range is checked by the caller."""
        inners = self._inners()
        assert self.inner_buf is not None
        if rtype != self.rtype:
            self.inner_buf[self.n :: self.n + 1] = bytes([rtype]) * self.k
            self.rtype = rtype
        self._nonces_for(k, seq)
        slices = self.slices if k == self.k else self.slices[:k]
        payloads = map(operator.getitem, repeat(data), slices)
        deque(map(_setitem, self.payloads, repeat(_ALL), payloads), 0)
        deque(map(self.encrypt_into, self.nonces, inners, repeat(self.h5), self.bodies[:k]), 0)
        return self.out.view(0, k * self.stride)

    def seal_slots(self, rtype: int, slots: memoryview, k: int, seq: int) -> memoryview:
        """k <= self.k records whose inputs are slots[i*(n+1) : (i+1)*(n+1)]."""
        n1 = self.n + 1
        slots[self.n : k * n1 : n1] = bytes([rtype]) * k
        self._nonces_for(k, seq)
        slices = self.slot_slices if k == self.k else self.slot_slices[:k]
        inners = map(operator.getitem, repeat(slots), slices)
        deque(map(self.encrypt_into, self.nonces, inners, repeat(self.h5), self.bodies[:k]), 0)
        return self.out.view(0, k * self.stride)


_ALL = slice(None)
_setitem: Callable[[Any, Any, Any], None] = operator.setitem


def _aead_open(decrypt: Any, nonce: bytes, ct: ReadableBuffer, aad: bytes) -> bytes:
    from cryptography.exceptions import InvalidTag

    try:
        return bytes(decrypt(nonce, ct, aad))
    except InvalidTag:
        raise KtlsError(Errno.EBADMSG, "authentication tag mismatch") from None


# HMAC digests by name: hashlib (and hmac) load OpenSSL's libcrypto, about 2 ms of
# every send's start-up, so only an AES-CBC protector imports them.
_HASHES: dict[int, str] = {
    CryptoAlg.SHA1_HMAC: "sha1",
    CryptoAlg.SHA2_256_HMAC: "sha256",
    CryptoAlg.SHA2_384_HMAC: "sha384",
}
# padding of p+1 bytes, each p, indexed by p+1 (1..16)
_PADS = [bytes([p - 1]) * p if p else b"" for p in range(AES_BLOCK_LEN + 1)]


class CbcProtector(RecordProtector):
    """AES-CBC + HMAC, MAC-then-encrypt (ktls_ocf_tls_cbc_encrypt)."""

    def __init__(self, keys: SessionKeys, max_frame_len: int = TLS_MAX_MSG_SIZE_V10_2) -> None:
        super().__init__(keys, max_frame_len)
        import hmac

        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

        self._compare_digest = hmac.compare_digest
        self._cipher = Cipher
        self._cbc = modes.CBC
        self._aes = algorithms.AES(keys.key)
        self._mac_len = MAC_LEN[keys.auth]
        self._hmac = hmac.new(keys.auth_key, digestmod=_HASHES[keys.auth])
        self._implicit = keys.vminor == TLS_MINOR_VER_ZERO
        self.explicit_kind = "chain" if self._implicit else "random"
        self._iv_at = TLS_HEADER_LEN  # explicit IV sits right after the header
        self._ct_at = self.hlen
        self._ready()

    def _make_seal_into(self) -> SealInto:
        return self._seal  # CBC's cost is the cipher and HMAC, not the call

    def _mac(self, seq: int, rtype: int, payload: ReadableBuffer) -> bytes:
        h = self._hmac.copy()
        h.update(_AAD12.pack(seq, rtype, 3, self.wire_vminor, len(payload)))
        h.update(payload)
        return h.digest()

    def _seal(
        self,
        out: WritableBuffer,
        rtype: int,
        payload: ReadableBuffer,
        seq: int,
        explicit: Explicit = None,
    ) -> int:
        n = len(payload)
        if n > self.max_frame_len or (n == 0 and not self.allows_empty):
            raise KtlsError(Errno.EINVAL, f"record of {n} bytes (1..{self.max_frame_len})")
        _check_rtype(rtype)
        if not 0 <= seq < U64_MAX:
            if seq == U64_MAX:
                raise _overflow("sequence number", seq)
            raise KtlsError(Errno.EINVAL, f"sequence number {seq} is not a u64")
        if not isinstance(explicit, bytes | bytearray | memoryview) or len(explicit) != 16:
            what = "chain IV" if self._implicit else "random explicit IV"
            raise KtlsError(
                Errno.EINVAL, f"AES-CBC TLS {self.suite.version} needs a 16-byte {what}"
            )
        iv = bytes(explicit)
        mac = self._mac(seq, rtype, payload)
        pad = _PADS[AES_BLOCK_LEN - (n + self._mac_len) % AES_BLOCK_LEN]
        end = self._ct_at + n + self._mac_len + len(pad)
        mv = out if type(out) is memoryview else memoryview(out)
        if len(mv) < end:
            raise KtlsError(Errno.EINVAL, f"output buffer of {len(mv)} bytes, record needs {end}")
        _HDR.pack_into(mv, 0, rtype, 3, self.wire_vminor, end - TLS_HEADER_LEN)
        if not self._implicit:
            mv[self._iv_at : self._iv_at + 16] = iv
        enc = self._cipher(self._aes, self._cbc(iv)).encryptor()
        aligned = n - n % AES_BLOCK_LEN
        pmv = memoryview(payload)
        at = self._ct_at
        if aligned:
            # update_into wants block_size - 1 spare bytes; the MAC after the payload gives them.
            enc.update_into(pmv[:aligned], mv[at:end])
        tail = enc.update(bytes(pmv[aligned:]) + mac + pad)
        mv[at + aligned : end] = tail
        enc.finalize()
        return end

    def open_record(
        self,
        header: ReadableBuffer,
        body: ReadableBuffer,
        seq: int,
        chain_iv: ReadableBuffer | None = None,
    ) -> tuple[int, bytes]:
        _check_open_seq(seq)
        rtype = self._check_header(header, len(body))
        mv = memoryview(body)
        if self._implicit:
            if chain_iv is None or len(chain_iv) != 16:
                raise KtlsError(Errno.EINVAL, "TLS 1.0 CBC needs the 16-byte chain IV")
            iv, ct = bytes(chain_iv), mv
        else:
            iv, ct = bytes(mv[:16]), mv[16:]
        min_ct = (self._mac_len // AES_BLOCK_LEN + 1) * AES_BLOCK_LEN
        if len(ct) < min_ct or len(ct) % AES_BLOCK_LEN:
            raise KtlsError(Errno.EMSGSIZE, f"AES-CBC record body of {len(body)} bytes")
        dec = self._cipher(self._aes, self._cbc(iv)).decryptor()
        pt = dec.update(ct) + dec.finalize()
        pad = pt[-1]
        # RFC 5246 §6.2.3.2: up to 255 padding bytes, each holding the pad length.
        if pad + 1 + self._mac_len > len(pt) or pt[-pad - 1 :] != bytes([pad]) * (pad + 1):
            raise KtlsError(Errno.EBADMSG, "bad CBC padding")
        content = pt[: len(pt) - pad - 1 - self._mac_len]
        mac = pt[len(content) : len(content) + self._mac_len]
        if not self._compare_digest(mac, self._mac(seq, rtype, content)):
            raise KtlsError(Errno.EBADMSG, "HMAC mismatch")
        if len(content) > TLS_MAX_MSG_SIZE_V10_2:
            raise KtlsError(Errno.EMSGSIZE, f"plaintext of {len(content)} bytes exceeds 16384")
        return rtype, content


# --- streams -----------------------------------------------------------------


class SealStream(Iterator[memoryview]):
    """Seal one send: yields wire chunks; tracks next_seq and next_explicit.

    next_explicit after (or during) the stream: the GCM 1.2 counter for the next
    record, the CBC 1.0 chain IV for the next record, else None. Everything is
    validated when the stream is created; nothing is sealed before that.
    """

    def __init__(
        self,
        prot: RecordProtector,
        rtype: int,
        data: ReadableBuffer,
        first_seq: int,
        explicit: StreamExplicit,
    ) -> None:
        _check_rtype(rtype)
        self._prot = prot
        self._rtype = rtype
        self._data = memoryview(data).cast("B")
        total = len(self._data)
        self.record_count = count_records(total, prot.max_frame_len, prot.allows_empty)
        self.wire_length = prot.stream_wire_length(total)
        if not 0 <= first_seq <= U64_MAX:
            raise KtlsError(Errno.EINVAL, f"sequence number {first_seq} is not a u64")
        last_seq = first_seq + self.record_count - 1
        if last_seq >= U64_MAX:
            raise _overflow("sequence number", U64_MAX)
        kind = prot.explicit_kind
        self.next_explicit: int | bytes | None = None
        self._random: Callable[[int], bytes] | None = None
        if kind == "counter":
            if not isinstance(explicit, int) or not 0 <= explicit <= U64_MAX:
                raise KtlsError(Errno.EINVAL, "TLS 1.2 AES-GCM needs the nonce counter (a u64)")
            if explicit + self.record_count - 1 >= U64_MAX:
                raise _overflow("GCM nonce counter", U64_MAX)
            self.next_explicit = explicit
        elif kind == "chain":
            if not isinstance(explicit, bytes | bytearray) or len(explicit) != 16:
                raise KtlsError(Errno.EINVAL, "TLS 1.0 AES-CBC needs the 16-byte chain IV")
            self.next_explicit = bytes(explicit)
        elif kind == "random":
            if not callable(explicit):
                raise KtlsError(
                    Errno.EINVAL, "AES-CBC TLS 1.1/1.2 needs an IV source like os.urandom"
                )
            self._random = explicit
        elif explicit is not None:
            raise KtlsError(Errno.EINVAL, f"{prot.suite.name} takes no explicit nonce")
        self.next_seq = first_seq
        self.sealed = 0
        self.bytes_out = 0
        self._pos = 0
        full_wire = prot.wire_length(prot.max_frame_len)
        per_chunk = _records_per_chunk(prot.max_frame_len)
        self._per_chunk = per_chunk
        self._chunk_size = min(self.wire_length, per_chunk * (full_wire + AES_BLOCK_LEN))

    def __iter__(self) -> SealStream:
        return self

    def __next__(self) -> memoryview:
        prot = self._prot
        left = self.record_count - self.sealed
        if left <= 0:
            raise StopIteration
        m = prot.max_frame_len
        full_left = (len(self._data) - self._pos) // m
        if full_left:
            k = min(full_left, self._per_chunk)
            ex = self.next_explicit if isinstance(self.next_explicit, int) else None
            view = prot._seal_full_group(
                self._rtype, self._data[self._pos : self._pos + k * m], m, k, self.next_seq, ex
            )
            if view is not None:
                self._advance(k, k * m, len(view))
                if isinstance(self.next_explicit, int):
                    self.next_explicit += k
                return view
        # generic path: record by record into a free chunk buffer
        chunk = prot._chunk_buffer(self._chunk_size)
        out = memoryview(chunk.buf)
        written = 0
        count = 0
        while self.sealed + count < self.record_count and count < self._per_chunk:
            n = min(m, len(self._data) - self._pos)
            payload = self._data[self._pos : self._pos + n]
            explicit = self._explicit_for_record()
            size = prot.seal_into(out[written:], self._rtype, payload, self.next_seq, explicit)
            if prot.explicit_kind == "chain":
                self.next_explicit = bytes(out[written + size - 16 : written + size])
            elif isinstance(self.next_explicit, int):
                self.next_explicit += 1
            written += size
            count += 1
            self._pos += n
            self.next_seq += 1
            if n < m:
                break  # the short last record ends the send
        self.sealed += count
        self.bytes_out += written
        del out  # our own view must not count as a reader of the buffer
        return chunk.view(0, written)

    def _advance(self, records: int, consumed: int, produced: int) -> None:
        self.sealed += records
        self.next_seq += records
        self._pos += consumed
        self.bytes_out += produced

    def _explicit_for_record(self) -> Explicit:
        if self._random is not None:
            iv = self._random(16)
            if len(iv) != 16:
                raise KtlsError(Errno.EINVAL, "the IV source returned other than 16 bytes")
            return iv
        return self.next_explicit


def next_chain_iv(record: ReadableBuffer) -> bytes:
    """TLS 1.0 CBC: the IV of the next record is the last ciphertext block of this one."""
    if len(record) < AES_BLOCK_LEN:
        raise KtlsError(Errno.EINVAL, "record shorter than one AES block")
    return bytes(memoryview(record)[-AES_BLOCK_LEN:])
