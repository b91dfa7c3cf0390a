"""examples/*.sh are scripts a user would write: each one runs, start to end."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = sorted(p.name for p in (REPO / "examples").glob("*.sh"))


@pytest.mark.parametrize("script", EXAMPLES)
def test_example_runs(script: str, tmp_path: Path) -> None:
    sh = shutil.which("sh")
    assert sh is not None
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
    env["HOME"] = str(tmp_path)  # a script that forgot its throwaway state shows up here
    env["XDG_STATE_HOME"] = str(tmp_path / "xdg")
    env.pop("KTLS_STATE", None)
    env["TMPDIR"] = str(tmp_path / "tmp")
    (tmp_path / "tmp").mkdir()
    result = subprocess.run(
        [sh, str(REPO / "examples" / script)], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert not (tmp_path / "xdg").exists()
    assert list((tmp_path / "tmp").iterdir()) == []  # the throwaway state is cleaned up


def test_readme_commands_are_what_ci_runs() -> None:
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    assert "pip install . && sh examples/tour.sh\n" in readme
    test_command = "pip install -e '.[test]' && python -m pytest -n 2"
    assert test_command + "\n" in readme
    assert test_command in ci
