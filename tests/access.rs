//! Access control end to end, through the binary and a config file: read tokens, Basic
//! credentials, the media token that playlist and manifest URLs carry, push keys, the
//! allow-list, and secrets kept out of the log and /status.json.

mod common;
// Its base64 encoder: an independent one for the Basic credentials a client sends.
#[path = "common/rtsp_server.rs"]
mod rtsp_server;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use common::*;

const READ_TOKEN: &str = "reader-0123456789abcdef";
const USER: &str = "viewer";
const PASSWORD: &str = "pass word:with colon";
const PUSH_KEY: &str = "pusher-0123456789abcdef";

fn config_file() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("muxcast-access-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("access.toml");
    let media = testdata("h264_aac.mkv");
    let media = media.to_str().unwrap();
    std::fs::write(
        &path,
        format!(
            r#"
[[server]]
listen = "127.0.0.1:0"
allow = ["127.0.0.0/8", "::1"]

[[server.stream]]
name = "cam"
input = "{media}"
loop = true
read_token = "{READ_TOKEN}"
read_user = "{USER}"
read_password = "{PASSWORD}"

[[server.stream]]
name = "open"
input = "{media}"
loop = true

[[server.stream]]
name = "in"
input = "push"
push_key = "{PUSH_KEY}"

[[server]]
listen = "127.0.0.1:0"
allow = ["10.0.0.0/8"]

[[server.stream]]
name = "far"
input = "{media}"
loop = true
"#
        ),
    )
    .unwrap();
    path
}

fn get_with(addr: SocketAddr, path: &str, headers: &str) -> (u16, String, Vec<u8>) {
    request(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: t\r\n{headers}\r\n").as_bytes(),
    )
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Authorization: Basic {}\r\n",
        rtsp_server::base64(format!("{user}:{password}").as_bytes())
    )
}

/// The URIs of a playlist: URI="..." attributes and the plain lines.
fn playlist_uris(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| match l.split_once("URI=\"") {
            Some((_, rest)) => rest.split('"').next().map(str::to_string),
            None => (!l.starts_with('#') && !l.is_empty()).then(|| l.to_string()),
        })
        .collect()
}

/// `?token=` of a URI.
fn token_of(uri: &str) -> &str {
    uri.split_once("?token=")
        .unwrap_or_else(|| panic!("{uri} has no token"))
        .1
}

fn assert_refused(addr: SocketAddr, path: &str, headers: &str) {
    let (status, head, body) = get_with(addr, path, headers);
    assert_eq!(status, 401, "{path} with {headers:?}: {head}");
    assert!(head.starts_with("HTTP/1.1 401 Unauthorized\r\n"), "{head}");
    assert!(
        head.contains("WWW-Authenticate: Basic realm=\"muxcast\""),
        "{head}"
    );
    assert!(
        head.contains("WWW-Authenticate: Bearer realm=\"muxcast\""),
        "{head}"
    );
    assert!(
        body.starts_with(b"401: "),
        "{path}: no stream data in a refusal"
    );
    assert!(position(&body, &[0x1a, 0x45, 0xdf, 0xa3]).is_none());
}

#[test]
fn protected_streams_need_credentials_and_their_urls_carry_what_players_need() {
    let mut mux = Muxcast::start(&config_file());
    let addrs = mux.listening(2);
    // The two servers start in their own threads: their lines come in either order.
    // The one that refuses 127.0.0.1 is the one with allow = ["10.0.0.0/8"].
    let refuses = |a: SocketAddr| get_with(a, "/time", "").0 == 403;
    let (addr, far) = if refuses(addrs[0]) {
        (addrs[1], addrs[0])
    } else {
        (addrs[0], addrs[1])
    };
    assert!(!refuses(addr) && refuses(far));
    wait_for_stream(addr, "cam", Duration::from_secs(10), |s| {
        s["state"] == "live"
    });

    // Without credentials, or with wrong ones: 401, no stream data, and the challenge
    // names both schemes.
    for (path, headers) in [
        ("/cam/live.mkv", String::new()),
        ("/cam/live.webm", String::new()),
        ("/cam/index.m3u8", String::new()),
        ("/cam/manifest.mpd", String::new()),
        ("/cam/v0/index.m3u8", String::new()),
        ("/cam/hls", String::new()),
        ("/cam/live.mkv?token=reader-0123456789abcdeX", String::new()),
        ("/cam/live.mkv?token=", String::new()),
        (
            "/cam/live.mkv",
            "Authorization: Bearer reader-0123456789abcde\r\n".into(),
        ),
        ("/cam/live.mkv", basic(USER, "pass word")),
        ("/cam/live.mkv", basic("someone", PASSWORD)),
        // The push key is not a read token.
        (
            "/cam/live.mkv",
            format!("Authorization: Bearer {PUSH_KEY}\r\n"),
        ),
    ] {
        assert_refused(addr, path, &headers);
    }
    let mut s = send(
        addr,
        b"HEAD /cam/live.mkv HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    let (status, head, mut body) = read_head(&mut s);
    std::io::Read::read_to_end(&mut s, &mut body).unwrap();
    assert_eq!((status, body.len()), (401, 0), "{head}");
    // A CORS preflight never carries credentials: it is answered.
    let (status, head, _) = request(
        addr,
        b"OPTIONS /cam/live.mkv HTTP/1.1\r\nHost: t\r\nOrigin: http://x\r\n\r\n",
    );
    assert_eq!(status, 204, "{head}");
    assert!(head.contains("Authorization"), "{head}");

    // The read token (query or Bearer) and Basic credentials each open live MKV.
    for headers in [
        format!("Authorization: Bearer {READ_TOKEN}\r\n"),
        basic(USER, PASSWORD),
    ] {
        let mut s = send(
            addr,
            format!("GET /cam/live.mkv HTTP/1.1\r\nHost: t\r\n{headers}\r\n").as_bytes(),
        );
        let (status, head, first) = read_head(&mut s);
        assert_eq!(status, 200, "{head}");
        let body = read_body(&mut s, first, |b| b.len() > 4);
        assert!(body.starts_with(&[0x1a, 0x45, 0xdf, 0xa3]));
    }
    let mut s = get(addr, &format!("/cam/live.mkv?token={READ_TOKEN}"));
    assert_eq!(read_head(&mut s).0, 200);
    drop(s);

    // The short form's redirect keeps the token.
    let (status, head, _) = get_with(addr, &format!("/cam/hls?token={READ_TOKEN}"), "");
    assert_eq!(status, 302);
    assert!(
        head.contains(&format!("Location: /cam/index.m3u8?token={READ_TOKEN}")),
        "{head}"
    );

    // HLS: every URI the playlists give out carries the media token, a fresh secret
    // that is not the read token, and following the URIs alone plays the stream.
    let multivariant =
        String::from_utf8(get_ok(addr, &format!("/cam/index.m3u8?token={READ_TOKEN}"))).unwrap();
    let variants = playlist_uris(&multivariant);
    assert!(variants.len() >= 2, "{multivariant}");
    let media_token = token_of(&variants[0]).to_string();
    assert_eq!(media_token.len(), 32, "{media_token}");
    assert_ne!(media_token, READ_TOKEN);
    for uri in &variants {
        assert_eq!(token_of(uri), media_token, "{multivariant}");
    }
    // Until a segment is complete (the stream has just gone live), parts only.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let media_playlist = loop {
        let text = String::from_utf8(get_ok(addr, &format!("/cam/{}", variants[0]))).unwrap();
        if text.contains("\nseg") || std::time::Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let uris = playlist_uris(&media_playlist);
    assert!(uris.len() > 5, "{media_playlist}");
    for uri in &uris {
        assert_eq!(token_of(uri), media_token, "{media_playlist}");
    }
    let rendition = variants[0].split('/').next().unwrap();
    let map = uris.iter().find(|u| u.starts_with("init")).unwrap();
    let init = get_ok(addr, &format!("/cam/{rendition}/{map}"));
    assert_eq!(&init[4..8], b"ftyp");
    let segment = uris
        .iter()
        .find(|u| u.starts_with("seg"))
        .unwrap_or_else(|| panic!("no segment in 10 s: {media_playlist}"));
    let (status, _, body) = get_with(addr, &format!("/cam/{rendition}/{segment}"), "");
    assert_eq!(status, 200);
    assert!(position(&body, b"moof").is_some());
    // The same resources without the token: refused.
    let bare = segment.split('?').next().unwrap();
    assert_refused(addr, &format!("/cam/{rendition}/{bare}"), "");
    // A blocking reload as hls.js builds it (its directives after the token).
    let (msn, _) = media_playlist
        .lines()
        .filter_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))
        .map(|n| (n.parse::<u64>().unwrap(), ()))
        .next()
        .unwrap();
    let (status, _, _) = get_with(
        addr,
        &format!("/cam/{}&_HLS_msn={msn}&_HLS_part=0", variants[0]),
        "",
    );
    assert_eq!(status, 200);

    // DASH: the templates carry the same media token.
    let (status, _, mpd) = get_with(
        addr,
        "/cam/manifest.mpd",
        &format!("Authorization: Bearer {READ_TOKEN}\r\n"),
    );
    assert_eq!(status, 200);
    let mpd = String::from_utf8(mpd).unwrap();
    let init_template = mpd
        .split("initialization=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap();
    assert_eq!(token_of(init_template), media_token, "{mpd}");
    assert!(
        mpd.contains(&format!("/t$Time$.m4s?token={media_token}\"")),
        "{mpd}"
    );
    let init = get_ok(addr, &format!("/cam/{init_template}"));
    assert_eq!(&init[4..8], b"ftyp");

    let cam = wait_for_stream(addr, "cam", Duration::from_secs(1), |_| true);
    assert_eq!(
        (&cam["read_protected"], &cam["push_protected"]),
        (&true.into(), &false.into())
    );

    // An open stream on the same server asks nothing and adds nothing.
    let open = String::from_utf8(get_ok(addr, "/open/index.m3u8")).unwrap();
    assert!(!open.contains("token="), "{open}");

    // Pushing needs the push key, not a read token.
    let file = std::fs::read(testdata("h264_aac.mkv")).unwrap();
    for path in [
        "/in/ingest".to_string(),
        "/in/ingest?key=pusher-0123456789abcdeX".into(),
        format!("/in/ingest?token={READ_TOKEN}"),
    ] {
        let (status, head, _) = request(
            addr,
            format!(
                "PUT {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
                file.len()
            )
            .as_bytes(),
        );
        assert_eq!(status, 401, "{path}: {head}");
        assert!(head.contains("WWW-Authenticate: Bearer"), "{head}");
    }
    let mut pusher = TcpStream::connect(addr).unwrap();
    write!(
        pusher,
        "PUT /in/ingest?key={PUSH_KEY} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
        file.len()
    )
    .unwrap();
    pusher.write_all(&file).unwrap();
    wait_for_stream(addr, "in", Duration::from_secs(10), |s| {
        s["frames"].as_u64().is_some_and(|n| n > 0)
    });
    drop(pusher);
    let pushed = wait_for_stream(addr, "in", Duration::from_secs(1), |_| true);
    assert_eq!(pushed["push_protected"], true);
    assert_eq!(pushed["read_protected"], false);

    // The allow-list: 127.0.0.1 is outside 10.0.0.0/8.
    for path in ["/", "/status.json", "/far/live.mkv", "/metrics"] {
        let (status, head, body) = get_with(far, path, "");
        assert_eq!(status, 403, "{path}: {head}");
        assert!(head.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{head}");
        assert!(position(&body, &[0x1a, 0x45, 0xdf, 0xa3]).is_none());
    }

    // Refusals are counted by cause.
    let metrics = String::from_utf8(get_ok(addr, "/metrics")).unwrap();
    let count = |cause: &str| {
        metrics
            .lines()
            .find(|l| l.contains(&format!("cause=\"{cause}\"")))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {cause} in {metrics}"))
    };
    assert!(count("unauthorized") >= 15, "{metrics}");

    // No secret in /status.json or in the log.
    let status = status_json(addr).to_string();
    mux.terminate();
    let (code, log) = mux.wait(Duration::from_secs(10));
    assert_eq!(code, Some(0), "{log:#?}");
    let log = log.join("\n");
    for secret in [READ_TOKEN, PASSWORD, PUSH_KEY, media_token.as_str()] {
        assert!(!status.contains(secret), "{secret} in /status.json");
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }
}
