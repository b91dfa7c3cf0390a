"""`ktls decode`: the peer's view of --out and --pcap output, with CONN or with keys."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

CONN = ["192.0.2.10:443", "198.51.100.7:51514"]
KEY = ["--tls-version", "1.2", "--cipher", "aes-gcm", "--key", "00" * 16, "--iv", "01020304"]


@pytest.fixture
def sent(ktls: Any, tmp_path: Path) -> dict[str, Path]:
    """A seed session with 40000 bytes and an alert sent, as stream and as capture."""
    assert ktls("sysctl", "kern.ipc.tls.enable=1", "kern.ipc.mb_use_ext_pgs=1").exit == 0
    assert ktls("kldload", "ktls_ocf").exit == 0
    assert ktls("connect", *CONN, *KEY).exit == 0
    data = tmp_path / "data"
    data.write_bytes(os.urandom(40000))
    files = {"data": data, "out": tmp_path / "s.tls", "pcap": tmp_path / "s.pcap",
             "alert": tmp_path / "a.tls"}  # fmt: skip
    assert ktls("send", *CONN, "--file", data, "--out", files["out"],
                "--pcap", files["pcap"]).exit == 0  # fmt: skip
    assert ktls("send", *CONN, "--hex", "0100", "--syscall", "sendmsg", "--record-type",
                "alert", "--out", files["alert"]).exit == 0  # fmt: skip
    return files


def test_with_the_connection_and_with_keys(
    ktls: Any, sent: dict[str, Path], tmp_path: Path
) -> None:
    plain = tmp_path / "plain"
    r = ktls("decode", sent["out"], *CONN, "--plaintext", plain)
    assert r.exit == 0
    assert r.stdout.splitlines() == [
        "record 0: seq 0, type 23 (application_data), length 16384, wire 16413",
        "record 1: seq 1, type 23 (application_data), length 16384, wire 16413",
        "record 2: seq 2, type 23 (application_data), length 7232, wire 7261",
        "3 records, 40000 bytes, all authentic",
    ]
    assert plain.read_bytes() == sent["data"].read_bytes()
    r = ktls("decode", sent["alert"], *KEY, "--first-seq", "3")
    assert r.stdout.splitlines()[0] == "record 0: seq 3, type 21 (alert), length 2, wire 31"
    r = ktls("--format", "json", "decode", sent["pcap"], *CONN, "--pcap")
    doc = json.loads(r.stdout)["decode"]
    assert (doc["record_count"], doc["bad_records"], doc["bytes"]) == (3, 0, 40000)
    assert doc["records"][0]["version"] == "0x0303"


def test_wrong_sequence_tampering_and_truncation(
    ktls: Any, sent: dict[str, Path], tmp_path: Path
) -> None:
    r = ktls("decode", sent["alert"], *CONN)  # the alert is seq 3, not 0
    assert r.exit == 1
    assert r.stdout.splitlines()[0] == (
        "record 0: seq 0, offset 0: Bad message (authentication tag mismatch)"
    )
    data = bytearray(sent["out"].read_bytes())
    data[100] ^= 1
    bad = tmp_path / "bad"
    bad.write_bytes(bytes(data[:-10]))
    r = ktls("decode", bad, *CONN)
    lines = r.stdout.splitlines()
    assert r.exit == 1
    assert lines[0].startswith("record 0: seq 0, offset 0: Bad message")
    assert lines[1].startswith("record 1: seq 1, type 23")
    assert lines[2].startswith("record 2: seq 2, offset 32826: Message too long (truncated")
    assert lines[3] == "3 records, 16384 bytes, 2 bad"


def test_decode_errors(ktls: Any, sent: dict[str, Path], tmp_path: Path) -> None:
    r = ktls("decode", tmp_path / "none", *CONN)
    assert (r.exit, r.stderr) == (1, f"decode: {tmp_path / 'none'}: No such file or directory\n")
    r = ktls("decode", sent["out"], *CONN, "--pcap")
    assert r.exit == 1 and "not a pcap file" in r.stderr
    r = ktls("decode", sent["out"], "192.0.2.10:443", "198.51.100.7:9")
    assert (r.exit, r.stderr) == (1, "decode: 192.0.2.10 443 198.51.100.7 9: No such process\n")
    assert ktls("decode", sent["out"]).exit == 2  # neither CONN nor keys
    assert ktls("decode", sent["out"], *CONN, "--key", "00" * 16).exit == 2
    assert ktls("decode", sent["out"], "--key", "00" * 5).exit == 2
