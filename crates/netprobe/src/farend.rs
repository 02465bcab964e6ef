//! Two-ended diagnosis of mesh pairs: both sides of `POST /api/v1/diagnose/inbound`.
//!
//! * The answering side, [`InboundService`]: a peer asks this agent to trace the inbound flow
//!   (its echo request, or a SYN to the agent port) on this host. The snapshot is the one the
//!   automatic diagnosis takes ([`crate::collect::snapshot::take`], this process's own network
//!   namespace, no route question), collected on the blocking pool; the trace is
//!   [`crate::diagnose::diagnose_inbound`].
//! * The asking side, [`ask`]: when a pair loses every echo, the observer's automatic diagnosis
//!   ([`crate::autodiag`]) asks the peer's agent at `PEER_ADDRESS:PEER_PORT` (the port the mesh's
//!   TCP fallback uses) and attaches the answer ([`crate::diagnose::attach_far_end`]).
//!
//! Bounds (the endpoint must not become a way to load an agent): one collection at a time; a
//! snapshot is reused for [`SNAPSHOT_REUSE`], so however many peers ask, the `*-save` tools run
//! at most once per interval; a request waits at most [`QUEUE_WAIT`] for its turn, then gets
//! 429. The asker connects within [`CONNECT_TIMEOUT`] and gives the whole exchange
//! [`ANSWER_TIMEOUT`]; it reads at most [`MAX_ANSWER_BYTES`].
//!
//! Security: the endpoint only reads (the collectors run `*-save`, `nft list`, `ip`, read
//! `/proc`); it answers only for a destination that is an address of this host, and only when
//! the mesh is configured. Its answer shows fragments of the ruleset (the rule that drops, the
//! path to it), as the diagnosis endpoints already do.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Bytes;
use tokio::time::Instant;

use crate::collect::NetnsTarget;
use crate::collect::snapshot::{self, Snapshot, SnapshotRequest};
use crate::diagnose::{
    FarEnd, FarEndStatus, InboundAnswer, InboundQuestion, Protocol, diagnose_inbound,
};

/// A snapshot answers every question asked within this long of its collection.
pub const SNAPSHOT_REUSE: Duration = Duration::from_secs(5);
/// A request waits at most this long for the collection in progress; then 429.
pub const QUEUE_WAIT: Duration = Duration::from_secs(3);
/// The asker's bound on connecting to the far agent.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The asker's bound on the whole exchange, connect included: the far end may have to collect
/// its snapshot (iptables-save of every backend, nft, ip) first.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest answer read, in bytes.
pub const MAX_ANSWER_BYTES: usize = 1 << 20;
/// The endpoint's path.
pub const INBOUND_PATH: &str = "/api/v1/diagnose/inbound";

/// Why the inbound endpoint gave no answer; each maps to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum InboundError {
    /// The body is not a question, or the flow cannot be an inbound one (400).
    #[error("{0}")]
    BadRequest(String),
    /// The destination is not an address of this host (400).
    #[error("destination {0} is not an address of this host (its addresses: {1})")]
    NotLocal(IpAddr, String),
    /// Another question is being answered and did not finish within [`QUEUE_WAIT`] (429).
    #[error("busy: another inbound diagnosis is being collected; retry in a few seconds")]
    Busy,
    /// The host's state could not be read (500).
    #[error("{0}")]
    Failed(String),
}

struct Cached {
    at: Instant,
    snapshot: Arc<Snapshot>,
}

/// The answering side of the endpoint; see the module docs.
pub struct InboundService {
    node: String,
    gate: tokio::sync::Mutex<Option<Cached>>,
}

/// This process's addresses (its network namespace's), from `getifaddrs(3)`.
///
/// Errors: the call failed.
pub fn local_addresses() -> Result<Vec<IpAddr>, String> {
    let addrs = nix::ifaddrs::getifaddrs().map_err(|e| format!("getifaddrs: {e}"))?;
    let mut out: Vec<IpAddr> = addrs
        .filter_map(|a| {
            let sa = a.address?;
            sa.as_sockaddr_in()
                .map(|s| IpAddr::V4(s.ip()))
                .or_else(|| sa.as_sockaddr_in6().map(|s| IpAddr::V6(s.ip())))
        })
        .collect();
    out.sort();
    out.dedup();
    Ok(out)
}

impl InboundService {
    /// The service of the agent named `node` in the mesh.
    pub fn new(node: String) -> Arc<InboundService> {
        Arc::new(InboundService {
            node,
            gate: tokio::sync::Mutex::new(None),
        })
    }

    /// Answers `body` (an [`InboundQuestion`] as JSON).
    ///
    /// Errors: [`InboundError`] — a bad question or a destination that is not an address of
    /// this host (400), busy (429), the snapshot failed (500).
    pub async fn answer(&self, body: &[u8]) -> Result<InboundAnswer, InboundError> {
        let q = InboundQuestion::from_json(body).map_err(InboundError::BadRequest)?;
        let mine = local_addresses().map_err(InboundError::Failed)?;
        let dst = q.destination.to_canonical();
        if !mine.contains(&dst) {
            let list: Vec<String> = mine
                .iter()
                .filter(|a| !a.is_loopback())
                .map(IpAddr::to_string)
                .collect();
            return Err(InboundError::NotLocal(dst, list.join(", ")));
        }
        let mut gate = tokio::time::timeout(QUEUE_WAIT, self.gate.lock())
            .await
            .map_err(|_| InboundError::Busy)?;
        let snapshot = match gate.as_ref() {
            Some(c) if c.at.elapsed() < SNAPSHOT_REUSE => Arc::clone(&c.snapshot),
            _ => {
                let taken = tokio::task::spawn_blocking(|| {
                    snapshot::take(&SnapshotRequest {
                        netns: NetnsTarget::Current,
                        as_pid: None,
                        dst: None,
                        target_netns: None,
                        locate_target: false,
                    })
                })
                .await
                .map_err(|e| InboundError::Failed(format!("snapshot task: {e}")))?
                .map_err(|e| InboundError::Failed(format!("snapshot: {e}")))?;
                let s = Arc::new(taken);
                *gate = Some(Cached {
                    at: Instant::now(),
                    snapshot: Arc::clone(&s),
                });
                s
            }
        };
        // The trace of a large ruleset takes a while too: still one at a time, off the workers.
        let diagnosis = tokio::task::spawn_blocking(move || diagnose_inbound(&snapshot, &q))
            .await
            .map_err(|e| InboundError::Failed(format!("diagnosis task: {e}")))?;
        drop(gate);
        Ok(InboundAnswer {
            node: self.node.clone(),
            diagnosis,
        })
    }
}

/// The far end of a mesh pair to ask: its agent, and the flow that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FarEndTarget {
    /// The peer's mesh node name.
    pub node: String,
    /// The peer agent's API address (`PEER_ADDRESS:PEER_PORT`).
    pub agent: SocketAddr,
    /// The peer address the failing flow is sent to.
    pub destination: IpAddr,
    /// The failing flow's protocol (`icmp` for a mesh pair's echoes).
    pub protocol: Protocol,
    /// Its TCP port, for `tcp`.
    pub port: Option<u16>,
}

/// Why [`ask`] got no diagnosis.
#[derive(Debug, thiserror::Error)]
enum AskError {
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("connect: timed out after {}s", CONNECT_TIMEOUT.as_secs())]
    ConnectTimeout,
    #[error("no answer within {}s", ANSWER_TIMEOUT.as_secs())]
    AnswerTimeout,
    #[error("{0}")]
    Exchange(String),
    #[error("answered {status}: {message}")]
    Status { status: u16, message: String },
}

/// Asks `target`'s agent about the inbound flow and returns the [`FarEnd`] section of the pair's
/// diagnosis. The question's `source` is the local address of the connection to the agent: the
/// kernel's choice for that destination, as for the probe. Never fails: an agent that cannot be
/// reached is [`FarEndStatus::Unreachable`], one that answers with an error or too late
/// [`FarEndStatus::Failed`], both with the reason in `error`.
pub async fn ask(target: &FarEndTarget) -> FarEnd {
    let mut far = FarEnd {
        node: target.node.clone(),
        agent: target.agent.to_string(),
        status: FarEndStatus::Failed,
        question: None,
        diagnosis: None,
        error: None,
    };
    let started = Instant::now();
    let stream = match tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio::net::TcpStream::connect(target.agent),
    )
    .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return unreachable(far, &AskError::Connect(e)),
        Err(_) => return unreachable(far, &AskError::ConnectTimeout),
    };
    let source = match stream.local_addr() {
        Ok(a) => a.ip().to_canonical(),
        Err(e) => return unreachable(far, &AskError::Connect(e)),
    };
    let q = InboundQuestion {
        source,
        destination: target.destination,
        protocol: target.protocol,
        port: target.port,
    };
    far.question = Some(q.clone());
    let left = ANSWER_TIMEOUT.saturating_sub(started.elapsed());
    let answer = match tokio::time::timeout(left, exchange(stream, target.agent, &q)).await {
        Ok(r) => r,
        Err(_) => Err(AskError::AnswerTimeout),
    };
    match answer {
        Ok(a) => {
            far.status = FarEndStatus::Answered;
            if a.node != target.node {
                // Not an error: a DNS-discovered peer is named by its address.
                tracing::debug!(asked = %target.node, answered = %a.node, "far end has another name");
            }
            far.diagnosis = Some(Box::new(a.diagnosis));
        }
        Err(e) => far.error = Some(e.to_string()),
    }
    far
}

fn unreachable(mut far: FarEnd, e: &AskError) -> FarEnd {
    far.status = FarEndStatus::Unreachable;
    far.error = Some(e.to_string());
    far
}

/// One HTTP/1.1 POST on `stream`; the answer as [`InboundAnswer`].
async fn exchange(
    stream: tokio::net::TcpStream,
    agent: SocketAddr,
    q: &InboundQuestion,
) -> Result<InboundAnswer, AskError> {
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, conn) = hyper::client::conn::http1::handshake::<_, Full<Bytes>>(io)
        .await
        .map_err(|e| AskError::Exchange(format!("handshake: {e}")))?;
    // The connection task ends with the exchange (the sender is dropped) or, bounded, on its own.
    tokio::spawn(async move {
        let _ = tokio::time::timeout(ANSWER_TIMEOUT, conn).await;
    });
    let body = serde_json::to_vec(q).map_err(|e| AskError::Exchange(e.to_string()))?;
    let req = hyper::Request::post(INBOUND_PATH)
        .header(hyper::header::HOST, agent.to_string())
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(hyper::header::USER_AGENT, "netprobe-mesh")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| AskError::Exchange(format!("request: {e}")))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| AskError::Exchange(format!("request: {e}")))?;
    let status = resp.status();
    let bytes = Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
        .collect()
        .await
        .map_err(|e| AskError::Exchange(format!("reading the answer: {e}")))?
        .to_bytes();
    if !status.is_success() {
        let message = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("error")?.as_str().map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).chars().take(200).collect());
        return Err(AskError::Status {
            status: status.as_u16(),
            message,
        });
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| AskError::Exchange(format!("the answer is not a diagnosis: {e}")))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    /// Nothing listens on the port: the far end is unreachable, and says why.
    #[tokio::test]
    async fn a_closed_port_is_unreachable() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let agent = l.local_addr().unwrap();
        drop(l);
        let far = ask(&FarEndTarget {
            node: "n".into(),
            agent,
            destination: agent.ip(),
            protocol: Protocol::Icmp,
            port: None,
        })
        .await;
        assert_eq!(far.status, FarEndStatus::Unreachable, "{far:?}");
        assert!(far.error.unwrap().starts_with("connect: "));
        assert!(far.question.is_none());
    }

    /// In a namespace of its own (198.51.100.7 on a veth): a destination elsewhere (its peer's) is
    /// refused, two questions within [`SNAPSHOT_REUSE`] share one snapshot, and a question that
    /// waits behind the gate for longer than [`QUEUE_WAIT`] is busy (paused time).
    #[test]
    fn bounded_and_only_for_this_hosts_addresses() {
        let ns = lab::Netns::new("npfarend").unwrap();
        let peer = lab::Netns::new("npfarendp").unwrap();
        let _veth = lab::Veth::connect(&ns, "198.51.100.7/24", &peer, "198.51.100.9/24").unwrap();
        ns.run_in(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let svc = InboundService::new("n".into());
                let q = |dst: &str| {
                    format!(
                        r#"{{"source": "198.51.100.1", "destination": "{dst}", "protocol": "icmp"}}"#
                    )
                };
                let err = svc.answer(q("198.51.100.9").as_bytes()).await.unwrap_err();
                assert!(matches!(err, InboundError::NotLocal(..)), "{err}");
                assert!(err.to_string().contains("its addresses: 198.51.100.7"), "{err}");
                let err = svc.answer(b"{}").await.unwrap_err();
                assert!(matches!(err, InboundError::BadRequest(_)), "{err}");
                let a = svc.answer(q("198.51.100.7").as_bytes()).await.unwrap();
                let b = svc.answer(q("198.51.100.7").as_bytes()).await.unwrap();
                assert_eq!(a.node, "n");
                assert!(a.diagnosis.findings.is_empty(), "{:#?}", a.diagnosis);
                assert_eq!(a.diagnosis.taken_at_unix_ms, b.diagnosis.taken_at_unix_ms);
                let _held = svc.gate.lock().await;
                tokio::time::pause();
                let err = svc.answer(q("198.51.100.7").as_bytes()).await.unwrap_err();
                assert!(matches!(err, InboundError::Busy), "{err}");
            });
        })
        .unwrap();
    }

    #[test]
    fn this_hosts_addresses_include_loopback() {
        let mine = local_addresses().unwrap();
        assert!(mine.contains(&IpAddr::from([127, 0, 0, 1])), "{mine:?}");
    }
}
