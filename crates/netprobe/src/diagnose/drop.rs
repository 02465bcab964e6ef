//! Naming what decided a drop or reject: `localnet-firewall`, `isolation-drop-all` or
//! `firewall-drop`, with the rule, the path that led there and a fix.

use netfilter::eval::{Trace, Verdict};

use super::analyze::Ctx;
use super::firewall::{describe_rule, is_drop_all, is_localnet_rule, localnet_flow, path};
use super::{Finding, FindingId, Protocol, Severity, SourceReason};

/// Names what decided a drop/reject: `localnet-firewall`, `isolation-drop-all` (arrival in
/// another namespace only) or `firewall-drop`. Returns whether a finding was added.
pub(super) fn classify_drop(
    cx: &mut Ctx<'_>,
    t: &Trace,
    ns: &str,
    src_reason: Option<&SourceReason>,
    in_target: bool,
) -> bool {
    if !matches!(t.verdict, Verdict::Drop | Verdict::Reject { .. }) {
        return false;
    }
    let Some(rule) = &t.decided_by else {
        return false;
    };
    // A silent drop cannot produce a refusal: the observation contradicts the rules (a rule
    // the evaluator does not model, or state that changed), so no drop is claimed.
    if matches!(t.verdict, Verdict::Drop)
        && let Some(r @ (probe::Reason::ConnectionRefused | probe::Reason::ConnectionReset)) =
            cx.reason()
    {
        cx.examined.push(format!(
            "the rules predict a drop by {} but the probe saw {r}: not reported as the cause",
            describe_rule(rule)
        ));
        return false;
    }
    let q = cx.q;
    let mut evidence = vec![describe_rule(rule)];
    evidence.extend(path(t, 12));
    evidence.push(cx.observed_text());
    let verb = if matches!(t.verdict, Verdict::Drop) {
        "drops"
    } else {
        "rejects"
    };
    let flow_text = format!(
        "{} {}-> {}{}",
        q.protocol.as_str(),
        cx.src.map_or(String::new(), |s| format!("{s} ")),
        q.dst,
        q.dport.map_or(String::new(), |p| format!(":{p}"))
    );
    let finding = if let (Some(src), true) = (cx.src, is_localnet_rule(rule))
        && localnet_flow(src, q.dst)
    {
        let why = match src_reason {
            Some(SourceReason::ExplicitBind) => format!("the check's socket is bound to {src}"),
            Some(SourceReason::Route { route }) => {
                format!("the kernel chose {src} from the route `{route}`")
            }
            None => format!("the source is {src}"),
        };
        let localnet = cx
            .snap
            .prober
            .sysctl("net.ipv4.conf.all.route_localnet")
            .unwrap_or("?");
        evidence.insert(1, format!("source {src}: {why}"));
        evidence.push(format!("net.ipv4.conf.all.route_localnet = {localnet}"));
        if q.protocol == Protocol::Tcp {
            evidence.push(
                "a SYN dropped on this host is retried silently: the check times out, it is not refused"
                    .to_string(),
            );
        }
        Finding {
            id: FindingId::LocalnetFirewall,
            severity: Severity::Error,
            summary: format!(
                "{}'s localnet rule {verb} {flow_text} from the non-loopback source {src} ({why})",
                rule.chain
            ),
            evidence,
            fixes: vec![
                format!(
                    "send the check from a loopback source: bind the checker to 127.0.0.1, or drop the \
                     route's `src` (`ip route replace local 127.0.0.0/8 dev lo table local` without \
                     `src {src}`)"
                ),
                format!(
                    "or serve the health endpoint on a non-loopback address (e.g. {src}) and check that"
                ),
                "the rule is kubelet's (KUBE-FIREWALL, always installed, not configurable) and, with \
                 `localhostNodePorts`, kube-proxy's copy; kube-proxy `iptables.localhostNodePorts: false` \
                 removes only kube-proxy's copy, so fix the source or the endpoint instead"
                    .to_string(),
            ],
        }
    } else if in_target && is_drop_all(rule) {
        if let Some(own) = netprobe_isolation(rule) {
            evidence.insert(1, own);
        }
        Finding {
            id: FindingId::IsolationDropAll,
            severity: Severity::Error,
            summary: format!(
                "chain {} in the {ns} drops everything (the pod-isolation pattern): the kubelet's \
                 liveness probe fails, and after failureThreshold × periodSeconds (default 3 × 10 s) the \
                 kubelet restarts the container, losing the files written since it started; the rule \
                 lives in the pod's network namespace, which outlives the container, so the restarted \
                 container fails again (a crash loop)",
                rule.chain
            ),
            evidence,
            fixes: vec![
                format!(
                    "to isolate without a restart, let the kubelet's probes through first: insert \
                     `-s {} -p {}{} -j ACCEPT` before the DROP in chain {}",
                    cx.src.map_or("NODE_IP".to_string(), |s| s.to_string()),
                    q.protocol.as_str(),
                    q.dport.map_or(String::new(), |p| format!(" --dport {p}")),
                    rule.chain
                ),
                "collect the evidence (copy files out, checkpoint the container) before isolating"
                    .to_string(),
                format!(
                    "to release: delete the jump to {} and the chain",
                    rule.chain
                ),
            ],
        }
    } else {
        match (src_reason, cx.src) {
            (Some(SourceReason::Route { route }), _) => {
                evidence.push(format!("route used: {route}"));
            }
            (Some(SourceReason::ExplicitBind), Some(src)) => {
                evidence.push(format!("source {src}: the check's socket is bound to it"));
            }
            _ => {}
        }
        Finding {
            id: FindingId::FirewallDrop,
            severity: Severity::Error,
            summary: format!(
                "{} {} {verb} {flow_text} in the {ns}",
                netfilter::Backend::name_of(rule.backend),
                rule.rule_number
                    .map_or(format!("chain {} policy", rule.chain), |n| format!(
                        "rule {n} of {} {}",
                        rule.table, rule.chain
                    )),
            ),
            evidence,
            fixes: vec![allow_fix(rule, q)],
        }
    };
    cx.findings.push(finding);
    true
}

/// When `rule` is netprobe's own isolation (`netprobe isolate`: a NETPROBE-ISOLATE chain, the
/// `netprobe isolate` comment), the evidence line that says so and how to undo it.
fn netprobe_isolation(rule: &netfilter::eval::RuleRef) -> Option<String> {
    let ours = rule.chain.starts_with(crate::isolate::rules::CHAIN_PREFIX)
        || rule
            .comment
            .as_deref()
            .is_some_and(|c| c.starts_with(crate::isolate::rules::COMMENT));
    ours.then(|| {
        format!(
            "this is netprobe's own isolation (`netprobe isolate`, chain {}); its record is at \
             GET /api/v1/isolations, and `netprobe release --netns NAME` (or `--pid PID`) undoes it exactly",
            rule.chain
        )
    })
}

/// The command that lets the flow through before `rule`: `iptables -I` for an iptables rule,
/// `nft insert rule … handle` advice for a native nftables one.
fn allow_fix(rule: &netfilter::eval::RuleRef, q: &super::Question) -> String {
    use netfilter::eval::TableFamily;
    let v6 = !q.dst.is_ipv4();
    if rule.backend == Some(netfilter::Backend::Nftables) {
        let family = match rule.family {
            TableFamily::Ipv4 => "ip",
            TableFamily::Ipv6 => "ip6",
            TableFamily::Inet => "inet",
        };
        let l4 = match (q.protocol, q.dport) {
            (Protocol::Icmp, _) if v6 => "icmpv6 type echo-request".to_string(),
            (Protocol::Icmp, _) => "icmp type echo-request".to_string(),
            (p, Some(port)) => format!("{} dport {port}", p.as_str()),
            (p, None) => format!("meta l4proto {}", p.as_str()),
        };
        let addr = if v6 { "ip6" } else { "ip" };
        return format!(
            "allow the flow before that rule: find its handle with `nft -a list chain {family} {} \
             {}`, then `nft insert rule {family} {} {} position HANDLE {addr} daddr {} {l4} \
             accept`; or remove the rule if it is not meant for this traffic",
            rule.table, rule.chain, rule.table, rule.chain, q.dst
        );
    }
    let l4 = match (q.protocol, q.dport) {
        (Protocol::Icmp, _) if v6 => " --icmpv6-type echo-request".to_string(),
        (Protocol::Icmp, _) => " --icmp-type echo-request".to_string(),
        (_, Some(p)) => format!(" --dport {p}"),
        _ => String::new(),
    };
    format!(
        "allow the flow before that rule, e.g. `{} -t {} -I {} {} -p {}{l4} -d {} -j ACCEPT`, or \
         remove the rule if it is not meant for this traffic",
        tool_for(rule),
        rule.table,
        rule.chain,
        rule.rule_number.unwrap_or(1),
        q.protocol.as_str(),
        q.dst
    )
}

pub(super) fn tool_for(r: &netfilter::eval::RuleRef) -> &'static str {
    use netfilter::Backend;
    use netfilter::eval::TableFamily;
    match (r.backend, r.family) {
        (Some(Backend::Legacy), TableFamily::Ipv6) => "ip6tables-legacy",
        (Some(Backend::Legacy), _) => "iptables-legacy",
        (_, TableFamily::Ipv6) => "ip6tables-nft",
        (_, _) => "iptables-nft",
    }
}
