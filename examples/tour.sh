#!/bin/sh
# A tour of kernel TLS on the seed kernel (FreeBSD r351522, August 2019), on a
# throwaway state: your own state is never touched.
#
# The story: an administrator opens the sysctl gates, loads the software crypto
# module, and an application's connection sends TLS records encrypted by the
# kernel. Then the Chelsio T6 ports behind lagg0 get TLS offload, a new
# connection's records are encrypted by the NIC, switch_tls moves connections
# between software and the NIC, and a port failure shows the send-tag reset.
# Every stream is decoded at the end as the peer would, and the counters tell
# the same story.
set -e

command -v ktls >/dev/null 2>&1 || { echo "tour: ktls is not on PATH (pip install .)" >&2; exit 1; }
work=$(mktemp -d)
KTLS_STATE=$work/kernel.db
export KTLS_STATE
trap 'rm -rf "$work"' EXIT

step() { printf '\n# %s\n' "$1"; }
run() { printf '$ %s\n' "$*"; "$@"; }
fails() { printf '$ %s\n' "$*"; if "$@" 2>&1; then echo "tour: that should have failed" >&2; exit 1; fi; }

step "The KTLS node, leaves in the profile's fixed order (the first command boots the kernel)"
run ktls state init --seed 2019
run ktls sysctl kern.ipc.tls

step "What the gates mean (-d); in 2019 both are off, and ifnet TLS is not permitted"
run ktls sysctl -d kern.ipc.tls.enable kern.ipc.mb_use_ext_pgs kern.ipc.tls.ifnet.permitted
run ktls sysctl kern.ipc.tls.enable=1 kern.ipc.mb_use_ext_pgs=1

step "Counters are read only, and tunables are set before boot (loader.conf)"
fails ktls sysctl kern.ipc.tls.stats.active=1
fails ktls sysctl kern.ipc.tls.bind_threads=1

step "An application finished its handshake and hands its keys to the kernel..."
conn="192.0.2.10:443 198.51.100.7:51514"
cat > "$work/keys.yaml" <<'EOF'
tls_version: "1.2"
cipher: aes-gcm
key: 000102030405060708090a0b0c0d0e0f
iv: a0a1a2a3
EOF
run ktls connect $conn
fails ktls setsockopt $conn TCP_TXTLS_ENABLE --keys-from "$work/keys.yaml"

step "...but in 2019 software crypto is a module: load it, and the session is software"
run ktls kldload -v ktls_ocf
run ktls setsockopt $conn TCP_TXTLS_ENABLE --keys-from "$work/keys.yaml"
run ktls getsockopt $conn TCP_TXTLS_MODE

step "sendfile(2) of 40 KiB: the kernel frames three records, a worker thread seals them"
dd if=/dev/urandom of="$work/sw.data" bs=1024 count=40 2>/dev/null
run ktls send $conn --file "$work/sw.data" --syscall sendfile --out "$work/sw.stream" --trace

step "The NIC: the T6 ports can encrypt TLS (capabilities) but do not yet (options)"
run ktls ifconfig -m cc0
echo '(a lagg port has the lagg'"'"'s capabilities: turn TLS offload on for lagg0)'
run ktls ifconfig lagg0 txtls
run ktls sysctl kern.ipc.tls.ifnet.permitted=1

step "A new connection behind lagg0: its session gets a send tag on cc0, the NIC encrypts"
nic="198.51.100.10:443 198.51.100.7:51515"
run ktls connect $nic --keys-from "$work/keys.yaml"
run ktls getsockopt $nic TCP_TXTLS_MODE
dd if=/dev/urandom of="$work/nic.data" bs=1024 count=40 2>/dev/null
run ktls send $nic --file "$work/nic.data" --out "$work/nic1.stream" --trace
run ktls netstat

step "switch_tls moves sessions: first list what -a would run, then move some"
run ktls switch_tls -l -i -a
echo '(the software session leaves by lagg0 too: its peer is on lagg0'"'"'s subnet)'
run ktls switch_tls -i 192.0.2.10 443 198.51.100.7 51514
run ktls switch_tls -s 198.51.100.10.443 198.51.100.7.51515
run ktls switch_tls -i 198.51.100.10.443 198.51.100.7.51515
echo '(a peer behind em0, an Intel port without TLS offload, stays in software)'
em="192.0.2.10:443 192.0.2.99:40000"
run ktls connect $em --keys-from "$work/keys.yaml"
fails ktls switch_tls -i $em
run ktls netstat
run ktls sysctl kern.ipc.tls.stats.switch_to_sw kern.ipc.tls.stats.switch_to_ifnet \
    kern.ipc.tls.stats.switch_failed

step "cc0 loses its link: lagg0 fails over to cc1, and the next record meets a stale tag"
run ktls ifconfig cc0 down
dd if=/dev/urandom of="$work/nic2.data" bs=1024 count=20 2>/dev/null
run ktls send $nic --file "$work/nic2.data" --out "$work/nic2.stream" --trace
echo '$ ktls dmesg | tail -n 2'
ktls dmesg | tail -n 2
run ktls netstat

step "The peer's view: every record opens, across the switches and the failover"
run ktls decode "$work/sw.stream" $conn --plaintext "$work/sw.received"
cmp "$work/sw.data" "$work/sw.received" && echo "software: received exactly the bytes sent"
cat "$work/nic1.stream" "$work/nic2.stream" > "$work/nic.stream"
cat "$work/nic.data" "$work/nic2.data" > "$work/nic.sent"
run ktls decode "$work/nic.stream" $nic --plaintext "$work/nic.received"
cmp "$work/nic.sent" "$work/nic.received" && echo "NIC: received exactly the bytes sent"

step "What the kernel counted"
run ktls sysctl kern.ipc.tls.stats.enable_calls kern.ipc.tls.stats.offload_total \
    kern.ipc.tls.stats.active kern.ipc.tls.sw kern.ipc.tls.ifnet

step "Today's kernel has more knobs (OCF is built in; ChaCha20; ifnet_max_rexmit_pct)"
run ktls state init --force --profile current
run ktls sysctl -T kern.ipc
