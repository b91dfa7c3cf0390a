"""State lifecycle: init (boot with options), summary, export and import."""

from __future__ import annotations

import os
from typing import Any

from ktls_core.errors import StateError
from ktls_core.kernel import Kernel
from ktls_core.store import remove_state


def init_state(
    path: str,
    *,
    profile: str,
    topology: str | None,
    seed: int | None,
    tunables: list[str],
    force: bool,
) -> dict[str, Any]:
    """`state init`: boot a new kernel at `path`; refuses to replace one without force."""
    from ktls_core.profile import load_profile
    from ktls_core.sysctl import parse_tunables

    if os.path.lexists(path) and not force:
        raise StateError(path, "state already exists (use --force to replace it)")
    # Everything is checked before the old state is touched.
    values = parse_tunables(load_profile(profile), tunables)
    if topology is not None:
        from ktls_core.net.topology import load_topology

        load_topology(topology)
    tmp = f"{path}.init-{os.getpid()}"
    remove_state(tmp)
    try:
        kernel = Kernel.open(tmp, create=True, boot=False)
        kernel.boot(profile, topology=topology, seed=seed, tunables=values)
        kernel.store.close()
        os.replace(tmp, path)
        for suffix in ("-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.unlink(path + suffix)
    finally:
        remove_state(tmp)
    return {"path": path, "profile": profile, "seed": seed, "tunables": values}


def summary(kernel: Kernel) -> dict[str, Any]:
    from ktls_core.kld import loaded_modules

    with kernel.snapshot() as tx:
        return {
            "path": kernel.path,
            "profile": tx.profile.name,
            "description": tx.profile.description,
            "modules": loaded_modules(tx),
            "seed": tx.meta("seed"),
        }
