//! A destination on this host: in the prober's own namespace (delivered over loopback; the
//! output trace already crossed INPUT) or in another namespace (the arrival path is traced
//! there). Checks the echo sysctl, reverse-path filtering and listening sockets.

use netfilter::eval::{Flow, HostModel};
use probe::Reason;

use super::analyze::{Ctx, parse_target};
use super::drop::classify_drop;
use super::{Finding, FindingId, Protocol, Severity};
use crate::collect::procfs::SocketProto;
use crate::collect::snapshot::NamespaceState;

/// The destination is an address of the prober's namespace.
pub(super) fn local_delivery(cx: &mut Ctx<'_>, state: &NamespaceState, route: &str) {
    cx.examined.push(format!(
        "{} is local to the {} (route `{route}`)",
        cx.q.dst,
        state.netns.netns.describe()
    ));
    endpoint_checks(cx, state);
}

/// The destination lives in another namespace: trace its arrival there.
pub(super) fn arrival(cx: &mut Ctx<'_>, state: &NamespaceState, mut flow: Flow) {
    let ns = state.netns.netns.describe();
    let (rulesets, nft, host) = parse_target(state, cx);
    let in_iface = host.local_iface(cx.q.dst).map(str::to_string);
    flow.in_iface.clone_from(&in_iface);
    cx.examined.push(format!(
        "{} is an address of the {ns} (interface {}); its arrival path is traced there",
        cx.q.dst,
        in_iface.as_deref().unwrap_or("?")
    ));
    if cx.failing_or_offline() && rp_filter(cx, state, &host, &flow, in_iface.as_deref()) {
        return;
    }
    let traces = netfilter::eval::trace_all(&rulesets, &nft, &host, &flow);
    let t = traces.branches.first().cloned();
    cx.examined.push(format!(
        "arrival path in the {ns}: {} ({} step(s))",
        match traces.verdict() {
            netfilter::eval::Verdict::Undetermined { reason } => format!("undetermined ({reason})"),
            v => v.as_str().to_string(),
        },
        t.as_ref().map_or(0, |t| t.steps.len())
    ));
    if let Some(t) = &t
        && cx.failing_or_offline()
        && classify_drop(cx, t, &ns, cx.src_reason.clone().as_ref(), true)
    {
        return;
    }
    endpoint_checks(cx, state);
}

/// `rp-filter-drop`: strict mode (1) and the reverse route for the source leaves by another
/// interface, or loose mode (2) and there is no reverse route at all. The kernel uses the
/// larger of `conf.all.rp_filter` and `conf.IFACE.rp_filter` (`IN_DEV_RPFILTER`,
/// `include/linux/inetdevice.h`; `fib_validate_source()` in `net/ipv4/fib_frontend.c`).
pub(super) fn rp_filter(
    cx: &mut Ctx<'_>,
    state: &NamespaceState,
    host: &HostModel,
    flow: &Flow,
    in_iface: Option<&str>,
) -> bool {
    let (Some(iface), true) = (in_iface, flow.src.is_ipv4()) else {
        return false;
    };
    let read = |k: &str| state.sysctl(k).and_then(|v| v.parse::<u8>().ok());
    let all = read("net.ipv4.conf.all.rp_filter").unwrap_or(0);
    let dev = read(&format!("net.ipv4.conf.{iface}.rp_filter")).unwrap_or(0);
    let mode = all.max(dev);
    let reverse = host.route_dev(flow.src).map(str::to_string);
    cx.examined.push(format!(
        "rp_filter in the {}: all={all} {iface}={dev} (effective {mode}); reverse route for {} leaves by {}",
        state.netns.netns.describe(),
        flow.src,
        reverse.as_deref().unwrap_or("nothing")
    ));
    let drop = match mode {
        1 => reverse.as_deref() != Some(iface),
        2 => reverse.is_none(),
        _ => false,
    };
    if !drop || iface == "lo" {
        return false;
    }
    cx.findings.push(Finding {
        id: FindingId::RpFilterDrop,
        severity: Severity::Error,
        summary: format!(
            "reverse-path filtering in the {} drops packets from {} arriving on {iface}: {}",
            state.netns.netns.describe(),
            flow.src,
            match &reverse {
                Some(r) => format!("the route back to {} leaves by {r}, not {iface} (strict mode)", flow.src),
                None => format!("there is no route back to {}", flow.src),
            }
        ),
        evidence: vec![
            format!("net.ipv4.conf.all.rp_filter = {all}, net.ipv4.conf.{iface}.rp_filter = {dev}"),
            format!(
                "reverse route for {}: {}",
                flow.src,
                reverse.as_deref().unwrap_or("none")
            ),
            cx.observed_text(),
        ],
        fixes: vec![
            format!(
                "add a route back to {} via {iface}, or use loose mode: `sysctl -w net.ipv4.conf.all.rp_filter=2 \
                 net.ipv4.conf.{iface}.rp_filter=2`",
                flow.src
            ),
        ],
    });
    true
}

/// The destination namespace's own answers: the ICMP echo sysctl and listening sockets.
pub(super) fn endpoint_checks(cx: &mut Ctx<'_>, state: &NamespaceState) {
    let q = cx.q;
    let ns = state.netns.netns.describe();
    if !cx.failing_or_offline() {
        return;
    }
    match (q.protocol, q.dport) {
        (Protocol::Icmp, _) => {
            let ignore = state.sysctl("net.ipv4.icmp_echo_ignore_all");
            cx.examined.push(format!(
                "net.ipv4.icmp_echo_ignore_all = {} in the {ns}",
                ignore.unwrap_or("?")
            ));
            if q.dst.is_ipv4() && ignore == Some("1") {
                cx.findings.push(Finding {
                    id: FindingId::IcmpEchoIgnored,
                    severity: Severity::Error,
                    summary: format!(
                        "the {ns} ignores every ICMP echo request (net.ipv4.icmp_echo_ignore_all = 1): {} never answers a ping",
                        q.dst
                    ),
                    evidence: vec![
                        format!("net.ipv4.icmp_echo_ignore_all = 1 in the {ns}"),
                        cx.observed_text(),
                    ],
                    fixes: vec![
                        "`sysctl -w net.ipv4.icmp_echo_ignore_all=0` there, or check it with TCP instead".to_string(),
                    ],
                });
            }
        }
        (Protocol::Tcp | Protocol::Udp, Some(port)) => {
            let proto = if q.protocol == Protocol::Tcp {
                SocketProto::Tcp
            } else {
                SocketProto::Udp
            };
            let listening: Vec<String> = state
                .listeners
                .iter()
                .filter(|l| l.proto == proto && l.port == port)
                .map(|l| format!("{} {}:{} (uid {})", l.proto.as_str(), l.addr, l.port, l.uid))
                .collect();
            let accepts = state
                .listeners
                .iter()
                .any(|l| l.proto == proto && l.accepts(q.dst, port));
            cx.examined.push(format!(
                "sockets on {} port {port} in the {ns}: [{}]",
                proto.as_str(),
                listening.join(", ")
            ));
            let refused_or_offline =
                cx.observed.is_none() || cx.reason() == Some(Reason::ConnectionRefused);
            if !accepts && refused_or_offline {
                let mut evidence = vec![format!(
                    "no {} socket in the {ns} listens on {}:{port} or on a wildcard address",
                    proto.as_str(),
                    q.dst
                )];
                if !listening.is_empty() {
                    evidence.push(format!(
                        "bound to other addresses: {}",
                        listening.join(", ")
                    ));
                }
                evidence.push(cx.observed_text());
                cx.findings.push(Finding {
                    id: FindingId::PortClosed,
                    severity: Severity::Error,
                    summary: format!(
                        "nothing listens on {} {}:{port} in the {ns}: the kernel answers with a {}",
                        proto.as_str(),
                        q.dst,
                        if proto == SocketProto::Tcp {
                            "reset"
                        } else {
                            "port unreachable"
                        }
                    ),
                    evidence,
                    fixes: vec![format!(
                        "start the service, or bind it to {} (or 0.0.0.0 / ::) port {port}",
                        q.dst
                    )],
                });
            }
        }
        _ => {}
    }
}
