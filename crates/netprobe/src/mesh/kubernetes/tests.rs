//! The pure part of Kubernetes discovery: objects to peers, watcher events to the set. Objects are
//! written as the API server returns them (JSON), not built field by field.

use std::net::IpAddr;

use k8s_openapi::api::core::v1 as core;
use kube::runtime::watcher::Event;
use serde_json::json;

use super::{ObjectStore, node_peer, pod_peer};

fn node(name: &str, addresses: &[(&str, &str)]) -> core::Node {
    let addrs: Vec<_> = addresses
        .iter()
        .map(|(t, a)| json!({ "type": t, "address": a }))
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": { "name": name, "resourceVersion": "1" },
        "status": { "addresses": addrs }
    }))
    .unwrap()
}

fn pod(name: &str, node: Option<&str>, phase: &str, ips: &[&str]) -> core::Pod {
    let pod_ips: Vec<_> = ips.iter().map(|ip| json!({ "ip": ip })).collect();
    let mut v = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name, "namespace": "kube-system", "resourceVersion": "1" },
        "spec": { "containers": [{ "name": "netprobe", "image": "netprobe" }] },
        "status": { "phase": phase }
    });
    if let Some(n) = node {
        v["spec"]["nodeName"] = json!(n);
    }
    if let Some(first) = ips.first() {
        v["status"]["podIP"] = json!(first);
        v["status"]["podIPs"] = json!(pod_ips);
    }
    serde_json::from_value(v).unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn a_node_is_probed_at_its_internal_ips_of_both_families() {
    let n = node(
        "node-a",
        &[
            ("Hostname", "node-a"),
            ("ExternalIP", "203.0.113.9"),
            ("InternalIP", "fd00::a"),
            ("InternalIP", "198.51.100.10"),
        ],
    );
    let p = node_peer(&n, 8080).unwrap();
    assert_eq!(p.name, "node-a");
    assert_eq!(p.addresses, vec![ip("198.51.100.10"), ip("fd00::a")]);
    assert_eq!(p.port, 8080);
    assert!(!p.from_dns);
}

#[test]
fn a_node_without_an_internal_ip_or_being_deleted_is_no_peer() {
    assert_eq!(
        node_peer(&node("n", &[("ExternalIP", "203.0.113.9")]), 1),
        None
    );
    assert_eq!(node_peer(&node("n", &[]), 1), None);
    assert_eq!(
        node_peer(&node("n", &[("InternalIP", "not-an-address")]), 1),
        None
    );
    let mut n = node("n", &[("InternalIP", "198.51.100.10")]);
    n.metadata.deletion_timestamp =
        Some(serde_json::from_value(json!("2026-01-01T00:00:00Z")).unwrap());
    assert_eq!(node_peer(&n, 1), None);
    // A Node without status at all (just created) is no peer either.
    let bare: core::Node = serde_json::from_value(json!({"metadata": {"name": "n"}})).unwrap();
    assert_eq!(node_peer(&bare, 1), None);
}

#[test]
fn a_running_pod_is_named_by_its_node_and_probed_at_its_pod_ips() {
    let p = pod_peer(
        &pod(
            "netprobe-x1",
            Some("node-b"),
            "Running",
            &["198.51.100.20", "fd00::20"],
        ),
        9000,
    )
    .unwrap();
    assert_eq!(p.name, "node-b");
    assert_eq!(p.addresses, vec![ip("198.51.100.20"), ip("fd00::20")]);
    assert_eq!(p.port, 9000);
    // Without spec.nodeName, the pod's own name.
    let p = pod_peer(&pod("netprobe-x1", None, "Running", &["198.51.100.20"]), 1).unwrap();
    assert_eq!(p.name, "netprobe-x1");
    // Only the older single podIP field set.
    let mut old = pod("netprobe-x1", Some("node-b"), "Running", &["198.51.100.20"]);
    old.status.as_mut().unwrap().pod_ips = None;
    assert_eq!(
        pod_peer(&old, 1).unwrap().addresses,
        vec![ip("198.51.100.20")]
    );
}

#[test]
fn pods_not_running_without_ips_or_being_deleted_are_no_peers() {
    for phase in ["Pending", "Succeeded", "Failed", "Unknown"] {
        assert_eq!(
            pod_peer(&pod("p", Some("n"), phase, &["198.51.100.20"]), 1),
            None,
            "{phase}"
        );
    }
    assert_eq!(pod_peer(&pod("p", Some("n"), "Running", &[]), 1), None);
    let mut deleting = pod("p", Some("n"), "Running", &["198.51.100.20"]);
    deleting.metadata.deletion_timestamp =
        Some(serde_json::from_value(json!("2026-01-01T00:00:00Z")).unwrap());
    assert_eq!(pod_peer(&deleting, 1), None);
}

fn names(s: &ObjectStore) -> Vec<(String, Vec<IpAddr>)> {
    s.nodes()
        .into_values()
        .map(|n| (n.name, n.addresses))
        .collect()
}

#[test]
fn the_store_follows_list_then_watch_events() {
    let map = |n: &core::Node| node_peer(n, 8080);
    let mut s = ObjectStore::default();
    assert!(!s.apply(Event::Init, map));
    assert!(!s.apply(
        Event::InitApply(node("a", &[("InternalIP", "198.51.100.1")])),
        map
    ));
    assert!(!s.apply(
        Event::InitApply(node("b", &[("InternalIP", "198.51.100.2")])),
        map
    ));
    // Nothing is visible before the list is complete.
    assert!(names(&s).is_empty() && !s.synced());
    assert!(s.apply(Event::InitDone, map));
    assert!(s.synced());
    assert_eq!(
        names(&s),
        vec![
            ("a".to_owned(), vec![ip("198.51.100.1")]),
            ("b".to_owned(), vec![ip("198.51.100.2")])
        ]
    );
    // MODIFIED with the same peer is no change; a new address is.
    assert!(!s.apply(
        Event::Apply(node("a", &[("InternalIP", "198.51.100.1")])),
        map
    ));
    assert!(s.apply(
        Event::Apply(node(
            "a",
            &[("InternalIP", "198.51.100.1"), ("InternalIP", "fd00::1")]
        )),
        map
    ));
    // A node losing its InternalIP stops being a peer.
    assert!(s.apply(Event::Apply(node("b", &[])), map));
    assert!(!s.apply(Event::Delete(node("b", &[])), map));
    assert!(s.apply(
        Event::Apply(node("c", &[("InternalIP", "198.51.100.3")])),
        map
    ));
    assert!(s.apply(Event::Delete(node("c", &[])), map));
    assert_eq!(
        names(&s),
        vec![("a".to_owned(), vec![ip("198.51.100.1"), ip("fd00::1")])]
    );
}

#[test]
fn a_relist_replaces_the_set_and_the_old_set_stays_visible_until_it_is_done() {
    let map = |n: &core::Node| node_peer(n, 8080);
    let mut s = ObjectStore::default();
    s.apply(Event::Init, map);
    s.apply(
        Event::InitApply(node("a", &[("InternalIP", "198.51.100.1")])),
        map,
    );
    s.apply(
        Event::InitApply(node("b", &[("InternalIP", "198.51.100.2")])),
        map,
    );
    s.apply(Event::InitDone, map);
    // After a 410 Gone the watcher lists again.
    assert!(!s.apply(Event::Init, map));
    assert!(!s.apply(
        Event::InitApply(node("b", &[("InternalIP", "198.51.100.2")])),
        map
    ));
    assert_eq!(
        names(&s).len(),
        2,
        "the last known set is kept during the relist"
    );
    assert!(!s.apply(
        Event::InitApply(node("d", &[("InternalIP", "198.51.100.4")])),
        map
    ));
    assert!(s.apply(Event::InitDone, map));
    assert_eq!(
        names(&s),
        vec![
            ("b".to_owned(), vec![ip("198.51.100.2")]),
            ("d".to_owned(), vec![ip("198.51.100.4")])
        ]
    );
    // A relist with the same answer changes nothing.
    s.apply(Event::Init, map);
    s.apply(
        Event::InitApply(node("b", &[("InternalIP", "198.51.100.2")])),
        map,
    );
    s.apply(
        Event::InitApply(node("d", &[("InternalIP", "198.51.100.4")])),
        map,
    );
    assert!(!s.apply(Event::InitDone, map));
}

#[test]
fn two_pods_on_one_node_make_one_peer_and_a_pod_that_stops_running_leaves() {
    let map = |p: &core::Pod| pod_peer(p, 8080);
    let mut s = ObjectStore::default();
    s.apply(Event::Init, map);
    s.apply(
        Event::InitApply(pod("old", Some("node-a"), "Running", &["198.51.100.5"])),
        map,
    );
    s.apply(
        Event::InitApply(pod(
            "new",
            Some("node-a"),
            "Running",
            &["198.51.100.6", "fd00::6"],
        )),
        map,
    );
    s.apply(
        Event::InitApply(pod("pending", Some("node-b"), "Pending", &[])),
        map,
    );
    s.apply(Event::InitDone, map);
    assert_eq!(
        names(&s),
        vec![(
            "node-a".to_owned(),
            vec![ip("198.51.100.5"), ip("198.51.100.6"), ip("fd00::6")]
        )]
    );
    assert!(s.apply(
        Event::Apply(pod("old", Some("node-a"), "Succeeded", &["198.51.100.5"])),
        map
    ));
    assert!(s.apply(
        Event::Apply(pod("pending", Some("node-b"), "Running", &["198.51.100.7"])),
        map
    ));
    assert_eq!(
        names(&s),
        vec![
            ("node-a".to_owned(), vec![ip("198.51.100.6"), ip("fd00::6")]),
            ("node-b".to_owned(), vec![ip("198.51.100.7")])
        ]
    );
}
