//! Wiring: one stream = one reader thread feeding a publisher that the server reads.
//! Shared by the binary and the integration tests, so both start streams the same way.

use std::io;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::channel;
use std::thread;

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
