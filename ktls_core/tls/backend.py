"""Software crypto backends and their registry (ktls_crypto_backend_register, ktls_try_sw).

The 2019 framework kept registered backends in a list sorted by priority
(highest first) and gave a session to the first backend whose try() accepted
it; when none did, TCP_TXTLS_ENABLE failed with EOPNOTSUPP whatever the
backends said. Modern FreeBSD has only the built-in OCF backend and returns
ktls_ocf_try()'s own error (EINVAL for a bad key size, EPROTONOSUPPORT for an
unsupported version or cipher).

The registry is pure data: which backends are loaded (kldload ktls_ocf) is the
caller's state; it builds a Registry from it for each call.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Protocol

from ktls_core.errors import Errno, KtlsError

if TYPE_CHECKING:
    from ktls_core.tls.enable import TlsEnable
    from ktls_core.tls.record import RecordProtector

OCF_STATS_NODE = "kern.ipc.tls.stats.ocf"


class Backend(Protocol):
    """struct ktls_crypto_backend."""

    @property
    def name(self) -> str: ...

    @property
    def prio(self) -> int: ...

    def try_session(self, params: TlsEnable, era: str) -> None:
        """Accept the session or raise KtlsError (the backend's try())."""

    def new_protector(self, params: TlsEnable, max_frame_len: int = 16384) -> RecordProtector:
        """The record protector that seals this session's records."""

    def ocf_counter(self, params: TlsEnable, era: str) -> str | None:
        """Leaf under kern.ipc.tls.stats.ocf that one seal increments, or None."""


def register_message(backend: Backend) -> str:
    """The console line ktls_crypto_backend_register() prints."""
    return f"KTLS: Registering crypto method {backend.name} with prio {backend.prio}"


class Registry:
    """Registered backends, highest priority first; equal priorities keep load order."""

    def __init__(self, backends: Iterable[Backend] = ()) -> None:
        self._backends: list[Backend] = []
        for backend in backends:
            self.register(backend)

    def register(self, backend: Backend) -> str:
        """Insert before the first backend of lower priority; returns the kernel message."""
        if any(b.name == backend.name for b in self._backends):
            raise KtlsError(Errno.EEXIST, f"crypto method {backend.name} already registered")
        at = next(
            (i for i, b in enumerate(self._backends) if b.prio < backend.prio),
            len(self._backends),
        )
        self._backends.insert(at, backend)
        return register_message(backend)

    def deregister(self, name: str) -> None:
        """Remove a backend; unknown names are ignored, as MOD_UNLOAD handlers rely on."""
        self._backends = [b for b in self._backends if b.name != name]

    @property
    def backends(self) -> tuple[Backend, ...]:
        return tuple(self._backends)

    def __iter__(self) -> Iterator[Backend]:
        return iter(tuple(self._backends))

    def __len__(self) -> int:
        return len(self._backends)

    def select(self, params: TlsEnable, era: str) -> Backend:
        """The backend that takes a software session (ktls_try_sw).

        seed: the first backend (by priority) that accepts; none, or none
        registered: EOPNOTSUPP. current: the same walk, but a refusal is
        returned as the backend said it (the built-in ktls_ocf_try is called
        directly); an empty registry is EOPNOTSUPP.
        """
        refusals: list[tuple[Backend, KtlsError]] = []
        for backend in self._backends:
            try:
                backend.try_session(params, era)
            except KtlsError as exc:
                refusals.append((backend, exc))
                continue
            return backend
        if not refusals:
            raise KtlsError(Errno.EOPNOTSUPP, "no KTLS crypto backend registered")
        if era == "seed":
            why = "; ".join(f"{b.name}: {e.strerror} ({e.detail})" for b, e in refusals)
            raise KtlsError(Errno.EOPNOTSUPP, f"no crypto backend accepts the session: {why}")
        first = refusals[0][1]
        raise KtlsError(first.errno, first.detail)


def select_backend(registry: Registry, params: TlsEnable, era: str) -> Backend:
    """Step 9 (software) of TCP_TXTLS_ENABLE: see Registry.select."""
    return registry.select(params, era)
