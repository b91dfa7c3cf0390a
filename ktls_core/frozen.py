"""Immutable records without @dataclass: its code generation, and the `inspect`
import it brings, cost ~5 ms of every `ktls send`'s start-up (issue 8).

`Frozen` gives what @dataclass(frozen=True, slots=True) gave the classes on the
transmit path: field-wise __eq__ and __hash__, a repr that leaves out the
`_secret` fields (keys never print), assignment refused, and `replace()`, which
builds a new record through __init__ (so its checks run again, as
dataclasses.replace ran __post_init__).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, TypeVar

R = TypeVar("R", bound="Frozen")


class FrozenInstanceError(AttributeError):
    """Assigning to a field of a Frozen record."""


class Frozen:
    __slots__ = ()
    _fields: ClassVar[tuple[str, ...]] = ()
    _secret: ClassVar[frozenset[str]] = frozenset()

    def _init(self, values: Mapping[str, Any]) -> None:
        """Set every field from `values` (an __init__'s locals())."""
        for name in self._fields:
            object.__setattr__(self, name, values[name])

    def replace(self: R, **changes: Any) -> R:
        values = {name: getattr(self, name) for name in self._fields}
        values.update(changes)
        return type(self)(**values)

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self._fields)

    def __setattr__(self, name: str, value: Any) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Frozen)
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        shown = (f"{n}={getattr(self, n)!r}" for n in self._fields if n not in self._secret)
        return f"{type(self).__qualname__}({', '.join(shown)})"
