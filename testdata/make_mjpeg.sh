#!/usr/bin/env bash
# Writes testdata/mjpeg.mkv: Motion JPEG (V_MJPEG), 320x240, 10 fps, 2 s (20 frames, ~160 KB),
# for the RTSP MJPEG tests (tests/rtsp.rs; the stand-in camera in tests/common/rtsp_server.rs
# sends it as RTP/JPEG, RFC 2435). make.sh runs it; it also runs alone:
#
#   bash testdata/make_mjpeg.sh
#
# RFC 2435 does not carry JPEG headers: the receiver rebuilds them from the RTP/JPEG header
# (type, size, quantization tables) in one fixed layout (the RFC's Appendix A/B: SOI, DQT 0,
# DQT 1, SOF0, the four Annex K Huffman tables, SOS, the scan, EOI). So that a test can ask
# for frames byte-identical to the source, every frame here is rewritten into exactly that
# layout: ffmpeg's JFIF APP0 goes, its one DQT (ffmpeg quantizes chroma with table 0 too)
# becomes tables 0 and 1 with the same values, chroma components name table 1, component
# ids become 0, 1, 2. The entropy-coded scan is copied untouched, and the script checks
# that every rewritten frame decodes to the same pixels as ffmpeg's.
#
# Needs ffmpeg (5.1 here) and python3. Deterministic: ffmpeg -bitexact, one thread.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="${1:-$HERE/mjpeg.mkv}"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

ff() {
  local out="${@: -1}"
  ffmpeg -hide_banner -nostdin -v error -y "${@:1:$#-1}" -threads 1 -fflags +bitexact "$out"
}

# Baseline 4:2:0 JPEG with the standard (Annex K) Huffman tables: ffmpeg's default is
# per-frame optimal tables, which RTP/JPEG cannot carry.
ff -f lavfi -i "testsrc2=size=320x240:rate=10:duration=2" \
  -c:v mjpeg -huffman default -pix_fmt yuvj420p -q:v 10 -flags:v +bitexact \
  -f image2 "$TMP/src%03d.jpg"

python3 - "$TMP" <<'EOF'
import glob, os, sys

# Annex K.3 tables: (class, id) -> (16 code counts, symbols).
STD = {
    (0, 0): (bytes([0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0]), bytes(range(12))),
    (1, 0): (bytes([0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7d]), bytes.fromhex(
        "01020300041105122131410613516107227114328191a1082342b1c11552d1f0"
        "2433627282090a161718191a25262728292a3435363738393a43444546474849"
        "4a535455565758595a636465666768696a737475767778797a838485868788898a"
        "92939495969798999aa2a3a4a5a6a7a8a9aab2b3b4b5b6b7b8b9bac2c3c4c5c6c7c8c9ca"
        "d2d3d4d5d6d7d8d9dae1e2e3e4e5e6e7e8e9eaf1f2f3f4f5f6f7f8f9fa")),
    (0, 1): (bytes([0, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0]), bytes(range(12))),
    (1, 1): (bytes([0, 2, 1, 2, 4, 4, 3, 4, 7, 5, 4, 4, 0, 1, 2, 0x77]), bytes.fromhex(
        "000102031104052131061241510761711322328108144291a1b1c109233352f0"
        "156272d10a162434e125f11718191a262728292a35363738393a434445464748"
        "494a535455565758595a636465666768696a737475767778797a82838485868788898a"
        "92939495969798999aa2a3a4a5a6a7a8a9aab2b3b4b5b6b7b8b9bac2c3c4c5c6c7c8c9ca"
        "d2d3d4d5d6d7d8d9dae2e3e4e5e6e7e8e9eaf2f3f4f5f6f7f8f9fa")),
}


def seg(marker, body):
    return bytes([0xFF, marker]) + (len(body) + 2).to_bytes(2, "big") + body


def canonical(d):
    assert d[:2] == b"\xff\xd8", "no SOI"
    p, qt, huff, sof = 2, {}, {}, None
    while True:
        assert d[p] == 0xFF, f"no marker at {p}"
        m, n = d[p + 1], int.from_bytes(d[p + 2:p + 4], "big")
        body = d[p + 4:p + 2 + n]
        if m == 0xDB:  # DQT: 8-bit tables only
            i = 0
            while i < len(body):
                assert body[i] >> 4 == 0, "16-bit quantization table"
                qt[body[i] & 15] = body[i + 1:i + 65]
                i += 65
        elif m == 0xC4:  # DHT
            i = 0
            while i < len(body):
                counts = body[i + 1:i + 17]
                k = sum(counts)
                huff[(body[i] >> 4, body[i] & 15)] = (counts, body[i + 17:i + 17 + k])
                i += 17 + k
        elif m == 0xC0:  # SOF0
            assert body[0] == 8 and body[5] == 3, "not 8-bit 3-component baseline"
            sof = body
        elif m == 0xDA:  # SOS: the scan runs to the end (EOI included)
            scan = d[p + 2 + n:]
            break
        elif m == 0xDD:
            raise SystemExit("restart intervals are not written here")
        p += 2 + n
    assert huff == STD, "not the standard Huffman tables (use -huffman default)"
    assert scan.endswith(b"\xff\xd9"), "no EOI"
    height, width = int.from_bytes(sof[1:3], "big"), int.from_bytes(sof[3:5], "big")
    assert width % 8 == 0 and height % 8 == 0 and width <= 2040 and height <= 2040
    comps = [sof[6 + 3 * c:9 + 3 * c] for c in range(3)]
    assert [c[1] for c in comps] == [0x22, 0x11, 0x11], "not 4:2:0"
    luma, chroma = qt[comps[0][2]], qt[comps[1][2]]
    assert qt[comps[2][2]] == chroma
    out = b"\xff\xd8"
    out += seg(0xDB, b"\x00" + luma) + seg(0xDB, b"\x01" + chroma)
    out += seg(0xC0, bytes([8]) + sof[1:5] + bytes([3, 0, 0x22, 0, 1, 0x11, 1, 2, 0x11, 1]))
    for cls, tid in ((0, 0), (1, 0), (0, 1), (1, 1)):
        counts, symbols = STD[(cls, tid)]
        out += seg(0xC4, bytes([cls << 4 | tid]) + counts + symbols)
    out += seg(0xDA, bytes([3, 0, 0x00, 1, 0x11, 2, 0x11, 0, 63, 0]))
    return out + scan


tmp = sys.argv[1]
for src in sorted(glob.glob(os.path.join(tmp, "src*.jpg"))):
    dst = src.replace("src", "rfc")
    open(dst, "wb").write(canonical(open(src, "rb").read()))
EOF

# Same pixels as ffmpeg's own frames.
for kind in src rfc; do
  ff -f image2 -i "$TMP/$kind%03d.jpg" -f framemd5 "$TMP/$kind.md5"
done
if ! diff <(grep -v '^#' "$TMP/src.md5") <(grep -v '^#' "$TMP/rfc.md5") >/dev/null; then
  echo "the RFC 2435 layout decodes differently" >&2
  exit 1
fi

# One frame per file: -c copy keeps each JPEG byte for byte.
ff -f image2 -framerate 10 -i "$TMP/rfc%03d.jpg" -c:v copy "$OUT"
ls -l "$OUT"
