//! One request/response exchange on a fresh connection: resolve, connect, TLS, send, read.
//!
//! Each phase is stamped into the shared [`Progress`] as it starts, so a timeout that drops this future
//! still knows where it stopped. One connection per exchange; it is closed when the exchange returns
//! (the request says `Connection: close`, as the kubelet's probe transport disables keep-alive).

use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::task::Poll;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Version, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Body as _;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use url::Url;

use super::error::HttpError;
use super::timing::{Clock, FirstByte, TimedIo};
use super::tls::{self, TlsClient};
use crate::{HttpDetails, Phase};

/// What a probe knows so far; owned outside the timed-out future.
#[derive(Debug)]
pub(super) struct Progress {
    /// Phase timings, summed over hops.
    pub clock: Clock,
    /// Details of the latest hop (and the redirect count over all hops).
    pub details: HttpDetails,
    /// The current hop's first-byte stamp, while a response is awaited or read.
    pub first_byte: Option<FirstByte>,
}

impl Progress {
    pub(super) fn new(url: &Url) -> Self {
        Progress {
            clock: Clock::new(),
            details: HttpDetails {
                url: url.to_string(),
                ..HttpDetails::default()
            },
            first_byte: None,
        }
    }

    /// The first response byte of the current hop, if one arrived.
    pub(super) fn first_byte_at(&self) -> Option<Instant> {
        self.first_byte.as_ref().and_then(|f| f.get().copied())
    }
}

/// One request to send.
#[derive(Debug)]
pub(super) struct HopRequest<'a> {
    pub url: &'a Url,
    pub method: &'a Method,
    /// All request headers, `Host` included.
    pub headers: HeaderMap,
    pub body: Option<Bytes>,
    /// Whether a followable redirect ends the hop before its body is read.
    pub follow_redirects: bool,
    /// Body bytes kept at most.
    pub body_limit: usize,
}

/// The head of a response; the body went into `Progress::details`.
#[derive(Debug)]
pub(super) struct HopResponse {
    pub status: StatusCode,
    /// The `Location` of a redirect to follow (only when following is on and the status is one).
    pub location: Option<HeaderValue>,
}

/// Statuses the prober follows, as Go's `net/http` client (which the kubelet and blackbox_exporter use).
pub(super) fn is_followable(status: StatusCode) -> bool {
    matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308)
}

/// Runs one exchange with `req.url`.
pub(super) async fn run(
    tls: &TlsClient,
    req: HopRequest<'_>,
    progress: &mut Progress,
) -> Result<HopResponse, HttpError> {
    // Details describe the latest hop only (except the redirect count, kept by the caller).
    progress.details = HttpDetails {
        url: req.url.to_string(),
        redirects: progress.details.redirects,
        ..HttpDetails::default()
    };
    let host = req.url.host_str().unwrap_or_default().to_string();
    let port = req.url.port_or_known_default().unwrap_or(80);

    progress.clock.begin(Phase::Resolve);
    let ip = crate::resolve::resolve(&host, None)
        .await
        .map_err(HttpError::Resolve)?;
    let peer = SocketAddr::new(ip, port);
    progress.details.peer = Some(peer);

    progress.clock.begin(Phase::Connect);
    let tcp = TcpStream::connect(peer)
        .await
        .map_err(|source| HttpError::Connect { peer, source })?;
    progress.details.connected = true;
    // Requests are written in one go; Nagle would only delay the first byte.
    let _ = tcp.set_nodelay(true);

    if req.url.scheme() == "https" {
        progress.clock.begin(Phase::Tls);
        let tls_err = |source| HttpError::Tls {
            host: host.clone(),
            peer,
            source,
        };
        let name = tls::server_name(&host).map_err(|e| tls_err(tls::TlsFailure::Rejected(e)))?;
        let (stream, details) = tls.handshake(name, tcp).await.map_err(tls_err)?;
        progress.details.tls = Some(details);
        exchange(stream, req, peer, progress).await
    } else {
        exchange(tcp, req, peer, progress).await
    }
}

async fn exchange<IO>(
    io: IO,
    req: HopRequest<'_>,
    peer: SocketAddr,
    progress: &mut Progress,
) -> Result<HopResponse, HttpError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send,
{
    let first_byte = FirstByte::default();
    progress.first_byte = Some(first_byte.clone());
    // blackbox_exporter's `processing`: from the connection being ready (after TLS) to the first response
    // byte, so it includes writing the request.
    progress.clock.begin(Phase::Processing);

    let request = build_request(&req)?;
    let io = TokioIo::new(TimedIo::new(io, first_byte));
    let (mut sender, conn) = hyper::client::conn::http1::handshake::<_, Full<Bytes>>(io)
        .await
        .map_err(|e| HttpError::from_hyper(&e, "starting the exchange", peer))?;
    let mut conn = pin!(conn);
    let mut conn_result = None;
    let sent = drive(
        conn.as_mut(),
        &mut conn_result,
        sender.send_request(request),
    )
    .await;
    let response =
        sent.map_err(|e| conn_error(&conn_result, &e, "waiting for the response", peer))?;

    // `transfer` starts at the first byte: parsing the head is part of it, as in blackbox_exporter.
    let first = progress.first_byte_at().unwrap_or_else(Instant::now);
    progress.clock.begin_at(Phase::Transfer, first);
    let (parts, mut body) = response.into_parts();
    progress.details.status = Some(parts.status.as_u16());
    progress.details.version = Some(version_name(parts.version).to_string());

    let location = match parts.headers.get(header::LOCATION) {
        Some(l) if req.follow_redirects && is_followable(parts.status) => Some(l.clone()),
        _ => None,
    };
    if location.is_some() {
        // A redirect's body is never looked at; the connection is dropped unread.
        progress.clock.end();
        return Ok(HopResponse {
            status: parts.status,
            location,
        });
    }

    let mut buf = BytesMut::new();
    let mut truncated = false;
    loop {
        let full = buf.len() >= req.body_limit;
        if full && body.is_end_stream() {
            break;
        }
        let frame = drive(conn.as_mut(), &mut conn_result, body.frame()).await;
        let Some(frame) = frame else { break };
        let frame = frame.map_err(|e| conn_error(&conn_result, &e, "reading the body", peer))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let take = data
            .len()
            .min(req.body_limit - buf.len().min(req.body_limit));
        buf.extend_from_slice(&data[..take]);
        progress.details.body_bytes = buf.len() as u64;
        if take < data.len() {
            // Over the cap: stop reading and let the connection drop, as the kubelet reads 10KB at most.
            truncated = true;
            break;
        }
    }
    progress.clock.end();
    progress.details.body_truncated = truncated;
    progress.details.body = buf.freeze();
    Ok(HopResponse {
        status: parts.status,
        location: None,
    })
}

fn build_request(req: &HopRequest<'_>) -> Result<Request<Full<Bytes>>, HttpError> {
    // HTTP/1.1 origin-form: path and query only; the authority travels in `Host`.
    let target = &req.url[url::Position::BeforePath..url::Position::AfterQuery];
    let mut builder = Request::builder()
        .method(req.method.clone())
        .uri(target)
        .version(Version::HTTP_11);
    if let Some(h) = builder.headers_mut() {
        h.extend(req.headers.clone());
    }
    builder
        .body(Full::new(req.body.clone().unwrap_or_default()))
        .map_err(|e| HttpError::Exchange {
            reason: crate::Reason::Error,
            message: format!("cannot build a request for {}: {e}", req.url),
        })
}

/// Polls `fut` while also driving the HTTP/1 connection (which does the socket IO), without spawning a
/// task: when the probe future is dropped at its timeout, the socket goes with it. The connection's own
/// result is kept in `conn_result`; it carries the precise error when the request or body fails.
async fn drive<C, F>(
    mut conn: Pin<&mut C>,
    conn_result: &mut Option<hyper::Result<()>>,
    fut: F,
) -> F::Output
where
    C: Future<Output = hyper::Result<()>>,
    F: Future,
{
    let mut fut = pin!(fut);
    poll_fn(move |cx| {
        if conn_result.is_none()
            && let Poll::Ready(r) = conn.as_mut().poll(cx)
        {
            *conn_result = Some(r);
        }
        fut.as_mut().poll(cx)
    })
    .await
}

/// Prefers the connection's error (the cause) over the request's (often just "connection error").
fn conn_error(
    conn_result: &Option<hyper::Result<()>>,
    err: &hyper::Error,
    doing: &str,
    peer: SocketAddr,
) -> HttpError {
    match conn_result {
        Some(Err(cause)) => HttpError::from_hyper(cause, doing, peer),
        _ => HttpError::from_hyper(err, doing, peer),
    }
}

fn version_name(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/?",
    }
}
