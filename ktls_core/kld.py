"""Loadable kernel modules (kld) of the simulated kernel.

Only the modules KTLS knows exist: `ktls_ocf` (the OpenCrypto software backend,
a module in 2019, built into the kernel today). Which modules are loaded lives in
the state document 'kld' ({"loaded": [names], "files": [{name, id}], "next_id"}).

What the commands see (kern_linker.c, uipc_ktls.c, ktls_ocf.c):

- kldload ktls_ocf (seed): the file gets the next file id, its MOD_LOAD handler
  registers the "OCF" backend with priority 5 and prints
  `KTLS: Registering crypto method OCF with prio 5`; its stats node
  (kern.ipc.tls.stats.ocf) appears, counting from zero. Loading it again is
  EEXIST. In the current profile OCF is compiled into the kernel, so kldload
  answers EEXIST as for any module the kernel already has.
- kldunload ktls_ocf: the MOD_UNLOAD handler refuses with EBUSY unless the
  loader tunable kern.ipc.tls.allow_unload is set, printing
  `KTLS: Deregistering crypto method OCF is not supported`; with the tunable
  set it still refuses (silently, EBUSY) while a session uses the backend.
- Software sessions go to the registered backend of highest priority that
  takes them (backend.Registry); with nothing registered, EOPNOTSUPP.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

from ktls_core.errors import Errno, KtlsError

if TYPE_CHECKING:
    from ktls_core.kernel import Tx
    from ktls_core.tls.backend import Backend, Registry
    from ktls_core.tls.enable import TlsEnable

KERNEL_FILE = "kernel"
OCF_MODULE = "ktls_ocf"
OCF_FILE = "ktls_ocf.ko"
KERNEL_PATH = "/boot/kernel/kernel"
MODULE_DIR = "/boot/kernel"
ALLOW_UNLOAD = "kern.ipc.tls.allow_unload"
OCF_STATS_PREFIX = "kern.ipc.tls.stats.ocf."

# Where the linker put the files, as kldstat prints them (amd64).
KERNEL_ADDRESS = 0xFFFFFFFF80200000
KERNEL_SIZE = 0x2295A98
MODULE_BASE = 0xFFFFFFFF82A40000
OCF_SIZE = 0x6220

# The modules each loadable file contains (kldstat -v), by file name.
FILE_MODULES: dict[str, tuple[str, ...]] = {OCF_FILE: (OCF_MODULE,)}
KNOWN_FILES = {OCF_MODULE: OCF_FILE}


class LinkerFile(NamedTuple):
    """One line of kldstat: a linker file with its id, references and place in memory."""

    id: int
    refs: int
    address: int
    size: int
    name: str  # file name: kernel, ktls_ocf.ko
    path: str
    modules: tuple[tuple[int, str], ...]  # (module id, module name)


def _doc(tx: Tx) -> dict[str, Any]:
    doc = tx.doc("kld") or {}
    doc.setdefault("loaded", [])
    doc.setdefault("files", [{"name": m, "id": i + 2} for i, m in enumerate(doc["loaded"])])
    doc.setdefault("next_id", 2 + len(doc["files"]))
    return dict(doc)


def loaded_modules(tx: Tx) -> list[str]:
    doc = tx.doc("kld") or {}
    return list(doc.get("loaded", []))


def ocf_builtin(tx: Tx) -> bool:
    return bool(tx.profile.feature("ocf_builtin"))


def ocf_present(tx: Tx) -> bool:
    """The OCF backend is registered: compiled in, or ktls_ocf.ko loaded."""
    return ocf_builtin(tx) or OCF_MODULE in loaded_modules(tx)


def registry(tx: Tx) -> Registry:
    """The crypto backends registered now (ktls_crypto_backend_register())."""
    from ktls_core.tls.backend import Registry
    from ktls_core.tls.ocf import OcfBackend

    return Registry([OcfBackend()] if ocf_present(tx) else [])


def backend(tx: Tx, name: str | None) -> Backend | None:
    """The registered backend called `name` (a session's), or None."""
    for b in registry(tx):
        if b.name == name:
            return b
    return None


def select_backend(tx: Tx, params: TlsEnable) -> Backend:
    """ktls_try_sw(): the backend that takes a software session, or KtlsError."""
    return registry(tx).select(params, tx.era)


def module_name(word: str) -> str:
    """`ktls_ocf`, `ktls_ocf.ko` and `/boot/kernel/ktls_ocf.ko` all name one module."""
    base = word.rsplit("/", 1)[-1]
    return base[:-3] if base.endswith(".ko") else base


def files(tx: Tx) -> list[LinkerFile]:
    """The linker files in id order: the kernel, then each loaded module file."""
    doc = _doc(tx)
    builtin: tuple[tuple[int, str], ...] = ((1, OCF_MODULE),) if ocf_builtin(tx) else ()
    loaded = sorted(doc["files"], key=lambda f: int(f["id"]))
    out = [
        LinkerFile(1, 1 + len(loaded), KERNEL_ADDRESS, KERNEL_SIZE, KERNEL_FILE, KERNEL_PATH,
                   builtin)
    ]  # fmt: skip
    address = MODULE_BASE
    for f in loaded:
        name = KNOWN_FILES[str(f["name"])]
        mods = tuple((int(f["id"]) + 100 * k, m) for k, m in enumerate(FILE_MODULES[name]))
        out.append(LinkerFile(int(f["id"]), 1, address, OCF_SIZE, name, f"{MODULE_DIR}/{name}",
                              mods))  # fmt: skip
        address += 0x20000
    return out


def kldload(tx: Tx, word: str) -> LinkerFile:
    """kldload(2): load the module file; EEXIST if present, ENOENT if unknown."""
    name = module_name(word)
    if name not in KNOWN_FILES:
        raise KtlsError(Errno.ENOENT, f"no module file {word}")
    if name == OCF_MODULE and ocf_builtin(tx):
        raise KtlsError(Errno.EEXIST, "ktls_ocf is compiled into the kernel")
    doc = _doc(tx)
    if name in doc["loaded"]:
        raise KtlsError(Errno.EEXIST, f"{name} is already loaded")
    file_id = int(doc["next_id"])
    doc["loaded"] = [*doc["loaded"], name]
    doc["files"] = [*doc["files"], {"name": name, "id": file_id}]
    doc["next_id"] = file_id + 1
    tx.put_doc("kld", doc)
    if name == OCF_MODULE:
        from ktls_core.tls.backend import register_message
        from ktls_core.tls.ocf import OcfBackend

        # A fresh module's counter(9)s start at zero (ktls_ocf's MOD_LOAD allocates them).
        tx.conn.execute(
            "UPDATE counters SET value = 0 WHERE name >= ? AND name < ?",
            (OCF_STATS_PREFIX, OCF_STATS_PREFIX + "\uffff"),
        )
        tx.log(register_message(OcfBackend()))
    return next(f for f in files(tx) if f.id == file_id)


def find_file(tx: Tx, word: str) -> LinkerFile | None:
    """kldfind(2): a loaded file by name (with or without .ko, or a path)."""
    name = module_name(word)
    for f in files(tx):
        if module_name(f.name) == name:
            return f
    return None


def kldunload(tx: Tx, f: LinkerFile) -> None:
    """kldunload(2) of a loaded file: EBUSY while its MOD_UNLOAD handler refuses.

    The refusal logs a kernel message first: callers commit the transaction
    before reporting the error (the message stays, as in FreeBSD's dmesg).
    """
    if f.id == 1:
        raise KtlsError(Errno.EBUSY, "the kernel is not unloadable")
    name = module_name(f.name)
    if name == OCF_MODULE:
        from ktls_core.tls import session
        from ktls_core.tls.ocf import OCF_NAME

        if not tx.sysctl(ALLOW_UNLOAD):
            tx.log(f"KTLS: Deregistering crypto method {OCF_NAME} is not supported")
            raise KtlsError(Errno.EBUSY, "kern.ipc.tls.allow_unload is 0")
        if session.uses_backend(tx, OCF_NAME):
            raise KtlsError(Errno.EBUSY, "sessions use the OCF backend")
    doc = _doc(tx)
    doc["loaded"] = [m for m in doc["loaded"] if m != name]
    doc["files"] = [x for x in doc["files"] if int(x["id"]) != f.id]
    tx.put_doc("kld", doc)


def find_module(tx: Tx, modname: str) -> tuple[int, int, str] | None:
    """modfind(2) + modstat(2): (module id, refs, name) or None (kldstat -m)."""
    for f in files(tx):
        for mid, mname in f.modules:
            if mname == modname:
                return mid, 1, mname
    return None
