"""`ktls`: the entry point, the command table and the fast path.

The click group lives in ktls_cli.group and is imported only when a command
needs it. Commands whose arguments are plain enough run without click at all
(`FAST`): importing click is ~10 ms, a sixth of a one-record `ktls send`.
Subcommand modules are imported only when a command is resolved, so
`ktls sysctl -n kern.ipc.tls.enable` loads the sysctl command and the core
modules it needs: never rich, cryptography or yaml.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from ktls_cli.env import Env

# Command name -> "module:attribute". Help texts are kept here too so that
# `ktls --help` can list every command without importing any of them.
COMMANDS: dict[str, tuple[str, str]] = {
    "send": ("ktls_cli.commands.send:cli", "Send data on a connection (write, sendfile, ...)."),
    "decode": ("ktls_cli.commands.decode:cli", "Open a TLS record stream as the peer does."),
    "netstat": ("ktls_cli.commands.netstat:cli", "Show connections and KTLS sessions (netstat)."),
    "connect": ("ktls_cli.commands.connect:cli", "Open a TCP connection, optionally with KTLS."),
    "setsockopt": ("ktls_cli.commands.setsockopt:cli", "Set a TCP option (TCP_TXTLS_ENABLE, ...)."),
    "getsockopt": ("ktls_cli.commands.getsockopt:cli", "Read a TCP option (TCP_TXTLS_MODE)."),
    "tcpdrop": ("ktls_cli.commands.tcpdrop:cli", "Drop TCP connections (tcpdrop(8))."),
    "kldload": ("ktls_cli.commands.kldload:cli", "Load kernel modules (kldload(8))."),
    "kldunload": ("ktls_cli.commands.kldunload:cli", "Unload kernel modules (kldunload(8))."),
    "kldstat": ("ktls_cli.commands.kldstat:cli", "Show loaded kernel modules (kldstat(8))."),
    "dmesg": ("ktls_cli.commands.dmesg:cli", "Print the kernel message buffer (dmesg(8))."),
    "sysctl": ("ktls_cli.commands.sysctl:cli", "Get or set kernel state (sysctl(8))."),
    "state": ("ktls_cli.commands.state:cli", "Create, inspect, export and reset the state."),
    "ifconfig": ("ktls_cli.commands.ifconfig:cli", "Configure network interfaces (ifconfig(8))."),
    "route": ("ktls_cli.commands.route:cli", "Manipulate the routing table (route(8))."),
    "switch_tls": ("ktls_cli.commands.switch_tls:cli", "Move TLS sessions between sw and ifnet."),
    "serve": ("ktls_cli.commands.serve:cli", "Serve files over HTTPS with KTLS (real sockets)."),
}

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


# Commands with a click-free runner: "module:function" taking (env, words) and
# returning the exit status, or None when the words need click (--help, an error
# click words, anything unusual): click then runs the command from the start.
FAST: dict[str, str] = {
    "send": "ktls_cli.commands.send_run:run_fast",
    "sysctl": "ktls_cli.commands.sysctl:run_fast",
    "switch_tls": "ktls_cli.commands.switch_tls:run_fast",
    "ifconfig": "ktls_cli.commands.ifconfig:run_fast",
    "tcpdrop": "ktls_cli.commands.tcpdrop:run_fast",
    "netstat": "ktls_cli.commands.netstat:run_fast",
    "dmesg": "ktls_cli.commands.dmesg:run_fast",
    "route": "ktls_cli.commands.route:run_fast",
    "kldload": "ktls_cli.commands.kldload:run_fast",
    "kldunload": "ktls_cli.commands.kldunload:run_fast",
    "kldstat": "ktls_cli.commands.kldstat:run_fast",
}
LIBXO_WORDS = {"json", "text", "pretty", "warn", "flush", "flush-line"}
FORMATS = ("text", "json", "yaml")


def libxo_ok(value: str) -> bool:
    """--libxo: the libxo options we honour (one style; json[,pretty] in practice)."""
    words = [w for w in value.replace(":", ",").split(",") if w]
    return not (set(words) - LIBXO_WORDS) and len({"json", "text"} & set(words)) <= 1


def make_env(state_path: str | None, fmt: str, libxo: str | None) -> Env:
    env = Env(state_path=state_path, format=fmt)
    if libxo is not None:
        words = libxo.replace(":", ",").split(",")
        if "json" in words:
            env.format = "json"
        env.pretty = "pretty" in words
    return env


def __getattr__(name: str) -> Any:
    """`ktls_cli.main.cli`, the click group, imported on first use."""
    if name == "cli":
        from ktls_cli.group import cli

        return cli
    raise AttributeError(name)


def _write_bytes_as_given(exc: UnicodeError) -> tuple[str | bytes, int]:
    """Encoding errors of stdout/stderr: an argument's undecodable bytes (PEP 383
    surrogates) go out as the bytes they were, as a C tool prints them; any other
    unencodable character is escaped. Never an exception for what a user typed."""
    if not isinstance(exc, UnicodeEncodeError):
        raise exc
    chunk = exc.object[exc.start : exc.end]
    if all(0xDC80 <= ord(c) <= 0xDCFF for c in chunk):
        return bytes(ord(c) - 0xDC00 for c in chunk), exc.end
    return "".join(f"\\u{ord(c):04x}" for c in chunk), exc.end


def _closed_std_streams() -> None:
    """A closed stdin, stdout or stderr (`ktls ... >&-`) becomes /dev/null: otherwise the
    next file ktls opens (--pcap, --file) would take that descriptor and get what
    --out - or a message meant for the terminal writes there."""
    if sys.stdin is not None and sys.stdout is not None and sys.stderr is not None:
        return  # Python found all three open at start-up
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            os.open(os.devnull, os.O_RDWR)  # the lowest free descriptor: this one
    if sys.stdin is None:
        sys.stdin = open(os.devnull)  # noqa: SIM115 - for the life of the process
    if sys.stdout is None:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115


def _faithful_streams() -> None:
    import codecs
    import contextlib

    _closed_std_streams()

    codecs.register_error("ktls.bytes", _write_bytes_as_given)
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None and getattr(stream, "errors", None) != "ktls.bytes":
            # A closed or detached stream takes nothing anyway.
            with contextlib.suppress(ValueError, OSError):
                reconfigure(errors="ktls.bytes")


def _fast(args: list[str]) -> int | None:
    """Run a FAST command without click; None when click must (see FAST)."""
    if "_KTLS_COMPLETE" in os.environ:
        return None
    opts: dict[str, str] = {}
    i = 0
    while i < len(args) and args[i].startswith("--"):
        name, eq, value = args[i].partition("=")
        if name not in ("--state", "--format", "--libxo") or name in opts:
            return None
        if not eq:
            if i + 1 >= len(args):
                return None
            i += 1
            value = args[i]
        opts[name] = value
        i += 1
    if i >= len(args) or args[i] not in FAST:
        return None
    fmt, libxo = opts.get("--format", "text"), opts.get("--libxo")
    if fmt not in FORMATS or (libxo is not None and not libxo_ok(libxo)):
        return None
    import importlib

    module_name, attr = FAST[args[i]].split(":")
    runner = getattr(importlib.import_module(module_name), attr)
    env = make_env(opts.get("--state"), fmt, libxo)
    try:
        code: int | None = runner(env, args[i + 1 :])
    finally:
        env.close()
    return code


def _click(args: list[str] | None) -> int:
    import click

    from ktls_cli.group import cli

    try:
        rv: Any = cli.main(args=args, prog_name="ktls", standalone_mode=False)
    except click.exceptions.Abort:
        sys.stderr.write("Aborted!\n")
        return EXIT_FAILURE
    except click.ClickException as exc:
        exc.show()
        return EXIT_USAGE if isinstance(exc, click.UsageError) else EXIT_FAILURE
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    return int(rv or 0)


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: run the command and map every failure to 0/1/2."""
    from ktls_core.errors import StateError

    _faithful_streams()
    try:
        args = sys.argv[1:] if argv is None else list(argv)
        code = _fast(args)
        return _click(argv) if code is None else code
    except StateError as exc:
        sys.stderr.write(f"ktls: {exc}\n")
        return EXIT_FAILURE
    except BrokenPipeError:
        # `ktls ... | head`: the reader left; say nothing, as FreeBSD tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILURE
    except KeyboardInterrupt:
        sys.stderr.write("\n")
        return 130
    except Exception as exc:  # never a traceback for a user; KTLS_DEBUG=1 shows it
        if os.environ.get("KTLS_DEBUG"):
            raise
        sys.stderr.write(f"ktls: internal error: {type(exc).__name__}: {exc}\n")
        return EXIT_FAILURE


def run() -> None:
    """The `ktls` console script: main() under a start-up-friendly garbage collector.

    A command allocates its imports (click, the core, cryptography) in a burst that
    trips the cyclic collector over and over, and at exit the interpreter collects
    everything once more before freeing it: together about a fifth of a short
    command's time. Reference counting frees what commands allocate; the collector
    is only put off (a long send or `serve` still collects, every 100,000
    allocations) and, at exit, told that everything left is permanent.
    """
    import gc

    gc.set_threshold(100_000, 50, 100)
    code = main()
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    run()
