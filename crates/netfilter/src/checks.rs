//! Static checks over a [`Ruleset`] or an `iptables-restore` [`RestorePayload`]: problems that can
//! be seen from the rules alone, without a flow.
//!
//! Each [`Finding`] has a stable kebab-case `id`:
//!
//! * `missing-chain` ([`Severity::Error`]): a jump, goto or rule to a user chain that does not
//!   exist. `iptables-restore` fails on the whole payload ("Couldn't load target") unless the chain
//!   already exists in the kernel — kube-proxy's failure on `KUBE-MARK-DROP` once kubelet stopped
//!   creating it (kubernetes PR #119374, KEP-3178).
//! * `k8s-backend` ([`Severity::Info`], or [`Severity::Warning`] when components disagree): the
//!   backend whose rulesets hold Kubernetes' marker chains — `KUBE-IPTABLES-HINT` and
//!   `KUBE-KUBELET-CANARY` (kubelet), `KUBE-PROXY-CANARY` (kube-proxy). kubernetes-sigs/
//!   iptables-wrappers picks the backend the same way (`^:(KUBE-IPTABLES-HINT|KUBE-KUBELET-CANARY)`).
//! * `both-backends` ([`Severity::Warning`]): the legacy and the nf_tables backend both have rules
//!   (or a DROP policy) on the same hook of the same family; both run, and a drop in either wins.
//! * `shadowed-rule` ([`Severity::Warning`]): a rule that can never match because an earlier rule
//!   of the same chain with a terminal target matches a superset of its packets. Conservative: the
//!   earlier rule may only use `-p`, `-s`, `-d`, `-m tcp/udp --dport` (and comments), each covering
//!   the later rule's condition by simple comparison.

use std::fmt;
use std::net::IpAddr;

use serde::Serialize;

use crate::addr::{Cidr, PortRange};
use crate::matches::{Match, Neg, TcpMatch, UdpMatch, negated_port_pair};
use crate::model::{Backend, Family, Rule, Ruleset, TableName};
use crate::parse::{ReferenceKind, RestorePayload};
use crate::target::Target;

/// How serious a finding is. Ordered: `Info < Warning < Error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// A fact worth knowing (which backend Kubernetes uses).
    Info,
    /// Probably a mistake, or a setup that misleads tools and people.
    Warning,
    /// Loading or evaluating these rules fails.
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

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// One problem found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Stable kebab-case identifier (`missing-chain`, `k8s-backend`, `both-backends`, `shadowed-rule`).
    pub id: &'static str,
    /// How serious it is.
    pub severity: Severity,
    /// One sentence for a person.
    pub summary: String,
    /// The rules involved, each as `BACKEND FAMILY TABLE CHAIN rule N (line L): TEXT`.
    pub evidence: Vec<String>,
}

fn evidence(rs: &Ruleset, table: TableName, chain: &str, number: usize, rule: &Rule) -> String {
    format!(
        "{} {} {table} {chain} rule {number} (line {}): {}",
        Backend::name_of(rs.backend),
        rs.family.as_str(),
        rule.line,
        rule.text
    )
}

/// The checks that need one ruleset: `missing-chain`, `shadowed-rule` and
/// `nft-negated-port-pair`.
pub fn check_ruleset(rs: &Ruleset) -> Vec<Finding> {
    let mut out = missing_chains(rs);
    out.extend(shadowed_rules(rs));
    out.extend(nft_negated_port_pairs(rs));
    out
}

/// `nft-negated-port-pair`: an iptables-nft rule with `! --sport A ! --dport B` (single ports).
/// iptables-nft 1.8.9 loads it as one `th sport . th dport != A . B` comparison, which matches
/// when either port differs, not only when both do as the text says: the rule matches (and
/// decides) more packets than it reads. Found by netprobe's kernel differential test.
pub fn nft_negated_port_pairs(rs: &Ruleset) -> Vec<Finding> {
    if rs.backend != Some(Backend::Nft) {
        return Vec::new();
    }
    let mut out = Vec::new();
    for table in &rs.tables {
        for chain in &table.chains {
            for (i, rule) in chain.rules.iter().enumerate() {
                let Some((a, b)) = rule.matches.iter().find_map(negated_port_pair) else {
                    continue;
                };
                out.push(Finding {
                    id: "nft-negated-port-pair",
                    severity: Severity::Warning,
                    summary: format!(
                        "{} {} rule {} says `! --sport {a} ! --dport {b}` (both differ) but \
                         iptables-nft compiles it to `th sport . th dport != {a} . {b}` (either \
                         differs): check `nft list chain` and split the rule, or use \
                         `-m multiport`",
                        table.name,
                        chain.name,
                        i + 1
                    ),
                    evidence: vec![evidence(rs, table.name, &chain.name, i + 1, rule)],
                });
            }
        }
    }
    out
}

/// The checks of an `iptables-restore` payload: every undeclared chain it uses (`missing-chain`,
/// as the payload alone cannot create it), then [`check_ruleset`] on the rules it writes.
pub fn check_restore_payload(p: &RestorePayload) -> Vec<Finding> {
    let rs = &p.ruleset;
    let mut out = Vec::new();
    for u in &p.undeclared {
        let rule = rs.table(u.table).and_then(|t| {
            t.chains.iter().find_map(|c| {
                c.rules
                    .iter()
                    .position(|r| r.line == u.line)
                    .map(|i| evidence(rs, u.table, &c.name, i + 1, &c.rules[i]))
            })
        });
        let how = match u.kind {
            ReferenceKind::Jump => "jumps to",
            ReferenceKind::Goto => "goes to",
            ReferenceKind::RuleIn => "adds a rule to",
        };
        out.push(Finding {
            id: "missing-chain",
            severity: Severity::Error,
            summary: format!(
                "table {} line {} {how} chain {} which the payload does not declare; \
                 iptables-restore fails unless it already exists in the kernel",
                u.table, u.line, u.chain
            ),
            evidence: rule.into_iter().collect(),
        });
    }
    // The parser leaves a jump to an undeclared chain dangling; it is reported above already.
    let reported: Vec<(TableName, usize)> =
        p.undeclared.iter().map(|u| (u.table, u.line)).collect();
    out.extend(missing_chains_except(rs, &reported));
    out.extend(shadowed_rules(rs));
    out
}

/// `missing-chain`: rules whose `-j`/`-g` names a chain absent from their table. A save dump
/// keeps an unresolvable `-j NAME` as [`Target::Unknown`]; one without options that is not a
/// target extension is taken as such a reference.
pub fn missing_chains(rs: &Ruleset) -> Vec<Finding> {
    missing_chains_except(rs, &[])
}

/// [`missing_chains`] without the rules at the given (table, line).
fn missing_chains_except(rs: &Ruleset, skip: &[(TableName, usize)]) -> Vec<Finding> {
    let mut out = Vec::new();
    for table in &rs.tables {
        for chain in &table.chains {
            for (i, rule) in chain.rules.iter().enumerate() {
                if skip.contains(&(table.name, rule.line)) {
                    continue;
                }
                let missing = match &rule.target {
                    Some(Target::Jump(c) | Target::Goto(c)) => {
                        table.chain(c).is_none().then_some(c.as_str())
                    }
                    Some(Target::Unknown { name, args })
                        if args.is_empty()
                            && !crate::parse::KNOWN_EXTENSIONS.contains(&name.as_str())
                            && table.chain(name).is_none() =>
                    {
                        Some(name.as_str())
                    }
                    _ => None,
                };
                if let Some(name) = missing {
                    out.push(Finding {
                        id: "missing-chain",
                        severity: Severity::Error,
                        summary: format!(
                            "{} {} rule {} jumps to chain {name}, which does not exist",
                            table.name,
                            chain.name,
                            i + 1,
                        ),
                        evidence: vec![evidence(rs, table.name, &chain.name, i + 1, rule)],
                    });
                }
            }
        }
    }
    out
}

/// `shadowed-rule`: rules that can never match because an earlier rule of the same chain with a
/// terminal target (ACCEPT, DROP, REJECT, RETURN, a goto, a NAT target) matches a superset of
/// their packets. See [`covers`] for how conservative the comparison is.
pub fn shadowed_rules(rs: &Ruleset) -> Vec<Finding> {
    let mut out = Vec::new();
    for table in &rs.tables {
        for chain in &table.chains {
            for (j, later) in chain.rules.iter().enumerate() {
                let shadow = chain.rules[..j].iter().enumerate().find(|(_, earlier)| {
                    let terminal = earlier
                        .target
                        .as_ref()
                        .and_then(Target::is_terminal)
                        .unwrap_or(false);
                    terminal && covers(earlier, later)
                });
                if let Some((i, earlier)) = shadow {
                    out.push(Finding {
                        id: "shadowed-rule",
                        severity: Severity::Warning,
                        summary: format!(
                            "{} {} rule {} can never match: rule {} matches all its packets first",
                            table.name,
                            chain.name,
                            j + 1,
                            i + 1
                        ),
                        evidence: vec![
                            evidence(rs, table.name, &chain.name, i + 1, earlier),
                            evidence(rs, table.name, &chain.name, j + 1, later),
                        ],
                    });
                }
            }
        }
    }
    out
}

/// Whether every packet `later` matches is matched by `earlier`, judged only when `earlier`'s
/// matches are plain (non-negated) `-p`, `-s`, `-d`, `-m tcp`/`-m udp` with at most `--dport`, or
/// comments; each must be implied by a condition of `later` of the same kind. Anything else in
/// `earlier` answers `false` (not known to cover), never a guess.
pub fn covers(earlier: &Rule, later: &Rule) -> bool {
    earlier.matches.iter().all(|m| match m {
        Match::Comment(_) => true,
        Match::Protocol(p) if !p.negated && p.value.number().is_some_and(|n| n != 0) => later
            .matches
            .iter()
            .any(|l| matches!(l, Match::Protocol(q) if q == p)),
        Match::Source(c) if !c.negated => later.matches.iter().any(
            |l| matches!(l, Match::Source(d) if !d.negated && cidr_within(&d.value, &c.value)),
        ),
        Match::Destination(c) if !c.negated => later.matches.iter().any(
            |l| matches!(l, Match::Destination(d) if !d.negated && cidr_within(&d.value, &c.value)),
        ),
        Match::Tcp(t) if only_dport_tcp(t) => later.matches.iter().any(|l| match l {
            Match::Tcp(u) => dport_within(u.dport.as_ref(), t.dport.as_ref()),
            _ => false,
        }),
        Match::Udp(t) if only_dport_udp(t) => later.matches.iter().any(|l| match l {
            Match::Udp(u) => dport_within(u.dport.as_ref(), t.dport.as_ref()),
            _ => false,
        }),
        _ => false,
    })
}

fn only_dport_tcp(t: &TcpMatch) -> bool {
    t.sport.is_none() && t.flags.is_none() && t.option.is_none()
}

fn only_dport_udp(t: &UdpMatch) -> bool {
    t.sport.is_none()
}

/// Whether the later rule's `--dport` (`inner`) lies inside the earlier one's (`outer`); an
/// absent outer range covers everything.
fn dport_within(inner: Option<&Neg<PortRange>>, outer: Option<&Neg<PortRange>>) -> bool {
    match (inner, outer) {
        (_, None) => true,
        (Some(i), Some(o)) if !i.negated && !o.negated => {
            o.value.start <= i.value.start && i.value.end <= o.value.end
        }
        _ => false,
    }
}

/// Whether every address of `inner` is in `outer`: `outer`'s mask bits are all in `inner`'s and
/// `inner`'s network address is inside `outer` (holds for non-contiguous masks too).
fn cidr_within(inner: &Cidr, outer: &Cidr) -> bool {
    let bits = |a: IpAddr| -> u128 {
        match a {
            IpAddr::V4(v) => u128::from(v.to_bits()),
            IpAddr::V6(v) => v.to_bits(),
        }
    };
    inner.family() == outer.family()
        && bits(inner.mask()) & bits(outer.mask()) == bits(outer.mask())
        && outer.contains(inner.addr())
}

/// `k8s-backend`: which backend Kubernetes components use, from the rulesets (one per backend
/// and family) holding `KUBE-IPTABLES-HINT` / `KUBE-KUBELET-CANARY` (kubelet) and
/// `KUBE-PROXY-CANARY` (kube-proxy). No finding when no ruleset has any of them. A warning when
/// the markers are in more than one backend (kubelet and kube-proxy disagree, or stale rules of an
/// earlier setup remain).
pub fn k8s_backend(rulesets: &[Ruleset]) -> Vec<Finding> {
    const KUBELET: [&str; 2] = ["KUBE-IPTABLES-HINT", "KUBE-KUBELET-CANARY"];
    const PROXY: &str = "KUBE-PROXY-CANARY";
    let mut kubelet: Vec<Option<Backend>> = Vec::new();
    let mut proxy: Vec<Option<Backend>> = Vec::new();
    let mut evidence = Vec::new();
    for rs in rulesets {
        for table in &rs.tables {
            for chain in &table.chains {
                let is_kubelet = KUBELET.contains(&chain.name.as_str());
                if !is_kubelet && chain.name != PROXY {
                    continue;
                }
                let list = if is_kubelet { &mut kubelet } else { &mut proxy };
                if !list.contains(&rs.backend) {
                    list.push(rs.backend);
                }
                let line = chain.line.map_or(String::new(), |l| format!(" (line {l})"));
                evidence.push(format!(
                    "{} {} {} chain {}{line}",
                    Backend::name_of(rs.backend),
                    rs.family.as_str(),
                    table.name,
                    chain.name
                ));
            }
        }
    }
    let mut all = kubelet.clone();
    for b in &proxy {
        if !all.contains(b) {
            all.push(*b);
        }
    }
    let names = |l: &[Option<Backend>]| -> String {
        l.iter()
            .map(|b| Backend::name_of(*b))
            .collect::<Vec<_>>()
            .join(" and ")
    };
    let (severity, summary) = match all.as_slice() {
        [] => return Vec::new(),
        [one] => (
            Severity::Info,
            format!(
                "Kubernetes components use the {} backend",
                Backend::name_of(*one)
            ),
        ),
        _ => (
            Severity::Warning,
            format!(
                "Kubernetes marker chains are in several backends (kubelet: {}; kube-proxy: {}); \
                 components may disagree on the backend, or stale rules remain",
                if kubelet.is_empty() {
                    "none".to_string()
                } else {
                    names(&kubelet)
                },
                if proxy.is_empty() {
                    "none".to_string()
                } else {
                    names(&proxy)
                },
            ),
        ),
    };
    vec![Finding {
        id: "k8s-backend",
        severity,
        summary,
        evidence,
    }]
}

/// `both-backends`: for each family and hook, whether both a legacy and an nf_tables ruleset have
/// rules (or a DROP policy) in a base chain of that hook. Rulesets of unknown backend are ignored.
pub fn both_backends(rulesets: &[Ruleset]) -> Vec<Finding> {
    const HOOKS: [&str; 5] = ["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"];
    let mut out = Vec::new();
    for family in [Family::Ipv4, Family::Ipv6] {
        for hook in HOOKS {
            let used = |backend: Backend| -> Vec<String> {
                rulesets
                    .iter()
                    .filter(|rs| rs.family == family && rs.backend == Some(backend))
                    .flat_map(|rs| {
                        rs.tables.iter().filter_map(move |t| {
                            let c = t.chain(hook).filter(|c| c.builtin)?;
                            let drop = c.policy == Some(crate::model::Policy::Drop);
                            if c.rules.is_empty() && !drop {
                                return None;
                            }
                            Some(format!(
                                "{} {} {} {hook}: {} rules, policy {}",
                                Backend::name_of(rs.backend),
                                family.as_str(),
                                t.name,
                                c.rules.len(),
                                c.policy.map_or("-", |p| p.as_str())
                            ))
                        })
                    })
                    .collect()
            };
            let legacy = used(Backend::Legacy);
            let nft = used(Backend::Nft);
            if !legacy.is_empty() && !nft.is_empty() {
                out.push(Finding {
                    id: "both-backends",
                    severity: Severity::Warning,
                    summary: format!(
                        "both the legacy and the nf_tables backend have {} rules on hook {hook}; \
                         both run, and a drop in either wins",
                        family.as_str()
                    ),
                    evidence: legacy.into_iter().chain(nft).collect(),
                });
            }
        }
    }
    out
}

/// Every check over several rulesets (e.g. the legacy and nft dumps of both families):
/// [`check_ruleset`] on each, then [`both_backends`] and [`k8s_backend`].
pub fn check_all(rulesets: &[Ruleset]) -> Vec<Finding> {
    let mut out: Vec<Finding> = rulesets.iter().flat_map(check_ruleset).collect();
    out.extend(both_backends(rulesets));
    out.extend(k8s_backend(rulesets));
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;
    use crate::parse::{ParseOptions, parse_restore_payload, parse_save};

    fn save(text: &str, backend: Backend) -> Ruleset {
        let opts = ParseOptions {
            family: None,
            backend: Some(backend),
        };
        parse_save(text, &opts).unwrap()
    }

    fn filter(rules: &str) -> Ruleset {
        let text = format!(
            "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:USER - [0:0]\n{rules}COMMIT\n"
        );
        save(&text, Backend::Legacy)
    }

    fn ids(f: &[Finding]) -> Vec<&'static str> {
        f.iter().map(|f| f.id).collect()
    }

    const MISSING_MARK_DROP: &str = "\
*filter
:KUBE-SERVICES - [0:0]
COMMIT
*nat
:KUBE-XLB-ABCDEFGHIJKLMNOP - [0:0]
-A KUBE-XLB-ABCDEFGHIJKLMNOP -m comment --comment \"default/web:http has no local endpoints\" -j KUBE-MARK-DROP
COMMIT
";

    #[test]
    fn restore_payload_jump_to_undeclared_chain_is_missing_chain() {
        let p = parse_restore_payload(MISSING_MARK_DROP, &ParseOptions::default()).unwrap();
        let f = check_restore_payload(&p);
        assert_eq!(ids(&f), ["missing-chain"], "{f:#?}");
        assert_eq!(f[0].severity, Severity::Error);
        assert!(f[0].summary.contains("KUBE-MARK-DROP"), "{}", f[0].summary);
        assert!(f[0].summary.contains("line 6"), "{}", f[0].summary);
        assert_eq!(f[0].evidence.len(), 1);
        assert!(
            f[0].evidence[0].starts_with(
                "unknown-backend ipv4 nat KUBE-XLB-ABCDEFGHIJKLMNOP rule 1 (line 6): -A KUBE-XLB"
            ),
            "{}",
            f[0].evidence[0]
        );
    }

    #[test]
    fn save_dump_jump_to_absent_chain_is_missing_chain_but_extensions_are_not() {
        let rs = filter("-A INPUT -j KUBE-MARK-DROP\n-A INPUT -j QUEUE\n-A INPUT -j USER\n");
        let f = missing_chains(&rs);
        assert_eq!(ids(&f), ["missing-chain"], "{f:#?}");
        assert!(
            f[0].summary.contains("filter INPUT rule 1"),
            "{}",
            f[0].summary
        );
        assert!(f[0].summary.contains("KUBE-MARK-DROP"));
        // A goto to an absent chain in a hand-built ruleset.
        let mut rs = filter("");
        rs.tables[0].chains[0].rules.push(Rule {
            line: 9,
            text: "-A INPUT -g GONE".into(),
            counters: None,
            matches: vec![],
            target: Some(Target::Goto("GONE".into())),
        });
        assert_eq!(ids(&missing_chains(&rs)), ["missing-chain"]);
    }

    #[test]
    fn clean_kube_proxy_dump_has_no_error_or_warning() {
        let rs = save(
            include_str!("../tests/fixtures/kube-proxy-legacy.txt"),
            Backend::Legacy,
        );
        let f = check_all(std::slice::from_ref(&rs));
        assert_eq!(ids(&f), ["k8s-backend"], "{f:#?}");
        assert_eq!(f[0].severity, Severity::Info);
        assert_eq!(f[0].summary, "Kubernetes components use the legacy backend");
        assert!(
            f[0].evidence
                .iter()
                .any(|e| e == "legacy ipv4 mangle chain KUBE-IPTABLES-HINT (line 88)"),
            "{:#?}",
            f[0].evidence
        );
    }

    #[test]
    fn k8s_backend_warns_when_kubelet_and_proxy_disagree() {
        let kubelet = save(
            "*mangle\n:PREROUTING ACCEPT [0:0]\n:KUBE-IPTABLES-HINT - [0:0]\n:KUBE-KUBELET-CANARY - [0:0]\nCOMMIT\n",
            Backend::Nft,
        );
        let proxy = save(
            "*nat\n:PREROUTING ACCEPT [0:0]\n:KUBE-PROXY-CANARY - [0:0]\nCOMMIT\n",
            Backend::Legacy,
        );
        let f = k8s_backend(std::slice::from_ref(&kubelet));
        assert_eq!(f[0].summary, "Kubernetes components use the nft backend");
        assert_eq!(f[0].evidence.len(), 2);
        let f = k8s_backend(&[kubelet, proxy]);
        assert_eq!(ids(&f), ["k8s-backend"]);
        assert_eq!(f[0].severity, Severity::Warning);
        assert!(
            f[0].summary.contains("kubelet: nft; kube-proxy: legacy"),
            "{}",
            f[0].summary
        );
        assert!(k8s_backend(&[filter("")]).is_empty());
    }

    #[test]
    fn both_backends_on_the_same_hook() {
        let legacy = filter("-A INPUT -s 198.51.100.0/24 -j DROP\n");
        let nft = save(
            "*filter\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n-A OUTPUT -j ACCEPT\nCOMMIT\n",
            Backend::Nft,
        );
        // Different hooks: no finding.
        assert!(both_backends(&[legacy.clone(), nft]).is_empty());
        let nft = save(
            "*filter\n:INPUT DROP [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n",
            Backend::Nft,
        );
        let f = both_backends(&[legacy.clone(), nft]);
        assert_eq!(ids(&f), ["both-backends"], "{f:#?}");
        assert!(f[0].summary.contains("hook INPUT"));
        assert_eq!(
            f[0].evidence,
            [
                "legacy ipv4 filter INPUT: 1 rules, policy ACCEPT",
                "nft ipv4 filter INPUT: 0 rules, policy DROP"
            ]
        );
        // Two legacy rulesets are one backend.
        assert!(both_backends(&[legacy.clone(), legacy]).is_empty());
    }

    #[test]
    fn shadowed_by_a_rule_without_matches_or_by_a_wider_one() {
        let rs = filter(
            "-A USER -s 198.51.100.0/24 -p tcp -m tcp --dport 1000:2000 -j ACCEPT\n\
             -A USER -s 198.51.100.7/32 -d 203.0.113.1/32 -p tcp -m tcp --dport 1500 -m comment --comment x -j DROP\n\
             -A INPUT -m comment --comment \"catch all\" -j DROP\n\
             -A INPUT -p udp -j ACCEPT\n",
        );
        let f = shadowed_rules(&rs);
        assert_eq!(ids(&f), ["shadowed-rule", "shadowed-rule"], "{f:#?}");
        assert_eq!(
            f[0].summary,
            "filter INPUT rule 2 can never match: rule 1 matches all its packets first"
        );
        assert_eq!(
            f[1].summary,
            "filter USER rule 2 can never match: rule 1 matches all its packets first"
        );
        assert!(
            f[1].evidence[1].contains("rule 2 (line 7): -A USER -s 198.51.100.7/32"),
            "{:?}",
            f[1].evidence
        );
    }

    #[test]
    fn not_shadowed_when_unsure() {
        let rs = filter(
            // Non-terminal earlier rule.
            "-A INPUT -j LOG\n-A INPUT -j DROP\n\
             -A USER -p tcp -m tcp --dport 80 -j ACCEPT\n\
             -A USER -p tcp -m tcp --dport 79:80 -j DROP\n\
             -A USER -s 198.51.100.0/24 -j ACCEPT\n\
             -A USER ! -s 198.51.100.0/25 -j ACCEPT\n\
             -A USER -p tcp -j ACCEPT\n\
             -A USER -p udp -j ACCEPT\n\
             -A USER -m mark --mark 0x1 -j DROP\n\
             -A USER -m mark --mark 0x1 -j DROP\n\
             -A USER -m tcp --dport 81 -j DROP\n",
        );
        // The `-m mark` pair is identical but only the simple kinds are compared; `-p tcp`
        // covers the `-m tcp` rule only when that rule says `-p tcp` too.
        assert!(shadowed_rules(&rs).is_empty(), "{:#?}", shadowed_rules(&rs));
    }

    #[test]
    fn nft_negated_port_pair_is_flagged_only_for_the_nft_backend() {
        let text = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
                    -A INPUT -p tcp -m tcp ! --sport 1000 ! --dport 22 -j DROP\n\
                    -A INPUT -p tcp -m tcp ! --sport 1000:2000 ! --dport 22 -j DROP\n\
                    -A INPUT -p udp -m udp --sport 53 ! --dport 53 -j DROP\nCOMMIT\n";
        let f = nft_negated_port_pairs(&save(text, Backend::Nft));
        assert_eq!(ids(&f), ["nft-negated-port-pair"]);
        assert!(f[0].evidence[0].contains("INPUT rule 1"), "{f:?}");
        assert!(nft_negated_port_pairs(&save(text, Backend::Legacy)).is_empty());
    }

    #[test]
    fn cidr_containment() {
        let c = |s: &str| Cidr::parse(s).unwrap();
        assert!(cidr_within(&c("198.51.100.7"), &c("198.51.100.0/24")));
        assert!(cidr_within(&c("198.51.100.0/24"), &c("0.0.0.0/0")));
        assert!(!cidr_within(&c("198.51.100.0/23"), &c("198.51.100.0/24")));
        assert!(!cidr_within(&c("fd00::1"), &c("0.0.0.0/0")));
        assert!(cidr_within(&c("fd00::1"), &c("fd00::/8")));
    }
}
