"""`ktls send`: every current suite x every syscall decrypted by the oracle, tshark on
--pcap, the JSON document, the trace, and every error with its message."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: oracle, ktls_sw
from ktls_sw import CONN_WORDS, CURRENT_SUITES, MAC_LEN, suite_id
from oracle import decrypt_stream

SYSCALLS = ["write", "aio_write", "sendfile", "sendmsg"]


def _keys_file(
    tmp_path: Path, suite: tuple[Any, ...], rec_seq: int | None = None
) -> dict[str, Any]:
    version, cipher, klen, ivlen, auth = suite
    keys = {"version": version, "cipher": cipher, "key": os.urandom(klen), "iv": os.urandom(ivlen),
            "auth": auth, "auth_key": os.urandom(MAC_LEN[auth]) if auth else b""}  # fmt: skip
    lines = [f"tls_version: '{version}'", f"cipher: {cipher}", f"key: {keys['key'].hex()}"]
    if ivlen:
        lines.append(f"iv: {keys['iv'].hex()}")
    if auth:
        lines += [f"auth: {auth}", f"auth_key: {keys['auth_key'].hex()}"]
    if rec_seq is not None:
        lines.append(f"rec_seq: {rec_seq}")
    path = tmp_path / "keys.yaml"
    path.write_text("\n".join(lines) + "\n")
    keys["path"] = str(path)
    return keys


@pytest.fixture
def ready(state: str, ktls: Any, init_state: Any) -> Callable[[str], None]:
    """A state where software KTLS works: the sysctls set, and ktls_ocf in the seed."""

    def make(profile: str = "current") -> None:
        init_state(state, profile)
        assert ktls("sysctl", "kern.ipc.tls.enable=1", "kern.ipc.mb_use_ext_pgs=1").exit == 0
        if profile == "seed":
            assert ktls("kldload", "ktls_ocf").exit == 0

    return make


@pytest.mark.parametrize("suite", CURRENT_SUITES, ids=suite_id)
def test_every_suite_and_syscall_decrypts_with_the_oracle(
    ktls: Any, ready: Any, tmp_path: Path, suite: tuple[Any, ...]
) -> None:
    ready()
    keys = _keys_file(tmp_path, suite, rec_seq=1 << 40)
    r = ktls("connect", *CONN_WORDS, "--keys-from", keys["path"])
    assert r.exit == 0, r
    data = os.urandom(20000)
    src = tmp_path / "data"
    src.write_bytes(data)
    stream = b""
    for syscall in SYSCALLS:
        out = tmp_path / f"{syscall}.tls"
        r = ktls("send", *CONN_WORDS, "--file", src, "--syscall", syscall, "--out", out)
        assert r.exit == 0, r
        stream += out.read_bytes()
    records = decrypt_stream(stream, keys, first_seq=1 << 40)
    assert [len(pt) for _t, pt in records] == [16384, 20000 - 16384] * 4
    assert b"".join(pt for _t, pt in records) == data * 4
    assert {t for t, _pt in records} == {23}


def test_summary_json_and_trace(ktls: Any, ready: Any) -> None:
    ready("seed")
    assert ktls("connect", *CONN_WORDS, "--random-keys").exit == 0
    r = ktls("send", *CONN_WORDS, "--data", "x" * 20000)
    assert r.stdout == (
        "192.0.2.10 443 198.51.100.7 51514: 2 records, 20000 bytes (20058 on the wire),"
        " seq 0 to 1, next seq 2\n"
    )
    r = ktls("--format", "json", "send", *CONN_WORDS, "--hex", "15 03", "--syscall",
                 "sendmsg", "--record-type", "21")  # fmt: skip
    doc = json.loads(r.stdout)["send"]
    assert doc["bytes"] == 2 and (doc["first_seq"], doc["next_seq"]) == (2, 3)
    assert doc["records"] == [{"seq": 2, "type": 21, "length": 2, "wire_length": 31, "mode": "sw"}]
    r = ktls("send", *CONN_WORDS, "--data", "hi", "--trace")
    trace = r.stderr.splitlines()
    worker = 1 % int(ktls("sysctl", "-n", "kern.ipc.tls.stats.threads").stdout)
    assert trace[0].startswith("reserved seq 3..3, TCP ")
    assert trace[1] == "framed record seq 3 type 23 (application_data) length 2 wire 31"
    assert trace[2] == f"queued 1 record(s) from seq 3 to worker {worker} (so_inqueue 1)"
    assert trace[3] == f"sealed 1 record(s) from seq 3 by OCF (worker {worker})"
    assert trace[4] == "ready 1 record(s) from seq 3 (pru_ready)"
    assert trace[5].startswith("transmitted 31 bytes on lagg0 via cc0, TCP seq ")


def test_without_ktls_the_bytes_go_plain(
    ktls: Any, state: str, init_state: Any, tmp_path: Path
) -> None:
    init_state(state)
    assert ktls("connect", *CONN_WORDS).exit == 0
    out = tmp_path / "plain"
    r = ktls("send", *CONN_WORDS, "--data", "GET / HTTP/1.0\r\n", "--out", out)
    assert r.exit == 0 and "no KTLS" in r.stdout
    assert out.read_bytes() == b"GET / HTTP/1.0\r\n"


def test_stdin_and_out_to_stdout(ktls: Any, ready: Any) -> None:
    ready("seed")
    assert ktls("connect", *CONN_WORDS, "--random-keys").exit == 0
    r = ktls("send", *CONN_WORDS, "--stdin", "--out", "-", input=b"abc" * 7000)
    assert r.exit == 0, r
    assert len(r.stdout_bytes) == 21000 + 2 * 29  # two GCM records on stdout
    assert "2 records" in r.stderr  # the summary moves to stderr


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--data", "x", "--record-type", "alert"], 2, "--record-type needs --syscall sendmsg"),
        (["--data", "x", "--syscall", "sendfile"], 1,
         "sendfile: Invalid argument (sendfile(2) reads a regular file: use --file)"),
        (["--data", "x", "--hex", "00"], 2, "give exactly one of"),
        (["--hex", "zz"], 2, "not hexadecimal"),
        (["--data", "x", "--syscall", "sendmsg", "--record-type", "300"], 2, "not a byte"),
        (["--data", "x" * 40000, "--syscall", "sendmsg", "--record-type", "handshake"], 1,
         "sendmsg: Message too long"),
        (["--file", "/nonexistent/f"], 1, "send: /nonexistent/f: No such file or directory"),
        (["--data", ""], 1, "write: Invalid argument"),
    ],
)  # fmt: skip
def test_errors(ktls: Any, ready: Any, args: list[str], code: int, message: str) -> None:
    ready("seed")
    assert ktls("connect", *CONN_WORDS, "--random-keys").exit == 0
    before = ktls("state", "export", "--include-keys").stdout
    r = ktls("send", *CONN_WORDS, *args)
    assert r.exit == code
    assert message in r.stderr
    assert r.stderr.count("\n") <= 4 and "Traceback" not in r.stderr
    # A refused send reserved nothing.
    assert ktls("state", "export", "--include-keys").stdout == before


def test_unknown_connection_and_bad_names(ktls: Any, state: str, init_state: Any) -> None:
    init_state(state)
    r = ktls("send", "192.0.2.10:443", "198.51.100.7:9", "--data", "x")
    assert (r.exit, r.stderr) == (1, "write: 192.0.2.10 443 198.51.100.7 9: No such process\n")
    r = ktls("send", "192.0.2.10", "--data", "x")
    assert r.exit == 2
    r = ktls("send", "foo:1", "198.51.100.7:9", "--data", "x")
    assert r.exit == 1
    assert r.stderr == (
        "write: getaddrinfo: foo port 1: hostname nor servname provided, or not known\n"
    )


def test_crypto_failure_is_eio_and_drops_the_connection(
    ktls: Any, ready: Any, tmp_path: Path
) -> None:
    ready()
    keys = _keys_file(tmp_path, ("1.2", "aes-gcm", 16, 4, None), rec_seq=2**64 - 2)
    assert ktls("connect", *CONN_WORDS, "--keys-from", keys["path"]).exit == 0
    src = tmp_path / "big"
    src.write_bytes(b"\0" * (2 << 20))
    r = ktls("send", *CONN_WORDS, "--file", src)
    assert (r.exit, r.stderr) == (1, "write: Input/output error\n")
    r = ktls("sysctl", "-n", "kern.ipc.tls.stats.failed_crypto", "kern.ipc.tls.stats.active")
    assert r.stdout == "1\n0\n"
    assert "ESTABLISHED" not in ktls("netstat").stdout


def test_tshark_dissects_the_pcap(ktls: Any, ready: Any, require_tool: Any, tmp_path: Path) -> None:
    tshark = require_tool("tshark")
    ready("seed")
    assert ktls("connect", *CONN_WORDS, "--random-keys").exit == 0
    src = tmp_path / "f"
    src.write_bytes(os.urandom(40000))
    first = tmp_path / "1.pcap"
    second = tmp_path / "2.pcap"
    r = ktls("send", *CONN_WORDS, "--file", src, "--syscall", "sendfile", "--pcap", first)
    assert r.exit == 0
    assert ktls("send", *CONN_WORDS, "--hex", "0100", "--syscall", "sendmsg",
                    "--record-type", "alert", "--pcap", second).exit == 0  # fmt: skip
    rows = []
    for cap in (first, second):
        out = subprocess.run(
            [tshark, "-r", str(cap), "-d", "tcp.port==51514,tls", "-o", "tcp.check_checksum:TRUE",
             "-o", "ip.check_checksum:TRUE", "-Y", "tls.record", "-T", "fields",
             "-e", "tls.record.content_type", "-e", "tls.record.length",
             "-e", "tcp.checksum.status", "-e", "ip.checksum.status"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        rows += [line.split("\t") for line in out.splitlines()]
    assert rows == [
        ["23", "16408", "1", "1"],
        ["23", "16408", "1", "1"],
        ["23", str(40000 - 2 * 16384 + 24), "1", "1"],
        ["21", "26", "1", "1"],
    ]
    # Every frame fits the egress MTU (lagg0, 1500) and the sequence numbers join up.
    seqs = subprocess.run(
        [tshark, "-r", str(first), "-T", "fields", "-e", "tcp.seq_raw",
         "-e", "tcp.len", "-e", "frame.len"],
        capture_output=True, text=True, check=True,
    ).stdout.split("\n")  # fmt: skip
    lens = [int(line.split("\t")[2]) for line in seqs if line]
    assert max(lens) == 1514
    last_seq, last_len, _ = seqs[-2].split("\t")
    next_seq = subprocess.run(
        [tshark, "-r", str(second), "-T", "fields", "-e", "tcp.seq_raw"],
        capture_output=True, text=True, check=True,
    ).stdout.split()[0]  # fmt: skip
    assert int(next_seq) == (int(last_seq) + int(last_len)) % 2**32


def test_progress_bar_only_on_a_terminal(ready: Any, ktls: Any, state: str, tmp_path: Path) -> None:
    import contextlib
    import io

    from ktls_cli.main import main

    ready("seed")
    assert ktls("connect", *CONN_WORDS, "--random-keys").exit == 0
    big = tmp_path / "big"
    big.write_bytes(b"\0" * (9 << 20))

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    for stream in (Terminal(), io.StringIO()):
        out = io.StringIO()
        with contextlib.redirect_stderr(stream), contextlib.redirect_stdout(out):
            code = main(["--state", state, "send", *CONN_WORDS, "--file", str(big)])
        assert code == 0 and "576 records" in out.getvalue()
        # rich draws (and then erases) the bar on a terminal; a pipe gets nothing.
        assert bool(stream.getvalue()) == isinstance(stream, Terminal)


def test_output_files_fail_before_anything_is_reserved(
    ready: Any, ktls: Any, tmp_path: Path
) -> None:
    ready("seed")
    assert ktls("connect", *CONN_WORDS, "--random-keys").exit == 0
    for option in ("--out", "--pcap"):
        r = ktls("send", *CONN_WORDS, "--data", "x", option, tmp_path / "no" / "f")
        assert (r.exit, r.stderr) == (
            1,
            f"send: {tmp_path / 'no' / 'f'}: No such file or directory\n",
        )
    r = ktls("--libxo", "json,pretty", "send", *CONN_WORDS, "--data", "x")
    doc = json.loads(r.stdout)["send"]
    assert (doc["first_seq"], doc["records"][0]["seq"]) == (0, 0)  # nothing was burned
    assert r.stdout.startswith('{\n  "send"')
