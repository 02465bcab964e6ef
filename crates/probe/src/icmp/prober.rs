//! The ICMP prober: resolve, take a session on the shared engine, send the echoes, collect replies
//! until the timeout, and turn what happened into an [`Outcome`].

use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::config::IcmpConfig;
use super::dispatch::{Event, EventKind};
use super::engine::{IcmpEngine, SendStamp, Session};
use super::packet;
use crate::outcome::{IcmpDetails, IcmpSocketMode};
use crate::resolve::{Family, resolve};
use crate::{ConfigError, Details, Outcome, Phase, PhaseTiming, Reason};

/// A kernel receive stamp may exceed the user-space RTT by this much before it is distrusted (the two
/// clocks are read a few nanoseconds apart; anything larger means CLOCK_REALTIME was stepped).
const CLOCK_SLACK: Duration = Duration::from_micros(50);

/// A validated ICMP prober bound to an engine.
#[derive(Debug)]
pub struct IcmpProber {
    cfg: IcmpConfig,
    engine: Arc<IcmpEngine>,
}

/// What became of one echo request.
#[derive(Debug, Clone, Copy)]
enum Echo {
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
        Ok(IcmpProber { cfg, engine })
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
        let started = Instant::now();
        let now = tokio::time::Instant::now();
        let deadline = now
            .checked_add(timeout)
            .unwrap_or(now + Duration::from_secs(86_400 * 365));
        let mut phases = Vec::with_capacity(3);
        let mut details = IcmpDetails::default();
        let host = self.cfg.bare_host();
        let family = self.cfg.family.map(Family::from);

        let addr = match tokio::time::timeout_at(deadline, resolve(host, family)).await {
            Ok(Ok(ip)) => ip.to_canonical(),
            Ok(Err(msg)) => {
                return Outcome::fail(
                    Reason::DnsError,
                    msg,
                    started.elapsed(),
                    phases,
                    Details::Icmp(details),
                );
            }
            Err(_) => {
                let msg =
                    format!("resolving {host:?} did not finish within the {timeout:?} timeout");
                return Outcome::fail(
                    Reason::Timeout,
                    msg,
                    started.elapsed(),
                    phases,
                    Details::Icmp(details),
                );
            }
        };
        phases.push(PhaseTiming {
            phase: Phase::Resolve,
            duration: started.elapsed(),
        });
        details.address = Some(addr);

        let setup_start = Instant::now();
        let mut session = match self.engine.session(addr, self.cfg.count) {
            Ok(s) => s,
            Err(e) => {
                return Outcome::fail(
                    e.reason(),
                    e.to_string(),
                    started.elapsed(),
                    phases,
                    Details::Icmp(details),
                );
            }
        };
        phases.push(PhaseTiming {
            phase: Phase::Setup,
            duration: setup_start.elapsed(),
        });
        details.mode = Some(session.mode());

        let (echoes, send_error) = self.exchange(&mut session, deadline).await;
        drop(session);
        summarize(
            addr,
            timeout,
            &self.cfg,
            &echoes,
            send_error,
            started.elapsed(),
            phases,
            details,
        )
    }

    /// Sends the echoes on schedule and records what comes back, until every sent echo is settled or
    /// the deadline passes.
    async fn exchange(
        &self,
        session: &mut Session,
        deadline: tokio::time::Instant,
    ) -> (Vec<Echo>, Option<io::Error>) {
        let count = self.cfg.count;
        let interval = self.cfg.interval.0;
        let mut echoes = vec![Echo::NotSent; usize::from(count)];
        let mut send_error = None;
        let mut next: u16 = 0;
        let mut in_flight = 0usize;
        let first = tokio::time::Instant::now();
        let send_timer = tokio::time::sleep_until(first);
        let deadline_timer = tokio::time::sleep_until(deadline);
        tokio::pin!(send_timer, deadline_timer);
        while next < count || in_flight > 0 {
            tokio::select! {
                biased;
                ev = session.recv() => match ev {
                    Some(ev) => {
                        if record(&mut echoes, ev) {
                            in_flight -= 1;
                        }
                    }
                    None => break,
                },
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
fn record(echoes: &mut [Echo], ev: Event) -> bool {
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

/// What an ICMP error means for the probe: its reason and a description. Network-scoped destination
/// unreachable codes (RFC 792 codes 0, 6, 9, 11; RFC 4443 codes 0, 2, 5, 6, 7) map to
/// `network-unreachable`, everything else (host unreachable, administratively prohibited, time
/// exceeded, …) to `host-unreachable`.
pub(crate) fn classify_icmp_error(v6: bool, icmp_type: u8, code: u8) -> (Reason, &'static str) {
    use Reason::{HostUnreachable as Host, NetworkUnreachable as Net};
    if v6 {
        match (icmp_type, code) {
            (packet::ICMPV6_DEST_UNREACH, 0) => (Net, "no route to destination"),
            (packet::ICMPV6_DEST_UNREACH, 1) => (Host, "communication administratively prohibited"),
            (packet::ICMPV6_DEST_UNREACH, 2) => (Net, "beyond scope of source address"),
            (packet::ICMPV6_DEST_UNREACH, 3) => (Host, "address unreachable"),
            (packet::ICMPV6_DEST_UNREACH, 5) => {
                (Net, "source address failed ingress/egress policy")
            }
            (packet::ICMPV6_DEST_UNREACH, 6) => (Net, "reject route to destination"),
            (packet::ICMPV6_DEST_UNREACH, _) => (Net, "destination unreachable"),
            (packet::ICMPV6_PACKET_TOO_BIG, _) => (Host, "packet too big (reduce icmp.size)"),
            (packet::ICMPV6_TIME_EXCEEDED, _) => {
                (Host, "hop limit exceeded in transit (routing loop?)")
            }
            _ => (Host, "parameter problem"),
        }
    } else {
        match (icmp_type, code) {
            (packet::ICMP_DEST_UNREACH, 0 | 6 | 11) => (Net, "destination network unreachable"),
            (packet::ICMP_DEST_UNREACH, 9) => {
                (Net, "destination network administratively prohibited")
            }
            (packet::ICMP_DEST_UNREACH, 4) => (Host, "fragmentation needed (reduce icmp.size)"),
            (packet::ICMP_DEST_UNREACH, 10 | 13) => {
                (Host, "communication administratively prohibited")
            }
            (packet::ICMP_DEST_UNREACH, _) => (Host, "destination host unreachable"),
            (packet::ICMP_TIME_EXCEEDED, _) => {
                (Host, "time to live exceeded in transit (routing loop?)")
            }
            _ => (Host, "parameter problem"),
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn summarize(
    addr: IpAddr,
    timeout: Duration,
    cfg: &IcmpConfig,
    echoes: &[Echo],
    send_error: Option<io::Error>,
    duration: Duration,
    mut phases: Vec<PhaseTiming>,
    mut d: IcmpDetails,
) -> Outcome {
    let sent: Vec<&Echo> = echoes
        .iter()
        .filter(|e| !matches!(e, Echo::NotSent | Echo::SendFailed))
        .collect();
    d.sent = sent.len() as u32;
    d.rtts = sent
        .iter()
        .map(|e| match e {
            Echo::Replied { rtt, .. } => Some(rtt.as_secs_f64()),
            _ => None,
        })
        .collect();
    let rtts: Vec<f64> = d.rtts.iter().flatten().copied().collect();
    d.received = rtts.len() as u32;
    d.loss_ratio = if d.sent == 0 {
        0.0
    } else {
        1.0 - f64::from(d.received) / f64::from(d.sent)
    };
    d.kernel_timestamps = d.received > 0
        && sent
            .iter()
            .all(|e| !matches!(e, Echo::Replied { kernel: false, .. }));
    let mode = d.mode.map(IcmpSocketMode::as_str).unwrap_or("?");

    let first_error = echoes.iter().find_map(|e| match e {
        Echo::Error {
            icmp_type,
            code,
            from,
        } => Some((*icmp_type, *code, *from)),
        _ => None,
    });
    let errors = echoes
        .iter()
        .filter(|e| matches!(e, Echo::Error { .. }))
        .count();
    let mut notes = String::new();
    if let Some((t, c, from)) = first_error {
        let (_, what) = classify_icmp_error(addr.is_ipv6(), t, c);
        let from = from.map(|f| format!(" from {f}")).unwrap_or_default();
        notes.push_str(&format!(
            "; {errors} ICMP error(s): {what}{from} (type {t} code {c})"
        ));
    }
    let not_sent = echoes.iter().filter(|e| matches!(e, Echo::NotSent)).count();
    if not_sent > 0 {
        notes.push_str(&format!(
            "; only {} of {} echo requests fit in the {timeout:?} timeout (interval {})",
            echoes.len() - not_sent,
            echoes.len(),
            cfg.interval
        ));
    }

    if !rtts.is_empty() {
        let n = rtts.len() as f64;
        let min = rtts.iter().copied().fold(f64::INFINITY, f64::min);
        let max = rtts.iter().copied().fold(0.0, f64::max);
        let avg = rtts.iter().sum::<f64>() / n;
        let stddev = (rtts.iter().map(|r| (r - avg).powi(2)).sum::<f64>() / n).sqrt();
        (d.rtt_min, d.rtt_avg, d.rtt_max, d.rtt_stddev) =
            (Some(min), Some(avg), Some(max), Some(stddev));
        phases.push(PhaseTiming {
            phase: Phase::Rtt,
            duration: Duration::from_secs_f64(avg),
        });
        let ms = |s: f64| s * 1e3;
        let msg = format!(
            "{}/{} replies from {addr} ({mode} socket), rtt min/avg/max/mdev = {:.3}/{:.3}/{:.3}/{:.3} ms{notes}",
            d.received,
            d.sent,
            ms(min),
            ms(avg),
            ms(max),
            ms(stddev)
        );
        return Outcome::ok(msg, duration, phases, Details::Icmp(d));
    }
    if let Some((t, c, from)) = first_error {
        let (reason, what) = classify_icmp_error(addr.is_ipv6(), t, c);
        let from = from
            .map(|f| format!(" (reported by {f})"))
            .unwrap_or_default();
        let msg = format!(
            "{what}: {errors} of {} echo requests to {addr} drew ICMP type {t} code {c}{from} and none was answered{notes}",
            d.sent
        );
        return Outcome::fail(reason, msg, duration, phases, Details::Icmp(d));
    }
    if d.sent == 0
        && let Some(e) = send_error
    {
        let hint = match e.raw_os_error() {
            Some(libc::EPERM) => {
                ": the kernel refused the packet; a local netfilter OUTPUT rule probably drops ICMP to it"
            }
            Some(libc::EACCES) => ": not allowed (broadcast address?)",
            _ => "",
        };
        let msg = format!("cannot send an ICMP echo request to {addr}: {e}{hint}");
        return Outcome::fail(
            Reason::from_io_error(&e),
            msg,
            duration,
            phases,
            Details::Icmp(d),
        );
    }
    let msg = format!(
        "no echo reply from {addr} to {} echo request(s) within {timeout:?} ({mode} socket){notes}",
        d.sent
    );
    Outcome::fail(Reason::Timeout, msg, duration, phases, Details::Icmp(d))
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

    #[test]
    fn icmp_errors_map_to_reasons() {
        assert_eq!(
            classify_icmp_error(false, 3, 0).0,
            Reason::NetworkUnreachable
        );
        assert_eq!(classify_icmp_error(false, 3, 1).0, Reason::HostUnreachable);
        assert_eq!(classify_icmp_error(false, 3, 13).0, Reason::HostUnreachable);
        assert_eq!(classify_icmp_error(false, 11, 0).0, Reason::HostUnreachable);
        assert_eq!(
            classify_icmp_error(true, 1, 0).0,
            Reason::NetworkUnreachable
        );
        assert_eq!(classify_icmp_error(true, 1, 3).0, Reason::HostUnreachable);
        assert_eq!(classify_icmp_error(true, 3, 0).0, Reason::HostUnreachable);
    }

    fn summary(echoes: &[Echo], send_error: Option<io::Error>) -> Outcome {
        let d = IcmpDetails {
            mode: Some(IcmpSocketMode::Raw),
            ..Default::default()
        };
        let cfg = IcmpConfig::new("198.51.100.2");
        let addr: IpAddr = "198.51.100.2".parse().unwrap();
        summarize(
            addr,
            Duration::from_secs(1),
            &cfg,
            echoes,
            send_error,
            Duration::from_secs(1),
            vec![],
            d,
        )
    }

    #[test]
    fn statistics_and_success() {
        let r = |us: u64, kernel| Echo::Replied {
            rtt: Duration::from_micros(us),
            kernel,
        };
        let o = summary(
            &[
                r(100, true),
                Echo::InFlight(stamp(0)),
                r(300, true),
                Echo::NotSent,
            ],
            None,
        );
        assert!(o.success, "{o:?}");
        let Details::Icmp(d) = &o.details else {
            panic!()
        };
        assert_eq!((d.sent, d.received), (3, 2));
        assert!((d.loss_ratio - 1.0 / 3.0).abs() < 1e-9);
        assert_eq!(d.rtts, vec![Some(100e-6), None, Some(300e-6)]);
        assert_eq!((d.rtt_min, d.rtt_max), (Some(100e-6), Some(300e-6)));
        assert!((d.rtt_avg.unwrap() - 200e-6).abs() < 1e-12);
        assert!((d.rtt_stddev.unwrap() - 100e-6).abs() < 1e-12);
        assert!(d.kernel_timestamps);
        assert_eq!(o.phase(Phase::Rtt), Some(Duration::from_micros(200)));
        assert!(
            o.message.contains("only 3 of 4 echo requests fit"),
            "{}",
            o.message
        );

        let o = summary(&[r(100, true), r(100, false)], None);
        let Details::Icmp(d) = &o.details else {
            panic!()
        };
        assert!(!d.kernel_timestamps, "one user-space stamp clears the flag");
    }

    #[test]
    fn failure_reasons() {
        let o = summary(&[Echo::InFlight(stamp(0)), Echo::InFlight(stamp(0))], None);
        assert_eq!(o.reason, Some(Reason::Timeout));
        let Details::Icmp(d) = &o.details else {
            panic!()
        };
        assert_eq!((d.sent, d.received, d.loss_ratio), (2, 0, 1.0));
        assert!(!d.kernel_timestamps);
        assert_eq!(o.phase(Phase::Rtt), None);

        let err = Echo::Error {
            icmp_type: 3,
            code: 0,
            from: Some("198.51.100.1".parse().unwrap()),
        };
        let o = summary(&[err, Echo::InFlight(stamp(0))], None);
        assert_eq!(o.reason, Some(Reason::NetworkUnreachable));
        assert!(
            o.message.contains("reported by 198.51.100.1"),
            "{}",
            o.message
        );

        let o = summary(
            &[Echo::SendFailed],
            Some(io::Error::from_raw_os_error(libc::EPERM)),
        );
        assert_eq!(o.reason, Some(Reason::PermissionDenied));
        assert!(o.message.contains("OUTPUT"), "{}", o.message);
        let o = summary(
            &[Echo::SendFailed],
            Some(io::Error::from_raw_os_error(libc::ENETUNREACH)),
        );
        assert_eq!(o.reason, Some(Reason::NetworkUnreachable));
    }
}
