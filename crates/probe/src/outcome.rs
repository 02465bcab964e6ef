//! The result of one probe: success, a `reason` from a fixed set, timings and kind-specific details.
//!
//! Every prober returns exactly one [`Outcome`]; none of them panics or returns an error instead of an
//! outcome. Durations are [`Duration`]s in memory and seconds (`f64`) when serialised, as Prometheus and
//! blackbox_exporter report them.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Why a probe failed. The kebab-case string of each variant ([`Reason::as_str`]) is what users see in
/// the API, the `reason` metric label and logs; the set is closed so label cardinality stays bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// No answer within the probe's timeout (includes a SYN dropped by a firewall).
    Timeout,
    /// The peer answered with a TCP RST or ICMP port-unreachable (`ECONNREFUSED`).
    ConnectionRefused,
    /// The connection was reset after it was established (`ECONNRESET`, `EPIPE`).
    ConnectionReset,
    /// No route to the host, or an ICMP host/admin-prohibited unreachable came back (`EHOSTUNREACH`).
    HostUnreachable,
    /// No route to the network (`ENETUNREACH`, `EADDRNOTAVAIL` for an unusable source).
    NetworkUnreachable,
    /// Name resolution failed, or a DNS probe got no usable answer.
    DnsError,
    /// The TLS handshake or certificate verification failed.
    TlsError,
    /// An HTTP status outside the success range (200–399 by default, as the kubelet's httpGet).
    HttpStatus,
    /// The probe completed but a configured condition did not hold.
    ConditionFailed,
    /// The operating system refused the operation (`EACCES`/`EPERM`), e.g. ICMP sockets.
    PermissionDenied,
    /// An exec probe's command exited non-zero or was killed by a signal.
    ExecExitCode,
    /// An exec probe's command could not be started (missing binary, not executable).
    ExecError,
    /// A TCP probe's `expect` text did not arrive.
    ExpectMismatch,
    /// A gRPC health check answered anything but SERVING (or the service is unknown).
    GrpcNotServing,
    /// The peer sent something that is not valid for the protocol (garbage reply).
    ProtocolError,
    /// Anything else; the outcome's message says what.
    Error,
}

impl Reason {
    /// All reasons, in declaration order (used to pre-register metric label values).
    pub const ALL: [Reason; 16] = [
        Reason::Timeout,
        Reason::ConnectionRefused,
        Reason::ConnectionReset,
        Reason::HostUnreachable,
        Reason::NetworkUnreachable,
        Reason::DnsError,
        Reason::TlsError,
        Reason::HttpStatus,
        Reason::ConditionFailed,
        Reason::PermissionDenied,
        Reason::ExecExitCode,
        Reason::ExecError,
        Reason::ExpectMismatch,
        Reason::GrpcNotServing,
        Reason::ProtocolError,
        Reason::Error,
    ];

    /// The stable kebab-case name, e.g. `connection-refused`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Timeout => "timeout",
            Reason::ConnectionRefused => "connection-refused",
            Reason::ConnectionReset => "connection-reset",
            Reason::HostUnreachable => "host-unreachable",
            Reason::NetworkUnreachable => "network-unreachable",
            Reason::DnsError => "dns-error",
            Reason::TlsError => "tls-error",
            Reason::HttpStatus => "http-status",
            Reason::ConditionFailed => "condition-failed",
            Reason::PermissionDenied => "permission-denied",
            Reason::ExecExitCode => "exec-exit-code",
            Reason::ExecError => "exec-error",
            Reason::ExpectMismatch => "expect-mismatch",
            Reason::GrpcNotServing => "grpc-not-serving",
            Reason::ProtocolError => "protocol-error",
            Reason::Error => "error",
        }
    }

    /// Classifies a socket error by its errno (see `errno(3)`); unknown errors map to [`Reason::Error`].
    pub fn from_io_error(err: &io::Error) -> Reason {
        if err.kind() == io::ErrorKind::TimedOut {
            return Reason::Timeout;
        }
        match err.raw_os_error() {
            Some(libc::ECONNREFUSED) => Reason::ConnectionRefused,
            Some(libc::ECONNRESET) | Some(libc::EPIPE) | Some(libc::ECONNABORTED) => {
                Reason::ConnectionReset
            }
            Some(libc::EHOSTUNREACH) | Some(libc::EHOSTDOWN) => Reason::HostUnreachable,
            Some(libc::ENETUNREACH) | Some(libc::ENETDOWN) | Some(libc::EADDRNOTAVAIL) => {
                Reason::NetworkUnreachable
            }
            Some(libc::ETIMEDOUT) => Reason::Timeout,
            Some(libc::EACCES) | Some(libc::EPERM) => Reason::PermissionDenied,
            _ => match err.kind() {
                io::ErrorKind::ConnectionRefused => Reason::ConnectionRefused,
                io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => {
                    Reason::ConnectionReset
                }
                io::ErrorKind::PermissionDenied => Reason::PermissionDenied,
                io::ErrorKind::UnexpectedEof | io::ErrorKind::InvalidData => Reason::ProtocolError,
                _ => Reason::Error,
            },
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A named phase of a probe. HTTP phases follow blackbox_exporter's `probe_http_duration_seconds{phase}`
/// (`resolve`, `connect`, `tls`, `processing` = until the first response byte, `transfer`); ICMP phases
/// follow `probe_icmp_duration_seconds{phase}` (`resolve`, `setup`, `rtt`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Name resolution.
    Resolve,
    /// Socket setup (ICMP).
    Setup,
    /// TCP three-way handshake.
    Connect,
    /// TLS handshake.
    Tls,
    /// Request sent until the first response byte.
    Processing,
    /// First response byte until the body is read (or the cap is hit).
    Transfer,
    /// Round-trip time (ICMP: the average over replies received).
    Rtt,
    /// A DNS query's round trip.
    Query,
    /// A TCP probe's send/expect exchange.
    Exchange,
    /// An exec probe's command run time.
    Exec,
    /// A gRPC health Check call.
    Call,
}

impl Phase {
    /// The stable lowercase name used as the `phase` metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Resolve => "resolve",
            Phase::Setup => "setup",
            Phase::Connect => "connect",
            Phase::Tls => "tls",
            Phase::Processing => "processing",
            Phase::Transfer => "transfer",
            Phase::Rtt => "rtt",
            Phase::Query => "query",
            Phase::Exchange => "exchange",
            Phase::Exec => "exec",
            Phase::Call => "call",
        }
    }
}

/// How long one phase took.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PhaseTiming {
    /// Which phase.
    pub phase: Phase,
    /// Its duration (serialised as seconds).
    #[serde(with = "crate::duration::seconds")]
    pub duration: Duration,
}

/// The result of one probe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// Whether the probe succeeded by its kind's default rule (before any conditions are applied).
    pub success: bool,
    /// Why it failed; `None` on success.
    pub reason: Option<Reason>,
    /// One human-readable line: what happened, with the fix where one is known. Never contains response bodies.
    pub message: String,
    /// Wall time of the whole probe (serialised as seconds).
    #[serde(with = "crate::duration::seconds")]
    pub duration: Duration,
    /// Phase timings in the order they happened; phases not reached are absent.
    pub phases: Vec<PhaseTiming>,
    /// What the probe learned, by kind.
    pub details: Details,
}

impl Outcome {
    /// A successful outcome.
    pub fn ok(
        message: impl Into<String>,
        duration: Duration,
        phases: Vec<PhaseTiming>,
        details: Details,
    ) -> Self {
        Outcome {
            success: true,
            reason: None,
            message: message.into(),
            duration,
            phases,
            details,
        }
    }

    /// A failed outcome with its reason.
    pub fn fail(
        reason: Reason,
        message: impl Into<String>,
        duration: Duration,
        phases: Vec<PhaseTiming>,
        details: Details,
    ) -> Self {
        Outcome {
            success: false,
            reason: Some(reason),
            message: message.into(),
            duration,
            phases,
            details,
        }
    }

    /// The duration of `phase`, if it was reached.
    pub fn phase(&self, phase: Phase) -> Option<Duration> {
        self.phases
            .iter()
            .find(|p| p.phase == phase)
            .map(|p| p.duration)
    }

    /// `[STATUS]`: the HTTP status code, or an exec probe's exit code.
    pub fn status(&self) -> Option<i64> {
        match &self.details {
            Details::Http(h) => h.status.map(i64::from),
            Details::Exec(e) => e.exit_code.map(i64::from),
            _ => None,
        }
    }

    /// `[BODY]`: the (capped) HTTP body, the bytes a TCP probe received, or an exec probe's output.
    pub fn body(&self) -> Option<&[u8]> {
        match &self.details {
            Details::Http(h) => Some(&h.body),
            Details::Tcp(t) => t.received.as_deref().map(str::as_bytes),
            Details::Exec(e) => Some(e.output.as_bytes()),
            _ => None,
        }
    }

    /// `[CONNECTED]`: whether the target answered at the transport level.
    pub fn connected(&self) -> bool {
        match &self.details {
            Details::None => false,
            Details::Icmp(i) => i.received > 0,
            Details::Tcp(t) => t.connected,
            Details::Http(h) => h.connected,
            Details::Dns(d) => d.rcode.is_some(),
            Details::Exec(e) => e.exit_code.is_some(),
            Details::Grpc(g) => g.connected,
        }
    }

    /// `[CERTIFICATE_EXPIRATION]` source: the earliest `notAfter` of the peer's chain (HTTPS, or TCP with
    /// `tls`), Unix seconds.
    pub fn certificate_not_after(&self) -> Option<i64> {
        match &self.details {
            Details::Http(h) => h.tls.as_ref().map(|t| t.earliest_not_after),
            Details::Tcp(t) => t.tls.as_ref().map(|t| t.earliest_not_after),
            _ => None,
        }
    }

    /// `[DNS_RCODE]`: the response code name (`NOERROR`, `NXDOMAIN`, `SERVFAIL`, …).
    pub fn dns_rcode(&self) -> Option<&str> {
        match &self.details {
            Details::Dns(d) => d.rcode.as_deref(),
            _ => None,
        }
    }

    /// `[IP]`: the address the probe actually talked to.
    pub fn ip(&self) -> Option<IpAddr> {
        match &self.details {
            Details::Icmp(i) => i.address,
            Details::Tcp(t) => t.peer.map(|p| p.ip()),
            Details::Http(h) => h.peer.map(|p| p.ip()),
            Details::Dns(d) => d.server.map(|s| s.ip()),
            Details::Grpc(g) => g.peer.map(|p| p.ip()),
            Details::Exec(_) | Details::None => None,
        }
    }
}

/// Kind-specific details of an outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Details {
    /// Nothing known (e.g. the probe could not start).
    None,
    /// ICMP echo statistics.
    Icmp(IcmpDetails),
    /// TCP connect (and send/expect).
    Tcp(TcpDetails),
    /// HTTP(S) exchange.
    Http(HttpDetails),
    /// DNS query.
    Dns(DnsDetails),
    /// Exec command.
    Exec(ExecDetails),
    /// gRPC health check.
    Grpc(GrpcDetails),
}

/// How the ICMP engine sends echoes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IcmpSocketMode {
    /// `SOCK_DGRAM`/`IPPROTO_ICMP` ("ping socket"), allowed by `net.ipv4.ping_group_range`.
    Datagram,
    /// `SOCK_RAW`, needs `CAP_NET_RAW`.
    Raw,
}

impl IcmpSocketMode {
    /// `datagram` or `raw` (the `mode` label of `netprobe_icmp_socket_mode`).
    pub fn as_str(self) -> &'static str {
        match self {
            IcmpSocketMode::Datagram => "datagram",
            IcmpSocketMode::Raw => "raw",
        }
    }
}

/// ICMP echo statistics for one probe of `count` echoes. RTTs are seconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IcmpDetails {
    /// The address pinged (after resolution).
    pub address: Option<IpAddr>,
    /// Socket mode used, if a socket could be opened.
    pub mode: Option<IcmpSocketMode>,
    /// Echo requests sent.
    pub sent: u32,
    /// Matching echo replies received in time.
    pub received: u32,
    /// `1 - received/sent` (0.0 when nothing was sent).
    pub loss_ratio: f64,
    /// Minimum RTT, seconds.
    pub rtt_min: Option<f64>,
    /// Mean RTT, seconds.
    pub rtt_avg: Option<f64>,
    /// Maximum RTT, seconds.
    pub rtt_max: Option<f64>,
    /// Population standard deviation of the RTTs, seconds (as ping's `mdev`).
    pub rtt_stddev: Option<f64>,
    /// Per-echo RTT in sequence order, seconds; `None` for a lost echo.
    pub rtts: Vec<Option<f64>>,
    /// Whether every receive time came from the kernel (`SO_TIMESTAMPNS`) rather than user space.
    pub kernel_timestamps: bool,
}

/// TCP connect details.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TcpDetails {
    /// The peer connected to (or attempted).
    pub peer: Option<SocketAddr>,
    /// The local address the kernel chose.
    pub local: Option<SocketAddr>,
    /// Whether the three-way handshake completed.
    pub connected: bool,
    /// What was read after `send` (lossy UTF-8, capped), when `expect`/`send` is configured.
    pub received: Option<String>,
    /// TLS session details when the probe ran a TLS handshake (`tls: true`).
    pub tls: Option<TlsDetails>,
}

/// TLS session details of an HTTPS probe.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TlsDetails {
    /// Negotiated protocol version, e.g. `TLSv1.3`.
    pub version: String,
    /// Negotiated cipher suite.
    pub cipher: String,
    /// The earliest `notAfter` in the peer's certificate chain, Unix seconds
    /// (`probe_ssl_earliest_cert_expiry`).
    pub earliest_not_after: i64,
    /// Subject of the leaf certificate.
    pub subject: String,
}

/// HTTP exchange details.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HttpDetails {
    /// The final URL requested (after redirects).
    pub url: String,
    /// The peer connected to.
    pub peer: Option<SocketAddr>,
    /// Whether a TCP connection was made.
    pub connected: bool,
    /// Response status code.
    pub status: Option<u16>,
    /// `HTTP/1.1`, `HTTP/2`.
    pub version: Option<String>,
    /// Redirects followed.
    pub redirects: u32,
    /// Body bytes read (up to the cap).
    pub body_bytes: u64,
    /// Whether the body was longer than the cap.
    pub body_truncated: bool,
    /// The body read (capped); kept in memory for conditions, never serialised or logged.
    #[serde(skip)]
    pub body: bytes::Bytes,
    /// TLS details for https.
    pub tls: Option<TlsDetails>,
}

/// DNS query details.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DnsDetails {
    /// The server queried.
    pub server: Option<SocketAddr>,
    /// The name queried.
    pub query: String,
    /// The record type queried (`A`, `AAAA`, …).
    pub record_type: String,
    /// Response code name (`NOERROR`, `NXDOMAIN`, …), if a response arrived.
    pub rcode: Option<String>,
    /// Answer records in presentation format.
    pub answers: Vec<String>,
    /// Whether the UDP reply was truncated (TC bit) and the query was repeated over TCP.
    #[serde(default)]
    pub tcp_fallback: bool,
}

/// Exec command details.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExecDetails {
    /// Exit code, if the process exited normally.
    pub exit_code: Option<i32>,
    /// Signal that ended the process, if any.
    pub signal: Option<i32>,
    /// Combined stdout and stderr (lossy UTF-8, capped).
    pub output: String,
    /// Whether the output was longer than the cap.
    pub output_truncated: bool,
    /// Process id of the command, which is also its process group id (it runs as a group leader).
    #[serde(default)]
    pub pid: Option<u32>,
}

/// gRPC health-check details.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GrpcDetails {
    /// The peer dialled.
    pub peer: Option<SocketAddr>,
    /// The service name checked (`""` = the server as a whole).
    pub service: String,
    /// Whether the HTTP/2 connection was established.
    pub connected: bool,
    /// The serving status name (`SERVING`, `NOT_SERVING`, `SERVICE_UNKNOWN`, `UNKNOWN`).
    pub status: Option<String>,
    /// The gRPC status code the server ended the Check call with (0 = OK, 12 = UNIMPLEMENTED, …), as
    /// blackbox_exporter's `probe_grpc_status_code`; `None` when no HTTP/2 exchange completed.
    #[serde(default)]
    pub grpc_code: Option<i32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_names_are_stable_and_match_serde() {
        for r in Reason::ALL {
            let json = serde_json::to_string(&r).unwrap();
            assert_eq!(json, format!("\"{}\"", r.as_str()));
        }
    }

    #[test]
    fn io_errors_classify_by_errno() {
        let e = io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert_eq!(Reason::from_io_error(&e), Reason::ConnectionRefused);
        let e = io::Error::from_raw_os_error(libc::EHOSTUNREACH);
        assert_eq!(Reason::from_io_error(&e), Reason::HostUnreachable);
        let e = io::Error::from_raw_os_error(libc::EPERM);
        assert_eq!(Reason::from_io_error(&e), Reason::PermissionDenied);
    }
}
