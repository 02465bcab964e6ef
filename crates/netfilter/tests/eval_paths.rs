//! Hook paths of the evaluator: loopback re-entry and kubelet's KUBE-FIREWALL, DNAT turning input
//! into forward, kube-proxy's statistic split, several backends on one hook, conntrack and nat.
#![allow(clippy::unwrap_used, reason = "tests")]

mod eval_support;

use eval_support::{decided, host, ip, legacy, rules, steps_on};
use netfilter::eval::{ConnState, Flow, Hook, NatKind, Origin, Verdict, trace};
use netfilter::{Backend, TableName};

/// kube-proxy (iptables mode) + kubelet rules as iptables-save v1.8.9 printed them.
const KUBE: &str = include_str!("fixtures/kube-proxy-legacy.txt");

/// kubelet's rule alone, as /work/shared/DESIGN.md quotes it.
const KUBELET: &str = "\
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:KUBE-FIREWALL - [0:0]
-A INPUT -j KUBE-FIREWALL
-A OUTPUT -j KUBE-FIREWALL
-A KUBE-FIREWALL ! -s 127.0.0.0/8 -d 127.0.0.0/8 -m comment --comment \"block incoming localnet connections\" -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP
COMMIT
";

fn health_check(src: &str) -> Flow {
    Flow::tcp(Origin::LocalOutput, ip(src), ip("127.0.0.1"), 9099)
}

#[test]
fn kube_firewall_drops_a_localnet_health_check_from_the_node_ip() {
    for text in [KUBELET, KUBE] {
        let rs = [legacy(text)];
        let t = trace(&rs, &host(), &health_check("198.51.100.5"));
        let t = t.single().unwrap();
        assert_eq!(t.verdict, Verdict::Drop, "{:#?}", t.steps);
        let by = t.decided_by.as_ref().unwrap();
        assert_eq!(by.table, TableName::Filter);
        assert_eq!(by.chain, "KUBE-FIREWALL");
        assert_eq!(by.rule_number, Some(1));
        assert_eq!(by.backend, Some(Backend::Legacy));
        assert_eq!(
            by.comment.as_deref(),
            Some("block incoming localnet connections")
        );
        assert!(
            by.text
                .contains("! --ctstate RELATED,ESTABLISHED,DNAT -j DROP")
        );
        // Dropped on the output path already: filter OUTPUT jumped there.
        let last = t.steps.last().unwrap();
        assert_eq!((last.hook, last.matched), (Hook::Output, true));
    }
}

#[test]
fn kube_firewall_accepts_loopback_source_and_established() {
    for text in [KUBELET, KUBE] {
        let rs = [legacy(text)];
        let t = trace(&rs, &host(), &health_check("127.0.0.1"));
        let t = t.single().unwrap();
        assert_eq!(t.verdict, Verdict::Accept, "{:#?}", t.steps);
        // The packet re-entered through lo and crossed filter INPUT, but not nat again.
        assert!(
            t.steps
                .iter()
                .any(|s| s.hook == Hook::Input && s.table == TableName::Filter)
        );
        assert!(!t.steps.iter().any(|s| s.hook == Hook::Prerouting
            && s.table == TableName::Nat
            && s.rule_number.is_some()));
        let est = health_check("198.51.100.5").with_state(ConnState::Established);
        assert_eq!(trace(&rs, &host(), &est).verdict(), Verdict::Accept);
    }
    // To the node's own address (not 127/8) the rule does not apply either.
    let rs = [legacy(KUBE)];
    let own = Flow::tcp(
        Origin::LocalOutput,
        ip("198.51.100.5"),
        ip("198.51.100.5"),
        9099,
    );
    assert_eq!(trace(&rs, &host(), &own).verdict(), Verdict::Accept);
}

#[test]
fn cluster_ip_gives_one_trace_per_endpoint() {
    let rs = [legacy(KUBE)];
    let f = Flow::tcp(
        Origin::LocalOutput,
        ip("198.51.100.5"),
        ip("198.51.100.20"),
        80,
    );
    let traces = trace(&rs, &host(), &f);
    assert_eq!(traces.branches.len(), 3, "{traces:#?}");
    let mut total = 0.0;
    for (t, ep) in traces
        .branches
        .iter()
        .zip(["203.0.113.11", "203.0.113.12", "203.0.113.13"])
    {
        assert_eq!(t.verdict, Verdict::Accept);
        let dnat = &t.nat[0];
        assert_eq!((dnat.kind, dnat.hook), (NatKind::Dnat, Hook::Output));
        assert_eq!(dnat.from.addr, Some(ip("198.51.100.20")));
        assert_eq!((dnat.to.addr, dnat.to.port), (Some(ip(ep)), Some(8080)));
        assert!(dnat.rule.chain.starts_with("KUBE-SEP-"));
        assert!(
            (t.probability - 1.0 / 3.0).abs() < 1e-6,
            "{}",
            t.probability
        );
        // KUBE-MARK-MASQ marked it (source outside 203.0.113.0/24), so POSTROUTING masquerades.
        assert!(
            t.nat.iter().any(|n| n.kind == NatKind::Masquerade),
            "{:#?}",
            t.nat
        );
        total += t.probability;
    }
    assert!((total - 1.0).abs() < 1e-6);
    assert_eq!(traces.verdict(), Verdict::Accept);
}

const DNAT: &str = "\
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A PREROUTING -d 198.51.100.5/32 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 203.0.113.20:80
COMMIT
*filter
:INPUT DROP [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A FORWARD -d 203.0.113.20/32 -p tcp -m tcp --dport 80 -m conntrack --ctstate DNAT -j ACCEPT
COMMIT
";

#[test]
fn dnat_in_prerouting_turns_input_into_forward() {
    let rs = [legacy(DNAT)];
    let mut f = Flow::tcp(Origin::Input, ip("192.0.2.7"), ip("198.51.100.5"), 8080);
    f.in_iface = Some("eth0".into());
    let t = trace(&rs, &host(), &f);
    let t = t.single().unwrap();
    assert_eq!(t.verdict, Verdict::Accept, "{:#?}", t.steps);
    assert_eq!(t.nat.len(), 1);
    assert_eq!(t.nat[0].to.addr, Some(ip("203.0.113.20")));
    assert_eq!(t.nat[0].to.port, Some(80));
    assert!(steps_on(t, "FORWARD", Some(1))[0].matched);
    assert!(!t.steps.iter().any(|s| s.hook == Hook::Input));
    // Without the DNAT it stays input and INPUT's policy drops it.
    f.dport = Some(8081);
    let t = trace(&rs, &host(), &f);
    assert_eq!(t.verdict(), Verdict::Drop);
    assert_eq!(
        decided(t.single().unwrap()),
        ("filter".into(), "INPUT".into(), None)
    );
    // An established connection is not NATed by the rules (conntrack does it), so the rules see
    // the original destination: INPUT policy.
    f.dport = Some(8080);
    let est = f.clone().with_state(ConnState::Established);
    let t = trace(&rs, &host(), &est);
    let t = t.single().unwrap();
    assert!(t.nat.is_empty());
    assert!(
        t.steps
            .iter()
            .any(|s| s.table == TableName::Nat && s.why.contains("first packet"))
    );
}

#[test]
fn accept_ends_only_the_current_base_chain_across_backends() {
    let accept = "\
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT
COMMIT
";
    let drop = "\
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -s 203.0.113.0/24 -j DROP
COMMIT
";
    let v6 = "\
# Generated by ip6tables-save v1.8.9 on Sat Nov 21 13:04:04 2026
*filter
:INPUT DROP [0:0]
:FORWARD DROP [0:0]
:OUTPUT DROP [0:0]
COMMIT
";
    let rs = [
        rules(accept, Backend::Legacy),
        rules(drop, Backend::Nft),
        rules(v6, Backend::Nft),
    ];
    let mut f = Flow::tcp(Origin::Input, ip("203.0.113.9"), ip("198.51.100.5"), 22);
    f.in_iface = Some("eth1".into());
    let t = trace(&rs, &host(), &f);
    let t = t.single().unwrap();
    assert_eq!(t.verdict, Verdict::Drop);
    let by = t.decided_by.as_ref().unwrap();
    assert_eq!((by.backend, by.rule_number), (Some(Backend::Nft), Some(1)));
    // The legacy ACCEPT was seen first and did not end the hook.
    assert!(t.steps[0].matched && t.steps[0].backend == Some(Backend::Legacy));
    // From elsewhere both let it through; the IPv6 ruleset (all DROP) is not consulted.
    f.src = ip("192.0.2.7");
    assert_eq!(trace(&rs, &host(), &f).verdict(), Verdict::Accept);
}

#[test]
fn raw_table_runs_before_conntrack() {
    // In raw no conntrack entry is attached yet: --ctstate sees INVALID, not NEW.
    let text = "\
*raw
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A PREROUTING -m conntrack --ctstate NEW -j DROP
-A PREROUTING -p udp -m conntrack --ctstate INVALID -j DROP
COMMIT
";
    let rs = [legacy(text)];
    let mut f = Flow::tcp(Origin::Input, ip("192.0.2.7"), ip("198.51.100.5"), 22);
    f.in_iface = Some("eth0".into());
    assert_eq!(trace(&rs, &host(), &f).verdict(), Verdict::Accept);
    let mut u = Flow::udp(Origin::Input, ip("192.0.2.7"), ip("198.51.100.5"), 53);
    u.in_iface = Some("eth0".into());
    let t = trace(&rs, &host(), &u);
    assert_eq!(
        decided(t.single().unwrap()),
        ("raw".into(), "PREROUTING".into(), Some(2))
    );
}
