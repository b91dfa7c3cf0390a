"""Loadable kernel modules (kld) of the simulated kernel.

Only the modules KTLS knows exist: `ktls_ocf` (the OpenCrypto software backend,
a module in 2019, built into the kernel today). Which modules are loaded lives in
the state document 'kld'.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ktls_core.kernel import Tx


def loaded_modules(tx: Tx) -> list[str]:
    doc = tx.doc("kld") or {}
    return list(doc.get("loaded", []))
