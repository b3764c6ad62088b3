# Sourced by bench/fanout.sh and bench/footprint.sh.

# The 4 Mbit/s media of bench/fanout.sh and bench/footprint.sh, made once at $1: 24 s of
# 1280x720 VP9 at ~3.9 Mbit/s + Opus 96 kbit/s, a keyframe every 2 s (a whole number of
# GOPs, so that looping keeps the keyframe cadence). Noise keeps the encoder from starving
# the bitrate; the first GOP (a 440 KB first keyframe while the rate control settles) is
# encoded and cut off. Encoding takes ~15 s on 2 cores.
make_4mbps_webm() {
    local media=$1
    [[ -s $media ]] && return 0
    mkdir -p "$(dirname "$media")"
    echo "generating $media ..."
    ffmpeg -hide_banner -loglevel error -y \
        -f lavfi -i "testsrc2=size=1280x720:rate=30,noise=alls=30:allf=t" \
        -f lavfi -i "sine=frequency=440:sample_rate=48000" -t 26 \
        -c:v libvpx-vp9 -deadline realtime -cpu-used 8 -row-mt 1 \
        -b:v 3900k -minrate 3900k -maxrate 3900k -bufsize 2000k -g 60 -keyint_min 60 \
        -c:a libopus -b:a 96k -f webm "$media.full"
    ffmpeg -hide_banner -loglevel error -y -i "$media.full" -ss 2 -c copy \
        -avoid_negative_ts make_zero -f webm "$media.tmp"
    rm -f "$media.full"
    mv "$media.tmp" "$media"
}
