//! Turning what happened to a probe's echoes into its [`Outcome`]: statistics, reason and message.

use std::io;
use std::net::IpAddr;
use std::time::Duration;

use super::config::IcmpConfig;
use super::packet;
use super::prober::Echo;
use crate::outcome::{IcmpDetails, IcmpSocketMode};
use crate::{Details, Outcome, Phase, PhaseTiming, Reason};

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

/// The outcome of a probe whose echoes ended as `echoes` (index = echo number).
#[allow(clippy::too_many_arguments)]
pub(super) fn summarize(
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
        let msg = format!(
            "{}/{} replies from {addr} ({mode} socket), rtt min/avg/max/mdev = {}/{}/{}/{} ms{notes}",
            d.received,
            d.sent,
            Millis(min),
            Millis(avg),
            Millis(max),
            Millis(stddev)
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

/// Seconds shown as milliseconds with three decimals (`0.034`), like ping, through integer
/// formatting: float formatting with a fixed precision is a measurable share of a loopback probe's CPU.
struct Millis(f64);

impl std::fmt::Display for Millis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let us = (self.0 * 1e6).round().clamp(0.0, u64::MAX as f64) as u64;
        write!(f, "{}.{:03}", us / 1000, us % 1000)
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    reason = "in a test a panic is the failure report"
)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::icmp::engine::SendStamp;

    fn stamp(real_ns: i64) -> SendStamp {
        SendStamp {
            mono: Instant::now(),
            real_ns,
        }
    }

    #[test]
    fn millis_format_like_ping() {
        assert_eq!(Millis(0.000_034_4).to_string(), "0.034");
        assert_eq!(Millis(1.234_567_8).to_string(), "1234.568");
        assert_eq!(Millis(0.0).to_string(), "0.000");
        assert_eq!(Millis(-1.0).to_string(), "0.000");
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
