"""TCP_TXTLS_ENABLE validation (reference freebsd-ktls.md §2 steps 1-8), driven by the table."""

from __future__ import annotations

import pytest

from ktls_core.errors import Errno
from ktls_core.tls.enable import (
    ENABLE_RULES,
    ERAS,
    EnableContext,
    EnableError,
    EnableRule,
    TlsEnable,
    check_enable,
    first_failure,
    max_frame_len,
    rules_for,
    session_lengths,
)
from ktls_core.tls.suites import CryptoAlg

GCM, CBC, CHACHA = 25, 11, 41
SHA1, SHA256, SHA384 = 7, 18, 19
OK = EnableContext(
    enable=True,
    listening=False,
    is_tcp=True,
    has_session=False,
    cbc_enable=True,
    mb_use_ext_pgs=True,
    era="current",
)


def gcm(vminor: int = 3, key: int = 16, iv: int = 4, **kw: object) -> TlsEnable:
    return TlsEnable(GCM, bytes(key), bytes(iv), tls_vminor=vminor, **kw)  # type: ignore[arg-type]


def cbc(vminor: int = 3, auth: int = SHA1, iv: int = 0, mac: int = 20, **kw: object) -> TlsEnable:
    return TlsEnable(
        CBC, bytes(16), bytes(iv), auth_algorithm=auth, auth_key=bytes(mac), tls_vminor=vminor, **kw
    )  # type: ignore[arg-type]


def chacha(vminor: int = 3, iv: int = 12, **kw: object) -> TlsEnable:
    return TlsEnable(CHACHA, bytes(32), bytes(iv), tls_vminor=vminor, **kw)  # type: ignore[arg-type]


# rule name -> (context changes, params): trips that row and no earlier one of its eras
EXAMPLES: dict[str, tuple[dict[str, bool], TlsEnable]] = {
    "rec_seq_range": ({}, gcm(rec_seq=2**64)),
    "rec_seq_v0": ({}, gcm(rec_seq=5)),
    "enable_off": ({"enable": False}, gcm()),
    "listening": ({"listening": True}, gcm()),
    "not_tcp": ({"is_tcp": False}, gcm()),
    "session_exists": ({"has_session": True}, gcm()),
    "cbc_disabled": ({"cbc_enable": False}, cbc()),
    "no_ext_pgs": ({"mb_use_ext_pgs": False}, gcm()),
    "vmajor": ({}, gcm(tls_vmajor=2)),
    "vminor": ({}, gcm(vminor=5)),
    "auth_key_len": ({}, gcm(auth_key=bytes(1025))),
    "cipher_key_len": ({}, gcm(key=1025)),
    "iv_len": ({}, gcm(iv=17)),
    "no_cipher_key": ({}, gcm(key=0)),
    "flags": ({}, gcm(flags=1)),
    "cipher_seed": ({}, chacha()),
    "cipher": ({}, TlsEnable(99, bytes(16), bytes(4))),
    "gcm_auth": ({}, gcm(auth_algorithm=SHA1)),
    "gcm_auth_key": ({}, gcm(auth_key=b"k")),
    "gcm_version": ({}, gcm(vminor=2)),
    "gcm12_iv_len": ({}, gcm(iv=12)),
    "gcm13_iv_len": ({}, gcm(vminor=4, iv=4)),
    "cbc_auth": ({}, cbc(auth=0)),
    "cbc_sha2_version": ({}, cbc(vminor=2, auth=SHA256, mac=32)),
    "cbc10_iv_len_seed": ({}, cbc(vminor=1, iv=8)),
    "cbc_auth_key": ({}, cbc(mac=0)),
    "cbc10_iv_len": ({}, cbc(vminor=1, iv=0)),
    "cbc_version": ({}, cbc(vminor=4)),
    "chacha_auth": ({}, chacha(auth_algorithm=SHA1)),
    "chacha_version": ({}, chacha(vminor=2)),
    "chacha_iv_len": ({}, chacha(vminor=4, iv=4)),
}

# From the reference, written out independently of the table: step, errno, eras.
EINVAL, ENOTSUP = Errno.EINVAL, Errno.EOPNOTSUPP
EXPECTED: dict[str, tuple[int, Errno, tuple[str, ...]]] = {
    "rec_seq_range": (0, EINVAL, ("seed", "current")),
    "rec_seq_v0": (0, EINVAL, ("seed",)),
    "enable_off": (1, ENOTSUP, ("seed", "current")),
    "listening": (2, EINVAL, ("seed", "current")),
    "not_tcp": (4, EINVAL, ("seed", "current")),
    "session_exists": (5, Errno.EALREADY, ("seed", "current")),
    "cbc_disabled": (6, ENOTSUP, ("seed", "current")),
    "no_ext_pgs": (7, Errno.ENXIO, ("seed", "current")),
    **{
        name: (8, EINVAL, ("seed", "current"))
        for name in (
            "vmajor",
            "vminor",
            "auth_key_len",
            "cipher_key_len",
            "iv_len",
            "no_cipher_key",
            "flags",
            "gcm_auth",
            "gcm_auth_key",
            "gcm12_iv_len",
            "gcm13_iv_len",
            "cbc_auth",
            "cbc_auth_key",
        )
    },
    **{name: (8, EINVAL, ("seed",)) for name in ("cipher_seed", "cbc10_iv_len_seed")},
    **{
        name: (8, EINVAL, ("current",))
        for name in (
            "cipher",
            "gcm_version",
            "cbc_sha2_version",
            "cbc10_iv_len",
            "cbc_version",
            "chacha_auth",
            "chacha_version",
            "chacha_iv_len",
        )
    },
}
STRERROR = {
    Errno.EINVAL: "Invalid argument",
    Errno.EOPNOTSUPP: "Operation not supported",
    Errno.EALREADY: "Operation already in progress",
    Errno.ENXIO: "Device not configured",
}


def test_examples_and_expectations_cover_the_whole_table() -> None:
    names = [rule.name for rule in ENABLE_RULES]
    assert len(names) == len(set(names))
    assert set(EXAMPLES) == set(names) == set(EXPECTED)


def test_table_rows_match_the_reference() -> None:
    for rule in ENABLE_RULES:
        step, errno, eras = EXPECTED[rule.name]
        assert (rule.step, rule.errno, set(rule.eras)) == (step, errno, set(eras)), rule.name
        assert rule.counted == (step >= 3)  # enable_calls is bumped at step 3
        assert rule.strerror == STRERROR[errno]


def test_rows_are_in_freebsd_order() -> None:
    steps = [rule.step for rule in ENABLE_RULES]
    assert steps == sorted(steps)
    for era in ERAS:
        assert [r.name for r in rules_for(era)] == [r.name for r in ENABLE_RULES if era in r.eras]


@pytest.mark.parametrize("rule", ENABLE_RULES, ids=lambda r: r.name)
@pytest.mark.parametrize("era", ERAS)
def test_every_row_yields_its_errno_in_its_eras(rule: EnableRule, era: str) -> None:
    changes, params = EXAMPLES[rule.name]
    ctx = OK.replace(era=era, **changes)
    if era in rule.eras:
        with pytest.raises(EnableError) as exc:
            check_enable(ctx, params)
        err = exc.value
        assert err.rule is rule
        assert err.errno == rule.errno
        assert err.counted == (rule.step >= 3)
        assert err.strerror == STRERROR[err.errno]
    else:
        assert first_failure(ctx, params) is not rule


VALID_CURRENT = [
    gcm(),
    gcm(key=32),
    gcm(vminor=4, iv=12),
    gcm(vminor=4, key=32, iv=12),
    gcm(auth_algorithm=CryptoAlg.AES_128_NIST_GMAC),  # GMAC ids accepted for compatibility
    chacha(),
    chacha(vminor=4),
    cbc(vminor=1, iv=16),
    cbc(vminor=2),
    cbc(vminor=2, iv=16),  # 1.1+ ignore a given IV
    cbc(),
    cbc(auth=SHA256, mac=32),
    cbc(auth=SHA384, mac=48),
    gcm(key=24),  # key sizes are the backend's business (step 9), not step 8
    gcm(rec_seq=2**64 - 1),
]


@pytest.mark.parametrize("params", VALID_CURRENT, ids=lambda p: f"{p.suite.name}")
def test_valid_parameters_pass_in_current(params: TlsEnable) -> None:
    check_enable(OK, params)


@pytest.mark.parametrize(
    "params",
    [
        gcm(),
        gcm(vminor=4, iv=12),
        gcm(vminor=2),
        gcm(vminor=1, iv=0),  # 2019: no GCM version check
        cbc(vminor=4),
        cbc(vminor=1, auth=SHA256, mac=32, iv=0),  # 2019: no CBC version limit
        gcm(rec_seq=0),
        gcm(rec_seq=None),
    ],
    ids=lambda p: f"{p.suite.name}-{p.rec_seq}",
)
def test_what_the_2019_kernel_let_through_step_8(params: TlsEnable) -> None:
    check_enable(OK.replace(era="seed"), params)


def test_order_picks_the_earliest_step() -> None:
    both = OK.replace(enable=False, listening=True, is_tcp=False)
    with pytest.raises(EnableError) as exc:
        check_enable(both, gcm(tls_vmajor=9))
    assert exc.value.errno == Errno.EOPNOTSUPP and not exc.value.counted
    with pytest.raises(EnableError) as exc:
        check_enable(OK.replace(listening=True, is_tcp=False), gcm())
    assert exc.value.rule.name == "listening" and not exc.value.counted
    with pytest.raises(EnableError) as exc:
        check_enable(OK.replace(has_session=True, cbc_enable=False, mb_use_ext_pgs=False), cbc())
    assert exc.value.errno == Errno.EALREADY and exc.value.counted
    with pytest.raises(EnableError) as exc:
        check_enable(OK.replace(mb_use_ext_pgs=False), gcm(key=0))
    assert exc.value.errno == Errno.ENXIO


def test_max_frame_len_is_capped_by_maxlen() -> None:
    assert max_frame_len(16384) == 16384
    assert max_frame_len(65536) == 16384
    assert max_frame_len(4096) == 4096


def test_session_lengths_and_derived_fields() -> None:
    assert session_lengths(gcm()) == (13, 16)
    assert session_lengths(gcm(vminor=4, iv=12)) == (5, 17)
    assert session_lengths(cbc(vminor=1, iv=16)) == (5, 36)
    assert session_lengths(cbc(auth=SHA384, mac=48)) == (21, 64)
    assert cbc(vminor=2, iv=16).effective_iv == b""  # FreeBSD sets iv_len = 0
    assert cbc(vminor=1, iv=16).effective_iv == bytes(16)
    assert gcm().start_seq == 0 and gcm(rec_seq=7).start_seq == 7
    assert gcm(key=32).suite.name == "TLS1.2 AES-256-GCM"
    secret = TlsEnable(GCM, b"SECRET-KEY-12345", b"SALT", auth_key=b"", rec_seq=1)
    assert "SECRET" not in repr(secret) and "SALT" not in repr(secret)
