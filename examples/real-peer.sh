#!/bin/sh
# Kernel TLS with real TLS software on the other end, over loopback.
#
# `ktls serve` is an HTTPS server that does what nginx does with KTLS: the
# handshake in userland, then setsockopt(TCP_TXTLS_ENABLE) with the keys, and
# every response body by sendfile(2) through the (simulated) kernel. curl
# downloads from it; `ktls send --connect` is a KTLS client talking to it; and
# `switch_tls` moves a download onto a NIC and back while it runs.
#
# Runs on a throwaway state (KTLS_STATE is honoured if set), on 127.0.0.1 only.
# Needs: ktls, curl, cmp, dd.
set -eu

KTLS=${KTLS:-ktls}
work=$(mktemp -d "${TMPDIR:-/tmp}/ktls-example.XXXXXX")
pid=
cleanup() {
    # SIGTERM: the server removes its connections from the state and exits 0.
    if [ -n "$pid" ]; then kill -TERM "$pid" 2>/dev/null || true; wait "$pid" || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 1' INT TERM
export KTLS_STATE="${KTLS_STATE:-$work/kernel.db}"

step() { printf '\n== %s\n' "$*"; }
run() { printf '$ ktls %s\n' "$*"; $KTLS "$@"; }

step "today's kernel, KTLS on"
run state init --profile current --force
run sysctl kern.ipc.tls.enable=1

step "a 5 MiB file, served over HTTPS (self-signed certificate, a free port)"
mkdir "$work/www"
dd if=/dev/urandom of="$work/www/big.bin" bs=1048576 count=5 2>/dev/null
printf 'hello from ktls serve\n' > "$work/www/index.html"
: > "$work/serve.log"
$KTLS serve --listen 127.0.0.1:0 --root "$work/www" >"$work/access.log" 2>"$work/serve.log" &
pid=$!
tries=0
until grep -q 'listening on' "$work/serve.log"; do
    tries=$((tries + 1))
    if [ "$tries" -gt 100 ] || ! kill -0 "$pid" 2>/dev/null; then
        cat "$work/serve.log" >&2
        exit 1
    fi
    sleep 0.1
done
cat "$work/serve.log"
url=$(sed -n 's/.*listening on \(https:[^ ]*\) .*/\1/p' "$work/serve.log")
cert=$(sed -n 's/.*self-signed certificate.*: //p' "$work/serve.log")

step "curl downloads it over TLS 1.2 and TLS 1.3; the copies are exact"
for v in "--tlsv1.2 --tls-max 1.2" "--tlsv1.3"; do
    # shellcheck disable=SC2086 # $v is two words on purpose
    curl -sS --fail --max-time 60 --cacert "$cert" $v -o "$work/copy" "${url}big.bin"
    cmp "$work/www/big.bin" "$work/copy"
    echo "curl $v: identical"
done

step "a KTLS client: ktls send --connect asks for / (its reply is read in userland)"
printf 'GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' > "$work/request"
port=${url#https://127.0.0.1:}
port=${port%/}
run send --connect "127.0.0.1:$port" --cafile "$cert" --server-name localhost \
    --file "$work/request"

step "a slow download from 127.0.0.3, which the routing table sends out of mce0"
run ifconfig mce0 txtls
run route add -host 127.0.0.3 -interface mce0
curl -sS --fail --max-time 60 --cacert "$cert" --interface 127.0.0.3 --limit-rate 2M \
    -o "$work/copy" "${url}big.bin" &
curl_pid=$!
sleep 1
run netstat
run switch_tls -i -a
run switch_tls -s -a
wait "$curl_pid"
cmp "$work/www/big.bin" "$work/copy"
echo "the switched download is identical"

step "what the server logged, and what the kernel counted"
cat "$work/access.log"
run sysctl kern.ipc.tls.stats.offload_total kern.ipc.tls.stats.switch_to_ifnet \
    kern.ipc.tls.stats.switch_to_sw

step "stop the server: its connections leave the state"
kill -TERM "$pid"
wait "$pid"
pid=
run netstat
run sysctl kern.ipc.tls.stats.active
