#!/bin/sh
# NIC (ifnet) TLS on a Chelsio T6 lagg, and what a port failure does to it.
#
# lagg0 is a failover lagg over cc0 and cc1 (two T6 ports). With TLS offload on,
# a new KTLS session gets a send tag on the port that carries its flow (cc0), and
# the NIC encrypts and segments every record. When cc0 goes down, lagg0 moves to
# cc1: the next record still carries the cc0 tag, so ip_output_send() drops it
# (ENOBUFS), the ktls_reset_send_tag() task allocates a tag on cc1
# (kern.ipc.tls.ifnet.reset) and TCP retransmits. The peer never notices: the
# record stream across the failover decodes to exactly the bytes sent.
# Then the same over a vlan on the lagg, with lacp, and a reset that cannot
# allocate (the route moves to em0, which has no TLS offload): the connection is
# dropped with ECONNABORTED.
#
# Runs on a throwaway state (KTLS_STATE is honoured if set). Needs: ktls, cat, cmp, dd.
set -eu

KTLS=${KTLS:-ktls}
work=$(mktemp -d "${TMPDIR:-/tmp}/ktls-example.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
export KTLS_STATE="${KTLS_STATE:-$work/kernel.db}"

step() { printf '\n== %s\n' "$*"; }
run() { printf '$ ktls %s\n' "$*"; $KTLS "$@"; }
refused() {
    printf '$ ktls %s\n' "$*"
    if $KTLS "$@" 2>&1; then
        echo "expected a failure" >&2
        exit 1
    fi
}
# Stop unless a sysctl reads what the story says it should.
expect() {
    got=$($KTLS sysctl -n "$1")
    if [ "$got" != "$2" ]; then
        echo "expected $1 = $2, got $got" >&2
        exit 1
    fi
    echo "$1: $got"
}

step "a seed kernel with KTLS, unmapped mbufs and ifnet TLS permitted"
run state init --profile seed --seed 1 --force
run sysctl kern.ipc.tls.enable=1 kern.ipc.mb_use_ext_pgs=1 kern.ipc.tls.ifnet.permitted=1
run kldload ktls_ocf

step "lagg0 fails over between two T6 ports; the capabilities of a lagg port are the lagg's"
run ifconfig cc0 txtls
run ifconfig cc0
echo "(cc0 alone cannot differ from lagg0: lagg_capabilities() set it back)"
run ifconfig lagg0 txtls
run ifconfig cc0
run ifconfig cc1

step "a connection whose session goes to the NIC: its send tag is on cc0, behind lagg0"
conn="198.51.100.10:443 198.51.100.7:51514"
cat > "$work/keys.yaml" <<'EOF'
tls_version: "1.2"
cipher: aes-gcm
key: 000102030405060708090a0b0c0d0e0f
iv: a0a1a2a3
EOF
run connect $conn --keys-from "$work/keys.yaml"
run getsockopt $conn TCP_TXTLS_MODE
run netstat
expect kern.ipc.tls.ifnet.gcm 1

step "40 KiB go out: the NIC seals each record and cuts it into segments on cc0"
dd if=/dev/urandom of="$work/part1" bs=1024 count=40 2>/dev/null
run send $conn --file "$work/part1" --out "$work/stream1" --pcap "$work/cc0.pcap" --trace

step "cc0 loses its link: lagg0 fails over to cc1"
run ifconfig cc0 down
run ifconfig lagg0

step "the next send: dropped on the stale tag, tag reset onto cc1, retransmitted"
dd if=/dev/urandom of="$work/part2" bs=1024 count=40 2>/dev/null
run send $conn --file "$work/part2" --out "$work/stream2" --trace
echo '$ ktls dmesg | tail -n 2'
$KTLS dmesg | tail -n 2
expect kern.ipc.tls.ifnet.reset 1
expect kern.ipc.tls.ifnet.reset_failed 0
run netstat

step "the peer's view across the failover: every record opens, the bytes are the ones sent"
cat "$work/stream1" "$work/stream2" > "$work/stream"
cat "$work/part1" "$work/part2" > "$work/sent"
run decode "$work/stream" $conn --plaintext "$work/received"
cmp "$work/sent" "$work/received" && echo "received exactly the 81920 bytes sent"

step "cc0 comes back: failover returns to the primary port, and the tag follows"
run ifconfig cc0 up
run send $conn --data "after failback" --trace
expect kern.ipc.tls.ifnet.reset 2

step "the same over a vlan on the lagg (IPv6: TXTLS6)"
run ifconfig vlan100 create vlan 100 vlandev lagg0
run ifconfig vlan100 inet6 2001:db8:100::10 prefixlen 64
vconn="2001:db8:100::10.443 2001:db8:100::7.50122"
run connect $vconn --keys-from "$work/keys.yaml"
run netstat
run ifconfig cc0 down
run send $vconn --data "over vlan100" --out "$work/vstream" --trace
expect kern.ipc.tls.ifnet.reset 3
run decode "$work/vstream" $vconn
run ifconfig cc0 up

step "lacp: each flow's port comes from its hash; flows on a failed port move"
run ifconfig lagg0 laggproto lacp
run connect 198.51.100.10:443 198.51.100.7:51600 --count 8 --tls-version 1.2 --random-keys
run netstat
run ifconfig cc1 down
for port in 51600 51601 51602 51603 51604 51605 51606 51607; do
    run send 198.51.100.10:443 198.51.100.7:$port --data "lacp flow $port"
done
echo "(the four flows whose hash had put them on cc1 were reset onto cc0)"
expect kern.ipc.tls.ifnet.reset 7
run netstat
run ifconfig cc1 up

step "a reset that cannot allocate: a host route moves the peer to em0 (no TLS offload)"
run route add -host 198.51.100.7 -interface em0
refused send $conn --data "this record never leaves" --trace
expect kern.ipc.tls.ifnet.reset_failed 1
expect kern.ipc.tls.ifnet.reset_dropped 1
echo '$ ktls dmesg | tail -n 1'
$KTLS dmesg | tail -n 1
refused getsockopt $conn TCP_TXTLS_MODE

step "what the kernel counted"
run sysctl kern.ipc.tls.ifnet kern.ipc.tls.stats.active
