#!/usr/bin/env node
// Plays a muxcast stream with hls.js or dash.js in headless Chromium (Debian's
// /usr/bin/chromium, driven by playwright-core) and prints one JSON object on stdout:
// what the player did (errors, seconds played, stalls, frames decoded, the SourceBuffers it
// created and the bytes it appended to each) and the live latency the player itself
// reports, sampled every 250 ms.
//
//   node play.mjs --url http://127.0.0.1:8080/live/index.m3u8 --player hls [--low-latency]
//                 [--seconds 20] [--warmup 5] [--start-timeout 20]
//                 [--chromium /usr/bin/chromium] [--screenshot out.png] [--live-delay S]
//
// --live-delay overrides the target latency the stream signals (hls.js liveSyncDuration,
// dash.js streaming.delay.liveDelay): for diagnosis only, the checks use what the stream
// itself tells the players.
//
// The page and the player scripts come from a tiny HTTP server of this script on
// 127.0.0.1:0, a different origin from muxcast's, so CORS is exercised as in a real
// deployment. Chromium may reach 127.0.0.1 only (host resolver rules; no background
// networking); a request anywhere else is listed under `requests.off_loopback`.
//
// The clock of a run starts at the video element's first `playing` event; the run lasts
// --seconds from there. Latency statistics use the samples after --warmup seconds.
// Exit code 0 whenever a JSON report was printed (the caller judges it), 2 on bad usage,
// 3 when the browser could not be driven at all.

import { createServer } from 'node:http';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));

const { values: opt } = parseArgs({
  options: {
    url: { type: 'string' },
    player: { type: 'string' },
    'low-latency': { type: 'boolean', default: false },
    seconds: { type: 'string', default: '20' },
    warmup: { type: 'string', default: '5' },
    'start-timeout': { type: 'string', default: '20' },
    chromium: { type: 'string', default: '/usr/bin/chromium' },
    screenshot: { type: 'string' },
    'live-delay': { type: 'string' },
  },
});
if (!opt.url || !['hls', 'dash'].includes(opt.player)) {
  process.stderr.write('usage: play.mjs --url MANIFEST_URL --player hls|dash [--low-latency] [--seconds N]\n');
  process.exit(2);
}
const seconds = Number(opt.seconds);
const warmup = Number(opt.warmup);
const startTimeout = Number(opt['start-timeout']);
const lowLatency = opt['low-latency'];

// A hard bound on the whole run, whatever hangs.
const hardLimit = setTimeout(() => {
  process.stderr.write('play.mjs: hard time limit reached\n');
  process.exit(3);
}, (startTimeout + seconds + 60) * 1000);
hardLimit.unref();

const scripts = {
  '/hls.js': join(here, 'node_modules/hls.js/dist/hls.min.js'),
  '/dash.js': join(here, 'node_modules/dashjs/dist/modern/umd/dash.mediaplayer.min.js'),
};

// The page. Everything it learns goes into window.__r, read by this script.
function pageHtml(cfg) {
  return `<!doctype html>
<html><head><meta charset="utf-8"><title>muxcast ${cfg.player}</title>
<script src="/${cfg.player}.js"></script></head>
<body><video id="v" muted autoplay playsinline width="320" height="240"></video>
<script>
const cfg = ${JSON.stringify(cfg)};
const R = window.__r = { errors: [], waiting: [], stalled: 0, seeks: [], samples: [], rates: [],
                         firstPlayingAt: null, loadedAt: performance.now(), info: {} };
const v = document.getElementById('v');
v.muted = true;
const rel = () => R.firstPlayingAt === null ? null : (performance.now() - R.firstPlayingAt) / 1000;
const since = () => (performance.now() - R.loadedAt) / 1000;
const frames = () => { const q = v.getVideoPlaybackQuality(); return [q.totalVideoFrames, q.droppedVideoFrames]; };
let startCt = null, startFrames = null;
v.addEventListener('playing', () => {
  if (R.firstPlayingAt === null) {
    R.firstPlayingAt = performance.now();
    R.startupSeconds = since();
    startCt = v.currentTime;
    startFrames = frames();
    R.start = { currentTime: startCt, frames: startFrames };
  }
});
v.addEventListener('waiting', () => R.waiting.push({ t: rel(), since: since(), currentTime: v.currentTime }));
v.addEventListener('stalled', () => { R.stalled++; });
v.addEventListener('seeking', () => R.seeks.push({ t: rel(), since: since(), from: R.lastCt, to: v.currentTime }));
v.addEventListener('ratechange', () => R.rates.push(v.playbackRate));
v.addEventListener('error', () => {
  const e = v.error;
  R.errors.push({ source: 'video', fatal: true, t: rel(), code: e && e.code, message: e && e.message });
});
const codecs = ['video/mp4; codecs="avc1.64000d"', 'audio/mp4; codecs="mp4a.40.2"', 'video/mp4; codecs="vp09.00.10.08"',
                'audio/mp4; codecs="opus"', 'video/mp4; codecs="hvc1.1.6.L60.90"', 'audio/mp4; codecs="flac"',
                'audio/mp4; codecs="fLaC"'];
R.info.mse = {};
for (const c of codecs) R.info.mse[c] = !!(window.MediaSource && MediaSource.isTypeSupported(c));
// Every SourceBuffer the player creates (its MIME type) and what it was given, so a run
// shows which tracks really reached the media pipeline (e.g. FLAC audio, not just video).
const sourceBuffers = [];
if (window.MediaSource) {
  const addSourceBuffer = MediaSource.prototype.addSourceBuffer;
  MediaSource.prototype.addSourceBuffer = function (type) {
    const sb = addSourceBuffer.call(this, type);
    const rec = { type, appends: 0, bytes: 0 };
    sourceBuffers.push([rec, sb]);
    const append = sb.appendBuffer;
    sb.appendBuffer = function (data) { rec.appends++; rec.bytes += data.byteLength || 0; return append.call(this, data); };
    return sb;
  };
}
R.sourceBuffers = () => sourceBuffers.map(([rec, sb]) => {
  let buffered = null;
  try { buffered = sb.buffered.length ? [sb.buffered.start(0), sb.buffered.end(sb.buffered.length - 1)] : []; } catch (e) { buffered = null; }
  return Object.assign({ buffered }, rec);
});

let latency = () => null, target = () => null, wallLatency = () => null, extra = () => ({});
try {
  if (cfg.player === 'hls') {
    R.info.version = Hls.version;
    if (!Hls.isSupported()) throw new Error('Hls.isSupported() is false');
    const hls = window.__hls = new Hls(Object.assign({ lowLatencyMode: cfg.lowLatency, debug: false },
                                           cfg.liveDelay === null ? {} : { liveSyncDuration: cfg.liveDelay }));
    hls.on(Hls.Events.ERROR, (ev, d) => {
      R.errors.push({
        source: 'hls.js', fatal: !!d.fatal, t: rel(), since: since(), type: d.type, details: d.details,
        reason: d.reason || (d.error && d.error.message) || undefined,
        url: d.url || (d.frag && d.frag.url) || (d.part && d.part.url) || (d.context && d.context.url) || undefined,
        code: d.response && d.response.code, buffer: d.buffer,
      });
    });
    hls.on(Hls.Events.MANIFEST_PARSED, (ev, d) => {
      R.info.levels = d.levels.map(l => ({ codecs: [l.videoCodec, l.audioCodec], w: l.width, h: l.height }));
      v.play().catch(e => R.errors.push({ source: 'play()', fatal: true, t: rel(), message: String(e) }));
    });
    hls.on(Hls.Events.LEVEL_LOADED, (ev, d) => {
      R.info.live = d.details.live;
      R.info.partTarget = d.details.partTarget;
      R.info.partHoldBack = d.details.partHoldBack;
      R.info.canBlockReload = d.details.canBlockReload;
    });
    hls.loadSource(cfg.url);
    hls.attachMedia(v);
    latency = () => hls.latency;
    target = () => hls.targetLatency;
    // Wall-clock latency from EXT-X-PROGRAM-DATE-TIME: now minus the date of the frame on
    // screen (the last segment starting at or before currentTime, extrapolated).
    wallLatency = () => {
      const lv = hls.levels[hls.currentLevel];
      const d = lv && lv.details;
      if (!d) return null;
      const ct = v.currentTime;
      for (let i = d.fragments.length - 1; i >= 0; i--) {
        const f = d.fragments[i];
        if (f.start <= ct && f.programDateTime !== null) return (Date.now() - f.programDateTime - (ct - f.start) * 1000) / 1000;
      }
      return null;
    };
    extra = () => ({ ll: hls.lowLatencyMode });
  } else {
    R.info.version = dashjs.Version || (dashjs.MediaPlayer().create().getVersion());
    const p = window.__dash = dashjs.MediaPlayer().create();
    const streaming = {
      // Where the MPD's UTCTiming fails, stay on the server's clock (never a public time server).
      utcSynchronization: { defaultTimingSource: { scheme: 'urn:mpeg:dash:utc:http-iso:2014', value: cfg.timeUrl } },
    };
    if (!cfg.lowLatency) {
      // A conventional live configuration: three segments behind the edge, no catch-up.
      // Three 2 s segments, as hls.js's default of three target durations.
      streaming.delay = { liveDelay: 6 };
      streaming.liveCatchup = { enabled: false };
    }
    // Low latency: dash.js as the MPD drives it (availabilityTimeComplete="false" makes it
    // fetch chunked segments; ServiceDescription gives the target latency and the
    // playback-rate range of its catch-up).
    if (cfg.liveDelay !== null) streaming.delay = { liveDelay: cfg.liveDelay };
    p.updateSettings({ debug: { logLevel: dashjs.Debug.LOG_LEVEL_WARNING }, streaming });
    const E = dashjs.MediaPlayer.events;
    p.on(E.ERROR, e => {
      const err = e.error || {};
      R.errors.push({ source: 'dash.js', fatal: true, t: rel(), since: since(), code: err.code,
                      message: String(err.message || '').slice(0, 500), data: err.data && JSON.stringify(err.data).slice(0, 300) });
    });
    p.on(E.PLAYBACK_ERROR, e => {
      R.errors.push({ source: 'dash.js playbackError', fatal: true, t: rel(), since: since(),
                      message: String((e.error && (e.error.message || e.error.code)) || e.error || '') });
    });
    p.on(E.STREAM_INITIALIZED, () => { R.info.lowLatencyMode = p.getLowLatencyModeEnabled(); });
    p.initialize(v, cfg.url, true);
    latency = () => { const l = p.getCurrentLiveLatency(); return Number.isFinite(l) ? l : null; };
    target = () => { const t = p.getTargetLiveDelay(); return Number.isFinite(t) ? t : null; };
    extra = () => ({ ll: p.getLowLatencyModeEnabled(), buffer: p.getBufferLength('video') });
  }
} catch (e) {
  R.errors.push({ source: 'setup', fatal: true, message: String(e && e.stack || e) });
}

setInterval(() => {
  const [total, dropped] = frames();
  let l = null, tl = null, wl = null, x = {};
  try { l = latency(); tl = target(); wl = wallLatency(); x = extra(); } catch (e) { x = { error: String(e) }; }
  R.lastCt = v.currentTime;
  R.samples.push({ t: rel(), since: since(), ct: v.currentTime, paused: v.paused, rate: v.playbackRate,
                   latency: l, target: tl, wall: wl, frames: total, dropped, ...x });
}, 250);
</script></body></html>`;
}

function median(xs) {
  if (!xs.length) return null;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}
const r3 = x => (x === null || x === undefined || !Number.isFinite(x) ? null : Math.round(x * 1000) / 1000);
function stats(xs) {
  const v = xs.filter(x => x !== null && x !== undefined && Number.isFinite(x) && x > 0);
  if (!v.length) return { n: 0, median: null, max: null, min: null };
  return { n: v.length, median: r3(median(v)), max: r3(Math.max(...v)), min: r3(Math.min(...v)) };
}

function summarize(cfg, r, requests, consoleLines, pageErrors) {
  const s = r.samples.filter(x => x.t !== null && x.t <= seconds + 0.3);
  const last = s[s.length - 1];
  // Seconds of media played continuously: positive currentTime steps no larger than what
  // can be played in the wall time between two samples (a seek forward is not playing).
  let played = 0;
  let frozen = 0; // longest run of samples in which currentTime did not move, in seconds
  let run = 0;
  for (let i = 1; i < s.length; i++) {
    const dt = s[i].t - s[i - 1].t;
    const dc = s[i].ct - s[i - 1].ct;
    if (dc > 0 && dc <= dt * 2.5 + 0.05) played += dc;
    if (dc <= 0) { run += dt; frozen = Math.max(frozen, run); } else run = 0;
  }
  const afterWarmup = s.filter(x => x.t >= warmup);
  const start = r.start || { currentTime: null, frames: [0, 0] };
  return {
    player: opt.player,
    version: r.info.version,
    low_latency: lowLatency,
    live_delay_override: cfg.liveDelay,
    low_latency_mode_reported: last ? last.ll : null,
    url: opt.url,
    started: r.firstPlayingAt !== null,
    startup_s: r3(r.startupSeconds),
    seconds: seconds,
    wall_s: last ? r3(last.t) : 0,
    played_s: r3(played),
    currentTime_advance_s: last && start.currentTime !== null ? r3(last.ct - start.currentTime) : 0,
    longest_freeze_s: r3(frozen),
    waiting_events: r.waiting.filter(w => w.t !== null).length,
    waiting: r.waiting.slice(0, 10),
    stalled_events: r.stalled,
    seeks: r.seeks.slice(0, 10),
    playback_rate: r.rates.length ? { min: Math.min(...r.rates), max: Math.max(...r.rates), changes: r.rates.length } : null,
    frames_decoded: last ? last.frames - start.frames[0] : 0,
    frames_dropped: last ? last.dropped - start.frames[1] : 0,
    frames_total: last ? last.frames : 0,
    latency: stats(afterWarmup.map(x => x.latency)),
    latency_wallclock: stats(afterWarmup.map(x => x.wall)),
    target_latency: last ? r3(last.target) : null,
    latency_samples: afterWarmup.filter((x, i) => i % 4 === 0).map(x => r3(x.latency)),
    errors: r.errors,
    fatal_errors: r.errors.filter(e => e.fatal).length,
    info: r.info,
    source_buffers: r.sourceBuffers,
    decoded_bytes: r.decoded,
    // Media requests answered while the segment or part was still being written: the
    // response took a while (low-latency delivery), as opposed to a complete file.
    media_requests: (() => {
      const m = requests.log.filter(e => /\.m4s(\?|$)/.test(e[4]) && e[2] !== null);
      const live = m.filter(e => e[2] - e[0] > 0.25);
      return { n: m.length, served_while_written: live.length,
               median_s: r3(median(m.map(e => e[2] - e[0]))) };
    })(),
    requests,
    console: consoleLines.slice(0, 30),
    page_errors: pageErrors.slice(0, 10),
  };
}

async function main() {
  const target = new URL(opt.url);
  const cfg = {
    player: opt.player, url: opt.url, lowLatency,
    liveDelay: opt['live-delay'] === undefined ? null : Number(opt['live-delay']),
    timeUrl: `${target.protocol}//${target.host}/time`,
  };
  const html = pageHtml(cfg);
  const server = createServer((req, res) => {
    const path = req.url.split('?')[0];
    if (path === '/') {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
      res.end(html);
    } else if (path === '/favicon.ico') {
      res.writeHead(204);
      res.end();
    } else if (scripts[path]) {
      res.writeHead(200, { 'content-type': 'text/javascript' });
      res.end(readFileSync(scripts[path]));
    } else {
      res.writeHead(404);
      res.end();
    }
  });
  await new Promise(ok => server.listen(0, '127.0.0.1', ok));
  const pageOrigin = `http://127.0.0.1:${server.address().port}`;

  let browser;
  try {
    browser = await chromium.launch({
      executablePath: opt.chromium,
      headless: true,
      timeout: 30000,
      args: [
        '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync',
        '--autoplay-policy=no-user-gesture-required', '--mute-audio',
        '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1',
      ],
    });
  } catch (e) {
    server.close();
    process.stderr.write(`play.mjs: cannot launch ${opt.chromium}: ${e.message}\n`);
    process.exit(3);
  }
  const requests = { total: 0, by_status: {}, failed: [], http_errors: [], off_loopback: [], log: [] };
  // Every request to the stream's origin, in order: [sent, headers in, finished] in
  // seconds since the page started loading, method, path, status.
  const tStart = Date.now();
  const since = () => Math.round(Date.now() - tStart) / 1000;
  const entries = new Map();
  const origin = `${target.protocol}//${target.host}`;
  const consoleLines = [];
  const pageErrors = [];
  let report;
  try {
    const context = await browser.newContext();
    const page = await context.newPage();
    page.on('request', req => {
      requests.total++;
      const u = new URL(req.url());
      if (u.protocol.startsWith('http') && u.hostname !== '127.0.0.1') requests.off_loopback.push(req.url());
      if (req.url().startsWith(origin) && requests.log.length < 2000) {
        const e = [since(), null, null, req.method(), u.pathname + u.search, null];
        entries.set(req, e);
        requests.log.push(e);
      }
    });
    page.on('response', resp => {
      const st = resp.status();
      const e = entries.get(resp.request());
      if (e) { e[1] = since(); e[5] = st; }
      requests.by_status[st] = (requests.by_status[st] || 0) + 1;
      if (st >= 400 && requests.http_errors.length < 20) {
        requests.http_errors.push({ status: st, url: resp.url() });
      }
    });
    page.on('requestfinished', req => {
      const e = entries.get(req);
      if (e) e[2] = since();
    });
    page.on('requestfailed', req => {
      const e = entries.get(req);
      if (e) { e[2] = since(); e[5] = e[5] || 'failed'; }
      if (requests.failed.length < 20) requests.failed.push({ url: req.url(), error: req.failure() && req.failure().errorText });
    });
    page.on('console', msg => {
      if (['error', 'warning'].includes(msg.type())) consoleLines.push(`${msg.type()}: ${msg.text().slice(0, 300)}`);
    });
    page.on('pageerror', e => pageErrors.push(String(e).slice(0, 300)));

    await page.goto(pageOrigin + '/', { timeout: 15000 });
    const t0 = Date.now();
    // Wait for the first `playing` (or a fatal error), then play for `seconds`.
    for (;;) {
      const st = await page.evaluate(() => ({ p: window.__r.firstPlayingAt !== null,
                                              f: window.__r.errors.some(e => e.fatal) }));
      if (st.p || st.f || Date.now() - t0 > startTimeout * 1000) break;
      await page.waitForTimeout(200);
    }
    for (;;) {
      const st = await page.evaluate(() => ({ t: window.__r.firstPlayingAt === null ? null
                                                : (performance.now() - window.__r.firstPlayingAt) / 1000,
                                              f: window.__r.errors.some(e => e.fatal) }));
      if (st.t === null || st.f || st.t >= seconds + 0.3) break;
      await page.waitForTimeout(Math.min(500, Math.max(50, (seconds + 0.3 - st.t) * 1000)));
    }
    if (opt.screenshot) await page.screenshot({ path: opt.screenshot }).catch(() => {});
    const r = await page.evaluate(() => Object.assign({}, window.__r, {
      sourceBuffers: window.__r.sourceBuffers(),
      // Chromium's counters of bytes given to the decoders (audio decodes while muted).
      decoded: { audio: document.getElementById('v').webkitAudioDecodedByteCount ?? null,
                 video: document.getElementById('v').webkitVideoDecodedByteCount ?? null },
    }));
    report = summarize(cfg, r, requests, consoleLines, pageErrors);
  } finally {
    await browser.close().catch(() => {});
    server.close();
  }
  process.stdout.write(JSON.stringify(report) + '\n');
}

main().then(() => process.exit(0), e => {
  process.stderr.write(`play.mjs: ${e && e.stack || e}\n`);
  process.exit(3);
});
