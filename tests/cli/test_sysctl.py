"""`ktls sysctl`: listings (golden files), setting, every diagnostic, -f, formats."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ktls_core.errors import Errno, KtlsError
from ktls_core.profile import load_profile

PROFILES = ("seed", "current")
USAGE = (
    "usage: ktls sysctl [-bdehiNnoqTtWx] [-f filename] name[=value] ...\n"
    "       ktls sysctl [-bdehNnoqTtWx] -a\n"
)


@pytest.fixture
def booted(
    state: str, init_state: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> Callable[[str], str]:
    """Boot `state` with a profile on a 4-CPU host (stats.threads is ncpu in the seed)."""

    def boot(profile: str) -> str:
        monkeypatch.setattr(os, "cpu_count", lambda: 4)
        init_state(state, profile)
        return state

    return boot


# -- listings ---------------------------------------------------------------------------

VARIANTS = {
    "plain": [],
    "d": ["-d"],
    "t": ["-t"],
    "e": ["-e"],
    "x": ["-x"],
    "N": ["-N"],
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("profile", PROFILES)
def test_node_listing_golden(
    profile: str, variant: str, booted: Any, ktls: Any, check_golden: Any
) -> None:
    booted(profile)
    result = ktls("sysctl", *VARIANTS[variant], "kern.ipc.tls")
    assert (result.exit, result.stderr) == (0, "")
    check_golden(f"sysctl/{profile}-kern.ipc.tls-{variant}.txt", result.stdout)


@pytest.mark.parametrize("profile", PROFILES)
def test_all_golden(profile: str, booted: Any, ktls: Any, check_golden: Any) -> None:
    booted(profile)
    result = ktls("sysctl", "-a")
    assert (result.exit, result.stderr) == (0, "")
    check_golden(f"sysctl/{profile}-a.txt", result.stdout)


@pytest.mark.parametrize("profile", PROFILES)
def test_listing_follows_the_profile_table(profile: str, booted: Any, ktls: Any) -> None:
    """The documented order: the profile's rows, leaves only, nodes expanded in place."""
    booted(profile)
    expected = [o.name for o in load_profile(profile).oids if not o.is_node and o.module is None]
    assert ktls("sysctl", "-N", "-a").stdout.splitlines() == expected
    assert ktls("sysctl", "-N", "kern").stdout.splitlines() == expected
    tls = [n for n in expected if n.startswith("kern.ipc.tls.")]
    assert ktls("sysctl", "-N", "kern.ipc.tls").stdout.splitlines() == tls


def test_description_of_a_node_comes_first(booted: Any, ktls: Any) -> None:
    booted("seed")
    lines = ktls("sysctl", "-d", "kern.ipc.tls.sw").stdout.splitlines()
    assert lines == [
        "kern.ipc.tls.sw: Software TLS session stats",
        "kern.ipc.tls.sw.cbc: Active number of software TLS sessions using AES-CBC",
        "kern.ipc.tls.sw.gcm: Active number of software TLS sessions using AES-GCM",
    ]
    assert ktls("sysctl", "-td", "kern.ipc").stdout.splitlines()[:2] == [
        "kern.ipc: node: IPC",
        "kern.ipc.mb_use_ext_pgs: integer: Use unmapped mbufs for sendfile(2) and TLS offload",
    ]
    # -n drops the name, also from descriptions and types.
    assert ktls("sysctl", "-nt", "kern.ipc.tls.enable").stdout == "uint8_t\n"


def test_several_names_in_one_call(booted: Any, ktls: Any) -> None:
    booted("seed")
    result = ktls("sysctl", "kern.ipc.tls.enable", "kern.ipc.tls.maxlen", "kern.ipc.tls.sw")
    assert result.stdout == (
        "kern.ipc.tls.enable: 0\n"
        "kern.ipc.tls.maxlen: 16384\n"
        "kern.ipc.tls.sw.cbc: 0\n"
        "kern.ipc.tls.sw.gcm: 0\n"
    )


def test_all_is_ignored_with_names_and_ignores_a_file(
    booted: Any, ktls: Any, tmp_path: Path
) -> None:
    """main(): `-a` lists everything only when no name is given, and then skips -f."""
    booted("seed")
    assert ktls("sysctl", "-a", "kern.ipc.tls.enable").stdout == "kern.ipc.tls.enable: 0\n"
    conf = tmp_path / "c.conf"
    conf.write_text("kern.ipc.tls.enable=1\n")
    result = ktls("sysctl", "-a", "-f", str(conf))
    assert result.exit == 0 and "kern.ipc.tls.enable: 0\n" in result.stdout
    assert ktls("sysctl", "-n", "kern.ipc.tls.enable").stdout == "0\n"
    doc = json.loads(ktls("--format", "json", "sysctl", "-a").stdout)["sysctl"]
    assert [e["name"] for e in doc] == ktls("sysctl", "-Na").stdout.split()


def test_tunables_and_writable_filters(booted: Any, ktls: Any) -> None:
    booted("seed")
    assert ktls("sysctl", "-NT", "kern.ipc").stdout.splitlines() == [
        "kern.ipc.mb_use_ext_pgs",
        "kern.ipc.tls.allow_unload",
        "kern.ipc.tls.bind_threads",
        "kern.ipc.tls.maxlen",
        "kern.ipc.tls.ifnet.permitted",
    ]
    assert ktls("sysctl", "-NW", "kern.ipc").stdout.splitlines() == [
        "kern.ipc.mb_use_ext_pgs",
        "kern.ipc.tls.maxlen",
        "kern.ipc.tls.enable",
        "kern.ipc.tls.cbc_enable",
        "kern.ipc.tls.ifnet.permitted",
    ]
    # A named leaf that the filter leaves out prints nothing and does not fail.
    assert ktls("sysctl", "-T", "kern.ipc.tls.enable").stdout == ""
    assert ktls("sysctl", "-T", "kern.ipc.tls.enable").exit == 0


# -- formats ----------------------------------------------------------------------------


def test_hex_widths_and_zero(booted: Any, ktls: Any) -> None:
    booted("seed")
    ktls("sysctl", "kern.ipc.tls.enable=1", "kern.ipc.mb_use_ext_pgs=-1")
    result = ktls(
        "sysctl", "-x",
        "kern.ipc.tls.enable", "kern.ipc.tls.cbc_enable", "kern.ipc.tls.maxlen",
        "kern.ipc.mb_use_ext_pgs", "kern.ipc.tls.ifnet.permitted", "kern.ipc.tls.stats.active",
    )  # fmt: skip
    assert result.stdout == (
        "kern.ipc.tls.enable: 0x01\n"
        "kern.ipc.tls.cbc_enable: 0x01\n"
        "kern.ipc.tls.maxlen: 0x00004000\n"
        "kern.ipc.mb_use_ext_pgs: 0xffffffff\n"
        "kern.ipc.tls.ifnet.permitted: 0000000000\n"
        "kern.ipc.tls.stats.active: 000000000000000000\n"
    )
    ktls("sysctl", "kern.ipc.tls.enable=0")
    assert ktls("sysctl", "-nx", "kern.ipc.tls.enable").stdout == "0000\n"


def test_human_thousands(booted: Any, ktls: Any) -> None:
    booted("seed")
    ktls("sysctl", "kern.ipc.mb_use_ext_pgs=-1234567")
    result = ktls("sysctl", "-h", "kern.ipc.tls.maxlen", "kern.ipc.mb_use_ext_pgs")
    assert result.stdout == "kern.ipc.tls.maxlen: 16,384\nkern.ipc.mb_use_ext_pgs: -1,234,567\n"


def test_binary_values(booted: Any, ktls: Any) -> None:
    booted("seed")
    ktls("sysctl", "kern.ipc.tls.enable=1")
    result = ktls(
        "sysctl", "-b",
        "kern.ipc.tls.enable", "kern.ipc.tls.maxlen", "kern.ipc.tls.stats.active",
    )  # fmt: skip
    assert result.stdout_bytes == b"\x01" + (16384).to_bytes(4, "little") + bytes(8)
    # -b on a set: the old and the new bytes, no arrow.
    result = ktls("sysctl", "-b", "kern.ipc.mb_use_ext_pgs=-2")
    assert result.stdout_bytes == bytes(4) + b"\xfe\xff\xff\xff"


def test_equals_and_values_only(booted: Any, ktls: Any) -> None:
    booted("seed")
    assert ktls("sysctl", "-e", "kern.ipc.tls.enable").stdout == "kern.ipc.tls.enable=0\n"
    assert ktls("sysctl", "-n", "kern.ipc.tls.maxlen").stdout == "16384\n"
    assert ktls("sysctl", "-e", "kern.ipc.tls.enable=1").stdout == "kern.ipc.tls.enable=0 -> 1\n"
    assert ktls("sysctl", "-n", "kern.ipc.tls.enable=0").stdout == "1 -> 0\n"
    # -d makes an assignment a read (parse(): `newvalstr == NULL || dflag`).
    result = ktls("sysctl", "-d", "kern.ipc.tls.enable=1")
    assert result.stdout == "kern.ipc.tls.enable: Enable support for kernel TLS offload\n"
    assert ktls("sysctl", "-n", "kern.ipc.tls.enable").stdout == "0\n"


def test_json_and_yaml(booted: Any, ktls: Any) -> None:
    booted("seed")
    result = ktls("--format", "json", "sysctl", "kern.ipc.tls.enable=1", "kern.ipc.tls.maxlen")
    assert json.loads(result.stdout) == {
        "sysctl": [
            {"name": "kern.ipc.tls.enable", "type": "uint8_t", "old": 0, "new": 1},
            {"name": "kern.ipc.tls.maxlen", "type": "unsigned integer", "value": 16384},
        ]
    }
    result = ktls("--libxo", "json", "sysctl", "-d", "kern.ipc.tls.toe")
    doc = json.loads(result.stdout)
    assert doc["sysctl"][0] == {
        "name": "kern.ipc.tls.toe", "type": "node", "description": "TOE TLS session stats",
    }  # fmt: skip
    assert doc["sysctl"][1]["value"] == 0
    import yaml

    result = ktls("--format", "yaml", "sysctl", "-W", "kern.ipc.tls.ifnet")
    assert yaml.safe_load(result.stdout) == {
        "sysctl": [{"name": "kern.ipc.tls.ifnet.permitted", "type": "unsigned integer", "value": 0}]
    }
    # Diagnostics stay text on stderr.
    result = ktls("--format", "json", "sysctl", "kern.nope")
    assert (result.exit, result.stderr) == (1, "sysctl: unknown oid 'kern.nope'\n")
    assert json.loads(result.stdout) == {"sysctl": []}


# -- setting ----------------------------------------------------------------------------


def _new_value(oid: Any) -> int:
    if oid.handler == "bool":
        return 0 if oid.default else 1
    return oid.default + 7


@pytest.mark.parametrize(
    ("profile", "name"),
    [(p, o.name) for p in PROFILES for o in load_profile(p).oids if not o.is_node and o.writable],
)
def test_every_writable_oid_round_trips(profile: str, name: str, booted: Any, ktls: Any) -> None:
    booted(profile)
    oid = load_profile(profile).by_name[name]
    new = _new_value(oid)
    result = ktls("sysctl", f"{name}={new}")
    assert (result.exit, result.stderr) == (0, "")
    assert result.stdout == f"{name}: {oid.default} -> {new}\n"
    # A new command (a new transaction) reads what the last one committed.
    assert ktls("sysctl", "-n", name).stdout == f"{new}\n"
    assert ktls("sysctl", f"{name}:{oid.default}").stdout == f"{name}: {new} -> {oid.default}\n"


@pytest.mark.parametrize(
    ("value", "stored"),
    [("1", 1), ("2", 1), ("255", 1), ("256", 0), ("257", 1), ("-1", 1), ("0x100", 0), ("0", 0)],
)
def test_uint8_bool_truncates_then_normalises(
    value: str, stored: int, booted: Any, ktls: Any
) -> None:
    """(uint8_t)strtoul, then sysctl_handle_bool stores `value != 0`."""
    booted("seed")
    result = ktls("sysctl", f"kern.ipc.tls.enable={value}")
    assert result.stdout == f"kern.ipc.tls.enable: 0 -> {stored}\n"


@pytest.mark.parametrize(
    ("text", "stored"),
    [
        ("4096", 4096),
        ("0x1000", 4096),
        ("0X1000", 4096),
        ("010", 8),
        ('"4096"', 4096),
        ("'4096'", 4096),
        ("  4096", 4096),
        ("4096,8192", 4096),  # a list: the scalar handler takes the first
        ("4096 8192", 4096),
        ("4294967297", 1),  # (int)strtoul: the low 32 bits
        ("-1", 4294967295),
    ],
)
def test_unsigned_parsing_base0(text: str, stored: int, booted: Any, ktls: Any) -> None:
    booted("seed")
    result = ktls("sysctl", f"kern.ipc.tls.maxlen={text}")
    assert (result.exit, result.stdout) == (0, f"kern.ipc.tls.maxlen: 16384 -> {stored}\n")


def test_integer_wraps_to_32_bits(booted: Any, ktls: Any) -> None:
    booted("seed")
    result = ktls("sysctl", "kern.ipc.mb_use_ext_pgs=4294967295", "kern.ipc.mb_use_ext_pgs")
    assert result.stdout == "kern.ipc.mb_use_ext_pgs: 0 -> -1\nkern.ipc.mb_use_ext_pgs: -1\n"


def test_current_mb_use_ext_pgs_stays_settable_as_a_bool(booted: Any, ktls: Any) -> None:
    booted("current")
    assert ktls("sysctl", "kern.ipc.mb_use_ext_pgs=0").stdout == "kern.ipc.mb_use_ext_pgs: 1 -> 0\n"
    assert ktls("sysctl", "kern.ipc.mb_use_ext_pgs=5").stdout == "kern.ipc.mb_use_ext_pgs: 0 -> 1\n"


def test_only_separators_is_no_new_value(booted: Any, ktls: Any) -> None:
    booted("seed")
    result = ktls("sysctl", "kern.ipc.tls.maxlen=,")
    assert (result.exit, result.stdout) == (0, "kern.ipc.tls.maxlen: 16384 -> 16384\n")


# -- diagnostics ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("profile", "arg", "stderr"),
    [
        ("seed", "kern.ipc.tls.foo", "sysctl: unknown oid 'kern.ipc.tls.foo'\n"),
        ("seed", "kern.ipc.tls.foo=1", "sysctl: unknown oid 'kern.ipc.tls.foo'\n"),
        ("seed", "kern.ipc.tls=1", "sysctl: oid 'kern.ipc.tls' isn't a leaf node\n"),
        ("seed", "kern.ipc.tls.stats.active=1",
         "sysctl: oid 'kern.ipc.tls.stats.active' is read only\n"),
        ("seed", "kern.ipc.tls.stats.threads=1",
         "sysctl: oid 'kern.ipc.tls.stats.threads' is read only\n"),
        ("seed", "kern.ipc.tls.bind_threads=1",
         "sysctl: oid 'kern.ipc.tls.bind_threads' is a read only tunable\n"
         "sysctl: Tunable values are set in /boot/loader.conf\n"),
        ("current", "kern.ipc.tls.maxlen=1",
         "sysctl: oid 'kern.ipc.tls.maxlen' is a read only tunable\n"
         "sysctl: Tunable values are set in /boot/loader.conf\n"),
        ("seed", "kern.ipc.tls.enable=", "sysctl: empty numeric value\n"),
        ("seed", 'kern.ipc.tls.enable=""', "sysctl: empty numeric value\n"),
        ("seed", "kern.ipc.tls.enable=yes", "sysctl: invalid uint8_t 'yes'\n"),
        ("seed", "kern.ipc.tls.maxlen=abc", "sysctl: invalid unsigned integer 'abc'\n"),
        ("seed", "kern.ipc.tls.maxlen=0x", "sysctl: invalid unsigned integer '0x'\n"),
        ("seed", "kern.ipc.tls.maxlen=18446744073709551616",
         "sysctl: invalid unsigned integer '18446744073709551616'\n"),
        ("seed", "kern.ipc.mb_use_ext_pgs=x", "sysctl: invalid integer 'x'\n"),
        ("seed", "kern.ipc.mb_use_ext_pgs=08", "sysctl: invalid integer '08'\n"),
        ("seed", "kern.ipc.mb_use_ext_pgs=1,x", "sysctl: invalid integer 'x'\n"),
        ("seed", "kern.ipc.mb_use_ext_pgs=9223372036854775808",
         "sysctl: invalid integer '9223372036854775808'\n"),
        # stats.ocf exists only while ktls_ocf is loaded (seed).
        ("seed", "kern.ipc.tls.stats.ocf", "sysctl: unknown oid 'kern.ipc.tls.stats.ocf'\n"),
    ],
)  # fmt: skip
def test_diagnostics(profile: str, arg: str, stderr: str, booted: Any, ktls: Any) -> None:
    booted(profile)
    before = ktls("sysctl", "-a").stdout
    result = ktls("sysctl", arg)
    assert (result.exit, result.stdout, result.stderr) == (1, "", stderr)
    assert ktls("sysctl", "-a").stdout == before  # nothing changed


def test_a_failing_argument_does_not_stop_the_others(booted: Any, ktls: Any) -> None:
    booted("seed")
    args = ["kern.nope", "kern.ipc.tls.enable=1", "kern.ipc.tls=1", "kern.ipc.tls.maxlen"]
    result = ktls("sysctl", *args)
    assert result.exit == 1
    assert result.stdout == "kern.ipc.tls.enable: 0 -> 1\nkern.ipc.tls.maxlen: 16384\n"
    assert result.stderr == (
        "sysctl: unknown oid 'kern.nope'\nsysctl: oid 'kern.ipc.tls' isn't a leaf node\n"
    )
    # The successful set was committed with the failures around it (exit 1 = partial).
    assert ktls("sysctl", "-n", "kern.ipc.tls.enable").stdout == "1\n"


def test_quiet_and_ignore_unknown(booted: Any, ktls: Any) -> None:
    booted("seed")
    result = ktls("sysctl", "-q", "kern.nope", "kern.ipc.tls.enable")
    assert (result.exit, result.stdout, result.stderr) == (1, "kern.ipc.tls.enable: 0\n", "")
    result = ktls("sysctl", "-i", "kern.nope", "kern.ipc.tls.enable")
    assert (result.exit, result.stdout, result.stderr) == (0, "kern.ipc.tls.enable: 0\n", "")
    # -q hides unknown oids only.
    result = ktls("sysctl", "-q", "kern.ipc.tls=1")
    assert (result.exit, result.stderr) == (1, "sysctl: oid 'kern.ipc.tls' isn't a leaf node\n")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-N", "-n", "kern.ipc.tls"], None),
        (["-Nn", "kern.ipc.tls"], None),
        ([], None),
        (["-T", "kern.ipc.tls.enable=1"], "Can't set variables when using -T or -W"),
        (["-W", "kern.ipc.tls.enable:1"], "Can't set variables when using -T or -W"),
    ],
)
def test_usage_errors(args: list[str], message: str | None, booted: Any, ktls: Any) -> None:
    booted("seed")
    result = ktls("sysctl", *args)
    expected = (f"sysctl: {message}\n" if message else "") + USAGE
    assert (result.exit, result.stdout, result.stderr) == (2, "", expected)
    assert ktls("sysctl", "-n", "kern.ipc.tls.enable").stdout == "0\n"


def test_usage_error_after_earlier_output(booted: Any, ktls: Any) -> None:
    """sysctl(8) prints what came before the assignment, then the usage."""
    booted("seed")
    result = ktls("sysctl", "-W", "kern.ipc.tls.enable", "kern.ipc.tls.enable=1")
    assert result.exit == 2
    assert result.stdout == "kern.ipc.tls.enable: 0\n"
    assert result.stderr == "sysctl: Can't set variables when using -T or -W\n" + USAGE


def test_unknown_flag_is_a_usage_error(booted: Any, ktls: Any) -> None:
    """getopt(3)'s own diagnostic, then the usage, as FreeBSD's sysctl prints them."""
    booted("seed")
    result = ktls("sysctl", "-z", "kern.ipc.tls")
    assert (result.exit, result.stdout) == (2, "")
    assert result.stderr == "sysctl: illegal option -- z\n" + USAGE


def test_f_without_its_argument_is_a_usage_error(booted: Any, ktls: Any) -> None:
    booted("seed")
    result = ktls("sysctl", "-n", "-f")
    assert (result.exit, result.stdout) == (2, "")
    assert result.stderr == "sysctl: option requires an argument -- f\n" + USAGE


def test_flags_group_and_f_takes_the_rest_of_its_word(
    booted: Any, ktls: Any, tmp_path: Any
) -> None:
    """getopt(3): `-ne` is -n -e; `-fFILE` and `-f FILE` both name the file."""
    booted("seed")
    conf = tmp_path / "a.conf"
    conf.write_text("kern.ipc.tls.enable=1\n")
    assert ktls("sysctl", "-ne", "kern.ipc.tls.enable").stdout == "0\n"
    assert ktls("sysctl", f"-f{conf}").stdout == "kern.ipc.tls.enable: 0 -> 1\n"
    assert ktls("sysctl", "-n", "-f", str(conf)).stdout == "1 -> 1\n"


def test_help_is_still_clicks(booted: Any, ktls: Any) -> None:
    booted("seed")
    for argv in (["--help"], ["-n", "--help"]):
        result = ktls("sysctl", *argv)
        assert result.exit == 0
        assert result.stdout.startswith(USAGE.splitlines()[0])
        assert "Print values only." in result.stdout


def test_options_stop_at_the_first_name(booted: Any, ktls: Any) -> None:
    """BSD getopt: `ktls sysctl kern.ipc.tls.enable -d` asks for an oid called -d."""
    booted("seed")
    result = ktls("sysctl", "kern.ipc.tls.enable", "-d")
    assert result.stdout == "kern.ipc.tls.enable: 0\n"
    assert (result.exit, result.stderr) == (1, "sysctl: unknown oid '-d'\n")


@pytest.mark.parametrize(
    ("errno", "message"),
    [
        (Errno.EOPNOTSUPP, "sysctl: kern.ipc.tls.enable=1: value is not available\n"),
        (Errno.EINVAL, "sysctl: kern.ipc.tls.enable=1: Invalid argument\n"),
    ],
)
def test_kernel_refusing_a_write(
    errno: Errno, message: str, booted: Any, ktls: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A handler's errno: EOPNOTSUPP is `value is not available`, others warn(3)."""
    from ktls_core import sysctl

    booted("seed")

    def refuse(tx: Any, oid: Any, values: Any) -> None:
        raise KtlsError(errno)

    monkeypatch.setattr(sysctl, "write", refuse)
    result = ktls("sysctl", "kern.ipc.tls.enable=1")
    # show_var() printed the old value before the write failed, then a newline.
    assert (result.exit, result.stdout, result.stderr) == (1, "kern.ipc.tls.enable: 0\n", message)


# -- -f file ----------------------------------------------------------------------------


def test_file_with_line_numbers(booted: Any, ktls: Any, tmp_path: Path) -> None:
    booted("seed")
    conf = tmp_path / "sysctl.conf"
    conf.write_text(
        "# KTLS on\n"
        "kern.ipc.tls.enable=1   # trailing comment\n"
        "\n"
        "kern.ipc.tls.nope=1\n"
        "  kern.ipc.tls.maxlen = \"8192\"\n"
        "kern.ipc.tls.stats.active=3\n"
        "kern.ipc.tls.bind_threads=1\n"
        "kern.ipc.tls.enable=\n"
        "kern.ipc.tls.cbc_enable=maybe\n"
        "kern.ipc.tls=1\n"
        "kern.ipc.tls.ifnet.permitted='1#1' # a quoted # is data\n"
    )
    result = ktls("sysctl", "-f", str(conf), "kern.ipc.tls.enable")
    assert result.stdout == (
        "kern.ipc.tls.enable: 0 -> 1\n"
        "kern.ipc.tls.maxlen: 16384 -> 8192\n"
        "kern.ipc.tls.enable: 1\n"
    )
    assert result.stderr == (
        "sysctl: unknown oid 'kern.ipc.tls.nope' at line 4\n"
        "sysctl: oid 'kern.ipc.tls.stats.active' is read only at line 6\n"
        "sysctl: oid 'kern.ipc.tls.bind_threads' is a read only tunable at line 7\n"
        "sysctl: Tunable values are set in /boot/loader.conf\n"
        "sysctl: empty numeric value\n"  # sysctl.c prints no line for this one
        "sysctl: invalid uint8_t 'maybe' at line 9\n"
        "sysctl: oid 'kern.ipc.tls' isn't a leaf node at line 10\n"
        "sysctl: invalid unsigned integer '1#1' at line 11\n"
    )
    assert result.exit == 1


def test_file_write_error_has_the_line_before_strerror(
    booted: Any, ktls: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ktls_core import sysctl

    booted("seed")

    def refuse(tx: Any, oid: Any, values: Any) -> None:
        raise KtlsError(Errno.EINVAL)

    monkeypatch.setattr(sysctl, "write", refuse)
    conf = tmp_path / "c.conf"
    conf.write_text("\nkern.ipc.tls.enable=1\n")
    result = ktls("sysctl", "-f", str(conf))
    assert result.stderr == "sysctl: kern.ipc.tls.enable=1 at line 2: Invalid argument\n"


def test_missing_file(booted: Any, ktls: Any, tmp_path: Path) -> None:
    booted("seed")
    missing = tmp_path / "nope.conf"
    result = ktls("sysctl", "-f", str(missing), "kern.ipc.tls.enable=1")
    assert (result.exit, result.stdout) == (1, "")
    assert result.stderr == f"sysctl: {missing}: No such file or directory\n"
    assert ktls("sysctl", "-n", "kern.ipc.tls.enable").stdout == "0\n"  # nothing ran


def test_e_output_reads_back_with_f(booted: Any, ktls: Any, tmp_path: Path) -> None:
    booted("seed")
    ktls("sysctl", "kern.ipc.tls.maxlen=4000", "kern.ipc.tls.enable=1")
    saved = tmp_path / "knobs.conf"
    saved.write_text(ktls("sysctl", "-W", "-e", "kern.ipc").stdout)
    ktls("sysctl", "kern.ipc.tls.maxlen=16384", "kern.ipc.tls.enable=0")
    result = ktls("sysctl", "-f", str(saved))
    assert (result.exit, result.stderr) == (0, "")
    assert ktls("sysctl", "-n", "kern.ipc.tls.maxlen", "kern.ipc.tls.enable").stdout == "4000\n1\n"


# -- state handling ---------------------------------------------------------------------


def test_reads_take_a_snapshot_and_never_wait_for_a_writer(
    booted: Any, ktls: Any, state: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another command holds the write lock: a read goes on, a set waits (then gives up)."""
    import sqlite3

    from ktls_core import store

    booted("seed")
    monkeypatch.setattr(store, "BUSY_TIMEOUT_MS", 300)
    writer = sqlite3.connect(state, isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")
        assert ktls("sysctl", "kern.ipc.tls.enable").stdout == "kern.ipc.tls.enable: 0\n"
        result = ktls("sysctl", "kern.ipc.tls.enable=1")
        assert result.exit == 1
        assert result.stderr == (
            f"ktls: {state}: state is busy (another ktls holds it); "
            "try again when that command is done\n"
        )
        assert result.stdout == ""  # nothing is printed for a transaction that never ran
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert ktls("sysctl", "kern.ipc.tls.enable=1").exit == 0


def test_missing_state_boots_the_seed_profile(ktls: Any, state: str) -> None:
    assert not os.path.exists(state)
    assert ktls("sysctl", "-n", "kern.ipc.tls.cbc_enable").stdout == "1\n"
    assert ktls("sysctl", "-d", "kern.ipc.tls.cbc_enable").stdout == (
        "kern.ipc.tls.cbc_enable: Enable Support of AES-CBC crypto for kernel TLS\n"
    )
