//! Scenarios over the native nftables fixtures, shared by the pure tests (checked-in `nft -j`
//! output) and the kernel tests (the same `.nft` files applied in a namespace and read back).
#![allow(dead_code, clippy::unwrap_used, reason = "test helpers")]

use std::net::IpAddr;

use netfilter::Backend;
use netfilter::eval::{
    ConnState, Flow, HostModel, NatKind, Origin, TableFamily, Trace, Traces, Verdict, trace_all,
};
use netfilter::nft::NftRuleset;
use netfilter::target::RejectWith;

pub use crate::eval_support::decided;

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The fixture `tests/fixtures/nft/NAME`.
pub fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/nft/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A node with 192.0.2.10/24 and fd00::10/64 on eth0.
pub fn host() -> HostModel {
    HostModel::default()
        .with_addr("eth0", ip("192.0.2.10"), 24)
        .with_addr("eth0", ip("fd00::10"), 64)
}

pub fn run(rs: &NftRuleset, flow: &Flow) -> Traces {
    trace_all(&[], std::slice::from_ref(rs), &host(), flow)
}

/// The only trace.
pub fn one(rs: &NftRuleset, flow: &Flow) -> Trace {
    let t = run(rs, flow);
    assert_eq!(t.branches.len(), 1, "{t:#?}");
    t.branches.into_iter().next().unwrap()
}

fn inbound(proto: u8, src: &str, dst: &str, dport: u16) -> Flow {
    Flow {
        dport: Some(dport),
        sport: Some(40000),
        length: Some(60),
        in_iface: Some("eth0".into()),
        ..Flow::new(Origin::Input, proto, ip(src), ip(dst))
    }
}

/// kube-proxy nftables mode: service VIP → endpoints by `numgen`, NodePorts through `fib`, the
/// firewall and no-endpoint maps.
pub fn kube_proxy(rs: &NftRuleset) {
    // A ClusterIP from the node: one branch per endpoint, each 1/2, DNAT then masquerade.
    let flow = Flow::tcp(
        Origin::LocalOutput,
        ip("192.0.2.10"),
        ip("198.51.100.10"),
        80,
    );
    let traces = run(rs, &flow);
    assert_eq!(traces.branches.len(), 2, "{traces:#?}");
    assert_eq!(traces.verdict(), Verdict::Accept);
    for (t, ep) in traces.branches.iter().zip(["203.0.113.1", "203.0.113.2"]) {
        assert!((t.probability - 0.5).abs() < 1e-9, "{t:#?}");
        assert_eq!(t.nat.len(), 2, "{t:#?}");
        assert_eq!(t.nat[0].kind, NatKind::Dnat);
        assert_eq!(t.nat[0].to.addr, Some(ip(ep)));
        assert_eq!(t.nat[0].to.port, Some(80));
        let r = &t.nat[0].rule;
        assert_eq!(r.backend, Some(Backend::Nftables));
        assert_eq!(r.family, TableFamily::Ipv4);
        assert_eq!(r.table.to_string(), "kube-proxy");
        assert!(r.chain.starts_with("endpoint-"), "{r:?}");
        assert!(r.chain.ends_with(&format!("__{ep}/80")), "{r:?}");
        assert_eq!(r.rule_number, Some(2));
        assert_eq!(r.text, format!("meta l4proto tcp dnat to {ep}:80"));
        // The source is outside the cluster CIDR: marked, then masqueraded on the way out.
        assert_eq!(t.nat[1].kind, NatKind::Masquerade);
        assert_eq!(t.nat[1].rule.chain, "masquerading");
        assert_eq!(t.branch.len(), 1);
        assert!(
            t.branch[0]
                .rule
                .text
                .starts_with("numgen random mod 2 vmap")
        );
    }

    // The firewall map drops before NAT.
    let t = one(rs, &inbound(6, "203.0.113.50", "198.51.100.40", 443));
    assert_eq!(t.verdict, Verdict::Drop);
    let json = serde_json::to_value(t.decided_by.as_ref().unwrap()).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "backend": "nftables", "family": "ipv4", "table": "kube-proxy",
            "chain": "firewall-check", "rule": 1,
            "text": "ip daddr . meta l4proto . th dport vmap { 198.51.100.40 . tcp . 443 : drop }",
            "comment": null
        })
    );

    // A service without endpoints is rejected by the helper chain.
    let flow = Flow::tcp(
        Origin::LocalOutput,
        ip("192.0.2.10"),
        ip("198.51.100.30"),
        80,
    );
    let t = one(rs, &flow);
    assert_eq!(
        t.verdict,
        Verdict::Reject {
            with: RejectWith::IcmpPortUnreachable
        }
    );
    assert_eq!(
        decided(&t),
        ("kube-proxy".into(), "reject-chain".into(), Some(1))
    );

    // An established connection does not see the nat chains.
    let flow = Flow {
        in_iface: Some("eth0".into()),
        ..Flow::tcp(Origin::Forward, ip("203.0.113.50"), ip("198.51.100.10"), 80)
            .with_state(ConnState::Established)
    };
    let t = one(rs, &flow);
    assert_eq!(t.verdict, Verdict::Accept);
    assert!(t.nat.is_empty());
    assert!(
        t.steps.iter().any(|s| s.why.contains("first packet")),
        "{t:#?}"
    );

    // A NodePort: fib daddr type local, then the nodeport map; DNAT makes it forwarded.
    let traces = run(rs, &inbound(6, "203.0.113.50", "192.0.2.10", 30080));
    assert_eq!(traces.branches.len(), 2, "{traces:#?}");
    for t in &traces.branches {
        assert_eq!(t.verdict, Verdict::Accept);
        assert_eq!(t.nat.len(), 1, "not marked for masquerade: {t:#?}");
        assert!(
            t.steps
                .iter()
                .any(|s| s.hook == netfilter::eval::Hook::Forward
                    || s.hook == netfilter::eval::Hook::Postrouting),
            "{t:#?}"
        );
    }

    // ICMP to a ClusterIP: `th dport` has no value, but no tcp/udp element can match it.
    let flow = Flow::echo_request(Origin::LocalOutput, ip("192.0.2.10"), ip("198.51.100.10"));
    let t = one(rs, &flow);
    assert_eq!(t.verdict, Verdict::Accept, "{t:#?}");
    assert!(t.nat.is_empty());
}

/// A hand-written `inet filter` with sets, a drop policy and NAT.
pub fn inet_filter(rs: &NftRuleset) {
    // Allowed by the named sets (an interval set and a service set).
    let t = one(rs, &inbound(6, "192.0.2.5", "192.0.2.10", 22));
    assert_eq!(t.verdict, Verdict::Accept);
    let accepted = t.steps.iter().find(|s| s.matched).unwrap();
    assert_eq!(
        (
            accepted.backend,
            accepted.table.to_string(),
            accepted.chain.as_str(),
            accepted.rule_number
        ),
        (Some(Backend::Nftables), "filter".into(), "input", Some(7))
    );

    // Not in @allowed: the walk reaches `ip dscp cs1`, which is not modelled: undetermined,
    // never a guessed accept or drop.
    let t = one(rs, &inbound(6, "203.0.113.7", "192.0.2.10", 22));
    assert!(
        matches!(&t.verdict, Verdict::Undetermined { reason } if reason.contains("ip dscp")),
        "{t:#?}"
    );
    assert_eq!(decided(&t), ("filter".into(), "input".into(), Some(18)));

    // A port range with log and reject with tcp reset.
    let t = one(rs, &inbound(6, "203.0.113.7", "192.0.2.10", 1500));
    assert_eq!(
        t.verdict,
        Verdict::Reject {
            with: RejectWith::TcpReset
        }
    );
    assert_eq!(decided(&t).2, Some(9));

    // `limit` decides by rate: undetermined at that rule.
    let flow = Flow {
        in_iface: Some("eth0".into()),
        ..Flow::echo_request(Origin::Input, ip("203.0.113.7"), ip("192.0.2.10"))
    };
    let t = one(rs, &flow);
    assert!(
        matches!(&t.verdict, Verdict::Undetermined { reason } if reason.contains("limit rate 5/second")),
        "{t:#?}"
    );
    assert_eq!(decided(&t).2, Some(5));

    // Established traffic is accepted by rule 1.
    let flow = inbound(17, "203.0.113.7", "192.0.2.10", 5000).with_state(ConnState::Established);
    let t = one(rs, &flow);
    assert_eq!(t.verdict, Verdict::Accept);
    assert_eq!(
        t.steps.iter().find(|s| s.matched).unwrap().rule_number,
        Some(1)
    );

    // IPv6 in the inet table: `ip saddr` rules do not apply, the ip6 rule accepts.
    let t = one(rs, &inbound(6, "fd00::5", "fd00::10", 443));
    assert_eq!(t.verdict, Verdict::Accept);
    assert_eq!(
        t.steps.iter().find(|s| s.matched).unwrap().rule_number,
        Some(8)
    );

    // Forwarded: wildcard interface, jump/return, notrack after conntrack, SNAT.
    let flow = Flow {
        in_iface: Some("eth1".into()),
        out_iface: Some("eth0".into()),
        ..Flow::tcp(Origin::Forward, ip("192.0.2.5"), ip("198.51.100.99"), 80)
    };
    let t = one(rs, &flow);
    assert_eq!(t.verdict, Verdict::Accept);
    assert!(
        t.steps
            .iter()
            .any(|s| s.why.contains("conntrack has already run")),
        "{t:#?}"
    );
    assert!(t.steps.iter().any(|s| s.why == "jump out-chain"), "{t:#?}");
    assert_eq!(t.nat.len(), 1);
    assert_eq!(t.nat[0].kind, NatKind::Snat);
    assert_eq!(t.nat[0].to.addr, Some(ip("198.51.100.1")));
    assert_eq!(t.nat[0].rule.family, TableFamily::Inet);
}

/// A firewalld-like `inet firewalld` table: zones dispatched by source and interface.
pub fn firewalld(rs: &NftRuleset) {
    let t = one(rs, &inbound(6, "203.0.113.7", "192.0.2.10", 22));
    assert_eq!(t.verdict, Verdict::Accept);
    let t = one(rs, &inbound(6, "203.0.113.7", "192.0.2.10", 80));
    assert_eq!(
        t.verdict,
        Verdict::Reject {
            with: RejectWith::IcmpAdminProhibited
        }
    );
    assert_eq!(
        decided(&t),
        ("firewalld".into(), "filter_IN_public".into(), Some(5))
    );
    let t = one(rs, &inbound(6, "198.51.100.3", "192.0.2.10", 80));
    assert_eq!(t.verdict, Verdict::Accept);
    assert!(t.steps.iter().any(|s| s.chain == "filter_IN_trusted"));
    let t = one(rs, &inbound(6, "fd00::5", "fd00::10", 80));
    assert_eq!(
        t.verdict,
        Verdict::Reject {
            with: RejectWith::Icmp6AdmProhibited
        }
    );
    let flow = Flow {
        in_iface: Some("eth1".into()),
        ..Flow::echo_request(Origin::Input, ip("203.0.113.7"), ip("192.0.2.10"))
    };
    assert_eq!(one(rs, &flow).verdict, Verdict::Accept);
}
