//! The rules netprobe installs for itself (the mesh's `firewall.manage`), computed purely: what the
//! `filter` table should hold, how far the current ruleset is from it, and the
//! `iptables-restore --noflush` payload that closes the gap or takes everything back out.
//!
//! netprobe owns two chains of the `filter` table, [`INPUT_CHAIN`] and [`OUTPUT_CHAIN`], and one jump
//! to each, at position 1 of `INPUT` / `OUTPUT`. Every rule it writes carries a `-m comment --comment
//! "netprobe: …"` (prefix [`COMMENT_PREFIX`]), so [`remove_payload`] deletes exactly those jumps and
//! chains and never a rule someone else wrote. The chains themselves are netprobe's by name: a rule
//! another tool appends to them is replaced at the next [`ensure_payload`].
//!
//! Why position 1: the incident in DESIGN.md ("Mesh ICMP blocked by the host firewall") is a DROP of
//! echo-requests earlier in `INPUT`; an ACCEPT after it is never reached.
//!
//! The payloads rely on two `iptables-restore --noflush` behaviours, the same in both backends
//! (iptables 1.8.x `iptables-restore.c` and `xtables-restore.c`): a `:CHAIN - [0:0]` line for an
//! existing user chain flushes it (so rewriting a chain is atomic), and `-D CHAIN RULE-SPEC` deletes
//! the first rule equal to the spec.

use std::fmt::Write as _;

use crate::model::{Backend, Family, Rule, Ruleset, TableName};
use crate::parse::{ParseOptions, parse_save};
use crate::target::Target;

/// netprobe's chain in `filter`, jumped to from `INPUT` (what may come in on the interfaces).
pub const INPUT_CHAIN: &str = "NETPROBE-INPUT";
/// netprobe's chain in `filter`, jumped to from `OUTPUT` (what may go out on the interfaces).
pub const OUTPUT_CHAIN: &str = "NETPROBE-OUTPUT";
/// Every comment netprobe writes starts with this; rules without it are never touched.
pub const COMMENT_PREFIX: &str = "netprobe:";

/// What to permit: the interfaces and the TCP fallback port of the mesh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// Interface names (`antrea-gw0`, `eth0`; iptables' `+` wildcard allowed at the end).
    pub interfaces: Vec<String>,
    /// The mesh agent's TCP port (the fallback when ICMP is not permitted), if any.
    pub tcp_port: Option<u16>,
}

/// Why a [`Spec`] or a ruleset cannot be handled. Nothing is applied in any of these cases.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManageError {
    /// No interface given.
    #[error("no interface given (at least one --interface)")]
    NoInterface,
    /// Not a Linux interface name (1–15 bytes of `A-Z a-z 0-9 . _ - @`, `+` only last).
    #[error(
        "interface {0:?} is not a valid name (1-15 characters of letters, digits, '.', '_', '-', '@'; '+' only at the end)"
    )]
    BadInterface(String),
    /// TCP port 0.
    #[error("TCP port 0 is not a port")]
    BadPort,
    /// A rule netprobe did not write jumps to one of its chains: removing the chain would need
    /// touching that rule, so nothing is removed.
    #[error(
        "{chain} is referenced by a rule netprobe did not create ({rule}); remove that rule first"
    )]
    ForeignReference {
        /// netprobe's chain.
        chain: String,
        /// The foreign rule as iptables-save prints it.
        rule: String,
    },
    /// The wanted rules did not parse back (a bug, reported rather than panicking).
    #[error("internal: generated rules do not parse: {0}")]
    Internal(String),
}

/// Checks a [`Spec`]: at least one interface, valid names, no duplicate, port not 0.
pub fn validate(spec: &Spec) -> Result<(), ManageError> {
    if spec.interfaces.is_empty() {
        return Err(ManageError::NoInterface);
    }
    for name in &spec.interfaces {
        if !valid_interface(name) {
            return Err(ManageError::BadInterface(name.clone()));
        }
    }
    if spec.tcp_port == Some(0) {
        return Err(ManageError::BadPort);
    }
    Ok(())
}

/// Linux's `dev_valid_name` (net/core/dev.c: < IFNAMSIZ, no `/`, `:` or space, not `.`/`..`),
/// narrowed to characters that need no quoting in a restore payload.
fn valid_interface(name: &str) -> bool {
    let body = name.strip_suffix('+').unwrap_or(name);
    !body.is_empty()
        && name.len() <= 15
        && body != "."
        && body != ".."
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'))
}

/// One wanted rule: the chain and the rule spec after `-A CHAIN ` (as iptables-save prints it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WantedRule {
    /// [`INPUT_CHAIN`] or [`OUTPUT_CHAIN`].
    pub chain: &'static str,
    /// `-i IF -p icmp -m icmp --icmp-type 8 -m comment --comment "netprobe: …" -j ACCEPT`.
    pub spec: String,
    /// The comment alone, for messages (`netprobe: echo-request in on IF`).
    pub what: String,
}

/// The jump rule spec from `builtin` (`INPUT`/`OUTPUT`) to netprobe's chain.
pub fn jump_spec(builtin: &str) -> String {
    let chain = own_chain(builtin);
    format!("-m comment --comment \"{COMMENT_PREFIX} jump to {chain}\" -j {chain}")
}

fn own_chain(builtin: &str) -> &'static str {
    if builtin == "OUTPUT" {
        OUTPUT_CHAIN
    } else {
        INPUT_CHAIN
    }
}

/// The rules of both chains for `family`, in order (per interface: ICMP echo-request and
/// echo-reply each way, then the TCP port each way). ICMPv6 uses types 128/129 (RFC 4443 §4).
/// Inbound TCP from the peers' port is limited to ESTABLISHED connections, so it opens no port.
pub fn wanted_rules(spec: &Spec, family: Family) -> Vec<WantedRule> {
    let (proto, icmp) = match family {
        Family::Ipv4 => ("icmp", ["-m icmp --icmp-type 8", "-m icmp --icmp-type 0"]),
        Family::Ipv6 => (
            "ipv6-icmp",
            ["-m icmp6 --icmpv6-type 128", "-m icmp6 --icmpv6-type 129"],
        ),
    };
    let mut out = Vec::new();
    let mut push = |chain: &'static str, dir: &str, iface: &str, matches: String, what: String| {
        let what = format!("{COMMENT_PREFIX} {what}");
        out.push(WantedRule {
            chain,
            spec: format!("{dir} {iface} {matches} -m comment --comment \"{what}\" -j ACCEPT"),
            what,
        });
    };
    for iface in &spec.interfaces {
        let [req, rep] = icmp;
        push(
            INPUT_CHAIN,
            "-i",
            iface,
            format!("-p {proto} {req}"),
            format!("echo-request in on {iface}"),
        );
        push(
            INPUT_CHAIN,
            "-i",
            iface,
            format!("-p {proto} {rep}"),
            format!("echo-reply in on {iface}"),
        );
        if let Some(p) = spec.tcp_port {
            push(
                INPUT_CHAIN,
                "-i",
                iface,
                format!("-p tcp -m tcp --dport {p}"),
                format!("tcp {p} in on {iface}"),
            );
            push(
                INPUT_CHAIN,
                "-i",
                iface,
                format!("-p tcp -m tcp --sport {p} -m conntrack --ctstate ESTABLISHED"),
                format!("tcp {p} replies in on {iface}"),
            );
        }
    }
    for iface in &spec.interfaces {
        let [req, rep] = icmp;
        push(
            OUTPUT_CHAIN,
            "-o",
            iface,
            format!("-p {proto} {rep}"),
            format!("echo-reply out on {iface}"),
        );
        push(
            OUTPUT_CHAIN,
            "-o",
            iface,
            format!("-p {proto} {req}"),
            format!("echo-request out on {iface}"),
        );
        if let Some(p) = spec.tcp_port {
            push(
                OUTPUT_CHAIN,
                "-o",
                iface,
                format!("-p tcp -m tcp --sport {p}"),
                format!("tcp {p} replies out on {iface}"),
            );
            push(
                OUTPUT_CHAIN,
                "-o",
                iface,
                format!("-p tcp -m tcp --dport {p}"),
                format!("tcp {p} out on {iface}"),
            );
        }
    }
    out
}

/// How far one family's `filter` table is from the wanted state. Empty `missing` means in place.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Status {
    /// What is missing or wrong, one line each (`NETPROBE-INPUT: missing "netprobe: echo-request in on eth0"`,
    /// `INPUT: jump to NETPROBE-INPUT is at position 3, not 1`).
    pub missing: Vec<String>,
    /// netprobe's chains whose content must be rewritten (missing, wrong or extra rules).
    pub rewrite: Vec<&'static str>,
    /// Built-in chains whose jump must be (re)inserted at position 1.
    pub rejump: Vec<&'static str>,
    /// Rules of netprobe's chains that it did not want (someone else's, or an old spec), as printed.
    pub extra: Vec<String>,
}

impl Status {
    /// Whether every rule and jump is in place.
    pub fn in_place(&self) -> bool {
        self.missing.is_empty() && self.rewrite.is_empty() && self.rejump.is_empty()
    }
}

/// The semantic key of a rule: its matches and target (not its text or line).
fn key(rule: &Rule) -> (&[crate::matches::Match], Option<&Target>) {
    (&rule.matches, rule.target.as_ref())
}

/// Parses the wanted rules and jumps back through [`parse_save`], so comparison is on the model.
fn wanted_parsed(spec: &Spec, family: Family) -> Result<(Ruleset, Vec<WantedRule>), ManageError> {
    let wanted = wanted_rules(spec, family);
    let mut text = format!(
        "*filter\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:{INPUT_CHAIN} - [0:0]\n:{OUTPUT_CHAIN} - [0:0]\n"
    );
    for b in ["INPUT", "OUTPUT"] {
        let _ = writeln!(text, "-A {b} {}", jump_spec(b));
    }
    for w in &wanted {
        let _ = writeln!(text, "-A {} {}", w.chain, w.spec);
    }
    text.push_str("COMMIT\n");
    let opts = ParseOptions {
        family: Some(family),
        backend: Some(Backend::Nft),
    };
    let rs = parse_save(&text, &opts).map_err(|e| ManageError::Internal(e.to_string()))?;
    Ok((rs, wanted))
}

fn is_own_jump(rule: &Rule, chain: &str) -> bool {
    rule.comment()
        .is_some_and(|c| c.starts_with(COMMENT_PREFIX))
        && matches!(&rule.target, Some(Target::Jump(t)) if t == chain)
}

/// Compares `current` (one family's ruleset of the chosen backend) with what `spec` wants.
pub fn status(spec: &Spec, current: &Ruleset) -> Result<Status, ManageError> {
    validate(spec)?;
    let (want, wanted) = wanted_parsed(spec, current.family)?;
    let mut st = Status::default();
    let filter = current.table(TableName::Filter);
    let want_filter = want.table(TableName::Filter);
    for builtin in ["INPUT", "OUTPUT"] {
        let chain = own_chain(builtin);
        let have_rules = filter
            .and_then(|t| t.chain(chain))
            .map(|c| c.rules.as_slice());
        let want_rules = want_filter
            .and_then(|t| t.chain(chain))
            .map(|c| c.rules.as_slice())
            .unwrap_or_default();
        match have_rules {
            None => {
                st.missing.push(format!("{chain}: chain missing"));
                st.rewrite.push(chain);
            }
            Some(have) => {
                let mut wrong = false;
                for (i, w) in want_rules.iter().enumerate() {
                    if !have.iter().any(|h| key(h) == key(w)) {
                        let what = wanted.iter().filter(|x| x.chain == chain).nth(i);
                        st.missing.push(format!(
                            "{chain}: missing \"{}\"",
                            what.map_or(w.text.as_str(), |x| x.what.as_str())
                        ));
                        wrong = true;
                    }
                }
                for h in have {
                    if !want_rules.iter().any(|w| key(h) == key(w)) {
                        st.extra.push(h.text.clone());
                        wrong = true;
                    }
                }
                let same_order = have.len() == want_rules.len()
                    && have.iter().zip(want_rules).all(|(h, w)| key(h) == key(w));
                if !same_order && !wrong {
                    st.missing
                        .push(format!("{chain}: rules duplicated or out of order"));
                }
                if !same_order {
                    st.rewrite.push(chain);
                }
            }
        }
        let rules = filter
            .and_then(|t| t.chain(builtin))
            .map(|c| c.rules.as_slice())
            .unwrap_or_default();
        let positions: Vec<usize> = rules
            .iter()
            .enumerate()
            .filter(|(_, r)| is_own_jump(r, chain))
            .map(|(i, _)| i + 1)
            .collect();
        match positions.as_slice() {
            [1] => {}
            [] => {
                st.missing
                    .push(format!("{builtin}: jump to {chain} missing"));
                st.rejump.push(builtin);
            }
            [p] => {
                st.missing.push(format!(
                    "{builtin}: jump to {chain} is at position {p}, not 1"
                ));
                st.rejump.push(builtin);
            }
            many => {
                st.missing.push(format!(
                    "{builtin}: {} jumps to {chain} (positions {:?}), want one at 1",
                    many.len(),
                    many
                ));
                st.rejump.push(builtin);
            }
        }
    }
    Ok(st)
}

/// The `iptables-restore --noflush` payload (one `*filter` table) that brings `current` to what
/// `spec` wants, or `None` when everything is already in place (so a second run adds nothing).
///
/// A chain that differs in any way is redeclared (flushed) and rewritten whole; a jump that is
/// missing, not first, or duplicated is deleted (every copy, by the spec iptables-save printed)
/// and inserted once at position 1. Rules netprobe did not write outside its chains are untouched.
pub fn ensure_payload(spec: &Spec, current: &Ruleset) -> Result<Option<String>, ManageError> {
    let st = status(spec, current)?;
    if st.in_place() {
        return Ok(None);
    }
    let wanted = wanted_rules(spec, current.family);
    let filter = current.table(TableName::Filter);
    let mut out = String::from("*filter\n");
    for chain in [INPUT_CHAIN, OUTPUT_CHAIN] {
        let exists = filter.is_some_and(|t| t.chain(chain).is_some());
        if st.rewrite.contains(&chain) || !exists {
            let _ = writeln!(out, ":{chain} - [0:0]");
        }
    }
    for chain in [INPUT_CHAIN, OUTPUT_CHAIN] {
        if st.rewrite.contains(&chain) {
            for w in wanted.iter().filter(|w| w.chain == chain) {
                let _ = writeln!(out, "-A {chain} {}", w.spec);
            }
        }
    }
    for builtin in ["INPUT", "OUTPUT"] {
        if !st.rejump.contains(&builtin) {
            continue;
        }
        let chain = own_chain(builtin);
        let rules = filter
            .and_then(|t| t.chain(builtin))
            .map(|c| c.rules.as_slice())
            .unwrap_or_default();
        for r in rules.iter().filter(|r| is_own_jump(r, chain)) {
            let _ = writeln!(out, "{}", delete_line(builtin, r));
        }
        let _ = writeln!(out, "-I {builtin} 1 {}", jump_spec(builtin));
    }
    out.push_str("COMMIT\n");
    Ok(Some(out))
}

/// `-D CHAIN SPEC` from a rule's saved text `-A CHAIN SPEC` (counters prefix dropped).
fn delete_line(chain: &str, rule: &Rule) -> String {
    let text = rule.text.trim();
    let text = match text.strip_prefix('[') {
        Some(rest) => rest.split_once(']').map_or(text, |(_, r)| r.trim_start()),
        None => text,
    };
    let prefix = format!("-A {chain} ");
    match text.strip_prefix(&prefix) {
        Some(spec) => format!("-D {chain} {spec}"),
        None => format!("-D {chain} {}", jump_spec(chain)),
    }
}

/// The payload that deletes netprobe's jumps (every rule in any `filter` chain jumping to its
/// chains with a `netprobe:` comment) and then its chains, or `None` when nothing of netprobe's is
/// there. Errors with [`ManageError::ForeignReference`] (nothing removed) when a rule without
/// netprobe's comment refers to one of its chains.
pub fn remove_payload(current: &Ruleset) -> Result<Option<String>, ManageError> {
    let Some(filter) = current.table(TableName::Filter) else {
        return Ok(None);
    };
    let own = [INPUT_CHAIN, OUTPUT_CHAIN];
    let mut deletes = String::new();
    for chain in &filter.chains {
        for r in &chain.rules {
            let target = match &r.target {
                Some(Target::Jump(t)) | Some(Target::Goto(t)) => t.as_str(),
                _ => continue,
            };
            let Some(own_name) = own.iter().find(|o| **o == target) else {
                continue;
            };
            let ours = is_own_jump(r, own_name) && !own.contains(&chain.name.as_str());
            if ours {
                let _ = writeln!(deletes, "{}", delete_line(&chain.name, r));
            } else if !own.contains(&chain.name.as_str()) {
                return Err(ManageError::ForeignReference {
                    chain: (*own_name).to_string(),
                    rule: r.text.clone(),
                });
            }
        }
    }
    let present: Vec<&str> = own
        .into_iter()
        .filter(|c| filter.chain(c).is_some())
        .collect();
    if deletes.is_empty() && present.is_empty() {
        return Ok(None);
    }
    let mut out = String::from("*filter\n");
    out.push_str(&deletes);
    for c in &present {
        let _ = writeln!(out, "-F {c}");
    }
    for c in &present {
        let _ = writeln!(out, "-X {c}");
    }
    out.push_str("COMMIT\n");
    Ok(Some(out))
}

/// Which backend to manage, and why (one sentence for a person).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendChoice {
    /// The backend.
    pub backend: Backend,
    /// Why: `Kubernetes marker chain KUBE-IPTABLES-HINT is in nft`, `legacy has 12 rules, nft 0`, ….
    pub reason: String,
}

/// Chooses the backend the host uses, from the rulesets of both backends (either family) and the
/// legacy table names of `/proc/net/ip_tables_names`, after kubernetes-sigs/iptables-wrappers v3
/// (`internal/iptables/detect.go`): a Kubernetes marker chain (`KUBE-IPTABLES-HINT`,
/// `KUBE-KUBELET-CANARY`) decides; else the backend with strictly more rules; else nft (the
/// default since iptables-wrappers v2), also when legacy tables are loaded but empty.
pub fn choose_backend(rulesets: &[Ruleset], legacy_tables: &[String]) -> BackendChoice {
    const MARKERS: [&str; 2] = ["KUBE-IPTABLES-HINT", "KUBE-KUBELET-CANARY"];
    for backend in [Backend::Nft, Backend::Legacy] {
        for rs in rulesets.iter().filter(|r| r.backend == Some(backend)) {
            for t in &rs.tables {
                if let Some(c) = t.chains.iter().find(|c| MARKERS.contains(&c.name.as_str())) {
                    return BackendChoice {
                        backend,
                        reason: format!(
                            "Kubernetes marker chain {} is in the {} {} {} table",
                            c.name,
                            backend.as_str(),
                            rs.family.as_str(),
                            t.name.as_str()
                        ),
                    };
                }
            }
        }
    }
    let count = |b: Backend| -> usize {
        rulesets
            .iter()
            .filter(|r| r.backend == Some(b))
            .map(|r| r.rule_count())
            .sum()
    };
    let (legacy, nft) = (count(Backend::Legacy), count(Backend::Nft));
    let tables = if legacy_tables.is_empty() {
        "no legacy tables loaded".to_string()
    } else {
        format!("legacy tables loaded: {}", legacy_tables.join(" "))
    };
    if legacy > nft {
        BackendChoice {
            backend: Backend::Legacy,
            reason: format!("legacy has {legacy} rule(s), nft {nft} ({tables})"),
        }
    } else {
        BackendChoice {
            backend: Backend::Nft,
            reason: format!("legacy has {legacy} rule(s), nft {nft}: nft, the default ({tables})"),
        }
    }
}

#[cfg(all(test, feature = "gen"))]
mod tests;
