#!/usr/bin/env node
// Opens muxcast's own web page (GET /) in headless Chromium (Debian's /usr/bin/chromium,
// driven by playwright-core), lets the page start its players, and prints one JSON object
// on stdout: per stream card, the player the page chose, how far the video's currentTime
// advanced, the frames decoded, and the text the page shows (state, codecs, resolution,
// bitrate, viewers); plus every request the page made (none may leave 127.0.0.1: the
// page must work offline) and any page or console error.
//
//   node page.mjs --url http://127.0.0.1:8080/ --play live:auto --play vp9:webm
//                 [--seconds 12] [--start-timeout 20] [--chromium /usr/bin/chromium]
//                 [--screenshot out.png]
//
// `NAME:auto` leaves stream NAME to the page (it starts HLS by itself when it lists at most
// four streams); `NAME:webm` / `NAME:hls` click the card's WebM / HLS button first. The
// clock of a stream starts at its video's first `playing` event.
// Exit code 0 whenever a JSON report was printed (the caller judges it), 2 on bad usage,
// 3 when the browser could not be driven at all.

import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';

const { values: opt } = parseArgs({
  options: {
    url: { type: 'string' },
    play: { type: 'string', multiple: true, default: [] },
    seconds: { type: 'string', default: '12' },
    'start-timeout': { type: 'string', default: '20' },
    chromium: { type: 'string', default: '/usr/bin/chromium' },
    screenshot: { type: 'string' },
  },
});
const plays = opt.play.map(p => p.split(':'));
if (!opt.url || !plays.length || plays.some(([n, m]) => !n || !['auto', 'hls', 'webm'].includes(m))) {
  process.stderr.write('usage: page.mjs --url PAGE_URL --play NAME:auto|hls|webm [--play ...] [--seconds N]\n');
  process.exit(2);
}
const seconds = Number(opt.seconds);
const startTimeout = Number(opt['start-timeout']);

const hardLimit = setTimeout(() => {
  process.stderr.write('page.mjs: hard time limit reached\n');
  process.exit(3);
}, (startTimeout + seconds + 60) * 1000);
hardLimit.unref();

// In the page: what one card shows and how its video is doing.
function cardState(name) {
  const c = [...document.querySelectorAll('section[data-name]')].find(s => s.dataset.name === name);
  if (!c) return null;
  const v = c.querySelector('video');
  const q = v.getVideoPlaybackQuality();
  const f = k => c.querySelector(`[data-f=${k}]`).textContent;
  return {
    player: c.dataset.player || null, state: f('state'), codecs: f('codecs'), resolution: f('res'),
    bitrate: f('bitrate'), viewers: f('viewers'), shown: c.querySelector('.player').textContent,
    currentTime: v.currentTime, paused: v.paused, readyState: v.readyState, src: v.currentSrc,
    frames: q.totalVideoFrames, dropped: q.droppedVideoFrames,
    error: v.error ? { code: v.error.code, message: v.error.message } : null,
    hlsButton: !c.querySelector('[data-play=hls]').disabled, webmButton: !c.querySelector('[data-play=webm]').disabled,
  };
}

async function main() {
  const origin = new URL(opt.url).origin;
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
    process.stderr.write(`page.mjs: cannot launch ${opt.chromium}: ${e.message}\n`);
    process.exit(3);
  }
  const requests = { total: 0, by_path: {}, by_status: {}, http_errors: [], failed: [], off_loopback: [], script: null };
  const consoleLines = [], pageErrors = [];
  const streams = {};
  try {
    const page = await (await browser.newContext()).newPage();
    page.on('request', req => {
      requests.total++;
      const u = new URL(req.url());
      if (u.protocol.startsWith('http') && u.hostname !== '127.0.0.1') requests.off_loopback.push(req.url());
      const kind = u.pathname.replace(/\/(seg|part|t)[\d.]+\.m4s$/, '/$1N.m4s').replace(/\/init\d+\.mp4$/, '/initN.mp4');
      requests.by_path[kind] = (requests.by_path[kind] || 0) + 1;
    });
    page.on('response', async resp => {
      const st = resp.status();
      requests.by_status[st] = (requests.by_status[st] || 0) + 1;
      if (st >= 400 && requests.http_errors.length < 20) requests.http_errors.push({ status: st, url: resp.url() });
      if (/\/assets\/hls-[\d.]+\.min\.js$/.test(resp.url())) {
        const h = resp.headers();
        requests.script = { url: resp.url(), status: st, encoding: h['content-encoding'] || null,
                            cache: h['cache-control'] || null, type: h['content-type'] || null };
      }
    });
    page.on('requestfailed', req => {
      if (requests.failed.length < 20) requests.failed.push({ url: req.url(), error: req.failure() && req.failure().errorText });
    });
    page.on('console', msg => {
      if (['error', 'warning'].includes(msg.type())) consoleLines.push(`${msg.type()}: ${msg.text().slice(0, 300)}`);
    });
    page.on('pageerror', e => pageErrors.push(String(e).slice(0, 300)));

    await page.goto(opt.url, { timeout: 15000 });
    const t0 = Date.now();
    const pending = new Map(plays);
    const started = {};
    // Click where asked (once the button is enabled), then wait for every video to play.
    for (;;) {
      for (const [name, mode] of pending) {
        const st = await page.evaluate(cardState, name);
        if (!st) { streams[name] = { error: 'no card for this stream on the page' }; pending.delete(name); continue; }
        if (mode !== 'auto' && !started[name]) {
          if (!(mode === 'webm' ? st.webmButton : st.hlsButton)) continue;
          await page.click(`section[data-name="${name}"] button[data-play="${mode}"]`);
          started[name] = { clickedAt: (Date.now() - t0) / 1000 };
          continue;
        }
        const chosen = mode === 'auto' || (mode === 'webm' ? st.player === 'live WebM' : /^hls\.js|^native/.test(st.player || ''));
        if (chosen && st.currentTime > 0 && !st.paused && st.readyState >= 3) {
          started[name] = Object.assign(started[name] || {}, { at: Date.now(), playingAfter: (Date.now() - t0) / 1000, first: st });
          pending.delete(name);
        }
      }
      if (!pending.size || Date.now() - t0 > startTimeout * 1000) break;
      await page.waitForTimeout(200);
    }
    // Every stream that started plays `seconds` from its own start.
    const ends = Object.values(started).filter(s => s.at).map(s => s.at + seconds * 1000);
    if (ends.length) await page.waitForTimeout(Math.max(0, Math.max(...ends) - Date.now()) + 300);
    for (const [name] of plays) {
      if (streams[name]) continue;
      const last = await page.evaluate(cardState, name);
      const s = started[name] || {};
      streams[name] = {
        mode: new Map(plays).get(name), started: !!s.at, startup_s: s.playingAfter ?? null, clicked_at_s: s.clickedAt ?? null,
        wall_s: s.at ? (Date.now() - s.at) / 1000 : 0,
        currentTime_advance_s: s.first ? last.currentTime - s.first.currentTime : 0,
        frames_decoded: s.first ? last.frames - s.first.frames : 0,
        last,
      };
    }
    if (opt.screenshot) await page.screenshot({ path: opt.screenshot, fullPage: true }).catch(() => {});
  } finally {
    await browser.close().catch(() => {});
  }
  process.stdout.write(JSON.stringify({ url: opt.url, origin, seconds, streams, requests,
                                        console: consoleLines.slice(0, 30), page_errors: pageErrors.slice(0, 10) }) + '\n');
}

main().then(() => process.exit(0), e => {
  process.stderr.write(`page.mjs: ${e && e.stack || e}\n`);
  process.exit(3);
});
