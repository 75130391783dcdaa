#!/usr/bin/env bash
# Does memory come back after an administrator's bulk work? deskboot on its
# defaults; a DEVICES-row import (users and Yealink T46S phones, one CSV
# import through the API), then an export of the whole store, then a
# restore of that export, with no other traffic. After each, RSS is
# sampled every 10 s for 70 s. Prints a markdown table (MiB).
#
#   scripts/bench-bulk-memory.sh     # about 4 minutes
#   BEFORE=/tmp/deskboot-old scripts/bench-bulk-memory.sh   # about 8
#
# Knobs (environment): DEVICES (10000), BASE_PORT (18300), KEEP=1, and
# BEFORE: another deskboot binary (an older build) run through the same
# steps first, on a fresh store, so its rows sit beside this build's.
DEVICES=${DEVICES:-10000}
BASE_PORT=${BASE_PORT:-18300}

. "$(dirname "$0")/bench-lib.sh"

rows=()

# sample LABEL SECONDS: the operation's time, then RSS at +0 s to +70 s.
sample() {
    local row="| $1 | $2"
    for _ in $(seq 0 7); do
        row+=" | $(($(rss_kb "$deskboot_pid") / 1024))"
        sleep 10
    done
    rows+=("$row |")
}

# since START: seconds from START (date +%s.%N) to now.
since() { awk -v from="$1" -v to="$(date +%s.%N)" 'BEGIN { printf "%.2f", to - from }'; }

# bulk_work BUILD: starts the deskboot in $work on an empty store, runs
# the import, the export and the restore, sampling after each, and stops it.
bulk_work() {
    local build=$1 started
    rm -rf "$work/data"
    start_deskboot ''
    local api="http://127.0.0.1:$admin_port/api/v1"
    local auth=(-H "Authorization: Bearer $DESKBOOT_ADMIN_TOKEN")
    rows+=("| $build: at rest | | $(($(rss_kb "$deskboot_pid") / 1024)) | | | | | | | |")

    started=$(date +%s.%N)
    "$loadgen" "${admin[@]}" --setup "$DEVICES" >&2
    sample "$build: import of $DEVICES users and phones" "$(since "$started")"

    started=$(date +%s.%N)
    curl -fsS "${auth[@]}" "$api/export" -o "$work/backup.json"
    sample "$build: export ($(($(stat -c %s "$work/backup.json") / 1024)) KiB)" "$(since "$started")"

    started=$(date +%s.%N)
    curl -fsS -o /dev/null "${auth[@]}" -H 'Content-Type: application/json' \
        --data-binary @"$work/backup.json" "$api/restore?replace=true"
    sample "$build: restore of that export" "$(since "$started")"

    kill "$deskboot_pid"
    wait "$deskboot_pid" 2>/dev/null || true
}

if [ -n "${BEFORE:-}" ]; then
    mv "$work/deskboot" "$work/deskboot-this"
    cp "$BEFORE" "$work/deskboot"
    bulk_work before
    mv "$work/deskboot-this" "$work/deskboot"
    bulk_work after
else
    bulk_work this
fi

echo
echo "$(nproc) cores, $(free -h | awk '/^Mem:/ {print $2}') RAM, Linux $(uname -r)"
echo
echo "| after | took (s) | +0 s | +10 s | +20 s | +30 s | +40 s | +50 s | +60 s | +70 s |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
printf '%s\n' "${rows[@]}"
