"""A send killed with SIGKILL mid-stream: the numbers it reserved stay burned, the
gauges stay true, and the next send on the connection reuses no sequence or nonce."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

CONN = ["192.0.2.10:443", "198.51.100.7:51514"]


def _records(stream: bytes) -> list[tuple[int, bytes]]:
    """(offset, explicit nonce) of each whole TLS 1.2 GCM record in the stream."""
    out, pos = [], 0
    while pos + 13 <= len(stream):
        length = int.from_bytes(stream[pos + 3 : pos + 5], "big")
        if pos + 5 + length > len(stream):
            break
        out.append((pos, stream[pos + 5 : pos + 13]))
        pos += 5 + length
    return out


def test_sigkill_burns_the_reservation(ktls: Any, state: str, tmp_path: Path) -> None:
    assert ktls("sysctl", "kern.ipc.tls.enable=1", "kern.ipc.mb_use_ext_pgs=1").exit == 0
    assert ktls("kldload", "ktls_ocf").exit == 0
    assert ktls("connect", *CONN, "--key", "00" * 16, "--iv", "01020304").exit == 0
    big = tmp_path / "big"
    big.write_bytes(os.urandom(48 << 20))
    killed_out = tmp_path / "killed.tls"
    fifo_reader = subprocess.Popen(
        [sys.executable, "-m", "ktls_cli.main", "--state", state, "send", *CONN, "--file",
         str(big), "--out", str(killed_out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if killed_out.exists() and killed_out.stat().st_size > (1 << 20):
            break
        time.sleep(0.005)
    fifo_reader.send_signal(signal.SIGKILL)
    fifo_reader.wait()
    sent = killed_out.read_bytes()
    assert 0 < len(sent) < 48 << 20  # killed in the middle
    r = ktls("--format", "json", "send", *CONN, "--data", "after", "--out", tmp_path / "after")
    import json

    doc = json.loads(r.stdout)["send"]
    # The whole 48 MiB (3072 records) was reserved before the first byte left.
    assert doc["first_seq"] == 3072
    nonces = [n for _o, n in _records(sent)] + [(tmp_path / "after").read_bytes()[5:13]]
    assert len(set(nonces)) == len(nonces)
    r = ktls("sysctl", "-n", "kern.ipc.tls.stats.active", "kern.ipc.tls.sw.gcm",
             "kern.ipc.tls.stats.so_inqueue")  # fmt: skip
    assert r.stdout == "1\n1\n0\n"
