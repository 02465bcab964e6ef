//! What the evaluator answers: a [`Trace`] per possible path of the packet.

use std::net::IpAddr;

use serde::Serialize;

use crate::model::Backend;
use crate::target::RejectWith;

use super::hooks::Hook;
use super::table_ref::{TableFamily, TableId};

/// The packet's fate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Verdict {
    /// It passes every hook it crosses.
    Accept,
    /// A rule or a policy drops it (a local sender's `sendmsg` gets EPERM; a TCP SYN is silently retried).
    Drop,
    /// A `REJECT` rule answers with an ICMP error or a TCP RST.
    Reject {
        /// What is sent back.
        with: RejectWith,
    },
    /// The rules alone cannot decide (an unmodelled match, missing ipset contents, a stateful
    /// match, a jump loop, …); never a guessed accept or drop.
    Undetermined {
        /// Why, in words.
        reason: String,
    },
}

impl Verdict {
    /// `accept`, `drop`, `reject` or `undetermined`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Verdict::Accept => "accept",
            Verdict::Drop => "drop",
            Verdict::Reject { .. } => "reject",
            Verdict::Undetermined { .. } => "undetermined",
        }
    }
}

/// A rule (or a chain policy) of one loaded ruleset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleRef {
    /// The backend that holds it, when known.
    pub backend: Option<Backend>,
    /// The family of its ruleset or native table (`ipv4`, `ipv6`, `inet`).
    pub family: TableFamily,
    /// Its table (`filter`, or a native table's name such as `kube-proxy`).
    pub table: TableId,
    /// Its chain.
    pub chain: String,
    /// The 1-based rule number within the chain (`iptables -L --line-numbers`; for a native
    /// rule, its position in `nft list chain`); `None` for the chain's policy.
    #[serde(rename = "rule")]
    pub rule_number: Option<usize>,
    /// The rule's text as written (nft syntax for a native rule), or `:CHAIN POLICY` for a
    /// policy (`policy drop` for a native base chain).
    pub text: String,
    /// The rule's `-m comment` (or nft `comment`) text.
    pub comment: Option<String>,
}

/// One step of the walk: a rule examined, a policy applied, or a table skipped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    /// The hook being traversed.
    pub hook: Hook,
    /// The backend of the ruleset.
    pub backend: Option<Backend>,
    /// The table.
    pub table: TableId,
    /// The chain.
    pub chain: String,
    /// The 1-based rule number; `None` for a policy or a note about the whole chain.
    pub rule_number: Option<usize>,
    /// Whether the rule matched (a policy or a note: whether it applied).
    pub matched: bool,
    /// Why it did or did not match, and what followed.
    pub why: String,
}

/// An address and port of the packet before or after a NAT rewrite. `None`: not known (a
/// MASQUERADE on an interface with several addresses, a port range).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    /// The address.
    pub addr: Option<IpAddr>,
    /// The port.
    pub port: Option<u16>,
}

/// Which NAT target rewrote the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NatKind {
    /// `DNAT`.
    Dnat,
    /// `REDIRECT` (a DNAT to this host).
    Redirect,
    /// `SNAT`.
    Snat,
    /// `MASQUERADE` (an SNAT to the output interface's address).
    Masquerade,
}

/// A NAT binding set up for the connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NatRewrite {
    /// The hook.
    pub hook: Hook,
    /// The rule that set it.
    pub rule: RuleRef,
    /// Which target.
    pub kind: NatKind,
    /// Destination (DNAT/REDIRECT) or source (SNAT/MASQUERADE) before.
    pub from: Endpoint,
    /// The same after.
    pub to: Endpoint,
}

/// One outcome of a `-m statistic` rule on this path; or one step of an nft `numgen … mod N`
/// draw, where value `k` is `k` choices not taken (probabilities 1 − 1/N, 1 − 1/(N−1), …) then
/// one taken (1/(N−k)), so that each value's path has probability 1/N.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Choice {
    /// The rule.
    pub rule: RuleRef,
    /// Whether this path takes it as matching.
    pub matched: bool,
    /// The probability of that outcome (0..=1; for `--mode nth`, `1/every` for a match).
    pub probability: f64,
}

/// The walk of one packet along one path.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Trace {
    /// The verdict.
    pub verdict: Verdict,
    /// The rule or policy that decided a drop, reject or undetermined; `None` for an accept
    /// (every hook's chains let it through; the steps show how).
    pub decided_by: Option<RuleRef>,
    /// Every step, in order.
    pub steps: Vec<Step>,
    /// NAT bindings, in order.
    pub nat: Vec<NatRewrite>,
    /// The `-m statistic` outcomes that select this path (empty when there were none).
    pub branch: Vec<Choice>,
    /// The probability of this path: the product of the choices' probabilities (1 without any).
    pub probability: f64,
}
