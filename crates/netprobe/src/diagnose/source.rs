//! `source-address-selection`: the route lookup picked a source the check did not expect.

use netfilter::eval::HostModel;

use super::analyze::{Ctx, RouteChoice};
use super::firewall::localnet_flow;
use super::{Finding, FindingId, Severity, SourceReason};

/// After a localnet drop: the route gave a non-loopback source for a loopback destination.
pub(super) fn source_selection(cx: &mut Ctx<'_>, route: &RouteChoice) {
    let SourceReason::Route { route: text } = &route.reason else {
        return;
    };
    if !localnet_flow(route.src, cx.q.dst) {
        return;
    }
    cx.findings.push(Finding {
        id: FindingId::SourceAddressSelection,
        severity: Severity::Warning,
        summary: format!(
            "for {} the kernel picks source {} (not a loopback address) because the route carries `src {}`",
            cx.q.dst, route.src, route.src
        ),
        evidence: vec![format!("route: {text}")],
        fixes: vec![
            "remove the preferred source from the local route: `ip route replace local 127.0.0.0/8 dev lo \
             table local` (the kernel then uses 127.0.0.1), or bind the check to 127.0.0.1"
                .to_string(),
        ],
    });
}

/// For a remote destination that does not answer: the route's preferred source is an address of
/// another interface than the one the packet leaves by, so answers may be routed elsewhere or
/// dropped by the peer's reverse-path filter.
pub(super) fn foreign_source(cx: &mut Ctx<'_>, route: &RouteChoice, host: &HostModel) {
    let SourceReason::Route { route: text } = &route.reason else {
        return;
    };
    let (Some(out), Some(owner)) = (route.out_iface.as_deref(), host.local_iface(route.src)) else {
        return;
    };
    if owner == out || owner == "lo" {
        return;
    }
    cx.findings.push(Finding {
        id: FindingId::SourceAddressSelection,
        severity: Severity::Warning,
        summary: format!(
            "packets to {} leave by {out} with source {}, an address of {owner}: answers may come back \
             another way or be dropped by the path's reverse-path filters",
            cx.q.dst, route.src
        ),
        evidence: vec![format!("route: {text}"), format!("{} is configured on {owner}", route.src)],
        fixes: vec![format!(
            "set the route's preferred source to an address of {out} (`ip route change … src ADDR`), or \
             bind the check to one"
        )],
    });
}
