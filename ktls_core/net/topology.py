"""Topology files: the simulated host's interfaces and static routes, in YAML.

`load_topology(path, era)` reads a file, `network_from_default(era)` the
package's `profiles/topology-default.yaml`; both build the `Network` through
the same operations ifconfig and route use (as rc.d would at boot), so a file
cannot describe a state the tools could not reach. Any problem raises
`TopologyError` with one line naming the file and the entry.

Schema (version 1)::

    version: 1                      # optional; 1 is the only version
    interfaces:                     # in ifindex order (index = position + 1)
      - name: cc0                   # required; unique; letters then a unit
        driver: cxgbe               # required. lo -> loopback, lagg -> lagg,
                                    # vlan -> vlan; any other word is an
                                    # Ethernet NIC driver (em, cxgbe, mlx5en
                                    # have built-in defaults for the keys below)
        description: "T6 port 0"    # optional
        ether: "00:07:43:3a:1b:f0"  # factory MAC; required for a NIC
        mtu: 1500                   # optional (NIC 1500, lo 16384)
        mtu_max: 9600               # optional: the driver's largest MTU
        up: true                    # optional, default true
        carrier: true               # optional (NIC): cable plugged in
        capabilities: [RXCSUM, TXCSUM, TSO4, NOMAP, TXTLS4, TXTLS6]
                                    # NIC and lo: supported IFCAP names as
                                    # ifconfig prints them (NOMAP and MEXTPG
                                    # are the same bit; also HWSTATS, NV)
        options: [RXCSUM, TXCSUM, TSO4, NOMAP]
                                    # NIC and lo: enabled; within capabilities
        media: "100GBase-CR4 <full-duplex>"   # NIC: active media
        media_supported: ["autoselect", "100GBase-CR4 mediaopt full-duplex"]
        inet: [198.51.100.10/24]    # addresses, in order (first = primary)
        inet6: [2001:db8:1::10/64]  # a NIC/lagg/vlan also gets its EUI-64
                                    # link-local, as rc.d's -ifdisabled does
        groups: [uplink]            # extra interface groups
        # vlan only (both or neither):
        vlan: 100                   # tag, 0..4094
        vlandev: lagg0              # parent, defined above
        vlanpcp: 0                  # optional, 0..7
        vlanproto: 802.1q           # optional: 802.1q or 802.1ad
        # lagg only:
        laggproto: failover         # failover lacp loadbalance roundrobin
                                    # broadcast none
        laggports: [cc0, cc1]       # defined above; the first is the primary
        lagghash: [l2, l3, l4]      # optional
    routes:                         # optional static routes, applied in order
      - destination: default        # default, A.B.C.D/LEN, A.B.C.D (host), IPv6
        gateway: 192.0.2.1          # or interface: cc1 (an interface route)
        reject: false               # optional
        blackhole: false            # optional

There must be a loopback interface named lo0 (local addresses route through
it). Interfaces are configured in file order, so a vlan's parent and a lagg's
ports must come before it.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any

from ktls_core.errors import KtlsError
from ktls_core.net import route as rt
from ktls_core.net.ifnet import (
    ETHER,
    ETHER_IFF,
    ETHERTYPE_QINQ,
    ETHERTYPE_VLAN,
    IFCAP_BY_NAME,
    IFNAMSIZ,
    LAGG,
    LAGG_HASHES,
    LAGG_PROTOS,
    LO_CAPS,
    LOOPBACK,
    LOOPBACK_IFF,
    ND6_ENABLED,
    VLAN,
    Interface,
    Network,
    check_era,
    normalize_mac,
)

DEFAULT_TOPOLOGY = Path(__file__).resolve().parent.parent / "profiles" / "topology-default.yaml"


class TopologyError(ValueError):
    """A bad topology file; the message is one line naming the file and entry."""


# Built-in driver defaults: what the attach routine of each driver sets up.
_E1000 = [
    "RXCSUM", "TXCSUM", "VLAN_MTU", "VLAN_HWTAGGING", "JUMBO_MTU", "VLAN_HWCSUM",
    "TSO4", "TSO6", "LRO", "WOL_UCAST", "WOL_MCAST", "WOL_MAGIC", "VLAN_HWFILTER",
    "VLAN_HWTSO", "RXCSUM_IPV6", "TXCSUM_IPV6", "HWSTATS", "NOMAP",
]  # fmt: skip
_CXGBE = [
    "RXCSUM", "TXCSUM", "VLAN_MTU", "VLAN_HWTAGGING", "JUMBO_MTU", "VLAN_HWCSUM",
    "TSO4", "TSO6", "LRO", "TOE4", "TOE6", "VLAN_HWTSO", "LINKSTATE", "RXCSUM_IPV6",
    "TXCSUM_IPV6", "HWRXTSTMP", "NOMAP", "TXTLS4", "TXTLS6",
]  # fmt: skip
_MLX5 = [
    "RXCSUM", "TXCSUM", "VLAN_MTU", "VLAN_HWTAGGING", "JUMBO_MTU", "VLAN_HWCSUM",
    "TSO4", "TSO6", "LRO", "VLAN_HWFILTER", "VLAN_HWTSO", "LINKSTATE", "RXCSUM_IPV6",
    "TXCSUM_IPV6", "HWSTATS", "TXRTLMT", "HWRXTSTMP", "NOMAP", "TXTLS4", "TXTLS6",
    "VXLAN_HWCSUM", "VXLAN_HWTSO", "TXTLS_RTLMT",
]  # fmt: skip
# What a NIC driver leaves off at attach (em: TSO, WOL unicast/multicast;
# everyone: TOE and TLS, which the administrator switches on).
_EM_OFF = {"TSO4", "TSO6", "WOL_UCAST", "WOL_MCAST", "VLAN_HWTSO", "JUMBO_MTU", "RXCSUM_IPV6",
           "TXCSUM_IPV6"}  # fmt: skip
_OFF = {"TOE4", "TOE6", "TXTLS4", "TXTLS6", "TXTLS_RTLMT"}

DRIVERS: dict[str, dict[str, Any]] = {
    "em": {
        "mtu_max": 9216,
        "capabilities": _E1000,
        "options": [c for c in _E1000 if c not in _EM_OFF | {"TSO4", "TSO6"}],
        "media": "1000baseT <full-duplex>",
        "media_supported": [
            "autoselect",
            "1000baseT",
            "1000baseT mediaopt full-duplex",
            "100baseTX mediaopt full-duplex",
            "100baseTX",
            "10baseT/UTP mediaopt full-duplex",
            "10baseT/UTP",
        ],
    },
    "cxgbe": {
        "mtu_max": 9600,
        "capabilities": _CXGBE,
        "options": [c for c in _CXGBE if c not in _OFF],
        "media": "100GBase-CR4 <full-duplex>",
        "media_supported": [
            "autoselect",
            "100GBase-CR4 mediaopt full-duplex",
            "50GBase-CR2 mediaopt full-duplex",
            "40Gbase-CR4 mediaopt full-duplex",
            "25GBase-CR mediaopt full-duplex",
        ],
    },
    "mlx5en": {
        "mtu_max": 9600,
        "capabilities": _MLX5,
        "options": [c for c in _MLX5 if c not in _OFF],
        "media": "100GBase-CR4 <full-duplex,rxpause,txpause>",
        "media_supported": [
            "autoselect",
            "100GBase-CR4 mediaopt full-duplex",
            "100GBase-SR4 mediaopt full-duplex",
            "50GBase-CR2 mediaopt full-duplex",
            "40Gbase-CR4 mediaopt full-duplex",
            "25GBase-CR mediaopt full-duplex",
        ],
    },
}

_COMMON_KEYS = {"name", "driver", "description", "mtu", "up", "inet", "inet6", "groups"}
_KEYS = {
    ETHER: _COMMON_KEYS
    | {"ether", "mtu_max", "carrier", "capabilities", "options", "media", "media_supported"},
    LOOPBACK: _COMMON_KEYS | {"capabilities", "options"},
    VLAN: _COMMON_KEYS | {"vlan", "vlandev", "vlanpcp", "vlanproto"},
    LAGG: _COMMON_KEYS | {"laggproto", "laggports", "lagghash"},
}
_ROUTE_KEYS = {"destination", "gateway", "interface", "reject", "blackhole"}
_NAME_RE = re.compile(r"[a-z][a-z0-9_]*?[0-9]+(\.[0-9]+)?")


def load_topology(path: str | Path, era: str = "seed") -> Network:
    """Read a topology file; TopologyError with a one-line message if it is bad."""
    import yaml  # only here: the commands that read the state never need it

    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise TopologyError(f"{source}: {e.strerror or e}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise TopologyError(f"{source}: bad YAML{where}: {problem}") from None
    return build_network(data, source, era)


def network_from_default(era: str = "seed") -> Network:
    """The default host of DESIGN §2."""
    return load_topology(DEFAULT_TOPOLOGY, era)


def build_network(data: object, source: str, era: str = "seed") -> Network:
    """Build a Network from parsed YAML (see the module docstring for the schema)."""
    check_era(era)
    if not isinstance(data, dict):
        raise TopologyError(f"{source}: expected a mapping with 'interfaces'")
    unknown = set(data) - {"version", "interfaces", "routes"}
    if unknown:
        raise TopologyError(f"{source}: unknown key {sorted(unknown)[0]!r}")
    if data.get("version", 1) != 1:
        raise TopologyError(f"{source}: unsupported version {data.get('version')!r}")
    entries = data.get("interfaces")
    if not isinstance(entries, list) or not entries:
        raise TopologyError(f"{source}: 'interfaces' must be a non-empty list")
    net = Network(era)
    ctxs: list[tuple[str, dict[str, Any]]] = []
    for i, entry in enumerate(entries):
        where = f"{source}: interfaces[{i}]"
        if not isinstance(entry, dict):
            raise TopologyError(f"{where}: expected a mapping")
        name = entry.get("name")
        if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or len(name) >= IFNAMSIZ:
            raise TopologyError(f"{where}: bad or missing interface name {name!r}")
        where = f"{source}: interfaces[{i}] ({name})"
        if name in net.interfaces:
            raise TopologyError(f"{where}: duplicate interface name {name!r}")
        try:
            _attach(net, entry, name, where)
        except KtlsError as e:
            raise TopologyError(f"{where}: {e.detail or e.strerror}") from None
        ctxs.append((where, entry))
    lo = net.interfaces.get("lo0")
    if lo is None or lo.kind != LOOPBACK:
        raise TopologyError(f"{source}: there must be a loopback interface lo0 (driver: lo)")
    for where, entry in ctxs:
        try:
            _configure(net, entry, entry["name"], where)
        except KtlsError as e:
            raise TopologyError(f"{where}: {e.detail or e.strerror}") from None
    routes = data.get("routes") or []
    if not isinstance(routes, list):
        raise TopologyError(f"{source}: 'routes' must be a list")
    for i, entry in enumerate(routes):
        _add_route(net, entry, f"{source}: routes[{i}]")
    return net


def _kind(driver: str) -> str:
    return {"lo": LOOPBACK, "lagg": LAGG, "vlan": VLAN}.get(driver, ETHER)


def _str_list(entry: dict[str, Any], key: str, where: str) -> list[str]:
    value = entry.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, (str, int)) for v in value):
        raise TopologyError(f"{where}: '{key}' must be a list of strings")
    return [str(v) for v in value]


def _int(entry: dict[str, Any], key: str, where: str, default: int) -> int:
    value = entry.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise TopologyError(f"{where}: '{key}' must be an integer")
    return value


def _bool(entry: dict[str, Any], key: str, where: str, default: bool) -> bool:
    value = entry.get(key, default)
    if not isinstance(value, bool):
        raise TopologyError(f"{where}: '{key}' must be true or false")
    return value


def _capbits(names: list[str], where: str, key: str) -> int:
    bits = 0
    for n in names:
        if n.upper() not in IFCAP_BY_NAME:
            raise TopologyError(f"{where}: unknown capability {n!r} in '{key}'")
        bits |= IFCAP_BY_NAME[n.upper()]
    return bits


def _attach(net: Network, entry: dict[str, Any], name: str, where: str) -> None:
    """if_attach() or the cloner's create: the interface exists, unconfigured."""
    driver = entry.get("driver")
    if not isinstance(driver, str) or not driver:
        raise TopologyError(f"{where}: missing 'driver'")
    kind = _kind(driver)
    unknown = set(entry) - _KEYS[kind]
    if unknown:
        raise TopologyError(f"{where}: unknown key {sorted(unknown)[0]!r} for a {kind} interface")
    if kind in (LAGG, VLAN) or (kind == LOOPBACK and name != "lo0"):
        prefix = {LAGG: "lagg", VLAN: "vlan", LOOPBACK: "lo"}[kind]
        if not re.fullmatch(rf"{prefix}\d+", name) and not (kind == VLAN and "." in name):
            raise TopologyError(f"{where}: a {driver} interface must be named {prefix}N")
        iface = net.new_cloned(name, prefix)
    else:
        defaults = DRIVERS.get(driver, {})
        iface = Interface(name=name, index=net.next_index, kind=kind, driver=driver)
        net.interfaces[name] = iface
        net.next_index += 1
        if kind == LOOPBACK:
            iface.flags, iface.mtu, iface.mtu_max = LOOPBACK_IFF, 16384, 65535
            iface.cloned = True
            iface.groups = ["lo"]
            iface.nd6 = ND6_ENABLED
            iface.capabilities = iface.capenable = LO_CAPS
        else:
            iface.flags = ETHER_IFF
            mac = entry.get("ether")
            if not isinstance(mac, str):
                raise TopologyError(f"{where}: missing 'ether' (the NIC's MAC address)")
            try:
                iface.hwaddr = iface.mac = normalize_mac(mac)
            except ValueError as e:
                raise TopologyError(f"{where}: {e}") from None
            iface.mtu_max = _int(entry, "mtu_max", where, int(defaults.get("mtu_max", 9000)))
            iface.carrier = _bool(entry, "carrier", where, True)
            iface.media = "autoselect"
            media = entry.get("media", defaults.get("media", "autoselect"))
            if not isinstance(media, str):
                raise TopologyError(f"{where}: 'media' must be a string")
            iface.media_active = media
            supported = entry.get(
                "media_supported", defaults.get("media_supported", ["autoselect"])
            )
            if not isinstance(supported, list):
                raise TopologyError(f"{where}: 'media_supported' must be a list of strings")
            iface.media_supported = [str(m) for m in supported]
        if "capabilities" in entry or kind == ETHER:
            caps = (
                _str_list(entry, "capabilities", where)
                if "capabilities" in entry
                else list(defaults.get("capabilities", []))
            )
            iface.capabilities = _capbits(caps, where, "capabilities")
            opts = (
                _str_list(entry, "options", where)
                if "options" in entry
                else list(defaults.get("options", caps))
            )
            enabled = _capbits(opts, where, "options")
            extra = enabled & ~iface.capabilities
            if extra:
                raise TopologyError(f"{where}: 'options' has {extra:#x} that 'capabilities' lacks")
            iface.capenable = enabled
    if "description" in entry:
        iface.description = str(entry["description"])
    iface.groups += [g for g in _str_list(entry, "groups", where) if g not in iface.groups]
    if "mtu" in entry:
        iface.mtu = _int(entry, "mtu", where, iface.mtu)


def _addr(text: str, where: str, family: str) -> tuple[str, int]:
    try:
        iface = ipaddress.ip_interface(text)
    except ValueError:
        raise TopologyError(f"{where}: bad {family} address {text!r}") from None
    if (iface.version == 4) != (family == "inet") or "/" not in text:
        raise TopologyError(f"{where}: bad {family} address {text!r} (want ADDR/LEN)")
    return str(iface.ip), iface.network.prefixlen


def _configure(net: Network, entry: dict[str, Any], name: str, where: str) -> None:
    """What rc.d's ifconfig_IF lines do, in the order they do it."""
    iface = net.interfaces[name]
    if iface.kind == VLAN:
        tag, dev = entry.get("vlan"), entry.get("vlandev")
        if (tag is None) != (dev is None):
            raise TopologyError(f"{where}: both 'vlan' and 'vlandev' must be given")
        if tag is not None:
            if not isinstance(tag, int) or isinstance(tag, bool):
                raise TopologyError(f"{where}: 'vlan' must be an integer")
            if not isinstance(dev, str) or dev not in net.interfaces or _after(net, dev, name):
                raise TopologyError(f"{where}: unknown parent interface {dev!r} (define it above)")
            proto_name = entry.get("vlanproto", "802.1q")
            protos = {"802.1q": ETHERTYPE_VLAN, "802.1ad": ETHERTYPE_QINQ}
            if proto_name not in protos:
                raise TopologyError(f"{where}: bad vlanproto {proto_name!r}")
            net.set_vlan(name, tag, dev, proto=protos[proto_name])
            net.set_vlanpcp(name, _int(entry, "vlanpcp", where, 0))
    if iface.kind == LAGG:
        proto = entry.get("laggproto", "failover")
        if proto not in LAGG_PROTOS:
            raise TopologyError(f"{where}: bad laggproto {proto!r}")
        net.set_laggproto(name, proto)
        hashes = _str_list(entry, "lagghash", where) if "lagghash" in entry else list(LAGG_HASHES)
        if not hashes or any(h not in LAGG_HASHES for h in hashes):
            raise TopologyError(f"{where}: bad lagghash {','.join(hashes)!r}")
        net.set_lagghash(name, hashes)
        for port in _str_list(entry, "laggports", where):
            if port not in net.interfaces or _after(net, port, name):
                raise TopologyError(f"{where}: unknown lagg port {port!r} (define it above)")
            net.add_laggport(name, port)
    net.set_up(name, _bool(entry, "up", where, True))
    if "mtu" in entry and net.lagg_of(name) is None:
        net.set_mtu(name, _int(entry, "mtu", where, iface.mtu))
    inet = [_addr(a, where, "inet") for a in _str_list(entry, "inet", where)]
    inet6 = [_addr(a, where, "inet6") for a in _str_list(entry, "inet6", where)]
    if iface.kind == LOOPBACK:
        # in6_ifattach() gives lo0 its inet6 addresses when it attaches
        for a, plen in inet6:
            net.add_addr(name, a, plen, alias=True)
        for a, plen in inet:
            net.add_addr(name, a, plen, alias=True)
        return
    for a, plen in inet:
        net.add_addr(name, a, plen, alias=True)
    if inet6:
        net.set_ifdisabled(name, False)  # rc.d: ifconfig IF inet6 -ifdisabled first
        for a, plen in inet6:
            net.add_addr(name, a, plen, alias=True)


def _after(net: Network, ref: str, name: str) -> bool:
    return net.interfaces[ref].index >= net.interfaces[name].index


def _add_route(net: Network, entry: object, where: str) -> None:
    if not isinstance(entry, dict):
        raise TopologyError(f"{where}: expected a mapping")
    unknown = set(entry) - _ROUTE_KEYS
    if unknown:
        raise TopologyError(f"{where}: unknown key {sorted(unknown)[0]!r}")
    dest = entry.get("destination")
    if not isinstance(dest, str):
        raise TopologyError(f"{where}: missing 'destination'")
    gateway, interface = entry.get("gateway"), entry.get("interface")
    if (gateway is None) == (interface is None):
        raise TopologyError(f"{where}: give exactly one of 'gateway' and 'interface'")
    family = "inet6" if ":" in dest or (isinstance(gateway, str) and ":" in gateway) else "inet"
    try:
        if dest == "default":
            network = "::/0" if family == "inet6" else "0.0.0.0/0"
        else:
            network = str(ipaddress.ip_network(dest, strict=True))
    except ValueError:
        raise TopologyError(f"{where}: bad destination {dest!r}") from None
    if interface is not None and interface not in net.interfaces:
        raise TopologyError(f"{where}: unknown interface {interface!r}")
    if gateway is not None:
        try:
            rt.parse_addr(str(gateway))
        except ValueError:
            raise TopologyError(f"{where}: bad gateway {gateway!r}") from None
    try:
        rt.add_route(
            net,
            network,
            gateway=None if gateway is None else str(gateway),
            interface=interface,
            reject=_bool(entry, "reject", where, False),
            blackhole=_bool(entry, "blackhole", where, False),
        )
    except KtlsError as e:
        raise TopologyError(f"{where}: {dest}: {e.detail or e.strerror}") from None
