//! TCP prober: connect (the kubelet's `tcpSocket`: `net.DialTimeout`, success = the three-way handshake
//! completed, then close), optionally TLS, optionally a `send`/`expect` exchange.
//!
//! Phases: `resolve`, `connect`, `tls` (with `tls: true`), `exchange` (with `send` or `expect`). The
//! whole probe is bounded by the timeout given to [`TcpProber::probe`]. The socket is closed (FIN, not
//! RST) as soon as the probe has its answer.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use rustls::pki_types::ServerName;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::http::tls::{self, TlsClient, TlsFailure};
use crate::http::{Clock, fmt_duration};
use crate::{ConfigError, Details, Outcome, Phase, Reason, TcpDetails};

/// Bytes read at most while waiting for `expect` (64 KiB).
pub const EXPECT_READ_LIMIT: usize = 64 << 10;

/// Characters of received data quoted in a failure message.
const QUOTE_LIMIT: usize = 120;

/// Configuration of a TCP probe (the `tcp:` key of a check).
///
/// ```yaml
/// tcp:
///   address: "[fd00::10]:6379"
///   send: "PING\r\n"
///   expect: "+PONG"
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpConfig {
    /// `host:port`: a host name, an IPv4 literal or a bracketed IPv6 literal (`[::1]:80`); port 1–65535.
    pub address: String,
    /// Text written once connected (after the TLS handshake with `tls: true`). Escapes such as `\r\n`
    /// are YAML's (double-quoted strings). Without `expect`, nothing is read back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send: Option<String>,
    /// Text that must appear in what the peer sends (after `send`, if any). Reading stops when it
    /// appears, at end of stream, after 64 KiB, or at the timeout; anything but a match fails the probe
    /// (`expect-mismatch`, or `timeout` if the peer stays silent). Must not be empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<String>,
    /// Run a TLS handshake after connecting (SNI = the host when it is a name); `send`/`expect` then go
    /// through TLS. Default false.
    #[serde(default)]
    pub tls: bool,
    /// With `tls: true`, verify the certificate (chain, dates, name). Default true. Ignored without TLS.
    #[serde(default = "default_true")]
    pub tls_verify: bool,
    /// With `tls: true`, a PEM file of CA certificates trusted in addition to the Mozilla roots. Read when
    /// the config is loaded; requires `tls: true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

fn default_true() -> bool {
    true
}

impl TcpConfig {
    /// A plain connect check of `address`.
    pub fn new(address: impl Into<String>) -> Self {
        TcpConfig {
            address: address.into(),
            send: None,
            expect: None,
            tls: false,
            tls_verify: true,
            ca_file: None,
        }
    }
}

/// A validated TCP prober.
#[derive(Debug)]
pub struct TcpProber {
    // Boxed: `crate::Prober` holds one of each kind; keep the enum small.
    inner: Box<Inner>,
}

#[derive(Debug)]
struct Inner {
    cfg: TcpConfig,
    host: String,
    port: u16,
    tls: Option<(TlsClient, ServerName<'static>)>,
}

impl TcpProber {
    /// Validates `cfg`: the address (`host:port`, brackets around IPv6), a non-empty `expect`, and the
    /// TLS settings (`ca_file` is read now). Errors say what was expected.
    pub fn new(cfg: TcpConfig) -> Result<Self, ConfigError> {
        Ok(TcpProber {
            inner: Box::new(Inner::new(cfg)?),
        })
    }

    /// The address probed, as configured (`host:port`).
    pub fn target(&self) -> String {
        self.inner.target()
    }

    /// Runs one probe bounded by `timeout`.
    ///
    /// Success: connected (and the TLS handshake done, and `expect` found). Failures: `dns-error`,
    /// `connection-refused` and other socket reasons by errno, `tls-error`, `timeout` (naming the
    /// phase; a dropped SYN shows up here), `expect-mismatch` (the message quotes what arrived).
    pub async fn probe(&self, timeout: Duration) -> Outcome {
        self.inner.probe(timeout).await
    }
}

impl Inner {
    fn new(cfg: TcpConfig) -> Result<Self, ConfigError> {
        let (host, port) = split_host_port(cfg.address.trim())
            .map_err(|e| ConfigError(format!("address {:?}: {e}", cfg.address)))?;
        if cfg.expect.as_deref() == Some("") {
            return Err(ConfigError(
                "expect must not be empty (omit it to only connect)".into(),
            ));
        }
        let tls = if cfg.tls {
            let client = TlsClient::new(cfg.tls_verify, cfg.ca_file.as_deref(), &[])?;
            let name = tls::server_name(&host)
                .map_err(|e| ConfigError(format!("address {:?}: {e}", cfg.address)))?;
            Some((client, name))
        } else if cfg.ca_file.is_some() {
            return Err(ConfigError("ca_file needs tls: true".into()));
        } else {
            None
        };
        Ok(Inner {
            cfg,
            host,
            port,
            tls,
        })
    }

    fn target(&self) -> String {
        format!("tcp://{}", self.cfg.address.trim())
    }

    async fn probe(&self, timeout: Duration) -> Outcome {
        let mut p = Progress {
            clock: Clock::new(),
            details: TcpDetails::default(),
            received: Vec::new(),
        };
        let result = tokio::time::timeout(timeout, self.run(&mut p)).await;
        let phase = p.clock.current();
        let duration = p.clock.elapsed();
        let phases = p.clock.finish();
        if self.cfg.send.is_some() || self.cfg.expect.is_some() {
            p.details.received = Some(String::from_utf8_lossy(&p.received).into_owned());
        }
        let (reason, message) = match result {
            Ok(Ok(())) => {
                let message = self.success_message(&p.details);
                return Outcome::ok(message, duration, phases, Details::Tcp(p.details));
            }
            Ok(Err(e)) => (e.reason(), e.to_string()),
            Err(_) => (Reason::Timeout, self.timeout_message(timeout, phase, &p)),
        };
        Outcome::fail(reason, message, duration, phases, Details::Tcp(p.details))
    }

    async fn run(&self, p: &mut Progress) -> Result<(), TcpError> {
        p.clock.begin(Phase::Resolve);
        let ip: IpAddr = crate::resolve::resolve(&self.host, None)
            .await
            .map_err(TcpError::Resolve)?;
        let peer = SocketAddr::new(ip, self.port);
        p.details.peer = Some(peer);

        p.clock.begin(Phase::Connect);
        let stream = TcpStream::connect(peer)
            .await
            .map_err(|source| TcpError::Connect { peer, source })?;
        p.details.connected = true;
        p.details.local = stream.local_addr().ok();
        let _ = stream.set_nodelay(true);

        match &self.tls {
            Some((client, name)) => {
                p.clock.begin(Phase::Tls);
                let (stream, details) = client
                    .handshake(name.clone(), stream)
                    .await
                    .map_err(|source| TcpError::Tls { peer, source })?;
                p.details.tls = Some(details);
                self.exchange(stream, peer, p).await
            }
            None => self.exchange(stream, peer, p).await,
        }
    }

    /// Writes `send`, then reads until `expect` shows up. Without either, returns at once.
    async fn exchange<S>(
        &self,
        mut stream: S,
        peer: SocketAddr,
        p: &mut Progress,
    ) -> Result<(), TcpError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        if self.cfg.send.is_none() && self.cfg.expect.is_none() {
            p.clock.end();
            return Ok(());
        }
        p.clock.begin(Phase::Exchange);
        let io_err = |doing: &'static str| {
            move |source| TcpError::Io {
                peer,
                doing,
                source,
            }
        };
        if let Some(send) = &self.cfg.send {
            stream
                .write_all(send.as_bytes())
                .await
                .map_err(io_err("sending"))?;
            stream.flush().await.map_err(io_err("sending"))?;
        }
        let Some(expect) = &self.cfg.expect else {
            p.clock.end();
            return Ok(());
        };
        let needle = expect.as_bytes();
        let mut chunk = [0u8; 4096];
        loop {
            let room = EXPECT_READ_LIMIT - p.received.len();
            let n = stream
                .read(&mut chunk[..room.min(4096)])
                .await
                .map_err(io_err("reading"))?;
            if n == 0 {
                return Err(self.mismatch(peer, "the connection was closed", &p.received));
            }
            // Only the new bytes (plus an overlap for a needle split across reads) need searching.
            let from = p.received.len().saturating_sub(needle.len() - 1);
            p.received.extend_from_slice(&chunk[..n]);
            if p.received[from..]
                .windows(needle.len())
                .any(|w| w == needle)
            {
                p.clock.end();
                return Ok(());
            }
            if p.received.len() >= EXPECT_READ_LIMIT {
                return Err(self.mismatch(peer, "64 KiB were read", &p.received));
            }
        }
    }

    fn mismatch(&self, peer: SocketAddr, why: &str, received: &[u8]) -> TcpError {
        TcpError::ExpectMismatch {
            peer,
            expect: self.cfg.expect.clone().unwrap_or_default(),
            why: why.to_string(),
            received: quote(received),
        }
    }

    fn success_message(&self, d: &TcpDetails) -> String {
        let mut m = match (d.peer, d.local) {
            (Some(peer), Some(local)) => format!("connected to {peer} from {local}"),
            (Some(peer), None) => format!("connected to {peer}"),
            _ => "connected".to_string(),
        };
        if let Some(t) = &d.tls {
            m.push_str(&format!(" ({}, {})", t.version, t.cipher));
        }
        if let Some(expect) = &self.cfg.expect {
            m.push_str(&format!(" and received {expect:?}"));
        }
        m
    }

    fn timeout_message(&self, timeout: Duration, phase: Option<Phase>, p: &Progress) -> String {
        let peer = p
            .details
            .peer
            .map(|a| a.to_string())
            .unwrap_or_else(|| self.target());
        let what = match phase {
            Some(Phase::Resolve) => format!("resolving {:?}", self.host),
            Some(Phase::Connect) => format!(
                "connecting to {peer} (no SYN-ACK: host down, or a firewall dropping the SYN)"
            ),
            Some(Phase::Tls) => format!("in the TLS handshake with {peer}"),
            Some(Phase::Exchange) => match &self.cfg.expect {
                Some(expect) => format!(
                    "waiting for {expect:?} from {peer}; received {}",
                    quote(&p.received)
                ),
                None => format!("sending to {peer}"),
            },
            _ => format!("probing {peer}"),
        };
        let name = phase.map(Phase::as_str).unwrap_or("none");
        format!(
            "timed out after {} in phase {name}: {what}",
            fmt_duration(timeout)
        )
    }
}

/// What the probe knows so far; owned outside the timed-out future.
#[derive(Debug)]
struct Progress {
    clock: Clock,
    details: TcpDetails,
    received: Vec<u8>,
}

/// Why a TCP probe failed; each variant maps to one [`Reason`].
#[derive(Debug, thiserror::Error)]
enum TcpError {
    #[error("{0}")]
    Resolve(String),
    #[error("connect to {peer} failed: {source}")]
    Connect {
        peer: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS handshake with {peer} failed: {source}")]
    Tls {
        peer: SocketAddr,
        source: TlsFailure,
    },
    #[error("{doing} failed on the connection to {peer}: {source}")]
    Io {
        peer: SocketAddr,
        doing: &'static str,
        source: std::io::Error,
    },
    #[error("expected {expect:?} from {peer}, but {why} first; received {received}")]
    ExpectMismatch {
        peer: SocketAddr,
        expect: String,
        why: String,
        received: String,
    },
}

impl TcpError {
    fn reason(&self) -> Reason {
        match self {
            TcpError::Resolve(_) => Reason::DnsError,
            TcpError::Connect { source, .. } | TcpError::Io { source, .. } => {
                Reason::from_io_error(source)
            }
            TcpError::Tls { source, .. } => source.reason(),
            TcpError::ExpectMismatch { .. } => Reason::ExpectMismatch,
        }
    }
}

/// `N bytes: "escaped text…"`, at most [`QUOTE_LIMIT`] characters of it.
fn quote(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "nothing".into();
    }
    let text = String::from_utf8_lossy(bytes);
    let escaped: String = text.escape_debug().collect();
    let shown: String = escaped.chars().take(QUOTE_LIMIT).collect();
    let more = if shown.len() < escaped.len() {
        "…"
    } else {
        ""
    };
    format!("{} bytes: \"{shown}{more}\"", bytes.len())
}

/// Splits `host:port`; IPv6 literals must be bracketed.
fn split_host_port(address: &str) -> Result<(String, u16), String> {
    let (host, port) = address
        .rsplit_once(':')
        .ok_or("expected host:port, e.g. 127.0.0.1:80 or [::1]:80")?;
    let host = if let Some(inner) = host.strip_prefix('[') {
        let inner = inner
            .strip_suffix(']')
            .ok_or("unbalanced '[' in the host")?;
        inner
            .parse::<std::net::Ipv6Addr>()
            .map_err(|_| format!("{inner:?} is not an IPv6 address"))?;
        inner.to_string()
    } else if host.contains(':') {
        return Err("IPv6 addresses need brackets, e.g. [::1]:80".into());
    } else {
        host.to_string()
    };
    if host.is_empty() {
        return Err("the host is empty".into());
    }
    let port: u16 = port
        .parse()
        .map_err(|_| format!("port {port:?} is not a number from 1 to 65535"))?;
    if port == 0 {
        return Err("port 0 cannot be connected to".into());
    }
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_with_bracketed_ipv6() {
        assert_eq!(
            split_host_port("127.0.0.1:80").expect("valid test input"),
            ("127.0.0.1".to_string(), 80)
        );
        assert_eq!(
            split_host_port("[::1]:443").expect("valid test input"),
            ("::1".to_string(), 443)
        );
        assert_eq!(
            split_host_port("db.example:5432").expect("valid test input"),
            ("db.example".to_string(), 5432)
        );
        assert!(
            split_host_port("::1:80")
                .expect_err("must be rejected")
                .contains("brackets")
        );
        assert!(
            split_host_port("host")
                .expect_err("must be rejected")
                .contains("host:port")
        );
        assert!(
            split_host_port("host:0")
                .expect_err("must be rejected")
                .contains("port 0")
        );
        assert!(
            split_host_port("host:99999")
                .expect_err("must be rejected")
                .contains("1 to 65535")
        );
        assert!(
            split_host_port(":80")
                .expect_err("must be rejected")
                .contains("empty")
        );
        assert!(
            split_host_port("[nope]:80")
                .expect_err("must be rejected")
                .contains("not an IPv6")
        );
    }

    #[test]
    fn config_is_validated() {
        let mut cfg = TcpConfig::new("127.0.0.1:80");
        cfg.expect = Some(String::new());
        assert!(
            TcpProber::new(cfg)
                .expect_err("must be rejected")
                .0
                .contains("expect must not be empty")
        );
        let mut cfg = TcpConfig::new("127.0.0.1:80");
        cfg.ca_file = Some("/tmp/ca.pem".into());
        assert!(
            TcpProber::new(cfg)
                .expect_err("must be rejected")
                .0
                .contains("needs tls: true")
        );
        let e = serde_json::from_str::<TcpConfig>(r#"{"address": "h:1", "expected": "x"}"#)
            .expect_err("must be rejected");
        assert!(e.to_string().contains("unknown field"), "{e}");
        assert_eq!(
            TcpProber::new(TcpConfig::new(" [::1]:80 "))
                .expect("valid test input")
                .target(),
            "tcp://[::1]:80"
        );
    }

    #[test]
    fn quotes_are_escaped_and_truncated() {
        assert_eq!(quote(b""), "nothing");
        assert_eq!(quote(b"a\r\n\"b"), r#"5 bytes: "a\r\n\"b""#);
        let long = quote(&[b'x'; 500]);
        assert!(
            long.starts_with("500 bytes: \"") && long.ends_with("…\""),
            "{long}"
        );
        assert_eq!(long.matches('x').count(), QUOTE_LIMIT);
        assert_eq!(quote(&[0xff, 0x00]), "2 bytes: \"\u{fffd}\\0\"");
    }
}
