"""KTLS transmit sessions: TCP_TXTLS_ENABLE, TCP_TXTLS_MODE (get), create/free/clone.

A session is a row of the `sessions` table keyed by its connection's id. It keeps
what `struct ktls_session` and the socket buffer keep for transmit: the suite and
keys, the mode (software or ifnet) and send tag, the next record sequence number
(sb_tls_seqno), the TLS 1.2 GCM explicit-nonce counter, the TLS 1.0 chained CBC
IV, max_frame_len, and what was sent. Every gauge of reference §7 moves in the
same transaction as the row, so `active` always equals the number of rows.

`enable_tx()` is ktls_enable_tx() + ktls_create_session() + the backend choice
(TOE, then ifnet, then software), in FreeBSD's order (reference §2).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from ktls_core.errors import Errno, KtlsError
from ktls_core.store import from_db, to_db
from ktls_core.tls.suites import (
    TLS_MINOR_VER_THREE,
    TLS_MINOR_VER_TWO,
    TLS_MINOR_VER_ZERO,
    CryptoAlg,
    Suite,
    gauge_name,
)

if TYPE_CHECKING:
    from ktls_core.kernel import Kernel, Tx
    from ktls_core.net.tcp import Conn, Endpoints
    from ktls_core.tls.enable import TlsEnable
    from ktls_core.tls.record import RecordProtector

# netinet/tcp.h: TCP_TXTLS_MODE values.
TCP_TLS_MODE_NONE = 0
TCP_TLS_MODE_SW = 1
TCP_TLS_MODE_IFNET = 2
TCP_TLS_MODE_TOE = 3
MODE_NAMES = {TCP_TLS_MODE_NONE: "none", TCP_TLS_MODE_SW: "sw", TCP_TLS_MODE_IFNET: "ifnet",
              TCP_TLS_MODE_TOE: "toe"}  # fmt: skip
# The gauge node of each mode: kern.ipc.tls.<node>.<cipher>.
MODE_NODES = {TCP_TLS_MODE_SW: "sw", TCP_TLS_MODE_IFNET: "ifnet", TCP_TLS_MODE_TOE: "toe"}

ACTIVE = "kern.ipc.tls.stats.active"
ENABLE_CALLS = "kern.ipc.tls.stats.enable_calls"
OFFLOAD_TOTAL = "kern.ipc.tls.stats.offload_total"
THREADS = "kern.ipc.tls.stats.threads"

_COLUMNS = (
    "conn_id, mode, vminor, cipher, auth, cipher_key, iv, auth_key, start_seq, next_seq,"
    " nonce_ctr, cbc_iv, max_frame_len, backend, tag_type, tag_ifname, tag_port,"
    " reset_pending, records, bytes, worker"
)


def mode_name(mode: int) -> str:
    return MODE_NAMES.get(mode, str(mode))


def mode_gauge(mode: int, cipher: int) -> str:
    """'kern.ipc.tls.sw.gcm' for a software AES-GCM session."""
    return f"kern.ipc.tls.{MODE_NODES[mode]}.{gauge_name(cipher)}"


@dataclass(frozen=True, slots=True)
class Session:
    """A KTLS transmit session (struct ktls_session + so_snd's sb_tls_seqno)."""

    conn_id: int
    mode: int
    vminor: int
    cipher: int
    auth: int
    cipher_key: bytes = field(repr=False)
    iv: bytes = field(repr=False)
    auth_key: bytes = field(repr=False)
    start_seq: int
    next_seq: int  # the sequence number the next framed record gets
    nonce_ctr: int | None  # TLS 1.2 AES-GCM: explicit nonce of the next record
    cbc_iv: bytes | None = field(repr=False)  # TLS 1.0 AES-CBC: IV of the next record
    max_frame_len: int
    backend: str | None  # the software backend ("OCF") or None for ifnet
    tag_type: int | None = None
    tag_ifname: str | None = None
    tag_port: str | None = None
    reset_pending: bool = False
    records: int = 0  # records sent
    bytes: int = 0  # plaintext bytes sent in records
    worker: int = 0  # the worker thread index this connection is pinned to

    @property
    def suite(self) -> Suite:
        return Suite(self.cipher, len(self.cipher_key), self.vminor, self.auth)

    @property
    def mode_name(self) -> str:
        return mode_name(self.mode)

    @property
    def gauge(self) -> str:
        return mode_gauge(self.mode, self.cipher)

    @property
    def chained_iv(self) -> bool:
        """TLS 1.0 CBC: each record's IV is the last block of the previous one."""
        return self.cipher == CryptoAlg.AES_CBC and self.vminor == TLS_MINOR_VER_ZERO


def _from_row(r: Sequence[Any]) -> Session:
    return Session(
        conn_id=int(r[0]), mode=int(r[1]), vminor=int(r[2]), cipher=int(r[3]), auth=int(r[4]),
        cipher_key=bytes(r[5]), iv=bytes(r[6]), auth_key=bytes(r[7]),
        start_seq=from_db(int(r[8])), next_seq=from_db(int(r[9])),
        nonce_ctr=None if r[10] is None else from_db(int(r[10])),
        cbc_iv=None if r[11] is None else bytes(r[11]), max_frame_len=int(r[12]),
        backend=None if r[13] is None else str(r[13]),
        tag_type=None if r[14] is None else int(r[14]),
        tag_ifname=None if r[15] is None else str(r[15]),
        tag_port=None if r[16] is None else str(r[16]),
        reset_pending=bool(r[17]), records=int(r[18]), bytes=int(r[19]), worker=int(r[20]),
    )  # fmt: skip


def get(tx: Tx, conn_id: int) -> Session | None:
    row = tx.conn.execute(
        f"SELECT {_COLUMNS} FROM sessions WHERE conn_id = ?", (conn_id,)
    ).fetchone()
    return None if row is None else _from_row(row)


def all_sessions(tx: Tx) -> dict[int, Session]:
    """Every session by connection id (netstat)."""
    return {int(r[0]): _from_row(r) for r in tx.conn.execute(f"SELECT {_COLUMNS} FROM sessions")}


def _insert(tx: Tx, s: Session) -> None:
    tx.conn.execute(
        f"INSERT INTO sessions ({_COLUMNS}) VALUES ({', '.join('?' * 21)})",
        (
            s.conn_id, s.mode, s.vminor, s.cipher, s.auth, s.cipher_key, s.iv, s.auth_key,
            to_db(s.start_seq), to_db(s.next_seq),
            None if s.nonce_ctr is None else to_db(s.nonce_ctr), s.cbc_iv, s.max_frame_len,
            s.backend, s.tag_type, s.tag_ifname, s.tag_port, int(s.reset_pending), s.records,
            s.bytes, s.worker,
        ),
    )  # fmt: skip


def store(tx: Tx, s: Session) -> None:
    """Write a session back whole (a mode switch or tag reset replaced it)."""
    tx.conn.execute("DELETE FROM sessions WHERE conn_id = ?", (s.conn_id,))
    _insert(tx, s)


# -- ktls_enable_tx() -------------------------------------------------------------


def _threads(tx: Tx) -> int:
    """The pool size; a modern kernel starts its threads with the first session."""
    n = tx.sysctl(THREADS)
    if n == 0 and tx.profile.feature("threads_lazy"):
        n = tx.profile.by_name[THREADS].default or (os.cpu_count() or 1)
        tx.set_sysctl(THREADS, n)
        tx.log(f"KTLS: Initialized {n} threads")
    return max(1, n)


def enable_context(tx: Tx, conn: Conn) -> Any:
    from ktls_core.net.tcp import LISTEN
    from ktls_core.tls.enable import EnableContext

    return EnableContext(
        enable=bool(tx.sysctl("kern.ipc.tls.enable")),
        listening=conn.state == LISTEN,
        is_tcp=True,
        has_session=get(tx, conn.id) is not None,
        cbc_enable=bool(tx.sysctl("kern.ipc.tls.cbc_enable")),
        mb_use_ext_pgs=bool(tx.sysctl("kern.ipc.mb_use_ext_pgs")),
        era=tx.era,
    )


def enable_tx(tx: Tx, conn: Conn, params: TlsEnable) -> Session:
    """setsockopt(TCP_TXTLS_ENABLE): create the session or raise KtlsError.

    Counters move as FreeBSD moves them even when the call fails (enable_calls
    from step 3 on; active up and down again when no backend takes the session),
    so the caller commits the transaction before re-raising (see `syscall`).
    """
    from ktls_core.tls.enable import EnableError, check_enable, max_frame_len

    try:
        check_enable(enable_context(tx, conn), params)
    except EnableError as exc:
        if exc.counted:
            tx.count(ENABLE_CALLS)
        raise
    tx.count(ENABLE_CALLS)

    # ktls_create_session(): the session exists from here (active + 1).
    suite = params.suite
    tx.gauge(ACTIVE, 1)
    threads = _threads(tx)
    iv = params.effective_iv
    nonce_ctr = None
    cbc_iv = None
    if suite.cipher == CryptoAlg.AES_NIST_GCM_16 and suite.vminor == TLS_MINOR_VER_TWO:
        # arc4rand() fills iv[8..15]: the explicit nonce counter starts anywhere.
        nonce_ctr = int.from_bytes(tx.random_bytes(8), "big")
    if suite.cipher == CryptoAlg.AES_CBC and suite.vminor == TLS_MINOR_VER_ZERO:
        cbc_iv = iv
    draft = Session(
        conn_id=conn.id, mode=TCP_TLS_MODE_NONE, vminor=suite.vminor, cipher=suite.cipher,
        auth=suite.auth, cipher_key=params.cipher_key, iv=iv, auth_key=params.auth_key,
        start_seq=params.start_seq, next_seq=params.start_seq, nonce_ctr=nonce_ctr,
        cbc_iv=cbc_iv, max_frame_len=max_frame_len(tx.sysctl("kern.ipc.tls.maxlen")),
        backend=None, worker=conn.id % threads,
    )  # fmt: skip

    # TOE, then ifnet, then software; errors of the first two are thrown away.
    try:
        session = _try_ifnet(tx, conn, draft, force=False)
    except KtlsError:
        try:
            session = _try_sw(tx, draft, params)
        except KtlsError:
            tx.gauge(ACTIVE, -1)  # ktls_free(): the session never got a mode
            raise
    _insert(tx, session)
    tx.count(OFFLOAD_TOTAL)
    return session


def _try_sw(tx: Tx, draft: Session, params: TlsEnable) -> Session:
    """ktls_try_sw(): the first software backend (by priority) that takes the session."""
    from ktls_core import kld

    backend = kld.select_backend(tx, params)
    tx.gauge(mode_gauge(TCP_TLS_MODE_SW, draft.cipher), 1)
    return replace(draft, mode=TCP_TLS_MODE_SW, backend=backend.name)


def _try_ifnet(tx: Tx, conn: Conn, draft: Session, *, force: bool) -> Session:
    """ktls_try_ifnet(): a NIC send tag on the route's interface (ifnet_tls, txmode).

    kern.ipc.tls.ifnet.permitted is 0 by default, so without it (and without
    force) this fails with ENXIO before the route is looked at. The port's
    driver may refuse suites its NIC cannot do (ifnet_tls.driver_check()).
    """
    from ktls_core.tls import ifnet_tls, txmode

    permitted = bool(tx.sysctl(ifnet_tls.IFNET_PERMITTED))
    if not force and not permitted:
        raise KtlsError(Errno.ENXIO, "kern.ipc.tls.ifnet.permitted is 0")
    egress = txmode.tls_egress(txmode.load_net(tx), conn.family, conn.faddr, conn.flowid)
    tag = ifnet_tls.try_ifnet(
        tx, egress, gauge=gauge_name(draft.cipher), ipv6=conn.family == 6, force=force,
        permitted=permitted, driver=None if egress is None else egress.port_driver,
        suite=draft.suite,
    )  # fmt: skip
    return replace(
        draft, mode=TCP_TLS_MODE_IFNET, tag_type=tag.type, tag_ifname=tag.ifname,
        tag_port=tag.port, backend=None,
    )  # fmt: skip


# -- free, clone, get ---------------------------------------------------------------


def free(tx: Tx, conn_id: int) -> Session | None:
    """ktls_destroy(): active - 1 and the mode's gauge - 1; the row goes."""
    s = get(tx, conn_id)
    if s is None:
        return None
    tx.conn.execute("DELETE FROM sessions WHERE conn_id = ?", (conn_id,))
    tx.gauge(ACTIVE, -1)
    if s.mode in MODE_NODES:
        tx.gauge(s.gauge, -1)
    return s


def clone(tx: Tx, s: Session) -> Session:
    """ktls_clone_session(): same keys and sequence state, no mode yet (active + 1).

    The caller tries the new mode and then either `replace_with()` (the old one is
    freed) or frees the clone with `tx.gauge(ACTIVE, -1)`.
    """
    tx.gauge(ACTIVE, 1)
    return replace(s, mode=TCP_TLS_MODE_NONE, backend=None, tag_type=None, tag_ifname=None,
                   tag_port=None, reset_pending=False)  # fmt: skip


def replace_with(tx: Tx, old: Session, new: Session) -> Session:
    """The clone takes over: the old session is freed and the clone's mode gauge + 1.

    The clone continues the old session's sequence state as stored now: a
    concurrent sender's reservations committed meanwhile are kept.
    """
    current = get(tx, old.conn_id) or old
    merged = replace(
        new, next_seq=current.next_seq, nonce_ctr=current.nonce_ctr, cbc_iv=current.cbc_iv,
        records=current.records, bytes=current.bytes,
    )  # fmt: skip
    tx.gauge(ACTIVE, -1)
    if old.mode in MODE_NODES:
        tx.gauge(old.gauge, -1)
    if merged.mode in MODE_NODES:
        tx.gauge(merged.gauge, 1)
    store(tx, merged)
    return merged


def get_mode(tx: Tx, conn: Conn) -> int:
    """getsockopt(TCP_TXTLS_MODE): the session's mode, 0 without one; EINVAL if listening."""
    from ktls_core.net.tcp import LISTEN

    if conn.state == LISTEN:
        raise KtlsError(Errno.EINVAL, "socket is listening")
    s = get(tx, conn.id)
    return TCP_TLS_MODE_NONE if s is None else s.mode


def uses_backend(tx: Tx, backend: str) -> int:
    """How many sessions a software backend serves (kldunload refuses while > 0)."""
    row = tx.conn.execute("SELECT count(*) FROM sessions WHERE backend = ?", (backend,)).fetchone()
    return int(row[0])


def is_tls13(s: Session) -> bool:
    return s.vminor == TLS_MINOR_VER_THREE


def tls_enable(s: Session) -> TlsEnable:
    """The struct tls_enable this session was made from (keys for the record layer)."""
    from ktls_core.tls.enable import TlsEnable

    return TlsEnable(
        cipher_algorithm=s.cipher, cipher_key=s.cipher_key, iv=s.iv, auth_algorithm=s.auth,
        auth_key=s.auth_key, tls_vminor=s.vminor, rec_seq=s.start_seq,
    )  # fmt: skip


def protector(tx: Tx, s: Session, frame_len: int | None = None) -> RecordProtector:
    """The record protector that seals this session's records.

    Software mode asks the session's backend (ktls_ocf); ifnet mode gets the
    record layer itself, the NIC model (same bytes as software). Records are cut
    at max_frame_len, or at `frame_len` when a send's calls are all shorter.
    """
    from ktls_core import kld
    from ktls_core.tls.record import SessionKeys, make_protector

    params = tls_enable(s)
    mfl = min(frame_len or s.max_frame_len, s.max_frame_len)
    b = kld.backend(tx, s.backend) if s.backend else None
    if b is not None:
        return b.new_protector(params, mfl)
    return make_protector(SessionKeys.from_enable(params), mfl)


def txtls_enable(kernel: Kernel, ep: Endpoints, make_params: Callable[[Tx], TlsEnable]) -> Session:
    """setsockopt(TCP_TXTLS_ENABLE) as one kernel call.

    `make_params` builds struct tls_enable inside the transaction (so random keys
    come from the kernel's arc4rand()). A failure still commits what FreeBSD
    counts for it (enable_calls, active up and down), then raises.
    """
    from ktls_core.net import tcp

    failure: KtlsError | None = None
    with kernel.transaction() as tx:
        conn = tcp.find(tx, ep)
        params = make_params(tx)
        try:
            return enable_tx(tx, conn, params)
        except KtlsError as exc:
            failure = exc
    raise failure
