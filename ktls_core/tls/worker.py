"""The KTLS worker pool and the not-ready send buffer (uipc_ktls.c, uipc_sockbuf.c).

FreeBSD appends software-TLS records to the socket buffer marked M_NOTREADY and
queues them to a per-CPU worker thread (`ktls_enqueue()`); the worker encrypts
them and calls `pru_ready()`, and tcp_output() sends only the ready prefix of
the buffer. A connection always lands on the same worker, so its records are
encrypted in order.

Here the pool has `kern.ipc.tls.stats.threads` workers, each a real thread
started on its first job; connection `id` is pinned to worker `id % threads`.
Work moves in batches of records (one queue entry per batch, as FreeBSD queues
one mbuf chain per `ktls_enqueue()`), and the inqueue statistic
(`so_inqueue` in 2019, `sw_tx_inqueue` later) is counted +1 per queued batch and
-1 when the worker is done with it. That count lives in this process only: the
persisted sysctl never moves, so a SIGKILL between +1 and -1 cannot leave a
stale value behind (FreeBSD's value is also 0 whenever nothing is queued).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable


class Batch:
    """A run of consecutive records in one preallocated wire buffer (an mbuf chain).

    Records are laid out back to back in `buf` as they go on the wire: header,
    payload, trailer. All records carry `frame_len` bytes of payload except the
    last, which carries `last_len`. `ready` is set by pru_ready(). (A plain class:
    a dataclass costs every send's start-up its code generation.)
    """

    __slots__ = (
        "buf", "count", "error", "extra", "first_seq", "frame_len", "index", "last_len",
        "nonce_first", "ready", "tcp_seq", "wire_len", "worker",
    )  # fmt: skip

    def __init__(
        self,
        index: int,  # position in the send buffer
        first_seq: int,  # TLS sequence number of the first record
        count: int,  # records in the batch (0 for plain TCP data)
        frame_len: int,  # payload bytes per record (max_frame_len), last excepted
        last_len: int,  # payload bytes of the last record
        buf: bytearray,
        wire_len: int,  # bytes of `buf` that go on the wire
        tcp_seq: int,  # TCP sequence number of buf[0]
        nonce_first: int = 0,  # TLS 1.2 GCM explicit nonce counter of the first record
        ready: bool = False,
        error: BaseException | None = None,
        worker: int = -1,
        extra: dict[str, object] | None = None,
    ) -> None:
        self.index = index
        self.first_seq = first_seq
        self.count = count
        self.frame_len = frame_len
        self.last_len = last_len
        self.buf = buf
        self.wire_len = wire_len
        self.tcp_seq = tcp_seq
        self.nonce_first = nonce_first
        self.ready = ready
        self.error = error
        self.worker = worker
        self.extra: dict[str, object] = {} if extra is None else extra

    def __repr__(self) -> str:
        return (
            f"Batch(index={self.index}, first_seq={self.first_seq}, count={self.count},"
            f" wire_len={self.wire_len}, ready={self.ready})"
        )


class SendBuffer:
    """so_snd for one send: batches go in not-ready, come out as a ready prefix, in order."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._pending: deque[Batch] = deque()

    def append(self, batch: Batch, *, ready: bool = False) -> None:
        """sbappendstream(): M_NOTREADY unless the data needs no encryption."""
        with self._cond:
            batch.ready = ready
            self._pending.append(batch)
            if ready:
                self._cond.notify_all()

    def pru_ready(self, batch: Batch, error: BaseException | None = None) -> None:
        """The worker is done with `batch` (sealed, or failed with `error`)."""
        with self._cond:
            batch.error = error
            batch.ready = True
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._pending)

    def take_ready(self, *, wait: bool) -> list[Batch]:
        """The ready prefix, in order (what tcp_output() may send); blocks if `wait`
        and the head is not ready yet."""
        with self._cond:
            if wait:
                while self._pending and not self._pending[0].ready:
                    self._cond.wait()
            out: list[Batch] = []
            while self._pending and self._pending[0].ready:
                out.append(self._pending.popleft())
            return out


Job = Callable[[Batch], None]


class _Worker:
    """One ktls_work thread: a FIFO of (batch, job, buffer) entries.

    `counted`: its batches count in the inqueue statistic (the KTLS workers do;
    the NIC's crypto engine, which also runs beside the host CPU, does not).
    """

    def __init__(self, pool: WorkerPool, index: int, name: str = "", counted: bool = True) -> None:
        self.pool = pool
        self.index = index
        self.name = name or f"ktls{index}"
        self.counted = counted
        self._cond = threading.Condition()
        self._queue: deque[tuple[Batch, Job, SendBuffer] | None] = deque()
        self._thread: threading.Thread | None = None

    def put(self, item: tuple[Batch, Job, SendBuffer] | None) -> None:
        with self._cond:
            if self._thread is None and item is not None:
                self._thread = threading.Thread(
                    target=self._run, name=self.name, daemon=True
                )
                self._thread.start()
            self._queue.append(item)
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue:
                    self._cond.wait()
                item = self._queue.popleft()
            if item is None:
                return
            batch, job, sb = item
            error: BaseException | None = None
            try:
                job(batch)
            except BaseException as exc:  # handed to the sender, which aborts the connection
                error = exc
            if self.counted:
                self.pool._done()
            sb.pru_ready(batch, error)

    def stop(self) -> None:
        if self._thread is not None:
            self.put(None)
            self._thread.join()
            self._thread = None


class WorkerPool:
    """kern.ipc.tls.stats.threads workers; threads start on their first batch."""

    def __init__(self, threads: int) -> None:
        self.threads = max(1, threads)
        self._workers = [_Worker(self, i) for i in range(self.threads)]
        # ifnet TLS: the NIC seals records while the host goes on (its own engine,
        # not a KTLS worker: no inqueue, no thread in kern.ipc.tls.stats.threads).
        self._nic = _Worker(self, -1, name="nic", counted=False)
        self._lock = threading.Lock()
        self.inqueue = 0  # this process's share of sw_tx_inqueue / so_inqueue
        self.queued_batches = 0

    def worker_for(self, conn_id: int) -> int:
        """ktls_get_cpu(): a connection always maps to the same worker."""
        return conn_id % self.threads

    def enqueue(self, worker: int, batch: Batch, job: Job, sb: SendBuffer) -> int:
        """ktls_enqueue(): inqueue +1 and hand the batch to `worker`; returns the new inqueue."""
        with self._lock:
            self.inqueue += 1
            self.queued_batches += 1
            value = self.inqueue
        batch.worker = worker
        self._workers[worker].put((batch, job, sb))
        return value

    def nic_enqueue(self, batch: Batch, job: Job, sb: SendBuffer) -> None:
        """Hand an ifnet batch to the NIC's crypto engine; `sb` learns when it is sealed."""
        batch.worker = -1
        self._nic.put((batch, job, sb))

    def _done(self) -> None:
        with self._lock:
            self.inqueue -= 1

    def started(self) -> int:
        """How many worker threads are running (they start lazily)."""
        return sum(1 for w in self._workers if w._thread is not None)

    def shutdown(self) -> None:
        for w in (*self._workers, self._nic):
            w.stop()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
