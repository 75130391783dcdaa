#!/usr/bin/env bash
# Does memory come back after an administrator's bulk work? deskboot on its
# defaults; a DEVICES-row import (users and Yealink T46S phones, one CSV
# import through the API), then an export of the whole store, then a
# restore of that export, with no other traffic. After each, RSS is
# sampled every 10 s for 70 s. Prints a markdown table (MiB).
#
#   scripts/bench-bulk-memory.sh     # about 4 minutes
#
# Knobs (environment): DEVICES (10000), BASE_PORT (18300), KEEP=1.
DEVICES=${DEVICES:-10000}
BASE_PORT=${BASE_PORT:-18300}

. "$(dirname "$0")/bench-lib.sh"

start_deskboot ''
api="http://127.0.0.1:$admin_port/api/v1"
auth=(-H "Authorization: Bearer $DESKBOOT_ADMIN_TOKEN")
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

idle=$(($(rss_kb "$deskboot_pid") / 1024))
started=$(date +%s.%N)
"$loadgen" "${admin[@]}" --setup "$DEVICES" >&2
sample "import of $DEVICES users and phones" "$(since "$started")"

started=$(date +%s.%N)
curl -fsS "${auth[@]}" "$api/export" -o "$work/backup.json"
sample "export ($(($(stat -c %s "$work/backup.json") / 1024)) KiB)" "$(since "$started")"

started=$(date +%s.%N)
curl -fsS -o /dev/null "${auth[@]}" -H 'Content-Type: application/json' \
    --data-binary @"$work/backup.json" "$api/restore?replace=true"
sample "restore of that export" "$(since "$started")"

echo
echo "$(nproc) cores, $(free -h | awk '/^Mem:/ {print $2}') RAM, Linux $(uname -r);" \
    "RSS at rest before: $idle MiB"
echo
echo "| after | took (s) | +0 s | +10 s | +20 s | +30 s | +40 s | +50 s | +60 s | +70 s |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
printf '%s\n' "${rows[@]}"
