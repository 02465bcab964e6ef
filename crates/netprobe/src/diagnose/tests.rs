//! Unit tests of the pure diagnosis on hand-made snapshots (the lab tests in
//! `tests/diagnose_lab.rs` take real ones).
#![allow(clippy::unwrap_used, reason = "tests")]

use std::collections::BTreeMap;
use std::time::Duration;

use probe::{Details, Outcome, Reason};

use super::*;
use crate::collect::ip::{Addr, Route};
use crate::collect::procfs::{Credentials, Listener, SocketProto};
use crate::collect::snapshot::{
    NamespaceState, ProberCredentials, SNAPSHOT_VERSION, Snapshot, SnapshotError,
};
use crate::collect::{
    Capture, CaptureStatus, IptablesDump, IptablesTool, NetnsSnapshot, NetnsTarget, RouteLookup,
    RouteQuery,
};

fn ok(argv: &str, stdout: &str) -> Capture {
    Capture {
        argv: argv.split(' ').map(str::to_string).collect(),
        status: CaptureStatus::Ok,
        stdout: stdout.to_string(),
        stderr: String::new(),
    }
}

const KUBE_FIREWALL: &str = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
:KUBE-FIREWALL - [0:0]\n-A INPUT -j KUBE-FIREWALL\n-A OUTPUT -j KUBE-FIREWALL\n\
-A KUBE-FIREWALL ! -s 127.0.0.0/8 -d 127.0.0.0/8 -m comment --comment \"block incoming localnet connections\" -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP\nCOMMIT\n";

/// A node namespace: 198.51.100.5/24 on eth0, `nft_rules` in iptables-nft, a route lookup for
/// 127.0.0.2 that (like `ip route replace local 127.0.0.0/8 … src 198.51.100.5`) prefers
/// 198.51.100.5, and `listeners`.
fn state(nft_rules: &str, listeners: Vec<Listener>) -> NamespaceState {
    let iptables = IptablesTool::ALL
        .iter()
        .map(|&tool| IptablesDump {
            tool,
            capture: if tool == IptablesTool::IptablesNftSave {
                ok(tool.program(), nft_rules)
            } else {
                ok(tool.program(), "")
            },
        })
        .collect();
    let lookup = RouteLookup {
        query: RouteQuery {
            to: "127.0.0.2".parse().unwrap(),
            from: None,
        },
        capture: ok("ip -j route get 127.0.0.2", "[]"),
        route: Some(Route {
            kind: "local".into(),
            dev: Some("lo".into()),
            prefsrc: Some("198.51.100.5".parse().unwrap()),
            gateway: None,
        }),
    };
    NamespaceState {
        netns: NetnsSnapshot {
            netns: NetnsTarget::Named {
                name: "node".into(),
            },
            collected_at_unix_ms: 1,
            iptables,
            nft_ruleset: ok("nft -j list ruleset", r#"{"nftables": []}"#),
            ipset: ok("ipset save", ""),
            addresses: ok("ip -j addr show", "[]"),
            addrs: vec![Addr {
                iface: "eth0".into(),
                addr: "198.51.100.5".parse().unwrap(),
                prefix: 24,
            }],
            routes: vec![lookup],
            route_tables: Vec::new(),
            table_routes: Vec::new(),
        },
        sysctls: BTreeMap::from([("net.ipv4.ping_group_range".to_string(), "1 0".to_string())]),
        ip_tables_names: Some(Vec::new()),
        ip6_tables_names: Some(Vec::new()),
        listeners,
        local_table: ok(
            "ip -j route show table local",
            r#"[{"type":"local","dst":"127.0.0.0/8","dev":"lo","prefsrc":"198.51.100.5"}]"#,
        ),
        unreadable: Vec::new(),
    }
}

fn listener() -> Vec<Listener> {
    vec![Listener {
        proto: SocketProto::Tcp,
        addr: "127.0.0.2".parse().unwrap(),
        port: 9099,
        uid: 0,
    }]
}

fn creds(uid: u32, cap_eff: u64, is_self: bool) -> ProberCredentials {
    ProberCredentials {
        pid: 42,
        is_self,
        credentials: Some(Credentials {
            pid: 42,
            name: "checker".into(),
            uid: [uid; 4],
            gid: [uid; 4],
            groups: Vec::new(),
            cap_eff,
            cap_amb: 0,
            cap_bnd: 0x1ff_ffff_ffff,
            no_new_privs: false,
        }),
        error: None,
    }
}

fn snapshot(nft_rules: &str, listeners: Vec<Listener>) -> Snapshot {
    Snapshot {
        version: SNAPSHOT_VERSION,
        taken_at_unix_ms: 1,
        prober: state(nft_rules, listeners),
        credentials: creds(0, 0x1ff_ffff_ffff, true),
        target: None,
        target_search: Vec::new(),
        recorded: None,
    }
}

fn failed(reason: Reason) -> Outcome {
    Outcome::fail(reason, "x", Duration::ZERO, Vec::new(), Details::None)
}

fn q(target: &str) -> Question {
    Question::from_target(target, None).unwrap()
}

#[test]
fn ids_serialise_as_documented() {
    for id in FindingId::ALL {
        assert_eq!(serde_json::to_value(id).unwrap(), id.as_str());
    }
}

#[test]
fn localnet_drop_from_the_route_source_offline_and_observed() {
    let snap = snapshot(KUBE_FIREWALL, listener());
    let question = q("tcp://127.0.0.2:9099");
    for observed in [None, Some(failed(Reason::Timeout))] {
        let d = diagnose(&snap, &question, observed.as_ref(), &Extra::default());
        assert_eq!(
            d.ids(),
            [
                FindingId::LocalnetFirewall,
                FindingId::SourceAddressSelection
            ],
            "{d:#?}"
        );
        assert_eq!(d.conclusion, Conclusion::Explained);
        assert_eq!(d.exit_code(), 1);
        let ev = d.findings[0].evidence.join("\n");
        assert!(ev.contains("`local 127.0.0.0/8 dev lo table local src 198.51.100.5`"));
        assert!(ev.contains("nft ipv4 table filter chain KUBE-FIREWALL rule 1"));
    }
}

#[test]
fn observations_that_contradict_or_bypass_the_packet_path_claim_nothing() {
    let snap = snapshot(KUBE_FIREWALL, listener());
    let question = q("tcp://127.0.0.2:9099");
    // A silent drop cannot be a refusal; a listener is there: nothing explains it.
    let d = diagnose(
        &snap,
        &question,
        Some(&failed(Reason::ConnectionRefused)),
        &Extra::default(),
    );
    assert!(d.ids().is_empty(), "{d:#?}");
    assert_eq!(d.conclusion, Conclusion::Unexplained);
    assert!(d.examined.iter().any(|e| e.contains("predict a drop")));
    // The service answered with 500: the network is not the cause.
    let d = diagnose(
        &snap,
        &q("http://127.0.0.2:9099/"),
        Some(&failed(Reason::HttpStatus)),
        &Extra::default(),
    );
    assert!(d.ids().is_empty(), "{d:#?}");
    assert_eq!(d.conclusion, Conclusion::Unexplained);
    // It worked: healthy, whatever the rules seem to say.
    let ok = Outcome::ok("ok", Duration::ZERO, Vec::new(), Details::None);
    let d = diagnose(&snap, &question, Some(&ok), &Extra::default());
    assert_eq!((d.conclusion, d.exit_code()), (Conclusion::Healthy, 0));
}

#[test]
fn closed_local_port_and_icmp_permission() {
    let empty =
        "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n";
    let snap = snapshot(empty, Vec::new());
    let d = diagnose(&snap, &q("tcp://127.0.0.2:9099"), None, &Extra::default());
    assert_eq!(d.ids(), [FindingId::PortClosed], "{d:#?}");

    let mut snap = snapshot(empty, Vec::new());
    snap.credentials = creds(65534, 0, false);
    let d = diagnose(&snap, &q("icmp://127.0.0.2"), None, &Extra::default());
    assert_eq!(d.ids(), [FindingId::IcmpPermissionDenied], "{d:#?}");
    assert!(d.findings[0].summary.contains("[65534]"));
    assert!(d.findings[0].summary.contains("\"1 0\""));
    // In range: allowed, nothing to say.
    snap.prober
        .sysctls
        .insert("net.ipv4.ping_group_range".into(), "0 2147483647".into());
    let d = diagnose(&snap, &q("icmp://127.0.0.2"), None, &Extra::default());
    assert!(d.ids().is_empty(), "{d:#?}");
}

#[test]
fn snapshot_versions_are_checked() {
    let snap = snapshot(KUBE_FIREWALL, listener());
    let text = serde_json::to_string(&snap).unwrap();
    assert_eq!(Snapshot::from_json(&text).unwrap(), snap);
    let newer = text.replacen("\"version\":1", "\"version\":7", 1);
    assert!(matches!(
        Snapshot::from_json(&newer),
        Err(SnapshotError::Newer { found: 7 })
    ));
    assert!(matches!(
        Snapshot::from_json("{}"),
        Err(SnapshotError::NoVersion)
    ));
    assert!(matches!(
        Snapshot::from_json(r#"{"version": 1}"#),
        Err(SnapshotError::Shape(_))
    ));
    assert!(matches!(
        Snapshot::from_json("nope"),
        Err(SnapshotError::NotJson(_))
    ));
}

/// A node with a default route via 198.51.100.254 and kube-proxy's nat KUBE-SERVICES holding
/// one ClusterIP, 203.0.113.20.
fn node_with_services() -> Snapshot {
    let rules = "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n\
:KUBE-SERVICES - [0:0]\n:KUBE-SVC-A - [0:0]\n-A OUTPUT -j KUBE-SERVICES\n\
-A KUBE-SERVICES -d 203.0.113.20/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-A\n\
-A KUBE-SVC-A -p tcp -j DNAT --to-destination 198.51.100.9:8080\nCOMMIT\n";
    let mut snap = snapshot(rules, Vec::new());
    snap.prober.netns.table_routes = vec![crate::collect::ip::TableRoute {
        dst: "0.0.0.0/0".into(),
        dev: "eth0".into(),
    }];
    for dst in ["203.0.113.10", "192.0.2.80"] {
        snap.prober.netns.routes.push(RouteLookup {
            query: RouteQuery {
                to: dst.parse().unwrap(),
                from: None,
            },
            capture: ok(&format!("ip -j route get {dst}"), "[]"),
            route: Some(Route {
                kind: "unicast".into(),
                dev: Some("eth0".into()),
                prefsrc: Some("198.51.100.5".parse().unwrap()),
                gateway: Some("198.51.100.254".parse().unwrap()),
            }),
        });
    }
    snap
}

#[test]
fn a_vip_next_to_programmed_ones_is_a_service_other_remotes_are_not() {
    let snap = node_with_services();
    let timeout = failed(Reason::Timeout);
    let d = diagnose(
        &snap,
        &q("tcp://203.0.113.10:80"),
        Some(&timeout),
        &Extra::default(),
    );
    assert_eq!(d.ids(), [FindingId::ServiceNotProgrammed], "{d:#?}");
    assert!(
        d.findings[0]
            .evidence
            .iter()
            .any(|e| e.contains("203.0.113.20"))
    );
    // The programmed one is DNATed: not this finding (and the evaluator follows the DNAT).
    let d = diagnose(
        &snap,
        &q("tcp://192.0.2.80:80"),
        Some(&timeout),
        &Extra::default(),
    );
    assert_eq!(d.ids(), [FindingId::RemoteUnreachable], "{d:#?}");
    // Offline, a silent remote is not judged: nothing observed, nothing claimed.
    let d = diagnose(&snap, &q("tcp://192.0.2.80:80"), None, &Extra::default());
    assert!(d.ids().is_empty(), "{d:#?}");
    assert_eq!(d.conclusion, Conclusion::Healthy);
}
