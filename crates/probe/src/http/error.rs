//! Why an HTTP probe failed, one variant per kind of failure, each mapping to one [`Reason`].

use std::error::Error as _;
use std::io;
use std::net::SocketAddr;

use super::tls::TlsFailure;
use crate::Reason;

/// A failed HTTP(S) exchange. The `Display` text is the outcome's message: it names the peer and what
/// went wrong, never the response body.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HttpError {
    /// The host name did not resolve (`dns-error`); the text names the host.
    #[error("{0}")]
    Resolve(String),
    /// The TCP connect failed (reason by errno: `connection-refused`, `host-unreachable`, …).
    #[error("connect to {peer} failed: {source}")]
    Connect {
        /// The address dialled.
        peer: SocketAddr,
        /// The socket error.
        source: io::Error,
    },
    /// The TLS handshake failed (`tls-error`, or a socket reason when the connection broke).
    #[error("TLS handshake with {host} ({peer}) failed: {source}")]
    Tls {
        /// The server name sent as SNI and checked against the certificate.
        host: String,
        /// The address connected to.
        peer: SocketAddr,
        /// What failed.
        source: TlsFailure,
    },
    /// The request/response exchange failed after the connection was ready.
    #[error("{message}")]
    Exchange {
        /// `protocol-error`, `connection-reset`, `tls-error` or a socket reason.
        reason: Reason,
        /// What happened, with the peer.
        message: String,
    },
    /// Redirects went on past `max_redirects` (`http-status`, as the kubelet fails a probe "stopped
    /// after 10 redirects").
    #[error("stopped after {max} redirects: {status} from {url} redirects again to {location:?}")]
    TooManyRedirects {
        /// The configured maximum.
        max: u32,
        /// The last redirect status.
        status: u16,
        /// The URL that answered it.
        url: String,
        /// Where it pointed.
        location: String,
    },
    /// A redirect's `Location` cannot be followed (`protocol-error`).
    #[error("cannot follow redirect {status} from {url} to {location:?}: {why}")]
    BadRedirect {
        /// The redirect status.
        status: u16,
        /// The URL that answered it.
        url: String,
        /// The `Location` header (lossy text).
        location: String,
        /// Why it cannot be followed.
        why: String,
    },
}

impl HttpError {
    /// The outcome reason for this failure.
    pub(crate) fn reason(&self) -> Reason {
        match self {
            HttpError::Resolve(_) => Reason::DnsError,
            HttpError::Connect { source, .. } => Reason::from_io_error(source),
            HttpError::Tls { source, .. } => source.reason(),
            HttpError::Exchange { reason, .. } => *reason,
            HttpError::TooManyRedirects { .. } => Reason::HttpStatus,
            HttpError::BadRedirect { .. } => Reason::ProtocolError,
        }
    }

    /// Classifies a hyper error raised while `doing` something (e.g. "waiting for the response") with
    /// `peer`.
    pub(crate) fn from_hyper(err: &hyper::Error, doing: &str, peer: SocketAddr) -> HttpError {
        let chain = error_chain(err);
        let (reason, what) = if let Some(io) = find_io(err) {
            match io.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
                Some(tls) => (Reason::TlsError, format!("TLS error: {tls}")),
                None => (Reason::from_io_error(io), format!("connection error: {io}")),
            }
        } else if err.is_parse() || err.is_parse_status() || err.is_parse_too_large() {
            (
                Reason::ProtocolError,
                format!("invalid HTTP response ({chain})"),
            )
        } else if err.is_incomplete_message() || err.is_canceled() || err.is_closed() {
            (
                Reason::ConnectionReset,
                "the server closed the connection before the response was complete".into(),
            )
        } else {
            (Reason::Error, chain)
        };
        HttpError::Exchange {
            reason,
            message: format!("{what} from {peer} while {doing}"),
        }
    }
}

/// The first `io::Error` in `err`'s source chain.
fn find_io(err: &hyper::Error) -> Option<&io::Error> {
    let mut cur = err.source();
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return Some(io);
        }
        cur = e.source();
    }
    None
}

/// `err: source: source…` — hyper's own `Display` names only the outermost layer.
fn error_chain(err: &hyper::Error) -> String {
    let mut text = err.to_string();
    let mut cur = err.source();
    // Bounded: a source chain is short, but a cycle must not hang the probe.
    for _ in 0..8 {
        let Some(e) = cur else { break };
        text.push_str(": ");
        text.push_str(&e.to_string());
        cur = e.source();
    }
    text
}
