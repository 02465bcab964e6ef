//! The far end of a two-ended diagnosis: a mesh peer's agent, asked over its API
//! (`POST /api/v1/diagnose/inbound`), traces the *inbound* flow on its own host — the observer's
//! echo request (or TCP SYN to the agent port) arriving from `source` at one of its own
//! addresses, then its reply leaving — and names what stops it. The observer attaches that
//! answer to its own diagnosis of the pair ([`attach_far_end`]).
//!
//! Pure, like the rest of [`crate::diagnose`]: the snapshot is taken by the caller
//! ([`crate::farend`]).

use std::net::IpAddr;

use netfilter::eval::{ConnState, Flow, Origin, Verdict, trace_all};
use serde::{Deserialize, Serialize};

use super::analyze::{Ctx, build_flow, finish, parse};
use super::drop::{classify_drop, tool_for};
use super::firewall::{describe_rule, path};
use super::local::{endpoint_checks, rp_filter};
use super::{Conclusion, Diagnosis, Finding, FindingId, FlowSummary, Protocol, Question, Severity};
use crate::collect::snapshot::Snapshot;

/// Largest request body the inbound endpoint reads, in bytes.
pub const MAX_QUESTION_BYTES: usize = 4096;

/// The flow a far-end agent is asked about, as the JSON body of
/// `POST /api/v1/diagnose/inbound`:
/// `{"source": "198.51.100.1", "destination": "198.51.100.5", "protocol": "icmp"}` or
/// `{…, "protocol": "tcp", "port": 8080}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboundQuestion {
    /// The observer's address: the packets' source as they arrive.
    pub source: IpAddr,
    /// The address of the answering host they are sent to.
    pub destination: IpAddr,
    /// `icmp` (an echo request) or `tcp` (a SYN to `port`).
    pub protocol: Protocol,
    /// The TCP destination port; required for `tcp`, refused for `icmp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

impl InboundQuestion {
    /// Reads and checks a request body. Errors (a 400's message): not JSON of this shape,
    /// longer than [`MAX_QUESTION_BYTES`], or a flow [`InboundQuestion::check`] refuses.
    pub fn from_json(body: &[u8]) -> Result<InboundQuestion, String> {
        if body.len() > MAX_QUESTION_BYTES {
            return Err(format!(
                "the body is {} bytes; at most {MAX_QUESTION_BYTES} are read",
                body.len()
            ));
        }
        let q: InboundQuestion = serde_json::from_slice(body).map_err(|e| {
            format!(
                "invalid body: {e}; expected {{\"source\": ADDRESS, \"destination\": ADDRESS, \
                 \"protocol\": \"icmp\"|\"tcp\", \"port\": PORT (tcp only)}}"
            )
        })?;
        q.check()?;
        Ok(q)
    }

    /// Refuses what cannot be an inbound flow from a peer: mixed families, a loopback,
    /// unspecified or multicast address, `udp`, a `tcp` question without a port (or port 0),
    /// an `icmp` one with a port. Whether `destination` is an address of this host is the
    /// caller's to check (it needs the host).
    pub fn check(&self) -> Result<(), String> {
        let (s, d) = (self.source.to_canonical(), self.destination.to_canonical());
        if s.is_ipv4() != d.is_ipv4() {
            return Err(format!(
                "source {s} and destination {d} are of different address families"
            ));
        }
        for (what, a) in [("source", s), ("destination", d)] {
            if a.is_unspecified() || a.is_multicast() || a.is_loopback() {
                return Err(format!(
                    "{what} {a} is not a unicast address of a peer (loopback, unspecified and multicast \
                     addresses are refused)"
                ));
            }
        }
        match (self.protocol, self.port) {
            (Protocol::Icmp, None) => Ok(()),
            (Protocol::Icmp, Some(_)) => Err("an icmp question takes no port".to_owned()),
            (Protocol::Tcp, Some(p)) if p > 0 => Ok(()),
            (Protocol::Tcp, _) => Err("a tcp question needs a port from 1 to 65535".to_owned()),
            (Protocol::Udp, _) => Err("protocol udp is not asked; expected icmp or tcp".to_owned()),
        }
    }

    /// The flow as a diagnosis [`Question`]: the destination is this host, the source the
    /// observer's. Its `target` reads `inbound icmp 198.51.100.1 -> 198.51.100.5` (`:PORT` for tcp).
    pub fn question(&self) -> Question {
        Question {
            target: format!(
                "inbound {} {} -> {}{}",
                self.protocol.as_str(),
                self.source,
                self.destination,
                self.port.map_or(String::new(), |p| format!(":{p}"))
            ),
            protocol: self.protocol,
            dst: self.destination.to_canonical(),
            dport: self.port,
            source: Some(self.source.to_canonical()),
        }
    }
}

/// The answer of `POST /api/v1/diagnose/inbound`: `{"node": NAME, "diagnosis": {…}}`, the
/// diagnosis in the shape of `netprobe diagnose --json` with `observed: null` (the far end
/// judges from its state alone) and `conclusion` `explained` (a finding on this host stops the
/// flow or its reply) or `healthy` (this host lets the flow in and the reply out).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboundAnswer {
    /// The answering agent's mesh node name.
    pub node: String,
    /// Its diagnosis of the inbound flow.
    pub diagnosis: Diagnosis,
}

/// Diagnoses the inbound flow `q` against `snapshot` (this host's own namespace, taken without
/// a route question): reverse-path filtering, the arrival path (PREROUTING, INPUT) of the echo
/// request or SYN, the echo sysctl or a listening socket, then the reply (echo reply or SYN-ACK,
/// conntrack ESTABLISHED) on the output path (OUTPUT, POSTROUTING). No probe ran here, so
/// `observed` is `None`.
pub fn diagnose_inbound(snapshot: &Snapshot, q: &InboundQuestion) -> Diagnosis {
    let question = q.question();
    let src = question.source.unwrap_or(q.source);
    let mut cx = Ctx {
        snap: snapshot,
        q: &question,
        observed: None,
        findings: Vec::new(),
        examined: Vec::new(),
        unreadable: snapshot.unreadable(),
        src: Some(src),
        src_reason: None,
        asked_by: Some(src),
    };
    let state = &snapshot.prober;
    let ns = state.netns.netns.describe();
    let (parsed, host) = parse(state, &mut cx);
    let in_iface = host.local_iface(question.dst).map(str::to_string);
    let reply_iface = host.route_dev(src).map(str::to_string);
    let summary = FlowSummary {
        protocol: question.protocol,
        src: Some(src),
        src_reason: None,
        dst: question.dst,
        dport: question.dport,
        out_iface: reply_iface.clone(),
    };
    let Some(in_iface) = in_iface else {
        cx.examined.push(format!(
            "{} is not an address of the {ns}: nothing to trace",
            question.dst
        ));
        return finish(cx, Some(summary));
    };
    cx.examined.push(format!(
        "inbound {} from {src} arrives on {in_iface} ({} is configured there); the reply to {src} \
         leaves by {}",
        question.protocol.as_str(),
        question.dst,
        reply_iface.as_deref().unwrap_or("no route")
    ));
    let mut flow = build_flow(&question, src, Origin::Input);
    flow.in_iface = Some(in_iface.clone());
    if rp_filter(&mut cx, state, &host, &flow, Some(in_iface.as_str())) {
        return finish(cx, Some(summary));
    }
    let traces = trace_all(&parsed.rulesets, &parsed.nft, &host, &flow);
    let arrival = traces.branches.first().cloned();
    cx.examined.push(format!(
        "arrival path in the {ns}: {} ({} step(s))",
        verdict_text(&traces.verdict()),
        arrival.as_ref().map_or(0, |t| t.steps.len())
    ));
    if let Some(t) = &arrival
        && classify_drop(&mut cx, t, &ns, None, false)
    {
        return finish(cx, Some(summary));
    }
    endpoint_checks(&mut cx, state);
    if cx.has_error() {
        return finish(cx, Some(summary));
    }
    // The reply: only a packet of a connection conntrack has seen both ways.
    let mut reply = match question.protocol {
        Protocol::Tcp => {
            let mut f = Flow::new(Origin::LocalOutput, 6, question.dst, src)
                .with_state(ConnState::Established);
            f.sport = question.dport;
            f.tcp_flags =
                Some(netfilter::matches::tcp_flags::SYN | netfilter::matches::tcp_flags::ACK);
            f
        }
        _ => {
            let mut f = Flow::echo_request(Origin::LocalOutput, question.dst, src)
                .with_state(ConnState::Established);
            f.icmp_type = Some(if src.is_ipv4() { 0 } else { 129 });
            f
        }
    };
    reply.out_iface.clone_from(&reply_iface);
    let traces = trace_all(&parsed.rulesets, &parsed.nft, &host, &reply);
    let out = traces.branches.first().cloned();
    cx.examined.push(format!(
        "reply path ({}) in the {ns}: {} ({} step(s))",
        reply_name(&question),
        verdict_text(&traces.verdict()),
        out.as_ref().map_or(0, |t| t.steps.len())
    ));
    if let Some(t) = &out {
        reply_drop(&mut cx, t, &ns);
    }
    finish(cx, Some(summary))
}

fn reply_name(q: &Question) -> &'static str {
    match (q.protocol, q.dst.is_ipv4()) {
        (Protocol::Tcp, _) => "tcp SYN-ACK",
        (_, true) => "icmp echo-reply",
        (_, false) => "icmpv6 echo-reply",
    }
}

fn verdict_text(v: &Verdict) -> String {
    match v {
        Verdict::Undetermined { reason } => format!("undetermined ({reason})"),
        other => other.as_str().to_string(),
    }
}

/// `firewall-drop` of the reply: the request arrives and is answered, the answer never leaves.
fn reply_drop(cx: &mut Ctx<'_>, t: &netfilter::eval::Trace, ns: &str) {
    if !matches!(t.verdict, Verdict::Drop | Verdict::Reject { .. }) {
        return;
    }
    let Some(rule) = &t.decided_by else {
        return;
    };
    let q = cx.q;
    let src = q.source.unwrap_or(q.dst);
    let what = reply_name(q);
    let mut evidence = vec![describe_rule(rule)];
    evidence.extend(path(t, 12));
    evidence.push(format!(
        "the request from {src} is let in; its reply ({what}, conntrack ESTABLISHED) is not let out"
    ));
    let l4 = match (q.protocol, q.dport) {
        (Protocol::Tcp, Some(p)) => format!("-p tcp --sport {p}"),
        _ if q.dst.is_ipv4() => "-p icmp --icmp-type echo-reply".to_string(),
        _ => "-p icmpv6 --icmpv6-type echo-reply".to_string(),
    };
    let fix = if rule.backend == Some(netfilter::Backend::Nftables) {
        format!(
            "allow the reply before that rule (`nft -a list chain {} {} {}` for its handle, then `nft \
             insert rule … position HANDLE ct state established accept`), or remove the rule",
            match rule.family {
                netfilter::eval::TableFamily::Ipv4 => "ip",
                netfilter::eval::TableFamily::Ipv6 => "ip6",
                netfilter::eval::TableFamily::Inet => "inet",
            },
            rule.table,
            rule.chain
        )
    } else {
        format!(
            "allow the reply before that rule, e.g. `{} -t {} -I {} {} {l4} -d {src} -j ACCEPT`, or \
             remove the rule if it is not meant for this traffic",
            tool_for(rule),
            rule.table,
            rule.chain,
            rule.rule_number.unwrap_or(1)
        )
    };
    cx.findings.push(Finding {
        id: FindingId::FirewallDrop,
        severity: Severity::Error,
        summary: format!(
            "{} {} {} the reply {what} {} -> {src} in the {ns}",
            netfilter::Backend::name_of(rule.backend),
            rule.rule_number
                .map_or(format!("chain {} policy", rule.chain), |n| format!(
                    "rule {n} of {} {}",
                    rule.table, rule.chain
                )),
            if matches!(t.verdict, Verdict::Drop) {
                "drops"
            } else {
                "rejects"
            },
            q.dst
        ),
        evidence,
        fixes: vec![fix],
    });
}

/// How the far end was asked, in a pair's stored diagnosis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FarEndStatus {
    /// The far agent answered: `diagnosis` holds its view.
    Answered,
    /// No connection to the far agent (refused, timed out, no route): the flow may be blocked
    /// both ways, or the agent is down. Nothing is known of the far end.
    Unreachable,
    /// The far agent was reached but gave no diagnosis (an error status, a garbled answer, too
    /// slow): `error` says what it said.
    Failed,
}

/// The far end's part of a mesh pair's diagnosis ([`Diagnosis::far_end`]):
/// `{"node", "agent", "status": "answered"|"unreachable"|"failed", "question" | null,
/// "diagnosis" | null, "error" | null}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FarEnd {
    /// The peer's mesh node name.
    pub node: String,
    /// The peer agent asked, `ADDRESS:PORT` (`[v6]:PORT`).
    pub agent: String,
    /// Whether and how it answered.
    pub status: FarEndStatus,
    /// The question sent (`None` when no connection was made: its source is the connection's).
    pub question: Option<InboundQuestion>,
    /// The far agent's diagnosis of the inbound flow on its own host, when it answered.
    pub diagnosis: Option<Box<Diagnosis>>,
    /// Why there is no diagnosis, when there is none.
    pub error: Option<String>,
}

impl FarEnd {
    /// The ids of the far end's findings, in order (none unless it answered).
    pub fn ids(&self) -> Vec<FindingId> {
        self.diagnosis.as_ref().map_or_else(Vec::new, |d| d.ids())
    }
}

/// Attaches the far end's answer to the observer's own diagnosis `d`: sets
/// [`Diagnosis::far_end`], adds one `examined` line saying what the far end said (or that it
/// could not be asked, and why), and turns an `unexplained` conclusion into `explained` when
/// the far end names an error cause. The observer's own findings are left as they are: the
/// far end's stay in its section, so nothing on this host is claimed from them.
pub fn attach_far_end(d: &mut Diagnosis, far: FarEnd) {
    let line = match (&far.status, &far.diagnosis) {
        (FarEndStatus::Answered, Some(fd)) => {
            let causes: Vec<&Finding> = fd
                .findings
                .iter()
                .filter(|f| f.severity == Severity::Error)
                .collect();
            match causes.first() {
                Some(first) => {
                    if d.conclusion == Conclusion::Unexplained {
                        d.conclusion = Conclusion::Explained;
                    }
                    format!(
                        "far end {} (agent at {}) names the cause on its own host: {} ({})",
                        far.node,
                        far.agent,
                        causes
                            .iter()
                            .map(|f| f.id.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                        first.summary
                    )
                }
                None => format!(
                    "far end {} (agent at {}): nothing on its own host stops the inbound flow or its reply",
                    far.node, far.agent
                ),
            }
        }
        (FarEndStatus::Unreachable, _) => format!(
            "far-end agent at {} unreachable: {}; what happens on {} is unknown",
            far.agent,
            far.error.as_deref().unwrap_or("no connection"),
            far.node
        ),
        _ => format!(
            "far-end agent at {} gave no diagnosis: {}",
            far.agent,
            far.error.as_deref().unwrap_or("no answer")
        ),
    };
    d.examined.push(line);
    d.far_end = Some(far);
}
