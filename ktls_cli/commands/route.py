"""`ktls route`: route(8) over the simulated routing table; and `netstat -r`.

`route [-46nq] add|delete|change|get|show [modifiers] destination [gateway]`
parses its arguments as sbin/route/route.c does (the family guessed from a
`:`, classful masks for a bare network number, `-net`/`-host`, `-interface`,
`-netmask`/`-prefixlen`, `-reject`/`-blackhole`), prints `add net D: gateway G`
or the failure after ` fib 0: `, and `route get` prints print_getmsg()'s
block. Names are never looked up: addresses print numerically except the two
/etc/hosts names (127.0.0.1 and ::1 are `localhost`) and `default`, which -n
turns off, as FreeBSD does.

`render_netstat_r()` / `netstat_r_document()` are the routing-table display of
netstat(1) (`netstat -r[n]`, libxo field names); `ktls netstat -r` and
`ktls route show` both call them.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Any, NamedTuple

from ktls_cli.env import Env
from ktls_cli.getopt import fast_argv, lazy_command, tool_command

if TYPE_CHECKING:
    import click
    from click.shell_completion import CompletionItem

    from ktls_core.net.ifnet import Network
    from ktls_core.net.route import Route

TOOL = "route"
USAGE = "usage: ktls route [-46nq] command [[modifiers] args]\n"
EXIT_USAGE = 2  # ktls policy; route(8)'s usage() exits EX_USAGE (64)
COMMANDS = ("add", "delete", "del", "change", "get", "show")
# modifiers that take the next word
MOD_ARGS = ("-netmask", "-prefixlen", "-fib")
MOD_FLAGS = (
    "-net", "-host", "-inet", "-inet6", "-4", "-6", "-interface", "-iface",
    "-reject", "-blackhole", "-static", "-nostatic",
)  # fmt: skip
# /etc/hosts on a stock FreeBSD: what routename() and netstat find without -n
HOSTS = {"127.0.0.1": "localhost", "::1": "localhost"}


class Usage(Exception):
    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or "usage")
        self.message = message


class Fail(Exception):
    """errx(): `route: message`, exit 1."""


# --- netstat -r -------------------------------------------------------------------------


def _family_title(family: str) -> str:
    return "Internet" if family == "inet" else "Internet6"


def _host(text: str, numeric: bool) -> str:
    return text if numeric else HOSTS.get(text, text)


def _row(net: Network, r: Route, numeric: bool) -> tuple[str, str, str, str]:
    dst = r.dst_text()  # `default` even with -n, as netstat prints it
    if r.is_host:
        dst = _host(dst, numeric)
    return (dst, _host(r.gateway_text(net), numeric), r.netstat_flags(), r.ifname)


def render_netstat_r(
    net: Network, *, numeric: bool = False, families: tuple[str, ...] = ("inet", "inet6")
) -> list[str]:
    """`netstat -r[n]`: the lines of `Routing tables`, one section per family.

    Column widths are netstat's: 18/18 (IPv6 with -n: 33/29), flags 6, Netif 8.
    """
    from ktls_core.net.route import routing_table

    lines = ["Routing tables"]
    for family in families:
        wd, wg = (33, 29) if family == "inet6" and numeric else (18, 18)
        lines += ["", f"{_family_title(family)}:"]
        header = f"{'Destination':<{wd}.{wd}} {'Gateway':<{wg}.{wg}} {'Flags':<6.6} {'Netif':>8.8}"
        lines.append(header + f" {'Expire':>6}")
        for r in routing_table(net, family):
            dst, gw, flags, netif = _row(net, r, numeric)
            lines.append(f"{dst:<{wd}} {gw:<{wg}} {flags:<6} {netif:>8.8}")
    return lines


def netstat_r_document(
    net: Network, *, numeric: bool = False, families: tuple[str, ...] = ("inet", "inet6")
) -> dict[str, Any]:
    """The same table as libxo's netstat -r names it (route-information/rt-entry)."""
    from ktls_core.net.route import RTF_NAMES, routing_table

    fams = []
    for family in families:
        entries = []
        for r in routing_table(net, family):
            dst, gw, flags, netif = _row(net, r, numeric)
            entries.append(
                {
                    "destination": dst,
                    "gateway": gw,
                    "flags": flags,
                    "flags_pretty": [n.lower() for b, n in RTF_NAMES if r.flags & b],
                    "interface-name": netif,
                }
            )
        fams.append({"address-family": _family_title(family), "rt-entry": entries})
    return {"route-information": {"route-table": {"rt-family": fams}}}


# --- argument parsing (route.c newroute()) ---------------------------------------------------


class Request:
    """What newroute() gathered from the words (plain classes here: no dataclass
    machinery on the start-up path, issue 8)."""

    def __init__(self, cmd: str, family: str | None = None) -> None:
        self.cmd = cmd
        self.family = family  # -4/-6/-inet/-inet6, else guessed from the destination
        self.force: str | None = None  # "net" | "host"
        self.interface = False
        self.reject = False
        self.blackhole = False
        self.netmask: str | None = None
        self.prefixlen: int | None = None
        self.positional: list[str] = []


def parse_args(cmd: str, args: list[str], family: str | None) -> Request:
    req = Request(cmd=cmd, family=family)
    i = 0
    while i < len(args):
        word = args[i]
        i += 1
        if word.startswith("-") and len(word) > 1 and not _looks_numeric(word):
            if word in MOD_ARGS:
                if i >= len(args):
                    raise Usage()
                value = args[i]
                i += 1
                if word == "-netmask":
                    req.netmask = value
                elif word == "-prefixlen":
                    try:
                        req.prefixlen = int(value)
                    except ValueError:
                        raise Fail(f"bad value: {value}") from None
                    req.force = req.force or "net"
                elif value != "0":  # -fib: only fib 0 exists (net.fibs=1)
                    raise Fail(f"fib {value} not valid")
                continue
            if word not in MOD_FLAGS:
                raise Usage(f"bad keyword: {word[1:]}")
            if word in ("-net", "-host"):
                req.force = word[1:]
            elif word in ("-inet", "-4"):
                req.family = "inet"
            elif word in ("-inet6", "-6"):
                req.family = "inet6"
            elif word in ("-interface", "-iface"):
                req.interface = True
            elif word == "-reject":
                req.reject = True
            elif word == "-blackhole":
                req.blackhole = True
            continue
        req.positional.append(word)
    return req


def _looks_numeric(word: str) -> bool:
    return word[1:].isdigit() and word not in ("-4", "-6")


class Dest(NamedTuple):
    network: str  # CIDR
    is_host: bool
    family: str


def parse_dest(text: str, req: Request) -> Dest:
    """getaddr(RTAX_DST): `default`, `A.B.C.D[/len]`, IPv6 `A::[/len]`, masks, classful."""
    family = req.family or ("inet6" if ":" in text else "inet")
    if text == "default":
        return Dest("::/0" if family == "inet6" else "0.0.0.0/0", False, family)
    addr, slash, plen = text.partition("/")
    try:
        ip = ipaddress.ip_address(addr.split("%")[0])
    except ValueError:
        raise Fail(f"bad address: {text}") from None
    if (ip.version == 4) != (family == "inet"):
        raise Fail(f"bad address: {text}")
    bits: int | None = None
    if slash:
        try:
            bits = int(plen)
        except ValueError:
            raise Fail(f"bad address: {text}") from None
        if not 0 <= bits <= ip.max_prefixlen:
            raise Fail(f"bad address: {text}")
    elif req.prefixlen is not None:
        bits = req.prefixlen
    elif req.netmask is not None:
        try:
            bits = ipaddress.ip_network(f"0.0.0.0/{req.netmask}").prefixlen
        except ValueError:
            raise Fail(f"bad address: {req.netmask}") from None
    if bits is None:
        if req.force == "host" or (ip.version == 6 and req.force != "net"):
            bits = ip.max_prefixlen
        elif req.force == "net" or _inet_lnaof(int(ip)) == 0:
            bits = _inet_makenetandmask(int(ip))
        else:
            bits = 32
    elif req.force == "host":
        bits = ip.max_prefixlen
    network = ipaddress.ip_network(f"{ip}/{bits}", strict=False)
    return Dest(str(network), bits == ip.max_prefixlen, family)


def _inet_lnaof(addr: int) -> int:
    """inet_lnaof(3): the host part under the classful mask."""
    if addr >> 31 == 0:
        return addr & 0xFFFFFF
    if addr >> 30 == 0b10:
        return addr & 0xFFFF
    return addr & 0xFF


def _inet_makenetandmask(addr: int) -> int:
    """inet_makenetandmask() without /len: the mask by trailing zero octets."""
    if addr == 0:
        return 0
    for host_bits, plen in ((0xFFFFFF, 8), (0xFFFF, 16), (0xFF, 24)):
        if addr & host_bits == 0:
            return plen
    return 32 if addr >> 29 == 0b111 else {0: 8, 1: 8, 2: 16}.get(addr >> 30, 24)


# --- route get ---------------------------------------------------------------------------------


def getmsg_lines(net: Network, r: Route, route_to: str, numeric: bool) -> list[str]:
    """print_getmsg(): the block `route get` prints."""
    from ktls_core.net.ifnet import printb
    from ktls_core.net.route import RTF_DONE, RTF_NAMES

    n = r.network
    lines = [f"   route to: {_routename(route_to, numeric)}"]
    if r.is_default:
        lines.append(f"destination: {'default' if not numeric else str(n.network_address)}")
        lines.append("       mask: default")
    else:
        dest = r.dst_text() if r.is_host else _addr_text(n.network_address, r.zone)
        lines.append(f"destination: {_host(dest, numeric)}")
        if not r.is_host:
            lines.append(f"       mask: {_addr_text(n.netmask, None)}")
    if r.gateway is not None:
        lines.append(f"    gateway: {_host(r.gateway, numeric)}")
    lines.append("        fib: 0")
    lines.append(f"  interface: {r.ifname}")
    flags = printb(r.flags | RTF_DONE, RTF_NAMES)
    lines.append(f"      flags: {flags[flags.index('<') :]}")
    header = ("recvpipe", "sendpipe", "ssthresh", "rtt,msec", "mtu   ", "weight", "expire")
    widths = (9, 9, 9, 9, 9, 10, 9)
    lines.append(" ".join(f"{h:>{w}}" for h, w in zip(header, widths, strict=True)))
    mtu = net.interfaces[r.ifname].mtu if r.ifname in net.interfaces else 0
    values = [0, 0, 0, 0, mtu, 1]
    lines.append("".join(f"{v:8d}  " for v in values) + f"{0:8d} ")
    return lines


def getmsg_dict(net: Network, r: Route, route_to: str) -> dict[str, Any]:
    from ktls_core.net.route import RTF_DONE, RTF_NAMES

    flags = r.flags | RTF_DONE
    return {
        "route-to": route_to,
        "destination": "default" if r.is_default else r.dst_text().split("/")[0],
        "mask": None if r.is_host else str(r.network.netmask),
        "gateway": r.gateway,
        "fib": 0,
        "interface": r.ifname,
        "flags": flags,
        "flags_names": [n for b, n in RTF_NAMES if flags & b],
        "recvpipe": 0,
        "sendpipe": 0,
        "ssthresh": 0,
        "rtt": 0,
        "mtu": net.interfaces[r.ifname].mtu if r.ifname in net.interfaces else 0,
        "weight": 1,
        "expire": 0,
    }


def _addr_text(ip: Any, zone: str | None) -> str:
    from ktls_core.net.ifnet import ntop

    return ntop(ip) + (f"%{zone}" if zone else "")


def _routename(text: str, numeric: bool) -> str:
    if text == "default":
        return "default"
    try:
        ip = ipaddress.ip_address(text.split("%")[0])
    except ValueError:
        return text
    if ip.is_unspecified and not numeric:
        return "default"
    return _host(_addr_text(ip, text.partition("%")[2] or None), numeric)


# --- the command ---------------------------------------------------------------------------------


class Outcome:
    """What a run prints and its status."""

    def __init__(self) -> None:
        self.out: list[str] = []
        self.err: list[str] = []
        self.exit = 0
        self.doc: Any = None


def _complete_args(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    try:
        from click.shell_completion import CompletionItem

        typed = [str(w) for w in (ctx.params.get(param.name or "argv") or ())]
        words = [w for w in typed if not w.startswith("-")]
        if not words:
            options = list(COMMANDS)
        elif incomplete.startswith("-"):
            options = list(MOD_FLAGS + MOD_ARGS)
        elif typed[-1] in ("-interface", "-iface"):
            from ktls_core.net import store as net_store

            net = net_store.peek(ctx.find_root().params.get("state_path"))
            options = net.names() if net is not None else []
        else:
            options = ["default"] if len(words) == 1 else []
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
        env.stderr.write(f"{TOOL}: {USAGE}")
        return EXIT_USAGE
    except Fail as exc:
        env.err(f"{TOOL}: {exc}")
        return 1
    for line in outcome.err:
        env.err(line)
    env.stderr.flush()
    if env.machine:
        from ktls_cli.render import document

        document(env, TOOL, outcome.doc)
    else:
        for line in outcome.out:
            env.out(line)
    return outcome.exit


run_fast = fast_argv(run)


HELP = """Manipulate the routing table, as route(8) does.

    Commands: add, delete, change DESTINATION (GATEWAY | -interface IF); get
    DESTINATION; show [DESTINATION] (without one: the table, as netstat -r).
    See ktls-route(8). Exit status: 0 success, 1 failure, 2 usage error.
    """


def _click_command() -> click.Command:
    return tool_command(
        "route", run, HELP, usage=USAGE, complete=_complete_args,
        metavar="[-46nq] command [[modifiers] args]",
    )  # fmt: skip


__getattr__ = lazy_command(_click_command)


def _main(env: Env, args: list[str]) -> Outcome:
    from ktls_core.net import store as net_store

    family: str | None = None
    numeric = quiet = False
    while args and args[0].startswith("-") and len(args[0]) > 1:
        word = args.pop(0)
        for c in word[1:]:
            if c == "4":
                family = "inet"
            elif c == "6":
                family = "inet6"
            elif c == "n":
                numeric = True
            elif c == "q":
                quiet = True
            else:
                raise Usage(f"illegal option -- {c}")
    if not args:
        raise Usage()
    cmd = args.pop(0)
    if cmd not in COMMANDS:
        raise Usage(f"bad keyword: {cmd}")
    req = parse_args("delete" if cmd == "del" else cmd, args, family)
    kernel = env.kernel()
    outcome = Outcome()
    if req.cmd in ("get", "show"):
        with kernel.snapshot() as tx:
            net = net_store.load(tx)
        if req.cmd == "show" and not req.positional:
            fams = (req.family,) if req.family else ("inet", "inet6")
            outcome.out = render_netstat_r(net, numeric=numeric, families=fams)
            outcome.doc = netstat_r_document(net, numeric=numeric, families=fams)
            return outcome
        _get(net, req, numeric, outcome)
        return outcome
    with kernel.transaction() as tx:
        net = net_store.load(tx)
        if _modify(net, req, quiet, outcome):
            net_store.save(tx, net)
    return outcome


def _get(net: Network, req: Request, numeric: bool, outcome: Outcome) -> None:
    from ktls_core.net import route as rt

    if len(req.positional) != 1:
        raise Usage()
    text = req.positional[0]
    dest = parse_dest(text, req)
    network = ipaddress.ip_network(dest.network)
    if text == "default" or ("/" in text and not dest.is_host):
        r = rt.find_route(net, dest.network)  # a prefix asks for that route exactly
    else:
        zone = text.partition("%")[2] or None
        addr = str(network.network_address) + (f"%{zone}" if zone else "")
        r = rt.lookup(net, addr)
    if r is None:
        outcome.err.append(f"{TOOL}: route has not been found")
        outcome.exit = 1
        outcome.doc = None
        return
    route_to = "default" if text == "default" else text.split("/")[0]
    outcome.out = getmsg_lines(net, r, route_to, numeric)
    outcome.doc = getmsg_dict(net, r, route_to)


def _modify(net: Network, req: Request, quiet: bool, outcome: Outcome) -> bool:
    from ktls_core.errors import Errno, KtlsError
    from ktls_core.net import route as rt

    if req.cmd == "delete":
        if not 1 <= len(req.positional) <= 2:
            raise Usage()
    elif len(req.positional) != 2:
        raise Usage()
    text = req.positional[0]
    gateway_text = req.positional[1] if len(req.positional) > 1 else None
    dest = parse_dest(text, req)
    gateway: str | None = None
    interface: str | None = None
    if gateway_text is not None:
        if req.interface:
            interface = _interface_arg(net, gateway_text)
        else:
            try:
                gw_ip, _ = rt.parse_addr(gateway_text)
            except ValueError:
                raise Fail(f"bad address: {gateway_text}") from None
            if (gw_ip.version == 4) != (dest.family == "inet"):
                raise Fail(f"bad address: {gateway_text}")
            gateway = gateway_text
    prefix = f"{req.cmd} {'host' if dest.is_host else 'net'} {text}"
    if gateway_text is not None:
        prefix += f": gateway {gateway_text}"
    doc: dict[str, Any] = {
        "command": req.cmd,
        "type": "host" if dest.is_host else "net",
        "destination": text,
        "gateway": gateway_text,
        "fib": 0,
        "error": None,
    }
    outcome.doc = doc
    try:
        if req.cmd == "add":
            rt.add_route(
                net,
                dest.network,
                gateway=gateway,
                interface=interface,
                reject=req.reject,
                blackhole=req.blackhole,
            )
        elif req.cmd == "change":
            rt.change_route(
                net,
                dest.network,
                gateway=gateway,
                interface=interface,
                reject=req.reject,
                blackhole=req.blackhole,
            )
        else:
            rt.delete_route(net, dest.network)
    except KtlsError as exc:
        # rtmsg(): 13-era route(8) warns on stderr except for EEXIST
        if exc.errno == Errno.ESRCH:
            outcome.err.append(f"{TOOL}: route has not been found")
        elif exc.errno != Errno.EEXIST:
            outcome.err.append(f"{TOOL}: writing to routing socket: {exc.strerror}")
        message = {
            Errno.ESRCH: "not in table",
            Errno.EBUSY: "entry in use",
            Errno.ENOBUFS: "not enough memory",
            Errno.EADDRINUSE: "gateway uses the same route",
            Errno.EEXIST: "route already in table",
        }.get(exc.errno, exc.strerror)
        doc["error"] = message
        if not quiet:
            outcome.out.append(f"{prefix} fib 0: {message}")
        outcome.exit = 1
        return False
    if not quiet:
        outcome.out.append(prefix)
    return True


def _interface_arg(net: Network, text: str) -> str:
    """-interface: an interface name, or an address of one of our interfaces."""
    if text in net:
        return text
    from ktls_core.net import route as rt

    try:
        return rt.source_interface(net, text)
    except Exception:
        raise Fail(f"interface '{text}' does not exist") from None
