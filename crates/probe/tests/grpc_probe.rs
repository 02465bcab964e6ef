//! gRPC health prober against real servers on loopback: tonic-health's `grpc.health.v1.Health`, a
//! server without the health service, a closed port, a TCP listener that never speaks HTTP/2, an
//! HTTP/1.1 server, and TLS failures.
#![allow(clippy::unwrap_used)]

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use probe::grpc::{GrpcConfig, GrpcProber};
use probe::{Details, GrpcDetails, Outcome, Phase, Reason};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::service::Routes;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// A server task aborted when dropped.
struct Task(JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn health_server(bind: SocketAddr) -> (SocketAddr, HealthReporter, Task) {
    let listener = TcpListener::bind(bind).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (reporter, service) = tonic_health::server::health_reporter();
    let task = tokio::spawn(async move {
        Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpIncoming::from(listener))
            .await
            .unwrap();
    });
    (addr, reporter, Task(task))
}

/// A gRPC server with no services at all: every method is UNIMPLEMENTED.
async fn empty_server() -> (SocketAddr, Task) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        Server::builder()
            .add_routes(Routes::default())
            .serve_with_incoming(TcpIncoming::from(listener))
            .await
            .unwrap();
    });
    (addr, Task(task))
}

/// Accepts connections and keeps them open without ever reading or writing.
async fn silent_listener() -> (SocketAddr, Task) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    (addr, Task(task))
}

/// Answers the HTTP/2 preface with an HTTP/1.1 400 and closes the way nginx does (`lingering_close`:
/// shut down the write side, read until the client is done), so the client reads the reply rather
/// than a reset.
async fn http1_server() -> (SocketAddr, Task) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut preface = [0u8; 24];
                let _ = stream.read_exact(&mut preface).await;
                let reply =
                    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
                let _ = stream.write_all(reply).await;
                let _ = stream.shutdown().await;
                let mut sink = [0u8; 1024];
                let linger = tokio::time::Instant::now() + Duration::from_secs(5);
                while let Ok(Ok(n)) = tokio::time::timeout_at(linger, stream.read(&mut sink)).await
                {
                    if n == 0 {
                        break;
                    }
                }
            });
        }
    });
    (addr, Task(task))
}

/// A TLS server with a self-signed certificate for `localhost` (not in the web PKI).
async fn self_signed_tls_server() -> (SocketAddr, Task) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = acceptor.accept(stream).await;
        }
    });
    (addr, Task(task))
}

fn prober(address: &str, service: &str) -> GrpcProber {
    GrpcProber::new(GrpcConfig {
        address: address.to_owned(),
        service: service.to_owned(),
        ..GrpcConfig::default()
    })
    .unwrap()
}

fn grpc(outcome: &Outcome) -> &GrpcDetails {
    match &outcome.details {
        Details::Grpc(d) => d,
        other => panic!("expected grpc details, got {other:?}"),
    }
}

fn phase_names(outcome: &Outcome) -> Vec<Phase> {
    outcome.phases.iter().map(|p| p.phase).collect()
}

const T: Duration = Duration::from_secs(5);

#[tokio::test]
async fn serving_is_success() {
    let (addr, _reporter, _server) = health_server((Ipv4Addr::LOCALHOST, 0).into()).await;
    let out = prober(&addr.to_string(), "").probe(T).await;
    assert!(out.success, "{out:?}");
    assert_eq!(out.reason, None);
    let d = grpc(&out);
    assert_eq!(d.status.as_deref(), Some("SERVING"));
    assert_eq!(d.grpc_code, Some(0));
    assert!(d.connected);
    assert_eq!(d.peer, Some(addr));
    assert_eq!(d.service, "");
    assert_eq!(
        phase_names(&out),
        vec![Phase::Resolve, Phase::Connect, Phase::Call]
    );
    let sum: Duration = out.phases.iter().map(|p| p.duration).sum();
    assert!(sum <= out.duration);
}

#[tokio::test]
async fn host_name_is_resolved() {
    // Dual-stack wildcard on loopback's port: `localhost` may resolve to 127.0.0.1 or ::1.
    let (addr, _reporter, _server) = health_server((Ipv6Addr::UNSPECIFIED, 0).into()).await;
    let out = prober(&format!("localhost:{}", addr.port()), "")
        .probe(T)
        .await;
    assert!(out.success, "{out:?}");
    assert!(grpc(&out).peer.unwrap().ip().is_loopback());
    assert!(out.phase(Phase::Resolve).is_some());
}

#[tokio::test]
async fn not_serving_is_grpc_not_serving() {
    let (addr, reporter, _server) = health_server((Ipv4Addr::LOCALHOST, 0).into()).await;
    reporter
        .set_service_status("", ServingStatus::NotServing)
        .await;
    let out = prober(&addr.to_string(), "").probe(T).await;
    assert!(!out.success);
    assert_eq!(out.reason, Some(Reason::GrpcNotServing));
    assert_eq!(grpc(&out).status.as_deref(), Some("NOT_SERVING"));
    assert_eq!(grpc(&out).grpc_code, Some(0));
    assert_eq!(
        phase_names(&out),
        vec![Phase::Resolve, Phase::Connect, Phase::Call]
    );
    assert!(grpc(&out).connected);
    assert!(out.message.contains("NOT_SERVING"), "{}", out.message);
}

#[tokio::test]
async fn named_service_status_is_checked() {
    let (addr, reporter, _server) = health_server((Ipv4Addr::LOCALHOST, 0).into()).await;
    reporter
        .set_service_status("pkg.Orders", ServingStatus::Serving)
        .await;
    reporter
        .set_service_status("pkg.Billing", ServingStatus::NotServing)
        .await;
    let out = prober(&addr.to_string(), "pkg.Orders").probe(T).await;
    assert!(out.success, "{out:?}");
    assert_eq!(grpc(&out).service, "pkg.Orders");
    let out = prober(&addr.to_string(), "pkg.Billing").probe(T).await;
    assert_eq!(out.reason, Some(Reason::GrpcNotServing));
    assert_eq!(grpc(&out).status.as_deref(), Some("NOT_SERVING"));
}

#[tokio::test]
async fn unknown_service_is_service_unknown() {
    let (addr, _reporter, _server) = health_server((Ipv4Addr::LOCALHOST, 0).into()).await;
    let out = prober(&addr.to_string(), "pkg.Nope").probe(T).await;
    assert!(!out.success);
    assert_eq!(out.reason, Some(Reason::GrpcNotServing), "{out:?}");
    assert_eq!(grpc(&out).status.as_deref(), Some("SERVICE_UNKNOWN"));
    assert_eq!(grpc(&out).grpc_code, Some(5), "NOT_FOUND");
    assert!(
        out.message.contains("SERVICE_UNKNOWN") && out.message.contains("pkg.Nope"),
        "{}",
        out.message
    );
}

#[tokio::test]
async fn server_without_health_service_is_unimplemented() {
    let (addr, _server) = empty_server().await;
    let out = prober(&addr.to_string(), "").probe(T).await;
    assert_eq!(out.reason, Some(Reason::GrpcNotServing), "{out:?}");
    assert_eq!(grpc(&out).grpc_code, Some(12), "UNIMPLEMENTED");
    assert_eq!(grpc(&out).status, None);
    assert!(
        out.message
            .contains("does not implement the health service"),
        "{}",
        out.message
    );
}

#[tokio::test]
async fn closed_port_is_connection_refused() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = prober(&format!("127.0.0.1:{port}"), "").probe(T).await;
    assert_eq!(out.reason, Some(Reason::ConnectionRefused), "{out:?}");
    assert!(!grpc(&out).connected);
    assert_eq!(
        phase_names(&out),
        vec![Phase::Resolve],
        "connect did not complete"
    );
}

#[tokio::test]
async fn listener_that_never_speaks_http2_times_out() {
    let (addr, _server) = silent_listener().await;
    let timeout = Duration::from_millis(500);
    let out = prober(&addr.to_string(), "").probe(timeout).await;
    assert_eq!(out.reason, Some(Reason::Timeout), "{out:?}");
    assert!(
        out.duration >= timeout && out.duration < timeout * 4,
        "{:?}",
        out.duration
    );
    let d = grpc(&out);
    assert_eq!(
        out.message,
        format!("no Health/Check answer from {addr} within 500ms")
    );
    assert!(
        !d.connected,
        "TCP connected but no HTTP/2 exchange happened"
    );
    assert_eq!(d.status, None);
    assert_eq!(phase_names(&out), vec![Phase::Resolve, Phase::Connect]);
}

#[tokio::test]
async fn http1_server_is_protocol_error() {
    let (addr, _server) = http1_server().await;
    let out = prober(&addr.to_string(), "").probe(T).await;
    assert_eq!(out.reason, Some(Reason::ProtocolError), "{out:?}");
    assert!(
        out.message.contains("does not speak gRPC over HTTP/2"),
        "{}",
        out.message
    );
    assert!(!grpc(&out).connected);
    assert_eq!(phase_names(&out), vec![Phase::Resolve, Phase::Connect]);
}

#[tokio::test]
async fn tls_to_a_plaintext_server_is_tls_error() {
    let (addr, _reporter, _server) = health_server((Ipv4Addr::LOCALHOST, 0).into()).await;
    let cfg = GrpcConfig {
        address: addr.to_string(),
        tls: true,
        ..GrpcConfig::default()
    };
    let out = GrpcProber::new(cfg).unwrap().probe(T).await;
    assert_eq!(out.reason, Some(Reason::TlsError), "{out:?}");
    assert_eq!(phase_names(&out), vec![Phase::Resolve, Phase::Connect]);
}

#[tokio::test]
async fn tls_with_an_untrusted_certificate_is_tls_error() {
    let (addr, _server) = self_signed_tls_server().await;
    let cfg = GrpcConfig {
        address: addr.to_string(),
        tls: true,
        authority: Some(format!("localhost:{}", addr.port())),
        ..GrpcConfig::default()
    };
    let out = GrpcProber::new(cfg).unwrap().probe(T).await;
    assert_eq!(out.reason, Some(Reason::TlsError), "{out:?}");
    assert!(out.message.contains("certificate"), "{}", out.message);
}
