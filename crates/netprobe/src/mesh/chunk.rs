//! How a pair's rounds are kept between two store writes and encoded in the store
//! (`mesh_chunks.data`, migration 0005 of the store crate).
//!
//! Format 1: the byte `0x01`, then one [postcard](https://docs.rs/postcard) record per round in
//! start order (integers as varints, so a 50 µs RTT in nanoseconds takes 3 bytes): start time in
//! Unix epoch nanoseconds, protocol, probes sent and answered, the seven RTT aggregates in
//! nanoseconds, the last send and receive times as nanoseconds after the start, the reason and
//! the fallback reason. An ICMP round takes about 60 bytes against ~300 as JSON. Chunks copied
//! from the schema-4 table `mesh_rounds` are JSON arrays of [`RoundStats`] (first byte `[`);
//! [`decode`] reads both.

use serde::{Deserialize, Serialize};
use store::MeshChunkRecord;

use super::stats::{MeshProtocol, RoundStats, loss_ratio};

/// The first byte of a chunk in format 1.
const FORMAT_1: u8 = 1;

/// One round in format 1. Field order is the format: append new fields as a new format.
#[derive(Serialize, Deserialize)]
struct Packed<'a> {
    started_ns: i64,
    protocol: MeshProtocol,
    sent: u32,
    received: u32,
    rtt_min_ns: Option<u64>,
    rtt_avg_ns: Option<u64>,
    rtt_max_ns: Option<u64>,
    rtt_stddev_ns: Option<u64>,
    rtt_p50_ns: Option<u64>,
    rtt_p99_ns: Option<u64>,
    jitter_ns: Option<u64>,
    last_send_after_ns: Option<i64>,
    last_receive_after_ns: Option<i64>,
    reason: Option<&'a str>,
    fallback_reason: Option<&'a str>,
}

/// Seconds to whole nanoseconds (negative and NaN durations, which rounds never produce, become 0).
fn to_ns(seconds: Option<f64>) -> Option<u64> {
    seconds.map(|s| (s * 1e9).round() as u64)
}

fn to_seconds(ns: Option<u64>) -> Option<f64> {
    ns.map(|n| n as f64 / 1e9)
}

/// The rounds of one pair gathered since its last store write: format-1 bytes plus what the
/// store's row needs.
#[derive(Debug, Default, Clone)]
pub struct OpenChunk {
    data: Vec<u8>,
    first_ms: i64,
    last_ms: i64,
    rounds: u32,
}

impl OpenChunk {
    /// Appends one round (rounds come in start order).
    pub fn push(&mut self, round: &RoundStats) {
        let packed = Packed {
            started_ns: round.started_ns,
            protocol: round.protocol,
            sent: round.sent,
            received: round.received,
            rtt_min_ns: to_ns(round.rtt_min),
            rtt_avg_ns: to_ns(round.rtt_avg),
            rtt_max_ns: to_ns(round.rtt_max),
            rtt_stddev_ns: to_ns(round.rtt_stddev),
            rtt_p50_ns: to_ns(round.rtt_p50),
            rtt_p99_ns: to_ns(round.rtt_p99),
            jitter_ns: to_ns(round.jitter),
            last_send_after_ns: round
                .last_send_ns
                .map(|t| t.saturating_sub(round.started_ns)),
            last_receive_after_ns: round
                .last_receive_ns
                .map(|t| t.saturating_sub(round.started_ns)),
            reason: round.reason.as_deref(),
            fallback_reason: round.fallback_reason.as_deref(),
        };
        if self.data.is_empty() {
            self.data.push(FORMAT_1);
        }
        // Writing to a Vec cannot fail; a serializer error would mean an unsupported type, caught
        // by the tests. The round is then left out rather than corrupting the chunk.
        match postcard::to_extend(&packed, std::mem::take(&mut self.data)) {
            Ok(data) => self.data = data,
            Err(e) => {
                tracing::error!(error = %e, "mesh round not encodable; left out of the history");
                return;
            }
        }
        let started_ms = round.started_ns.div_euclid(1_000_000);
        if self.rounds == 0 {
            self.first_ms = started_ms;
        }
        self.last_ms = started_ms;
        self.rounds += 1;
    }

    /// Whether no round was pushed since the last [`take`](Self::take).
    pub fn is_empty(&self) -> bool {
        self.rounds == 0
    }

    /// The format-1 bytes so far.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// Closes the chunk as a store row of the pair `(source_node → target_node, target_ip)` and
    /// leaves this one empty; `None` if it holds no round.
    pub fn take(
        &mut self,
        source_node: &str,
        target_node: &str,
        target_ip: &str,
    ) -> Option<MeshChunkRecord> {
        if self.is_empty() {
            return None;
        }
        let done = std::mem::take(self);
        Some(MeshChunkRecord {
            id: None,
            source_node: source_node.to_owned(),
            target_node: target_node.to_owned(),
            target_ip: target_ip.to_owned(),
            first_ms: done.first_ms,
            last_ms: done.last_ms,
            rounds: done.rounds,
            data: done.data,
        })
    }
}

/// Decodes a chunk's rounds, in the order stored.
///
/// Errors: an empty chunk, an unknown first byte, or bytes that are not rounds of that format, as
/// text naming the round that failed.
pub fn decode(data: &[u8]) -> Result<Vec<RoundStats>, String> {
    match data.first() {
        Some(&FORMAT_1) => {
            let mut rest = &data[1..];
            let mut out = Vec::new();
            while !rest.is_empty() {
                let (p, tail): (Packed<'_>, _) = postcard::take_from_bytes(rest)
                    .map_err(|e| format!("round {} of the chunk: {e}", out.len() + 1))?;
                rest = tail;
                out.push(RoundStats {
                    protocol: p.protocol,
                    fallback_reason: p.fallback_reason.map(str::to_owned),
                    sent: p.sent,
                    received: p.received,
                    loss_ratio: loss_ratio(p.sent, p.received),
                    rtt_min: to_seconds(p.rtt_min_ns),
                    rtt_avg: to_seconds(p.rtt_avg_ns),
                    rtt_max: to_seconds(p.rtt_max_ns),
                    rtt_stddev: to_seconds(p.rtt_stddev_ns),
                    rtt_p50: to_seconds(p.rtt_p50_ns),
                    rtt_p99: to_seconds(p.rtt_p99_ns),
                    jitter: to_seconds(p.jitter_ns),
                    // Saturating: stored bytes may be damaged, and decoding never panics.
                    last_send_ns: p.last_send_after_ns.map(|d| p.started_ns.saturating_add(d)),
                    last_receive_ns: p
                        .last_receive_after_ns
                        .map(|d| p.started_ns.saturating_add(d)),
                    started_ns: p.started_ns,
                    reason: p.reason.map(str::to_owned),
                });
            }
            Ok(out)
        }
        Some(b'[') => serde_json::from_slice(data).map_err(|e| format!("JSON chunk: {e}")),
        Some(b) => Err(format!("unknown chunk format {b:#04x}")),
        None => Err("empty chunk".to_owned()),
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    reason = "in a test a panic is the failure report"
)]
mod tests {
    use super::super::stats::aggregate;
    use super::*;
    use proptest::prelude::*;

    fn tcp_fallback(started_ns: i64) -> RoundStats {
        let mut r = aggregate(
            MeshProtocol::Tcp,
            started_ns,
            &[None, None],
            &[0, 500_000_000],
        );
        r.reason = Some("timeout".to_owned());
        r.fallback_reason = Some("permission-denied".to_owned());
        r
    }

    /// Every field equal, except that the RTT aggregates that are not sample values (mean,
    /// standard deviation, jitter) may differ by the rounding to whole nanoseconds.
    fn same(got: &RoundStats, want: &RoundStats) -> Result<(), String> {
        let near = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => (a - b).abs() <= 0.51e-9,
            (a, b) => a == b,
        };
        let exact = RoundStats {
            rtt_avg: want.rtt_avg,
            rtt_stddev: want.rtt_stddev,
            jitter: want.jitter,
            ..got.clone()
        };
        let close = near(got.rtt_avg, want.rtt_avg)
            && near(got.rtt_stddev, want.rtt_stddev)
            && near(got.jitter, want.jitter);
        if exact == *want && close && got.loss_ratio.to_bits() == want.loss_ratio.to_bits() {
            Ok(())
        } else {
            Err(format!("got {got:?}\nwant {want:?}"))
        }
    }

    #[test]
    fn rounds_come_back_as_pushed_and_the_row_spans_them() {
        let a = aggregate(
            MeshProtocol::Icmp,
            1_764_264_000_123_456_789,
            &[
                Some(0.000_042_12),
                None,
                Some(0.000_031),
                Some(0.010_000_001),
            ],
            &[0, 200_000_000, 400_000_000, 600_000_000],
        );
        let b = tcp_fallback(1_764_264_001_123_456_789);
        let mut open = OpenChunk::default();
        assert!(open.take("a", "b", "fd00::2").is_none());
        open.push(&a);
        // The format byte and an ICMP round with every aggregate.
        assert_eq!(open.data().len(), 1 + 59);
        open.push(&b);
        let got = decode(open.data()).unwrap();
        assert_eq!(got.len(), 2);
        same(&got[0], &a).unwrap();
        assert_eq!(got[1], b, "no RTT to round");
        let row = open.take("node-a", "node-b", "fd00::2").unwrap();
        assert!(open.is_empty());
        assert_eq!(
            (row.first_ms, row.last_ms, row.rounds),
            (1_764_264_000_123, 1_764_264_001_123, 2)
        );
        assert_eq!(
            (
                row.source_node.as_str(),
                row.target_node.as_str(),
                row.target_ip.as_str()
            ),
            ("node-a", "node-b", "fd00::2")
        );
        assert_eq!(decode(&row.data).unwrap().len(), 2);
    }

    #[test]
    fn json_chunks_of_schema_4_are_read() {
        let a = tcp_fallback(1_000_000_000);
        let json = serde_json::to_vec(&[&a, &a]).unwrap();
        assert_eq!(decode(&json).unwrap(), [a.clone(), a]);
    }

    #[test]
    fn damaged_chunks_are_errors_not_panics() {
        let mut open = OpenChunk::default();
        open.push(&tcp_fallback(5));
        let data = open.data();
        assert!(
            decode(&data[..data.len() - 1])
                .unwrap_err()
                .contains("round 1")
        );
        assert_eq!(decode(&[]).unwrap_err(), "empty chunk");
        assert!(decode(&[7, 1, 2]).unwrap_err().contains("0x07"));
        assert!(decode(b"[{").unwrap_err().starts_with("JSON chunk"));
        // A protocol index past the last variant.
        assert!(decode(&[FORMAT_1, 2, 9]).is_err());
        // Times that overflow when added up saturate instead of panicking.
        let packed = Packed {
            started_ns: i64::MAX,
            protocol: MeshProtocol::Icmp,
            sent: 1,
            received: 0,
            rtt_min_ns: None,
            rtt_avg_ns: None,
            rtt_max_ns: None,
            rtt_stddev_ns: None,
            rtt_p50_ns: None,
            rtt_p99_ns: None,
            jitter_ns: None,
            last_send_after_ns: Some(i64::MAX),
            last_receive_after_ns: Some(1),
            reason: None,
            fallback_reason: None,
        };
        let bytes = postcard::to_extend(&packed, vec![FORMAT_1]).unwrap();
        let got = decode(&bytes).unwrap();
        assert_eq!(got[0].last_send_ns, Some(i64::MAX));
        assert_eq!(got[0].last_receive_ns, Some(i64::MAX));
    }

    proptest! {
        /// Any round `aggregate` makes comes back equal, the computed RTT aggregates to the
        /// nanosecond (sample values are whole nanoseconds and come back exactly).
        #[test]
        fn any_round_survives_the_format(
            started_ns in 0i64..4_000_000_000_000_000_000,
            rtts in prop::collection::vec(prop::option::of(0u64..20_000_000_000), 0..12),
            tcp: bool,
            reason in prop::option::of("[a-z-]{0,20}"),
        ) {
            let offsets: Vec<i64> = (0..rtts.len() as i64).map(|i| i * 100_000_000).collect();
            let seconds: Vec<Option<f64>> =
                rtts.iter().map(|r| r.map(|n| n as f64 / 1e9)).collect();
            let protocol = if tcp { MeshProtocol::Tcp } else { MeshProtocol::Icmp };
            let mut r = aggregate(protocol, started_ns, &seconds, &offsets);
            r.reason = reason;
            let mut open = OpenChunk::default();
            open.push(&r);
            open.push(&r);
            let got = decode(open.data()).unwrap();
            prop_assert_eq!(got.len(), 2);
            prop_assert_eq!(same(&got[1], &r), Ok(()));
        }
    }
}
