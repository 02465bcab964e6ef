//! `netprobe trace --live` through the real binary against real kernels: rules installed with
//! iptables-legacy, iptables-nft and both at once, an ipset, in lab network namespaces entered by
//! name (`--netns`) and through a process inside (`--pid`); the verdict and the deciding rule
//! (backend, table, chain, rule number) are read from `--json`. Needs root, iproute2, iptables
//! (both backends), nftables and ipset: fails, never skips, where they are missing.
#![allow(
    clippy::unwrap_used,
    reason = "in a test a panic is the failure report"
)]

use std::path::PathBuf;
use std::process::{Command, Output};

use lab::Netns;
use serde_json::Value;

fn netprobe(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_netprobe"))
        .args(args)
        .env("NETPROBE_LOG", "warn")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}{}", text(&o.stdout), text(&o.stderr)))
}

/// A namespace with a veth pair `v0`–`v1` (both ends inside, up) and on `v0` 198.51.100.1/24,
/// 203.0.113.1/24 and fd00::1/64, so that the documentation ranges have a connected route.
fn lab_host() -> Netns {
    let ns = Netns::new("nptlive").unwrap();
    ns.ip(&["link", "add", "v0", "type", "veth", "peer", "name", "v1"])
        .unwrap();
    for dev in ["v0", "v1"] {
        ns.ip(&["link", "set", dev, "up"]).unwrap();
    }
    for a in ["198.51.100.1/24", "203.0.113.1/24"] {
        ns.ip(&["addr", "add", a, "dev", "v0"]).unwrap();
    }
    ns.ip(&["-6", "addr", "add", "fd00::1/64", "dev", "v0", "nodad"])
        .unwrap();
    ns
}

/// Runs one iptables-family command inside `ns` (waiting for the xtables lock).
fn rule(ns: &Netns, tool: &str, args: &str) {
    let mut argv = vec![tool, "-w"];
    argv.extend(args.split_whitespace());
    ns.exec_ok(&argv).unwrap();
}

fn trace_in(target: &[&str], proto: &str, to: &str) -> Output {
    let mut args = vec!["trace", "--live"];
    args.extend_from_slice(target);
    args.extend(["--proto", proto, "--to", to, "--json"]);
    netprobe(&args)
}

/// Asserts the JSON verdict and the deciding rule `(backend, family, table, chain, rule)`.
fn assert_decided(o: &Output, verdict: &str, by: (&str, &str, &str, &str, u64)) {
    let v = json(o);
    assert_eq!(v["verdict"], verdict, "{v:#}");
    let d = &v["decided_by"];
    let got = (
        d["backend"].as_str(),
        d["family"].as_str(),
        d["table"].as_str(),
        d["chain"].as_str(),
        d["rule"].as_u64(),
    );
    assert_eq!(
        got,
        (Some(by.0), Some(by.1), Some(by.2), Some(by.3), Some(by.4)),
        "{v:#}"
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
}

fn source<'v>(v: &'v Value, name: &str) -> &'v Value {
    v["live"]["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["source"] == name)
        .unwrap_or_else(|| panic!("no source {name}: {v:#}"))
}

#[test]
fn legacy_rules_in_a_named_namespace() {
    let ns = lab_host();
    rule(
        &ns,
        "iptables-legacy",
        "-A OUTPUT -p tcp --dport 22 -j ACCEPT",
    );
    rule(
        &ns,
        "iptables-legacy",
        "-A OUTPUT -p tcp --dport 81 -j DROP",
    );
    let target = ["--netns", ns.name()];
    let o = trace_in(&target, "tcp", "198.51.100.20:81");
    assert_decided(&o, "drop", ("legacy", "ipv4", "filter", "OUTPUT", 2));
    let v = json(&o);
    // Source address and output device from the kernel's route in that namespace.
    assert_eq!(v["flow"]["src"], "198.51.100.1", "{v:#}");
    assert_eq!(v["flow"]["out_iface"], "v0", "{v:#}");
    assert_eq!(v["live"]["route"]["route"]["dev"], "v0");
    assert_eq!(v["live"]["netns"]["kind"], "named");
    assert_eq!(v["live"]["netns"]["name"], ns.name());
    assert_eq!(source(&v, "iptables-legacy-save")["status"], "ok");
    assert_eq!(source(&v, "iptables-legacy-save")["tables"][0], "filter");
    assert_eq!(
        source(&v, "iptables-nft-save")["tables"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    assert_eq!(source(&v, "nft -j list ruleset")["evaluated"], true);
    assert_eq!(
        source(&v, "nft -j list ruleset")["native_tables"],
        serde_json::json!([])
    );

    let o = trace_in(&target, "tcp", "198.51.100.20:80");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stdout));
    assert_eq!(json(&o)["verdict"], "accept");

    // A --from that is not local: the kernel refuses the route, which is a warning.
    let o = trace_in(
        &["--netns", ns.name(), "--from", "192.0.2.99"],
        "tcp",
        "198.51.100.20:81",
    );
    let v = json(&o);
    assert_eq!(v["live"]["route"]["result"]["status"], "failed", "{v:#}");
    let warnings = v["live"]["warnings"].as_array().unwrap();
    assert!(
        warnings
            .iter()
            .any(|w| w.as_str().unwrap().contains("no route for this packet")),
        "{v:#}"
    );

    // Without --netns/--pid: the namespace netprobe runs in (here started inside the lab one).
    let o = ns
        .exec(&[
            env!("CARGO_BIN_EXE_netprobe"),
            "trace",
            "--live",
            "--proto",
            "tcp",
            "--to",
            "198.51.100.20:81",
            "--json",
        ])
        .unwrap();
    assert_decided(&o, "drop", ("legacy", "ipv4", "filter", "OUTPUT", 2));
    assert_eq!(json(&o)["live"]["netns"]["kind"], "current");

    // The human form says where the rules came from before the story.
    let o = netprobe(&[
        "trace",
        "--live",
        "--netns",
        ns.name(),
        "--proto",
        "tcp",
        "--to",
        "198.51.100.20:81",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let out = text(&o.stdout);
    assert!(
        out.starts_with(&format!(
            "collected live from the network namespace {}\n",
            ns.name()
        )),
        "{out}"
    );
    assert!(
        out.contains("tcp 198.51.100.1 -> 198.51.100.20:81, sent by a local process"),
        "{out}"
    );
    assert!(
        out.trim_end()
            .ends_with("verdict: DROP by legacy ipv4 filter OUTPUT rule 2"),
        "{out}"
    );
}

#[test]
fn nft_backend_rules_in_a_user_chain() {
    let ns = lab_host();
    rule(&ns, "iptables-nft", "-N PROBE");
    rule(&ns, "iptables-nft", "-A OUTPUT -o v0 -j PROBE");
    rule(&ns, "iptables-nft", "-A PROBE -p udp --dport 53 -j ACCEPT");
    rule(&ns, "iptables-nft", "-A PROBE -p tcp --dport 443 -j REJECT");
    let o = trace_in(&["--netns", ns.name()], "tcp", "203.0.113.9:443");
    assert_decided(&o, "reject", ("nft", "ipv4", "filter", "PROBE", 2));
    let v = json(&o);
    assert_eq!(v["reject_with"], "icmp-port-unreachable", "{v:#}");
    assert_eq!(v["flow"]["src"], "203.0.113.1");
    // iptables-nft's own tables are not "native" nftables.
    let nft = source(&v, "nft -j list ruleset");
    assert_eq!(nft["status"], "ok");
    assert_eq!(nft["native_tables"].as_array().unwrap().len(), 0, "{v:#}");
    assert_eq!(v["live"]["warnings"].as_array().unwrap().len(), 0, "{v:#}");
}

#[test]
fn both_backends_and_both_families_at_once() {
    let ns = lab_host();
    rule(
        &ns,
        "iptables-legacy",
        "-A OUTPUT -p tcp --dport 81 -j DROP",
    );
    rule(&ns, "iptables-nft", "-A OUTPUT -p tcp --dport 82 -j DROP");
    rule(&ns, "ip6tables-nft", "-A OUTPUT -p tcp --dport 84 -j DROP");
    rule(
        &ns,
        "ip6tables-legacy",
        "-A OUTPUT -p tcp --dport 85 -j DROP",
    );
    let target = ["--netns", ns.name()];
    let o = trace_in(&target, "tcp", "198.51.100.20:81");
    assert_decided(&o, "drop", ("legacy", "ipv4", "filter", "OUTPUT", 1));
    let o = trace_in(&target, "tcp", "198.51.100.20:82");
    assert_decided(&o, "drop", ("nft", "ipv4", "filter", "OUTPUT", 1));
    let o = trace_in(&target, "tcp", "[fd00::20]:84");
    assert_decided(&o, "drop", ("nft", "ipv6", "filter", "OUTPUT", 1));
    assert_eq!(json(&o)["flow"]["src"], "fd00::1");
    let o = trace_in(&target, "tcp", "[fd00::20]:85");
    assert_decided(&o, "drop", ("legacy", "ipv6", "filter", "OUTPUT", 1));
    // Both backends' OUTPUT chains are crossed when neither drops.
    let o = trace_in(&target, "tcp", "198.51.100.20:83");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stdout));
    let v = json(&o);
    let backends: Vec<&str> = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["chain"] == "OUTPUT")
        .filter_map(|s| s["backend"].as_str())
        .collect();
    assert!(
        backends.contains(&"legacy") && backends.contains(&"nft"),
        "{v:#}"
    );
}

/// The ipset as collected live, entered through a process inside the namespace; and the same
/// answer from the dumps as files (`--rules` + `--ipset`).
#[test]
fn ipset_through_a_pid_and_from_files() {
    let ns = lab_host();
    ns.exec_ok(&["ipset", "create", "blocked", "hash:net", "family", "inet"])
        .unwrap();
    ns.exec_ok(&["ipset", "add", "blocked", "203.0.113.0/24"])
        .unwrap();
    ns.exec_ok(&["ipset", "add", "blocked", "203.0.113.128/25", "nomatch"])
        .unwrap();
    rule(&ns, "iptables-legacy", "-A OUTPUT -o lo -j ACCEPT");
    rule(
        &ns,
        "iptables-legacy",
        "-A OUTPUT -m set --match-set blocked dst -j DROP",
    );
    let sleeper = ns.spawn(&["sleep", "120"]).unwrap();
    let pid = sleeper.id().to_string();
    let target = ["--pid", pid.as_str()];
    let o = trace_in(&target, "tcp", "203.0.113.9:80");
    assert_decided(&o, "drop", ("legacy", "ipv4", "filter", "OUTPUT", 2));
    let v = json(&o);
    assert_eq!(v["live"]["netns"]["kind"], "pid");
    assert_eq!(
        v["live"]["netns"]["pid"].as_u64(),
        Some(u64::from(sleeper.id()))
    );
    assert_eq!(source(&v, "ipset save")["sets"][0], "blocked");
    // In the nomatch half: not in the set.
    let o = trace_in(&target, "tcp", "203.0.113.200:80");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stdout));

    let dir = tempfile::tempdir().unwrap();
    let rules: PathBuf = dir.path().join("rules.txt");
    let sets: PathBuf = dir.path().join("ipset.txt");
    std::fs::write(&rules, ns.exec_ok(&["iptables-legacy-save"]).unwrap()).unwrap();
    std::fs::write(&sets, ns.exec_ok(&["ipset", "save"]).unwrap()).unwrap();
    let files = |to: &str| {
        netprobe(&[
            "trace",
            "--rules",
            rules.to_str().unwrap(),
            "--ipset",
            sets.to_str().unwrap(),
            "--proto",
            "tcp",
            "--from",
            "203.0.113.1",
            "--out",
            "v0",
            "--to",
            to,
            "--json",
        ])
    };
    assert_decided(
        &files("203.0.113.9:80"),
        "drop",
        ("legacy", "ipv4", "filter", "OUTPUT", 2),
    );
    assert_eq!(files("203.0.113.200:80").status.code(), Some(0));
    // Without the contents the set match is undetermined, never a guess.
    let o = netprobe(&[
        "trace",
        "--rules",
        rules.to_str().unwrap(),
        "--proto",
        "tcp",
        "--from",
        "203.0.113.1",
        "--out",
        "v0",
        "--to",
        "203.0.113.9:80",
        "--json",
    ]);
    assert_eq!(json(&o)["verdict"], "undetermined");
}

/// Where to find `name` in this process's `PATH`.
fn which(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("{name} is not installed (needed by this test)"))
}

/// A `PATH` holding only `ip` and `iptables-legacy-save`: nft, ipset and the nft-backend tools
/// are then missing, which is reported per source and is not an error.
#[test]
fn missing_tools_are_reported_not_fatal() {
    let ns = lab_host();
    rule(
        &ns,
        "iptables-legacy",
        "-A OUTPUT -p tcp --dport 81 -j DROP",
    );
    let bin = tempfile::tempdir().unwrap();
    for tool in ["ip", "iptables-legacy-save"] {
        std::os::unix::fs::symlink(which(tool), bin.path().join(tool)).unwrap();
    }
    let o = Command::new(env!("CARGO_BIN_EXE_netprobe"))
        .args([
            "trace",
            "--live",
            "--netns",
            ns.name(),
            "--proto",
            "tcp",
            "--to",
            "198.51.100.20:81",
            "--json",
        ])
        .env("PATH", bin.path())
        .env("NETPROBE_LOG", "warn")
        .output()
        .unwrap();
    assert_decided(&o, "drop", ("legacy", "ipv4", "filter", "OUTPUT", 1));
    let v = json(&o);
    for missing in [
        "iptables-nft-save",
        "ip6tables-legacy-save",
        "ip6tables-nft-save",
        "nft -j list ruleset",
        "ipset save",
    ] {
        assert_eq!(source(&v, missing)["status"], "missing", "{missing}: {v:#}");
    }
    assert_eq!(source(&v, "iptables-legacy-save")["status"], "ok");
}

#[test]
fn missing_namespace_or_pid_exits_2_with_a_clear_message() {
    let name = format!("nptlive-absent-{}", std::process::id());
    let o = trace_in(&["--netns", &name], "tcp", "198.51.100.20:80");
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stdout));
    let msg = json(&o)["error"]["message"].as_str().unwrap().to_string();
    assert!(
        msg.contains(&format!("no network namespace named {name}")),
        "{msg}"
    );
    // Above the largest pid_max (2^22): no such process can exist.
    let o = netprobe(&[
        "trace",
        "--live",
        "--pid",
        "4194305",
        "--proto",
        "tcp",
        "--to",
        "198.51.100.20:80",
    ]);
    assert_eq!(o.status.code(), Some(2));
    let err = text(&o.stderr);
    assert!(err.contains("no process with pid 4194305"), "{err}");
    // Option misuse is a usage error too.
    for args in [
        &[
            "trace",
            "--netns",
            "x",
            "--proto",
            "tcp",
            "--to",
            "198.51.100.20:80",
            "--from",
            "198.51.100.1",
        ][..],
        &[
            "trace",
            "--live",
            "--rules",
            "/dev/null",
            "--proto",
            "tcp",
            "--to",
            "198.51.100.20:80",
        ][..],
        &[
            "trace",
            "--live",
            "--netns",
            "x",
            "--pid",
            "1",
            "--proto",
            "tcp",
            "--to",
            "198.51.100.20:80",
        ][..],
        &[
            "trace",
            "--proto",
            "tcp",
            "--to",
            "198.51.100.20:80",
            "--rules",
            "/dev/null",
        ][..],
    ] {
        let o = netprobe(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
    }
}

/// A published port (DNAT in PREROUTING) re-routed to a bridge: the namespace's own routing
/// table gives the output interface FORWARD's `-o` matches, so the verdict is decided.
#[test]
fn dnat_is_rerouted_through_the_namespaces_routing_table() {
    let ns = lab_host();
    // No dummy driver in every kernel: a veth pair stands in for the bridge.
    ns.ip(&["link", "add", "br9", "type", "veth", "peer", "name", "br9p"])
        .unwrap();
    for dev in ["br9", "br9p"] {
        ns.ip(&["link", "set", dev, "up"]).unwrap();
    }
    ns.ip(&["addr", "add", "192.0.2.1/24", "dev", "br9"])
        .unwrap();
    rule(
        &ns,
        "iptables-legacy",
        "-t nat -A PREROUTING -d 198.51.100.1/32 -p tcp --dport 8080 -j DNAT --to-destination 192.0.2.2:80",
    );
    rule(&ns, "iptables-legacy", "-P FORWARD DROP");
    rule(
        &ns,
        "iptables-legacy",
        "-A FORWARD -o br9 -p tcp --dport 80 -j ACCEPT",
    );
    let args = [
        "trace",
        "--live",
        "--netns",
        ns.name(),
        "--path",
        "input",
        "--in",
        "v1",
        "--proto",
        "tcp",
        "--from",
        "203.0.113.50",
        "--to",
        "198.51.100.1:8080",
        "--json",
    ];
    let o = netprobe(&args);
    let v = json(&o);
    assert_eq!(v["verdict"], "accept", "{v:#}");
    assert_eq!(v["nat"][0]["kind"], "dnat", "{v:#}");
    assert_eq!(v["nat"][0]["to"]["addr"], "192.0.2.2", "{v:#}");
    let accepted = v["steps"].as_array().unwrap().iter().any(|s| {
        s["hook"] == "FORWARD" && s["chain"] == "FORWARD" && s["rule"] == 1 && s["matched"] == true
    });
    assert!(accepted, "FORWARD rule 1 (-o br9) matched: {v:#}");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));

    // Without the route to 192.0.2.0/24 the output interface is unknown: undetermined, not a guess.
    ns.ip(&["addr", "del", "192.0.2.1/24", "dev", "br9"])
        .unwrap();
    let v = json(&netprobe(&args));
    assert_eq!(v["verdict"], "undetermined", "{v:#}");
}

/// A native nftables table (firewalld-style `inet`) next to iptables-nft rules: `nft -j list
/// ruleset` is parsed, the native rule decides, and iptables-nft's own table is not counted twice.
#[test]
fn native_nftables_table_is_evaluated_live() {
    let ns = lab_host();
    rule(&ns, "iptables-nft", "-A OUTPUT -p tcp --dport 22 -j ACCEPT");
    for cmd in [
        "add table inet fw",
        "add chain inet fw out { type filter hook output priority 10; policy accept; }",
        "add rule inet fw out tcp dport 81 counter drop comment \"no port 81\"",
    ] {
        ns.exec_ok(&["nft", cmd]).unwrap();
    }
    let o = trace_in(&["--netns", ns.name()], "tcp", "198.51.100.20:81");
    assert_decided(&o, "drop", ("nftables", "inet", "fw", "out", 1));
    let v = json(&o);
    assert_eq!(v["decided_by"]["comment"], "no port 81", "{v:#}");
    let nft = source(&v, "nft -j list ruleset");
    assert_eq!(nft["evaluated"], true, "{v:#}");
    assert_eq!(nft["native_tables"][0], "inet fw", "{v:#}");
    assert_eq!(nft["iptables_nft_tables"][0], "ip filter", "{v:#}");
    // Port 22: iptables-nft accepts, the native chain lets it through too.
    let o = trace_in(&["--netns", ns.name()], "tcp", "198.51.100.20:22");
    assert_eq!(json(&o)["verdict"], "accept");
}
