#!/usr/bin/env bash
# Fan-out benchmark: one ~4 Mbit/s WebM stream to N clients on loopback, muxcast against
# Icecast 2 under the same load. Prints, per run, the clients keeping up with real time,
# time to first byte, the server's CPU seconds per delivered GB and its RSS, then the
# muxcast/Icecast ratios.
#
# Needs (installs nothing itself):
#     apt-get install -y icecast2 ffmpeg jq curl
#
# Usage (from anywhere):
#     bench/fanout.sh
#     CLIENTS="2000 3000 4000" SERVERS=muxcast CONNECT=burst bench/fanout.sh
#
# Environment:
#     CLIENTS          client counts to run, space separated      [500 1000]
#     SERVERS          which servers, space separated             [muxcast icecast]
#     CONNECT          connect patterns, space separated          [burst paced]
#                      burst: every client connects at once (the connect-burst test);
#                      paced: at most PACED_PENDING connects outstanding at a time, so
#                      that Icecast (listen backlog 5) gets all its clients and its CPU
#                      per delivered byte is measured at the full client count; the
#                      keep-up window then starts WARMUP s after the last client is in
#     PACED_PENDING    outstanding connects in paced mode          [4]
#     DURATION         seconds of load per run                    [30]
#     WARMUP           start of the keep-up window, seconds       [3]
#     LOADGEN_THREADS  event-loop threads of the load generator   [1]
#     LOADGEN_PROCS    load generator processes [1, or as many as the descriptor limit
#                      needs: one process holds one descriptor per client]
#     QUIET_WAIT       seconds to wait, before each run, for other processes to leave
#                      the CPUs alone (un-niced load <= 10 %)     [60]
#     SETTLE_MAX       at most this many seconds between the stream being up and the
#                      idle RSS baseline (waits for RSS to hold still)   [40]
#     BENCH_NICE       nice value of the servers, the Icecast source and the load
#                      generator                                  [-10 as root, else 0]
#     MEDIA            WebM to serve [bench/.cache/fanout-4mbps.webm, generated once]
#     ICECAST_QUEUE    Icecast's per-listener queue-size, bytes  [4194304, as muxcast's
#                      --client-queue; Icecast's own default 524288 drops slow clients]
#     MUXCAST_ARGS     extra muxcast options                     []
#     CARGO_TARGET_DIR where cargo builds                        [<repo>/target]
#     KEEP_LOGS=1      keep the temporary directory with server logs
#
# Every process this script starts is killed when it exits. Everything runs on 127.0.0.1.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CLIENTS=${CLIENTS:-"500 1000"}
SERVERS=${SERVERS:-"muxcast icecast"}
CONNECT=${CONNECT:-"burst paced"}
PACED_PENDING=${PACED_PENDING:-4}
DURATION=${DURATION:-30}
WARMUP=${WARMUP:-3}
LOADGEN_THREADS=${LOADGEN_THREADS:-1}
QUIET_WAIT=${QUIET_WAIT:-60}
SETTLE_MAX=${SETTLE_MAX:-40}
# On a shared machine other work competes for the two cores: run the servers, the source
# and the load generator at a higher priority (as root), the same for both servers.
if ((EUID == 0)); then BENCH_NICE=${BENCH_NICE:--10}; else BENCH_NICE=${BENCH_NICE:-0}; fi
NICE=(nice -n "$BENCH_NICE")
CACHE="$ROOT/bench/.cache"
MEDIA=${MEDIA:-"$CACHE/fanout-4mbps.webm"}
ICECAST_QUEUE=${ICECAST_QUEUE:-4194304}
MUXCAST_ARGS=${MUXCAST_ARGS:-}
TARGET=${CARGO_TARGET_DIR:-"$ROOT/target"}
CLK_TCK=$(getconf CLK_TCK)

for tool in ffmpeg ffprobe jq curl ss; do
    command -v "$tool" >/dev/null || {
        echo "fanout.sh: $tool not found (apt-get install -y icecast2 ffmpeg jq curl)" >&2
        exit 1
    }
done
if [[ " $SERVERS " == *" icecast "* ]] && ! command -v icecast2 >/dev/null; then
    echo "fanout.sh: icecast2 not found (apt-get install -y icecast2)" >&2
    exit 1
fi

# One descriptor per client in the server and one in the load generator (root may raise
# the hard limit; others get what the hard limit allows).
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
max_n=0
for n in $CLIENTS; do ((n > max_n)) && max_n=$n; done
FD_LIMIT=$(ulimit -n)
if ((FD_LIMIT < max_n + 200)); then
    echo "fanout.sh: ulimit -n is $FD_LIMIT, too low for a server with $max_n clients" >&2
    exit 1
fi

WORK=$(mktemp -d /tmp/muxcast-fanout.XXXXXX)
KEPT_MESSAGE="logs kept in"
# Cleanup of PIDS and WORK on exit, stop, free_port. Its machine_busy and wait_quiet are
# replaced below by this script's own (one figure; nothing printed on stdout).
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

# utime + stime of a process (all its threads), in seconds.
cpu_seconds() {
    awk -v tck="$CLK_TCK" '{ sub(/^.*\) /, ""); printf "%.2f\n", ($12 + $13) / tck }' "/proc/$1/stat"
}

rss_kib() {
    awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0
}

# Samples a process's RSS every 0.2 s into a file, until killed.
sample_rss() {
    local pid=$1 out=$2
    while kill -0 "$pid" 2>/dev/null; do
        rss_kib "$pid" >>"$out"
        sleep 0.2
    done
}

# Percent of all cores busy over one second (whole machine, from /proc/stat), not
# counting niced processes (nice 19 fuzzers barely take CPU from this benchmark).
machine_busy() {
    local a b
    a=$(head -n 1 /proc/stat)
    sleep 1
    b=$(head -n 1 /proc/stat)
    awk -v a="$a" -v b="$b" 'BEGIN {
        n = split(a, x); split(b, y); t = 0
        for (i = 2; i <= n; i++) t += y[i] - x[i]
        free = (y[3] - x[3]) + (y[5] - x[5]) + (y[6] - x[6])
        printf "%.0f", (t > 0 ? 100 * (t - free) / t : 0)
    }'
}

# On a shared machine: wait (up to QUIET_WAIT seconds) until others leave the cores alone.
wait_quiet() {
    local waited=0 busy
    while :; do
        busy=$(machine_busy)
        ((busy <= 10 || waited >= QUIET_WAIT)) && break
        ((waited == 0)) && echo "machine ${busy} % busy; waiting up to $QUIET_WAIT s for it to calm down ..." >&2
        sleep 4
        waited=$((waited + 5))
    done
}

wait_http_200() {
    local url=$1 what=$2 code
    for _ in $(seq 150); do
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$url" || true)
        [[ $code == 200 ]] && return 0
        sleep 0.2
    done
    echo "fanout.sh: $what did not serve $url within 30 s" >&2
    return 1
}

# ---------------------------------------------------------------------------------------
# shellcheck source=bench/media.sh
source "$ROOT/bench/media.sh"
make_4mbps_webm "$MEDIA"
MEDIA_SECONDS=$(ffprobe -v error -show_entries format=duration -of csv=p=0 "$MEDIA")
MEDIA_BYTES=$(stat -c %s "$MEDIA")
RATE_BPS=$(awk -v b="$MEDIA_BYTES" -v s="$MEDIA_SECONDS" 'BEGIN { printf "%.0f", b * 8 / s }')
RATE_MBPS=$(awk -v r="$RATE_BPS" 'BEGIN { printf "%.2f", r / 1e6 }')

# ---------------------------------------------------------------------------------------
echo "building muxcast and loadgen (release) ..."
(cd "$ROOT" && CARGO_TARGET_DIR="$TARGET" cargo build --release --quiet --bin muxcast --example loadgen)
MUXCAST="$TARGET/release/muxcast"
LOADGEN="$TARGET/release/examples/loadgen"

echo
echo "media:    $MEDIA ($MEDIA_BYTES bytes, ${MEDIA_SECONDS} s, $RATE_MBPS Mbit/s)"
echo "muxcast:  $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown) ($MUXCAST)"
echo "machine:  $(nproc) cores, $(awk '/^model name/ { sub(/^[^:]*: /, ""); print; exit }' /proc/cpuinfo), kernel $(uname -r)"
echo "runs:     servers [$SERVERS] × clients [$CLIENTS] × connect [$CONNECT], $DURATION s each, loadgen threads $LOADGEN_THREADS, nice $BENCH_NICE"
if [[ " $SERVERS " == *" icecast "* ]]; then
    echo "icecast:  $(icecast2 -v 2>&1 | head -n 1), queue-size $ICECAST_QUEUE"
fi

RESULTS="$WORK/results.tsv"
: >"$RESULTS"

start_muxcast() {
    local port=$1 n=$2
    # shellcheck disable=SC2086
    "${NICE[@]}" "$MUXCAST" --listen "127.0.0.1:$port" --loop --max-clients $((n + 100)) --max-clients-per-ip $((n + 100)) $MUXCAST_ARGS "$MEDIA" \
        >"$WORK/muxcast-$n-$3.log" 2>&1 &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    SOURCE_PID=
    URL="http://127.0.0.1:$port/live/live.webm"
    wait_http_200 "$URL" muxcast
}

start_icecast() {
    local port=$1 n=$2 dir="$WORK/icecast-$n-$3"
    mkdir -p "$dir"
    local owner=""
    ((EUID == 0)) && owner="<changeowner><user>icecast2</user><group>icecast</group></changeowner>"
    cat >"$dir/icecast.xml" <<EOF
<icecast>
    <location>bench</location>
    <admin>bench@localhost</admin>
    <limits>
        <clients>$((n + 100))</clients>
        <sources>2</sources>
        <queue-size>$ICECAST_QUEUE</queue-size>
        <client-timeout>30</client-timeout>
        <header-timeout>15</header-timeout>
        <source-timeout>10</source-timeout>
        <burst-on-connect>1</burst-on-connect>
        <burst-size>65535</burst-size>
    </limits>
    <authentication>
        <source-password>benchpass</source-password>
        <relay-password>benchpass</relay-password>
        <admin-user>admin</admin-user>
        <admin-password>benchpass</admin-password>
    </authentication>
    <hostname>127.0.0.1</hostname>
    <listen-socket>
        <port>$port</port>
        <bind-address>127.0.0.1</bind-address>
    </listen-socket>
    <fileserve>1</fileserve>
    <paths>
        <basedir>/usr/share/icecast2</basedir>
        <logdir>$dir</logdir>
        <webroot>/usr/share/icecast2/web</webroot>
        <adminroot>/usr/share/icecast2/admin</adminroot>
    </paths>
    <logging>
        <accesslog>access.log</accesslog>
        <errorlog>error.log</errorlog>
        <loglevel>2</loglevel>
    </logging>
    <security>
        <chroot>0</chroot>
        $owner
    </security>
</icecast>
EOF
    # Icecast refuses to run as root: it drops to icecast2 (Debian's user) and must be
    # able to write its logs.
    if ((EUID == 0)); then
        chown -R icecast2:icecast "$dir"
        chmod 755 "$WORK"
    fi
    "${NICE[@]}" icecast2 -c "$dir/icecast.xml" >"$dir/stdout.log" 2>&1 &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    for _ in $(seq 50); do
        [[ -n $(ss -Htln "sport = :$port") ]] && break
        sleep 0.1
    done
    "${NICE[@]}" ffmpeg -hide_banner -loglevel error -nostdin -re -stream_loop -1 -i "$MEDIA" -c copy \
        -content_type video/webm -f webm "icecast://source:benchpass@127.0.0.1:$port/live.webm" \
        >"$dir/ffmpeg.log" 2>&1 &
    SOURCE_PID=$!
    PIDS+=("$SOURCE_PID")
    URL="http://127.0.0.1:$port/live.webm"
    wait_http_200 "$URL" icecast
}

run_one() {
    local server=$1 n=$2 mode=$3 port pacing=()
    [[ $mode == paced ]] && pacing=(--max-pending "$PACED_PENDING" --window-after-connects)
    wait_quiet
    port=$(free_port)
    echo
    echo "=== $server, $n clients, $mode connects, $DURATION s (port $port) ==="
    "start_$server" "$port" "$n" "$mode"
    # The idle baseline: a server's memory grows while its window of media fills (muxcast
    # keeps a few GOPs); wait until RSS has held still for 3 s (at most SETTLE_MAX s).
    local last=-1 still=0 r
    for _ in $(seq "$SETTLE_MAX"); do
        sleep 1
        r=$(rss_kib "$SERVER_PID")
        if ((last > 0 && r - last < last / 400 && last - r < last / 400)); then
            still=$((still + 1))
            ((still >= 3)) && break
        else
            still=0
        fi
        last=$r
    done
    local busy
    busy=$(machine_busy)
    if ((busy > 10)); then
        echo "WARNING: the machine is already ${busy} % busy before the clients connect:" >&2
        top -b -n 1 -o %CPU | sed -n '7,11p' >&2
    fi
    local tag="$server-$n-$mode"
    local base_rss cpu0 src0 rss_file="$WORK/rss-$tag"
    base_rss=$(rss_kib "$SERVER_PID")
    : >"$rss_file"
    sample_rss "$SERVER_PID" "$rss_file" &
    local sampler=$!
    PIDS+=("$sampler")
    cpu0=$(cpu_seconds "$SERVER_PID")
    src0=$([[ -n $SOURCE_PID ]] && cpu_seconds "$SOURCE_PID" || echo 0)
    local procs=${LOADGEN_PROCS:-1} need=$(((n + FD_LIMIT - 201) / (FD_LIMIT - 200)))
    ((need > procs)) && procs=$need
    local t0 t1 stat0 stat1
    stat0=$(head -n 1 /proc/stat)
    t0=$(date +%s.%N)
    "${NICE[@]}" "$LOADGEN" --url "$URL" --clients "$n" --duration "$DURATION" --warmup "$WARMUP" \
        --rate-bps "$RATE_BPS" --threads "$LOADGEN_THREADS" --procs "$procs" "${pacing[@]}" | tee "$WORK/loadgen-$tag.out"
    t1=$(date +%s.%N)
    stat1=$(head -n 1 /proc/stat)
    # Whole machine during the run, in cores (of $(nproc)): everything not idle, niced included.
    local cores_busy
    cores_busy=$(awk -v a="$stat0" -v b="$stat1" -v ncpu="$(nproc)" 'BEGIN {
        n = split(a, x); split(b, y); t = 0
        for (i = 2; i <= n; i++) t += y[i] - x[i]
        idle = (y[5] - x[5]) + (y[6] - x[6])
        printf "%.2f", (t > 0 ? ncpu * (t - idle) / t : 0)
    }')
    local cpu1 src1
    cpu1=$(cpu_seconds "$SERVER_PID")
    src1=$([[ -n $SOURCE_PID ]] && cpu_seconds "$SOURCE_PID" || echo 0)
    stop "$sampler"
    local status=""
    if [[ $server == muxcast ]]; then
        status=$(curl -s --max-time 2 "http://127.0.0.1:$port/status.json" || true)
    fi
    stop "$SERVER_PID"
    [[ -n $SOURCE_PID ]] && stop "$SOURCE_PID"

    local j peak gops=""
    j=$(tail -n 1 "$WORK/loadgen-$tag.out")
    peak=$(sort -n "$rss_file" | tail -n 1)
    peak=${peak:-0}
    if [[ -n $status ]]; then
        gops=$(jq -r '[.streams[]?.gops_skipped] | add // empty' <<<"$status" 2>/dev/null || true)
    fi
    # Columns: 1 server, 2 clients, 3 keeping up, 4 connected, 5 share with a first byte
    # within 1 s, 6-8 TTFB median/p95/max, 9 GB delivered, 10 server CPU-s, 11 source CPU-s,
    # 12 wall s, 13 idle RSS KiB, 14 peak RSS KiB, 15 GOPs skipped, 16 loadgen CPU-s,
    # 17-18 client rate median/min, 19 machine busy % before, 20 connect mode,
    # 21 last first byte s, 22 clients served, 23 start of the keep-up window s,
    # 24 cores busy (whole machine) during the run
    local row
    row=$(jq -r --arg s "$server" --arg cpu "$(awk -v a="$cpu0" -v b="$cpu1" 'BEGIN { print b - a }')" \
        --arg src "$(awk -v a="$src0" -v b="$src1" 'BEGIN { print b - a }')" \
        --arg wall "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" \
        --arg base "$base_rss" --arg peak "$peak" --arg gops "${gops:--}" \
        --arg busy "$busy" --arg mode "$mode" --arg cores "$cores_busy" \
        '[$s, .clients, .keeping_up, .connected, .first_byte_within_1s,
          .ttfb_s.median, .ttfb_s.p95, .ttfb_s.max, .bytes / 1e9, $cpu, $src, $wall,
          $base, $peak, $gops, .loadgen_cpu_s, .client_rate_bps.median, .client_rate_bps.min,
          $busy, $mode, .last_first_byte_s, .served, .window_start_s, $cores]
         | map(if . == null then "-" else tostring end) | @tsv' <<<"$j")
    echo "$row" >>"$RESULTS"
    awk -F'\t' '
    function t(x) { return x == "-" ? "never" : sprintf("%.0f ms", x * 1000) }
    {
        gb = $9; cpu = $10
        printf "--> %s, %d clients, %s connects: %s keeping up over [%.1f, %d] s; first byte within 1 s: %.1f %%\n",
            $1, $2, $20, $3, $23, $12, $5 * 100
        printf "    TTFB median %s, p95 %s, max %s; %s clients served, the last %s after the start\n",
            t($6), t($7), t($8), $22, t($21)
        printf "    delivered %.2f GB; server CPU %.1f s in %.1f s = %.2f CPU-s/GB (%.0f %% of a core)%s\n",
            gb, cpu, $12, (gb > 0 ? cpu / gb : 0), 100 * cpu / $12,
            ($11 > 0 ? sprintf("; ffmpeg source %.1f CPU-s, not counted", $11) : "")
        printf "    server RSS: idle %.1f MiB, peak %.1f MiB, (peak - idle) / clients = %.1f KiB%s\n",
            $13 / 1024, $14 / 1024, ($14 - $13) / $2, ($15 != "-" ? "; GOPs skipped " $15 : "")
        printf "    loadgen CPU %s s; whole machine during the run: %s cores busy; before it: %s %%\n", $16, $24, $19
    }' <<<"$row"
}

for n in $CLIENTS; do
    for mode in $CONNECT; do
        for server in $SERVERS; do
            run_one "$server" "$n" "$mode"
        done
    done
done

# ---------------------------------------------------------------------------------------
echo
echo "=== summary ($(date -u +%Y-%m-%d), $(nproc) cores, $DURATION s per run, $RATE_MBPS Mbit/s stream) ==="
printf '%-8s %7s %-6s %11s %7s %10s %10s %10s %8s %8s %9s %10s %11s %8s %6s %8s\n' \
    server clients conn "keeping up" window "<1 s TTFB" "TTFB p50" "TTFB max" "GB" "CPU-s" "CPU-s/GB" "peak RSS" "KiB/client" "lg CPU-s" "cores" "bg busy"
awk -F'\t' '
    function t(x) { return x == "-" ? "never" : sprintf("%.0fms", x * 1000) }
    {
        printf "%-8s %7d %-6s %11s %6.1fs %9.1f%% %10s %10s %8.2f %8.1f %9.2f %7.1fMiB %11.1f %8.1f %6.2f %7s%%\n",
            $1, $2, $20, $3 "/" $2, $23, $5 * 100, t($6), t($8), $9, $10,
            ($9 > 0 ? $10 / $9 : 0), $14 / 1024, ($14 - $13) / $2, $16, $24, $19
    }' "$RESULTS"
if [[ " $SERVERS " == *" muxcast "* && " $SERVERS " == *" icecast "* ]]; then
    echo
    echo "ratios muxcast / icecast:"
    awk -F'\t' '
        {
            k = $2 SUBSEP $20
            cpugb[$1, k] = ($9 > 0 ? $10 / $9 : 0); keep[$1, k] = $3 "/" $2; ks[k] = 1
        }
        END {
            for (k in ks) if (cpugb["icecast", k] > 0 && (("muxcast", k) in cpugb)) {
                split(k, p, SUBSEP)
                printf "  %5d clients, %-5s connects: CPU-s per delivered GB %.2f (muxcast %.2f, icecast %.2f); keeping up %s vs %s\n",
                    p[1], p[2], cpugb["muxcast", k] / cpugb["icecast", k], cpugb["muxcast", k],
                    cpugb["icecast", k], keep["muxcast", k], keep["icecast", k]
            }
        }' "$RESULTS" | sort -n -k1
fi
