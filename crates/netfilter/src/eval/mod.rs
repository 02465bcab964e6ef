//! The packet-path evaluator: which rule of which loaded ruleset decides a [`Flow`].
//!
//! [`trace`] walks the netfilter hooks the flow crosses, in priority order, across every given
//! [`Ruleset`] of the flow's family (several backends may be loaded at once):
//!
//! * [`Origin::LocalOutput`]: OUTPUT (raw, mangle, nat, filter, security), POSTROUTING (mangle,
//!   nat); for a destination on this host the packet then re-enters through `lo`: PREROUTING (raw,
//!   mangle) and INPUT (mangle, filter, security). The nat table is not consulted again on
//!   re-entry: the connection's NAT was set up on the output path (nf_nat_core.c `nf_nat_inet_fn`,
//!   "This can happen for loopback, retrans, or local packets").
//! * [`Origin::Input`] / [`Origin::Forward`]: PREROUTING (raw, mangle, nat), then INPUT (mangle,
//!   filter, security, nat) or FORWARD (mangle, filter, security) and POSTROUTING (mangle, nat).
//!   A DNAT in PREROUTING re-decides input vs forward from [`HostModel`]'s local addresses.
//!
//! The semantics follow the kernel and nft(8) "OVERALL EVALUATION OF THE RULESET": an ACCEPT
//! ends only the current base chain; a packet survives a hook only if no base chain drops it; the
//! nat table sees only the first packet of a connection (ctstate NEW) and, on a hook, only until
//! one nat chain sets up a binding. Base chains of equal priority from different rulesets (the
//! legacy and the nf_tables `filter` table) run in the order given; the kernel's order is
//! undefined. (In practice a later-registered hook runs first, `nf_hook_entries_grow`.) The order
//! changes attribution, marks and NAT, and so can change a verdict through a later mark match. iptables-nft
//! registers its security chains at priority 150, not 50 ([`Hook::backend_priority`]).
//!
//! Anything the rules alone cannot decide — an unmodelled match or target, a missing value of the
//! flow, ipset contents not given, `-m limit`, a jump loop — gives [`Verdict::Undetermined`] with
//! the rule and the reason, never a guessed accept or drop; except that a rule whose target only
//! logs (`LOG`, `NFLOG`, `TRACE`, none) is skipped with a note, as it cannot change the outcome.
//! A `-m statistic` rule (kube-proxy's endpoint choice) forks the walk: [`Traces`] holds one
//! [`Trace`] per branch with its probability.
//!
//! Native nftables base chains ([`trace_all`]) take part in the same walk, ordered by their
//! numeric priority among the iptables tables; `type nat` chains run inside the NAT core at
//! its priority (−100 / 100), ordered among themselves by theirs (nf_nat_core.c
//! `nf_nat_register_fn`). An `nft numgen random mod N` forks the walk like a statistic rule:
//! value `k` is taken as N−1 binary choices with probabilities 1/N, 1/(N−1), …, so each value's
//! branch has probability 1/N.

// `Stop` (a verdict and the rule behind it) is the `Err` of every walking function; it is built
// once per walk, on the way out, so its size costs nothing worth boxing it for. It passed the lint's
// 128-byte line when `RuleRef` grew a native table's name.
#![allow(
    clippy::result_large_err,
    reason = "Stop is returned once per walk, on the way out"
)]

mod flow;
mod hooks;
mod index;
mod matches;
mod nft;
mod packet;
mod path;
mod table_ref;
mod trace;
mod walk;

use serde::Serialize;

pub use flow::{ConnState, Flow, HostModel, IpSet, LocalAddr, Origin, Route};
pub use hooks::Hook;
pub use table_ref::{TableFamily, TableId};
pub use trace::{Choice, Endpoint, NatKind, NatRewrite, RuleRef, Step, Trace, Verdict};

use crate::model::{Family, Ruleset};
use crate::nft::NftRuleset;

/// Bounds on one evaluation, so that no input can make it run away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Limits {
    /// Deepest chain nesting (jumps and gotos) followed before answering undetermined.
    pub max_depth: usize,
    /// Most rules evaluated in one base chain before answering undetermined.
    pub max_rules: usize,
    /// Most statistic branches walked; past it the last trace is undetermined.
    pub max_branches: usize,
}

impl Default for Limits {
    /// Depth 64, 1,000,000 rules per base chain, 1,024 branches.
    fn default() -> Limits {
        Limits {
            max_depth: 64,
            max_rules: 1_000_000,
            max_branches: 1024,
        }
    }
}

/// Every possible path of the flow: one [`Trace`] unless `-m statistic` rules split it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Traces {
    /// The branches, the first taking every statistic rule as matching, in walk order.
    pub branches: Vec<Trace>,
}

impl Traces {
    /// The verdict of every branch when they all agree (an undetermined one gives its reason);
    /// otherwise undetermined, naming the disagreement.
    pub fn verdict(&self) -> Verdict {
        let Some(first) = self.branches.first() else {
            return Verdict::Undetermined {
                reason: "no path was walked".into(),
            };
        };
        if let Some(u) = self
            .branches
            .iter()
            .find(|t| matches!(t.verdict, Verdict::Undetermined { .. }))
        {
            return u.verdict.clone();
        }
        if self.branches.iter().all(|t| t.verdict == first.verdict) {
            return first.verdict.clone();
        }
        let kinds: Vec<&str> = self.branches.iter().map(|t| t.verdict.as_str()).collect();
        Verdict::Undetermined {
            reason: format!("statistic branches disagree: {}", kinds.join(", ")),
        }
    }

    /// The only trace, when the flow did not split.
    pub fn single(&self) -> Option<&Trace> {
        match self.branches.as_slice() {
            [t] => Some(t),
            _ => None,
        }
    }
}

/// Traces `flow` through `rulesets` (rulesets of another family are ignored) on the host `host`,
/// with the default [`Limits`].
pub fn trace(rulesets: &[Ruleset], host: &HostModel, flow: &Flow) -> Traces {
    trace_with(rulesets, host, flow, &Limits::default())
}

/// [`trace`] with explicit limits.
pub fn trace_with(rulesets: &[Ruleset], host: &HostModel, flow: &Flow, limits: &Limits) -> Traces {
    trace_impl(rulesets, host, flow, limits, true)
}

/// Traces `flow` through iptables `rulesets` and native nftables rulesets `nft` together (base
/// chains of both ordered by priority on each hook), with the default [`Limits`].
///
/// `nft` is what [`crate::nft::parse_json`] returns for `nft -j list ruleset`; its iptables-nft
/// tables are already left out, so pass `iptables-nft-save`'s ruleset in `rulesets` and no rule
/// is counted twice. Native rules appear in traces with backend `nftables`, family `ipv4`,
/// `ipv6` or `inet`, their table's name and chain, and their 1-based position in the chain.
pub fn trace_all(
    rulesets: &[Ruleset],
    nft: &[NftRuleset],
    host: &HostModel,
    flow: &Flow,
) -> Traces {
    trace_all_with(rulesets, nft, host, flow, &Limits::default())
}

/// [`trace_all`] with explicit limits.
pub fn trace_all_with(
    rulesets: &[Ruleset],
    nft: &[NftRuleset],
    host: &HostModel,
    flow: &Flow,
    limits: &Limits,
) -> Traces {
    trace_full(rulesets, nft, host, flow, limits, true)
}

/// [`trace_with`], with the chain indexes on or off (off: every rule is walked, the reference the
/// index is tested against).
pub(crate) fn trace_impl(
    rulesets: &[Ruleset],
    host: &HostModel,
    flow: &Flow,
    limits: &Limits,
    indexed: bool,
) -> Traces {
    trace_full(rulesets, &[], host, flow, limits, indexed)
}

fn trace_full(
    rulesets: &[Ruleset],
    native: &[NftRuleset],
    host: &HostModel,
    flow: &Flow,
    limits: &Limits,
    indexed: bool,
) -> Traces {
    let indexes = index::Indexes::new(indexed);
    if Family::of(flow.src) != flow.family || Family::of(flow.dst) != flow.family {
        let reason = "the flow's addresses are not of its family".to_string();
        return Traces {
            branches: vec![path::undetermined_trace(reason)],
        };
    }
    // Enumerate the statistic branches breadth-first: every walk that meets a statistic rule past
    // its prefix queues the other outcome of it.
    let mut branches = Vec::new();
    let mut queue = std::collections::VecDeque::from([Vec::<bool>::new()]);
    while let Some(prefix) = queue.pop_front() {
        if branches.len() >= limits.max_branches.max(1) {
            let reason = format!("more than {} statistic branches", limits.max_branches);
            branches.push(path::undetermined_trace(reason));
            break;
        }
        let trace = path::walk_once(rulesets, native, host, flow, limits, &indexes, &prefix);
        for k in prefix.len()..trace.branch.len() {
            // An outcome of probability 0 (`--probability 1`) cannot happen.
            if trace.branch[k].probability >= 1.0 {
                continue;
            }
            let mut alt: Vec<bool> = trace.branch[..k].iter().map(|c| c.matched).collect();
            alt.push(!trace.branch[k].matched);
            queue.push_back(alt);
        }
        branches.push(trace);
    }
    Traces { branches }
}
