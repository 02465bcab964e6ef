//! Diagnosis: from a [`Snapshot`] of the host's own state, a [`Question`] (the failing check's
//! flow) and what the probe observed, an ordered list of [`Finding`]s naming the cause with
//! evidence and fixes. Pure: no I/O here (collection is [`crate::collect::snapshot`]).
//!
//! Entry point: [`diagnose`]. Finding ids are [`FindingId`] (stable kebab-case strings, listed
//! in the README). When nothing explains a failure, [`Diagnosis::findings`] is empty and
//! [`Diagnosis::examined`] says what was looked at; no cause is ever guessed.

mod analyze;
pub mod cli;
mod drop;
mod firewall;
mod inbound;
mod local;
mod question;
mod remote;
mod render;
mod rules;
mod source;

use std::net::IpAddr;

use probe::{Outcome, Reason};
use serde::{Deserialize, Serialize};

use crate::collect::snapshot::Snapshot;

pub use inbound::{
    FarEnd, FarEndStatus, InboundAnswer, InboundQuestion, MAX_QUESTION_BYTES, attach_far_end,
    diagnose_inbound,
};
pub use question::{Protocol, Question, QuestionError, SourceReason};
pub use render::render_human;

/// A finding's stable identifier. The kebab-case string ([`FindingId::as_str`]) is the API and
/// metric label value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FindingId {
    /// Neither a datagram nor a raw ICMP socket is permitted for the prober.
    IcmpPermissionDenied,
    /// A rule drops or rejects the flow.
    FirewallDrop,
    /// The KUBE-FIREWALL localnet rule drops traffic to 127.0.0.0/8 from a non-loopback source.
    LocalnetFirewall,
    /// The route lookup picks a source the check did not expect.
    SourceAddressSelection,
    /// Legacy and nf_tables iptables both hold rules on the same hooks.
    DualIptablesBackend,
    /// A rule or restore payload refers to a chain that does not exist.
    MissingChain,
    /// A Service VIP that kube-proxy did not program.
    ServiceNotProgrammed,
    /// A chain in the target namespace drops everything (pod isolation).
    IsolationDropAll,
    /// `net.ipv4.icmp_echo_ignore_all` makes the target ignore echo requests.
    IcmpEchoIgnored,
    /// Strict reverse-path filtering drops the packet on arrival.
    RpFilterDrop,
    /// The kernel has no route to the destination.
    NoRoute,
    /// The destination answers with a reset: nothing listens.
    PortClosed,
    /// Packets leave this host and no answer comes back: the cause is elsewhere.
    RemoteUnreachable,
}

impl FindingId {
    /// Every id, in the README's order (to pre-register metric label values).
    pub const ALL: [FindingId; 13] = [
        FindingId::IcmpPermissionDenied,
        FindingId::FirewallDrop,
        FindingId::LocalnetFirewall,
        FindingId::SourceAddressSelection,
        FindingId::DualIptablesBackend,
        FindingId::MissingChain,
        FindingId::ServiceNotProgrammed,
        FindingId::IsolationDropAll,
        FindingId::IcmpEchoIgnored,
        FindingId::RpFilterDrop,
        FindingId::NoRoute,
        FindingId::PortClosed,
        FindingId::RemoteUnreachable,
    ];

    /// The stable kebab-case id, e.g. `localnet-firewall`.
    pub fn as_str(self) -> &'static str {
        match self {
            FindingId::IcmpPermissionDenied => "icmp-permission-denied",
            FindingId::FirewallDrop => "firewall-drop",
            FindingId::LocalnetFirewall => "localnet-firewall",
            FindingId::SourceAddressSelection => "source-address-selection",
            FindingId::DualIptablesBackend => "dual-iptables-backend",
            FindingId::MissingChain => "missing-chain",
            FindingId::ServiceNotProgrammed => "service-not-programmed",
            FindingId::IsolationDropAll => "isolation-drop-all",
            FindingId::IcmpEchoIgnored => "icmp-echo-ignored",
            FindingId::RpFilterDrop => "rp-filter-drop",
            FindingId::NoRoute => "no-route",
            FindingId::PortClosed => "port-closed",
            FindingId::RemoteUnreachable => "remote-unreachable",
        }
    }
}

impl std::fmt::Display for FindingId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How serious a finding is. Ordered: `Info < Warning < Error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Context worth knowing; explains nothing by itself.
    Info,
    /// A setup that misleads tools and people, or may cause failures.
    Warning,
    /// Explains why the check fails.
    Error,
}

impl Severity {
    /// `info`, `warning` or `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

/// One cause (or contributing fact), with its evidence and fixes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// Stable id.
    pub id: FindingId,
    /// How serious.
    pub severity: Severity,
    /// One line for a person.
    pub summary: String,
    /// Facts read from the host: rules (`BACKEND FAMILY table TABLE chain CHAIN rule N: TEXT`),
    /// sysctl values, credentials, the route used.
    pub evidence: Vec<String>,
    /// Concrete fixes, most specific first.
    pub fixes: Vec<String>,
}

/// The flow diagnosed, as the evaluator saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowSummary {
    /// `icmp`, `tcp` or `udp`.
    pub protocol: Protocol,
    /// Source address (explicit bind, or the kernel's preferred source); `None` if unknown.
    pub src: Option<IpAddr>,
    /// Why that source.
    pub src_reason: Option<SourceReason>,
    /// Destination address.
    pub dst: IpAddr,
    /// Destination port (TCP/UDP).
    pub dport: Option<u16>,
    /// Output interface of the route used.
    pub out_iface: Option<String>,
}

/// What the probe observed, when it ran (live, or recorded in the snapshot).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observed {
    /// Whether the probe succeeded.
    pub success: bool,
    /// Its failure reason (`timeout`, `connection-refused`, `permission-denied`, …).
    pub reason: Option<Reason>,
    /// Its one-line message.
    pub message: String,
}

impl Observed {
    /// From a probe outcome.
    pub fn from_outcome(o: &Outcome) -> Observed {
        Observed {
            success: o.success,
            reason: o.reason,
            message: o.message.clone(),
        }
    }
}

/// Overall answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Conclusion {
    /// The probe succeeded (or, offline, the state predicts it would) and no finding is an error.
    Healthy,
    /// At least one error finding explains the failure.
    Explained,
    /// The probe failed and nothing examined explains it.
    Unexplained,
}

/// The result of [`diagnose`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnosis {
    /// The check target as given.
    pub target: String,
    /// The flow evaluated; `None` when it could not be built (no source address known).
    pub flow: Option<FlowSummary>,
    /// What the probe observed; `None` offline without a recorded outcome.
    pub observed: Option<Observed>,
    /// The overall answer.
    pub conclusion: Conclusion,
    /// Findings, causes first (errors before warnings before info).
    pub findings: Vec<Finding>,
    /// What was examined, one line each.
    pub examined: Vec<String>,
    /// What could not be read.
    pub unreadable: Vec<String>,
    /// When the snapshot diagnosed was taken, Unix time in milliseconds (0 in a diagnosis
    /// stored before this field existed).
    #[serde(default)]
    pub taken_at_unix_ms: u64,
    /// A mesh pair's far end: what the peer's agent, asked over its API, found on its own host
    /// for the inbound flow ([`attach_far_end`]). Absent (not `null`) from every other
    /// diagnosis, and from those stored before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub far_end: Option<FarEnd>,
}

impl Diagnosis {
    /// The CLI exit code: 0 healthy, 1 a failure (explained or not).
    pub fn exit_code(&self) -> u8 {
        match self.conclusion {
            Conclusion::Healthy => crate::oneshot::EXIT_OK,
            Conclusion::Explained | Conclusion::Unexplained => crate::oneshot::EXIT_FAILED,
        }
    }

    /// The ids of the findings, in order.
    pub fn ids(&self) -> Vec<FindingId> {
        self.findings.iter().map(|f| f.id).collect()
    }
}

/// Extra inputs besides the snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extra {
    /// `iptables-restore` payloads to check (`--restore-payload FILE`): (name shown, text).
    pub restore_payloads: Vec<(String, String)>,
}

/// Diagnoses `question` against `snapshot`. `observed` is the probe's outcome when one ran;
/// without it the diagnosis rests on the state alone (what the rules, routes, sysctls and
/// credentials predict). Never fails: what cannot be read or evaluated is listed in
/// [`Diagnosis::unreadable`] / [`Diagnosis::examined`].
pub fn diagnose(
    snapshot: &Snapshot,
    question: &Question,
    observed: Option<&Outcome>,
    extra: &Extra,
) -> Diagnosis {
    analyze::run(
        snapshot,
        question,
        observed.map(Observed::from_outcome),
        extra,
    )
}

#[cfg(test)]
mod tests;
