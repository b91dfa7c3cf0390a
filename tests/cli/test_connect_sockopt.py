"""`ktls connect`, `setsockopt TCP_TXTLS_ENABLE` and `getsockopt TCP_TXTLS_MODE`:
every step of the enable path with its message, and the counters after each."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

CONN = ["192.0.2.10:443", "198.51.100.7:51514"]
KEY = ["--key", "000102030405060708090a0b0c0d0e0f", "--iv", "a0a1a2a3"]
STATS = ["kern.ipc.tls.stats.enable_calls", "kern.ipc.tls.stats.active",
         "kern.ipc.tls.stats.offload_total", "kern.ipc.tls.sw.gcm"]  # fmt: skip


def _stats(ktls: Any) -> list[int]:
    return [int(v) for v in ktls("sysctl", "-n", *STATS).stdout.split()]


def test_the_seed_story_step_by_step(ktls: Any, state: str, init_state: Any) -> None:
    init_state(state, "seed")
    r = ktls("connect", *CONN)
    assert (r.exit, r.stdout) == (0, "192.0.2.10 443 198.51.100.7 51514\n")
    steps = [
        ([], "Operation not supported", [0, 0, 0, 0]),
        (["sysctl", "kern.ipc.tls.enable=1"], "Device not configured", [1, 0, 0, 0]),
        (["sysctl", "kern.ipc.mb_use_ext_pgs=1"], "Operation not supported", [2, 0, 0, 0]),
    ]
    for before, error, stats in steps:
        if before:
            assert ktls(*before).exit == 0
        r = ktls("setsockopt", *CONN, "TCP_TXTLS_ENABLE", *KEY)
        assert (r.exit, r.stdout, r.stderr) == (1, "", f"setsockopt: TCP_TXTLS_ENABLE: {error}\n")
        assert _stats(ktls) == stats
    assert ktls("kldload", "ktls_ocf").exit == 0
    r = ktls("setsockopt", *CONN, "TCP_TXTLS_ENABLE", *KEY)
    assert (r.exit, r.stdout, r.stderr) == (0, "", "")
    assert _stats(ktls) == [3, 1, 1, 1]
    r = ktls("getsockopt", *CONN, "TCP_TXTLS_MODE")
    assert r.stdout == "TCP_TXTLS_MODE: 1 (sw)\n"
    r = ktls("setsockopt", "192.0.2.10", "443", "198.51.100.7", "51514", "39", *KEY)
    assert r.stderr == "setsockopt: TCP_TXTLS_ENABLE: Operation already in progress\n"
    assert _stats(ktls) == [4, 1, 1, 1]


def test_connect_with_tls_options_and_a_failed_enable(
    ktls: Any, state: str, init_state: Any
) -> None:
    init_state(state, "seed")
    r = ktls("connect", *CONN, "--random-keys")
    # The connection stays, without TLS, and the command says why it failed.
    assert (r.exit, r.stdout) == (1, "192.0.2.10 443 198.51.100.7 51514\n")
    assert r.stderr == "setsockopt: TCP_TXTLS_ENABLE: Operation not supported\n"
    assert ktls("getsockopt", *CONN, "TCP_TXTLS_MODE").stdout == "TCP_TXTLS_MODE: 0 (none)\n"
    r = ktls("--format", "json", "connect", "192.0.2.10:0", "198.51.100.7:80")
    doc = json.loads(r.stdout)["connect"]["connections"][0]
    assert (doc["local_port"], doc["state"], doc["tls"]) == (49152, "ESTABLISHED", None)


@pytest.mark.parametrize(
    ("args", "code", "stderr"),
    [
        (["203.0.113.99:443", "198.51.100.7:1"], 1, "connect: Can't assign requested address\n"),
        (["2001:db8:1::10.443", "2001:db8:77::1.1"], 1, "connect: Network is unreachable\n"),
        (["192.0.2.10:443", "::1.1"], 1,
         "connect: 192.0.2.10 443 ::1 1: different address families\n"),
        (["foo:443", "198.51.100.7:1"], 1,
         "connect: getaddrinfo: foo port 443: hostname nor servname provided, or not known\n"),
        (["192.0.2.10:", "198.51.100.7:1"], 2, None),
        (["192.0.2.10", "198.51.100.7:1"], 1,
         "connect: getaddrinfo: 192.0.2 port 10: hostname nor servname provided, or not known\n"),
        ([*CONN, "--key", "xyz"], 2, None),
        ([*CONN, "--count", "3", *KEY], 2, None),
    ],
)  # fmt: skip
def test_connect_errors(ktls: Any, args: list[str], code: int, stderr: str | None) -> None:
    r = ktls("connect", *args)
    assert r.exit == code
    if stderr is not None:
        assert r.stderr == stderr
    assert "Traceback" not in r.stderr


def test_connect_twice_is_eaddrinuse_and_count_is_bulk(ktls: Any) -> None:
    assert ktls("connect", *CONN).exit == 0
    r = ktls("connect", *CONN)
    assert (r.exit, r.stderr) == (1, "connect: Address already in use\n")
    r = ktls("connect", "192.0.2.10:443", "198.51.100.7:1024", "--count", "1000")
    assert r.stdout == (
        "192.0.2.10 443 198.51.100.7 1024 .. 192.0.2.10 443 198.51.100.7 2023 (1000 connections)\n"
    )
    assert ktls("netstat").stdout.count("ESTABLISHED") == 1001


def test_count_with_random_keys_enables_each(ktls: Any) -> None:
    assert ktls("sysctl", "kern.ipc.tls.enable=1", "kern.ipc.mb_use_ext_pgs=1").exit == 0
    assert ktls("kldload", "ktls_ocf").exit == 0
    r = ktls("connect", "192.0.2.10:443", "198.51.100.7:2000", "--count", "50", "--random-keys",
             "--tls-version", "1.3")  # fmt: skip
    assert r.exit == 0, r
    assert [int(x) for x in ktls("sysctl", "-n", *STATS).stdout.split()] == [50, 50, 50, 50]


def test_keys_from_a_file_and_rec_seq(
    ktls: Any, state: str, init_state: Any, tmp_path: Path
) -> None:
    init_state(state, "current")
    assert ktls("sysctl", "kern.ipc.tls.enable=1").exit == 0
    keys = tmp_path / "k.yaml"
    keys.write_text("tls-version: '1.3'\ncipher: chacha20-poly1305\nkey: " + "11" * 32
                    + "\niv: " + "22" * 12 + "\nrec_seq: 99\n")  # fmt: skip
    r = ktls("--format", "json", "setsockopt", *CONN, "TCP_TXTLS_ENABLE", "--keys-from", keys)
    assert r.exit == 1  # no such connection yet
    assert r.stderr == "setsockopt: TCP_TXTLS_ENABLE: No such process\n"
    assert ktls("connect", *CONN).exit == 0
    r = ktls("--format", "json", "setsockopt", *CONN, "TCP_TXTLS_ENABLE", "--keys-from", keys)
    doc = json.loads(r.stdout)["setsockopt"]
    assert (doc["suite"], doc["first_seq"], doc["mode"]) == ("TLS1.3 CHACHA20-POLY1305", 99, "sw")
    assert "11" * 32 not in r.stdout  # keys are never printed
    bad = tmp_path / "bad.yaml"
    bad.write_text("cipher: rot13\n")
    r = ktls("setsockopt", *CONN, "TCP_TXTLS_ENABLE", "--keys-from", bad)
    assert r.exit == 2 and "cipher must be one of" in r.stderr


def test_seed_refuses_rec_seq_clearly(ktls: Any) -> None:
    assert ktls("sysctl", "kern.ipc.tls.enable=1", "kern.ipc.mb_use_ext_pgs=1").exit == 0
    assert ktls("connect", *CONN).exit == 0
    r = ktls("setsockopt", *CONN, "TCP_TXTLS_ENABLE", *KEY, "--rec-seq", "5")
    assert r.exit == 1
    assert r.stderr.startswith("setsockopt: TCP_TXTLS_ENABLE: Invalid argument (the 2019 struct")
    assert "--profile current" in r.stderr


def test_sockopt_errors(ktls: Any) -> None:
    assert ktls("connect", *CONN).exit == 0
    r = ktls("setsockopt", *CONN, "TCP_RXTLS_ENABLE", *KEY)
    assert (r.exit, r.stderr) == (1, "setsockopt: TCP_RXTLS_ENABLE: Protocol not available\n")
    r = ktls("getsockopt", *CONN, "TCP_TXTLS_ENABLE")
    assert (r.exit, r.stderr) == (1, "getsockopt: TCP_TXTLS_ENABLE: Protocol not available\n")
    assert ktls("setsockopt", *CONN, "TCP_TXTLS_ENABLE").exit == 2  # no TLS options
    assert ktls("getsockopt", *CONN).exit == 2
    r = ktls("getsockopt", "192.0.2.10:1", "198.51.100.7:1", "TCP_TXTLS_MODE")
    assert (r.exit, r.stderr) == (1, "getsockopt: TCP_TXTLS_MODE: No such process\n")
