//! The remaining findings of `netprobe diagnose`, each from a real lab: `icmp-echo-ignored`,
//! `rp-filter-drop`, `no-route`, `remote-unreachable`; and bad input (a namespace that does not
//! exist, a vanished pid, a newer or unknown snapshot, missing tools) → a clear message or a
//! partial diagnosis, never a panic. Needs root, iproute2 and iptables; fails, never skips.
#![allow(
    clippy::unwrap_used,
    reason = "in a test a panic is the failure report"
)]

mod diagnose_support;

use diagnose_support::*;
use lab::{Netns, Veth};

#[test]
fn echo_ignored_by_the_target_sysctl() {
    let src = Netns::new("dgecho").unwrap();
    let dst = Netns::new("dgechop").unwrap();
    let _v = Veth::connect(&src, "203.0.113.1/24", &dst, "203.0.113.2/24").unwrap();
    dst.sysctl("net.ipv4.icmp_echo_ignore_all", "1").unwrap();
    let args = [
        "--netns",
        src.name(),
        "--target-netns",
        dst.name(),
        "icmp://203.0.113.2",
    ];
    let d = diagnose(&args, 1);
    assert_eq!(ids(&d), ["icmp-echo-ignored"], "{d:#}");
    assert!(evidence(finding(&d, "icmp-echo-ignored")).contains("icmp_echo_ignore_all = 1"));
}

/// Strict reverse-path filtering: the source 192.0.2.50 arrives on the veth from `src`, but the
/// destination's route back to 192.0.2.0/24 leaves by another interface.
#[test]
fn strict_rp_filter_drops_an_asymmetric_source() {
    let src = Netns::new("dgrp").unwrap();
    let dst = Netns::new("dgrpp").unwrap();
    let other = Netns::new("dgrpo").unwrap();
    let v = Veth::connect(&src, "203.0.113.1/24", &dst, "203.0.113.2/24").unwrap();
    v.add_address(true, "192.0.2.50/32").unwrap();
    let w = Veth::connect(&dst, "198.51.100.1/24", &other, "198.51.100.2/24").unwrap();
    dst.ip(&["route", "add", "192.0.2.0/24", "dev", w.a_name()])
        .unwrap();
    dst.sysctl("net.ipv4.conf.all.rp_filter", "1").unwrap();
    let args = [
        "--netns",
        src.name(),
        "--target-netns",
        dst.name(),
        "--source",
        "192.0.2.50",
        "tcp://203.0.113.2:80",
    ];
    let d = diagnose(&args, 1);
    assert_eq!(ids(&d), ["rp-filter-drop"], "{d:#}");
    assert_eq!(d["observed"]["reason"], "timeout");
    let ev = evidence(finding(&d, "rp-filter-drop"));
    assert!(ev.contains("net.ipv4.conf.all.rp_filter = 1"), "{ev}");
    assert!(
        ev.contains(&format!("reverse route for 192.0.2.50: {}", w.a_name())),
        "{ev}"
    );
}

#[test]
fn no_route_and_remote_unreachable() {
    let node = Netns::new("dgroute").unwrap();
    let gw = Netns::new("dgroutep").unwrap();
    let _v = Veth::connect(&node, "198.51.100.1/24", &gw, "198.51.100.254/24").unwrap();
    let d = diagnose(&["--netns", node.name(), "tcp://192.0.2.219:80"], 1);
    assert_eq!(ids(&d), ["no-route"], "{d:#}");
    assert_eq!(d["observed"]["reason"], "network-unreachable");
    assert!(evidence(finding(&d, "no-route")).contains("ip -j route get 192.0.2.219"));

    // A default route to a gateway that does not forward: the SYN leaves, nothing answers.
    node.ip(&["route", "add", "default", "via", "198.51.100.254"])
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("saved.json");
    let saved = saved.to_str().unwrap();
    let args = [
        "--netns",
        node.name(),
        "--save-snapshot",
        saved,
        "tcp://192.0.2.219:80",
    ];
    let d = diagnose(&args, 1);
    assert_eq!(ids(&d), ["remote-unreachable"], "{d:#}");
    let f = finding(&d, "remote-unreachable");
    assert!(evidence(f).contains("via 198.51.100.254"), "{f:#}");
    // The saved snapshot carries the observed timeout: offline gives the same answer.
    let off = diagnose(&["tcp://192.0.2.219:80", "--snapshot", saved], 1);
    assert_eq!(ids(&off), ids(&d), "{off:#}");
    assert_eq!(off["observed"], d["observed"]);
}

#[test]
fn bad_input_is_said_clearly() {
    let o = netprobe(&["diagnose", "--netns", "dg-no-such-ns", "tcp://127.0.0.1:1"]);
    assert_eq!(code(&o), 2);
    assert!(
        text(&o.stderr).contains("no network namespace named dg-no-such-ns"),
        "{}",
        text(&o.stderr)
    );
    let o = netprobe(&["snapshot", "--pid", "4194304"]);
    assert_eq!(code(&o), 2);
    assert!(
        text(&o.stderr).contains("no process with pid 4194304"),
        "{}",
        text(&o.stderr)
    );
    let o = netprobe(&["diagnose", "127.0.0.1"]);
    assert_eq!(code(&o), 2);
    assert!(text(&o.stderr).contains("no scheme"));

    // A prober pid that vanished: a partial diagnosis that says what it could not read.
    let ns = Netns::new("dgbad").unwrap();
    let d = diagnose(
        &[
            "--netns",
            ns.name(),
            "--as-pid",
            "4194304",
            "tcp://127.0.0.1:1",
        ],
        1,
    );
    assert_eq!(ids(&d), ["port-closed"], "{d:#}");
    assert!(
        d["unreadable"]
            .to_string()
            .contains("no process with pid 4194304"),
        "{d:#}"
    );

    // Snapshots: newer, unknown shape, not JSON.
    let dir = tempfile::tempdir().unwrap();
    let o = netprobe(&["snapshot", "--netns", ns.name()]);
    assert_eq!(code(&o), 0);
    let mut snap = json(&o);
    snap["version"] = 2.into();
    let newer = dir.path().join("newer.json");
    std::fs::write(&newer, snap.to_string()).unwrap();
    let o = netprobe(&[
        "diagnose",
        "tcp://127.0.0.1:1",
        "--snapshot",
        newer.to_str().unwrap(),
    ]);
    assert_eq!(code(&o), 2);
    assert!(
        text(&o.stderr).contains("snapshot version 2 is newer"),
        "{}",
        text(&o.stderr)
    );
    let odd = dir.path().join("odd.json");
    std::fs::write(&odd, r#"{"version": 1, "prober": 3}"#).unwrap();
    let o = netprobe(&[
        "diagnose",
        "tcp://127.0.0.1:1",
        "--snapshot",
        odd.to_str().unwrap(),
    ]);
    assert_eq!(code(&o), 2);
    assert!(
        text(&o.stderr).contains("unknown shape"),
        "{}",
        text(&o.stderr)
    );
    let o = netprobe(&[
        "diagnose",
        "tcp://127.0.0.1:1",
        "--snapshot",
        "/nonexistent/x.json",
    ]);
    assert_eq!(code(&o), 2);

    // Missing tools: only `ip` on PATH. Recorded as missing; the diagnosis goes on.
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let ip = ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap();
    std::os::unix::fs::symlink(ip, bin.join("ip")).unwrap();
    let mut cmd = std::process::Command::new(BIN);
    cmd.args([
        "diagnose",
        "--netns",
        ns.name(),
        "tcp://127.0.0.1:1",
        "--json",
    ])
    .env("PATH", &bin)
    .env("NETPROBE_LOG", "warn");
    let o = lab::run_bounded(cmd, RUN_LIMIT).unwrap();
    assert_eq!(code(&o), 1, "{}", text(&o.stderr));
    let d = json(&o);
    assert_eq!(ids(&d), ["port-closed"], "{d:#}");
    assert!(
        d["examined"]
            .to_string()
            .contains("iptables-nft-save missing (not installed)"),
        "{d:#}"
    );
}

/// IPv6: ip6tables (legacy) drops ICMPv6 echo requests on arrival in the target namespace.
#[test]
fn ipv6_echo_request_dropped_on_arrival() {
    let src = Netns::new("dgsix").unwrap();
    let dst = Netns::new("dgsixp").unwrap();
    let _v = Veth::connect(&src, "fd00:dd::1/64", &dst, "fd00:dd::2/64").unwrap();
    let args = [
        "--netns",
        src.name(),
        "--target-netns",
        dst.name(),
        "icmp://fd00:dd::2",
    ];
    let d = diagnose(&args, 0);
    assert!(ids(&d).is_empty(), "{d:#}");
    rule(
        &dst,
        "ip6tables-legacy",
        &[
            "-A",
            "INPUT",
            "-p",
            "ipv6-icmp",
            "--icmpv6-type",
            "echo-request",
            "-j",
            "DROP",
        ],
    );
    let d = diagnose(&args, 1);
    assert_eq!(ids(&d), ["firewall-drop"], "{d:#}");
    let ev = evidence(finding(&d, "firewall-drop"));
    assert!(
        ev.contains("legacy ipv6 table filter chain INPUT rule 1"),
        "{ev}"
    );
    assert!(ev.contains("route used: unicast fd00:dd::2"), "{ev}");
}

/// `netprobe check --diagnose` (text): the check's verdict, then the diagnosis.
#[test]
fn check_then_diagnosis_in_text() {
    let ns = Netns::new("dgcheck").unwrap();
    let o = in_ns(&ns, &[BIN, "check", "tcp://127.0.0.1:1", "--diagnose"]);
    assert_eq!(code(&o), 1, "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(out.contains("FAIL (connection-refused)"), "{out}");
    assert!(
        out.contains("diagnosis of tcp://127.0.0.1:1: findings explain the failure"),
        "{out}"
    );
    assert!(
        out.contains("[error] port-closed: nothing listens on tcp 127.0.0.1:1"),
        "{out}"
    );
    // UDP (a DNS check): the port unreachable is a refusal too; the UDP sockets are read.
    let d = diagnose(&["--netns", ns.name(), "dns://127.0.0.1/example.test"], 1);
    assert_eq!(ids(&d), ["port-closed"], "{d:#}");
    assert!(
        finding(&d, "port-closed")["summary"]
            .to_string()
            .contains("udp 127.0.0.1:53")
    );
    // A success prints no diagnosis.
    let o = in_ns(
        &ns,
        &[
            BIN,
            "check",
            "icmp://127.0.0.1",
            "--count",
            "1",
            "--diagnose",
        ],
    );
    assert_eq!(code(&o), 0);
    assert!(!text(&o.stdout).contains("diagnosis"));
}
