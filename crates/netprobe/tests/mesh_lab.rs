//! The node latency mesh in a real multi-node lab: five network namespaces on a bridge (198.51.100.0/24
//! and fd00::/64), each running its own `netprobe run` agent (the real binary, `ip netns exec`) with
//! static discovery, plus a listed peer that does not exist. The test reads every agent's
//! `GET /api/v1/mesh`, checks `/metrics` with `promtool`, then injects loss on one node
//! (`-m statistic --mode random` DROP of echo-requests) and blocks echo-requests on another, and
//! checks that only their pairs change — the blocked node's pairs report loss 1.0 and switch to TCP,
//! and their diagnosis names the blocked node's own INPUT rule (`firewall-drop`, from the far end).
#![allow(
    clippy::unwrap_used,
    reason = "in a test a panic is the failure report"
)]

mod mesh_support;

use std::net::SocketAddr;
use std::process::Stdio;
use std::thread;
use std::time::Duration;

use lab::{Bridge, Netns, Veth};
use mesh_support::{
    Agents, Dnsmasq, agent_command, drop_echo_requests, eventually, get, now_ns, promtool_check,
};
use serde_json::Value;

const NODES: usize = 5;
const PORT: u16 = 8080;

fn v4(i: usize) -> String {
    format!("198.51.100.{}", i + 1)
}

fn v6(i: usize) -> String {
    format!("fd00::{}", i + 1)
}

fn name(i: usize) -> String {
    format!("node-{i}")
}

fn mesh(ns: &Netns, i: usize) -> Value {
    let addr: SocketAddr = format!("{}:{PORT}", v4(i)).parse().unwrap();
    let (status, body) = get(ns, addr, "/api/v1/mesh");
    if status != 200 {
        return Value::Null;
    }
    serde_json::from_str(&body).unwrap_or(Value::Null)
}

fn rounds_since(
    ns: &Netns,
    from: usize,
    peer: &str,
    ip: &str,
    since_ns: i64,
) -> Vec<(String, u64, u64)> {
    let addr: SocketAddr = format!("{}:{PORT}", v4(from)).parse().unwrap();
    let (status, body) = get(ns, addr, &format!("/api/v1/mesh/{peer}/history?limit=1000"));
    assert_eq!(status, 200, "history of {peer} from node {from}: {body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let addrs = v["addresses"].as_array().unwrap();
    let a = addrs
        .iter()
        .find(|a| a["target_ip"] == ip)
        .unwrap_or_else(|| panic!("no {ip} in {v}"));
    a["rounds"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["started_ns"].as_i64().unwrap() > since_ns)
        .map(|r| {
            (
                r["protocol"].as_str().unwrap().to_owned(),
                r["sent"].as_u64().unwrap(),
                r["received"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn loss(rounds: &[(String, u64, u64)], protocol: &str) -> (f64, u64) {
    let (mut sent, mut recv) = (0, 0);
    for (p, s, r) in rounds {
        if p == protocol {
            sent += s;
            recv += r;
        }
    }
    (1.0 - recv as f64 / sent.max(1) as f64, sent)
}

#[test]
fn five_agents_on_a_bridge_measure_every_pair_and_see_injected_loss_and_blocks() {
    let switch = Bridge::new("npmeshsw").unwrap();
    let nodes: Vec<Netns> = (0..NODES).map(|_| Netns::new("npmesh").unwrap()).collect();
    let mut veths = Vec::new();
    for (i, ns) in nodes.iter().enumerate() {
        let a4 = format!("{}/24", v4(i));
        let a6 = format!("{}/64", v6(i));
        veths.push(switch.attach(ns, &[&a4, &a6]).unwrap());
    }

    let dir = tempfile::tempdir().unwrap();
    let mut peers = String::new();
    for i in 0..NODES {
        peers.push_str(&format!(
            "      - {{ name: {}, addresses: [\"{}\", \"{}\"] }}\n",
            name(i),
            v4(i),
            v6(i)
        ));
    }
    // A peer that does not exist: the agents must keep running and report it unreachable.
    peers.push_str("      - { name: ghost, addresses: [\"198.51.100.99\"] }\n");
    let mut agents = Agents(Vec::new());
    for (i, ns) in nodes.iter().enumerate() {
        let cfg = dir.path().join(format!("node{i}.yaml"));
        std::fs::write(
            &cfg,
            format!(
                r#"
storage: {{ path: "{db}" }}
mesh:
  node_name: "${{NODE_NAME}}"
  interval: "1s"
  packets: 5
  protocols: [icmp, tcp]
  discovery:
    static:
{peers}"#,
                db = dir.path().join(format!("node{i}.db")).display()
            ),
        )
        .unwrap();
        let mut cmd = agent_command(ns, &cfg, &format!("[::]:{PORT}"));
        agents
            .0
            .push(cmd.env("NODE_NAME", name(i)).spawn().unwrap());
    }

    // 1. Convergence: every agent has all 4 peers × 2 families plus the ghost, RTT plausible, loss 0.
    for (i, ns) in nodes.iter().enumerate() {
        let view = eventually(20, &format!("node {i}'s matrix"), || {
            let v = mesh(ns, i);
            let pairs = v["pairs"].as_array().ok_or("no pairs yet")?;
            if pairs.len() != 2 * (NODES - 1) + 1 {
                return Err(format!("{} pairs", pairs.len()));
            }
            for p in pairs {
                if p["latest"].is_null() {
                    return Err(format!("no round yet for {p}"));
                }
            }
            Ok(v)
        });
        assert_eq!(view["node"], name(i));
        assert_eq!(view["status"]["full_mesh"], true);
        assert_eq!(view["status"]["observers"], NODES);
        for p in view["pairs"].as_array().unwrap() {
            let l = &p["latest"];
            if p["target_node"] == "ghost" {
                assert_eq!(l["loss_ratio"], 1.0, "{p}");
                assert_eq!(l["received"], 0, "{p}");
                continue;
            }
            assert_ne!(p["target_node"], name(i), "an agent must not probe itself");
            assert_eq!(l["protocol"], "icmp", "{p}");
            assert_eq!(l["sent"], 5, "{p}");
            assert_eq!(l["loss_ratio"], 0.0, "{p}");
            let avg = l["rtt_avg"].as_f64().unwrap();
            assert!(avg > 0.0 && avg < 0.05, "implausible RTT {avg}s: {p}");
            assert!(l["rtt_p99"].as_f64().unwrap() >= l["rtt_p50"].as_f64().unwrap());
            assert!(
                l["last_receive_ns"].as_i64().unwrap()
                    > l["last_send_ns"].as_i64().unwrap() - 1_000_000_000
            );
        }
    }

    // Metrics: the mesh families with their labels, accepted by promtool.
    let (status, metrics) = get(
        &nodes[0],
        format!("{}:{PORT}", v4(0)).parse().unwrap(),
        "/metrics",
    );
    assert_eq!(status, 200);
    promtool_check(&metrics);
    for want in [
        "netprobe_mesh_rtt_seconds_bucket{",
        r#"source_node="node-0",target_node="node-1",target_ip="fd00::2",family="ipv6",protocol="icmp""#,
        r#"netprobe_mesh_loss_ratio{source_node="node-0",target_node="node-2",target_ip="198.51.100.3",family="ipv4",protocol="icmp"} 0"#,
        "netprobe_mesh_peers 9",
        "netprobe_mesh_observers 5",
    ] {
        assert!(metrics.contains(want), "{want} missing from:\n{metrics}");
    }

    // 2. 30% of echo-requests to node 2 (IPv4) dropped at random: its IPv4 pairs only.
    let lossy = 2;
    nodes[lossy]
        .exec_ok(&[
            "iptables",
            "-A",
            "INPUT",
            "-p",
            "icmp",
            "--icmp-type",
            "echo-request",
            "-m",
            "statistic",
            "--mode",
            "random",
            "--probability",
            "0.3",
            "-j",
            "DROP",
        ])
        .unwrap();
    // 3. Node 4 drops every echo-request, both families: its pairs lose everything over ICMP
    // and switch to TCP connects to its agent port, which still answer.
    let blocked = 4;
    drop_echo_requests(&nodes[blocked], "iptables");
    drop_echo_requests(&nodes[blocked], "ip6tables");
    let since = now_ns() + 100_000_000;
    thread::sleep(Duration::from_secs(9));

    let observer = 0;
    let ns = &nodes[observer];
    let r = rounds_since(ns, observer, &name(lossy), &v4(lossy), since);
    let (l, sent) = loss(&r, "icmp");
    assert!(sent >= 30, "too few echoes to node {lossy}: {r:?}");
    // Binomial(≥ 30, 0.3): outside 0.05–0.65 with probability below 1e-4, so this does not flake,
    // and it still tells 30 % from none and from all.
    assert!(
        (0.05..=0.65).contains(&l),
        "loss to the lossy node {l} not ~0.3: {r:?}"
    );
    let r = rounds_since(ns, observer, &name(lossy), &v6(lossy), since);
    assert_eq!(
        loss(&r, "icmp").0,
        0.0,
        "IPv6 to node {lossy} was not touched: {r:?}"
    );
    for clean in [1, 3] {
        for ip in [v4(clean), v6(clean)] {
            let r = rounds_since(ns, observer, &name(clean), &ip, since);
            let (l, sent) = loss(&r, "icmp");
            assert!(sent >= 30 && l == 0.0, "pair to {ip} must be clean: {r:?}");
        }
    }
    for ip in [v4(blocked), v6(blocked)] {
        let r = rounds_since(ns, observer, &name(blocked), &ip, since);
        let (icmp_loss, icmp_sent) = loss(&r, "icmp");
        assert!(
            icmp_sent >= 5 && icmp_loss == 1.0,
            "ICMP to {ip} must be lost: {r:?}"
        );
        let (tcp_loss, tcp_sent) = loss(&r, "tcp");
        assert!(
            tcp_sent >= 15 && tcp_loss == 0.0,
            "TCP fallback to {ip}: {r:?}"
        );
    }
    // TCP rounds say why they are not ICMP.
    let addr: SocketAddr = format!("{}:{PORT}", v4(observer)).parse().unwrap();
    let (_, body) = get(ns, addr, &format!("/api/v1/mesh/{}/history", name(blocked)));
    let h: Value = serde_json::from_str(&body).unwrap();
    let tcp_rounds: Vec<&Value> = h["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|a| a["rounds"].as_array().unwrap())
        .filter(|r| r["protocol"] == "tcp")
        .collect();
    assert!(!tcp_rounds.is_empty(), "{h}");
    for r in tcp_rounds {
        assert_eq!(r["fallback_reason"], "timeout", "{r}");
    }
    // The pair that lost everything was handed to the automatic diagnosis like a failing check.
    let diag_check = format!("mesh.{}.{}", name(blocked), v4(blocked));
    eventually(30, "a diagnosis of the blocked pair", || {
        let (_, m) = get(ns, format!("{}:{PORT}", v4(0)).parse().unwrap(), "/metrics");
        let want = format!("netprobe_diagnoses_total{{check=\"{diag_check}\"");
        if m.contains(&want) {
            Ok(())
        } else {
            Err(format!("{want} not in /metrics yet"))
        }
    });
    // Two-ended: the observer drops nothing itself; the far end names its own INPUT rule.
    let (status, body) = get(
        ns,
        format!("{}:{PORT}", v4(0)).parse().unwrap(),
        &format!("/api/v1/checks/{diag_check}/diagnosis"),
    );
    assert_eq!(status, 200, "{body}");
    let d: Value = serde_json::from_str(&body).unwrap();
    let d = &d["diagnosis"];
    let ids = |findings: &Value| -> Vec<String> {
        findings
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert!(
        !ids(&d["findings"]).contains(&"firewall-drop".to_owned()),
        "{d}"
    );
    assert_eq!(d["far_end"]["status"], "answered", "{d}");
    assert_eq!(
        ids(&d["far_end"]["diagnosis"]["findings"]),
        ["firewall-drop"],
        "{d}"
    );
    assert!(
        d["far_end"]["diagnosis"]["findings"][0]["evidence"][0]
            .as_str()
            .unwrap()
            .contains("chain INPUT rule 1: -A INPUT -p icmp"),
        "{d}"
    );
    let (_, metrics) = get(ns, format!("{}:{PORT}", v4(0)).parse().unwrap(), "/metrics");
    let want = format!(
        r#"netprobe_mesh_loss_ratio{{source_node="node-0",target_node="node-4",target_ip="{}",family="ipv4",protocol="icmp"}} 1"#,
        v4(blocked)
    );
    assert!(metrics.contains(&want), "{want} missing");
    promtool_check(&metrics);

    // Every agent is still alive (the ghost and the blocks did not stop anything).
    for (i, c) in agents.0.iter_mut().enumerate() {
        assert!(c.try_wait().unwrap().is_none(), "agent {i} exited");
    }
    drop(agents);
    drop(veths);
}

#[test]
fn three_agents_discover_each_other_through_a_real_dnsmasq_and_survive_its_outage() {
    const DNS_NODES: usize = 3;
    let ip = |i: usize| format!("203.0.113.{}", i + 1);
    let switch = Bridge::new("npmdnssw").unwrap();
    let dns_ns = Netns::new("npmdns").unwrap();
    let nodes: Vec<Netns> = (0..DNS_NODES)
        .map(|_| Netns::new("npmdnsn").unwrap())
        .collect();
    let mut veths = Vec::new();
    for (ns, addr) in nodes
        .iter()
        .enumerate()
        .map(|(i, ns)| (ns, format!("{}/24", ip(i))))
        .chain(std::iter::once((&dns_ns, "203.0.113.53/24".to_owned())))
    {
        veths.push(switch.attach(ns, &[&addr]).unwrap());
    }
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    let mut text = String::new();
    for i in 0..DNS_NODES {
        text.push_str(&format!("{} mesh.netprobe.test\n", ip(i)));
    }
    std::fs::write(&hosts, text).unwrap();
    let dnsmasq = dns_ns
        .command(&[
            "dnsmasq",
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            // Authoritative for the test domain: AAAA gets an empty NOERROR, not REFUSED.
            "--local=/netprobe.test/",
            "--no-resolv",
            "--no-hosts",
            "--user=root",
            "--pid-file",
            "--port=53",
            "--listen-address=203.0.113.53",
            "--bind-interfaces",
        ])
        .arg(format!("--addn-hosts={}", hosts.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("dnsmasq must be installed (Debian package dnsmasq); .ci/run installs it");
    let mut dnsmasq = Dnsmasq(dnsmasq);

    let mut agents = Agents(Vec::new());
    for (i, ns) in nodes.iter().enumerate() {
        let cfg = dir.path().join(format!("dns{i}.yaml"));
        std::fs::write(
            &cfg,
            format!(
                r#"
storage: {{ path: "{db}" }}
mesh:
  node_name: "dns-node-{i}"
  interval: "1s"
  packets: 3
  discovery:
    dns: {{ name: "mesh.netprobe.test", server: "203.0.113.53:53", refresh: "1s" }}
"#,
                db = dir.path().join(format!("dns{i}.db")).display()
            ),
        )
        .unwrap();
        let listen = format!("{}:{PORT}", ip(i));
        agents
            .0
            .push(agent_command(ns, &cfg, &listen).spawn().unwrap());
    }
    let view = |i: usize| -> Value {
        let addr: SocketAddr = format!("{}:{PORT}", ip(i)).parse().unwrap();
        let (status, body) = get(&nodes[i], addr, "/api/v1/mesh");
        if status != 200 {
            return Value::Null;
        }
        serde_json::from_str(&body).unwrap_or(Value::Null)
    };
    for i in 0..DNS_NODES {
        eventually(20, &format!("dns node {i}'s matrix"), || {
            let v = view(i);
            let pairs = v["pairs"].as_array().ok_or("no pairs yet")?;
            let mut peers: Vec<&str> = pairs
                .iter()
                .map(|p| p["target_node"].as_str().unwrap_or(""))
                .collect();
            peers.sort();
            let want: Vec<String> = (0..DNS_NODES).filter(|j| *j != i).map(ip).collect();
            if peers != want {
                return Err(format!("peers {peers:?}, want {want:?}"));
            }
            for p in pairs {
                let l = &p["latest"];
                if l.is_null() {
                    return Err("no round yet".into());
                }
                if l["loss_ratio"] != 0.0 || l["sent"] != 3 {
                    return Err(format!("lossy round {p}"));
                }
            }
            Ok(())
        });
    }
    // DNS goes away: the agents keep their peers, keep probing and report the failure.
    let _ = dnsmasq.0.kill();
    let _ = dnsmasq.0.wait();
    let since = now_ns();
    assert_eq!(view(0)["status"]["discovery_errors"], serde_json::json!([]));
    eventually(15, "the DNS failure to be reported", || {
        let v = view(0);
        let errs = v["status"]["discovery_errors"]
            .as_array()
            .ok_or("no status")?;
        if !errs.iter().any(|e| {
            e.as_str()
                .unwrap_or("")
                .contains("keeping the previous answer")
        }) {
            return Err(format!("not reported yet: {}", v["status"]));
        }
        Ok(())
    });
    thread::sleep(Duration::from_secs(3));
    let v = view(0);
    assert_eq!(v["pairs"].as_array().unwrap().len(), DNS_NODES - 1, "{v}");
    for p in v["pairs"].as_array().unwrap() {
        assert!(
            p["latest"]["started_ns"].as_i64().unwrap() > since,
            "stale pair {p}"
        );
        assert_eq!(p["latest"]["loss_ratio"], 0.0, "{p}");
    }
    for (i, c) in agents.0.iter_mut().enumerate() {
        assert!(c.try_wait().unwrap().is_none(), "agent {i} exited");
    }
    drop(agents);
    drop(veths);
}

#[test]
fn sweep_reports_each_host_and_exits_by_the_documented_codes() {
    let a = Netns::new("npsweepa").unwrap();
    let b = Netns::new("npsweepb").unwrap();
    let _veth = Veth::connect_multi(
        &a,
        &["192.0.2.1/24", "fd00::a/64"],
        &b,
        &["192.0.2.2/24", "fd00::b/64"],
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("targets");
    std::fs::write(
        &file,
        "# the peer and a host that is not there\nfd00::b\n192.0.2.3\n",
    )
    .unwrap();
    let sweep = |args: &[&str]| {
        let mut argv = vec![env!("CARGO_BIN_EXE_netprobe"), "sweep"];
        argv.extend_from_slice(args);
        let out = a.exec(&argv).unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // 192.0.2.0/30 = .1 (this host) and .2 (the peer): both answer.
    let (code, out, err) = sweep(&[
        "192.0.2.0/30",
        "--count",
        "3",
        "--interval",
        "50ms",
        "--json",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let hosts = v.as_array().unwrap();
    assert_eq!(hosts.len(), 2, "{v}");
    for h in hosts {
        assert_eq!(h["sent"], 3, "{h}");
        assert_eq!(h["received"], 3, "{h}");
        assert_eq!(h["loss_ratio"], 0.0, "{h}");
        assert!(h["rtt_avg"].as_f64().unwrap() < 0.05, "{h}");
    }
    // From a file: one host answers, one does not → exit 1, and the text says which.
    let targets = format!("--targets={}", file.display());
    let (code, out, err) = sweep(&[
        &targets,
        "--count",
        "2",
        "--interval",
        "50ms",
        "--timeout",
        "300ms",
    ]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("fd00::b") && out.contains("2/2/0%"), "{out}");
    assert!(
        out.contains("192.0.2.3") && out.contains("2/0/100%"),
        "{out}"
    );
    assert!(out.contains("1/2 hosts answered"), "{out}");
    // Bad input → exit 2 with a message.
    let (code, _, err) = sweep(&["192.0.2.0/33"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("exceeds 32"), "{err}");
    let (code, _, err) = sweep(&["10.0.0.0/8"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = sweep(&["192.0.2.2", "--count", "0"]);
    assert_eq!(code, 2, "{err}");
}
