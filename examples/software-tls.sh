#!/bin/sh
# Software KTLS on the seed kernel (FreeBSD r351522, August 2019), step by step.
#
# An application has finished its TLS handshake in userland and hands the
# transmit keys to the kernel with setsockopt(TCP_TXTLS_ENABLE). On the 2019
# kernel three things stand in the way, each with its own errno:
#   kern.ipc.tls.enable=0       -> ENOTSUP (45) "Operation not supported"
#   kern.ipc.mb_use_ext_pgs=0   -> ENXIO (6)    "Device not configured"
#   no ktls_ocf.ko loaded       -> EOPNOTSUPP   "Operation not supported"
# Then the kernel frames, encrypts and sends; the peer decrypts every byte.
#
# Runs on a throwaway state (KTLS_STATE is honoured if set). Needs: ktls, cmp, dd.
set -eu

KTLS=${KTLS:-ktls}
work=$(mktemp -d "${TMPDIR:-/tmp}/ktls-example.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
export KTLS_STATE="${KTLS_STATE:-$work/kernel.db}"

step() { printf '\n== %s\n' "$*"; }
run() { printf '$ ktls %s\n' "$*"; $KTLS "$@"; }
# A call that must fail: show it, and stop if it does not.
refused() {
    printf '$ ktls %s\n' "$*"
    if $KTLS "$@" 2>&1; then
        echo "expected a failure" >&2
        exit 1
    fi
}

step "a fresh seed kernel (reproducible with --seed)"
run state init --profile seed --seed 1 --force
run sysctl kern.ipc.tls.enable kern.ipc.mb_use_ext_pgs

step "an established connection, and the session keys in a file (not on the command line)"
conn="192.0.2.10:443 198.51.100.7:51514"
run connect $conn
cat > "$work/keys.yaml" <<'EOF'
tls_version: "1.2"
cipher: aes-gcm
key: 000102030405060708090a0b0c0d0e0f
iv: a0a1a2a3
EOF

step "KTLS is off: ENOTSUP, and the call is not even counted"
refused setsockopt $conn TCP_TXTLS_ENABLE --keys-from "$work/keys.yaml"

step "KTLS on, but no unmapped mbufs yet: ENXIO"
run sysctl kern.ipc.tls.enable=1
refused setsockopt $conn TCP_TXTLS_ENABLE --keys-from "$work/keys.yaml"

step "unmapped mbufs on, but no software crypto backend: EOPNOTSUPP"
run sysctl kern.ipc.mb_use_ext_pgs=1
refused setsockopt $conn TCP_TXTLS_ENABLE --keys-from "$work/keys.yaml"

step "load the OCF backend"
run kldload -v ktls_ocf
run kldstat
echo '$ ktls dmesg | grep KTLS'
$KTLS dmesg | grep KTLS

step "now the session is created, in software mode"
run setsockopt $conn TCP_TXTLS_ENABLE --keys-from "$work/keys.yaml"
run getsockopt $conn TCP_TXTLS_MODE

step "sendfile(2) of 100 KiB: 6 full records of 16384 bytes and one of 4096"
dd if=/dev/urandom of="$work/file" bs=1024 count=100 2>/dev/null
run send $conn --file "$work/file" --syscall sendfile --out "$work/stream"

step "an alert through sendmsg(2) with TLS_SET_RECORD_TYPE: a type-21 record"
run send $conn --hex 0100 --syscall sendmsg --record-type alert --out "$work/alert"

step "the peer's view: every record opens, and the bytes are the file's"
run decode "$work/stream" $conn --plaintext "$work/received"
cmp "$work/file" "$work/received" && echo "received exactly the 102400 bytes sent"
run decode "$work/alert" $conn --first-seq 7

step "what the kernel counted: 3 enable calls (the ENOTSUP one is not counted), 1 active, 1 offload"
run sysctl kern.ipc.tls.stats.enable_calls kern.ipc.tls.stats.active \
    kern.ipc.tls.stats.offload_total kern.ipc.tls.sw.gcm kern.ipc.tls.stats.ocf.tls12_gcm_crypts
run netstat

step "the module cannot go while kern.ipc.tls.allow_unload is 0"
refused kldunload ktls_ocf
echo '$ ktls dmesg | tail -n 1'
$KTLS dmesg | tail -n 1

step "dropping the connection frees its session"
run tcpdrop $conn
run sysctl kern.ipc.tls.stats.active kern.ipc.tls.sw.gcm
