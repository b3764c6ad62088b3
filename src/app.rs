//! Wiring: one stream = one reader thread feeding a publisher that the server reads.
//! Shared by the binary and the integration tests, so both start streams the same way.

use std::io;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::channel;
use std::thread;

use crate::config::{ServerConfig, StreamConfig};
use crate::ingest::push::PushInbox;
use crate::ingest::source::{Input, ReaderOptions, run_input};
use crate::server::{PushSlot, Server};
use crate::stream::{PublishOptions, Publisher};

/// Declares stream `name` on `server` and starts its reader thread; returns its id.
pub fn spawn_stream(
    server: &mut Server,
    name: &str,
    input: Input,
    reader: ReaderOptions,
    publish: PublishOptions,
) -> io::Result<usize> {
    let (push_slot, inbox) = if input == Input::Push {
        let (tx, rx) = channel();
        let active = Arc::new(AtomicBool::new(false));
        let slot = PushSlot {
            tx,
            active: active.clone(),
        };
        (Some(slot), Some(PushInbox { rx, active }))
    } else {
        (None, None)
    };
    let id = server.add_stream(name, &input.describe(), push_slot);
    server.set_cmaf(id, publish.cmaf.is_some());
    let demand = server.demand(id);
    let mut publisher = Publisher::new(id, Box::new(server.notifier()), publish);
    publisher.set_stop_flag(server.stop_flag(id));
    if let Input::File { .. } = input {
        // The prefill publishes the first seconds at once: they belong that far back.
        publisher.set_clock_lead(reader.prefill);
    }
    let label = format!("stream {name} ({})", input.describe());
    thread::Builder::new()
        .name(format!("in-{name}"))
        .spawn(move || run_input(input, publisher, reader, label, inbox, demand))?;
    Ok(id)
}

/// Starts a configured stream on `server`: its access rules, then its reader.
pub fn start_stream(server: &mut Server, stream: &StreamConfig) -> io::Result<usize> {
    let rules = stream.access.rules()?;
    let id = spawn_stream(
        server,
        &stream.name,
        stream.input.clone(),
        stream.reader_options(),
        stream.publish_options(),
    )?;
    server.set_access(id, rules);
    Ok(id)
}

/// What a configuration reload does to one running server's streams.
#[derive(Debug, Default, PartialEq)]
pub struct ReloadPlan {
    /// Gone from the file: stopped.
    pub removed: Vec<String>,
    /// New in the file: started.
    pub added: Vec<StreamConfig>,
    /// In both, with a difference: stopped, then started as the file says now.
    pub changed: Vec<StreamConfig>,
    /// In both, the same: not touched (their viewers are not disturbed).
    pub unchanged: Vec<String>,
    /// Changed, but reading standard input before and after: stdin cannot be opened
    /// again (a restarted reader would find it consumed and end at once), so these keep
    /// running as they are until muxcast restarts.
    pub stdin_kept: Vec<String>,
    /// Server keys whose new values need a restart (the event loop is built with them).
    pub needs_restart: Vec<&'static str>,
}

impl ReloadPlan {
    /// Compares a running server's configuration with its new one (same `listen`).
    pub fn new(old: &ServerConfig, new: &ServerConfig) -> ReloadPlan {
        let mut plan = ReloadPlan::default();
        // Where a table sits in the file is no change.
        let same = |a: &StreamConfig, b: &StreamConfig| {
            StreamConfig {
                line: 0,
                input_line: 0,
                ..a.clone()
            } == StreamConfig {
                line: 0,
                input_line: 0,
                ..b.clone()
            }
        };
        for o in &old.streams {
            match new.streams.iter().find(|n| n.name == o.name) {
                None => plan.removed.push(o.name.clone()),
                Some(n) if same(o, n) => plan.unchanged.push(o.name.clone()),
                Some(n) if matches!((&o.input, &n.input), (Input::Stdin, Input::Stdin)) => {
                    plan.stdin_kept.push(o.name.clone())
                }
                Some(n) => plan.changed.push(n.clone()),
            }
        }
        for n in &new.streams {
            if !old.streams.iter().any(|o| o.name == n.name) {
                plan.added.push(n.clone());
            }
        }
        let keys: [(&'static str, bool); 10] = [
            ("max_clients", old.max_clients != new.max_clients),
            (
                "max_clients_per_ip",
                old.max_clients_per_ip != new.max_clients_per_ip,
            ),
            ("client_timeout", old.client_timeout != new.client_timeout),
            ("header_timeout", old.header_timeout != new.header_timeout),
            ("keep_running", old.keep_running != new.keep_running),
            ("burst", old.burst != new.burst),
            ("client_queue", old.client_queue != new.client_queue),
            ("window", old.window != new.window),
            ("ll_hls", old.ll_hls != new.ll_hls),
            ("allow", old.allow != new.allow),
        ];
        plan.needs_restart = keys
            .into_iter()
            .filter_map(|(k, differs)| differs.then_some(k))
            .collect();
        plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    fn server(text: &str) -> ServerConfig {
        config::parse(text, "t.toml")
            .unwrap_or_else(|e| panic!("{e}"))
            .servers
            .remove(0)
    }

    #[test]
    fn a_reload_plan_names_what_to_stop_start_and_leave_alone() {
        let old = server(
            "[[server]]\n[[server.stream]]\nname = \"a\"\ninput = \"a.mkv\"\n\
             [[server.stream]]\nname = \"b\"\ninput = \"push\"\n\
             [[server.stream]]\nname = \"c\"\ninput = \"c.mkv\"\n",
        );
        // a moves down the file (unchanged), b goes, c changes, d comes; window changes.
        let new = server(
            "[[server]]\nwindow = 5\n[[server.stream]]\nname = \"d\"\ninput = \"push\"\n\
             [[server.stream]]\nname = \"c\"\ninput = \"c.mkv\"\nsegment_duration = 4\n\
             [[server.stream]]\nname = \"a\"\ninput = \"a.mkv\"\n",
        );
        let plan = ReloadPlan::new(&old, &new);
        assert_eq!(plan.removed, ["b"]);
        assert_eq!(plan.unchanged, ["a"]);
        assert_eq!(
            plan.changed.iter().map(|s| &s.name).collect::<Vec<_>>(),
            ["c"]
        );
        assert_eq!(plan.changed[0].settings.segment_duration, 4.0);
        assert_eq!(
            plan.added.iter().map(|s| &s.name).collect::<Vec<_>>(),
            ["d"]
        );
        assert_eq!(plan.needs_restart, ["window"]);
        // Credentials are part of a stream: a new read token restarts it.
        let token = server(
            "[[server]]\nwindow = 5\n[[server.stream]]\nname = \"a\"\ninput = \"a.mkv\"\nread_token = \"0123456789abcdef\"\n",
        );
        let plan = ReloadPlan::new(&new, &token);
        assert_eq!(plan.changed.len(), 1);
        assert_eq!(plan.removed, ["d", "c"]);
        assert!(plan.needs_restart.is_empty());
        assert_eq!(ReloadPlan::new(&old, &old).unchanged, ["a", "b", "c"]);
    }
    #[test]
    fn a_reload_notices_a_change_of_every_server_key() {
        // A key added to the [[server]] table must be compared here, or a reload that
        // changes it would say nothing and silently keep the old value.
        let sample = |key: &str| -> &str {
            match key {
                "max_clients" => "7",
                "max_clients_per_ip" => "3",
                "client_timeout" => "7.5",
                "header_timeout" => "3.5",
                "keep_running" => "true",
                "burst" => "1.5",
                "client_queue" => "12345",
                "window" => "4",
                "ll_hls" => "false",
                "allow" => "[\"10.0.0.0/8\"]",
                other => panic!(
                    "server key {other:?}: give it a sample here and compare it in ReloadPlan::new"
                ),
            }
        };
        let stream = "[[server.stream]]\nname = \"a\"\ninput = \"a.mkv\"\n";
        let old = server(&format!("[[server]]\n{stream}"));
        for key in config::SERVER_KEYS {
            // `listen` tells servers apart; `stream` is the streams' own comparison.
            if matches!(*key, "listen" | "stream") {
                continue;
            }
            let new = server(&format!("[[server]]\n{key} = {}\n{stream}", sample(key)));
            let plan = ReloadPlan::new(&old, &new);
            assert_eq!(plan.needs_restart, [*key], "{key}");
            assert_eq!(plan.unchanged, ["a"], "{key}");
        }
    }
    #[test]
    fn a_changed_stdin_stream_is_kept_running() {
        let old = server("[[server]]\n[[server.stream]]\nname = \"s\"\ninput = \"-\"\n");
        let new = server(
            "[[server]]\n[[server.stream]]\nname = \"s\"\ninput = \"-\"\nsegment_duration = 4\n",
        );
        let plan = ReloadPlan::new(&old, &new);
        assert_eq!(plan.stdin_kept, ["s"]);
        assert!(plan.changed.is_empty() && plan.removed.is_empty());
        // From stdin to a file: the file can be opened, so the stream restarts.
        let file = server("[[server]]\n[[server.stream]]\nname = \"s\"\ninput = \"a.mkv\"\n");
        let plan = ReloadPlan::new(&old, &file);
        assert!(plan.stdin_kept.is_empty());
        assert_eq!(plan.changed.len(), 1);
    }
}
