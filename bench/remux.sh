#!/usr/bin/env bash
# Remux throughput: a long Matroska file read unpaced and turned into CMAF (HLS/DASH),
# muxcast against `ffmpeg -c copy -f hls -hls_segment_type fmp4` on the same file in the
# same script run. Prints, per run and as medians, MB/s of input, wall time, CPU time
# and peak RSS, and the muxcast/ffmpeg throughput ratio.
#
# Needs (installs nothing itself):
#     apt-get install -y ffmpeg curl jq time
#
# Usage (from anywhere):
#     bench/remux.sh
#     RUNS=9 INPUTS=hd bench/remux.sh
#
# Environment:
#     INPUTS           which inputs, space separated              [small hd]
#                      small: testdata/h264_aac.mkv (320x240 H.264 + AAC, 212 kbit/s,
#                             ~1 KB frames) looped SMALL_LOOPS times with -c copy
#                      hd:    1920x1080 30 fps H.264 (libx264 ultrafast, HD_RATE) + AAC
#                             128 kbit/s, HD_SECONDS encoded once, looped HD_LOOPS times
#     SMALL_LOOPS      copies of testdata/h264_aac.mkv (10 s each)  [400: 67 min, 106 MB]
#     HD_SECONDS       length of the encoded HD clip, seconds      [20]
#     HD_LOOPS         copies of the HD clip                       [10: 200 s, 204 MB]
#     HD_RATE          HD video bitrate                            [8M]
#     RUNS             timed runs of each variant per input        [7]
#     VARIANTS         what to time, space separated               [muxcast nohls ffmpeg]
#                      muxcast: `muxcast --listen 127.0.0.1:PORT - < FILE`, defaults:
#                               live MKV clusters and CMAF (HLS + DASH) parts and segments
#                      nohls:   the same with --no-hls (live MKV only), for context
#                      ffmpeg:  `ffmpeg -i FILE -c copy -f hls -hls_segment_type fmp4`
#                               into a tmpfs directory
#     BENCH_NICE       nice value of every timed process      [-10 as root, else 0]
#     RUN_TIMEOUT      seconds after which a single run is killed  [300]
#     QUIET_WAIT       before each run, seconds to wait for other (un-niced) load on
#                      the machine to drop to <= 10 %              [60]
#     WORKDIR_BASE     where inputs and ffmpeg's output go     [/dev/shm if present, a tmpfs]
#     CARGO_TARGET_DIR where cargo builds                     [<repo>/target]
#     KEEP_LOGS=1      keep the temporary directory (inputs, logs)
#
# Both programs read the same file from tmpfs (page cache); muxcast gets it on stdin by
# redirection (no pipe), ffmpeg opens it. ffmpeg writes its segments to tmpfs. muxcast
# exits 0 by itself when its only input (stdin) has ended and everything is published;
# its wall time therefore includes the event loop taking in every cluster and CMAF part.
# The runs of the variants are interleaved (the order rotates every run), so that slow
# phases of a shared machine hit every variant alike.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
INPUTS=${INPUTS:-small hd}
SMALL_LOOPS=${SMALL_LOOPS:-400}
HD_SECONDS=${HD_SECONDS:-20}
HD_LOOPS=${HD_LOOPS:-10}
HD_RATE=${HD_RATE:-8M}
RUNS=${RUNS:-7}
VARIANTS=${VARIANTS:-muxcast nohls ffmpeg}
RUN_TIMEOUT=${RUN_TIMEOUT:-300}
QUIET_WAIT=${QUIET_WAIT:-60}
if [[ -z ${WORKDIR_BASE:-} ]]; then
    WORKDIR_BASE=/tmp
    [[ -d /dev/shm && -w /dev/shm ]] && WORKDIR_BASE=/dev/shm
fi
if [[ -z ${BENCH_NICE:-} ]]; then
    BENCH_NICE=0
    ((EUID == 0)) && BENCH_NICE=-10
fi
NICE=(nice -n "$BENCH_NICE")

for tool in ffmpeg ffprobe curl jq /usr/bin/time; do
    command -v "$tool" >/dev/null || {
        echo "remux.sh: $tool not found (apt-get install -y ffmpeg curl jq time)" >&2
        exit 1
    }
done

WORK=$(mktemp -d "$WORKDIR_BASE/muxcast-remux.XXXXXX")
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# ---------------------------------------------------------------------------------------
echo "building muxcast (release) ..."
(cd "$ROOT" && CARGO_TARGET_DIR="$TARGET" cargo build --release --quiet --bin muxcast)
MUXCAST="$TARGET/release/muxcast"
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || COMMIT+=" + uncommitted changes to src/"

make_input() {
    local name=$1 out="$WORK/$1.mkv"
    case $name in
    small)
        ffmpeg -hide_banner -loglevel error -nostdin -y -stream_loop $((SMALL_LOOPS - 1)) \
            -i "$ROOT/testdata/h264_aac.mkv" -c copy -f matroska "$out"
        ;;
    hd)
        # Noise keeps the encoder at its bitrate; a keyframe every 2 s, so that the clip
        # is a whole number of GOPs and looping keeps the cadence.
        ffmpeg -hide_banner -loglevel error -nostdin -y \
            -f lavfi -i "testsrc2=size=1920x1080:rate=30,noise=alls=20:allf=t" \
            -f lavfi -i "sine=frequency=440:sample_rate=48000" -t "$HD_SECONDS" \
            -c:v libx264 -preset ultrafast -tune zerolatency -pix_fmt yuv420p \
            -b:v "$HD_RATE" -maxrate "$HD_RATE" -bufsize 4M -g 60 -keyint_min 60 -sc_threshold 0 \
            -c:a aac -b:a 128k -f matroska "$WORK/hd-clip.mkv"
        ffmpeg -hide_banner -loglevel error -nostdin -y -stream_loop $((HD_LOOPS - 1)) \
            -i "$WORK/hd-clip.mkv" -c copy -f matroska "$out"
        rm -f "$WORK/hd-clip.mkv"
        ;;
    *)
        echo "remux.sh: unknown input $name" >&2
        exit 1
        ;;
    esac
}

# Frames per track kind, for the "bytes per frame" column.
count_frames() {
    ffprobe -v error -count_packets -show_entries stream=codec_type,nb_read_packets -of csv=p=0 "$1" |
        awk -F, '{ n[$1] += $2 } END { printf "%d video + %d audio frames", n["video"], n["audio"] }'
}

# One run with --keep-running, checked over HTTP: the stream reached "ended", every
# rendition's playlist has EXT-X-ENDLIST and the expected last segment, and the
# segments are served.
verify_muxcast() {
    local file=$1 tag=$2 port log="$WORK/verify-$2.log" pid st=""
    port=$(free_port)
    "$MUXCAST" --listen "127.0.0.1:$port" --keep-running - <"$file" >"$log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    for _ in $(seq $((RUN_TIMEOUT * 5))); do
        st=$(curl -s --max-time 2 "http://127.0.0.1:$port/status.json" | jq -r '.streams[0].state' 2>/dev/null || true)
        [[ $st == ended ]] && break
        sleep 0.2
    done
    local ok=1 master r pl last nseg code
    [[ $st == ended ]] || { echo "  VERIFY: the stream did not end (state '$st')"; ok=0; }
    master=$(curl -s --max-time 5 "http://127.0.0.1:$port/live/index.m3u8")
    local renditions
    renditions=$(grep -o '[av][0-9]*/index.m3u8' <<<"$master" | sort -u | cut -d/ -f1 | tr '\n' ' ')
    [[ -n $renditions ]] || { echo "  VERIFY: no renditions in the multivariant playlist"; ok=0; }
    for r in $renditions; do
        pl=$(curl -s --max-time 5 "http://127.0.0.1:$port/live/$r/index.m3u8")
        last=$(grep -o '^seg[0-9]*' <<<"$pl" | tail -n 1 | tr -dc 0-9)
        nseg=$(grep -c '^#EXTINF' <<<"$pl" || true)
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$port/live/$r/seg$last.m4s")
        if grep -q '^#EXT-X-ENDLIST' <<<"$pl" && [[ $code == 200 ]]; then
            echo "  muxcast CMAF check: rendition $r: EXT-X-ENDLIST, last segment seg$last.m4s (200), $nseg in the window"
        else
            echo "  VERIFY: rendition $r: playlist without ENDLIST or seg$last.m4s -> $code"
            ok=0
        fi
    done
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$port/live/manifest.mpd")
    [[ $code == 200 ]] || { echo "  VERIFY: manifest.mpd -> $code"; ok=0; }
    kill "$pid" 2>/dev/null || true
    wait_fg "$pid" 2>/dev/null || true
    if grep -qE '^\[(WARN|ERROR)' "$log"; then
        echo "  muxcast log warnings/errors:"
        grep -E '^\[(WARN|ERROR)' "$log" | head -n 5 | sed 's/^/    /'
    fi
    ((ok)) || { echo "remux.sh: muxcast did not produce CMAF for $tag" >&2; exit 1; }
}

RESULTS="$WORK/results.tsv"
: >"$RESULTS"

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

# Times one run of a variant; appends "input variant run wall_s user_s sys_s maxrss_kib rc".
time_one() {
    local input=$1 variant=$2 run=$3 file="$WORK/$1.mkv" tf="$WORK/time" out log="$WORK/run.log"
    local t0 t1 rc=0 port
    rm -rf "$WORK/hls"
    mkdir -p "$WORK/hls"
    case $variant in
    muxcast | nohls)
        port=$(free_port)
        local extra=()
        [[ $variant == nohls ]] && extra=(--no-hls)
        t0=$(date +%s%N)
        "${NICE[@]}" timeout -k 5 "$RUN_TIMEOUT" /usr/bin/time -f '%U %S %M' -o "$tf" \
            "$MUXCAST" --listen "127.0.0.1:$port" "${extra[@]}" - <"$file" >"$log" 2>&1 &
        wait_fg $! || rc=$?
        t1=$(date +%s%N)
        if ((rc == 0)) && ! grep -q 'input stdin ended' "$log"; then rc=99; fi
        ;;
    ffmpeg)
        t0=$(date +%s%N)
        "${NICE[@]}" timeout -k 5 "$RUN_TIMEOUT" /usr/bin/time -f '%U %S %M' -o "$tf" \
            ffmpeg -nostdin -loglevel error -i "$file" -c copy -f hls -hls_segment_type fmp4 \
            -hls_time 2 "$WORK/hls/index.m3u8" >"$log" 2>&1 &
        wait_fg $! || rc=$?
        t1=$(date +%s%N)
        if ((rc == 0)) && ! grep -q '^#EXT-X-ENDLIST' "$WORK/hls/index.m3u8"; then rc=98; fi
        FFMPEG_OUT="$(find "$WORK/hls" -name '*.m4s' | wc -l) segments + $(find "$WORK/hls" -name '*.mp4' | wc -l) init, $(du -sm "$WORK/hls" | cut -f1) MB"
        ;;
    esac
    if ((rc != 0)); then
        echo "  $variant run $run FAILED (rc $rc):"
        tail -n 5 "$log" | sed 's/^/    /'
    fi
    local wall user sys rss
    wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.4f", (b - a) / 1e9 }')
    read -r user sys rss < <(tail -n 1 "$tf")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$input" "$variant" "$run" "$wall" "$user" "$sys" "$rss" "$rc" >>"$RESULTS"
    printf '  run %d %-8s wall %7.3f s  user %5.2f s  sys %5.2f s  peak RSS %7.1f MiB  rc %d\n' \
        "$run" "$variant" "$wall" "$user" "$sys" "$(awk -v k="$rss" 'BEGIN { print k / 1024 }')" "$rc"
}

echo
echo "muxcast:  $COMMIT ($MUXCAST)"
echo "ffmpeg:   $(ffmpeg -version | head -n 1)"
echo "machine:  $(nproc) cores, $(awk '/^model name/ { sub(/^[^:]*: /, ""); print; exit }' /proc/cpuinfo), kernel $(uname -r)"
echo "runs:     inputs [$INPUTS] × variants [$VARIANTS] × $RUNS runs, nice $BENCH_NICE, work dir $WORK"

declare -A BYTES DESC
for input in $INPUTS; do
    echo
    echo "=== input $input ==="
    echo "generating ..."
    make_input "$input"
    file="$WORK/$input.mkv"
    BYTES[$input]=$(stat -c %s "$file")
    dur=$(ffprobe -v error -show_entries format=duration -of csv=p=0 "$file")
    frames=$(count_frames "$file")
    DESC[$input]=$(awk -v b="${BYTES[$input]}" -v d="$dur" -v f="$frames" 'BEGIN {
        printf "%.1f MB, %.0f s, %.2f Mbit/s, %s", b / 1e6, d, b * 8 / d / 1e6, f }')
    echo "$file: ${DESC[$input]}"
    verify_muxcast "$file" "$input"
    read -ra order <<<"$VARIANTS"
    for run in $(seq "$RUNS"); do
        echo "run $run/$RUNS (machine busy before, un-niced: $(wait_quiet))"
        # Rotate the order each run.
        local_order=("${order[@]:$(((run - 1) % ${#order[@]}))}" "${order[@]:0:$(((run - 1) % ${#order[@]}))}")
        for variant in "${local_order[@]}"; do
            time_one "$input" "$variant" "$run"
        done
    done
    if [[ " $VARIANTS " == *" ffmpeg "* ]]; then
        echo "  ffmpeg wrote $FFMPEG_OUT (its last run)"
    fi
    rm -rf "$WORK/hls"
    [[ ${KEEP_LOGS:-0} == 1 ]] || rm -f "$file"
done

# ---------------------------------------------------------------------------------------
echo
echo "=== summary ($(date -u +%Y-%m-%d), $(nproc) cores, muxcast $COMMIT, medians of $RUNS runs) ==="
for input in $INPUTS; do
    echo
    echo "input $input: ${DESC[$input]}"
    printf '%-8s %9s %10s %8s %8s %8s %10s %5s   %s\n' variant "wall s" "MB/s in" "user s" "sys s" "CPU s" "peak RSS" fails "MB/s per run"
    for variant in $VARIANTS; do
        rows=$(awk -F'\t' -v i="$input" -v v="$variant" '$1 == i && $2 == v' "$RESULTS")
        [[ -n $rows ]] || continue
        wall=$(cut -f4 <<<"$rows" | median)
        user=$(cut -f5 <<<"$rows" | median)
        sys=$(cut -f6 <<<"$rows" | median)
        cpu=$(awk -F'\t' '{ print $5 + $6 }' <<<"$rows" | median)
        rss=$(cut -f7 <<<"$rows" | median)
        fails=$(awk -F'\t' '$8 != 0' <<<"$rows" | wc -l)
        per=$(awk -F'\t' -v b="${BYTES[$input]}" '{ printf "%s%.0f", (NR > 1 ? " " : ""), b / $4 / 1e6 }' <<<"$rows")
        printf '%-8s %9.3f %10.1f %8.2f %8.2f %8.2f %7.1fMiB %5d   %s\n' "$variant" "$wall" \
            "$(awk -v b="${BYTES[$input]}" -v w="$wall" 'BEGIN { print b / w / 1e6 }')" \
            "$user" "$sys" "$cpu" "$(awk -v k="$rss" 'BEGIN { print k / 1024 }')" "$fails" "$per"
    done
    if [[ " $VARIANTS " == *" muxcast "* && " $VARIANTS " == *" ffmpeg "* ]]; then
        awk -F'\t' -v i="$input" '
            $1 == i && $2 == "muxcast" { m[$3] = $4 }
            $1 == i && $2 == "ffmpeg" { f[$3] = $4 }
            END { for (r in m) if (r in f) print f[r] / m[r] }' "$RESULTS" | sort -g >"$WORK/ratios"
        mw=$(awk -F'\t' -v i="$input" '$1 == i && $2 == "muxcast" { print $4 }' "$RESULTS" | median)
        fw=$(awk -F'\t' -v i="$input" '$1 == i && $2 == "ffmpeg" { print $4 }' "$RESULTS" | median)
        mc=$(awk -F'\t' -v i="$input" '$1 == i && $2 == "muxcast" { print $5 + $6 }' "$RESULTS" | median)
        fc=$(awk -F'\t' -v i="$input" '$1 == i && $2 == "ffmpeg" { print $5 + $6 }' "$RESULTS" | median)
        printf 'throughput muxcast / ffmpeg: %.2fx (median walls); per-run ratios %s (median %.2fx); CPU-time ratio ffmpeg / muxcast %.2fx; target >= 2x\n' \
            "$(awk -v a="$fw" -v b="$mw" 'BEGIN { print a / b }')" \
            "$(awk '{ printf "%s%.2f", (NR > 1 ? " " : ""), $1 }' "$WORK/ratios")" \
            "$(median <"$WORK/ratios")" \
            "$(awk -v a="$fc" -v b="$mc" 'BEGIN { print (b > 0 ? a / b : 0) }')"
    fi
done
