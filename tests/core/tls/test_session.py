"""TCP_TXTLS_ENABLE (ktls_enable_tx()) in FreeBSD's order, and the counters of reference §7."""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from ktls_sw import CONN, boot, connect, counters, enable, params, sw_ready

from ktls_core import counters as counters_mod
from ktls_core import kld
from ktls_core.errors import Errno, KtlsError
from ktls_core.kernel import Kernel
from ktls_core.net import tcp
from ktls_core.tls import session
from ktls_core.tls.enable import TlsEnable
from ktls_core.tls.suites import parse_auth, parse_cipher, parse_version

STATS = "kern.ipc.tls.stats."


def _enable_errno(kernel, p) -> int:  # type: ignore[no-untyped-def]
    with pytest.raises(KtlsError) as info:
        enable(kernel, p)
    return int(info.value.errno)


def test_seed_gates_in_order_and_what_is_counted(tmp_path: Path) -> None:
    kernel = boot(tmp_path, "seed")
    connect(kernel)
    p = params()
    # 1: kern.ipc.tls.enable=0 -> ENOTSUP, before enable_calls is counted.
    assert _enable_errno(kernel, p) == Errno.EOPNOTSUPP
    assert counters(kernel)[STATS + "enable_calls"] == 0
    with kernel.transaction() as tx:
        tx.set_sysctl("kern.ipc.tls.enable", 1)
    # 7: kern.ipc.mb_use_ext_pgs=0 -> ENXIO, counted.
    assert _enable_errno(kernel, p) == Errno.ENXIO
    assert counters(kernel)[STATS + "enable_calls"] == 1
    with kernel.transaction() as tx:
        tx.set_sysctl("kern.ipc.mb_use_ext_pgs", 1)
    # 9: no backend registered -> EOPNOTSUPP; the session existed for a moment.
    assert _enable_errno(kernel, p) == Errno.EOPNOTSUPP
    c = counters(kernel)
    assert (c[STATS + "enable_calls"], c[STATS + "active"], c[STATS + "offload_total"]) == (2, 0, 0)
    with kernel.transaction() as tx:
        kld.kldload(tx, "ktls_ocf")
    s = enable(kernel, p)
    assert (s.mode, s.backend, s.next_seq, s.start_seq) == (session.TCP_TLS_MODE_SW, "OCF", 0, 0)
    c = counters(kernel)
    assert c[STATS + "enable_calls"] == 3
    assert c[STATS + "active"] == 1
    assert c[STATS + "offload_total"] == 1
    assert c["kern.ipc.tls.sw.gcm"] == 1
    # 5: a second enable on the connection: EALREADY (no rekeying), counted.
    assert _enable_errno(kernel, params()) == Errno.EALREADY
    c = counters(kernel)
    assert (c[STATS + "enable_calls"], c[STATS + "active"], c[STATS + "offload_total"]) == (4, 1, 1)


def test_seed_ocf_refuses_cbc_and_bad_key_sizes_as_eopnotsupp(tmp_path: Path) -> None:
    kernel = boot(tmp_path, "seed")
    sw_ready(kernel)
    connect(kernel)
    # 2019: every backend refusal becomes EOPNOTSUPP, and active goes up and down again.
    assert _enable_errno(kernel, params("1.2", "aes-cbc", 16, 0, "hmac-sha1")) == Errno.EOPNOTSUPP
    assert _enable_errno(kernel, params("1.2", "aes-gcm", 24, 4)) == Errno.EOPNOTSUPP
    # ktls_create_session(): EINVAL before any backend (GCM 1.2 needs a 4-byte salt).
    assert _enable_errno(kernel, params("1.2", "aes-gcm", 16, 12)) == Errno.EINVAL
    c = counters(kernel)
    assert (c[STATS + "enable_calls"], c[STATS + "active"], c["kern.ipc.tls.sw.cbc"]) == (3, 0, 0)


def test_seed_refuses_rec_seq_before_counting(tmp_path: Path) -> None:
    kernel = boot(tmp_path, "seed")
    sw_ready(kernel)
    connect(kernel)
    assert _enable_errno(kernel, params(rec_seq=5)) == Errno.EINVAL
    assert counters(kernel)[STATS + "enable_calls"] == 0


@pytest.mark.parametrize(
    ("args", "gauge"),
    [
        (("1.2", "aes-gcm", 32, 4, None), "gcm"),
        (("1.3", "chacha20-poly1305", 32, 12, None), "chacha20"),
        (("1.0", "aes-cbc", 16, 16, "hmac-sha1"), "cbc"),
    ],
)
def test_current_gauges_per_cipher_and_rec_seq(tmp_path: Path, args: tuple, gauge: str) -> None:  # type: ignore[type-arg]
    kernel = boot(tmp_path, "current")
    connect(kernel)
    with kernel.transaction() as tx:
        tx.set_sysctl("kern.ipc.tls.enable", 1)
    s = enable(kernel, params(*args, rec_seq=1000))
    assert (s.start_seq, s.next_seq) == (1000, 1000)
    c = counters(kernel)
    assert c[f"kern.ipc.tls.sw.{gauge}"] == 1
    # Modern kernels start their threads with the first session.
    assert c[STATS + "active"] == 1
    with kernel.snapshot() as tx:
        assert tx.sysctl(STATS + "threads") >= 1


def test_current_returns_the_backend_error(tmp_path: Path) -> None:
    kernel = boot(tmp_path, "current")
    connect(kernel)
    with kernel.transaction() as tx:
        tx.set_sysctl("kern.ipc.tls.enable", 1)
    # ktls_ocf_try(): a 24-byte AES key is EINVAL in the current profile.
    assert _enable_errno(kernel, params("1.2", "aes-gcm", 24, 4)) == Errno.EINVAL
    # CBC with kern.ipc.tls.cbc_enable=0: ENOTSUP (step 6, counted).
    with kernel.transaction() as tx:
        tx.set_sysctl("kern.ipc.tls.cbc_enable", 0)
    assert _enable_errno(kernel, params("1.1", "aes-cbc", 16, 0, "hmac-sha1")) == Errno.EOPNOTSUPP
    c = counters(kernel)
    assert (c[STATS + "enable_calls"], c[STATS + "active"]) == (2, 0)


def test_drop_frees_the_session_and_the_gauges_follow(tmp_path: Path) -> None:
    kernel = boot(tmp_path, "seed")
    sw_ready(kernel)
    conn = connect(kernel)
    enable(kernel, params())
    with kernel.transaction() as tx:
        tcp.drop(tx, conn)
        assert session.get(tx, conn.id) is None
    c = counters(kernel)
    assert (c[STATS + "active"], c["kern.ipc.tls.sw.gcm"]) == (0, 0)


def test_mode_get(tmp_path: Path) -> None:
    kernel = boot(tmp_path, "seed")
    sw_ready(kernel)
    conn = connect(kernel)
    with kernel.snapshot() as tx:
        assert session.get_mode(tx, conn) == session.TCP_TLS_MODE_NONE
    enable(kernel, params())
    with kernel.snapshot() as tx:
        assert session.get_mode(tx, conn) == session.TCP_TLS_MODE_SW


def test_unknown_connection_is_esrch(tmp_path: Path) -> None:
    kernel = boot(tmp_path, "seed")
    sw_ready(kernel)
    with pytest.raises(KtlsError) as info:
        enable(kernel, params(), ("192.0.2.10:443", "198.51.100.7:9"))
    assert info.value.errno == Errno.ESRCH
    assert CONN  # the default connection was never made
    assert counters(kernel)[STATS + "enable_calls"] == 0


def test_kldunload_rules(tmp_path: Path) -> None:
    kernel = boot(tmp_path, "seed", seed=None)
    sw_ready(kernel)
    connect(kernel)
    enable(kernel, params())
    with kernel.transaction() as tx:
        f = kld.find_file(tx, "ktls_ocf")
        assert f is not None and f.name == "ktls_ocf.ko"
    # allow_unload=0: refused, with the kernel's message (kept: the caller commits).
    with kernel.transaction() as tx, pytest.raises(KtlsError) as info:
        kld.kldunload(tx, f)
    assert info.value.errno == Errno.EBUSY
    with kernel.snapshot() as tx:
        assert tx.dmesg()[-1] == "KTLS: Deregistering crypto method OCF is not supported"
    # allow_unload=1 (a loader tunable): still refused while a session uses OCF.
    with kernel.transaction() as tx:
        tx.set_sysctl("kern.ipc.tls.allow_unload", 1)
    with pytest.raises(KtlsError), kernel.transaction() as tx:
        kld.kldunload(tx, f)
    with kernel.transaction() as tx:
        for conn in list(tcp.iter_conns(tx)):
            tcp.drop(tx, conn)
        kld.kldunload(tx, f)
        assert kld.loaded_modules(tx) == []


# -- enable_many (connect --count) ---------------------------------------------------

_CYCLE = [  # (version, cipher, key, iv, auth, auth key)
    ("1.2", "aes-gcm", 16, 4, None, 0),
    ("1.0", "aes-cbc", 16, 16, "hmac-sha1", 20),
    ("1.3", "chacha20-poly1305", 32, 12, None, 0),
    ("1.3", "aes-gcm", 32, 12, None, 0),
]


def _cycling_params() -> Callable[[Callable[[int], bytes]], TlsEnable]:
    """struct tls_enable from arc4rand(), a different suite each call."""
    calls = itertools.count()

    def make(random_bytes: Callable[[int], bytes]) -> TlsEnable:
        version, cipher, klen, ivlen, auth, alen = _CYCLE[next(calls) % len(_CYCLE)]
        return TlsEnable(
            parse_cipher(cipher), random_bytes(klen), random_bytes(ivlen), parse_auth(auth),
            random_bytes(alen) if alen else b"", tls_vminor=parse_version(version),
        )  # fmt: skip

    return make


def _tables(kernel: Kernel) -> dict[str, list[Any]]:
    with kernel.snapshot() as tx:
        return {
            t: tx.conn.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall()
            for t in ("meta", "sysctl", "counters", "docs", "dmesg", "conns", "sessions")
        }


@pytest.mark.parametrize("profile", ["seed", "current"])
def test_enable_many_is_enable_tx_call_by_call(
    tmp_path: Path, run_ktls: Any, init_state: Any, profile: str
) -> None:
    """Same rows (keys and nonces too), counters, dmesg and random stream, with failures
    of every kind among the calls (listening socket, existing session, suites refused)."""
    results = []
    for how in ("one_by_one", "batch"):
        state = str(tmp_path / f"{how}.db")
        init_state(state, profile, "--seed", "3")
        assert run_ktls("sysctl", "kern.ipc.tls.enable=1", "kern.ipc.mb_use_ext_pgs=1",
                        state=state).exit == 0  # fmt: skip
        if profile == "seed":
            assert run_ktls("kldload", "ktls_ocf", state=state).exit == 0
        else:  # mce0 takes GCM; CBC and ChaCha20 fall back to software
            assert run_ktls("sysctl", "kern.ipc.tls.ifnet.permitted=1", state=state).exit == 0
            assert run_ktls("ifconfig", "mce0", "txtls", state=state).exit == 0
        kernel = Kernel.open(state)
        try:
            with kernel.transaction() as tx:
                ep = tcp.parse_endpoints(["203.0.113.10:443", "203.0.113.7:1000"])
                ids = tcp.connect_many(tx, ep, 13)
                tx.conn.execute("UPDATE conns SET state = 'LISTEN' WHERE id = ?", (ids[3],))
                conn = tcp.get(tx, ids[6])
                assert conn is not None
                session.enable_tx(tx, conn, TlsEnable(parse_cipher("aes-gcm"), bytes(16), bytes(4)))
            make = _cycling_params()
            first: KtlsError | None = None
            with kernel.transaction() as tx:
                conns = tcp.id_range(tx, ids[0], ids[-1])
                if how == "batch":
                    first = session.enable_many(tx, conns, make)
                else:
                    for conn in conns:
                        try:
                            session.enable_tx(tx, conn, make(tx.random_bytes))
                        except KtlsError as exc:
                            first = first or exc
            assert first is not None
            results.append(((first.errno, first.detail), _tables(kernel)))
        finally:
            kernel.store.close()
    assert results[0] == results[1]
    (errno, _detail), tables = results[1]
    modes = sorted(row[1] for row in tables["sessions"])
    if profile == "seed":  # OCF of 2019 refuses CBC, the 2019 struct has no ChaCha20
        assert (errno, modes) == (Errno.EOPNOTSUPP, [session.TCP_TLS_MODE_SW] * 7)
    else:  # the listening socket fails first; mce0 takes every GCM session (7)
        assert (errno, modes.count(session.TCP_TLS_MODE_IFNET), len(modes)) == (Errno.EINVAL, 7, 12)


def test_counter_batch_moves_as_one_update_each(tmp_path: Path) -> None:
    """counters.Batch: the same wrap at 2**64 and clamp at zero as add()/gauge_add()."""
    moves = [("g", -3), ("g", 2), ("c", 5), ("g", -1), ("g", 4), ("c", 2**64 - 1), ("g", -9)]
    values = []
    for batched in (False, True):
        conn = sqlite3.connect(str(tmp_path / f"{batched}.db"))
        conn.execute("CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)")
        counters_mod.create(conn, ["c", "g"])
        batch = counters_mod.Batch(conn)
        for name, delta in moves:
            if name == "c":
                batch.count(name, delta) if batched else counters_mod.add(conn, name, delta)
            else:
                batch.gauge(name, delta) if batched else counters_mod.gauge_add(conn, name, delta)
        batch.flush()
        values.append(counters_mod.get_many(conn, ""))
        conn.close()
    assert values[0] == values[1] == {"c": 4, "g": 0}
    with pytest.raises(ValueError):
        counters_mod.Batch(sqlite3.connect(":memory:")).count("c", -1)


@pytest.mark.parametrize("seed", [None, 4])
def test_random_stream_is_random_bytes(tmp_path: Path, seed: int | None) -> None:
    """Kernel.random_stream(): random_bytes() call by call, the seeded counter saved once."""
    sizes = [16, 4, 8, 0, 33, 64, 1]
    results = []
    for batched in (False, True):
        kernel = boot(tmp_path / str(batched), "seed", seed=seed)
        with kernel.transaction() as tx:
            stream = tx.random_stream()
            draws = [(stream if batched else tx.random_bytes)(n) for n in sizes]
            stream.save()
            results.append((draws, tx.meta("rng_counter")))
        kernel.store.close()
    assert [len(b) for b in results[1][0]] == sizes
    if seed is not None:
        assert results[0] == results[1]
        assert results[1][1] == "8"  # one block per draw, two for 33 and 64, none for 0
