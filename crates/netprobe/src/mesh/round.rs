//! One round of one pair: `packets` echoes on the shared ICMP engine, spread over the interval, or
//! the TCP connect fallback.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use probe::icmp::{IcmpConfig, IcmpEngine, IcmpProber, IcmpRounds, MAX_INTERVAL};
use probe::{Details, HumanDuration};

use super::stats::{MeshProtocol, RoundStats, aggregate};

/// What a round needs to know.
#[derive(Debug, Clone, Copy)]
pub struct RoundSpec {
    /// The peer address.
    pub ip: IpAddr,
    /// The peer agent's port (TCP fallback).
    pub port: u16,
    /// Probes in the round.
    pub packets: u16,
    /// The round interval; probes are sent `interval / packets` apart and the round ends within it.
    pub interval: Duration,
}

impl RoundSpec {
    /// Time between two probes of the round (at most the ICMP engine's 10 s).
    pub fn spacing(&self) -> Duration {
        (self.interval / u32::from(self.packets.max(1))).min(MAX_INTERVAL)
    }

    /// Bound on the whole round: 95% of the interval, so rounds of one pair never overlap.
    pub fn budget(&self) -> Duration {
        self.interval.mul_f64(0.95)
    }

    fn offsets_ns(&self, n: usize) -> Vec<i64> {
        let s = i64::try_from(self.spacing().as_nanos()).unwrap_or(i64::MAX);
        (0..n)
            .map(|i| s.saturating_mul(i64::try_from(i).unwrap_or(i64::MAX)))
            .collect()
    }
}

/// Now, in CLOCK_REALTIME nanoseconds since the Unix epoch.
pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The prober of one pair's ICMP rounds: `packets` echoes `spacing` apart. Built once per pair and
/// reused by every round (a round only borrows it). Errors: the configuration is invalid (the
/// round then reports it as its reason).
pub fn icmp_prober(
    spec: RoundSpec,
    engine: &Arc<IcmpEngine>,
) -> Result<IcmpProber, probe::ConfigError> {
    let cfg = IcmpConfig {
        host: spec.ip.to_string(),
        count: spec.packets,
        interval: HumanDuration(spec.spacing()),
        ..IcmpConfig::new(spec.ip.to_string())
    };
    IcmpProber::new(cfg, Arc::clone(engine))
}

/// An ICMP round on the pair's prober ([`icmp_prober`]; `Err` carries why it could not be built),
/// run by `rounds` with its echoes due from `at` (the round's slot, so that pairs of a slot share
/// the driver's ticks), with the answered RTTs (seconds) and the probe's outcome (for a diagnosis).
/// Returns when the round is over, and never before `at` (a round that fails at once, for want of a
/// socket, still keeps the pair's rate). `reason` is set (and the caller may fall back to TCP) when
/// an echo was lost or no socket could be opened.
pub async fn icmp(
    spec: RoundSpec,
    rounds: &IcmpRounds,
    at: tokio::time::Instant,
    prober: Result<&IcmpProber, &str>,
) -> (RoundStats, Vec<f64>, Option<probe::Outcome>) {
    // The round starts at its slot (or now, if that has passed), on the realtime clock.
    let ahead = at.saturating_duration_since(tokio::time::Instant::now());
    let started = now_ns().saturating_add(i64::try_from(ahead.as_nanos()).unwrap_or(0));
    let prober = match prober {
        Ok(p) => p,
        Err(e) => {
            tokio::time::sleep_until(at).await;
            let mut s = aggregate(MeshProtocol::Icmp, started, &[], &[]);
            s.reason = Some(format!("error: {e}"));
            return (s, Vec::new(), None);
        }
    };
    let outcome = rounds.probe(prober, at, spec.budget()).await;
    if tokio::time::Instant::now() < at {
        tokio::time::sleep_until(at).await;
    }
    let rtts = match &outcome.details {
        Details::Icmp(d) => d.rtts.clone(),
        _ => Vec::new(),
    };
    let mut s = aggregate(
        MeshProtocol::Icmp,
        started,
        &rtts,
        &spec.offsets_ns(rtts.len()),
    );
    if s.received < s.sent || s.sent == 0 {
        s.reason = Some(
            outcome
                .reason
                .map_or_else(|| "timeout".to_owned(), |r| r.as_str().to_owned()),
        );
    }
    (s, rtts.into_iter().flatten().collect(), Some(outcome))
}

/// A TCP round, with the answered RTTs (seconds): `packets` connects to `ip:port`, `spacing` apart, each bounded by the spacing; the
/// RTT is the handshake time. A refusal (RST) proves the path works, so it counts as an answer.
pub async fn tcp(spec: RoundSpec) -> (RoundStats, Vec<f64>) {
    let started = now_ns();
    let start = tokio::time::Instant::now();
    let spacing = spec.spacing();
    let addr = SocketAddr::new(spec.ip, spec.port);
    let mut rtts = Vec::with_capacity(usize::from(spec.packets));
    let mut last_reason = None;
    for i in 0..u32::from(spec.packets) {
        tokio::time::sleep_until(start + spacing * i).await;
        let t0 = std::time::Instant::now();
        let budget = spacing.min(spec.budget().saturating_sub(spacing * i));
        match tokio::time::timeout(budget, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(_)) => rtts.push(Some(t0.elapsed().as_secs_f64())),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                rtts.push(Some(t0.elapsed().as_secs_f64()));
            }
            Ok(Err(e)) => {
                rtts.push(None);
                last_reason = Some(probe::Reason::from_io_error(&e).as_str().to_owned());
            }
            Err(_) => {
                rtts.push(None);
                last_reason = Some("timeout".to_owned());
            }
        }
    }
    let mut s = aggregate(
        MeshProtocol::Tcp,
        started,
        &rtts,
        &spec.offsets_ns(rtts.len()),
    );
    if s.received < s.sent {
        s.reason = last_reason;
    }
    (s, rtts.into_iter().flatten().collect())
}
