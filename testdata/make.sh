#!/usr/bin/env bash
# Regenerates every media file in testdata/ from synthetic sources, then
# measures them (testdata/expected.txt) and checks that each decodes cleanly.
#
#   bash testdata/make.sh            # from anywhere; writes next to this script
#
# The files are committed, so `cargo test` never needs any of these tools.
#
# Debian 12 (bookworm) packages needed:
#   apt-get update && apt-get install -y ffmpeg mkvtoolnix python3 \
#     gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good \
#     gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav
# (ffmpeg 5.1 with libx264/libx265/libvpx/libaom/libopus/libvorbis/libmp3lame,
#  mkvmerge/mkvinfo v74, GStreamer 1.22: x264enc is in -ugly, avenc_aac in
#  -libav, matroskamux/timeoverlay in -good/-base.)
#
# Determinism: ffmpeg runs with -fflags +bitexact / -flags +bitexact and
# single-threaded encoders, mkvmerge with --deterministic, so with the same
# tool versions those files come out byte-identical. GStreamer's matroskamux
# always writes a random SegmentUID and the current DateUTC, so live_gst.mkv
# differs in those bytes on every run (its media payload is identical).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="$HERE"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

for tool in ffmpeg ffprobe mkvmerge mkvinfo gst-launch-1.0 python3; do
  command -v "$tool" >/dev/null || { echo "missing $tool (see the package list at the top of $0)" >&2; exit 1; }
done

# ffmpeg wrapper: the last argument is the output; -fflags +bitexact (no
# random UIDs, no version strings) and -threads 1 must be output options.
ff() {
  local out="${@: -1}"
  ffmpeg -hide_banner -nostdin -v error -y "${@:1:$#-1}" -threads 1 -fflags +bitexact "$out"
}
MKVMERGE=(mkvmerge -q --deterministic 20240101)

# Synthetic sources. testsrc2 burns in a running clock (HH:MM:SS.mmm) and a
# frame number; the audio is a 440 Hz tone on the left (beeping at 4x the
# carrier frequency at the start of each second, for A/V sync) and 660 Hz on
# the right.
video() { # size rate seconds
  echo "testsrc2=size=$1:rate=$2:duration=$3"
}
stereo() { # rate seconds
  echo "sine=f=440:b=4:r=$1:d=$2[l];sine=f=660:r=$1:d=$2[r];[l][r]amerge=inputs=2[out0]"
}
mono() { # rate seconds
  echo "sine=f=440:b=4:r=$1:d=$2"
}

X264=(-c:v libx264 -preset veryfast -profile:v high -pix_fmt yuv420p -bf 3
      -g 25 -keyint_min 25 -sc_threshold 0 -flags:v +bitexact)
AAC=(-c:a aac -flags:a +bitexact)

echo "== main samples"
# h264_aac.mkv: the default sample the server serves.
ff -f lavfi -i "$(video 320x240 25 10)" -f lavfi -i "$(stereo 48000 10)" \
  -map 0:v -map 1:a "${X264[@]}" -crf 33 "${AAC[@]}" -b:a 48k \
  "$OUT/h264_aac.mkv"

# vp9_opus.webm
ff -f lavfi -i "$(video 320x240 25 10)" -f lavfi -i "$(stereo 48000 10)" \
  -map 0:v -map 1:a -c:v libvpx-vp9 -deadline good -cpu-used 4 -row-mt 0 \
  -crf 50 -b:v 0 -g 25 -keyint_min 25 -flags:v +bitexact \
  -c:a libopus -b:a 32k -flags:a +bitexact \
  "$OUT/vp9_opus.webm"

echo "== audio only"
ff -f lavfi -i "$(stereo 48000 6)" -c:a libopus -b:a 32k -flags:a +bitexact \
  "$OUT/opus_only.webm"
ff -f lavfi -i "$(stereo 48000 6)" "${AAC[@]}" -b:a 48k \
  "$OUT/aac_only.mka"

echo "== live (unknown-size) files"
# GStreamer matroskamux streamable=true: unknown-size Segment and Clusters,
# both written as the 8-byte form 01 FF FF FF FF FF FF FF; no Cues, no
# Duration; Tags come before Info.
gst-launch-1.0 -q matroskamux name=mux streamable=true writing-app=muxcast-testdata \
    ! filesink location="$OUT/live_gst.mkv" \
  videotestsrc num-buffers=100 pattern=smpte \
    ! video/x-raw,format=I420,width=160,height=120,framerate=25/1 ! timeoverlay \
    ! x264enc threads=1 speed-preset=veryfast bframes=2 b-adapt=false key-int-max=25 bitrate=100 \
    ! h264parse ! video/x-h264,stream-format=avc,alignment=au ! queue ! mux.video_0 \
  audiotestsrc num-buffers=188 samplesperbuffer=1024 freq=440 \
    ! audio/x-raw,rate=48000,channels=2 ! avenc_aac bitrate=48000 ! aacparse ! queue ! mux.audio_0
# matroskamux cannot be told to be deterministic: overwrite, in place and at
# the same length, its random SegmentUID (0x73A4), TrackUIDs (0x73C5, also
# referenced as TagTrackUID 0x63C5) and DateUTC (0x4461) with fixed values.
python3 - "$OUT/live_gst.mkv" <<'EOF'
import re, sys
path = sys.argv[1]
d = bytearray(open(path, "rb").read())
head = d[:4096]  # all of these are in the headers, before the first Cluster
end = head.find(b"\x1f\x43\xb6\x75")
uids = {}
for m in re.finditer(rb"\x73\xc5\x88", head[:end]):      # TrackUID, 8 bytes
    uids.setdefault(bytes(head[m.end():m.end() + 8]), len(uids) + 1)
def patch(id_and_size, value_for):
    for m in re.finditer(re.escape(id_and_size), head[:end]):
        old = bytes(d[m.end():m.end() + id_and_size[-1] - 0x80])
        d[m.end():m.end() + len(old)] = value_for(old)
patch(b"\x73\xc5\x88", lambda old: uids[old].to_bytes(8, "big"))
patch(b"\x63\xc5\x88", lambda old: uids.get(old, 0).to_bytes(8, "big"))
patch(b"\x73\xa4\x90", lambda old: bytes(range(1, 17)))
patch(b"\x44\x61\x88", lambda old: bytes(8))
open(path, "wb").write(d)
EOF

# ffmpeg -live 1 to a real pipe: unknown-size Segment (8-byte form), but the
# Clusters have known sizes (ffmpeg buffers each cluster before writing it).
ff -f lavfi -i "$(video 160x120 25 4)" -f lavfi -i "$(stereo 48000 4)" \
  -map 0:v -map 1:a "${X264[@]}" -crf 33 "${AAC[@]}" -b:a 48k \
  -f matroska -live 1 pipe:1 | cat > "$OUT/live_ffmpeg.mkv"

# No tool here writes the 1-byte unknown size (0xFF), so rewrite the ffmpeg
# live file: live_1byte.mkv gets the 1-byte unknown size on the Segment and
# every Cluster; live_mixed.mkv has a 1-byte unknown Segment and Clusters
# cycling through the 1-, 2-, 4- and 8-byte unknown sizes (FF, 7F FF,
# 1F FF FF FF, 01 FF FF FF FF FF FF FF). Everything else is copied verbatim.
rewrite_unknown() { # src dst mode(1|mixed)
python3 - "$1" "$2" "$3" <<'EOF'
import sys
src, dst, mode = sys.argv[1], sys.argv[2], sys.argv[3]
d = open(src, "rb").read()
def rid(p):
    b = d[p]; n = 1 if b & 0x80 else 2 if b & 0x40 else 3 if b & 0x20 else 4
    return d[p:p + n], p + n
def rsize(p):
    b = d[p]; n = 1; m = 0x80
    while not b & m: n += 1; m >>= 1
    v = b & (m - 1)
    for i in range(1, n): v = (v << 8) | d[p + i]
    return (None if v == (1 << 7 * n) - 1 else v), p + n
# Unknown-size encodings cycled through in "mixed" mode: 1, 2, 4, 8 bytes.
UNKNOWN = [b"\xff", b"\x7f\xff", b"\x1f\xff\xff\xff", b"\x01\xff\xff\xff\xff\xff\xff\xff"]
out = bytearray()
eid, p = rid(0); size, q = rsize(p)
out += d[:q + size]                      # EBML header, verbatim
eid, p = rid(q + size); assert eid == b"\x18\x53\x80\x67"
_, p = rsize(p)
out += eid + b"\xff"                     # Segment: 1-byte unknown size
n = 0
while p < len(d):
    eid, q = rid(p); size, r = rsize(q)
    assert size is not None
    if eid == b"\x1f\x43\xb6\x75":       # Cluster
        out += eid + (UNKNOWN[n % 4] if mode == "mixed" else b"\xff") + d[r:r + size]
        n += 1
    else:
        out += d[p:r + size]
    p = r + size
open(dst, "wb").write(out)
EOF
}
rewrite_unknown "$OUT/live_ffmpeg.mkv" "$OUT/live_1byte.mkv" 1
rewrite_unknown "$OUT/live_ffmpeg.mkv" "$OUT/live_mixed.mkv" mixed

echo "== lacing (mkvmerge)"
ff -f lavfi -i "$(stereo 48000 3)" "${AAC[@]}" -b:a 64k -f adts "$TMP/a.aac"
ff -f lavfi -i "$(stereo 48000 3)" -c:a libopus -b:a 48k -vbr off -flags:a +bitexact "$TMP/cbr.opus"
# AAC frames vary in size: mkvmerge would pick Xiph lacing by itself; force
# each kind explicitly so the choice is stable.
"${MKVMERGE[@]}" -o "$OUT/laced_xiph.mka" --engage lacing_xiph "$TMP/a.aac"
"${MKVMERGE[@]}" -o "$OUT/laced_ebml.mka" --engage lacing_ebml "$TMP/a.aac"
# CBR Opus packets all have the same size, so mkvmerge's automatic choice is
# fixed-size lacing (there is no engage option for it).
"${MKVMERGE[@]}" -o "$OUT/laced_fixed.mka" "$TMP/cbr.opus"

echo "== BlockGroups, TimestampScale, subtitles (mkvmerge)"
ff -f lavfi -i "$(video 160x120 25 3)" "${X264[@]}" -crf 33 -f h264 "$TMP/v.h264"
# Variable frame rate timestamps (every 10th frame lasts 80 ms instead of 40)
# so mkvmerge has to write BlockDuration on those frames.
python3 -c '
t = 0
print("# timestamp format v2")
for i in range(75):
    print(t); t += 40 if i % 10 else 80
' > "$TMP/vfr.txt"
"${MKVMERGE[@]}" -o "$OUT/blockgroups.mkv" --engage no_simpleblocks \
  --timestamps "0:$TMP/vfr.txt" --default-duration 0:25fps "$TMP/v.h264" "$TMP/a.aac"
"${MKVMERGE[@]}" -o "$OUT/tscale.mkv" --timestamp-scale 100000 \
  --default-duration 0:25fps "$TMP/v.h264" "$TMP/a.aac"
cat > "$TMP/subs.srt" <<'EOF'
1
00:00:00,000 --> 00:00:01,000
first second

2
00:00:01,500 --> 00:00:02,500
second subtitle
EOF
"${MKVMERGE[@]}" -o "$OUT/with_subtitles.mkv" --default-duration 0:25fps \
  "$TMP/v.h264" "$TMP/a.aac" "$TMP/subs.srt"

echo "== codec matrix (160x120, 2 s)"
V2="$(video 160x120 25 2)"
A2="$(stereo 48000 2)"
ff -f lavfi -i "$V2" -f lavfi -i "$A2" -map 0:v -map 1:a \
  -c:v libx265 -preset veryfast -crf 32 -g 25 -keyint_min 25 -pix_fmt yuv420p -flags:v +bitexact \
  -x265-params "pools=none:frame-threads=1:scenecut=0:open-gop=0:log-level=error" \
  "${AAC[@]}" -b:a 48k "$OUT/h265_aac.mkv"
ff -f lavfi -i "$V2" -f lavfi -i "$A2" -map 0:v -map 1:a \
  -c:v libaom-av1 -cpu-used 6 -row-mt 0 -crf 50 -b:v 0 -g 25 -keyint_min 25 -flags:v +bitexact \
  -c:a libopus -b:a 32k -flags:a +bitexact "$OUT/av1_opus.mkv"
ff -f lavfi -i "$V2" -f lavfi -i "$A2" -map 0:v -map 1:a \
  -c:v libvpx -deadline good -cpu-used 4 -crf 40 -b:v 200k -g 25 -keyint_min 25 -flags:v +bitexact \
  -c:a libvorbis -q:a 2 -flags:a +bitexact "$OUT/vp8_vorbis.webm"
ff -f lavfi -i "$V2" -f lavfi -i "$A2" -map 0:v -map 1:a \
  "${X264[@]}" -crf 33 -c:a flac -flags:a +bitexact "$OUT/h264_flac.mkv"
ff -f lavfi -i "$V2" -f lavfi -i "$A2" -map 0:v -map 1:a \
  "${X264[@]}" -crf 33 -c:a libmp3lame -b:a 96k -flags:a +bitexact "$OUT/h264_mp3.mkv"
ff -f lavfi -i "$V2" -f lavfi -i "$(mono 48000 2)" -map 0:v -map 1:a \
  "${X264[@]}" -crf 33 -c:a pcm_s16le "$OUT/h264_pcm.mkv"
ff -f lavfi -i "$V2" -f lavfi -i "$(mono 8000 2)" -map 0:v -map 1:a \
  "${X264[@]}" -crf 33 -c:a pcm_mulaw "$OUT/h264_mulaw.mkv"
ff -f lavfi -i "$V2" -f lavfi -i "$(mono 8000 2)" -map 0:v -map 1:a \
  "${X264[@]}" -crf 33 -c:a pcm_alaw "$OUT/h264_alaw.mkv"

echo "== MJPEG (RTP/JPEG's header layout; see make_mjpeg.sh)"
bash "$HERE/make_mjpeg.sh" "$OUT/mjpeg.mkv" >/dev/null

echo "== unsupported"
ff -f lavfi -i "$(video 160x120 25 1)" \
  -c:v mpeg2video -q:v 14 -g 12 -bf 2 -flags:v +bitexact "$OUT/unsupported_codec.mkv"

FILES=(h264_aac.mkv vp9_opus.webm opus_only.webm aac_only.mka
       live_gst.mkv live_ffmpeg.mkv live_1byte.mkv live_mixed.mkv
       laced_xiph.mka laced_ebml.mka laced_fixed.mka
       blockgroups.mkv tscale.mkv with_subtitles.mkv
       h265_aac.mkv av1_opus.mkv vp8_vorbis.webm
       h264_flac.mkv h264_mp3.mkv h264_pcm.mkv h264_mulaw.mkv h264_alaw.mkv
       mjpeg.mkv unsupported_codec.mkv)

echo "== decode check"
for f in "${FILES[@]}"; do
  err="$(ffmpeg -hide_banner -nostdin -v error -i "$OUT/$f" -f null - 2>&1 || echo "ffmpeg exit $?")"
  if [ -n "$err" ]; then echo "DECODE ERROR in $f:"; echo "$err"; exit 1; fi
done

echo "== expected.txt"
python3 "$HERE/expected.py" "${FILES[@]/#/$OUT/}" > "$OUT/expected.txt"

ls -l "${FILES[@]/#/$OUT/}"
du -cb "${FILES[@]/#/$OUT/}" | tail -1
