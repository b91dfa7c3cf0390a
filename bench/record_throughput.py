"""Sealing throughput of 16 KiB TLS 1.2 AES-128-GCM records, as a ratio to a bare
AESGCM.encrypt_into loop over the same buffers, measured side by side in one run.

Every contender reads the same input (one buffer of --mib MiB, record after
record) and writes into a 1 MiB output region reused cyclically (the size of
the chunk buffer seal_stream reuses), so none gets a cache advantage.

  bare      encrypt_into(nonce, payload_view, aad, body_view): views made beforehand,
            nonce and AAD never change. The floor: no framing at all.
  bare+cut  the same loop, but cutting each record's payload view from the input as
            it goes (what any streaming loop over one input buffer must do).
  seal_into RecordProtector.seal_into(record_view, 23, payload_view, seq, counter):
            one record per call, payload views made beforehand.
  stream    RecordProtector.seal_stream(23, data, seq, counter): cuts and seals the
            whole input, yielding wire chunks (the path `ktls send` streams through).

Rounds are interleaved (bare, bare+cut, seal_into, stream, bare, ...) and the
ratio of each round is taken against the bare loop of the same round; the
median over rounds is printed. Target: stream / bare >= 0.85.

    python bench/record_throughput.py [--mib 64] [--rounds 15]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cryptography
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ktls_core.tls.record import SessionKeys, make_protector

RECORD = 16384
WINDOW = 64  # records in the reused 1 MiB output region
TARGET = 0.85


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=64, help="input size per round (MiB)")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()

    key, salt = os.urandom(16), os.urandom(4)
    records = args.mib * 1024 * 1024 // RECORD
    data = os.urandom(records * RECORD)
    dmv = memoryview(data)
    prot = make_protector(SessionKeys.from_names("1.2", "aes-gcm", key, salt))
    wire = prot.wire_length(RECORD)

    out = bytearray(WINDOW * wire)
    omv = memoryview(out)
    record_views = [omv[i * wire : (i + 1) * wire] for i in range(WINDOW)]
    body_views = [v[13:] for v in record_views]
    payload_views = [dmv[i * RECORD : (i + 1) * RECORD] for i in range(records)]
    encrypt_into = AESGCM(key).encrypt_into
    nonce, aad = bytearray(12), bytearray(13)

    def bare() -> float:
        t = time.perf_counter()
        for i, payload in enumerate(payload_views):
            encrypt_into(nonce, payload, aad, body_views[i % WINDOW])
        return time.perf_counter() - t

    def bare_cut() -> float:
        t = time.perf_counter()
        for i in range(records):
            encrypt_into(nonce, dmv[i * RECORD : (i + 1) * RECORD], aad, body_views[i % WINDOW])
        return time.perf_counter() - t

    seq = 0

    def seal_into() -> float:
        nonlocal seq
        seal = prot.seal_into
        base = seq
        t = time.perf_counter()
        for i, payload in enumerate(payload_views):
            seal(record_views[i % WINDOW], 23, payload, base + i, base + i)
        elapsed = time.perf_counter() - t
        seq += records
        return elapsed

    def stream() -> float:
        nonlocal seq
        produced = 0
        t = time.perf_counter()
        for chunk in prot.seal_stream(23, data, seq, seq):
            produced += len(chunk)
        elapsed = time.perf_counter() - t
        assert produced == records * wire
        seq += records
        return elapsed

    # warm up caches, allocators and the protector's chunk buffer
    for fn in (bare, bare_cut, seal_into, stream):
        fn()

    ratios: dict[str, list[float]] = {"bare+cut": [], "seal_into": [], "stream": []}
    bare_times = []
    for _ in range(args.rounds):
        t_bare = bare()
        bare_times.append(t_bare)
        ratios["bare+cut"].append(t_bare / bare_cut())
        ratios["seal_into"].append(t_bare / seal_into())
        ratios["stream"].append(t_bare / stream())

    mib = records * RECORD / (1 << 20)
    bare_rate = mib / statistics.median(bare_times)
    print(
        f"python {platform.python_version()}, cryptography {cryptography.__version__}, "
        f"{os.cpu_count()} cpus, {platform.machine()}"
    )
    print(
        f"{records} records of {RECORD} bytes per round ({mib:.0f} MiB), {args.rounds} rounds, "
        f"medians"
    )
    print(
        f"{'bare encrypt_into':<18} {bare_rate:8.0f} MiB/s  ratio 1.000  "
        f"({statistics.median(bare_times) / records * 1e6:.2f} us/record)"
    )
    for name, values in ratios.items():
        ratio = statistics.median(values)
        print(
            f"{name:<18} {bare_rate * ratio:8.0f} MiB/s  ratio {ratio:.3f}  "
            f"(min {min(values):.3f}, max {max(values):.3f})"
        )
    stream_ratio = statistics.median(ratios["stream"])
    verdict = "met" if stream_ratio >= TARGET else "NOT met"
    print(f"target stream/bare >= {TARGET}: {verdict} ({stream_ratio:.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
