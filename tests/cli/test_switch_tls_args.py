"""`ktls switch_tls`: getopt "ailS:s" and the argument forms of tools/tools/switch_tls."""

from __future__ import annotations

from typing import Any

import pytest

from ktls_cli.commands.switch_tls import USAGE, Request, parse_args
from ktls_cli.getopt import UsageProblem, getopt


@pytest.mark.parametrize(
    ("argv", "request_"),
    [
        # Software is the default; the last of -i / -s wins.
        (["192.0.2.10", "443", "198.51.100.7", "51514"],
         Request(words=("192.0.2.10", "443", "198.51.100.7", "51514"))),
        (["-i", "192.0.2.10", "443", "198.51.100.7", "51514"],
         Request(ifnet=True, words=("192.0.2.10", "443", "198.51.100.7", "51514"))),
        (["-i", "-s", "a", "1", "b", "2"], Request(words=("a", "1", "b", "2"))),
        (["-si", "a", "1", "b", "2"], Request(ifnet=True, words=("a", "1", "b", "2"))),
        (["-is", "a", "1", "b", "2"], Request(words=("a", "1", "b", "2"))),
        # Two words: split at the later of the last '.' or ':'.
        (["192.0.2.10:443", "198.51.100.7:51514"],
         Request(words=("192.0.2.10", "443", "198.51.100.7", "51514"))),
        (["192.0.2.10.443", "198.51.100.7.51514"],
         Request(words=("192.0.2.10", "443", "198.51.100.7", "51514"))),
        (["::1.443", "::1:8443"], Request(words=("::1", "443", "::1", "8443"))),
        (["2001:db8:1::10.443", "2001:db8:1::77.50122"],
         Request(words=("2001:db8:1::10", "443", "2001:db8:1::77", "50122"))),
        # FreeBSD's findport() accepts a separator in the first place: an empty host.
        ([":443", "b.2"], Request(words=("", "443", "b", "2"))),
        # -a, -S, -l.
        (["-a"], Request(all=True)),
        (["-l", "-i", "-a"], Request(ifnet=True, all=True, list_only=True)),
        (["-lia"], Request(ifnet=True, all=True, list_only=True)),
        (["-S", "freebsd"], Request(stack="freebsd")),
        (["-Sfreebsd", "-l"], Request(stack="freebsd", list_only=True)),
        (["-S", "rack", "-S", "freebsd"], Request(stack="freebsd")),
        # `--` ends the options.
        (["-i", "--", "a", "1", "b", "2"], Request(ifnet=True, words=("a", "1", "b", "2"))),
    ],
)  # fmt: skip
def test_forms(argv: list[str], request_: Request) -> None:
    assert parse_args(argv) == request_


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], None),
        (["a"], None),
        (["a", "1", "b"], None),
        (["a", "1", "b", "2", "c"], None),
        # -l only with -a or -S.
        (["-l", "a", "1", "b", "2"], None),
        # -a with -S, or with operands.
        (["-a", "-S", "freebsd"], None),
        (["-a", "a", "1", "b", "2"], None),
        (["-S", "freebsd", "a.1", "b.2"], None),
        # Two words without a port, or with nothing after the separator.
        (["a", "b.2"], None),
        (["a.", "b.2"], None),
        (["a:1", "b:"], None),
        # Options after an operand are operands (no GNU permutation): five words.
        (["a", "1", "b", "2", "-i"], None),
        # getopt's own complaints come first.
        (["-x", "a", "1", "b", "2"], "switch_tls: illegal option -- x"),
        (["-ix"], "switch_tls: illegal option -- x"),
        (["-S"], "switch_tls: option requires an argument -- S"),
        (["--verbose"], "switch_tls: illegal option -- -"),
    ],
)
def test_usage(argv: list[str], message: str | None) -> None:
    with pytest.raises(UsageProblem) as info:
        parse_args(argv)
    assert info.value.message == message


def test_getopt_stops_at_a_lone_dash() -> None:
    assert getopt("switch_tls", ["-i", "-", "-s"], "ailS:s") == ([("i", None)], ["-", "-s"])


def test_usage_text_is_freebsds() -> None:
    assert USAGE.splitlines() == [
        "usage: switch_tls [-i | -s] local-address local-port foreign-address foreign-port",
        "       switch_tls [-i | -s] local-address:local-port foreign-address:foreign-port",
        "       switch_tls [-i | -s] local-address.local-port foreign-address.foreign-port",
        "       switch_tls [-l | -i | -s] -a",
        "       switch_tls [-l | -i | -s] -S stack",
    ]


def test_completion(ktls: Any, state: str) -> None:
    from click.shell_completion import ShellComplete

    from ktls_cli.main import cli
    from ktls_core.tls import txmode

    def complete(args: list[str], incomplete: str) -> list[str]:
        comp = ShellComplete(cli, {}, "ktls", "_KTLS_COMPLETE")
        got = comp.get_completions(["--state", state, "switch_tls", *args], incomplete)
        return [c.value for c in got]

    assert ktls("connect", "198.51.100.10:443", "198.51.100.7:1000", "--count", "2").exit == 0
    assert complete([], "") == ["198.51.100.10:443"]
    assert complete(["-i"], "198") == ["198.51.100.10:443"]
    assert complete(["-s", "198.51.100.10:443"], "") == ["198.51.100.7:1000", "198.51.100.7:1001"]
    assert complete(["-S"], "") == [txmode.DEFAULT_STACK]
    assert complete(["-lS"], "r") == []
    assert complete(["-a"], "") == []
    assert complete(["-i", "198.51.100.10:443", "198.51.100.7:1000"], "") == []
