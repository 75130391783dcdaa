#!/usr/bin/env bash
# Can a scan for MACs slow down known phones? deskboot on its defaults
# (anti-scanning on; the per-address caps raised for the known phones), DEVICES phones booting CONCURRENCY at once (each
# fetching its common file, then its own), over HTTP (kept-alive connections)
# and over TFTP (blksize 1428): alone, then beside a scan guessing MAC files
# from one address, from 200 addresses (each banned on its own), and
# from so many addresses (65,536 over TFTP, 1,024 over HTTP) that none asks
# for enough MACs to be banned alone (their /24 networks are), then alone
# again. Prints a markdown table;
# ÷ is the first run alone divided by each other run.
#
#   scripts/bench-scan.sh            # about 2.5 minutes on 2 cores
#
# Knobs (environment): DEVICES (10000), CONCURRENCY (1000), ROUNDS (3,
# boots of every phone per storm), SCAN_CONCURRENCY (200), SCAN_SECONDS
# (20), SCAN_HEAD_START (5: seconds the scan runs before the storm starts,
# past the guesses each address may make before it is slowed down),
# BASE_PORT (18100),
# RESULTS (a file to keep the JSON lines), KEEP=1 (keep the temp dir).
DEVICES=${DEVICES:-10000}
CONCURRENCY=${CONCURRENCY:-1000}
ROUNDS=${ROUNDS:-3}
SCAN_CONCURRENCY=${SCAN_CONCURRENCY:-200}
SCAN_SECONDS=${SCAN_SECONDS:-20}
SCAN_HEAD_START=${SCAN_HEAD_START:-5}
BASE_PORT=${BASE_PORT:-18100}

. "$(dirname "$0")/bench-lib.sh"

# The known phones boot from one address, a NAT of CONCURRENCY phones: more
# connections and transfers at once than the per-address caps let one
# address hold.
start_deskboot "http_max_connections_per_source = $CONCURRENCY
[provisioning]
tftp_max_transfers_per_source = 1000000"
"$loadgen" "${admin[@]}" --setup "$DEVICES"
servers=(--http "127.0.0.1:$http_port" --tftp "127.0.0.1:$tftp_port")

# scan_beside NET SOURCES MODE KNOWN...: a scan from SOURCES addresses
# counting up from 127.NET.0.1 (fresh ones, so earlier bans do not count),
# with the known phones' storm run SCAN_HEAD_START seconds into it.
scan_beside() {
    local net=$1 sources=$2 mode=$3
    shift 3
    "$loadgen" "${servers[@]}" --label "scan from $sources" --json --unknown --mac-file-only \
        --mode "$mode" --phones 60000 --rounds 100 --concurrency "$SCAN_CONCURRENCY" \
        --duration "$SCAN_SECONDS" --source "127.$net.0.1" --sources "$sources" \
        >"$work/scan.out" &
    local scan=$!
    sleep "$SCAN_HEAD_START"
    run "beside a scan from $sources" "$deskboot_pid" "$@"
    wait "$scan"
    head -n 1 "$work/scan.out" >&2
    tail -n 1 "$work/scan.out" >>"$results"
}

net=1
for mode in http-keepalive tftp; do
    log "$mode"
    known=("${servers[@]}" --mode "$mode" --blksize 1428 --phones "$DEVICES"
        --rounds "$ROUNDS" --concurrency "$CONCURRENCY")
    # The first storm renders every file; the others are served from the cache.
    "$loadgen" "${known[@]}" >/dev/null
    run alone "$deskboot_pid" "${known[@]}"
    if [ "$mode" = tftp ]; then
        scan_mode=tftp many=65536
    else
        scan_mode=http-keepalive many=1024
    fi
    for sources in 1 200 "$many"; do
        scan_beside "$net" "$sources" "$scan_mode" "${known[@]}"
        net=$((net + 2))
    done
    # How much the storm alone varies from run to run.
    run "alone again" "$deskboot_pid" "${known[@]}"
done

echo
echo "$(nproc) cores, $(free -h | awk '/^Mem:/ {print $2}') RAM, Linux $(uname -r);" \
    "$DEVICES devices; ÷ = alone / this run"
echo
"$loadgen" --table "$results" --baseline alone
