"""`ktls ifconfig`: FreeBSD status layout (golden transcripts), parameters, errors."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

PROFILES = ("seed", "current")


def transcript(ktls: Any, commands: list[str]) -> str:
    """Each command as typed, its stdout, its stderr lines and its exit status."""
    parts = []
    for cmd in commands:
        r = ktls(*shlex.split(cmd))
        parts.append(f"$ ktls {cmd}\n{r.stdout}")
        parts += [f"[stderr] {line}\n" for line in r.stderr.splitlines()]
        parts.append(f"[exit {r.exit}]\n")
    return "".join(parts)


def dmesg(state: str) -> list[str]:
    from ktls_core.kernel import Kernel

    kernel = Kernel.open(state, create=False)
    try:
        with kernel.snapshot() as tx:
            return tx.dmesg()
    finally:
        kernel.store.close()


@pytest.fixture
def boot(state: str, init_state: Callable[..., Any]) -> Callable[[str], str]:
    def run(profile: str) -> str:
        init_state(state, profile)
        return state

    return run


# --- golden transcripts -----------------------------------------------------------------

SCENARIOS: dict[str, list[str]] = {
    # every interface of the default host, and the listing forms
    "listing": [
        "ifconfig",
        "ifconfig -a -m",
        "ifconfig -l",
        "ifconfig -l ether",
        "ifconfig -l inet6",
        "ifconfig -a inet6",
        "ifconfig -m lo0",
        "ifconfig cc1",
        "ifconfig lagg0 inet",
        "ifconfig mce0 inet6",
        "ifconfig -m mce0",
    ],
    # one of each kind: ether, loopback, lagg (failover, lacp, empty), vlan on a
    # lagg, on a port and detached, a cloned lo
    "kinds": [
        "ifconfig lagg0 txtls",
        "ifconfig vlan100 create vlan 100 vlandev lagg0 inet 233.252.0.10/24",
        "ifconfig lagg0",
        "ifconfig cc0",
        "ifconfig vlan100",
        "ifconfig -m vlan100",
        "ifconfig em0.5 create up",
        "ifconfig em0.5",
        "ifconfig vlan create",
        "ifconfig vlan0",
        "ifconfig lagg create",
        "ifconfig lagg1",
        "ifconfig lagg1 laggproto lacp laggport mce0 up",
        "ifconfig lagg1",
        "ifconfig mce0",
        "ifconfig lo create",
        "ifconfig lo1",
        "ifconfig vlan100 -txtls6 mtu 1400",
        "ifconfig vlan100",
        "ifconfig vlan100 destroy",
        "ifconfig -l",
    ],
    # failover, restore, lacp re-hash flags; -u and -d
    "failover": [
        "ifconfig cc0 down",
        "ifconfig cc0",
        "ifconfig lagg0",
        "ifconfig -l -u",
        "ifconfig -l -d",
        "ifconfig -d",
        "ifconfig cc1 down",
        "ifconfig lagg0",
        "ifconfig cc0 up",
        "ifconfig lagg0",
        "ifconfig cc1 up",
        "ifconfig lagg0 laggproto lacp",
        "ifconfig lagg0",
        "ifconfig cc1 down",
        "ifconfig lagg0",
        "ifconfig -u",
    ],
    # addresses and capabilities
    "params": [
        "ifconfig mce0 inet 203.0.113.20/25",
        "ifconfig mce0 inet 203.0.113.21 netmask 0xffffff00 alias",
        "ifconfig mce0 inet6 2001:db8:2::10/64",
        "ifconfig mce0 inet6 2001:db8:2::11 prefixlen 80 alias",
        "ifconfig mce0",
        "ifconfig mce0 203.0.113.21 -alias",
        "ifconfig mce0 inet6 2001:db8:2::11 delete",
        "ifconfig mce0 txtls4",
        "ifconfig mce0 txtls6 -txtls4 description 'uplink to the CDN'",
        "ifconfig mce0",
        "ifconfig em0 txtls",
        "ifconfig em0 -vlanhwtag -lro -wol_magic",
        "ifconfig em0",
        "ifconfig lagg0 mtu 9000 -txcsum",
        "ifconfig lagg0",
        "ifconfig cc1",
    ],
    # every diagnostic
    "errors": [
        "ifconfig foo0",
        "ifconfig foo0 up",
        "ifconfig cc0 txtls5",
        "ifconfig cc0 up mtu",
        "ifconfig lagg0 laggport",
        "ifconfig em0 inet 10.0.0.1/33",
        "ifconfig em0 inet6 2001:db8::1/129",
        "ifconfig em0 inet 198.51.100.10/24 alias",
        "ifconfig em0 inet 192.0.2.99 -alias",
        "ifconfig em0 mtu 10000",
        "ifconfig cc0 mtu 9000",
        "ifconfig lagg0 mtu 9700",
        "ifconfig cc0 destroy",
        "ifconfig lo0 destroy",
        "ifconfig lagg0 create",
        "ifconfig foo0 create",
        "ifconfig lagg create laggport cc0 laggport cc9 laggport lo0 laggport lagg0 up",
        "ifconfig lagg1",
        "ifconfig lagg1 -laggport cc0",
        "ifconfig lagg1 -laggport cc9",
        "ifconfig lagg0 laggport cc0",
        "ifconfig lagg0 laggproto fec",
        "ifconfig lagg0 lagghash l5",
        "ifconfig lagg0 lagghash ,",
        "ifconfig cc0 laggproto lacp",
        "ifconfig vlan100 create vlan 100",
        "ifconfig vlan100 create vlandev lagg0",
        "ifconfig vlan100 create vlan 100 vlandev lagg0",
        "ifconfig vlan101 create vlan 100 vlandev lagg0",
        "ifconfig vlan102 create vlan 5000 vlandev lagg0",
        "ifconfig vlan103 create vlan x vlandev lagg0",
        "ifconfig vlan100 vlan 7",
        "ifconfig vlan100 vlanpcp 9",
        "ifconfig -l -a",
        "ifconfig -d -u",
        "ifconfig -x",
        "ifconfig -a cc0",
        "ifconfig -l foo",
    ],
}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
@pytest.mark.parametrize("profile", PROFILES)
def test_golden(profile: str, scenario: str, boot: Any, ktls: Any, check_golden: Any) -> None:
    boot(profile)
    check_golden(f"ifconfig/{profile}/{scenario}.txt", transcript(ktls, SCENARIOS[scenario]))


def test_current_profile_has_txtlsrtlmt(boot: Any, ktls: Any, check_golden: Any) -> None:
    boot("current")
    commands = [
        "ifconfig mce0 txtls txtlsrtlmt",
        "ifconfig -m mce0",
        "ifconfig cc0 txtlsrtlmt",  # the T6 does not support it: dropped silently
        "ifconfig mce0 nomap",  # the 2019 keyword is gone
    ]
    check_golden("ifconfig/current/txtlsrtlmt.txt", transcript(ktls, commands))


def test_seed_profile_lacks_txtlsrtlmt(boot: Any, ktls: Any) -> None:
    boot("seed")
    r = ktls("ifconfig", "mce0", "txtlsrtlmt")
    assert (r.exit, r.stderr) == (1, "ifconfig: txtlsrtlmt: bad value\n")
    r = ktls("ifconfig", "mce0", "mextpg")
    assert (r.exit, r.stderr) == (1, "ifconfig: mextpg: bad value\n")
    assert "NOMAP" in ktls("ifconfig", "mce0").stdout


# --- behaviour ------------------------------------------------------------------------


def test_lagg_create_prints_the_name(boot: Any, ktls: Any) -> None:
    boot("seed")
    assert ktls("ifconfig", "lagg", "create").stdout == "lagg1\n"
    assert ktls("ifconfig", "lagg3", "create").stdout == ""
    assert ktls("ifconfig", "lagg", "create").stdout == "lagg2\n"


def test_parameters_apply_in_order_until_an_error(boot: Any, ktls: Any) -> None:
    boot("seed")
    r = ktls("ifconfig", "mce0", "txtls", "mtu", "99999", "-txtls")
    assert r.exit == 1
    # txtls went through, -txtls after the failing mtu did not
    assert "TXTLS4,TXTLS6" in ktls("ifconfig", "mce0").stdout


def test_laggport_failure_goes_on(boot: Any, ktls: Any) -> None:
    boot("seed")
    r = ktls("ifconfig", "lagg", "create", "laggport", "cc9", "laggport", "mce0")
    assert r.exit == 1
    assert "laggport: mce0 flags=5<MASTER,ACTIVE>" in ktls("ifconfig", "lagg1").stdout


def test_existing_interface_with_create_and_more_parameters(boot: Any, ktls: Any) -> None:
    boot("seed")
    r = ktls("ifconfig", "lagg0", "create", "mtu", "9000")
    assert (r.exit, r.stdout, r.stderr) == (0, "", "")
    assert "mtu 9000" in ktls("ifconfig", "lagg0").stdout


def test_link_state_messages_reach_dmesg(boot: Any, ktls: Any) -> None:
    state = boot("seed")
    boot_lines = dmesg(state)
    assert "lagg0: link state changed to UP" in boot_lines
    ktls("ifconfig", "cc0", "down")
    ktls("ifconfig", "cc1", "down")
    assert dmesg(state)[len(boot_lines) :] == [
        "cc0: link state changed to DOWN",
        "cc1: link state changed to DOWN",
        "lagg0: link state changed to DOWN",
    ]


def test_json_and_yaml(boot: Any, ktls: Any) -> None:
    boot("seed")
    doc = json.loads(ktls("--format", "json", "ifconfig", "lagg0").stdout)
    (lagg,) = doc["ifconfig"]
    assert lagg["name"] == "lagg0" and lagg["kind"] == "lagg" and lagg["flags"] == 0x8843
    assert lagg["lagg"]["proto"] == "failover"
    assert lagg["lagg"]["ports"][0] == {
        "name": "cc0",
        "flags": 5,
        "flags_names": ["MASTER", "ACTIVE"],
    }
    assert lagg["inet"] == [
        {
            "address": "198.51.100.10",
            "prefixlen": 24,
            "netmask": "255.255.255.0",
            "broadcast": "198.51.100.255",
        }
    ]
    assert lagg["status"] == "active" and lagg["link_state"] == "up"
    doc = json.loads(ktls("--libxo", "json", "ifconfig", "-l").stdout)
    assert doc == {"ifconfig": ["em0", "cc0", "cc1", "mce0", "lo0", "lagg0"]}
    doc = json.loads(ktls("--format", "json", "ifconfig", "lagg0", "txtls").stdout)
    assert "TXTLS4" in doc["ifconfig"][0]["options_names"]
    doc = json.loads(ktls("--format", "json", "ifconfig").stdout)
    assert [i["name"] for i in doc["ifconfig"]] == ["em0", "cc0", "cc1", "mce0", "lo0", "lagg0"]
    import yaml

    ydoc = yaml.safe_load(ktls("--format", "yaml", "ifconfig", "cc1").stdout)
    assert ydoc["ifconfig"][0]["laggdev"] == "lagg0"
    assert ydoc["ifconfig"][0]["hwaddr"] == "00:07:43:3a:1b:f8"


def test_usage_exit_status_and_text(boot: Any, ktls: Any) -> None:
    boot("seed")
    r = ktls("ifconfig", "-u", "-d")
    assert r.exit == 2 and r.stdout == ""
    assert r.stderr.startswith("usage: ktls ifconfig [-dmu] interface")


def test_help(ktls: Any) -> None:
    r = ktls("ifconfig", "--help")
    assert r.exit == 0 and "usage: ktls ifconfig" in r.stdout


def test_topology_file_via_state_init(
    state: str, tmp_path: Path, init_state: Any, ktls: Any
) -> None:
    topo = tmp_path / "host.yaml"
    topo.write_text(
        "interfaces:\n"
        "  - {name: ix0, driver: ix, ether: '00:1b:21:00:00:01', inet: [192.0.2.7/24],\n"
        "     capabilities: [RXCSUM, TXCSUM, TXTLS4], options: [RXCSUM]}\n"
        "  - {name: lo0, driver: lo, inet: [127.0.0.1/8]}\n"
    )
    init_state(state, "seed", "--topology", str(topo))
    assert ktls("ifconfig", "-l").stdout == "ix0 lo0\n"
    assert "options=1<RXCSUM>" in ktls("ifconfig", "ix0").stdout


def test_bad_topology_is_one_line(state: str, tmp_path: Path, run_ktls: Any) -> None:
    topo = tmp_path / "bad.yaml"
    topo.write_text(
        "interfaces:\n  - {name: lo0, driver: lo}\n"
        "  - {name: vlan5, driver: vlan, vlan: 5, vlandev: lagg9}\n"
    )
    r = run_ktls("state", "init", "--topology", str(topo), state=state)
    assert r.exit != 0
    assert "unknown parent interface 'lagg9'" in r.stderr


# --- completion ---------------------------------------------------------------------------


def complete(state: str, args: list[str], incomplete: str) -> list[str]:
    from click.shell_completion import ShellComplete

    from ktls_cli.main import cli

    comp = ShellComplete(cli, {}, "ktls", "_KTLS_COMPLETE")
    return [c.value for c in comp.get_completions(["--state", state, *args], incomplete)]


def test_completion(boot: Any, state: str) -> None:
    boot("current")
    assert complete(state, ["ifconfig"], "c") == ["cc0", "cc1"]
    words = complete(state, ["ifconfig", "lagg0"], "")
    assert {"up", "down", "txtls", "-txtls", "txtlsrtlmt", "laggport", "create", "inet6"} <= set(
        words
    )
    assert complete(state, ["ifconfig", "lagg0"], "txtls") == [
        "txtls",
        "txtls4",
        "txtls6",
        "txtlsrtlmt",
    ]
    assert complete(state, ["ifconfig", "lagg0", "laggport"], "m") == ["mce0"]
    assert complete(state, ["ifconfig", "lagg0", "laggproto"], "l") == ["lacp", "loadbalance"]
    assert complete(state, ["ifconfig", "lagg0", "mtu"], "") == []
    assert complete(state, ["ifconfig", "-l"], "in") == ["inet", "inet6"]


def test_completion_never_raises_and_never_boots(tmp_path: Path) -> None:
    missing = str(tmp_path / "none" / "kernel.db")
    assert complete(missing, ["ifconfig"], "") == []
    assert not Path(missing).exists()
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database")
    assert complete(str(garbage), ["ifconfig"], "") == []


# --- startup --------------------------------------------------------------------------------


def test_status_imports_no_yaml_rich_or_cryptography(boot: Any) -> None:
    state = boot("seed")
    code = (
        "import sys\n"
        "from ktls_cli.main import main\n"
        f"rc = main(['--state', {state!r}, 'ifconfig', 'cc0'])\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('yaml', 'rich', 'cryptography'))\n"
        "print(rc, heavy, file=sys.stderr)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stderr.strip() == "0 []"
    assert out.stdout.startswith("cc0: flags=8843<")


# --- man page ---------------------------------------------------------------------------------

MAN = Path(__file__).parent.parent.parent / "man"


@pytest.mark.parametrize("page", ["ktls-ifconfig.8", "ktls-route.8"])
def test_man_page_lints_clean(page: str, require_tool: Any) -> None:
    mandoc = require_tool("mandoc")
    out = subprocess.run(
        [mandoc, "-T", "lint", "-W", "style", str(MAN / page)], capture_output=True, text=True
    )
    problems = [
        line
        for line in (out.stdout + out.stderr).splitlines()
        if "referenced manual not found" not in line and "mandoc.db" not in line
    ]
    assert problems == []


def test_man_page_names_every_parameter() -> None:
    from ktls_cli.commands.ifconfig import FLAGWORDS, NEXTARG
    from ktls_core.net.ifnet import CAP_KEYWORDS

    text = (MAN / "ktls-ifconfig.8").read_text()
    words = {w.lstrip("-") for w in FLAGWORDS | NEXTARG} - {"descr"}
    words |= set(CAP_KEYWORDS["seed"]) | set(CAP_KEYWORDS["current"])
    missing = sorted(
        w
        for w in words
        if not any(
            f"{m} {w}" in text or f" {w} ," in text or f" {w}\n" in text for m in ("Cm", "Fl")
        )
    )
    assert missing == []
    for section in ("EXIT STATUS", "EXAMPLES", "TOPOLOGY", "DIAGNOSTICS"):
        assert f".Sh {section}" in text


def test_json_create_is_one_document(boot: Any, ktls: Any) -> None:
    boot("seed")
    r = ktls("--format", "json", "ifconfig", "lagg", "create", "laggport", "mce0")
    (lagg,) = json.loads(r.stdout)["ifconfig"]
    assert lagg["name"] == "lagg1" and lagg["lagg"]["ports"][0]["name"] == "mce0"
