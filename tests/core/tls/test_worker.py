"""The worker pool (real threads, a connection pinned to one) and pru_ready() ordering."""

from __future__ import annotations

import threading
import time

from ktls_core.tls.worker import Batch, SendBuffer, WorkerPool


def _batch(i: int) -> Batch:
    return Batch(i, i * 10, 10, 16384, 16384, bytearray(), 0, 0)


def test_pinning_is_stable_and_threads_start_lazily() -> None:
    pool = WorkerPool(4)
    try:
        assert [pool.worker_for(c) for c in (1, 5, 9, 2)] == [1, 1, 1, 2]
        assert pool.started() == 0
        sb = SendBuffer()
        seen: list[str] = []
        b = _batch(0)
        sb.append(b)
        pool.enqueue(1, b, lambda _b: seen.append(threading.current_thread().name), sb)
        assert sb.take_ready(wait=True) == [b]
        assert seen == ["ktls1"]  # a real thread, not the caller's
        assert pool.started() == 1
        assert pool.inqueue == 0  # +1 per batch queued, -1 when done
    finally:
        pool.shutdown()


def test_only_the_ready_prefix_is_taken_in_order() -> None:
    sb = SendBuffer()
    batches = [_batch(i) for i in range(3)]
    for b in batches:
        sb.append(b)
    sb.pru_ready(batches[1])  # the middle one first: nothing may go yet
    assert sb.take_ready(wait=False) == []
    sb.pru_ready(batches[0])
    assert sb.take_ready(wait=False) == batches[:2]
    sb.pru_ready(batches[2])
    assert sb.take_ready(wait=False) == [batches[2]]


def test_waiting_for_the_head_and_errors_reach_the_sender() -> None:
    pool = WorkerPool(2)
    try:
        sb = SendBuffer()
        slow, failing = _batch(0), _batch(1)
        for b in (slow, failing):
            sb.append(b)
        inq = pool.enqueue(0, slow, lambda _b: time.sleep(0.05), sb)
        assert inq == 1
        pool.enqueue(0, failing, lambda _b: (_ for _ in ()).throw(ValueError("bad")), sb)
        got = sb.take_ready(wait=True)
        got += sb.take_ready(wait=True) if len(got) < 2 else []
        assert got == [slow, failing]
        assert slow.error is None and isinstance(failing.error, ValueError)
        assert pool.inqueue == 0
    finally:
        pool.shutdown()
