//! Reading the evaluator's answer: naming a rule, the path that led to it, and recognising the
//! two rule shapes the incidents are about (kubelet's localnet rule, a drop-everything chain).

use std::net::IpAddr;

use netfilter::Backend;
use netfilter::eval::{RuleRef, Trace};

/// `BACKEND FAMILY table TABLE chain CHAIN rule N: TEXT (comment "…")`, or `… policy DROP`.
pub(super) fn describe_rule(r: &RuleRef) -> String {
    let which = match r.rule_number {
        Some(n) => format!("rule {n}"),
        None => "policy".to_string(),
    };
    let comment = r
        .comment
        .as_ref()
        .map_or(String::new(), |c| format!(" (comment \"{c}\")"));
    format!(
        "{} {} table {} chain {} {which}: {}{comment}",
        Backend::name_of(r.backend),
        r.family.as_str(),
        r.table,
        r.chain,
        r.text
    )
}

/// The matched steps of a trace (jumps and the deciding rule), at most `limit`, as
/// `HOOK BACKEND TABLE CHAIN rule N: WHY`.
pub(super) fn path(t: &Trace, limit: usize) -> Vec<String> {
    t.steps
        .iter()
        .filter(|s| s.matched)
        .take(limit)
        .map(|s| {
            let n = s
                .rule_number
                .map_or("policy".to_string(), |n| format!("rule {n}"));
            format!(
                "path: {} {} {} {} {n}: {}",
                s.hook.chain(),
                Backend::name_of(s.backend),
                s.table,
                s.chain,
                s.why
            )
        })
        .collect()
}

/// The rule's words after `-A CHAIN`.
fn body(text: &str) -> Vec<&str> {
    let words: Vec<&str> = text.split_whitespace().collect();
    match words.as_slice() {
        ["-A" | "-I", _, rest @ ..] => rest.to_vec(),
        _ => words,
    }
}

/// Whether the rule drops everything: no match at all, only `-j DROP` (a comment aside). A
/// chain's DROP policy is not: its chain may accept other traffic first.
pub(super) fn is_drop_all(r: &RuleRef) -> bool {
    if r.rule_number.is_none() {
        return false;
    }
    let b = body(&r.text);
    // A comment does not narrow the match.
    let mut rest = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == "-m" && b.get(i + 1) == Some(&"comment") {
            // `-m comment --comment TEXT`, TEXT one word or quoted words (`"netprobe isolate"`).
            i += 3;
            if b.get(i)
                .is_some_and(|w| w.starts_with('"') && (w.len() == 1 || !w.ends_with('"')))
            {
                i += 1;
                while i < b.len() && !b[i].ends_with('"') {
                    i += 1;
                }
            }
            i += 1;
            continue;
        }
        rest.push(b[i]);
        i += 1;
    }
    rest == ["-j", "DROP"]
}

/// Whether the rule is kubelet's localnet rule (or one of its shape): it matches
/// `-d 127.0.0.0/8` and `! -s 127.0.0.0/8`, or its comment says "localnet".
pub(super) fn is_localnet_rule(r: &RuleRef) -> bool {
    let t = r.text.replace("! -s", "!-s");
    let dst = t.contains("-d 127.0.0.0/8");
    let not_src = t.contains("!-s 127.0.0.0/8") || t.contains("-s ! 127.0.0.0/8");
    let comment = r.comment.as_deref().is_some_and(|c| c.contains("localnet"));
    (dst && not_src) || comment
}

/// Whether `src` → `dst` is the localnet case: a loopback destination from a source that is not.
pub(super) fn localnet_flow(src: IpAddr, dst: IpAddr) -> bool {
    dst.is_ipv4() && dst.is_loopback() && !src.is_loopback()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;
    use netfilter::{Family, TableName};

    fn rule(text: &str, comment: Option<&str>) -> RuleRef {
        RuleRef {
            backend: Some(Backend::Nft),
            family: Family::Ipv4.into(),
            table: TableName::Filter.into(),
            chain: "KUBE-FIREWALL".into(),
            rule_number: Some(1),
            text: text.into(),
            comment: comment.map(str::to_string),
        }
    }

    #[test]
    fn recognises_the_incident_rules() {
        let kubelet = rule(
            "-A KUBE-FIREWALL ! -s 127.0.0.0/8 -d 127.0.0.0/8 -m comment --comment \"block incoming localnet connections\" -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP",
            Some("block incoming localnet connections"),
        );
        assert!(is_localnet_rule(&kubelet));
        assert!(!is_drop_all(&kubelet));
        assert!(is_drop_all(&rule("-A ISOLATE -j DROP", None)));
        assert!(is_drop_all(&rule(
            "-A ISOLATE -m comment --comment \"quarantine\" -j DROP",
            None
        )));
        assert!(!is_drop_all(&rule("-A INPUT -p icmp -j DROP", None)));
        // A comment of several words (netprobe's own isolation) is still only a comment.
        assert!(is_drop_all(&rule(
            "-A NETPROBE-ISOLATE-IN -m comment --comment \"netprobe isolate\" -j DROP",
            None
        )));
        assert!(!is_drop_all(&rule(
            "-A X -m comment --comment \"a b c\" -p tcp -j DROP",
            None
        )));
        assert!(!is_localnet_rule(&rule("-A INPUT -p icmp -j DROP", None)));
        let d = describe_rule(&kubelet);
        assert!(
            d.starts_with("nft ipv4 table filter chain KUBE-FIREWALL rule 1: -A KUBE-FIREWALL")
        );
        assert!(localnet_flow(
            "198.51.100.5".parse().unwrap(),
            "127.0.0.2".parse().unwrap()
        ));
        assert!(!localnet_flow(
            "127.0.0.1".parse().unwrap(),
            "127.0.0.2".parse().unwrap()
        ));
    }
}
