//! A stand-in for kube-apiserver on loopback that replays recorded responses (no API server can run
//! here). Every request is handed to the test, which checks it and answers it with a fixture from
//! `tests/fixtures/kubernetes/`: a JSON body, or a watch stream fed one `WatchEvent` line at a time.
#![allow(dead_code, reason = "each test binary uses a subset")]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use tokio::sync::{mpsc, oneshot};

/// A fixture's text.
pub fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/kubernetes")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The lines of a `.jsonl` fixture, each with its newline.
pub fn fixture_lines(name: &str) -> Vec<String> {
    fixture(name).lines().map(|l| format!("{l}\n")).collect()
}

enum Reply {
    Body(StatusCode, String),
    Stream(mpsc::UnboundedReceiver<String>),
}

/// One request the client made, waiting for the test's answer.
pub struct ApiRequest {
    /// The path, e.g. `/api/v1/nodes`.
    pub path: String,
    /// Query parameters, decoded.
    pub query: BTreeMap<String, String>,
    reply: oneshot::Sender<Reply>,
}

impl ApiRequest {
    /// Whether this is a watch (`watch=true`) rather than a list.
    pub fn is_watch(&self) -> bool {
        self.query.get("watch").map(String::as_str) == Some("true")
    }

    /// A query parameter, or "" when absent.
    pub fn param(&self, k: &str) -> &str {
        self.query.get(k).map_or("", String::as_str)
    }

    /// Answers with `status` and a JSON body.
    pub fn answer(self, status: u16, body: String) {
        let status = StatusCode::from_u16(status).expect("status code");
        let _ = self.reply.send(Reply::Body(status, body));
    }

    /// Answers with a chunked watch stream; each string sent is one chunk (one event line).
    /// Dropping the sender ends the stream (as the API server does after `timeoutSeconds`).
    pub fn stream(self) -> mpsc::UnboundedSender<String> {
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = self.reply.send(Reply::Stream(rx));
        tx
    }
}

impl std::fmt::Debug for ApiRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:?}", self.path, self.query)
    }
}

/// The fake API server: `url` to point a client at, `next()` for each request.
pub struct FakeApiServer {
    pub url: String,
    pub addr: SocketAddr,
    requests: mpsc::UnboundedReceiver<ApiRequest>,
}

impl FakeApiServer {
    /// Listens on 127.0.0.1 (an ephemeral port) on the current runtime.
    pub async fn start() -> FakeApiServer {
        let (tx, requests) = mpsc::unbounded_channel();
        let app = axum::Router::new().fallback(handle).with_state(tx);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeApiServer {
            url: format!("http://{addr}"),
            addr,
            requests,
        }
    }

    /// The next request, within `secs` seconds (a test failure otherwise).
    pub async fn next(&mut self, secs: u64) -> ApiRequest {
        tokio::time::timeout(Duration::from_secs(secs), self.requests.recv())
            .await
            .unwrap_or_else(|_| panic!("no API request within {secs}s"))
            .expect("server running")
    }

    /// Asserts that no request arrives within `ms` milliseconds.
    pub async fn expect_none(&mut self, ms: u64) {
        if let Ok(Some(r)) =
            tokio::time::timeout(Duration::from_millis(ms), self.requests.recv()).await
        {
            panic!("unexpected API request {r:?}");
        }
    }
}

async fn handle(
    State(tx): State<mpsc::UnboundedSender<ApiRequest>>,
    uri: Uri,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    let (reply, answer) = oneshot::channel();
    let req = ApiRequest {
        path: uri.path().to_owned(),
        query,
        reply,
    };
    if tx.send(req).is_err() {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    match answer.await {
        Ok(Reply::Body(status, body)) => {
            (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        Ok(Reply::Stream(rx)) => {
            let lines = futures::stream::unfold(rx, |mut rx| async move {
                rx.recv()
                    .await
                    .map(|line| (Ok::<_, Infallible>(Bytes::from(line)), rx))
            });
            (
                [(header::CONTENT_TYPE, "application/json")],
                Body::from_stream(lines),
            )
                .into_response()
        }
        // The test dropped the request without answering.
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}
