"""Shared by the benchmarks: the machine, the console script, bytecode, timed children.

Every benchmark runs real `ktls` processes through the installed console script
(the file pip wrote next to the interpreter, not a pyenv shim, which would add a
bash start to every run) and compares them with a baseline run in the same
rounds, interleaved, so a busy machine slows both.

Bytecode: an installed ktls has its .pyc files (pip compiles at install time).
A development tree under PYTHONDONTWRITEBYTECODE=1 has none, and every run would
compile ktls_core and ktls_cli again (about 20 ms of compile in each command).
`prepare()` therefore byte-compiles both packages once, as pip would, before
anything is timed; the children keep the environment as it is.
"""

from __future__ import annotations

import compileall
import importlib.util
import os
import platform
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

PACKAGES = ("ktls_core", "ktls_cli")


def ktls_script() -> str:
    """The installed console script itself (a pyenv shim would add a bash start)."""
    candidate = os.path.join(sysconfig.get_path("scripts"), "ktls")
    if os.path.exists(candidate):
        return candidate
    found = shutil.which("ktls")
    if found is None:
        sys.exit("bench: no `ktls` console script (pip install -e . first)")
    return found


def package_dirs() -> list[str]:
    dirs = []
    for name in PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            sys.exit(f"bench: package {name} not importable")
        dirs.append(next(iter(spec.submodule_search_locations)))
    return dirs


def prepare() -> None:
    """Byte-compile ktls_core and ktls_cli as an installed wheel has them."""
    for d in package_dirs():
        if not compileall.compile_dir(d, quiet=1):
            sys.exit(f"bench: compileall failed in {d}")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    import cryptography

    try:
        from importlib.metadata import version

        click_version = version("click")
    except Exception:  # pragma: no cover - metadata missing
        click_version = "?"
    return (
        f"nproc {os.cpu_count()}, {cpu_model()}, Python {platform.python_version()}"
        f" ({sys.executable}), cryptography {cryptography.__version__}, click {click_version},"
        f" PYTHONDONTWRITEBYTECODE={os.environ.get('PYTHONDONTWRITEBYTECODE', '')!r},"
        " ktls packages byte-compiled at bench start"
    )


@dataclass
class Run:
    wall: float  # seconds
    maxrss_kib: int  # the child's peak RSS (ru_maxrss, KiB on Linux)
    returncode: int
    stderr: str
    stdout: str = ""


def run(
    argv: Sequence[str],
    env: dict[str, str] | None = None,
    *,
    capture: bool = False,
    stdin: int | None = subprocess.DEVNULL,
) -> Run:
    """Run a child; its wall time from fork to reaping and its own rusage (wait4).

    stdout goes to /dev/null unless `capture`; either way to a file, never a pipe,
    so the child never waits for us.
    """
    with tempfile.TemporaryFile() as err, tempfile.TemporaryFile() as out:
        start = time.perf_counter()
        proc = subprocess.Popen(
            list(argv),
            env=env,
            stdout=out if capture else subprocess.DEVNULL,
            stderr=err,
            stdin=stdin,
        )
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        out.seek(0)
        return Run(
            wall,
            usage.ru_maxrss,
            proc.returncode,
            err.read().decode(errors="replace"),
            out.read().decode(errors="replace"),
        )


def check(argv: Sequence[str], env: dict[str, str]) -> str:
    """A setup command that must succeed; returns its stdout."""
    proc = subprocess.run(list(argv), env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"bench: setup failed: {' '.join(argv)}\n{proc.stdout}{proc.stderr}")
    return proc.stdout


def state_env(tmp: str, name: str = "kernel.db") -> dict[str, str]:
    return dict(os.environ, KTLS_STATE=os.path.join(tmp, name))


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"
