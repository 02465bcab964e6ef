//! The shared ICMP engine: one socket per address family for every ICMP probe in the process, and one
//! receive task per socket that hands replies to the probes waiting for them.
//!
//! Sockets open lazily on first use ([`IcmpEngine::mode`] or a probe) and stay open for the engine's
//! life; a failed open is not cached, so a later probe retries (for example after the sysctl was
//! widened). The receive task is spawned on the tokio runtime of the first probe that needs it and
//! respawned if that runtime has gone away; the runtime must have IO and time enabled.

use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use tokio::io::unix::AsyncFd;
use tokio::task::JoinHandle;

use super::dispatch::{Dispatcher, Event, Mailbox};
use super::packet;
use super::permission::IcmpPermissionError;
use super::reactor::{SocketFd, register_readable};
use super::receive::{Shared, receive_loop};
use super::socket::IcmpSocket;
use crate::Reason;
use crate::outcome::IcmpSocketMode;
use crate::resolve::Family;

/// Wait before retrying a send that found the socket's send buffer full.
const SEND_RETRY: Duration = Duration::from_millis(1);

/// The shared ICMP engine. `Send + Sync`; hold it in an [`Arc`] and give a clone to every
/// [`IcmpProber`](super::IcmpProber).
#[derive(Debug)]
pub struct IcmpEngine {
    v4: Slot,
    v6: Slot,
    next_token: AtomicU64,
}

/// Packet counters summed over the engine's sockets since it was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IcmpEngineStats {
    /// Echo requests handed to the kernel.
    pub sent: u64,
    /// Echo replies delivered to the probe that sent the request.
    pub replies: u64,
    /// ICMP errors (unreachable, time exceeded…) delivered to the probe whose request they quote.
    pub errors: u64,
    /// Packets received that matched no echo in flight: other programs' ICMP, replies after their
    /// probe ended, duplicates, garbage.
    pub ignored: u64,
    /// Echoes currently awaiting a reply (a gauge, not a counter).
    pub in_flight: u64,
}

#[derive(Debug, Default)]
struct Slot {
    channel: Mutex<Option<Arc<Channel>>>,
}

/// An open socket and its receive task.
#[derive(Debug)]
struct Channel {
    shared: Arc<Shared>,
    driver: Mutex<Option<Driver>>,
}

#[derive(Debug)]
struct Driver {
    /// Kept so the registration outlives a receive task that was aborted.
    _fd: Arc<AsyncFd<SocketFd>>,
    task: JoinHandle<()>,
}

impl Default for IcmpEngine {
    fn default() -> Self {
        Self::new()
    }
}

impl IcmpEngine {
    /// Creates an engine; sockets open on first use.
    pub fn new() -> Self {
        IcmpEngine {
            v4: Slot::default(),
            v6: Slot::default(),
            next_token: AtomicU64::new(rand::random()),
        }
    }

    fn slot(&self, family: Family) -> &Slot {
        match family {
            Family::V4 => &self.v4,
            Family::V6 => &self.v6,
        }
    }

    /// The socket mode used for `family`, opening the socket if it is not open yet (this does not
    /// need a tokio runtime). Errors: neither socket kind could be opened; the error's text explains
    /// why and how to fix it (see [`IcmpPermissionError`]).
    pub fn mode(&self, family: Family) -> Result<IcmpSocketMode, IcmpPermissionError> {
        Ok(self.channel(family)?.shared.sock.mode())
    }

    /// The families whose socket is open, with their mode (IPv4 first). Never opens a socket.
    pub fn opened(&self) -> Vec<(Family, IcmpSocketMode)> {
        [Family::V4, Family::V6]
            .into_iter()
            .filter_map(|f| {
                self.slot(f)
                    .channel
                    .lock()
                    .as_ref()
                    .map(|c| (f, c.shared.sock.mode()))
            })
            .collect()
    }

    /// Packet counters since the engine was created.
    pub fn stats(&self) -> IcmpEngineStats {
        let mut s = IcmpEngineStats::default();
        for slot in [&self.v4, &self.v6] {
            if let Some(c) = slot.channel.lock().as_ref() {
                let k = &c.shared.dispatcher.counters;
                s.sent += k.sent.load(Ordering::Relaxed);
                s.replies += k.replies.load(Ordering::Relaxed);
                s.errors += k.errors.load(Ordering::Relaxed);
                s.ignored += k.ignored.load(Ordering::Relaxed);
                s.in_flight += c.shared.dispatcher.in_flight() as u64;
            }
        }
        s
    }

    fn channel(&self, family: Family) -> Result<Arc<Channel>, IcmpPermissionError> {
        let mut slot = self.slot(family).channel.lock();
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let sock = IcmpSocket::open(family)?;
        tracing::info!(
            family = family_label(family),
            mode = sock.mode().as_str(),
            "opened ICMP socket"
        );
        let dispatcher = Dispatcher::new(
            sock.wire(),
            (sock.mode() == IcmpSocketMode::Raw).then_some(sock.ident()),
            rand::random(),
        );
        let channel = Arc::new(Channel {
            shared: Arc::new(Shared::new(sock, dispatcher)),
            driver: Mutex::new(None),
        });
        *slot = Some(channel.clone());
        Ok(channel)
    }

    /// Starts a session for one probe of up to `count` echoes to `addr`, with a mailbox of its own.
    /// Must be called within a tokio runtime (IO and time enabled).
    pub(crate) fn session(&self, addr: IpAddr, count: u16) -> Result<Session, SessionError> {
        self.session_into(addr, Mailbox::new(usize::from(count)), count)
    }

    /// [`session`](Self::session) delivering its events into `mailbox`, which other sessions may
    /// share (each event carries the session's [`token`](Session::token)).
    pub(crate) fn session_into(
        &self,
        addr: IpAddr,
        mailbox: Arc<Mailbox>,
        count: u16,
    ) -> Result<Session, SessionError> {
        let family = if addr.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        };
        let channel = self.channel(family).map_err(SessionError::Socket)?;
        channel.ensure_driver()?;
        let v6 = family == Family::V6;
        Ok(Session {
            shared: channel.shared.clone(),
            addr,
            v6,
            token: self.next_token.fetch_add(1, Ordering::Relaxed),
            mailbox,
            seqs: Vec::with_capacity(usize::from(count)),
            packet: Vec::new(),
        })
    }
}

impl Drop for IcmpEngine {
    fn drop(&mut self) {
        for slot in [&self.v4, &self.v6] {
            if let Some(c) = slot.channel.lock().take()
                && let Some(d) = c.driver.lock().take()
            {
                d.task.abort();
            }
        }
    }
}

impl Channel {
    /// Registers the socket with the current runtime and spawns the receive task, unless a live one
    /// exists.
    fn ensure_driver(&self) -> Result<(), SessionError> {
        let mut driver = self.driver.lock();
        if driver.as_ref().is_some_and(|d| !d.task.is_finished()) {
            return Ok(());
        }
        let handle = tokio::runtime::Handle::try_current().map_err(|_| SessionError::NoRuntime)?;
        let fd = {
            // AsyncFd::new registers with the reactor of the current runtime.
            let _enter = handle.enter();
            // Readable only: a full send buffer is handled by `Session::send` retrying after a
            // short sleep.
            register_readable(self.shared.sock.clone()).map_err(SessionError::Register)?
        };
        let fd = Arc::new(fd);
        let task = handle.spawn(receive_loop(fd.clone(), self.shared.clone()));
        *driver = Some(Driver { _fd: fd, task });
        Ok(())
    }
}

/// Why a probe could not start sending.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SessionError {
    /// No ICMP socket could be opened.
    #[error("{0}")]
    Socket(IcmpPermissionError),
    /// Not called from within a tokio runtime.
    #[error("the ICMP engine needs a tokio runtime")]
    NoRuntime,
    /// epoll registration failed.
    #[error("cannot register the ICMP socket with the runtime: {0}")]
    Register(io::Error),
}

impl SessionError {
    /// The outcome reason.
    pub fn reason(&self) -> Reason {
        match self {
            SessionError::Socket(e) => e.reason(),
            SessionError::NoRuntime | SessionError::Register(_) => Reason::Error,
        }
    }
}

/// When an echo request was sent, on both clocks: CLOCK_REALTIME to compare with the kernel's receive
/// stamp, CLOCK_MONOTONIC for the user-space fallback.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SendStamp {
    /// CLOCK_MONOTONIC, taken right before `sendto`.
    pub mono: Instant,
    /// CLOCK_REALTIME nanoseconds since the Unix epoch, taken right before `sendto`.
    pub real_ns: i64,
}

/// One probe's use of a socket: registers its echoes, sends them, receives their events. Dropping it
/// (also when the probe future is cancelled) removes its echoes still in flight.
#[derive(Debug)]
pub(crate) struct Session {
    shared: Arc<Shared>,
    addr: IpAddr,
    v6: bool,
    token: u64,
    mailbox: Arc<Mailbox>,
    /// Every sequence number registered by this session (withdrawn from the dispatcher on drop).
    seqs: Vec<u16>,
    packet: Vec<u8>,
}

impl Session {
    /// The socket mode in use.
    pub fn mode(&self) -> IcmpSocketMode {
        self.shared.sock.mode()
    }

    /// The session's token: unique in the engine, carried by every event of this session.
    pub fn token(&self) -> u64 {
        self.token
    }

    /// Sends echo `echo` with `size` payload bytes and returns when it was sent. A full send buffer
    /// (`EAGAIN`) is retried every millisecond; bound the call with a timeout. Errors: as
    /// [`try_send`](Self::try_send), except `WouldBlock`.
    pub async fn send(&mut self, echo: u16, size: usize) -> io::Result<SendStamp> {
        loop {
            match self.try_send(echo, size) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    tokio::time::sleep(SEND_RETRY).await;
                }
                other => return other,
            }
        }
    }

    /// Sends echo `echo` with `size` payload bytes now, without waiting. The request is registered
    /// before `sendto` because on loopback the reply can arrive before `sendto` returns. Errors: the
    /// errno of `sendto` (`WouldBlock` when the send buffer is full), or `AddrInUse` when all
    /// sequence numbers to the address are in flight; the registration is then withdrawn.
    pub fn try_send(&mut self, echo: u16, size: usize) -> io::Result<SendStamp> {
        let shared = &self.shared;
        let Some(seq) = shared
            .dispatcher
            .register(self.addr, self.token, echo, &self.mailbox)
        else {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!(
                    "all 65536 ICMP sequence numbers to {} are in flight",
                    self.addr
                ),
            ));
        };
        if self.packet.is_empty() {
            packet::build_echo_request(
                &mut self.packet,
                self.v6,
                shared.sock.ident(),
                seq,
                self.token,
                size,
            );
        } else {
            packet::set_sequence(&mut self.packet, self.v6, seq);
        }
        let result = loop {
            let stamp = stamp_now();
            match shared.sock.send_to(&self.packet, self.addr) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => break other.map(|_| stamp),
            }
        };
        match &result {
            Ok(_) => {
                self.seqs.push(seq);
                shared
                    .dispatcher
                    .counters
                    .sent
                    .fetch_add(1, Ordering::Relaxed);
                shared.after_send();
            }
            Err(_) => shared.dispatcher.unregister(self.addr, self.token, [seq]),
        }
        result
    }

    /// Reads the socket's receive queue now, from the calling task, unless someone else is reading
    /// it: the replies that arrived while a burst was being sent reach their mailboxes without
    /// waiting for the receive task.
    pub fn help_receive(&self) {
        self.shared.help_receive();
    }

    /// The next reply or error for one of this session's echoes. Cancel-safe.
    pub async fn recv(&mut self) -> Event {
        self.mailbox.recv().await
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.shared
            .dispatcher
            .unregister(self.addr, self.token, self.seqs.iter().copied());
    }
}

/// Now on both clocks, realtime last so it is the closest to the `sendto` that follows.
fn stamp_now() -> SendStamp {
    let mono = Instant::now();
    let real_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    SendStamp { mono, real_ns }
}

/// The `family` label value (`ipv4`/`ipv6`) used in logs and metrics.
pub fn family_label(family: Family) -> &'static str {
    match family {
        Family::V4 => "ipv4",
        Family::V6 => "ipv6",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_engine_can_be_shared_across_threads() {
        fn shared<T: Send + Sync + 'static>() {}
        shared::<IcmpEngine>();
        shared::<super::super::IcmpProber>();
    }

    #[test]
    fn sessions_need_a_runtime_and_say_so() {
        let engine = IcmpEngine::new();
        // Opening the socket needs no runtime; registering its receive task does.
        if engine.mode(Family::V4).is_ok() {
            let err = engine.session("127.0.0.1".parse().unwrap(), 1).unwrap_err();
            assert!(matches!(err, SessionError::NoRuntime), "{err}");
            assert_eq!(err.reason(), Reason::Error);
        }
    }
}
