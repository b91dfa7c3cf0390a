"""Bad input: hypothesis-driven argv fuzzing of every command in ktls_cli.main.COMMANDS.

Each example runs `ktls [GLOBAL...] COMMAND TOKENS...` in this process (run_ktls,
KTLS_DEBUG unset, so an internal error would print instead of raising) on a copy of
a prepared state (seed or current profile, with software, ifnet and plain
connections, a loaded module, sent records). The tokens mix the command's own
vocabulary (its flags, keywords, oid and interface names, connection words, TLS
options) with unknown flags and names, numbers at and past the type limits
(2**31, 2**32, 2**63, 2**64, negative, hex, huge, non-ASCII digits), unicode,
surrogate-escaped bytes and empty strings. Every example must:

- exit 0, 1 or 2;
- print no traceback and no 'internal error';
- on failure, say so on stderr: exit 1 with one line per failed argument at most,
  exit 2 with a usage message;
- on failure, leave the state byte-for-byte as it was (`ktls state export
  --include-keys` compared). The exceptions are FreeBSD's own and are checked
  exactly, not by loosening the comparison (see `_allowed_change`):
  a failed TCP_TXTLS_ENABLE still counts enable_calls; a refused kldunload logs
  its dmesg line; a failed ktls_set_tx_mode() counts switch_failed; and sysctl,
  ifconfig and switch_tls apply the arguments that worked before one that failed
  (as sysctl(8) and ifconfig(8) do), which must equal running those alone.

The number of examples per command is bounded (KTLS_FUZZ_EXAMPLES, default 300) and
the search is derandomized so CI runs are repeatable; KTLS_FUZZ_RANDOM=1 explores
afresh.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ktls_cli.main import COMMANDS

EXAMPLES = int(os.environ.get("KTLS_FUZZ_EXAMPLES", "300"))
DERANDOMIZE = os.environ.get("KTLS_FUZZ_RANDOM") != "1"

NUMBERS = [
    "0", "1", "-1", "2", "255", "256", "1024", "16384", "16385", "65535", "65536",
    "2147483647", "2147483648", "-2147483648", "-2147483649", "4294967295", "4294967296",
    "9223372036854775807", "9223372036854775808", "-9223372036854775808",
    "-9223372036854775809", "18446744073709551615", "18446744073709551616",
    "-18446744073709551616", str(10**40), "0x10", "0xffffffffffffffff", "0x10000000000000000",
    "-0x1", "0o17", "017", "1e3", "1.5", " 1", "1 ", "+1", "٣", "１２", "0x", "-", "--1",
]  # fmt: skip
JUNK = [
    "", " ", "-", "--", "-z", "-Z", "--bogus", "--no-such-option=1", "-aZ", "x", "nope",
    "é", "\u202e", "😀", "\udcff", "a" * 300, "%s%n", "../../etc/passwd", "=", "==", ":", ".",
    "\t", "\n", "\\", "'", '"', "*", "?", ";", "$(id)",
]  # fmt: skip
OIDS = [
    "kern", "kern.ipc", "kern.ipc.tls", "kern.ipc.tls.enable", "kern.ipc.tls.maxlen",
    "kern.ipc.tls.cbc_enable", "kern.ipc.mb_use_ext_pgs", "kern.ipc.tls.stats.active",
    "kern.ipc.tls.stats", "kern.ipc.tls.ifnet.permitted", "kern.ipc.tls.bind_threads",
    "kern.ipc.tls.max_reclaim", "kern.ipc.tls.ifnet_max_rexmit_pct", "kern.ipc.tls.sw.gcm",
    "kern.ipc.tls.stats.ocf.tls12_gcm_crypts", "kern.ipc.tls.nope", "kern..ipc", ".kern",
    "kern.ipc.tls.", "net.inet.tcp", "kern.ipc.tls.allow_unload",
]  # fmt: skip
IFNAMES = ["lo0", "em0", "cc0", "cc1", "mce0", "lagg0", "lagg1", "vlan100", "nope0", "em", "0"]
ADDRS = [
    "192.0.2.10", "198.51.100.7", "203.0.113.7", "203.0.113.10", "127.0.0.1", "::1",
    "2001:db8:1::10", "2001:db8:1::7", "256.1.1.1", "192.0.2.0/24", "192.0.2.10/33",
    "0.0.0.0", "default", "fe80::1%em0", "::ffff:192.0.2.10", "[::1]", "localhost",
]  # fmt: skip
CONN_WORDS = [
    "192.0.2.10:443", "198.51.100.7:51514", "192.0.2.10.443", "198.51.100.7.51514",
    "203.0.113.10:443", "203.0.113.7:443", "192.0.2.10:80", "198.51.100.7:80", "[::1]:443",
    "::1.443", "2001:db8:1::10.443", "2001:db8:1::7.1234", "192.0.2.10:", ":443",
    "192.0.2.10:65536", "192.0.2.10:-1", "192.0.2.10:0", "443", "51514",
]  # fmt: skip
TLS_OPTS = [
    "--tls-version", "1.0", "1.1", "1.2", "1.3", "1.4", "--cipher", "aes-gcm", "aes-cbc",
    "chacha20-poly1305", "rc4", "--key", "00" * 16, "00" * 32, "00" * 15, "00" * 2000, "zz",
    "0x" + "11" * 16, "00:11:22:33", "--iv", "a0a1a2a3", "00" * 12, "00" * 16, "--auth",
    "hmac-sha1", "hmac-sha256", "hmac-sha384", "md5", "--auth-key", "--rec-seq",
    "--random-keys", "--keys-from",
]  # fmt: skip
VOCAB: dict[str, list[str]] = {
    "sysctl": ["-a", "-b", "-d", "-e", "-h", "-i", "-N", "-n", "-o", "-q", "-T", "-t", "-W",
               "-x", "-f", "-an", "-x", *OIDS],
    "ifconfig": ["-a", "-l", "-m", "-u", "-d", "-L", *IFNAMES, "create", "destroy", "up", "down",
                 "mtu", "inet", "inet6", "alias", "-alias", "netmask", "txtls", "-txtls",
                 "txtls4", "-txtls4", "txtls6", "-txtls6", "txtlsrtlmt", "-txtlsrtlmt", "vlan",
                 "vlandev", "-vlandev", "laggproto", "failover", "lacp", "roundrobin",
                 "laggport", "-laggport", "description", "ether", *ADDRS],
    "route": ["-4", "-6", "-n", "-q", "-v", "add", "delete", "change", "get", "show", "flush",
              "monitor", "-net", "-host", "-inet", "-inet6", "-interface", "-ifp", "-reject",
              "-blackhole", "-netmask", "-prefixlen", *ADDRS, *IFNAMES],
    "netstat": ["-r", "-n", "-a", "-4", "-6", "-W", "-f", "inet", "inet6", "link", "-p", "tcp",
                "udp", "-T", "-x", "-s", "-i"],
    "switch_tls": ["-i", "-s", "-a", "-l", "-S", "freebsd", "rack", "-ia", "-il", *CONN_WORDS],
    "tcpdrop": ["-a", "-l", "-S", "freebsd", "-s", "ESTABLISHED", "TIME_WAIT", "LISTEN",
                "CLOSED", *CONN_WORDS],
    "kldload": ["-n", "-q", "-v", "ktls_ocf", "ktls_ocf.ko", "/boot/kernel/ktls_ocf.ko", "if_em"],
    "kldunload": ["-f", "-i", "-n", "-v", "ktls_ocf", "ktls_ocf.ko", "if_em", "1", "2"],
    "kldstat": ["-d", "-h", "-i", "-m", "-n", "-q", "-v", "ktls_ocf", "kernel", "1", "2"],
    "dmesg": ["-a", "-c", "-M", "-N", "/boot/kernel/kernel", "core"],
    "connect": [*CONN_WORDS, *TLS_OPTS, "--count", "3", "100000"],
    "setsockopt": [*CONN_WORDS, *TLS_OPTS, "TCP_TXTLS_ENABLE", "TCP_TXTLS_MODE", "sw", "ifnet",
                   "toe", "none", "TCP_NODELAY"],
    "getsockopt": [*CONN_WORDS, "TCP_TXTLS_ENABLE", "TCP_TXTLS_MODE", "TCP_NODELAY", "TCP_MAXSEG"],
    "send": [*CONN_WORDS, "--data", "--hex", "--file", "--stdin", "--syscall", "write",
             "aio_write", "sendfile", "sendmsg", "splice", "--record-type", "alert", "handshake",
             "application_data", "change_cipher_spec", "22", "--out", "--pcap", "--trace",
             "--connect", "127.0.0.1:1", "[::1]:1", "localhost:1", "host", "a" * 70 + ":1",
             "é..x:1", "no.such.host.invalid:1", "--insecure", "--repeat", "3", "100000",
             "--server-name", "--cafile", "--ciphers", "--tls-version", "1.2", "1.3",
             "00" * 20, "hello"],
    "decode": ["--first-seq", "--pcap", "--plaintext", *TLS_OPTS, *CONN_WORDS],
    "state": ["init", "show", "path", "reset", "export", "import", "--profile", "seed",
              "current", "--topology", "--seed", "--tunable", "kern.ipc.tls.bind_threads=1",
              "kern.ipc.tls.maxlen=4096", "--force", "--include-keys"],
    "serve": ["--listen", "127.0.0.1:0", "[::1]:0", "localhost:0", "127.0.0.1:99999", "::1:0",
              "no.such.host.invalid:0", "a" * 70 + ":0", "é..x:0", "--root", "--cert", "--key",
              "--tls-version", "1.2",
              "1.3", "--ciphers", "NULL", "TLS_AES_128_GCM_SHA256", "ECDHE+AESGCM"],
}  # fmt: skip
assert set(VOCAB) == set(COMMANDS), set(COMMANDS) ^ set(VOCAB)


def _setup_seed(run: Any, state: str, scratch: Path) -> None:
    for argv in (
        ["state", "init", "--profile", "seed"],
        ["sysctl", "kern.ipc.tls.enable=1", "kern.ipc.mb_use_ext_pgs=1"],
        ["kldload", "ktls_ocf"],
        ["connect", "192.0.2.10:443", "198.51.100.7:51514", "--key", "00" * 16, "--iv",
         "a0a1a2a3"],
        ["connect", "192.0.2.10:80", "198.51.100.7:80"],
        ["send", "192.0.2.10:443", "198.51.100.7:51514", "--data", "hello " * 5000, "--out",
         scratch / "stream.tls", "--pcap", scratch / "capture.pcap"],
        ["route", "add", "-net", "10.9.0.0/16", "192.0.2.1"],
    ):  # fmt: skip
        r = run(*argv, state=state)
        assert r.exit == 0, (argv, r)


def _setup_current(run: Any, state: str, scratch: Path) -> None:
    for argv in (
        ["state", "init", "--profile", "current"],
        ["sysctl", "kern.ipc.tls.enable=1", "kern.ipc.tls.cbc_enable=1",
         "kern.ipc.tls.ifnet.permitted=1"],
        ["ifconfig", "mce0", "txtls"],
        ["ifconfig", "cc0", "txtls"],
        ["connect", "192.0.2.10:443", "198.51.100.7:51514", "--key", "00" * 32, "--iv",
         "00" * 12, "--tls-version", "1.3", "--cipher", "chacha20-poly1305"],
        ["connect", "203.0.113.10:443", "203.0.113.7:443", "--random-keys"],
        ["connect", "2001:db8:1::10.443", "2001:db8:1::7.1234", "--random-keys",
         "--tls-version", "1.1", "--cipher", "aes-cbc", "--auth", "hmac-sha1"],
        ["connect", "192.0.2.10:80", "198.51.100.7:80"],
        # A software session that `switch_tls -i -a` can move (the others fail).
        ["connect", "203.0.113.10:444", "203.0.113.7:444", "--random-keys"],
        ["switch_tls", "-s", "203.0.113.10:444", "203.0.113.7:444"],
        ["send", "203.0.113.10:443", "203.0.113.7:443", "--data", "x" * 40000],
        ["send", "192.0.2.10:443", "198.51.100.7:51514", "--data", "hello"],
    ):  # fmt: skip
        r = run(*argv, state=state)
        assert r.exit == 0, (argv, r)


@pytest.fixture(scope="module")
def bases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The prepared states (closed, so the file alone is the state) and their exports."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "ktls_conftest", Path(__file__).resolve().parents[1] / "conftest.py"
    )
    assert spec is not None and spec.loader is not None
    conftest = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("ktls_conftest", conftest)
    spec.loader.exec_module(conftest)
    run = conftest._run_ktls
    root = tmp_path_factory.mktemp("fuzz-bases")
    scratch = root / "files"
    scratch.mkdir()
    out: dict[str, Any] = {"run": run, "scratch": scratch}
    for profile, setup in (("seed", _setup_seed), ("current", _setup_current)):
        state = str(root / profile / "kernel.db")
        setup(run, state, scratch)
        assert not os.path.exists(state + "-wal")
        export = run("state", "export", "--include-keys", state=state)
        assert export.exit == 0
        out[profile] = (state, Path(state).read_bytes(), export.stdout)
    (scratch / "keys.yaml").write_text("key: " + "00" * 16 + "\niv: a0a1a2a3\n")
    (scratch / "bad-keys.yaml").write_text("key: [unclosed\n")
    (scratch / "topology.yaml").write_text("interfaces: 7\n")
    (scratch / "export.yaml").write_text(out["seed"][2])
    (scratch / "empty").write_bytes(b"")
    (scratch / "dir").mkdir()
    return out


C1, C2 = "192.0.2.10:443", "198.51.100.7:51514"  # a KTLS connection in both bases
P1, P2 = "192.0.2.10:80", "198.51.100.7:80"  # a plain one


def _templates(scratch: Path) -> dict[str, list[list[str]]]:
    """Well-formed command lines of each command; the fuzzer mutates them."""
    f = {n: str(scratch / n) for n in ("stream.tls", "capture.pcap", "keys.yaml", "export.yaml")}
    out = str(scratch / "out" / "file")
    k, iv = "00" * 16, "a0a1a2a3"
    return {
        "sysctl": [["kern.ipc.tls.enable"], ["kern.ipc.tls.enable=1"], ["-n", "kern.ipc.tls"],
                   ["-a"], ["-d", "kern.ipc.tls.maxlen"], ["-t", "kern.ipc.tls.stats"],
                   ["-b", "kern.ipc.tls.maxlen"], ["-x", "kern.ipc.tls.enable"],
                   ["kern.ipc.tls.maxlen=4096", "kern.ipc.tls.cbc_enable=0"],
                   ["-f", f["keys.yaml"]], ["-N", "-a"], ["-q", "kern.ipc.tls.nope"]],
        "ifconfig": [[], ["-a"], ["-l"], ["cc0"], ["cc0", "txtls"], ["cc1", "-txtls4"],
                     ["em0", "mtu", "9000"], ["em0", "inet", "192.0.2.20/24", "alias"],
                     ["vlan100", "create", "vlan", "100", "vlandev", "em0"],
                     ["lagg0", "-laggport", "cc1"], ["lagg0", "laggproto", "lacp"],
                     ["cc0", "down"], ["lagg1", "create"], ["mce0", "txtlsrtlmt"],
                     ["em0", "inet6", "2001:db8:5::1/64"], ["-m", "mce0"]],
        "route": [["add", "-net", "10.1.0.0/16", "192.0.2.1"], ["get", "198.51.100.7"],
                  ["delete", "default"], ["change", "default", "192.0.2.2"], ["show"],
                  ["-6", "add", "2001:db8:9::/48", "2001:db8:1::1"], ["flush"],
                  ["add", "-host", "203.0.113.99", "-interface", "mce0"],
                  ["-n", "get", "-inet6", "2001:db8:1::7"], ["add", "10.2.0.0/16", "-reject"]],
        "netstat": [[], ["-r"], ["-rn"], ["-an"], ["-f", "inet"], ["-p", "tcp"], ["-r", "-6"]],
        "switch_tls": [["-i", C1, C2], ["-s", C1, C2], ["-a"], ["-i", "-a"], ["-l", "-a"],
                       ["-S", "freebsd"], ["-i", "192.0.2.10", "443", "198.51.100.7", "51514"],
                       ["-s", P1, P2], ["-i", "203.0.113.10:443", "203.0.113.7:443"]],
        "tcpdrop": [[C1, C2], ["-a"], ["-l", "-a"], ["-s", "ESTABLISHED"], ["-S", "freebsd"],
                    ["192.0.2.10", "80", "198.51.100.7", "80"], ["-l", "-S", "freebsd", "-s",
                    "ESTABLISHED"]],
        "kldload": [["ktls_ocf"], ["-n", "ktls_ocf"], ["-v", "ktls_ocf"], ["-q", "ktls_ocf.ko"]],
        "kldunload": [["ktls_ocf"], ["-f", "ktls_ocf"], ["-i", "1"], ["-v", "-n", "ktls_ocf"]],
        "kldstat": [[], ["-v"], ["-m", "ktls_ocf"], ["-n", "ktls_ocf"], ["-i", "1"],
                    ["-q", "-m", "ktls_ocf"], ["-d"]],
        "dmesg": [[], ["-a"], ["-c"]],
        "connect": [["192.0.2.10:444", "198.51.100.7:9"],
                    ["192.0.2.10:444", "198.51.100.7:9", "--random-keys"],
                    ["192.0.2.10:444", "198.51.100.7:9", "--key", k, "--iv", iv],
                    ["192.0.2.10:444", "198.51.100.7:9", "--keys-from", f["keys.yaml"]],
                    ["192.0.2.10:444", "198.51.100.7:9", "--count", "3"],
                    ["203.0.113.10:0", "203.0.113.7:9", "--tls-version", "1.3", "--random-keys"],
                    ["192.0.2.10:444", "198.51.100.7:9", "--cipher", "aes-cbc", "--auth",
                     "hmac-sha256", "--random-keys", "--rec-seq", "5"], [C1, C2]],
        "setsockopt": [[P1, P2, "TCP_TXTLS_ENABLE", "--random-keys"],
                       [C1, C2, "TCP_TXTLS_MODE", "ifnet"], [C1, C2, "TCP_TXTLS_MODE", "sw"],
                       [P1, P2, "TCP_TXTLS_ENABLE", "--key", k, "--iv", iv],
                       [P1, P2, "TCP_TXTLS_ENABLE", "--keys-from", f["keys.yaml"]]],
        "getsockopt": [[C1, C2, "TCP_TXTLS_MODE"], [P1, P2, "TCP_TXTLS_MODE"]],
        "send": [[C1, C2, "--data", "hi"], [C1, C2, "--hex", "0011ff"],
                 [C1, C2, "--file", f["stream.tls"]], [C1, C2, "--stdin"],
                 [C1, C2, "--syscall", "sendmsg", "--record-type", "alert", "--data", "x"],
                 [C1, C2, "--data", "x", "--out", out], [C1, C2, "--data", "y", "--pcap", out],
                 [C1, C2, "--data", "z", "--trace"], [P1, P2, "--data", "plain"],
                 [C1, C2, "--syscall", "sendfile", "--file", f["stream.tls"]],
                 [C1, C2, "--data", "r", "--repeat", "5"], [P1, P2, "--hex", "00", "--repeat", "2"],
                 ["--connect", "127.0.0.1:1", "--data", "x"]],
        "decode": [[f["stream.tls"], C1, C2], [f["stream.tls"], "--key", k, "--iv", iv],
                   [f["capture.pcap"], "--pcap", C1, C2], [f["stream.tls"], C1, C2,
                   "--first-seq", "0"], ["-", "--key", k, "--iv", iv],
                   [f["stream.tls"], "--keys-from", f["keys.yaml"], "--plaintext", out]],
        "state": [["show"], ["path"], ["export"], ["export", "--include-keys"],
                  ["import", f["export.yaml"]], ["init"], ["init", "--force", "--profile",
                  "current"], ["init", "--force", "--seed", "3"], ["init", "--force",
                  "--tunable", "kern.ipc.tls.maxlen=4096"], ["reset"]],
        "serve": [["--listen", "127.0.0.1:0"], ["--listen", "127.0.0.1:0", "--tls-version", "1.3"],
                  ["--listen", "[::1]:0", "--ciphers", "ECDHE+AESGCM"],
                  ["--listen", "127.0.0.1:0", "--root", str(scratch)]],
    }  # fmt: skip


def _token_strategy(command: str, scratch: Path) -> st.SearchStrategy[str]:
    files = [str(scratch / n) for n in ("stream.tls", "capture.pcap", "keys.yaml",
             "bad-keys.yaml", "topology.yaml", "export.yaml", "empty", "dir", "missing")]
    files += [str(scratch / "out" / "new"), "/nonexistent/dir/file", "-"]  # fmt: skip
    vocab = VOCAB[command]
    assignments = st.builds(
        lambda name, value: f"{name}={value}",
        st.sampled_from(OIDS), st.sampled_from([*NUMBERS, "", "abc", "0x1f", "1:2"]),
    )  # fmt: skip
    return st.one_of(
        st.sampled_from(vocab),
        st.sampled_from(NUMBERS),
        st.sampled_from(JUNK),
        st.sampled_from(files),
        assignments if command == "sysctl" else st.sampled_from(vocab),
        # Any text but NUL, which no argv can hold (execve(2) strings end at it).
        st.text(st.characters(blacklist_characters="\x00"), max_size=8),
    )


HEADS = [[], [], ["--format", "json"], ["--format", "yaml"], ["--libxo", "json,pretty"],
         ["--format", "xml"], ["--libxo", "xml"], ["--format"]]  # fmt: skip


def _mutate(words: list[str], edits: list[tuple[int, int, str]]) -> list[str]:
    out = list(words)
    for kind, where, token in edits:
        i = where % (len(out) + 1)
        if kind == 0 or not out:
            out.insert(i, token)
        elif kind == 1:
            out[min(i, len(out) - 1)] = token
        else:
            del out[min(i, len(out) - 1)]
    return out


def _argv_strategy(command: str, scratch: Path) -> st.SearchStrategy[list[str]]:
    templates = _templates(scratch)[command]
    tokens = _token_strategy(command, scratch)
    edits = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 20), tokens), max_size=3)
    mutated = st.builds(_mutate, st.sampled_from(templates), edits)
    random_body = st.lists(tokens, max_size=6)
    body = st.one_of(mutated, mutated, mutated, random_body)
    sub = ["state"] if command == "state" else [command]
    return st.builds(lambda head, b: [*head, *sub, *b], st.sampled_from(HEADS), body)


# -- what a failed command may change ---------------------------------------------------------


def _tables(export: str) -> dict[str, Any]:
    import yaml

    return yaml.safe_load(export)["ktls_state"]["tables"]


def _rows(tables: dict[str, Any], table: str) -> list[Any]:
    return [tuple(map(str, r)) for r in tables[table]["rows"]]


def _allowed_change(argv: list[str], result: Any, before: str, after: str, replay: Any) -> str:
    """Why a failed command's change is FreeBSD's behaviour, or '' when it is not."""
    cmd = next(w for w in argv if w in COMMANDS)
    b, a = _tables(before), _tables(after)
    changed = sorted(t for t in a if b.get(t) != a.get(t))
    counters_b = dict(b["counters"]["rows"])
    counters_a = dict(a["counters"]["rows"])
    moved = {k: counters_a[k] - counters_b.get(k, 0) for k in counters_a
             if counters_a[k] != counters_b.get(k)}  # fmt: skip
    enable_calls = "kern.ipc.tls.stats.enable_calls"
    if cmd == "connect" and "TCP_TXTLS_ENABLE" in result.stderr:
        # connect(2) worked, then setsockopt(TCP_TXTLS_ENABLE) failed: the connection
        # stays, without TLS (ktls-connect(8)); FreeBSD counts the enable call from its
        # step 3 on. Nothing else may move: the old rows are all there unchanged, the
        # new ones are ESTABLISHED, no session was made.
        old, new = set(_rows(b, "conns")), set(_rows(a, "conns"))
        added = new - old
        if (
            set(changed) <= {"conns", "counters"}
            and old <= new
            and added
            and all(r[6] == "ESTABLISHED" for r in added)
            and set(moved) <= {enable_calls}
            and moved.get(enable_calls, 0) <= len(added)
        ):
            return "connect: the connection stays when TCP_TXTLS_ENABLE fails"
    if cmd == "setsockopt" and changed == ["counters"]:
        if "TCP_TXTLS_ENABLE" in result.stderr and moved == {
            "kern.ipc.tls.stats.enable_calls": 1
        }:
            return "enable_calls of a failed TCP_TXTLS_ENABLE"
        if "TCP_TXTLS_MODE" in result.stderr and moved == {"kern.ipc.tls.stats.switch_failed": 1}:
            return "switch_failed of a failed ktls_set_tx_mode()"
    if cmd == "switch_tls" and changed == ["counters"] and set(moved) == {
        "kern.ipc.tls.stats.switch_failed"
    }:
        failed = [ln for ln in result.stderr.splitlines() if ln.startswith("switch_tls: ")]
        if moved["kern.ipc.tls.stats.switch_failed"] <= len(failed):
            return "switch_failed of each failed ktls_set_tx_mode()"
    if cmd == "kldunload" and changed == ["dmesg"] and not moved:
        new = _rows(a, "dmesg")[len(_rows(b, "dmesg")) :]
        if {r[1] for r in new} == {"KTLS: Deregistering crypto method OCF is not supported"}:
            return "the refusal's dmesg line"
    if cmd == "switch_tls" and any(w.startswith("-") and "a" in w for w in argv):
        # -a: ktls_set_tx_mode() on each connection in turn, each on its own.
        return replay(argv, result, after, each_connection=True)
    if cmd in ("sysctl", "ifconfig", "switch_tls", "tcpdrop", "route"):
        # Arguments that worked before one that failed stay applied (sysctl(8) goes
        # on after a failed one; ifconfig(8) stops at it): running only the ones
        # that worked must give the same state.
        return replay(argv, result, after)
    return ""


def _route_status(argv: list[str], result: Any) -> bool:
    """route(8)'s newroute(): `add net DEST: gateway GW fib 0: <strerror>` on stdout."""
    from ktls_core.errors import STRERROR

    out = result.stdout
    return out.count("\n") == 1 and any(out.endswith(f": {text}\n") for text in
                                         [*STRERROR.values(), "route already in table",
                                          "entry in use",
                                          "not in table", "not enough memory",
                                          "gateway uses the same route"])  # fmt: skip


def _check(argv: list[str], result: Any, base: tuple[str, bytes, str], work: str,
           run: Any, scratch: Path) -> None:  # fmt: skip
    assert result.exit in (0, 1, 2), (argv, result)
    assert "Traceback" not in result.stderr, (argv, result)
    assert "internal error" not in result.stderr, (argv, result)
    if result.exit == 0:
        return
    # Lines are cut at newlines only (an argument may hold other line breaks) and an
    # argument with newlines in it may be echoed whole.
    lines = result.stderr.split("\n")[:-1] if result.stderr else []
    echoed = sum(w.count("\n") for w in argv) * len(argv)
    cmd = next(w for w in argv if w in COMMANDS)
    quiet = any(w.startswith("-") and "q" in w[1:] and w[1:].isalpha() for w in argv)
    if result.exit == 1 and not lines and quiet and cmd in ("kldstat", "kldload", "sysctl"):
        pass  # -q: "only check", as kldstat(8) -q and sysctl(8) -q have it
    elif result.exit == 1 and not lines and cmd == "route" and _route_status(argv, result):
        pass  # route(8) prints the outcome of add/change/delete on stdout, failure included
    elif result.exit == 1:
        # At most two lines per argument: sysctl(8) explains a read-only tunable
        # in a second line.
        assert 1 <= len(lines) <= 2 * len(argv) + echoed, (argv, result)
        assert result.stderr.endswith("\n"), (argv, result)
    else:
        assert "usage" in result.stderr.lower() or "Error:" in result.stderr, (argv, result)
    state, raw, export = base
    if not os.path.exists(work):
        pytest.fail(f"{argv}: the failed command removed the state")
    if Path(work).read_bytes() == raw and not os.path.exists(work + "-wal"):
        return
    after = run("state", "export", "--include-keys", state=work, env={"KTLS_DEBUG": None})
    assert after.exit == 0, after
    if after.stdout == export:
        return

    def fresh_export(words: list[Any]) -> tuple[int, str]:
        """Run `words` (or each of a list of argvs) on a fresh copy of the base;
        (exit of the last, export after)."""
        other = str(Path(work).parent / "replay.db")
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(other + suffix)
        shutil.copyfile(state, other)
        os.chmod(other, 0o600)
        code = 0
        for argv in words if words and isinstance(words[0], list) else [words]:
            code = run(*argv, state=other, env={"KTLS_DEBUG": None}).exit
        return code, run("state", "export", "--include-keys", state=other).stdout

    def replay(argv: list[str], result: Any, after_text: str, each_connection: bool = False) -> str:
        at = argv.index(next(w for w in argv if w in COMMANDS)) + 1
        head, body = argv[:at], argv[at:]
        if each_connection:
            flag = "-i" if any(w.startswith("-") and "i" in w for w in body) else "-s"
            names = re.findall(r"^(?:switch_tls: )?(\S+ \d+ \S+ \d+):", result.stdout +
                               result.stderr, re.M)  # fmt: skip
            if result.stdout[:1] in ("{", "s"):  # the JSON or YAML document
                import yaml

                doc = yaml.safe_load(result.stdout)["switch_tls"]["connections"]
                names = [f"{c['local_address']} {c['local_port']} {c['foreign_address']}"
                         f" {c['foreign_port']}" for c in doc]  # fmt: skip
            code, text = fresh_export([["switch_tls", flag, *n.split()] for n in names])
            return "each connection switched on its own" if text == after_text else ""
        # ifconfig(8), route(8): the parameters before the failing one were applied.
        for k in range(len(body) - 1, 0, -1):
            code, text = fresh_export(head + body[:k])
            if code == 0 and text == after_text:
                return f"the parameters before the failing one ({body[:k]})"
        # sysctl(8): every argument on its own; those that work are applied.
        flags = []
        rest = list(body)
        while rest and rest[0].startswith("-") and rest[0] != "-":
            flags.append(rest.pop(0))
            if flags[-1].endswith("f") and rest:
                flags.append(rest.pop(0))
        # An operand that looks like a flag is a name after the first operand.
        good = [
            w for w in rest if not w.startswith("-") and fresh_export(head + flags + [w])[0] == 0
        ]
        if good and len(good) < len(rest):
            code, text = fresh_export(head + flags + good)
            if code == 0 and text == after_text:
                return f"the arguments that worked on their own ({good})"
        return ""

    why = _allowed_change(argv, result, export, after.stdout, replay)
    assert why, f"{argv} failed ({result}) and changed the state"


@pytest.fixture(autouse=True)
def _sandbox(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Relative paths land in a scratch directory; host names resolve only as numbers or
    localhost; serve returns once it listens."""
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        text = host.decode() if isinstance(host, bytes) else str(host)
        if text not in ("localhost", "None") and host is not None:
            if isinstance(host, str):
                host.encode("idna")  # what the real one does first (UnicodeError)
            try:
                socket.inet_pton(socket.AF_INET6 if ":" in text else socket.AF_INET, text)
            except (OSError, ValueError):
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known") from None
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    from ktls_cli.commands import serve

    monkeypatch.setattr(serve, "_run_until_signal", lambda server, announce: None)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_fuzz_argv(command: str, bases: dict[str, Any], tmp_path: Path) -> None:
    run, scratch = bases["run"], bases["scratch"]
    work_dir = tmp_path / "work"

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=DERANDOMIZE, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip
    @given(profile=st.sampled_from(["seed", "current"]), argv=_argv_strategy(command, scratch))
    def one(profile: str, argv: list[str]) -> None:
        base = bases[profile]
        shutil.rmtree(work_dir, ignore_errors=True)
        work_dir.mkdir(mode=0o700)
        work = str(work_dir / "kernel.db")
        shutil.copyfile(base[0], work)
        os.chmod(work, 0o600)
        (scratch / "out").mkdir(exist_ok=True)
        result = run(*argv, state=work, env={"KTLS_DEBUG": None})
        _check(argv, result, base, work, run, scratch)

    one()
