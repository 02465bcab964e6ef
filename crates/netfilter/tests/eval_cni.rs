//! Tracing through the chains Docker, Calico and Antrea install (the generators in
//! `netfilter::generate::cni`, whose text `tests/kernel.rs` proves is what `iptables-save` prints):
//! published ports, bridge isolation, Calico policy marks and dispatch, NAT-outgoing through
//! ipsets, Antrea's NOTRACK and masquerade, and a host firewall in the other backend.
#![allow(clippy::unwrap_used, reason = "tests")]

mod eval_support;

use eval_support::{decided, ip, is_undetermined, legacy, rules, steps_on};
use netfilter::eval::{ConnState, Flow, HostModel, IpSet, NatKind, Origin, Trace, Verdict, trace};
use netfilter::generate::cni::{
    ANTREA_GATEWAY, DOCKER_USER_BRIDGE, NodeConfig, antrea_text, calico_iface, calico_text,
    docker_port, docker_text, workload_addr,
};
use netfilter::{Backend, Cidr, Ruleset};

const NODE: &str = "198.51.100.10";
const CLIENT: &str = "198.51.100.77";

fn cidr(s: &str) -> Cidr {
    Cidr::parse(s).unwrap()
}

fn one(rs: &[Ruleset], host: &HostModel, flow: &Flow) -> Trace {
    let t = trace(rs, host, flow);
    t.single()
        .unwrap_or_else(|| panic!("expected one path: {t:#?}"))
        .clone()
}

fn docker() -> (Vec<Ruleset>, HostModel) {
    let rs = vec![legacy(&docker_text(&NodeConfig::new(3)))];
    let host = HostModel::default()
        .with_addr("eth0", ip(NODE), 24)
        .with_addr("docker0", ip("192.0.2.1"), 24)
        .with_addr(DOCKER_USER_BRIDGE, ip("203.0.113.1"), 24);
    (rs, host)
}

#[test]
fn docker_published_port_is_dnated_and_forwarded_to_the_container() {
    let (rs, host) = docker();
    let mut flow = Flow::tcp(Origin::Input, ip(CLIENT), ip(NODE), docker_port(1));
    flow.in_iface = Some("eth0".into());
    let t = one(&rs, &host, &flow);
    assert_eq!(t.verdict, Verdict::Accept, "{:#?}", t.steps);
    let dnat = &t.nat[0];
    assert_eq!(dnat.kind, NatKind::Dnat);
    assert_eq!(dnat.rule.chain, "DOCKER");
    assert_eq!(dnat.to.addr, Some(workload_addr(1).into()));
    assert_eq!(dnat.to.port, Some(80));
    // Re-routed to the bridge: FORWARD, DOCKER's per-container ACCEPT (after the DNAT'd
    // destination and `-o docker0` from the route to 192.0.2.0/24).
    let accepted: Vec<_> = t
        .steps
        .iter()
        .filter(|s| s.chain == "DOCKER" && s.matched && s.table.to_string() == "filter")
        .collect();
    assert_eq!(accepted.len(), 1, "{:#?}", t.steps);
}

#[test]
fn docker_unpublished_container_port_hits_the_forward_drop_policy() {
    let (rs, host) = docker();
    let mut flow = Flow::tcp(Origin::Forward, ip(CLIENT), workload_addr(0).into(), 22);
    flow.in_iface = Some("eth0".into());
    let t = one(&rs, &host, &flow);
    assert_eq!(t.verdict, Verdict::Drop, "{:#?}", t.steps);
    let by = t.decided_by.unwrap();
    assert_eq!((by.chain.as_str(), by.rule_number), ("FORWARD", None));
    assert!(by.text.contains("DROP"), "{}", by.text);
}

#[test]
fn docker_isolates_its_bridges_from_each_other() {
    let (rs, host) = docker();
    let mut flow = Flow::tcp(
        Origin::Forward,
        workload_addr(0).into(),
        ip("203.0.113.2"),
        80,
    );
    flow.in_iface = Some("docker0".into());
    let t = one(&rs, &host, &flow);
    assert_eq!(t.verdict, Verdict::Drop, "{:#?}", t.steps);
    assert_eq!(
        decided(&t),
        ("filter".into(), "DOCKER-ISOLATION-STAGE-2".into(), Some(1))
    );
    assert!(t.decided_by.unwrap().text.contains(DOCKER_USER_BRIDGE));
}

#[test]
fn docker_container_egress_is_masqueraded_to_the_node_address() {
    let (rs, host) = docker();
    let mut flow = Flow::tcp(Origin::Forward, workload_addr(2).into(), ip(CLIENT), 443);
    flow.in_iface = Some("docker0".into());
    let t = one(&rs, &host, &flow);
    assert_eq!(t.verdict, Verdict::Accept, "{:#?}", t.steps);
    assert_eq!(t.nat.len(), 1, "{:#?}", t.nat);
    assert_eq!(t.nat[0].kind, NatKind::Masquerade);
    assert_eq!(t.nat[0].to.addr, Some(ip(NODE)));
}

fn calico(with_sets: bool) -> (Vec<Ruleset>, HostModel) {
    let rs = vec![rules(&calico_text(&NodeConfig::new(4)), Backend::Nft)];
    let mut host = HostModel::default().with_addr("eth0", ip(NODE), 24);
    for i in 0..4 {
        host = host.with_route(Cidr::host(workload_addr(i).into()), &calico_iface(i));
    }
    if with_sets {
        for name in ["cali40masq-ipam-pools", "cali40all-ipam-pools"] {
            let set = IpSet {
                kind: "hash:net".into(),
                members: vec![cidr("192.0.2.0/24")],
                ..Default::default()
            };
            host.ipsets.insert(name.into(), set);
        }
    }
    (rs, host)
}

fn to_workload(i: usize, port: u16) -> Flow {
    let mut flow = Flow::tcp(Origin::Forward, ip(CLIENT), workload_addr(i).into(), port);
    flow.in_iface = Some("eth0".into());
    flow
}

#[test]
fn calico_policy_allows_http_into_a_workload_and_marks_it_accepted() {
    let (rs, host) = calico(true);
    let t = one(&rs, &host, &to_workload(0, 80));
    assert_eq!(t.verdict, Verdict::Accept, "{:#?}", t.steps);
    assert!(
        steps_on(&t, "cali-pi-_allow-http", Some(1))
            .iter()
            .any(|s| s.matched),
        "the policy rule set the accept mark: {:#?}",
        t.steps
    );
    // FORWARD's last rule accepts on the mark the policy set.
    let fwd = steps_on(&t, "FORWARD", Some(2));
    assert!(fwd.iter().any(|s| s.matched), "{:#?}", t.steps);
}

#[test]
fn calico_policy_drops_other_ports_naming_the_endpoint_chain() {
    let (rs, host) = calico(true);
    let t = one(&rs, &host, &to_workload(0, 22));
    assert_eq!(t.verdict, Verdict::Drop, "{:#?}", t.steps);
    let by = t.decided_by.unwrap();
    assert_eq!(by.chain, format!("cali-tw-{}", calico_iface(0)));
    let comment = by.comment.unwrap();
    assert!(
        comment.starts_with("cali:") && comment.ends_with("; Drop if no policies passed packet"),
        "{comment}"
    );
}

#[test]
fn calico_profile_alone_allows_everything_into_a_workload_without_policy() {
    let (rs, host) = calico(true);
    let t = one(&rs, &host, &to_workload(1, 22));
    assert_eq!(t.verdict, Verdict::Accept, "{:#?}", t.steps);
}

#[test]
fn calico_drops_traffic_from_an_unknown_workload_interface() {
    let (rs, host) = calico(true);
    let mut flow = Flow::tcp(Origin::Forward, ip("192.0.2.200"), ip(CLIENT), 443);
    flow.in_iface = Some("cali00000000000".into());
    let t = one(&rs, &host, &flow);
    assert_eq!(t.verdict, Verdict::Drop, "{:#?}", t.steps);
    let by = t.decided_by.unwrap();
    assert_eq!(by.chain, "cali-from-wl-dispatch");
    assert!(by.text.contains("Unknown interface"), "{}", by.text);
}

#[test]
fn calico_nat_outgoing_masquerades_by_ipset_and_is_undetermined_without_contents() {
    let mut flow = Flow::tcp(Origin::Forward, workload_addr(0).into(), ip(CLIENT), 443);
    flow.in_iface = Some(calico_iface(0));
    let (rs, host) = calico(true);
    let t = one(&rs, &host, &flow);
    assert_eq!(t.verdict, Verdict::Accept, "{:#?}", t.steps);
    assert_eq!(t.nat.len(), 1, "{:#?}", t.nat);
    assert_eq!(t.nat[0].kind, NatKind::Masquerade);
    assert_eq!(t.nat[0].rule.chain, "cali-nat-outgoing");
    assert_eq!(t.nat[0].to.addr, Some(ip(NODE)));

    let (rs, host) = calico(false);
    let t = one(&rs, &host, &flow);
    let Verdict::Undetermined { reason } = &t.verdict else {
        panic!("without ipset contents: {:#?}", t.verdict)
    };
    assert!(reason.contains("cali40masq-ipam-pools"), "{reason}");
}

fn antrea() -> (Vec<Ruleset>, HostModel) {
    let rs = vec![legacy(&antrea_text(&NodeConfig::new(2)))];
    let mut host = HostModel::default()
        .with_addr("eth0", ip(NODE), 24)
        .with_addr(ANTREA_GATEWAY, ip("192.0.2.1"), 24)
        .with_route(cidr("203.0.113.0/24"), ANTREA_GATEWAY);
    let pods = IpSet {
        kind: "hash:net".into(),
        members: vec![cidr("192.0.2.0/24"), cidr("203.0.113.0/24")],
        ..Default::default()
    };
    host.ipsets.insert("ANTREA-POD-IP".into(), pods);
    (rs, host)
}

#[test]
fn antrea_masquerades_pod_to_external_but_not_pod_to_pod() {
    let (rs, host) = antrea();
    let mut out = Flow::tcp(Origin::Forward, ip("192.0.2.7"), ip(CLIENT), 443);
    out.in_iface = Some(ANTREA_GATEWAY.into());
    let t = one(&rs, &host, &out);
    assert_eq!(t.verdict, Verdict::Accept, "{:#?}", t.steps);
    assert_eq!(t.nat.len(), 1);
    assert_eq!(t.nat[0].kind, NatKind::Masquerade);
    assert_eq!(t.nat[0].rule.chain, "ANTREA-POSTROUTING");

    let mut east_west = Flow::tcp(Origin::Forward, ip("192.0.2.7"), ip("203.0.113.9"), 8080);
    east_west.in_iface = Some(ANTREA_GATEWAY.into());
    let t = one(&rs, &host, &east_west);
    assert_eq!(t.verdict, Verdict::Accept, "{:#?}", t.steps);
    assert!(t.nat.is_empty(), "{:#?}", t.nat);
}

#[test]
fn antrea_does_not_track_geneve_from_peer_nodes() {
    let (rs, host) = antrea();
    let mut flow = Flow::udp(Origin::Input, ip("198.51.100.11"), ip(NODE), 6081);
    flow.in_iface = Some("eth0".into());
    let t = one(&rs, &host, &flow);
    assert_eq!(t.verdict, Verdict::Accept, "{:#?}", t.steps);
    assert!(
        steps_on(&t, "ANTREA-PREROUTING", Some(1))
            .iter()
            .any(|s| s.matched)
    );
    // Untracked: the nat table is not consulted.
    assert!(
        t.steps
            .iter()
            .any(|s| s.table.to_string() == "nat" && s.why.contains("nat not consulted")),
        "{:#?}",
        t.steps
    );
}

#[test]
fn host_firewall_in_the_other_backend_drops_the_mesh_echo_antrea_lets_through() {
    // Antrea's NodeLatencyMonitor incident: the CNI's legacy rules accept, a host firewall in
    // iptables-nft drops echo-requests arriving on the node.
    let (mut rs, host) = antrea();
    rs.push(rules(
        "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
         -A INPUT -p icmp -m icmp --icmp-type 8 -j DROP\nCOMMIT\n",
        Backend::Nft,
    ));
    let mut flow = Flow::echo_request(Origin::Input, ip("198.51.100.11"), ip(NODE));
    flow.in_iface = Some("eth0".into());
    let t = one(&rs, &host, &flow);
    assert_eq!(t.verdict, Verdict::Drop, "{:#?}", t.steps);
    let by = t.decided_by.unwrap();
    assert_eq!(by.backend, Some(Backend::Nft));
    assert_eq!((by.chain.as_str(), by.rule_number), ("INPUT", Some(1)));
    // An established reply is not affected by the echo-request rule.
    let reply = flow.clone().with_state(ConnState::Established);
    let t = one(
        &rs,
        &host,
        &Flow {
            icmp_type: Some(0),
            ..reply
        },
    );
    assert!(!is_undetermined(&t.verdict));
    assert_eq!(t.verdict, Verdict::Accept);
}
