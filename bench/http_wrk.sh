#!/usr/bin/env bash
# Request rate for HLS playlist and segment GETs: muxcast against nginx serving the same
# bytes from files, under `wrk` with 100 and 1000 keep-alive connections, in the same
# script run. Prints, per run and as medians, requests/s, latency (p50, p99), the
# server's CPU per request, non-2xx responses, socket errors and the TCP connections
# opened during the run (keep-alive kept: about as many as wrk's connections).
#
# Needs (installs nothing itself):
#     apt-get install -y wrk nginx-light curl jq
#
# Usage (from anywhere):
#     bench/http_wrk.sh
#     CONNS=1000 RESOURCES=segment RUNS=5 bench/http_wrk.sh
#
# Environment:
#     CONNS            wrk connection counts, space separated      [100 1000]
#     RESOURCES        which URLs, space separated                 [playlist init segment]
#                      playlist: the video media playlist, a plain GET (no _HLS_msn, so it
#                                never blocks), rendered per request by muxcast
#                      init:     the video init segment (init0.mp4)
#                      segment:  the newest finished video media segment (segN.m4s)
#     SERVERS          which servers, space separated              [muxcast nginx1 nginxauto]
#                      nginx1: worker_processes 1 (muxcast serves from one event-loop
#                      thread); nginxauto: worker_processes auto (one per core)
#     RUNS             runs per (resource, connections, server)    [3]
#     DURATION         seconds per wrk run                         [10]
#     WRK_THREADS      wrk threads                                 [1]
#     WINDOW           muxcast --window (segments kept, 2 s each)  [60]
#     MEDIA            file muxcast plays with --loop              [testdata/h264_aac.mkv]
#     NGINX_OPEN_FILE_CACHE  1: nginx caches open file descriptors (open_file_cache), as
#                      a tuned static server would; 0: it opens the file per request   [1]
#     QUIET_WAIT       before each run, seconds to wait for other (un-niced) load on the
#                      machine to drop to <= 10 %                  [30]
#     BENCH_NICE       nice value of the servers and wrk           [-10 as root, else 0]
#     CARGO_TARGET_DIR where cargo builds                          [<repo>/target]
#     KEEP_LOGS=1      keep the temporary directory (configs, logs, wrk outputs)
#
# How: muxcast plays MEDIA in a loop with --window WINDOW and --prefill 2*WINDOW+10, so its
# window of segments is full from the start and the playlist keeps its size. Before each
# group of runs (one resource, one connection count, one run of every server) the script
# fetches the resource from muxcast (the segment is re-discovered: the newest finished one,
# valid for ~2*WINDOW s) and writes the same bytes to nginx's document root under the same
# path; the servers then run back to back in an order that rotates from group to group.
# Both nginx instances and muxcast stay up for the whole script; all listen on 127.0.0.1.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
CONNS=${CONNS:-100 1000}
RESOURCES=${RESOURCES:-playlist init segment}
SERVERS=${SERVERS:-muxcast nginx1 nginxauto}
RUNS=${RUNS:-3}
DURATION=${DURATION:-10}
WRK_THREADS=${WRK_THREADS:-1}
WINDOW=${WINDOW:-60}
MEDIA=${MEDIA:-$ROOT/testdata/h264_aac.mkv}
NGINX_OPEN_FILE_CACHE=${NGINX_OPEN_FILE_CACHE:-1}
QUIET_WAIT=${QUIET_WAIT:-30}
if [[ -z ${BENCH_NICE:-} ]]; then
    BENCH_NICE=0
    ((EUID == 0)) && BENCH_NICE=-10
fi
NICE=(nice -n "$BENCH_NICE")
CLK_TCK=$(getconf CLK_TCK)

for tool in wrk nginx curl jq; do
    command -v "$tool" >/dev/null || {
        echo "http_wrk.sh: $tool not found (apt-get install -y wrk nginx-light curl jq)" >&2
        exit 1
    }
done

max_c=0
for c in $CONNS; do ((c > max_c)) && max_c=$c; done
need_fd=$((max_c + 500))
if (($(ulimit -n) < need_fd)); then
    ulimit -n "$need_fd" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
fi
if (($(ulimit -n) < need_fd)); then
    echo "http_wrk.sh: ulimit -n is $(ulimit -n), too low for $max_c connections" >&2
    exit 1
fi

WORK=$(mktemp -d /tmp/muxcast-wrk.XXXXXX)
chmod 755 "$WORK" # nginx workers drop privileges and must read the document root
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# utime + stime of processes (all their threads), in seconds.
cpu_seconds() {
    local pid sum=0 t
    for pid in "$@"; do
        t=$(awk -v tck="$CLK_TCK" '{ sub(/^.*\) /, ""); printf "%.2f", ($12 + $13) / tck }' "/proc/$pid/stat" 2>/dev/null || echo 0)
        sum=$(awk -v a="$sum" -v b="$t" 'BEGIN { print a + b }')
    done
    echo "$sum"
}

# TCP connections accepted by any socket on this machine (network namespace) so far.
passive_opens() {
    awk '/^Tcp:/ { if (!h) { for (i = 1; i <= NF; i++) if ($i == "PassiveOpens") c = i; h = 1 } else print $c }' /proc/net/snmp
}

# Waits for a process started in the background (so that a signal to this script runs
# the cleanup at once) and returns its status; it is killed on exit until then.
wait_fg() {
    local pid=$1 rc=0 p keep=()
    PIDS+=("$pid")
    wait "$pid" || rc=$?
    for p in "${PIDS[@]}"; do [[ $p == "$pid" ]] || keep+=("$p"); done
    PIDS=("${keep[@]}")
    return "$rc"
}

wait_http_200() {
    local url=$1 what=$2 code
    for _ in $(seq 150); do
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$url" || true)
        [[ $code == 200 ]] && return 0
        sleep 0.2
    done
    echo "http_wrk.sh: $what did not serve $url within 30 s" >&2
    return 1
}

# ---------------------------------------------------------------------------------------
echo "building muxcast (release) ..."
(cd "$ROOT" && CARGO_TARGET_DIR="$TARGET" cargo build --release --quiet --bin muxcast)
MUXCAST="$TARGET/release/muxcast"
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || COMMIT+=" + uncommitted changes to src/"

MUX_PORT=$(free_port)
"${NICE[@]}" "$MUXCAST" --listen "127.0.0.1:$MUX_PORT" --loop --window "$WINDOW" \
    --prefill $((2 * WINDOW + 10)) --max-clients $((max_c + 1000)) --max-clients-per-ip $((max_c + 1000)) "$MEDIA" >"$WORK/muxcast.log" 2>&1 &
MUX_PID=$!
PIDS+=("$MUX_PID")
MUX="http://127.0.0.1:$MUX_PORT"
wait_http_200 "$MUX/live/index.m3u8" muxcast
sleep 1

# The video rendition's media playlist, from the multivariant playlist.
MEDIA_PL=$(curl -s --max-time 5 "$MUX/live/index.m3u8" | awk '/^#EXT-X-STREAM-INF/ { getline; print; exit }' | tr -d '\r')
[[ -n $MEDIA_PL ]] || { echo "http_wrk.sh: no media playlist in $MUX/live/index.m3u8" >&2; exit 1; }
REND_DIR=$(dirname "/live/$MEDIA_PL")
INIT_URI=$(curl -s --max-time 5 "$MUX/live/$MEDIA_PL" | sed -n 's/^#EXT-X-MAP:URI="\([^"]*\)".*/\1/p' | head -n 1)
[[ -n $INIT_URI ]] || { echo "http_wrk.sh: no EXT-X-MAP in $MEDIA_PL" >&2; exit 1; }

# Path (under the server root) of a resource; for the segment, the newest finished one now.
resource_path() {
    case $1 in
    playlist) echo "/live/$MEDIA_PL" ;;
    init) echo "$REND_DIR/$INIT_URI" ;;
    segment)
        local seg
        seg=$(curl -s --max-time 5 "$MUX/live/$MEDIA_PL" | grep -E '^seg[0-9]+\.m4s' | tail -n 1 | tr -d '\r')
        [[ -n $seg ]] || { echo "http_wrk.sh: no finished segment in $MEDIA_PL" >&2; exit 1; }
        echo "$REND_DIR/$seg"
        ;;
    esac
}

# nginx, configured in the work directory, in the foreground (no daemon), on 127.0.0.1.
mkdir -p "$WORK/www" "$WORK/tmp"
declare -A PORT PID
PORT[muxcast]=$MUX_PORT
PID[muxcast]=$MUX_PID
start_nginx() {
    local name=$1 workers=$2 dir="$WORK/$1" port
    port=$(free_port)
    mkdir -p "$dir"
    local cache=""
    ((NGINX_OPEN_FILE_CACHE)) && cache="open_file_cache max=64 inactive=60s; open_file_cache_valid 1s;"
    cat >"$dir/nginx.conf" <<EOF
worker_processes $workers;
daemon off;
master_process on;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
worker_rlimit_nofile $((need_fd + 1000));
events { worker_connections $((max_c + 1000)); }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 1000000000;
    keepalive_timeout 75s;
    $cache
    client_body_temp_path $WORK/tmp/body;
    proxy_temp_path $WORK/tmp/proxy;
    fastcgi_temp_path $WORK/tmp/fastcgi;
    uwsgi_temp_path $WORK/tmp/uwsgi;
    scgi_temp_path $WORK/tmp/scgi;
    types { application/vnd.apple.mpegurl m3u8; video/mp4 mp4 m4s; }
    server {
        listen 127.0.0.1:$port backlog=4096;
        root $WORK/www;
        add_header Access-Control-Allow-Origin *;
    }
}
EOF
    "${NICE[@]}" nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" >"$dir/stdout.log" 2>&1 &
    PID[$name]=$!
    PIDS+=("${PID[$name]}")
    PORT[$name]=$port
}
for s in $SERVERS; do
    case $s in
    muxcast) ;;
    nginx1) start_nginx nginx1 1 ;;
    nginxauto) start_nginx nginxauto auto ;;
    *) echo "http_wrk.sh: unknown server $s" >&2; exit 1 ;;
    esac
done
# Something for nginx to serve while it starts.
mkdir -p "$WORK/www$REND_DIR"
curl -s --max-time 5 -o "$WORK/www/live/$MEDIA_PL" "$MUX/live/$MEDIA_PL"
for s in $SERVERS; do
    [[ $s == muxcast ]] || wait_http_200 "http://127.0.0.1:${PORT[$s]}/live/$MEDIA_PL" "$s"
done

# The server's processes (nginx: the master and its workers).
server_pids() {
    local s=$1
    if [[ $s == muxcast ]]; then
        echo "${PID[$s]}"
    else
        echo "${PID[$s]}" $(pgrep -P "${PID[$s]}" | tr '\n' ' ')
    fi
}

echo
echo "muxcast:  $COMMIT, port $MUX_PORT, --window $WINDOW, media $MEDIA"
echo "nginx:    $(nginx -v 2>&1 | sed 's/^nginx version: //'), open_file_cache $NGINX_OPEN_FILE_CACHE, $(for s in $SERVERS; do [[ $s == muxcast ]] || printf '%s (%d workers, port %s) ' "$s" $(($(pgrep -P "${PID[$s]}" | wc -l))) "${PORT[$s]}"; done)"
echo "wrk:      $(wrk -v 2>&1 | head -n 1 | cut -d' ' -f1-2), -t$WRK_THREADS, ${DURATION} s per run, ulimit -n $(ulimit -n)"
echo "machine:  $(nproc) cores, $(awk '/^model name/ { sub(/^[^:]*: /, ""); print; exit }' /proc/cpuinfo), kernel $(uname -r)"
echo "runs:     resources [$RESOURCES] × connections [$CONNS] × servers [$SERVERS] × $RUNS runs, nice $BENCH_NICE"

RESULTS="$WORK/results.tsv"
: >"$RESULTS"

to_ms() { awk '{ v = $1; if (v ~ /us$/) print v * 0.001; else if (v ~ /ms$/) print v + 0; else if (v ~ /s$/) print v * 1000; else print v }'; }

run_wrk() {
    local server=$1 resource=$2 conns=$3 run=$4 path=$5 bytes=$6 busy
    local url="http://127.0.0.1:${PORT[$server]}$path" out="$WORK/wrk-$server-$resource-$conns-$run.out"
    busy=$(wait_quiet)
    # shellcheck disable=SC2046
    local cpu0 cpu1 po0 po1 pids
    pids=$(server_pids "$server")
    # shellcheck disable=SC2086
    cpu0=$(cpu_seconds $pids)
    po0=$(passive_opens)
    "${NICE[@]}" timeout -k 5 $((DURATION + 60)) wrk -t"$WRK_THREADS" -c"$conns" -d"${DURATION}s" \
        --timeout 5s --latency "$url" >"$out" 2>&1 &
    local rc=0
    wait_fg $! || rc=$?
    po1=$(passive_opens)
    # shellcheck disable=SC2086
    cpu1=$(cpu_seconds $pids)
    local rps reqs p50 p99 avg non2xx sock
    rps=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
    reqs=$(awk '/ requests in / { print $1 }' "$out")
    avg=$(awk '/^ *Latency / { print $2; exit }' "$out" | to_ms)
    p50=$(awk '$1 == "50%" { print $2 }' "$out" | to_ms)
    p99=$(awk '$1 == "99%" { print $2 }' "$out" | to_ms)
    non2xx=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$out")
    sock=$(awk '/Socket errors:/ { gsub(",", ""); print $4 + $6 + $8 + $10 }' "$out")
    local sockdetail
    sockdetail=$(awk '/Socket errors:/ { sub(/^ *Socket errors: */, ""); print }' "$out")
    local cpu_us
    cpu_us=$(awk -v a="$cpu0" -v b="$cpu1" -v n="${reqs:-0}" 'BEGIN { printf "%.1f", (n > 0 ? (b - a) * 1e6 / n : 0) }')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$resource" "$conns" "$server" "$run" \
        "${rps:-0}" "${p50:-nan}" "${p99:-nan}" "${avg:-nan}" "${non2xx:-0}" "${sock:-0}" "$((po1 - po0))" \
        "$cpu_us" "$bytes" "$busy" >>"$RESULTS"
    printf '  %-9s %-8s c=%-4d run %d: %9.0f req/s  p50 %7.2f ms  p99 %7.2f ms  non-2xx %s  socket errors %s  conns opened %d  server CPU %s µs/req  (machine busy before, un-niced: %s)%s\n' \
        "$server" "$resource" "$conns" "$run" "${rps:-0}" "${p50:-nan}" "${p99:-nan}" "${non2xx:-0}" \
        "${sockdetail:-0}" "$((po1 - po0))" "$cpu_us" "$busy" "$( ((rc == 0)) || echo "  wrk rc $rc")"
    if [[ -z $rps ]]; then
        sed 's/^/    /' "$out"
    fi
}

for conns in $CONNS; do
    for resource in $RESOURCES; do
        for run in $(seq "$RUNS"); do
            path=$(resource_path "$resource")
            mkdir -p "$WORK/www$(dirname "$path")"
            curl -s --fail --max-time 5 -o "$WORK/www$path.tmp" "$MUX$path"
            mv "$WORK/www$path.tmp" "$WORK/www$path"
            bytes=$(stat -c %s "$WORK/www$path")
            echo "$resource, $conns connections, group $run/$RUNS: $path ($bytes bytes)"
            # The same bytes from every server (a segment and the init are immutable;
            # the playlist changes every part, so only its length is compared).
            for s in $SERVERS; do
                got=$(curl -s --max-time 5 "http://127.0.0.1:${PORT[$s]}$path" | wc -c)
                if [[ $resource != playlist ]] && ! cmp -s <(curl -s --max-time 5 "http://127.0.0.1:${PORT[$s]}$path") "$WORK/www$path"; then
                    echo "  WARNING: $s serves different bytes for $path ($got bytes)"
                fi
            done
            read -ra order <<<"$SERVERS"
            k=$(((run - 1) % ${#order[@]}))
            for server in "${order[@]:$k}" "${order[@]:0:$k}"; do
                run_wrk "$server" "$resource" "$conns" "$run" "$path" "$bytes"
                kill -0 "$MUX_PID" 2>/dev/null || { echo "http_wrk.sh: muxcast died" >&2; tail "$WORK/muxcast.log" >&2; exit 1; }
            done
        done
    done
done

if grep -qE '^\[(WARN|ERROR)' "$WORK/muxcast.log"; then
    echo
    echo "muxcast log, warnings and errors ($(grep -cE '^\[(WARN|ERROR)' "$WORK/muxcast.log") lines, first 10):"
    grep -E '^\[(WARN|ERROR)' "$WORK/muxcast.log" | head -n 10 | sed 's/^/  /'
fi
for s in $SERVERS; do
    [[ $s == muxcast ]] && continue
    if [[ -s $WORK/$s/error.log ]]; then
        echo "$s error.log ($(wc -l <"$WORK/$s/error.log") lines, first 5):"
        head -n 5 "$WORK/$s/error.log" | sed 's/^/  /'
    fi
done

# ---------------------------------------------------------------------------------------
echo
echo "=== summary ($(date -u +%Y-%m-%d), $(nproc) cores, muxcast $COMMIT, wrk -t$WRK_THREADS -d${DURATION}s, medians of $RUNS runs) ==="
printf '%-9s %6s %-10s %8s %10s %9s %9s %9s %8s %8s %8s %8s   %s\n' resource conns server bytes "req/s" "p50 ms" "p99 ms" "avg ms" "µs/req" non-2xx "sockerr" "opened" "req/s per run"
for resource in $RESOURCES; do
    for conns in $CONNS; do
        for server in $SERVERS; do
            rows=$(awk -F'\t' -v r="$resource" -v c="$conns" -v s="$server" '$1 == r && $2 == c && $3 == s' "$RESULTS")
            [[ -n $rows ]] || continue
            printf '%-9s %6d %-10s %8.0f %10.0f %9.2f %9.2f %9.2f %8.1f %8d %8d %8.0f   %s\n' "$resource" "$conns" "$server" \
                "$(cut -f13 <<<"$rows" | median)" "$(cut -f5 <<<"$rows" | median)" \
                "$(cut -f6 <<<"$rows" | median)" "$(cut -f7 <<<"$rows" | median)" "$(cut -f8 <<<"$rows" | median)" \
                "$(cut -f12 <<<"$rows" | median)" \
                "$(awk -F'\t' '{ s += $9 } END { print s + 0 }' <<<"$rows")" \
                "$(awk -F'\t' '{ s += $10 } END { print s + 0 }' <<<"$rows")" \
                "$(cut -f11 <<<"$rows" | median)" \
                "$(awk -F'\t' '{ printf "%s%.0f", (NR > 1 ? " " : ""), $5 }' <<<"$rows")"
        done
    done
done
echo "(non-2xx and sockerr: totals over the runs; opened: TCP connections accepted on the machine during a run, median)"
if [[ " $SERVERS " == *" muxcast "* ]]; then
    echo
    echo "muxcast req/s ÷ nginx req/s (medians; target >= 1):"
    for resource in $RESOURCES; do
        for conns in $CONNS; do
            line=$(printf '  %-9s c=%-5d' "$resource" "$conns")
            m=$(awk -F'\t' -v r="$resource" -v c="$conns" '$1 == r && $2 == c && $3 == "muxcast" { print $5 }' "$RESULTS" | median)
            for s in $SERVERS; do
                [[ $s == muxcast ]] && continue
                n=$(awk -F'\t' -v r="$resource" -v c="$conns" -v s="$s" '$1 == r && $2 == c && $3 == s { print $5 }' "$RESULTS" | median)
                line+=$(awk -v m="$m" -v n="$n" -v s="$s" 'BEGIN { printf "  vs %s %.2f", s, (n > 0 ? m / n : 0) }')
            done
            echo "$line"
        done
    done
fi
