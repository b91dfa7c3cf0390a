"""Four processes send on one connection at once: every sequence number is used once,
and the union of their --out streams decodes (each from its own first sequence)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: oracle
from oracle import decrypt_stream

CONN = ["192.0.2.10:443", "198.51.100.7:51514"]
KEY = "000102030405060708090a0b0c0d0e0f"
SALT = "a0a1a2a3"
SENDS = 6


def test_four_processes_on_one_connection(ktls: Any, state: str, tmp_path: Path) -> None:
    assert ktls("sysctl", "kern.ipc.tls.enable=1", "kern.ipc.mb_use_ext_pgs=1").exit == 0
    assert ktls("kldload", "ktls_ocf").exit == 0
    assert ktls("connect", *CONN, "--key", KEY, "--iv", SALT).exit == 0
    payloads = {}
    procs = []
    for p in range(4):
        script = tmp_path / f"sender{p}.sh"
        lines = ["set -e"]
        for i in range(SENDS):
            data = tmp_path / f"d{p}-{i}"
            payloads[(p, i)] = os.urandom(16384 * (i % 3) + 100 * p + 1)
            data.write_bytes(payloads[(p, i)])
            out = tmp_path / f"o{p}-{i}"
            lines.append(
                f"{sys.executable} -m ktls_cli.main --state {state} --format json send"
                f" {' '.join(CONN)} --file {data} --syscall sendfile --out {out}"
                f" > {tmp_path / f'j{p}-{i}'}"
            )
        script.write_text("\n".join(lines) + "\n")
        procs.append(subprocess.Popen(["sh", str(script)], stderr=subprocess.PIPE, text=True))
    for proc in procs:
        _out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0 and err == "", err
    suite = {"version": "1.2", "cipher": "aes-gcm", "key": bytes.fromhex(KEY),
             "iv": bytes.fromhex(SALT)}  # fmt: skip
    used: list[int] = []
    nonces: list[bytes] = []
    for (p, i), data in payloads.items():
        doc = json.loads((tmp_path / f"j{p}-{i}").read_text())["send"]
        stream = (tmp_path / f"o{p}-{i}").read_bytes()
        records = decrypt_stream(stream, suite, first_seq=doc["first_seq"])
        assert b"".join(pt for _t, pt in records) == data
        assert [r["seq"] for r in doc["records"]] == list(range(doc["first_seq"], doc["next_seq"]))
        used += range(doc["first_seq"], doc["next_seq"])
        pos = 0
        while pos < len(stream):  # the explicit nonce of every record
            nonces.append(stream[pos + 5 : pos + 13])
            pos += 5 + int.from_bytes(stream[pos + 3 : pos + 5], "big")
    assert sorted(used) == list(range(len(used)))  # each sequence number exactly once
    assert len(set(nonces)) == len(nonces) == len(used)  # and each GCM nonce
    r = ktls("sysctl", "-n", "kern.ipc.tls.stats.ocf.tls12_gcm_crypts")
    assert int(r.stdout) == len(used)
