//! Helpers shared by the evaluator tests.
#![allow(dead_code, clippy::unwrap_used, reason = "test helpers")]

use std::net::IpAddr;

use netfilter::eval::{HostModel, Step, Trace, Verdict};
use netfilter::{Backend, ParseOptions, Ruleset, parse_save};

/// Parses an `iptables-save` text (IPv4 unless its header says otherwise) as `backend`.
pub fn rules(text: &str, backend: Backend) -> Ruleset {
    let opts = ParseOptions {
        family: None,
        backend: Some(backend),
    };
    parse_save(text, &opts).unwrap()
}

/// Parses as the legacy backend.
pub fn legacy(text: &str) -> Ruleset {
    rules(text, Backend::Legacy)
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A host with 198.51.100.5/24 on eth0 and 203.0.113.1/24 on eth1.
pub fn host() -> HostModel {
    HostModel::default()
        .with_addr("eth0", ip("198.51.100.5"), 24)
        .with_addr("eth1", ip("203.0.113.1"), 24)
}

/// The decisive rule as `(table, chain, rule number)`.
pub fn decided(t: &Trace) -> (String, String, Option<usize>) {
    let r = t
        .decided_by
        .as_ref()
        .unwrap_or_else(|| panic!("no deciding rule: {t:#?}"));
    (r.table.to_string(), r.chain.clone(), r.rule_number)
}

/// The steps on `(chain, rule number)`.
pub fn steps_on<'t>(t: &'t Trace, chain: &str, rule: Option<usize>) -> Vec<&'t Step> {
    t.steps
        .iter()
        .filter(|s| s.chain == chain && s.rule_number == rule)
        .collect()
}

pub fn is_undetermined(v: &Verdict) -> bool {
    matches!(v, Verdict::Undetermined { .. })
}
