//! `GET /`: a page listing the streams, with a player each, and the hls.js it plays HLS
//! with, embedded in the binary so that the page works without any other server.
//!
//! The page is a skeleton with one card per stream; a small inline script fills in state,
//! codecs, resolution, bitrate and viewers from `/status.json` every 2 s, and starts a
//! player when a stream is ready: hls.js where Media Source Extensions exist, the
//! browser's own HLS where it has that instead (Safari on iOS before 17.1), or live WebM
//! in a plain `<video>` when every track is a WebM codec (a button, or the only choice
//! when the stream serves no HLS). Every URL is relative, so the page works behind a
//! reverse proxy under any prefix.

use std::fmt::Write;

/// The vendored hls.js (`assets/hls.js/`, from npm; see the README's "Web page").
macro_rules! hls_js_version {
    () => {
        "1.7.4"
    };
}

pub const HLS_JS_VERSION: &str = hls_js_version!();

/// Its file name under `/assets/`: versioned, so it is served as immutable and a new
/// version is a new URL.
pub const HLS_JS_FILE: &str = concat!("hls-", hls_js_version!(), ".min.js");

/// `hls.min.js` compressed with `gzip -9n`, served as is with `Content-Encoding: gzip`:
/// 189 KB in the binary instead of 624 KB (the static build's budget is 4 MiB).
pub const HLS_JS_GZ: &[u8] = include_bytes!("../../assets/hls.js/hls.min.js.gz");

/// Streams the page starts playing by itself (muted); more wait for a click, so that a
/// page of twenty cameras does not pull twenty streams.
const AUTOPLAY_MAX: usize = 4;

const HEAD: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>muxcast</title>
<link rel="icon" href="data:,">
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:1em;background:#f4f4f4;color:#222}
main{display:grid;grid-template-columns:repeat(auto-fill,minmax(380px,1fr));gap:1em}
section{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.8em}
h1{font-size:1.3em;margin:0 0 .6em}h2{font-size:1.1em;margin:0 0 .4em}
video{width:100%;aspect-ratio:16/9;background:#000}
dl{display:grid;grid-template-columns:auto 1fr;gap:.1em .8em;margin:.5em 0}
dt{color:#666}dd{margin:0}
[data-state=live] [data-f=state]{color:#080}
[data-state=failed] [data-f=state],[data-state=reconnecting] [data-f=state]{color:#b00}
.player{color:#666}
</style>
"#;

const SCRIPT: &str = r#"<script>
'use strict';
const $ = (e, s) => e.querySelector(s);
const cards = new Map([...document.querySelectorAll('section[data-name]')].map(c => [c.dataset.name, c]));
let prev = new Map(), prevT = 0;
const rate = b => b >= 1e6 ? (b / 1e6).toFixed(2) + ' Mbit/s' : Math.round(b / 1e3) + ' kbit/s';
function say(c, text) { $(c, '.player').textContent = text; }
function stop(c) {
  if (c.hls) { c.hls.destroy(); c.hls = null; }
  const v = $(c, 'video');
  v.removeAttribute('src'); v.load();
  c.dataset.player = ''; say(c, '');
}
function start(c, mode) {
  stop(c);
  const v = $(c, 'video'), n = encodeURIComponent(c.dataset.name);
  // A protected stream: the page's own ?token= goes to the players' first request.
  const t = new URLSearchParams(location.search).get('token');
  const q = t ? '?token=' + encodeURIComponent(t) : '';
  let how;
  if (mode === 'webm') { v.src = n + '/live.webm' + q; how = 'live WebM'; }
  else if (window.Hls && Hls.isSupported()) {
    const h = c.hls = new Hls();
    h.on(Hls.Events.ERROR, (e, d) => { if (d.fatal) say(c, 'hls.js: ' + d.details); });
    h.loadSource(n + '/index.m3u8' + q); h.attachMedia(v);
    how = 'hls.js ' + Hls.version;
  } else if (v.canPlayType('application/vnd.apple.mpegurl')) { v.src = n + '/index.m3u8' + q; how = 'native HLS'; }
  else { say(c, 'this browser plays no HLS'); return; }
  c.dataset.player = how; say(c, how);
  v.play().catch(() => {});
}
document.addEventListener('click', e => {
  const b = e.target.closest('button[data-play]');
  if (b) { const c = b.closest('section'); b.dataset.play ? start(c, b.dataset.play) : stop(c); }
});
function set(c, f, text) { const d = $(c, `[data-f=${f}]`); if (d.textContent !== text) d.textContent = text; }
async function poll() {
  try {
    const doc = await (await fetch('status.json', { cache: 'no-store' })).json();
    const now = performance.now();
    for (const s of doc.streams) {
      const c = cards.get(s.name);
      if (!c) { location.reload(); return; }
      c.dataset.state = s.state;
      set(c, 'state', s.state + (s.detail ? ': ' + s.detail : ''));
      set(c, 'codecs', s.tracks.map(t => t.codec).join(', ') || '-');
      set(c, 'res', s.tracks.filter(t => t.kind === 'video').map(t => t.width + '\u00d7' + t.height).join(', ') || '-');
      set(c, 'bitrate', rate(s.bitrate_bps));
      const p = prev.get(s.name);
      const rps = p === undefined ? '-' : ((s.http_requests - p) * 1000 / (now - prevT)).toFixed(1);
      set(c, 'viewers', `${s.clients} live MKV/WebM, ${rps} HLS/DASH requests/s`);
      $(c, '[data-play=hls]').disabled = !s.hls;
      $(c, '[data-play=webm]').disabled = !s.webm;
      if (c.dataset.auto && !c.dataset.player && s.state === 'live' && (s.hls || s.webm)) {
        delete c.dataset.auto;
        start(c, s.hls ? 'hls' : 'webm');
      }
    }
    prev = new Map(doc.streams.map(s => [s.name, s.http_requests])); prevT = now;
  } catch (e) { /* the server restarts: try again */ }
  setTimeout(poll, 2000);
}
poll();
</script>
"#;

/// The page for streams named `names` (in their order).
pub fn render<'a>(names: impl ExactSizeIterator<Item = &'a str>) -> String {
    let autoplay = names.len() <= AUTOPLAY_MAX;
    let mut out = String::with_capacity(8192);
    out.push_str(HEAD);
    let _ = write!(
        out,
        "<script src=\"assets/{HLS_JS_FILE}\"></script>\n</head><body>\n<h1>muxcast</h1>\n<main>\n"
    );
    for name in names {
        let n = escape(name);
        let _ = write!(
            out,
            "<section data-name=\"{n}\"{auto}>\n<h2>{n}</h2>\n\
             <video muted playsinline controls></video>\n\
             <div><button data-play=\"hls\">HLS</button> <button data-play=\"webm\">WebM</button> \
             <button data-play=\"\">Stop</button> <span class=\"player\"></span></div>\n\
             <dl><dt>state</dt><dd data-f=\"state\"></dd><dt>codecs</dt><dd data-f=\"codecs\"></dd>\
             <dt>resolution</dt><dd data-f=\"res\"></dd><dt>bitrate</dt><dd data-f=\"bitrate\"></dd>\
             <dt>viewers</dt><dd data-f=\"viewers\"></dd></dl>\n\
             <div><a href=\"{n}/live.mkv\">live.mkv</a> \u{b7} <a href=\"{n}/live.webm\">live.webm</a> \u{b7} \
             <a href=\"{n}/index.m3u8\">HLS</a> \u{b7} <a href=\"{n}/manifest.mpd\">DASH</a></div>\n</section>\n",
            auto = if autoplay { " data-auto=\"1\"" } else { "" },
        );
    }
    let _ = write!(
        out,
        "</main>\n<p><a href=\"status.json\">status.json</a> \u{b7} <a href=\"metrics\">metrics</a> \u{b7} \
         muxcast {} \u{b7} hls.js {HLS_JS_VERSION}</p>\n",
        env!("CARGO_PKG_VERSION")
    );
    out.push_str(SCRIPT);
    out.push_str("</body></html>\n");
    out
}

/// Text for HTML content and quoted attributes.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_every_stream_with_its_links() {
        let page = render(["cam1", "a.b-c_d"].into_iter());
        assert!(page.contains("<section data-name=\"cam1\" data-auto=\"1\">"));
        assert!(page.contains("href=\"a.b-c_d/index.m3u8\""));
        assert!(page.contains(&format!("<script src=\"assets/{HLS_JS_FILE}\">")));
        assert_eq!(HLS_JS_FILE, "hls-1.7.4.min.js");
        let many: Vec<String> = (0..5).map(|i| format!("s{i}")).collect();
        assert!(!render(many.iter().map(String::as_str)).contains("data-auto"));
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn the_embedded_script_is_gzip() {
        // Member header: magic, deflate, no name or time (gzip -n).
        assert_eq!(&HLS_JS_GZ[..4], &[0x1f, 0x8b, 8, 0]);
        assert_eq!(&HLS_JS_GZ[4..8], &[0, 0, 0, 0]);
    }
}
