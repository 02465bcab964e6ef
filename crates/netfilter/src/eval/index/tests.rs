//! The indexed walk against the linear one: same verdict, deciding rule, NAT and branches.
#![allow(clippy::unwrap_used, reason = "tests")]

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};

use crate::eval::{ConnState, Flow, HostModel, Limits, Origin, Traces, trace_impl};
use crate::generate::kube_proxy::{
    KubeProxyConfig, NODE_ADDR, endpoint_addr, kube_proxy_text, service_addr,
};
use crate::model::Ruleset;
use crate::parse::{ParseOptions, parse_save};

fn v4(a: Ipv4Addr) -> IpAddr {
    IpAddr::V4(a)
}

fn host() -> HostModel {
    HostModel::default().with_addr("eth0", v4(NODE_ADDR), 24)
}

/// Asserts the two walks agree and returns how many steps the indexed one saved.
fn agree(rs: &[Ruleset], host: &HostModel, flow: &Flow, limits: &Limits) -> usize {
    let linear = trace_impl(rs, host, flow, limits, false);
    let indexed = trace_impl(rs, host, flow, limits, true);
    assert_eq!(linear.branches.len(), indexed.branches.len(), "{flow:?}");
    for (l, x) in linear.branches.iter().zip(&indexed.branches) {
        assert_eq!(l.verdict, x.verdict, "{flow:?}");
        assert_eq!(l.decided_by, x.decided_by, "{flow:?}");
        assert_eq!(l.nat, x.nat, "{flow:?}");
        assert_eq!(l.branch, x.branch, "{flow:?}");
        assert_eq!(l.probability, x.probability, "{flow:?}");
        // Every rule that matched is shown by both, in the same order.
        let matched = |t: &crate::eval::Trace| -> Vec<_> {
            t.steps.iter().filter(|s| s.matched).cloned().collect()
        };
        assert_eq!(matched(l), matched(x), "{flow:?}");
        // Every rule the indexed walk evaluated, the linear walk evaluated too, in order.
        let mut rest = l.steps.iter();
        for s in x.steps.iter().filter(|s| s.rule_number.is_some()) {
            assert!(
                rest.any(|t| t == s),
                "{flow:?}: {s:?} not in the linear walk"
            );
        }
    }
    assert_eq!(linear.verdict(), indexed.verdict());
    steps(&linear) - steps(&indexed)
}

fn steps(t: &Traces) -> usize {
    t.branches.iter().map(|b| b.steps.len()).sum()
}

#[test]
fn indexed_and_linear_walks_agree_on_generated_kube_proxy_rulesets() {
    let mut cfg = KubeProxyConfig::new(400, 3);
    cfg.empty_every = 9;
    cfg.nodeport_every = 7;
    let rs = [parse_save(&kube_proxy_text(&cfg), &ParseOptions::default()).unwrap()];
    let host = host();
    let client = v4(Ipv4Addr::new(198, 51, 100, 77));
    let mut saved = 0;
    for i in [0, 1, 8, 17, 200, 253, 254, 399] {
        let (vip, port) = service_addr(i);
        let (vip, ep) = (v4(vip), endpoint_addr(i, 1, 3));
        let flows = [
            Flow::tcp(Origin::Forward, client, vip, port),
            Flow::tcp(Origin::Input, client, vip, port),
            Flow::tcp(Origin::LocalOutput, v4(NODE_ADDR), vip, port),
            Flow::tcp(Origin::Forward, client, vip, port + 1000),
            Flow::udp(Origin::Forward, client, vip, port),
            Flow::echo_request(Origin::Forward, client, vip),
            Flow::tcp(Origin::Forward, client, vip, port).with_state(ConnState::Established),
            Flow::tcp(Origin::Forward, v4(ep.0), vip, port),
            Flow::tcp(
                Origin::Input,
                client,
                v4(NODE_ADDR),
                30_000 + (i / 7) as u16,
            ),
            // The port not known: the index cannot be used.
            Flow {
                dport: None,
                ..Flow::tcp(Origin::Forward, client, vip, port)
            },
        ];
        for f in &flows {
            saved += agree(&rs, &host, f, &Limits::default());
        }
    }
    assert!(saved > 10_000, "the index skipped only {saved} steps");
}

#[test]
fn index_keeps_duplicates_negations_and_other_shapes_in_order() {
    // A chain of keyed rules with, in between, rules the index must not skip: a repeated key,
    // a negated and a non-host destination, a range port, a RETURN into the caller, a UDP rule.
    let mut t = String::from(
        "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n:BIG - [0:0]\n:SIDE - [0:0]\n",
    );
    t.push_str("-A FORWARD -j BIG\n-A FORWARD -p tcp -m tcp --dport 7 -j ACCEPT\n");
    for k in 0..120u16 {
        let a = 1 + k % 50;
        let _ = writeln!(
            t,
            "-A BIG -d 203.0.113.{a}/32 -p tcp -m comment --comment \"k{k}\" -m tcp --dport {} -j SIDE",
            1000 + k
        );
        match k {
            10 => t.push_str("-A BIG -d 203.0.113.11/32 -p tcp -m tcp --dport 1010 -j DROP\n"),
            20 => t.push_str("-A BIG ! -d 203.0.113.21/32 -p tcp -m tcp --dport 1020 -j REJECT\n"),
            30 => t.push_str("-A BIG -d 203.0.113.0/24 -p tcp -m tcp --dport 7 -j RETURN\n"),
            40 => t.push_str("-A BIG -d 203.0.113.41/32 -p tcp -m tcp --dport 1040:1041 -j DROP\n"),
            50 => t.push_str("-A BIG -d 203.0.113.1/32 -p udp -m udp --dport 1000 -j DROP\n"),
            _ => {}
        }
    }
    t.push_str("-A SIDE -m mark --mark 0x1 -j DROP\n-A SIDE -j ACCEPT\nCOMMIT\n");
    let rs = [parse_save(&t, &ParseOptions::default()).unwrap()];
    let host = host();
    let c = v4(Ipv4Addr::new(198, 51, 100, 77));
    let d = |x: u8| v4(Ipv4Addr::new(203, 0, 113, x));
    let mut saved = 0;
    for (dst, port) in [
        (d(11), 1010), // the key repeated later by a DROP: the first decides
        (d(12), 1010), // misses the keyed rule, then the negated -d matches
        (d(21), 1020),
        (d(5), 7),     // RETURN to FORWARD, then ACCEPT there
        (d(41), 1041), // only the range rule matches
        (d(1), 1000),
        (d(1), 9999),
        (d(200), 1),
    ] {
        for f in [
            Flow::tcp(Origin::Forward, c, dst, port),
            Flow::udp(Origin::Forward, c, dst, port),
            Flow {
                mark: 1,
                ..Flow::tcp(Origin::Forward, c, dst, port)
            },
        ] {
            saved += agree(&rs, &host, &f, &Limits::default());
            // A rule budget that runs out inside the skipped range stops at the same rule.
            for max_rules in [3, 40, 90] {
                let limits = Limits {
                    max_rules,
                    ..Limits::default()
                };
                agree(&rs, &host, &f, &limits);
            }
        }
    }
    assert!(saved > 500, "the index skipped only {saved} steps");
}
