//! Findings on the rulesets themselves, independent of the flow: `dual-iptables-backend` and
//! `missing-chain` (in the live rules, and in `iptables-restore` payloads checked against them).

use netfilter::checks;
use netfilter::{Backend, ParseOptions, Ruleset, TableName, parse_restore_payload};

use super::{Finding, FindingId, Severity};
use crate::collect::snapshot::NamespaceState;

/// A namespace's parsed rules, with where they came from.
pub(super) struct Parsed<'a> {
    /// The namespace.
    pub state: &'a NamespaceState,
    /// Its `*-save` rulesets.
    pub rulesets: Vec<Ruleset>,
    /// Its native nftables ruleset (`nft -j list ruleset`), when nft ran and its output parsed.
    pub nft: Vec<netfilter::nft::NftRuleset>,
}

fn tables_loaded(state: &NamespaceState) -> String {
    let show = |v: &Option<Vec<String>>| {
        v.as_ref()
            .map_or("unreadable".to_string(), |n| format!("[{}]", n.join(", ")))
    };
    format!(
        "{}: /proc/thread-self/net/ip_tables_names {}, ip6_tables_names {} (x_tables loaded: the legacy backend)",
        state.netns.netns.describe(),
        show(&state.ip_tables_names),
        show(&state.ip6_tables_names)
    )
}

/// `dual-iptables-backend` for one namespace: both backends hold rules on the same hooks.
pub(super) fn dual_backend(p: &Parsed<'_>) -> Option<Finding> {
    let both = checks::both_backends(&p.rulesets);
    if both.is_empty() {
        return None;
    }
    let k8s = checks::k8s_backend(&p.rulesets);
    let kube = k8s.first().map_or(
        "no Kubernetes marker chain (KUBE-IPTABLES-HINT, KUBE-KUBELET-CANARY, KUBE-PROXY-CANARY) was found"
            .to_string(),
        |f| f.summary.clone(),
    );
    let mut evidence: Vec<String> = both.iter().flat_map(|f| f.evidence.clone()).collect();
    evidence.extend(k8s.iter().flat_map(|f| f.evidence.clone()));
    evidence.push(tables_loaded(p.state));
    let hooks: Vec<String> = both
        .iter()
        .filter_map(|f| f.summary.split("on hook ").nth(1))
        .filter_map(|s| s.split(';').next())
        .map(str::to_string)
        .collect();
    Some(Finding {
        id: FindingId::DualIptablesBackend,
        severity: Severity::Warning,
        summary: format!(
            "in the {}, iptables-legacy and iptables-nft both hold rules on {}: both run and a drop in \
             either wins, while each tool shows only its own; {kube}",
            p.state.netns.netns.describe(),
            if hooks.is_empty() {
                "the same hooks".to_string()
            } else {
                format!("hook(s) {}", hooks.join(", "))
            }
        ),
        evidence,
        fixes: vec![
            "keep one backend: move the other backend's rules over (e.g. `iptables-legacy-save | \
             iptables-nft-restore --noflush`), then flush and delete them in the old one \
             (`iptables-legacy -F; iptables-legacy -X` per table)"
                .to_string(),
            "make every component use the backend the host and Kubernetes use (kubelet and \
             kube-proxy images pick theirs with iptables-wrapper; update-alternatives --set iptables …)"
                .to_string(),
        ],
    })
}

/// `missing-chain` in the live rules (a dangling jump in a dump).
pub(super) fn missing_in_rules(p: &Parsed<'_>) -> Vec<Finding> {
    p.rulesets
        .iter()
        .flat_map(checks::missing_chains)
        .map(|f| Finding {
            id: FindingId::MissingChain,
            severity: Severity::Error,
            summary: format!("{}: {}", p.state.netns.netns.describe(), f.summary),
            evidence: f.evidence,
            fixes: vec![
                "create the chain (`iptables -t TABLE -N CHAIN`) or remove the rules that jump to it"
                    .to_string(),
            ],
        })
        .collect()
}

/// Which backends of this family hold `chain` in `table`.
fn holders(
    rulesets: &[Ruleset],
    family: netfilter::Family,
    table: TableName,
    chain: &str,
) -> Vec<&'static str> {
    rulesets
        .iter()
        .filter(|rs| rs.family == family)
        .filter(|rs| rs.table(table).and_then(|t| t.chain(chain)).is_some())
        .map(|rs| Backend::name_of(rs.backend))
        .collect()
}

/// The backends holding Kubernetes' marker chains (kubelet's `KUBE-IPTABLES-HINT`,
/// `KUBE-KUBELET-CANARY`, kube-proxy's `KUBE-PROXY-CANARY`) for `family`: the backend Kubernetes
/// restores its rules with.
fn kube_backends(rulesets: &[Ruleset], family: netfilter::Family) -> Vec<&'static str> {
    const MARKERS: [&str; 3] = [
        "KUBE-IPTABLES-HINT",
        "KUBE-KUBELET-CANARY",
        "KUBE-PROXY-CANARY",
    ];
    let mut out = Vec::new();
    for rs in rulesets.iter().filter(|rs| rs.family == family) {
        let marked = rs
            .tables
            .iter()
            .any(|t| t.chains.iter().any(|c| MARKERS.contains(&c.name.as_str())));
        let name = Backend::name_of(rs.backend);
        if marked && !out.contains(&name) {
            out.push(name);
        }
    }
    out
}

/// A restore payload checked against the kernel's rules: every chain it uses without declaring
/// it that the kernel does not have either. Returns the findings and the payload's rules (for
/// `service-not-programmed` evidence), or the parse error.
pub(super) fn check_payload(
    name: &str,
    text: &str,
    live: &[Ruleset],
    examined: &mut Vec<String>,
) -> Result<(Vec<Finding>, Ruleset), String> {
    let p = parse_restore_payload(text, &ParseOptions::default())
        .map_err(|e| format!("restore payload {name}: {e}"))?;
    let family = p.ruleset.family;
    let mut out = Vec::new();
    let mut present = Vec::new();
    for u in &p.undeclared {
        let have = holders(live, family, u.table, &u.chain);
        let rule_text = p
            .ruleset
            .table(u.table)
            .and_then(|t| {
                t.chains
                    .iter()
                    .flat_map(|c| c.rules.iter())
                    .find(|r| r.line == u.line)
            })
            .map_or(String::new(), |r| r.text.clone());
        let kube = kube_backends(live, family);
        let only_elsewhere =
            !have.is_empty() && !kube.is_empty() && !have.iter().any(|b| kube.contains(b));
        if have.is_empty() || only_elsewhere {
            let (where_, consequence) = if have.is_empty() {
                (
                    "which exists in no iptables backend of this namespace".to_string(),
                    "iptables-restore fails and the whole payload is rejected",
                )
            } else {
                (
                    format!(
                        "which exists only in the {} backend, while Kubernetes' marker chains are in {}",
                        have.join(" and "),
                        kube.join(" and ")
                    ),
                    "restored with the Kubernetes backend, iptables-restore fails and the whole payload is rejected",
                )
            };
            let mut fixes = vec![
                format!(
                    "create the chain in the backend the payload is restored with \
                     (`iptables -t {} -N {}`), or update the component that writes the payload \
                     so that it declares every chain it uses",
                    u.table, u.chain
                ),
                "check that kube-proxy and kubelet use the same iptables backend as the host \
                 (legacy vs nf_tables): a chain created in one is invisible to the other"
                    .to_string(),
            ];
            if u.chain == "KUBE-MARK-DROP" {
                fixes.push(
                    "kubelet no longer creates KUBE-MARK-DROP since the IPTablesOwnershipCleanup \
                     feature went GA (KEP-3178, kubernetes PR #119374); a component that still jumps \
                     to it must create it itself, or be upgraded"
                        .to_string(),
                );
            }
            out.push(Finding {
                id: FindingId::MissingChain,
                severity: Severity::Error,
                summary: format!(
                    "restore payload {name} line {} uses chain {} (table {}) which it does not declare and \
                     {where_}: {consequence} (kube-proxy then programs no Service rules)",
                    u.line, u.chain, u.table
                ),
                evidence: vec![
                    format!("{name} line {}: {rule_text}", u.line),
                    format!(
                        "chain {} in table {} of the {} rulesets collected: {}",
                        u.chain,
                        u.table,
                        family.as_str(),
                        if have.is_empty() {
                            "absent from every backend".to_string()
                        } else {
                            format!("present in {}", have.join(", "))
                        }
                    ),
                ],
                fixes,
            });
        } else {
            present.push(format!("{} (in {})", u.chain, have.join(", ")));
        }
    }
    examined.push(format!(
        "restore payload {name}: {} undeclared chain(s); present in the kernel: {}",
        p.undeclared.len(),
        if present.is_empty() {
            "none".to_string()
        } else {
            present.join(", ")
        }
    ));
    Ok((out, p.ruleset))
}
