#!/usr/bin/env bash
# deskboot against static servers holding the same bytes: nginx for HTTP,
# tftpd-hpa and atftpd for TFTP. Everything on loopback high ports, in a
# temp dir; prints a markdown table with ratios deskboot/reference.
#
#   scripts/bench-vs-static.sh            # about 3 minutes on 2 cores
#
# Knobs (environment): DEVICES (2000), HTTP_CONCURRENCY (100),
# TFTP_CONCURRENCY ("100 1000"), HTTP_ROUNDS (25), TFTP_ROUNDS (5),
# DURATION (60, seconds per run at most), BASE_PORT (18000),
# RESULTS (a file to keep the JSON lines), KEEP=1 (keep the temp dir).
DEVICES=${DEVICES:-2000}
HTTP_CONCURRENCY=${HTTP_CONCURRENCY:-100}
TFTP_CONCURRENCY=${TFTP_CONCURRENCY:-"100 1000"}
HTTP_ROUNDS=${HTTP_ROUNDS:-25}
TFTP_ROUNDS=${TFTP_ROUNDS:-5}
DURATION=${DURATION:-60}
BASE_PORT=${BASE_PORT:-18000}

. "$(dirname "$0")/bench-lib.sh"

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

log "installing the references when missing"
missing=()
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v in.tftpd >/dev/null || [ -x /usr/sbin/in.tftpd ] || missing+=(tftpd-hpa)
if [ ${#missing[@]} -gt 0 ]; then
    as_root apt-get install -y "${missing[@]}" >/dev/null ||
        { as_root apt-get update >/dev/null && as_root apt-get install -y "${missing[@]}" >/dev/null; }
fi
PATH=$PATH:/usr/sbin
atftpd=$(command -v atftpd || true)
if [ -z "$atftpd" ]; then
    # Debian's atftpd and tftpd-hpa conflict as packages; the binaries do
    # not, so atftpd is unpacked beside the installed tftpd-hpa.
    cache=${XDG_CACHE_HOME:-$HOME/.cache}/deskboot-bench/atftpd
    if [ ! -x "$cache/usr/sbin/atftpd" ]; then
        mkdir -p "$cache"
        (cd "$work" && apt-get download atftpd >/dev/null 2>&1) ||
            { as_root apt-get update >/dev/null && (cd "$work" && apt-get download atftpd >/dev/null 2>&1); }
        dpkg-deb -x "$work"/atftpd_*.deb "$cache"
    fi
    atftpd="$cache/usr/sbin/atftpd"
fi

nginx_port=$((BASE_PORT + 10))
hpa_port=$((BASE_PORT + 11))
atftpd_port=$((BASE_PORT + 12))

# Thousands of simulated phones from one address asking for unknown MACs is
# exactly what anti-scanning bans (and the ban would then refuse the TFTP
# runs' files), and a thousand connections or transfers from one address
# is more than the per-address caps let one NAT hold; the static servers have no such
# checks, so they are off here.
start_deskboot 'http_max_connections_per_source = 1000000
[provisioning]
scan_unknown_macs = 1000000000
tftp_max_transfers_per_source = 1000000'

"$loadgen" "${admin[@]}" --setup "$DEVICES"
echo "deskboot RSS after setup: $(rss_kb "$deskboot_pid") kB" >&2
static="$work/static"
"$loadgen" "${admin[@]}" --static-dir "$static" --phones "$DEVICES"
chmod 755 "$static"

log "starting nginx, tftpd-hpa and atftpd"
mkdir -p "$work/nginx"
cat >"$work/nginx/nginx.conf" <<EOF
worker_processes auto;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 8192; }
http {
    default_type application/octet-stream;
    access_log $work/nginx/access.log;
    sendfile on;
    tcp_nodelay on;
    keepalive_timeout 65;
    keepalive_requests 1000000;
    client_body_temp_path $work/nginx/body;
    proxy_temp_path $work/nginx/proxy;
    fastcgi_temp_path $work/nginx/fastcgi;
    uwsgi_temp_path $work/nginx/uwsgi;
    scgi_temp_path $work/nginx/scgi;
    server {
        listen 127.0.0.1:$nginx_port;
        root $static;
    }
}
EOF
nginx -p "$work/nginx" -e "$work/nginx/error.log" -c "$work/nginx/nginx.conf" -g 'daemon off;' &
nginx_pid=$!
pids+=("$nginx_pid")
wait_http "http://127.0.0.1:$nginx_port/y000000000066.cfg"
nginx_pids=$(echo "$nginx_pid" $(pgrep -P "$nginx_pid") | tr ' ' ',')

if [ "$(id -u)" = 0 ]; then
    # -s chroots into the directory and needs root; it then runs as nobody.
    in.tftpd -L -a "127.0.0.1:$hpa_port" -u nobody -s "$static" &
    user=(--user nobody --group nogroup)
else
    (cd "$static" && exec in.tftpd -L -a "127.0.0.1:$hpa_port" -u "$(id -un)" "$static") &
    user=(--user "$(id -un)" --group "$(id -gn)")
fi
hpa_pid=$!
pids+=("$hpa_pid")
# Its default of 100 threads would refuse 1000 phones at once.
"$atftpd" --daemon --no-fork --port "$atftpd_port" --bind-address 127.0.0.1 \
    "${user[@]}" --maxthread 2000 --logfile /dev/null "$static" &
atftpd_pid=$!
pids+=("$atftpd_pid")
sleep 1

# Every run is bounded in time, and every body checked against the static file.
check() { run "$@" --duration "$DURATION" --check-dir "$static"; }

log "HTTP"
# Two rounds first: deskboot renders every file (a phone's own file twice,
# since its render cache keeps one from its second ask); the later runs
# are served from the cache.
check deskboot "$deskboot_pid" --http "127.0.0.1:$http_port" --phones "$DEVICES" \
    --rounds 2 --concurrency "$HTTP_CONCURRENCY" --mode http-keepalive
check nginx "$nginx_pids" --http "127.0.0.1:$nginx_port" --phones "$DEVICES" \
    --rounds 2 --concurrency "$HTTP_CONCURRENCY" --mode http-keepalive
for mode in http-keepalive http-close; do
    check deskboot "$deskboot_pid" --http "127.0.0.1:$http_port" --phones "$DEVICES" \
        --rounds "$HTTP_ROUNDS" --concurrency "$HTTP_CONCURRENCY" --mode "$mode"
    check nginx "$nginx_pids" --http "127.0.0.1:$nginx_port" --phones "$DEVICES" \
        --rounds "$HTTP_ROUNDS" --concurrency "$HTTP_CONCURRENCY" --mode "$mode"
done
check deskboot "$deskboot_pid" --http "127.0.0.1:$http_port" --phones "$DEVICES" \
    --rounds "$HTTP_ROUNDS" --concurrency "$HTTP_CONCURRENCY" --mode http-keepalive --unknown
check nginx "$nginx_pids" --http "127.0.0.1:$nginx_port" --phones "$DEVICES" \
    --rounds "$HTTP_ROUNDS" --concurrency "$HTTP_CONCURRENCY" --mode http-keepalive --unknown

log "TFTP"
for blksize in 512 1428; do
    for concurrency in $TFTP_CONCURRENCY; do
        common=(--mode tftp --blksize "$blksize" --phones "$DEVICES" --rounds "$TFTP_ROUNDS"
            --concurrency "$concurrency")
        check deskboot "$deskboot_pid" --tftp "127.0.0.1:$tftp_port" "${common[@]}"
        check tftpd-hpa "$hpa_pid" --tftp "127.0.0.1:$hpa_port" "${common[@]}"
        check atftpd "$atftpd_pid" --tftp "127.0.0.1:$atftpd_port" "${common[@]}"
    done
done
common=(--mode tftp --blksize 512 --phones "$DEVICES" --rounds "$TFTP_ROUNDS"
    --concurrency "${TFTP_CONCURRENCY%% *}" --unknown)
check deskboot "$deskboot_pid" --tftp "127.0.0.1:$tftp_port" "${common[@]}"
check tftpd-hpa "$hpa_pid" --tftp "127.0.0.1:$hpa_port" "${common[@]}"
check atftpd "$atftpd_pid" --tftp "127.0.0.1:$atftpd_port" "${common[@]}"

echo
echo "$(nproc) cores, $(free -h | awk '/^Mem:/ {print $2}') RAM, Linux $(uname -r);" \
    "$DEVICES devices; ÷ = deskboot / reference"
echo
"$loadgen" --table "$results"
