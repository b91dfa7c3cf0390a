"""Figure 3, small records: 100,000 records of 100 bytes in one `ktls send --repeat`.

    ktls send CONN --data <100 bytes> --repeat 100000 --out /dev/null

is an application making write(2) of 100 bytes 100,000 times on a TLS 1.2
AES-128-GCM software session: 100,000 records of 100 bytes. Its per-record cost
(the whole command's wall time / 100,000, start-up included) is compared with
one bare `AESGCM.encrypt` of 100 bytes (bench/_bare_aead.py small: a loop of
100,000 calls in one process; the loop's own time / 100,000, start-up
excluded), both in the same rounds, interleaved. Target (issue 8): <= 4.

Also printed: the bare loop as a whole process (ratio of the two processes),
and the marginal cost per record of the command, (T(100,000 records) -
T(1 record)) / 99,999, which leaves the fixed start-up out.

    python bench/small_records.py [--records 100000] [--size 100] [--rounds 11]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import check, ktls_script, machine, median, prepare, run

HERE = Path(__file__).resolve().parent
LOCAL, FOREIGN = "198.51.100.10:443", "203.0.113.7:50000"
TARGET = 4.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=11)
    args = parser.parse_args()
    prepare()
    ktls = ktls_script()
    tmp = tempfile.mkdtemp(prefix="ktls-bench-")
    env = dict(os.environ, KTLS_STATE=os.path.join(tmp, "kernel.db"))
    check([ktls, "sysctl", "kern.ipc.tls.enable=1", "kern.ipc.mb_use_ext_pgs=1"], env)
    check([ktls, "kldload", "ktls_ocf"], env)
    check([ktls, "connect", LOCAL, FOREIGN, "--random-keys", "--tls-version", "1.2"], env)
    data = ("0123456789" * (args.size // 10 + 1))[: args.size]
    send = [ktls, "send", LOCAL, FOREIGN, "--data", data, "--out", os.devnull]
    many = [*send, "--repeat", str(args.records)]
    bare = [sys.executable, str(HERE / "_bare_aead.py"), "small", str(args.records), str(args.size)]
    doc = check([ktls, "--format", "json", *send[1:], "--repeat", "3"], env)
    if '"records_sent":3' not in doc.replace(" ", ""):
        sys.exit(f"bench: --repeat 3 did not send 3 records: {doc}")
    walls: dict[str, list[float]] = {"many": [], "one": [], "bare": []}
    bare_loop: list[float] = []
    for _ in range(2):  # warm-up
        run(many, env)
        run(bare, capture=True)
    for _ in range(args.rounds):
        for name, argv in (("many", many), ("one", send), ("bare", bare)):
            r = run(argv, env, capture=name == "bare")
            if r.returncode != 0:
                sys.exit(f"bench: {name} failed ({r.returncode}): {r.stderr}")
            walls[name].append(r.wall)
            if name == "bare":
                bare_loop.append(float(r.stdout))
    n = args.records
    many_s, one_s, bare_s, loop_s = (
        median(walls["many"]), median(walls["one"]), median(walls["bare"]), median(bare_loop)
    )  # fmt: skip
    per_record = many_s / n * 1e6
    per_encrypt = loop_s / n * 1e6
    marginal = (many_s - one_s) / (n - 1) * 1e6
    ratio = per_record / per_encrypt
    print(f"machine: {machine()}")
    print(f"{n} records of {args.size} bytes, TLS 1.2 AES-128-GCM, {args.rounds} rounds, medians")
    print(f"ktls send --repeat {n}:   {many_s * 1000:7.1f} ms  {per_record:6.3f} us per record")
    print(f"ktls send (one record):  {one_s * 1000:7.1f} ms")
    print(f"  marginal per record:             {marginal:6.3f} us")
    print(f"bare AESGCM.encrypt loop: {loop_s * 1000:7.1f} ms  {per_encrypt:6.3f} us per call")
    print(
        f"bare loop, whole process: {bare_s * 1000:7.1f} ms"
        f"  (ktls/bare processes {many_s / bare_s:.2f})"
    )
    print(
        f"ratio per record / per encrypt: {ratio:.2f} (marginal {marginal / per_encrypt:.2f});"
        f" target <= {TARGET}: {'met' if ratio <= TARGET else 'NOT met'}"
    )
    shutil.rmtree(tmp, ignore_errors=True)
    return 0 if ratio <= TARGET else 1


if __name__ == "__main__":
    raise SystemExit(main())
