//! How a pusher's connection travels from the event loop to its stream's reader thread.

use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::Receiver;

use super::body::BodyFraming;

/// A connection handed to a push stream's reader thread: the socket (blocking again) and
/// what was already read past the request head.
pub struct PushConn {
    pub socket: TcpStream,
    pub leftover: Vec<u8>,
    pub framing: BodyFraming,
    pub expect_continue: bool,
}

/// Where a push stream's reader thread receives its pushers.
pub struct PushInbox {
    pub rx: Receiver<PushConn>,
    /// Cleared when a pusher leaves, so the next one is accepted.
    pub active: Arc<AtomicBool>,
}
