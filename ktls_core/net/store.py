"""The network in the state: one JSON document ("net") per kernel.

`load(tx)` and `save(tx, net)` read and write it inside the command's
transaction; `boot(tx, topology)` writes the first one when the kernel boots
(the default host, or a topology file) and logs the interfaces' link coming up,
as the boot messages of dmesg(8) do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ktls_core.errors import StateError
from ktls_core.net.ifnet import Network

if TYPE_CHECKING:
    from ktls_core.kernel import Tx

DOC_KEY = "net"


def load(tx: Tx) -> Network:
    """The network of this state; StateError if the document is missing or corrupt."""
    data = tx.doc(DOC_KEY)
    if not isinstance(data, dict):
        raise StateError(tx.kernel.path, "the network document is missing")
    try:
        return Network.from_dict(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise StateError(tx.kernel.path, f"the network document is corrupt ({exc})") from None


def save(tx: Tx, net: Network) -> None:
    tx.put_doc(DOC_KEY, net.to_dict())


def log(tx: Tx, lines: list[str]) -> None:
    """Kernel messages of a network operation, to the message buffer."""
    for line in lines:
        tx.log(line)


def boot(tx: Tx, topology_path: str | None) -> None:
    """Write the initial network: the default host, or the topology file given.

    A bad file raises TopologyError (a ValueError) before anything is written.
    """
    from ktls_core.net.topology import load_topology, network_from_default

    era = tx.era
    net = network_from_default(era) if topology_path is None else load_topology(topology_path, era)
    save(tx, net)
    up = [n for n in net.names() if net.link_up(n)]
    up.sort(key=lambda n: (net.stack_depth(n), net.interfaces[n].index))
    log(tx, [f"{n}: link state changed to UP" for n in up])


def peek(state_path: str | None) -> Network | None:
    """The network of an existing state, read-only, for shell completion.

    Never raises and never creates or boots a state: a missing or unreadable
    state gives None.
    """
    import os

    try:
        from ktls_core.kernel import Kernel
        from ktls_core.store import default_path

        path = os.path.abspath(state_path or default_path())
        if not os.path.exists(path):
            return None
        kernel = Kernel.open(path, create=False, boot=False)
        try:
            with kernel.snapshot() as tx:
                data = tx.doc(DOC_KEY)
                return Network.from_dict(data) if isinstance(data, dict) else None
        finally:
            kernel.store.close()
    except Exception:  # completion never raises
        return None
