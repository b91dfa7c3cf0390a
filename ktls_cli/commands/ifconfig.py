"""`ktls ifconfig`: ifconfig(8) over the simulated interfaces.

The flow is sbin/ifconfig's: leading flags (-a -l -m -u -d), an interface, an
optional address family, then parameters applied one by one as they are read
(each is one ioctl: `up`, `mtu 9000`, `txtls`, `laggport cc1`), except the
address, which is set after all of them (setifaddr() only notes it), and the
vlan tag/parent, set as soon as both are known. An `err()` stops the run with
exit 1 and keeps what was already applied; a `warn()` (laggport) goes on and
exits 1 at the end. Output is written after the transaction commits.

Status text is FreeBSD's layout (freebsd-tool-formats.md §1): header, options,
capabilities (-m), addresses (ether first), then lagg, groups, vlan,
media/status, nd6.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
from typing import TYPE_CHECKING, Any

from ktls_cli.env import Env
from ktls_cli.getopt import fast_argv, lazy_command, tool_command

if TYPE_CHECKING:
    import click
    from click.shell_completion import CompletionItem

    from ktls_core.errors import KtlsError
    from ktls_core.net.ifnet import Network

TOOL = "ifconfig"
USAGE = (
    "usage: ktls ifconfig [-dmu] interface [address_family] [address] [parameters]\n"
    "       ktls ifconfig interface create [parameters]\n"
    "       ktls ifconfig interface destroy\n"
    "       ktls ifconfig -a [-d] [-m] [-u] [address_family]\n"
    "       ktls ifconfig -l [-d] [-u] [address_family]\n"
    "       ktls ifconfig [-d] [-m] [-u]\n"
)
EXIT_USAGE = 2  # ktls policy; FreeBSD's usage() exits 1
AFS = ("inet", "inet6", "link", "ether", "lladdr")

# Parameters that take the next word (NEXTARG); `-vlandev` takes one if given.
NEXTARG = {
    "mtu", "description", "descr", "netmask", "broadcast", "prefixlen",
    "vlan", "vlandev", "vlanpcp", "vlanproto",
    "laggproto", "laggport", "-laggport", "lagghash",
}  # fmt: skip
FLAGWORDS = {
    "up", "down", "alias", "-alias", "delete", "-description", "-descr",
    "ifdisabled", "-ifdisabled", "destroy", "-vlandev",
}  # fmt: skip


class Usage(Exception):
    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or "usage")
        self.message = message


class Stop(Exception):
    """err()/errx(): print `ifconfig: message`, stop, exit 1."""


class Outcome:
    """What a run prints and its status (plain classes here: no dataclass machinery on
    the start-up path, issue 8)."""

    def __init__(self) -> None:
        self.out: list[str] = []
        self.err: list[str] = []
        self.exit = 0
        self.doc: Any = None

    def warn(self, message: str) -> None:
        self.err.append(f"{TOOL}: {message}")
        self.exit = 1


# --- status text --------------------------------------------------------------------


def _names(value: int, table: Any) -> list[str]:
    return [name for bit, name in table if value & bit]


def _has_af(net: Network, name: str, af: str) -> bool:
    from ktls_core.net.ifnet import LOOPBACK

    iface = net.interfaces[name]
    if af in ("link", "ether", "lladdr"):
        return iface.kind != LOOPBACK
    return any(a.family == af for a in iface.addrs)


def media_lines(net: Network, name: str, supported: bool) -> list[str]:
    """ifmedia's status: media, status, and with -m the supported list."""
    from ktls_core.net.ifnet import ETHER, LAGG, VLAN

    iface = net.interfaces[name]
    source = iface
    if iface.kind == VLAN:  # vlan_ioctl(SIOCGIFMEDIA) asks the parent
        assert iface.vlan is not None
        if iface.vlan.parent is None:
            return []
        source = net.interfaces[iface.vlan.parent]
    if source.kind not in (ETHER, LAGG, VLAN) or not source.media:
        return []
    active = net.status_active(source.name)
    line = f"\tmedia: Ethernet {source.media}"
    if source.kind == ETHER and active and source.media_active:
        line += f" ({source.media_active})"
    lines = [line, f"\tstatus: {'active' if active else 'no carrier'}"]
    if supported and source.media_supported:
        lines.append("\tsupported media:")
        lines += [f"\t\tmedia {m}" for m in source.media_supported]
    return lines


def status_lines(net: Network, name: str, *, m: bool = False, af: str | None = None) -> list[str]:
    """One interface as ifconfig's status() prints it."""
    from ktls_core.net.ifnet import (
        ETHER,
        IFCAP_NAMES,
        IFF_NAMES,
        LAGG_PORT_NAMES,
        LOOPBACK,
        ND6_NAMES,
        VLAN_PROTO_NAMES,
        inet_netmask_hex,
        ntop,
        printb,
    )

    iface = net.interfaces[name]
    caps = IFCAP_NAMES[net.era]
    sup, ena = net.caps(name)
    lines = [f"{name}: flags={printb(net.iff(name), IFF_NAMES)} metric 0 mtu {iface.mtu}"]
    if iface.description:
        lines.append(f"\tdescription: {iface.description}")
    if ena:
        lines.append(f"\toptions={printb(ena, caps)}")
    if m and sup:
        lines.append(f"\tcapabilities={printb(sup, caps)}")
    if iface.kind != LOOPBACK and af in (None, "link", "ether", "lladdr"):
        mac = net.current_mac(name)
        lines.append(f"\tether {mac}")
        if iface.kind == ETHER and iface.hwaddr and iface.hwaddr != mac:
            lines.append(f"\thwaddr {iface.hwaddr}")
    for a in iface.addrs:
        if af is not None and a.family != af:
            continue
        if a.family == "inet":
            line = f"\tinet {a.addr} netmask {inet_netmask_hex(a.prefixlen)}"
            if a.broadcast:
                line += f" broadcast {a.broadcast}"
        else:
            zone = f"%{name}" if a.link_local else ""
            line = f"\tinet6 {ntop(a.addr)}{zone} prefixlen {a.prefixlen}"
            if a.link_local:
                line += f" scopeid 0x{iface.index:x}"
        lines.append(line)
    if af is None:
        if iface.lagg is not None:
            lines.append(f"\tlaggproto {iface.lagg.proto} lagghash {','.join(iface.lagg.hash)}")
            for p in iface.lagg.ports:
                flags = printb(net.lagg_port_flags(name, p), LAGG_PORT_NAMES)
                lines.append(f"\tlaggport: {p} flags={flags}")
        if iface.groups:
            lines.append("\tgroups:" + "".join(f" {g}" for g in iface.groups))
        if iface.vlan is not None:
            v = iface.vlan
            proto = VLAN_PROTO_NAMES.get(v.proto, f"0x{v.proto:04x}")
            lines.append(
                f"\tvlan: {v.tag or 0} vlanproto: {proto} vlanpcp: {v.pcp}"
                f" parent interface: {v.parent or '<none>'}"
            )
        lines += media_lines(net, name, m)
    if af in (None, "inet6"):
        lines.append(f"\tnd6 options={printb(iface.nd6, ND6_NAMES)}")
    return lines


def status_dict(net: Network, name: str) -> dict[str, Any]:
    """The --format json|yaml view of one interface (fields in ktls-ifconfig(8))."""
    from ktls_core.net.ifnet import (
        ETHER,
        IFCAP_NAMES,
        IFF_NAMES,
        LAGG_PORT_NAMES,
        LOOPBACK,
        ND6_NAMES,
        VLAN_PROTO_NAMES,
        ntop,
    )

    iface = net.interfaces[name]
    caps = IFCAP_NAMES[net.era]
    sup, ena = net.caps(name)
    iff = net.iff(name)
    mac = net.current_mac(name) if iface.kind != LOOPBACK else None
    link = net.link_up(name)
    media = media_lines(net, name, False)
    d: dict[str, Any] = {
        "name": name,
        "index": iface.index,
        "kind": iface.kind,
        "driver": iface.driver,
        "flags": iff,
        "flags_names": _names(iff, IFF_NAMES),
        "metric": 0,
        "mtu": iface.mtu,
        "description": iface.description or None,
        "options": ena,
        "options_names": _names(ena, caps),
        "capabilities": sup,
        "capabilities_names": _names(sup, caps),
        "ether": mac,
        "hwaddr": iface.hwaddr if iface.kind == ETHER and iface.hwaddr != mac else None,
        "inet": [
            {
                "address": a.addr,
                "prefixlen": a.prefixlen,
                "netmask": str(ipaddress.IPv4Network(f"0.0.0.0/{a.prefixlen}").netmask),
                "broadcast": a.broadcast,
            }
            for a in iface.addrs
            if a.family == "inet"
        ],
        "inet6": [
            {
                "address": ntop(a.addr) + (f"%{name}" if a.link_local else ""),
                "prefixlen": a.prefixlen,
                "scopeid": iface.index if a.link_local else 0,
            }
            for a in iface.addrs
            if a.family == "inet6"
        ],
        "lagg": None,
        "laggdev": net.lagg_of(name),
        "vlan": None,
        "groups": list(iface.groups),
        "media": media[0].removeprefix("\tmedia: ") if media else None,
        "status": media[1].removeprefix("\tstatus: ") if media else None,
        "link_state": None if link is None else ("up" if link else "down"),
        "nd6": iface.nd6,
        "nd6_names": _names(iface.nd6, ND6_NAMES),
    }
    if iface.lagg is not None:
        d["lagg"] = {
            "proto": iface.lagg.proto,
            "hash": list(iface.lagg.hash),
            "ports": [
                {
                    "name": p,
                    "flags": net.lagg_port_flags(name, p),
                    "flags_names": _names(net.lagg_port_flags(name, p), LAGG_PORT_NAMES),
                }
                for p in iface.lagg.ports
            ],
        }
    if iface.vlan is not None:
        v = iface.vlan
        d["vlan"] = {
            "tag": v.tag,
            "proto": VLAN_PROTO_NAMES.get(v.proto, f"0x{v.proto:04x}"),
            "pcp": v.pcp,
            "parent": v.parent,
        }
    return d


# --- parameters -------------------------------------------------------------------------


class AddrReq:
    """What setifaddr()/notealias() noted; applied after all parameters."""

    def __init__(self, af: str = "inet") -> None:
        self.af = af
        self.addr: str | None = None
        self.prefixlen: int | None = None
        self.broadcast: str | None = None
        self.doalias = 0  # 1 alias, -1 -alias/delete


class VlanReq:
    def __init__(self) -> None:
        self.tag: int | None = None
        self.parent: str | None = None


def _atoi(text: str) -> int:
    """atoi(3): leading digits (with a sign), else 0."""
    m = re.match(r"\s*([-+]?\d+)", text)
    return int(m.group(1)) if m else 0


def _strtoul(text: str) -> int | None:
    """strtoul(val, &end, 0) that must consume everything; None if it does not."""
    try:
        return int(text, 0) if text else None
    except ValueError:
        return None


class Apply:
    """Parameters applied to one interface, in order."""

    def __init__(self, net: Network, name: str, af: str | None, outcome: Outcome) -> None:
        self.net = net
        self.name = name
        self.outcome = outcome
        self.logs: list[str] = []
        self.addr = AddrReq(af=af if af in ("inet", "inet6") else "inet")
        self.af = af
        self.vlan = VlanReq()
        self.destroyed = False

    # -- helpers -------------------------------------------------------------------------
    def fail(self, message: str) -> Stop:
        self.outcome.warn(message)
        return Stop(message)

    def ioctl_error(self, what: str, exc: KtlsError) -> Stop:
        """Perror(): ENXIO/EPERM get words, others strerror."""
        from ktls_core.errors import Errno

        self._keep_logs(exc)
        if exc.errno == Errno.ENXIO:
            return self.fail(f"{what}: no such interface")
        if exc.errno == Errno.EPERM:
            return self.fail(f"{what}: permission denied")
        return self.fail(f"{what}: {exc.strerror}")

    def _keep_logs(self, exc: KtlsError) -> None:
        self.logs += list(getattr(exc, "logs", []))

    def call(self, what: str, fn: Any, *args: Any, **kw: Any) -> Any:
        from ktls_core.errors import KtlsError

        try:
            result = fn(*args, **kw)
        except KtlsError as exc:
            raise self.ioctl_error(what, exc) from None
        if isinstance(result, list):
            self.logs += result
        return result

    # -- the loop ----------------------------------------------------------------------
    def run(self, params: list[str]) -> None:
        from ktls_core.net.ifnet import CAP_KEYWORDS

        caps = CAP_KEYWORDS[self.net.era]
        i = 0
        while i < len(params):
            word = params[i]
            arg: str | None = None
            if word in NEXTARG:
                if i + 1 >= len(params):
                    raise self.fail(f"'{word}' requires argument")
                arg = params[i + 1]
                i += 1
            elif word == "-vlandev" and i + 1 < len(params) and params[i + 1] in self.net:
                arg = params[i + 1]
                i += 1
            i += 1
            bare = word.removeprefix("-")
            if word in FLAGWORDS or word in NEXTARG:
                self.param(word, arg)
            elif bare in caps:
                self.call(bare, self.net.setifcap, self.name, caps[bare], not word.startswith("-"))
            else:
                self.address(word)
            if self.destroyed:
                return
        self.finish()

    def param(self, word: str, arg: str | None) -> None:
        net, name = self.net, self.name
        if word in ("up", "down"):
            self.call("SIOCSIFFLAGS", net.set_up, name, word == "up")
        elif word == "mtu":
            assert arg is not None
            self.call("ioctl SIOCSIFMTU (set mtu)", net.set_mtu, name, _atoi(arg))
        elif word in ("description", "descr"):
            net.get(name).description = arg or ""
        elif word in ("-description", "-descr"):
            net.get(name).description = ""
        elif word == "alias":
            self.addr.doalias = 1
        elif word in ("-alias", "delete"):
            self.addr.doalias = -1
        elif word == "netmask":
            assert arg is not None
            self.addr.prefixlen = self._netmask(arg)
        elif word == "prefixlen":
            assert arg is not None
            plen = _strtoul(arg)
            if plen is None or not 0 <= plen <= 128:
                raise self.fail(f"{arg}: bad value")
            self.addr.prefixlen = plen
        elif word == "broadcast":
            assert arg is not None
            try:
                self.addr.broadcast = str(ipaddress.IPv4Address(arg))
            except ValueError:
                raise self.fail(f"{arg}: bad value") from None
        elif word in ("ifdisabled", "-ifdisabled"):
            self.call("SIOCSIFINFO_IN6", net.set_ifdisabled, name, word == "ifdisabled")
        elif word == "destroy":
            self.call("SIOCIFDESTROY", net.destroy, name)
            self.destroyed = True
        elif word in ("vlan", "vlandev", "vlanpcp", "vlanproto", "-vlandev"):
            self.vlan_param(word, arg)
        else:
            self.lagg_param(word, arg)

    def _netmask(self, text: str) -> int:
        try:
            if text.lower().startswith("0x"):
                mask = ipaddress.IPv4Address(int(text, 16))
            else:
                mask = ipaddress.IPv4Address(text)
            return ipaddress.IPv4Network(f"0.0.0.0/{mask}").prefixlen
        except ValueError:
            raise self.fail(f"{text}: bad value") from None

    def vlan_param(self, word: str, arg: str | None) -> None:
        from ktls_core.net.ifnet import ETHERTYPE_QINQ, ETHERTYPE_VLAN, VLAN

        net, name = self.net, self.name
        is_vlan = net.get(name).kind == VLAN  # getvlan() fails on anything else
        if word == "vlan":
            assert arg is not None
            tag = _strtoul(arg)
            if tag is None or tag < 0:
                raise self.fail("invalid value for vlan")
            if tag > 0xFFFF:
                raise self.fail("value for vlan out of range")
            self.vlan.tag = tag
        elif word == "vlandev":
            self.vlan.parent = arg
        elif word == "vlanpcp":
            assert arg is not None
            pcp = _strtoul(arg)
            if pcp is None or pcp < 0:
                raise self.fail("invalid value for vlanpcp")
            if pcp > 7:
                raise self.fail("value for vlanpcp out of range")
            if is_vlan:
                self.call("SIOCSVLANPCP", net.set_vlanpcp, name, pcp)
            return
        elif word == "vlanproto":
            protos = {"802.1q": ETHERTYPE_VLAN, "802.1ad": ETHERTYPE_QINQ}
            if arg not in protos:
                raise self.fail("invalid value for vlanproto")
            if is_vlan:
                vconf = net.get(name).vlan
                assert vconf is not None
                if vconf.parent is not None:
                    raise self.fail("SIOCSETVLAN: Device busy")
                vconf.proto = protos[arg]
            return
        else:  # -vlandev
            if not is_vlan:
                raise self.fail("SIOCGETVLAN: Invalid argument")
            self.call("SIOCSETVLAN", net.unset_vlandev, name)
            return
        if is_vlan and self.vlan.tag is not None and self.vlan.parent is not None:
            self.call("SIOCSETVLAN", net.set_vlan, name, self.vlan.tag, self.vlan.parent)

    def lagg_param(self, word: str, arg: str | None) -> None:
        from ktls_core.errors import Errno, KtlsError
        from ktls_core.net.ifnet import LAGG_HASHES, LAGG_PROTOS

        net, name = self.net, self.name
        assert arg is not None
        if word == "laggproto":
            if arg not in LAGG_PROTOS:
                raise self.fail(f"Invalid aggregation protocol: {arg}")
            self.call("SIOCSLAGG", net.set_laggproto, name, arg)
        elif word == "lagghash":
            hashes = [h for h in arg.split(",") if h]
            for h in hashes:
                if h not in LAGG_HASHES:
                    raise self.fail(f"Invalid lagghash option: {h}")
            if not hashes:
                raise self.fail("No lagghash options supplied")
            self.call("SIOCSLAGGHASH", net.set_lagghash, name, hashes)
        elif word == "laggport":
            # "Do not exit with an error here. Doing so permits a failed NIC
            # to take down an entire lagg." Already a member: silent.
            try:
                self.logs += net.add_laggport(name, arg)
            except KtlsError as exc:
                self._keep_logs(exc)
                if exc.errno != Errno.EEXIST:
                    self.outcome.warn(f"{name} {arg}: SIOCSLAGGPORT: {exc.strerror}")
        else:  # -laggport
            self.call("SIOCSLAGGDELPORT", net.del_laggport, name, arg)

    def address(self, word: str) -> None:
        """setifaddr(): parse the word as an address of the current family."""
        af = self.af if self.af in ("inet", "inet6") else "inet"
        text, _, plen_text = word.partition("/")
        try:
            ip = ipaddress.ip_address(text.split("%")[0])
        except ValueError:
            raise self.fail(f"{word}: bad value") from None
        if (ip.version == 4) != (af == "inet"):
            raise self.fail(f"{word}: bad value")
        prefixlen = None
        if plen_text:
            if af == "inet":
                bits = _atoi(plen_text)
                if bits < 0 or bits > 32:
                    width = "negative" if bits < 0 else "too large"
                    raise self.fail(f"{word}: bad value (width {width})")
            else:
                bits = _atoi(plen_text)
                if bits < 0 or bits > 128:
                    raise self.fail(f"{plen_text}: bad value")
            prefixlen = bits
        self.addr.af = af
        self.addr.addr = str(ip)
        if prefixlen is not None:
            self.addr.prefixlen = prefixlen

    def finish(self) -> None:
        """After the loop: the address ioctls, then vlan_cb()'s check."""
        req = self.addr
        if req.addr is not None:
            if req.doalias < 0:
                self.call("ioctl (SIOCDIFADDR)", self.net.del_addr, self.name, req.addr)
            else:
                self.call(
                    "ioctl (SIOCAIFADDR)",
                    self.net.add_addr,
                    self.name,
                    req.addr,
                    req.prefixlen,
                    alias=req.doalias > 0 or req.af == "inet6",
                    broadcast=req.broadcast,
                )
        if (self.vlan.tag is None) != (self.vlan.parent is None):
            raise self.fail("both vlan and vlandev must be specified")


# --- the command ---------------------------------------------------------------------------


def _complete_args(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """Interface names, then parameter words (and names after laggport/vlandev)."""
    try:
        from click.shell_completion import CompletionItem

        from ktls_core.net import store as net_store
        from ktls_core.net.ifnet import CAP_KEYWORDS, LAGG_PROTOS

        words = [str(w) for w in (ctx.params.get(param.name or "argv") or ())]
        flags = ""
        while words and re.fullmatch(r"-[almud]+", words[0]):
            flags += words.pop(0)[1:]
        net = net_store.peek(ctx.find_root().params.get("state_path"))
        names = net.names() if net is not None else []
        era = net.era if net is not None else "seed"
        if not words:
            # (words starting with '-' are click's to complete, not ours)
            options = list(AFS) if "l" in flags or "a" in flags else names
        else:
            prev = words[-1] if len(words) > 1 else None
            if prev in ("laggport", "-laggport", "vlandev", "-vlandev"):
                options = names
            elif prev == "laggproto":
                options = list(LAGG_PROTOS)
            elif prev == "vlanproto":
                options = ["802.1q", "802.1ad"]
            elif prev == "lagghash":
                options = ["l2,l3,l4", "l2", "l3", "l4"]
            elif prev in NEXTARG:
                options = []
            else:
                caps = sorted(CAP_KEYWORDS[era])
                options = sorted(FLAGWORDS | NEXTARG) + caps + [f"-{c}" for c in caps]
                if len(words) == 1:
                    options += ["create", *AFS]
        return [CompletionItem(o) for o in options if o.startswith(incomplete)]
    except Exception:  # completion never raises
        return []


def run(env: Env, args: list[str]) -> int:
    """The command: the exit status."""
    try:
        outcome = _main(env, args)
    except Usage as exc:
        if exc.message:
            env.err(f"{TOOL}: {exc.message}")
        env.stderr.write(USAGE)
        return EXIT_USAGE
    if not env.machine:  # a document is the whole of stdout (the created name is in it)
        for line in outcome.out:
            env.out(line)
    env.stdout.flush()
    for line in outcome.err:
        env.err(line)
    if env.machine and outcome.doc is not None:
        from ktls_cli.render import document

        document(env, TOOL, outcome.doc)
    return outcome.exit


run_fast = fast_argv(run)


HELP = """Configure network interfaces, as ifconfig(8) does.

    With no interface, list them all (-a). Parameters apply in order: up, down,
    mtu N, inet|inet6 ADDR[/LEN] [alias|-alias], txtls, -txtls, txtls4, txtls6,
    txtlsrtlmt (current profile), vlan N vlandev IF, laggproto PROTO,
    laggport IF, -laggport IF, create, destroy. See ktls-ifconfig(8).
    Exit status: 0 success, 1 failure, 2 usage error.
    """


def _click_command() -> click.Command:
    return tool_command(
        "ifconfig", run, HELP, usage=USAGE, complete=_complete_args,
        metavar="[-a|-l|-m|-u|-d] [interface [create|destroy] [parameters]]",
    )  # fmt: skip


__getattr__ = lazy_command(_click_command)


def _flags(args: list[str]) -> tuple[set[str], list[str]]:
    letters: set[str] = set()
    while args and args[0].startswith("-") and len(args[0]) > 1:
        word = args.pop(0)
        if word == "--":
            break
        for c in word[1:]:
            if c not in "almud":
                raise Usage(f"illegal option -- {c}")
            letters.add(c)
    return letters, args


def _af(word: str) -> str:
    if word not in AFS:
        raise Usage(f"Address family '{word}' unknown.")
    return word


def _main(env: Env, args: list[str]) -> Outcome:
    from ktls_core.net import store as net_store

    flags, args = _flags(args)
    if "d" in flags and "u" in flags:
        raise Usage()
    if "l" in flags and ("a" in flags or "m" in flags):
        raise Usage()
    outcome = Outcome()
    listing = "l" in flags or "a" in flags or not args
    kernel = env.kernel()
    if listing:
        if len(args) > 1:
            raise Usage()
        af = _af(args[0]) if args else None
        with kernel.snapshot() as tx:
            net = net_store.load(tx)
        names = [n for n in net.names() if _wanted(net, n, flags)]
        if "l" in flags:
            if af is not None:
                names = [n for n in names if _has_af(net, n, af)]
            outcome.doc = names
            if not env.machine:
                outcome.out.append(" ".join(names))
            return outcome
        outcome.doc = [status_dict(net, n) for n in names]
        if not env.machine:
            for n in names:
                outcome.out += status_lines(net, n, m="m" in flags, af=af)
        return outcome

    name, params = args[0], args[1:]
    if params and params[0] == "create":
        with kernel.transaction() as tx:
            net = net_store.load(tx)
            _create(net, name, params[1:], outcome, tx)
        return outcome
    with kernel.snapshot() as tx:
        net = net_store.load(tx)
    if name not in net:
        outcome.warn(f"interface {name} does not exist")
        return outcome
    af = None
    if params and params[0] in AFS:
        af = params.pop(0)
    if not params:
        outcome.doc = [status_dict(net, name)]
        if not env.machine:
            outcome.out += status_lines(net, name, m="m" in flags, af=af)
        return outcome
    with kernel.transaction() as tx:
        net = net_store.load(tx)
        _apply(net, name, af, params, outcome, tx)
    return outcome


def _wanted(net: Network, name: str, flags: set[str]) -> bool:
    from ktls_core.net.ifnet import IFF_UP

    up = bool(net.iff(name) & IFF_UP)
    return not ("u" in flags and not up) and not ("d" in flags and up)


def _apply(
    net: Network, name: str, af: str | None, params: list[str], outcome: Outcome, tx: Any
) -> None:
    from ktls_core.net import store as net_store

    run = Apply(net, name, af, outcome)
    # ioctls before an err() stay applied, as in FreeBSD
    with contextlib.suppress(Stop):
        run.run(params)
    net_store.save(tx, net)
    net_store.log(tx, run.logs)
    outcome.doc = [status_dict(net, name)] if name in net else []


def _create(net: Network, name: str, params: list[str], outcome: Outcome, tx: Any) -> None:
    """`IF create [vlan N vlandev IF] [parameters]`: clone, then the rest."""
    from ktls_core.errors import Errno, KtlsError
    from ktls_core.net import store as net_store

    if name in net:
        if not params:
            outcome.warn(f"interface {name} already exists")
            return
        _apply(net, name, None, params, outcome, tx)  # `create` is dropped
        return
    # the clone parameters (vlan, vlandev) right after `create` go to SIOCIFCREATE2
    tag: int | None = None
    parent: str | None = None
    i = 0
    while i < len(params) and params[i] in ("vlan", "vlandev"):
        if i + 1 >= len(params):
            outcome.warn(f"'{params[i]}' requires argument")
            return
        if params[i] == "vlan":
            value = _strtoul(params[i + 1])
            if value is None or value < 0:
                outcome.warn("invalid value for vlan")
                return
            if value > 0xFFFF:
                outcome.warn("value for vlan out of range")
                return
            tag = value
        else:
            parent = params[i + 1]
        i += 2
    if tag is not None or parent is not None:
        if not re.match(r"vlan", name) and "." not in name:
            tag = parent = None  # not a vlan cloner: the words are parameters again
            i = 0
        elif tag is None:
            outcome.warn("must specify a tag for vlan create")
            return
        elif parent is None:
            outcome.warn("must specify a parent device for vlan create")
            return
    try:
        if parent is not None and parent not in net:
            raise KtlsError(Errno.ENOENT, parent)
        new, logs = net.create(name, vlan_tag=tag, vlandev=parent)
    except KtlsError as exc:
        outcome.warn(f"SIOCIFCREATE2: {exc.strerror}")
        return
    if new != name:
        outcome.out.append(new)  # clone_create() prints the name the kernel chose
    rest = params[i:]
    af = rest.pop(0) if rest and rest[0] in AFS else None  # "an address family spec
    if rest:  # that immediately follows" the clone parameters
        net_store.log(tx, logs)
        _apply(net, new, af, rest, outcome, tx)
    else:
        net_store.save(tx, net)
        net_store.log(tx, logs)
        outcome.doc = [status_dict(net, new)]
