//! Native nftables against the real nft and kernel (needs root and network namespaces; fails,
//! never skips, where they are missing):
//!
//! * each fixture `.nft` is applied with `nft -f` in a fresh namespace and read back with
//!   `nft -j list ruleset`; the parse must give the same rule texts as the checked-in JSON and
//!   the same traces;
//! * iptables-nft rules next to native tables: `iptables-nft-save` and `nft -j` together, the
//!   iptables-nft tables counted once;
//! * a differential check: real TCP and UDP packets over loopback in a namespace with a native
//!   ruleset, their observed fate against the evaluator's verdict.
#![allow(clippy::unwrap_used, reason = "tests")]

mod eval_support;
mod nft_support;

use std::io::ErrorKind;
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use lab::{Netns, Reexec};
use netfilter::eval::{Flow, HostModel, Origin, Verdict, trace_all};
use netfilter::nft::{NftRuleset, parse_json};
use netfilter::{Backend, ParseOptions, TableName, parse_save};
use nft_support::{fixture, host, ip};

/// Applies `tests/fixtures/nft/NAME.nft` in a new namespace and parses `nft -j list ruleset`.
fn applied(name: &str) -> (NftRuleset, String) {
    let ns = Netns::new("nftfix").unwrap();
    let path = format!(
        "{}/tests/fixtures/nft/{name}.nft",
        env!("CARGO_MANIFEST_DIR")
    );
    ns.exec_ok(&["nft", "-f", &path])
        .unwrap_or_else(|e| panic!("nft -f {path}: {e}"));
    let json = ns.exec_ok(&["nft", "-j", "list", "ruleset"]).unwrap();
    let rs = parse_json(&json).unwrap_or_else(|e| panic!("{name}: {e}\n{json}"));
    (rs, json)
}

/// Every rule text, by table and chain, in order.
fn all_texts(rs: &NftRuleset) -> Vec<String> {
    let mut out = Vec::new();
    for t in &rs.tables {
        for c in &t.chains {
            for r in &c.rules {
                out.push(format!("{} {} {}: {}", t.fam(), t.name, c.name, r.text));
            }
        }
    }
    out
}

fn check_fixture(name: &str, scenario: fn(&NftRuleset)) {
    let (live, json) = applied(name);
    let stored = parse_json(&fixture(&format!("{name}.json"))).unwrap();
    assert_eq!(
        all_texts(&live),
        all_texts(&stored),
        "{name}: the nft here prints something else than the fixture; refresh it:\n{json}"
    );
    scenario(&live);
}

#[test]
fn kube_proxy_fixture_in_the_kernel() {
    check_fixture("kube-proxy", nft_support::kube_proxy);
}

#[test]
fn inet_filter_fixture_in_the_kernel() {
    check_fixture("inet-filter", nft_support::inet_filter);
}

#[test]
fn firewalld_fixture_in_the_kernel() {
    check_fixture("firewalld", nft_support::firewalld);
}

#[test]
fn iptables_nft_and_native_tables_together() {
    let ns = Netns::new("nftmix").unwrap();
    let path = format!(
        "{}/tests/fixtures/nft/inet-filter.nft",
        env!("CARGO_MANIFEST_DIR")
    );
    ns.exec_ok(&["nft", "-f", &path]).unwrap();
    ns.exec_ok(&[
        "iptables-nft",
        "-A",
        "INPUT",
        "-p",
        "tcp",
        "--dport",
        "23",
        "-m",
        "comment",
        "--comment",
        "no telnet",
        "-j",
        "DROP",
    ])
    .unwrap();
    ns.exec_ok(&[
        "iptables-nft",
        "-t",
        "nat",
        "-A",
        "PREROUTING",
        "-p",
        "tcp",
        "--dport",
        "2222",
        "-j",
        "REDIRECT",
        "--to-ports",
        "22",
    ])
    .unwrap();
    let save = ns.exec_ok(&["iptables-nft-save"]).unwrap();
    let xt = parse_save(&save, &ParseOptions::default()).unwrap();
    assert_eq!(xt.backend, Some(Backend::Nft));
    let json = ns.exec_ok(&["nft", "-j", "list", "ruleset"]).unwrap();
    let native = parse_json(&json).unwrap();
    let mut skipped: Vec<String> = native
        .skipped
        .iter()
        .map(|s| format!("{} {}", s.family, s.name))
        .collect();
    skipped.sort();
    assert_eq!(skipped, ["ip filter", "ip nat"], "{json}");
    assert_eq!(native.tables.len(), 1);

    let rulesets = [xt];
    let natives = [native];
    let inbound = |dport: u16| Flow {
        in_iface: Some("eth0".into()),
        sport: Some(40000),
        length: Some(60),
        ..Flow::tcp(Origin::Input, ip("192.0.2.5"), ip("192.0.2.10"), dport)
    };
    // Port 23: iptables-nft's filter INPUT (priority 0, walked before the native chain of the
    // same priority) drops it.
    let t = trace_all(&rulesets, &natives, &host(), &inbound(23));
    let t = t.single().unwrap();
    assert_eq!(t.verdict, Verdict::Drop);
    let by = t.decided_by.as_ref().unwrap();
    assert_eq!(
        (
            by.backend,
            by.table.to_string(),
            by.chain.as_str(),
            by.rule_number
        ),
        (Some(Backend::Nft), "filter".into(), "INPUT", Some(1))
    );
    assert_eq!(by.comment.as_deref(), Some("no telnet"));

    // Port 22: both filter chains run once each, iptables-nft's then the native one.
    let t = trace_all(&rulesets, &natives, &host(), &inbound(22));
    let t = t.single().unwrap();
    assert_eq!(t.verdict, Verdict::Accept, "{t:#?}");
    let xt_input = t
        .steps
        .iter()
        .filter(|s| {
            s.backend == Some(Backend::Nft) && s.table == TableName::Filter && s.chain == "INPUT"
        })
        .count();
    assert_eq!(xt_input, 2, "rule 1 and the policy, once: {t:#?}");
    let native_input: Vec<_> = t
        .steps
        .iter()
        .filter(|s| s.backend == Some(Backend::Nftables))
        .collect();
    assert_eq!(native_input.last().unwrap().rule_number, Some(7), "{t:#?}");
    let first_native = t
        .steps
        .iter()
        .position(|s| s.backend == Some(Backend::Nftables))
        .unwrap();
    let last_xt = t
        .steps
        .iter()
        .rposition(|s| s.backend == Some(Backend::Nft) && s.table == TableName::Filter)
        .unwrap();
    assert!(last_xt < first_native, "{t:#?}");
    // iptables-nft's nat INPUT (priority 100) runs after the native filter chain (0).
    let last = t.steps.last().unwrap();
    assert_eq!(
        (last.backend, last.table.to_string()),
        (Some(Backend::Nft), "nat".into())
    );

    // Port 2222: iptables-nft's nat PREROUTING redirects to 22, then the native input accepts.
    let t = trace_all(&rulesets, &natives, &host(), &inbound(2222));
    let t = t.single().unwrap();
    assert_eq!(t.verdict, Verdict::Accept, "{t:#?}");
    assert_eq!(t.nat.len(), 1);
    assert_eq!(t.nat[0].to.port, Some(22));
    assert_eq!(t.nat[0].rule.backend, Some(Backend::Nft));
}

/// The ruleset of the differential check: TCP to 127.0.0.1 and ::1 on ports 9001..9008, UDP on
/// 9101..9103 (the `ip` tables apply to IPv4 only).
const DIFF_RULESET: &str = r#"
table inet diff {
	set blocked { type inet_service; elements = { 9002 } }
	chain input {
		type filter hook input priority 0; policy accept;
		tcp dport @blocked counter drop
		tcp dport 9003 reject with tcp reset
		tcp dport 9004 reject with icmpx admin-prohibited
		iifname "lo" tcp dport 9005 jump deeper
		meta l4proto . th dport vmap { tcp . 9006 : drop, udp . 9102 : drop }
		udp dport 9103 reject
	}
	chain deeper {
		ct state new drop
	}
}
table ip diffnat {
	chain out {
		type nat hook output priority -100; policy accept;
		tcp dport 9007 dnat to 127.0.0.1:9001
	}
}
table ip diffmark {
	chain out {
		type route hook output priority -150; policy accept;
		tcp dport 9008 meta mark set 0x42
	}
	chain filt {
		type filter hook output priority 10; policy accept;
		meta mark 0x42 drop
	}
}
"#;

const TCP_PORTS: [u16; 8] = [9001, 9002, 9003, 9004, 9005, 9006, 9007, 9008];
const UDP_PORTS: [u16; 3] = [9101, 9102, 9103];

/// What a real packet met: `accept`; `drop` (a timeout, or EPERM from a local OUTPUT drop);
/// `refused` (ECONNREFUSED: a TCP RST, or ICMP port unreachable for UDP); `unreachable`
/// (EHOSTUNREACH: an ICMP error); `prohibited` (EACCES: ICMPv6 administratively prohibited,
/// net/ipv6/icmp.c `icmpv6_err_convert`).
///
/// Observed here (kernel of this machine, found by this test): a TCP SYN over IPv6 loopback that
/// an nft `reject` answers with any ICMPv6 error is never seen failing by the sender: its connect
/// times out as if dropped (UDP gets ECONNREFUSED, IPv4 TCP gets EHOSTUNREACH). The evaluator's
/// verdict stays `reject`, which is what the rules say; the sender sees a drop.
fn expected(v: &Verdict, udp: bool, v6: bool) -> &'static str {
    use netfilter::target::RejectWith;
    match v {
        Verdict::Reject {
            with: RejectWith::TcpReset,
        } => "refused",
        Verdict::Reject { .. } if v6 && !udp => "drop",
        Verdict::Accept => "accept",
        Verdict::Drop => "drop",
        // icmp_err_convert / icmpv6_err_convert: port unreachable is ECONNREFUSED.
        Verdict::Reject {
            with: RejectWith::IcmpPortUnreachable | RejectWith::Icmp6PortUnreachable,
        } => "refused",
        Verdict::Reject {
            with: RejectWith::Icmp6AdmProhibited,
        } => "prohibited",
        Verdict::Reject { .. } => "unreachable",
        Verdict::Undetermined { .. } => "undetermined",
    }
}

/// The outcome of a failed connect or receive, by errno.
fn outcome_of(e: &std::io::Error) -> Option<&'static str> {
    match e.raw_os_error() {
        Some(1) => Some("drop"),
        Some(13) => Some("prohibited"),
        Some(111) => Some("refused"),
        Some(113) => Some("unreachable"),
        _ if e.kind() == ErrorKind::TimedOut || e.kind() == ErrorKind::WouldBlock => Some("drop"),
        _ => None,
    }
}

/// Runs the child in `ns`: it listens on `listen` and sends one packet per probe
/// (`"tcp 127.0.0.1 9001"`), and returns what each met, as `"tcp 127.0.0.1 9001 accept"`.
fn observe(ns: &Netns, listen: &[String], probes: &[String]) -> Vec<String> {
    let run = Reexec::new("diff_child")
        .env("NFT_LISTEN", &listen.join(","))
        .env("NFT_PROBES", &probes.join(","))
        .timeout(Duration::from_secs(60))
        .run_in(ns)
        .unwrap();
    run.results().into_iter().map(str::to_string).collect()
}

/// What the evaluator predicts for each probe, in [`observe`]'s words.
fn predict(rs: &NftRuleset, host: &HostModel, src: &str, probes: &[String]) -> Vec<String> {
    probes
        .iter()
        .map(|p| {
            let mut it = p.split(' ');
            let (proto, dst, port) = (
                it.next().unwrap(),
                ip(it.next().unwrap()),
                it.next().unwrap(),
            );
            let src = if dst.is_ipv6() { ip("::1") } else { ip(src) };
            let port: u16 = port.parse().unwrap();
            let udp = proto == "udp";
            let flow = if udp {
                Flow::udp(Origin::LocalOutput, src, dst, port)
            } else {
                Flow::tcp(Origin::LocalOutput, src, dst, port)
            };
            let t = trace_all(&[], std::slice::from_ref(rs), host, &flow);
            format!("{p} {}", expected(&t.verdict(), udp, dst.is_ipv6()))
        })
        .collect()
}

#[test]
fn kernel_agrees_with_the_evaluator_on_real_packets() {
    let ns = Netns::new("nftdiff").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("diff.nft");
    std::fs::write(&path, DIFF_RULESET).unwrap();
    ns.exec_ok(&["nft", "-f", path.to_str().unwrap()]).unwrap();
    let json = ns.exec_ok(&["nft", "-j", "list", "ruleset"]).unwrap();
    let rs = parse_json(&json).unwrap();
    let mut probes = Vec::new();
    for lo in ["127.0.0.1", "::1"] {
        probes.extend(TCP_PORTS.iter().map(|p| format!("tcp {lo} {p}")));
        probes.extend(UDP_PORTS.iter().map(|p| format!("udp {lo} {p}")));
    }
    let observed = observe(&ns, &probes, &probes);
    let want = predict(&rs, &HostModel::default(), "127.0.0.1", &probes);
    assert_eq!(observed, want, "kernel (left) vs evaluator (right)\n{json}");
    // The check must exercise every outcome.
    for kind in ["accept", "drop", "refused", "unreachable"] {
        assert!(want.iter().any(|w| w.ends_with(kind)), "{kind}: {want:?}");
    }
}

/// The kube-proxy fixture in a namespace whose endpoints (203.0.113.1, .2, .5) and node address
/// (192.0.2.10) are on a veth interface: ClusterIPs through the verdict map and `numgen`, a
/// NodePort through `fib daddr type local`, a Service without endpoints, the firewall map.
#[test]
fn kernel_agrees_on_the_kube_proxy_fixture() {
    let ns = Netns::new("nftkp").unwrap();
    // A veth pair inside the namespace stands for the node's uplink.
    ns.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p",
    ])
    .unwrap();
    ns.ip(&["link", "set", "eth0", "up"]).unwrap();
    ns.ip(&["link", "set", "eth0p", "up"]).unwrap();
    let mut host = HostModel::default();
    for (a, len) in [
        ("192.0.2.10", 24),
        ("203.0.113.1", 32),
        ("203.0.113.2", 32),
        ("203.0.113.5", 32),
    ] {
        ns.ip(&["addr", "add", &format!("{a}/{len}"), "dev", "eth0"])
            .unwrap();
        host = host.with_addr("eth0", ip(a), len);
    }
    // ClusterIPs are routed out (and DNATed on the way, in OUTPUT).
    ns.ip(&["route", "add", "default", "dev", "eth0"]).unwrap();
    let path = format!(
        "{}/tests/fixtures/nft/kube-proxy.nft",
        env!("CARGO_MANIFEST_DIR")
    );
    ns.exec_ok(&["nft", "-f", &path]).unwrap();
    let json = ns.exec_ok(&["nft", "-j", "list", "ruleset"]).unwrap();
    let rs = parse_json(&json).unwrap();
    let listen = ["tcp 0.0.0.0 80".to_string(), "tcp 0.0.0.0 443".to_string()];
    let probes: Vec<String> = [
        "tcp 198.51.100.10 80",
        "tcp 198.51.100.30 80",
        "tcp 198.51.100.40 443",
        "tcp 192.0.2.10 30080",
        "tcp 203.0.113.1 80",
    ]
    .map(str::to_string)
    .to_vec();
    let observed = observe(&ns, &listen, &probes);
    let want = predict(&rs, &host, "192.0.2.10", &probes);
    assert_eq!(observed, want, "kernel (left) vs evaluator (right)\n{json}");
    for kind in ["accept", "drop", "refused"] {
        assert!(want.iter().any(|w| w.ends_with(kind)), "{kind}: {want:?}");
    }
}

#[test]
#[ignore = "child process of the kernel_agrees_* tests"]
fn diff_child() {
    lab::child::expect("diff_child");
    let wait = Duration::from_millis(400);
    let list = |key: &str| -> Vec<(String, std::net::IpAddr, u16)> {
        std::env::var(key)
            .unwrap()
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| {
                let mut it = s.split(' ');
                let proto = it.next().unwrap().to_string();
                let addr = it.next().unwrap().parse().unwrap();
                (proto, addr, it.next().unwrap().parse().unwrap())
            })
            .collect()
    };
    let mut tcp = Vec::new();
    let mut udp = std::collections::HashMap::new();
    for (proto, addr, port) in list("NFT_LISTEN") {
        if proto == "tcp" {
            tcp.push(TcpListener::bind((addr, port)).unwrap());
        } else {
            let rx = UdpSocket::bind((addr, port)).unwrap();
            rx.set_read_timeout(Some(wait)).unwrap();
            udp.insert((addr, port), rx);
        }
    }
    for (proto, addr, port) in list("NFT_PROBES") {
        let outcome = if proto == "tcp" {
            match TcpStream::connect_timeout(&std::net::SocketAddr::new(addr, port), wait) {
                Ok(_) => "accept",
                Err(e) => outcome_of(&e).unwrap_or_else(|| panic!("tcp {addr} {port}: {e}")),
            }
        } else {
            let rx = udp
                .get(&(addr, port))
                .expect("a UDP probe needs a listener on its address");
            let any: std::net::IpAddr = if addr.is_ipv6() {
                "::".parse().unwrap()
            } else {
                "0.0.0.0".parse().unwrap()
            };
            let tx = UdpSocket::bind((any, 0)).unwrap();
            tx.connect((addr, port)).unwrap();
            tx.set_read_timeout(Some(wait)).unwrap();
            let mut buf = [0u8; 8];
            match tx.send(b"x") {
                Err(e) => outcome_of(&e).unwrap_or_else(|| panic!("udp {addr} {port}: send: {e}")),
                Ok(_) => match rx.recv(&mut buf) {
                    Ok(_) => "accept",
                    // Not delivered: an ICMP error, if any, comes back to the sender.
                    Err(_) => match tx.recv(&mut buf) {
                        Err(e) => outcome_of(&e).unwrap_or("drop"),
                        Ok(_) => panic!("udp {addr} {port}: a reply from nowhere"),
                    },
                },
            }
        };
        lab::child::emit(&format!("{proto} {addr} {port} {outcome}"));
    }
}
