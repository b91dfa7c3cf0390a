"""`ktls route` and the netstat -r renderer: golden transcripts, egress moves, errors."""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable
from typing import Any

import pytest

PROFILES = ("seed", "current")


def transcript(ktls: Any, commands: list[str]) -> str:
    parts = []
    for cmd in commands:
        r = ktls(*shlex.split(cmd))
        parts.append(f"$ ktls {cmd}\n{r.stdout}")
        parts += [f"[stderr] {line}\n" for line in r.stderr.splitlines()]
        parts.append(f"[exit {r.exit}]\n")
    return "".join(parts)


@pytest.fixture
def boot(state: str, init_state: Callable[..., Any]) -> Callable[[str], str]:
    def run(profile: str) -> str:
        init_state(state, profile)
        return state

    return run


SCENARIOS: dict[str, list[str]] = {
    "table": [
        "route show",
        "route -n show",
        "route -4 show",
        "route -6 -n show",
    ],
    "get": [
        "route get 203.0.113.5",
        "route get default",
        "route -n get default",
        "route get 233.252.0.1",
        "route get 198.51.100.10",
        "route get 127.0.0.1",
        "route -n get 127.0.0.1",
        "route get 2001:db8:1::77",
        "route get fe80::5%lagg0",
        "route get ::ffff:192.0.2.1",
        "route get 198.51.100.0/24",
        "route show 192.0.2.1",
        "route get 2001:db8:9::1",
        "route get 198.51.100.0/25",
    ],
    "modify": [
        "route add 233.252.0.0/24 198.51.100.1",
        "route add 192.0.2.99 -interface cc1",
        "route add -net 10.1.2.0 192.0.2.1",
        "route add 10.0.0.0 192.0.2.1",
        "route add -host 10.9.9.9 192.0.2.1",
        "route add 172.16.0.0 -netmask 255.240.0.0 203.0.113.1",
        "route -6 add default 2001:db8:1::1",
        "route add 2001:db8:2::/48 2001:db8:1::1",
        "route add 203.0.113.128/25 -interface 198.51.100.10",
        "route add 233.252.1.0/24 192.0.2.1 -reject",
        "route -q add 233.252.2.0/24 192.0.2.1",
        "route -n show",
        "route get 233.252.0.9",
        "route change 233.252.0.0/24 192.0.2.1",
        "route get 233.252.0.9",
        "route change 233.252.0.0/24 -interface mce0",
        "route get 233.252.0.9",
        "route delete 233.252.0.0/24",
        "route del 192.0.2.99 cc1 -interface",
        "route -6 delete default",
        "route -n show",
    ],
    "errors": [
        "route add 233.252.0.0/24 198.51.100.1",
        "route add 233.252.0.0/24 198.51.100.1",
        "route add default 192.0.2.2",
        "route -q add default 192.0.2.2",
        "route delete 10.0.0.0/8",
        "route change 10.0.0.0/8 192.0.2.1",
        "route delete 198.51.100.0/24",
        "route delete 192.0.2.10",
        "route change 198.51.100.0/24 192.0.2.1",
        "route add 172.16.0.0/12 100.64.0.1",
        "route add 10.0.0.0/8 233.252.0.9",
        "route add 10.0.0.0/8 -interface cc9",
        "route add foo 192.0.2.1",
        "route add 10.0.0.0/8 bar",
        "route add 10.0.0.0/8 2001:db8::1",
        "route add 10.0.0.0/33 192.0.2.1",
        "route add 10.0.0.0/8",
        "route frob 10.0.0.0/8",
        "route add -frob 10.0.0.0/8 192.0.2.1",
        "route",
        "route -x show",
        "route get",
        "route add -fib 1 10.0.0.0/8 192.0.2.1",
    ],
}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
@pytest.mark.parametrize("profile", PROFILES)
def test_golden(profile: str, scenario: str, boot: Any, ktls: Any, check_golden: Any) -> None:
    boot(profile)
    check_golden(f"route/{profile}/{scenario}.txt", transcript(ktls, SCENARIOS[scenario]))


def test_netstat_r_renderer_matches_route_show(boot: Any, ktls: Any) -> None:
    from ktls_cli.commands.route import netstat_r_document, render_netstat_r
    from ktls_core.kernel import Kernel
    from ktls_core.net import store

    state = boot("seed")
    kernel = Kernel.open(state, create=False)
    try:
        with kernel.snapshot() as tx:
            net = store.load(tx)
    finally:
        kernel.store.close()
    lines = render_netstat_r(net, numeric=True)
    assert ktls("route", "-n", "show").stdout == "\n".join(lines) + "\n"
    assert lines[:5] == [
        "Routing tables",
        "",
        "Internet:",
        "Destination        Gateway            Flags     Netif Expire",
        "default            192.0.2.1          UGS         em0",
    ]
    assert (
        "Destination                       Gateway                       Flags     Netif Expire"
        in lines
    )
    doc = netstat_r_document(net, numeric=True, families=("inet",))
    (fam,) = doc["route-information"]["route-table"]["rt-family"]
    assert fam["address-family"] == "Internet"
    assert fam["rt-entry"][0] == {
        "destination": "default",
        "gateway": "192.0.2.1",
        "flags": "UGS",
        "flags_pretty": ["up", "gateway", "static"],
        "interface-name": "em0",
    }


def test_json_documents(boot: Any, ktls: Any) -> None:
    boot("seed")
    doc = json.loads(ktls("--format", "json", "route", "get", "233.252.0.1").stdout)
    assert doc["route"]["interface"] == "em0" and doc["route"]["gateway"] == "192.0.2.1"
    assert doc["route"]["flags_names"] == ["UP", "GATEWAY", "DONE", "STATIC"]
    doc = json.loads(
        ktls("--format", "json", "route", "add", "233.252.0.0/24", "198.51.100.1").stdout
    )
    assert doc == {
        "route": {
            "command": "add",
            "type": "net",
            "destination": "233.252.0.0/24",
            "gateway": "198.51.100.1",
            "fib": 0,
            "error": None,
        }
    }
    r = ktls("--format", "json", "route", "add", "233.252.0.0/24", "198.51.100.1")
    assert r.exit == 1 and json.loads(r.stdout)["route"]["error"] == "route already in table"
    doc = json.loads(ktls("--format", "json", "route", "show").stdout)
    assert "route-information" in doc["route"]


def test_route_change_moves_a_connections_egress(boot: Any, ktls: Any) -> None:
    from ktls_core.kernel import Kernel
    from ktls_core.net import route as rt
    from ktls_core.net import store

    state = boot("seed")

    def egress() -> tuple[str, str]:
        kernel = Kernel.open(state, create=False)
        try:
            with kernel.snapshot() as tx:
                e = rt.egress(store.load(tx), "233.252.0.5", 7)
        finally:
            kernel.store.close()
        return e.ifname, e.port

    assert egress() == ("em0", "em0")
    assert ktls("route", "add", "233.252.0.0/24", "198.51.100.1").exit == 0
    assert egress() == ("lagg0", "cc0")
    assert ktls("ifconfig", "cc0", "down").exit == 0
    assert egress() == ("lagg0", "cc1")
    assert ktls("route", "change", "233.252.0.0/24", "203.0.113.1").exit == 0
    assert egress() == ("mce0", "mce0")


def test_help_and_usage(ktls: Any) -> None:
    r = ktls("route", "--help")
    assert r.exit == 0 and "usage: ktls route" in r.stdout
    r = ktls("route")
    assert (r.exit, r.stderr) == (
        2,
        "route: usage: ktls route [-46nq] command [[modifiers] args]\n",
    )


def complete(state: str, args: list[str], incomplete: str) -> list[str]:
    from click.shell_completion import ShellComplete

    from ktls_cli.main import cli

    comp = ShellComplete(cli, {}, "ktls", "_KTLS_COMPLETE")
    return [c.value for c in comp.get_completions(["--state", state, *args], incomplete)]


def test_completion(boot: Any, state: str) -> None:
    boot("seed")
    assert complete(state, ["route"], "") == ["add", "delete", "del", "change", "get", "show"]
    assert complete(state, ["route", "add", "10.0.0.0/8", "-interface"], "c") == ["cc0", "cc1"]
    assert complete(state, ["route", "add"], "d") == ["default"]
