"""Shell completion: the committed scripts are current, and bash really completes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent


def test_completion_scripts_are_current() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "gen_completions.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


def _installed_ktls() -> str:
    """The `ktls` console script of this interpreter (pip install -e . puts it there)."""
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    found = shutil.which("ktls", path=path)
    if found is None:
        pytest.fail("no ktls console script next to this Python; run pip install -e .")
    return found


@pytest.fixture
def bash(require_tool: Any) -> str:
    """bash itself: skips locally without it, fails under KTLS_REQUIRE_TOOLS=1 (CI)."""
    return str(require_tool("bash"))


def _bash_complete(bash: str, words: list[str], env: dict[str, str]) -> list[str]:
    """Source completions/ktls.bash in bash and call its function as TAB would."""
    script = (
        f"source {REPO / 'completions' / 'ktls.bash'}\n"
        'COMP_WORDS=("$@")\n'
        "COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))\n"
        "COMPREPLY=()\n"
        "_ktls_completion ktls\n"
        "printf '%s\\n' \"${COMPREPLY[@]}\"\n"
    )
    full_env = dict(os.environ, **env)
    full_env["PATH"] = os.pathsep.join([os.path.dirname(_installed_ktls()), full_env["PATH"]])
    result = subprocess.run(
        [bash, "--norc", "--noprofile", "-c", script, "bash", *words],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=60,
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr
    return [line for line in result.stdout.splitlines() if line]


def test_bash_completes_a_sysctl_name_without_a_state(tmp_path: Path, bash: str) -> None:
    missing = tmp_path / "none" / "kernel.db"
    env = {"KTLS_STATE": str(missing)}
    replies = _bash_complete(bash, ["ktls", "sysctl", "kern.ipc.tls.en"], env)
    assert replies == ["kern.ipc.tls.enable"]
    assert not missing.parent.exists()  # completion never boots a kernel


def test_bash_completes_from_the_state_profile(
    tmp_path: Path, state: str, init_state: Any, bash: str
) -> None:
    init_state(state, "current")
    replies = _bash_complete(bash, ["ktls", "sysctl", "kern.ipc.tls.sw"], {"KTLS_STATE": state})
    # sw_buffer_cache exists only in the current profile's table.
    assert replies == [
        "kern.ipc.tls.sw_buffer_cache",
        "kern.ipc.tls.sw",
        "kern.ipc.tls.sw.cbc",
        "kern.ipc.tls.sw.gcm",
        "kern.ipc.tls.sw.chacha20",
    ]
    replies = _bash_complete(
        bash,
        ["ktls", "--state", state, "sysctl", "-d", "kern.ipc.tls.stats.ocf.tls13_g"], {}
    )
    assert replies == [
        "kern.ipc.tls.stats.ocf.tls13_gcm_decrypts",
        "kern.ipc.tls.stats.ocf.tls13_gcm_encrypts",
    ]


def test_bash_completes_commands(tmp_path: Path, bash: str) -> None:
    replies = _bash_complete(bash, ["ktls", "sta"], {"KTLS_STATE": str(tmp_path / "k.db")})
    assert replies == ["state"]
