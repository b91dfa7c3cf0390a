"""`ktls send --repeat N`: the syscall N times with the same data, each call its own records."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.shell_completion import ShellComplete

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: oracle, ktls_sw
from ktls_sw import CONN_WORDS, MAC_LEN
from oracle import decrypt_stream

from ktls_cli.main import cli

CONN = " ".join(w.replace(":", " ") for w in CONN_WORDS)  # as the summary names it


@pytest.fixture
def keyed(state: str, ktls: Any, init_state: Any, tmp_path: Path) -> Callable[..., dict[str, Any]]:
    """A connection with known keys in a state where software KTLS works."""

    def make(
        profile: str = "seed",
        version: str = "1.2",
        cipher: str = "aes-gcm",
        auth: str | None = None,
    ) -> dict[str, Any]:
        init_state(state, profile)
        assert ktls("sysctl", "kern.ipc.tls.enable=1", "kern.ipc.mb_use_ext_pgs=1").exit == 0
        if profile == "seed":
            assert ktls("kldload", "ktls_ocf").exit == 0
        klen = 32 if cipher == "chacha20-poly1305" else 16
        ivlen = 0 if cipher == "aes-cbc" and version != "1.0" else 16 if cipher == "aes-cbc" else 4
        if version == "1.3" or cipher == "chacha20-poly1305":
            ivlen = 12
        keys = {"version": version, "cipher": cipher, "key": os.urandom(klen),
                "iv": os.urandom(ivlen), "auth": auth,
                "auth_key": os.urandom(MAC_LEN[auth]) if auth else b""}  # fmt: skip
        lines = [f"tls_version: '{version}'", f"cipher: {cipher}", f"key: {keys['key'].hex()}"]
        if ivlen:
            lines.append(f"iv: {keys['iv'].hex()}")
        if auth:
            lines += [f"auth: {auth}", f"auth_key: {keys['auth_key'].hex()}"]
        path = tmp_path / "keys.yaml"
        path.write_text("\n".join(lines) + "\n")
        r = ktls("connect", *CONN_WORDS, "--keys-from", str(path))
        assert r.exit == 0, r
        return keys

    return make


def test_one_record_per_call_decrypts(ktls: Any, keyed: Any, tmp_path: Path) -> None:
    keys = keyed()
    out = tmp_path / "stream"
    r = ktls("send", *CONN_WORDS, "--data", "x" * 100, "--repeat", "1000", "--out", out)
    assert r.exit == 0, r
    assert r.stdout == (
        f"{CONN}: 1000 records, 100000 bytes in 1000 calls (129000 on the wire),"
        " seq 0 to 999, next seq 1000\n"
    )
    assert decrypt_stream(out.read_bytes(), keys) == [(23, b"x" * 100)] * 1000


def test_json_lists_every_record_and_the_calls(ktls: Any, keyed: Any) -> None:
    keyed()
    r = ktls("--format", "json", "send", *CONN_WORDS, "--hex", "0102", "--repeat", "3")
    assert r.exit == 0, r
    doc = json.loads(r.stdout)["send"]
    assert doc["calls"] == 3 and doc["records_sent"] == 3 and doc["bytes"] == 6
    assert [(x["seq"], x["length"], x["wire_length"]) for x in doc["records"]] == [
        (0, 2, 31), (1, 2, 31), (2, 2, 31)
    ]  # fmt: skip
    once = json.loads(ktls("--format", "json", "send", *CONN_WORDS, "--data", "y").stdout)
    assert once["send"]["calls"] == 1


def test_a_file_is_read_again_for_every_call(ktls: Any, keyed: Any, tmp_path: Path) -> None:
    """20000 bytes twice: 16384 + 3616 per call, whichever syscall."""
    keys = keyed("current", "1.3", "chacha20-poly1305")
    data = os.urandom(20000)
    src = tmp_path / "data"
    src.write_bytes(data)
    out = tmp_path / "stream"
    r = ktls("send", *CONN_WORDS, "--file", src, "--syscall", "sendfile", "--repeat", "2",
             "--out", out)  # fmt: skip
    assert r.exit == 0, r
    records = decrypt_stream(out.read_bytes(), keys)
    assert [len(pt) for _t, pt in records] == [16384, 3616] * 2
    assert b"".join(pt for _t, pt in records) == data * 2


def test_tls10_cbc_chains_across_calls(ktls: Any, keyed: Any, tmp_path: Path) -> None:
    keys = keyed("current", "1.0", "aes-cbc", "hmac-sha1")
    out = tmp_path / "stream"
    r = ktls("send", *CONN_WORDS, "--data", "abc", "--repeat", "50", "--out", out)
    assert r.exit == 0, r
    assert decrypt_stream(out.read_bytes(), keys) == [(23, b"abc")] * 50


def test_record_type_limit_is_per_call(ktls: Any, keyed: Any, tmp_path: Path) -> None:
    keys = keyed()
    out = tmp_path / "stream"
    r = ktls("send", *CONN_WORDS, "--hex", "16" * 20000, "--syscall", "sendmsg",
             "--record-type", "handshake", "--repeat", "3", "--out", out)  # fmt: skip
    assert r.exit == 0, r
    expected = [(22, b"\x16" * 16384), (22, b"\x16" * 3616)] * 3
    assert decrypt_stream(out.read_bytes(), keys) == expected


def test_without_ktls_the_bytes_repeat(
    ktls: Any, state: str, init_state: Any, tmp_path: Path
) -> None:
    init_state(state)
    assert ktls("connect", *CONN_WORDS).exit == 0
    out = tmp_path / "stream"
    r = ktls("send", *CONN_WORDS, "--data", "ab", "--repeat", "3", "--out", out)
    assert r.exit == 0 and out.read_bytes() == b"ababab"
    assert r.stdout.startswith(f"{CONN}: 6 bytes in 3 calls, no KTLS")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--stdin", "--repeat", "2"], "standard input is read once"),
        (["--data", "", "--repeat", "2"], "there is no data to repeat"),
        (["--data", "x", "--repeat", "0"], "0 is not in the range"),
        (["--data", "x", "--repeat", "many"], "'many' is not a valid integer"),
    ],
)
def test_usage_errors(ktls: Any, keyed: Any, argv: list[str], message: str) -> None:
    keyed()
    r = ktls("send", *CONN_WORDS, *argv)
    assert r.exit == 2 and message in r.stderr, r
    assert ktls("send", *CONN_WORDS, "--data", "z").stdout.startswith(f"{CONN}: 1 record")


def test_repeat_is_not_for_connect(ktls: Any) -> None:
    r = ktls("send", "--connect", "127.0.0.1:9", "--data", "x", "--repeat", "2")
    assert r.exit == 2 and "not --connect" in r.stderr


def test_completion_offers_repeat() -> None:
    comp = ShellComplete(cli, {}, "ktls", "_KTLS_COMPLETE")
    words = [c.value for c in comp.get_completions(["send", *CONN_WORDS], "--rep")]
    assert words == ["--repeat"]
