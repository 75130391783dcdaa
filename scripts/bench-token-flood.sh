#!/usr/bin/env bash
# Can wrong admin tokens slow down known phones? deskboot on its defaults,
# DEVICES phones booting CONCURRENCY at once over HTTP (kept-alive
# connections): alone, then beside a flood of wrong tokens against the admin
# API from FLOOD_SOURCES addresses (FLOOD_CONCURRENCY at once each, half of
# them guessing the secret of a token name that exists, half names that do
# not), then alone again. Prints a markdown table (÷ is the first run alone
# divided by each other run) and what the flood got back.
#
#   scripts/bench-token-flood.sh     # about 2 minutes on 2 cores
#
# Knobs (environment): DEVICES (10000), CONCURRENCY (1000), ROUNDS (3),
# FLOOD_SOURCES (64), FLOOD_CONCURRENCY (4), FLOOD_REQUESTS (100 per
# address), BASE_PORT (18200), RESULTS, KEEP=1.
DEVICES=${DEVICES:-10000}
CONCURRENCY=${CONCURRENCY:-1000}
ROUNDS=${ROUNDS:-3}
FLOOD_SOURCES=${FLOOD_SOURCES:-64}
FLOOD_CONCURRENCY=${FLOOD_CONCURRENCY:-4}
FLOOD_REQUESTS=${FLOOD_REQUESTS:-100}
BASE_PORT=${BASE_PORT:-18200}

. "$(dirname "$0")/bench-lib.sh"

# The known phones boot from one address, a NAT of CONCURRENCY phones: more
# connections at once than the per-address cap lets one address hold.
start_deskboot "http_max_connections_per_source = $CONCURRENCY"
"$loadgen" "${admin[@]}" --setup "$DEVICES"
curl -fsS -o /dev/null -H "Authorization: Bearer $DESKBOOT_ADMIN_TOKEN" \
    -H 'Content-Type: application/json' -d '{"name": "ops", "scope": "write"}' \
    "http://127.0.0.1:$admin_port/api/v1/tokens"
known=(--http "127.0.0.1:$http_port" --mode http-keepalive --phones "$DEVICES"
    --rounds "$ROUNDS" --concurrency "$CONCURRENCY")

# flood: every source address sends FLOOD_REQUESTS wrong tokens, and the
# status codes it got back go to $work/flood.codes.
flood() {
    local url="http://127.0.0.1:$admin_port/api/v1/users" s name urls=()
    # curl takes one -o per URL.
    for _ in $(seq "$FLOOD_REQUESTS"); do
        urls+=(-o /dev/null "$url")
    done
    for s in $(seq 1 "$FLOOD_SOURCES"); do
        name=$([ $((s % 2)) = 0 ] && echo ops || echo nobody)
        curl -s -w '%{http_code}\n' -Z --parallel-max "$FLOOD_CONCURRENCY" \
            --interface "127.0.77.$s" -H "Authorization: Bearer $name.wrong-secret-$s" \
            "${urls[@]}" >>"$work/flood.codes" &
    done
    wait
}

# The first storm renders every file; the others are served from the cache.
"$loadgen" "${known[@]}" >/dev/null
run alone "$deskboot_pid" "${known[@]}"
flood &
flooding=$!
run "beside a token flood" "$deskboot_pid" "${known[@]}"
wait "$flooding"
run "alone again" "$deskboot_pid" "${known[@]}"

echo
echo "$(nproc) cores, $(free -h | awk '/^Mem:/ {print $2}') RAM, Linux $(uname -r);" \
    "$DEVICES devices; ÷ = alone / this run"
echo
"$loadgen" --table "$results" --baseline alone
echo
echo "The flood's answers ($FLOOD_SOURCES addresses x $FLOOD_REQUESTS wrong tokens):"
sort "$work/flood.codes" | uniq -c | awk '{printf "- %s: %s\n", $2, $1}'
