//! The `trace` and `rules check` contract, through the real binary: JSON shape, the human story,
//! and exit codes (trace: 0 accept, 1 drop/reject/undetermined; rules check: 0 clean, 1 finding;
//! both 2 on bad input).
#![allow(
    clippy::unwrap_used,
    reason = "in a test a panic is the failure report"
)]

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

fn netprobe(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_netprobe"))
        .args(args)
        .env("NETPROBE_LOG", "warn")
        .output()
        .unwrap()
}

fn path(parts: &[&str]) -> String {
    let mut p = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    p.extend(parts);
    p.display().to_string()
}

/// kube-proxy (iptables mode) and kubelet rules as iptables-save v1.8.9 printed them (legacy).
fn kube_dump() -> String {
    path(&[
        "..",
        "netfilter",
        "tests",
        "fixtures",
        "kube-proxy-legacy.txt",
    ])
}

fn fixture(name: &str) -> String {
    path(&["tests", "fixtures", "trace", name])
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}{}", text(&o.stdout), text(&o.stderr)))
}

fn health_check(from: &str, extra: &[&str]) -> Output {
    let dump = kube_dump();
    let mut args = vec![
        "trace",
        "--rules",
        &dump,
        "--from",
        from,
        "--to",
        "127.0.0.1:9099",
        "--proto",
        "tcp",
        "--path",
        "output",
    ];
    args.extend_from_slice(extra);
    netprobe(&args)
}

#[test]
fn kube_firewall_drops_localnet_health_check_from_node_ip() {
    let o = health_check("198.51.100.5", &["--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    let v = json(&o);
    assert_eq!(v["verdict"], "drop");
    let by = &v["decided_by"];
    assert_eq!(by["backend"], "legacy");
    assert_eq!(by["family"], "ipv4");
    assert_eq!(by["table"], "filter");
    assert_eq!(by["chain"], "KUBE-FIREWALL");
    assert_eq!(by["rule"], 1);
    assert_eq!(by["comment"], "block incoming localnet connections");
    assert!(
        by["text"]
            .as_str()
            .unwrap()
            .starts_with("-A KUBE-FIREWALL ! -s 127.0.0.0/8 -d 127.0.0.0/8")
    );
    let steps = v["steps"].as_array().unwrap();
    let last = steps.last().unwrap();
    assert_eq!(
        (
            &last["hook"],
            &last["chain"],
            &last["rule"],
            &last["matched"]
        ),
        (
            &Value::from("OUTPUT"),
            &Value::from("KUBE-FIREWALL"),
            &Value::from(1),
            &Value::from(true)
        )
    );
    assert!(v["nat"].as_array().unwrap().is_empty());
    assert_eq!(v["flow"]["dport"], 9099);
}

#[test]
fn kube_firewall_story_marks_the_deciding_rule_with_its_comment() {
    let o = health_check("198.51.100.5", &[]);
    assert_eq!(o.status.code(), Some(1));
    let out = text(&o.stdout);
    // Not a TTY: no ANSI escapes.
    assert!(!out.contains('\x1b'), "{out}");
    assert!(
        out.starts_with(
            "tcp 198.51.100.5 -> 127.0.0.1:9099, sent by a local process, conntrack NEW\n"
        ),
        "{out}"
    );
    assert!(out.contains("\nOUTPUT\n"), "{out}");
    assert!(out.contains("  legacy filter KUBE-FIREWALL\n"), "{out}");
    let marked: Vec<&str> = out
        .lines()
        .filter(|l| l.trim_start().starts_with(">>"))
        .collect();
    assert_eq!(marked.len(), 1, "{out}");
    assert!(marked[0].contains("-A KUBE-FIREWALL"), "{}", marked[0]);
    assert!(
        marked[0].ends_with("<- block incoming localnet connections"),
        "{}",
        marked[0]
    );
    assert!(out.trim_end().ends_with(
        "verdict: DROP by legacy ipv4 filter KUBE-FIREWALL rule 1 \"block incoming localnet connections\""
    ), "{out}");
}

#[test]
fn loopback_health_check_is_accepted() {
    let o = health_check("127.0.0.1", &["--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let v = json(&o);
    assert_eq!(v["verdict"], "accept");
    assert!(v["decided_by"].is_null());
    // It re-entered through lo: filter INPUT was crossed.
    assert!(
        v["steps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["hook"] == "INPUT" && s["table"] == "filter")
    );
    let o = health_check("127.0.0.1", &[]);
    assert_eq!(o.status.code(), Some(0));
    assert!(text(&o.stdout).trim_end().ends_with("verdict: ACCEPT"));
}

#[test]
fn established_localnet_flow_is_accepted() {
    let o = health_check("198.51.100.5", &["--state", "established", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stdout));
    assert_eq!(json(&o)["verdict"], "accept");
}

#[test]
fn cluster_ip_gives_one_branch_per_endpoint_with_its_dnat() {
    let dump = kube_dump();
    let o = netprobe(&[
        "trace",
        "--rules",
        &dump,
        "--proto",
        "tcp",
        "--from",
        "198.51.100.5",
        "--to",
        "198.51.100.20:80",
        "--local-addr",
        "eth0=198.51.100.5/24",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let v = json(&o);
    assert_eq!(v["verdict"], "accept");
    let branches = v["branches"].as_array().unwrap();
    assert_eq!(branches.len(), 3);
    let mut total = 0.0;
    for (b, ep) in branches
        .iter()
        .zip(["203.0.113.11", "203.0.113.12", "203.0.113.13"])
    {
        assert_eq!(b["verdict"], "accept");
        let dnat = &b["nat"][0];
        assert_eq!(dnat["kind"], "dnat");
        assert_eq!(dnat["to"]["addr"], ep);
        assert_eq!(dnat["to"]["port"], 8080);
        assert_eq!(dnat["from"]["addr"], "198.51.100.20");
        assert!(!b["choices"].as_array().unwrap().is_empty());
        total += b["probability"].as_f64().unwrap();
    }
    assert!((total - 1.0).abs() < 1e-6, "{total}");
}

#[test]
fn restore_payload_missing_kube_mark_drop_is_a_finding() {
    let o = netprobe(&[
        "rules",
        "check",
        "--restore",
        "--json",
        &fixture("missing-mark-drop.restore"),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    let v = json(&o);
    assert_eq!(v["ok"], false);
    let f = v["findings"].as_array().unwrap();
    assert_eq!(f.len(), 1, "{v:#}");
    assert_eq!(f[0]["id"], "missing-chain");
    assert_eq!(f[0]["severity"], "error");
    assert!(
        f[0]["summary"].as_str().unwrap().contains("KUBE-MARK-DROP"),
        "{v:#}"
    );
    assert!(
        f[0]["evidence"][0]
            .as_str()
            .unwrap()
            .contains("rule 1 (line 11): -A KUBE-XLB-ABCDEFGHIJKLMNOP"),
        "{v:#}"
    );
    // The human form names the chain too.
    let o = netprobe(&[
        "rules",
        "check",
        "--restore",
        &fixture("missing-mark-drop.restore"),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stdout).starts_with("error   missing-chain: "),
        "{}",
        text(&o.stdout)
    );
}

#[test]
fn clean_payload_and_clean_dump_exit_0() {
    let o = netprobe(&["rules", "check", "--restore", &fixture("clean.restore")]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stdout));
    assert_eq!(text(&o.stdout), "no findings\n");
    // Only the informational k8s-backend finding.
    let o = netprobe(&["rules", "check", "--json", &kube_dump()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stdout));
    let v = json(&o);
    assert_eq!(v["ok"], true);
    assert_eq!(v["findings"][0]["id"], "k8s-backend");
    assert_eq!(v["findings"][0]["severity"], "info");
}

#[test]
fn shadowed_rule_exits_1() {
    let o = netprobe(&["rules", "check", "--json", &fixture("shadowed.txt")]);
    assert_eq!(o.status.code(), Some(1));
    let v = json(&o);
    assert_eq!(v["findings"][0]["id"], "shadowed-rule");
    assert!(
        v["findings"][0]["evidence"][1]
            .as_str()
            .unwrap()
            .starts_with("nft ipv4 filter INPUT rule 2 (line 7)"),
        "{v:#}"
    );
}

#[test]
fn garbage_input_exits_2_with_the_line() {
    let g = fixture("garbage.txt");
    let o = netprobe(&["rules", "check", &g]);
    assert_eq!(o.status.code(), Some(2));
    let err = text(&o.stderr);
    assert!(err.contains("line 5"), "{err}");
    assert!(err.contains("this is not a rule"), "{err}");
    let o = netprobe(&[
        "trace",
        "--rules",
        &g,
        "--proto",
        "tcp",
        "--from",
        "127.0.0.1",
        "--to",
        "127.0.0.1:80",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(2));
    let v = json(&o);
    assert_eq!(v["error"]["line"], 5);
    assert_eq!(v["error"]["text"], "this is not a rule");
}

#[test]
fn bad_flow_arguments_exit_2() {
    let dump = kube_dump();
    for args in [
        // Families differ.
        &[
            "--from",
            "fd00::1",
            "--to",
            "127.0.0.1:80",
            "--proto",
            "tcp",
        ][..],
        // ICMP has no ports.
        &[
            "--from",
            "127.0.0.1",
            "--to",
            "127.0.0.1:80",
            "--proto",
            "icmp",
        ][..],
        // Unknown protocol name (clap's usage error).
        &[
            "--from",
            "127.0.0.1",
            "--to",
            "127.0.0.1:80",
            "--proto",
            "tcpx",
        ][..],
        // No IPv6 ruleset for an IPv6 flow.
        &[
            "--from",
            "fd00::1",
            "--to",
            "[fd00::2]:80",
            "--proto",
            "tcp",
        ][..],
    ] {
        let mut a = vec!["trace", "--rules", &dump];
        a.extend_from_slice(args);
        let o = netprobe(&a);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o.stdout));
        assert!(!o.stderr.is_empty(), "{args:?}");
    }
    let o = netprobe(&[
        "trace",
        "--rules",
        "/nonexistent/rules.txt",
        "--from",
        "127.0.0.1",
        "--to",
        "127.0.0.1",
        "--proto",
        "icmp",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("cannot read"));
}

/// `--route` gives the output interface after a DNAT re-routes the packet; without it the
/// `-o br9` match cannot be decided and the verdict says so.
#[test]
fn route_flag_decides_the_output_interface_after_dnat() {
    let rules = fixture("published-port.txt");
    let base = [
        "trace",
        "--rules",
        &rules,
        "--path",
        "input",
        "--in",
        "eth0",
        "--proto",
        "tcp",
        "--from",
        "203.0.113.50",
        "--to",
        "198.51.100.1:8080",
        "--local-addr",
        "eth0=198.51.100.1/24",
        "--json",
    ];
    let with_route: Vec<&str> = base
        .iter()
        .copied()
        .chain(["--route", "192.0.2.0/24=br9"])
        .collect();
    let o = netprobe(&with_route);
    let v = json(&o);
    assert_eq!(v["verdict"], "accept", "{v:#}");
    assert_eq!(v["nat"][0]["to"]["addr"], "192.0.2.2", "{v:#}");
    assert_eq!(o.status.code(), Some(0));

    let v = json(&netprobe(&base));
    assert_eq!(v["verdict"], "undetermined", "{v:#}");

    let o = netprobe(&[
        "trace",
        "--rules",
        &rules,
        "--to",
        "192.0.2.2:80",
        "--route",
        "bogus",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("DST=DEV"), "{}", text(&o.stderr));
}

fn nft_fixture(name: &str) -> String {
    path(&["..", "netfilter", "tests", "fixtures", "nft", name])
}

/// `trace --nft-json kube-proxy.json` of a TCP flow from 198.51.100.5 to `to`.
fn nft_trace(to: &str, extra: &[&str]) -> Output {
    let json_file = nft_fixture("kube-proxy.json");
    let mut args = vec!["trace", "--nft-json", &json_file, "--proto", "tcp"];
    args.extend(["--from", "198.51.100.5", "--to", to]);
    args.extend_from_slice(extra);
    netprobe(&args)
}

/// kube-proxy's nftables mode from `nft -j list ruleset`: a ClusterIP flow splits over the two
/// endpoints of the `numgen` map, each DNATed; the firewall map drops 198.51.100.40:443 and the
/// story names the native rule with its nft text.
#[test]
fn nft_json_traces_native_kube_proxy_tables() {
    let v = json(&nft_trace("198.51.100.10:80", &["--json"]));
    let branches = v["branches"].as_array().unwrap_or_else(|| panic!("{v:#}"));
    assert_eq!(branches.len(), 2, "{v:#}");
    let mut to: Vec<&str> = branches
        .iter()
        .map(|b| b["nat"][0]["to"]["addr"].as_str().unwrap())
        .collect();
    to.sort_unstable();
    assert_eq!(to, ["203.0.113.1", "203.0.113.2"]);
    assert_eq!(branches[0]["nat"][0]["rule"]["backend"], "nftables");
    assert_eq!(branches[0]["nat"][0]["rule"]["table"], "kube-proxy");

    let o = nft_trace("198.51.100.40:443", &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    let story = text(&o.stdout);
    assert!(
        story.contains("nftables ipv4 kube-proxy firewall-check rule 1"),
        "{story}"
    );
    assert!(
        story.contains(">>    1  ip daddr . meta l4proto . th dport vmap"),
        "{story}"
    );
}

#[test]
fn nft_json_garbage_exits_2_with_the_json_path() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"nftables": [{"table": {"family": "ip"}}]}"#).unwrap();
    let bad = bad.display().to_string();
    let o = netprobe(&[
        "trace",
        "--nft-json",
        &bad,
        "--proto",
        "tcp",
        "--from",
        "198.51.100.5",
        "--to",
        "198.51.100.10:80",
    ]);
    assert_eq!(o.status.code(), Some(2));
    let err = text(&o.stderr);
    assert!(
        err.contains("bad.json") && err.contains("nftables[0]"),
        "{err}"
    );
}
