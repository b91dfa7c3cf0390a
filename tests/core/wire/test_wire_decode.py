"""StreamDecoder: records split anywhere, bad records reported precisely, bounded memory."""

from __future__ import annotations

import itertools
import random

import oracle
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tls_cases import SPEC_IDS, SPECS, Spec, make_case, seal_all

from ktls_core.errors import Errno, KtlsError
from ktls_core.tls.suites import TLS12_MAX_CIPHERTEXT
from ktls_core.wire.decode import BadRecord, DecodedRecord, StreamDecoder, decode_stream


def _three_records(spec: Spec, seed: int = 0) -> tuple[object, list[bytes], list[bytes], int]:
    """Three records (app data, app data, alert) sealed one by one; returns pieces."""
    rng = random.Random(f"{spec.id}/{seed}")
    case = make_case(spec, rng)
    prot = case.protector()
    first_seq = rng.getrandbits(32)
    payloads = [rng.randbytes(300), rng.randbytes(1000), b"\x01\x00"]
    records = []
    explicit = case.record_explicit(0)
    for i, payload in enumerate(payloads):
        rec = prot.seal(21 if i == 2 else 23, payload, first_seq + i, explicit)
        records.append(rec)
        if isinstance(case.explicit, int):
            explicit = case.explicit + i + 1
        elif isinstance(case.explicit, bytes):
            explicit = rec[-16:]  # TLS 1.0 chain
        else:
            explicit = case.record_explicit(i + 1)
    return case, records, payloads, first_seq


@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
def test_events_describe_each_record(spec: Spec) -> None:
    case, records, payloads, first_seq = _three_records(spec)
    events = decode_stream(case.keys, b"".join(records), first_seq)  # type: ignore[attr-defined]
    assert all(isinstance(e, DecodedRecord) for e in events)
    assert [(e.index, e.seq, e.type, e.plaintext, e.wire_length) for e in events] == [
        (i, first_seq + i, 21 if i == 2 else 23, payloads[i], len(records[i])) for i in range(3)
    ]
    version = 0x0301 + (int(spec.version[2]) if spec.version != "1.3" else 2)
    assert {e.version for e in events} == {version}


@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
def test_a_bad_record_in_the_middle_is_reported_and_decoding_goes_on(spec: Spec) -> None:
    case, records, payloads, first_seq = _three_records(spec, 1)
    bad = bytearray(records[1])
    bad[len(bad) // 3] ^= 0x40  # inside the ciphertext, away from the last (chain) block
    wire = records[0] + bytes(bad) + records[2]
    events = decode_stream(case.keys, wire, first_seq)  # type: ignore[attr-defined]
    assert [type(e) for e in events] == [DecodedRecord, BadRecord, DecodedRecord]
    bad_event = events[1]
    assert isinstance(bad_event, BadRecord)
    assert (bad_event.index, bad_event.seq, bad_event.offset, bad_event.errno) == (
        1,
        first_seq + 1,
        len(records[0]),
        Errno.EBADMSG,
    )
    assert bad_event.reason
    last = events[2]
    assert isinstance(last, DecodedRecord)
    assert (last.seq, last.type, last.plaintext) == (first_seq + 2, 21, payloads[2])
    with pytest.raises(ValueError, match="record 1"):
        oracle.decrypt_stream(wire, case.oracle, first_seq)  # type: ignore[attr-defined]


def test_truncated_tail_is_emsgsize_at_close() -> None:
    case, records, _, first_seq = _three_records(SPECS[0])
    wire = b"".join(records)
    for cut in (1, 4, 5, 6, len(records[2]) - 1):
        decoder = StreamDecoder(case.keys, first_seq)  # type: ignore[attr-defined]
        events = decoder.feed(wire[:-cut])
        assert len(events) == 2
        (tail,) = decoder.close()
        assert isinstance(tail, BadRecord)
        assert (tail.index, tail.seq, tail.errno) == (2, first_seq + 2, Errno.EMSGSIZE)
        assert tail.offset == len(records[0]) + len(records[1])
        assert "truncated record" in tail.reason
        assert decoder.close() == []
        with pytest.raises(KtlsError):
            decoder.feed(b"x")


def test_oversized_record_is_reported_at_once_and_skipped_without_buffering() -> None:
    case = make_case(SPECS[0], random.Random(2))
    prot = case.protector()
    first = prot.seal(23, b"one", 0, 10)
    third = prot.seal(23, b"three", 2, 12)  # the junk below took seq 1
    junk_len = TLS12_MAX_CIPHERTEXT + 1
    junk = bytes([23, 3, 3]) + junk_len.to_bytes(2, "big") + bytes(junk_len)
    decoder = StreamDecoder(case.keys, 0)
    events = decoder.feed(first + junk[:7])
    assert [type(e) for e in events] == [DecodedRecord, BadRecord]
    bad = events[1]
    assert isinstance(bad, BadRecord)
    assert (bad.index, bad.seq, bad.offset, bad.errno) == (1, 1, len(first), Errno.EMSGSIZE)
    # the junk body streams past without being held
    for i in range(7, len(junk), 4096):
        assert decoder.feed(junk[i : i + 4096]) == []
        assert decoder.buffered == 0
    (last,) = decoder.feed(third) + decoder.close()
    assert isinstance(last, DecodedRecord) and (last.seq, last.plaintext) == (2, b"three")


def test_short_and_mismatched_records_are_emsgsize() -> None:
    case = make_case(SPECS[0], random.Random(3))
    short = bytes([23, 3, 3, 0, 8]) + bytes(8)  # shorter than explicit nonce + tag
    (event,) = decode_stream(case.keys, short, 0)
    assert isinstance(event, BadRecord) and event.errno == Errno.EMSGSIZE


def test_memory_stays_within_one_record() -> None:
    case = make_case(SPECS[2], random.Random(4))  # TLS 1.3
    data = bytes(16384 * 5 + 17)
    wire = seal_all(case, 23, data, 0)
    decoder = StreamDecoder(case.keys, 0)
    biggest = 0
    out = []
    for i in range(0, len(wire), 997):
        out += decoder.feed(wire[i : i + 997])
        biggest = max(biggest, decoder.buffered)
    out += decoder.close()
    assert biggest <= 5 + 16384 + 17
    assert b"".join(e.plaintext for e in out if isinstance(e, DecodedRecord)) == data
    # one big feed parses in place: nothing stays buffered
    decoder = StreamDecoder(case.keys, 0)
    assert len(decoder.feed(wire)) == 6 and decoder.buffered == 0


@settings(max_examples=30, deadline=None)
@given(
    spec_index=st.integers(0, len(SPECS) - 1),
    seed=st.integers(0, 2**32),
    cuts=st.lists(st.integers(0, 60000), max_size=25),
    length=st.integers(1, 50000),
)
def test_random_split_points_give_the_same_events(
    spec_index: int, seed: int, cuts: list[int], length: int
) -> None:
    spec = SPECS[spec_index]
    rng = random.Random(seed)
    case = make_case(spec, rng)
    data = rng.randbytes(length)
    first_seq = rng.getrandbits(48)
    wire = seal_all(case, 22, data, first_seq)
    whole = decode_stream(case.keys, wire, first_seq)
    points = sorted({min(c, len(wire)) for c in cuts} | {0, len(wire)})
    decoder = StreamDecoder(case.keys, first_seq)
    pieces: list[object] = []
    for a, b in itertools.pairwise(points):
        pieces += decoder.feed(wire[a:b])
    pieces += decoder.close()
    assert pieces == whole
    assert b"".join(e.plaintext for e in whole if isinstance(e, DecodedRecord)) == data
    assert decoder.next_seq == first_seq + len(whole) and decoder.offset == len(wire)


def test_first_seq_must_be_a_u64() -> None:
    case = make_case(SPECS[0], random.Random(5))
    with pytest.raises(KtlsError):
        StreamDecoder(case.keys, -1)
    with pytest.raises(KtlsError):
        StreamDecoder(case.keys, 2**64)
