#!/usr/bin/env python3
"""muxcast against real third-party peers (ffmpeg, ffprobe, curl, a raw socket).

Usage: checks.py --bin PATH/TO/muxcast --workdir DIR [a b c ...]
Prints one PASS/FAIL line per check; exits 1 if any failed.
"""

import argparse
import concurrent.futures
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

from helpers import (
    PROCS, RESULTS, TESTDATA, CheckFailed, Muxcast, SocketReader, check, compare_tracks,
    curl_capture, decode_problems, dts_problems, ffmpeg_capture, ffprobe_streams, framecrc, http_get, info, probe_summary,
    read_head_bytes, run, spawn, wait_exit,
)


class Ctx:
    def __init__(self, binary, workdir):
        self.binary = binary
        self.workdir = workdir


CHECKS = {}


def register(letter, title):
    def deco(f):
        CHECKS[letter] = (title, f)
        return f
    return deco


def td(name):
    p = TESTDATA / name
    if not p.is_file():
        raise CheckFailed(f"missing test file {p}")
    return p


def capture_all(srv, stream, prefix, seconds, ctx):
    """Three concurrent viewers of /STREAM/live.mkv: ffmpeg, curl and a raw socket."""
    url = srv.url(f"/{stream}/live.mkv")
    d = ctx.workdir
    c = {
        "ffmpeg": (ffmpeg_capture(url, d / f"{prefix}-ffmpeg.mkv", seconds), d / f"{prefix}-ffmpeg.mkv"),
        "curl": (curl_capture(url, d / f"{prefix}-curl.mkv", seconds + 1), d / f"{prefix}-curl.mkv"),
    }
    sock = SocketReader(srv.addr, f"/{stream}/live.mkv", d / f"{prefix}-socket.mkv", seconds + 1)
    sock.start()
    c["socket"] = (sock, d / f"{prefix}-socket.mkv")
    return c


def finish_client(kind, handle, timeout):
    """(ok, note) for how a capture client ended."""
    if kind == "socket":
        handle.finish(timeout)
        if handle.error:
            return False, f"socket reader: {handle.error}"
        ct = handle.headers.get("content-type", "")
        if not (handle.status_line or "").startswith("HTTP/1.1 200") or "matroska" not in ct:
            return False, f"socket reader got {handle.status_line!r}, Content-Type {ct!r}"
        return True, f"{handle.body_bytes} bytes"
    rc = wait_exit(handle, timeout)
    if rc is None:
        return False, f"{kind} still running after {timeout}s"
    if kind == "curl" and rc not in (0, 28):
        return False, f"curl exited {rc}"
    if kind == "ffmpeg" and rc != 0:
        return False, f"ffmpeg exited {rc}"
    return True, f"exit {rc}"


def verify_capture(name, src, kind, path, ended_ok, note, cyclic, extra_details=()):
    truncatable = kind in ("curl", "socket")
    if not path.exists() or path.stat().st_size == 0:
        log = path.with_name(path.name + ".log")
        details = [note] + (log.read_text(errors="replace").splitlines()[-5:] if log.exists() else [])
        return check(name, False, "nothing received", details + list(extra_details))
    got = framecrc(path, allow_errors=truncatable)
    ok, summary, details = compare_tracks(src, got, cyclic=cyclic, truncatable=truncatable)
    if not ended_ok:
        details.insert(0, note)
    check(name, ok and ended_ok, summary, details + list(extra_details))
    if kind in ("ffmpeg", "curl-complete"):
        # A complete file written by ffmpeg: it must also decode without a warning.
        problems = decode_problems(path)
        check(f"{name}: decodes cleanly", not problems, f"{len(problems)} warnings/errors", problems[:5])
    elif kind == "socket":
        # The server's own bytes: timestamps must increase per stream, across loop points too.
        for tr in got.values():
            tr.dts = tr.dts[:-1]  # the last packet may be truncated
        problems = dts_problems(got)
        check(f"{name}: dts increase per stream", not problems, "; ".join(problems))


# ---------------------------------------------------------------------------------------


@register("a", "frame identity with real clients")
def check_a(ctx):
    files = {"live": td("h264_aac.mkv"), "vp9": td("vp9_opus.webm")}
    srv = Muxcast(ctx, "a-server", ["--loop"] + [f"{n}={p}" for n, p in files.items()])
    t0 = time.monotonic()
    src = {n: framecrc(p) for n, p in files.items()}
    for n in files:
        srv.wait_state(n)
    # With the default 2 s prefill the playout is ~2 s ahead of the server's start; wait
    # so that the 6 s captures cross the end of the 10 s files (the loop point).
    time.sleep(max(0.0, 4.5 - (time.monotonic() - t0)))
    clients = {n: capture_all(srv, n, f"a-{n}", 6, ctx) for n in files}

    for n in files:
        st = srv.wait_clients(n, 3, timeout=6)
        got = st.get("clients") if st else None
        check(f"a.status {n}: /status.json counts 3 viewers", got == 3,
              f"clients={got} bytes_sent={st.get('bytes_sent') if st else None} state={st.get('state') if st else None}")

    ended = {n: {k: finish_client(k, h, 25) for k, (h, _) in c.items()} for n, c in clients.items()}
    for n, c in clients.items():
        for kind, (_, path) in c.items():
            ok_end, note = ended[n][kind]
            verify_capture(f"a.frames {n} ({files[n].name}) via {kind}", src[n], kind, path, ok_end, note,
                           cyclic=True, extra_details=srv.log_tail(5))

    # WebM output.
    streams, fmt = ffprobe_streams(srv.url("/vp9/live.webm"))
    s = probe_summary(streams)
    want = {"video": ("vp9", "320x240"), "audio": ("opus", "48000Hz/2ch")}
    check("a.webm ffprobe /vp9/live.webm: vp9 320x240 + opus", s == want, f"got {s}, format {fmt}")
    status, headers, first = read_head_bytes(srv.url("/vp9/live.webm"), 64)
    ct = {k.lower(): v for k, v in headers.items()}.get("content-type", "")
    check("a.webm /vp9/live.webm is Content-Type video/webm with DocType webm",
          status == 200 and ct.startswith("video/webm") and first[:4] == b"\x1a\x45\xdf\xa3" and b"webm" in first,
          f"status {status}, Content-Type {ct!r}, first bytes {first[:40].hex()}")
    code, _, body = http_get(srv.url("/live/live.webm"))
    check("a.webm /live/live.webm (H.264+AAC) is 404 with a reason", code == 404 and len(body.strip()) > 0,
          f"{code} {body.decode(errors='replace').strip()[:120]!r}")
    rc = srv.stop()
    check("a.exit muxcast exits 0 on SIGTERM", rc == 0, f"exit code {rc}")


@register("b", "ffprobe reads live.mkv for the codec matrix")
def check_b(ctx):
    want = {
        "h264_aac.mkv": {"video": ("h264", "320x240"), "audio": ("aac", "48000Hz/2ch")},
        "vp9_opus.webm": {"video": ("vp9", "320x240"), "audio": ("opus", "48000Hz/2ch")},
        "h265_aac.mkv": {"video": ("hevc", "160x120"), "audio": ("aac", "48000Hz/2ch")},
        "av1_opus.mkv": {"video": ("av1", "160x120"), "audio": ("opus", "48000Hz/2ch")},
        "h264_flac.mkv": {"video": ("h264", "160x120"), "audio": ("flac", "48000Hz/2ch")},
        "h264_mulaw.mkv": {"video": ("h264", "160x120"), "audio": ("pcm_mulaw", "8000Hz/1ch")},
    }
    present = {}
    for f in want:
        try:
            present[f] = td(f)
        except CheckFailed as e:
            check(f"b.probe {f}", False, str(e))
    names = {f: f.split(".")[0].replace("_", "-") for f in present}
    srv = Muxcast(ctx, "b-server", ["--loop"] + [f"{names[f]}={p}" for f, p in present.items()])

    def one(f):
        try:
            srv.wait_state(names[f], timeout=10)
            direct = probe_summary(ffprobe_streams(str(present[f]))[0])
            served = probe_summary(ffprobe_streams(srv.url(f"/{names[f]}/live.mkv"))[0])
            return f, direct, served, None
        except CheckFailed as e:
            return f, None, None, str(e)

    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as ex:
        results = list(ex.map(one, present))
    for f, direct, served, err in results:
        if err:
            check(f"b.probe {f} through /{names[f]}/live.mkv", False, err, srv.log_tail(5))
            continue
        ok = served == want[f] and direct == want[f]
        check(f"b.probe {f} through /{names[f]}/live.mkv", ok,
              f"served {served}" + ("" if direct == want[f] else f"; source itself probes as {direct}"))
    srv.stop()


@register("c", "HTTP push (ffmpeg PUT, chunked) and 409 for a second pusher")
def check_c(ctx):
    src_file = td("h264_aac.mkv")
    src = framecrc(src_file)
    srv = Muxcast(ctx, "c-server", ["cam=push"])
    st = srv.wait_state("cam", states=("waiting-for-pusher",), timeout=5, need_tracks=False)
    check("c.push stream waits for a pusher", st.get("state") == "waiting-for-pusher", f"state {st.get('state')}")
    push_log = open(ctx.workdir / "c-pusher.log", "wb")
    pusher = spawn(["ffmpeg", "-nostdin", "-hide_banner", "-v", "error", "-re", "-i", src_file, "-map", "0",
                    "-c", "copy", "-f", "matroska", "-method", "PUT", srv.url("/cam/ingest")],
                   stdout=subprocess.DEVNULL, stderr=push_log)
    srv.wait_state("cam", timeout=10)
    viewer = ffmpeg_capture(srv.url("/cam/live.mkv"), ctx.workdir / "c-viewer.mkv", 5)
    sock = SocketReader(srv.addr, "/cam/live.mkv", ctx.workdir / "c-socket.mkv", 6)
    sock.start()

    small = ctx.workdir / "c-small.webm"
    small.write_bytes(td("opus_only.webm").read_bytes()[:4096])
    second = run(["curl", "-sS", "--max-time", "10", "-o", ctx.workdir / "c-second.body", "-w", "%{http_code}",
                  "-T", small, srv.url("/cam/ingest")], timeout=15)
    body = (ctx.workdir / "c-second.body").read_text(errors="replace").strip() if (ctx.workdir / "c-second.body").exists() else ""
    check("c.409 a second concurrent pusher (curl -T) gets 409", second.stdout.strip() == "409",
          f"HTTP {second.stdout.strip()} {body[:100]!r} {second.stderr.strip()[:100]}")

    for kind, h, path in (("ffmpeg", viewer, ctx.workdir / "c-viewer.mkv"), ("socket", sock, ctx.workdir / "c-socket.mkv")):
        ok_end, note = finish_client(kind, h, 20)
        verify_capture(f"c.frames pushed h264_aac.mkv via {kind} viewer", src, kind, path, ok_end, note,
                       cyclic=False, extra_details=srv.log_tail(5))

    rc = wait_exit(pusher, 20)
    plog = (ctx.workdir / "c-pusher.log").read_text(errors="replace").strip().splitlines()[-3:]
    check("c.pusher ffmpeg -method PUT completes with exit 0", rc == 0, f"exit {rc}", plog)
    # The slot frees when the push ends: a new pusher is accepted.
    time.sleep(0.5)
    again = run(["curl", "-sS", "--max-time", "10", "-o", "/dev/null", "-w", "%{http_code}",
                 "-T", src_file, srv.url("/cam/ingest")], timeout=15)
    code = again.stdout.strip()
    check("c.again after the first push ended, a new pusher is accepted (2xx)", code.startswith("2"),
          f"HTTP {code} {again.stderr.strip()[:100]}")
    rc = srv.stop()
    check("c.exit muxcast exits 0 on SIGTERM", rc == 0, f"exit code {rc}")


@register("d", "stdin input ends: viewer closed, muxcast exits 0")
def check_d(ctx):
    src_file = td("vp9_opus.webm")
    src = framecrc(src_file)
    feeder = spawn(["ffmpeg", "-nostdin", "-hide_banner", "-v", "error", "-re", "-i", src_file, "-map", "0",
                    "-c", "copy", "-f", "matroska", "-"],
                   stdout=subprocess.PIPE, stderr=open(ctx.workdir / "d-feeder.log", "wb"))
    try:
        srv = Muxcast(ctx, "d-server", ["-"], stdin=feeder.stdout)
    finally:
        feeder.stdout.close()  # muxcast holds the pipe now; ffmpeg gets EPIPE if it dies
    srv.wait_state("live", timeout=10)
    out = ctx.workdir / "d-viewer.mkv"
    viewer = spawn(["curl", "-sS", "--max-time", "25", "-o", out, srv.url("/live/live.mkv")],
                   stdout=subprocess.DEVNULL, stderr=open(ctx.workdir / "d-viewer.log", "wb"))
    rc_view = wait_exit(viewer, 30)
    rc_feed = wait_exit(feeder, 5)
    check("d.close viewer's connection closes when stdin ends (curl exit 0, not its 25 s limit)", rc_view == 0,
          f"curl exit {rc_view}, feeder exit {rc_feed}", srv.log_tail(5))
    verify_capture("d.frames stdin vp9_opus.webm via curl", src, "curl-complete", out, True, "", cyclic=False,
                   extra_details=srv.log_tail(5))
    rc = wait_exit(srv.proc, 10)
    check("d.exit muxcast exits 0 by itself after stdin ends", rc == 0, f"exit code {rc}", srv.log_tail(5))
    if rc is None:
        srv.stop()


@register("e", "HTTP pull relay")
def check_e(ctx):
    src_file = td("h264_aac.mkv")
    src = framecrc(src_file)
    origin = Muxcast(ctx, "e-origin", ["--loop", src_file])
    t0 = time.monotonic()
    origin.wait_state("live")
    relay = Muxcast(ctx, "e-relay", [origin.url("/live/live.mkv")])
    relay.wait_state("live", timeout=10)
    time.sleep(max(0.0, 4.5 - (time.monotonic() - t0)))  # so the captures cross the origin's loop point
    clients = capture_all(relay, "live", "e-relay", 6, ctx)
    for kind, (h, path) in clients.items():
        ok_end, note = finish_client(kind, h, 25)
        verify_capture(f"e.frames relayed h264_aac.mkv via {kind}", src, kind, path, ok_end, note, cyclic=True,
                       extra_details=relay.log_tail(5))
    st = origin.stream("live")
    check("e.status the origin sees exactly one viewer (the relay)", st and st.get("clients") == 1,
          f"origin clients={st and st.get('clients')}")
    rc_r = relay.stop()
    rc_o = origin.stop()
    check("e.exit relay and origin exit 0 on SIGTERM", rc_r == 0 and rc_o == 0, f"relay {rc_r}, origin {rc_o}")


@register("f", "SIGTERM/SIGINT with a viewer connected")
def check_f(ctx):
    for sig in (signal.SIGTERM, signal.SIGINT):
        name = sig.name
        srv = Muxcast(ctx, f"f-{name}", ["--loop", td("h264_aac.mkv")])
        srv.wait_state("live")
        out = ctx.workdir / f"f-{name}.mkv"
        viewer = spawn(["curl", "-sS", "--max-time", "30", "-o", out, srv.url("/live/live.mkv")],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        st = srv.wait_clients("live", 1, timeout=5)
        time.sleep(0.5)
        t = time.monotonic()
        rc = srv.stop(sig, timeout=5)
        took = time.monotonic() - t
        rc_view = wait_exit(viewer, 5)
        check(f"f.{name} muxcast exits 0 within 5 s with a viewer connected", rc == 0 and (st or {}).get("clients") == 1,
              f"exit {rc} after {took:.1f}s; viewers before: {(st or {}).get('clients')}; "
              f"viewer got {out.stat().st_size if out.exists() else 0} bytes, curl exit {rc_view}",
              srv.log_tail(5) if rc != 0 else None)


@register("g", "HLS and DASH (CMAF) read by ffmpeg")
def check_g(ctx):
    for name in ("h264_aac.mkv", "vp9_opus.webm", "h265_aac.mkv"):
        src_file = td(name)
        src = framecrc(src_file)
        srv = Muxcast(ctx, f"g-{name}", ["--loop", "--prefill", "6", src_file])
        srv.wait_state("live")
        time.sleep(1.0)
        for kind, path in (("HLS", "/live/index.m3u8"), ("DASH", "/live/manifest.mpd")):
            url = srv.url(path)
            out = ctx.workdir / f"g-{name}-{kind}.mkv"
            h = ffmpeg_capture(url, out, 8)
            ok_end, note = finish_client("ffmpeg", h, 40)
            # Packets come from CMAF segments: same bytes as the source's frames, so the
            # sizes and CRCs must be a contiguous run of the (looping) source.
            verify_capture(f"g.frames {kind} of {name} via ffmpeg", src, "ffmpeg", out, ok_end, note, cyclic=True,
                           extra_details=srv.log_tail(5))
        rc = srv.stop()
        check(f"g.exit {name}: muxcast exits 0 on SIGTERM", rc == 0, f"exit {rc}")


# ---------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("checks", nargs="*", default=sorted(CHECKS))
    a = ap.parse_args()
    ctx = Ctx(Path(a.bin).resolve(), Path(a.workdir))

    def on_signal(signum, frame):
        PROCS.cleanup()
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        for letter in a.checks:
            title, f = CHECKS[letter]
            t = time.monotonic()
            info(f"{letter}: {title}")
            try:
                f(ctx)
            except CheckFailed as e:
                check(f"{letter}.setup {title}", False, str(e))
            except Exception as e:
                check(f"{letter}.setup {title}", False, f"{type(e).__name__}: {e}",
                      traceback.format_exc().splitlines()[-6:])
            finally:
                PROCS.cleanup()
            info(f"{letter} took {time.monotonic() - t:.1f}s")
    finally:
        PROCS.cleanup()
    print(f"interop: {RESULTS.passed} passed, {RESULTS.failed} failed", flush=True)
    return 1 if RESULTS.failed or RESULTS.passed == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
