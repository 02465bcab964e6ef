//! gRPC prober: the standard health check `grpc.health.v1.Health/Check`, as the kubelet's `grpc` probe
//! calls it (KEP-2727; `pkg/probe/grpc/grpc.go`).
//!
//! Semantics: success only when the answer is `SERVING`. Like the kubelet the default transport is
//! plaintext HTTP/2 (h2c with prior knowledge); `tls: true` verifies the server against the Mozilla
//! roots of `webpki-roots` and offers ALPN `h2`. The request carries `grpc-timeout` set to the time
//! left, so a well-behaved server gives up when the probe does.
//!
//! Phases: `resolve` (the host name, through the C library resolver), `connect` (the TCP handshake,
//! made by the prober itself), `tls` (only with `tls: true`), `call` (HTTP/2 connection setup plus
//! the Check round trip). blackbox_exporter's `probe_grpc_duration_seconds` phases are the same.
//!
//! Outcomes: success; `grpc-not-serving` (`NOT_SERVING`, `UNKNOWN`, `SERVICE_UNKNOWN` — the gRPC
//! `NOT_FOUND` status a server returns for an unregistered service — `UNIMPLEMENTED` when the server
//! has no health service, or any other status the server returned); `timeout`; `dns-error`;
//! `connection-refused` and other socket errors by errno; `tls-error`; `protocol-error` (the peer
//! does not speak HTTP/2).

mod conn;

use std::error::Error as StdError;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::Uri;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};
use tokio_util::either::Either;
use tonic::Code;
use tonic::transport::Endpoint;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

use crate::{ConfigError, Details, GrpcDetails, Outcome, Phase, PhaseTiming, Reason};

/// Configuration of a gRPC health probe (the `grpc:` key of a check).
///
/// ```yaml
/// grpc:
///   address: 192.0.2.10:50051
///   service: my.package.MyService   # default "": the server as a whole
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcConfig {
    /// `host:port` to dial. The host is a name, an IPv4 address or a bracketed IPv6 address
    /// (`[2001:db8::1]:50051`).
    pub address: String,
    /// The service whose health is asked (`HealthCheckRequest.service`); default `""`, which by the
    /// gRPC health-checking protocol means the server as a whole.
    #[serde(default)]
    pub service: String,
    /// Use TLS (verified against the public web PKI roots); default `false`, plaintext HTTP/2 as the
    /// kubelet's grpc probe.
    #[serde(default)]
    pub tls: bool,
    /// The `:authority` (and, with TLS, the SNI name and the name the certificate must match);
    /// default the `address` as written.
    #[serde(default)]
    pub authority: Option<String>,
}

/// A validated gRPC health prober.
#[derive(Debug)]
pub struct GrpcProber {
    cfg: GrpcConfig,
    host: String,
    port: u16,
    /// Boxed: tonic's `Endpoint` is ~600 bytes and would make every `Prober` that large.
    endpoint: Box<Endpoint>,
    tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
}

impl GrpcProber {
    /// Validates `cfg`.
    ///
    /// Errors: `address` is not `host:port` (IPv6 in brackets); `authority` is not a valid URI
    /// authority or, with TLS, not a valid server name.
    pub fn new(cfg: GrpcConfig) -> Result<Self, ConfigError> {
        let (host, port) = split_host_port(&cfg.address)?;
        let authority = cfg
            .authority
            .clone()
            .unwrap_or_else(|| cfg.address.trim().to_owned());
        let scheme = if cfg.tls { "https" } else { "http" };
        let origin: Uri = format!("{scheme}://{authority}")
            .parse()
            .map_err(|e| ConfigError(format!("grpc authority {authority:?} is not valid: {e}")))?;
        // The endpoint's own URI is never dialled (the connector ignores it); the origin gives every
        // request its :scheme and :authority.
        let endpoint = Endpoint::from(origin.clone())
            .origin(origin.clone())
            .user_agent(concat!("netprobe/", env!("CARGO_PKG_VERSION")))
            .map_err(|e| ConfigError(format!("grpc user agent: {e}")))?;
        let tls = if cfg.tls {
            let name = origin
                .host()
                .unwrap_or(&host)
                .trim_start_matches('[')
                .trim_end_matches(']');
            let server_name = ServerName::try_from(name.to_owned()).map_err(|e| {
                ConfigError(format!("grpc TLS server name {name:?} is not valid: {e}"))
            })?;
            let config = conn::tls_config()
                .map_err(|e| ConfigError(format!("grpc TLS configuration: {e}")))?;
            Some((config, server_name))
        } else {
            None
        };
        Ok(GrpcProber {
            cfg,
            host,
            port,
            endpoint: Box::new(endpoint),
            tls,
        })
    }

    /// `grpc://address/service` (`grpcs://` with TLS), e.g. `grpc://192.0.2.10:50051/` for the
    /// whole server.
    pub fn target(&self) -> String {
        let scheme = if self.cfg.tls { "grpcs" } else { "grpc" };
        format!(
            "{scheme}://{}/{}",
            self.cfg.address.trim(),
            self.cfg.service
        )
    }

    /// Runs one health check bounded by `timeout`. See the module documentation for the outcomes.
    pub async fn probe(&self, timeout: Duration) -> Outcome {
        let start = Instant::now();
        let deadline = start + timeout;
        let mut run = Run {
            start,
            timeout,
            phases: Vec::new(),
            details: GrpcDetails {
                service: self.cfg.service.clone(),
                ..GrpcDetails::default()
            },
        };

        let t = Instant::now();
        let ip = match timeout_at(deadline, crate::resolve::resolve(&self.host, None)).await {
            Ok(Ok(ip)) => ip,
            Ok(Err(message)) => return run.fail(Reason::DnsError, message),
            Err(_) => {
                return run.fail(
                    Reason::Timeout,
                    format!("resolving {:?} took longer than the timeout", self.host),
                );
            }
        };
        run.phase(Phase::Resolve, t);
        let peer = SocketAddr::new(ip, self.port);
        run.details.peer = Some(peer);

        let t = Instant::now();
        let tcp = match timeout_at(deadline, TcpStream::connect(peer)).await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(e)) => {
                return run.fail(
                    Reason::from_io_error(&e),
                    format!("connect to {peer} failed: {e}"),
                );
            }
            Err(_) => {
                return run.fail(
                    Reason::Timeout,
                    format!("no TCP connection to {peer} within the timeout"),
                );
            }
        };
        run.phase(Phase::Connect, t);
        // Small frames (SETTINGS, the request) must not wait for Nagle's algorithm.
        let _ = tcp.set_nodelay(true);

        let stream = match &self.tls {
            None => Either::Left(tcp),
            Some((config, name)) => {
                let t = Instant::now();
                match timeout_at(
                    deadline,
                    conn::tls_handshake(config.clone(), name.clone(), tcp),
                )
                .await
                {
                    Ok(Ok(tls)) => {
                        run.phase(Phase::Tls, t);
                        Either::Right(tls)
                    }
                    Ok(Err(e)) => {
                        let reason = match Reason::from_io_error(&e) {
                            Reason::Error | Reason::ProtocolError => Reason::TlsError,
                            other => other,
                        };
                        return run.fail(reason, format!("TLS handshake with {peer} failed: {e}"));
                    }
                    Err(_) => {
                        return run.fail(
                            Reason::Timeout,
                            format!("TLS handshake with {peer} timed out"),
                        );
                    }
                }
            }
        };

        let t = Instant::now();
        let left = deadline.saturating_duration_since(Instant::now());
        let called = timeout_at(deadline, self.check(stream, left)).await;
        // The call phase counts only when the server answered (a response or a gRPC status), as
        // every phase is recorded only once it has completed.
        let answered = matches!(&called, Ok(Ok(_)))
            || matches!(&called, Ok(Err(CallError::Status(s))) if s.source().is_none());
        if answered {
            run.phase(Phase::Call, t);
        }
        match called {
            Err(elapsed) => {
                let message = run.transport_failure(Reason::Timeout, &elapsed);
                run.fail(Reason::Timeout, message)
            }
            Ok(Err(CallError::Connect(e))) => {
                let reason = classify_chain(&e);
                let message = run.transport_failure(reason, &e);
                run.fail(reason, message)
            }
            Ok(Err(CallError::Status(status))) => run.status(&status, &self.cfg.service),
            Ok(Ok(answer)) => run.answer(answer.status, &self.cfg.service),
        }
    }

    async fn check(
        &self,
        stream: conn::Stream,
        left: Duration,
    ) -> Result<HealthCheckResponse, CallError> {
        let channel = self
            .endpoint
            .connect_with_connector(conn::OneShot::new(stream))
            .await
            .map_err(CallError::Connect)?;
        let mut client = HealthClient::new(channel);
        let mut request = tonic::Request::new(HealthCheckRequest {
            service: self.cfg.service.clone(),
        });
        request.set_timeout(left);
        client
            .check(request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(CallError::Status)
    }
}

/// Why the Check call produced no response message.
#[derive(Debug, thiserror::Error)]
enum CallError {
    /// The HTTP/2 connection could not be set up over the stream.
    #[error("connect: {0}")]
    Connect(tonic::transport::Error),
    /// The call ended with a gRPC status: from the server, or synthesised by tonic from a transport
    /// error (then it has a `source`).
    #[error("status: {0}")]
    Status(tonic::Status),
}

/// The outcome being assembled.
struct Run {
    start: Instant,
    timeout: Duration,
    phases: Vec<PhaseTiming>,
    details: GrpcDetails,
}

impl Run {
    fn phase(&mut self, phase: Phase, since: Instant) {
        self.phases.push(PhaseTiming {
            phase,
            duration: since.elapsed(),
        });
    }

    fn fail(self, reason: Reason, message: String) -> Outcome {
        Outcome::fail(
            reason,
            message,
            self.start.elapsed(),
            self.phases,
            Details::Grpc(self.details),
        )
    }

    /// The message for a call that failed below gRPC (`reason` from [`classify_chain`]).
    fn transport_failure(&self, reason: Reason, err: &(dyn StdError + 'static)) -> String {
        let peer = self.details.peer.map(|p| p.to_string()).unwrap_or_default();
        match reason {
            Reason::Timeout => {
                format!(
                    "no Health/Check answer from {peer} within {}",
                    humantime::format_duration(self.timeout)
                )
            }
            Reason::ProtocolError => format!(
                "{peer} does not speak gRPC over HTTP/2 (an HTTP/1.1-only server or proxy?): {}",
                chain_text(err)
            ),
            _ => format!("Health/Check to {peer} failed: {}", chain_text(err)),
        }
    }

    /// A Check response: only `SERVING` is healthy.
    fn answer(mut self, raw: i32, service: &str) -> Outcome {
        self.details.connected = true;
        self.details.grpc_code = Some(Code::Ok as i32);
        let name = match ServingStatus::try_from(raw) {
            Ok(status) => status.as_str_name().to_owned(),
            Err(_) => format!("UNKNOWN({raw})"),
        };
        self.details.status = Some(name.clone());
        if raw == ServingStatus::Serving as i32 {
            let (elapsed, phases) = (self.start.elapsed(), self.phases);
            return Outcome::ok(
                format!("{} is SERVING", service_text(service)),
                elapsed,
                phases,
                Details::Grpc(self.details),
            );
        }
        self.fail(
            Reason::GrpcNotServing,
            format!("{} is {name}", service_text(service)),
        )
    }

    /// A call that ended with a gRPC status instead of a response.
    fn status(mut self, status: &tonic::Status, service: &str) -> Outcome {
        if let Some(source) = status.source() {
            // tonic turned a transport failure into a status: classify the failure itself.
            let reason = classify_chain(source);
            let message = self.transport_failure(reason, source);
            return self.fail(reason, message);
        }
        self.details.connected = true;
        self.details.grpc_code = Some(status.code() as i32);
        let said = if status.message().is_empty() {
            String::new()
        } else {
            format!(": {}", status.message())
        };
        match status.code() {
            Code::NotFound => {
                self.details.status = Some(ServingStatus::ServiceUnknown.as_str_name().to_owned());
                let message = format!(
                    "{} is SERVICE_UNKNOWN (NOT_FOUND{said})",
                    service_text(service)
                );
                self.fail(Reason::GrpcNotServing, message)
            }
            Code::Unimplemented => {
                let message = "the server does not implement the health service grpc.health.v1.Health \
                               (UNIMPLEMENTED); register it (e.g. tonic_health, grpc-go's health package)";
                self.fail(Reason::GrpcNotServing, message.to_owned())
            }
            Code::DeadlineExceeded => {
                let message = format!(
                    "the server gave up on Health/Check within the {} deadline (DEADLINE_EXCEEDED{said})",
                    humantime::format_duration(self.timeout)
                );
                self.fail(Reason::Timeout, message)
            }
            code => {
                let message = format!(
                    "Health/Check answered gRPC status {code:?} ({}){said}",
                    code as i32
                );
                self.fail(Reason::GrpcNotServing, message)
            }
        }
    }
}

fn service_text(service: &str) -> String {
    if service.is_empty() {
        "the server (service \"\")".to_owned()
    } else {
        format!("service {service:?}")
    }
}

/// Classifies a transport error by the first `io::Error` in its source chain; an HTTP/2 error
/// without one means the peer broke the protocol (typically: it does not speak HTTP/2).
fn classify_chain(err: &(dyn StdError + 'static)) -> Reason {
    let mut current = Some(err);
    let mut saw_h2 = false;
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return Reason::from_io_error(io);
        }
        // tonic enforces the request's `grpc-timeout` on the client side too.
        if e.downcast_ref::<tonic::TimeoutExpired>().is_some() {
            return Reason::Timeout;
        }
        saw_h2 |= e.downcast_ref::<h2::Error>().is_some();
        current = e.source();
    }
    if saw_h2 {
        Reason::ProtocolError
    } else {
        Reason::Error
    }
}

/// The error and its sources joined with `: `, skipping repeats (tonic and hyper wrap each other).
fn chain_text(err: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current = Some(err);
    while let Some(e) = current {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = e.source();
    }
    parts.join(": ")
}

/// Splits `host:port`; IPv6 hosts must be bracketed. The host is returned without brackets.
fn split_host_port(address: &str) -> Result<(String, u16), ConfigError> {
    let address = address.trim();
    let bad = || {
        ConfigError(format!(
            "grpc address {address:?} is not host:port; expected e.g. 192.0.2.10:50051, svc.example:443 or \
             [2001:db8::1]:50051"
        ))
    };
    let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let host = match host.strip_prefix('[') {
        Some(inner) => inner.strip_suffix(']').ok_or_else(bad)?,
        None if host.contains(':') => return Err(bad()),
        None => host,
    };
    if host.is_empty() || port == 0 {
        return Err(bad());
    }
    Ok((host.to_owned(), port))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn address_forms() {
        assert_eq!(
            split_host_port("192.0.2.10:50051").unwrap(),
            ("192.0.2.10".to_owned(), 50051)
        );
        assert_eq!(
            split_host_port("svc.example:443").unwrap(),
            ("svc.example".to_owned(), 443)
        );
        assert_eq!(
            split_host_port("[2001:db8::1]:50051").unwrap(),
            ("2001:db8::1".to_owned(), 50051)
        );
        for bad in [
            "2001:db8::1:50051",
            "host",
            "host:",
            ":80",
            "host:0",
            "host:99999",
            "[::1:80",
        ] {
            assert!(split_host_port(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn config_defaults_target_and_validation() {
        let cfg: GrpcConfig = serde_json::from_str(r#"{"address": "192.0.2.10:50051"}"#).unwrap();
        assert_eq!(
            cfg,
            GrpcConfig {
                address: "192.0.2.10:50051".to_owned(),
                ..GrpcConfig::default()
            }
        );
        assert_eq!(
            GrpcProber::new(cfg).unwrap().target(),
            "grpc://192.0.2.10:50051/"
        );
        let tls = GrpcConfig {
            address: "192.0.2.10:443".to_owned(),
            service: "pkg.Svc".to_owned(),
            tls: true,
            authority: Some("api.example.com".to_owned()),
        };
        let p = GrpcProber::new(tls).unwrap();
        assert_eq!(p.target(), "grpcs://192.0.2.10:443/pkg.Svc");
        assert_eq!(
            p.tls.as_ref().unwrap().1,
            ServerName::try_from("api.example.com").unwrap()
        );
        assert!(
            serde_json::from_str::<GrpcConfig>(r#"{"address": "a:1", "insecure": true}"#).is_err()
        );
        let bad_authority = GrpcConfig {
            authority: Some("a b".to_owned()),
            ..GrpcConfig::default()
        };
        assert!(
            GrpcProber::new(GrpcConfig {
                address: "a:1".to_owned(),
                ..bad_authority
            })
            .is_err()
        );
    }
}
