#!/usr/bin/env bash
# Builds a statically linked x86_64 muxcast (glibc with crt-static: no shared libraries
# at run time), strips it, and prints its size, `file` and `ldd` lines; the last line is
# the binary's path.
#
#   scripts/build-static.sh
#
# Small boxes (aarch64, armv7) are built the same way with musl, which this machine cannot
# do (no cross toolchains), e.g. on a machine with `rustup target add
# aarch64-unknown-linux-musl` and a musl cross linker:
#   RUSTFLAGS='-C target-feature=+crt-static' cargo build --release \
#       --target aarch64-unknown-linux-musl
#   RUSTFLAGS='-C target-feature=+crt-static' cargo build --release \
#       --target armv7-unknown-linux-musleabihf
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
target=x86_64-unknown-linux-gnu
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
    cargo build --profile dist --locked --target "$target" >&2
bin="$CARGO_TARGET_DIR/$target/dist/muxcast"
out="$CARGO_TARGET_DIR/muxcast-static"
cp "$bin" "$out"
strip "$out"
echo "size: $(stat -c %s "$out") bytes ($(( $(stat -c %s "$out") / 1024 )) KiB), stripped" >&2
file "$out" >&2
ldd "$out" >&2 || true
echo "$out"
