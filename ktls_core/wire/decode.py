"""The peer's view: parse a TLS record stream split anywhere and open each record.

Sans-IO: `feed()` bytes as they arrive, get events back; `close()` at end of
stream. Every record is opened with the session keys and the sequence number
it must have (first_seq + index): tags, MACs and CBC padding are all checked.

A bad record is reported as `BadRecord` (its index, sequence number, stream
offset, EBADMSG or EMSGSIZE and why) and decoding goes on with the next
record: the header's length says where it starts, and the sequence number
advances as the sender's did. A record whose header claims more than a TLS
peer accepts is reported at once and its body skipped without being buffered,
so the decoder never holds more than the one record it is assembling.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeAlias

from ktls_core.errors import Errno, KtlsError
from ktls_core.tls.record import ReadableBuffer, SessionKeys, make_protector
from ktls_core.tls.suites import (
    AES_BLOCK_LEN,
    TLS_HEADER_LEN,
    TLS_MINOR_VER_ZERO,
    U64_MAX,
    CryptoAlg,
)


@dataclass(frozen=True, slots=True)
class DecodedRecord:
    """One record opened and verified."""

    index: int  # 0 for the first record of the stream
    seq: int
    type: int  # the real content type (TLS 1.3: the inner type)
    version: int  # the header's version as sent, e.g. 0x0303
    wire_length: int  # header included
    plaintext: bytes = field(repr=False)

    @property
    def length(self) -> int:
        return len(self.plaintext)


@dataclass(frozen=True, slots=True)
class BadRecord:
    """A record that failed to open: EBADMSG (tag, MAC, padding, version) or EMSGSIZE."""

    index: int
    seq: int
    offset: int  # stream offset of the record's header
    errno: Errno
    reason: str


DecodeEvent: TypeAlias = DecodedRecord | BadRecord


class StreamDecoder:
    """Decode one direction of a KTLS session from `first_seq` on."""

    def __init__(self, keys: SessionKeys, first_seq: int = 0) -> None:
        if not 0 <= first_seq <= U64_MAX:
            raise KtlsError(Errno.EINVAL, f"sequence number {first_seq} is not a u64")
        self._prot = make_protector(keys)
        self._max_body = self._prot.max_ciphertext
        # TLS 1.0 CBC: the next record's IV is the last block of the previous one.
        implicit = keys.cipher == CryptoAlg.AES_CBC and keys.vminor == TLS_MINOR_VER_ZERO
        self._chain: bytes | None = keys.iv if implicit else None
        self._buf = bytearray()  # the one partial record being assembled
        self._skip = 0  # body bytes of an oversized record still to discard
        self._closed = False
        self.next_seq = first_seq
        self.index = 0
        self.offset = 0  # stream offset of the next record's header

    @property
    def buffered(self) -> int:
        """Bytes held for the record being assembled (never more than one record)."""
        return len(self._buf)

    def feed(self, data: ReadableBuffer) -> list[DecodeEvent]:
        if self._closed:
            raise KtlsError(Errno.EINVAL, "decoder already closed")
        mv = memoryview(data).cast("B")
        end = len(mv)
        pos = 0
        events: list[DecodeEvent] = []
        while pos < end:
            if self._skip:
                take = min(self._skip, end - pos)
                self._skip -= take
                pos += take
                continue
            if self._buf:
                pos = self._fill(mv, pos, events)
                continue
            avail = end - pos
            if avail < TLS_HEADER_LEN:
                self._buf += mv[pos:]
                break
            length = int.from_bytes(mv[pos + 3 : pos + 5], "big")
            if length > self._max_body:
                self._oversized(length, events)
                pos += TLS_HEADER_LEN
                continue
            if avail < TLS_HEADER_LEN + length:
                self._buf += mv[pos:]
                break
            body_at = pos + TLS_HEADER_LEN
            events.append(self._open(mv[pos:body_at], mv[body_at : body_at + length]))
            pos = body_at + length
        return events

    def close(self) -> list[DecodeEvent]:
        """End of stream: a partial record left over is a truncated record (EMSGSIZE)."""
        if self._closed:
            return []
        self._closed = True
        if not self._buf:
            return []
        held = len(self._buf)
        self._buf = bytearray()
        return [self._bad(Errno.EMSGSIZE, f"truncated record ({held} bytes at end of stream)")]

    # -- internals --

    def _fill(self, mv: memoryview, pos: int, events: list[DecodeEvent]) -> int:
        """Complete the buffered record from mv[pos:]; returns the new position."""
        buf = self._buf
        if len(buf) < TLS_HEADER_LEN:
            take = min(TLS_HEADER_LEN - len(buf), len(mv) - pos)
            buf += mv[pos : pos + take]
            pos += take
            if len(buf) < TLS_HEADER_LEN:
                return pos
            length = int.from_bytes(buf[3:5], "big")
            if length > self._max_body:
                self._buf = bytearray()
                self._oversized(length, events)
                return pos
        length = int.from_bytes(buf[3:5], "big")
        take = min(TLS_HEADER_LEN + length - len(buf), len(mv) - pos)
        buf += mv[pos : pos + take]
        pos += take
        if len(buf) == TLS_HEADER_LEN + length:
            self._buf = bytearray()
            whole = memoryview(buf)
            events.append(self._open(whole[:TLS_HEADER_LEN], whole[TLS_HEADER_LEN:]))
        return pos

    def _oversized(self, length: int, events: list[DecodeEvent]) -> None:
        events.append(
            self._bad(Errno.EMSGSIZE, f"record length {length} exceeds {self._max_body}", length)
        )
        self._skip = length

    def _bad(self, errno: Errno, reason: str, body_len: int = 0) -> BadRecord:
        event = BadRecord(self.index, self.next_seq, self.offset, errno, reason)
        self._advance(TLS_HEADER_LEN + body_len)
        return event

    def _advance(self, wire: int) -> None:
        self.index += 1
        self.next_seq += 1
        self.offset += wire

    def _open(self, header: memoryview, body: memoryview) -> DecodeEvent:
        seq = self.next_seq
        wire = TLS_HEADER_LEN + len(body)
        if seq > U64_MAX:
            return self._bad(Errno.EBADMSG, "sequence number space exhausted", len(body))
        chain = self._chain
        if chain is not None and len(body) >= AES_BLOCK_LEN:
            self._chain = bytes(body[-AES_BLOCK_LEN:])  # the sender chained from what it sent
        try:
            rtype, plaintext = self._prot.open_record(header, body, seq, chain_iv=chain)
        except KtlsError as exc:
            errno = exc.errno if exc.errno == Errno.EMSGSIZE else Errno.EBADMSG
            return self._bad(errno, exc.detail or exc.strerror, len(body))
        event = DecodedRecord(
            self.index, seq, rtype, int.from_bytes(header[1:3], "big"), wire, plaintext
        )
        self._advance(wire)
        return event


def decode_stream(keys: SessionKeys, data: ReadableBuffer, first_seq: int = 0) -> list[DecodeEvent]:
    """All events of a complete stream."""
    decoder = StreamDecoder(keys, first_seq)
    return decoder.feed(data) + decoder.close()
