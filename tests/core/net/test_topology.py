"""Topology files: the default host and one-line errors for bad files."""

from __future__ import annotations

from pathlib import Path

import pytest

from ktls_core.net import route as rt
from ktls_core.net.ifnet import IFCAP_TXTLS, Network
from ktls_core.net.topology import (
    DEFAULT_TOPOLOGY,
    TopologyError,
    load_topology,
    network_from_default,
)

MINI = """\
interfaces:
  - {name: em0, driver: em, ether: "00:1b:21:00:00:01", inet: [192.0.2.10/24]}
  - {name: lo0, driver: lo, inet: [127.0.0.1/8], inet6: ["::1/128"]}
"""


CC0 = "  - {name: cc0, driver: cxgbe, ether: '00:07:43:00:00:01', "


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "topo.yaml"
    p.write_text(text)
    return p


def test_default_file_is_in_the_package() -> None:
    assert DEFAULT_TOPOLOGY.is_file()


def test_default_host_matches_design(era: str) -> None:
    net = network_from_default(era)
    assert net.era == era
    v4 = {i.name: [f"{a.addr}/{a.prefixlen}" for a in i.addrs if a.family == "inet"]
          for i in net.interfaces.values()}  # fmt: skip
    assert v4 == {
        "em0": ["192.0.2.10/24"],
        "cc0": [],
        "cc1": [],
        "mce0": ["203.0.113.10/24"],
        "lo0": ["127.0.0.1/8"],
        "lagg0": ["198.51.100.10/24"],
    }
    assert [a.addr for a in net.get("lo0").addrs if a.family == "inet6"] == ["::1", "fe80::1"]
    assert "2001:db8:1::10" in [a.addr for a in net.get("lagg0").addrs]
    assert {n: net.get(n).driver for n in ("em0", "cc0", "mce0")} == {
        "em0": "em",
        "cc0": "cxgbe",
        "mce0": "mlx5en",
    }
    default = rt.find_route(net, "0.0.0.0/0")
    assert default is not None and default.gateway == "192.0.2.1" and default.ifname == "em0"
    # only documentation ranges (and loopback/link-local) anywhere
    import ipaddress

    doc = [ipaddress.ip_network(n) for n in
           ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32",
            "127.0.0.0/8", "::1/128", "fe80::/10")]  # fmt: skip
    for iface in net.interfaces.values():
        for a in iface.addrs:
            assert any(a.ip in n for n in doc), a


def test_minimal_file(tmp_path: Path) -> None:
    net = load_topology(write(tmp_path, MINI))
    assert net.names() == ["em0", "lo0"]
    # em's built-in driver defaults apply when the file omits them
    assert net.options("em0") == 0x481249B
    assert net.get("em0").media_active == "1000baseT <full-duplex>"


def test_vlan_and_lacp_file(tmp_path: Path) -> None:
    text = (
        MINI
        + """\
  - {name: cc0, driver: cxgbe, ether: "00:07:43:00:00:01",
     options: [RXCSUM, TXCSUM, VLAN_MTU, VLAN_HWTAGGING, VLAN_HWCSUM, VLAN_HWTSO, NOMAP,
               TXTLS4, TXTLS6]}
  - {name: cc1, driver: cxgbe, ether: "00:07:43:00:00:09", carrier: false,
     options: [RXCSUM, TXCSUM, VLAN_MTU, VLAN_HWTAGGING, VLAN_HWCSUM, VLAN_HWTSO, NOMAP,
               TXTLS4, TXTLS6]}
  - {name: lagg0, driver: lagg, laggproto: lacp, laggports: [cc1, cc0], lagghash: [l3, l4]}
  - {name: vlan100, driver: vlan, vlan: 100, vlandev: lagg0, vlanpcp: 3,
     inet: [198.51.100.10/24]}
routes:
  - {destination: 203.0.113.0/24, gateway: 198.51.100.1}
  - {destination: 233.252.0.0/24, interface: vlan100}
"""
    )
    net = load_topology(write(tmp_path, text))
    lagg = net.get("lagg0").lagg
    assert lagg is not None and lagg.proto == "lacp" and lagg.primary == "cc1"
    assert lagg.hash == ["l3", "l4"]
    assert net.options("vlan100") & IFCAP_TXTLS == IFCAP_TXTLS
    vlan = net.get("vlan100").vlan
    assert vlan is not None and vlan.pcp == 3
    assert rt.egress(net, "203.0.113.9", 1).path == ("vlan100", "lagg0", "cc0")  # cc1: no carrier


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("interfaces: [\n", "bad YAML at line 2"),
        ("- a\n", "expected a mapping with 'interfaces'"),
        ("interfaces: []\n", "'interfaces' must be a non-empty list"),
        ("interfaces: [{name: lo0, driver: lo}]\nextra: 1\n", "unknown key 'extra'"),
        (
            MINI + "  - {name: em0, driver: em, ether: '00:1b:21:00:00:02'}\n",
            "interfaces[2] (em0): duplicate interface name 'em0'",
        ),
        (
            MINI + "  - {name: vlan5, driver: vlan, vlan: 5, vlandev: lagg9}\n",
            "interfaces[2] (vlan5): unknown parent interface 'lagg9' (define it above)",
        ),
        (
            MINI + "  - {name: vlan5, driver: vlan, vlan: 5}\n",
            "both 'vlan' and 'vlandev' must be given",
        ),
        (
            MINI + "  - {name: lagg0, driver: lagg, laggports: [cc7]}\n",
            "interfaces[2] (lagg0): unknown lagg port 'cc7'",
        ),
        (MINI + "  - {name: lagg0, driver: lagg, laggproto: fec}\n", "bad laggproto 'fec'"),
        (
            MINI + CC0 + "inet: [192.0.2.300/24]}\n",
            "interfaces[2] (cc0): bad inet address '192.0.2.300/24'",
        ),
        (MINI + CC0 + "inet6: [192.0.2.3/24]}\n", "bad inet6 address '192.0.2.3/24'"),
        (
            MINI + CC0 + "capabilities: [TXTLS5]}\n",
            "interfaces[2] (cc0): unknown capability 'TXTLS5' in 'capabilities'",
        ),
        (
            MINI + CC0 + "capabilities: [RXCSUM], options: [TXTLS4]}\n",
            "'options' has 0x8000000 that 'capabilities' lacks",
        ),
        (MINI + "  - {name: cc0, driver: cxgbe, ether: 'zz:07:43:00:00:01'}\n", "bad MAC address"),
        (MINI + "  - {name: cc0, driver: cxgbe}\n", "missing 'ether'"),
        (MINI + CC0 + "colour: red}\n", "unknown key 'colour' for a ether interface"),
        (MINI + "  - {name: Bad, driver: em}\n", "bad or missing interface name 'Bad'"),
        (MINI + "  - {name: lagg0, driver: vlan}\n", "a vlan interface must be named vlanN"),
        (MINI + CC0 + "inet: [192.0.2.10/24]}\n", "interfaces[2] (cc0): 192.0.2.10 is on em0"),
        (
            "interfaces: [{name: em0, driver: em, ether: '00:1b:21:00:00:01'}]\n",
            "there must be a loopback interface lo0",
        ),
        (
            MINI + "routes: [{destination: default, gateway: 10.9.9.9}]\n",
            "routes[0]: default: gateway 10.9.9.9 is not on a connected network",
        ),
        (
            MINI + "routes: [{destination: default, gateway: 192.0.2.1}, "
            "{destination: default, gateway: 192.0.2.2}]\n",
            "routes[1]: default: route already in table",
        ),
        (
            MINI + "routes: [{destination: 10.0.0.0/33, gateway: 192.0.2.1}]\n",
            "routes[0]: bad destination '10.0.0.0/33'",
        ),
        (
            MINI + "routes: [{destination: 10.0.0.0/8}]\n",
            "routes[0]: give exactly one of 'gateway' and 'interface'",
        ),
        (
            MINI + "routes: [{destination: 10.0.0.0/8, interface: cc9}]\n",
            "routes[0]: unknown interface 'cc9'",
        ),
    ],
)
def test_bad_files_give_one_line(tmp_path: Path, text: str, message: str) -> None:
    p = write(tmp_path, text)
    with pytest.raises(TopologyError) as e:
        load_topology(p)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(f"{p}: ")
    assert message in msg


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(TopologyError, match="No such file"):
        load_topology(tmp_path / "nope.yaml")


def test_topology_error_is_a_value_error() -> None:
    assert issubclass(TopologyError, ValueError)


def test_loaded_network_round_trips(tmp_path: Path) -> None:
    net = load_topology(write(tmp_path, MINI), era="current")
    assert Network.from_dict(net.to_dict()) == net
