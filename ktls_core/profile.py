"""Typed view of a profile: the era of FreeBSD the simulated kernel follows.

Profiles are YAML data in ktls_core/profiles/. They are read once, at `state init`
(the only place yaml is imported), and stored in the state as JSON so that every
later command starts without yaml.
"""

from __future__ import annotations

import json
import os
from importlib import resources
from typing import Any, NamedTuple

PROFILE_NAMES = ("seed", "current")
DEFAULT_PROFILE = "seed"

# What `sysctl -t` prints for each type, and the value range that type stores.
TYPE_RANGES: dict[str, tuple[int, int]] = {
    "integer": (-(2**31), 2**31 - 1),
    "unsigned integer": (0, 2**32 - 1),
    "uint8_t": (0, 2**8 - 1),
    "uint64_t": (0, 2**64 - 1),
}
ACCESS_KINDS = ("RD", "RW", "RDTUN", "RWTUN")
HANDLERS = ("plain", "bool")


class Oid(NamedTuple):
    """One sysctl of a profile. (NamedTuples, not dataclasses, here and in Profile:
    immutable all the same, and a tenth of the class-creation cost every command
    pays at start-up.)"""

    name: str
    type: str  # as `sysctl -t` prints it; "node" for interior nodes
    access: str  # RD, RW, RDTUN, RWTUN
    descr: str
    kind: str = "node"  # node, param, counter, gauge
    default: int = 0
    module: str | None = None  # exists only while this kld is loaded
    # How the kernel stores a write: "plain" keeps the value as its C type holds it;
    # "bool" stores value != 0 (sysctl_handle_bool, and handlers written like it).
    handler: str = "plain"

    @property
    def is_node(self) -> bool:
        return self.type == "node"

    @property
    def writable(self) -> bool:
        return self.access in ("RW", "RWTUN")

    @property
    def tunable(self) -> bool:
        return self.access.endswith("TUN")


class Profile(NamedTuple):
    name: str
    era: str
    description: str
    features: dict[str, Any]
    oids: tuple[Oid, ...]
    by_name: dict[str, Oid]  # derived from oids

    def feature(self, key: str) -> Any:
        return self.features[key]

    def to_json(self) -> str:
        return json.dumps(
            {
                "name": self.name,
                "era": self.era,
                "description": self.description,
                "features": self.features,
                "sysctls": [_oid_dict(o) for o in self.oids],
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> Profile:
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Profile:
        oids = tuple(_parse_oid(row) for row in data["sysctls"])
        return cls(
            name=str(data["name"]),
            era=str(data["era"]),
            description=str(data.get("description", "")),
            features=dict(data.get("features", {})),
            oids=oids,
            by_name={o.name: o for o in oids},
        )


def _oid_dict(o: Oid) -> dict[str, Any]:
    d: dict[str, Any] = {"name": o.name, "type": o.type, "access": o.access, "descr": o.descr}
    if not o.is_node:
        d["kind"] = o.kind
        d["default"] = o.default
    if o.module:
        d["module"] = o.module
    if o.handler != "plain":
        d["handler"] = o.handler
    return d


def _parse_oid(row: dict[str, Any]) -> Oid:
    typ = str(row["type"])
    access = str(row["access"])
    if typ != "node" and typ not in TYPE_RANGES:
        raise ValueError(f"sysctl {row.get('name')}: unknown type {typ!r}")
    if access not in ACCESS_KINDS:
        raise ValueError(f"sysctl {row.get('name')}: unknown access {access!r}")
    handler = str(row.get("handler", "plain"))
    if handler not in HANDLERS:
        raise ValueError(f"sysctl {row.get('name')}: unknown handler {handler!r}")
    default = row.get("default", 0)
    if default == "ncpu":  # kern.ipc.tls.stats.threads: one worker per CPU (ktls_init)
        default = os.cpu_count() or 1
    return Oid(
        name=str(row["name"]),
        type=typ,
        access=access,
        descr=str(row["descr"]),
        kind="node" if typ == "node" else str(row.get("kind", "param")),
        default=int(default),
        module=row.get("module"),
        handler=handler,
    )


def load_profile(name: str) -> Profile:
    """Read a packaged profile from YAML (only `state init` and boot call this)."""
    if name not in PROFILE_NAMES:
        raise ValueError(f"unknown profile '{name}' (choose from {', '.join(PROFILE_NAMES)})")
    import yaml  # only at boot: later commands read the JSON copy in the state

    text = resources.files("ktls_core.profiles").joinpath(f"{name}.yaml").read_text()
    return Profile.from_dict(yaml.safe_load(text))
