//! Stage one: the config file's shape, as serde reads it. Unknown keys are rejected everywhere, and every
//! value that can be checked on its own (durations, thresholds, names, addresses, conditions) is checked
//! while it is read, so its error carries its own line and column. No `#[serde(flatten)]` and no
//! internally tagged enums: serde buffers those, and the YAML locations are lost.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use probe::HumanDuration;
use probe::dns::DnsConfig;
use probe::exec::ExecConfig;
use probe::grpc::GrpcConfig;
use probe::http::HttpConfig;
use probe::icmp::IcmpConfig;
use probe::tcp::TcpConfig;
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use serde_saphyr::Spanned;

use crate::conditions::Condition;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    /// The HTTP server (API, metrics, status page).
    pub(crate) server: Option<RawServer>,
    /// The history store.
    pub(crate) storage: Option<RawStorage>,
    /// Probe settings every check inherits unless it sets its own.
    pub(crate) defaults: Option<RawDefaults>,
    /// Automatic diagnosis when a check turns unhealthy.
    pub(crate) diagnosis: Option<RawDiagnosis>,
    /// The checks, in the order they are listed.
    pub(crate) checks: Option<Vec<Spanned<RawCheck>>>,
    /// The node latency mesh.
    pub(crate) mesh: Option<Spanned<super::mesh::RawMesh>>,
}

/// `server:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawServer {
    /// `IP:PORT` to listen on, e.g. `127.0.0.1:8080` or `[::]:8080`.
    pub(crate) listen: Option<ListenAddr>,
}

/// `storage:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStorage {
    /// SQLite database file; a relative path is relative to the working directory.
    pub(crate) path: Option<PathBuf>,
    /// How long results are kept, e.g. `7d`.
    pub(crate) retention: Option<Positive>,
}

/// `diagnosis:`, automatic diagnosis when a check turns unhealthy.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDiagnosis {
    /// Diagnose at all (default true).
    pub(crate) enabled: Option<bool>,
    /// Least time between two diagnoses of one check, e.g. `5m` (default 5m).
    pub(crate) min_interval: Option<Positive>,
    /// Diagnoses running at once across all checks (default 2).
    pub(crate) max_concurrent: Option<Concurrency>,
}

/// The largest `diagnosis.max_concurrent`: each diagnosis runs `iptables-save`, `nft` and friends.
pub(crate) const MAX_CONCURRENT_DIAGNOSES: u32 = 64;

/// `diagnosis.max_concurrent`: a whole number from 1 to [`MAX_CONCURRENT_DIAGNOSES`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Concurrency(pub(crate) u32);

impl<'de> Deserialize<'de> for Concurrency {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = u64::deserialize(d)?;
        match u32::try_from(n) {
            Ok(n) if (1..=MAX_CONCURRENT_DIAGNOSES).contains(&n) => Ok(Concurrency(n)),
            _ => Err(de::Error::custom(format!(
                "max_concurrent {n} is out of range; expected a whole number from 1 to {MAX_CONCURRENT_DIAGNOSES}"
            ))),
        }
    }
}

/// `defaults:`, the kubelet's probe fields with its defaults.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDefaults {
    /// Time between probe starts (kubelet `periodSeconds`, default 10s).
    pub(crate) period: Option<Positive>,
    /// Bound on one probe (kubelet `timeoutSeconds`, default 1s).
    pub(crate) timeout: Option<Positive>,
    /// Wait before the first probe (kubelet `initialDelaySeconds`, default 0s).
    pub(crate) initial_delay: Option<HumanDuration>,
    /// Consecutive successes to turn healthy (kubelet `successThreshold`, default 1).
    pub(crate) success_threshold: Option<Threshold>,
    /// Consecutive failures to turn unhealthy (kubelet `failureThreshold`, default 3).
    pub(crate) failure_threshold: Option<Threshold>,
}

/// One entry of `checks:`. Exactly one of the probe keys must be set, like the kubelet's handlers.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCheck {
    /// Unique name, `[A-Za-z0-9_.-]+`; it appears in URLs and metric labels.
    pub(crate) name: Spanned<CheckName>,
    /// ICMP echo.
    pub(crate) icmp: Option<Spanned<IcmpConfig>>,
    /// TCP connect.
    pub(crate) tcp: Option<Spanned<TcpConfig>>,
    /// HTTP(S) request.
    pub(crate) http: Option<Spanned<HttpConfig>>,
    /// DNS query.
    pub(crate) dns: Option<Spanned<DnsConfig>>,
    /// Local command.
    pub(crate) exec: Option<Spanned<ExecConfig>>,
    /// gRPC health check.
    pub(crate) grpc: Option<Spanned<GrpcConfig>>,
    /// Overrides `defaults.period`.
    pub(crate) period: Option<Positive>,
    /// Overrides `defaults.timeout`.
    pub(crate) timeout: Option<Positive>,
    /// Overrides `defaults.initial_delay`.
    pub(crate) initial_delay: Option<HumanDuration>,
    /// Overrides `defaults.success_threshold`.
    pub(crate) success_threshold: Option<Threshold>,
    /// Overrides `defaults.failure_threshold`.
    pub(crate) failure_threshold: Option<Threshold>,
    /// Gatus-style conditions that replace the kind's default success rule.
    pub(crate) conditions: Option<Vec<Spanned<Condition>>>,
}

/// The longest check name accepted; names go in URLs and metric labels.
pub(crate) const MAX_NAME_LEN: usize = 128;

/// A check name, validated while read.
#[derive(Debug, Clone)]
pub(crate) struct CheckName(pub(crate) String);

impl<'de> Deserialize<'de> for CheckName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        let valid = !name.is_empty()
            && name.len() <= MAX_NAME_LEN
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if valid {
            Ok(CheckName(name))
        } else {
            Err(de::Error::custom(format!(
                "invalid check name {name:?}; expected 1 to {MAX_NAME_LEN} characters from A-Z a-z 0-9 _ . - \
                 (names appear in URLs and metric labels)"
            )))
        }
    }
}

/// A duration that must be greater than zero.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Positive(pub(crate) HumanDuration);

impl<'de> Deserialize<'de> for Positive {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let d = HumanDuration::deserialize(d)?;
        if d.0.is_zero() {
            return Err(de::Error::custom(format!(
                "duration {d} must be greater than zero, like 10s"
            )));
        }
        Ok(Positive(d))
    }
}

/// A kubelet-style threshold: a whole number, at least 1 (the kubelet's minimum).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Threshold(pub(crate) u32);

impl<'de> Deserialize<'de> for Threshold {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ThresholdVisitor)
    }
}

struct ThresholdVisitor;

const THRESHOLD_EXPECTED: &str = "a whole number from 1 to 4294967295 (the kubelet's minimum is 1)";

impl ThresholdVisitor {
    fn check<E: de::Error>(v: impl TryInto<u32> + fmt::Display + Copy) -> Result<Threshold, E> {
        match v.try_into() {
            Ok(n) if n >= 1 => Ok(Threshold(n)),
            _ => Err(E::custom(format!(
                "threshold {v} is out of range; expected {THRESHOLD_EXPECTED}"
            ))),
        }
    }
}

impl Visitor<'_> for ThresholdVisitor {
    type Value = Threshold;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(THRESHOLD_EXPECTED)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Threshold, E> {
        Self::check(v)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Threshold, E> {
        Self::check(v)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Threshold, E> {
        match v.trim().parse::<u64>() {
            Ok(n) => Self::check(n),
            Err(_) => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
        }
    }
}

/// `IP:PORT`, parsed while read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ListenAddr(pub(crate) SocketAddr);

impl<'de> Deserialize<'de> for ListenAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.trim().parse().map(ListenAddr).map_err(|_| {
            de::Error::custom(format!(
                "invalid listen address {text:?}; expected IP:PORT, like 127.0.0.1:8080 or [::1]:8080"
            ))
        })
    }
}
