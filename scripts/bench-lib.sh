# Sourced by the scripts/bench-*.sh scripts: a temp dir removed on exit,
# the release binaries copied into it, and deskboot started on loopback
# ports from BASE_PORT (which the caller sets first).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
work=$(mktemp -d /tmp/deskboot-bench.XXXXXX)
# Static files in it are read by servers that drop to nobody as root.
chmod 755 "$work"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    if [ "${KEEP:-0}" = 1 ]; then
        echo "kept $work" >&2
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT

# 1000 phones at once need 1000 client sockets plus the servers' own.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

log() { echo "== $*" >&2; }

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

wait_http() {
    for _ in $(seq 100); do
        curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "no answer from $1" >&2
    return 1
}

log "building deskboot and the load generator (release)"
(cd "$repo" && cargo build --release --quiet --bin deskboot --example loadgen)
target=${CARGO_TARGET_DIR:-$repo/target}
# Copies: a shared target dir may be rebuilt from another branch mid-run.
cp "$target/release/deskboot" "$target/release/examples/loadgen" "$work/"
loadgen="$work/loadgen"

http_port=$BASE_PORT
tftp_port=$((BASE_PORT + 1))
admin_port=$((BASE_PORT + 2))
# The load generator's way to deskboot's phone and admin listeners.
admin=(--admin "http://127.0.0.1:$admin_port" --http "127.0.0.1:$http_port")

# start_deskboot CONFIG: deskboot with that TOML on the ports above, its
# log in a file (as nginx's access log is); sets deskboot_pid.
start_deskboot() {
    log "starting deskboot"
    DESKBOOT_ADMIN_TOKEN=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
    export DESKBOOT_ADMIN_TOKEN
    printf '%s\n' "$1" >"$work/deskboot.toml"
    "$work/deskboot" serve --config "$work/deskboot.toml" --data "$work/data" \
        --http "127.0.0.1:$http_port" --tftp "127.0.0.1:$tftp_port" \
        --admin "127.0.0.1:$admin_port" >"$work/deskboot.log" 2>&1 &
    deskboot_pid=$!
    pids+=("$deskboot_pid")
    wait_http "http://127.0.0.1:$admin_port/healthz"
    echo "deskboot RSS idle: $(rss_kb "$deskboot_pid") kB" >&2
}

# run LABEL PIDS ARGS...: one load run against the server(s) PIDS; its
# summary to stderr, its JSON line appended to $results.
results=${RESULTS:-$work/results.jsonl}
: >"$results"
run() {
    local label=$1 pidlist=$2
    shift 2
    local out
    out=$("$loadgen" --label "$label" --server-pid "$pidlist" --json "$@")
    echo "$out" | head -n 1 >&2
    echo "$out" | tail -n 1 >>"$results"
}
