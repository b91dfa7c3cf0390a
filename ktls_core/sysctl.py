"""The sysctl MIB of the simulated kernel and sysctl(8)'s rules for values.

Three parts, all pure (they read and write only through a `Tx`):

- `Mib`: the OID tree a transaction sees. It is the profile's table in its fixed
  order, minus the oids of modules that are not loaded (`module: ktls_ocf` rows
  exist only while `ktls_ocf` is loaded), plus the implicit interior nodes `kern`
  and `kern.ipc` that the table does not list.
- Value parsing as sbin/sysctl/sysctl.c does it: `name=value` or `name:value`,
  one pair of quotes stripped, values split on spaces and commas, each parsed by
  `parse_numeric()` with strtol(3)/strtoul(3) in base 0 and then cast to the C type
  (so `=256` on a uint8_t is 0), and the kernel handler's rule for storing it
  (`sysctl_handle_bool` stores `value != 0`).
- Formatting as `show_var()` prints values: decimal, `-h` thousands separators,
  `-x` with `%#0*jx`, `-b` the raw little-endian bytes of the C type.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from ktls_core.profile import Oid, Profile

if TYPE_CHECKING:
    from ktls_core.kernel import Tx

# sizeof() of each C type `sysctl -t` names; `integer` is the only signed one here.
TYPE_SIZES: dict[str, int] = {
    "integer": 4,
    "unsigned integer": 4,
    "uint8_t": 1,
    "uint64_t": 8,
}
SIGNED_TYPES = frozenset({"integer"})

# Interior nodes above the profile's table, with their descriptions in kern_mib.c.
IMPLICIT_NODES: dict[str, str] = {
    "kern": "High kernel, proc, limits &c",
    "kern.ipc": "IPC",
}

_SPACE = " \t\n\v\f\r"  # isspace() in the C locale
_U64 = 1 << 64
_LONG_MAX = (1 << 63) - 1


# -- errors -----------------------------------------------------------------------------


class SysctlError(Exception):
    """A warnx() of sysctl(8) for one argument (without the `sysctl: ` prefix).

    `at_line` says whether sysctl(8) appends ` at line N` when the argument came
    from `-f file` (it does not for `empty numeric value`); `extra` holds the
    lines it prints after the message.
    """

    at_line = True

    def __init__(self, message: str, extra: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.extra = tuple(extra)


class UnknownOid(SysctlError):
    def __init__(self, name: str) -> None:
        super().__init__(f"unknown oid '{name}'")
        self.name = name


class NotLeaf(SysctlError):
    def __init__(self, name: str) -> None:
        super().__init__(f"oid '{name}' isn't a leaf node")


class ReadOnly(SysctlError):
    def __init__(self, name: str) -> None:
        super().__init__(f"oid '{name}' is read only")


class ReadOnlyTunable(SysctlError):
    def __init__(self, name: str) -> None:
        super().__init__(
            f"oid '{name}' is a read only tunable",
            ["Tunable values are set in /boot/loader.conf"],
        )


class EmptyValue(SysctlError):
    at_line = False  # sysctl.c: warnx("empty numeric value") has no line suffix

    def __init__(self) -> None:
        super().__init__("empty numeric value")


class InvalidValue(SysctlError):
    def __init__(self, type_: str, token: str) -> None:
        super().__init__(f"invalid {type_} '{token}'")
        self.type = type_
        self.token = token


# -- the tree ---------------------------------------------------------------------------


class Mib:
    """The oids one kernel shows: the profile's table with modules applied."""

    def __init__(self, profile: Profile, loaded: Iterable[str] = ()) -> None:
        self.profile = profile
        self.loaded = frozenset(loaded)
        self._oids: list[Oid] = [o for o in profile.oids if self._present(o)]
        self._by_name: dict[str, Oid] = {o.name: o for o in self._oids}
        # Implicit ancestors (kern, kern.ipc) of every oid the table lists.
        for oid in list(self._oids):
            parts = oid.name.split(".")
            for i in range(1, len(parts)):
                prefix = ".".join(parts[:i])
                if prefix not in self._by_name:
                    self._by_name[prefix] = Oid(
                        name=prefix, type="node", access="RW", descr=IMPLICIT_NODES.get(prefix, "")
                    )

    @classmethod
    def of(cls, tx: Tx) -> Mib:
        from ktls_core.kld import loaded_modules

        return cls(tx.profile, loaded_modules(tx))

    def _present(self, oid: Oid) -> bool:
        return oid.module is None or oid.module in self.loaded

    def lookup(self, name: str) -> Oid | None:
        """name2oid(): the oid called `name`, or None (also for an unloaded module's)."""
        return self._by_name.get(name)

    def leaves(self, node: str | None = None) -> list[Oid]:
        """The leaves under `node` (all leaves when None) in the table's fixed order.

        This is what sysctl_all() walks with the getnext query: interior nodes are
        not shown, only the leaves below them.
        """
        if node is None:
            return [o for o in self._oids if not o.is_node]
        prefix = node + "."
        return [o for o in self._oids if not o.is_node and o.name.startswith(prefix)]

    def names(self) -> list[str]:
        """Every visible name, nodes included (for completion)."""
        implicit = [n for n in self._by_name if n not in self.profile.by_name]
        return sorted(implicit) + [o.name for o in self._oids]


# -- values -----------------------------------------------------------------------------


def split_assignment(arg: str) -> tuple[str, str | None]:
    """Split `name=value` / `name:value` as parse() does with strsep(&cp, "=:").

    The name loses trailing white space; the value loses leading white space and one
    pair of quotes (a lone leading quote is dropped too, as in sysctl.c).
    Returns (name, None) when there is no value.
    """
    cut = min((i for i in (arg.find("="), arg.find(":")) if i >= 0), default=-1)
    if cut < 0:
        return arg.rstrip(_SPACE), None
    name, value = arg[:cut].rstrip(_SPACE), arg[cut + 1 :].lstrip(_SPACE)
    if value[:1] in ("'", '"'):
        if value[-1] == value[0]:
            value = value[:-1]
        value = value[1:]
    return name, value


def _strto(text: str, *, signed: bool) -> int:
    """strtol(3) / strtoumax(3) in base 0, insisting that the whole text is consumed.

    Raises ValueError where sysctl(8) reports `invalid <type>`: no digits, junk after
    the number, or ERANGE (the value does not fit a 64-bit long / unsigned long).
    strtoul accepts a minus sign and negates in unsigned arithmetic (`-1` is 2**64-1).
    """
    s = text.lstrip(_SPACE)
    negative = s[:1] == "-"
    if s[:1] in ("+", "-"):
        s = s[1:]
    if s[:2] in ("0x", "0X") and s[2:3] != "" and s[2] in "0123456789abcdefABCDEF":
        base, digits = 16, s[2:]
    elif s[:1] == "0":
        base, digits = 8, s
    else:
        base, digits = 10, s
    valid = "0123456789abcdefABCDEF"[: base if base != 16 else 22]
    if not digits or any(c not in valid for c in digits):
        raise ValueError(text)
    magnitude = int(digits, base)
    if signed:
        if magnitude > _LONG_MAX + (1 if negative else 0):
            raise ValueError(text)  # ERANGE
        return -magnitude if negative else magnitude
    if magnitude >= _U64:
        raise ValueError(text)  # ERANGE
    return (-magnitude) % _U64 if negative else magnitude


def ctype(type_: str, value: int) -> int:
    """`value` as the C type holds it: truncated to its width, signed if it is signed."""
    bits = TYPE_SIZES[type_] * 8
    value %= 1 << bits
    if type_ in SIGNED_TYPES and value >= 1 << (bits - 1):
        value -= 1 << bits
    return value


def parse_numeric(type_: str, token: str) -> int:
    """One number as parse_numeric() in sysctl.c reads it, cast to the oid's C type.

    integer: (int)strtol; unsigned integer: (int)strtoul; uint8_t: (uint8_t)strtoul;
    uint64_t: strtoumax. Raises InvalidValue.
    """
    try:
        raw = _strto(token, signed=type_ in SIGNED_TYPES)
    except ValueError:
        raise InvalidValue(type_, token) from None
    return ctype(type_, raw)


def parse_values(oid: Oid, text: str) -> list[int]:
    """The new value of `name=text`: the numbers of a space/comma separated list.

    An empty text is `empty numeric value`; a text of only separators gives no
    numbers, which sysctl(8) passes on as no new value at all (a read).
    """
    if text == "":
        raise EmptyValue()
    tokens = [t for t in text.replace(",", " ").split(" ") if t != ""]
    return [parse_numeric(oid.type, t) for t in tokens]


def stored_value(oid: Oid, value: int) -> int:
    """What the kernel's handler keeps for a written value (already of the C type)."""
    if oid.handler == "bool":
        return 1 if value != 0 else 0
    return value


def check_settable(oid: Oid) -> None:
    """The checks parse() makes before it parses a new value, in its order."""
    if oid.is_node:
        raise NotLeaf(oid.name)
    if not oid.writable:
        if oid.tunable:
            raise ReadOnlyTunable(oid.name)
        raise ReadOnly(oid.name)


def read(tx: Tx, oid: Oid) -> int:
    """The current value of a leaf, as its C type."""
    return ctype(oid.type, tx.sysctl(oid.name))


def write(tx: Tx, oid: Oid, values: Sequence[int]) -> None:
    """sysctl(3) with a new value: the handler takes the first value of its size.

    An empty `values` is no new value (nothing changes). Handlers that can refuse a
    write raise KtlsError; the CLI prints EOPNOTSUPP as `value is not available`.
    """
    if not values:
        return
    check_settable(oid)
    tx.set_sysctl(oid.name, stored_value(oid, values[0]))


def set_value(tx: Tx, mib: Mib, name: str, text: str) -> tuple[int, int]:
    """`sysctl name=text` in one go: returns (old, new). Raises SysctlError/KtlsError."""
    oid = mib.lookup(name)
    if oid is None:
        raise UnknownOid(name)
    check_settable(oid)
    values = parse_values(oid, text)
    old = read(tx, oid)
    write(tx, oid, values)
    return old, read(tx, oid)


# -- formatting -------------------------------------------------------------------------


def format_value(type_: str, value: int, *, hex_: bool = False, human: bool = False) -> str:
    """A value as show_var() prints it.

    -x is printf("%#0*jx", hexlen, v) with hexlen = 2 + digits of the type: `0x01`
    for a uint8_t, `0x00004000` for an int, 18 characters for a uint64_t; C's `#`
    adds no 0x to a zero, so 0 prints as zeros only (`0000` for a uint8_t).
    -h is `%'jd` / `%'ju`: thousands grouped with commas (FreeBSD takes the
    separator from LC_NUMERIC; ktls always uses the en_US comma).
    """
    bits = TYPE_SIZES[type_] * 8
    if hex_:
        width = 2 + (bits + 3) // 4
        unsigned = value % (1 << bits)
        return f"{unsigned:#0{width}x}" if unsigned else "0" * width
    value = ctype(type_, value)
    return f"{value:,}" if human else str(value)


def raw_bytes(type_: str, value: int) -> bytes:
    """-b: the value's bytes as the kernel copies them out (amd64: little-endian)."""
    size = TYPE_SIZES[type_]
    return (value % (1 << (size * 8))).to_bytes(size, "little")


# -- loader tunables --------------------------------------------------------------------


def parse_tunables(profile: Profile, items: Sequence[str]) -> dict[str, int]:
    """`state init --tunable NAME=VALUE ...`: loader.conf(5) lines for the new kernel.

    Only tunables (RDTUN, RWTUN oids) are accepted; values follow sysctl(8)'s number
    rules and the oid's handler. Raises ValueError with a one-line message.
    """
    result: dict[str, int] = {}
    for item in items:
        name, text = split_assignment(item.strip(_SPACE))
        if text is None or name == "":
            raise ValueError(f"'{item}': expected NAME=VALUE")
        oid = profile.by_name.get(name)
        if oid is None:
            raise ValueError(f"{name}: no such sysctl in profile {profile.name}")
        if oid.is_node:
            raise ValueError(f"{name}: a node, not a tunable")
        if not oid.tunable:
            raise ValueError(
                f"{name}: not a loader tunable in profile {profile.name} ({oid.access}); "
                f"set it with 'ktls sysctl {name}={text}'"
            )
        try:
            values = parse_values(oid, text)
        except SysctlError as exc:
            raise ValueError(f"{name}: {exc.message}") from None
        if not values:
            raise ValueError(f"{name}: {EmptyValue().message}")
        result[name] = stored_value(oid, values[0])
    return result


# -- completion -------------------------------------------------------------------------


def completion_names(state_path: str | None) -> list[str]:
    """Names to complete: the state's MIB, else the packaged seed table. Never raises.

    A missing state is not created: completion must not boot a kernel behind the
    user's back. Anything unexpected falls back to the seed profile, then to nothing.
    """
    import os

    try:
        from ktls_core.store import default_path

        path = os.path.abspath(state_path or default_path())
        if os.path.exists(path):
            from ktls_core.kernel import Kernel

            kernel = Kernel.open(path, create=False, boot=False)
            try:
                with kernel.snapshot() as tx:
                    return Mib.of(tx).names()
            finally:
                kernel.store.close()
    except Exception:  # completion never raises; fall back below
        pass
    try:
        from ktls_core.profile import DEFAULT_PROFILE, load_profile

        return Mib(load_profile(DEFAULT_PROFILE)).names()
    except Exception:
        return []
