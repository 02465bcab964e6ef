//! The evaluator on native nftables rulesets, from `nft -j list ruleset` output captured from
//! nft 1.0.6 (tests/fixtures/nft/*.json, made from the `.nft` files beside them).
#![allow(clippy::unwrap_used, reason = "tests")]

mod eval_support;
mod nft_support;

use netfilter::eval::{Flow, Origin, Verdict, trace_all};
use netfilter::nft::{NftRuleset, parse_json};
use nft_support::{fixture, host, ip};

fn load(name: &str) -> NftRuleset {
    parse_json(&fixture(name)).unwrap()
}

#[test]
fn kube_proxy_nftables_mode() {
    nft_support::kube_proxy(&load("kube-proxy.json"));
}

#[test]
fn inet_filter_with_sets() {
    nft_support::inet_filter(&load("inet-filter.json"));
}

#[test]
fn firewalld_zones() {
    nft_support::firewalld(&load("firewalld.json"));
}

#[test]
fn tables_of_one_listing_share_the_hooks_by_priority() {
    // mixed.json holds kube-proxy, inet filter and a third table; a raw-priority chain that
    // notracks everything in PREROUTING means kube-proxy's nat never sees inbound packets.
    let rs = load("mixed.json");
    let flow = Flow {
        in_iface: Some("eth0".into()),
        ..Flow::tcp(Origin::Input, ip("203.0.113.50"), ip("192.0.2.10"), 30080)
    };
    let t = trace_all(&[], &[rs], &host(), &flow);
    let t = t.single().unwrap();
    let first = &t.steps[0];
    assert_eq!(first.chain, "pre-chain", "{t:#?}");
    assert!(t.nat.is_empty(), "{t:#?}");
    assert!(
        t.steps.iter().any(|s| s.why.contains("Untracked")),
        "{t:#?}"
    );
    // inet filter's input (policy drop) still decides: nothing in it accepts an untracked
    // packet to port 30080, and `ip length > 1000 drop` needs the length, not given.
    assert!(matches!(t.verdict, Verdict::Undetermined { .. }), "{t:#?}");
}

#[test]
fn traces_serialise_native_rules_with_their_table() {
    let rs = load("kube-proxy.json");
    let flow = Flow::tcp(
        Origin::LocalOutput,
        ip("192.0.2.10"),
        ip("198.51.100.30"),
        80,
    );
    let t = trace_all(&[], std::slice::from_ref(&rs), &host(), &flow);
    let by = t.branches[0].decided_by.as_ref().unwrap();
    let rule = rs.rule_at(&by.table, &by.chain, by.rule_number).unwrap();
    assert_eq!(rule.text, "reject with icmp port-unreachable");
    assert_eq!(rule.text, by.text);
    assert!(rule.handle.is_some());
    let json = serde_json::to_value(&t).unwrap();
    let step = &json["branches"][0]["steps"][0];
    assert_eq!(step["backend"], "nftables");
    assert_eq!(step["table"], "kube-proxy");
    assert_eq!(step["hook"], "OUTPUT");
}

#[test]
fn conntrack_tuples_flags_numgen_matches_and_concatenated_intervals() {
    use netfilter::eval::ConnState;
    use netfilter::matches::tcp_flags;
    let rs = load("probe.json");
    let rs = std::slice::from_ref(&rs);
    let rule_of = |t: &netfilter::eval::Trace| {
        t.steps
            .iter()
            .rfind(|s| s.matched && s.chain == "c")
            .and_then(|s| s.rule_number)
    };
    let inbound = |proto: u8, dst: &str, dport: u16| Flow {
        in_iface: Some("eth0".into()),
        dport: Some(dport),
        ..Flow::new(Origin::Input, proto, ip("192.0.2.7"), ip(dst))
    };
    let texts: Vec<&str> = rs[0].tables[0]
        .chain("c")
        .unwrap()
        .rules
        .iter()
        .map(|r| r.text.as_str())
        .collect();
    assert_eq!(
        texts[0],
        "ct original ip daddr 198.51.100.10 meta l4proto tcp ct original proto-dst 80 accept"
    );

    // `ct original ip daddr`, `ct original proto-dst`.
    let t = trace_all(&[], rs, &host(), &inbound(6, "198.51.100.10", 80));
    let t = t.single().unwrap();
    assert_eq!((t.verdict.clone(), rule_of(t)), (Verdict::Accept, Some(1)));

    // `tcp flags syn` (a bit test).
    let t = trace_all(&[], rs, &host(), &inbound(6, "192.0.2.99", 5));
    assert_eq!(rule_of(t.single().unwrap()), Some(2));

    // `numgen inc mod 2 0` as a match: two branches of 1/2.
    let flow = inbound(17, "192.0.2.99", 5).with_state(ConnState::Established);
    let t = trace_all(&[], rs, &host(), &flow);
    assert_eq!(t.branches.len(), 2, "{t:#?}");
    assert_eq!(rule_of(&t.branches[0]), Some(6));
    assert!((t.branches[1].probability - 0.5).abs() < 1e-9);
    assert_eq!(t.verdict(), Verdict::Accept);

    // A concatenation of a prefix and a port range in an anonymous set.
    let flow = Flow {
        tcp_flags: Some(tcp_flags::ACK),
        ..inbound(6, "192.0.2.99", 23).with_state(ConnState::Established)
    };
    let t = trace_all(&[], rs, &host(), &flow);
    assert_eq!(rule_of(&t.branches[1]), Some(7), "{t:#?}");

    // `snat to ip daddr map { … }`: the address comes from an expression not evaluated.
    let flow = Flow {
        in_iface: Some("eth0".into()),
        out_iface: Some("eth1".into()),
        ..Flow::tcp(Origin::Forward, ip("192.0.2.7"), ip("198.51.100.1"), 443)
    };
    let t = trace_all(&[], rs, &host(), &flow);
    assert!(
        matches!(&t.verdict(), Verdict::Undetermined { reason } if reason.contains("expression")),
        "{t:#?}"
    );
}

#[test]
fn a_verdict_map_that_cannot_decide_is_undetermined_not_ignored() {
    let json = serde_json::json!({"nftables": [
        {"table": {"family": "ip", "name": "t"}},
        {"chain": {"family": "ip", "table": "t", "name": "in", "type": "filter",
                   "hook": "input", "prio": 0, "policy": "accept"}},
        {"rule": {"family": "ip", "table": "t", "chain": "in", "expr": [
            {"vmap": {"key": {"concat": [
                {"payload": {"protocol": "ip", "field": "daddr"}},
                {"payload": {"protocol": "th", "field": "dport"}}]},
              "data": {"set": [[{"concat": ["192.0.2.10", 22]}, {"drop": null}]]}}}]}},
        {"rule": {"family": "ip", "table": "t", "chain": "in", "expr": [
            {"vmap": {"key": {"meta": {"key": "mark"}}, "data": "@missing"}}]}}
    ]});
    let rs = parse_json(&json.to_string()).unwrap();
    let rs = std::slice::from_ref(&rs);
    // ICMP has no `th dport`: the element 192.0.2.10 . 22 may match, so the drop may happen.
    let flow = Flow {
        in_iface: Some("eth0".into()),
        ..Flow::echo_request(Origin::Input, ip("203.0.113.7"), ip("192.0.2.10"))
    };
    let t = trace_all(&[], rs, &host(), &flow);
    let t = t.single().unwrap();
    assert!(
        matches!(&t.verdict, Verdict::Undetermined { reason } if reason.contains("may match")),
        "{t:#?}"
    );
    // Another destination: no element can match whatever the port; then a map that does not exist.
    let flow = Flow {
        in_iface: Some("eth0".into()),
        ..Flow::echo_request(Origin::Input, ip("203.0.113.7"), ip("192.0.2.11"))
    };
    let t = trace_all(&[], rs, &host(), &flow);
    let t = t.single().unwrap();
    assert!(
        matches!(&t.verdict, Verdict::Undetermined { reason } if reason.contains("not found")),
        "{t:#?}"
    );
    assert_eq!(t.decided_by.as_ref().unwrap().rule_number, Some(2));
}
