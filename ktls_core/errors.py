"""Errors of the simulated kernel.

`KtlsError` carries a FreeBSD errno and its strerror(3) text, the way a syscall
fails; `StateError` is a problem with the state file itself (never an errno the
simulated kernel would return).
"""

from __future__ import annotations

import enum


class Errno(enum.IntEnum):
    """FreeBSD errno values (sys/sys/errno.h), not the host's."""

    EPERM = 1
    ENOENT = 2
    ESRCH = 3
    EIO = 5
    ENXIO = 6
    E2BIG = 7
    ENOEXEC = 8
    ENOMEM = 12
    EBUSY = 16
    EEXIST = 17
    EINVAL = 22
    ENOSPC = 28
    ERANGE = 34
    EAGAIN = 35
    EALREADY = 37
    EMSGSIZE = 40
    ENOPROTOOPT = 42
    EPROTONOSUPPORT = 43
    EOPNOTSUPP = 45  # ENOTSUP is the same number on FreeBSD
    EAFNOSUPPORT = 47
    EADDRINUSE = 48
    EADDRNOTAVAIL = 49
    ENETUNREACH = 51
    ECONNABORTED = 53
    ECONNRESET = 54
    ENOBUFS = 55
    EISCONN = 56
    ENOTCONN = 57
    EHOSTUNREACH = 65
    EOVERFLOW = 84
    EBADMSG = 89


ENOTSUP = Errno.EOPNOTSUPP

# strerror(3) texts of FreeBSD's libc (lib/libc/gen/errlst.c).
STRERROR: dict[Errno, str] = {
    Errno.EPERM: "Operation not permitted",
    Errno.ENOENT: "No such file or directory",
    Errno.ESRCH: "No such process",
    Errno.EIO: "Input/output error",
    Errno.ENXIO: "Device not configured",
    Errno.E2BIG: "Argument list too long",
    Errno.ENOEXEC: "Exec format error",
    Errno.ENOMEM: "Cannot allocate memory",
    Errno.EBUSY: "Device busy",
    Errno.EEXIST: "File exists",
    Errno.EINVAL: "Invalid argument",
    Errno.ENOSPC: "No space left on device",
    Errno.ERANGE: "Result too large",
    Errno.EAGAIN: "Resource temporarily unavailable",
    Errno.EALREADY: "Operation already in progress",
    Errno.EMSGSIZE: "Message too long",
    Errno.ENOPROTOOPT: "Protocol not available",
    Errno.EPROTONOSUPPORT: "Protocol not supported",
    Errno.EOPNOTSUPP: "Operation not supported",
    Errno.EAFNOSUPPORT: "Address family not supported by protocol family",
    Errno.EADDRINUSE: "Address already in use",
    Errno.EADDRNOTAVAIL: "Can't assign requested address",
    Errno.ENETUNREACH: "Network is unreachable",
    Errno.ECONNABORTED: "Software caused connection abort",
    Errno.ECONNRESET: "Connection reset by peer",
    Errno.ENOBUFS: "No buffer space available",
    Errno.EISCONN: "Socket is already connected",
    Errno.ENOTCONN: "Socket is not connected",
    Errno.EHOSTUNREACH: "No route to host",
    Errno.EOVERFLOW: "Value too large to be stored in data type",
    Errno.EBADMSG: "Bad message",
}


def strerror(errno: int) -> str:
    try:
        return STRERROR[Errno(errno)]
    except (ValueError, KeyError):
        return f"Unknown error: {errno}"


class KtlsError(Exception):
    """A simulated syscall failed with `errno`.

    `detail` is for people (and --trace); the FreeBSD tools print only the
    strerror text, so renderers use `strerror` unless they want more.
    """

    def __init__(self, errno: Errno, detail: str = "") -> None:
        self.errno = Errno(errno)
        self.detail = detail
        super().__init__(f"{self.strerror}" + (f" ({detail})" if detail else ""))

    @property
    def strerror(self) -> str:
        return strerror(self.errno)


RESET_HINT = "run 'ktls state reset' to start over"


class StateError(Exception):
    """The state file cannot be used; the message names the file.

    `hint` follows the problem; it is the reset advice unless the problem will pass
    by itself (a busy state must not send people to `ktls state reset`).
    """

    def __init__(self, path: str, problem: str, hint: str = RESET_HINT) -> None:
        self.path = path
        self.problem = problem
        self.hint = hint
        super().__init__(f"{path}: {problem}; {hint}")
