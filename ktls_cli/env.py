"""The command's environment: global options, streams, terminal, the kernel.

Created once per invocation by the `ktls` group and passed to every command as
`ctx.obj`. rich consoles and the kernel are made only when a command needs them.
"""

from __future__ import annotations

import os
import sys
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

    from ktls_core.kernel import Kernel


class Env:
    """Global options, streams and the lazily opened kernel of one invocation."""

    def __init__(
        self,
        state_path: str | None = None,
        format: str = "text",  # text, json or yaml
        pretty: bool = False,  # --libxo json,pretty
        stdout: IO[str] | None = None,
        stderr: IO[str] | None = None,
    ) -> None:
        self.state_path = state_path
        self.format = format
        self.pretty = pretty
        self.stdout: IO[str] = sys.stdout if stdout is None else stdout
        self.stderr: IO[str] = sys.stderr if stderr is None else stderr
        self._kernel: Kernel | None = None
        self._console: Any = None

    @property
    def machine(self) -> bool:
        """True when the output is a document (json/yaml), not FreeBSD text."""
        return self.format != "text"

    def close(self) -> None:
        """Close the state (the group registers this with click's call_on_close)."""
        if self._kernel is not None:
            self._kernel.store.close()
            self._kernel = None

    def kernel(self) -> Kernel:
        if self._kernel is None:
            from ktls_core.kernel import Kernel

            self._kernel = Kernel.open(self.state_path)
        return self._kernel

    @property
    def stderr_is_tty(self) -> bool:
        return bool(getattr(self.stderr, "isatty", lambda: False)())

    @property
    def color(self) -> bool:
        isatty = getattr(self.stdout, "isatty", lambda: False)
        return "NO_COLOR" not in os.environ and bool(isatty())

    def err_console(self) -> Console:
        """A rich console on stderr, for progress bars (people only)."""
        if self._console is None:
            from rich.console import Console

            self._console = Console(file=self.stderr, no_color="NO_COLOR" in os.environ)
        console: Console = self._console
        return console

    def out(self, text: str = "") -> None:
        self.stdout.write(text + "\n")

    def err(self, text: str) -> None:
        self.stderr.write(text + "\n")

    def out_bytes(self, data: bytes) -> None:
        """Raw bytes on stdout (sysctl -b), after any text already written."""
        self.stdout.flush()
        buffer = getattr(self.stdout, "buffer", None)
        if buffer is not None:
            buffer.write(data)
            buffer.flush()
        else:  # a text-only stream (a test's StringIO): one character per byte
            self.stdout.write(data.decode("latin-1"))
