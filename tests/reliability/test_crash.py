"""Crash safety: `ktls send` of a large file killed with SIGKILL at random moments.

24 seeded trials over five sessions (TLS 1.2 AES-GCM, TLS 1.3 ChaCha20-Poly1305,
TLS 1.0 AES-CBC with chained IVs, TLS 1.2 AES-CBC with explicit IVs, all in
software, and TLS 1.2 AES-GCM on a NIC, ifnet mode). Half the trials kill after a
random delay (anywhere from the interpreter starting to the send finishing), half
when the --out stream has reached a random size (always mid-stream). After each
kill the state must open and pass `invariant_problems()` (integrity, every gauge
equal to what the tables hold), and a following send on the same session must
work. Every third trial (TLS 1.0 aside) a second process sends 6 MiB on the same
session at the same time. Across every --out stream (killed or not) no (key,
sequence number) and no (key, GCM explicit nonce) pair appears twice; every whole
record of every stream opens with tests/oracle.py at the sequence number it claims.

The records/bytes of a killed send are lost on purpose (they are added by the
final transaction): the session's counters never claim more records than ever
left, which is checked too (see ktls(8), GUARANTEES).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from oracle import decrypt_stream
from relyhelp import invariant_problems, oracle_suite, session_info, split_records

SEED = int(os.environ.get("KTLS_CRASH_SEED", "90210"))  # another seed explores other moments
TRIALS = 24
FILE_MIB = 48
SESSIONS = {
    "192.0.2.10 443 198.51.100.7 4001": ["--tls-version", "1.2", "--cipher", "aes-gcm"],
    "192.0.2.10 443 198.51.100.7 4002": ["--tls-version", "1.3", "--cipher", "chacha20-poly1305"],
    "192.0.2.10 443 198.51.100.7 4003": ["--tls-version", "1.0", "--cipher", "aes-cbc",
                                         "--auth", "hmac-sha1"],
    "192.0.2.10 443 198.51.100.7 4004": ["--tls-version", "1.2", "--cipher", "aes-cbc",
                                         "--auth", "hmac-sha256"],
    "203.0.113.10 443 203.0.113.7 4005": ["--tls-version", "1.2", "--cipher", "aes-gcm"],
}  # fmt: skip


def _two(conn: str) -> list[str]:
    """`laddr:lport faddr:fport`, as connect takes a connection."""
    la, lp, fa, fp = conn.split()
    return [f"{la}:{lp}", f"{fa}:{fp}"]


def _setup(ktls: Any, init_state: Any, state: str) -> None:
    init_state(state, "current")
    assert ktls("sysctl", "kern.ipc.tls.enable=1", "kern.ipc.tls.cbc_enable=1",
                "kern.ipc.tls.ifnet.permitted=1").exit == 0  # fmt: skip
    assert ktls("ifconfig", "mce0", "txtls").exit == 0
    for conn, opts in SESSIONS.items():
        r = ktls("--format", "json", "connect", *_two(conn), "--random-keys", *opts)
        assert r.exit == 0, r
    modes = {c: s.mode for c, s in session_info(state).items()}
    assert modes == dict.fromkeys(list(SESSIONS)[:4], 1) | {list(SESSIONS)[4]: 2}


def _kill_send(state: str, conn: str, big: Path, out: Path, rng: random.Random, trial: int) -> str:
    """Start a send, SIGKILL it at a random moment; returns how it was stopped."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "ktls_cli.main", "--state", state, "send", *conn.split(),
         "--file", str(big), "--out", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        if trial % 2 == 0:
            time.sleep(rng.uniform(0.0, 0.6))
        else:
            threshold = rng.randrange(1, (FILE_MIB - 8) << 20)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and proc.poll() is None:
                if out.exists() and out.stat().st_size >= threshold:
                    break
                time.sleep(0.001)
        proc.send_signal(signal.SIGKILL)
    finally:
        _out, err = proc.communicate(timeout=30)
    if proc.returncode == 0:
        return "finished"
    assert proc.returncode == -signal.SIGKILL, err
    assert err == b"", err
    return "killed"


def test_sigkill_at_random_moments_loses_nothing(
    ktls: Any, init_state: Any, state: str, tmp_path: Path
) -> None:
    _setup(ktls, init_state, state)
    big = tmp_path / "big"
    big.write_bytes(random.Random(SEED).randbytes(FILE_MIB << 20))
    mid = tmp_path / "mid"
    mid.write_bytes(random.Random(SEED + 1).randbytes(6 << 20))
    used_seq: dict[bytes, set[int]] = {}
    used_nonce: dict[bytes, set[bytes]] = {}
    emitted: dict[str, int] = dict.fromkeys(SESSIONS, 0)  # whole records that left
    completed: dict[str, int] = dict.fromkeys(SESSIONS, 0)  # records of finished sends
    outcomes: list[tuple[str, int]] = []

    def use(conn: str, stream: bytes, first: int | list[int], chain_iv: bytes | None) -> int:
        """Check a stream's whole records and mark their (key, seq) and nonces used.
        `first` may be a list of candidates (a concurrent send reserved before or after
        this one): the one the first record opens at is the stream's."""
        s = session_info(state)[conn]
        records, end = split_records(stream)
        whole = stream[:end]
        suite = oracle_suite(s, chain_iv)
        candidates = first if isinstance(first, list) else [first]
        first_seq = candidates[0]
        for seq in candidates:
            try:
                decrypt_stream(records[0][1] if records else b"", suite, first_seq=seq)
            except ValueError:
                continue
            first_seq = seq
            break
        opened = decrypt_stream(whole, suite, first_seq=first_seq)
        assert len(opened) == len(records)
        seqs = used_seq.setdefault(s.key, set())
        for i in range(len(records)):
            assert first_seq + i not in seqs, f"{conn}: sequence {first_seq + i} used twice"
            seqs.add(first_seq + i)
        if s.cipher == 25 and s.vminor == 3:  # TLS 1.2 GCM: the explicit nonce
            nonces = used_nonce.setdefault(s.key, set())
            for _off, rec in records:
                assert rec[5:13] not in nonces, f"{conn}: GCM nonce {rec[5:13].hex()} twice"
                nonces.add(rec[5:13])
        return len(records)

    for trial in range(TRIALS):
        rng = random.Random(SEED + trial)
        conn = list(SESSIONS)[trial % len(SESSIONS)]
        before = session_info(state)[conn]
        out = tmp_path / f"killed{trial}.tls"
        # Every third trial another process sends on the session meanwhile (not on TLS
        # 1.0, whose chained IVs interleave the two streams' batches).
        concurrent = None
        if trial % 3 == 0 and before.vminor != 1:
            concurrent = subprocess.Popen(
                [sys.executable, "-m", "ktls_cli.main", "--state", state, "--format", "json",
                 "send", *conn.split(), "--file", str(mid), "--out", str(tmp_path / "c.tls")],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )  # fmt: skip
        how = _kill_send(state, conn, big, out, rng, trial)
        firsts: int | list[int] = before.next_seq
        if concurrent is not None:
            cout, cerr = concurrent.communicate(timeout=60)
            assert (concurrent.returncode, cerr) == (0, b""), cerr
            cdoc = json.loads(cout)["send"]
            n = use(conn, (tmp_path / "c.tls").read_bytes(), cdoc["first_seq"], None)
            emitted[conn] += n
            completed[conn] += n
            firsts = [before.next_seq, cdoc["next_seq"]]
        stream = out.read_bytes() if out.exists() else b""
        assert invariant_problems(state) == [], f"trial {trial} ({how}, {len(stream)} bytes)"
        n = use(conn, stream, firsts, before.cbc_iv)
        emitted[conn] += n
        if how == "finished":
            completed[conn] += n
        outcomes.append((how, len(stream)))
        # The state opens and the session goes on where the reservation ended.
        after = tmp_path / f"after{trial}.tls"
        chain = session_info(state)[conn].cbc_iv
        r = ktls("--format", "json", "send", *conn.split(), "--data", f"after {trial}",
                 "--out", after)  # fmt: skip
        assert r.exit == 0, r
        doc = json.loads(r.stdout)["send"]
        assert [x["seq"] for x in doc["records"]] == list(range(doc["first_seq"], doc["next_seq"]))
        n = use(conn, after.read_bytes(), doc["first_seq"], chain)
        emitted[conn] += n
        completed[conn] += n
        assert invariant_problems(state) == []

    mid_stream = [b for how, b in outcomes if how == "killed" and 0 < b < FILE_MIB << 20]
    assert len(mid_stream) >= TRIALS // 2, outcomes  # the kills did land mid-stream
    # Counters of a killed send are lost, never invented: between what finished and
    # what ever left.
    for conn, s in session_info(state).items():
        assert completed[conn] <= s.records <= emitted[conn], (conn, s.records)
