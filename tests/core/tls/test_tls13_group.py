"""TLS 1.3 full records sealed by the batched fast path (record._Tls13Group)."""

from __future__ import annotations

import os

import oracle
import pytest

from ktls_core.tls.record import SessionKeys, Tls13Protector, make_protector

SUITES = [("aes-gcm", 16), ("aes-gcm", 32), ("chacha20-poly1305", 32)]


@pytest.mark.parametrize(("cipher", "klen"), SUITES)
def test_types_change_between_streams_on_one_group(cipher: str, klen: int) -> None:
    keys = SessionKeys.from_names("1.3", cipher, os.urandom(klen), os.urandom(12))
    prot = make_protector(keys, 1000)
    assert isinstance(prot, Tls13Protector)
    suite = {"version": "1.3", "cipher": cipher, "key": keys.key, "iv": keys.iv}
    seq = 2**40
    for rtype in (23, 22, 21, 23):
        data = os.urandom(1000 * 70 + 3)  # two chunks of full records (64 + 6), a short one
        wire = b"".join(bytes(c) for c in prot.seal_stream(rtype, data, seq))
        records = oracle.decrypt_stream(wire, suite, seq)
        assert [t for t, _ in records] == [rtype] * 71
        assert b"".join(p for _, p in records) == data
        seq += 71


def _slots(data: bytes, n: int, room: int) -> memoryview:
    """data's n-byte records laid out one per slot of n + room bytes (as readv fills them)."""
    k = -(-len(data) // n)
    buf = bytearray(k * (n + room))
    for i in range(k):
        piece = data[i * n : (i + 1) * n]
        buf[i * (n + room) : i * (n + room) + len(piece)] = piece
    return memoryview(buf)


@pytest.mark.parametrize(("cipher", "klen"), SUITES)
@pytest.mark.parametrize("rtype", [23, 21, 255])
def test_slots_seal_to_the_bytes_a_stream_seals(cipher: str, klen: int, rtype: int) -> None:
    """seal_slots (payloads read into place, no copy) = seal_stream of the same data, and
    the oracle opens it; a group serves both ways in turn."""
    keys = SessionKeys.from_names("1.3", cipher, os.urandom(klen), os.urandom(12))
    prot = make_protector(keys, 4096)
    suite = {"version": "1.3", "cipher": cipher, "key": keys.key, "iv": keys.iv}
    data = os.urandom(4096 * 9)
    seq = 2**63
    for _ in range(2):
        slotted = bytes(prot.seal_slots(rtype, _slots(data, 4096, prot.slot_room), 4096, 9, seq))
        assert slotted == b"".join(bytes(c) for c in prot.seal_stream(rtype, data, seq))
        records = [(rtype, data[i * 4096 : (i + 1) * 4096]) for i in range(9)]
        assert oracle.decrypt_stream(slotted, suite, seq) == records


def test_slots_are_refused_as_the_stream_refuses() -> None:
    from ktls_core.errors import Errno, KtlsError
    from ktls_core.tls.suites import U64_MAX

    keys = SessionKeys.from_names("1.3", "aes-gcm", os.urandom(16), os.urandom(12))
    prot = make_protector(keys, 4096)
    slots = _slots(os.urandom(4096 * 2), 4096, 1)
    cases = [
        (dict(rtype=0, n=4096, count=2, seq=0), Errno.EINVAL),  # would read as padding
        (dict(rtype=256, n=4096, count=2, seq=0), Errno.EINVAL),
        (dict(rtype=23, n=4097, count=1, seq=0), Errno.EINVAL),  # above max_frame_len
        (dict(rtype=23, n=4096, count=3, seq=0), Errno.EINVAL),  # more than the slots hold
        (dict(rtype=23, n=4096, count=2, seq=U64_MAX - 1), Errno.EOVERFLOW),  # would wrap
    ]
    for kw, errno in cases:
        with pytest.raises(KtlsError) as exc:
            prot.seal_slots(kw["rtype"], slots, kw["n"], kw["count"], kw["seq"])
        assert exc.value.errno == errno, kw
    gcm12 = make_protector(SessionKeys.from_names("1.2", "aes-gcm", bytes(16), bytes(4)))
    assert gcm12.slot_room == 0
    with pytest.raises(KtlsError):
        gcm12.seal_slots(23, slots, 4096, 1, 0)
