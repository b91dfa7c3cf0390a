"""`ktls send` without click: main's fast path reads exactly what click reads, or gives up.

The fast path (ktls_cli.commands.send_run.run_fast) saves the click import on every
send. It must never read a command line differently from click: the option table
matches the click command's options, and for any words it accepts it yields the
arguments click's parser yields. Everything else (--help, errors, --hex, --connect)
is click's, worded as before.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ktls_cli.commands.send_run import OPTIONS, SYSCALLS, SendArgs, parse_fast
from ktls_cli.group import cli

SEND: click.Command = cli.get_command(click.Context(cli), "send")  # type: ignore[assignment]
CLICK_ONLY = {"--hex", "--connect", "--tls-version", "--ciphers", "--cafile", "--insecure",
              "--server-name", "--help"}  # fmt: skip
CONN = ["198.51.100.10:443", "203.0.113.7:50000"]


def _click_options() -> dict[str, click.Option]:
    return {
        name: p
        for p in SEND.params
        if isinstance(p, click.Option)
        for name in p.opts
    }


def test_the_table_is_the_click_command() -> None:
    options = _click_options()
    assert set(OPTIONS) | CLICK_ONLY == set(options) | {"--help"}
    for name, (field, takes_value) in OPTIONS.items():
        assert options[name].name == field
        assert options[name].is_flag is not takes_value
        assert field in SendArgs._fields
    syscall = options["--syscall"].type
    assert isinstance(syscall, click.Choice) and tuple(syscall.choices) == SYSCALLS
    assert SendArgs().syscall == options["--syscall"].default


def _click_parse(words: list[str]) -> SendArgs | None:
    try:
        ctx = SEND.make_context("send", list(words), resilient_parsing=False)
    except click.ClickException:
        return None
    p: dict[str, Any] = ctx.params
    if p.get("connect_to") is not None or p.get("hexdata") is not None:
        return None
    return SendArgs(**{f: p[f] for f in SendArgs._fields})


WORDS = st.sampled_from(
    [*OPTIONS, "--hex", "--connect", "--help", "--", "-", "-x", "--data=", "--repeat=2",
     "--syscall=sendfile", "--stdin=1", "--nope", "write", "sendmsg", "bogus", "0", "3",
     "-1", "1000000001", "07", "x", "", "alert", "/", "/nonexistent", *CONN,
     "203.0.113.7", "50000"]
)  # fmt: skip


@settings(max_examples=600, deadline=None)
@given(st.lists(WORDS, max_size=8))
def test_the_fast_path_reads_what_click_reads(words: list[str]) -> None:
    fast = parse_fast(words)
    if fast is not None:
        assert fast == _click_parse(words)


@pytest.mark.parametrize(
    "words",
    [
        [*CONN, "--data", "x"],
        [*CONN, "--data=x", "--syscall", "sendmsg", "--record-type", "alert"],
        [*CONN, "--file", "/etc/hostname", "--syscall=sendfile", "--out", "-", "--trace"],
        ["--data", "-", *CONN, "--repeat", "3", "--pcap", "p.pcap"],
    ],
)
def test_plain_command_lines_take_the_fast_path(words: list[str]) -> None:
    fast = parse_fast(words)
    assert fast is not None and fast == _click_parse(words)


@pytest.mark.parametrize(
    "words",
    [
        [*CONN, "--help"],
        [*CONN, "--hex", "00"],
        ["--connect", "127.0.0.1:1", "--data", "x"],
        [*CONN, "--data", "x", "--data", "y"],  # click keeps the last; not ours to guess
        [*CONN, "--syscall", "bogus", "--data", "x"],
        [*CONN, "--repeat", "0", "--data", "x"],
        [*CONN, "--file", "/", "--data", "x"],
        [*CONN, "--data"],
        ["--", *CONN, "--data", "x"],
    ],
)
def test_click_keeps_what_needs_it(words: list[str]) -> None:
    assert parse_fast(words) is None


PROBE = r"""
import json, sys
from ktls_cli.main import main
code = main(sys.argv[1:])
sys.stdout.flush()
print(json.dumps({"exit": code, "click": "click" in sys.modules}), file=sys.stderr)
"""


def _probe(state: str, *args: str) -> tuple[dict[str, Any], str, str]:
    r = subprocess.run([sys.executable, "-c", PROBE, "--state", state, *args],
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    lines = r.stderr.splitlines()
    return json.loads(lines[-1]), r.stdout, "\n".join(lines[:-1])


@pytest.fixture
def tls_conn(state: str, init_state: Any, ktls: Any) -> str:
    init_state(state)
    assert ktls("sysctl", "kern.ipc.tls.enable=1", "kern.ipc.mb_use_ext_pgs=1").exit == 0
    assert ktls("kldload", "ktls_ocf").exit == 0
    assert ktls("connect", *CONN, "--random-keys", "--tls-version", "1.2").exit == 0
    return state


def test_a_send_runs_without_importing_click(tls_conn: str, tmp_path: Path) -> None:
    report, out, err = _probe(tls_conn, "--format", "json", "send", *CONN, "--data", "hi")
    assert report == {"exit": 0, "click": False}
    assert json.loads(out)["send"]["records_sent"] == 1 and err == ""


def test_a_usage_error_found_late_is_still_clicks(tls_conn: str) -> None:
    report, out, err = _probe(tls_conn, "send", *CONN, "--data", "x", "--record-type", "alert")
    assert report == {"exit": 2, "click": True} and out == ""
    assert err == (
        "Usage: ktls send [OPTIONS] [CONN]...\n"
        "Try 'ktls send --help' for help.\n\n"
        "Error: --record-type needs --syscall sendmsg (only sendmsg(2) carries the"
        " TLS_SET_RECORD_TYPE control message)"
    )


def test_a_failed_send_keeps_its_message_and_status(tls_conn: str) -> None:
    report, _out, err = _probe(tls_conn, "send", "192.0.2.1:1", "192.0.2.2:2", "--data", "x")
    assert report == {"exit": 1, "click": False}
    assert err == "write: 192.0.2.1 1 192.0.2.2 2: No such process"
