#!/usr/bin/env python3
"""A test "IP camera": GStreamer's RTSP server (gst-rtsp-server, through PyGObject) serving
live test streams on 127.0.0.1, for the interop suite (tests/interop/checks.py, checks j, k, o, q).

    rtsp_camera.py [--port N] [--user U --password P] [--size WxH] [--fps N] [--gop N]
                   [--bitrate KBIT]

Mount points (each a shared media: one pipeline for every client of the mount, built on
the first DESCRIBE, torn down when its last client goes; /mjpeg excepted, see below):

    /h264-aac    H.264 (x264enc, WxH)            + AAC-LC 48 kHz stereo (rtpmp4gpay, mpeg4-generic)
    /h265-aac    H.265 (x265enc, 384x216)        + AAC-LC 48 kHz stereo
    /h264-pcmu   H.264 (x264enc, 352x288)        + G.711 µ-law 8 kHz mono (rtppcmupay)
    /mjpeg       Motion JPEG (jpegenc, 400x224, 4:2:0), video only (rtpjpegpay: RTP/JPEG, RFC 2435);
                 not shared: a pipeline per client. Check q starts TCP and UDP clients of it at
                 once, and once in a few runs gst-rtsp-server 1.22's shared media lost that race
                 for good: 503 to the second client's PLAY, then to every later DESCRIBE.

Video is videotestsrc at --fps (25) with a keyframe every --gop (25) frames; audio is
audiotestsrc; both is-live=true, so the camera produces media at real time whether or not
anyone watches. RTP over TCP (interleaved) and over UDP are both allowed. With --user and
--password every mount requires RTSP Digest authentication (Basic is not offered).

Prints one line `READY rtsp://127.0.0.1:PORT` on stdout once listening (--port 0, the
default, picks a free port). Logs on stderr what clients do, one line per event, each
stamped with this host's CLOCK_MONOTONIC (Python's time.monotonic(), comparable with the
test's), so a test can see which transport a client really used and when a client had a
session (on-demand checks):

    rtsp_camera: t=MONO connect c1@127.0.0.1 (connections 1)
    rtsp_camera: t=MONO DESCRIBE /h264-aac from c1@127.0.0.1
    rtsp_camera: t=MONO SETUP /h264-aac/stream=0 from c1@127.0.0.1 Transport: RTP/AVP/TCP;...
    rtsp_camera: t=MONO session SID new for /h264-aac from c1@127.0.0.1 (sessions 1)
    rtsp_camera: t=MONO PLAY /h264-aac from c1@127.0.0.1
    rtsp_camera: t=MONO TEARDOWN /h264-aac from c1@127.0.0.1
    rtsp_camera: t=MONO session SID removed for /h264-aac (sessions 0)
    rtsp_camera: t=MONO client c1@127.0.0.1 closed (connections 0)

`sessions` counts the RTSP sessions of the server's pool, `connections` the open client
connections. Exits 0 on SIGTERM or SIGINT.

Needs Debian 12's python3-gi, gir1.2-gst-rtsp-server-1.0, gstreamer1.0-rtsp,
gstreamer1.0-plugins-{base,good,bad,ugly} and gstreamer1.0-libav (x264enc is in -ugly,
x265enc and voaacenc in -bad, avenc_aac in -libav). Run it with the Python those packages
belong to (/usr/bin/python3), not a virtualenv's.
"""

import argparse
import signal
import sys
import time

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402


def log(msg):
    print(f"rtsp_camera: t={time.monotonic():.3f} {msg}", file=sys.stderr, flush=True)


def aac_encoder():
    """The first AAC encoder this GStreamer has: Debian 12 has avenc_aac (libav) and
    voaacenc (bad); fdkaacenc only where fdk-aac is built in."""
    for name in ("fdkaacenc", "avenc_aac", "voaacenc"):
        if Gst.ElementFactory.find(name):
            return name
    raise SystemExit("rtsp_camera: no AAC encoder (install gstreamer1.0-libav or gstreamer1.0-plugins-bad)")


def need(*elements):
    missing = [e for e in elements if not Gst.ElementFactory.find(e)]
    if missing:
        raise SystemExit(f"rtsp_camera: GStreamer elements missing: {', '.join(missing)}")


def video(codec, width, height, fps, gop, kbit, pattern):
    src = (f"videotestsrc is-live=true pattern={pattern} ! "
           f"video/x-raw,width={width},height={height},framerate={fps}/1 ! "
           # A running clock in the picture, so a frame freeze is visible.
           f"timeoverlay font-desc=\"Sans 12\" ! videoconvert ! video/x-raw,format=I420 ! ")
    if codec == "h264":
        # Baseline-like (no B-frames) as most cameras; SPS/PPS before every IDR (config-interval=-1)
        # as in the SDP.
        return (src + f"x264enc tune=zerolatency speed-preset=ultrafast key-int-max={gop} bitrate={kbit} "
                f"! video/x-h264,profile=constrained-baseline ! h264parse ! "
                f"rtph264pay name=pay0 pt=96 config-interval=-1")
    if codec == "h265":
        return (src + f"x265enc tune=zerolatency speed-preset=ultrafast key-int-max={gop} bitrate={kbit} "
                f"! h265parse ! rtph265pay name=pay0 pt=96 config-interval=-1")
    if codec == "mjpeg":
        # Every frame a baseline JPEG; RTP/JPEG's static payload type 26.
        return src + "jpegenc quality=75 ! rtpjpegpay name=pay0 pt=26"
    raise ValueError(codec)


def audio(codec, aac):
    if codec == "aac":
        return ("audiotestsrc is-live=true wave=sine freq=440 volume=0.3 ! "
                "audio/x-raw,rate=48000,channels=2 ! audioconvert ! audioresample ! "
                f"{aac} bitrate=64000 ! aacparse ! rtpmp4gpay name=pay1 pt=97")
    if codec == "pcmu":
        return ("audiotestsrc is-live=true wave=sine freq=440 volume=0.3 ! audioconvert ! audioresample ! "
                "audio/x-raw,rate=8000,channels=1 ! mulawenc ! rtppcmupay name=pay1 pt=0")
    raise ValueError(codec)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, default=0, help="RTSP port on 127.0.0.1 (0: a free one)")
    ap.add_argument("--user", help="require Digest authentication with this user")
    ap.add_argument("--password", help="... and this password")
    ap.add_argument("--size", default="320x240", help="WxH of /h264-aac (default 320x240)")
    ap.add_argument("--fps", type=int, default=25)
    ap.add_argument("--gop", type=int, default=25, help="frames between keyframes (default 25)")
    ap.add_argument("--bitrate", type=int, default=400, help="video kbit/s (default 400)")
    a = ap.parse_args()
    if bool(a.user) != bool(a.password):
        ap.error("--user and --password go together")
    width, height = (int(x) for x in a.size.lower().split("x"))

    Gst.init(None)
    aac = aac_encoder()
    need("videotestsrc", "audiotestsrc", "timeoverlay", "x264enc", "x265enc", "h264parse", "h265parse",
         "aacparse", "mulawenc", "jpegenc", "rtph264pay", "rtph265pay", "rtpmp4gpay", "rtppcmupay",
         "rtpjpegpay")

    UNSHARED = {"/mjpeg"}
    mounts_spec = {
        "/h264-aac": (video("h264", width, height, a.fps, a.gop, a.bitrate, "smpte"), audio("aac", aac)),
        "/h265-aac": (video("h265", 384, 216, a.fps, a.gop, a.bitrate, "ball"), audio("aac", aac)),
        "/h264-pcmu": (video("h264", 352, 288, a.fps, a.gop, a.bitrate, "snow"), audio("pcmu", aac)),
        "/mjpeg": (video("mjpeg", 400, 224, a.fps, a.gop, a.bitrate, "ball"), ""),
    }

    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(a.port))
    mounts = server.get_mount_points()

    if a.user:
        auth = GstRtspServer.RTSPAuth()
        auth.set_supported_methods(GstRtsp.RTSPAuthMethod.DIGEST)
        auth.set_realm("muxcast-interop")
        token = GstRtspServer.RTSPToken()
        token.set_string("media.factory.role", a.user)
        auth.add_digest(a.user, a.password, token)
        server.set_auth(auth)

    for path, (v, au) in mounts_spec.items():
        f = GstRtspServer.RTSPMediaFactory()
        f.set_launch(f"( {v} {au} )")
        f.set_shared(path not in UNSHARED)
        f.set_protocols(GstRtsp.RTSPLowerTrans.TCP | GstRtsp.RTSPLowerTrans.UDP)
        if a.user:
            f.add_role_from_structure(Gst.Structure.new_from_string(
                f"{a.user}, media.factory.access=(boolean)true, media.factory.construct=(boolean)true"))
        mounts.add_factory(path, f)

    pool = server.get_session_pool()
    clients = {"next": 0, "open": 0}
    session_paths = {}  # session id -> mount of its first SETUP

    def mount_of(ctx):
        path = ctx.uri.abspath if ctx.uri else "?"
        return next((m for m in mounts_spec if path == m or path.startswith(m + "/")), path)

    def on_client(_server, client):
        clients["next"] += 1
        clients["open"] += 1
        conn = client.get_connection()
        peer = f"c{clients['next']}@{conn.get_ip() if conn else '?'}"
        log(f"connect {peer} (connections {clients['open']})")

        def on_describe(_client, ctx):
            log(f"DESCRIBE {ctx.uri.abspath if ctx.uri else '?'} from {peer}")

        def on_setup(_client, ctx):
            ok, transport = ctx.request.get_header(GstRtsp.RTSPHeaderField.TRANSPORT, 0)
            log(f"SETUP {ctx.uri.abspath if ctx.uri else '?'} from {peer} Transport: {transport if ok == GstRtsp.RTSPResult.OK else '?'}")
            sid = ctx.session.get_sessionid() if ctx.session else None
            if sid and sid not in session_paths:
                session_paths[sid] = mount_of(ctx)
                log(f"session {sid} new for {session_paths[sid]} from {peer} (sessions {pool.get_n_sessions()})")

        def on_play(_client, ctx):
            log(f"PLAY {ctx.uri.abspath if ctx.uri else '?'} from {peer}")

        def on_teardown(_client, ctx):
            log(f"TEARDOWN {ctx.uri.abspath if ctx.uri else '?'} from {peer}")

        def on_closed(_client):
            clients["open"] -= 1
            log(f"client {peer} closed (connections {clients['open']})")

        client.connect("describe-request", on_describe)
        client.connect("setup-request", on_setup)
        client.connect("play-request", on_play)
        client.connect("teardown-request", on_teardown)
        client.connect("closed", on_closed)

    def on_session_removed(_pool, session):
        sid = session.get_sessionid()
        log(f"session {sid} removed for {session_paths.pop(sid, '?')} (sessions {pool.get_n_sessions()})")

    pool.connect("session-removed", on_session_removed)
    server.connect("client-connected", on_client)

    if server.attach(None) == 0:
        raise SystemExit(f"rtsp_camera: cannot listen on 127.0.0.1:{a.port}")
    port = server.get_bound_port()
    loop = GLib.MainLoop()

    def stop(signame):
        log(f"{signame}: exiting")
        loop.quit()
        return GLib.SOURCE_REMOVE

    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, stop, "SIGTERM")
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGINT, stop, "SIGINT")
    # Drop sessions of clients that vanished (UDP clients have no connection to lose).
    GLib.timeout_add_seconds(2, lambda: (pool.cleanup(), True)[1])

    log(f"{aac} for AAC; auth {'Digest user ' + a.user if a.user else 'none'}; mounts {', '.join(mounts_spec)}")
    print(f"READY rtsp://127.0.0.1:{port}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
