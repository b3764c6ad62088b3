//! The bounded queue from the input readers to the event loop (`UPDATE_QUEUE` in
//! src/server/mod.rs): a reader that finds it full waits, and the loop's next drain lets it
//! go on. Driven through the reader's own side of it (`Server::notifier`), with the loop
//! not yet running, so that nothing drains it before the test says so.
//!
//! Synchronised on state only: the queue answering `Full`, a reader thread seen parked
//! (Linux: /proc/self/task/TID/stat), the reader's own "sent" message. Deadlines only
//! bound the waits.

mod common;

use std::sync::mpsc::{self, TryRecvError, TrySendError};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use muxcast::server::Server;
use muxcast::stream::{InputState, Notify, Update};

/// `UPDATE_QUEUE` (private to the server): messages the queue holds, all streams together.
const QUEUE: usize = 1024;

/// The scheduler state of one of this process's threads (`R`, `S`, ...), or None once it
/// has exited.
fn thread_state(tid: libc::pid_t) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    // "TID (COMM) STATE ...": COMM may hold spaces and parentheses, the state follows the
    // last ')'.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

#[test]
fn a_reader_waits_while_1024_updates_are_queued_and_goes_on_when_the_loop_drains() {
    // The server lives in its thread (it is not Send) and runs its loop only when told.
    let (ready_tx, ready_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let run = thread::spawn(move || {
        let mut server = Server::bind(server_options(&Setup::default()))?;
        let id = server.add_stream("q", "test", None);
        let ready = (
            id,
            server.notifier(),
            server.local_addr(),
            server.shutdown_handle(),
        );
        ready_tx.send(ready).unwrap();
        match go_rx.recv() {
            Ok(()) => server.run(),
            Err(_) => Ok(false),
        }
    });
    let (id, notify, addr, shutdown) = ready_rx.recv().expect("server bound");
    let probe = notify.tx.clone();

    // Fill it with the loop not running: each message fits until the bound, the next one
    // does not (an unbounded queue never answers Full; another bound answers it elsewhere).
    // The first as a reader sends it, which wakes the loop (it wakes when it runs).
    let filler = |i: usize| Update::State(InputState::Reconnecting(format!("filler {i}")));
    notify.send(id, filler(0));
    for i in 1..QUEUE {
        notify
            .tx
            .try_send((id, filler(i)))
            .unwrap_or_else(|e| panic!("update {i} of {QUEUE} did not fit: {e}"));
    }
    assert!(
        matches!(
            notify.tx.try_send((id, filler(QUEUE))),
            Err(TrySendError::Full(_))
        ),
        "the queue took more than {QUEUE} updates"
    );

    // A reader sends one more, as readers do (a blocking send): it must wait.
    let (tid_tx, tid_rx) = mpsc::channel();
    let (sent_tx, sent_rx) = mpsc::channel();
    let reader = thread::spawn(move || {
        // SAFETY: gettid(2) has no preconditions.
        tid_tx.send(unsafe { libc::gettid() }).unwrap();
        notify.send(id, Update::State(InputState::Live));
        sent_tx.send(()).unwrap();
        notify
    });
    let tid = tid_rx.recv().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert_eq!(
            sent_rx.try_recv(),
            Err(TryRecvError::Empty),
            "the reader's send returned while the queue was full"
        );
        match thread_state(tid) {
            Some('S') => break,
            Some(_) => {}
            None => panic!("the reader thread exited while the queue was full"),
        }
        assert!(Instant::now() < deadline, "the reader never blocked");
        thread::sleep(Duration::from_millis(1));
    }
    // Parked with its update not taken, and still no room.
    assert_eq!(sent_rx.try_recv(), Err(TryRecvError::Empty));
    assert!(
        matches!(
            probe.try_send((id, filler(QUEUE))),
            Err(TrySendError::Full(_))
        ),
        "room in the queue while the reader waits"
    );

    // Start the loop: its first drain makes room, and the reader goes on.
    go_tx.send(()).unwrap();
    sent_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the reader was not released once the loop drained the queue");
    let notify = reader.join().expect("reader thread");

    // Every update reached the loop, the reader's last: 1024 reconnects, then live.
    let s = wait_for_stream(addr, "q", Duration::from_secs(10), |s| s["state"] == "live");
    assert_eq!(s["reconnects"], QUEUE as u64, "{s}");
    // Drained: the queue takes an update again without waiting.
    notify
        .tx
        .try_send((id, Update::State(InputState::Live)))
        .expect("room after the drain");
    shutdown.shutdown();
    run.join().expect("server thread").unwrap();
}
