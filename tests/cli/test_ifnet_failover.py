"""ifnet TLS end to end: send tags through a lagg failover, a vlan, lacp; resets that
fail; mode switches in the middle of a stream; ifnet_max_rexmit_pct. Every stream is
decoded twice: by `ktls decode` and by tests/oracle.py (the independent decryptor)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.oracle import decrypt_stream

KEY = "000102030405060708090a0b0c0d0e0f"
SALT = "a0a1a2a3"
SUITE = {
    "version": "1.2",
    "cipher": "aes-gcm",
    "key": bytes.fromhex(KEY),
    "iv": bytes.fromhex(SALT),
}
TLS = ["--tls-version", "1.2", "--cipher", "aes-gcm", "--key", KEY, "--iv", SALT]
CONN = ["198.51.100.10:443", "198.51.100.7:51514"]
NAME = "198.51.100.10 443 198.51.100.7 51514"

Ktls = Callable[..., Any]


def ok(ktls: Ktls, *args: Any) -> Any:
    r = ktls(*args)
    assert r.exit == 0, r
    return r


def sysctls(ktls: Ktls, *names: str) -> dict[str, int]:
    out = ok(ktls, "sysctl", *names).stdout
    return {k: int(v) for k, v in (line.split(": ") for line in out.splitlines())}


def plaintext(stream: bytes, first_seq: int = 0) -> bytes:
    return b"".join(p for _, p in decrypt_stream(stream, SUITE, first_seq))


@pytest.fixture
def nic(state: str, init_state: Callable[..., Any], ktls: Ktls) -> Ktls:
    """The seed kernel with KTLS, unmapped mbufs, ifnet permitted, ktls_ocf, txtls on
    lagg0 (cc0 and cc1): a new session goes to the NIC."""
    init_state(state, "seed", "--seed", "6")
    ok(ktls, "sysctl", "kern.ipc.tls.enable=1", "kern.ipc.mb_use_ext_pgs=1",
       "kern.ipc.tls.ifnet.permitted=1")  # fmt: skip
    ok(ktls, "kldload", "ktls_ocf")
    ok(ktls, "ifconfig", "lagg0", "txtls")
    return ktls


def test_session_goes_to_the_nic_only_when_everything_allows(
    state: str, init_state: Callable[..., Any], ktls: Ktls
) -> None:
    init_state(state, "seed", "--seed", "6")
    ok(ktls, "sysctl", "kern.ipc.tls.enable=1", "kern.ipc.mb_use_ext_pgs=1")
    ok(ktls, "kldload", "ktls_ocf")
    ok(ktls, "ifconfig", "lagg0", "txtls")
    # ifnet.permitted is 0: software, the ifnet error thrown away.
    ok(ktls, "connect", *CONN, *TLS)
    assert ok(ktls, "getsockopt", *CONN, "TCP_TXTLS_MODE").stdout == "TCP_TXTLS_MODE: 1 (sw)\n"
    ok(ktls, "sysctl", "kern.ipc.tls.ifnet.permitted=1")
    ok(ktls, "connect", "198.51.100.10:443", "198.51.100.7:51515", *TLS)
    r = ok(ktls, "getsockopt", "198.51.100.10:443", "198.51.100.7:51515", "TCP_TXTLS_MODE")
    assert r.stdout == "TCP_TXTLS_MODE: 2 (ifnet)\n"
    # TLS 1.3 is beyond the T6 (cxgbe): software again.
    ok(ktls, "connect", "198.51.100.10:443", "198.51.100.7:51516", "--tls-version", "1.3",
       "--random-keys")  # fmt: skip
    r = ok(ktls, "getsockopt", "198.51.100.10:443", "198.51.100.7:51516", "TCP_TXTLS_MODE")
    assert r.stdout == "TCP_TXTLS_MODE: 1 (sw)\n"
    c = sysctls(ktls, "kern.ipc.tls.sw.gcm", "kern.ipc.tls.ifnet.gcm", "kern.ipc.tls.stats.active")
    assert c == {"kern.ipc.tls.sw.gcm": 2, "kern.ipc.tls.ifnet.gcm": 1,
                 "kern.ipc.tls.stats.active": 3}  # fmt: skip


def test_lagg_failover_resets_the_tag_and_the_stream_is_unbroken(nic: Ktls, tmp_path: Path) -> None:
    ok(nic, "connect", *CONN, *TLS)
    part1, part2 = os.urandom(40_000), os.urandom(50_000)
    (tmp_path / "p1").write_bytes(part1)
    (tmp_path / "p2").write_bytes(part2)
    r = ok(nic, "send", *CONN, "--file", tmp_path / "p1", "--out", tmp_path / "s1", "--trace")
    assert "transmitted 40087 bytes on lagg0 via cc0" in r.stderr
    assert "dropped" not in r.stderr

    ok(nic, "ifconfig", "cc0", "down")
    r = ok(nic, "send", *CONN, "--file", tmp_path / "p2", "--out", tmp_path / "s2", "--trace")
    trace = r.stderr.splitlines()
    steps = [
        "record 3 dropped (send tag on cc0, lagg0 now sends on cc1): No buffer space available",
        "send tag reset scheduled (tag on cc0)",
        "send tag reset to cc1 via lagg0",
        "record 3 retransmitted (16413 bytes) on cc1",
    ]
    at = [trace.index(step) for step in steps]
    assert at == sorted(at)
    assert any(line.startswith("transmitted ") and "via cc1" in line for line in trace)
    assert ok(nic, "dmesg").stdout.splitlines()[-1] == (
        f"ktls_reset_send_tag: {NAME}: send tag moved from cc0 to cc1"
    )

    stream = (tmp_path / "s1").read_bytes() + (tmp_path / "s2").read_bytes()
    assert plaintext(stream) == part1 + part2
    (tmp_path / "all").write_bytes(stream)
    r = ok(nic, "decode", tmp_path / "all", *CONN, "--plaintext", tmp_path / "plain")
    assert (tmp_path / "plain").read_bytes() == part1 + part2
    assert sysctls(nic, "kern.ipc.tls.ifnet") == {
        "kern.ipc.tls.ifnet.cbc": 0,
        "kern.ipc.tls.ifnet.gcm": 1,
        "kern.ipc.tls.ifnet.reset": 1,
        "kern.ipc.tls.ifnet.reset_dropped": 0,
        "kern.ipc.tls.ifnet.reset_failed": 0,
        "kern.ipc.tls.ifnet.permitted": 1,
    }

    # Back to the primary port: one more reset, and nothing when nothing moved.
    ok(nic, "ifconfig", "cc0", "up")
    ok(nic, "send", *CONN, "--data", "x", "--out", tmp_path / "s3")
    ok(nic, "send", *CONN, "--data", "y", "--out", tmp_path / "s4")
    assert sysctls(nic, "kern.ipc.tls.ifnet.reset")["kern.ipc.tls.ifnet.reset"] == 2
    tail = (tmp_path / "s3").read_bytes() + (tmp_path / "s4").read_bytes()
    assert plaintext(tail, first_seq=7) == b"xy"


def test_pcap_shows_the_retransmission_on_the_new_port_only(nic: Ktls, tmp_path: Path) -> None:
    from ktls_core.wire.pcap import read_segments

    ok(nic, "connect", *CONN, *TLS)
    ok(nic, "ifconfig", "cc0", "down")
    data = os.urandom(5000)
    (tmp_path / "d").write_bytes(data)
    ok(nic, "send", *CONN, "--file", tmp_path / "d", "--pcap", tmp_path / "c.pcap",
       "--out", tmp_path / "s")  # fmt: skip
    frames = read_segments((tmp_path / "c.pcap").read_bytes())
    payload = b"".join(f.payload for f in frames)
    # The dropped packet never reached the wire: each byte is there once, in order.
    assert payload == (tmp_path / "s").read_bytes()
    assert all(len(f.payload) <= 1460 for f in frames)


@pytest.mark.parametrize("proto", ["failover", "lacp"])
def test_vlan_on_the_lagg_ipv6(nic: Ktls, tmp_path: Path, proto: str) -> None:
    ok(nic, "ifconfig", "lagg0", "laggproto", proto)
    ok(nic, "ifconfig", "vlan100", "create", "vlan", "100", "vlandev", "lagg0")
    ok(nic, "ifconfig", "vlan100", "inet6", "2001:db8:100::10", "prefixlen", "64")
    conns = [["2001:db8:100::10.443", f"2001:db8:100::7.{p}"] for p in range(50120, 50128)]
    for words in conns:
        ok(nic, "connect", *words, *TLS)
    netstat = json.loads(ok(nic, "--format", "json", "netstat").stdout)
    ports = {c["foreign_port"]: c["tls"]["send_tag"] for c in netstat["netstat"]["connections"]}
    assert set(ports.values()) == ({"cc0"} if proto == "failover" else {"cc0", "cc1"})
    victim = "cc0" if proto == "failover" else "cc1"
    moving = sum(1 for port in ports.values() if port == victim)
    ok(nic, "ifconfig", victim, "down")
    streams = b""
    for i, words in enumerate(conns):
        ok(nic, "send", *words, "--data", f"flow {i}", "--out", tmp_path / f"v{i}")
        streams += (tmp_path / f"v{i}").read_bytes()
        assert plaintext((tmp_path / f"v{i}").read_bytes()) == f"flow {i}".encode()
    assert sysctls(nic, "kern.ipc.tls.ifnet.reset")["kern.ipc.tls.ifnet.reset"] == moving
    netstat = json.loads(ok(nic, "--format", "json", "netstat").stdout)
    survivors = {c["tls"]["send_tag"] for c in netstat["netstat"]["connections"]}
    assert survivors == {"cc1" if victim == "cc0" else "cc0"}


def test_reset_that_cannot_allocate_drops_the_connection(nic: Ktls, tmp_path: Path) -> None:
    ok(nic, "connect", *CONN, *TLS)
    ok(nic, "send", *CONN, "--data", "before", "--out", tmp_path / "s1")
    ok(nic, "route", "add", "-host", "198.51.100.7", "-interface", "em0")
    r = nic("send", *CONN, "--data", "never leaves", "--out", tmp_path / "s2", "--trace")
    assert r.exit == 1
    assert r.stderr.splitlines()[-1] == "write: Software caused connection abort"
    assert "connection dropped: Software caused connection abort" in r.stderr
    assert (tmp_path / "s2").read_bytes() == b""
    assert sysctls(
        nic,
        "kern.ipc.tls.ifnet.reset",
        "kern.ipc.tls.ifnet.reset_failed",
        "kern.ipc.tls.ifnet.reset_dropped",
        "kern.ipc.tls.ifnet.gcm",
        "kern.ipc.tls.stats.active",
    ) == {
        "kern.ipc.tls.ifnet.reset": 0,
        "kern.ipc.tls.ifnet.reset_failed": 1,
        "kern.ipc.tls.ifnet.reset_dropped": 1,
        "kern.ipc.tls.ifnet.gcm": 0,
        "kern.ipc.tls.stats.active": 0,
    }
    assert ok(nic, "dmesg").stdout.splitlines()[-1] == (
        f"ktls_reset_send_tag: {NAME}: no send tag on em0: Operation not supported;"
        " connection dropped"
    )
    r = nic("getsockopt", *CONN, "TCP_TXTLS_MODE")
    assert r.exit == 1 and "No such process" in r.stderr


def test_txtls_off_on_the_lagg_makes_the_next_failover_fatal(nic: Ktls) -> None:
    ok(nic, "connect", *CONN, *TLS)
    ok(nic, "ifconfig", "lagg0", "-txtls")  # the tag on cc0 stays valid...
    ok(nic, "send", *CONN, "--data", "still on cc0")
    ok(nic, "ifconfig", "cc0", "down")  # ...until the failover needs a new one
    r = nic("send", *CONN, "--data", "lost")
    assert r.exit == 1 and "Software caused connection abort" in r.stderr
    c = sysctls(nic, "kern.ipc.tls.ifnet.reset_failed", "kern.ipc.tls.ifnet.reset_dropped")
    assert c == {"kern.ipc.tls.ifnet.reset_failed": 1, "kern.ipc.tls.ifnet.reset_dropped": 1}


@pytest.mark.parametrize("how", ["switch_tls", "setsockopt", "setsockopt-number"])
def test_sw_ifnet_sw_in_the_middle_of_a_stream(nic: Ktls, tmp_path: Path, how: str) -> None:
    ok(nic, "sysctl", "kern.ipc.tls.ifnet.permitted=0")
    ok(nic, "connect", *CONN, *TLS)

    def switch(mode: str) -> None:
        if how == "switch_tls":
            ok(nic, "switch_tls", "-i" if mode == "ifnet" else "-s", *CONN)
        elif how == "setsockopt":
            ok(nic, "setsockopt", *CONN, "TCP_TXTLS_MODE", mode)
        else:
            ok(nic, "setsockopt", *CONN, "TCP_TXTLS_MODE", "2" if mode == "ifnet" else "1")

    parts = [os.urandom(n) for n in (20_000, 33_000, 17)]
    modes = []
    stream = b""
    next_seq = 0
    for i, (part, mode) in enumerate(zip(parts, ["sw", "ifnet", "sw"], strict=True)):
        if i:
            switch(mode)
        (tmp_path / f"p{i}").write_bytes(part)
        r = ok(nic, "--format", "json", "send", *CONN, "--file", tmp_path / f"p{i}",
               "--out", tmp_path / f"s{i}")  # fmt: skip
        doc = json.loads(r.stdout)["send"]
        modes.append({rec["mode"] for rec in doc["records"]})
        assert doc["first_seq"] == next_seq  # sequence numbers go on across the switches
        next_seq = doc["next_seq"]
        stream += (tmp_path / f"s{i}").read_bytes()
    assert modes == [{"sw"}, {"ifnet"}, {"sw"}]
    assert plaintext(stream) == b"".join(parts)
    c = sysctls(
        nic,
        "kern.ipc.tls.stats.switch_to_ifnet",
        "kern.ipc.tls.stats.switch_to_sw",
        "kern.ipc.tls.stats.active",
        "kern.ipc.tls.sw.gcm",
        "kern.ipc.tls.ifnet.gcm",
    )
    assert c == {
        "kern.ipc.tls.stats.switch_to_ifnet": 1,
        "kern.ipc.tls.stats.switch_to_sw": 1,
        "kern.ipc.tls.stats.active": 1,
        "kern.ipc.tls.sw.gcm": 1,
        "kern.ipc.tls.ifnet.gcm": 0,
    }  # fmt: skip


def test_setsockopt_mode_errors(nic: Ktls) -> None:
    ok(nic, "connect", *CONN, *TLS)
    r = nic("setsockopt", *CONN, "TCP_TXTLS_MODE", "3")
    assert (r.exit, r.stderr) == (1, "setsockopt: TCP_TXTLS_MODE: Invalid argument\n")
    r = nic("setsockopt", *CONN, "TCP_TXTLS_MODE", "toe")
    assert (r.exit, r.stderr) == (1, "setsockopt: TCP_TXTLS_MODE: Invalid argument\n")
    r = nic("setsockopt", *CONN, "TCP_TXTLS_MODE")
    assert r.exit == 2
    # The seed answers ifnet -> ifnet with 0; a plain connection too.
    ok(nic, "setsockopt", *CONN, "TCP_TXTLS_MODE", "ifnet")
    ok(nic, "connect", "198.51.100.10:443", "198.51.100.7:4000")
    ok(nic, "setsockopt", "198.51.100.10:443", "198.51.100.7:4000", "TCP_TXTLS_MODE", "sw")
    r = ok(nic, "getsockopt", "198.51.100.10:443", "198.51.100.7:4000", "TCP_TXTLS_MODE")
    assert r.stdout == "TCP_TXTLS_MODE: 0 (none)\n"
    ok(nic, "ifconfig", "lagg0", "-txtls")
    ok(nic, "setsockopt", *CONN, "TCP_TXTLS_MODE", "sw")
    r = nic("setsockopt", *CONN, "TCP_TXTLS_MODE", "ifnet")
    assert (r.exit, r.stderr) == (1, "setsockopt: TCP_TXTLS_MODE: Operation not supported\n")
    c = sysctls(nic, "kern.ipc.tls.stats.switch_failed", "kern.ipc.tls.stats.switch_to_sw")
    assert c == {"kern.ipc.tls.stats.switch_failed": 1, "kern.ipc.tls.stats.switch_to_sw": 1}


def test_nic_bytes_are_software_bytes(
    tmp_path: Path, init_state: Callable[..., Any], run_ktls: Callable[..., Any]
) -> None:
    data = os.urandom(70_000)
    (tmp_path / "d").write_bytes(data)
    outs = {}
    for permitted in (0, 1):
        state = str(tmp_path / f"st{permitted}" / "kernel.db")
        init_state(state, "seed", "--seed", "11")
        k: Ktls = lambda *a, _s=state: run_ktls(*a, state=_s)  # noqa: E731
        ok(k, "sysctl", "kern.ipc.tls.enable=1", "kern.ipc.mb_use_ext_pgs=1",
           f"kern.ipc.tls.ifnet.permitted={permitted}")  # fmt: skip
        ok(k, "kldload", "ktls_ocf")
        ok(k, "ifconfig", "lagg0", "txtls")
        ok(k, "connect", *CONN, "--tls-version", "1.2", "--random-keys")
        mode = ok(k, "getsockopt", *CONN, "TCP_TXTLS_MODE").stdout
        assert mode == ("TCP_TXTLS_MODE: 2 (ifnet)\n" if permitted else "TCP_TXTLS_MODE: 1 (sw)\n")
        ok(k, "send", *CONN, "--file", tmp_path / "d", "--out", tmp_path / f"o{permitted}")
        outs[permitted] = (tmp_path / f"o{permitted}").read_bytes()
    assert outs[0] == outs[1] and len(outs[0]) == 70_000 + 5 * 29


def test_current_profile_moves_a_lossy_session_to_software(
    state: str, init_state: Callable[..., Any], ktls: Ktls, tmp_path: Path
) -> None:
    init_state(state, "current", "--seed", "6")
    ok(ktls, "sysctl", "kern.ipc.tls.enable=1", "kern.ipc.tls.ifnet.permitted=1")
    ok(ktls, "ifconfig", "lagg0", "txtls")
    ok(ktls, "connect", *CONN, *TLS)
    ok(ktls, "send", *CONN, "--data", "a" * 100, "--out", tmp_path / "s1")
    ok(ktls, "ifconfig", "cc0", "down")
    # 129 bytes resent, 258 sent: 33 %, far above kern.ipc.tls.ifnet_max_rexmit_pct (2).
    r = ok(ktls, "send", *CONN, "--data", "b" * 100, "--out", tmp_path / "s2", "--trace")
    trace = r.stderr.splitlines()
    disabled = trace.index("ifnet TLS disabled (33% retransmitted), now software")
    assert trace.index("record 1 retransmitted (129 bytes) on cc1") < disabled
    ok(ktls, "send", *CONN, "--data", "c" * 100, "--out", tmp_path / "s3", "--trace")
    assert ok(ktls, "getsockopt", *CONN, "TCP_TXTLS_MODE").stdout == "TCP_TXTLS_MODE: 1 (sw)\n"
    assert sysctls(
        ktls,
        "kern.ipc.tls.stats.ifnet_disable_ok",
        "kern.ipc.tls.stats.ifnet_disable_failed",
        "kern.ipc.tls.stats.switch_to_sw",
        "kern.ipc.tls.ifnet.reset",
    ) == {
        "kern.ipc.tls.stats.ifnet_disable_ok": 1,
        "kern.ipc.tls.stats.ifnet_disable_failed": 0,
        "kern.ipc.tls.stats.switch_to_sw": 1,
        "kern.ipc.tls.ifnet.reset": 1,
    }
    stream = b"".join((tmp_path / f"s{i}").read_bytes() for i in (1, 2, 3))
    assert plaintext(stream) == b"a" * 100 + b"b" * 100 + b"c" * 100
    # t_nic_ktls_xmit_dis: this connection never goes back to the NIC.
    r = ktls("setsockopt", *CONN, "TCP_TXTLS_MODE", "ifnet")
    assert (r.exit, r.stderr) == (1, "setsockopt: TCP_TXTLS_MODE: Device not configured\n")


def test_a_stream_follows_the_disable_to_software_at_the_next_batch(
    state: str, init_state: Callable[..., Any], ktls: Ktls, tmp_path: Path
) -> None:
    # A stream of unknown size (stdin) is reserved batch by batch (BATCH_BYTES): with
    # ifnet_max_rexmit_pct at 0, the record resent after the failover disables ifnet
    # during the first batch, and the batches after it are framed for software.
    init_state(state, "current", "--seed", "6")
    ok(ktls, "sysctl", "kern.ipc.tls.enable=1", "kern.ipc.tls.ifnet.permitted=1",
       "kern.ipc.tls.ifnet_max_rexmit_pct=0")  # fmt: skip
    ok(ktls, "ifconfig", "lagg0", "txtls")
    ok(ktls, "connect", *CONN, *TLS)
    ok(ktls, "ifconfig", "cc0", "down")
    from ktls_core.tls.output import BATCH_BYTES

    data = os.urandom(3 * BATCH_BYTES + 100)
    r = ktls("--format", "json", "send", *CONN, "--stdin", "--out", tmp_path / "s", input=data)
    assert r.exit == 0, r
    modes = [rec["mode"] for rec in json.loads(r.stdout)["send"]["records"]]
    per_batch = BATCH_BYTES // 16384
    assert set(modes[:per_batch]) == {"ifnet"} and set(modes[per_batch:]) == {"sw"}
    assert plaintext((tmp_path / "s").read_bytes()) == data
    c = sysctls(ktls, "kern.ipc.tls.stats.ifnet_disable_ok", "kern.ipc.tls.sw.gcm")
    assert c == {"kern.ipc.tls.stats.ifnet_disable_ok": 1, "kern.ipc.tls.sw.gcm": 1}


def test_the_retransmitted_share_counts_bytes_sent_not_bytes_reserved(
    state: str, init_state: Callable[..., Any], ktls: Ktls, tmp_path: Path
) -> None:
    # A file is reserved whole before its first record leaves. t_sndbytes counts
    # what TCP sent: 100 KB and the record that met the stale tag, not the 12 MiB
    # reserved behind it, so one resent record is far above 2 % and ifnet is
    # disabled for the rest of the same send.
    from ktls_core.tls.output import BATCH_BYTES

    init_state(state, "current", "--seed", "6")
    ok(ktls, "sysctl", "kern.ipc.tls.enable=1", "kern.ipc.tls.ifnet.permitted=1")
    ok(ktls, "ifconfig", "lagg0", "txtls")
    ok(ktls, "connect", *CONN, *TLS)
    (tmp_path / "small").write_bytes(os.urandom(100_000))
    r = ok(ktls, "--format", "json", "send", *CONN, "--file", tmp_path / "small",
           "--out", tmp_path / "s1")  # fmt: skip
    first = json.loads(r.stdout)["send"]
    ok(ktls, "ifconfig", "cc0", "down")
    data = os.urandom(3 * BATCH_BYTES)
    (tmp_path / "big").write_bytes(data)
    r = ok(ktls, "--format", "json", "send", *CONN, "--file", tmp_path / "big",
           "--out", tmp_path / "s2", "--trace")  # fmt: skip
    record_wire = 16384 + 29
    sent = first["wire_bytes"] + record_wire
    pct = (1000 * record_wire) // (10 * (sent + record_wire))
    assert pct > 2
    assert f"ifnet TLS disabled ({pct}% retransmitted), now software" in r.stderr.splitlines()
    # Batches framed before the disable (the one in flight, and the next one read
    # behind it) stay with the NIC; the ones framed after it are software's.
    modes = [rec["mode"] for rec in json.loads(r.stdout)["send"]["records"]]
    per_batch = BATCH_BYTES // 16384
    nic = modes.count("ifnet")
    assert nic in (per_batch, 2 * per_batch)
    assert modes == ["ifnet"] * nic + ["sw"] * (3 * per_batch - nic)
    stream = (tmp_path / "s1").read_bytes() + (tmp_path / "s2").read_bytes()
    assert plaintext(stream) == (tmp_path / "small").read_bytes() + data
