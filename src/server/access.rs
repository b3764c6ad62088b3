//! Access control: who may read a stream, who may push to it, which networks may connect.
//!
//! Readers present the stream's `read_token` (`?token=` or `Authorization: Bearer`) or its
//! Basic credentials. Players must keep playing without knowing about any of this, so
//! every URL a protected stream's playlists and manifest hand out carries the stream's
//! *media token* (`?token=`): random, made at start, valid until the server stops, and
//! accepted like the read token. Secrets are compared in constant time and never logged.

use std::fmt;
use std::io::{self, Read};
use std::net::IpAddr;

use super::http::{Request, percent_decode, query_param};

/// A secret from the configuration: shown as `<secret>` by `Debug`, so it cannot reach a
/// log line by way of a `{:?}`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: String) -> Secret {
        Secret(s)
    }

    fn matches(&self, presented: &str) -> bool {
        constant_time_eq(self.0.as_bytes(), presented.as_bytes())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secret>")
    }
}

/// The characters a token or key may hold: RFC 3986 unreserved, so it goes into a URL
/// as is and a player that re-encodes the URL does not change it.
pub fn check_token(token: &str) -> Result<(), String> {
    const MIN: usize = 16;
    const MAX: usize = 256;
    if token.len() < MIN || token.len() > MAX {
        return Err(format!(
            "must be {MIN} to {MAX} characters (it is {}): e.g. `openssl rand -hex 16`",
            token.len()
        ));
    }
    if let Some(c) = token
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-._~".contains(*c)))
    {
        return Err(format!(
            "{c:?} is not allowed: use A-Z a-z 0-9 - . _ ~ (it goes into URLs as is)"
        ));
    }
    Ok(())
}

/// Equality that takes the same time wherever the first difference is (the length of the
/// expected secret is not hidden: a token's length is no secret worth keeping).
fn constant_time_eq(expected: &[u8], presented: &[u8]) -> bool {
    if expected.len() != presented.len() {
        return false;
    }
    let diff = expected
        .iter()
        .zip(presented)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    std::hint::black_box(diff) == 0
}

/// Who may read a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadAccess {
    pub token: Option<Secret>,
    /// `Authorization: Basic` as a client sends it: base64 of `user:password`.
    pub basic: Option<Secret>,
    /// Carried by every URL the stream's playlists and manifest give out.
    pub media_token: Secret,
}

/// A stream's access rules; the default lets everyone read and push.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamAccess {
    pub read: Option<ReadAccess>,
    pub push_key: Option<Secret>,
}

/// What a request failed on.
#[derive(Debug, PartialEq, Eq)]
pub enum Denied {
    /// 401: no credentials, or wrong ones.
    Unauthorized,
}

impl StreamAccess {
    /// Readers need `read_token` and/or Basic credentials `user`:`password`.
    pub fn reading(
        token: Option<Secret>,
        basic: Option<(&str, &Secret)>,
        media_token: Secret,
    ) -> StreamAccess {
        let basic = basic
            .map(|(user, password)| Secret(base64(format!("{user}:{}", password.0).as_bytes())));
        StreamAccess {
            read: (token.is_some() || basic.is_some()).then_some(ReadAccess {
                token,
                basic,
                media_token,
            }),
            push_key: None,
        }
    }

    /// The query to append to every media URL of this stream (`?token=…`), or "".
    pub fn url_suffix(&self) -> String {
        match &self.read {
            Some(r) => format!("?token={}", r.media_token.0),
            None => String::new(),
        }
    }

    /// Whether WWW-Authenticate should offer Basic.
    pub fn offers_basic(&self) -> bool {
        self.read.as_ref().is_some_and(|r| r.basic.is_some())
    }

    pub fn may_read(&self, req: &Request) -> Result<(), Denied> {
        let Some(read) = &self.read else {
            return Ok(());
        };
        let creds = Credentials::of(req);
        let by_token = |t: &str| {
            // Both are checked, whatever the first says: the time taken does not tell
            // which secret a guess came close to.
            let media = read.media_token.matches(t);
            let token = read.token.as_ref().is_some_and(|s| s.matches(t));
            media | token
        };
        let ok = creds.query_token.as_deref().is_some_and(by_token)
            || creds.bearer.is_some_and(by_token)
            || creds
                .basic
                .is_some_and(|b| read.basic.as_ref().is_some_and(|s| s.matches(b)));
        if ok {
            Ok(())
        } else {
            Err(Denied::Unauthorized)
        }
    }

    pub fn may_push(&self, req: &Request) -> Result<(), Denied> {
        let Some(key) = &self.push_key else {
            return Ok(());
        };
        let creds = Credentials::of(req);
        let ok = creds.query_key.as_deref().is_some_and(|k| key.matches(k))
            || creds.bearer.is_some_and(|k| key.matches(k));
        if ok {
            Ok(())
        } else {
            Err(Denied::Unauthorized)
        }
    }
}

/// What a request presents.
struct Credentials<'a> {
    query_token: Option<String>,
    query_key: Option<String>,
    bearer: Option<&'a str>,
    basic: Option<&'a str>,
}

impl<'a> Credentials<'a> {
    fn of(req: &'a Request) -> Credentials<'a> {
        let (mut bearer, mut basic) = (None, None);
        if let Some(value) = &req.authorization
            && let Some((scheme, rest)) = value.0.split_once(' ')
        {
            let rest = rest.trim();
            if scheme.eq_ignore_ascii_case("bearer") {
                bearer = Some(rest);
            } else if scheme.eq_ignore_ascii_case("basic") {
                basic = Some(rest);
            }
        }
        Credentials {
            query_token: query_param(&req.query, "token").and_then(percent_decode),
            query_key: query_param(&req.query, "key").and_then(percent_decode),
            bearer,
            basic,
        }
    }
}

/// Standard base64 with padding (RFC 4648 §4), as clients encode Basic credentials.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A fresh media token: 128 bits from the kernel's random source, in hex.
pub fn random_token() -> io::Result<Secret> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(Secret(bytes.iter().map(|b| format!("{b:02x}")).collect()))
}

/// A client network of an allow-list: an address and a prefix length (`10.0.0.0/8`,
/// `192.168.1.7`, `::1`, `fd00::/8`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl Network {
    pub fn parse(text: &str) -> Result<Network, String> {
        let (addr_text, prefix_text) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr_text.parse().map_err(|_| {
            format!("{text:?} is not an address or network (e.g. 192.168.1.0/24, ::1)")
        })?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix_text {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("{text:?}: prefix length must be 0 to {max}")),
            },
        };
        Ok(Network { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        // A dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Whether `ip` may connect: an empty list allows everyone.
pub fn allowed(list: &[Network], ip: IpAddr) -> bool {
    list.is_empty() || list.iter().any(|n| n.contains(ip))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::http::parse_request;

    fn req(text: &str) -> Request {
        parse_request(text.as_bytes()).unwrap().unwrap()
    }

    fn secret(s: &str) -> Secret {
        Secret(s.to_string())
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (plain, coded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
            ("Aladdin:open sesame", "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="),
        ] {
            assert_eq!(base64(plain.as_bytes()), coded);
        }
    }

    #[test]
    fn readers_need_the_token_the_media_token_or_basic() {
        let access = StreamAccess::reading(
            Some(secret("reader-token-0123456789")),
            Some(("viewer", &secret("open sesame"))),
            secret("media-token-abcdef0123"),
        );
        let get = |extra: &str, query: &str| {
            access.may_read(&req(&format!(
                "GET /cam/index.m3u8{query} HTTP/1.1\r\nHost: x\r\n{extra}\r\n"
            )))
        };
        assert_eq!(get("", ""), Err(Denied::Unauthorized));
        assert_eq!(get("", "?token=reader-token-0123456789"), Ok(()));
        assert_eq!(get("", "?_HLS_msn=3&token=media-token-abcdef0123"), Ok(()));
        assert_eq!(
            get("", "?token=reader-token-012345678"),
            Err(Denied::Unauthorized)
        );
        assert_eq!(
            get("", "?token=reader-token-0123456789x"),
            Err(Denied::Unauthorized)
        );
        assert_eq!(
            get("", "?key=reader-token-0123456789"),
            Err(Denied::Unauthorized)
        );
        assert_eq!(
            get("Authorization: Bearer reader-token-0123456789\r\n", ""),
            Ok(())
        );
        assert_eq!(
            get("Authorization: bearer  media-token-abcdef0123\r\n", ""),
            Ok(())
        );
        let basic = base64(b"viewer:open sesame");
        assert_eq!(
            get(&format!("Authorization: Basic {basic}\r\n"), ""),
            Ok(())
        );
        let wrong = base64(b"viewer:open sesame!");
        assert_eq!(
            get(&format!("Authorization: Basic {wrong}\r\n"), ""),
            Err(Denied::Unauthorized)
        );
        // A Basic header carrying the token is not the token.
        assert_eq!(
            get("Authorization: Basic reader-token-0123456789\r\n", ""),
            Err(Denied::Unauthorized)
        );
        assert!(access.offers_basic());
        assert_eq!(access.url_suffix(), "?token=media-token-abcdef0123");
    }

    #[test]
    fn open_streams_ask_nothing_and_add_nothing_to_urls() {
        let open = StreamAccess::default();
        let r = req("GET /cam/live.mkv HTTP/1.1\r\n\r\n");
        assert_eq!(open.may_read(&r), Ok(()));
        assert_eq!(open.may_push(&r), Ok(()));
        assert_eq!(open.url_suffix(), "");
        assert!(!open.offers_basic());
    }

    #[test]
    fn pushers_need_the_push_key_not_the_read_token() {
        let mut access =
            StreamAccess::reading(Some(secret("reader-token-0123456789")), None, secret("m"));
        access.push_key = Some(secret("pusher-key-0123456789"));
        let put = |line: &str| access.may_push(&req(&format!("{line}\r\n\r\n")));
        assert_eq!(put("PUT /cam HTTP/1.1"), Err(Denied::Unauthorized));
        assert_eq!(put("PUT /cam?key=pusher-key-0123456789 HTTP/1.1"), Ok(()));
        assert_eq!(
            put("PUT /cam?key=reader-token-0123456789 HTTP/1.1"),
            Err(Denied::Unauthorized)
        );
        assert_eq!(
            put("PUT /cam HTTP/1.1\r\nAuthorization: Bearer pusher-key-0123456789"),
            Ok(())
        );
    }

    #[test]
    fn tokens_are_url_safe_and_long_enough() {
        assert!(check_token("0123456789abcdef").is_ok());
        assert!(check_token("A-b_c.d~0123456789").is_ok());
        assert!(check_token("short").unwrap_err().contains("16 to 256"));
        assert!(
            check_token("0123456789abcdef&x=1")
                .unwrap_err()
                .contains("'&'")
        );
        assert!(check_token(&"x".repeat(257)).is_err());
    }

    #[test]
    fn secrets_do_not_show_in_debug_output() {
        let access = StreamAccess::reading(
            Some(secret("reader-token-0123456789")),
            Some(("u", &secret("pw-visible?"))),
            secret("media-token-abcdef0123"),
        );
        let shown = format!("{access:?}");
        assert!(!shown.contains("reader-token"), "{shown}");
        assert!(!shown.contains("media-token"), "{shown}");
        assert!(!shown.contains(&base64(b"u:pw-visible?")), "{shown}");
    }

    #[test]
    fn random_tokens_are_128_bit_hex_and_differ() {
        let a = random_token().unwrap();
        let b = random_token().unwrap();
        assert_eq!(a.0.len(), 32);
        assert!(a.0.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        assert!(check_token(&a.0).is_ok());
    }

    #[test]
    fn networks_match_by_prefix_and_v4_mapped_addresses() {
        let lan = Network::parse("192.168.1.0/24").unwrap();
        assert!(lan.contains("192.168.1.77".parse().unwrap()));
        assert!(!lan.contains("192.168.2.1".parse().unwrap()));
        assert!(lan.contains("::ffff:192.168.1.5".parse().unwrap()));
        let host = Network::parse("127.0.0.1").unwrap();
        assert!(host.contains("127.0.0.1".parse().unwrap()));
        assert!(!host.contains("127.0.0.2".parse().unwrap()));
        let all = Network::parse("0.0.0.0/0").unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        assert!(!all.contains("::1".parse().unwrap()));
        let v6 = Network::parse("fd00::/8").unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!(!v6.contains("fe80::1".parse().unwrap()));
        assert!(Network::parse("10.0.0.0/33").is_err());
        assert!(Network::parse("::/129").is_err());
        assert!(Network::parse("example.com").is_err());
        assert!(Network::parse("10.0.0.0/").is_err());
        assert!(allowed(&[], "1.2.3.4".parse().unwrap()));
        assert!(!allowed(&[host], "1.2.3.4".parse().unwrap()));
        assert_eq!(lan.to_string(), "192.168.1.0/24");
    }
}
