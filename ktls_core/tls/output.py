"""The transmit path of one send: sosend() framing to tcp_output() and ip_output_send().

`send()` is write(2) / aio_write(2) / sendfile(2) / sendmsg(2) on a connection:

1. **Reserve** (one write transaction, before any byte leaves): the records'
   sequence numbers (sb_tls_seqno), the TLS 1.2 GCM explicit-nonce counters and
   the TCP sequence space are taken from the state and committed. Wire lengths
   are exact up front (suites.Suite.wire_length), so the TCP range is exact too.
   A crash after this burns the numbers; nothing can hand them out again. When
   the size is known (data, a regular file) the whole send is reserved at once,
   so one send's records are consecutive even while other processes send on the
   same connection; a stream of unknown size (stdin) reserves batch by batch.
2. **Frame** (`ktls_frame()`): the data is read batch by batch into preallocated
   buffers and cut into records of max_frame_len = min(16384, kern.ipc.tls.maxlen)
   bytes, the last one shorter.
3. **Software mode**: each batch goes to the connection's worker not ready
   (`ktls_enqueue()`), which seals it through the session's backend and calls
   `pru_ready()`; tcp_output() sends only the ready prefix (worker.SendBuffer).
   The next batch is read while the worker seals (the read releases the GIL).
   TLS 1.0 AES-CBC chains each record's IV from the previous record's last
   ciphertext block, so its records must be sealed strictly in order across
   processes too: each batch is reserved *and sealed* inside one transaction
   (the chained IV is stored with the reservation), i.e. TLS 1.0 sends on one
   connection are serialised by the state's write lock.
4. **ifnet mode**: records go down in plaintext; the NIC model seals them with
   the same record layer on its own engine (a thread beside the host's, as a
   NIC encrypts while the host goes on), and at `ip_output_send()`, in order,
   the send-tag check runs (`_ip_output_send()`, where issue 6's drop, reset
   task and retransmission plug in).
5. **Transmit**: the ready bytes go to the caller's `Wire` (an --out file, a pcap
   writer, a real socket) with their TCP sequence number and the egress link.
6. **Account** (a final transaction): records and bytes sent on the session, the
   ocf.* counter per crypto operation; a crypto failure counts failed_crypto and
   aborts the connection with EIO (`ktls_drop()`).

The core never prints: it calls `on_event` with immutable records when asked
(--trace, --format json); without it no per-record object is made.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple, Protocol

from ktls_core.errors import Errno, KtlsError, strerror
from ktls_core.store import to_db
from ktls_core.tls.suites import (
    U64_MAX,
    RecordType,
    record_type_name,
    version_name,
)
from ktls_core.tls.worker import Batch, SendBuffer, WorkerPool

if TYPE_CHECKING:
    from ktls_core.kernel import Kernel, Tx
    from ktls_core.net.route import Egress
    from ktls_core.net.tcp import Conn, Endpoints
    from ktls_core.tls.record import RecordProtector
    from ktls_core.tls.session import Session
    from ktls_core.tls.txmode import IfnetOutput
    from ktls_core.wire.pcap import TcpFlow

SYSCALLS = ("write", "aio_write", "sendfile", "sendmsg")
# net.inet.tcp.sendspace: sb_hiwat of a new connection. A sendmsg with a record
# type is atomic, so a payload above it is EMSGSIZE (sosend_generic()).
SB_HIWAT = 32768
# Records at least this long are read into slots (TLS 1.3, _TlsRunner.run()); a
# batch then has at most BATCH_BYTES / SLOT_MIN = 1024 of them (readv(2)'s IOV_MAX).
SLOT_MIN = 4096
# Plaintext per batch: one ktls_enqueue() and one buffer (the record layer's chunk).
# Every batch costs a hand-off to the worker and back (~40 us of thread wake-ups
# here); at 4 MiB that is ~1% of sealing it, at 1 MiB it was a quarter of a bulk
# send. Two such buffers, and the sealed output, keep a bulk send under 40 MiB RSS.
BATCH_BYTES = 4 << 20
# ...and at most this many records: 4 MiB of 100-byte records is 41,943 of them, and
# their sealed batch (5 MiB) no longer fits the cache it is written and sent from
# (100,000 such records: 87 -> 67 ms in one process, flat from 2048 to 8192).
BATCH_RECORDS = 4096
# How often a long send looks at its session again (switch_tls, tcpdrop from another shell).
PROBE_SECONDS = 0.05

FAILED_CRYPTO = "kern.ipc.tls.stats.failed_crypto"
OCF_NODE = "kern.ipc.tls.stats.ocf"


# -- where the bytes go ----------------------------------------------------------------


class Link(NamedTuple):
    """The egress of a connection as the wire sees it: interface, MTU, addresses."""

    ifname: str  # the route's interface (nh_ifp)
    port: str  # the physical port under it
    mtu: int
    flow: TcpFlow  # addresses, ports, ACK number, MSS and MACs for pcap frames


class Wire(Protocol):
    """Where tcp_output() puts ready bytes: --out, --pcap, a real socket (adapters).

    A wire may also say how many plaintext bytes a batch should hold at most
    (`batch_bytes`, optional): a real socket takes its send buffer at a time.
    """

    def transmit(self, data: memoryview, tcp_seq: int, link: Link) -> None: ...


class Source(Protocol):
    """The data of one syscall: `size()` if known up front, `fill()` reads into a buffer
    and returns fewer bytes than asked only at end of input."""

    def size(self) -> int | None: ...

    def fill(self, buf: memoryview) -> int: ...


# -- events -----------------------------------------------------------------------------


class Reserved(NamedTuple):
    """The reservation transaction committed: these numbers are this send's for good."""

    conn: str
    first_seq: int
    records: int
    tcp_seq: int
    wire_bytes: int

    def describe(self) -> str:
        if self.records == 0:
            return f"reserved TCP {self.tcp_seq}+{self.wire_bytes}"
        return (
            f"reserved seq {self.first_seq}..{self.first_seq + self.records - 1}"
            f", TCP {self.tcp_seq}+{self.wire_bytes}"
        )


class Framed(NamedTuple):
    """ktls_frame(): one record appended to the socket buffer with its sequence number."""

    seq: int
    type: int
    length: int  # plaintext bytes
    wire_length: int
    mode: str  # sw, ifnet

    def describe(self) -> str:
        return (
            f"framed record seq {self.seq} type {self.type} ({record_type_name(self.type)})"
            f" length {self.length} wire {self.wire_length}"
        )


class Queued(NamedTuple):
    """ktls_enqueue(): a batch of not-ready records handed to a worker thread."""

    worker: int
    first_seq: int
    records: int
    counter: str  # so_inqueue (2019) or sw_tx_inqueue
    inqueue: int  # the counter's value in this process after the +1

    def describe(self) -> str:
        return (
            f"queued {self.records} record(s) from seq {self.first_seq} to worker {self.worker}"
            f" ({self.counter.rsplit('.', 1)[-1]} {self.inqueue})"
        )


class Sealed(NamedTuple):
    """The backend encrypted a batch (one crypto operation per record)."""

    worker: int
    first_seq: int
    records: int
    backend: str

    def describe(self) -> str:
        where = f"worker {self.worker}" if self.worker >= 0 else "the NIC"
        return (
            f"sealed {self.records} record(s) from seq {self.first_seq} by {self.backend} ({where})"
        )


class Ready(NamedTuple):
    """pru_ready(): the records may go; tcp_output() sends the ready prefix."""

    first_seq: int
    records: int

    def describe(self) -> str:
        return f"ready {self.records} record(s) from seq {self.first_seq} (pru_ready)"


class Transmitted(NamedTuple):
    """tcp_output() -> ip_output(): bytes left on the egress interface."""

    ifname: str
    port: str
    tcp_seq: int
    nbytes: int
    segments: int

    def describe(self) -> str:
        via = "" if self.port == self.ifname else f" via {self.port}"
        return (
            f"transmitted {self.nbytes} bytes on {self.ifname}{via}, TCP seq {self.tcp_seq}"
            f", {self.segments} segment(s)"
        )


class Aborted(NamedTuple):
    """ktls_drop(): an encryption failed (failed_crypto); the connection is dropped."""

    conn: str
    errno: int
    reason: str

    def describe(self) -> str:
        return f"connection dropped: {strerror(self.errno)} ({self.reason})"


class Event(Protocol):
    def describe(self) -> str: ...


EventSink = Callable[[object], None]


# -- the result ---------------------------------------------------------------------------


class SendResult(NamedTuple):
    """What one send did (the CLI's summary and JSON document)."""

    conn: str
    syscall: str
    mode: str  # none, sw, ifnet (at the start of the send)
    record_type: int | None
    bytes: int  # payload bytes sent
    wire_bytes: int  # bytes on the wire (TLS records, or the plain bytes)
    records: int
    first_seq: int | None
    next_seq: int | None
    tcp_seq: int
    ifname: str
    suite: str | None
    version: str | None
    calls: int = 1  # the syscall made this many times with the same data (send --repeat)


# -- helpers -------------------------------------------------------------------------------


def _mac_for(address: str) -> bytes:
    """A stable locally administered MAC standing in for the next hop's (no ARP here).

    CRC-32s (zlib is loaded with the interpreter), not SHA-256: hashlib loads
    OpenSSL's libcrypto, about 2 ms of every send's start-up, for six bytes.
    """
    import zlib

    data = address.encode()
    tail = zlib.crc32(data[::-1]).to_bytes(4, "big")[:1]
    return b"\x02" + zlib.crc32(data).to_bytes(4, "big") + tail


def link_for(conn: Conn, eg: Egress) -> Link:
    """The Link of a connection on its egress (pcap framing, MSS from the MTU)."""
    import ipaddress

    from ktls_core.net.ifnet import LOOPBACK
    from ktls_core.wire.pcap import TcpFlow, mss_for_mtu

    src_mac = None
    dst_mac = None
    if eg.src_mac is not None and not eg.ifname.startswith("lo"):
        src_mac = bytes.fromhex(eg.src_mac.replace(":", ""))
        dst_mac = _mac_for(eg.gateway or conn.faddr)
    del LOOPBACK
    flow = TcpFlow(
        family=conn.family,
        src=ipaddress.ip_address(conn.laddr).packed,
        dst=ipaddress.ip_address(conn.faddr).packed,
        sport=conn.lport,
        dport=conn.fport,
        ack=(conn.irs + 1) & 0xFFFFFFFF,
        mss=mss_for_mtu(eg.mtu, conn.family),
        src_mac=src_mac,
        dst_mac=dst_mac,
    )
    return Link(eg.ifname, eg.port, eg.mtu, flow)


def _iv_source(tx: Tx) -> Callable[[int], bytes]:
    """arc4rand() for CBC 1.1/1.2 explicit IVs: os.urandom, or a seeded stream."""
    if tx.meta("seed") is None:
        return os.urandom
    import hashlib

    key = tx.random_bytes(32)
    counter = [0]

    def seeded(n: int) -> bytes:
        out = b""
        while len(out) < n:
            out += hashlib.sha256(key + counter[0].to_bytes(8, "big")).digest()
            counter[0] += 1
        return out[:n]

    return seeded


def _inqueue_counter(tx: Tx) -> str:
    return str(tx.profile.feature("inqueue_counter"))


class _Send:
    """The state of one send between its transactions (not shared between threads,
    except the batches, which the SendBuffer hands over)."""

    def __init__(
        self,
        kernel: Kernel,
        conn: Conn,
        sess: Session | None,
        link: Link,
        source: Source,
        wire: Wire | None,
        on_event: EventSink | None,
        progress: Callable[[int], None] | None,
        syscall: str,
        record_type: int | None,
    ) -> None:
        self.kernel = kernel
        self.conn = conn
        self.sess = sess
        self.link = link
        self.source = source
        self.wire = wire
        self.on_event = on_event
        self.progress = progress
        self.syscall = syscall
        self.rtype = int(RecordType.APPLICATION_DATA) if record_type is None else record_type
        self.sent_bytes = 0
        self.sent_wire = 0
        self.sent_records = 0
        self.sealed_records = 0
        self.first_seq: int | None = None
        self.next_seq: int | None = None
        self.tcp_first = 0
        self.mode = "none" if sess is None else sess.mode_name
        self.failed: KtlsError | None = None
        self.last_probe = time.monotonic()

    def emit(self, event: object) -> None:
        if self.on_event is not None:
            self.on_event(event)

    def transmit(self, data: memoryview, tcp_seq: int) -> None:
        """tcp_output(): hand ready bytes to the wire."""
        if self.wire is not None and len(data):
            self.wire.transmit(data, tcp_seq, self.link)
        if self.on_event is not None:
            mss = max(1, self.link.flow.mss)
            segments = max(1, -(-len(data) // mss))
            self.emit(Transmitted(self.link.ifname, self.link.port, tcp_seq, len(data), segments))


def send(
    kernel: Kernel,
    ep: Endpoints,
    source: Source,
    *,
    syscall: str = "write",
    record_type: int | None = None,
    wire: Wire | None = None,
    on_event: EventSink | None = None,
    progress: Callable[[int], None] | None = None,
    pool: WorkerPool | None = None,
    calls: int = 1,
) -> SendResult:
    """One syscall's worth of data on the connection `ep`, through KTLS if enabled.

    Raises KtlsError as the syscall would fail (ESRCH: no such connection,
    EINVAL, EMSGSIZE, EIO after a crypto failure, ECONNABORTED when the
    connection was dropped meanwhile). `pool` lets a long-lived process (serve)
    keep its worker threads between sends.

    `calls` > 1 is an application making the syscall that many times in a loop with
    the same data: `source` yields the data `calls` times over (its size() is the
    total, known up front) and each call's bytes are framed on their own, as
    separate write(2)s are (100 bytes x 100,000 calls = 100,000 records of 100
    bytes). The calls are reserved together, so their records are consecutive.
    """
    from ktls_core.net import tcp
    from ktls_core.tls import session as sessions

    if syscall not in SYSCALLS:
        raise KtlsError(Errno.EINVAL, f"unknown syscall {syscall!r}")
    if record_type is not None:
        if syscall != "sendmsg":
            # Only sendmsg(2) carries a control message (TLS_SET_RECORD_TYPE).
            raise KtlsError(Errno.EINVAL, "a record type needs sendmsg (TLS_SET_RECORD_TYPE)")
        if not 0 <= record_type <= 255:
            raise KtlsError(Errno.EINVAL, f"record type {record_type} is not a byte")
    size = source.size()
    if calls != 1 and (calls < 1 or size is None or size % calls):
        raise KtlsError(Errno.EINVAL, f"{calls} calls need a known size that they divide")
    if calls > 1 and size == 0:
        raise KtlsError(Errno.EINVAL, "no data to repeat")
    with kernel.snapshot() as tx:
        conn = tcp.find(tx, ep)
        sess = sessions.get(tx, conn.id)
        link = link_for(conn, tcp.egress(tx, conn))
        threads = max(1, tx.sysctl("kern.ipc.tls.stats.threads"))
        inqueue_name = _inqueue_counter(tx)
        # Calls shorter than a record (send --repeat) are framed at their length.
        frame = None if calls == 1 or size is None else size // calls
        prot = sessions.protector(tx, sess, frame) if sess is not None else None
    if sess is None and record_type is not None:
        # Without KTLS the control message reaches tcp_usr_send(), which refuses it.
        raise KtlsError(Errno.EINVAL, "TLS_SET_RECORD_TYPE on a connection without KTLS")
    st = _Send(kernel, conn, sess, link, source, wire, on_event, progress, syscall, record_type)
    own_pool = pool is None
    pool = pool or WorkerPool(threads)
    try:
        if sess is None or prot is None:
            _send_plain(st, size)
        else:
            _send_tls(st, sess, prot, size, pool, inqueue_name, calls)
    finally:
        if own_pool:
            pool.shutdown()
    return SendResult(
        conn=conn.name,
        syscall=syscall,
        mode=st.mode,
        record_type=None if sess is None else st.rtype,
        bytes=st.sent_bytes,
        wire_bytes=st.sent_wire,
        records=st.sent_records,
        first_seq=st.first_seq,
        next_seq=st.next_seq,
        tcp_seq=st.tcp_first,
        ifname=link.ifname,
        suite=None if sess is None else sess.suite.name,
        version=None if sess is None else version_name(sess.vminor),
        calls=calls,
    )


# -- plain TCP ----------------------------------------------------------------------------


def _send_plain(st: _Send, size: int | None) -> None:
    """No KTLS: the bytes go as they are, in TCP sequence order."""
    from ktls_core.net import tcp

    buf = memoryview(bytearray(BATCH_BYTES))
    first = True
    reserved_end = 0
    left = size
    while True:
        want = BATCH_BYTES if left is None else min(BATCH_BYTES, left)
        n = st.source.fill(buf[:want]) if want else 0
        if n == 0 and not first:
            break
        if first or size is None:
            amount = n if size is None else size
            with st.kernel.transaction() as tx:
                seq = tcp.reserve_seq(tx, st.conn, amount)
            if first:
                st.tcp_first = seq
            reserved_end = seq + amount
            st.emit(Reserved(st.conn.name, 0, 0, seq, amount))
            first = False
        if n == 0:
            break
        st.transmit(buf[:n], (st.tcp_first + st.sent_wire) & 0xFFFFFFFF)
        st.sent_bytes += n
        st.sent_wire += n
        if st.progress is not None:
            st.progress(st.sent_bytes)
        if left is not None:
            left -= n
            if n < want or left <= 0:
                break
    if size is not None and st.sent_wire < size:
        with st.kernel.transaction() as tx:
            tcp.give_back_seq(tx, st.conn.id, reserved_end, size - st.sent_wire)


# -- KTLS ----------------------------------------------------------------------------------


def _fill_slots(source: Source, views: list[memoryview], want: int) -> int:
    """Read `want` bytes into the views in order (readv(2) when the source scatters)."""
    m = len(views[0])
    k = -(-want // m)
    views = views[:k]
    if want < k * m:
        views[-1] = views[-1][: want - (k - 1) * m]
    fill_views = getattr(source, "fill_views", None)
    if fill_views is not None:
        got: int = fill_views(views)
        return got
    return fill_each(source.fill, views)


def fill_each(fill: Callable[[memoryview], int], views: list[memoryview]) -> int:
    """`fill` view by view, in order, until a short read (the end of the input)."""
    total = 0
    for view in views:
        got = fill(view)
        total += got
        if got < len(view):
            break
    return total


def _send_tls(
    st: _Send,
    sess: Session,
    prot: RecordProtector,
    size: int | None,
    pool: WorkerPool,
    inqueue_name: str,
    calls: int = 1,
) -> None:
    from ktls_core.tls.record import count_records

    mfl = sess.max_frame_len
    allow_empty = prot.allows_empty
    # One call's bytes: calls of per_call bytes each (send --repeat); else the send.
    per_call = size if size is None or calls == 1 else size // calls
    if per_call is not None:
        count_records(per_call, mfl, allow_empty)  # EINVAL for an empty send
        if (
            st.syscall == "sendmsg"
            and st.rtype != RecordType.APPLICATION_DATA
            and per_call > SB_HIWAT
        ):
            raise KtlsError(
                Errno.EMSGSIZE, f"{per_call} bytes exceed the socket buffer ({SB_HIWAT})"
            )
    frame, call_bytes = mfl, None
    if calls > 1 and per_call is not None:
        if per_call < mfl:
            # Every call is one short record: the stream is framed at the call's
            # length (send() asked for a protector that cuts there).
            frame = per_call
        elif per_call % mfl:
            call_bytes = per_call  # full records and a short one per call
    # A wire may take less at once (a real socket: its send buffer, as sendfile(2)
    # works in chunks of so_snd's free space); larger batches would only hold memory.
    limit = min(BATCH_BYTES, getattr(st.wire, "batch_bytes", BATCH_BYTES))
    per_batch = max(1, min(limit // frame, BATCH_RECORDS))
    batch_bytes = per_batch * frame
    if call_bytes is not None:
        batch_bytes = min(batch_bytes, call_bytes)
    runner = _TlsRunner(
        st, sess, prot, pool, inqueue_name, batch_bytes, frame_len=frame, call_bytes=call_bytes
    )
    try:
        runner.run(size)
    finally:
        runner.account()
    if st.failed is not None:
        raise st.failed


class _TlsRunner:
    """One KTLS send: reservations, batches through the workers, transmission, accounting."""

    def __init__(
        self,
        st: _Send,
        sess: Session,
        prot: RecordProtector,
        pool: WorkerPool,
        inqueue_name: str,
        batch_bytes: int,
        *,
        frame_len: int | None = None,
        call_bytes: int | None = None,
    ) -> None:
        self.st = st
        self.sess = sess
        self.prot = prot
        self.pool = pool
        self.inqueue_name = inqueue_name
        self.batch_bytes = batch_bytes
        # Records of frame_len bytes: the session's max_frame_len, or the length of
        # each of many short calls (send --repeat).
        self.mfl = frame_len or sess.max_frame_len
        # Calls of call_bytes bytes that are not whole records: a batch never holds
        # the end of one call and the start of the next (each ends in a short record).
        self.call_bytes = call_bytes
        self.call_left = call_bytes or 0
        self.suite = sess.suite
        self.worker = sess.worker % pool.threads
        self.chained = sess.chained_iv
        self.sw_backend = sess.backend
        self.sb = SendBuffer()
        self.plain: list[memoryview] = []  # run() sizes them
        self.iv_source: Callable[[int], bytes] | None = None
        # The current reservation: [seq, seq_end), nonce counters, TCP sequence space.
        # seq/nonce/tcp_seq advance as records are framed; what is past them at the end
        # was never framed (never sealed) and may be given back.
        self.seq = self.seq_end = 0
        self.nonce = self.nonce_end = 0
        self.tcp_seq = self.tcp_end = 0
        self.index = 0
        self.mode = sess.mode
        self.ifnet_out: IfnetOutput | None = None  # the send-tag check, ifnet mode only

    # -- reservations --

    def _wire_length(self, nbytes: int) -> tuple[int, int]:
        """(records, wire bytes) of nbytes framed into max_frame_len records."""
        from ktls_core.tls.record import count_records

        if self.call_bytes and nbytes > self.call_bytes:
            # The reservation of whole calls, each framed on its own.
            calls = nbytes // self.call_bytes
            records, wire = self._wire_length(self.call_bytes)
            return records * calls, wire * calls
        records = count_records(nbytes, self.mfl, self.prot.allows_empty)
        full, rest = divmod(nbytes, self.mfl)
        wire = full * self.suite.wire_length(self.mfl)
        if rest or nbytes == 0:
            wire += self.suite.wire_length(rest)
        return records, wire

    def _reserve(self, nbytes: int, chained_plain: memoryview | None = None) -> None:
        """One write transaction takes the records' sequence numbers, as many GCM nonce
        counter values and their TCP sequence space, and commits before any sealing.

        TLS 1.0 CBC (`chained_plain`): the batch is also sealed in this transaction
        and the next chain IV stored with the reservation.
        """
        from ktls_core.net import tcp
        from ktls_core.tls import session as sessions

        st = self.st
        records, wire = self._wire_length(nbytes)
        sealed: Batch | None = None
        with st.kernel.transaction() as tx:
            s = sessions.get(tx, st.conn.id)
            if s is None or tcp.get(tx, st.conn.id) is None:
                raise KtlsError(Errno.ECONNABORTED, "the connection was dropped")
            first = s.next_seq
            # A range reaching 2**64-1 is reserved up to it only: the record layer
            # refuses to seal there (a crypto failure), so nothing past it is used.
            tx.conn.execute(
                "UPDATE sessions SET next_seq = ? WHERE conn_id = ?",
                (to_db(min(first + records, U64_MAX)), s.conn_id),
            )
            if s.nonce_ctr is not None:
                self.nonce, self.nonce_end = s.nonce_ctr, s.nonce_ctr + records
                tx.conn.execute(
                    "UPDATE sessions SET nonce_ctr = ? WHERE conn_id = ?",
                    (to_db(min(self.nonce_end, U64_MAX)), s.conn_id),
                )
            tcp_first = tcp.reserve_seq(tx, st.conn, wire)
            if self.iv_source is None and self.prot.explicit_kind == "random":
                self.iv_source = _iv_source(tx)
            self.seq, self.seq_end = first, first + records
            self.tcp_seq, self.tcp_end = tcp_first, tcp_first + wire
            if st.first_seq is None:
                st.tcp_first = tcp_first
                st.first_seq = st.next_seq = first
            st.emit(Reserved(st.conn.name, first, records, tcp_first, wire))
            if chained_plain is not None:
                assert s.cbc_iv is not None
                batch = self._frame(chained_plain, len(chained_plain))
                batch.extra["chain"] = s.cbc_iv
                self._queue(batch)
                self.sb.take_ready(wait=True)  # the worker is done: pru_ready()
                if batch.error is None:
                    nxt = batch.extra["next_chain"]
                    assert isinstance(nxt, bytes)
                    tx.conn.execute(
                        "UPDATE sessions SET cbc_iv = ? WHERE conn_id = ?", (nxt, s.conn_id)
                    )
                sealed = batch
        if sealed is not None:
            self._transmit(sealed)

    # -- the loop --

    def run(self, size: int | None) -> None:
        st = self.st
        whole = size is not None and not self.chained
        # No batch reads more than the whole send: a one-record send zeroes a few bytes,
        # not megabytes.
        cap = self.batch_bytes if size is None else min(self.batch_bytes, size)
        m = self.mfl
        # TLS 1.3: each payload is read (readv(2) scatters) into a slot with the record
        # layer's room after it, the inner content type: the slots are sealed as they
        # lie, the data is never copied (a 512 MiB send copied 512 MiB, ~11 ms).
        # (Records of a few KiB and more: for short ones a copy costs less than a slot.)
        room = self.prot.slot_room if self.call_bytes is None and m >= SLOT_MIN else 0
        per = -(-cap // m)  # records a batch holds
        self.plain = [memoryview(bytearray(per * (m + room) if room else cap)) for _ in range(2)]
        slots = (
            [[b[i * (m + room) : i * (m + room) + m] for i in range(per)] for b in self.plain]
            if room
            else []
        )  # the views readv fills, made only when there are slots
        if whole:
            assert size is not None
            self._reserve(size)
        left = size
        pending: Batch | None = None
        first = True
        while True:
            want = self.batch_bytes if left is None else min(self.batch_bytes, left)
            if self.call_bytes:
                want = min(want, self.call_left)
            buf = self.plain[self.index % 2]
            if not want:
                n = 0
            elif room:
                n = _fill_slots(st.source, slots[self.index % 2], want)
            else:
                n = st.source.fill(buf[:want])
            if n == 0 and not first:
                break
            if self.call_bytes:
                self.call_left = self.call_left - n or self.call_bytes
            if (
                st.syscall == "sendmsg"
                and st.rtype != RecordType.APPLICATION_DATA
                and n > SB_HIWAT
                and size is None  # a known size was checked per call up front
            ):
                raise KtlsError(Errno.EMSGSIZE, f"more than {SB_HIWAT} bytes in one sendmsg")
            first = False
            done = n < want or (left is not None and left - n <= 0)
            if left is not None:
                left -= n
            if self.chained:
                self._reserve(n, buf[:n])
            else:
                if not whole:
                    if pending is not None:
                        self._finish()
                        pending = None
                    self._reserve(n)
                batch = self._frame(buf if room else buf[:n], n, slotted=bool(room))
                if pending is not None:
                    # One batch sealed at a time: the one read meanwhile is queued only
                    # once the last is sent, so the sw worker and the NIC engine (after
                    # a mode switch) never share the protector or the IV stream at once.
                    self._finish()
                self._queue(batch)
                pending = batch
                self._probe()
            if done:
                break
        if pending is not None:
            self._finish()

    def _frame(self, plain: memoryview, n: int, slotted: bool = False) -> Batch:
        """ktls_frame(): the records of one batch (n bytes), numbered from the reservation.

        `plain` holds the n bytes, or with `slotted` the records' payloads one per slot
        of max_frame_len + slot_room bytes."""
        records, wire = self._wire_length(n)
        if self.seq + records > self.seq_end or self.tcp_seq + wire > self.tcp_end:
            raise KtlsError(Errno.EIO, "more data than reserved (the file grew)")
        last = n - (records - 1) * self.mfl
        batch = Batch(
            index=self.index, first_seq=self.seq, count=records, frame_len=self.mfl,
            last_len=last, buf=bytearray(0), wire_len=wire, tcp_seq=self.tcp_seq,
            nonce_first=self.nonce,
        )  # fmt: skip
        batch.extra["plain"] = plain
        if slotted:
            batch.extra["slotted"] = True
        self.index += 1
        self.seq += records
        self.nonce += records
        self.tcp_seq += wire
        if self.st.on_event is not None:
            mode = "ifnet" if self.mode == 2 else "sw"
            for i in range(records):
                length = self.mfl if i < records - 1 else last
                self.st.emit(
                    Framed(batch.first_seq + i, self.st.rtype, length,
                           self.suite.wire_length(length), mode)
                )  # fmt: skip
        return batch

    def _queue(self, batch: Batch) -> None:
        if self.mode == 2:
            # ifnet: nothing to encrypt in the host; the records go down in plaintext
            # and the NIC seals them beside the host CPU. The sealed bytes do not
            # depend on the tag (a reset only moves them to another port), so the
            # engine may seal ahead; ip_output_send()'s tag check runs in order, at
            # transmission (_ip_output_send()).
            batch.extra["nic"] = True
            self.sb.append(batch)
            self.pool.nic_enqueue(batch, self._nic_job, self.sb)
            return
        self.sb.append(batch)
        inq = self.pool.enqueue(self.worker, batch, self._seal_job, self.sb)
        if self.st.on_event is not None:  # events are made only for someone who listens
            self.st.emit(Queued(self.worker, batch.first_seq, batch.count, self.inqueue_name, inq))

    def _seal_job(self, batch: Batch) -> None:
        """The worker's part (ktls_encrypt()): seal the batch through the backend."""
        batch.extra["out"] = self._seal(batch)
        batch.extra["sw"] = True

    def _nic_job(self, batch: Batch) -> None:
        """The NIC's crypto engine: the same record layer, so the same bytes."""
        batch.extra["out"] = self._seal(batch)

    def _seal(self, batch: Batch) -> memoryview:
        plain = batch.extra["plain"]
        assert isinstance(plain, memoryview)
        if "slotted" in batch.extra:
            return self._seal_slots(batch, plain)
        explicit: int | bytes | Callable[[int], bytes] | None = None
        kind = self.prot.explicit_kind
        if kind == "counter":
            explicit = batch.nonce_first
        elif kind == "random":
            explicit = self.iv_source
        elif kind == "chain":
            chain = batch.extra["chain"]
            assert isinstance(chain, bytes)
            explicit = chain
        stream = self.prot.seal_stream(self.st.rtype, plain, batch.first_seq, explicit)
        # One chunk (16 KiB records) goes on as it is; more (many short records) are
        # copied out one by one, so the record layer seals each into the buffer the
        # previous one freed instead of a new buffer per chunk.
        first: memoryview | None = None
        joined: bytearray | None = None
        pos = 0
        for view in stream:
            if first is None and joined is None:
                first = view
            else:
                if joined is None:
                    assert first is not None
                    joined = bytearray(batch.wire_len)
                    pos = len(first)
                    joined[:pos] = first
                    first = None
                joined[pos : pos + len(view)] = view
                pos += len(view)
            del view
        if kind == "chain":
            batch.extra["next_chain"] = stream.next_explicit
        out = memoryview(joined)[:pos] if joined is not None else first or memoryview(b"")
        if len(out) != batch.wire_len:
            raise KtlsError(Errno.EIO, f"sealed {len(out)} bytes, reserved {batch.wire_len}")
        return out

    def _seal_slots(self, batch: Batch, slots: memoryview) -> memoryview:
        """The full records straight from their slots; a short last record (the end of
        the send) through seal(), one copy of at most max_frame_len bytes."""
        m, rtype, prot = self.mfl, self.st.rtype, self.prot
        full = batch.count if batch.last_len == m else batch.count - 1
        out = prot.seal_slots(rtype, slots, m, full, batch.first_seq) if full else None
        if full == batch.count:
            assert out is not None
            return out
        start = full * (m + prot.slot_room)
        last = prot.seal(rtype, slots[start : start + batch.last_len], batch.first_seq + full)
        if out is None:
            return memoryview(last)
        joined = bytearray(len(out) + len(last))
        joined[: len(out)] = out
        joined[len(out) :] = last
        return memoryview(joined)

    def _finish(self) -> None:
        """Wait for the ready prefix (pru_ready()) and hand it to tcp_output()."""
        for ready in self.sb.take_ready(wait=True):
            self._transmit(ready)

    def _transmit(self, batch: Batch) -> None:
        st = self.st
        if "nic" in batch.extra:
            batch.extra["out"] = self._ip_output_send(batch)
        elif batch.error is not None:
            self._crypto_failure(batch.error)
        else:
            if st.on_event is not None:
                st.emit(Sealed(batch.worker, batch.first_seq, batch.count, self.sw_backend or "?"))
            st.sealed_records += batch.count
        if st.on_event is not None:
            st.emit(Ready(batch.first_seq, batch.count))
        out = batch.extra["out"]
        assert isinstance(out, memoryview)
        st.transmit(out, batch.tcp_seq & 0xFFFFFFFF)
        st.sent_records += batch.count
        st.sent_bytes += (batch.count - 1) * batch.frame_len + batch.last_len
        st.sent_wire += len(out)
        st.next_seq = batch.first_seq + batch.count
        if st.progress is not None:
            st.progress(st.sent_bytes)

    def _ip_output_send(self, batch: Batch) -> memoryview:
        """ip_output_send() for an ifnet session's records, sealed by the NIC engine.

        Each record meets the send-tag check of txmode.IfnetOutput (issue 6): on
        a mismatch the packet is dropped, ktls_reset_send_tag() runs and TCP
        retransmits the record through the new tag (or the connection is dropped
        with ECONNABORTED). The NIC model then produces exactly the bytes software
        would, so the peer's stream is unbroken.
        """
        from ktls_core.tls.txmode import IfnetOutput

        if self.ifnet_out is None:
            self.ifnet_out = IfnetOutput(self.st.kernel, self.st.conn, self.st.emit)
        # The egress moves only between batches (IfnetOutput.refresh() at the probe),
        # so the batch's first record meets any stale tag: it is dropped and resent
        # after the reset, and the records behind it match the new tag. One check
        # per batch says the same as one per record.
        first_wire = self.suite.wire_length(self.mfl if batch.count > 1 else batch.last_len)
        # TCP sent the first record once (t_sndbytes) before it met the stale tag;
        # what is reserved after it has not been sent.
        unsent = self.tcp_end - batch.tcp_seq - first_wire
        s = self.ifnet_out.output(self.sess, batch.first_seq, first_wire, unsent=unsent)
        self.sess = s
        if s.mode != self.mode:
            # ktls_disable_ifnet() moved the session to software: these records were
            # framed for the NIC and go through it; the next batch is framed for sw.
            self.mode = s.mode
            self.sw_backend = s.backend or self.sw_backend
        if batch.error is not None:
            raise batch.error  # as the record layer raised it (a sequence wrap: EOVERFLOW)
        out = batch.extra["out"]
        assert isinstance(out, memoryview)
        port = self.ifnet_out.port or s.tag_port or "NIC"
        self.st.emit(Sealed(-1, batch.first_seq, batch.count, port))
        if port != self.st.link.port and self.ifnet_out.port is not None:
            self.st.link = self.st.link._replace(port=port)
        return out

    # -- mode switches and drops from other processes --

    def _probe(self) -> None:
        """Between batches, now and then: did switch_tls change the mode, or tcpdrop
        drop the connection? (A long download follows a switch between records.)"""
        now = time.monotonic()
        if now - self.st.last_probe < PROBE_SECONDS:
            return
        self.st.last_probe = now
        from ktls_core.net import tcp
        from ktls_core.tls import session as sessions

        with self.st.kernel.snapshot() as tx:
            s = sessions.get(tx, self.st.conn.id)
            gone = s is None or tcp.get(tx, self.st.conn.id) is None
            if not gone and self.ifnet_out is not None:
                self.ifnet_out.refresh(tx)
        if gone or s is None:
            raise KtlsError(Errno.ECONNABORTED, "the connection was dropped")
        self.mode = s.mode
        self.sess = s
        self.sw_backend = s.backend or self.sw_backend

    # -- failures and the final transaction --

    def _crypto_failure(self, error: BaseException) -> None:
        reason = error.detail if isinstance(error, KtlsError) else str(error)
        self.st.failed = KtlsError(Errno.EIO, reason or "encryption failed")
        raise self.st.failed

    def account(self) -> None:
        """The final transaction: what was sent, the ocf counters, a crypto failure."""
        from ktls_core import kld
        from ktls_core.net import tcp
        from ktls_core.tls import session as sessions

        st = self.st
        with st.kernel.transaction() as tx:
            if st.sent_records:
                tx.conn.execute(
                    "UPDATE sessions SET records = records + ?, bytes = bytes + ?"
                    " WHERE conn_id = ?",
                    (st.sent_records, st.sent_bytes, st.conn.id),
                )
            b = kld.backend(tx, self.sw_backend) if self.sw_backend else None
            if st.sealed_records and b is not None:
                names = tx.profile.by_name
                leaf = b.ocf_counter(sessions.tls_enable(self.sess), tx.era)
                if leaf is not None and f"{OCF_NODE}.{leaf}" in names:
                    tx.count(f"{OCF_NODE}.{leaf}", st.sealed_records)
                # sendfile's pages belong to the file: sealed into a separate buffer;
                # the other syscalls copied the data into anonymous pages, sealed in place.
                where = "separate_output" if st.syscall == "sendfile" else "inplace"
                if f"{OCF_NODE}.{where}" in names:
                    tx.count(f"{OCF_NODE}.{where}", st.sealed_records)
            if st.failed is not None:
                tx.count(FAILED_CRYPTO)
                conn = tcp.get(tx, st.conn.id)
                if conn is not None:
                    tcp.drop(tx, conn)
                st.emit(Aborted(st.conn.name, Errno.EIO, st.failed.detail))
            elif self.seq < self.seq_end:
                # Reserved but never framed (a short read, an error): give the tail back
                # when nobody reserved after it, so the next send and capture join up.
                tcp.give_back_seq(tx, st.conn.id, self.tcp_end, self.tcp_end - self.tcp_seq)
                tx.conn.execute(
                    "UPDATE sessions SET next_seq = ? WHERE conn_id = ? AND next_seq = ?",
                    (to_db(self.seq), st.conn.id, to_db(min(self.seq_end, U64_MAX))),
                )
                if self.nonce_end:
                    tx.conn.execute(
                        "UPDATE sessions SET nonce_ctr = ? WHERE conn_id = ? AND nonce_ctr = ?",
                        (to_db(self.nonce), st.conn.id, to_db(min(self.nonce_end, U64_MAX))),
                    )
