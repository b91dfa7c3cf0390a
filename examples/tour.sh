#!/bin/sh
# A short tour of `ktls sysctl` on the seed kernel (FreeBSD r351522, August 2019),
# on a throwaway state: your own state is never touched.
set -e

command -v ktls >/dev/null 2>&1 || { echo "tour: ktls is not on PATH (pip install .)" >&2; exit 1; }
KTLS_STATE=$(mktemp -d)/kernel.db
export KTLS_STATE
trap 'rm -rf "$(dirname "$KTLS_STATE")"' EXIT

step() { printf '\n# %s\n' "$1"; }
run() { printf '$ %s\n' "$*"; "$@"; }
fails() { printf '$ %s\n' "$*"; if "$@" 2>&1; then echo "tour: that should have failed" >&2; exit 1; fi; }

step "The KTLS node, leaves in the profile's fixed order (the first command boots the kernel)"
run ktls sysctl kern.ipc.tls

step "What the knobs mean (-d), and their C types (-t)"
run ktls sysctl -d kern.ipc.tls.enable kern.ipc.mb_use_ext_pgs kern.ipc.tls.ifnet.permitted
run ktls sysctl -t kern.ipc.tls.enable kern.ipc.tls.maxlen kern.ipc.tls.stats.enable_calls

step "In 2019 KTLS is off: turn on the gate and unmapped mbufs, as an administrator would"
run ktls sysctl kern.ipc.tls.enable=1 kern.ipc.mb_use_ext_pgs=1

step "enable is a bool (a uint8_t): 256 truncates to 0, any other non-zero reads back as 1"
run ktls sysctl kern.ipc.tls.enable=256
run ktls sysctl kern.ipc.tls.enable=0x2
run ktls sysctl -x kern.ipc.tls.enable kern.ipc.tls.maxlen

step "Counters are read only, and tunables are set before boot (loader.conf)"
fails ktls sysctl kern.ipc.tls.stats.active=1
fails ktls sysctl kern.ipc.tls.bind_threads=1
run ktls state init --force --tunable kern.ipc.tls.bind_threads=1
run ktls sysctl kern.ipc.tls.bind_threads

step "Today's kernel has more knobs; -T lists the loader tunables"
run ktls state init --force --profile current
run ktls sysctl -T kern.ipc
