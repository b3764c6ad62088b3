#!/usr/bin/env bash
# Abuse and soak tests (issue 6, "hostile world") against a real muxcast on loopback:
#
#   churn  10 000 connect/disconnect cycles of live-MKV viewers, half of them closing
#          uncleanly (RST, mid-header, mid-body); RSS and open descriptors of the server
#          at a baseline, right after and after a settle; /status.json must show zero
#          clients at the end.
#   abuse  1000 slow-loris connections and 1000 stalled readers while 100 good viewers
#          watch for 20 s; every good viewer's frames are checked against the source file;
#          the slow-loris connections must be closed by --header-timeout, the stalled
#          readers by --client-timeout.
#   soak   VIEWERS (500) clients for DURATION (1800 s) with churn, against muxcast with its
#          defaults (HLS/DASH on, 4 MiB --client-queue): live-MKV viewers that watch for
#          5–60 s, leave (cleanly, by RST, with unread data) and reconnect at once, every
#          session's frames checked against the source; 10 % LL-HLS clients (blocking
#          reloads, parts, segments) and 5 DASH clients (MPD, segments). Clients start once
#          the GOP window is full. Every 10 s the server's VmRSS, RssAnon, descriptors and
#          /status.json; at the end the RSS and descriptor slopes after a 2-minute warm-up,
#          the clients' totals and errors, the server log's WARN/ERROR lines. Pass: RSS
#          slope under 1 % of the RSS per 10 minutes, descriptor slope under 1/min, no ERROR
#          line, no client error, 0 clients at the end.
#
# Each scenario gets its own muxcast (`testdata/h264_aac.mkv --loop`); the client side is
# examples/stress.rs (`cargo run --release --example stress -- --help`).
#
# Usage (from anywhere):
#     bench/stress.sh                   # churn and abuse, ~3 minutes
#     SCENARIOS=churn bench/stress.sh
#     SCENARIOS=soak bench/stress.sh    # ~35 minutes
#
# Environment:
#     SCENARIOS        which scenarios, space separated          [churn abuse]
#     CYCLES           churn cycles                              [10000]
#     CHURN_THREADS    churn client threads                      [8]
#     CHURN_QUEUE      muxcast --client-queue for churn, bytes: the GOP window must fill
#                      before the baseline, and this 210 kbit/s file takes ~160 s to fill
#                      the default 4 MiB                          [262144]
#     GOOD, LORIS, STALLED   abuse connection counts             [100 1000 1000]
#     DURATION         seconds the good viewers read (abuse)     [20]
#                      seconds the soak clients run (soak)       [1800]
#     VIEWERS          soak: concurrent clients, all kinds       [500]
#     HLS_SHARE        soak: share of them that are HLS clients  [0.10]
#     DASH             soak: DASH clients among them             [5]
#     SOAK_WARMUP      soak: seconds left out of the slopes      [120]
#     SOAK_CSV         soak: the samples as CSV       [/tmp/muxcast-soak-DATE.csv]
#     HEADER_TIMEOUT   muxcast --header-timeout for abuse        [5]
#     CLIENT_TIMEOUT   muxcast --client-timeout for abuse        [30]
#     BENCH_NICE       nice value of muxcast and the client      [10]
#     MUXCAST_ARGS     extra muxcast options                     []
#     CARGO_TARGET_DIR where cargo builds                        [<repo>/target]
#     KEEP_LOGS=1      keep the temporary directory with server logs
#
# Every process this script starts is killed by PID when it exits. Everything runs on
# 127.0.0.1. Exit status: 0 when every scenario passed, 1 otherwise.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SCENARIOS=${SCENARIOS:-"churn abuse"}
CYCLES=${CYCLES:-10000}
CHURN_THREADS=${CHURN_THREADS:-8}
CHURN_QUEUE=${CHURN_QUEUE:-262144}
GOOD=${GOOD:-100}
LORIS=${LORIS:-1000}
STALLED=${STALLED:-1000}
DURATION_USER=${DURATION:-}
DURATION=${DURATION:-20}
VIEWERS=${VIEWERS:-500}
HLS_SHARE=${HLS_SHARE:-0.10}
DASH=${DASH:-5}
SOAK_WARMUP=${SOAK_WARMUP:-120}
HEADER_TIMEOUT=${HEADER_TIMEOUT:-5}
CLIENT_TIMEOUT=${CLIENT_TIMEOUT:-30}
BENCH_NICE=${BENCH_NICE:-10}
MUXCAST_ARGS=${MUXCAST_ARGS:-}
TARGET=${CARGO_TARGET_DIR:-"$ROOT/target"}
MEDIA="$ROOT/testdata/h264_aac.mkv"
NICE=(nice -n "$BENCH_NICE")

command -v ss >/dev/null || { echo "stress.sh: ss not found (iproute2)" >&2; exit 1; }

# One descriptor per connection, in the server and in the client.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
need=$((GOOD + LORIS + STALLED + 200))
((VIEWERS + 200 > need)) && need=$((VIEWERS + 200))
if (($(ulimit -n) < need)); then
    echo "stress.sh: ulimit -n is $(ulimit -n), the abuse scenario needs $need" >&2
    exit 1
fi

WORK=$(mktemp -d /tmp/muxcast-stress.XXXXXX)
KEPT_MESSAGE="logs kept in"
# Cleanup of PIDS and WORK on exit, stop, forget, free_port.
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

echo "== building (release) in $TARGET"
(cd "$ROOT" && CARGO_TARGET_DIR="$TARGET" nice cargo build --release --bin muxcast --example stress 2>&1 | tail -1)
MUXCAST="$TARGET/release/muxcast"
STRESS="$TARGET/release/examples/stress"

# Starts muxcast for scenario $1 with extra options; sets PORT, SERVER_PID and LOG.
start_server() {
    local name=$1
    shift
    PORT=$(free_port)
    LOG="$WORK/muxcast-$name.log"
    # shellcheck disable=SC2086
    RUST_LOG=${RUST_LOG:-warn} "${NICE[@]}" "$MUXCAST" "$MEDIA" --loop \
        --listen "127.0.0.1:$PORT" --max-clients 4096 --max-clients-per-ip 4096 "$@" $MUXCAST_ARGS \
        >"$LOG" 2>&1 &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    for _ in $(seq 100); do
        [[ -n $(ss -Htln "sport = :$PORT") ]] && break
        kill -0 "$SERVER_PID" 2>/dev/null || { echo "muxcast exited:"; cat "$LOG"; return 1; }
        sleep 0.1
    done
    echo "muxcast pid $SERVER_PID on 127.0.0.1:$PORT ($(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'), $*)"
}

failed=0
for scenario in $SCENARIOS; do
    case $scenario in
    churn)
        echo "== churn: $CYCLES cycles, $CHURN_THREADS threads"
        start_server churn --client-queue "$CHURN_QUEUE"
        "${NICE[@]}" timeout 240 "$STRESS" churn --addr "127.0.0.1:$PORT" --pid "$SERVER_PID" \
            --cycles "$CYCLES" --threads "$CHURN_THREADS" --time-limit 100 \
            | tee "$WORK/churn.out" || failed=1
        ;;
    abuse)
        echo "== abuse: $GOOD good viewers for ${DURATION}s, $LORIS slow-loris, $STALLED stalled readers"
        start_server abuse --header-timeout "$HEADER_TIMEOUT" --client-timeout "$CLIENT_TIMEOUT"
        "${NICE[@]}" timeout 240 "$STRESS" abuse --addr "127.0.0.1:$PORT" --pid "$SERVER_PID" \
            --source "$MEDIA" --good "$GOOD" --loris "$LORIS" --stalled "$STALLED" \
            --duration "$DURATION" --header-timeout "$HEADER_TIMEOUT" \
            --stalled-wait $((CLIENT_TIMEOUT + 15)) \
            | tee "$WORK/abuse.out" || failed=1
        ;;
    soak)
        soak_duration=${DURATION_USER:-1800}
        csv=${SOAK_CSV:-/tmp/muxcast-soak-$(date +%Y%m%d-%H%M%S).csv}
        echo "== soak: $VIEWERS clients for ${soak_duration}s (HLS share $HLS_SHARE, $DASH DASH)"
        start_server soak
        # In the background and in PIDS, so that the cleanup stops it too.
        "${NICE[@]}" timeout $((soak_duration + 600)) "$STRESS" soak --addr "127.0.0.1:$PORT" \
            --pid "$SERVER_PID" --source "$MEDIA" --server-log "$LOG" --csv "$csv" \
            --duration "$soak_duration" --viewers "$VIEWERS" --hls-share "$HLS_SHARE" \
            --dash "$DASH" --warmup "$SOAK_WARMUP" \
            > >(tee "$WORK/soak.out") 2>&1 &
        client_pid=$!
        PIDS+=("$client_pid")
        wait "$client_pid" || failed=1
        forget "$client_pid"
        ;;
    *)
        echo "stress.sh: unknown scenario $scenario" >&2
        exit 2
        ;;
    esac
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        echo "muxcast died during $scenario:"
        tail -20 "$LOG"
        failed=1
    elif [[ -s $LOG ]]; then
        echo "-- muxcast log, last 5 of $(wc -l <"$LOG") lines:"
        tail -5 "$LOG"
    fi
    stop "$SERVER_PID"
done
exit $failed
