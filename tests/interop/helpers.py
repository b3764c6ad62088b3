"""Helpers for the interop suite: processes, muxcast servers, HTTP clients, framecrc.

Python 3 standard library only. Every subprocess and every wait has a bound; every process
the suite starts is recorded and killed (by its own process group) at the end.
"""

import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TESTDATA = ROOT / "testdata"


# ---------------------------------------------------------------------------------------
# Results


class CheckFailed(Exception):
    """A check's assertion failed; the message says what and why."""


class Results:
    def __init__(self):
        self.passed = 0
        self.failed = 0
        self.lock = threading.Lock()

    def report(self, name, ok, detail="", extra=None):
        with self.lock:
            line = f"{'PASS' if ok else 'FAIL'} {name}"
            if detail:
                line += f": {detail}"
            print(line, flush=True)
            for x in ([] if ok else extra or []):
                print(f"    {x}", flush=True)
            if ok:
                self.passed += 1
            else:
                self.failed += 1


RESULTS = Results()


def check(name, ok, detail="", extra=None):
    RESULTS.report(name, bool(ok), detail, extra)
    return bool(ok)


def known_failure(name, ok, detail, reason, extra=None):
    """A check that fails because of a documented bug in the peer, not in muxcast: printed
    as XFAIL with the reason (XPASS once the peer is fixed), never counted as a failure."""
    tag = "XPASS" if ok else "XFAIL"
    print(f"{tag} {name}: {detail} [known peer bug: {reason}]", flush=True)
    if extra and not ok:
        for line in extra[:8]:
            print(f"    {line}", flush=True)
    return bool(ok)


def info(msg):
    print(f"     ({msg})", flush=True)


# ---------------------------------------------------------------------------------------
# Processes


class Procs:
    """Every process the suite starts, each in its own session (so its group can be
    killed without touching anything else)."""

    def __init__(self):
        self.procs = []
        self.lock = threading.Lock()

    def spawn(self, argv, **kw):
        kw.setdefault("stdin", subprocess.DEVNULL)
        p = subprocess.Popen([str(a) for a in argv], start_new_session=True, **kw)
        with self.lock:
            self.procs.append(p)
        return p

    def run(self, argv, timeout, **kw):
        """Runs to completion within `timeout` seconds; on timeout the process is killed
        and CheckFailed is raised. Returns CompletedProcess (text output)."""
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        p = self.spawn(argv, **kw)
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(p)
            p.communicate()
            raise CheckFailed(f"timed out after {timeout}s: {' '.join(map(str, argv))}")
        return subprocess.CompletedProcess(p.args, p.returncode, decode(out), decode(err))

    def cleanup(self):
        with self.lock:
            procs = list(self.procs)
        for p in procs:
            if p.poll() is None:
                signal_group(p, signal.SIGTERM)
        deadline = time.monotonic() + 3
        for p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                kill_group(p)
                try:
                    p.wait(timeout=3)
                except subprocess.TimeoutExpired:
                    pass


def decode(b):
    if b is None:
        return ""
    if isinstance(b, str):
        return b
    return b.decode("utf-8", "replace")


def signal_group(p, sig):
    try:
        os.killpg(p.pid, sig)  # start_new_session: the group id is the child's pid
    except (ProcessLookupError, PermissionError):
        pass


def kill_group(p):
    signal_group(p, signal.SIGKILL)


def wait_exit(p, timeout):
    """The exit code, or None if `p` is still running after `timeout` seconds."""
    try:
        return p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return None


PROCS = Procs()


def spawn(argv, **kw):
    return PROCS.spawn(argv, **kw)


def run(argv, timeout, **kw):
    return PROCS.run(argv, timeout, **kw)


def free_port():
    """A TCP port that was free a moment ago (for servers that cannot listen on port 0)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path, n=15):
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return []
    return lines[-n:]


# ---------------------------------------------------------------------------------------
# muxcast


class Muxcast:
    """One muxcast process listening on 127.0.0.1:0; its address is read from its log.
    listen=None: `args` say where (`--config FILE`: one server, `listen = "127.0.0.1:0"`)."""

    LISTENING = re.compile(r"listening on http://([^/\s]+)/")

    def __init__(self, ctx, name, args, stdin=subprocess.DEVNULL, env=None, listen="127.0.0.1:0"):
        self.name = name
        self.log_path = ctx.workdir / f"{name}.log"
        self.log = open(self.log_path, "wb")
        e = dict(os.environ)
        e.setdefault("RUST_LOG", "info")
        e.update(env or {})
        self.argv = [ctx.binary, *(["--listen", listen] if listen else []), *args]
        self.proc = spawn(self.argv, stdin=stdin, stdout=self.log, stderr=self.log, cwd=ROOT, env=e)
        self.addr = self._wait_listening(10)

    def _wait_listening(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = self.LISTENING.search(Path(self.log_path).read_text(errors="replace"))
            if m:
                return m.group(1)
            if self.proc.poll() is not None:
                raise CheckFailed(
                    f"{self.name}: muxcast exited with {self.proc.returncode} before listening "
                    f"({' '.join(map(str, self.argv))}); log: {' | '.join(tail(self.log_path, 8))}"
                )
            time.sleep(0.05)
        raise CheckFailed(f"{self.name}: no 'listening on http://ADDR/' in its log within {timeout}s")

    def url(self, path):
        return f"http://{self.addr}{path}"

    def status(self):
        code, _, body = http_get(self.url("/status.json"), timeout=5)
        if code != 200:
            raise CheckFailed(f"{self.name}: /status.json answered {code}")
        return json.loads(body)

    def stream(self, name):
        for s in self.status().get("streams", []):
            if s.get("name") == name:
                return s
        return None

    def wait_state(self, stream, states=("live",), timeout=15, need_tracks=True):
        """Polls /status.json until `stream` is in one of `states` (with tracks, for live)."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise CheckFailed(
                    f"{self.name} exited with {self.proc.returncode} while waiting for stream "
                    f"{stream!r}; log: {' | '.join(tail(self.log_path, 8))}"
                )
            try:
                last = self.stream(stream)
            except (OSError, CheckFailed, ValueError) as e:
                last = {"error": str(e)}
            if last and last.get("state") in states and (not need_tracks or last.get("tracks")):
                return last
            time.sleep(0.1)
        raise CheckFailed(f"{self.name}: stream {stream!r} not {'/'.join(states)} after {timeout}s: {last}")

    def wait_clients(self, stream, n, timeout=8):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = self.stream(stream)
            if last and last.get("clients") == n:
                return last
            time.sleep(0.1)
        return last

    def stop(self, sig=signal.SIGTERM, timeout=5):
        """Sends `sig` to muxcast only (not its group) and returns its exit code, or None if it
        did not exit within `timeout` seconds (it is then killed)."""
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(sig)
            except ProcessLookupError:
                pass
        rc = wait_exit(self.proc, timeout)
        if rc is None:
            kill_group(self.proc)
            wait_exit(self.proc, 3)
        return rc

    def log_tail(self, n=10):
        return tail(self.log_path, n)


# ---------------------------------------------------------------------------------------
# A GStreamer RTSP server as the camera (tests/interop/rtsp_camera.py)


_GI_PYTHON = []


def gi_python():
    """A Python that has PyGObject and GstRtspServer: the suite's own, or Debian's
    /usr/bin/python3 (python3-gi belongs to it) when the suite runs under another one."""
    if _GI_PYTHON:
        return _GI_PYTHON[0]
    probe = ("import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0'); "
             "from gi.repository import Gst, GstRtspServer")
    tried = []
    for py in dict.fromkeys([sys.executable, "/usr/bin/python3"]):
        if not py or not Path(py).is_file():
            continue
        r = run([py, "-c", probe], timeout=30)
        if r.returncode == 0:
            _GI_PYTHON.append(py)
            return py
        tried.append(f"{py}: {(r.stderr.strip().splitlines() or ['?'])[-1]}")
    raise CheckFailed("no python3 with PyGObject and GstRtspServer (.ci/run installs python3-gi, "
                      "gir1.2-gst-rtsp-server-1.0, gstreamer1.0-rtsp): " + "; ".join(tried))


class RtspCamera:
    """tests/interop/rtsp_camera.py: gst-rtsp-server with live test streams on 127.0.0.1.
    Its stderr (connections, requests with SETUP transports, sessions; each line stamped
    with CLOCK_MONOTONIC, the clock of time.monotonic() here) goes to WORKDIR/NAME.log,
    appended to when the camera is started again on the same port."""

    EVENT = re.compile(r"rtsp_camera: t=([\d.]+) (.*)")

    SCRIPT = ROOT / "tests" / "interop" / "rtsp_camera.py"
    READY = re.compile(rb"READY (rtsp://\S+)")

    def __init__(self, ctx, name, port=0, user=None, password=None):
        self.name = name
        self.log_path = ctx.workdir / f"{name}.log"
        self.log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self.log = open(self.log_path, "ab")
        argv = [gi_python(), "-u", self.SCRIPT, "--port", port]
        if user:
            argv += ["--user", user, "--password", password]
        self.proc = spawn(argv, stdout=subprocess.PIPE, stderr=self.log, cwd=ROOT)
        self.url = self._wait_ready(20)
        self.port = int(self.url.rsplit(":", 1)[1])

    def _wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        buf = b""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise CheckFailed(f"{self.name}: no READY line within {timeout}s; log: {' | '.join(tail(self.log_path, 6))}")
            ready, _, _ = select.select([self.proc.stdout], [], [], min(left, 0.5))
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 4096)
                if not chunk:
                    rc = wait_exit(self.proc, 2)
                    raise CheckFailed(f"{self.name}: rtsp_camera.py exited ({rc}) before READY; log: "
                                      f"{' | '.join(tail(self.log_path, 6))}")
                buf += chunk
                m = self.READY.search(buf)
                if m:
                    return m.group(1).decode()

    def stop(self, sig=signal.SIGTERM, timeout=5):
        """Sends `sig`; returns the exit code, or None if it had not exited within `timeout`
        seconds (it is then killed). SIGKILL returns -9."""
        if self.proc.poll() is None:
            signal_group(self.proc, sig)
        rc = wait_exit(self.proc, timeout)
        if rc is None:
            kill_group(self.proc)
            wait_exit(self.proc, 3)
        self.log.close()
        return rc

    def log_lines(self):
        """This run's log lines (not those of an earlier run on the same port)."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self.log_offset)
                return f.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return []

    def setups(self, mount):
        """The Transport headers of the SETUPs the camera received for `mount`."""
        out = []
        for line in self.log_lines():
            m = re.search(r"SETUP (/\S+) from \S+ Transport: (.*)", line)
            if m and m.group(1).startswith(mount + "/"):
                out.append(m.group(2))
        return out

    def events(self):
        """[(monotonic time, text)] of this run's client events, in the camera's order."""
        out = []
        for line in self.log_lines():
            m = self.EVENT.match(line)
            if m:
                out.append((float(m.group(1)), m.group(2)))
        return out

    @staticmethod
    def _of_mount(path, mount):
        return path == mount or path.startswith(mount + "/")

    def requests(self, mount):
        """[(t, method, client)] of the RTSP requests for `mount` (DESCRIBE, SETUP, PLAY,
        TEARDOWN; the camera does not log OPTIONS or keepalives)."""
        out = []
        for t, text in self.events():
            m = re.match(r"(DESCRIBE|SETUP|PLAY|TEARDOWN) (/\S*) from (\S+)", text)
            if m and self._of_mount(m.group(2), mount):
                out.append((t, m.group(1), m.group(3)))
        return out

    def sessions(self, mount):
        """{session id: [created, removed or None]} of the RTSP sessions of `mount`."""
        out = {}
        for t, text in self.events():
            m = re.match(r"session (\S+) (new|removed) for (\S+)", text)
            if m and self._of_mount(m.group(3), mount):
                span = out.setdefault(m.group(1), [None, None])
                span[0 if m.group(2) == "new" else 1] = t
        return out

    def open_sessions(self, mount):
        return [sid for sid, (_, removed) in self.sessions(mount).items() if removed is None]

    def connections(self):
        """{client: [connected, closed or None]} of every RTSP connection to the camera."""
        out = {}
        for t, text in self.events():
            m = re.match(r"(?:connect|client) (\S+)(?: (closed))?", text)
            if m:
                span = out.setdefault(m.group(1), [None, None])
                span[1 if m.group(2) else 0] = t
        return out


# ---------------------------------------------------------------------------------------
# nginx as a caching reverse proxy (tests/interop/nginx_cache.conf)


class Nginx:
    """nginx in front of a muxcast, configured by tests/interop/nginx_cache.conf: pid, logs,
    cache and temp files in WORKDIR/NAME, in the foreground (daemon off), on a free
    127.0.0.1 port. Its access log has one JSON line per client request with the requests
    it sent upstream for it (see the file)."""

    CONF = ROOT / "tests" / "interop" / "nginx_cache.conf"

    def __init__(self, ctx, name, upstream):
        self.name = name
        self.binary = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").is_file() else None)
        if not self.binary:
            raise CheckFailed("nginx not installed (.ci/run installs Debian's nginx)")
        self.dir = ctx.workdir / name
        (self.dir / "tmp").mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            # The master runs as root, its workers as nobody: they must reach the cache and
            # temp directories (nginx creates those for them) through the work directory.
            os.chmod(ctx.workdir, 0o711)
            os.chmod(self.dir, 0o755)
        self.port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        conf = (self.CONF.read_text().replace("@DIR@", str(self.dir)).replace("@LISTEN@", self.addr)
                .replace("@UPSTREAM@", upstream))
        self.conf_path = self.dir / "nginx.conf"
        self.conf_path.write_text(conf)
        self.access_log = self.dir / "access.log"
        self.error_log = self.dir / "error.log"
        argv = [self.binary, "-p", self.dir, "-c", self.conf_path, "-e", self.error_log]
        t = run(argv + ["-t"], timeout=20)
        if t.returncode != 0:
            raise CheckFailed(f"{name}: nginx -t rejects {self.conf_path}: {(t.stderr or t.stdout).strip()[-400:]}")
        self.log = open(self.dir / "stdout.log", "wb")
        self.proc = spawn(argv, stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                pass
            if self.proc.poll() is not None:
                raise CheckFailed(f"{name}: nginx exited with {self.proc.returncode}; "
                                  f"{' | '.join(tail(self.error_log, 6))}")
            if time.monotonic() > deadline:
                raise CheckFailed(f"{name}: nginx not listening on {self.addr} after 10 s")
            time.sleep(0.05)

    def url(self, path):
        return f"http://{self.addr}{path}"

    def version(self):
        r = run([self.binary, "-v"], timeout=10)
        return (r.stderr or r.stdout).strip().replace("nginx version: ", "")

    def entries(self):
        """The access log's lines as dicts (`up` as a list of upstream addresses)."""
        out = []
        try:
            text = self.access_log.read_text(errors="replace")
        except OSError:
            return out
        for line in text.splitlines():
            try:
                e = json.loads(line)
            except ValueError:
                continue
            # "A, B" for retries, "A : B" across an internal redirect.
            e["up"] = [a for a in re.split(r"\s*[,:]\s+", e.get("up") or "") if a and a != "-"]
            out.append(e)
        return out

    def stop(self, timeout=5):
        """SIGQUIT (graceful: workers finish their requests and write their logs); the exit
        code, or None if it had to be killed."""
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGQUIT)
            except ProcessLookupError:
                pass
        rc = wait_exit(self.proc, timeout)
        if rc is None:
            kill_group(self.proc)
            wait_exit(self.proc, 3)
        self.log.close()
        return rc

    def error_tail(self, n=8):
        return [l for l in tail(self.error_log, 60) if "[notice]" not in l][-n:]


MEDIA_PATH = re.compile(r"\.(m4s|mp4)(\?|$)")


def media_upstream_counts(entries):
    """From Nginx.entries(): {path: (client requests, upstream requests, {user agent kind:
    client requests})} for every init segment, segment and part URL."""
    out = {}
    for e in entries:
        uri = e.get("uri") or ""
        if not MEDIA_PATH.search(uri):
            continue
        n, up, by = out.get(uri, (0, 0, {}))
        ua = e.get("ua") or ""
        kind = re.sub(r"/.*", "", ua) if ua.startswith("interop-") else ("browser" if "Mozilla" in ua else ua or "-")
        by[kind] = by.get(kind, 0) + 1
        out[uri] = (n + 1, up + len(e["up"]), by)
    return out


class HlsFollower:
    """A minimal HLS viewer for load through a cache: per rendition, it reads the media
    playlist and fetches the init segment and every new segment (plain HLS: a reload every
    second), or, with `low_latency`, every part: it asks for the preload-hinted part and,
    at the same time, makes a blocking reload for it (the server holds both until the part
    exists), as hls.js does. Stdlib only, a thread per rendition, a User-Agent of its own
    (`interop-follower-N`). `stop()` ends it; `.fetched`, `.errors` say what it did."""

    MSN_PART = re.compile(r"part(\d+)\.(\d+)\.m4s$")

    def __init__(self, base, renditions, index, low_latency, seconds):
        self.base, self.ua = base.rstrip("/"), f"interop-follower-{index}"
        self.low_latency = low_latency
        self.deadline = time.monotonic() + seconds
        self.stopped = threading.Event()
        self.lock = threading.Lock()
        self.fetched = {}  # url -> status
        self.errors = []
        self.requests = 0
        self.threads = [threading.Thread(target=self._run, args=(r,), daemon=True) for r in renditions]

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def stop(self):
        self.stopped.set()
        for t in self.threads:
            t.join(15)
        return self

    def _get(self, url, timeout=10):
        req = urllib.request.Request(url, headers={"User-Agent": self.ua})
        with self.lock:
            self.requests += 1
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()
        except OSError as e:
            return f"{type(e).__name__}: {e}", b""

    def _fetch(self, url):
        with self.lock:
            if url in self.fetched:
                return
            self.fetched[url] = None
        status, _ = self._get(url)
        with self.lock:
            self.fetched[url] = status
            if status != 200:
                self.errors.append(f"{status} for {url}")

    def _live(self):
        return not self.stopped.is_set() and time.monotonic() < self.deadline

    def _run(self, rendition):
        base = f"{self.base}/{rendition}/"
        query = ""
        first = True
        hinted = None
        while self._live():
            status, body = self._get(base + "index.m3u8" + query)
            if hinted:
                hinted.join(15)
                hinted = None
            if status != 200:
                with self.lock:
                    self.errors.append(f"{status} for {rendition}/index.m3u8{query}")
                self.stopped.wait(0.5)
                query = ""
                continue
            lines = body.decode(errors="replace").splitlines()
            m = next((re.search(r'URI="([^"]+)"', l) for l in lines if l.startswith("#EXT-X-MAP:")), None)
            if m:
                self._fetch(base + m.group(1))
            segments = [l for l in lines if l and not l.startswith("#")]
            if not self.low_latency:
                # A player starts three segments from the end, then takes every new one.
                for s in (segments[-3:] if first else segments):
                    if not self._live():
                        break
                    self._fetch(base + s)
                first = False
                self.stopped.wait(1.0)
                continue
            # Low latency: the parts after the last complete segment, then the hinted one.
            tail_start = max((i for i, l in enumerate(lines) if l.startswith("#EXTINF")), default=-1)
            parts = [re.search(r'URI="([^"]+)"', l).group(1) for l in lines[tail_start + 1:]
                     if l.startswith("#EXT-X-PART:")]
            for p in parts:
                self._fetch(base + p)
            hint = next((re.search(r'URI="([^"]+)"', l) for l in lines if l.startswith("#EXT-X-PRELOAD-HINT:")), None)
            if not hint or not self._live():
                self.stopped.wait(0.2)
                query = ""
                continue
            # The hinted part and the blocking reload for it, at the same time (as hls.js):
            # the server holds both until the part exists.
            hinted = threading.Thread(target=self._fetch, args=(base + hint.group(1),), daemon=True)
            hinted.start()
            mp = self.MSN_PART.search(hint.group(1))
            query = f"?_HLS_msn={mp.group(1)}&_HLS_part={mp.group(2)}" if mp else ""
        if hinted:
            hinted.join(15)


# ---------------------------------------------------------------------------------------
# HTTP clients


def http_get(url, timeout=5, method="GET"):
    """(status, headers, body) of a finite response."""
    req = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


class SocketReader(threading.Thread):
    """A raw-socket viewer: GET `path`, then write the body to `out` for `seconds` seconds
    (or until the server closes). The third kind of client in the frame-identity checks."""

    def __init__(self, addr, path, out, seconds):
        super().__init__(daemon=True)
        self.addr, self.path, self.out, self.seconds = addr, path, Path(out), seconds
        self.status_line = None
        self.headers = {}
        self.body_bytes = 0
        self.eof = False
        self.error = None
        self.arrivals = []  # (time.monotonic(), bytes) of every body chunk, for gap measurements
        self.stopped = threading.Event()

    def run(self):
        host, port = self.addr.rsplit(":", 1)
        deadline = time.monotonic() + self.seconds
        try:
            with socket.create_connection((host, int(port)), timeout=5) as s, open(self.out, "wb") as f:
                s.sendall(f"GET {self.path} HTTP/1.1\r\nHost: {self.addr}\r\nUser-Agent: interop-socket\r\n\r\n".encode())
                buf = b""
                while b"\r\n\r\n" not in buf:
                    chunk = s.recv(4096)
                    if not chunk:
                        raise CheckFailed(f"connection closed inside the response head: {buf[:200]!r}")
                    buf += chunk
                    if len(buf) > 65536:
                        raise CheckFailed("response head larger than 64 KiB")
                head, body = buf.split(b"\r\n\r\n", 1)
                lines = head.decode("latin-1").split("\r\n")
                self.status_line = lines[0]
                for l in lines[1:]:
                    k, _, v = l.partition(":")
                    self.headers[k.strip().lower()] = v.strip()
                f.write(body)
                self.body_bytes += len(body)
                if body:
                    self.arrivals.append((time.monotonic(), len(body)))
                while True:
                    left = deadline - time.monotonic()
                    if left <= 0 or self.stopped.is_set():
                        break
                    s.settimeout(min(left, 0.5))
                    try:
                        chunk = s.recv(65536)
                    except socket.timeout:
                        continue
                    if not chunk:
                        self.eof = True
                        break
                    f.write(chunk)
                    self.body_bytes += len(chunk)
                    self.arrivals.append((time.monotonic(), len(chunk)))
        except Exception as e:  # reported by the check that reads .error
            self.error = f"{type(e).__name__}: {e}"

    def stop(self):
        """Ends the capture before its `seconds` (within half a second)."""
        self.stopped.set()
        return self

    def finish(self, timeout):
        self.join(timeout)
        if self.is_alive():
            raise CheckFailed(f"socket reader of {self.path} still running after {timeout}s")
        return self


def read_head_bytes(url, n=256, timeout=5):
    """Status, headers and the first `n` body bytes of a (possibly endless) response."""
    req = urllib.request.Request(url)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read(n)
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def ffmpeg_capture(url, out, seconds):
    """Starts `ffmpeg -i URL -c copy -t SECONDS out.mkv` (a Popen; bound it with wait_exit)."""
    return spawn(
        ["ffmpeg", "-nostdin", "-hide_banner", "-v", "error", "-rw_timeout", "10000000",
         "-i", url, "-map", "0", "-c", "copy", "-t", str(seconds), "-f", "matroska", "-y", out],
        stdout=subprocess.DEVNULL, stderr=open(str(out) + ".log", "wb"),
    )


def curl_capture(url, out, seconds):
    """Starts `curl --max-time SECONDS -o out URL` (a Popen). Exit 28 = time limit reached."""
    return spawn(
        ["curl", "-sS", "--max-time", str(seconds), "-o", out, "-D", str(out) + ".head", url],
        stdout=subprocess.DEVNULL, stderr=open(str(out) + ".log", "wb"),
    )


def ffprobe_streams(url_or_path, timeout=20):
    """ffprobe's streams (codec_type, codec_name, width, height, sample_rate, channels)."""
    r = run(["ffprobe", "-v", "error", "-analyzeduration", "3000000",
             "-show_entries", "stream=index,codec_type,codec_name,width,height,sample_rate,channels",
             "-show_entries", "format=format_name", "-of", "json", url_or_path], timeout=timeout)
    if r.returncode != 0:
        raise CheckFailed(f"ffprobe {url_or_path} failed ({r.returncode}): {r.stderr.strip()[:300]}")
    doc = json.loads(r.stdout or "{}")
    return doc.get("streams", []), doc.get("format", {}).get("format_name")


def probe_summary(streams):
    """{codec_type: (codec_name, WxH or rate/channels)} for comparisons and messages."""
    out = {}
    for s in streams:
        t = s.get("codec_type")
        if t == "video":
            out[t] = (s.get("codec_name"), f"{s.get('width')}x{s.get('height')}")
        elif t == "audio":
            out[t] = (s.get("codec_name"), f"{s.get('sample_rate')}Hz/{s.get('channels')}ch")
        else:
            out[t] = (s.get("codec_name"), "")
    return out


# ---------------------------------------------------------------------------------------
# framecrc: the packets of a file, as ffmpeg sees them


class Track:
    def __init__(self, index):
        self.index = index
        self.media_type = None
        self.codec = None
        self.dimensions = None
        self.packets = []  # (size, crc, key)
        self.dts = []  # ffmpeg's dts per packet, in the stream's time base

    def __repr__(self):
        return f"Track({self.media_type} {self.codec} {len(self.packets)} packets)"


def framecrc(path, timeout=60, allow_errors=False):
    """{media_type: Track} from `ffmpeg -i path -map 0 -c copy -f framecrc -`.
    Packet lines are `index, dts, pts, duration, size, crc[, F=flags][, S=...]`; a line
    without F= is a keyframe. Timestamps are ignored (the server re-bases them)."""
    r = run(["ffmpeg", "-nostdin", "-v", "error", "-i", path, "-map", "0", "-c", "copy", "-f", "framecrc", "-"],
            timeout=timeout)
    if r.returncode != 0 and not allow_errors:
        raise CheckFailed(f"ffmpeg framecrc {path} failed ({r.returncode}): {r.stderr.strip()[:300]}")
    tracks = {}

    def t(i):
        return tracks.setdefault(i, Track(i))

    header = re.compile(r"#(\w+) (\d+): (.*)")
    for line in r.stdout.splitlines():
        if line.startswith("#"):
            m = header.match(line)
            if m:
                key, idx, val = m.group(1), int(m.group(2)), m.group(3).strip()
                if key == "media_type":
                    t(idx).media_type = val
                elif key == "codec_id":
                    t(idx).codec = val
                elif key == "dimensions":
                    t(idx).dimensions = val
            continue
        fields = [f.strip() for f in line.split(",")]
        if len(fields) < 6:
            continue
        try:
            idx, dts, size, crc = int(fields[0]), int(fields[1]), int(fields[4]), fields[5]
        except ValueError:
            continue
        flags = [f for f in fields[6:] if f.startswith("F=")]
        key = not flags or (int(flags[0][2:], 16) & 1) == 1
        t(idx).packets.append((size, crc, key))
        t(idx).dts.append(dts)
    by_type = {}
    for tr in tracks.values():
        if tr.media_type in by_type:
            raise CheckFailed(f"{path}: two {tr.media_type} streams; the suite expects one of each")
        by_type[tr.media_type] = tr
    return by_type


def find_run(source, received, cyclic):
    """Offset k such that received[i] == source[(k + i) % n] for every i (without wrap when
    not cyclic), or None. Packets compare by (size, crc)."""
    src = [(p[0], p[1]) for p in source]
    rec = [(p[0], p[1]) for p in received]
    n, m = len(src), len(rec)
    if m == 0 or n == 0:
        return None
    for k in range(n):
        if src[k] != rec[0]:
            continue
        if not cyclic and k + m > n:
            continue
        if all(src[(k + i) % n] == rec[i] for i in range(m)):
            return k
    return None


def first_mismatch(source, received, k):
    n = len(source)
    for i, p in enumerate(received):
        s = source[(k + i) % n]
        if (s[0], s[1]) != (p[0], p[1]):
            return i, s, p
    return None


def compare_tracks(src_tracks, got_tracks, cyclic, truncatable, min_video=25, min_audio=25):
    """Checks that, per media type, the received packets (from the first keyframe on) are a
    contiguous run of the source's packets (cyclically when the source loops). Returns
    (ok, summary, details)."""
    ok = True
    parts, details = [], []
    for mt, src in sorted(src_tracks.items()):
        if mt not in ("video", "audio"):
            continue
        got = got_tracks.get(mt)
        if got is None:
            ok = False
            details.append(f"{mt}: missing from the received file (got {sorted(got_tracks)})")
            continue
        if got.codec != src.codec:
            ok = False
            details.append(f"{mt}: codec {got.codec}, source has {src.codec}")
        pk = got.packets
        first_key = next((i for i, p in enumerate(pk) if p[2]), None)
        if first_key is None:
            ok = False
            details.append(f"{mt}: no keyframe among {len(pk)} received packets")
            continue
        if mt == "video" and first_key != 0:
            details.append(f"{mt}: {first_key} packets before the first keyframe (ignored)")
        pk = pk[first_key:]
        k = find_run(src.packets, pk, cyclic)
        dropped = 0
        if k is None and truncatable and len(pk) > 1:
            k = find_run(src.packets, pk[:-1], cyclic)
            if k is not None:
                dropped = 1
                pk = pk[:-1]
        need = min_video if mt == "video" else min_audio
        if k is None:
            ok = False
            # Say where the longest matching prefix breaks, to make the failure readable.
            best = None
            for start in range(len(src.packets)):
                if (src.packets[start][0], src.packets[start][1]) != (pk[0][0], pk[0][1]):
                    continue
                mm = first_mismatch(src.packets, pk, start)
                if mm is None:
                    best = (start, None)
                    break
                if best is None or mm[0] > best[1][0]:
                    best = (start, mm)
            if best and best[1] is None:
                details.append(
                    f"{mt}: {len(pk)} packets match source[{best[0]}..] only by wrapping past the end "
                    f"of the source's {len(src.packets)} packets, and the input does not loop"
                )
            elif best:
                start, (i, s, p) = best
                details.append(
                    f"{mt}: {len(pk)} packets; best run starts at source packet {start} and breaks at "
                    f"received packet {i}: got size {p[0]} crc {p[1]}, source packet "
                    f"{(start + i) % len(src.packets)} has size {s[0]} crc {s[1]}"
                )
            else:
                details.append(f"{mt}: the first received packet (size {pk[0][0]} crc {pk[0][1]}) is not in the source")
            continue
        if mt == "video" and not pk[0][2]:
            ok = False
            details.append(f"{mt}: the run does not start at a keyframe")
        if len(pk) < need:
            ok = False
            details.append(f"{mt}: only {len(pk)} packets received, want at least {need}")
        wraps = (k + len(pk) - 1) // len(src.packets)
        parts.append(
            f"{mt} {len(pk)} pkts = source[{k}..]" + (f" wrapping {wraps}x" if wraps else "")
            + (" (truncated last packet dropped)" if dropped else "")
        )
    return ok, "; ".join(parts), details


def dts_problems(tracks):
    """Places where a stream's dts does not increase (a player's demuxer would choke)."""
    out = []
    for mt, tr in sorted(tracks.items()):
        bad = [(i, tr.dts[i - 1], tr.dts[i]) for i in range(1, len(tr.dts)) if tr.dts[i] <= tr.dts[i - 1]]
        if bad:
            out.append(f"{mt}: {len(bad)} non-increasing dts, first at packet {bad[0][0]}: {bad[0][1]} -> {bad[0][2]}")
    return out


def decode_problems(path, timeout=60):
    """What `ffmpeg -v warning -i path -f null -` complains about (empty: decodes cleanly)."""
    r = run(["ffmpeg", "-nostdin", "-v", "warning", "-i", path, "-f", "null", "-"], timeout=timeout)
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    if r.returncode != 0:
        lines.insert(0, f"exit {r.returncode}")
    return lines


# ---------------------------------------------------------------------------------------
# ISO BMFF (fMP4) boxes, enough to name a sample entry and the NAL units of a segment


def mp4_boxes(data):
    """[(type, payload)] of the boxes at the top level of `data`."""
    out, i = [], 0
    while i + 8 <= len(data):
        size = int.from_bytes(data[i:i + 4], "big")
        typ = data[i + 4:i + 8].decode("latin-1")
        hdr = 8
        if size == 1:
            size = int.from_bytes(data[i + 8:i + 16], "big")
            hdr = 16
        elif size == 0:
            size = len(data) - i
        if size < hdr or i + size > len(data):
            raise CheckFailed(f"box {typ!r} at offset {i}: size {size} overruns the {len(data)} bytes")
        out.append((typ, data[i + hdr:i + size]))
        i += size
    return out


def mp4_path(data, *path):
    """Payload of the first box along `path` (e.g. "moov", "trak", "mdia"), or None."""
    for name in path:
        found = next((p for t, p in mp4_boxes(data) if t == name), None)
        if found is None:
            return None
        data = found
    return data


def video_sample_entry(init):
    """(type, {child type: payload}) of the first sample entry of the first video track of
    an init segment: e.g. ("hvc1", {"hvcC": ..., "pasp": ...})."""
    moov = mp4_path(init, "moov")
    if moov is None:
        raise CheckFailed(f"no moov among {[t for t, _ in mp4_boxes(init)]}")
    for typ, trak in mp4_boxes(moov):
        if typ != "trak":
            continue
        hdlr = mp4_path(trak, "mdia", "hdlr")
        if not hdlr or hdlr[8:12] != b"vide":
            continue
        stsd = mp4_path(trak, "mdia", "minf", "stbl", "stsd")
        if stsd is None:
            raise CheckFailed("video trak without stsd")
        entries = mp4_boxes(stsd[8:])  # version/flags, entry_count
        if not entries:
            raise CheckFailed("empty stsd")
        etype, body = entries[0]
        children = {t: p for t, p in mp4_boxes(body[78:])}  # after the VisualSampleEntry fields
        return etype, children
    raise CheckFailed("no video trak in the init segment")


def audio_sample_entry(init):
    """(type, {child type: payload}) of the first sample entry of the first audio track of
    an init segment: e.g. ("fLaC", {"dfLa": ...}) or ("mp4a", {"esds": ...})."""
    moov = mp4_path(init, "moov")
    if moov is None:
        raise CheckFailed(f"no moov among {[t for t, _ in mp4_boxes(init)]}")
    for typ, trak in mp4_boxes(moov):
        if typ != "trak":
            continue
        hdlr = mp4_path(trak, "mdia", "hdlr")
        if not hdlr or hdlr[8:12] != b"soun":
            continue
        stsd = mp4_path(trak, "mdia", "minf", "stbl", "stsd")
        if stsd is None:
            raise CheckFailed("audio trak without stsd")
        entries = mp4_boxes(stsd[8:])
        if not entries:
            raise CheckFailed("empty stsd")
        etype, body = entries[0]
        children = {t: p for t, p in mp4_boxes(body[28:])}  # after the AudioSampleEntry fields
        return etype, children
    raise CheckFailed("no audio trak in the init segment")


def hvcc_arrays(hvcc):
    """[(nal_unit_type, array_completeness, count)] of an hvcC payload."""
    if len(hvcc) < 23:
        raise CheckFailed(f"hvcC of {len(hvcc)} bytes")
    arrays, i = [], 23
    for _ in range(hvcc[22]):
        completeness, nal_type = hvcc[i] >> 7, hvcc[i] & 0x3F
        n = int.from_bytes(hvcc[i + 1:i + 3], "big")
        i += 3
        for _ in range(n):
            i += 2 + int.from_bytes(hvcc[i:i + 2], "big")
        arrays.append((nal_type, completeness, n))
    return arrays


def hevc_nal_types(segment, length_size=4):
    """The HEVC NAL unit types of every sample in a CMAF segment (moof+mdat pairs), in order:
    [[types of sample 1], [types of sample 2], ...]."""
    samples, pending = [], []
    for typ, body in mp4_boxes(segment):
        if typ == "moof":
            pending = []
            traf = mp4_path(body, "traf")
            trun = next((p for t, p in mp4_boxes(traf) if t == "trun"), None) if traf else None
            if trun is None:
                raise CheckFailed("moof without traf/trun")
            flags = int.from_bytes(trun[1:4], "big")
            count = int.from_bytes(trun[4:8], "big")
            j = 8 + (4 if flags & 0x1 else 0) + (4 if flags & 0x4 else 0)
            if not flags & 0x200:
                raise CheckFailed("trun without sample sizes (tfhd default sizes are not read here)")
            for _ in range(count):
                if flags & 0x100:
                    j += 4
                pending.append(int.from_bytes(trun[j:j + 4], "big"))
                j += 4
                j += (4 if flags & 0x400 else 0) + (4 if flags & 0x800 else 0)
        elif typ == "mdat":
            off = 0
            for size in pending:
                sample, off = body[off:off + size], off + size
                types, k = [], 0
                while k + length_size <= len(sample):
                    n = int.from_bytes(sample[k:k + length_size], "big")
                    if n == 0 or k + length_size + n > len(sample):
                        types.append("bad-length")
                        break
                    types.append((sample[k + length_size] >> 1) & 0x3F)
                    k += length_size + n
                samples.append(types)
            pending = []
    return samples
