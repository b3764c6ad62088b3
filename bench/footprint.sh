#!/usr/bin/env bash
# Idle footprint (issue 5): the memory of muxcast serving one ~4 Mbit/s stream with live
# MKV, HLS and DASH on (the defaults) and no viewers, once its windows are full.
#
#     bench/footprint.sh                      # defaults below, ~2 min
#     WINDOW=4 bench/footprint.sh             # a smaller HLS/DASH window
#
# Settings (environment):
#     MEDIA     the stream, looped         [bench/.cache/fanout-4mbps.webm, made once]
#     WARMUP    seconds before sampling    [45: the 10-segment window is 20 s]
#     SAMPLES   samples, 5 s apart         [6]
#     WINDOW    muxcast --window           [10]
#     ARGS      more muxcast options       []
#
# Prints, as medians of the samples: VmRSS and its parts (anonymous, file-backed, shared),
# and the bytes held in finished-segment memory files (memfd; see src/stream/segment_file.rs).
# Those pages are in RAM but not in RSS until a reader maps them in (muxcast maps each
# segment, but pages are only counted once touched; sendfile reads them from the file).
# RssAnon + RssFile + memfd bytes is what the process holds: that is the figure to compare.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MEDIA=${MEDIA:-"$ROOT/bench/.cache/fanout-4mbps.webm"}
WARMUP=${WARMUP:-45}
SAMPLES=${SAMPLES:-6}
WINDOW=${WINDOW:-10}
ARGS=${ARGS:-}
TARGET=${CARGO_TARGET_DIR:-"$ROOT/target"}

WORK=$(mktemp -d /tmp/muxcast-footprint.XXXXXX)
QUIET_WAIT=0
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
# shellcheck source=bench/media.sh
source "$ROOT/bench/media.sh"
make_4mbps_webm "$MEDIA"

echo "building muxcast (release) ..."
(cd "$ROOT" && CARGO_TARGET_DIR="$TARGET" cargo build --release --quiet --bin muxcast)
MUXCAST="$TARGET/release/muxcast"
RATE_MBPS=$(ffprobe -v error -show_entries format=bit_rate -of csv=p=0 "$MEDIA" |
    awk '{ printf "%.2f", $1 / 1e6 }')

PORT=$(free_port)
# shellcheck disable=SC2086
"$MUXCAST" --listen "127.0.0.1:$PORT" --loop --window "$WINDOW" $ARGS "$MEDIA" \
    >"$WORK/muxcast.log" 2>&1 &
PID=$!
PIDS+=("$PID")
echo "muxcast $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "(not a git checkout)") pid $PID: $MEDIA ($RATE_MBPS Mbit/s), --window $WINDOW $ARGS"
echo "warming up for $WARMUP s (no viewers) ..."
sleep "$WARMUP"
kill -0 "$PID" || { echo "muxcast died:"; cat "$WORK/muxcast.log"; exit 1; }

kib() { awk -v k="$1" '$1 == k":" { print $2 }' "/proc/$PID/status"; }
memfd_kib() {
    local total=0 f size
    for f in /proc/"$PID"/fd/*; do
        if [[ $(readlink "$f" 2>/dev/null) == /memfd:* ]]; then
            size=$(stat -L -c %s "$f" 2>/dev/null || echo 0)
            total=$((total + size))
        fi
    done
    echo $((total / 1024))
}
: >"$WORK/samples"
for ((i = 1; i <= SAMPLES; i++)); do
    printf '%s %s %s %s %s %s\n' "$(kib VmRSS)" "$(kib RssAnon)" "$(kib RssFile)" \
        "$(kib RssShmem)" "$(memfd_kib)" "$(ls /proc/"$PID"/fd | wc -l)" >>"$WORK/samples"
    ((i < SAMPLES)) && sleep 5
done
col() { awk -v c="$1" '{ print $c }' "$WORK/samples" | median; }
echo
echo "samples (KiB): VmRSS RssAnon RssFile RssShmem memfd fds"
cat "$WORK/samples"
echo
# RssShmem is the part of the memory files already mapped in: counted once, in memfd.
awk -v rss="$(col 1)" -v anon="$(col 2)" -v file="$(col 3)" -v shm="$(col 4)" \
    -v memfd="$(col 5)" -v fds="$(col 6)" 'BEGIN {
    m = 1024
    printf "median: VmRSS %.1f MiB (anon %.1f, file %.1f, shmem %.1f); memfd %.1f MiB; ", \
        rss / m, anon / m, file / m, shm / m, memfd / m
    printf "held (anon + file + memfd) %.1f MiB; %d fds\n", (anon + file + memfd) / m, fds
}'
