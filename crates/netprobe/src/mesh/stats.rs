//! Per-round aggregates of one pair: RTT summary, loss, jitter.

use serde::{Deserialize, Serialize};

/// The protocol a round used. The store's chunk format keeps the variant's position: add new
/// variants at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MeshProtocol {
    /// ICMP echo on the shared engine.
    Icmp,
    /// TCP connect to the peer agent's port (the fallback when ICMP is denied or blocked).
    Tcp,
}

impl MeshProtocol {
    /// The `protocol` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            MeshProtocol::Icmp => "icmp",
            MeshProtocol::Tcp => "tcp",
        }
    }
}

/// One round of one pair (source → target address). Times in seconds unless the name says `_ns`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundStats {
    /// Protocol used.
    pub protocol: MeshProtocol,
    /// Why the round fell back to TCP (the ICMP failure reason), if it did.
    pub fallback_reason: Option<String>,
    /// Probes sent (echo requests or connection attempts).
    pub sent: u32,
    /// Answers received in time.
    pub received: u32,
    /// `1 - received / sent`; 1.0 when nothing could be sent.
    pub loss_ratio: f64,
    /// Smallest RTT, seconds.
    pub rtt_min: Option<f64>,
    /// Mean RTT, seconds.
    pub rtt_avg: Option<f64>,
    /// Largest RTT, seconds.
    pub rtt_max: Option<f64>,
    /// Population standard deviation of the RTTs, seconds.
    pub rtt_stddev: Option<f64>,
    /// Median RTT (nearest rank), seconds.
    pub rtt_p50: Option<f64>,
    /// 99th percentile RTT (nearest rank), seconds.
    pub rtt_p99: Option<f64>,
    /// Mean absolute difference between consecutive answered probes' RTTs, seconds (RFC 3550's
    /// interarrival jitter without the 1/16 smoothing, over one round). `None` below two answers.
    pub jitter: Option<f64>,
    /// When the last probe was sent, CLOCK_REALTIME nanoseconds since the Unix epoch.
    pub last_send_ns: Option<i64>,
    /// When the last answer arrived (its send time plus its RTT), nanoseconds since the Unix epoch.
    pub last_receive_ns: Option<i64>,
    /// When the round started, nanoseconds since the Unix epoch.
    pub started_ns: i64,
    /// Why answers are missing (`timeout`, `permission-denied`, …), when some are.
    pub reason: Option<String>,
}

/// Builds a round's aggregates from per-probe RTTs in send order (`None` = lost) and the send offsets
/// (nanoseconds after `started_ns`) of those probes.
pub fn aggregate(
    protocol: MeshProtocol,
    started_ns: i64,
    rtts: &[Option<f64>],
    offsets_ns: &[i64],
) -> RoundStats {
    let sent = u32::try_from(rtts.len()).unwrap_or(u32::MAX);
    let answered: Vec<f64> = rtts.iter().flatten().copied().collect();
    let received = u32::try_from(answered.len()).unwrap_or(u32::MAX);
    let loss_ratio = loss_ratio(sent, received);
    let mut sorted = answered.clone();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len() as f64;
    let avg = (!sorted.is_empty()).then(|| sorted.iter().sum::<f64>() / n);
    let stddev = avg.map(|m| (sorted.iter().map(|x| (x - m).powi(2)).sum::<f64>() / n).sqrt());
    let jitter = (answered.len() >= 2).then(|| {
        answered
            .windows(2)
            .map(|w| (w[1] - w[0]).abs())
            .sum::<f64>()
            / (answered.len() - 1) as f64
    });
    let offset = |i: usize| started_ns.saturating_add(offsets_ns.get(i).copied().unwrap_or(0));
    let last_send_ns = rtts.len().checked_sub(1).map(offset);
    let last_receive_ns = rtts
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.map(|r| offset(i).saturating_add((r * 1e9) as i64)))
        .max();
    RoundStats {
        protocol,
        fallback_reason: None,
        sent,
        received,
        loss_ratio,
        rtt_min: sorted.first().copied(),
        rtt_avg: avg,
        rtt_max: sorted.last().copied(),
        rtt_stddev: stddev,
        rtt_p50: percentile(&sorted, 0.50),
        rtt_p99: percentile(&sorted, 0.99),
        jitter,
        last_send_ns,
        last_receive_ns,
        started_ns,
        reason: None,
    }
}

/// `1 - received / sent`, and 1.0 when nothing was sent.
pub fn loss_ratio(sent: u32, received: u32) -> f64 {
    if sent == 0 {
        1.0
    } else {
        1.0 - f64::from(received) / f64::from(sent)
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    reason = "in a test a panic is the failure report"
)]
mod tests {
    use super::*;

    #[test]
    fn aggregates_a_round() {
        let rtts = [Some(0.001), None, Some(0.003), Some(0.002)];
        let s = aggregate(MeshProtocol::Icmp, 1_000, &rtts, &[0, 10, 20, 30]);
        assert_eq!((s.sent, s.received), (4, 3));
        assert!((s.loss_ratio - 0.25).abs() < 1e-12);
        assert_eq!(s.rtt_min, Some(0.001));
        assert_eq!(s.rtt_max, Some(0.003));
        assert!((s.rtt_avg.unwrap() - 0.002).abs() < 1e-12);
        assert_eq!(s.rtt_p50, Some(0.002));
        assert_eq!(s.rtt_p99, Some(0.003));
        // |0.003-0.001| + |0.002-0.003| over 2.
        assert!((s.jitter.unwrap() - 0.0015).abs() < 1e-12);
        assert_eq!(s.last_send_ns, Some(1_030));
        // The latest answer is echo 2's (sent at +20 ns, back 3 ms later), not the last echo's.
        assert_eq!(s.last_receive_ns, Some(1_020 + 3_000_000));
    }

    #[test]
    fn empty_and_all_lost_rounds() {
        let s = aggregate(MeshProtocol::Tcp, 0, &[], &[]);
        assert_eq!(s.loss_ratio, 1.0);
        assert_eq!(s.rtt_avg, None);
        let s = aggregate(MeshProtocol::Icmp, 0, &[None, None], &[0, 5]);
        assert_eq!(s.loss_ratio, 1.0);
        assert_eq!((s.jitter, s.last_receive_ns), (None, None));
        assert_eq!(s.last_send_ns, Some(5));
    }
}
