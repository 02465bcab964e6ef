//! The ICMP prober: resolve, take a session on the shared engine, send the echoes, collect replies
//! until the timeout, and turn what happened into an [`Outcome`].

use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::config::IcmpConfig;
use super::dispatch::{Event, EventKind, Mailbox};
use super::engine::{IcmpEngine, SendStamp, Session};
use super::summary::summarize;
use crate::outcome::IcmpDetails;
use crate::resolve::{Family, resolve};
use crate::{ConfigError, Details, Outcome, Phase, PhaseTiming, Reason};

/// A kernel receive stamp may exceed the user-space RTT by this much before it is distrusted (the two
/// clocks are read a few nanoseconds apart; anything larger means CLOCK_REALTIME was stepped).
const CLOCK_SLACK: Duration = Duration::from_micros(50);

/// A validated ICMP prober bound to an engine.
#[derive(Debug)]
pub struct IcmpProber {
    /// Shared with the rounds of an [`IcmpRounds`](super::IcmpRounds) driver.
    pub(super) cfg: Arc<IcmpConfig>,
    /// `host` when it is an IP literal: such probes never touch the resolver.
    literal: Option<IpAddr>,
    engine: Arc<IcmpEngine>,
}

/// A probe that resolved its host and holds a session: what [`IcmpProber::open`] hands on.
#[derive(Debug)]
pub(super) struct Opened {
    /// The address probed.
    pub addr: IpAddr,
    /// The session on the engine.
    pub session: Session,
    /// When the probe started (resolution included).
    pub started: Instant,
    /// `resolve` and `setup` so far.
    pub phases: Vec<PhaseTiming>,
    /// Address and socket mode so far.
    pub details: IcmpDetails,
}

/// `now + timeout`, or a year from now when that overflows.
pub(super) fn deadline_after(now: tokio::time::Instant, timeout: Duration) -> tokio::time::Instant {
    now.checked_add(timeout)
        .unwrap_or(now + Duration::from_secs(86_400 * 365))
}

/// What became of one echo request.
#[derive(Debug, Clone, Copy)]
pub(super) enum Echo {
    /// Not sent: the timeout came first.
    NotSent,
    /// `sendto` failed.
    SendFailed,
    /// Sent, nothing back yet.
    InFlight(SendStamp),
    /// Answered after `rtt`; `kernel` when the receive time is the kernel's.
    Replied { rtt: Duration, kernel: bool },
    /// An ICMP error quoting the request came back.
    Error {
        icmp_type: u8,
        code: u8,
        from: Option<IpAddr>,
    },
}

impl IcmpProber {
    /// Validates `cfg` ([`IcmpConfig::validate`]) and binds it to `engine`.
    pub fn new(cfg: IcmpConfig, engine: Arc<IcmpEngine>) -> Result<Self, ConfigError> {
        cfg.validate()?;
        let literal = cfg
            .bare_host()
            .parse::<IpAddr>()
            .ok()
            .map(|ip| ip.to_canonical());
        Ok(IcmpProber {
            cfg: Arc::new(cfg),
            literal,
            engine,
        })
    }

    /// `icmp://HOST`, with an IPv6 literal in brackets (`icmp://[fd00::1]`).
    pub fn target(&self) -> String {
        let host = self.cfg.bare_host();
        if host.contains(':') {
            format!("icmp://[{host}]")
        } else {
            format!("icmp://{host}")
        }
    }

    /// The configuration.
    pub fn config(&self) -> &IcmpConfig {
        &self.cfg
    }

    /// Runs one probe bounded by `timeout` (resolution, socket setup, sending and waiting). Phases:
    /// `resolve`, `setup`, and `rtt` (the mean RTT) when a reply arrived. Reasons: `dns-error`,
    /// `permission-denied` (no ICMP socket; the message says why and how to fix it), the `sendto`
    /// errno's reason when nothing could be sent, `host-unreachable`/`network-unreachable` when only
    /// ICMP errors came back, else `timeout`.
    pub async fn probe(&self, timeout: Duration) -> Outcome {
        let deadline = deadline_after(tokio::time::Instant::now(), timeout);
        let mut opened = match self.open(deadline, timeout, None).await {
            Ok(o) => o,
            Err(failed) => return *failed,
        };
        let first = tokio::time::Instant::now();
        let (echoes, send_error) = self.exchange(&mut opened.session, first, deadline).await;
        drop(opened.session);
        summarize(
            opened.addr,
            timeout,
            &self.cfg,
            &echoes,
            send_error,
            opened.started.elapsed(),
            opened.phases,
            opened.details,
        )
    }

    /// Resolves the host (bounded by `deadline`) and takes a session on the engine, delivering into
    /// `mailbox` when given. `Err` is the probe's failed outcome (`dns-error`, `timeout`, or why no
    /// socket could be used).
    pub(super) async fn open(
        &self,
        deadline: tokio::time::Instant,
        timeout: Duration,
        mailbox: Option<Arc<Mailbox>>,
    ) -> Result<Opened, Box<Outcome>> {
        let started = Instant::now();
        let mut phases = Vec::with_capacity(3);
        let mut details = IcmpDetails::default();
        let host = self.cfg.bare_host();
        let family = self.cfg.family.map(Family::from);

        let resolved = match self.literal {
            Some(ip) => Ok(Ok(ip)),
            None => tokio::time::timeout_at(deadline, resolve(host, family)).await,
        };
        let addr = match resolved {
            Ok(Ok(ip)) => ip.to_canonical(),
            Ok(Err(msg)) => {
                return Err(Box::new(Outcome::fail(
                    Reason::DnsError,
                    msg,
                    started.elapsed(),
                    phases,
                    Details::Icmp(details),
                )));
            }
            Err(_) => {
                let msg =
                    format!("resolving {host:?} did not finish within the {timeout:?} timeout");
                return Err(Box::new(Outcome::fail(
                    Reason::Timeout,
                    msg,
                    started.elapsed(),
                    phases,
                    Details::Icmp(details),
                )));
            }
        };
        phases.push(PhaseTiming {
            phase: Phase::Resolve,
            duration: started.elapsed(),
        });
        details.address = Some(addr);

        let setup_start = Instant::now();
        let session = match mailbox {
            Some(m) => self.engine.session_into(addr, m, self.cfg.count),
            None => self.engine.session(addr, self.cfg.count),
        };
        let session = match session {
            Ok(s) => s,
            Err(e) => {
                return Err(Box::new(Outcome::fail(
                    e.reason(),
                    e.to_string(),
                    started.elapsed(),
                    phases,
                    Details::Icmp(details),
                )));
            }
        };
        phases.push(PhaseTiming {
            phase: Phase::Setup,
            duration: setup_start.elapsed(),
        });
        details.mode = Some(session.mode());
        Ok(Opened {
            addr,
            session,
            started,
            phases,
            details,
        })
    }

    /// Sends the echoes on schedule and records what comes back, until every sent echo is settled or
    /// the deadline passes.
    async fn exchange(
        &self,
        session: &mut Session,
        first: tokio::time::Instant,
        deadline: tokio::time::Instant,
    ) -> (Vec<Echo>, Option<io::Error>) {
        let count = self.cfg.count;
        let interval = self.cfg.interval.0;
        let mut echoes = vec![Echo::NotSent; usize::from(count)];
        let mut send_error = None;
        let mut next: u16 = 0;
        let mut in_flight = 0usize;
        let send_timer = tokio::time::sleep_until(first);
        let deadline_timer = tokio::time::sleep_until(deadline);
        tokio::pin!(send_timer, deadline_timer);
        while next < count || in_flight > 0 {
            tokio::select! {
                biased;
                ev = session.recv() => {
                    if record(&mut echoes, ev) {
                        in_flight -= 1;
                    }
                }
                () = &mut send_timer, if next < count => {
                    if tokio::time::Instant::now() >= deadline {
                        break;
                    }
                    let echo = next;
                    next += 1;
                    match tokio::time::timeout_at(deadline, session.send(echo, self.cfg.size)).await {
                        Ok(Ok(stamp)) => {
                            echoes[usize::from(echo)] = Echo::InFlight(stamp);
                            in_flight += 1;
                        }
                        Ok(Err(e)) => {
                            echoes[usize::from(echo)] = Echo::SendFailed;
                            send_error.get_or_insert(e);
                        }
                        Err(_) => break,
                    }
                    let at = interval.checked_mul(u32::from(next)).and_then(|d| first.checked_add(d));
                    match at {
                        Some(at) if at < deadline => send_timer.as_mut().reset(at),
                        // The remaining echoes do not fit in the timeout.
                        _ => next = count,
                    }
                }
                () = &mut deadline_timer => break,
            }
        }
        (echoes, send_error)
    }
}

/// Applies `ev` to its echo; `true` when it settled an echo in flight.
pub(super) fn record(echoes: &mut [Echo], ev: Event) -> bool {
    let Some(slot) = echoes.get_mut(usize::from(ev.echo)) else {
        return false;
    };
    let Echo::InFlight(sent) = *slot else {
        return false;
    };
    *slot = match ev.kind {
        EventKind::Reply {
            kernel_rx_ns,
            user_rx,
        } => {
            let (rtt, kernel) = rtt(sent, kernel_rx_ns, user_rx);
            Echo::Replied { rtt, kernel }
        }
        EventKind::Error {
            icmp_type,
            code,
            from,
        } => Echo::Error {
            icmp_type,
            code,
            from,
        },
    };
    true
}

/// The RTT of one echo: kernel receive stamp minus the CLOCK_REALTIME send stamp when that is
/// plausible (not negative, not longer than the user-space RTT — either would mean the realtime clock
/// was stepped in between), else the CLOCK_MONOTONIC user-space RTT. `true` = kernel stamp used.
fn rtt(sent: SendStamp, kernel_rx_ns: Option<i64>, user_rx: Instant) -> (Duration, bool) {
    let user = user_rx.saturating_duration_since(sent.mono);
    if let Some(k) = kernel_rx_ns
        && let Some(ns) = k.checked_sub(sent.real_ns)
        && let Ok(ns) = u64::try_from(ns)
    {
        let kernel = Duration::from_nanos(ns);
        if kernel <= user + CLOCK_SLACK {
            return (kernel, true);
        }
    }
    (user, false)
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    reason = "in a test a panic is the failure report"
)]
mod tests {
    use super::*;

    fn stamp(real_ns: i64) -> SendStamp {
        SendStamp {
            mono: Instant::now(),
            real_ns,
        }
    }

    #[test]
    fn rtt_prefers_plausible_kernel_stamps() {
        let s = stamp(1_000_000_000);
        let later = s.mono + Duration::from_micros(100);
        assert_eq!(
            rtt(s, Some(1_000_030_000), later),
            (Duration::from_micros(30), true)
        );
        // Negative: the realtime clock stepped back.
        assert_eq!(
            rtt(s, Some(999_000_000), later),
            (Duration::from_micros(100), false)
        );
        // Longer than the user-space RTT: stepped forward.
        assert_eq!(
            rtt(s, Some(1_010_000_000), later),
            (Duration::from_micros(100), false)
        );
        assert_eq!(rtt(s, None, later), (Duration::from_micros(100), false));
        assert!(!rtt(s, Some(i64::MIN), later).1);
    }
}
