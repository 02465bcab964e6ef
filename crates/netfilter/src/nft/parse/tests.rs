#![allow(clippy::unwrap_used, reason = "tests")]

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::nft::NftFamily;

/// `nft -j list ruleset` of tests/fixtures/nft/mixed.nft, captured from nft 1.0.6.
const MIXED: &str = include_str!("../../../tests/fixtures/nft/mixed.json");

fn texts(rs: &NftRuleset, fam: NftFamily, table: &str, chain: &str) -> Vec<String> {
    rs.table(fam, table)
        .unwrap()
        .chain(chain)
        .unwrap()
        .rules
        .iter()
        .map(|r| r.text.clone())
        .collect()
}

#[test]
fn parses_the_captured_fixture() {
    let rs = parse_json(MIXED).unwrap();
    assert_eq!(rs.version.as_deref(), Some("1.0.6"));
    let names: Vec<(NftFamily, &str)> = rs
        .tables
        .iter()
        .map(|t| (t.fam(), t.name.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            (NftFamily::Ip, "kube-proxy"),
            (NftFamily::Inet, "filter"),
            (NftFamily::Ip, "natty")
        ]
    );
    assert!(rs.skipped.is_empty());
    let kp = rs.table(NftFamily::Ip, "kube-proxy").unwrap();
    let services = kp.sets.get("service-ips").unwrap();
    assert_eq!(
        services.type_names,
        ["ipv4_addr", "inet_proto", "inet_service"]
    );
    assert_eq!(services.map.as_deref(), Some("verdict"));
    assert_eq!(services.data.len(), 2);
    let pre = kp.chain("nat-prerouting").unwrap().base.clone().unwrap();
    assert_eq!(pre.priority, -100);
    assert_eq!(pre.kind, ChainType::Nat);
    assert_eq!(pre.hook, NftHook::Ip(Hook::Prerouting));
    assert_eq!(
        texts(&rs, NftFamily::Ip, "kube-proxy", "services"),
        [
            "ip daddr . meta l4proto . th dport vmap @service-ips",
            "fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap \
             @service-nodeports",
        ]
    );
    assert_eq!(
        texts(
            &rs,
            NftFamily::Ip,
            "kube-proxy",
            "service-ULMVA6XW-ns1/svc1/tcp/p80"
        )[1],
        "numgen random mod 2 vmap { 0 : goto endpoint-5OJB2KTY-ns1/svc1/tcp/p80__203.0.113.1/80, \
         1 : goto endpoint-ZZZZ-ns1/svc1/tcp/p80__203.0.113.2/80 }"
    );
    assert_eq!(
        texts(&rs, NftFamily::Ip, "kube-proxy", "masquerading"),
        [
            "meta mark & 0x00004000 == 0x00000000 return",
            "meta mark set meta mark ^ 0x00004000",
            "masquerade fully-random",
        ]
    );
    let input = texts(&rs, NftFamily::Inet, "filter", "input");
    assert_eq!(
        input[10],
        "meta mark 0x00000010 ct mark set 0x00000020 accept"
    );
    assert_eq!(input[0], "ct state established,related accept");
    assert_eq!(input[2], "ct state new tcp flags & (syn | ack) != syn drop");
    assert_eq!(input[3], "iifname \"lo\" accept");
    assert_eq!(
        input[6],
        "ip saddr @allowed tcp dport @tports counter packets 0 bytes 0 accept comment \"ssh and web\""
    );
    assert_eq!(
        input[8],
        "tcp dport 1000-2000 log prefix \"range \" reject with tcp reset"
    );
    assert_eq!(
        texts(&rs, NftFamily::Ip, "natty", "natpre"),
        [
            "ip daddr 192.0.2.7 tcp dport 81 dnat to 203.0.113.9",
            "tcp dport 8080 redirect to :80",
            "udp dport 5353 dnat to 203.0.113.9:53-60",
        ]
    );
}

fn err_of(v: Value) -> NftParseError {
    parse_json(&v.to_string()).unwrap_err()
}

#[test]
fn errors_name_the_json_path() {
    assert!(
        parse_json("{")
            .unwrap_err()
            .message
            .contains("not valid JSON")
    );
    assert_eq!(err_of(json!({"x": 1})).path, "");
    assert_eq!(err_of(json!({"nftables": {}})).path, "nftables");
    let table = json!({"table": {"family": "ip", "name": "t"}});
    let chain = json!({"chain": {"family": "ip", "table": "t", "name": "c"}});
    let e = err_of(json!({"nftables": [table, chain, {"rule": {
        "family": "ip", "table": "t", "chain": "c",
        "expr": [{"accept": null}, {"match": {"op": "==", "left": {"meta": {}}, "right": 1}}]
    }}]}));
    assert_eq!(e.path, "nftables[2].rule.expr[1].match.left.meta");
    assert!(e.message.contains("key"), "{e}");
    let e = err_of(json!({"nftables": [table, {"rule": {
        "family": "ip", "table": "t", "chain": "nope", "expr": []
    }}]}));
    assert_eq!(e.path, "nftables[1].rule");
    assert!(e.to_string().contains("chain nope"), "{e}");
    let e = err_of(json!({"nftables": [{"chain": {"family": "ip", "table": "x", "name": "c"}}]}));
    assert!(e.message.contains("not declared"), "{e}");
    let e = err_of(json!({"nftables": [{"table": {"family": "ipx", "name": "t"}}]}));
    assert_eq!(e.path, "nftables[0].table.family");
}

#[test]
fn unknown_statements_are_kept_and_iptables_nft_tables_skipped() {
    let v = json!({"nftables": [
        {"table": {"family": "ip", "name": "filter"}},
        {"chain": {"family": "ip", "table": "filter", "name": "INPUT", "type": "filter",
                   "hook": "input", "prio": 0, "policy": "accept"}},
        {"rule": {"family": "ip", "table": "filter", "chain": "INPUT",
                  "expr": [{"xt": {"type": "match", "name": "comment"}}, {"accept": null}]}},
        {"table": {"family": "inet", "name": "mine"}},
        {"chain": {"family": "inet", "table": "mine", "name": "in", "type": "filter",
                   "hook": "input", "prio": 10, "policy": "drop"}},
        {"rule": {"family": "inet", "table": "mine", "chain": "in",
                  "expr": [{"frobnicate": {"x": 1}}, {"match": {"op": "~~", "left": 1, "right": 2}}]}},
        {"flowtable": {"family": "inet", "name": "f", "table": "mine"}}
    ]});
    let rs = parse_json(&v.to_string()).unwrap();
    assert_eq!(rs.skipped.len(), 1);
    assert_eq!(rs.skipped[0].name, "filter");
    assert!(rs.skipped[0].reason.contains("iptables-nft-save"));
    assert_eq!(rs.tables.len(), 1);
    let rule = &rs.tables[0].chain("in").unwrap().rules[0];
    assert!(
        matches!(&rule.stmts[0], Stmt::Unknown { name, json } if name == "frobnicate" && json.contains("\"x\":1"))
    );
    assert!(matches!(&rule.stmts[1], Stmt::Unknown { name, .. } if name == "match"));
    assert_eq!(rs.notes.len(), 1);
}

#[test]
fn a_native_table_named_filter_is_kept() {
    let v = json!({"nftables": [
        {"table": {"family": "ip", "name": "filter"}},
        {"chain": {"family": "ip", "table": "filter", "name": "input", "type": "filter",
                   "hook": "input", "prio": 0, "policy": "accept"}},
    ]});
    let rs = parse_json(&v.to_string()).unwrap();
    assert_eq!(rs.tables.len(), 1);
}

/// Traces a few flows of both families and origins through `rs`.
fn trace_some(rs: &NftRuleset) {
    use crate::eval::{ConnState, Flow, HostModel, Origin, trace_all};
    let host = HostModel::default().with_addr("eth0", "192.0.2.10".parse().unwrap(), 24);
    let v4 = |s: &str| -> std::net::IpAddr { s.parse().unwrap() };
    let flows = [
        Flow::tcp(
            Origin::LocalOutput,
            v4("192.0.2.10"),
            v4("198.51.100.10"),
            80,
        ),
        Flow::udp(Origin::Input, v4("203.0.113.5"), v4("192.0.2.10"), 53),
        Flow::tcp(Origin::Forward, v4("203.0.113.5"), v4("198.51.100.40"), 443)
            .with_state(ConnState::Established),
        Flow::echo_request(Origin::Input, v4("fd00::1"), v4("fd00::2")),
    ];
    for f in &flows {
        let _ = trace_all(&[], std::slice::from_ref(rs), &host, f);
    }
}

/// Every path in `v`, as JSON pointers.
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(o) => {
            for (k, x) in o {
                pointers(x, format!("{at}/{k}"), out);
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                pointers(x, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
    out.push(at);
}

fn replacement(k: u8) -> Value {
    match k % 9 {
        0 => Value::Null,
        1 => json!(-1),
        2 => json!(1e300),
        3 => json!("@"),
        4 => json!([]),
        5 => json!({}),
        6 => json!({"prefix": {"addr": "::", "len": 999}}),
        7 => json!({"range": [1]}),
        _ => json!(["tcp", {"concat": []}]),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Replacing any subtree of real output with odd JSON gives a result or an error, never a panic.
    #[test]
    fn mutated_json_never_panics_in_parse_or_trace(picks in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4)) {
        let mut v: Value = serde_json::from_str(MIXED).unwrap();
        for (idx, k) in picks {
            let mut ps = Vec::new();
            pointers(&v, String::new(), &mut ps);
            let p = idx.get(&ps).clone();
            if let Some(slot) = v.pointer_mut(&p) {
                *slot = replacement(k);
            }
        }
        if let Ok(rs) = parse_json(&v.to_string()) {
            // Whatever parsed must also trace without panicking.
            trace_some(&rs);
        }
    }

    /// Cutting and splicing the text never panics either.
    #[test]
    fn mangled_text_never_panics(cut in 0usize..MIXED.len(), len in 0usize..64, junk in "[\\[\\]{}\",:0-9a-z@ ]{0,8}") {
        let end = (cut + len).min(MIXED.len());
        if MIXED.is_char_boundary(cut) && MIXED.is_char_boundary(end) {
            let text = format!("{}{junk}{}", &MIXED[..cut], &MIXED[end..]);
            let _ = parse_json(&text);
        }
    }
}
