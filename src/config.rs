//! The configuration: a TOML file (`muxcast --config FILE`) or the command line's quick
//! mode, both turned into one validated [`Config`]. Defaults and accepted ranges live here
//! once, so that the file and the command line accept exactly the same values.
//!
//! The file is parsed with `toml` into a spanned document first; its structure (which
//! tables, which keys) is checked by walking that document, so that every error names its
//! line and the server or stream it is about, then each table is read with serde into a
//! typed struct (`deny_unknown_fields` as a backstop) and its values are range-checked.
//! Errors are collected, not stopped at: an operator fixes a file in one go.

use std::fmt;
use std::fs;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde::de::IgnoredAny;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use crate::ingest::mkv::DemuxLimits;
use crate::ingest::source::{Input, ReaderOptions};
use crate::server::access::{Network, Secret, StreamAccess, check_token, random_token};
use crate::server::http::valid_stream_name;
use crate::server::{HlsOptions, ServerOptions};
use crate::stream::PublishOptions;
use crate::stream::cmaf::SegmenterOptions;
use crate::stream::live::WindowOptions;

/// The accepted values of an option that is a number of seconds.
#[derive(Clone, Copy, Debug)]
pub struct Seconds {
    pub min: f64,
    pub max: f64,
}

/// Every number of seconds is within this, whatever the option.
const ANY_SECONDS: Seconds = Seconds {
    min: 0.0,
    max: 86_400.0,
};
pub const PREFILL: Seconds = ANY_SECONDS;
pub const BURST: Seconds = ANY_SECONDS;
pub const CLIENT_TIMEOUT: Seconds = ANY_SECONDS;
pub const HEADER_TIMEOUT: Seconds = ANY_SECONDS;
pub const RTSP_TIMEOUT: Seconds = Seconds {
    min: 1.0,
    max: 3600.0,
};
pub const IDLE_CLOSE: Seconds = Seconds {
    min: 1.0,
    max: 86_400.0,
};
pub const AUDIO_CLUSTER: Seconds = Seconds {
    min: 0.1,
    max: 30.0,
};
pub const SEGMENT_DURATION: Seconds = Seconds {
    min: 0.5,
    max: 30.0,
};
pub const PART_DURATION: Seconds = Seconds {
    min: 0.05,
    max: 2.0,
};

impl Seconds {
    /// `value` when it is accepted, else why not (the caller names the option).
    pub fn check(self, value: f64) -> Result<f64, String> {
        if !(value.is_finite() && (ANY_SECONDS.min..=ANY_SECONDS.max).contains(&value)) {
            return Err(format!(
                "{value} is not a number of seconds between 0 and 86400"
            ));
        }
        if !(self.min..=self.max).contains(&value) {
            return Err(format!(
                "must be between {} and {} seconds",
                self.min, self.max
            ));
        }
        Ok(value)
    }
}

/// HLS/DASH segments kept per rendition: `window` when accepted, else why not.
pub fn check_window(window: usize) -> Result<usize, String> {
    if (3..=1000).contains(&window) {
        Ok(window)
    } else {
        Err("must be between 3 and 1000 segments".into())
    }
}

pub fn check_max_clients_per_ip(n: usize) -> Result<usize, String> {
    if n >= 1 {
        Ok(n)
    } else {
        Err("must be at least 1".into())
    }
}

pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 8080));

/// What a stream serves. Live MKV is always on, and HLS and DASH come together (they
/// share their segments); the other combinations are refused until the server can
/// switch routes per stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Formats {
    pub mkv: bool,
    pub hls: bool,
    pub dash: bool,
}

impl Formats {
    pub const ALL: Formats = Formats {
        mkv: true,
        hls: true,
        dash: true,
    };
    pub const MKV_ONLY: Formats = Formats {
        mkv: true,
        hls: false,
        dash: false,
    };

    pub fn names(self) -> Vec<&'static str> {
        [(self.mkv, "mkv"), (self.hls, "hls"), (self.dash, "dash")]
            .into_iter()
            .filter_map(|(on, name)| on.then_some(name))
            .collect()
    }
}

/// A stream's tunables: what `[defaults]` may set for every stream.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamSettings {
    pub formats: Formats,
    /// File inputs: repeat forever.
    pub looped: bool,
    pub prefill: f64,
    pub rtsp_timeout: f64,
    /// On-demand inputs disconnect after this long without viewers.
    pub idle_close: f64,
    pub audio_cluster: f64,
    pub segment_duration: f64,
    pub part_duration: f64,
}

impl Default for StreamSettings {
    fn default() -> Self {
        StreamSettings {
            formats: Formats::ALL,
            looped: false,
            prefill: 2.0,
            rtsp_timeout: 10.0,
            idle_close: 10.0,
            audio_cluster: 2.0,
            segment_duration: 2.0,
            part_duration: 0.2,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct StreamConfig {
    pub name: String,
    pub input: Input,
    pub settings: StreamSettings,
    /// Line of its table in the file (0: the command line).
    pub line: usize,
    /// Line of its `input` key (0: the command line).
    pub input_line: usize,
    pub access: AccessConfig,
}

/// A stream's credentials as configured (the file only: a command line shows in `ps`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccessConfig {
    pub read_token: Option<Secret>,
    /// Basic credentials: a user and its password.
    pub read_basic: Option<(String, Secret)>,
    pub push_key: Option<Secret>,
}

impl AccessConfig {
    /// The rules the server applies. A stream readers need credentials for gets a fresh
    /// media token for the URLs it hands out.
    pub fn rules(&self) -> std::io::Result<StreamAccess> {
        let mut rules = if self.protects_reading() {
            StreamAccess::reading(
                self.read_token.clone(),
                self.read_basic.as_ref().map(|(u, p)| (u.as_str(), p)),
                random_token()?,
            )
        } else {
            StreamAccess::default()
        };
        rules.push_key = self.push_key.clone();
        Ok(rules)
    }

    pub fn protects_reading(&self) -> bool {
        self.read_token.is_some() || self.read_basic.is_some()
    }
}

impl StreamConfig {
    pub fn reader_options(&self) -> ReaderOptions {
        ReaderOptions {
            prefill: Duration::from_secs_f64(self.settings.prefill),
            limits: DemuxLimits::default(),
            rtsp_timeout: Duration::from_secs_f64(self.settings.rtsp_timeout),
            idle_close: Duration::from_secs_f64(self.settings.idle_close),
        }
    }

    pub fn publish_options(&self) -> PublishOptions {
        let s = &self.settings;
        PublishOptions {
            audio_cluster_ms: (s.audio_cluster * 1000.0) as u64,
            cmaf: (s.formats.hls || s.formats.dash).then_some(SegmenterOptions {
                segment_ns: (s.segment_duration * 1e9) as i64,
                part_ns: (s.part_duration * 1e9) as i64,
            }),
        }
    }
}

/// One listening server and its streams. `burst`, `client_queue`, `window` and `ll_hls`
/// are per server because the event loop holds them per server (`ServerOptions`).
#[derive(Clone, Debug, PartialEq)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub max_clients: usize,
    pub max_clients_per_ip: usize,
    pub client_timeout: f64,
    pub header_timeout: f64,
    pub keep_running: bool,
    pub burst: f64,
    pub client_queue: usize,
    pub window: usize,
    pub ll_hls: bool,
    /// Client networks that may connect (empty: everyone).
    pub allow: Vec<Network>,
    pub streams: Vec<StreamConfig>,
    /// Line of its table in the file (0: the command line).
    pub line: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: DEFAULT_LISTEN,
            max_clients: 1024,
            max_clients_per_ip: 256,
            client_timeout: 30.0,
            header_timeout: 10.0,
            keep_running: false,
            burst: 0.0,
            client_queue: 4 * 1024 * 1024,
            window: 10,
            ll_hls: true,
            allow: Vec::new(),
            streams: Vec::new(),
            line: 0,
        }
    }
}

impl ServerConfig {
    pub fn server_options(&self, handle_signals: bool) -> ServerOptions {
        // Each stream's target duration and part target are fixed by its own first
        // segment; until then the server's (the longest of its streams') stands in.
        let longest = |f: fn(&StreamSettings) -> f64| {
            self.streams
                .iter()
                .map(|s| f(&s.settings))
                .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))))
        };
        let defaults = StreamSettings::default();
        let segment = longest(|s| s.segment_duration).unwrap_or(defaults.segment_duration);
        let part = longest(|s| s.part_duration).unwrap_or(defaults.part_duration);
        ServerOptions {
            listen: self.listen,
            max_clients: self.max_clients,
            max_clients_per_ip: self.max_clients_per_ip,
            client_timeout: Duration::from_secs_f64(self.client_timeout),
            header_timeout: Duration::from_secs_f64(self.header_timeout),
            keep_running: self.keep_running,
            window: WindowOptions {
                burst_ns: (self.burst * 1e9) as i64,
                client_queue_bytes: self.client_queue,
            },
            handle_signals,
            hls: HlsOptions {
                window: self.window,
                target_duration_s: segment.ceil() as u32,
                target_known: false,
                part_target_s: part,
                low_latency: self.ll_hls,
                url_suffix: Arc::from(""),
            },
            allow: self.allow.clone(),
        }
    }
}

/// How log lines are written (stderr): per process, so a top-level key of the file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// `LEVEL target: message`, for people.
    #[default]
    Text,
    /// One JSON object per line: `ts` (RFC 3339, UTC, ms), `level`, `target`, `msg`.
    Json,
}

impl LogFormat {
    /// Parses `text` or `json`; the error says what is accepted.
    pub fn parse(s: &str) -> Result<LogFormat, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!(
                "unknown log format {other:?} (expected text, json)"
            )),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub servers: Vec<ServerConfig>,
    pub log_format: LogFormat,
}

impl Config {
    /// A few lines for `--check-config`: the servers and their streams.
    pub fn summary(&self) -> String {
        let streams: usize = self.servers.iter().map(|s| s.streams.len()).sum();
        let mut out = format!("{} server(s), {} stream(s)\n", self.servers.len(), streams);
        for (i, server) in self.servers.iter().enumerate() {
            out.push_str(&format!("server {}: http://{}/\n", i + 1, server.listen));
            for s in &server.streams {
                out.push_str(&format!(
                    "  {}: {} [{}]\n",
                    s.name,
                    s.input.describe(),
                    s.settings.formats.names().join(", ")
                ));
            }
        }
        out
    }
}

/// One problem in a configuration file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// 1-based; 0 when it is about the file as a whole.
    pub line: usize,
    /// What is wrong, after the server or stream it concerns.
    pub message: String,
}

/// Every problem found in a configuration file, in line order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors {
    /// The file as the operator named it.
    pub file: String,
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            if e.line == 0 {
                write!(f, "{}: {}", self.file, e.message)?;
            } else {
                write!(f, "{}:{}: {}", self.file, e.line, e.message)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

const TOP_KEYS: &[&str] = &["defaults", "server", "log_format"];
/// Keys for the whole process: at the top of the file, before any table.
pub const PROCESS_KEYS: &[&str] = &["log_format"];
const PROCESS_KEY_HINT: &str = "is per process: put it at the top of the file, before any table";
pub const SERVER_KEYS: &[&str] = &[
    "listen",
    "max_clients",
    "max_clients_per_ip",
    "client_timeout",
    "header_timeout",
    "keep_running",
    "burst",
    "client_queue",
    "window",
    "ll_hls",
    "allow",
    "stream",
];
/// Keys of a stream that `[defaults]` may set too.
pub const SETTING_KEYS: &[&str] = &[
    "formats",
    "loop",
    "prefill",
    "rtsp_timeout",
    "idle_close",
    "audio_cluster",
    "segment_duration",
    "part_duration",
];
/// Keys of a stream that only a stream may set.
pub const STREAM_ONLY_KEYS: &[&str] = &[
    "name",
    "input",
    "on_demand",
    "read_token",
    "read_user",
    "read_password",
    "push_key",
];

/// Server keys that could be per stream, but the event loop holds per server so far.
const PER_SERVER_FOR_NOW: &[&str] = &["window", "burst", "ll_hls", "client_queue"];

/// `[[server]]` as serde reads it. Every field is optional: defaults are applied, and
/// missing required keys reported, by the walker, which knows the lines.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<Spanned<String>>,
    max_clients: Option<usize>,
    max_clients_per_ip: Option<Spanned<usize>>,
    client_timeout: Option<Spanned<f64>>,
    header_timeout: Option<Spanned<f64>>,
    keep_running: Option<bool>,
    burst: Option<Spanned<f64>>,
    client_queue: Option<usize>,
    window: Option<Spanned<usize>>,
    ll_hls: Option<bool>,
    allow: Option<Vec<Spanned<String>>>,
    /// Read by the walker, table by table.
    #[serde(default)]
    #[allow(dead_code)]
    stream: IgnoredAny,
}

/// `[[server.stream]]` and `[defaults]` as serde reads them.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStream {
    name: Option<Spanned<String>>,
    input: Option<Spanned<String>>,
    formats: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(rename = "loop")]
    looped: Option<Spanned<bool>>,
    prefill: Option<Spanned<f64>>,
    rtsp_timeout: Option<Spanned<f64>>,
    idle_close: Option<Spanned<f64>>,
    audio_cluster: Option<Spanned<f64>>,
    segment_duration: Option<Spanned<f64>>,
    part_duration: Option<Spanned<f64>>,
    on_demand: Option<Spanned<bool>>,
    read_token: Option<Spanned<String>>,
    read_user: Option<Spanned<String>>,
    read_password: Option<Spanned<String>>,
    push_key: Option<Spanned<String>>,
}

/// Reads a configuration file: [`parse`], then file inputs are taken relative to the
/// file's directory and must exist.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let file = path.display().to_string();
    let text = fs::read_to_string(path).map_err(|e| ConfigErrors {
        file: file.clone(),
        errors: vec![ConfigError {
            line: 0,
            message: format!("cannot read it: {e}"),
        }],
    })?;
    let mut config = parse(&text, &file)?;
    let base = path.parent().unwrap_or(Path::new(""));
    let mut errors = Vec::new();
    for server in &mut config.servers {
        for stream in &mut server.streams {
            let Input::File { path, .. } = &mut stream.input else {
                continue;
            };
            if path.is_relative() {
                *path = base.join(&*path);
            }
            let problem = match fs::metadata(&*path) {
                Ok(m) if m.is_dir() => Some("is a directory".to_string()),
                Ok(_) => None,
                Err(e) => Some(e.to_string()),
            };
            if let Some(problem) = problem {
                errors.push(ConfigError {
                    line: stream.input_line,
                    message: format!(
                        "stream {:?}: input file {}: {problem}",
                        stream.name,
                        path.display()
                    ),
                });
            }
        }
    }
    if errors.is_empty() {
        Ok(config)
    } else {
        Err(ConfigErrors { file, errors })
    }
}

/// Parses and validates a configuration file's text; `file` names it in errors. Pure:
/// file inputs are neither resolved nor opened (see [`load`]).
pub fn parse(text: &str, file: &str) -> Result<Config, ConfigErrors> {
    let mut walker = Walker {
        text,
        errors: Vec::new(),
    };
    let config = walker.document();
    let mut errors = walker.errors;
    if errors.is_empty() {
        Ok(config)
    } else {
        errors.sort_by_key(|e| e.line);
        Err(ConfigErrors {
            file: file.to_string(),
            errors,
        })
    }
}

struct Walker<'t> {
    text: &'t str,
    errors: Vec<ConfigError>,
}

type Table<'i> = DeTable<'i>;

impl<'t> Walker<'t> {
    fn line(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        1 + self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
    }

    fn error(&mut self, span: Range<usize>, message: String) {
        let line = self.line(span.start);
        self.errors.push(ConfigError { line, message });
    }

    fn document(&mut self) -> Config {
        let root = match DeTable::parse(self.text) {
            Ok(root) => root.into_inner(),
            Err(e) => {
                let line = e.span().map_or(0, |s| self.line(s.start));
                self.errors.push(ConfigError {
                    line,
                    message: format!("invalid TOML: {}", e.message()),
                });
                return Config {
                    servers: Vec::new(),
                    log_format: LogFormat::default(),
                };
            }
        };
        self.known_keys(&root, TOP_KEYS, "", &[]);
        let mut log_format = LogFormat::default();
        if let Some(value) = root.get("log_format") {
            match value.get_ref().as_str() {
                Some(text) => match LogFormat::parse(text) {
                    Ok(f) => log_format = f,
                    Err(e) => self.error(value.span(), format!("log_format: {e}")),
                },
                None => self.error(
                    value.span(),
                    "log_format: must be a string: \"text\" or \"json\"".into(),
                ),
            }
        }
        let mut defaults = StreamSettings::default();
        if let Some(value) = root.get("defaults") {
            match value.get_ref() {
                DeValue::Table(table) => {
                    let ctx = "[defaults]: ";
                    let table = self.known_keys(
                        table,
                        SETTING_KEYS,
                        ctx,
                        &[
                            (STREAM_ONLY_KEYS, "belongs in a [[server.stream]] table"),
                            (SERVER_KEYS, "belongs in a [[server]] table"),
                            (PROCESS_KEYS, PROCESS_KEY_HINT),
                        ],
                    );
                    if let Some(raw) = self.typed::<RawStream>(value.span(), table, ctx) {
                        self.settings(&raw, &mut defaults, ctx);
                    }
                }
                _ => self.error(
                    value.span(),
                    "defaults: must be a table: write [defaults]".into(),
                ),
            }
        }
        let mut servers = Vec::new();
        match root.get("server").map(|v| (v.span(), v.get_ref())) {
            None => self.errors.push(ConfigError {
                line: 0,
                message: "no [[server]] table: nothing to serve".into(),
            }),
            Some((span, DeValue::Array(list))) => {
                if list.is_empty() {
                    self.error(span, "server: no [[server]] table: nothing to serve".into());
                }
                for (i, server) in list.iter().enumerate() {
                    if let Some(s) = self.server(i + 1, server, &defaults) {
                        servers.push(s);
                    }
                }
            }
            Some((span, _)) => self.error(
                span,
                "server: must be an array of tables: write [[server]], not [server]".into(),
            ),
        }
        self.across_servers(&servers);
        Config {
            servers,
            log_format,
        }
    }

    /// Reports every key of `table` not in `valid` (with a hint when `elsewhere` knows
    /// where it belongs) and returns the table without them.
    fn known_keys<'i>(
        &mut self,
        table: &Table<'i>,
        valid: &[&str],
        ctx: &str,
        elsewhere: &[(&[&str], &str)],
    ) -> Table<'i> {
        let mut kept = table.clone();
        for key in table.keys() {
            let name: &str = key.get_ref();
            if valid.contains(&name) {
                continue;
            }
            let message = match elsewhere.iter().find(|(keys, _)| keys.contains(&name)) {
                Some((_, hint)) => format!("{ctx}key {name:?} {hint}"),
                None => {
                    let hint = closest(name, valid)
                        .map(|c| format!("did you mean {c:?}? "))
                        .unwrap_or_default();
                    format!(
                        "{ctx}unknown key {name:?} ({hint}valid keys: {})",
                        valid.join(", ")
                    )
                }
            };
            self.error(key.span(), message);
            kept.remove(name);
        }
        kept
    }

    /// Reads `table` (its keys already checked) into `T` with serde; a type error is
    /// reported at its key.
    fn typed<'de, T: Deserialize<'de>>(
        &mut self,
        span: Range<usize>,
        table: Table<'de>,
        ctx: &str,
    ) -> Option<T> {
        let keys: Vec<(String, Range<usize>, Range<usize>)> = table
            .iter()
            .map(|(k, v)| (k.get_ref().to_string(), k.span(), v.span()))
            .collect();
        let value = Spanned::new(span.clone(), DeValue::Table(table));
        match T::deserialize(ValueDeserializer::from(value)) {
            Ok(t) => Some(t),
            Err(e) => {
                let at = e.span().unwrap_or(span);
                let key = keys.iter().find(|(_, k, v)| {
                    (k.start..k.end.max(k.start + 1)).contains(&at.start)
                        || (v.start..v.end.max(v.start + 1)).contains(&at.start)
                });
                // serde names Rust types; an operator reads TOML.
                let what = e
                    .message()
                    .replace("expected f64", "expected a number")
                    .replace("expected usize", "expected a whole number (0 or more)");
                let message = match key {
                    Some((name, ..)) => format!("{ctx}{name}: {what}"),
                    None => format!("{ctx}{what}"),
                };
                self.error(at, message);
                None
            }
        }
    }

    fn seconds(
        &mut self,
        value: &Option<Spanned<f64>>,
        range: Seconds,
        key: &str,
        ctx: &str,
        out: &mut f64,
    ) {
        if let Some(v) = value {
            match range.check(*v.get_ref()) {
                Ok(v) => *out = v,
                Err(e) => self.error(v.span(), format!("{ctx}{key}: {e}")),
            }
        }
    }

    fn server(
        &mut self,
        index: usize,
        value: &Spanned<DeValue<'_>>,
        defaults: &StreamSettings,
    ) -> Option<ServerConfig> {
        let ctx = format!("server {index}: ");
        let DeValue::Table(table) = value.get_ref() else {
            self.error(
                value.span(),
                format!("{ctx}must be a table: write [[server]]"),
            );
            return None;
        };
        let table = self.known_keys(
            table,
            SERVER_KEYS,
            &ctx,
            &[
                (STREAM_ONLY_KEYS, "belongs in a [[server.stream]] table"),
                (
                    SETTING_KEYS,
                    "belongs in a [[server.stream]] table or in [defaults]",
                ),
                (PROCESS_KEYS, PROCESS_KEY_HINT),
            ],
        );
        let streams = table.get("stream").cloned();
        let mut server = ServerConfig {
            line: self.line(value.span().start),
            ..ServerConfig::default()
        };
        // A server whose own keys are wrong is not returned (its listen address may be
        // unknown), but its streams are still checked.
        let errors_before = self.errors.len();
        if let Some(raw) = self.typed::<RawServer>(value.span(), table, &ctx) {
            self.server_keys(&raw, &mut server, &ctx);
        }
        let server_ok = self.errors.len() == errors_before;
        match streams.as_ref().map(|v| (v.span(), v.get_ref())) {
            None => self.error(
                value.span(),
                format!("{ctx}no streams: add a [[server.stream]] table after it"),
            ),
            Some((span, DeValue::Array(list))) => {
                if list.is_empty() {
                    self.error(
                        span,
                        format!("{ctx}no streams: add a [[server.stream]] table after it"),
                    );
                }
                for (j, stream) in list.iter().enumerate() {
                    if let Some(s) = self.stream(index, j + 1, stream, defaults) {
                        if let Some(first) = server.streams.iter().find(|o| o.name == s.name) {
                            let message = format!(
                                "stream {:?}: this server already has a stream of that name (line {})",
                                s.name, first.line
                            );
                            self.errors.push(ConfigError {
                                line: s.line,
                                message,
                            });
                        } else {
                            server.streams.push(s);
                        }
                    }
                }
            }
            Some((span, _)) => self.error(
                span,
                format!(
                    "{ctx}stream: must be an array of tables: write [[server.stream]], not [server.stream]"
                ),
            ),
        }
        server_ok.then_some(server)
    }

    fn server_keys(&mut self, raw: &RawServer, server: &mut ServerConfig, ctx: &str) {
        if let Some(listen) = &raw.listen {
            match listen.get_ref().parse() {
                Ok(addr) => server.listen = addr,
                Err(_) => self.error(
                    listen.span(),
                    format!(
                        "{ctx}listen: {:?} is not ADDR:PORT (e.g. 0.0.0.0:8080)",
                        listen.get_ref()
                    ),
                ),
            }
        }
        if let Some(n) = raw.max_clients {
            server.max_clients = n;
        }
        if let Some(n) = &raw.max_clients_per_ip {
            match check_max_clients_per_ip(*n.get_ref()) {
                Ok(n) => server.max_clients_per_ip = n,
                Err(e) => self.error(n.span(), format!("{ctx}max_clients_per_ip: {e}")),
            }
        }
        if let Some(n) = raw.client_queue {
            server.client_queue = n;
        }
        if let Some(b) = raw.keep_running {
            server.keep_running = b;
        }
        if let Some(b) = raw.ll_hls {
            server.ll_hls = b;
        }
        self.seconds(
            &raw.client_timeout,
            CLIENT_TIMEOUT,
            "client_timeout",
            ctx,
            &mut server.client_timeout,
        );
        self.seconds(
            &raw.header_timeout,
            HEADER_TIMEOUT,
            "header_timeout",
            ctx,
            &mut server.header_timeout,
        );
        self.seconds(&raw.burst, BURST, "burst", ctx, &mut server.burst);
        if let Some(w) = &raw.window {
            match check_window(*w.get_ref()) {
                Ok(w) => server.window = w,
                Err(e) => self.error(w.span(), format!("{ctx}window: {e}")),
            }
        }
        for net in raw.allow.iter().flatten() {
            match Network::parse(net.get_ref()) {
                Ok(n) => server.allow.push(n),
                Err(e) => self.error(net.span(), format!("{ctx}allow: {e}")),
            }
        }
    }

    fn stream(
        &mut self,
        server: usize,
        index: usize,
        value: &Spanned<DeValue<'_>>,
        defaults: &StreamSettings,
    ) -> Option<StreamConfig> {
        let DeValue::Table(table) = value.get_ref() else {
            self.error(
                value.span(),
                format!(
                    "server {server}, stream {index}: must be a table: write [[server.stream]]"
                ),
            );
            return None;
        };
        let named = table
            .get("name")
            .and_then(|n| n.get_ref().as_str())
            .filter(|n| valid_stream_name(n));
        let ctx = match named {
            Some(name) => format!("stream {name:?}: "),
            None => format!("server {server}, stream {index}: "),
        };
        let valid: Vec<&str> = STREAM_ONLY_KEYS
            .iter()
            .chain(SETTING_KEYS)
            .copied()
            .collect();
        let table = self.known_keys(
            table,
            &valid,
            &ctx,
            &[
                (
                    PER_SERVER_FOR_NOW,
                    "is set per server for now: put it in the [[server]] table",
                ),
                (
                    SERVER_KEYS,
                    "is a server setting: put it in the [[server]] table",
                ),
                (PROCESS_KEYS, PROCESS_KEY_HINT),
            ],
        );
        let raw: RawStream = self.typed(value.span(), table, &ctx)?;
        let line = self.line(value.span().start);
        let mut ok = true;
        let name = match &raw.name {
            None => {
                self.error(value.span(), format!("{ctx}missing key \"name\""));
                ok = false;
                String::new()
            }
            Some(n) if !valid_stream_name(n.get_ref()) => {
                self.error(
                    n.span(),
                    format!(
                        "{ctx}name: {:?} is not a stream name (1 to 64 of A-Z a-z 0-9 - _ ., not \".\" or \"..\")",
                        n.get_ref()
                    ),
                );
                ok = false;
                String::new()
            }
            Some(n) => n.get_ref().clone(),
        };
        let mut settings = defaults.clone();
        let errors_before = self.errors.len();
        self.settings(&raw, &mut settings, &ctx);
        ok &= self.errors.len() == errors_before;
        let errors_before = self.errors.len();
        let access = self.access(&raw, &ctx);
        ok &= self.errors.len() == errors_before;
        let Some(spec) = &raw.input else {
            self.error(value.span(), format!("{ctx}missing key \"input\""));
            return None;
        };
        let input_line = self.line(spec.span().start);
        let text = spec.get_ref().as_str();
        let known_scheme = text.starts_with("http://")
            || text
                .get(..7)
                .is_some_and(|p| p.eq_ignore_ascii_case("rtsp://"));
        if text.is_empty() {
            self.error(spec.span(), format!("{ctx}input: empty"));
            return None;
        }
        if text.contains("://") && !known_scheme {
            self.error(
                spec.span(),
                format!(
                    "{ctx}input: {text:?}: unsupported URL scheme (expected a file path, \"-\", \"push\", http:// or rtsp://)"
                ),
            );
            return None;
        }
        let input = match Input::parse(text, settings.looped) {
            Ok(input) => input,
            Err(e) => {
                self.error(spec.span(), format!("{ctx}input: {e}"));
                return None;
            }
        };
        if let Some(l) = &raw.looped
            && *l.get_ref()
            && !matches!(input, Input::File { .. })
        {
            self.error(
                l.span(),
                format!("{ctx}loop: only file inputs can loop (input is {text:?})"),
            );
            ok = false;
        }
        let mut input = input;
        if let Some(on) = &raw.on_demand
            && *on.get_ref()
        {
            match &mut input {
                Input::Rtsp { on_demand, .. } => *on_demand = true,
                _ => {
                    self.error(
                        on.span(),
                        format!("{ctx}on_demand: only rtsp:// inputs can run on demand (input is {text:?})"),
                    );
                    ok = false;
                }
            }
        }
        if let (Some(key), false) = (&raw.push_key, input == Input::Push) {
            self.error(
                key.span(),
                format!("{ctx}push_key: only a push stream takes pushes (input is {text:?}, not \"push\")"),
            );
            ok = false;
        }
        ok.then_some(StreamConfig {
            name,
            input,
            settings,
            line,
            input_line,
            access,
        })
    }

    /// Reads a stream's credentials: tokens URL-safe and long enough, Basic as a pair.
    fn access(&mut self, raw: &RawStream, ctx: &str) -> AccessConfig {
        let mut access = AccessConfig::default();
        let token = |this: &mut Self, key: &str, value: &Option<Spanned<String>>| {
            let v = value.as_ref()?;
            match check_token(v.get_ref()) {
                Ok(()) => Some(Secret::new(v.get_ref().clone())),
                Err(e) => {
                    // The value is a secret: named by its key, never quoted.
                    this.error(v.span(), format!("{ctx}{key}: {e}"));
                    None
                }
            }
        };
        access.read_token = token(self, "read_token", &raw.read_token);
        access.push_key = token(self, "push_key", &raw.push_key);
        match (&raw.read_user, &raw.read_password) {
            (None, None) => {}
            (Some(user), Some(password)) => {
                let u = user.get_ref();
                if u.is_empty() || u.contains(':') || u.chars().any(char::is_control) {
                    self.error(
                        user.span(),
                        format!("{ctx}read_user: {u:?}: must be non-empty, without ':' or control characters"),
                    );
                } else if password.get_ref().is_empty()
                    || password.get_ref().chars().any(char::is_control)
                {
                    self.error(
                        password.span(),
                        format!(
                            "{ctx}read_password: must be non-empty, without control characters"
                        ),
                    );
                } else {
                    access.read_basic = Some((u.clone(), Secret::new(password.get_ref().clone())));
                }
            }
            (Some(v), None) => self.error(
                v.span(),
                format!("{ctx}read_user: needs read_password too (Basic credentials are a pair)"),
            ),
            (None, Some(v)) => self.error(
                v.span(),
                format!("{ctx}read_password: needs read_user too (Basic credentials are a pair)"),
            ),
        }
        access
    }

    /// Applies the tunables of a stream table or `[defaults]` over `out`.
    fn settings(&mut self, raw: &RawStream, out: &mut StreamSettings, ctx: &str) {
        if let Some(list) = &raw.formats
            && let Some(f) = self.formats(list, ctx)
        {
            out.formats = f;
        }
        if let Some(l) = &raw.looped {
            out.looped = *l.get_ref();
        }
        self.seconds(&raw.prefill, PREFILL, "prefill", ctx, &mut out.prefill);
        self.seconds(
            &raw.rtsp_timeout,
            RTSP_TIMEOUT,
            "rtsp_timeout",
            ctx,
            &mut out.rtsp_timeout,
        );
        self.seconds(
            &raw.idle_close,
            IDLE_CLOSE,
            "idle_close",
            ctx,
            &mut out.idle_close,
        );
        self.seconds(
            &raw.audio_cluster,
            AUDIO_CLUSTER,
            "audio_cluster",
            ctx,
            &mut out.audio_cluster,
        );
        self.seconds(
            &raw.segment_duration,
            SEGMENT_DURATION,
            "segment_duration",
            ctx,
            &mut out.segment_duration,
        );
        self.seconds(
            &raw.part_duration,
            PART_DURATION,
            "part_duration",
            ctx,
            &mut out.part_duration,
        );
    }

    fn formats(&mut self, list: &Spanned<Vec<Spanned<String>>>, ctx: &str) -> Option<Formats> {
        let mut f = Formats {
            mkv: false,
            hls: false,
            dash: false,
        };
        let mut ok = true;
        for item in list.get_ref() {
            let slot = match item.get_ref().as_str() {
                "mkv" => &mut f.mkv,
                "hls" => &mut f.hls,
                "dash" => &mut f.dash,
                other => {
                    self.error(
                        item.span(),
                        format!("{ctx}unknown format {other:?} (expected mkv, hls, dash)"),
                    );
                    ok = false;
                    continue;
                }
            };
            if *slot {
                self.error(
                    item.span(),
                    format!("{ctx}format {:?} is listed twice", item.get_ref()),
                );
                ok = false;
            }
            *slot = true;
        }
        if !ok {
            return None;
        }
        let problem = if !f.mkv {
            Some("live MKV is always served for now: list \"mkv\"")
        } else if f.hls != f.dash {
            Some(
                "HLS and DASH share their segments and come together for now: use [\"mkv\"] or [\"mkv\", \"hls\", \"dash\"]",
            )
        } else {
            None
        };
        if let Some(problem) = problem {
            self.error(list.span(), format!("{ctx}formats: {problem}"));
            return None;
        }
        Some(f)
    }

    /// Checks between servers: listen addresses that would collide, stdin read twice.
    fn across_servers(&mut self, servers: &[ServerConfig]) {
        for (i, s) in servers.iter().enumerate() {
            if let Some(other) = servers[..i]
                .iter()
                .find(|o| addresses_collide(o.listen, s.listen))
            {
                self.errors.push(ConfigError {
                    line: s.line,
                    message: format!(
                        "server {}: listen {} collides with {} of the server at line {}",
                        i + 1,
                        s.listen,
                        other.listen,
                        other.line
                    ),
                });
            }
        }
        let mut stdin = servers
            .iter()
            .flat_map(|s| &s.streams)
            .filter(|s| s.input == Input::Stdin);
        if let Some(first) = stdin.next() {
            for s in stdin {
                self.errors.push(ConfigError {
                    line: s.input_line,
                    message: format!(
                        "stream {:?}: input \"-\": stdin is already the input of stream {:?} (line {})",
                        s.name, first.name, first.input_line
                    ),
                });
            }
        }
    }
}

/// Whether two listen addresses cannot both be bound: the same port (not 0) on the same
/// address, or on any address of the family (IPv6's also takes IPv4 on dual-stack hosts).
fn addresses_collide(a: SocketAddr, b: SocketAddr) -> bool {
    if a.port() != b.port() || a.port() == 0 {
        return false;
    }
    let covers = |wide: IpAddr, other: IpAddr| {
        wide.is_unspecified() && (wide.is_ipv6() || wide.is_ipv4() == other.is_ipv4())
    };
    a.ip() == b.ip() || covers(a.ip(), b.ip()) || covers(b.ip(), a.ip())
}

/// The valid key closest to a mistyped one, when it is close enough to be the intent.
fn closest<'a>(key: &str, valid: &[&'a str]) -> Option<&'a str> {
    valid
        .iter()
        .map(|v| (edit_distance(key, v), *v))
        .filter(|(d, v)| *d <= 2.max(v.len() / 4) && *d < v.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, v)| v)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let next = (diagonal + usize::from(ca != cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        match parse(text, "t.toml") {
            Ok(c) => panic!("accepted: {c:?}"),
            Err(e) => e.to_string().lines().map(str::to_string).collect(),
        }
    }

    #[test]
    fn ranges_match_the_command_line() {
        assert_eq!(RTSP_TIMEOUT.check(10.0), Ok(10.0));
        assert_eq!(
            RTSP_TIMEOUT.check(0.5),
            Err("must be between 1 and 3600 seconds".into())
        );
        assert_eq!(
            PREFILL.check(-1.0),
            Err("-1 is not a number of seconds between 0 and 86400".into())
        );
        assert!(PREFILL.check(f64::NAN).is_err());
        assert_eq!(
            PART_DURATION.check(3.0),
            Err("must be between 0.05 and 2 seconds".into())
        );
        assert_eq!(
            check_window(2),
            Err("must be between 3 and 1000 segments".into())
        );
        assert_eq!(check_window(1000), Ok(1000));
    }

    #[test]
    fn minimal_file_takes_every_default() {
        let c = parse(
            "[[server]]\n[[server.stream]]\nname = \"live\"\ninput = \"a.mkv\"\n",
            "t.toml",
        )
        .unwrap();
        let server = &c.servers[0];
        assert_eq!(
            ServerConfig {
                streams: Vec::new(),
                line: 0,
                ..server.clone()
            },
            ServerConfig::default()
        );
        assert_eq!(server.line, 1);
        assert_eq!(server.streams[0].settings, StreamSettings::default());
        assert_eq!(server.streams[0].line, 2);
        assert_eq!(server.streams[0].input_line, 4);
    }

    #[test]
    fn defaults_apply_and_streams_override() {
        let c = parse(
            "[defaults]\nloop = true\nsegment_duration = 4\nformats = [\"mkv\"]\n\
             [[server]]\n[[server.stream]]\nname = \"a\"\ninput = \"a.mkv\"\n\
             [[server.stream]]\nname = \"b\"\ninput = \"b.mkv\"\nloop = false\nsegment_duration = 1.5\n",
            "t.toml",
        )
        .unwrap();
        let s = &c.servers[0].streams;
        assert_eq!(s[0].settings.segment_duration, 4.0);
        assert_eq!(s[0].settings.formats, Formats::MKV_ONLY);
        assert!(s[0].publish_options().cmaf.is_none());
        assert_eq!(
            s[0].input,
            Input::File {
                path: "a.mkv".into(),
                looped: true
            }
        );
        assert_eq!(s[1].settings.segment_duration, 1.5);
        assert_eq!(
            s[1].input,
            Input::File {
                path: "b.mkv".into(),
                looped: false
            }
        );
        // The server's stand-in target duration is its longest stream's.
        assert_eq!(c.servers[0].server_options(false).hls.target_duration_s, 4);
    }

    #[test]
    fn access_keys_are_checked_and_never_quoted() {
        let e = errors(
            "[[server]]\nallow = [\"10.0.0.0/33\", \"lan\"]\n[[server.stream]]\nname = \"x\"\ninput = \"push\"\nread_token = \"short-secret\"\npush_key = \"has space 0123456789\"\nread_user = \"a:b\"\nread_password = \"pw\"\n[[server.stream]]\nname = \"y\"\ninput = \"a.mkv\"\npush_key = \"0123456789abcdef\"\nread_password = \"pw\"\n",
        );
        assert_eq!(
            e,
            [
                "t.toml:2: server 1: allow: \"10.0.0.0/33\": prefix length must be 0 to 32",
                "t.toml:2: server 1: allow: \"lan\" is not an address or network (e.g. 192.168.1.0/24, ::1)",
                "t.toml:6: stream \"x\": read_token: must be 16 to 256 characters (it is 12): e.g. `openssl rand -hex 16`",
                "t.toml:7: stream \"x\": push_key: ' ' is not allowed: use A-Z a-z 0-9 - . _ ~ (it goes into URLs as is)",
                "t.toml:8: stream \"x\": read_user: \"a:b\": must be non-empty, without ':' or control characters",
                "t.toml:13: stream \"y\": push_key: only a push stream takes pushes (input is \"a.mkv\", not \"push\")",
                "t.toml:14: stream \"y\": read_password: needs read_user too (Basic credentials are a pair)",
            ]
        );
        for line in &e {
            assert!(
                !line.contains("short-secret") && !line.contains("has space"),
                "{line}"
            );
        }
    }

    #[test]
    fn access_rules_come_from_the_file() {
        let c = parse(
            "[[server]]\nallow = [\"192.168.1.0/24\", \"::1\"]\n[[server.stream]]\nname = \"cam\"\ninput = \"a.mkv\"\nread_token = \"0123456789abcdef\"\nread_user = \"u\"\nread_password = \"p w\"\n[[server.stream]]\nname = \"in\"\ninput = \"push\"\npush_key = \"fedcba9876543210\"\n",
            "t.toml",
        )
        .unwrap();
        let server = &c.servers[0];
        assert_eq!(server.allow.len(), 2);
        assert_eq!(server.server_options(false).allow, server.allow);
        let cam = server.streams[0].access.rules().unwrap();
        assert!(cam.offers_basic());
        let suffix = cam.url_suffix();
        assert_eq!(suffix.len(), "?token=".len() + 32, "{suffix}");
        // A fresh media token each time rules are made: never the read token.
        assert_ne!(
            suffix,
            server.streams[0].access.rules().unwrap().url_suffix()
        );
        assert!(!suffix.contains("0123456789abcdef"));
        let push = server.streams[1].access.rules().unwrap();
        assert_eq!(push.url_suffix(), "", "reading stays open");
        assert!(push.push_key.is_some());
        // Debug output (as `summary` or a panic might print) hides every secret.
        let shown = format!("{c:?}");
        for secret in ["0123456789abcdef", "p w", "fedcba9876543210"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
    }

    #[test]
    fn unknown_keys_get_a_suggestion() {
        let e = errors(
            "[[server]]\nlisten = \"127.0.0.1:0\"\nmax_client = 5\n[[server.stream]]\nname = \"x\"\ninput = \"push\"\n",
        );
        assert_eq!(
            e,
            [
                "t.toml:3: server 1: unknown key \"max_client\" (did you mean \"max_clients\"? valid keys: listen, max_clients, max_clients_per_ip, client_timeout, header_timeout, keep_running, burst, client_queue, window, ll_hls, allow, stream)"
            ]
        );
        let e = errors("[[server]]\n[[server.stream]]\nname = \"x\"\ninput = \"push\"\nzzz = 1\n");
        assert_eq!(e.len(), 1);
        assert!(
            e[0].starts_with("t.toml:5: stream \"x\": unknown key \"zzz\" (valid keys: name, "),
            "{e:?}"
        );
    }

    #[test]
    fn every_error_is_reported_in_line_order() {
        let e = errors(
            "[[server]]\nwindow = 2\n[[server.stream]]\nname = \"x\"\ninput = \"push\"\nprefill = -3\n",
        );
        assert_eq!(
            e,
            [
                "t.toml:2: server 1: window: must be between 3 and 1000 segments",
                "t.toml:6: stream \"x\": prefill: -3 is not a number of seconds between 0 and 86400",
            ]
        );
    }

    #[test]
    fn log_format_is_a_top_level_key() {
        let stream = "[[server]]\n[[server.stream]]\nname = \"a\"\ninput = \"push\"\n";
        let c = parse(&format!("log_format = \"json\"\n{stream}"), "t.toml").unwrap();
        assert_eq!(c.log_format, LogFormat::Json);
        let c = parse(stream, "t.toml").unwrap();
        assert_eq!(c.log_format, LogFormat::Text);
        assert_eq!(
            errors(&format!("log_format = \"xml\"\n{stream}")),
            ["t.toml:1: log_format: unknown log format \"xml\" (expected text, json)"]
        );
        assert_eq!(
            errors(&format!("log_format = 1\n{stream}")),
            ["t.toml:1: log_format: must be a string: \"text\" or \"json\""]
        );
        assert_eq!(
            errors(&format!("{stream}log_format = \"json\"\n")),
            [
                "t.toml:5: stream \"a\": key \"log_format\" is per process: put it at the top of the file, before any table"
            ]
        );
        assert_eq!(
            errors(
                "[[server]]\nlog_format = \"json\"\n[[server.stream]]\nname = \"a\"\ninput = \"push\"\n"
            ),
            [
                "t.toml:2: server 1: key \"log_format\" is per process: put it at the top of the file, before any table"
            ]
        );
    }

    #[test]
    fn listen_collisions() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(addresses_collide(a("0.0.0.0:80"), a("127.0.0.1:80")));
        assert!(addresses_collide(a("[::]:80"), a("127.0.0.1:80")));
        assert!(addresses_collide(a("127.0.0.1:80"), a("127.0.0.1:80")));
        assert!(!addresses_collide(a("127.0.0.1:80"), a("127.0.0.2:80")));
        assert!(!addresses_collide(a("127.0.0.1:0"), a("127.0.0.1:0")));
        assert!(!addresses_collide(a("0.0.0.0:80"), a("[::1]:80")));
        assert!(!addresses_collide(a("0.0.0.0:80"), a("0.0.0.0:81")));
    }

    #[test]
    fn suggestions() {
        assert_eq!(closest("windw", SERVER_KEYS), Some("window"));
        assert_eq!(
            closest("segment_duraton", SETTING_KEYS),
            Some("segment_duration")
        );
        assert_eq!(closest("xyz", SERVER_KEYS), None);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
