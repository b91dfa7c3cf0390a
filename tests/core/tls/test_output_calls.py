"""send(calls=N): one syscall made N times with the same data (ktls send --repeat).

Each call frames its own records, as N write(2)s do: 100 bytes x 1000 calls is
1000 records of 100 bytes, never 7 records of 16 KiB. The records of the N calls
are reserved together, so they are consecutive.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from ktls_sw import (
    CURRENT_SUITES,
    MemSource,
    MemWire,
    boot,
    collector,
    connect,
    enable,
    endpoints,
    oracle_suite,
    params,
    send,
    suite_id,
    sw_ready,
)
from oracle import decrypt_stream

from ktls_core.errors import Errno, KtlsError
from ktls_core.tls import output, session
from ktls_core.tls.suites import TLS_MAX_MSG_SIZE_V10_2 as MFL


def _records(wire: MemWire, p: object, first_seq: int = 0) -> list[tuple[int, bytes]]:
    return decrypt_stream(bytes(wire.data), oracle_suite(p), first_seq)  # type: ignore[arg-type]


def test_each_call_is_its_own_record(seed) -> None:  # type: ignore[no-untyped-def]
    p = params()
    enable(seed, p)
    data = os.urandom(100)
    events, sink = collector()
    result, wire = send(seed, data * 1000, calls=1000, on_event=sink)
    assert (result.records, result.first_seq, result.next_seq) == (1000, 0, 1000)
    assert result.calls == 1000
    assert result.bytes == 100_000 and result.wire_bytes == 1000 * (100 + 29)
    framed = [e for e in events if isinstance(e, output.Framed)]
    assert [f.length for f in framed] == [100] * 1000
    assert [f.seq for f in framed] == list(range(1000))
    assert _records(wire, p) == [(23, data)] * 1000
    with seed.snapshot() as tx:
        s = session.get(tx, 1)
    assert s is not None and (s.next_seq, s.records, s.bytes) == (1000, 1000, 100_000)


def test_many_batches_of_short_records(seed) -> None:  # type: ignore[no-untyped-def]
    """More calls than one batch holds: batches end on call boundaries, and hold
    BATCH_RECORDS records at most (far below BATCH_BYTES of 100-byte records)."""
    p = params()
    enable(seed, p)
    calls = output.BATCH_RECORDS * 2 + 7
    assert output.BATCH_RECORDS * 100 < output.BATCH_BYTES
    data = bytes(range(100))
    events, sink = collector()
    result, wire = send(seed, data * calls, calls=calls, on_event=sink)
    assert result.records == calls
    queued = [e.records for e in events if isinstance(e, output.Queued)]
    assert queued == [output.BATCH_RECORDS, output.BATCH_RECORDS, 7]
    records = _records(wire, p)
    assert len(records) == calls and set(records) == {(23, data)}


@pytest.mark.parametrize("suite", CURRENT_SUITES, ids=suite_id)
def test_every_current_suite_repeats(tmp_path: Path, suite: tuple) -> None:  # type: ignore[type-arg]
    kernel = boot(tmp_path, "current")
    sw_ready(kernel)
    connect(kernel)
    p = params(*suite, rec_seq=5)
    enable(kernel, p)
    data = os.urandom(37)
    result, wire = send(kernel, data * 300, calls=300, syscall="sendfile")
    assert (result.first_seq, result.next_seq) == (5, 305)
    assert _records(wire, p, 5) == [(23, data)] * 300


@pytest.mark.parametrize(
    ("size", "lengths"),
    [
        (MFL + 3616, [MFL, 3616]),  # full records and a short one per call
        (2 * MFL, [MFL, MFL]),  # whole records: the same as one long send
        (MFL, [MFL]),
    ],
)
def test_calls_longer_than_a_record(seed, size: int, lengths: list[int]) -> None:  # type: ignore[no-untyped-def]
    p = params()
    enable(seed, p)
    data = os.urandom(size)
    events, sink = collector()
    result, wire = send(seed, data * 3, calls=3, on_event=sink)
    assert [f.length for f in events if isinstance(f, output.Framed)] == lengths * 3
    assert [len(pt) for _t, pt in _records(wire, p)] == lengths * 3
    assert b"".join(pt for _t, pt in _records(wire, p)) == data * 3
    assert result.records == 3 * len(lengths)


def test_long_calls_across_batches(seed) -> None:  # type: ignore[no-untyped-def]
    """A call bigger than a batch still ends in its own short record."""
    p = params()
    enable(seed, p)
    data = os.urandom(output.BATCH_BYTES + MFL + 5)
    result, wire = send(seed, data * 2, calls=2)
    per_call = [MFL] * (len(data) // MFL) + [5]
    assert [len(pt) for _t, pt in _records(wire, p)] == per_call * 2
    assert result.records == 2 * len(per_call)


def test_the_calls_are_reserved_together(seed) -> None:  # type: ignore[no-untyped-def]
    p = params()
    enable(seed, p)
    events, sink = collector()
    send(seed, b"z" * 500, calls=50, on_event=sink)
    reserved = [e for e in events if isinstance(e, output.Reserved)]
    assert [(r.first_seq, r.records, r.wire_bytes) for r in reserved] == [(0, 50, 50 * 39)]


def test_sendmsg_checks_each_call_against_the_socket_buffer(seed) -> None:  # type: ignore[no-untyped-def]
    p = params()
    enable(seed, p)
    # 1000 handshake records of 100 bytes: each call fits, their total does not need to.
    result, wire = send(seed, b"h" * 100_000, calls=1000, syscall="sendmsg", record_type=22)
    assert result.records == 1000 and _records(wire, p)[0] == (22, b"h" * 100)
    with pytest.raises(KtlsError) as info:
        send(seed, b"h" * 2 * (output.SB_HIWAT + 1), calls=2, syscall="sendmsg", record_type=22)
    assert info.value.errno == Errno.EMSGSIZE


def test_plain_tcp_repeats_the_bytes(seed) -> None:  # type: ignore[no-untyped-def]
    result, wire = send(seed, b"abc" * 4, calls=4)
    assert bytes(wire.data) == b"abcabcabcabc" and result.calls == 4 and result.mode == "none"


@pytest.mark.parametrize(
    ("data", "calls", "known"),
    [(b"abc", 0, True), (b"abcd", 3, True), (b"", 5, True), (b"abc", 3, False)],
    ids=["no-calls", "not-divisible", "nothing-to-repeat", "unknown-size"],
)
def test_calls_that_cannot_be_made(seed, data: bytes, calls: int, known: bool) -> None:  # type: ignore[no-untyped-def]
    enable(seed, params())
    with pytest.raises(KtlsError) as info:
        output.send(seed, endpoints(), MemSource(data, known), calls=calls)
    assert info.value.errno == Errno.EINVAL
    with seed.snapshot() as tx:
        s = session.get(tx, 1)
    assert s is not None and s.next_seq == 0  # nothing reserved
