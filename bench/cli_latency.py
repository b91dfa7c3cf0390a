"""Figure 1, CLI latency: median wall time of ktls commands as a ratio to `python3 -c pass`.

Each round runs the baseline (`python3 -c pass` with the interpreter the
console script uses, not a shim) right before each command, so a busy machine
moves both; ratio = median(command) / median(baseline). Targets (issue 8):
`sysctl -n kern.ipc.tls.enable` <= 1.8, the others <= 2.2. `send CONN --data x`
(one record) is shown too, without a target: the fixed cost of every send.

The state is a seed kernel with KTLS on, ktls_ocf loaded and one TLS 1.2
AES-GCM connection (the one `switch_tls -s` names). The TAB case is what bash
runs for `ktls sysctl kern.ipc.tls.en<TAB>` with the installed completion.

    python bench/cli_latency.py [--rounds 31]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import check, ktls_script, machine, median, prepare, run, state_env

LOCAL, FOREIGN = "198.51.100.10:443", "203.0.113.7:50000"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=31)
    args = parser.parse_args()
    prepare()
    ktls = ktls_script()
    tmp = tempfile.mkdtemp(prefix="ktls-bench-")
    env = state_env(tmp)
    check([ktls, "sysctl", "kern.ipc.tls.enable=1", "kern.ipc.mb_use_ext_pgs=1"], env)
    check([ktls, "kldload", "ktls_ocf"], env)
    check([ktls, "connect", LOCAL, FOREIGN, "--random-keys", "--tls-version", "1.2"], env)
    words = "ktls sysctl kern.ipc.tls.en"
    tab_env = dict(env, _KTLS_COMPLETE="bash_complete", COMP_WORDS=words, COMP_CWORD="2")
    cases: list[tuple[str, list[str], dict[str, str], float | None]] = [
        ("ktls sysctl -n kern.ipc.tls.enable", ["sysctl", "-n", "kern.ipc.tls.enable"], env, 1.8),
        ("ktls ifconfig cc0", ["ifconfig", "cc0"], env, 2.2),
        ("ktls switch_tls -s CONN", ["switch_tls", "-s", LOCAL, FOREIGN], env, 2.2),
        ("ktls --help", ["--help"], env, 2.2),
        (f"TAB: {words}<TAB>", [], tab_env, 2.2),
        ("ktls send CONN --data x", ["send", LOCAL, FOREIGN, "--data", "x"], env, None),
    ]
    baseline = [sys.executable, "-c", "pass"]
    # Every case once, untimed: the same warm caches for all of them.
    for _name, argv, cenv, _target in cases:
        run([ktls, *argv], cenv)
    base_times: list[float] = []
    times: dict[str, list[float]] = {name: [] for name, *_ in cases}
    for _ in range(args.rounds):
        for name, argv, cenv, _target in cases:
            base_times.append(run(baseline, env).wall)
            r = run([ktls, *argv], cenv)
            if r.returncode != 0 or "Traceback" in r.stderr:
                sys.exit(f"bench: {name} failed ({r.returncode}): {r.stderr}")
            times[name].append(r.wall)
    base = median(base_times)
    print(f"machine: {machine()}")
    print(f"console script: {ktls}; {args.rounds} rounds, medians")
    print(f"baseline {sys.executable} -c pass: {base * 1000:.1f} ms")
    print(f"{'command':42} {'ms':>6} {'+ms':>6} {'ratio':>6} {'target':>6}  verdict")
    missed = 0
    for name, _argv, _env, target in cases:
        med = median(times[name])
        ratio = med / base
        ok = target is None or ratio <= target
        missed += not ok
        verdict = "-" if target is None else "met" if ok else "NOT met"
        print(
            f"{name:42} {med * 1000:6.1f} {(med - base) * 1000:6.1f} {ratio:6.2f}"
            f" {'' if target is None else '<=' + str(target):>6}  {verdict}"
        )
    shutil.rmtree(tmp, ignore_errors=True)
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
