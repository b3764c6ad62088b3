#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 60) and prints execs and time per
# target. Seeds come from testdata/ on the first run; the corpus grows in fuzz/corpus/.
# Crashes land in fuzz/artifacts/TARGET/: copy each into fuzz/regressions/TARGET/ with a
# fix and it is replayed by `cargo test` (tests/fuzz_replay.rs).
# Needs: cargo install cargo-fuzz --locked; stable Rust builds it with RUSTC_BOOTSTRAP=1.
set -euo pipefail
secs=${1:-60}
cd "$(dirname "$0")"
export RUSTC_BOOTSTRAP=1
targets=(mkv_demux mkv_demux_chunked http_request http_body codec_config mux_round_trip config)
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
done
for f in ../testdata/*.mkv ../testdata/*.mka ../testdata/*.webm; do
  for t in mkv_demux mkv_demux_chunked; do
    # Seeds are the first 8 KiB of each file: header, tracks and a few blocks.
    [ -e "corpus/$t/seed-$(basename "$f")" ] || head -c 8192 "$f" > "corpus/$t/seed-$(basename "$f")"
  done
done
[ -e corpus/http_request/seed-get ] || printf 'GET /live/live.mkv?_HLS_msn=3&_HLS_part=1 HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n\r\n' > corpus/http_request/seed-get
[ -e corpus/http_request/seed-put ] || printf 'PUT /cam/ingest HTTP/1.1\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n' > corpus/http_request/seed-put
# Muxers: setup byte, then records [track|0x80 keyframe, pts delta i16 LE, len, payload].
[ -e corpus/mux_round_trip/seed-frames ] || printf '\x00\x80\x00\x00\x04abcd\x01\x00\x00\x03xyz\x00\x28\x00\x02ef\x80\x28\x00\x02gh\xff\x00\x00\x00\x80\x28\x00\x01i' > corpus/mux_round_trip/seed-frames
# The configuration loader: the example file, which documents every key.
[ -e corpus/config/seed-example ] || cp ../muxcast.example.toml corpus/config/seed-example
[ -e corpus/http_body/seed-chunked ] || printf '\x00\x35\x3b\x78\x0d\x0a\x68\x65\x6c\x6c\x6f\x0d\x0a\x30\x0d\x0a\x0d\x0a' > corpus/http_body/seed-chunked
cargo fuzz build --release
for t in "${targets[@]}"; do
  log=$(mktemp)
  start=$(date +%s)
  status=0
  cargo fuzz run --release "$t" "corpus/$t" -- -max_total_time="$secs" -timeout=5 -rss_limit_mb=2048 -max_len=262144 >"$log" 2>&1 || status=$?
  end=$(date +%s)
  execs=$(grep -oE '#[0-9]+' "$log" | tail -n 1 | tr -d '#')
  echo "fuzz $t: ${execs:-0} execs in $((end - start)) s, exit $status"
  if [ "$status" -ne 0 ]; then
    tail -n 40 "$log"
    rm -f "$log"
    exit "$status"
  fi
  rm -f "$log"
done
