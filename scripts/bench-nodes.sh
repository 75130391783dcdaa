#!/usr/bin/env bash
# One node or many, sled or PostgreSQL: in one run, (a) one node on sled,
# (b) one node on a PostgreSQL database, (c) two nodes sharing another
# PostgreSQL database, each with DEVICES users and Yealink T46S phones
# imported. Each then takes two boot storms over HTTP keep-alive, every
# phone fetching its common file and its own file, CONCURRENCY at once
# (with two nodes, phone i boots from node i mod 2):
#
# - first asks: the node(s) restarted after the import, so the render
#   cache and the PostgreSQL read cache start empty and every file is
#   rendered from records read from the store;
# - resyncs: the same storm again on the same processes: the common file
#   comes from the render cache, the records from the store's caches (a
#   phone's own file is kept in the render cache only from its second ask,
#   within the cache's 32 MiB).
#
# Prints a markdown table (requests/s, p50/p99, failures, render-cache
# hits, node and database CPU per request, RSS per node) with the ratios
# pg/sled and two nodes/one node, all from this run.
#
#   scripts/bench-nodes.sh                  # about 7 minutes on 2 cores after the build
#   DEVICES=20000 scripts/bench-nodes.sh    # about 2 minutes after the build
#
# PostgreSQL runs in the temp dir on a free loopback port, started with
# initdb/pg_ctl (as the postgres user when root: it refuses root), with
# fsync on, as a database that holds an operator's records would run.
#
# Knobs (environment): DEVICES (100000), CONCURRENCY (500, phones booting
# at once), BASE_PORT (18500; node n listens on BASE_PORT+10n..+2),
# RESULTS (a file to keep the JSON lines), KEEP=1 (keep the temp dir).
DEVICES=${DEVICES:-100000}
CONCURRENCY=${CONCURRENCY:-500}
BASE_PORT=${BASE_PORT:-18500}

. "$(dirname "$0")/bench-lib.sh"

pg_bin=$(find /usr/lib/postgresql -maxdepth 2 -name bin | sort -V | tail -n 1)
[ -x "$pg_bin/initdb" ] || {
    echo "PostgreSQL is not installed (apt-get install postgresql)" >&2
    exit 1
}
pg_dir=$work/pg
pg_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

# as_postgres PROGRAM ARGS...: PostgreSQL refuses to run as root.
as_postgres() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$pg_bin/$1" "${@:2}"
    else
        "$pg_bin/$1" "${@:2}"
    fi
}

stop_pg() {
    [ -f "$pg_dir/data/postmaster.pid" ] && as_postgres pg_ctl stop -m fast -w -D "$pg_dir/data" >/dev/null 2>&1
    return 0
}
# The nodes first (bench-lib's cleanup), then the cluster, then the dir.
trap 'for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null; stop_pg; cleanup' EXIT

log "starting PostgreSQL $(basename "$(dirname "$pg_bin")") on 127.0.0.1:$pg_port (fsync on)"
mkdir -p "$pg_dir"
[ "$(id -u)" = 0 ] && chown postgres:postgres "$pg_dir"
as_postgres initdb -U postgres -A trust -E UTF8 -D "$pg_dir/data" >"$pg_dir/initdb.log"
as_postgres pg_ctl start -w -l "$pg_dir/log" -D "$pg_dir/data" \
    -o "-p $pg_port -k $pg_dir -c listen_addresses=127.0.0.1" >/dev/null
for db in one two; do
    "$pg_bin/createdb" -h 127.0.0.1 -p "$pg_port" -U postgres "deskboot_$db"
done
pg_url() { echo "postgres://postgres@127.0.0.1:$pg_port/deskboot_$1"; }

DESKBOOT_ADMIN_TOKEN=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
export DESKBOOT_ADMIN_TOKEN
# All phones boot from one address: one NAT of CONCURRENCY phones, each
# keeping a connection to every node (with two, phone i boots from node
# i mod 2). Twice that, so a client replacing a connection is never
# refused for the moment it holds both: this measures the store, not the
# per-address limit.
printf 'http_max_connections_per_source = %s\n' $((2 * CONCURRENCY)) >"$work/node.toml"

node_port() { echo $((BASE_PORT + 10 * $1 + $2)); }

# start_node N STORE: node N on its ports and STORE; sets node_pid[N].
declare -A node_pid node_store
start_node() {
    local n=$1
    node_store[$n]=$2
    "$work/deskboot" serve --config "$work/node.toml" --data "$work/node$n" \
        --store "$2" --http "127.0.0.1:$(node_port "$n" 0)" \
        --tftp "127.0.0.1:$(node_port "$n" 1)" --admin "127.0.0.1:$(node_port "$n" 2)" \
        >>"$work/node$n.log" 2>&1 &
    node_pid[$n]=$!
    pids+=("${node_pid[$n]}")
    wait_http "http://127.0.0.1:$(node_port "$n" 2)/healthz"
}

stop_node() {
    local pid=${node_pid[$1]} kept=() p
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    # The exit trap kills what is left in pids: never a reused pid.
    for p in "${pids[@]}"; do [ "$p" = "$pid" ] || kept+=("$p"); done
    pids=("${kept[@]}")
}

# metric N NAME: a counter of node N, summed over its labels.
metric() {
    curl -fsS -H "Authorization: Bearer $DESKBOOT_ADMIN_TOKEN" \
        "http://127.0.0.1:$(node_port "$1" 2)/metrics" |
        awk -v name="$2" '$1 == name || index($1, name "{") == 1 { sum += $2 } END { printf "%d", sum }'
}

# db_cpu: CPU seconds the PostgreSQL cluster has used: the postmaster's
# own and its ended children's, plus each live backend's (a node's pooled
# connections live as long as the node). 0 before the cluster runs.
db_cpu() {
    local pm
    pm=$(head -n 1 "$pg_dir/data/postmaster.pid" 2>/dev/null) || { echo 0; return; }
    { awk '{ print $14 + $15 + $16 + $17 }' "/proc/$pm/stat"
      for child in $(pgrep -P "$pm"); do
          awk '{ print $14 + $15 }' "/proc/$child/stat" 2>/dev/null
      done
    } | awk -v hz="$(getconf CLK_TCK)" '{ t += $1 } END { printf "%.2f", t / hz }'
}

status_kb() { awk -v key="$2:" '$1 == key {print $2}' "/proc/$1/status"; }

# storm CONFIG PHASE NODES...: one storm over those nodes; appends the
# loadgen's JSON line, with each node's peak and final RSS (VmHWM, reset
# before the storm, and VmRSS) and the render cache's hits and misses.
storm() {
    local config=$1 phase=$2
    shift 2
    local pidlist=() also=() n hits=0 misses=0
    for n in "$@"; do
        pidlist+=("${node_pid[$n]}")
        [ "$n" = "$1" ] || also+=("127.0.0.1:$(node_port "$n" 0)")
        echo 5 >"/proc/${node_pid[$n]}/clear_refs"
        hits=$((hits - $(metric "$n" deskboot_render_cache_hits_total)))
        misses=$((misses - $(metric "$n" deskboot_render_cache_misses_total)))
    done
    local args=(--http "127.0.0.1:$(node_port "$1" 0)" --mode http-keepalive
        --phones "$DEVICES" --concurrency "$CONCURRENCY" --duration 600
        --label "$config" --server-pid "$(IFS=,; echo "${pidlist[*]}")" --json)
    [ ${#also[@]} = 0 ] || args+=(--also-http "$(IFS=,; echo "${also[*]}")")
    local out peaks=() afters=() db_before db_after
    db_before=$(db_cpu)
    out=$("$loadgen" "${args[@]}")
    db_after=$(db_cpu)
    echo "$out" | head -n 1 >&2
    for n in "$@"; do
        peaks+=("$(status_kb "${node_pid[$n]}" VmHWM)")
        afters+=("$(status_kb "${node_pid[$n]}" VmRSS)")
        hits=$((hits + $(metric "$n" deskboot_render_cache_hits_total)))
        misses=$((misses + $(metric "$n" deskboot_render_cache_misses_total)))
    done
    echo "$out" | tail -n 1 | jq -c --arg phase "$phase" \
        --argjson peaks "[$(IFS=,; echo "${peaks[*]}")]" \
        --argjson afters "[$(IFS=,; echo "${afters[*]}")]" \
        --argjson hits "$hits" --argjson misses "$misses" \
        --argjson db "$(awk -v a="$db_before" -v b="$db_after" 'BEGIN { printf "%.2f", b - a }')" \
        '. + {phase: $phase, node_peak_rss_kb: $peaks, node_rss_kb: $afters,
              cache_hits: $hits, cache_misses: $misses, database_cpu_seconds: $db}' >>"$results"
}

# config LABEL STORE NODES...: the nodes on STORE, the import through the
# first, every node restarted, then the two storms.
config() {
    local label=$1 store=$2 n started
    shift 2
    log "$label"
    for n in "$@"; do start_node "$n" "$store"; done
    started=$(date +%s.%N)
    "$loadgen" --admin "http://127.0.0.1:$(node_port "$1" 2)" \
        --http "127.0.0.1:$(node_port "$1" 0)" --setup "$DEVICES" >&2
    log "import: $(awk -v from="$started" -v to="$(date +%s.%N)" 'BEGIN { printf "%.1f", to - from }') s"
    # A fresh process has empty caches: the storm after it renders every file.
    for n in "$@"; do
        stop_node "$n"
        start_node "$n" "$store"
    done
    storm "$label" "first asks" "$@"
    storm "$label" resyncs "$@"
    for n in "$@"; do stop_node "$n"; done
}

config "one node, sled" "sled:$work/node1/store" 1
config "one node, PostgreSQL" "$(pg_url one)" 2
config "two nodes, PostgreSQL" "$(pg_url two)" 3 4

echo
echo "$(nproc) cores, $(free -h | awk '/^Mem:/ {print $2}') RAM, Linux $(uname -r)," \
    "PostgreSQL $("$pg_bin/postgres" --version | awk '{print $3}');" \
    "$DEVICES devices, $CONCURRENCY phones at once over HTTP keep-alive"
echo
# Ratios against the row the config is measured against, in the same phase:
# PostgreSQL against sled, two nodes against one on PostgreSQL.
jq -rs '
  def base($config): {"one node, PostgreSQL": "one node, sled",
                     "two nodes, PostgreSQL": "one node, PostgreSQL"}[$config];
  def mib: . / 1024 | floor;
  def ratio($a; $b): if $b > 0 then ($a / $b * 100 | round) / 100 | tostring else "" end;
  sort_by(.phase) as $runs
  | "| phase | config | requests/s | ÷ | p50 ms | p99 ms | ÷ p99 | failed | render-cache hits | node CPU µs/request | database CPU µs/request | peak RSS per node MiB | after MiB |",
    "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ($runs[] as $r
     | ($runs | map(select(.phase == $r.phase and .["label"] == base($r["label"]))) | first) as $b
     | "| \($r.phase) | \($r["label"]) | \($r.transfers_per_sec | round) | \(if $b then ratio($r.transfers_per_sec; $b.transfers_per_sec) else "" end) | \($r.p50_ms * 100 | round / 100) | \($r.p99_ms * 100 | round / 100) | \(if $b then ratio($r.p99_ms; $b.p99_ms) else "" end) | \($r.failed) | \(($r.cache_hits * 100 / (($r.cache_hits + $r.cache_misses) | if . == 0 then 1 else . end)) | round)% | \($r.server_cpu_us_per_transfer | round) | \($r.database_cpu_seconds * 1e6 / $r.transfers | round) | \($r.node_peak_rss_kb | map(mib | tostring) | join(" / ")) | \($r.node_rss_kb | map(mib | tostring) | join(" / ")) |")
' "$results"
