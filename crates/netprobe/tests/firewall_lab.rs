//! `netprobe firewall` and [`netprobe::firewall::Reconciler`] against real kernels, on both
//! iptables backends, IPv4 and IPv6: two lab namespaces joined by a veth pair, the far one with the
//! incident of DESIGN.md (INPUT drops echo-requests, before anything else). ensure → real pings
//! pass, twice → one copy, flush / misplaced jump → reconciled back, remove → `*-save` identical to
//! before (counters and comment lines aside). Bad input applies nothing. Needs root, iproute2,
//! iptables (both backends) and ping: fails, never skips, where they are missing.
#![allow(
    clippy::unwrap_used,
    reason = "in a test a panic is the failure report"
)]

use std::process::{Command, Output};

use lab::Netns;
use netfilter::Backend;
use netfilter::manage::Spec;
use netprobe::collect::NetnsTarget;
use netprobe::firewall::{self, Change, FirewallConfig, Reconciler};
use serde_json::Value;

fn netprobe(args: &[&str], path: Option<&str>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_netprobe"));
    c.args(args).env("NETPROBE_LOG", "warn");
    if let Some(p) = path {
        c.env("PATH", p);
    }
    c.output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `a` (198.51.100.1, fd00::1 on `va`) and `b` (198.51.100.2, fd00::2 on `vb`), one veth pair.
fn pair(prefix: &str) -> (Netns, Netns) {
    let a = Netns::new(&format!("{prefix}a")).unwrap();
    let b = Netns::new(&format!("{prefix}b")).unwrap();
    a.ip(&[
        "link",
        "add",
        "va",
        "type",
        "veth",
        "peer",
        "name",
        "vb",
        "netns",
        b.name(),
    ])
    .unwrap();
    for (ns, dev, v4, v6) in [
        (&a, "va", "198.51.100.1/24", "fd00::1/64"),
        (&b, "vb", "198.51.100.2/24", "fd00::2/64"),
    ] {
        ns.ip(&["link", "set", dev, "up"]).unwrap();
        ns.ip(&["link", "set", "lo", "up"]).unwrap();
        ns.ip(&["addr", "add", v4, "dev", dev]).unwrap();
        ns.ip(&["-6", "addr", "add", v6, "dev", dev, "nodad"])
            .unwrap();
    }
    (a, b)
}

fn pings(from: &Netns, to: &str) -> bool {
    let out = from.exec(&["ping", "-c", "1", "-W", "1", to]).unwrap();
    out.status.success()
}

fn tools(backend: &str) -> [String; 2] {
    [
        format!("iptables-{backend}"),
        format!("ip6tables-{backend}"),
    ]
}

/// Both families' save output, without comment lines and with chain counters zeroed.
fn saved(ns: &Netns, backend: &str) -> String {
    let mut out = String::new();
    for t in tools(backend) {
        let s = ns.exec_ok(&[&format!("{t}-save")]).unwrap();
        for line in s.lines().filter(|l| !l.starts_with('#')) {
            let line = match (line.starts_with(':'), line.rfind(" [")) {
                (true, Some(i)) => &line[..i],
                _ => line,
            };
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

fn ipt(ns: &Netns, tool: &str, args: &str) {
    let mut argv = vec![tool, "-w"];
    argv.extend(args.split_whitespace());
    ns.exec_ok(&argv).unwrap();
}

fn fw(verb: &str, ns: &Netns, extra: &[&str]) -> Output {
    let mut args = vec![
        "firewall",
        verb,
        "--netns",
        ns.name(),
        "--interface",
        "vb",
        "--tcp-port",
        "8080",
        "--json",
    ];
    args.extend_from_slice(extra);
    netprobe(&args, None)
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}{}", text(&o.stdout), text(&o.stderr)))
}

fn whole_cycle(backend: &str, prefix: &str) {
    let (a, b) = pair(prefix);
    let [v4, v6] = tools(backend);
    // The incident, and rules of others that must stay as they are.
    ipt(&b, &v4, "-A INPUT -p icmp --icmp-type echo-request -j DROP");
    ipt(
        &b,
        &v4,
        "-A INPUT -s 192.0.2.0/24 -m comment --comment other -j ACCEPT",
    );
    ipt(&b, &v4, "-A OUTPUT -d 203.0.113.9/32 -j DROP");
    ipt(
        &b,
        &v6,
        "-A INPUT -p ipv6-icmp --icmpv6-type echo-request -j DROP",
    );
    ipt(&b, &v6, "-N OTHER");
    ipt(&b, &v6, "-A OTHER -j RETURN");
    assert!(
        !pings(&a, "198.51.100.2") && !pings(&a, "fd00::2"),
        "the incident drops pings"
    );
    let before = saved(&b, backend);

    let out = fw("ensure", &b, &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let r = json(&out);
    assert_eq!(
        r["backend"], backend,
        "detected from the rules present: {r}"
    );
    assert!(r["families"][0]["applied"].is_string() && r["families"][1]["applied"].is_string());
    assert!(pings(&a, "198.51.100.2"), "IPv4 echo passes after ensure");
    assert!(pings(&a, "fd00::2"), "IPv6 echo passes after ensure");
    let ensured = saved(&b, backend);
    // Per family: 2 jumps + 4 INPUT + 4 OUTPUT rules for one interface with a TCP port.
    assert_eq!(ensured.matches("\"netprobe: ").count(), 20, "{ensured}");
    for line in before.lines() {
        assert!(ensured.contains(line), "{line} kept");
    }

    let out = fw("ensure", &b, &[]);
    assert_eq!(out.status.code(), Some(0));
    let r = json(&out);
    assert!(
        r["families"][0]["applied"].is_null() && r["families"][1]["applied"].is_null(),
        "{r}"
    );
    assert_eq!(saved(&b, backend), ensured, "ensure twice: one copy");
    assert_eq!(fw("status", &b, &[]).status.code(), Some(0));

    // Someone flushes the IPv4 chain, deletes the IPv6 OUTPUT jump, and puts a DROP above the
    // IPv6 INPUT jump.
    ipt(&b, &v4, "-F NETPROBE-INPUT");
    ipt(&b, &v6, "-D OUTPUT 1");
    ipt(
        &b,
        &v6,
        "-I INPUT 1 -p ipv6-icmp --icmpv6-type echo-request -j DROP",
    );
    assert!(!pings(&a, "198.51.100.2") && !pings(&a, "fd00::2"));
    let out = fw("status", &b, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let missing = json(&out).to_string();
    assert!(
        missing.contains("echo-request in on vb") && missing.contains("position 2"),
        "{missing}"
    );

    let cfg = FirewallConfig {
        netns: NetnsTarget::Named {
            name: b.name().to_string(),
        },
        spec: Spec {
            interfaces: vec!["vb".into()],
            tcp_port: Some(8080),
        },
        backend: None,
    };
    let mut rec = Reconciler::new(cfg).unwrap();
    match rec.reconcile_once().unwrap() {
        Change::Restored {
            backend: be,
            missing,
        } => {
            assert_eq!(be, backend);
            assert!(
                missing.iter().any(|m| m.starts_with("ipv6 OUTPUT: jump")),
                "{missing:?}"
            );
        }
        Change::Unchanged => panic!("nothing restored"),
    }
    assert_eq!(rec.reconcile_once().unwrap(), Change::Unchanged);
    assert_eq!(rec.restored_count(), 1);
    assert!(
        pings(&a, "198.51.100.2") && pings(&a, "fd00::2"),
        "reconciled"
    );
    // The DROP someone added stays (second in INPUT now); only netprobe's rules moved.
    ipt(&b, &v6, "-D INPUT 2");
    assert_eq!(
        saved(&b, backend),
        ensured,
        "reconciled back to the ensured state"
    );

    let out = fw("remove", &b, &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert_eq!(
        saved(&b, backend),
        before,
        "remove leaves the ruleset as before ensure"
    );
    assert!(!pings(&a, "198.51.100.2"));
    assert_eq!(fw("status", &b, &[]).status.code(), Some(1));
    let r = json(&fw("remove", &b, &[]));
    assert!(
        r["families"][0]["applied"].is_null(),
        "second remove: nothing to do"
    );
}

#[test]
fn legacy_ensure_reconcile_remove() {
    whole_cycle("legacy", "npfwl");
}

#[test]
fn nft_ensure_reconcile_remove() {
    whole_cycle("nft", "npfwn");
}

#[test]
fn bad_input_applies_nothing() {
    let (_a, b) = pair("npfwx");
    ipt(
        &b,
        "iptables-nft",
        "-A INPUT -p icmp --icmp-type echo-request -j DROP",
    );
    // An IPv6 rule too, so the IPv6 filter table exists before (when ensure has to create a
    // table, remove leaves it, empty: the documented limit).
    ipt(&b, "ip6tables-nft", "-A INPUT -s fd00::9/128 -j ACCEPT");
    let before = saved(&b, "nft") + &saved(&b, "legacy");

    let out = netprobe(
        &[
            "firewall",
            "ensure",
            "--netns",
            "npfw-no-such-ns",
            "--interface",
            "vb",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("no network namespace named npfw-no-such-ns"),
        "{}",
        text(&out.stderr)
    );

    for bad in ["bad/if", "0123456789abcdef", "a b"] {
        let out = netprobe(
            &[
                "firewall",
                "ensure",
                "--netns",
                b.name(),
                "--interface",
                "vb",
                "--interface",
                bad,
            ],
            None,
        );
        assert_eq!(out.status.code(), Some(2), "{bad}");
        assert!(
            text(&out.stderr).contains("is not a valid name"),
            "{}",
            text(&out.stderr)
        );
    }

    // A PATH where the legacy tools do not exist, and --backend legacy.
    let dir = tempfile::tempdir().unwrap();
    for t in [
        "iptables-nft-save",
        "ip6tables-nft-save",
        "iptables-nft-restore",
        "ip6tables-nft-restore",
    ] {
        let real = Command::new("sh")
            .args(["-c", &format!("command -v {t}")])
            .output()
            .unwrap();
        std::os::unix::fs::symlink(text(&real.stdout).trim(), dir.path().join(t)).unwrap();
    }
    let path = dir.path().to_str().unwrap();
    let out = netprobe(
        &[
            "firewall",
            "ensure",
            "--netns",
            b.name(),
            "--interface",
            "vb",
            "--backend",
            "legacy",
        ],
        Some(path),
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("iptables-legacy-save is not installed"),
        "{}",
        text(&out.stderr)
    );

    // A foreign rule jumping to netprobe's chain: remove refuses and touches nothing.
    assert_eq!(
        netprobe(
            &[
                "firewall",
                "ensure",
                "--netns",
                b.name(),
                "--interface",
                "vb"
            ],
            None
        )
        .status
        .code(),
        Some(0)
    );
    ipt(&b, "iptables-nft", "-A FORWARD -j NETPROBE-INPUT");
    let held = saved(&b, "nft");
    let out = netprobe(
        &[
            "firewall",
            "remove",
            "--netns",
            b.name(),
            "--interface",
            "vb",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("did not create"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(saved(&b, "nft"), held);
    ipt(&b, "iptables-nft", "-D FORWARD -j NETPROBE-INPUT");
    assert_eq!(
        netprobe(
            &[
                "firewall",
                "remove",
                "--netns",
                b.name(),
                "--interface",
                "vb"
            ],
            None
        )
        .status
        .code(),
        Some(0)
    );
    assert_eq!(saved(&b, "nft") + &saved(&b, "legacy"), before);
}

#[test]
fn detection_prefers_kubernetes_markers() {
    let ns = Netns::new("npfwk").unwrap();
    ipt(&ns, "iptables-legacy", "-A INPUT -s 192.0.2.1/32 -j ACCEPT");
    ipt(&ns, "iptables-legacy", "-A INPUT -s 192.0.2.2/32 -j ACCEPT");
    ipt(&ns, "iptables-nft", "-t mangle -N KUBE-IPTABLES-HINT");
    let c = firewall::detect(&NetnsTarget::Named {
        name: ns.name().to_string(),
    })
    .unwrap();
    assert_eq!(c.backend, Backend::Nft, "{}", c.reason);
    assert!(c.reason.contains("KUBE-IPTABLES-HINT"), "{}", c.reason);
}
