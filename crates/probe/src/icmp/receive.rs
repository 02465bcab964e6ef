//! The receive side of one engine socket: draining its queues into the dispatcher, from the receive
//! task or, during bursts, from the sending probes themselves.
//!
//! Why senders help: on a busy runtime the receive task waits its turn behind every runnable probe.
//! When thousands of probes send at once (a burst on loopback answers inside `sendto`), replies pile up
//! in the socket's receive buffer faster than the task gets scheduled and the kernel drops the excess
//! (the buffer holds a few hundred packets with the default `net.core.rmem_max`). So after every
//! [`HELP_AFTER_SENDS`] sends without a drain, the sender drains the queue itself if no one else is
//! (a `try_lock`). At a steady pace the receive task drains after every reply and senders never help.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::dispatch::Dispatcher;
use super::reactor::SocketFd;
use super::socket::{IcmpSocket, cmsg_buffer};

/// Receive buffer: the largest IP packet (65,535 bytes) fits.
const RECV_BUF_LEN: usize = 65_536;
/// Messages the receive task reads per wakeup before yielding to other tasks.
const TASK_BUDGET: u32 = 1024;
/// Sends without a drain after which a sender drains the queue itself.
pub(crate) const HELP_AFTER_SENDS: u32 = 64;
/// Messages a helping sender reads at most.
const HELP_BUDGET: u32 = 256;
/// Consecutive receive errors (other than "empty") after which the task pauses instead of spinning.
const MAX_CONSECUTIVE_ERRORS: u32 = 64;

/// What the receive task and the probes share for one socket.
#[derive(Debug)]
pub(crate) struct Shared {
    pub sock: Arc<IcmpSocket>,
    pub dispatcher: Dispatcher,
    rx: Mutex<RxBuffers>,
    sends_since_drain: AtomicU32,
}

#[derive(Debug)]
struct RxBuffers {
    buf: Vec<u8>,
    cmsg: Vec<u8>,
    /// Consecutive failed reads.
    errors: u32,
}

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Drained {
    /// Every queue read returned "empty": readiness may be cleared.
    Empty,
    /// The budget ran out first.
    Budget,
    /// Reads keep failing.
    Failing,
}

impl Shared {
    pub fn new(sock: IcmpSocket, dispatcher: Dispatcher) -> Self {
        Shared {
            sock: Arc::new(sock),
            dispatcher,
            rx: Mutex::new(RxBuffers {
                buf: vec![0; RECV_BUF_LEN],
                cmsg: cmsg_buffer(),
                errors: 0,
            }),
            sends_since_drain: AtomicU32::new(0),
        }
    }

    /// Called after each successful send: drains the receive queue from the sender when the receive
    /// task has not run for [`HELP_AFTER_SENDS`] sends and nobody else is draining.
    pub fn after_send(&self) {
        if self.sends_since_drain.fetch_add(1, Ordering::Relaxed) + 1 >= HELP_AFTER_SENDS {
            self.help_receive();
        }
    }

    /// Drains up to [`HELP_BUDGET`] messages of the receive queue from the caller, unless someone
    /// else is draining.
    pub fn help_receive(&self) {
        if let Some(mut rx) = self.rx.try_lock() {
            self.drain(&mut rx, HELP_BUDGET, false);
        }
    }

    /// Reads the receive queue (and the error queue when `errqueue`) until empty or `budget` messages.
    fn drain(&self, rx: &mut RxBuffers, mut budget: u32, errqueue: bool) -> Drained {
        self.sends_since_drain.store(0, Ordering::Relaxed);
        let RxBuffers { buf, cmsg, errors } = rx;
        let mut queue_empty = false;
        while budget > 0 && !queue_empty && *errors < MAX_CONSECUTIVE_ERRORS {
            budget -= 1;
            match self.sock.recv(buf, cmsg) {
                Ok(r) => {
                    *errors = 0;
                    let pkt = buf.get(..r.len).unwrap_or(buf);
                    self.dispatcher
                        .on_packet(pkt, r.from, r.kernel_rx_ns, r.user_rx);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => queue_empty = true,
                Err(e) => {
                    // Usually an ICMP error reported once through sk_err; its details arrive as a
                    // packet (raw) or on the error queue (datagram).
                    *errors += 1;
                    tracing::trace!(error = %e, "ICMP socket receive error");
                }
            }
        }
        let mut errqueue_empty = !errqueue;
        while budget > 0 && !errqueue_empty && *errors < MAX_CONSECUTIVE_ERRORS {
            budget -= 1;
            match self.sock.recv_error(buf, cmsg) {
                Ok(r) => {
                    let quoted = buf.get(..r.len).unwrap_or(buf);
                    self.dispatcher
                        .on_error_queue(quoted, r.dst, r.icmp, r.offender);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => errqueue_empty = true,
                Err(e) => {
                    *errors += 1;
                    tracing::trace!(error = %e, "ICMP error-queue receive error");
                }
            }
        }
        if *errors >= MAX_CONSECUTIVE_ERRORS {
            *errors = 0;
            Drained::Failing
        } else if queue_empty && errqueue_empty {
            Drained::Empty
        } else {
            Drained::Budget
        }
    }
}

/// The receive task: waits for readiness, drains, forever (until aborted by the engine's drop).
pub(crate) async fn receive_loop(fd: Arc<AsyncFd<SocketFd>>, shared: Arc<Shared>) {
    loop {
        let mut guard = match fd.ready(Interest::READABLE | Interest::ERROR).await {
            Ok(g) => g,
            Err(e) => {
                tracing::error!(error = %e, "ICMP receive task stopped: readiness failed");
                return;
            }
        };
        // Only ICMP errors on a datagram socket (IP_RECVERR) land on the error queue, and they are
        // signalled as EPOLLERR; skipping the read otherwise saves a syscall per wakeup.
        let errqueue = guard.ready().is_error();
        let drained = shared.drain(&mut shared.rx.lock(), TASK_BUDGET, errqueue);
        match drained {
            Drained::Empty => guard.clear_ready(),
            Drained::Budget => {
                drop(guard);
                tokio::task::yield_now().await;
            }
            Drained::Failing => {
                drop(guard);
                tracing::warn!(
                    "ICMP socket reads keep failing; pausing its receive task for 100ms"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
