//! netprobe's probers and their outcome types.
//!
//! One module per probe kind ([`icmp`], [`tcp`], [`http`], [`dns`], [`exec`], [`grpc`]), each with its
//! config struct (deserialised from YAML with unknown keys rejected), its prober and its tests. [`Prober`]
//! lists the kinds and is matched exhaustively. Every prober is bounded by the timeout it is given and
//! returns exactly one [`Outcome`]; none panics on any reply.
#![deny(missing_docs)]

pub mod dns;
pub mod duration;
pub mod exec;
pub mod grpc;
pub mod http;
pub mod icmp;
pub mod outcome;
pub mod resolve;
pub mod tcp;

use std::time::Duration;

pub use duration::HumanDuration;
pub use outcome::*;

/// A probe definition that cannot be used (bad URL, bad address, empty command…). The text says what
/// was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// The probe kinds, named as in the config file's keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// ICMP echo.
    Icmp,
    /// TCP connect.
    Tcp,
    /// HTTP or HTTPS request.
    Http,
    /// DNS query.
    Dns,
    /// Local command.
    Exec,
    /// gRPC health check.
    Grpc,
}

impl Kind {
    /// The lowercase name (`icmp`, `tcp`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Icmp => "icmp",
            Kind::Tcp => "tcp",
            Kind::Http => "http",
            Kind::Dns => "dns",
            Kind::Exec => "exec",
            Kind::Grpc => "grpc",
        }
    }
}

/// A ready-to-run prober of any kind.
#[derive(Debug)]
pub enum Prober {
    /// ICMP echo through the shared engine.
    Icmp(icmp::IcmpProber),
    /// TCP connect.
    Tcp(tcp::TcpProber),
    /// HTTP(S).
    Http(http::HttpProber),
    /// DNS.
    Dns(dns::DnsProber),
    /// Exec.
    Exec(exec::ExecProber),
    /// gRPC health.
    Grpc(grpc::GrpcProber),
}

impl Prober {
    /// Runs one probe bounded by `timeout` and returns its outcome.
    pub async fn probe(&self, timeout: Duration) -> Outcome {
        match self {
            Prober::Icmp(p) => p.probe(timeout).await,
            Prober::Tcp(p) => p.probe(timeout).await,
            Prober::Http(p) => p.probe(timeout).await,
            Prober::Dns(p) => p.probe(timeout).await,
            Prober::Exec(p) => p.probe(timeout).await,
            Prober::Grpc(p) => p.probe(timeout).await,
        }
    }

    /// The probe kind.
    pub fn kind(&self) -> Kind {
        match self {
            Prober::Icmp(_) => Kind::Icmp,
            Prober::Tcp(_) => Kind::Tcp,
            Prober::Http(_) => Kind::Http,
            Prober::Dns(_) => Kind::Dns,
            Prober::Exec(_) => Kind::Exec,
            Prober::Grpc(_) => Kind::Grpc,
        }
    }

    /// A short description of the target for display (`icmp://198.51.100.1`, `http://…`).
    pub fn target(&self) -> String {
        match self {
            Prober::Icmp(p) => p.target(),
            Prober::Tcp(p) => p.target(),
            Prober::Http(p) => p.target(),
            Prober::Dns(p) => p.target(),
            Prober::Exec(p) => p.target(),
            Prober::Grpc(p) => p.target(),
        }
    }
}
