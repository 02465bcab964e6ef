//! The transport under a gRPC probe: a TCP connection (and TLS session) made by the prober itself, so
//! each phase is timed on its own, then handed to tonic as a one-shot connector.
//!
//! tonic's `Channel` re-dials through its connector when a connection breaks; this connector yields
//! its stream once and fails afterwards, so a probe never silently retries on a second connection.

use std::future::{Ready, ready};
use std::io;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Uri;
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::either::Either;

/// A connected stream: plaintext TCP (h2c with prior knowledge, as the kubelet's probe) or TLS.
pub(crate) type Stream = Either<TcpStream, TlsStream<TcpStream>>;

/// A client TLS configuration trusting the Mozilla roots of `webpki-roots`, offering ALPN `h2`
/// (gRPC requires HTTP/2; RFC 7540 §3.3). The aws-lc-rs provider is named explicitly: the process
/// default may be unset, or ambiguous when several providers are compiled in.
pub(crate) fn tls_config() -> Result<Arc<ClientConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let roots = rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Runs the TLS handshake over `tcp`, verifying the certificate for `server_name`.
pub(crate) async fn tls_handshake(
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
    tcp: TcpStream,
) -> io::Result<TlsStream<TcpStream>> {
    TlsConnector::from(config).connect(server_name, tcp).await
}

/// A `Service<Uri>` that returns one pre-made connection, then an error.
#[derive(Debug)]
pub(crate) struct OneShot(Option<Stream>);

impl OneShot {
    pub(crate) fn new(stream: Stream) -> Self {
        OneShot(Some(stream))
    }
}

impl tonic::codegen::Service<Uri> for OneShot {
    type Response = TokioIo<Stream>;
    type Error = io::Error;
    type Future = Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        ready(self.0.take().map(TokioIo::new).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotConnected,
                "the probe's connection was closed; not redialling",
            )
        }))
    }
}
