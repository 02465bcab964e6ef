//! ICMP (and TCP) probes across a real link between two network namespaces, and the ICMP socket
//! permission matrix under an unprivileged user.
//!
//! Lab: namespace `a` (the prober) and namespace `b` (the peer) joined by a veth pair with
//! 198.51.100.1/24 + fd00::1/64 in `a` and 198.51.100.2/24 + fd00::2/64 in `b`. Probers run inside
//! `a` on a thread that entered it ([`lab::Netns::run_in`]) with their own tokio runtime; firewall
//! rules go into `b`. The permission matrix re-executes this binary under `setpriv` as uid/gid 65534
//! in a fresh namespace ([`lab::Reexec`]), since credentials cannot change per thread.
//!
//! Needs root, iproute2, iptables/ip6tables and setpriv; fails (does not skip) without them.
#![allow(
    clippy::unwrap_used,
    reason = "in a test a panic is the failure report"
)]

use std::future::Future;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use lab::{Netns, Reexec, SharedExe, Veth};
use probe::icmp::{IcmpConfig, IcmpEngine, IcmpProber, IcmpRounds};
use probe::resolve::Family;
use probe::tcp::{TcpConfig, TcpProber};
use probe::{Details, HumanDuration, IcmpDetails, IcmpSocketMode, Outcome, Reason};

const UP: Duration = Duration::from_secs(3);
const DOWN: Duration = Duration::from_millis(500);
const PEERS: [&str; 2] = ["198.51.100.2", "fd00::2"];

struct Lab {
    a: Netns,
    b: Netns,
}

fn lab() -> Lab {
    let a = Netns::new("icmpa").unwrap();
    let b = Netns::new("icmpb").unwrap();
    Veth::connect_multi(
        &a,
        &["198.51.100.1/24", "fd00::1/64"],
        &b,
        &["198.51.100.2/24", "fd00::2/64"],
    )
    .unwrap();
    // The peer sends more ICMP errors than the kernel's default rate limit lets through to one
    // destination (a burst of 6, then one a second): every probe runs twice.
    b.sysctl("net.ipv4.icmp_ratelimit", "0").unwrap();
    b.sysctl("net.ipv6.icmp.ratelimit", "0").unwrap();
    Lab { a, b }
}

/// Runs `f` on a current-thread runtime inside `ns`.
fn in_ns<F, Fut, R>(ns: &Netns, f: F) -> R
where
    F: FnOnce() -> Fut + Send,
    Fut: Future<Output = R>,
    R: Send,
{
    ns.run_in(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f())
    })
    .unwrap()
}

fn icmp(o: &Outcome) -> &IcmpDetails {
    match &o.details {
        Details::Icmp(d) => d,
        other => panic!("not ICMP details: {other:?}"),
    }
}

/// The same probe twice: on its own ([`IcmpProber::probe`]), then through the rounds driver.
async fn ping(
    engine: &Arc<IcmpEngine>,
    rounds: &IcmpRounds,
    host: &str,
    count: u16,
    timeout: Duration,
) -> [Outcome; 2] {
    let mut cfg = IcmpConfig::new(host);
    cfg.count = count;
    cfg.interval = HumanDuration(Duration::from_millis(10));
    let p = IcmpProber::new(cfg, engine.clone()).unwrap();
    let alone = p.probe(timeout).await;
    let driven = rounds.probe(&p, tokio::time::Instant::now(), timeout).await;
    [alone, driven]
}

/// Reachable, then silently dropped, then rejected with each kind of unreachable, for both families,
/// each probe run alone and through an [`IcmpRounds`] driver.
async fn icmp_scenarios(lab: &Lab, mode: IcmpSocketMode) {
    let engine = Arc::new(IcmpEngine::new());
    let rounds = IcmpRounds::new();
    assert_eq!(engine.mode(Family::V4).unwrap(), mode);
    assert_eq!(engine.mode(Family::V6).unwrap(), mode);

    for host in PEERS {
        for o in ping(&engine, &rounds, host, 3, UP).await {
            assert!(o.success, "{host}: {o:?}");
            let d = icmp(&o);
            assert_eq!((d.sent, d.received, d.mode), (3, 3, Some(mode)), "{o:?}");
            assert!(
                d.rtts.iter().all(|r| r.is_some_and(|r| r > 0.0 && r < 1.0)),
                "{o:?}"
            );
        }
    }

    // Silently dropped requests: a timeout with nothing received. ICMPv6 drops only echo requests so
    // neighbour discovery keeps working.
    let b = &lab.b;
    b.exec_ok(&["iptables", "-A", "INPUT", "-p", "icmp", "-j", "DROP"])
        .unwrap();
    b.exec_ok(&[
        "ip6tables",
        "-A",
        "INPUT",
        "-p",
        "ipv6-icmp",
        "--icmpv6-type",
        "echo-request",
        "-j",
        "DROP",
    ])
    .unwrap();
    for host in PEERS {
        for o in ping(&engine, &rounds, host, 3, DOWN).await {
            assert_eq!(o.reason, Some(Reason::Timeout), "{host}: {o:?}");
            assert_eq!(
                (icmp(&o).sent, icmp(&o).received, icmp(&o).loss_ratio),
                (3, 0, 1.0),
                "{o:?}"
            );
            assert!(
                o.duration >= DOWN && o.duration < DOWN + Duration::from_millis(300),
                "{o:?}"
            );
        }
    }

    // Rejected requests: the ICMP error quoting our echo names the reason.
    let rejects = [
        (
            "iptables",
            "icmp",
            "icmp-host-unreachable",
            PEERS[0],
            Reason::HostUnreachable,
        ),
        (
            "iptables",
            "icmp",
            "icmp-net-unreachable",
            PEERS[0],
            Reason::NetworkUnreachable,
        ),
        (
            "ip6tables",
            "ipv6-icmp",
            "icmp6-adm-prohibited",
            PEERS[1],
            Reason::HostUnreachable,
        ),
        (
            "ip6tables",
            "ipv6-icmp",
            "icmp6-no-route",
            PEERS[1],
            Reason::NetworkUnreachable,
        ),
    ];
    for (tool, proto, with, host, reason) in rejects {
        b.exec_ok(&[tool, "-F", "INPUT"]).unwrap();
        let mut rule = vec![tool, "-A", "INPUT", "-p", proto];
        rule.extend(if tool == "iptables" {
            ["--icmp-type", "echo-request"]
        } else {
            ["--icmpv6-type", "echo-request"]
        });
        rule.extend(["-j", "REJECT", "--reject-with", with]);
        b.exec_ok(&rule).unwrap();
        for o in ping(&engine, &rounds, host, 2, UP).await {
            assert_eq!(o.reason, Some(reason), "{with}: {o:?}");
            assert_eq!((icmp(&o).sent, icmp(&o).received), (2, 0), "{o:?}");
            assert!(
                o.duration < Duration::from_secs(1),
                "errors end the probe early: {o:?}"
            );
            assert!(o.message.contains(host), "{}", o.message);
        }
    }
    b.exec_ok(&["iptables", "-F", "INPUT"]).unwrap();
    b.exec_ok(&["ip6tables", "-F", "INPUT"]).unwrap();
    let stats = engine.stats();
    assert_eq!((stats.errors, stats.in_flight), (16, 0), "{stats:?}");
}

#[test]
fn icmp_over_a_veth_link_with_raw_sockets() {
    let lab = lab();
    assert_eq!(
        lab.a.read_sysctl("net.ipv4.ping_group_range").unwrap(),
        "1 0"
    );
    // Root outside the ping group range: the engine falls back to a raw socket.
    in_ns(&lab.a, || icmp_scenarios(&lab, IcmpSocketMode::Raw));
}

#[test]
fn icmp_over_a_veth_link_with_datagram_sockets() {
    let lab = lab();
    lab.a
        .sysctl("net.ipv4.ping_group_range", "0 2147483647")
        .unwrap();
    in_ns(&lab.a, || async {
        icmp_scenarios(&lab, IcmpSocketMode::Datagram).await;

        // Concurrent probes of both families through the datagram sockets, where the kernel picks
        // the identifier, alone and through one rounds driver: each still gets exactly its own
        // replies.
        let engine = Arc::new(IcmpEngine::new());
        let rounds = Arc::new(IcmpRounds::new());
        let tasks: Vec<_> = (0..20)
            .map(|i| {
                let (engine, rounds) = (engine.clone(), rounds.clone());
                tokio::spawn(async move { ping(&engine, &rounds, PEERS[i % 2], 5, UP).await })
            })
            .collect();
        for t in tasks {
            for o in t.await.unwrap() {
                assert_eq!((icmp(&o).sent, icmp(&o).received), (5, 5), "{o:?}");
            }
        }
        assert_eq!(engine.stats().replies, 200);
    });
}

#[test]
fn tcp_connect_over_a_veth_link() {
    let lab = lab();
    // Listeners bound inside `b` stay there; the kernel completes handshakes without accept().
    let (v4, v6) = lab
        .b
        .run_in(|| {
            (
                TcpListener::bind("198.51.100.2:0").unwrap(),
                TcpListener::bind("[fd00::2]:0").unwrap(),
            )
        })
        .unwrap();
    let addrs = [
        v4.local_addr().unwrap().to_string(),
        v6.local_addr().unwrap().to_string(),
    ];
    let probe = |addr: &str, timeout| {
        let p = TcpProber::new(TcpConfig::new(addr)).unwrap();
        in_ns(&lab.a, || async move { p.probe(timeout).await })
    };
    for addr in &addrs {
        let o = probe(addr, UP);
        assert!(o.success, "{addr}: {o:?}");
    }
    let (p4, p6) = (
        v4.local_addr().unwrap().port().to_string(),
        v6.local_addr().unwrap().port().to_string(),
    );
    lab.b
        .exec_ok(&[
            "iptables", "-A", "INPUT", "-p", "tcp", "--dport", &p4, "-j", "DROP",
        ])
        .unwrap();
    lab.b
        .exec_ok(&[
            "ip6tables",
            "-A",
            "INPUT",
            "-p",
            "tcp",
            "--dport",
            &p6,
            "-j",
            "DROP",
        ])
        .unwrap();
    for addr in &addrs {
        let o = probe(addr, DOWN);
        assert_eq!(o.reason, Some(Reason::Timeout), "{addr}: {o:?}");
        assert!(!o.connected(), "{o:?}");
    }
}

/// One run of the permission child: the engine's view of both families and a probe to each loopback.
#[derive(serde::Serialize, serde::Deserialize, Debug)]
struct ChildReport {
    mode_v4: Result<IcmpSocketMode, String>,
    mode_v6: Result<IcmpSocketMode, String>,
    v4: Outcome,
    v6: Outcome,
}

fn run_unprivileged(ns: &Netns, exe: &SharedExe, ambient_net_raw: bool) -> ChildReport {
    let mut wrapper = vec![
        "setpriv",
        "--reuid",
        "65534",
        "--regid",
        "65534",
        "--clear-groups",
    ];
    if ambient_net_raw {
        wrapper.extend(["--inh-caps", "+net_raw", "--ambient-caps", "+net_raw"]);
    }
    let run = Reexec::new("permission_child")
        .exe(exe.path())
        .wrapper(&wrapper)
        .run_in(ns)
        .unwrap();
    serde_json::from_str(run.result().unwrap()).unwrap()
}

#[test]
fn icmp_permission_matrix_for_an_unprivileged_user() {
    let ns = Netns::new("icmpperm").unwrap();
    let exe = SharedExe::current().unwrap();

    // Default range `1 0`, no capability: both sockets refused, and the message says why and how.
    assert_eq!(ns.read_sysctl("net.ipv4.ping_group_range").unwrap(), "1 0");
    let r = run_unprivileged(&ns, &exe, false);
    for o in [&r.v4, &r.v6] {
        assert_eq!(o.reason, Some(Reason::PermissionDenied), "{o:?}");
        for needle in [
            "net.ipv4.ping_group_range",
            "\"1 0\"",
            "EACCES",
            "[65534]",
            "EPERM",
            "CAP_NET_RAW",
        ] {
            assert!(
                o.message.contains(needle),
                "{needle:?} missing from {}",
                o.message
            );
        }
        assert_eq!(icmp(o).sent, 0);
    }
    assert!(
        r.mode_v4.as_ref().unwrap_err().contains("ping_group_range"),
        "{r:?}"
    );
    assert!(r.mode_v6.is_err(), "{r:?}");

    // The range widened in this namespace: datagram sockets, no privilege needed.
    ns.sysctl("net.ipv4.ping_group_range", "0 2147483647")
        .unwrap();
    let r = run_unprivileged(&ns, &exe, false);
    assert_eq!(
        (r.mode_v4.clone(), r.mode_v6.clone()),
        (Ok(IcmpSocketMode::Datagram), Ok(IcmpSocketMode::Datagram))
    );
    for o in [&r.v4, &r.v6] {
        assert!(o.success, "{o:?}");
        assert_eq!(
            (icmp(o).received, icmp(o).mode),
            (2, Some(IcmpSocketMode::Datagram)),
            "{o:?}"
        );
    }

    // Default range with an ambient CAP_NET_RAW: raw sockets.
    ns.sysctl("net.ipv4.ping_group_range", "1 0").unwrap();
    let r = run_unprivileged(&ns, &exe, true);
    assert_eq!(
        (r.mode_v4.clone(), r.mode_v6.clone()),
        (Ok(IcmpSocketMode::Raw), Ok(IcmpSocketMode::Raw))
    );
    for o in [&r.v4, &r.v6] {
        assert!(o.success, "{o:?}");
        assert_eq!(
            (icmp(o).received, icmp(o).mode),
            (2, Some(IcmpSocketMode::Raw)),
            "{o:?}"
        );
    }
}

#[tokio::test]
#[ignore = "child process of icmp_permission_matrix_for_an_unprivileged_user"]
async fn permission_child() {
    lab::child::expect("permission_child");
    assert_eq!(
        nix::unistd::geteuid().as_raw(),
        65534,
        "setpriv dropped to uid 65534"
    );
    let engine = Arc::new(IcmpEngine::new());
    let rounds = IcmpRounds::new();
    let [v4, _] = ping(&engine, &rounds, "127.0.0.1", 2, UP).await;
    let [v6, _] = ping(&engine, &rounds, "::1", 2, UP).await;
    let report = ChildReport {
        mode_v4: engine.mode(Family::V4).map_err(|e| e.to_string()),
        mode_v6: engine.mode(Family::V6).map_err(|e| e.to_string()),
        v4,
        v6,
    };
    lab::child::emit(&serde_json::to_string(&report).unwrap());
}
