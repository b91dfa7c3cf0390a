"""ktls_core.sysctl: the MIB, sysctl(8)'s number rules and formats, loader tunables."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ktls_core import sysctl
from ktls_core.profile import load_profile
from ktls_core.sysctl import (
    EmptyValue,
    InvalidValue,
    Mib,
    NotLeaf,
    ReadOnly,
    ReadOnlyTunable,
    check_settable,
    format_value,
    parse_numeric,
    parse_tunables,
    parse_values,
    raw_bytes,
    split_assignment,
)

SEED = load_profile("seed")
CURRENT = load_profile("current")
RANGES = {
    "integer": (-(2**31), 2**31 - 1),
    "unsigned integer": (0, 2**32 - 1),
    "uint8_t": (0, 255),
    "uint64_t": (0, 2**64 - 1),
}


# -- the tree ---------------------------------------------------------------------------


def test_implicit_nodes_and_lookup() -> None:
    mib = Mib(SEED)
    kern = mib.lookup("kern")
    ipc = mib.lookup("kern.ipc")
    assert kern is not None and kern.is_node and kern.descr == "High kernel, proc, limits &c"
    assert ipc is not None and ipc.is_node and ipc.descr == "IPC"
    assert mib.lookup("kern.ipc.tls") == SEED.by_name["kern.ipc.tls"]
    assert mib.lookup("kern.ipc.tls.") is None
    assert mib.lookup("kern.ipc.tl") is None
    assert mib.lookup("") is None


def test_module_oids_exist_only_while_loaded() -> None:
    gated = [o.name for o in SEED.oids if o.module == "ktls_ocf"]
    assert "kern.ipc.tls.stats.ocf" in gated and len(gated) == 4
    without, loaded = Mib(SEED), Mib(SEED, ["ktls_ocf"])
    for name in gated:
        assert without.lookup(name) is None
        assert loaded.lookup(name) == SEED.by_name[name]
    assert [o.name for o in loaded.leaves("kern.ipc.tls.stats.ocf")] == [
        "kern.ipc.tls.stats.ocf.tls12_gcm_crypts",
        "kern.ipc.tls.stats.ocf.tls13_gcm_crypts",
        "kern.ipc.tls.stats.ocf.retries",
    ]
    assert without.leaves("kern.ipc.tls.stats.ocf") == []
    assert "kern.ipc.tls.stats.ocf" not in without.names()
    # The current kernel has OCF built in: no module gate.
    assert Mib(CURRENT).lookup("kern.ipc.tls.stats.ocf.retries") is not None


def test_leaves_keep_the_table_order_and_skip_nodes() -> None:
    mib = Mib(SEED, ["ktls_ocf"])
    table = [o.name for o in SEED.oids if not o.is_node]
    assert [o.name for o in mib.leaves()] == table
    assert [o.name for o in mib.leaves("kern")] == table
    assert [o.name for o in mib.leaves("kern.ipc.tls.ifnet")] == [
        n for n in table if n.startswith("kern.ipc.tls.ifnet.")
    ]
    # A prefix of a name is not a parent: kern.ipc.tls.s is not kern.ipc.tls.sw.
    assert mib.leaves("kern.ipc.tls.s") == []


def test_names_for_completion() -> None:
    names = Mib(SEED).names()
    assert names[:2] == ["kern", "kern.ipc"]
    assert "kern.ipc.tls.enable" in names and "kern.ipc.tls.sw" in names
    assert len(names) == len(set(names))


# -- numbers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("type_", "text", "value"),
    [
        ("integer", "42", 42),
        ("integer", "-42", -42),
        ("integer", "+42", 42),
        ("integer", "0x2a", 42),
        ("integer", "0X2A", 42),
        ("integer", "052", 42),
        ("integer", "0", 0),
        ("integer", "\t42", 42),  # strtol skips leading white space
        ("integer", "2147483648", -(2**31)),  # (int)strtol: the low 32 bits
        ("integer", "4294967295", -1),
        ("integer", "-9223372036854775808", 0),
        ("unsigned integer", "4294967295", 2**32 - 1),
        ("unsigned integer", "4294967296", 0),
        ("unsigned integer", "-1", 2**32 - 1),  # strtoul negates in unsigned
        ("uint8_t", "255", 255),
        ("uint8_t", "256", 0),
        ("uint8_t", "-1", 255),
        ("uint64_t", "18446744073709551615", 2**64 - 1),
        ("uint64_t", "-1", 2**64 - 1),
        ("uint64_t", "0xffffffffffffffff", 2**64 - 1),
    ],
)
def test_parse_numeric(type_: str, text: str, value: int) -> None:
    assert parse_numeric(type_, text) == value


@pytest.mark.parametrize(
    ("type_", "text"),
    [
        ("integer", ""),
        ("integer", "abc"),
        ("integer", "1x"),
        ("integer", "42 "),  # trailing junk: endptr is not at the end
        ("integer", "08"),  # octal
        ("integer", "0x"),
        ("integer", "0xg"),
        ("integer", "-"),
        ("integer", "+-1"),
        ("integer", "1.5"),
        ("integer", "9223372036854775808"),  # ERANGE for a long
        ("integer", "-9223372036854775809"),
        ("uint64_t", "18446744073709551616"),  # ERANGE for an unsigned long
        ("uint8_t", "yes"),
        ("uint8_t", "٣"),  # a non-ASCII digit is no digit for strtoul
    ],
)
def test_parse_numeric_rejects(type_: str, text: str) -> None:
    with pytest.raises(InvalidValue) as info:
        parse_numeric(type_, text)
    assert info.value.message == f"invalid {type_} '{text}'"


@given(st.data())
def test_decimal_and_hex_output_parse_back(data: st.DataObject) -> None:
    type_ = data.draw(st.sampled_from(sorted(RANGES)))
    low, high = RANGES[type_]
    value = data.draw(st.integers(low, high))
    assert parse_numeric(type_, format_value(type_, value)) == value
    hex_text = format_value(type_, value, hex_=True)
    assert len(hex_text) == 2 + sysctl.TYPE_SIZES[type_] * 2
    back = parse_numeric(type_, hex_text if value else "0")
    assert back == value
    assert int.from_bytes(raw_bytes(type_, value), "little", signed=type_ == "integer") == value


@given(st.integers(-(2**70), 2**70))
def test_uint8_is_the_low_byte(value: int) -> None:
    if -(2**64) < value < 2**64:
        assert parse_numeric("uint8_t", str(value)) == value % 256
    else:
        with pytest.raises(InvalidValue):
            parse_numeric("uint8_t", str(value))


def test_format_value() -> None:
    assert format_value("uint8_t", 1, hex_=True) == "0x01"
    assert format_value("uint8_t", 0, hex_=True) == "0000"
    assert format_value("integer", 16384, hex_=True) == "0x00004000"
    assert format_value("integer", -1, hex_=True) == "0xffffffff"
    assert format_value("integer", 0, hex_=True) == "0" * 10
    assert format_value("uint64_t", 1, hex_=True) == "0x0000000000000001"
    assert format_value("uint64_t", 0, hex_=True) == "0" * 18
    assert format_value("uint64_t", 1234567890, human=True) == "1,234,567,890"
    assert format_value("integer", -1234, human=True) == "-1,234"
    assert format_value("integer", 2**32 - 1) == "-1"  # as the C type holds it
    assert raw_bytes("integer", -2) == b"\xfe\xff\xff\xff"
    assert raw_bytes("uint8_t", 1) == b"\x01"


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        ("kern.ipc.tls.enable", ("kern.ipc.tls.enable", None)),
        ("kern.ipc.tls.enable=1", ("kern.ipc.tls.enable", "1")),
        ("kern.ipc.tls.enable:1", ("kern.ipc.tls.enable", "1")),
        ("kern.ipc.tls.enable = 1", ("kern.ipc.tls.enable", "1")),
        ("kern.ipc.tls.enable=", ("kern.ipc.tls.enable", "")),
        ('x="1"', ("x", "1")),
        ("x='1'", ("x", "1")),
        ("x='1", ("x", "1")),  # a lone opening quote is dropped too
        ('x="', ("x", "")),
        ("x=a:b", ("x", "a:b")),  # strsep splits at the first of = and :
        ("x:a=b", ("x", "a=b")),
        ("x\t", ("x", None)),
    ],
)
def test_split_assignment(arg: str, expected: tuple[str, str | None]) -> None:
    assert split_assignment(arg) == expected


def test_parse_values() -> None:
    oid = SEED.by_name["kern.ipc.tls.maxlen"]
    assert parse_values(oid, "1,2 3") == [1, 2, 3]
    assert parse_values(oid, " , ") == []
    with pytest.raises(EmptyValue):
        parse_values(oid, "")


def test_settable_checks_in_sysctl8_order() -> None:
    with pytest.raises(NotLeaf):
        check_settable(SEED.by_name["kern.ipc.tls"])
    with pytest.raises(ReadOnly):
        check_settable(SEED.by_name["kern.ipc.tls.stats.active"])
    with pytest.raises(ReadOnlyTunable) as info:
        check_settable(SEED.by_name["kern.ipc.tls.bind_threads"])
    assert info.value.extra == ("Tunable values are set in /boot/loader.conf",)
    check_settable(SEED.by_name["kern.ipc.tls.enable"])  # RW
    check_settable(CURRENT.by_name["kern.ipc.tls.enable"])  # RWTUN


@pytest.mark.parametrize(
    ("profile", "name", "value", "stored"),
    [
        ("seed", "kern.ipc.tls.enable", 7, 1),
        ("seed", "kern.ipc.tls.cbc_enable", 0, 0),
        ("seed", "kern.ipc.mb_use_ext_pgs", 7, 7),  # a plain SYSCTL_INT in the seed
        ("current", "kern.ipc.mb_use_ext_pgs", 7, 1),  # sysctl_mb_use_ext_pgs: extpg != 0
        ("current", "kern.ipc.tls.max_reclaim", -5, -5),
    ],
)
def test_stored_value_follows_the_handler(
    profile: str, name: str, value: int, stored: int
) -> None:
    oid = load_profile(profile).by_name[name]
    assert sysctl.stored_value(oid, value) == stored


# -- tunables ---------------------------------------------------------------------------


def test_parse_tunables() -> None:
    assert parse_tunables(
        CURRENT,
        [
            "kern.ipc.tls.bind_threads=2",
            "kern.ipc.tls.enable=0x100",  # uint8_t truncation, then the bool
            " kern.ipc.tls.sw_buffer_cache = '0' ",
            "kern.ipc.tls.maxlen=8192",
        ],
    ) == {
        "kern.ipc.tls.bind_threads": 2,
        "kern.ipc.tls.enable": 0,
        "kern.ipc.tls.sw_buffer_cache": 0,
        "kern.ipc.tls.maxlen": 8192,
    }
    assert parse_tunables(SEED, []) == {}


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("kern.ipc.tls.enable=1", "kern.ipc.tls.enable: not a loader tunable in profile seed"),
        ("kern.x=1", "kern.x: no such sysctl in profile seed"),
        ("kern.ipc=1", "kern.ipc: no such sysctl in profile seed"),
        ("kern.ipc.tls.sw=1", "kern.ipc.tls.sw: a node, not a tunable"),
        ("=1", "'=1': expected NAME=VALUE"),
        ("kern.ipc.tls.maxlen", "'kern.ipc.tls.maxlen': expected NAME=VALUE"),
        ("kern.ipc.tls.maxlen=1k", "kern.ipc.tls.maxlen: invalid unsigned integer '1k'"),
        ("kern.ipc.tls.maxlen=,", "kern.ipc.tls.maxlen: empty numeric value"),
    ],
)
def test_parse_tunables_rejects(item: str, message: str) -> None:
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(")):
        parse_tunables(SEED, [item])


# -- completion -------------------------------------------------------------------------


def test_completion_names_without_a_state(tmp_path: Path) -> None:
    import os

    missing = os.path.join(str(tmp_path), "none", "kernel.db")
    names = sysctl.completion_names(missing)
    assert names == Mib(SEED).names()
    assert not os.path.exists(os.path.dirname(missing))  # nothing was created


def test_completion_names_never_raise(tmp_path: Path) -> None:
    import os

    bad = os.path.join(str(tmp_path), "bad.db")
    with open(bad, "wb") as fh:
        fh.write(b"garbage" * 100)
    os.chmod(bad, 0o600)
    assert sysctl.completion_names(bad) == Mib(SEED).names()
