//! The analysis: findings from the snapshot, the question and the observation. The order of
//! reasoning follows the packet: can the prober open its socket (ICMP permission), is there a
//! route and which source does it give, what do the rules on the output path do, and — when the
//! destination lives on this host — what happens on arrival (rules, rp_filter, echo sysctl,
//! listening sockets). Remote destinations end in `service-not-programmed` or
//! `remote-unreachable` only when the local facts support it.

use std::net::IpAddr;

use netfilter::eval::{Flow, HostModel, NatKind, Origin, Verdict, trace_all};
use netfilter::nft::NftRuleset;
use netfilter::{Cidr, Ruleset};
use probe::Reason;

use super::drop::classify_drop;
use super::local::{arrival, local_delivery};
use super::remote::remote;
use super::rules::{self, Parsed};
use super::source::source_selection;
use super::{
    Conclusion, Diagnosis, Extra, Finding, FindingId, FlowSummary, Observed, Protocol, Question,
    Severity, SourceReason,
};
use crate::collect::procfs::parse_ping_group_range;
use crate::collect::snapshot::{NamespaceState, Snapshot};
use crate::collect::{CaptureStatus, RouteQuery};

/// Accumulates findings and notes.
pub(super) struct Ctx<'a> {
    pub snap: &'a Snapshot,
    pub q: &'a Question,
    pub observed: Option<Observed>,
    pub findings: Vec<Finding>,
    pub examined: Vec<String>,
    pub unreadable: Vec<String>,
    /// The flow's source, once known.
    pub src: Option<IpAddr>,
    /// Why that source (the route used, or an explicit bind), once known.
    pub src_reason: Option<SourceReason>,
    /// The peer that asked for this (inbound) diagnosis over the API, if one did.
    pub asked_by: Option<IpAddr>,
}

impl Ctx<'_> {
    /// Whether the probe failed in a way the network can explain, or no probe ran (the state
    /// alone is judged). A failure after the connection was made (an HTTP status, TLS, a
    /// condition, a gRPC status, a garbled reply) is not the network's: flow findings are not
    /// looked for then.
    pub fn failing_or_offline(&self) -> bool {
        self.observed
            .as_ref()
            .is_none_or(|o| !o.success && o.reason.is_none_or(network_reason))
    }

    /// The observed failure reason.
    pub fn reason(&self) -> Option<Reason> {
        self.observed.as_ref().and_then(|o| o.reason)
    }

    /// `observed: timeout` or `no probe ran`, for evidence.
    pub fn observed_text(&self) -> String {
        match &self.observed {
            Some(o) if o.success => "the probe succeeded".to_string(),
            Some(o) => format!(
                "the probe failed with {}: {}",
                o.reason.map_or("error", |r| r.as_str()),
                o.message
            ),
            None => match self.asked_by {
                Some(a) => format!(
                    "no probe ran here: {a} asked over the API; judged from this host's state"
                ),
                None => "no probe ran: judged from the recorded state alone".to_string(),
            },
        }
    }

    pub fn has_error(&self) -> bool {
        self.findings.iter().any(|f| f.severity == Severity::Error)
    }
}

/// Reasons a packet-path cause can explain: no answer, a refusal, an unreachable, a socket the
/// kernel refused, a DNS query without answer, or an unclassified error.
fn network_reason(r: Reason) -> bool {
    matches!(
        r,
        Reason::Timeout
            | Reason::ConnectionRefused
            | Reason::HostUnreachable
            | Reason::NetworkUnreachable
            | Reason::PermissionDenied
            | Reason::DnsError
            | Reason::Error
    )
}

/// Parses a namespace's rules (the `*-save` rulesets and the native nftables ruleset) and host
/// model; what does not parse is unreadable.
pub(super) fn parse<'a>(state: &'a NamespaceState, cx: &mut Ctx<'_>) -> (Parsed<'a>, HostModel) {
    let rulesets = state.netns.rulesets().unwrap_or_else(|e| {
        cx.unreadable
            .push(format!("{}: {e}", state.netns.netns.describe()));
        Vec::new()
    });
    let nft: Vec<NftRuleset> = match state.netns.nft() {
        Ok(n) => n.into_iter().collect(),
        Err(e) => {
            cx.unreadable.push(format!(
                "{}: nft -j list ruleset output, {e}",
                state.netns.netns.describe()
            ));
            Vec::new()
        }
    };
    let host = state.netns.host_model().unwrap_or_else(|e| {
        cx.unreadable
            .push(format!("{}: {e}", state.netns.netns.describe()));
        let addrs = state.netns.addrs.iter();
        addrs.fold(HostModel::default(), |h, a| {
            h.with_addr(&a.iface, a.addr, a.prefix)
        })
    });
    // A tool that ran and failed (permissions, a kernel module missing) left a gap; a tool that
    // is not installed is only noted in `examined`.
    let captures = state
        .netns
        .iptables
        .iter()
        .map(|d| &d.capture)
        .chain([&state.netns.ipset, &state.netns.addresses]);
    for c in captures {
        if !matches!(c.status, CaptureStatus::Ok | CaptureStatus::Missing) {
            cx.unreadable.push(format!(
                "{}: `{}` {}",
                state.netns.netns.describe(),
                c.argv.join(" "),
                c.summary()
            ));
        }
    }
    let counts: Vec<String> = rulesets
        .iter()
        .map(|rs| {
            format!(
                "{} {} {} rules",
                netfilter::Backend::name_of(rs.backend),
                rs.family.as_str(),
                rs.rule_count()
            )
        })
        .collect();
    let tools: Vec<String> = state
        .netns
        .iptables
        .iter()
        .map(|d| format!("{} {}", d.tool.program(), d.capture.summary()))
        .collect();
    let native: Vec<String> = nft
        .iter()
        .flat_map(|n| &n.tables)
        .map(|t| format!("{} {}", t.family, t.name))
        .collect();
    cx.examined.push(format!(
        "{}: rules [{}] ({}); native nftables tables: [{}] (nft -j list ruleset {})",
        state.netns.netns.describe(),
        counts.join(", "),
        tools.join("; "),
        native.join(", "),
        state.netns.nft_ruleset.summary()
    ));
    (
        Parsed {
            state,
            rulesets,
            nft,
        },
        host,
    )
}

pub(super) fn run(
    snap: &Snapshot,
    q: &Question,
    observed: Option<Observed>,
    extra: &Extra,
) -> Diagnosis {
    let mut cx = Ctx {
        snap,
        q,
        observed,
        findings: Vec::new(),
        examined: Vec::new(),
        unreadable: snap.unreadable(),
        src: None,
        src_reason: None,
        asked_by: None,
    };
    if let Some(o) = &cx.observed
        && !o.success
        && !cx.failing_or_offline()
    {
        cx.examined.push(format!(
            "the probe reached the service and failed with {}: the packet path is not the cause, \
             so no flow finding is looked for",
            o.reason.map_or("error", |r| r.as_str())
        ));
    }
    let (prober, host) = parse(&snap.prober, &mut cx);
    static_findings(&mut cx, &prober, extra);
    let flow = analyze_flow(&mut cx, &prober, &host, extra);
    if q.protocol == Protocol::Icmp
        && !cx.has_error()
        && cx.reason() == Some(Reason::PermissionDenied)
    {
        // Denied although the credentials look sufficient: report the observation, no guess.
        icmp_permission(&mut cx, true);
    }
    finish(cx, flow)
}

pub(super) fn finish(mut cx: Ctx<'_>, flow: Option<FlowSummary>) -> Diagnosis {
    cx.findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
    let conclusion = if cx.has_error() {
        Conclusion::Explained
    } else if cx.observed.as_ref().is_some_and(|o| !o.success) {
        Conclusion::Unexplained
    } else {
        Conclusion::Healthy
    };
    Diagnosis {
        target: cx.q.target.clone(),
        flow,
        observed: cx.observed,
        conclusion,
        findings: cx.findings,
        examined: cx.examined,
        unreadable: cx.unreadable,
        taken_at_unix_ms: cx.snap.taken_at_unix_ms,
        far_end: None,
    }
}

fn static_findings(cx: &mut Ctx<'_>, prober: &Parsed<'_>, extra: &Extra) {
    cx.findings.extend(rules::dual_backend(prober));
    cx.findings.extend(rules::missing_in_rules(prober));
    for (name, text) in &extra.restore_payloads {
        match rules::check_payload(name, text, &prober.rulesets, &mut cx.examined) {
            Ok((f, _)) => cx.findings.extend(f),
            Err(e) => cx.unreadable.push(e),
        }
    }
}

/// `icmp-permission-denied` from the credentials and `ping_group_range`. Returns whether the
/// prober may open neither socket. With `observed_only`, reports the kernel's refusal even
/// though the credentials look sufficient.
fn icmp_permission(cx: &mut Ctx<'_>, observed_only: bool) -> bool {
    let creds = &cx.snap.credentials;
    let Some(c) = &creds.credentials else {
        cx.examined
            .push(format!("prober credentials unreadable (pid {})", creds.pid));
        return false;
    };
    let range_text = cx.snap.prober.sysctl("net.ipv4.ping_group_range");
    let range = range_text.and_then(parse_ping_group_range);
    let gids = c.ping_gids();
    let dgram_ok = range.is_some_and(|(lo, hi)| gids.iter().any(|g| (lo..=hi).contains(g)));
    let raw_ok = c.has_net_raw();
    let gid_list = gids
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let cred_line = format!(
        "prober pid {} ({}): uid {} gid {} groups [{}], CapEff {:016x} (CAP_NET_RAW {}), CapAmb {:016x}, CapBnd {:016x}, NoNewPrivs {}",
        c.pid,
        c.name,
        c.euid(),
        c.egid(),
        c.groups
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(" "),
        c.cap_eff,
        if raw_ok { "effective" } else { "not effective" },
        c.cap_amb,
        c.cap_bnd,
        u8::from(c.no_new_privs)
    );
    let range_line = format!(
        "net.ipv4.ping_group_range = {} in the {} (datagram ICMP sockets need the effective gid or a \
         supplementary gid inside it; the default \"1 0\" admits nobody)",
        range_text.unwrap_or("unreadable"),
        cx.snap.prober.netns.netns.describe()
    );
    cx.examined.push(cred_line.clone());
    cx.examined.push(range_line.clone());
    let denied = !dgram_ok && !raw_ok;
    let prober_is_other = !creds.is_self;
    let report = if observed_only {
        true
    } else {
        denied
            && (cx.reason() == Some(Reason::PermissionDenied)
                || cx.observed.is_none()
                || prober_is_other)
    };
    if !report {
        return false;
    }
    let summary = if observed_only {
        format!(
            "the kernel refused both ICMP sockets (datagram and raw) although gid(s) [{gid_list}] {} \
             and CAP_NET_RAW is {}: a seccomp or LSM policy, or a user namespace, refuses them",
            if dgram_ok {
                "are inside ping_group_range"
            } else {
                "are outside ping_group_range"
            },
            if raw_ok { "effective" } else { "not effective" }
        )
    } else {
        format!(
            "the prober (pid {}, uid {}) may open neither ICMP socket: its gid(s) [{gid_list}] are outside \
             net.ipv4.ping_group_range \"{}\" (datagram socket: EACCES) and it has no effective CAP_NET_RAW \
             (raw socket: EPERM)",
            c.pid,
            c.euid(),
            range_text.unwrap_or("?")
        )
    };
    let gid = c.egid();
    cx.findings.push(Finding {
        id: FindingId::IcmpPermissionDenied,
        severity: Severity::Error,
        summary,
        evidence: vec![cred_line, range_line, cx.observed_text()],
        fixes: vec![
            format!(
                "widen the range in the prober's network namespace to include gid {gid}: \
                 `sysctl -w net.ipv4.ping_group_range=\"{gid} {gid}\"` (or \"0 2147483647\"); in Kubernetes \
                 the pod's securityContext.sysctls: [{{name: net.ipv4.ping_group_range, value: \"{gid} {gid}\"}}] \
                 (a safe sysctl; with hostNetwork the node's value applies)"
            ),
            "for a process running as root (uid 0): grant CAP_NET_RAW (securityContext.capabilities.add: [NET_RAW])"
                .to_string(),
            format!(
                "adding NET_RAW does not help a non-root container (uid {}): Kubernetes sets no ambient \
                 capabilities, so an added capability is not effective for a non-root uid (here CapAmb \
                 {:016x}); file capabilities on the binary (`setcap cap_net_raw+ep`) {}",
                c.euid(),
                c.cap_amb,
                if c.no_new_privs {
                    "do not help either: NoNewPrivs is set, so execve grants none"
                } else {
                    "would, if the runtime allows them"
                }
            ),
        ],
    });
    true
}

/// The route and source the flow takes; `None` (with findings or notes) when there is none.
pub(super) struct RouteChoice {
    pub src: IpAddr,
    pub reason: SourceReason,
    pub out_iface: Option<String>,
    pub gateway: Option<IpAddr>,
    pub text: String,
}

fn local_route_text(state: &NamespaceState, dst: IpAddr) -> Option<(String, Option<IpAddr>)> {
    let json = state.local_table.ok_stdout()?;
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    let mut best: Option<(u8, String, Option<IpAddr>)> = None;
    for r in v.as_array()? {
        let s = |k: &str| r.get(k).and_then(serde_json::Value::as_str);
        if s("type") != Some("local") {
            continue;
        }
        let Some(net) = s("dst").and_then(|d| Cidr::parse(d).ok()) else {
            continue;
        };
        if !net.contains(dst) {
            continue;
        }
        let len = net.prefix_len().unwrap_or(0);
        if best.as_ref().is_some_and(|b| b.0 >= len) {
            continue;
        }
        let src = s("prefsrc").and_then(|p| p.parse().ok());
        let text = format!(
            "local {} dev {} table local{}",
            s("dst").unwrap_or("?"),
            s("dev").unwrap_or("?"),
            src.map_or(String::new(), |p: IpAddr| format!(" src {p}"))
        );
        best = Some((len, text, src));
    }
    best.map(|(_, t, s)| (t, s))
}

fn route_choice(cx: &mut Ctx<'_>, host: &HostModel) -> Option<RouteChoice> {
    let q = cx.q;
    let state = &cx.snap.prober;
    let query = RouteQuery {
        to: q.dst,
        from: q.source,
    };
    let local = local_route_text(state, q.dst);
    if let Some(l) = state.netns.route(query) {
        let asked = l.capture.argv.join(" ");
        let Some(r) = &l.route else {
            let err = l.capture.stderr.lines().next().unwrap_or("").to_string();
            no_route(cx, &format!("`{asked}`: {} {err}", l.capture.summary()));
            return None;
        };
        if matches!(
            r.kind.as_str(),
            "unreachable" | "blackhole" | "prohibit" | "throw"
        ) {
            no_route(cx, &format!("`{asked}`: a {} route", r.kind));
            return None;
        }
        let mut text = format!(
            "{} {}{}{}{}",
            r.kind,
            q.dst,
            r.gateway.map_or(String::new(), |g| format!(" via {g}")),
            r.dev
                .as_ref()
                .map_or(String::new(), |d| format!(" dev {d}")),
            r.prefsrc.map_or(String::new(), |s| format!(" src {s}"))
        );
        cx.examined.push(format!("route lookup `{asked}`: {text}"));
        // For a local destination the preferred source comes from the local table's route.
        if r.kind == "local"
            && let Some((t, _)) = &local
        {
            cx.examined.push(format!("local table route: `{t}`"));
            text.clone_from(t);
        }
        let (src, reason) = match (q.source, r.prefsrc) {
            (Some(s), _) => (s, SourceReason::ExplicitBind),
            (None, Some(p)) => (
                p,
                SourceReason::Route {
                    route: text.clone(),
                },
            ),
            (None, None) => {
                cx.examined
                    .push("the route lookup gave no preferred source".to_string());
                return None;
            }
        };
        return Some(RouteChoice {
            src,
            reason,
            out_iface: r.dev.clone(),
            gateway: r.gateway,
            text,
        });
    }
    // No lookup in the snapshot (taken without --target): the tables stand in for the kernel.
    if let Some((t, prefsrc)) = local {
        let src = q.source.or(prefsrc).or_else(|| {
            let lo: IpAddr = if q.dst.is_ipv4() {
                IpAddr::from([127, 0, 0, 1])
            } else {
                IpAddr::from(std::net::Ipv6Addr::LOCALHOST)
            };
            if q.dst.is_loopback() {
                Some(lo)
            } else {
                Some(q.dst)
            }
        })?;
        let reason = if q.source.is_some() {
            SourceReason::ExplicitBind
        } else {
            SourceReason::Route { route: t.clone() }
        };
        cx.examined.push(format!(
            "no route lookup for {} in the snapshot; the local table gives `{t}`",
            q.dst
        ));
        return Some(RouteChoice {
            src,
            reason,
            out_iface: Some("lo".to_string()),
            gateway: None,
            text: t,
        });
    }
    let Some(dev) = host.route_dev(q.dst).map(str::to_string) else {
        no_route(
            cx,
            &format!("no route to {} in the main table of the snapshot", q.dst),
        );
        return None;
    };
    let family = netfilter::Family::of(q.dst);
    let src = q.source.or_else(|| host.sole_addr(&dev, family))?;
    let text = format!("main table: {} dev {dev}", q.dst);
    cx.examined.push(format!(
        "no route lookup for {} in the snapshot; {text}, source {src} (the interface's address)",
        q.dst
    ));
    Some(RouteChoice {
        src,
        reason: if q.source.is_some() {
            SourceReason::ExplicitBind
        } else {
            SourceReason::Route {
                route: text.clone(),
            }
        },
        out_iface: Some(dev),
        gateway: None,
        text,
    })
}

fn no_route(cx: &mut Ctx<'_>, evidence: &str) {
    if !cx.failing_or_offline() {
        cx.examined.push(format!("route: {evidence}"));
        return;
    }
    cx.findings.push(Finding {
        id: FindingId::NoRoute,
        severity: Severity::Error,
        summary: format!(
            "the {} has no usable route to {}: the kernel fails the connect/send at once \
             (ENETUNREACH/EHOSTUNREACH) and no packet leaves",
            cx.snap.prober.netns.netns.describe(),
            cx.q.dst
        ),
        evidence: vec![evidence.to_string(), cx.observed_text()],
        fixes: vec![format!(
            "add a route to {} (`ip route add {}/{} via GATEWAY`), or a default route",
            cx.q.dst,
            cx.q.dst,
            if cx.q.dst.is_ipv4() { 32 } else { 128 }
        )],
    });
}

pub(super) fn build_flow(q: &Question, src: IpAddr, origin: Origin) -> Flow {
    match (q.protocol, q.dport) {
        (Protocol::Icmp, _) => Flow::echo_request(origin, src, q.dst),
        (Protocol::Tcp, Some(p)) => Flow::tcp(origin, src, q.dst, p),
        (Protocol::Udp, Some(p)) => Flow::udp(origin, src, q.dst, p),
        (Protocol::Tcp, None) => Flow::new(origin, 6, src, q.dst),
        (Protocol::Udp, None) => Flow::new(origin, 17, src, q.dst),
    }
}

fn analyze_flow(
    cx: &mut Ctx<'_>,
    prober: &Parsed<'_>,
    host: &HostModel,
    extra: &Extra,
) -> Option<FlowSummary> {
    let q = cx.q;
    if q.protocol == Protocol::Icmp && icmp_permission(cx, false) {
        return None;
    }
    let route = route_choice(cx, host)?;
    cx.src = Some(route.src);
    cx.src_reason = Some(route.reason.clone());
    let summary = FlowSummary {
        protocol: q.protocol,
        src: Some(route.src),
        src_reason: Some(route.reason.clone()),
        dst: q.dst,
        dport: q.dport,
        out_iface: route.out_iface.clone(),
    };
    let mut flow = build_flow(q, route.src, Origin::LocalOutput);
    flow.out_iface.clone_from(&route.out_iface);
    if let Some(c) = &cx.snap.credentials.credentials {
        flow.uid = Some(c.euid());
        flow.gid = Some(c.egid());
    }
    let ns = cx.snap.prober.netns.netns.describe();
    let traces = trace_all(&prober.rulesets, &prober.nft, host, &flow);
    let out = traces.branches.first().cloned();
    cx.examined.push(format!(
        "output path in the {ns}: {} ({} step(s))",
        verdict_text(&traces.verdict()),
        out.as_ref().map_or(0, |t| t.steps.len())
    ));
    let failing = cx.failing_or_offline();
    if let Some(t) = &out
        && failing
        && classify_drop(cx, t, &ns, Some(&route.reason), false)
    {
        source_selection(cx, &route);
        return Some(summary);
    }
    let dst_local = host.is_local(q.dst) || q.dst.is_loopback();
    if dst_local {
        local_delivery(cx, &cx.snap.prober, &route.text);
        return Some(summary);
    }
    if let Some(target) = &cx.snap.target {
        let src = out
            .as_ref()
            .and_then(|t| {
                t.nat
                    .iter()
                    .rev()
                    .find(|n| matches!(n.kind, NatKind::Snat | NatKind::Masquerade))
            })
            .and_then(|n| n.to.addr)
            .unwrap_or(route.src);
        let flow_in = build_flow(q, src, Origin::Input);
        arrival(cx, &target.state, flow_in);
        return Some(summary);
    }
    let dnat = out.as_ref().is_some_and(|t| {
        t.nat
            .iter()
            .any(|n| matches!(n.kind, NatKind::Dnat | NatKind::Redirect))
    });
    remote(cx, prober, host, &route, dnat, extra);
    Some(summary)
}

fn verdict_text(v: &Verdict) -> String {
    match v {
        Verdict::Undetermined { reason } => format!("undetermined ({reason})"),
        other => other.as_str().to_string(),
    }
}

/// Parses `NamespaceState` rules for the arrival path.
pub(super) fn parse_target(
    state: &NamespaceState,
    cx: &mut Ctx<'_>,
) -> (Vec<Ruleset>, Vec<NftRuleset>, HostModel) {
    let (p, h) = parse(state, cx);
    (p.rulesets, p.nft, h)
}
