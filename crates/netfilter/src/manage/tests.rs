//! Unit and property tests of [`super`]: payloads are applied to the model by a small simulator of
//! `iptables-restore --noflush` (the lines these payloads use), so ensure∘ensure can be checked on
//! random rulesets without a kernel. The kernel tests are in netprobe's `tests/firewall_lab.rs`.

use super::*;
use crate::generate::{GenConfig, ruleset};
use crate::model::{Chain, Table};
use proptest::prelude::*;

fn spec(ifaces: &[&str], port: Option<u16>) -> Spec {
    Spec {
        interfaces: ifaces.iter().map(|s| s.to_string()).collect(),
        tcp_port: port,
    }
}

fn parse(text: &str, family: Family) -> Ruleset {
    let opts = ParseOptions {
        family: Some(family),
        backend: Some(Backend::Nft),
    };
    parse_save(text, &opts).expect("parses")
}

/// One rule `-A chain spec` as the parser models it.
fn rule_of(chain: &str, spec: &str, family: Family) -> Rule {
    let mut text = String::from("*filter\n");
    for c in ["INPUT", "FORWARD", "OUTPUT"] {
        text.push_str(&format!(":{c} ACCEPT [0:0]\n"));
    }
    for c in [INPUT_CHAIN, OUTPUT_CHAIN] {
        text.push_str(&format!(":{c} - [0:0]\n"));
    }
    if !TableName::Filter.is_builtin(chain) && chain != INPUT_CHAIN && chain != OUTPUT_CHAIN {
        text.push_str(&format!(":{chain} - [0:0]\n"));
    }
    text.push_str(&format!("-A {chain} {spec}\nCOMMIT\n"));
    let rs = parse(&text, family);
    rs.table(TableName::Filter)
        .and_then(|t| t.chain(chain))
        .and_then(|c| c.rules.first())
        .cloned()
        .expect("one rule")
}

/// Applies a payload of the shape these functions write to `rs` (panics on anything else: a test).
fn apply(rs: &mut Ruleset, payload: &str) {
    let family = rs.family;
    if rs.table(TableName::Filter).is_none() {
        let mut t = Table::new(TableName::Filter, 0);
        for c in ["INPUT", "FORWARD", "OUTPUT"] {
            t.chains.push(Chain::new(c, true));
        }
        rs.tables.push(t);
    }
    let t = rs
        .tables
        .iter_mut()
        .find(|t| t.name == TableName::Filter)
        .expect("filter");
    let chain = |t: &mut Table, name: &str| -> usize {
        match t.chains.iter().position(|c| c.name == name) {
            Some(i) => i,
            None => {
                t.chains
                    .push(Chain::new(name, TableName::Filter.is_builtin(name)));
                t.chains.len() - 1
            }
        }
    };
    for line in payload.lines() {
        let words: Vec<&str> = line.splitn(3, ' ').collect();
        match words.as_slice() {
            ["*filter"] | ["COMMIT"] => {}
            [decl, "-", "[0:0]"] if decl.starts_with(':') => {
                let i = chain(t, &decl[1..]);
                t.chains[i].rules.clear();
            }
            ["-A", c, spec] => {
                let r = rule_of(c, spec, family);
                let i = chain(t, c);
                t.chains[i].rules.push(r);
            }
            ["-I", c, rest] => {
                let spec = rest.strip_prefix("1 ").expect("position 1");
                let r = rule_of(c, spec, family);
                let i = chain(t, c);
                t.chains[i].rules.insert(0, r);
            }
            ["-D", c, spec] => {
                let r = rule_of(c, spec, family);
                let i = chain(t, c);
                let at = t.chains[i]
                    .rules
                    .iter()
                    .position(|x| key(x) == key(&r))
                    .expect("-D of an existing rule (iptables-restore fails otherwise)");
                t.chains[i].rules.remove(at);
            }
            ["-F", c] => {
                let i = chain(t, c);
                t.chains[i].rules.clear();
            }
            ["-X", c] => {
                t.chains.retain(|x| x.name != *c);
            }
            other => panic!("unexpected payload line {other:?}"),
        }
    }
}

const INCIDENT: &str = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
-A INPUT -p icmp -m icmp --icmp-type 8 -j DROP\n-A INPUT -s 192.0.2.0/24 -j ACCEPT\nCOMMIT\n";

#[test]
fn validate_rejects_bad_input() {
    assert_eq!(validate(&spec(&[], None)), Err(ManageError::NoInterface));
    for bad in [
        "",
        "a/b",
        "a b",
        "x\"y",
        "0123456789abcdef",
        ".",
        "..",
        "a+b",
        "+",
    ] {
        assert!(
            matches!(
                validate(&spec(&[bad], None)),
                Err(ManageError::BadInterface(_))
            ),
            "{bad:?} accepted"
        );
    }
    assert_eq!(
        validate(&spec(&["eth0"], Some(0))),
        Err(ManageError::BadPort)
    );
    for good in ["eth0", "antrea-gw0", "veth+", "a.b_c@d", "0123456789abcde"] {
        assert_eq!(validate(&spec(&[good], Some(8080))), Ok(()), "{good}");
    }
}

#[test]
fn ensure_on_the_incident_inserts_jumps_first_and_keeps_the_drop() {
    let s = spec(&["veth0"], Some(8080));
    let mut rs = parse(INCIDENT, Family::Ipv4);
    let before = status(&s, &rs).expect("status");
    assert!(!before.in_place());
    assert!(
        before.missing.iter().any(|m| m.contains("INPUT: jump")),
        "{before:?}"
    );
    let payload = ensure_payload(&s, &rs)
        .expect("ok")
        .expect("something to do");
    assert!(
        payload.contains(&format!("-I INPUT 1 {}", jump_spec("INPUT"))),
        "{payload}"
    );
    assert!(payload.contains(
        "--icmp-type 8 -m comment --comment \"netprobe: echo-request in on veth0\" -j ACCEPT"
    ));
    apply(&mut rs, &payload);
    assert!(status(&s, &rs).expect("status").in_place());
    assert_eq!(ensure_payload(&s, &rs), Ok(None), "second run adds nothing");
    let input = rs
        .table(TableName::Filter)
        .and_then(|t| t.chain("INPUT"))
        .expect("INPUT");
    assert_eq!(input.rules.len(), 3);
    assert!(input.rules[1].text.contains("--icmp-type 8 -j DROP"));
}

#[test]
fn ipv6_uses_icmpv6_types() {
    let rules = wanted_rules(&spec(&["veth0"], None), Family::Ipv6);
    assert!(
        rules
            .iter()
            .any(|r| r.spec.contains("-p ipv6-icmp -m icmp6 --icmpv6-type 128"))
    );
    assert!(
        rules
            .iter()
            .any(|r| r.chain == OUTPUT_CHAIN && r.spec.contains("--icmpv6-type 129"))
    );
    assert!(rules.iter().all(|r| !r.spec.contains("-p icmp ")));
}

#[test]
fn misplaced_and_duplicated_jumps_are_moved_to_one_at_the_top() {
    let s = spec(&["veth0"], None);
    let mut rs = parse(INCIDENT, Family::Ipv4);
    let p = ensure_payload(&s, &rs).expect("ok").expect("payload");
    apply(&mut rs, &p);
    // Someone inserts a DROP before the jump, and a second copy of the jump at the end.
    apply(
        &mut rs,
        &format!(
            "*filter\n-I INPUT 1 -p icmp -m icmp --icmp-type 8 -j DROP\n-A INPUT {}\nCOMMIT\n",
            jump_spec("INPUT")
        ),
    );
    let st = status(&s, &rs).expect("status");
    assert_eq!(st.rejump, vec!["INPUT"]);
    assert!(st.rewrite.is_empty());
    let payload = ensure_payload(&s, &rs).expect("ok").expect("payload");
    assert_eq!(payload.matches("-D INPUT").count(), 2, "{payload}");
    apply(&mut rs, &payload);
    assert_eq!(ensure_payload(&s, &rs), Ok(None));
}

#[test]
fn foreign_rule_in_own_chain_is_reported_and_replaced() {
    let s = spec(&["veth0"], None);
    let mut rs = parse(INCIDENT, Family::Ipv4);
    let p = ensure_payload(&s, &rs).expect("ok").expect("payload");
    apply(&mut rs, &p);
    apply(
        &mut rs,
        &format!("*filter\n-A {INPUT_CHAIN} -s 198.51.100.7/32 -j DROP\nCOMMIT\n"),
    );
    let st = status(&s, &rs).expect("status");
    assert_eq!(st.extra.len(), 1, "{st:?}");
    assert_eq!(st.rewrite, vec![INPUT_CHAIN]);
    let p = ensure_payload(&s, &rs).expect("ok").expect("payload");
    apply(&mut rs, &p);
    assert!(status(&s, &rs).expect("status").in_place());
}

#[test]
fn remove_restores_the_model_exactly() {
    let s = spec(&["veth0", "veth1"], Some(8080));
    let original = parse(INCIDENT, Family::Ipv4);
    let mut rs = original.clone();
    let p = ensure_payload(&s, &rs).expect("ok").expect("payload");
    apply(&mut rs, &p);
    let p = remove_payload(&rs).expect("ok").expect("payload");
    apply(&mut rs, &p);
    let t = |r: &Ruleset| r.table(TableName::Filter).cloned().expect("filter").chains;
    let strip = |cs: Vec<Chain>| -> Vec<(String, Vec<String>)> {
        cs.into_iter()
            .map(|c| (c.name, c.rules.into_iter().map(|r| r.text).collect()))
            .collect()
    };
    assert_eq!(strip(t(&rs)), strip(t(&original)));
    assert_eq!(remove_payload(&rs), Ok(None), "nothing left to remove");
}

#[test]
fn remove_refuses_when_a_foreign_rule_jumps_to_our_chain() {
    let s = spec(&["veth0"], None);
    let mut rs = parse(INCIDENT, Family::Ipv4);
    let p = ensure_payload(&s, &rs).expect("ok").expect("payload");
    apply(&mut rs, &p);
    apply(
        &mut rs,
        &format!("*filter\n-A FORWARD -j {INPUT_CHAIN}\nCOMMIT\n"),
    );
    assert!(matches!(
        remove_payload(&rs),
        Err(ManageError::ForeignReference { .. })
    ));
}

#[test]
fn backend_choice_follows_markers_then_rule_counts() {
    let legacy = {
        let mut r = parse(INCIDENT, Family::Ipv4);
        r.backend = Some(Backend::Legacy);
        r
    };
    let empty_nft = parse("*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n", Family::Ipv4);
    let c = choose_backend(&[legacy.clone(), empty_nft.clone()], &["filter".into()]);
    assert_eq!(c.backend, Backend::Legacy, "{}", c.reason);
    let hint = parse(
        "*mangle\n:KUBE-IPTABLES-HINT - [0:0]\nCOMMIT\n",
        Family::Ipv4,
    );
    let c = choose_backend(&[legacy, hint], &[]);
    assert_eq!(c.backend, Backend::Nft);
    assert!(c.reason.contains("KUBE-IPTABLES-HINT"), "{}", c.reason);
    assert_eq!(choose_backend(&[], &[]).backend, Backend::Nft);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, .. ProptestConfig::default() })]

    /// ensure∘ensure = ensure on random rulesets, with random netprobe leftovers (stale or
    /// duplicated jumps anywhere, partial chains): after one ensure everything is in place, the
    /// next ensure is `None`, rules outside netprobe's chains keep their order, and remove then
    /// leaves no netprobe chain or jump.
    #[test]
    fn ensure_is_idempotent(seed in any::<u64>(), v6 in any::<bool>(), junk in proptest::collection::vec((0u8..4, 0usize..8), 0..5), port in proptest::option::of(1u16..)) {
        let family = if v6 { Family::Ipv6 } else { Family::Ipv4 };
        let mut rs = ruleset(seed, &GenConfig::new(family)).expect("generator");
        let s = spec(&["veth0", "br-1+"], port);
        // `*filter` creates the table, as iptables-restore does; the comparison below is then
        // of the same chains.
        apply(&mut rs, "*filter\nCOMMIT\n");
        let mut setup = String::from("*filter\n");
        for (kind, pos) in &junk {
            match kind {
                0 => setup.push_str(&format!("-A INPUT {}\n", jump_spec("INPUT"))),
                1 => setup.push_str(&format!("-A OUTPUT {}\n", jump_spec("OUTPUT"))),
                2 => setup.push_str(&format!("-A {INPUT_CHAIN} -i veth0 -p tcp -m tcp --dport {} -j ACCEPT\n", pos + 1)),
                _ => setup.push_str(&format!("-A {OUTPUT_CHAIN} {}\n", wanted_rules(&s, family).last().map(|w| w.spec.clone()).unwrap_or_default())),
            }
        }
        setup.push_str("COMMIT\n");
        if !junk.is_empty() {
            apply(&mut rs, &setup);
        }
        let others = |r: &Ruleset| -> Vec<(String, Vec<String>)> {
            r.tables.iter().flat_map(|t| &t.chains)
                .filter(|c| c.name != INPUT_CHAIN && c.name != OUTPUT_CHAIN)
                .map(|c| (c.name.clone(), c.rules.iter().filter(|r| r.comment().is_none_or(|x| !x.starts_with(COMMENT_PREFIX))).map(|r| r.text.clone()).collect()))
                .collect()
        };
        let before = others(&rs);
        if let Some(p) = ensure_payload(&s, &rs).expect("ensure") {
            apply(&mut rs, &p);
        }
        prop_assert!(status(&s, &rs).expect("status").in_place());
        prop_assert_eq!(ensure_payload(&s, &rs).expect("ensure"), None);
        let after = others(&rs);
                prop_assert_eq!(&after, &before);
        let p = remove_payload(&rs).expect("remove").expect("something to remove");
        apply(&mut rs, &p);
        prop_assert_eq!(remove_payload(&rs).expect("remove"), None);
    }
}
