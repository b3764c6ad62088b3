#!/usr/bin/env bash
# Interop suite: muxcast against ffmpeg, ffprobe, curl, a raw socket, hls.js and dash.js in
# headless Chromium, GStreamer, and GStreamer's RTSP server as a camera.
#
#   tests/interop/run.sh            # every check
#   tests/interop/run.sh a c        # some of them (letters: see checks.py; k camera faults,
#                                   # o cameras on demand, p access control from a config file)
#
# Needs: cargo, python3 (stdlib only), ffmpeg/ffprobe, curl, coreutils `timeout`; for checks
# h, i, j, n and p also node + npm (`npm ci` in tests/interop/browser), Debian's chromium at
# /usr/bin/chromium, gst-launch-1.0 with plugins base/good/bad and libav; for checks j, k, o and q
# (RTSP cameras: tests/interop/rtsp_camera.py) Debian's python3-gi,
# gir1.2-gst-rtsp-server-1.0, gstreamer1.0-rtsp and gstreamer1.0-plugins-ugly (x264enc),
# found through /usr/bin/python3 when `python3` is another one (.ci/run installs all of
# them). Without them those checks fail with a line saying what is missing.
# Prints one PASS/FAIL line per check; exits non-zero if any check failed.
# KEEP_WORKDIR=1 keeps the captured files and logs (they are kept on failure anyway).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

for tool in cargo python3 ffmpeg ffprobe curl timeout; do
    command -v "$tool" >/dev/null || { echo "FAIL interop.setup: $tool not found"; exit 1; }
done

echo "interop: building the release binary"
timeout 1800 cargo build --release --quiet
bin="${CARGO_TARGET_DIR:-$root/target}/release/muxcast"
[[ -x "$bin" ]] || { echo "FAIL interop.setup: no binary at $bin"; exit 1; }

workdir="$(mktemp -d "${TMPDIR:-/tmp}/muxcast-interop.XXXXXX")"
suite_pid=""
cleanup() {
    local rc=$?
    # The Python suite kills what it started; this covers the suite itself being stuck.
    if [[ -n "$suite_pid" ]] && kill -0 "$suite_pid" 2>/dev/null; then
        kill -TERM "$suite_pid" 2>/dev/null || true
        sleep 4
        kill -KILL "$suite_pid" 2>/dev/null || true
    fi
    if [[ $rc -eq 0 && "${KEEP_WORKDIR:-0}" != 1 ]]; then
        rm -rf "$workdir"
    else
        echo "interop: captures and logs kept in $workdir"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

export PYTHONDONTWRITEBYTECODE=1
start=$SECONDS
# The whole suite is bounded: `timeout` sends SIGTERM (the suite then kills its processes)
# and SIGKILL 15 s later.
timeout --kill-after=15 720 python3 -u "$here/checks.py" --bin "$bin" --workdir "$workdir" "$@" &
suite_pid=$!
rc=0
wait "$suite_pid" || rc=$?
suite_pid=""
echo "interop: finished in $((SECONDS - start))s (exit $rc)"
exit "$rc"
