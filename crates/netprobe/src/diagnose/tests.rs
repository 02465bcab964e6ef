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

// The far end of a mesh pair: the inbound question, its trace, and the merge.

fn inbound(json: &str) -> InboundQuestion {
    InboundQuestion::from_json(json.as_bytes()).unwrap()
}

const ECHO_IN: &str =
    r#"{"source": "198.51.100.1", "destination": "198.51.100.5", "protocol": "icmp"}"#;

#[test]
fn inbound_questions_are_read_and_checked() {
    let q = inbound(ECHO_IN);
    assert_eq!(q.protocol, Protocol::Icmp);
    let question = q.question();
    assert_eq!(question.target, "inbound icmp 198.51.100.1 -> 198.51.100.5");
    assert_eq!(question.source, Some("198.51.100.1".parse().unwrap()));
    assert_eq!(question.dst, "198.51.100.5".parse::<IpAddr>().unwrap());
    let q = inbound(
        r#"{"source": "fd00::1", "destination": "fd00::5", "protocol": "tcp", "port": 8080}"#,
    );
    assert_eq!(q.question().target, "inbound tcp fd00::1 -> fd00::5:8080");
    assert_eq!(q.question().dport, Some(8080));
    // The wire form round-trips (the asker serialises what the endpoint reads).
    let text = serde_json::to_string(&q).unwrap();
    assert_eq!(inbound(&text), q);
    for (body, want) in [
        (
            r#"{"source": "198.51.100.1", "destination": "fd00::5", "protocol": "icmp"}"#,
            "families",
        ),
        (
            r#"{"source": "198.51.100.1", "destination": "198.51.100.5", "protocol": "tcp"}"#,
            "needs a port",
        ),
        (
            r#"{"source": "198.51.100.1", "destination": "198.51.100.5", "protocol": "tcp", "port": 0}"#,
            "needs a port",
        ),
        (
            r#"{"source": "198.51.100.1", "destination": "198.51.100.5", "protocol": "icmp", "port": 1}"#,
            "takes no port",
        ),
        (
            r#"{"source": "198.51.100.1", "destination": "198.51.100.5", "protocol": "udp", "port": 53}"#,
            "udp",
        ),
        (
            r#"{"source": "198.51.100.1", "destination": "127.0.0.1", "protocol": "icmp"}"#,
            "loopback",
        ),
        (
            r#"{"source": "0.0.0.0", "destination": "198.51.100.5", "protocol": "icmp"}"#,
            "unicast",
        ),
        (
            r#"{"source": "198.51.100.1", "destination": "198.51.100.5", "protocol": "icmp", "x": 1}"#,
            "unknown field",
        ),
        (
            r#"{"source": "198.51.100.1", "protocol": "icmp"}"#,
            "missing field",
        ),
        ("icmp please", "invalid body"),
    ] {
        let err = InboundQuestion::from_json(body.as_bytes()).unwrap_err();
        assert!(err.contains(want), "{body}: {err}");
    }
    let long = format!("{ECHO_IN}{}", " ".repeat(MAX_QUESTION_BYTES));
    assert!(
        InboundQuestion::from_json(long.as_bytes())
            .unwrap_err()
            .contains("at most")
    );
}

const ECHO_DROPPED_IN: &str = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
-A INPUT -p icmp -m icmp --icmp-type 8 -j DROP\nCOMMIT\n";

#[test]
fn inbound_echo_dropped_on_input_names_the_rule() {
    let snap = snapshot(ECHO_DROPPED_IN, Vec::new());
    let d = diagnose_inbound(&snap, &inbound(ECHO_IN));
    assert_eq!(d.ids(), [FindingId::FirewallDrop], "{d:#?}");
    assert_eq!(d.conclusion, Conclusion::Explained);
    assert!(d.observed.is_none());
    let f = &d.findings[0];
    assert!(
        f.evidence[0].starts_with(
            "nft ipv4 table filter chain INPUT rule 1: -A INPUT -p icmp -m icmp --icmp-type 8 -j DROP"
        ),
        "{f:#?}"
    );
    assert!(
        f.summary.contains("icmp 198.51.100.1 -> 198.51.100.5"),
        "{f:#?}"
    );
    let asked = "no probe ran here: 198.51.100.1 asked over the API; judged from this host's state";
    assert!(f.evidence.iter().any(|e| e == asked), "{f:#?}");
    assert!(
        f.fixes[0]
            .contains("-I INPUT 1 -p icmp --icmp-type echo-request -d 198.51.100.5 -j ACCEPT"),
        "{f:#?}"
    );
    // TCP to the agent port is let in, and something listens: nothing to say.
    let agent = vec![Listener {
        proto: SocketProto::Tcp,
        addr: "0.0.0.0".parse().unwrap(),
        port: 8080,
        uid: 0,
    }];
    let snap = snapshot(ECHO_DROPPED_IN, agent);
    let tcp = inbound(
        r#"{"source": "198.51.100.1", "destination": "198.51.100.5", "protocol": "tcp", "port": 8080}"#,
    );
    let d = diagnose_inbound(&snap, &tcp);
    assert!(d.findings.is_empty(), "{d:#?}");
    assert_eq!(d.conclusion, Conclusion::Healthy);
    assert!(
        d.examined
            .iter()
            .any(|e| e.starts_with("reply path (tcp SYN-ACK)")),
        "{d:#?}"
    );
    // Nothing listens on another port: the kernel answers with a reset.
    let d = diagnose_inbound(
        &snap,
        &inbound(
            r#"{"source": "198.51.100.1", "destination": "198.51.100.5", "protocol": "tcp", "port": 9}"#,
        ),
    );
    assert_eq!(d.ids(), [FindingId::PortClosed], "{d:#?}");
}

#[test]
fn inbound_reply_dropped_on_output_and_conntrack_lets_it_out() {
    let reply_dropped = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
-A OUTPUT -p icmp -m icmp --icmp-type 0 -j DROP\nCOMMIT\n";
    let d = diagnose_inbound(&snapshot(reply_dropped, Vec::new()), &inbound(ECHO_IN));
    assert_eq!(d.ids(), [FindingId::FirewallDrop], "{d:#?}");
    let f = &d.findings[0];
    assert!(
        f.summary
            .contains("the reply icmp echo-reply 198.51.100.5 -> 198.51.100.1"),
        "{f:#?}"
    );
    assert!(f.evidence[0].contains("chain OUTPUT rule 1"), "{f:#?}");
    assert!(
        f.fixes[0].contains("-I OUTPUT 1 -p icmp --icmp-type echo-reply -d 198.51.100.1"),
        "{f:#?}"
    );
    // A stateful OUTPUT chain: the reply belongs to a connection and leaves.
    let stateful = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT DROP [0:0]\n\
-A OUTPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\nCOMMIT\n";
    let d = diagnose_inbound(&snapshot(stateful, Vec::new()), &inbound(ECHO_IN));
    assert!(d.findings.is_empty(), "{d:#?}");
    // Not an address of this host: nothing traced, nothing claimed.
    let d = diagnose_inbound(
        &snapshot(ECHO_DROPPED_IN, Vec::new()),
        &inbound(
            r#"{"source": "198.51.100.1", "destination": "198.51.100.9", "protocol": "icmp"}"#,
        ),
    );
    assert!(d.findings.is_empty(), "{d:#?}");
    assert!(
        d.examined.iter().any(|e| e.contains("not an address")),
        "{d:#?}"
    );
}

fn local_remote_unreachable() -> Diagnosis {
    let empty =
        "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n";
    let mut snap = snapshot(empty, Vec::new());
    snap.prober.netns.routes.clear();
    let d = diagnose(
        &snap,
        &q("icmp://198.51.100.9"),
        Some(&failed(Reason::Timeout)),
        &Extra::default(),
    );
    assert_eq!(d.ids(), [FindingId::RemoteUnreachable], "{d:#?}");
    // No namespace search ran (none is asked for a mesh peer): the evidence does not claim one.
    let not_searched =
        "198.51.100.9 is not an address of this host (its other namespaces were not searched)";
    assert!(
        d.findings[0].evidence.iter().any(|e| e == not_searched),
        "{d:#?}"
    );
    d
}

#[test]
fn the_far_end_is_attached_in_its_own_section() {
    let far_view = diagnose_inbound(&snapshot(ECHO_DROPPED_IN, Vec::new()), &inbound(ECHO_IN));
    let mut d = local_remote_unreachable();
    attach_far_end(
        &mut d,
        FarEnd {
            node: "node-4".into(),
            agent: "198.51.100.5:8080".into(),
            status: FarEndStatus::Answered,
            question: Some(inbound(ECHO_IN)),
            diagnosis: Some(Box::new(far_view)),
            error: None,
        },
    );
    // The local findings stay local; the far end's are in its section.
    assert_eq!(d.ids(), [FindingId::RemoteUnreachable]);
    let far = d.far_end.as_ref().unwrap();
    assert_eq!(far.ids(), [FindingId::FirewallDrop]);
    let last = d.examined.last().unwrap();
    assert!(
        last.starts_with("far end node-4 (agent at 198.51.100.5:8080) names the cause on its own host: firewall-drop"),
        "{last}"
    );
    let v = serde_json::to_value(&d).unwrap();
    assert_eq!(v["far_end"]["status"], "answered");
    assert_eq!(v["far_end"]["question"]["protocol"], "icmp");
    assert_eq!(
        v["far_end"]["diagnosis"]["findings"][0]["id"],
        "firewall-drop"
    );
    let back: Diagnosis = serde_json::from_value(v).unwrap();
    assert_eq!(back, d);

    // Unexplained here, explained there: the pair's diagnosis is explained.
    let mut d = local_remote_unreachable();
    d.findings.clear();
    d.conclusion = Conclusion::Unexplained;
    let far_view = diagnose_inbound(&snapshot(ECHO_DROPPED_IN, Vec::new()), &inbound(ECHO_IN));
    attach_far_end(
        &mut d,
        FarEnd {
            node: "node-4".into(),
            agent: "198.51.100.5:8080".into(),
            status: FarEndStatus::Answered,
            question: None,
            diagnosis: Some(Box::new(far_view)),
            error: None,
        },
    );
    assert_eq!(d.conclusion, Conclusion::Explained);

    // The far agent cannot be reached: said so, nothing invented.
    let mut d = local_remote_unreachable();
    attach_far_end(
        &mut d,
        FarEnd {
            node: "node-2".into(),
            agent: "198.51.100.3:8080".into(),
            status: FarEndStatus::Unreachable,
            question: None,
            diagnosis: None,
            error: Some("connect: timed out after 2s".into()),
        },
    );
    assert_eq!(d.ids(), [FindingId::RemoteUnreachable]);
    assert!(d.far_end.as_ref().unwrap().ids().is_empty());
    let last = d.examined.last().unwrap();
    assert_eq!(
        last,
        "far-end agent at 198.51.100.3:8080 unreachable: connect: timed out after 2s; what happens on node-2 is unknown"
    );
    let v = serde_json::to_value(&d).unwrap();
    assert_eq!(v["far_end"]["status"], "unreachable");
    assert!(v["far_end"]["diagnosis"].is_null());
}

#[test]
fn diagnoses_without_a_far_end_keep_their_shape() {
    let d = local_remote_unreachable();
    let v = serde_json::to_value(&d).unwrap();
    assert!(v.get("far_end").is_none(), "{v}");
    // One stored before the field existed reads back.
    let mut old = v.clone();
    old.as_object_mut().unwrap().remove("taken_at_unix_ms");
    let back: Diagnosis = serde_json::from_value(old).unwrap();
    assert!(back.far_end.is_none());
}
