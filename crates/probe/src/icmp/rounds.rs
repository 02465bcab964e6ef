//! Many ICMP probes on one schedule, driven by one task: [`IcmpRounds`].
//!
//! [`IcmpProber::probe`] runs each probe as its own future, with a timer per echo and a wake-up per
//! reply. An agent running a thousand probes a second (a mesh node with 1,000 peers, 5 echoes
//! each) then spends most of its user-space CPU waking tasks. [`IcmpRounds`] runs the same probes —
//! same sessions, same matching, same [`Outcome`] — from one driver task: each tick it sends every
//! echo that is due, reads the replies that came back meanwhile from the socket itself, takes the
//! events of all its probes from one shared mailbox, and wakes a probe's caller once, with the
//! outcome. Per echo there is no task wake-up and no timer of its own.

use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::config::IcmpConfig;
use super::dispatch::{Event, Mailbox};
use super::prober::{Echo, IcmpProber, Opened, deadline_after, record};
use super::summary::summarize;
use crate::{Outcome, Reason};

/// How late a round may start and still keep its schedule; later, its echoes are re-timed from the
/// actual start rather than sent in a catch-up burst.
const SCHEDULE_SLACK: Duration = Duration::from_millis(5);

/// Wait before retrying an echo that found the socket's send buffer full.
const SEND_RETRY: Duration = Duration::from_millis(1);

/// Runs ICMP probes ([`IcmpProber`]s) on a shared schedule from one driver task; see the module
/// documentation. `Send + Sync`; the driver is spawned on the runtime of the first probe (respawned
/// if that runtime has gone away) and stops when this value is dropped (probes still running then
/// end with reason `error`).
#[derive(Debug)]
pub struct IcmpRounds {
    shared: Arc<Shared>,
    driver: Mutex<Option<JoinHandle<()>>>,
}

/// What the callers and the driver share.
#[derive(Debug)]
struct Shared {
    /// Events of every round's echoes.
    mailbox: Arc<Mailbox>,
    /// Rounds handed over and not yet taken by the driver.
    queue: Mutex<Vec<Round>>,
    /// Wakes the driver when `queue` gained a round.
    queued: Notify,
}

/// One probe in the driver's hands.
#[derive(Debug)]
struct Round {
    opened: Opened,
    cfg: Arc<IcmpConfig>,
    timeout: Duration,
    echoes: Vec<Echo>,
    /// The next echo to send.
    next: u16,
    in_flight: usize,
    /// When echo 0 is due; echo `i` is due at `first + i × interval`.
    first: Instant,
    deadline: Instant,
    send_error: Option<io::Error>,
    done: oneshot::Sender<Outcome>,
}

impl Default for IcmpRounds {
    fn default() -> Self {
        Self::new()
    }
}

impl IcmpRounds {
    /// A driver with no rounds yet; its task starts with the first probe.
    pub fn new() -> Self {
        IcmpRounds {
            shared: Arc::new(Shared {
                mailbox: Mailbox::new(256),
                queue: Mutex::new(Vec::new()),
                queued: Notify::new(),
            }),
            driver: Mutex::new(None),
        }
    }

    /// Runs one probe of `prober` with echo `i` due at `first_send + i × interval`, so that probes
    /// sharing a schedule put their echoes on the same ticks. A `first_send` more than 5 ms in the
    /// past (a late start) is replaced by now; one in the future is waited for by the driver, not by
    /// the caller. `timeout` bounds the probe from its first send (or from now, for a late start).
    /// The outcome is what [`IcmpProber::probe`] would give: same phases, details and reasons, plus
    /// reason `error` when the driver stopped before the probe ended. Must be called within a tokio
    /// runtime (IO and time enabled). Cancel-safe: dropping the future withdraws the probe at its
    /// next echo.
    pub async fn probe(
        &self,
        prober: &IcmpProber,
        first_send: Instant,
        timeout: Duration,
    ) -> Outcome {
        let now = Instant::now();
        let first = if now.saturating_duration_since(first_send) <= SCHEDULE_SLACK {
            first_send
        } else {
            now
        };
        let deadline = deadline_after(first.max(now), timeout);
        let mut opened = match prober
            .open(deadline, timeout, Some(self.shared.mailbox.clone()))
            .await
        {
            Ok(o) => o,
            Err(failed) => return *failed,
        };
        if first > now {
            // The probe's duration counts from its first echo, not from the wait before it.
            opened.started = first.into_std();
        }
        let (done, outcome) = oneshot::channel();
        let round = Round {
            cfg: prober.cfg.clone(),
            timeout,
            echoes: vec![Echo::NotSent; usize::from(prober.cfg.count)],
            next: 0,
            in_flight: 0,
            first,
            deadline,
            send_error: None,
            done,
            opened,
        };
        if let Err(e) = self.ensure_driver() {
            return round.fail(e);
        }
        self.shared.queue.lock().push(round);
        self.shared.queued.notify_one();
        match outcome.await {
            Ok(o) => o,
            Err(_) => Outcome::fail(
                Reason::Error,
                "the ICMP rounds driver stopped before the probe ended".to_owned(),
                Duration::ZERO,
                Vec::new(),
                crate::Details::Icmp(crate::IcmpDetails::default()),
            ),
        }
    }

    /// Spawns the driver on the current runtime unless a live one exists.
    fn ensure_driver(&self) -> Result<(), &'static str> {
        let mut driver = self.driver.lock();
        if driver.as_ref().is_some_and(|d| !d.is_finished()) {
            return Ok(());
        }
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|_| "the ICMP rounds driver needs a tokio runtime")?;
        *driver = Some(handle.spawn(drive(self.shared.clone())));
        Ok(())
    }
}

impl Drop for IcmpRounds {
    fn drop(&mut self) {
        if let Some(d) = self.driver.lock().take() {
            d.abort();
        }
    }
}

impl Round {
    /// Whether every echo was sent (or given up) and settled.
    fn settled(&self) -> bool {
        self.next >= self.cfg.count && self.in_flight == 0
    }

    /// When echo `i` is due, if it still fits before the deadline.
    fn due(&self, i: u16) -> Option<Instant> {
        self.cfg
            .interval
            .0
            .checked_mul(u32::from(i))
            .and_then(|d| self.first.checked_add(d))
            .filter(|at| *at < self.deadline)
    }

    /// Sends the next echo if it is due at `now`. Returns when this round wants the driver next:
    /// its next echo, a retry of this one, or its deadline.
    fn send_due(&mut self, now: Instant) -> Instant {
        let count = self.cfg.count;
        if self.next < count && now >= self.deadline {
            // Out of time: the remaining echoes are never sent.
            self.next = count;
        }
        if self.next < count && self.due(self.next).is_some_and(|at| at <= now) {
            let echo = self.next;
            match self.opened.session.try_send(echo, self.cfg.size) {
                Ok(stamp) => {
                    self.echoes[usize::from(echo)] = Echo::InFlight(stamp);
                    self.in_flight += 1;
                    self.next += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return (now + SEND_RETRY).min(self.deadline);
                }
                Err(e) => {
                    self.echoes[usize::from(echo)] = Echo::SendFailed;
                    self.send_error.get_or_insert(e);
                    self.next += 1;
                }
            }
            if self.next < count && self.due(self.next).is_none() {
                // The remaining echoes do not fit in the timeout.
                self.next = count;
            }
        }
        match self.due(self.next) {
            Some(at) if self.next < count => at.min(self.deadline),
            _ => self.deadline,
        }
    }

    /// Applies an event of one of this round's echoes.
    fn on_event(&mut self, ev: Event) {
        if record(&mut self.echoes, ev) {
            self.in_flight -= 1;
        }
    }

    /// Ends the round: withdraws what is still in flight and hands the outcome to the caller.
    fn finish(self) {
        let Round {
            opened,
            cfg,
            timeout,
            echoes,
            send_error,
            done,
            ..
        } = self;
        let Opened {
            addr,
            session,
            started,
            phases,
            details,
        } = opened;
        drop(session);
        let outcome = summarize(
            addr,
            timeout,
            &cfg,
            &echoes,
            send_error,
            started.elapsed(),
            phases,
            details,
        );
        // The caller may have gone (its future dropped): nobody to tell.
        let _ = done.send(outcome);
    }

    /// Ends the round before its first echo, with reason `error` and `why`.
    fn fail(self, why: &str) -> Outcome {
        let Opened {
            started,
            phases,
            details,
            ..
        } = self.opened;
        Outcome::fail(
            Reason::Error,
            why.to_owned(),
            started.elapsed(),
            phases,
            crate::Details::Icmp(details),
        )
    }
}

/// The driver: takes new rounds, sends what is due, applies replies, finishes settled rounds, and
/// sleeps until the earliest thing any round waits for.
async fn drive(shared: Arc<Shared>) {
    let mut rounds: HashMap<u64, Round> = HashMap::new();
    // (when, token): a round wants the driver at `when`. Entries of finished rounds, or superseded
    // ones, are skipped when they come up.
    let mut timers: BinaryHeap<Reverse<(Instant, u64)>> = BinaryHeap::new();
    let mut events: Vec<Event> = Vec::new();
    let sleep = tokio::time::sleep_until(Instant::now());
    tokio::pin!(sleep);
    loop {
        for round in shared.queue.lock().drain(..) {
            let token = round.opened.session.token();
            timers.push(Reverse((round.first, token)));
            rounds.insert(token, round);
        }

        // Send everything due, then read the replies that came back meanwhile ourselves (on a
        // local link they are queued before `sendto` returns), so they settle in this same pass.
        let now = Instant::now();
        // One round that sent in this pass, per family (IPv4, IPv6): its session reads that socket.
        let mut helpers: [Option<u64>; 2] = [None, None];
        while let Some(Reverse((at, token))) = timers.peek().copied()
            && at <= now
        {
            timers.pop();
            let Entry::Occupied(mut entry) = rounds.entry(token) else {
                continue;
            };
            let round = entry.get_mut();
            if round.done.is_closed() {
                // The caller went away: withdraw the probe.
                entry.remove();
                continue;
            }
            let sent_before = round.next;
            let wake = round.send_due(now);
            if round.next != sent_before {
                helpers[usize::from(round.opened.addr.is_ipv6())] = Some(token);
            }
            if round.settled() || now >= round.deadline {
                entry.remove().finish();
            } else {
                timers.push(Reverse((wake, token)));
            }
        }
        for round in helpers.iter().flatten().filter_map(|t| rounds.get(t)) {
            round.opened.session.help_receive();
        }

        shared.mailbox.take_all(&mut events);
        for ev in events.drain(..) {
            if let Entry::Occupied(mut entry) = rounds.entry(ev.token) {
                entry.get_mut().on_event(ev);
                if entry.get().settled() {
                    entry.remove().finish();
                }
            }
        }

        match timers.peek() {
            Some(Reverse((at, _))) => sleep.as_mut().reset(*at),
            None => sleep
                .as_mut()
                .reset(Instant::now() + Duration::from_secs(3600)),
        }
        tokio::select! {
            biased;
            () = shared.mailbox.notified() => {}
            () = shared.queued.notified() => {}
            () = &mut sleep => {}
        }
    }
}
