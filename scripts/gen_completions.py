#!/usr/bin/env python3
"""Write completions/ktls.bash, completions/_ktls and completions/ktls.fish.

Each script is what click prints for `_KTLS_COMPLETE={bash,zsh,fish}_source ktls`:
a small shell function that calls `ktls` back at TAB time, so the names it offers
(sysctl names, interfaces, ...) always come from the installed ktls and its state.
Run it after changing the command tree; `--check` fails when a file is stale
(tests/test_completions.py runs that).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGETS = {
    "bash": REPO / "completions" / "ktls.bash",
    "zsh": REPO / "completions" / "_ktls",
    "fish": REPO / "completions" / "ktls.fish",
}


def source(shell: str) -> str:
    """click's completion script for `shell`, from the CLI in a child process."""
    env = dict(os.environ, _KTLS_COMPLETE=f"{shell}_source")
    result = subprocess.run(
        [sys.executable, "-m", "ktls_cli.main"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
    )
    if result.returncode != 0 or not result.stdout:
        raise SystemExit(f"gen_completions: {shell}: {result.stderr.strip() or 'no output'}")
    return result.stdout if result.stdout.endswith("\n") else result.stdout + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a file is stale")
    args = parser.parse_args(argv)
    stale = []
    for shell, target in TARGETS.items():
        text = source(shell)
        current = target.read_text() if target.exists() else None
        if current == text:
            continue
        if args.check:
            stale.append(str(target.relative_to(REPO)))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
            print(f"wrote {target.relative_to(REPO)}")
    if stale:
        print(
            f"stale: {', '.join(stale)}; run python scripts/gen_completions.py", file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
