//! Loopback servers and certificates for the HTTP and TCP prober tests.
//!
//! Servers are hand-written on tokio so they can misbehave on purpose (never answer, stream forever,
//! send garbage); every accept loop and read is bounded in count and time.
#![allow(dead_code)] // each test binary uses a different subset

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

/// Connections a test server accepts at most.
const MAX_CONNECTIONS: usize = 200;
/// How long a test server waits for a request.
const READ_BOUND: Duration = Duration::from_secs(10);

/// A request as the server saw it.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Seen {
    /// The value of header `name` (case-insensitive), if sent once or more (first value).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one HTTP/1.1 request (head, then a `Content-Length` body). Bounded to 1 MiB and [`READ_BOUND`].
pub async fn read_request<S: AsyncRead + Unpin>(s: &mut S) -> std::io::Result<Seen> {
    tokio::time::timeout(READ_BOUND, read_request_inner(s))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no request"))?
}

async fn read_request_inner<S: AsyncRead + Unpin>(s: &mut S) -> std::io::Result<Seen> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 1 << 20 {
            return Err(std::io::Error::other("request head too large"));
        }
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed before a request",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut start = lines.next().unwrap_or_default().split(' ');
    let mut seen = Seen {
        method: start.next().unwrap_or_default().to_string(),
        target: start.next().unwrap_or_default().to_string(),
        ..Seen::default()
    };
    for line in lines.filter(|l| !l.is_empty()) {
        if let Some((n, v)) = line.split_once(':') {
            seen.headers
                .push((n.trim().to_string(), v.trim().to_string()));
        }
    }
    let len: usize = seen
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < len.min(1 << 20) {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    seen.body = body;
    Ok(seen)
}

/// Writes a complete response with a `Content-Length`.
pub async fn respond<S: AsyncWrite + Unpin>(
    s: &mut S,
    status: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) {
    let mut out = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\n", body.len());
    for (n, v) in headers {
        out.push_str(&format!("{n}: {v}\r\n"));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    let _ = s.write_all(&bytes).await;
    let _ = s.flush().await;
}

/// Binds `127.0.0.1:0` and runs `handler` on each accepted connection in its own task; the server
/// lives until the test's runtime ends.
pub async fn serve<F, Fut>(handler: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    serve_on("127.0.0.1:0", handler).await
}

/// As [`serve`], on a chosen bind address (e.g. `[::1]:0`).
pub async fn serve_on<F, Fut>(bind: &str, handler: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind(bind)
        .await
        .expect("bind a loopback listener");
    let addr = listener.local_addr().expect("listener address");
    tokio::spawn(async move {
        for _ in 0..MAX_CONNECTIONS {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(handler(stream));
        }
    });
    addr
}

/// As [`serve`], with TLS from `config` in front of `handler`; failed handshakes are dropped.
pub async fn serve_tls<F, Fut>(config: Arc<ServerConfig>, handler: F) -> SocketAddr
where
    F: Fn(tokio_rustls::server::TlsStream<TcpStream>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let acceptor = TlsAcceptor::from(config);
    let handler = Arc::new(handler);
    serve(move |tcp| {
        let acceptor = acceptor.clone();
        let handler = handler.clone();
        async move {
            if let Ok(Ok(tls)) = tokio::time::timeout(READ_BOUND, acceptor.accept(tcp)).await {
                handler(tls).await;
            }
        }
    })
    .await
}

/// A port on 127.0.0.1 with no listener (bound, then closed): connecting is refused with a RST.
pub fn refused_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("address")
}

/// Keeps a connection open without answering, until the peer closes it or [`READ_BOUND`] passes.
pub async fn hold<S: AsyncRead + Unpin>(mut s: S) {
    let mut sink = [0u8; 1024];
    let _ = tokio::time::timeout(READ_BOUND, async {
        while let Ok(n) = s.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

/// A certificate and its key.
pub struct Cert {
    pub der: CertificateDer<'static>,
    pub pem: String,
    pub key: KeyPair,
    /// The `notAfter` set, Unix seconds.
    pub not_after: i64,
    params: CertificateParams,
}

fn params(
    cn: &str,
    sans: &[&str],
    not_before: (i32, u8, u8),
    not_after: (i32, u8, u8),
) -> CertificateParams {
    let mut p = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .expect("params");
    p.distinguished_name.push(DnType::CommonName, cn);
    p.not_before = rcgen::date_time_ymd(not_before.0, not_before.1, not_before.2);
    p.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
    p
}

/// A self-signed CA certificate valid until `not_after` (y, m, d at 00:00 UTC).
pub fn ca(cn: &str, not_after: (i32, u8, u8)) -> Cert {
    let mut p = params(cn, &[], (2020, 1, 1), not_after);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let key = KeyPair::generate().expect("key");
    let cert = p.self_signed(&key).expect("self-sign");
    Cert {
        not_after: p.not_after.unix_timestamp(),
        der: cert.der().clone(),
        pem: cert.pem(),
        key,
        params: p,
    }
}

/// A self-signed end-entity certificate for `sans`.
pub fn self_signed(cn: &str, sans: &[&str], not_after: (i32, u8, u8)) -> Cert {
    let p = params(cn, sans, (2020, 1, 1), not_after);
    let key = KeyPair::generate().expect("key");
    let cert = p.self_signed(&key).expect("self-sign");
    Cert {
        not_after: p.not_after.unix_timestamp(),
        der: cert.der().clone(),
        pem: cert.pem(),
        key,
        params: p,
    }
}

/// An end-entity certificate for `sans` issued by `ca`.
pub fn leaf(
    ca: &Cert,
    cn: &str,
    sans: &[&str],
    not_before: (i32, u8, u8),
    not_after: (i32, u8, u8),
) -> Cert {
    let p = params(cn, sans, not_before, not_after);
    let key = KeyPair::generate().expect("key");
    let issuer = Issuer::from_params(&ca.params, &ca.key);
    let cert = p.signed_by(&key, &issuer).expect("sign");
    Cert {
        not_after: p.not_after.unix_timestamp(),
        der: cert.der().clone(),
        pem: cert.pem(),
        key,
        params: p,
    }
}

/// A TLS server config presenting `chain` (leaf first) with the leaf's key.
pub fn server_config(chain: &[&Cert]) -> Arc<ServerConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let certs = chain.iter().map(|c| c.der.clone()).collect();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(chain[0].key.serialize_der()));
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server certificate");
    Arc::new(config)
}

/// Writes `text` to a file in `dir` and returns its path.
pub fn write_file(dir: &tempfile::TempDir, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("write file");
    path
}
