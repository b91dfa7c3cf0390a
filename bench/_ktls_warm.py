"""`ktls ARGS` twice in one process: prints the second run's seconds on stdout.

The second run finds every module imported and the state open once before: what
is left is the command's own work (for a send, the transmit path), to set beside
the baselines' loops. Not a figure of its own; bench/bulk_send.py shows it.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time

from ktls_cli.main import main


def run_once(args: list[str]) -> float:
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        start = time.perf_counter()
        code = main(args)
        elapsed = time.perf_counter() - start
    if code != 0:
        sys.exit(f"ktls {' '.join(args)}: exit {code}")
    return elapsed


if __name__ == "__main__":
    run_once(sys.argv[1:])
    print(f"{run_once(sys.argv[1:]):.6f}")
