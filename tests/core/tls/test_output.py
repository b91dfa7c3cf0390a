"""The transmit path: reservation before sealing, framing, workers, accounting, failures."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from ktls_sw import (
    CURRENT_SUITES,
    boot,
    collector,
    connect,
    counters,
    enable,
    oracle_suite,
    params,
    send,
    suite_id,
    sw_ready,
)
from oracle import decrypt_stream

from ktls_core.errors import Errno, KtlsError
from ktls_core.net import tcp
from ktls_core.tls import output, session
from ktls_core.tls.suites import U64_MAX


def test_100k_sendfile_is_seven_records_and_decodes(seed) -> None:  # type: ignore[no-untyped-def]
    p = params()
    enable(seed, p)
    data = os.urandom(100 * 1024)
    events, sink = collector()
    result, wire = send(seed, data, syscall="sendfile", on_event=sink)
    assert (result.records, result.first_seq, result.next_seq) == (7, 0, 7)
    framed = [e for e in events if isinstance(e, output.Framed)]
    assert [f.length for f in framed] == [16384] * 6 + [4096]
    assert [f.seq for f in framed] == list(range(7))
    kinds = [type(e).__name__ for e in events]
    # Reserved before framing; queued to a worker; sealed; ready; then transmitted.
    assert kinds[0] == "Reserved"
    assert kinds.index("Queued") < kinds.index("Sealed") < kinds.index("Ready")
    assert kinds[-1] == "Transmitted"
    queued = next(e for e in events if isinstance(e, output.Queued))
    assert queued.counter == "kern.ipc.tls.stats.so_inqueue" and queued.inqueue == 1
    assert b"".join(pt for _t, pt in decrypt_stream(bytes(wire.data), oracle_suite(p))) == data
    c = counters(seed)
    assert c["kern.ipc.tls.stats.ocf.tls12_gcm_crypts"] == 7
    assert c["kern.ipc.tls.stats.so_inqueue"] == 0  # the persisted gauge never moves


def test_sequence_and_tcp_numbers_continue_across_sends(seed) -> None:  # type: ignore[no-untyped-def]
    p = params()
    enable(seed, p)
    r1, w1 = send(seed, b"a" * 20000)
    r2, w2 = send(seed, b"b" * 10)
    assert (r1.first_seq, r1.next_seq, r2.first_seq, r2.next_seq) == (0, 2, 2, 3)
    assert r2.tcp_seq == (r1.tcp_seq + r1.wire_bytes) & 0xFFFFFFFF
    both = decrypt_stream(bytes(w1.data + w2.data), oracle_suite(p))
    assert b"".join(pt for _t, pt in both) == b"a" * 20000 + b"b" * 10
    with seed.snapshot() as tx:
        s = session.get(tx, 1)
    assert s is not None and (s.next_seq, s.records, s.bytes) == (3, 3, 20010)


def test_gcm_explicit_nonce_is_the_counter_not_the_sequence(seed) -> None:  # type: ignore[no-untyped-def]
    enable(seed, params())
    with seed.snapshot() as tx:
        s = session.get(tx, 1)
    assert s is not None and s.nonce_ctr is not None
    _r, w = send(seed, b"x" * 5)
    assert int.from_bytes(w.data[5:13], "big") == s.nonce_ctr
    with seed.snapshot() as tx:
        after = session.get(tx, 1)
    assert after is not None and after.nonce_ctr == s.nonce_ctr + 1


@pytest.mark.parametrize("suite", CURRENT_SUITES, ids=suite_id)
def test_every_current_suite_decodes_with_the_oracle(tmp_path: Path, suite: tuple) -> None:  # type: ignore[type-arg]
    kernel = boot(tmp_path, "current")
    sw_ready(kernel)
    connect(kernel)
    p = params(*suite, rec_seq=41)
    enable(kernel, p)
    data = os.urandom(40000)
    r1, w1 = send(kernel, data[:30000], syscall="sendfile")
    r2, w2 = send(kernel, data[30000:], known=False)  # a stream: reserved batch by batch
    assert (r1.first_seq, r2.first_seq, r2.next_seq) == (41, 43, 44)
    records = decrypt_stream(bytes(w1.data + w2.data), oracle_suite(p), first_seq=41)
    assert b"".join(pt for _t, pt in records) == data


def test_tls10_cbc_chains_across_sends_and_batches(tmp_path: Path) -> None:
    kernel = boot(tmp_path, "current")
    sw_ready(kernel)
    connect(kernel)
    p = params("1.0", "aes-cbc", 16, 16, "hmac-sha1")
    enable(kernel, p)
    data = os.urandom(2 * output.BATCH_BYTES + 777)  # three chained batches
    _r1, w1 = send(kernel, data)
    _r2, w2 = send(kernel, b"tail")
    records = decrypt_stream(bytes(w1.data + w2.data), oracle_suite(p))
    assert b"".join(pt for _t, pt in records) == data + b"tail"
    c = counters(kernel)
    assert c["kern.ipc.tls.stats.ocf.tls10_cbc_encrypts"] == len(records)
    assert c["kern.ipc.tls.stats.ocf.inplace"] == len(records)


def test_tls10_cbc_allows_an_empty_fragment_others_do_not(tmp_path: Path) -> None:
    kernel = boot(tmp_path, "current")
    sw_ready(kernel)
    connect(kernel)
    connect(kernel, ("192.0.2.10:443", "198.51.100.7:2"))
    p = params("1.0", "aes-cbc", 16, 16, "hmac-sha1")
    enable(kernel, p)
    result, wire = send(kernel, b"")
    assert result.records == 1
    assert decrypt_stream(bytes(wire.data), oracle_suite(p)) == [(23, b"")]
    enable(kernel, params(), ("192.0.2.10:443", "198.51.100.7:2"))
    with pytest.raises(KtlsError) as info:
        send(kernel, b"", words=("192.0.2.10:443", "198.51.100.7:2"))
    assert info.value.errno == Errno.EINVAL


def test_record_type_needs_sendmsg_and_is_atomic(seed) -> None:  # type: ignore[no-untyped-def]
    p = params()
    enable(seed, p)
    with pytest.raises(KtlsError) as info:
        send(seed, b"x", record_type=21)
    assert info.value.errno == Errno.EINVAL
    with pytest.raises(KtlsError) as info:
        send(seed, b"x" * (output.SB_HIWAT + 1), syscall="sendmsg", record_type=22)
    assert info.value.errno == Errno.EMSGSIZE
    result, wire = send(seed, b"\x02\x28", syscall="sendmsg", record_type=21)
    assert decrypt_stream(bytes(wire.data), oracle_suite(p), result.first_seq) == [(21, b"\x02(")]
    # Nothing was reserved by the refused calls.
    assert result.first_seq == 0


def test_plain_tcp_without_ktls(seed) -> None:  # type: ignore[no-untyped-def]
    r1, w1 = send(seed, b"hello")
    r2, _w2 = send(seed, b"world")
    assert bytes(w1.data) == b"hello" and r1.mode == "none" and r1.first_seq is None
    assert r2.tcp_seq == (r1.tcp_seq + 5) & 0xFFFFFFFF
    with pytest.raises(KtlsError) as info:
        send(seed, b"x", syscall="sendmsg", record_type=21)
    assert info.value.errno == Errno.EINVAL  # tcp_usr_send() refuses control data


def test_crypto_failure_counts_and_aborts_with_eio(tmp_path: Path) -> None:
    kernel = boot(tmp_path, "current")
    sw_ready(kernel)
    connect(kernel)
    enable(kernel, params("1.3", "aes-gcm", 16, 12, rec_seq=U64_MAX - 1))
    # The second record would carry 2**64-1: the record layer refuses to seal it.
    with pytest.raises(KtlsError) as info:
        send(kernel, b"z" * (output.BATCH_BYTES + 1))
    assert info.value.errno == Errno.EIO
    c = counters(kernel)
    assert c["kern.ipc.tls.stats.failed_crypto"] == 1
    assert c["kern.ipc.tls.stats.active"] == 0  # ktls_drop(): the connection went
    with kernel.snapshot() as tx:
        assert tcp.count(tx) == 0


def test_a_dropped_connection_is_esrch(seed) -> None:  # type: ignore[no-untyped-def]
    with seed.transaction() as tx:
        conn = tcp.get(tx, 1)
        assert conn is not None
        tcp.drop(tx, conn)
    with pytest.raises(KtlsError) as info:
        send(seed, b"x")
    assert info.value.errno == Errno.ESRCH


def test_a_short_file_gives_back_what_it_did_not_use(seed) -> None:  # type: ignore[no-untyped-def]
    class Shrunk:
        def size(self) -> int:
            return 50000

        def fill(self, buf: memoryview) -> int:
            n = min(len(buf), 100)
            buf[:n] = b"s" * n
            self.size = lambda: 0  # type: ignore[method-assign]
            return n

    enable(seed, params())
    wire = output.send(seed, tcp.parse_endpoints(["192.0.2.10:443", "198.51.100.7:51514"]),
                       Shrunk())  # fmt: skip
    assert (wire.records, wire.next_seq) == (1, 1)
    r2, _w = send(seed, b"next")
    assert r2.first_seq == 1  # the unused reservation was returned
    assert r2.tcp_seq == (wire.tcp_seq + wire.wire_bytes) & 0xFFFFFFFF


def test_concurrent_senders_never_share_a_sequence_number(seed) -> None:  # type: ignore[no-untyped-def]
    p = params()
    enable(seed, p)
    results: list[tuple[int, bytes]] = []
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        from ktls_core.kernel import Kernel

        k = Kernel.open(seed.path)
        try:
            for j in range(5):
                r, w = send(k, bytes([i]) * (17000 + j))
                results.append((r.first_seq, bytes(w.data)))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    seqs: list[int] = []
    for first, data in results:
        recs = decrypt_stream(data, oracle_suite(p), first_seq=first)
        seqs += range(first, first + len(recs))
    assert sorted(seqs) == list(range(len(seqs)))  # unique and none lost


def test_large_send_uses_bounded_buffers(seed) -> None:  # type: ignore[no-untyped-def]
    p = params()
    enable(seed, p)
    data = os.urandom(3 * output.BATCH_BYTES + 5)
    events, sink = collector()
    result, wire = send(seed, data, on_event=sink)
    queued = [e for e in events if isinstance(e, output.Queued)]
    assert len(queued) == 4  # one ktls_enqueue() per batch
    per_batch = output.BATCH_BYTES // 16384
    # Each transmission is one batch's wire bytes, never the whole send.
    assert max(n for _seq, n in wire.seqs) == output.BATCH_BYTES + per_batch * 29
    assert b"".join(pt for _t, pt in decrypt_stream(bytes(wire.data), oracle_suite(p))) == data
    assert result.records == 3 * per_batch + 1


class _ScatterSource:
    """A source that scatters, as FdSource reads with readv(2) (`fill_views`)."""

    def __init__(self, data: bytes, known: bool) -> None:
        from ktls_sw import MemSource

        self.mem = MemSource(data, known)
        self.scatters = 0

    def size(self) -> int | None:
        return self.mem.size()

    def fill(self, buf: memoryview) -> int:
        return self.mem.fill(buf)

    def fill_views(self, views: list[memoryview]) -> int:
        self.scatters += 1
        total = 0
        for view in views:
            got = self.mem.fill(view)
            total += got
            if got < len(view):
                break
        return total


@pytest.mark.parametrize(("cipher", "klen"), [("aes-gcm", 16), ("chacha20-poly1305", 32)])
@pytest.mark.parametrize("known", [True, False])
@pytest.mark.parametrize("scatter", [True, False])
def test_tls13_payloads_are_read_into_slots_and_sealed_there(
    tmp_path: Path, cipher: str, klen: int, known: bool, scatter: bool
) -> None:
    """TLS 1.3 sends read each payload into a slot with room for the inner type and
    seal the slots in place: the stream opens whole, short last record included, for a
    source that scatters (readv) and one that only fills."""
    from ktls_sw import MemSource, MemWire, endpoints

    kernel = boot(tmp_path, "current")
    sw_ready(kernel)
    connect(kernel)
    p = params("1.3", cipher, klen, 12)
    enable(kernel, p)
    data = os.urandom(2 * output.BATCH_BYTES + 5000)
    source = _ScatterSource(data, known) if scatter else MemSource(data, known)
    wire = MemWire()
    result = output.send(kernel, endpoints(), source, wire=wire)
    records = -(-len(data) // 16384)
    assert (result.records, result.bytes) == (records, len(data))
    opened = decrypt_stream(bytes(wire.data), oracle_suite(p))
    assert [t for t, _ in opened] == [23] * records
    assert b"".join(pt for _t, pt in opened) == data
    if scatter:
        assert source.scatters == 3  # one readv per batch


def test_a_wire_that_takes_less_gets_smaller_batches(seed) -> None:  # type: ignore[no-untyped-def]
    """A real socket takes its send buffer at a time (SocketWire.batch_bytes): the
    batches follow the wire, and the stream is the same."""
    from ktls_sw import MemSource, MemWire, endpoints

    class SmallWire(MemWire):
        batch_bytes = 64 * 1024

    p = params()
    enable(seed, p)
    data = os.urandom(300 * 1024)
    events, sink = collector()
    wire = SmallWire()
    output.send(seed, endpoints(), MemSource(data), wire=wire, on_event=sink)
    queued = [e.records for e in events if isinstance(e, output.Queued)]
    assert queued == [4, 4, 4, 4, 3]  # 64 KiB = 4 records of 16 KiB; 300 KiB = 19 records
    assert b"".join(pt for _t, pt in decrypt_stream(bytes(wire.data), oracle_suite(p))) == data
