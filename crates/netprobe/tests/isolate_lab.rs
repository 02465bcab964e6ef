//! `netprobe isolate` / `release` against real kernels and real iptables: a "pod" namespace
//! serving HTTP (keep-alive) over IPv4 and IPv6 and holding a file, a "node" namespace probing it
//! like the kubelet (httpGet and tcpSocket), a "client" namespace, and an outbound destination
//! namespace; plus a Calico-like pod (link-local gateway, address-less node veth).
//! Needs root, iproute2, iptables (nft and legacy), nft and conntrack: fails, never skips, where
//! they are missing. Addresses: documentation ranges, fd00::/8 and loopback (and the link-local
//! 169.254.1.1 only as a next hop, ARP on a lab veth), inside the lab's own namespaces only.
#![allow(
    clippy::unwrap_used,
    reason = "in a test a panic is the failure report"
)]

mod diagnose_support;
mod isolate_support;

use std::time::{Duration, Instant};

use diagnose_support::*;
use isolate_support::*;
use lab::{Netns, Veth};

/// Without `--keep-probes`: the probes fail, the client and egress are blocked, an established
/// connection is cut, diagnose says isolation-drop-all and that it is netprobe's; release gives
/// every flow and the exact ruleset back.
#[test]
fn isolate_cuts_everything_and_release_restores_exactly() {
    let l = lab("iso1");
    let before = l.saved();
    assert_eq!(l.flows(), [true; 5]);
    assert_eq!(l.flows6(), [true; 4]);
    let mut established = connect(&l.client, POD_CLIENT).unwrap();
    assert!(request(&mut established));
    let mut established6 = connect(&l.client, POD_CLIENT6).unwrap();
    assert!(request(&mut established6));
    let spec = l.path("pod.yaml");

    // --dry-run: the report, and nothing changes.
    let out = ok(&l.np(&[
        "isolate",
        "--netns",
        l.pod.name(),
        "--pod-spec",
        &spec,
        "--dry-run",
    ]));
    assert!(
        out.contains("restarts the container 21–31 s after isolation"),
        "{out}"
    );
    assert!(
        out.contains("leaves its Services' endpoints 11–16 s"),
        "{out}"
    );
    assert!(out.contains("dry run: nothing changed"), "{out}");
    assert_eq!(l.saved(), before);
    assert!(request(&mut established));

    let o = l.np(&[
        "isolate",
        "--netns",
        l.pod.name(),
        "--pod-spec",
        &spec,
        "--reason",
        "incident 7",
    ]);
    let out = ok(&o);
    assert!(
        out.contains("restart: the kubelet restarts the container"),
        "{out}"
    );
    let isolated = l.saved();
    assert!(isolated.contains(":NETPROBE-ISOLATE-IN"), "{isolated}");
    assert!(
        isolated
            .contains("-A INPUT -m comment --comment \"netprobe isolate\" -j NETPROBE-ISOLATE-IN"),
        "{isolated}"
    );
    // Probes, client and egress blocked, both families; loopback inside the pod kept.
    assert_eq!(l.flows(), [false, false, false, false, true]);
    assert_eq!(l.flows6(), [false; 4]);
    assert!(
        !request(&mut established),
        "an established connection survived"
    );
    assert!(
        !request(&mut established6),
        "an established IPv6 connection survived"
    );
    // The evidence is untouched (no kubelet here, but nothing of netprobe's deletes it either).
    assert!(std::path::Path::new(&l.path("evidence.txt")).exists());

    let args = [
        "--netns",
        l.node.name(),
        "--target-netns",
        l.pod.name(),
        "--timeout",
        "1s",
        "http://198.51.100.2:8080/healthz",
    ];
    let d = diagnose(&args, 1);
    assert!(ids(&d).contains(&"isolation-drop-all".to_string()), "{d:#}");
    let ev = evidence(finding(&d, "isolation-drop-all"));
    assert!(ev.contains("netprobe's own isolation"), "{ev}");

    // Again: refused, nothing changed.
    let o = l.np(&["isolate", "--netns", l.pod.name()]);
    assert_eq!(code(&o), 2);
    assert!(
        text(&o.stderr).contains("already isolated by netprobe"),
        "{}",
        text(&o.stderr)
    );
    assert_eq!(l.saved(), isolated);

    let out = ok(&l.np(&["release", "--netns", l.pod.name(), "--reason", "done"]));
    assert!(out.contains("released"), "{out}");
    // The filter tables existed before: nothing about tables to say.
    assert!(!out.contains("filter table"), "{out}");
    assert_eq!(l.saved(), before);
    assert_eq!(l.flows(), [true; 5]);
    assert_eq!(l.flows6(), [true; 4]);
    let o = l.np(&["release", "--netns", l.pod.name()]);
    assert_eq!(code(&o), 2);
    assert!(
        text(&o.stderr).contains("not isolated by netprobe"),
        "{}",
        text(&o.stderr)
    );
    assert_eq!(l.saved(), before);

    let recs = isolations(&l.path("history.db"));
    assert_eq!(recs.len(), 2, "{recs:?}");
    assert_eq!(
        (recs[0].action.as_str(), recs[0].reason.as_str()),
        ("release", "done")
    );
    assert_eq!(
        (recs[1].action.as_str(), recs[1].reason.as_str()),
        ("isolate", "incident 7")
    );
    assert!(recs[1].rules.as_str().contains("NETPROBE-ISOLATE-IN"));
    assert!(recs[1].who.contains("uid"));
}

/// `--keep-probes` with netprobe running in the node's namespace (as the kubelet does): the probe
/// sources are the node's addresses the node picks for the pod's (IPv4 and IPv6, `ip route get`);
/// the kubelet's probes keep passing over both families; the client, egress, other node traffic
/// and established connections are cut. Run from a namespace with no route to the pod, the
/// gateways of the pod's default routes stand in, and the report says why.
#[test]
fn keep_probes_keeps_the_kubelet_and_nothing_else() {
    let l = lab("iso2");
    let before = l.saved();
    let _other = serve(&l.pod, "0.0.0.0:8081");
    let _other6 = serve(&l.pod, "[fd00:1::2]:8081");
    let mut established = connect(&l.client, POD_CLIENT).unwrap();
    assert!(request(&mut established));
    let spec = l.path("pod.yaml");
    let keep = [
        "isolate",
        "--netns",
        l.pod.name(),
        "--pod-spec",
        &spec,
        "--keep-probes",
    ];

    // From a namespace without routes: the default routes' gateways, and why.
    let nowhere = Netns::new("iso2e").unwrap();
    let mut dry = keep.to_vec();
    dry.push("--dry-run");
    let out = ok(&l.np_in(Some(&nowhere), &dry));
    for (src, fam, pod) in [
        ("198.51.100.1", "IPv4", "198.51.100.2"),
        ("fd00:1::1", "IPv6", "fd00:1::2"),
    ] {
        let want = format!(
            "probe source {src}: the gateway of the pod's {fam} default route, because this namespace \
             has no route to the pod's {pod}"
        );
        assert!(out.contains(&want), "{want} not in {out}");
    }
    assert_eq!(l.saved(), before);

    let out = ok(&l.np_in(Some(&l.node), &keep));
    assert!(out.contains("restart: none"), "{out}");
    assert!(!out.contains("fails after"), "{out}");
    for (src, pod) in [("198.51.100.1", "198.51.100.2"), ("fd00:1::1", "fd00:1::2")] {
        let want = format!(
            "probe source {src}: the source address this network namespace (where netprobe runs; the \
             kubelet probes from the node's) picks for the pod's {pod} (`ip route get {pod}`: dev lab"
        );
        assert!(out.contains(&want), "{want} not in {out}");
    }
    assert_eq!(l.flows(), [true, true, false, false, true]);
    assert_eq!(l.flows6(), [true, true, false, false]);
    assert!(
        connect(&l.node, "198.51.100.2:8081").is_none(),
        "another port from the node passed"
    );
    assert!(
        connect(&l.node, "[fd00:1::2]:8081").is_none(),
        "another IPv6 port from the node passed"
    );
    assert!(
        !request(&mut established),
        "an established connection survived"
    );
    ok(&l.np(&["release", "--netns", l.pod.name()]));
    assert_eq!(l.saved(), before);
    assert_eq!(l.flows(), [true; 5]);
    assert_eq!(l.flows6(), [true; 4]);
}

/// Bad input: a clear message, exit 2, and the namespace untouched.
#[test]
fn bad_input_leaves_nothing_behind() {
    let l = lab("iso3");
    let before = l.saved();
    let db = l.path("history.db");
    let cases: Vec<(Vec<String>, &str)> = {
        std::fs::write(
            l.path("noprobes.yaml"),
            "spec:\n  containers:\n  - name: a\n",
        )
        .unwrap();
        std::fs::write(
            l.path("named.yaml"),
            POD_SPEC.replace(
                "port: 8080\n      periodSeconds: 10",
                "port: http\n      periodSeconds: 10",
            ),
        )
        .unwrap();
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        vec![
            (
                s(&["isolate", "--netns", "netprobe-no-such-ns", "--db", &db]),
                "no network namespace named",
            ),
            (
                s(&["isolate", "--pid", "2147483646", "--db", &db]),
                "no process with pid",
            ),
            (
                s(&[
                    "isolate",
                    "--netns",
                    l.pod.name(),
                    "--keep-probes",
                    "--pod-spec",
                    &l.path("noprobes.yaml"),
                    "--db",
                    &db,
                ]),
                "has no httpGet, tcpSocket or grpc probe",
            ),
            (
                s(&[
                    "isolate",
                    "--netns",
                    l.pod.name(),
                    "--pod-spec",
                    &l.path("named.yaml"),
                    "--db",
                    &db,
                ]),
                "named port \"http\"",
            ),
            (
                s(&[
                    "isolate",
                    "--netns",
                    l.pod.name(),
                    "--allow",
                    "192.0.2.0/33",
                    "--db",
                    &db,
                ]),
                "expected CIDR[:PORT]",
            ),
            (
                s(&["isolate", "--netns", l.pod.name()]),
                "give --db PATH or -c CONFIG",
            ),
            (
                s(&[
                    "isolate",
                    "--netns",
                    l.pod.name(),
                    "--pod-spec",
                    &l.path("pod.yaml"),
                    "--keep-probes",
                    "--probe-source",
                    "198.51.100.1",
                    "--probe-source",
                    "198.51.100.3",
                    "--db",
                    &db,
                ]),
                "give at most one IPv4 and one IPv6 address",
            ),
            (
                s(&["release", "--netns", l.pod.name(), "--db", &db]),
                "not isolated by netprobe",
            ),
        ]
    };
    for (args, want) in &cases {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = netprobe(&a);
        assert_eq!(code(&o), 2, "{a:?}: {}{}", text(&o.stdout), text(&o.stderr));
        assert!(text(&o.stderr).contains(want), "{a:?}: {}", text(&o.stderr));
        assert_eq!(l.saved(), before, "{a:?} changed the rules");
    }
    assert_eq!(l.flows(), [true; 5]);
    assert!(isolations(&db).is_empty());
}

/// A legacy-backend pod named by pid, with `--allow` for one outbound destination: the rules go
/// to iptables-legacy (where the pod's own rules are), the allowed egress passes and nothing
/// else, and release restores the legacy ruleset exactly.
#[test]
fn legacy_backend_by_pid_with_an_allowed_destination() {
    let l = lab_on("iso4", "legacy", true);
    let before = l.saved();
    let nft_before = l.pod.exec_ok(&["iptables-nft-save"]).unwrap();
    let sleeper = l.pod.spawn(&["sleep", "120"]).unwrap();
    let pid = sleeper.id().to_string();
    let o = l.np(&["isolate", "--pid", &pid, "--allow", DEST, "--json"]);
    let doc = json(&o);
    assert_eq!(code(&o), 0, "{doc:#} {}", text(&o.stderr));
    assert_eq!(doc["backend"], "legacy", "{doc:#}");
    assert!(l.saved().contains(":NETPROBE-ISOLATE-OUT"));
    // Egress to the allowed destination passes; the probes, the client and loopback as before.
    assert_eq!(l.flows(), [false, false, false, true, true]);
    assert!(
        connect(&l.pod, "192.0.2.1:8081").is_none(),
        "another port of the allowed host passed"
    );
    // Released with `-c`: recorded in the store the daemon's config points at.
    let db = l.path("history.db");
    let cfg = l.path("netprobe.yaml");
    std::fs::write(
        &cfg,
        format!(
            "storage: {{ path: \"{db}\" }}\nchecks:\n  - name: lo\n    icmp: {{ host: \"127.0.0.1\" }}\n"
        ),
    )
    .unwrap();
    ok(&netprobe(&["release", "--pid", &pid, "-c", &cfg]));
    assert_eq!(l.saved(), before);
    let recs = isolations(&db);
    let actions: Vec<&str> = recs.iter().map(|r| r.action.as_str()).collect();
    assert_eq!(actions, ["release", "isolate"]);
    assert_eq!(recs[1].netns, format!("network namespace of pid {pid}"));
    assert_eq!(
        l.pod
            .exec_ok(&["iptables-nft-save"])
            .unwrap()
            .lines()
            .filter(|x| !x.starts_with('#'))
            .count(),
        nft_before.lines().filter(|x| !x.starts_with('#')).count()
    );
    assert_eq!(l.flows(), [true; 5]);
    drop(sleeper);
}

/// When the IPv6 restore fails after the IPv4 one succeeded, the IPv4 rules are taken out again:
/// exit 1, the ruleset as before, nothing recorded. The failure is a stand-in
/// `ip6tables-nft-restore` (a script that exits 1) first in `PATH`: a mock, as no real kernel
/// refuses this payload on demand.
#[test]
fn mock_ip6tables_failure_rolls_the_ipv4_rules_back() {
    use std::os::unix::fs::PermissionsExt as _;
    let l = lab("iso5");
    let before = l.saved();
    let bin = l.dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let fake = bin.join("ip6tables-nft-restore");
    std::fs::write(&fake, "#!/bin/sh\necho 'simulated failure' >&2\nexit 1\n").unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let db = l.path("history.db");
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(["isolate", "--netns", l.pod.name(), "--db", &db])
        .env("PATH", path)
        .env("NETPROBE_LOG", "warn");
    let o = lab::run_bounded(cmd, RUN_LIMIT).unwrap();
    assert_eq!(code(&o), 1, "{}{}", text(&o.stdout), text(&o.stderr));
    let err = text(&o.stderr);
    assert!(err.contains("ip6tables-nft-restore failed"), "{err}");
    assert!(err.contains("simulated failure"), "{err}");
    assert!(err.contains("nothing was left installed"), "{err}");
    assert_eq!(l.saved(), before);
    assert_eq!(l.flows(), [true; 5]);
    assert!(isolations(&db).is_empty());
}

/// A fresh pod namespace with no filter table (nft, the host's default here), isolated keeping
/// the probes of two explicit sources, one per family: isolate creates the tables and marks them,
/// and release deletes them: `iptables-save`, `ip6tables-save` and `nft list ruleset` print
/// nothing, as before. Both families' probes pass while isolated, nothing else does.
#[test]
fn release_deletes_the_nft_filter_tables_isolate_created() {
    let l = lab_on("iso6", "nft", false);
    let before = l.saved();
    assert_eq!(before, "", "the fresh pod has tables");
    assert_eq!(l.pod.exec_ok(&["nft", "list", "ruleset"]).unwrap(), "");
    let spec = l.path("pod.yaml");
    let out = ok(&l.np(&[
        "isolate",
        "--netns",
        l.pod.name(),
        "--pod-spec",
        &spec,
        "--keep-probes",
        "--probe-source",
        "198.51.100.1",
        "--probe-source",
        "fd00:1::1",
    ]));
    for fam in ["IPv4", "IPv6"] {
        let want = format!(
            "note: the namespace has no {fam} filter table: isolating creates it (marked by the empty \
             chain NETPROBE-ISOLATE-NEW-TABLE), and release deletes it again"
        );
        assert!(out.contains(&want), "{want} not in {out}");
    }
    assert!(
        out.contains("probe source fd00:1::1: --probe-source"),
        "{out}"
    );
    let isolated = l.saved();
    assert_eq!(
        isolated.matches(":NETPROBE-ISOLATE-NEW-TABLE -").count(),
        2,
        "{isolated}"
    );
    assert_eq!(l.flows(), [true, true, false, false, true]);
    assert_eq!(l.flows6(), [true, true, false, false]);

    let out = ok(&l.np(&["release", "--netns", l.pod.name()]));
    for (fam, nft) in [("IPv4", "ip"), ("IPv6", "ip6")] {
        let want = format!(
            "note: deleted the {fam} filter table: the isolation had created it and it held nothing else \
             (`nft delete table {nft} filter`)"
        );
        assert!(out.contains(&want), "{want} not in {out}");
    }
    assert_eq!(l.saved(), before);
    assert_eq!(l.pod.exec_ok(&["nft", "list", "ruleset"]).unwrap(), "");
    assert_eq!(l.flows(), [true; 5]);
    assert_eq!(l.flows6(), [true; 4]);

    // Again, and meanwhile something else adds a rule to the IPv4 table: release keeps that table
    // (with the rule) and says why; the untouched IPv6 table goes.
    ok(&l.np(&["isolate", "--netns", l.pod.name()]));
    rule(
        &l.pod,
        "iptables-nft",
        &["-A", "INPUT", "-p", "tcp", "--dport", "9", "-j", "ACCEPT"],
    );
    let out = ok(&l.np(&["release", "--netns", l.pod.name()]));
    assert!(
        out.contains(
            "note: the IPv4 filter table was created by the isolation but now also holds a rule in \
             INPUT: left in place"
        ),
        "{out}"
    );
    assert!(out.contains("note: deleted the IPv6 filter table"), "{out}");
    assert_eq!(
        l.saved(),
        "*filter\n:INPUT ACCEPT\n:FORWARD ACCEPT\n:OUTPUT ACCEPT\n-A INPUT -p tcp -m tcp --dport 9 -j ACCEPT\nCOMMIT\n"
    );
    assert_eq!(l.flows(), [true; 5]);
}

/// A fresh pod namespace with no filter table, on a host whose `iptables` is legacy (a directory
/// first in netprobe's `PATH` holds `iptables` → `xtables-legacy-multi`, as
/// `update-alternatives --set iptables iptables-legacy` would): x_tables cannot unload the filter
/// table isolate loaded, so after release `iptables-legacy-save` and `ip6tables-legacy-save` each
/// print exactly an empty filter table with ACCEPT policies, where they printed nothing before,
/// and the release says so. Nothing appears in nf_tables.
#[test]
fn legacy_release_leaves_exactly_an_empty_filter_table_where_there_was_none() {
    use std::os::unix::fs::symlink;
    let l = lab_on("iso7", "legacy", false);
    let before = l.saved();
    assert_eq!(before, "", "the fresh pod has tables");
    let multi = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("iptables-legacy"))
        .find(|p| p.exists())
        .expect("iptables-legacy is not in PATH");
    let multi = std::fs::canonicalize(multi).unwrap();
    let bin = l.dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    symlink(&multi, bin.join("iptables")).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let run = |args: &[&str]| {
        let mut cmd = l.np_command(None, args);
        cmd.env("PATH", &path).env("NETPROBE_LOG", "warn");
        lab::run_bounded(cmd, RUN_LIMIT).unwrap()
    };
    let o = run(&["isolate", "--netns", l.pod.name(), "--json"]);
    let doc = json(&o);
    assert_eq!(code(&o), 0, "{doc:#} {}", text(&o.stderr));
    assert_eq!(doc["backend"], "legacy", "{doc:#}");
    assert_eq!(
        doc["new_tables"],
        serde_json::json!(["ipv4", "ipv6"]),
        "{doc:#}"
    );
    assert_eq!(l.flows(), [false, false, false, false, true]);
    assert_eq!(l.flows6(), [false; 4]);

    let out = ok(&run(&["release", "--netns", l.pod.name()]));
    for (fam, save) in [
        ("IPv4", "iptables-legacy-save"),
        ("IPv6", "ip6tables-legacy-save"),
    ] {
        let want = format!(
            "note: the {fam} filter table did not exist before the isolation, and iptables-legacy \
             (x_tables) cannot unload a table once loaded: it stays, empty, with ACCEPT policies; {save} \
             prints it as `*filter` and three `ACCEPT` policy lines, which it did not before"
        );
        assert!(out.contains(&want), "{want} not in {out}");
    }
    // The only difference from before: the empty table, per family.
    assert_eq!(l.saved(), format!("{before}{EMPTY_FILTER}{EMPTY_FILTER}"));
    assert_eq!(l.pod.exec_ok(&["nft", "list", "ruleset"]).unwrap(), "");
    assert_eq!(l.flows(), [true; 5]);
    assert_eq!(l.flows6(), [true; 4]);
}

/// A Calico-like pod: its only interface has a /32 and a default route via the link-local
/// 169.254.1.1 (onlink); the node's end of the veth has no address and answers ARP by proxy; the
/// node routes the pod's /32 over that veth and has its own address on another interface, towards
/// an upstream namespace that reaches the pod through the node. netprobe runs in the node's
/// namespace: the probe source is the node's own address (what the kubelet's probes come from),
/// never the pod's gateway; the probes pass, the node's other connections and the forwarded
/// client do not. From a namespace with no route to the pod the link-local gateway is refused.
#[test]
fn calico_like_pod_probe_source_is_the_nodes_own_address() {
    let pod = Netns::new("iso8p").unwrap();
    let node = Netns::new("iso8n").unwrap();
    let up = Netns::new("iso8u").unwrap();
    let cali = Veth::connect_multi(&node, &[], &pod, &["198.51.100.10/32"]).unwrap();
    let _uplink = Veth::connect(&node, "203.0.113.5/24", &up, "203.0.113.1/24").unwrap();
    let (cali_node, cali_pod) = (cali.a_name(), cali.b_name());
    pod.ip(&[
        "route",
        "add",
        "default",
        "via",
        "169.254.1.1",
        "dev",
        cali_pod,
        "onlink",
    ])
    .unwrap();
    node.ip(&["route", "add", "198.51.100.10/32", "dev", cali_node])
        .unwrap();
    node.ip(&["route", "add", "default", "via", "203.0.113.1"])
        .unwrap();
    node.sysctl(&format!("net.ipv4.conf.{cali_node}.proxy_arp"), "1")
        .unwrap();
    node.sysctl("net.ipv4.ip_forward", "1").unwrap();
    up.ip(&["route", "add", "198.51.100.10/32", "via", "203.0.113.5"])
        .unwrap();
    let _servers = [serve(&pod, "0.0.0.0:8080"), serve(&pod, "0.0.0.0:8081")];
    const POD: &str = "198.51.100.10:8080";
    let deadline = Instant::now() + Duration::from_secs(5);
    while !(http_ok(&node, POD) && http_ok(&up, POD)) {
        assert!(
            Instant::now() < deadline,
            "Calico-like pod not reachable after 5 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("pod.yaml");
    std::fs::write(&spec, POD_SPEC).unwrap();
    let spec = spec.to_str().unwrap();
    let db = dir.path().join("history.db");
    let db = db.to_str().unwrap();
    let before = save_of(&pod, "iptables-nft-save") + &save_of(&pod, "ip6tables-nft-save");
    let np_in = |ns: &Netns, args: &[&str]| {
        let mut a = vec![BIN];
        a.extend_from_slice(args);
        in_ns(ns, &a)
    };
    let keep = [
        "isolate",
        "--netns",
        pod.name(),
        "--pod-spec",
        spec,
        "--keep-probes",
        "--db",
        db,
    ];

    // Where there is no route to the pod, only the pod's gateway is left, and it is link-local.
    let nowhere = Netns::new("iso8e").unwrap();
    let o = np_in(&nowhere, &keep);
    assert_eq!(code(&o), 2, "{}{}", text(&o.stdout), text(&o.stderr));
    let err = text(&o.stderr);
    assert!(
        err.contains("this namespace has no route to the pod's 198.51.100.10")
            && err.contains("the pod's default route goes via the link-local 169.254.1.1")
            && err.contains("give --probe-source ADDR"),
        "{err}"
    );

    let o = np_in(&node, &keep);
    let out = ok(&o);
    let want = format!(
        "note: probe source 203.0.113.5: the source address this network namespace (where netprobe runs; \
         the kubelet probes from the node's) picks for the pod's 198.51.100.10 (`ip route get \
         198.51.100.10`: dev {cali_node})"
    );
    assert!(out.contains(&want), "{want} not in {out}");
    // One family only: the pod has no routable IPv6 address.
    assert_eq!(out.matches("note: probe source").count(), 1, "{out}");
    assert!(!out.contains("probe source 169.254.1.1"), "{out}");
    assert!(http_ok(&node, POD), "the kubelet's httpGet probe failed");
    assert!(
        connect(&node, POD).is_some(),
        "the kubelet's tcpSocket probe failed"
    );
    assert!(
        connect(&node, "198.51.100.10:8081").is_none(),
        "another port from the node passed"
    );
    assert!(!http_ok(&up, POD), "the forwarded client passed");

    let o = np_in(&node, &["release", "--netns", pod.name(), "--db", db]);
    ok(&o);
    let after = save_of(&pod, "iptables-nft-save") + &save_of(&pod, "ip6tables-nft-save");
    assert_eq!(after, before);
    assert!(http_ok(&node, POD) && http_ok(&up, POD));
    assert!(connect(&node, "198.51.100.10:8081").is_some());
}
