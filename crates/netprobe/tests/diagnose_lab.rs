//! `netprobe diagnose`, `snapshot` and `check --diagnose` against real kernels: each incident of
//! DESIGN.md reproduced in lab network namespaces, the finding asserted with its evidence, the
//! healthy and closed-port cases as negatives, and every lab diagnosed again offline from a
//! `netprobe snapshot` file alone. Needs root, iproute2 and iptables (both backends) and setpriv:
//! fails, never skips, where they are missing. Addresses: documentation ranges and
//! loopback, inside the lab's own namespaces only.
#![allow(
    clippy::unwrap_used,
    reason = "in a test a panic is the failure report"
)]

mod diagnose_support;

use std::time::{Duration, Instant};

use diagnose_support::*;
use lab::{Netns, Veth};

/// A namespace with one veth to a peer namespace, `addr` on this side.
fn host_with_peer(prefix: &str, addr: &str, peer_addr: &str) -> (Netns, Netns, Veth) {
    let a = Netns::new(prefix).unwrap();
    let b = Netns::new(&format!("{prefix}p")).unwrap();
    let v = Veth::connect(&a, addr, &b, peer_addr).unwrap();
    (a, b, v)
}

/// (a) ICMP as uid/gid 65534 with the default ping_group_range → icmp-permission-denied naming
/// gid 65534 and the range; after widening the range the same check passes.
#[test]
fn icmp_permission_denied_for_nobody_then_fixed_by_the_range() {
    let ns = Netns::new("dgicmp").unwrap();
    assert_eq!(ns.read_sysctl("net.ipv4.ping_group_range").unwrap(), "1 0");
    let nobody = [
        "setpriv",
        "--reuid",
        "65534",
        "--regid",
        "65534",
        "--clear-groups",
    ];
    let mut argv = nobody.to_vec();
    argv.extend([
        BIN,
        "check",
        "icmp://127.0.0.1",
        "--count",
        "1",
        "--diagnose",
        "--json",
    ]);
    let o = in_ns(&ns, &argv);
    assert_eq!(code(&o), 1, "{}{}", text(&o.stdout), text(&o.stderr));
    let doc = json(&o);
    assert_eq!(doc["outcome"]["reason"], "permission-denied", "{doc:#}");
    let d = &doc["diagnosis"];
    assert_eq!(ids(d)[0], "icmp-permission-denied", "{d:#}");
    let f = finding(d, "icmp-permission-denied");
    let ev = evidence(f);
    assert!(ev.contains("uid 65534 gid 65534"), "{ev}");
    assert!(ev.contains("ping_group_range = 1 0"), "{ev}");
    assert!(ev.contains("CAP_NET_RAW not effective"), "{ev}");
    let fixes = f["fixes"].to_string();
    assert!(fixes.contains("securityContext.sysctls"), "{fixes}");
    assert!(fixes.contains("ambient"), "{fixes}");
    // The collector ran as nobody: what it could not read is said, not guessed.
    let examined = d["examined"].to_string();
    assert!(
        examined.contains("iptables-legacy-save failed"),
        "{examined}"
    );

    // The same as a prober process of another uid (`--as-pid`), from a snapshot alone.
    let mut sleeper = nobody.to_vec();
    sleeper.extend(["sleep", "60"]);
    let child = ns.spawn(&sleeper).unwrap();
    let pid = child.id().to_string();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .contains("Uid:\t65534")
    {
        assert!(Instant::now() < deadline, "setpriv did not exec in 5 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    let dir = tempfile::tempdir().unwrap();
    let snap = [
        "--netns",
        ns.name(),
        "--as-pid",
        &pid,
        "--target",
        "icmp://127.0.0.1",
    ];
    let d = offline(dir.path(), &snap, "icmp://127.0.0.1", &[], 1);
    assert_eq!(ids(&d), ["icmp-permission-denied"], "{d:#}");
    assert!(evidence(finding(&d, "icmp-permission-denied")).contains("gid 65534"));
    drop(child);

    ns.sysctl("net.ipv4.ping_group_range", "0 2147483647")
        .unwrap();
    let mut argv = nobody.to_vec();
    argv.extend([BIN, "check", "icmp://127.0.0.1", "--count", "1", "--json"]);
    let o = in_ns(&ns, &argv);
    assert_eq!(code(&o), 0, "{}{}", text(&o.stdout), text(&o.stderr));
    assert_eq!(json(&o)["outcome"]["details"]["mode"], "datagram");
}

/// (b) Two namespaces, the target's INPUT drops echo-requests → firewall-drop naming the rule
/// (found by searching for the namespace that owns the address). Negatives: before the rule the
/// diagnosis is healthy; a closed port is port-closed, not firewall-drop.
#[test]
fn echo_request_dropped_in_the_target_namespace() {
    let (src, dst, _v) = host_with_peer("dgfw", "203.0.113.1/24", "203.0.113.177/24");
    let d = diagnose(&["--netns", src.name(), "icmp://203.0.113.177"], 0);
    assert_eq!(d["conclusion"], "healthy", "{d:#}");
    assert!(ids(&d).is_empty(), "{d:#}");

    rule(
        &dst,
        "iptables-nft",
        &[
            "-A",
            "INPUT",
            "-p",
            "icmp",
            "--icmp-type",
            "echo-request",
            "-j",
            "DROP",
        ],
    );
    let d = diagnose(&["--netns", src.name(), "icmp://203.0.113.177"], 1);
    assert_eq!(ids(&d), ["firewall-drop"], "{d:#}");
    let f = finding(&d, "firewall-drop");
    let ev = evidence(f);
    assert!(
        ev.contains("nft ipv4 table filter chain INPUT rule 1: -A INPUT -p icmp -m icmp --icmp-type 8 -j DROP"),
        "{ev}"
    );
    assert!(f["summary"].as_str().unwrap().contains(dst.name()), "{f:#}");
    assert_eq!(d["observed"]["reason"], "timeout");

    let dir = tempfile::tempdir().unwrap();
    let snap = ["--netns", src.name(), "--target", "icmp://203.0.113.177"];
    let off = offline(dir.path(), &snap, "icmp://203.0.113.177", &[], 1);
    assert_eq!(ids(&off), ids(&d), "{off:#}");

    // Nothing listens on port 9: refused, and said so.
    let args = [
        "--netns",
        src.name(),
        "--target-netns",
        dst.name(),
        "tcp://203.0.113.177:9",
    ];
    let d = diagnose(&args, 1);
    assert_eq!(ids(&d), ["port-closed"], "{d:#}");
    assert_eq!(d["observed"]["reason"], "connection-refused");
}

/// The kubelet's KUBE-FIREWALL chain and jumps, in the nft backend as a current kubelet writes.
fn kube_firewall(ns: &Netns) {
    rule(ns, "iptables-nft", &["-N", "KUBE-FIREWALL"]);
    rule(
        ns,
        "iptables-nft",
        &[
            "-A",
            "KUBE-FIREWALL",
            "!",
            "-s",
            "127.0.0.0/8",
            "-d",
            "127.0.0.0/8",
            "-m",
            "comment",
            "--comment",
            "block incoming localnet connections",
            "-m",
            "conntrack",
            "!",
            "--ctstate",
            "RELATED,ESTABLISHED,DNAT",
            "-j",
            "DROP",
        ],
    );
    rule(ns, "iptables-nft", &["-A", "INPUT", "-j", "KUBE-FIREWALL"]);
    rule(ns, "iptables-nft", &["-A", "OUTPUT", "-j", "KUBE-FIREWALL"]);
}

/// (b') The same incident with the drop in a native nftables table (firewalld-style `inet`):
/// `nft -j list ruleset` is parsed and the finding names the native rule with its nft text.
#[test]
fn echo_request_dropped_by_a_native_nftables_table() {
    let (src, dst, _v) = host_with_peer("dgnft", "203.0.113.1/24", "203.0.113.178/24");
    for cmd in [
        "add table inet fw",
        "add chain inet fw in { type filter hook input priority 10; policy accept; }",
        "add rule inet fw in icmp type echo-request counter drop comment \"no pings\"",
    ] {
        dst.exec_ok(&["nft", cmd]).unwrap();
    }
    let d = diagnose(&["--netns", src.name(), "icmp://203.0.113.178"], 1);
    assert_eq!(ids(&d), ["firewall-drop"], "{d:#}");
    let f = finding(&d, "firewall-drop");
    let ev = evidence(f);
    assert!(ev.contains("icmp type echo-request"), "{ev}");
    assert!(ev.contains("fw") && ev.contains("in"), "{ev}");
    let fix = f["fixes"][0].as_str().unwrap();
    assert!(fix.contains("nft insert rule inet fw in"), "{fix}");
}

/// (c) A health server on 127.0.0.2:9099 behind KUBE-FIREWALL, checked from a non-loopback
/// source: by an explicit bind, then by the local route's `src` → localnet-firewall with the
/// source and why; the check times out, it is not refused.
#[test]
fn health_check_dropped_by_kube_firewall_localnet_rule() {
    let (node, _peer, _v) = host_with_peer("dglocal", "198.51.100.5/24", "198.51.100.6/24");
    let _server = serve_http(&node, "127.0.0.2:9099");
    wait_listening(&node, "127.0.0.2:9099");
    kube_firewall(&node);
    let target = "http://127.0.0.2:9099/";
    let d = diagnose(&["--netns", node.name(), target], 0);
    assert!(ids(&d).is_empty(), "healthy from 127.0.0.1: {d:#}");

    let d = diagnose(
        &["--netns", node.name(), "--source", "198.51.100.5", target],
        1,
    );
    assert_eq!(ids(&d), ["localnet-firewall"], "{d:#}");
    assert_eq!(d["observed"]["reason"], "timeout");
    let ev = evidence(finding(&d, "localnet-firewall"));
    assert!(
        ev.contains("the check's socket is bound to 198.51.100.5"),
        "{ev}"
    );
    assert!(
        ev.contains("chain KUBE-FIREWALL rule 1")
            && ev.contains("block incoming localnet connections"),
        "{ev}"
    );

    node.ip(&[
        "route",
        "replace",
        "local",
        "127.0.0.0/8",
        "dev",
        "lo",
        "table",
        "local",
        "src",
        "198.51.100.5",
    ])
    .unwrap();
    let o = in_ns(&node, &[BIN, "check", target, "--json"]);
    assert_eq!(
        json(&o)["outcome"]["reason"],
        "timeout",
        "a timeout, not a refusal"
    );
    let d = diagnose(&["--netns", node.name(), target], 1);
    assert_eq!(
        ids(&d),
        ["localnet-firewall", "source-address-selection"],
        "{d:#}"
    );
    let ev = evidence(finding(&d, "localnet-firewall"));
    assert!(
        ev.contains("the kernel chose 198.51.100.5 from the route `local 127.0.0.0/8 dev lo table local src 198.51.100.5`"),
        "{ev}"
    );
    assert_eq!(d["flow"]["src"], "198.51.100.5");

    let dir = tempfile::tempdir().unwrap();
    let snap = ["--netns", node.name(), "--target", target];
    let off = offline(dir.path(), &snap, target, &[], 1);
    assert_eq!(ids(&off), ids(&d), "{off:#}");
    assert!(off["observed"].is_null());
}

/// (d) Rules in both iptables backends, a kube-proxy-style restore payload that jumps to a
/// KUBE-MARK-DROP that exists nowhere → missing-chain and dual-iptables-backend; a TCP check to
/// the ClusterIP the payload would have programmed → service-not-programmed.
#[test]
fn kube_proxy_cannot_program_services() {
    let (node, gw, _v) = host_with_peer("dgsvc", "198.51.100.1/24", "198.51.100.254/24");
    // The gateway namespace does not forward (ip_forward 0): nothing leaves the lab.
    assert_eq!(gw.read_sysctl("net.ipv4.ip_forward").unwrap(), "0");
    node.ip(&["route", "add", "default", "via", "198.51.100.254"])
        .unwrap();
    rule(
        &node,
        "iptables-nft",
        &["-t", "mangle", "-N", "KUBE-IPTABLES-HINT"],
    );
    kube_firewall(&node);
    rule(
        &node,
        "iptables-legacy",
        &["-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT"],
    );
    let dir = tempfile::tempdir().unwrap();
    let payload = dir.path().join("kube-proxy.restore");
    std::fs::write(
        &payload,
        "*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-SVC-WEB - [0:0]\n\
         -A KUBE-SERVICES -d 203.0.113.213/32 -p tcp -m comment --comment \"default/web cluster IP\" -m tcp --dport 80 -j KUBE-SVC-WEB\n\
         -A KUBE-SVC-WEB -m comment --comment \"default/web has no endpoints\" -j KUBE-MARK-DROP\n\
         COMMIT\n",
    )
    .unwrap();
    let p = payload.to_str().unwrap();
    // The kernel agrees: the restore fails on the missing chain.
    let o = in_ns(&node, &["iptables-nft-restore", "-w", "--noflush", p]);
    assert!(
        !o.status.success(),
        "iptables-nft-restore accepted the payload"
    );

    let target = "tcp://203.0.113.213:80";
    let args = ["--netns", node.name(), "--restore-payload", p, target];
    let d = diagnose(&args, 1);
    let got = ids(&d);
    for id in [
        "missing-chain",
        "service-not-programmed",
        "dual-iptables-backend",
    ] {
        assert!(got.contains(&id.to_string()), "{id} missing: {d:#}");
    }
    let mc = finding(&d, "missing-chain");
    assert!(
        mc["summary"].as_str().unwrap().contains("KUBE-MARK-DROP"),
        "{mc:#}"
    );
    let dual = evidence(finding(&d, "dual-iptables-backend"));
    assert!(
        dual.contains("legacy ipv4 filter INPUT") && dual.contains("nft ipv4 filter INPUT"),
        "{dual}"
    );
    assert!(dual.contains("KUBE-IPTABLES-HINT"), "{dual}");
    let svc = evidence(finding(&d, "service-not-programmed"));
    assert!(svc.contains("-d 203.0.113.213/32"), "{svc}");
    assert!(svc.contains("via 198.51.100.254"), "{svc}");

    let snap = ["--netns", node.name(), "--target", target];
    let off = offline(dir.path(), &snap, target, &["--restore-payload", p], 1);
    let mut a = ids(&off);
    let mut b = got.clone();
    a.sort();
    b.sort();
    assert_eq!(a, b, "{off:#}");

    // The chain exists, but only in the legacy backend; Kubernetes' markers are in nf_tables,
    // and the nft restore still fails.
    rule(
        &node,
        "iptables-legacy",
        &["-t", "nat", "-N", "KUBE-MARK-DROP"],
    );
    let o = in_ns(&node, &["iptables-nft-restore", "-w", "--noflush", p]);
    assert!(
        !o.status.success(),
        "iptables-nft-restore accepted the payload"
    );
    let d = diagnose(&args, 1);
    let s = finding(&d, "missing-chain")["summary"].to_string();
    assert!(
        s.contains("exists only in the legacy backend, while Kubernetes' marker chains are in nft"),
        "{s}"
    );
}

/// (e) A "pod" namespace serving HTTP, isolated with a DROP-all chain; the kubelet-like HTTP
/// probe from the "node" namespace → isolation-drop-all with the restart consequence.
#[test]
fn pod_isolation_fails_the_liveness_probe() {
    let (node, pod, _v) = host_with_peer("dgiso", "192.0.2.1/24", "192.0.2.2/24");
    let _server = serve_http(&pod, "192.0.2.2:8080");
    wait_listening(&pod, "192.0.2.2:8080");
    let target = "http://192.0.2.2:8080/";
    let args = ["--netns", node.name(), "--target-netns", pod.name(), target];
    let d = diagnose(&args, 0);
    assert!(ids(&d).is_empty(), "{d:#}");

    rule(&pod, "iptables-nft", &["-N", "ISOLATE"]);
    rule(&pod, "iptables-nft", &["-A", "ISOLATE", "-j", "DROP"]);
    rule(&pod, "iptables-nft", &["-I", "INPUT", "-j", "ISOLATE"]);
    rule(&pod, "iptables-nft", &["-I", "OUTPUT", "-j", "ISOLATE"]);
    let d = diagnose(&args, 1);
    assert_eq!(ids(&d), ["isolation-drop-all"], "{d:#}");
    let f = finding(&d, "isolation-drop-all");
    let s = f["summary"].as_str().unwrap();
    assert!(
        s.contains("failureThreshold") && s.contains("restarts the container"),
        "{s}"
    );
    assert!(
        evidence(f).contains("chain ISOLATE rule 1: -A ISOLATE -j DROP"),
        "{f:#}"
    );
    assert_eq!(d["observed"]["reason"], "timeout");

    let dir = tempfile::tempdir().unwrap();
    let snap = [
        "--netns",
        node.name(),
        "--target-netns",
        pod.name(),
        "--target",
        target,
    ];
    let off = offline(dir.path(), &snap, target, &[], 1);
    assert_eq!(ids(&off), ids(&d), "{off:#}");
}
