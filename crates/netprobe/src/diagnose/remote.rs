//! A destination that is neither on this host nor in another namespace on it: a Service VIP
//! kube-proxy did not program (`service-not-programmed`), a remote that does not answer
//! (`remote-unreachable`) or that refuses (`port-closed`).

use netfilter::Cidr;
use netfilter::eval::HostModel;
use probe::Reason;

use super::analyze::{Ctx, RouteChoice};
use super::rules::{self, Parsed};
use super::{Extra, Finding, FindingId, Protocol, Severity};

pub(super) fn remote(
    cx: &mut Ctx<'_>,
    prober: &Parsed<'_>,
    host: &HostModel,
    route: &RouteChoice,
    dnat: bool,
    extra: &Extra,
) {
    let q = cx.q;
    for n in &cx.snap.target_search {
        cx.examined
            .push(format!("destination namespace search: {n}"));
    }
    if !cx.failing_or_offline() {
        return;
    }
    let default_only = !host
        .routes
        .iter()
        .any(|r| r.dst.contains(q.dst) && r.dst.prefix_len().unwrap_or(0) > 0)
        && !host
            .addrs
            .iter()
            .any(|a| Cidr::new(a.addr, a.prefix).is_some_and(|n| n.contains(q.dst)));
    let kube_chains: Vec<String> = prober
        .rulesets
        .iter()
        .flat_map(|rs| {
            rs.tables.iter().flat_map(move |t| {
                t.chains
                    .iter()
                    .filter(|c| {
                        matches!(
                            c.name.as_str(),
                            "KUBE-SERVICES"
                                | "KUBE-PROXY-CANARY"
                                | "KUBE-IPTABLES-HINT"
                                | "KUBE-KUBELET-CANARY"
                        )
                    })
                    .map(move |c| {
                        format!(
                            "{} {} table {} chain {}",
                            netfilter::Backend::name_of(rs.backend),
                            rs.family.as_str(),
                            t.name,
                            c.name
                        )
                    })
            })
        })
        .collect();
    let mut payload_rules = Vec::new();
    for (name, text) in &extra.restore_payloads {
        let mut sink = Vec::new();
        if let Ok((_, rs)) = rules::check_payload(name, text, &[], &mut sink) {
            let needle = format!("{}/{}", q.dst, if q.dst.is_ipv4() { 32 } else { 128 });
            for t in &rs.tables {
                for c in &t.chains {
                    for r in c.rules.iter().filter(|r| r.text.contains(&needle)) {
                        payload_rules.push(format!("{name} line {}: {}", r.line, r.text));
                    }
                }
            }
        }
    }
    let neighbours = programmed_neighbours(prober, q.dst);
    // A Service VIP, not any remote address: a payload names it, or kube-proxy programs other
    // ClusterIPs next to it (the same /16, or /112 for IPv6: Service CIDRs are wider).
    let vip = !payload_rules.is_empty() || (!kube_chains.is_empty() && !neighbours.is_empty());
    if q.protocol != Protocol::Icmp && default_only && !dnat && vip {
        let mut evidence = vec![
            format!(
                "{} is not an address of this host or of any namespace scanned",
                q.dst
            ),
            format!(
                "route used: {} (only the default route covers it)",
                route.text
            ),
            "no DNAT rule of the nat table matched the flow on the output path".to_string(),
        ];
        evidence.extend(
            kube_chains
                .iter()
                .map(|c| format!("Kubernetes rules present: {c}")),
        );
        if !neighbours.is_empty() {
            evidence.push(format!(
                "kube-proxy programs ClusterIPs next to it in nat KUBE-SERVICES: {}",
                neighbours.join(", ")
            ));
        }
        evidence.extend(
            payload_rules
                .iter()
                .map(|r| format!("would program it: {r}")),
        );
        let payload_failed = cx.findings.iter().any(|f| f.id == FindingId::MissingChain);
        evidence.push(cx.observed_text());
        cx.findings.push(Finding {
            id: FindingId::ServiceNotProgrammed,
            severity: Severity::Error,
            summary: format!(
                "{}:{} looks like a Service VIP that kube-proxy did not program: no local address, no route \
                 but the default, and no DNAT rule for it{}",
                q.dst,
                q.dport.unwrap_or(0),
                if payload_failed {
                    " (the restore payload fails: see missing-chain)"
                } else {
                    ""
                }
            ),
            evidence,
            fixes: vec![
                "check kube-proxy's log for `iptables-restore` failures and fix their cause (often a \
                 missing chain or mixed legacy/nf_tables backends), then let it resync"
                    .to_string(),
                format!(
                    "confirm the Service exists and has endpoints: `kubectl get svc,endpointslices -A | grep {}`",
                    q.dst
                ),
            ],
        });
        return;
    }
    let timeout_like = matches!(cx.reason(), Some(Reason::Timeout | Reason::HostUnreachable));
    if timeout_like && !cx.has_error() {
        super::source::foreign_source(cx, route, host);
        cx.findings.push(Finding {
            id: FindingId::RemoteUnreachable,
            severity: Severity::Error,
            summary: format!(
                "packets to {} leave this host via {} and no answer comes back: nothing on this host \
                 drops them, the cause is elsewhere (the path or the remote host)",
                q.dst,
                route.out_iface.as_deref().unwrap_or("?")
            ),
            evidence: vec![
                format!("route used: {}", route.text),
                "the output path's rules accept the flow".to_string(),
                if cx.snap.target_search.is_empty() {
                    // No search ran: a mesh peer (another node), or a snapshot without a target.
                    format!(
                        "{} is not an address of this host (its other namespaces were not searched)",
                        q.dst
                    )
                } else {
                    format!(
                        "{} is not an address of this host or of any other namespace on it",
                        q.dst
                    )
                },
                cx.observed_text(),
            ],
            fixes: vec![format!(
                "look along the path: the next hop {} and the remote host's firewall; \
                 `netprobe diagnose` on the remote host names its own cause",
                route
                    .gateway
                    .map_or("(on-link)".to_string(), |g| g.to_string())
            )],
        });
    } else if cx.reason() == Some(Reason::ConnectionRefused) {
        cx.findings.push(Finding {
            id: FindingId::PortClosed,
            severity: Severity::Error,
            summary: format!(
                "{} answered with a reset (or port unreachable): nothing listens on port {} there",
                q.dst,
                q.dport.unwrap_or(0)
            ),
            evidence: vec![cx.observed_text(), format!("route used: {}", route.text)],
            fixes: vec!["start the service, or check the port in the check's target".to_string()],
        });
    }
}

/// ClusterIPs (`-d ADDR/32` or `/128` in nat `KUBE-SERVICES`) in the same /16 (IPv4) or /112
/// (IPv6) as `dst`, at most five.
fn programmed_neighbours(prober: &Parsed<'_>, dst: std::net::IpAddr) -> Vec<String> {
    let (host_len, wide) = if dst.is_ipv4() { (32, 16) } else { (128, 112) };
    let Some(net) = Cidr::new(dst, wide) else {
        return Vec::new();
    };
    let mut out: Vec<String> = Vec::new();
    for rs in &prober.rulesets {
        let Some(chain) = rs
            .table(netfilter::TableName::Nat)
            .and_then(|t| t.chain("KUBE-SERVICES"))
        else {
            continue;
        };
        for r in &chain.rules {
            let words: Vec<&str> = r.text.split_whitespace().collect();
            let vips = words
                .windows(2)
                .filter(|w| w[0] == "-d" || w[0] == "--destination")
                .filter_map(|w| Cidr::parse(w[1]).ok())
                .filter(|c| c.prefix_len() == Some(host_len) && net.contains(c.addr()));
            for v in vips {
                let v = v.addr().to_string();
                if out.len() < 5 && !out.contains(&v) {
                    out.push(v);
                }
            }
        }
    }
    out
}
