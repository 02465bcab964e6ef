//! Matching received ICMP messages to the echoes waiting for them.
//!
//! Every echo in flight on a socket has one [`Waiter`] keyed by (destination address, sequence
//! number). The sequence number comes from one 16-bit counter per socket and is skipped while the same
//! (address, sequence) is still in flight, so the only limit is 65,536 echoes in flight to *one*
//! address — there is no time-based reuse ban as in fping's seqmap, because a reply must also carry
//! the probe's 64-bit token in its payload: a late reply to an echo whose slot was reused is ignored.
//! On raw sockets the identifier must match the socket's too (datagram sockets: the kernel rewrites
//! the identifier to the socket's "port" and only delivers matching replies).
//!
//! A waiter is removed when its reply or ICMP error is delivered, so duplicates are ignored, and by
//! its probe when the probe ends. This module does no I/O; the engine feeds it what `recvmsg` returned.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::Mutex;
use std::sync::Arc;

use tokio::sync::Notify;

use super::packet::{self, Parsed, Wire};

/// What happened to one echo, sent to the probe that owns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Event {
    /// The token of the probe (session) the echo belongs to: tells probes sharing a mailbox apart.
    pub token: u64,
    /// Index of the echo within its probe (0-based).
    pub echo: u16,
    /// Reply or error.
    pub kind: EventKind,
}

/// The two things that can come back for an echo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventKind {
    /// An echo reply carrying our token.
    Reply {
        /// Kernel receive stamp (`SCM_TIMESTAMPNS`), CLOCK_REALTIME nanoseconds since the Unix epoch.
        kernel_rx_ns: Option<i64>,
        /// User-space receive time, taken right after `recvmsg` returned.
        user_rx: Instant,
    },
    /// An ICMP error quoting the echo request.
    Error {
        /// ICMP type (ICMPv6 numbering on IPv6 sockets).
        icmp_type: u8,
        /// ICMP code.
        code: u8,
        /// Who sent the error (a router, or the local host), when known.
        from: Option<IpAddr>,
    },
}

/// Where the receive path leaves events for one probe: a small vector and a wake-up. Much lighter
/// than a channel (one allocation of about 100 bytes plus the events), which matters with 10,000
/// probes in flight.
#[derive(Debug, Default)]
pub(crate) struct Mailbox {
    events: Mutex<Vec<Event>>,
    notify: Notify,
}

impl Mailbox {
    /// An empty mailbox with room for `capacity` events.
    pub fn new(capacity: usize) -> Arc<Mailbox> {
        Arc::new(Mailbox {
            events: Mutex::new(Vec::with_capacity(capacity)),
            notify: Notify::new(),
        })
    }

    fn push(&self, ev: Event) {
        self.events.lock().push(ev);
        // Stores a permit when the probe is not waiting yet, so the event is never missed.
        self.notify.notify_one();
    }

    /// An event if one is waiting (any order: each carries its echo index).
    pub fn try_recv(&self) -> Option<Event> {
        self.events.lock().pop()
    }

    /// Moves every waiting event into `out` (one lock for all of them).
    pub fn take_all(&self, out: &mut Vec<Event>) {
        out.append(&mut self.events.lock());
    }

    /// Returns when an event was pushed since the last call returned (or at once when one was
    /// pushed while nobody waited): the wake-up of a task that reads with [`take_all`](Self::take_all).
    pub async fn notified(&self) {
        self.notify.notified().await;
    }

    /// The next event. Cancel-safe: events stay in the mailbox until taken.
    pub async fn recv(&self) -> Event {
        loop {
            if let Some(ev) = self.try_recv() {
                return ev;
            }
            self.notify.notified().await;
        }
    }
}

/// One echo in flight.
#[derive(Debug)]
struct Waiter {
    token: u64,
    echo: u16,
    mailbox: Arc<Mailbox>,
}

/// Packet counters of one socket (monotonic, for metrics and tests).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Echo requests handed to the kernel.
    pub sent: AtomicU64,
    /// Echo replies delivered to a waiting probe.
    pub replies: AtomicU64,
    /// ICMP errors delivered to a waiting probe.
    pub errors: AtomicU64,
    /// Packets that matched no waiting echo (foreign, late, duplicate, garbage).
    pub ignored: AtomicU64,
}

/// The waiters of one socket and the rules for matching replies to them.
#[derive(Debug)]
pub(crate) struct Dispatcher {
    wire: Wire,
    /// The identifier we put in requests on a raw socket; `None` on datagram sockets.
    raw_ident: Option<u16>,
    table: Mutex<Table>,
    pub counters: Counters,
}

#[derive(Debug)]
struct Table {
    next_seq: u16,
    waiters: HashMap<(IpAddr, u16), Waiter>,
}

impl Dispatcher {
    /// A dispatcher for a socket delivering `wire`; `raw_ident` is the identifier to require on raw
    /// sockets. `first_seq` seeds the sequence counter.
    pub fn new(wire: Wire, raw_ident: Option<u16>, first_seq: u16) -> Self {
        Dispatcher {
            wire,
            raw_ident,
            table: Mutex::new(Table {
                next_seq: first_seq,
                waiters: HashMap::new(),
            }),
            counters: Counters::default(),
        }
    }

    /// Registers echo `echo` of the probe with `token` to `addr` and returns its sequence number, or
    /// `None` when all 65,536 sequence numbers to `addr` are in flight.
    pub fn register(
        &self,
        addr: IpAddr,
        token: u64,
        echo: u16,
        mailbox: &Arc<Mailbox>,
    ) -> Option<u16> {
        let mut t = self.table.lock();
        for _ in 0..=u16::MAX {
            let seq = t.next_seq;
            t.next_seq = seq.wrapping_add(1);
            if let Entry::Vacant(v) = t.waiters.entry((addr, seq)) {
                v.insert(Waiter {
                    token,
                    echo,
                    mailbox: mailbox.clone(),
                });
                return Some(seq);
            }
        }
        None
    }

    /// Removes the waiters `(addr, seq)` that still belong to the probe with `token` (their slots may
    /// already have been answered and reused by another probe).
    pub fn unregister(&self, addr: IpAddr, token: u64, seqs: impl IntoIterator<Item = u16>) {
        let mut t = self.table.lock();
        for seq in seqs {
            if let Entry::Occupied(o) = t.waiters.entry((addr, seq))
                && o.get().token == token
            {
                o.remove();
            }
        }
    }

    /// Number of echoes in flight.
    pub fn in_flight(&self) -> usize {
        self.table.lock().waiters.len()
    }

    /// Handles one packet from the socket's receive queue. `from` is the source address `recvmsg`
    /// reported.
    pub fn on_packet(
        &self,
        pkt: &[u8],
        from: Option<IpAddr>,
        kernel_rx_ns: Option<i64>,
        user_rx: Instant,
    ) {
        let delivered = match packet::parse(self.wire, pkt) {
            Some(Parsed::EchoReply {
                ident,
                seq,
                payload,
            }) if self.ident_ok(ident) => match (from, packet::token(payload)) {
                (Some(from), Some(token)) => self.deliver(
                    (from, seq),
                    Some(token),
                    EventKind::Reply {
                        kernel_rx_ns,
                        user_rx,
                    },
                ),
                _ => false,
            },
            Some(Parsed::Error(e)) if self.ident_ok(e.ident) => self.deliver(
                (e.dst, e.seq),
                packet::token(e.payload),
                EventKind::Error {
                    icmp_type: e.icmp_type,
                    code: e.code,
                    from,
                },
            ),
            _ => false,
        };
        if !delivered {
            self.counters.ignored.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Handles one message from a datagram socket's error queue (`IP_RECVERR`): `quoted` is our
    /// request's ICMP header and payload as quoted by the error, `dst` the request's destination
    /// (`msg_name`), `icmp` the `sock_extended_err` type and code when its origin is ICMP.
    pub fn on_error_queue(
        &self,
        quoted: &[u8],
        dst: Option<IpAddr>,
        icmp: Option<(u8, u8)>,
        offender: Option<IpAddr>,
    ) {
        let delivered = match (
            dst,
            icmp,
            packet::parse_quoted_echo(self.wire == Wire::Ipv6, quoted),
        ) {
            (Some(dst), Some((icmp_type, code)), Some((_ident, seq, payload))) => self.deliver(
                (dst, seq),
                packet::token(payload),
                EventKind::Error {
                    icmp_type,
                    code,
                    from: offender,
                },
            ),
            _ => false,
        };
        if !delivered {
            self.counters.ignored.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn ident_ok(&self, ident: u16) -> bool {
        self.raw_ident.is_none_or(|ours| ours == ident)
    }

    /// Hands `kind` to the waiter of `key` if its token matches (`None` = the error did not quote the
    /// payload; the address and sequence then have to do).
    fn deliver(&self, key: (IpAddr, u16), token: Option<u64>, kind: EventKind) -> bool {
        let waiter = {
            let mut t = self.table.lock();
            match t.waiters.entry(key) {
                Entry::Occupied(o) if token.is_none_or(|tk| tk == o.get().token) => o.remove(),
                _ => return false,
            }
        };
        let counter = match kind {
            EventKind::Reply { .. } => &self.counters.replies,
            EventKind::Error { .. } => &self.counters.errors,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        waiter.mailbox.push(Event {
            token: waiter.token,
            echo: waiter.echo,
            kind,
        });
        true
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    reason = "in a test a panic is the failure report"
)]
mod tests {
    use super::*;
    use crate::icmp::packet::{ICMP_DEST_UNREACH, ICMP_ECHO_REPLY, build_echo_request};

    fn reply(ident: u16, seq: u16, token: u64) -> Vec<u8> {
        let mut b = Vec::new();
        build_echo_request(&mut b, false, ident, seq, token, 56);
        b[0] = ICMP_ECHO_REPLY;
        b
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn replies_reach_only_their_own_probe() {
        let d = Dispatcher::new(Wire::Ipv4, None, 100);
        let rx_a = Mailbox::new(4);
        let rx_b = Mailbox::new(4);
        let a = ip("127.0.0.1");
        let seq_a = d.register(a, 0xaaaa, 0, &rx_a).unwrap();
        let seq_b = d.register(a, 0xbbbb, 3, &rx_b).unwrap();
        assert_ne!(
            seq_a, seq_b,
            "two echoes to one address in flight never share a sequence"
        );
        let now = Instant::now();

        // B's token with A's sequence: a reply to some other probe, delivered to nobody.
        d.on_packet(&reply(1, seq_a, 0xbbbb), Some(a), None, now);
        // Right token and sequence but from another address.
        d.on_packet(&reply(1, seq_a, 0xaaaa), Some(ip("127.0.0.2")), None, now);
        assert!(rx_a.try_recv().is_none() && rx_b.try_recv().is_none());

        d.on_packet(&reply(1, seq_b, 0xbbbb), Some(a), Some(5), now);
        let ev = rx_b.try_recv().unwrap();
        assert_eq!((ev.token, ev.echo), (0xbbbb, 3));
        assert_eq!(
            ev.kind,
            EventKind::Reply {
                kernel_rx_ns: Some(5),
                user_rx: now
            }
        );
        // A duplicate finds no waiter.
        d.on_packet(&reply(1, seq_b, 0xbbbb), Some(a), None, now);
        assert!(rx_b.try_recv().is_none());
        assert!(rx_a.try_recv().is_none());
        assert_eq!(d.counters.replies.load(Ordering::Relaxed), 1);
        assert_eq!(d.counters.ignored.load(Ordering::Relaxed), 3);
        assert_eq!(d.in_flight(), 1);
        d.unregister(a, 0xaaaa, [seq_a]);
        assert_eq!(d.in_flight(), 0);
    }

    #[test]
    fn raw_sockets_require_our_identifier() {
        let d = Dispatcher::new(Wire::Ipv4, Some(7), 0);
        let rx = Mailbox::new(2);
        let a = ip("127.0.0.1");
        let seq = d.register(a, 1, 0, &rx).unwrap();
        d.on_packet(&reply(8, seq, 1), Some(a), None, Instant::now());
        assert!(rx.try_recv().is_none(), "another pinger's identifier");
        d.on_packet(&reply(7, seq, 1), Some(a), None, Instant::now());
        assert_eq!(rx.try_recv().unwrap().echo, 0);
    }

    #[test]
    fn sequence_slots_are_reused_only_when_free_and_unregister_checks_the_token() {
        let d = Dispatcher::new(Wire::Ipv6, None, u16::MAX);
        let rx = Mailbox::new(1);
        let a = ip("::1");
        let s1 = d.register(a, 1, 0, &rx).unwrap();
        assert_eq!(s1, u16::MAX);
        let s2 = d.register(a, 2, 0, &rx).unwrap();
        assert_eq!(s2, 0, "the counter wraps");
        d.unregister(a, 99, [s1]);
        assert_eq!(d.in_flight(), 2, "a foreign token does not remove a waiter");
        // Another address can use the same sequence while it is in flight to the first.
        let b = ip("::2");
        let mut seen = std::collections::HashSet::new();
        for _ in 0..3 {
            seen.insert(d.register(b, 3, 0, &rx).unwrap());
        }
        assert_eq!(seen.len(), 3);
    }

    #[test]
    fn errors_from_the_error_queue_match_by_address_sequence_and_quoted_token() {
        let d = Dispatcher::new(Wire::Ipv4, None, 0);
        let rx = Mailbox::new(2);
        let a = ip("198.51.100.2");
        let seq = d.register(a, 42, 1, &rx).unwrap();
        let mut req = Vec::new();
        build_echo_request(&mut req, false, 0, seq, 41, 56);
        d.on_error_queue(&req, Some(a), Some((ICMP_DEST_UNREACH, 1)), None);
        assert!(rx.try_recv().is_none(), "quoted token of another probe");
        build_echo_request(&mut req, false, 0, seq, 42, 56);
        d.on_error_queue(&req, Some(a), None, None);
        assert!(rx.try_recv().is_none(), "not an ICMP-origin error");
        let router = Some(ip("198.51.100.1"));
        d.on_error_queue(&req[..8], Some(a), Some((ICMP_DEST_UNREACH, 1)), router);
        let ev = rx.try_recv().unwrap();
        assert_eq!(
            ev.kind,
            EventKind::Error {
                icmp_type: 3,
                code: 1,
                from: router
            }
        );
        assert_eq!(d.counters.errors.load(Ordering::Relaxed), 1);
    }
}
