#!/usr/bin/env bash
# How fast the web UI's pages answer with a big store: deskboot on its
# defaults with DEVICES users and Yealink T46S phones (one import), then
# each page asked ROUNDS times by curl through a signed-in session, after
# one warm-up ask. Prints a markdown table of the median and worst
# answer time (ms), beside /healthz asked the same way as the reference.
#
#   scripts/bench-webui.sh        # about a minute
#
# Knobs (environment): DEVICES (10000), ROUNDS (20), BASE_PORT (18700).
DEVICES=${DEVICES:-10000}
ROUNDS=${ROUNDS:-20}
BASE_PORT=${BASE_PORT:-18700}

. "$(dirname "$0")/bench-lib.sh"

start_deskboot ''
"$loadgen" "${admin[@]}" --setup "$DEVICES" >&2
ui="http://127.0.0.1:$admin_port"

# The session cookie of a sign-in with the admin token.
cookie=$(curl -fsS -o /dev/null -D - -H 'Sec-Fetch-Site: same-origin' -H "Origin: $ui" \
    --data-urlencode "token=$DESKBOOT_ADMIN_TOKEN" "$ui/login" |
    awk -F'[ ;]' 'tolower($1) == "set-cookie:" {print $2}')
[ -n "$cookie" ] || { echo "sign-in failed" >&2; exit 1; }

# timings PATH: ROUNDS answer times in ms, sorted, one a line; any answer
# but 200 stops the script.
timings() {
    curl -fsS -o /dev/null -H "Cookie: $cookie" "$ui$1"
    for _ in $(seq "$ROUNDS"); do
        curl -fsS -o /dev/null -w '%{time_total}\n' -H "Cookie: $cookie" "$ui$1"
    done | awk '{printf "%.1f\n", $1 * 1000}' | sort -n
}

echo
echo "$(nproc) cores, $DEVICES users and phones, $ROUNDS asks each after one warm-up"
echo
echo "| page | median (ms) | worst (ms) |"
echo "|---|---:|---:|"
for path in /healthz / /devices '/devices?page=200' '/devices?q=1234' '/devices?model=yealink-t46s&status=never' \
    /users '/users?q=Last99' /devices/001565000000 /audit /discovered /layouts /templates /settings; do
    mapfile -t times < <(timings "$path")
    echo "| \`$path\` | ${times[$((ROUNDS / 2))]} | ${times[$((ROUNDS - 1))]} |"
done
