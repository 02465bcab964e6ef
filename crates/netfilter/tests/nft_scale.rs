//! A kube-proxy nftables-mode ruleset of thousands of Services: parsing and tracing stay fast
//! because the `service-ips` verdict map is a hash lookup, not a walk over every Service.
#![allow(clippy::unwrap_used, reason = "tests")]

use std::time::Instant;

use netfilter::eval::{Flow, HostModel, NatKind, Origin, Verdict, trace_all};
use netfilter::nft::parse_json;
use serde_json::{Value, json};

/// `nft -j` output shaped like kube-proxy's (pkg/proxy/nftables/proxier.go): `services` looks the
/// destination up in `service-ips`; each Service chain picks an endpoint by `numgen random`.
/// Service `i` is 198.51.100.(1 + i % 250) port 1000 + i / 250 over TCP.
pub fn kube_proxy_json(services: usize, endpoints: usize) -> String {
    let mut items = vec![
        json!({"metainfo": {"version": "1.0.6", "json_schema_version": 1}}),
        json!({"table": {"family": "ip", "name": "kube-proxy", "handle": 1}}),
    ];
    let svc = |i: usize| (format!("198.51.100.{}", 1 + i % 250), 1000 + i / 250);
    let mut elems = Vec::new();
    for i in 0..services {
        let (addr, port) = svc(i);
        elems.push(
            json!([{"concat": [addr, "tcp", port]}, {"goto": {"target": format!("service-{i}")}}]),
        );
    }
    items.push(
        json!({"map": {"family": "ip", "name": "service-ips", "table": "kube-proxy",
        "type": ["ipv4_addr", "inet_proto", "inet_service"], "map": "verdict", "elem": elems}}),
    );
    let chain = |name: &str, base: Option<(&str, &str, i32)>| {
        let mut c = json!({"family": "ip", "table": "kube-proxy", "name": name});
        if let Some((ty, hook, prio)) = base {
            c["type"] = json!(ty);
            c["hook"] = json!(hook);
            c["prio"] = json!(prio);
            c["policy"] = json!("accept");
        }
        json!({"chain": c})
    };
    let rule = |chain: &str, expr: Value| json!({"rule": {"family": "ip", "table": "kube-proxy", "chain": chain, "expr": expr}});
    items.push(chain("nat-output", Some(("nat", "output", -100))));
    items.push(chain("services", None));
    for i in 0..services {
        items.push(chain(&format!("service-{i}"), None));
        for e in 0..endpoints {
            items.push(chain(&format!("endpoint-{i}-{e}"), None));
        }
    }
    items.push(rule(
        "nat-output",
        json!([{"jump": {"target": "services"}}]),
    ));
    items.push(rule(
        "services",
        json!([{"vmap": {"key": {"concat": [
            {"payload": {"protocol": "ip", "field": "daddr"}},
            {"meta": {"key": "l4proto"}},
            {"payload": {"protocol": "th", "field": "dport"}}]}, "data": "@service-ips"}}]),
    ));
    for i in 0..services {
        let (addr, port) = svc(i);
        let picks: Vec<Value> = (0..endpoints)
            .map(|e| json!([e, {"goto": {"target": format!("endpoint-{i}-{e}")}}]))
            .collect();
        items.push(rule(
            &format!("service-{i}"),
            json!([
                {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": addr}},
                {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": port}},
                {"vmap": {"key": {"numgen": {"mode": "random", "mod": endpoints, "offset": 0}},
                          "data": {"set": picks}}}
            ]),
        ));
        for e in 0..endpoints {
            let ep = format!("203.0.113.{}", 1 + (i * endpoints + e) % 250);
            items.push(rule(
                &format!("endpoint-{i}-{e}"),
                json!([
                    {"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "tcp"}},
                    {"dnat": {"addr": ep, "port": 8080}}
                ]),
            ));
        }
    }
    json!({ "nftables": items }).to_string()
}

#[test]
fn thousands_of_services_trace_through_the_map_without_walking_every_chain() {
    let (services, endpoints) = (5000, 3);
    let text = kube_proxy_json(services, endpoints);
    let start = Instant::now();
    let rs = parse_json(&text).unwrap();
    eprintln!(
        "parse: {} KiB of JSON in {:?}",
        text.len() / 1024,
        start.elapsed()
    );
    let rs = [rs];
    let last = services - 1;
    let flow = Flow::tcp(
        Origin::LocalOutput,
        "192.0.2.10".parse().unwrap(),
        format!("198.51.100.{}", 1 + last % 250).parse().unwrap(),
        u16::try_from(1000 + last / 250).unwrap(),
    );
    let host = HostModel::default();
    let traces = trace_all(&[], &rs, &host, &flow);
    assert_eq!(traces.branches.len(), endpoints);
    for t in &traces.branches {
        assert_eq!(t.verdict, Verdict::Accept);
        assert_eq!(t.nat[0].kind, NatKind::Dnat);
        assert_eq!(t.nat[0].to.port, Some(8080));
        assert!(t.steps.len() < 12, "{t:#?}");
    }
    // Timing is printed for the benchmark write-up (docs/bench/netfilter.md), never asserted:
    // speed is measured by benchmarks, not by timed tests. The step bound above is what shows
    // the map lookup does not walk the 20,000 chains.
    let best = (0..20)
        .map(|_| {
            let start = Instant::now();
            let t = trace_all(&[], &rs, &host, &flow);
            assert_eq!(t.branches.len(), endpoints);
            start.elapsed()
        })
        .min()
        .unwrap_or_default();
    eprintln!("{services} services x {endpoints} endpoints: best trace {best:?} (all branches)");
}
