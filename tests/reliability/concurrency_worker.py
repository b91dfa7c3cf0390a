"""One worker process of test_concurrency.py: ROUNDS mixed commands on one state.

    python concurrency_worker.py STATE WORKER SEED OUTDIR ROUNDS

Each command runs in this process through `ktls_cli.main.main(argv)` (a real
process per worker, the CLI's whole path per command, without an interpreter
start per command). Prints one JSON list: per command its argv, exit status,
stdout and stderr.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import sys

SHARED = ["192.0.2.10:443 198.51.100.7:7000", "203.0.113.10:443 203.0.113.7:7001"]
SUITES = [
    ["--tls-version", "1.2", "--cipher", "aes-gcm"],
    ["--tls-version", "1.3", "--cipher", "aes-gcm"],
    ["--tls-version", "1.3", "--cipher", "chacha20-poly1305"],
]


def run(state: str, argv: list[str]) -> dict[str, object]:
    from ktls_cli.main import main

    out, err = io.BytesIO(), io.BytesIO()
    tout = io.TextIOWrapper(out, encoding="utf-8", write_through=True)
    terr = io.TextIOWrapper(err, encoding="utf-8", write_through=True)
    with contextlib.redirect_stdout(tout), contextlib.redirect_stderr(terr):
        code = main(["--state", state, *argv])
    return {"argv": argv, "exit": code, "stdout": out.getvalue().decode(),
            "stderr": err.getvalue().decode()}  # fmt: skip


def main() -> None:
    state, worker, seed, outdir, rounds = sys.argv[1:6]
    w = int(worker)
    rng = random.Random(int(seed) * 100 + w)
    live: list[str] = []  # this worker's own connections
    next_port = 20000 + w * 400
    results = []
    payload = os.path.join(outdir, f"payload-{w}")
    with open(payload, "wb") as fh:
        fh.write(rng.randbytes(40000))
    for i in range(int(rounds)):
        op = rng.choices(
            ["set", "get", "ifconfig", "connect", "tcpdrop", "send", "switch"],
            weights=[10, 10, 8, 14, 8, 35, 15],
        )[0]
        if op == "set":
            value = 100000 + w * 1000 + i
            argv = ["--format", "json", "sysctl", f"kern.ipc.tls.max_reclaim={value}"]
        elif op == "get":
            argv = ["sysctl", "kern.ipc.tls.stats.active", "kern.ipc.tls.sw.gcm",
                    "kern.ipc.tls.ifnet.gcm", "kern.ipc.tls.stats.enable_calls"]  # fmt: skip
        elif op == "ifconfig":
            argv = ["ifconfig", rng.choice(["cc0", "cc1"]), rng.choice(["txtls", "-txtls"])]
        elif op == "connect" or (op in ("tcpdrop",) and not live):
            faddr = rng.choice(["198.51.100.7", "203.0.113.7"])
            laddr = "192.0.2.10" if faddr.startswith("198") else "203.0.113.10"
            conn = f"{laddr}:443 {faddr}:{next_port}"
            next_port += 1
            argv = ["--format", "json", "connect", *conn.split(), "--random-keys",
                    *rng.choice(SUITES)]  # fmt: skip
            live.append(conn)
        elif op == "tcpdrop":
            conn = live.pop(rng.randrange(len(live)))
            argv = ["--format", "json", "tcpdrop", *conn.split()]
        elif op == "send":
            conn = rng.choice(SHARED + live[-3:])
            out = os.path.join(outdir, f"out-{w}-{i}")
            if rng.random() < 0.3:
                source = ["--file", payload, "--syscall", "sendfile"]
            else:
                source = ["--data", "x" * rng.randrange(1, 40000)]
            argv = ["--format", "json", "send", *conn.split(), *source, "--out", out]
        else:
            conn = rng.choice(SHARED + live[-3:])
            argv = ["--format", "json", "switch_tls", rng.choice(["-i", "-s"]), *conn.split()]
        results.append(run(state, argv))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
