"""Secrets: session keys appear nowhere but in the state file (0600 in a 0700
directory) and in `state export --include-keys`.

A full scenario (sessions of four suites, given through --keys-from, --key on the
command line and --random-keys; sends with --trace, --pcap, --out, JSON and YAML;
switch_tls both ways, netstat, dmesg, getsockopt, state show, tcpdrop, decode, and
failing calls: a second TCP_TXTLS_ENABLE, a bad key length, a bad --keys-from) is
searched, every stdout and stderr and every file written, for each key, IV and auth
key as lower- and upper-case hex, base64 and raw bytes. The export with
--include-keys is the positive control: the same search finds them there.

`--keys-from FILE` keeps keys out of the process's arguments and environment
(/proc/PID/cmdline and environ of a decode waiting on stdin); SQLite's -wal and
-shm files, which hold the keys too while a command runs, are 0600 like the state.
"""

from __future__ import annotations

import base64
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from relyhelp import session_info

C_FILE = ["192.0.2.10:443", "198.51.100.7:1"]  # keys from --keys-from
C_ARGV = ["192.0.2.10:443", "198.51.100.7:2"]  # keys on the command line (the user's choice)
C_RANDOM = ["203.0.113.10:443", "203.0.113.7:3"]  # --random-keys, ifnet on mce0
C_CBC = ["192.0.2.10:443", "198.51.100.7:4"]  # --random-keys, CBC with an auth key


def _forms(secret: bytes) -> list[bytes]:
    """The ways a secret could be printed; raw bytes only from 8 bytes up (a 4-byte salt
    turns up in 200 KB of ciphertext once in ~5,000 runs)."""
    h = secret.hex()
    return [
        *([secret] if len(secret) >= 8 else []),
        h.encode(),
        h.upper().encode(),
        ":".join(h[i : i + 2] for i in range(0, len(h), 2)).encode(),
        base64.b64encode(secret),
    ]


def _leaks(blob: bytes, secrets: list[bytes]) -> list[str]:
    return [f.decode("latin-1") for s in secrets for f in _forms(s) if f in blob]


def test_keys_appear_only_where_asked_for(
    ktls: Any, init_state: Any, state: str, tmp_path: Path
) -> None:
    init_state(state, "current")
    keyfile = tmp_path / "keys.yaml"
    file_key, file_iv = os.urandom(32), os.urandom(12)
    keyfile.write_text(f"version: '1.3'\ncipher: chacha20-poly1305\nkey: {file_key.hex()}\n"
                       f"iv: {file_iv.hex()}\n")  # fmt: skip
    argv_key, argv_iv = os.urandom(16), os.urandom(4)
    outputs: list[tuple[list[str], bytes]] = []

    def run(*args: Any, expect: int | None = 0) -> Any:
        r = ktls(*args)
        if expect is not None:
            assert r.exit == expect, (args, r)
        outputs.append(([str(a) for a in args], r.stdout_bytes + r.stderr.encode()))
        return r

    run("sysctl", "kern.ipc.tls.enable=1", "kern.ipc.tls.cbc_enable=1",
        "kern.ipc.tls.ifnet.permitted=1")  # fmt: skip
    run("ifconfig", "mce0", "txtls")
    run("connect", *C_FILE, "--keys-from", keyfile)
    run("connect", *C_ARGV, "--key", argv_key.hex(), "--iv", argv_iv.hex())
    run("--format", "json", "connect", *C_RANDOM, "--random-keys")
    run("--format", "yaml", "connect", *C_CBC, "--random-keys", "--cipher", "aes-cbc",
        "--auth", "hmac-sha256")  # fmt: skip
    # Failures: already enabled, bad key length, bad key file.
    run("setsockopt", *C_FILE, "TCP_TXTLS_ENABLE", "--keys-from", keyfile, expect=1)
    run("setsockopt", *C_ARGV, "TCP_TXTLS_ENABLE", "--key", argv_key.hex(), expect=1)
    run("connect", "192.0.2.10:443", "198.51.100.7:5", "--key", argv_key.hex()[:-2],
        "--iv", argv_iv.hex(), expect=1)  # fmt: skip
    bad_file = tmp_path / "bad.yaml"
    bad_file.write_text(f"key: {file_key.hex()}\nsalt: {file_iv.hex()}\n")
    run("connect", "192.0.2.10:443", "198.51.100.7:6", "--keys-from", bad_file, expect=2)
    bad_file.write_text(f"key: {file_key.hex()}zz\n")
    run("connect", "192.0.2.10:443", "198.51.100.7:6", "--keys-from", bad_file, expect=2)
    for i, conn in enumerate((C_FILE, C_ARGV, C_RANDOM, C_CBC)):
        out, pcap = tmp_path / f"out{i}", tmp_path / f"cap{i}"
        run("send", *conn, "--data", "x" * 40000, "--trace", "--out", out, "--pcap", pcap)
        run("--format", "json", "send", *conn, "--hex", "00" * 100, "--trace")
        run("--format", "yaml", "send", *conn, "--data", "y", "--syscall", "sendmsg",
            "--record-type", "handshake", "--trace")  # fmt: skip
        run("decode", out, *conn, expect=None)
    run("switch_tls", "-i", *C_ARGV, expect=None)
    run("switch_tls", "-s", "-a", expect=None)
    run("--format", "json", "switch_tls", "-l", "-a")
    for fmt in ("text", "json", "yaml"):
        run("--format", fmt, "netstat")
        run("--format", fmt, "getsockopt", *C_RANDOM, "TCP_TXTLS_MODE")
        run("--format", fmt, "state", "show")
        run("--format", fmt, "dmesg")
        run("--format", fmt, "sysctl", "-a")
    run("decode", tmp_path / "out0", "--keys-from", keyfile, "--plaintext", tmp_path / "plain")
    secrets: list[bytes] = [file_key, file_iv, argv_key, argv_iv]
    for s in session_info(state).values():  # the random ones, the CBC auth key among them
        secrets += [x for x in (s.key, s.iv, s.auth_key) if len(x) >= 4]
    assert len(secrets) >= 11
    run("tcpdrop", *C_CBC)
    run("state", "export")

    for args, blob in outputs:
        assert _leaks(blob, secrets) == [], args
    for path in tmp_path.iterdir():
        if path.is_file() and path.name not in ("keys.yaml", "bad.yaml"):
            assert _leaks(path.read_bytes(), secrets) == [], path
    # The positive control: with --include-keys, all of them are found.
    export = ktls("state", "export", "--include-keys").stdout.encode()
    live = [x for s in session_info(state).values() for x in (s.key, s.auth_key) if x]
    assert all(_forms(x)[1] in export for x in live)


def test_keys_from_file_stay_out_of_the_process(
    ktls: Any, init_state: Any, state: str, tmp_path: Path
) -> None:
    init_state(state)
    assert ktls("sysctl", "kern.ipc.tls.enable=1", "kern.ipc.mb_use_ext_pgs=1").exit == 0
    assert ktls("kldload", "ktls_ocf").exit == 0
    key, iv = os.urandom(16), os.urandom(4)
    keyfile = tmp_path / "keys.yaml"
    keyfile.write_text(f"key: {key.hex()}\niv: {iv.hex()}\n")
    os.chmod(keyfile, 0o600)
    assert ktls("connect", *C_FILE, "--keys-from", keyfile).exit == 0
    assert ktls("send", *C_FILE, "--data", "secret payload", "--out", tmp_path / "s").exit == 0
    proc = subprocess.Popen(
        [sys.executable, "-m", "ktls_cli.main", "--state", state, "decode", "-",
         "--keys-from", str(keyfile)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        time.sleep(0.3)  # it has read its key file and waits on stdin
        seen = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        seen += Path(f"/proc/{proc.pid}/environ").read_bytes()
        assert _leaks(seen, [key, iv]) == []
        assert str(keyfile).encode() in seen
        out, err = proc.communicate((tmp_path / "s").read_bytes(), timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert (proc.returncode, err) == (0, b"")
    assert out.endswith(b"1 record, 14 bytes, all authentic\n")


def test_sqlite_companions_are_private(tmp_path: Path) -> None:
    """While a command runs, SQLite's -wal and -shm hold pages with keys: 0600 too."""
    from ktls_core.kernel import Kernel

    old = os.umask(0o022)
    try:
        path = str(tmp_path / "s" / "kernel.db")
        kernel = Kernel.open(path)
        try:
            with kernel.transaction() as tx:
                tx.set_meta("probe", "x")
            for suffix in ("", "-wal", "-shm"):
                assert stat.S_IMODE(os.stat(path + suffix).st_mode) == 0o600, suffix
        finally:
            kernel.store.close()
    finally:
        os.umask(old)


@pytest.mark.parametrize("mode", [0o640, 0o620, 0o604, 0o602, 0o660, 0o666, 0o700])
def test_state_others_could_read_or_write_is_refused(
    mode: int, state: str, init_state: Any, ktls: Any
) -> None:
    """Group or world read or write (test_state.py has 0644): refused; 0700 (owner
    execute) is no risk and is accepted."""
    init_state(state)
    os.chmod(state, mode)
    r = ktls("sysctl", "kern.ipc.tls.enable", env={"KTLS_DEBUG": None})
    if mode & 0o077:
        assert (r.exit, r.stdout) == (1, "")
        assert r.stderr == (
            f"ktls: {state}: permissions {mode:04o} let others read or write the state (it holds"
            " session keys); chmod 600 it; run 'ktls state reset' to start over\n"
        )
        assert stat.S_IMODE(os.stat(state).st_mode) == mode  # not "fixed" behind the user's back
    else:
        assert r.exit == 0
