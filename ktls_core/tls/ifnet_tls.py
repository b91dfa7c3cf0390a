"""ifnet (NIC) TLS: send tags, the NIC model, the tag-reset task, mode switches.

Pure logic, no state store and no printing: the callers (session creation, the
transmit path, `setsockopt TCP_TXTLS_MODE`, `switch_tls`) hand in what the kernel
would look at (the route's egress, sysctl values, the session's mode and tag) and
get back a result, events and counter updates made through a `CounterSink`
(kernel.Tx is one). FreeBSD names are kept so that each function can be read
beside sys/kern/uipc_ktls.c:

- `alloc_snd_tag()` / `try_ifnet()`: ktls_alloc_snd_tag() and ktls_try_ifnet(),
  step 9 of TCP_TXTLS_ENABLE and the ifnet half of a mode switch.
- `output_check()`: the send-tag test of ip_output_send() / ip6_output_send()
  and lagg_enqueue(), then ktls_output_eagain() on a mismatch.
- `reset_send_tag()`: the ktls_reset_send_tag() task.
- `set_tx_mode()`: ktls_set_tx_mode() (TCP_TXTLS_MODE, switch_tls).
- `account_for_send()` / `disable_ifnet()`: tcp_account_for_send() and
  ktls_disable_ifnet() behind kern.ipc.tls.ifnet_max_rexmit_pct (current only).
- The NIC model itself is the record layer: an ifnet record goes down in
  plaintext with its tag and the NIC seals it with the session's keys and the
  explicit nonce ktls_frame() chose, so its bytes are software's
  (output.py seals ifnet batches with record.py; the wire cuts them at the MSS).

Modelling decisions (FreeBSD has no exact counterpart; kept small on purpose):

- A send tag remembers the route's interface (`ifname`, nh_ifp: lagg0, vlan100)
  and the physical port behind it (`port`, the port lagg/vlan hand the
  allocation to). The output check compares both with the current egress: a
  route change moves the interface, a lagg failover moves the port. FreeBSD gets
  the same answer from two places (ip_output_send() compares mst->ifp with the
  route's ifp; lagg_enqueue() compares the port's inner tag with the port it
  picked).
- The driver (cxgbe, mlx5) refuses a TLS tag on a port whose own TXTLS4/TXTLS6
  is off (EOPNOTSUPP), besides ktls_alloc_snd_tag()'s check of the route's
  interface. That is how a failover onto a port without txtls fails its reset.
- One ip_output_send() call carries one whole record (tcp_output() never mixes
  records of an ifnet session in one TSO burst here); a mismatch drops the whole
  record, and TCP retransmits it whole after the reset task has run.
- Retransmissions are the bytes resent after drops: `account_for_send()` is
  called with is_rxt for those, so ifnet_max_rexmit_pct sees exactly the bytes a
  failover cost. No other loss is simulated.
- The events carry the connection's name as `switch_tls` prints it
  ("lhost lport fhost fport"); dmesg lines are simulator lines (FreeBSD prints
  nothing for a tag reset) and start with the kernel function's name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, Protocol

from ktls_core.errors import Errno, KtlsError, strerror
from ktls_core.tls.suites import (
    MAC_LEN,
    TLS_MINOR_VER_ONE,
    TLS_MINOR_VER_THREE,
    TLS_MINOR_VER_TWO,
    CryptoAlg,
    Suite,
)

# --- constants ---------------------------------------------------------------

# netinet/tcp.h: TCP_TXTLS_MODE values.
TCP_TLS_MODE_NONE = 0
TCP_TLS_MODE_SW = 1
TCP_TLS_MODE_IFNET = 2
TCP_TLS_MODE_TOE = 3

MODE_NAMES: dict[int, str] = {
    TCP_TLS_MODE_NONE: "none",
    TCP_TLS_MODE_SW: "sw",
    TCP_TLS_MODE_IFNET: "ifnet",
    TCP_TLS_MODE_TOE: "toe",
}
# The gauge node each mode counts sessions in (kern.ipc.tls.<node>.<cipher>).
MODE_GAUGE_NODE: dict[int, str] = {
    TCP_TLS_MODE_SW: "sw",
    TCP_TLS_MODE_IFNET: "ifnet",
    TCP_TLS_MODE_TOE: "toe",
}

# net/if_var.h: enum if_snd_tag_type.
IF_SND_TAG_TYPE_RATE_LIMIT = 0
IF_SND_TAG_TYPE_UNLIMITED = 1
IF_SND_TAG_TYPE_TLS = 2
IF_SND_TAG_TYPE_TLS_RATE_LIMIT = 3

TAG_TYPE_NAMES: dict[int, str] = {
    IF_SND_TAG_TYPE_TLS: "tls",
    IF_SND_TAG_TYPE_TLS_RATE_LIMIT: "tls_rate_limit",
}

# The capability bits ktls_alloc_snd_tag() looks at. Their home is net/ifnet.py;
# repeated here (a test holds them equal) so that switch_tls does not load the
# interface tables to switch a connection to software.
IFCAP_MEXTPG = 0x04000000  # IFCAP_NOMAP in 2019
IFCAP_TXTLS4 = 0x08000000
IFCAP_TXTLS6 = 0x10000000
IFCAP_TXTLS_RTLMT = 0x80000000

# Counters (sys/kern/uipc_ktls.c).
ACTIVE = "kern.ipc.tls.stats.active"
SWITCH_TO_IFNET = "kern.ipc.tls.stats.switch_to_ifnet"
SWITCH_TO_SW = "kern.ipc.tls.stats.switch_to_sw"
SWITCH_FAILED = "kern.ipc.tls.stats.switch_failed"
IFNET_DISABLE_OK = "kern.ipc.tls.stats.ifnet_disable_ok"
IFNET_DISABLE_FAILED = "kern.ipc.tls.stats.ifnet_disable_failed"
IFNET_RESET = "kern.ipc.tls.ifnet.reset"
IFNET_RESET_DROPPED = "kern.ipc.tls.ifnet.reset_dropped"
IFNET_RESET_FAILED = "kern.ipc.tls.ifnet.reset_failed"
IFNET_PERMITTED = "kern.ipc.tls.ifnet.permitted"
IFNET_MAX_REXMIT_PCT = "kern.ipc.tls.ifnet_max_rexmit_pct"


def mode_gauge(mode: int, gauge: str) -> str:
    """'kern.ipc.tls.ifnet.gcm' for (TCP_TLS_MODE_IFNET, 'gcm')."""
    return f"kern.ipc.tls.{MODE_GAUGE_NODE[mode]}.{gauge}"


def mode_name(mode: int) -> str:
    return MODE_NAMES.get(mode, str(mode))


def parse_mode(text: str | int) -> int:
    """A TCP_TXTLS_MODE value from 'sw', 'ifnet' (also 'none', 'toe') or a number.

    Any integer is returned as is: ktls_set_tx_mode() itself rejects values other
    than 1 and 2 with EINVAL, and the caller must see that errno.
    """
    if isinstance(text, int):
        return text
    word = text.strip().lower()
    for value, name in MODE_NAMES.items():
        if word == name:
            return value
    try:
        return int(word, 0)
    except ValueError:
        raise KtlsError(Errno.EINVAL, f"unknown TLS mode {text!r} (sw, ifnet, 1 or 2)") from None


class CounterSink(Protocol):
    """Where counter_u64_add() goes: kernel.Tx, or a dict in tests."""

    def count(self, name: str, delta: int = 1) -> None: ...

    def gauge(self, name: str, delta: int) -> None: ...


# --- the route and the tag ---------------------------------------------------


class EgressView(Protocol):
    """What the route gives ktls_alloc_snd_tag() and ip_output_send().

    `ifname`/`capenable`: the route's interface (nh->nh_ifp) and its enabled
    capabilities (a lagg or vlan derives them from its ports or parent).
    `port`/`port_capenable`: the physical port that transmits the flow: the
    interface itself, the parent of a vlan, the active lagg port (failover) or
    the port picked by the flow's hash (lacp, loadbalance); None when no port
    can send (every lagg port down). `snd_tag`: False when the path has no tag
    lookup at all (a roundrobin or broadcast lagg, lo0). net.route.Egress is one.
    """

    @property
    def ifname(self) -> str: ...

    @property
    def capenable(self) -> int: ...

    @property
    def port(self) -> str | None: ...

    @property
    def port_capenable(self) -> int: ...

    @property
    def snd_tag(self) -> bool: ...


class Egress(NamedTuple):
    """An EgressView with the port's driver: what txmode.tls_egress() builds from the route."""

    ifname: str
    capenable: int
    port: str | None
    port_capenable: int = 0
    snd_tag: bool = True
    port_driver: str | None = None  # the port's driver (cxgbe, mlx5en): driver_check()

    @classmethod
    def direct(cls, ifname: str, capenable: int, driver: str | None = None) -> Egress:
        """A physical interface routed directly (no vlan, no lagg)."""
        return cls(ifname, capenable, ifname, capenable, True, driver)


class SendTag(NamedTuple):
    """struct m_snd_tag of a TLS session: the type and where it lives."""

    type: int
    ifname: str  # the interface it was allocated through (route's nh_ifp)
    port: str  # the physical port holding the NIC's TLS state

    @property
    def type_name(self) -> str:
        return TAG_TYPE_NAMES.get(self.type, str(self.type))

    def matches(self, egress: EgressView | None) -> bool:
        """ip_output_send(): the tag's interface and port are still the egress."""
        return egress is not None and egress.ifname == self.ifname and egress.port == self.port


def _family_cap(ipv6: bool) -> int:
    return IFCAP_TXTLS6 if ipv6 else IFCAP_TXTLS4


# The suites each NIC's tag allocation takes (cxgbe_tls_tag_alloc() of the T6,
# mlx5e_tls_snd_tag_alloc() of ConnectX-6 Dx): TLS versions, then cipher and key sizes.
_DRIVER_VERSIONS: dict[str, tuple[int, ...]] = {
    "cxgbe": (TLS_MINOR_VER_ONE, TLS_MINOR_VER_TWO),
    "mlx5en": (TLS_MINOR_VER_TWO, TLS_MINOR_VER_THREE),
}
_DRIVER_KEYS: dict[str, dict[int, tuple[int, ...]]] = {
    "cxgbe": {CryptoAlg.AES_CBC: (16, 24, 32), CryptoAlg.AES_NIST_GCM_16: (16, 24, 32)},
    "mlx5en": {CryptoAlg.AES_NIST_GCM_16: (16, 32)},
}


def driver_check(driver: str | None, suite: Suite, port: str) -> None:
    """The NIC driver's part of m_snd_tag_alloc(): can its hardware do this suite?

    A T6 (cxgbe) does TLS 1.1 and 1.2 with AES-GCM or AES-CBC and an HMAC; a
    ConnectX-6 Dx (mlx5en) TLS 1.2 and 1.3 with AES-GCM-128/256. Anything else
    is EPROTONOSUPPORT (a key size they lack, EINVAL); a driver without TLS
    tags at all is EOPNOTSUPP, as m_snd_tag_alloc() says without
    if_snd_tag_alloc.
    """
    versions = _DRIVER_VERSIONS.get(driver or "")
    if versions is None:
        raise KtlsError(Errno.EOPNOTSUPP, f"{port}: driver {driver} has no TLS send tags")
    if suite.vminor not in versions:
        raise KtlsError(Errno.EPROTONOSUPPORT, f"{port}: {driver} cannot do TLS {suite.version}")
    keys = _DRIVER_KEYS[driver or ""].get(suite.cipher)
    if keys is None:
        raise KtlsError(Errno.EPROTONOSUPPORT, f"{port}: {driver} cannot do {suite.name}")
    if suite.key_len not in keys:
        raise KtlsError(Errno.EINVAL, f"{port}: {driver} has no {suite.key_len * 8}-bit keys")
    if suite.cipher == CryptoAlg.AES_CBC and suite.auth not in MAC_LEN:
        raise KtlsError(Errno.EPROTONOSUPPORT, f"{port}: {driver} cannot do that HMAC")


def alloc_snd_tag(
    egress: EgressView | None,
    *,
    ipv6: bool,
    force: bool,
    permitted: bool,
    connected: bool = True,
    pacing: bool = False,
    driver: str | None = None,
    suite: Suite | None = None,
) -> SendTag:
    """ktls_alloc_snd_tag(): a TLS send tag on the connection's egress, or KtlsError.

    `force` (mode switches and resets) ignores kern.ipc.tls.ifnet.permitted but
    not the capability checks. `connected` False is a dropped or time-wait
    connection (ECONNRESET). `pacing` is a connection with a pacing rate: on an
    interface with TXTLS_RTLMT enabled it gets a TLS + rate-limit tag. With
    `driver` (the port's) and the session's `suite`, the driver's own tag
    allocation refuses the suites its NIC cannot do (driver_check()).
    """
    if not connected:
        raise KtlsError(Errno.ECONNRESET, "connection is gone")
    if not force and not permitted:
        raise KtlsError(Errno.ENXIO, "kern.ipc.tls.ifnet.permitted is 0")
    if egress is None:
        raise KtlsError(Errno.ENXIO, "no route to the foreign address")
    if not egress.capenable & IFCAP_MEXTPG:
        raise KtlsError(Errno.EOPNOTSUPP, f"{egress.ifname}: unmapped mbufs not enabled")
    cap = _family_cap(ipv6)
    if not egress.capenable & cap:
        family = "TXTLS6" if ipv6 else "TXTLS4"
        raise KtlsError(Errno.EOPNOTSUPP, f"{egress.ifname}: {family} not enabled")
    # m_snd_tag_alloc(): lagg/vlan hand the request to the port; no port, or a
    # port whose driver has TLS off, refuses.
    if not egress.snd_tag:
        raise KtlsError(Errno.EOPNOTSUPP, f"{egress.ifname}: no send tag support on this path")
    if egress.port is None:
        raise KtlsError(Errno.EOPNOTSUPP, f"{egress.ifname}: no active port")
    if not egress.port_capenable & cap:
        raise KtlsError(Errno.EOPNOTSUPP, f"{egress.port}: no TLS offload")
    if suite is not None:
        driver_check(driver, suite, egress.port)
    tag_type = (
        IF_SND_TAG_TYPE_TLS_RATE_LIMIT
        if pacing and egress.capenable & IFCAP_TXTLS_RTLMT
        else IF_SND_TAG_TYPE_TLS
    )
    return SendTag(tag_type, egress.ifname, egress.port)


def try_ifnet(
    sink: CounterSink,
    egress: EgressView | None,
    *,
    gauge: str,
    ipv6: bool,
    force: bool,
    permitted: bool,
    connected: bool = True,
    pacing: bool = False,
    driver: str | None = None,
    suite: Suite | None = None,
) -> SendTag:
    """ktls_try_ifnet(): allocate the tag; on success the session is ifnet mode.

    kern.ipc.tls.ifnet.<gauge> goes up by one. Session creation throws the error
    away and tries software next (ktls_enable_tx()).
    """
    tag = alloc_snd_tag(
        egress,
        ipv6=ipv6,
        force=force,
        permitted=permitted,
        connected=connected,
        pacing=pacing,
        driver=driver,
        suite=suite,
    )
    sink.gauge(mode_gauge(TCP_TLS_MODE_IFNET, gauge), 1)
    return tag


# --- events ------------------------------------------------------------------


class TagAllocated(NamedTuple):
    """ktls_try_ifnet() installed a send tag (session creation or switch)."""

    conn: str
    tag: SendTag

    def describe(self) -> str:
        via = "" if self.tag.ifname == self.tag.port else f" via {self.tag.ifname}"
        return f"send tag ({self.tag.type_name}) allocated on {self.tag.port}{via}"


class PacketDropped(NamedTuple):
    """ip_output_send() freed a record's packet: EAGAIN, then ENOBUFS to TCP."""

    conn: str
    seq: int  # the TLS record's sequence number
    length: int  # bytes of the record on the wire
    reason: str
    errno: int = Errno.ENOBUFS

    def describe(self) -> str:
        return f"record {self.seq} dropped ({self.reason}): {strerror(self.errno)}"


class TagResetScheduled(NamedTuple):
    """ktls_output_eagain() queued the ktls_reset_send_tag() task."""

    conn: str
    old: SendTag | None

    def describe(self) -> str:
        where = f" (tag on {self.old.port})" if self.old is not None else ""
        return f"send tag reset scheduled{where}"


class TagReset(NamedTuple):
    """ktls_reset_send_tag() allocated a new tag (kern.ipc.tls.ifnet.reset)."""

    conn: str
    old: SendTag | None
    new: SendTag

    def describe(self) -> str:
        via = "" if self.new.ifname == self.new.port else f" via {self.new.ifname}"
        return f"send tag reset to {self.new.port}{via}"

    def dmesg(self) -> str:
        old = self.old.port if self.old is not None else "none"
        return f"ktls_reset_send_tag: {self.conn}: send tag moved from {old} to {self.new.port}"


class Retransmitted(NamedTuple):
    """TCP resent a dropped record through the new tag (t_snd_rxt_bytes)."""

    conn: str
    seq: int
    length: int
    tag: SendTag

    def describe(self) -> str:
        return f"record {self.seq} retransmitted ({self.length} bytes) on {self.tag.port}"


class ConnectionDropped(NamedTuple):
    """tcp_drop(): the connection ends with `errno` (ECONNABORTED after a failed reset)."""

    conn: str
    errno: int
    reason: str

    def describe(self) -> str:
        return f"connection dropped: {strerror(self.errno)} ({self.reason})"

    def dmesg(self) -> str:
        return f"ktls_reset_send_tag: {self.conn}: {self.reason}; connection dropped"


class ModeSwitched(NamedTuple):
    """ktls_set_tx_mode() replaced the session with a clone in `new` mode."""

    conn: str
    old: int
    new: int
    tag: SendTag | None

    def describe(self) -> str:
        where = f" (tag on {self.tag.port})" if self.tag is not None else ""
        return f"TLS mode {mode_name(self.old)} -> {mode_name(self.new)}{where}"


class IfnetDisabled(NamedTuple):
    """ktls_disable_ifnet(): too many bytes retransmitted, the session goes to software."""

    conn: str
    rexmit_pct: int
    ok: bool
    errno: int = 0

    def describe(self) -> str:
        if self.ok:
            return f"ifnet TLS disabled ({self.rexmit_pct}% retransmitted), now software"
        return f"ifnet TLS disable failed: {strerror(self.errno)}"

    def dmesg(self) -> str:
        return f"ktls_disable_ifnet: {self.conn}: {self.describe()}"


Event = (
    TagAllocated
    | PacketDropped
    | TagResetScheduled
    | TagReset
    | Retransmitted
    | ConnectionDropped
    | ModeSwitched
    | IfnetDisabled
)


# --- ip_output_send() and the reset task -------------------------------------


class OutputVerdict(NamedTuple):
    """The outcome of ip_output_send() for one ifnet record.

    `sent`: the NIC got it on `tag.port`. Otherwise it was dropped, `errno` is
    what TCP sees (ENOBUFS) and `schedule_reset` says whether this drop queued
    the reset task (only the first drop while no reset is pending does).
    """

    sent: bool
    errno: int = 0
    schedule_reset: bool = False
    reason: str = ""


def output_check(
    tag: SendTag | None, egress: EgressView | None, *, reset_pending: bool
) -> OutputVerdict:
    """ip_output_send() + ktls_output_eagain() for a record of an ifnet session."""
    if tag is not None and tag.matches(egress):
        return OutputVerdict(sent=True)
    if tag is None:
        # After a failed or running reset the session has no tag: every packet drops.
        reason = "no send tag"
    elif egress is None:
        reason = f"send tag on {tag.port}, no route"
    elif egress.ifname != tag.ifname:
        reason = f"send tag on {tag.ifname}, route now via {egress.ifname}"
    else:
        now = egress.port if egress.port is not None else "no port"
        reason = f"send tag on {tag.port}, {egress.ifname} now sends on {now}"
    return OutputVerdict(
        sent=False, errno=Errno.ENOBUFS, schedule_reset=not reset_pending, reason=reason
    )


class ResetOutcome(NamedTuple):
    """What ktls_reset_send_tag() left behind.

    `tag` is the new tag (None on failure); `reset_pending` stays True after a
    failure so no further task is queued; `dropped` says the connection is gone
    (tcp_drop with ECONNABORTED, now or before).
    """

    tag: SendTag | None
    reset_pending: bool
    dropped: bool
    events: tuple[Event, ...]
    error: KtlsError | None = None


def reset_send_tag(
    sink: CounterSink,
    *,
    conn: str,
    old: SendTag | None,
    egress: EgressView | None,
    ipv6: bool,
    dropped: bool = False,
    pacing: bool = False,
    driver: str | None = None,
    suite: Suite | None = None,
) -> ResetOutcome:
    """The ktls_reset_send_tag() task: free the old tag, allocate one with force=true.

    Success: the tag is installed, reset_pending cleared, ifnet.reset += 1, and
    TCP retransmits what was dropped. Failure: the connection is dropped with
    ECONNABORTED (ifnet.reset_dropped += 1 unless it was already dropped),
    ifnet.reset_failed += 1, and reset_pending stays set.
    """
    try:
        tag = alloc_snd_tag(
            egress,
            ipv6=ipv6,
            force=True,
            permitted=True,
            connected=not dropped,
            pacing=pacing,
            driver=driver,
            suite=suite,
        )
    except KtlsError as exc:
        events: list[Event] = []
        if not dropped:
            sink.count(IFNET_RESET_DROPPED)
            where = "no route" if egress is None else (egress.port or egress.ifname)
            events.append(
                ConnectionDropped(
                    conn,
                    Errno.ECONNABORTED,
                    f"no send tag on {where}: {exc.strerror}",
                )
            )
        sink.count(IFNET_RESET_FAILED)
        return ResetOutcome(None, True, True, tuple(events), exc)
    sink.count(IFNET_RESET)
    return ResetOutcome(tag, False, dropped, (TagReset(conn, old, tag),))


# --- ktls_set_tx_mode() ------------------------------------------------------


class ModeChange(NamedTuple):
    """The result of ktls_set_tx_mode(): `changed` False for the no-op cases.

    When changed, the caller replaces the session by its clone in `new` mode
    (with `tag` for ifnet); sequence numbers and the nonce counter carry over.
    """

    old: int  # TCP_TLS_MODE_NONE when there is no session
    new: int
    changed: bool
    tag: SendTag | None = None


def set_tx_mode(
    sink: CounterSink,
    mode: int,
    *,
    current: int,
    gauge: str | None,
    listening: bool = False,
    ealready: bool = False,
    nic_xmit_disabled: bool = False,
    try_ifnet_tag: Callable[[], SendTag] | None = None,
    try_sw: Callable[[], None] | None = None,
) -> ModeChange:
    """ktls_set_tx_mode(): switch a session between software and ifnet.

    `current` is the session's mode (TCP_TLS_MODE_NONE: no session) and `gauge`
    its cipher's gauge leaf ('gcm', 'cbc', 'chacha20'). `ealready` is the
    current profile's check (feature 'ifnet_switch_ealready'): asking for ifnet
    while the connection already has NIC TLS gives EALREADY, and after
    ktls_disable_ifnet() gives ENXIO. `try_ifnet_tag` allocates a tag with
    force=true (see alloc_snd_tag); `try_sw` is ktls_try_sw() (raises when no
    backend takes the session). Both raise KtlsError.

    Counters: the clone is a new session (active + 1), the old one is freed
    (active - 1, its mode's gauge - 1), the clone's mode gauge + 1 and
    switch_to_ifnet or switch_to_sw + 1. A failed try frees only the clone and
    bumps switch_failed. No-ops bump nothing.
    """
    if listening:
        raise KtlsError(Errno.EINVAL, "socket is listening")
    if mode not in (TCP_TLS_MODE_SW, TCP_TLS_MODE_IFNET):
        raise KtlsError(Errno.EINVAL, f"TLS mode {mode} is neither sw (1) nor ifnet (2)")
    if ealready and mode == TCP_TLS_MODE_IFNET:
        # t_nic_ktls_xmit / t_nic_ktls_xmit_dis are looked at before the session.
        if current == TCP_TLS_MODE_IFNET:
            raise KtlsError(Errno.EALREADY, "NIC TLS is already active")
        if nic_xmit_disabled:
            raise KtlsError(Errno.ENXIO, "ifnet TLS was disabled for excessive retransmits")
    if current in (TCP_TLS_MODE_NONE, mode):
        return ModeChange(current, current, changed=False)
    if gauge is None:
        raise ValueError("a session needs its cipher gauge")
    sink.gauge(ACTIVE, 1)  # ktls_clone_session()
    tag: SendTag | None = None
    try:
        if mode == TCP_TLS_MODE_IFNET:
            if try_ifnet_tag is None:
                raise KtlsError(Errno.EOPNOTSUPP, "no ifnet path")
            tag = try_ifnet_tag()
        else:
            if try_sw is None:
                raise KtlsError(Errno.EOPNOTSUPP, "no software backend")
            try_sw()
    except KtlsError:
        # ktls_free(tls_new): the clone never got a mode, so no gauge moves.
        sink.gauge(ACTIVE, -1)
        sink.count(SWITCH_FAILED)
        raise
    sink.gauge(mode_gauge(mode, gauge), 1)
    # The old session's last references go: ktls_cleanup() of the old mode.
    sink.gauge(ACTIVE, -1)
    if current in MODE_GAUGE_NODE:
        sink.gauge(mode_gauge(current, gauge), -1)
    sink.count(SWITCH_TO_IFNET if mode == TCP_TLS_MODE_IFNET else SWITCH_TO_SW)
    return ModeChange(current, mode, changed=True, tag=tag)


# --- retransmissions and ifnet_max_rexmit_pct --------------------------------


class SendAccount(NamedTuple):
    """t_sndbytes / t_snd_rxt_bytes of a connection after tcp_account_for_send()."""

    snd_bytes: int
    rxt_bytes: int
    disable: bool  # ktls_disable_ifnet() is to run
    rexmit_pct: int


def rexmit_percent(snd_bytes: int, rxt_bytes: int) -> int:
    """The integer percentage tcp_account_for_send() compares (1000*rxt / 10*total)."""
    total = snd_bytes + rxt_bytes
    return 0 if total == 0 else (1000 * rxt_bytes) // (10 * total)


def account_for_send(
    snd_bytes: int,
    rxt_bytes: int,
    length: int,
    *,
    is_rxt: bool,
    hw_tls: bool,
    max_rexmit_pct: int | None,
    disabled: bool = False,
) -> SendAccount:
    """tcp_account_for_send(): count `length` bytes sent (or resent, `is_rxt`).

    For an ifnet session (`hw_tls`) a retransmission that lifts the resent share
    above kern.ipc.tls.ifnet_max_rexmit_pct asks for ktls_disable_ifnet(), once
    per connection (`disabled` is t_nic_ktls_xmit_dis). `max_rexmit_pct` None is
    a kernel without the sysctl (the seed): nothing is ever disabled.
    """
    if is_rxt:
        rxt_bytes += length
    else:
        snd_bytes += length
    pct = rexmit_percent(snd_bytes, rxt_bytes)
    disable = (
        max_rexmit_pct is not None
        and hw_tls
        and is_rxt
        and length != 0
        and not disabled
        and pct > max_rexmit_pct
    )
    return SendAccount(snd_bytes, rxt_bytes, disable, pct)


def disable_ifnet(
    sink: CounterSink,
    *,
    conn: str,
    rexmit_pct: int,
    switch: Callable[[], ModeChange],
) -> tuple[ModeChange | None, IfnetDisabled]:
    """The ktls_disable_ifnet() task: set_tx_mode(SW), counting ok or failed.

    `switch` runs set_tx_mode(..., TCP_TLS_MODE_SW, ...) for the connection; the
    caller also sets t_nic_ktls_xmit_dis, which is never cleared.
    """
    try:
        change = switch()
    except KtlsError as exc:
        sink.count(IFNET_DISABLE_FAILED)
        return None, IfnetDisabled(conn, rexmit_pct, ok=False, errno=exc.errno)
    sink.count(IFNET_DISABLE_OK)
    return change, IfnetDisabled(conn, rexmit_pct, ok=True)
