//! The evaluator on native nftables rulesets, from `nft -j list ruleset` output captured from
//! nft 1.0.6 (tests/fixtures/nft/*.json, made from the `.nft` files beside them).
#![allow(clippy::unwrap_used, reason = "tests")]

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
