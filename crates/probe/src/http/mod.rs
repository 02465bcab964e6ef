//! HTTP(S) prober with blackbox_exporter's per-phase timings.
//!
//! Assembled by hand on hyper's HTTP/1.1 client connection, tokio-rustls and the shared resolver, so
//! each phase is measured on its own (`probe_http_duration_seconds{phase}` in
//! `prometheus/blackbox_exporter` `prober/http.go`):
//!
//! | phase | from | to |
//! |---|---|---|
//! | `resolve` | start | one address known ([`crate::resolve::resolve`]: getaddrinfo's first; no fallback to the next) |
//! | `connect` | address known | TCP handshake done |
//! | `tls` | TCP connected | TLS handshake done (https only) |
//! | `processing` | connection ready | first response byte read by the process (after TLS decryption; includes writing the request) |
//! | `transfer` | first response byte | body read to its end or to `body_limit` (includes parsing the head) |
//!
//! Redirects are followed by hand, one fresh connection per hop, and each phase is summed over hops as
//! blackbox_exporter does. There is no connection reuse, no proxy (as the kubelet: `Proxy: nil`) and no
//! compression. The whole probe, redirects included, is bounded by the timeout given to
//! [`HttpProber::probe`].
//!
//! Differences from the kubelet's `httpGet` (`pkg/probe/http/http.go`), on purpose:
//! - certificates are verified by default (`tls_verify: true`); the kubelet never verifies;
//! - redirects to another host are followed; the kubelet stops there and reports success with a warning;
//! - the body cap is `body_limit` (64 KiB by default) instead of 10 KB.

mod error;
mod hop;
mod timing;
pub(crate) mod tls;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use serde::{Deserialize, Serialize};
use url::Url;

pub(crate) use timing::{Clock, fmt_duration};

use self::error::HttpError;
use self::hop::{HopRequest, Progress};
use self::tls::TlsClient;
use crate::{ConfigError, Details, Outcome, Phase, Reason};

/// The `User-Agent` sent unless the config's `headers` set one.
pub const USER_AGENT: &str = concat!("netprobe/", env!("CARGO_PKG_VERSION"));

/// Largest accepted `body_limit` (64 MiB): the body is held in memory for conditions.
pub const MAX_BODY_LIMIT: u64 = 64 << 20;

/// Configuration of an HTTP(S) probe (the `http:` key of a check).
///
/// ```yaml
/// http:
///   url: https://api.example.com/healthz
///   method: POST
///   headers: { Authorization: "Bearer …" }
///   body: '{"ping": true}'
///   ca_file: /etc/netprobe/internal-ca.pem
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// The URL to request: `http://` or `https://`, a host name or IP literal (IPv6 in brackets), an
    /// optional port and path. Credentials in the URL are rejected (use an `Authorization` header).
    pub url: String,
    /// Request method, case-insensitive, sent uppercase. Default `GET` (the kubelet always uses GET).
    #[serde(default = "default_method")]
    pub method: String,
    /// Extra request headers, name → value. They replace the defaults (`User-Agent: netprobe/<version>`,
    /// `Accept: */*`); a `Host` entry sets the Host header for requests to the URL's own host.
    /// `Content-Length`, `Transfer-Encoding` and `Connection` are managed by the prober and rejected.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Request body, sent as is with a `Content-Length` (no `Content-Type` is added; set one in
    /// `headers`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Response body bytes read at most (default 65536, at most 64 MiB). A longer body is truncated,
    /// not an error: the outcome says `body_truncated`. Conditions on `[BODY]` see the first bytes only.
    /// Only the cap is kept; hyper's read buffer may transiently hold up to ~400 KiB more.
    #[serde(default = "default_body_limit")]
    pub body_limit: u64,
    /// Verify the server certificate (chain to a trusted root, validity dates, host name). Default true.
    /// The kubelet's httpGet skips verification (`InsecureSkipVerify: true`); set `false` for the same
    /// behaviour. Handshake signatures are checked either way.
    #[serde(default = "default_true")]
    pub tls_verify: bool,
    /// A PEM file of CA certificates trusted in addition to the built-in Mozilla roots (e.g. a private CA
    /// or the node's bundle). Read when the config is loaded: a missing or empty file is a config error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Follow 301/302/303/307/308 redirects (default true). Off: a 3xx is the final response (and a
    /// success by the 200–399 rule).
    #[serde(default = "default_true")]
    pub follow_redirects: bool,
    /// Redirects followed at most (default 10, as Go's client and the kubelet); one more fails the
    /// probe with `http-status`.
    #[serde(default = "default_max_redirects")]
    pub max_redirects: u32,
}

fn default_method() -> String {
    "GET".into()
}
fn default_body_limit() -> u64 {
    65536
}
fn default_true() -> bool {
    true
}
fn default_max_redirects() -> u32 {
    10
}

impl HttpConfig {
    /// A config for `url` with every other field at its default.
    pub fn new(url: impl Into<String>) -> Self {
        HttpConfig {
            url: url.into(),
            method: default_method(),
            headers: BTreeMap::new(),
            body: None,
            body_limit: default_body_limit(),
            tls_verify: true,
            ca_file: None,
            follow_redirects: true,
            max_redirects: default_max_redirects(),
        }
    }
}

/// A validated HTTP(S) prober; the TLS configuration is built once here and reused by every probe.
#[derive(Debug)]
pub struct HttpProber {
    // Boxed: the validated state is a few hundred bytes and `crate::Prober` holds one of each kind.
    inner: Box<Inner>,
}

#[derive(Debug)]
struct Inner {
    cfg: HttpConfig,
    url: Url,
    method: Method,
    /// Defaults merged with the configured headers (no `Host`: it is per hop).
    headers: HeaderMap,
    /// A configured `Host` override.
    host_override: Option<HeaderValue>,
    body: Option<Bytes>,
    body_limit: usize,
    tls: TlsClient,
}

impl HttpProber {
    /// Validates `cfg`: the URL (parse, `http`/`https`, a host, no credentials), the method, header
    /// names and values, `body_limit` and `ca_file`. Errors say which field is wrong and why.
    pub fn new(cfg: HttpConfig) -> Result<Self, ConfigError> {
        let err = |m: String| ConfigError(m);
        let url = Url::parse(cfg.url.trim()).map_err(|e| err(format!("url {:?}: {e}", cfg.url)))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(err(format!(
                "url {:?}: scheme must be http or https, not {:?}",
                cfg.url,
                url.scheme()
            )));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(err(format!("url {:?}: no host", cfg.url)));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(err(format!(
                "url {:?}: credentials in the URL are not supported (they would show in outputs); \
                 use an Authorization header",
                url.host_str().unwrap_or_default()
            )));
        }
        let method = Method::from_bytes(cfg.method.trim().to_ascii_uppercase().as_bytes())
            .map_err(|_| {
                err(format!(
                    "method {:?} is not a valid HTTP method token",
                    cfg.method
                ))
            })?;

        let mut headers = HeaderMap::new();
        headers.insert(header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
        headers.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        // One connection per probe; tell the server so it need not wait for a next request.
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        let mut host_override = None;
        for (name, value) in &cfg.headers {
            let n = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| err(format!("headers: {name:?} is not a valid header name")))?;
            let v = HeaderValue::from_str(value)
                .map_err(|_| err(format!("headers: the value of {name:?} contains characters not allowed in a header (control characters or non-ASCII)")))?;
            if n == header::CONTENT_LENGTH
                || n == header::TRANSFER_ENCODING
                || n == header::CONNECTION
            {
                return Err(err(format!(
                    "headers: {name:?} is set by the prober and cannot be configured"
                )));
            }
            if n == header::HOST {
                host_override = Some(v);
            } else {
                headers.insert(n, v);
            }
        }
        if cfg.body_limit > MAX_BODY_LIMIT {
            return Err(err(format!(
                "body_limit {} is above the maximum of {MAX_BODY_LIMIT} bytes",
                cfg.body_limit
            )));
        }
        let body_limit = usize::try_from(cfg.body_limit).unwrap_or(usize::MAX);
        let tls = TlsClient::new(cfg.tls_verify, cfg.ca_file.as_deref(), &[b"http/1.1"])?;
        let body = cfg.body.clone().map(Bytes::from);
        let inner = Inner {
            cfg,
            url,
            method,
            headers,
            host_override,
            body,
            body_limit,
            tls,
        };
        Ok(HttpProber {
            inner: Box::new(inner),
        })
    }

    /// The URL probed (normalised: `http://Host` becomes `http://host/`).
    pub fn target(&self) -> String {
        self.inner.url.to_string()
    }

    /// Runs one probe bounded by `timeout`, following redirects, and returns its outcome.
    ///
    /// Success: a final status in 200–399 (the kubelet's httpGet rule). Failures: `dns-error`,
    /// `connection-refused` and other socket reasons, `tls-error` (the message says expired, unknown
    /// issuer, name mismatch…), `timeout` (the message names the phase), `protocol-error` (not HTTP),
    /// `connection-reset` (closed before the response was complete), `http-status` (status outside
    /// 200–399, or too many redirects). Messages never contain the body.
    pub async fn probe(&self, timeout: Duration) -> Outcome {
        let mut progress = Progress::new(&self.inner.url);
        let result = tokio::time::timeout(timeout, self.inner.run(&mut progress)).await;
        let timed_out_in = progress.clock.current();
        // A response whose first byte arrived is in `transfer`, even if its head is incomplete.
        let timed_out_in = match (timed_out_in, progress.first_byte_at()) {
            (Some(Phase::Processing), Some(first)) => {
                progress.clock.begin_at(Phase::Transfer, first);
                Some(Phase::Transfer)
            }
            (p, _) => p,
        };
        let duration = progress.clock.elapsed();
        let phases = progress.clock.finish();
        let details = progress.details;
        let result = match result {
            Ok(r) => r,
            Err(_) => {
                let message = timeout_message(timeout, timed_out_in, &details);
                return Outcome::fail(
                    Reason::Timeout,
                    message,
                    duration,
                    phases,
                    Details::Http(details),
                );
            }
        };
        match result {
            Err(e) => Outcome::fail(
                e.reason(),
                e.to_string(),
                duration,
                phases,
                Details::Http(details),
            ),
            Ok(status) => {
                let hops = match details.redirects {
                    0 => String::new(),
                    1 => " after 1 redirect".into(),
                    n => format!(" after {n} redirects"),
                };
                let from = details.peer.map(|p| format!(" ({p})")).unwrap_or_default();
                if (200..400).contains(&status.as_u16()) {
                    let message = format!("HTTP {status} from {}{from}{hops}", details.url);
                    Outcome::ok(message, duration, phases, Details::Http(details))
                } else {
                    let message = format!(
                        "HTTP status {status} from {}{from}{hops}; success is 200-399",
                        details.url
                    );
                    Outcome::fail(
                        Reason::HttpStatus,
                        message,
                        duration,
                        phases,
                        Details::Http(details),
                    )
                }
            }
        }
    }
}

impl Inner {
    /// Follows the redirect chain; returns the final status.
    async fn run(&self, progress: &mut Progress) -> Result<StatusCode, HttpError> {
        let mut url = self.url.clone();
        let mut method = self.method.clone();
        let mut body = self.body.clone();
        let mut headers = self.headers.clone();
        loop {
            let mut hop_headers = headers.clone();
            let host = match &self.host_override {
                // Only for the configured host: a redirect elsewhere must not carry it along.
                Some(h) if same_origin(&url, &self.url) => h.clone(),
                _ => host_header(&url)?,
            };
            hop_headers.insert(header::HOST, host);
            let req = HopRequest {
                url: &url,
                method: &method,
                headers: hop_headers,
                body: body.clone(),
                follow_redirects: self.cfg.follow_redirects,
                body_limit: self.body_limit,
            };
            let resp = hop::run(&self.tls, req, progress).await?;
            let Some(location) = resp.location else {
                return Ok(resp.status);
            };
            let status = resp.status.as_u16();
            let location = String::from_utf8_lossy(location.as_bytes()).into_owned();
            if progress.details.redirects >= self.cfg.max_redirects {
                return Err(HttpError::TooManyRedirects {
                    max: self.cfg.max_redirects,
                    status,
                    url: url.to_string(),
                    location,
                });
            }
            let bad = |why: String| HttpError::BadRedirect {
                status,
                url: url.to_string(),
                location: location.clone(),
                why,
            };
            let next = url.join(&location).map_err(|e| bad(e.to_string()))?;
            if !matches!(next.scheme(), "http" | "https")
                || next.host_str().is_none_or(str::is_empty)
            {
                return Err(bad(
                    "only http and https URLs with a host are followed".into()
                ));
            }
            // Go's net/http rules, which the kubelet and blackbox_exporter inherit: 301/302/303 turn
            // anything but GET/HEAD into a GET without body; 307/308 repeat the request as is.
            if matches!(status, 301..=303) {
                if method != Method::GET && method != Method::HEAD {
                    method = Method::GET;
                }
                body = None;
            }
            if !same_origin(&next, &url) {
                // Credentials are for the host they were configured for (Go drops them likewise).
                for h in [
                    header::AUTHORIZATION,
                    header::COOKIE,
                    header::PROXY_AUTHORIZATION,
                ] {
                    headers.remove(h);
                }
            }
            progress.details.redirects += 1;
            url = next;
        }
    }
}

/// `host[:port]` as the `Host` header (RFC 9110 §7.2): the port only when it is not the default.
fn host_header(url: &Url) -> Result<HeaderValue, HttpError> {
    let host = url.host_str().unwrap_or_default();
    let text = match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    };
    HeaderValue::from_str(&text).map_err(|e| HttpError::Exchange {
        reason: Reason::Error,
        message: format!("cannot make a Host header for {url}: {e}"),
    })
}

fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

fn timeout_message(timeout: Duration, phase: Option<Phase>, d: &crate::HttpDetails) -> String {
    let after = fmt_duration(timeout);
    let peer = d
        .peer
        .map(|p| p.to_string())
        .unwrap_or_else(|| d.url.clone());
    let what = match phase {
        Some(Phase::Resolve) => format!("resolving the host of {}", d.url),
        Some(Phase::Connect) => {
            format!("connecting to {peer} (no SYN-ACK: host down, or a firewall dropping the SYN)")
        }
        Some(Phase::Tls) => format!("in the TLS handshake with {peer}"),
        Some(Phase::Processing) => format!("waiting for the first response byte from {peer}"),
        Some(Phase::Transfer) => format!(
            "reading the response from {peer} ({} body bytes read)",
            d.body_bytes
        ),
        _ => format!("probing {}", d.url),
    };
    let phase = phase.map(Phase::as_str).unwrap_or("none");
    format!("timed out after {after} in phase {phase}: {what}")
}

#[cfg(test)]
mod tests;
