//! The two-ended diagnosis of mesh pairs in a real lab: three network namespaces on a bridge
//! (198.51.100.0/24), each running its own `netprobe run` agent (the real binary). Once every pair
//! is clean, node-1 drops inbound echo requests in its own INPUT chain (its agent's TCP port
//! stays open), and node-2 drops everything from and to node-0 (so node-0 cannot reach its
//! agent either). The test reads node-0's stored diagnoses of both pairs, and asks node-1's
//! inbound endpoint directly.
#![allow(
    clippy::unwrap_used,
    reason = "in a test a panic is the failure report"
)]

mod mesh_support;

use std::net::SocketAddr;

use lab::{Bridge, Netns};
use mesh_support::{
    Agents, agent_command, drop_echo_requests, eventually, get, post, promtool_check,
};
use serde_json::Value;

const NODES: usize = 3;
const PORT: u16 = 8080;
const OBSERVER: usize = 0;
const ECHO_BLOCKED: usize = 1;
const CUT_OFF: usize = 2;

fn ip(i: usize) -> String {
    format!("198.51.100.{}", i + 1)
}

fn name(i: usize) -> String {
    format!("node-{i}")
}

fn api(i: usize) -> SocketAddr {
    format!("{}:{PORT}", ip(i)).parse().unwrap()
}

fn json(status: u16, body: &str) -> Value {
    assert!(status != 0, "no answer");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{status} {e}: {body}"))
}

/// The latest stored diagnosis of `pair` on the observer, once there is one.
fn stored_diagnosis(ns: &Netns, pair: &str) -> Value {
    eventually(40, &format!("a diagnosis of {pair}"), || {
        let (status, body) = get(
            ns,
            api(OBSERVER),
            &format!("/api/v1/checks/{pair}/diagnosis"),
        );
        if status != 200 {
            return Err(format!("{status} {body}"));
        }
        Ok(json(status, &body))
    })
}

fn ids(findings: &Value) -> Vec<&str> {
    findings
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap())
        .collect()
}

#[test]
fn a_lost_pair_is_diagnosed_from_both_ends() {
    let switch = Bridge::new("np2endsw").unwrap();
    let nodes: Vec<Netns> = (0..NODES).map(|_| Netns::new("np2end").unwrap()).collect();
    let mut veths = Vec::new();
    for (i, ns) in nodes.iter().enumerate() {
        veths.push(switch.attach(ns, &[&format!("{}/24", ip(i))]).unwrap());
    }
    let dir = tempfile::tempdir().unwrap();
    let peers: String = (0..NODES)
        .map(|i| {
            format!(
                "      - {{ name: {}, addresses: [\"{}\"] }}\n",
                name(i),
                ip(i)
            )
        })
        .collect();
    let mut agents = Agents(Vec::new());
    for (i, ns) in nodes.iter().enumerate() {
        let cfg = dir.path().join(format!("node{i}.yaml"));
        std::fs::write(
            &cfg,
            format!(
                r#"
storage: {{ path: "{db}" }}
mesh:
  node_name: "{node}"
  interval: "1s"
  packets: 3
  protocols: [icmp, tcp]
  tcp_port: {PORT}
  discovery:
    static:
{peers}"#,
                db = dir.path().join(format!("node{i}.db")).display(),
                node = name(i),
            ),
        )
        .unwrap();
        let listen = format!("0.0.0.0:{PORT}");
        agents
            .0
            .push(agent_command(ns, &cfg, &listen).spawn().unwrap());
    }
    // Every pair clean first: the loss below is a transition, as in production.
    for (i, ns) in nodes.iter().enumerate() {
        eventually(20, &format!("node {i}'s clean matrix"), || {
            let (status, body) = get(ns, api(i), "/api/v1/mesh");
            if status != 200 {
                return Err(format!("{status}"));
            }
            let v = json(status, &body);
            let pairs = v["pairs"].as_array().ok_or("no pairs")?;
            if pairs.len() != NODES - 1 {
                return Err(format!("{} pairs", pairs.len()));
            }
            for p in pairs {
                if p["latest"]["loss_ratio"] != 0.0 {
                    return Err(format!("not clean yet: {p}"));
                }
            }
            Ok(())
        });
    }

    // node-1 drops echo requests in its own namespace; TCP to its agent still passes.
    drop_echo_requests(&nodes[ECHO_BLOCKED], "iptables");
    // node-2 drops everything from and to node-0: its agent cannot be asked.
    let observer_ip = ip(OBSERVER);
    nodes[CUT_OFF]
        .exec_ok(&["iptables", "-A", "INPUT", "-s", &observer_ip, "-j", "DROP"])
        .unwrap();
    nodes[CUT_OFF]
        .exec_ok(&["iptables", "-A", "OUTPUT", "-d", &observer_ip, "-j", "DROP"])
        .unwrap();

    // 1. The inbound endpoint of node-1, asked directly from node-0.
    let observer = &nodes[OBSERVER];
    let path = "/api/v1/diagnose/inbound";
    let (status, body) = post(
        observer,
        api(ECHO_BLOCKED),
        path,
        &format!(
            r#"{{"source": "{observer_ip}", "destination": "{}", "protocol": "icmp"}}"#,
            ip(CUT_OFF)
        ),
    );
    assert_eq!(status, 400, "{body}");
    let err = json(status, &body)["error"].as_str().unwrap().to_owned();
    assert!(err.contains("not an address of this host"), "{err}");
    let (status, body) = post(observer, api(ECHO_BLOCKED), path, r#"{"protocol": "icmp"}"#);
    assert_eq!(status, 400, "{body}");
    let (status, body) = post(
        observer,
        api(ECHO_BLOCKED),
        path,
        &format!(
            r#"{{"source": "{observer_ip}", "destination": "{}", "protocol": "icmp"}}"#,
            ip(ECHO_BLOCKED)
        ),
    );
    assert_eq!(status, 200, "{body}");
    let answer = json(status, &body);
    assert_eq!(answer["node"], name(ECHO_BLOCKED));
    let d = &answer["diagnosis"];
    assert_eq!(d["conclusion"], "explained", "{d}");
    assert_eq!(ids(&d["findings"]), ["firewall-drop"], "{d}");
    let rule = d["findings"][0]["evidence"][0].as_str().unwrap();
    assert!(
        rule.contains("chain INPUT rule 1: -A INPUT -p icmp -m icmp --icmp-type 8 -j DROP"),
        "{rule}"
    );
    // TCP to the agent port is let in, and the agent listens: nothing to say.
    let (status, body) = post(
        observer,
        api(ECHO_BLOCKED),
        path,
        &format!(
            r#"{{"source": "{observer_ip}", "destination": "{}", "protocol": "tcp", "port": {PORT}}}"#,
            ip(ECHO_BLOCKED)
        ),
    );
    assert_eq!(status, 200, "{body}");
    let d = &json(status, &body)["diagnosis"];
    assert_eq!(d["conclusion"], "healthy", "{d}");

    // 2. node-0's stored diagnosis of its pair to node-1: its own host drops nothing, the far
    // end names its INPUT rule.
    let pair = format!("mesh.{}.{}", name(ECHO_BLOCKED), ip(ECHO_BLOCKED));
    let record = stored_diagnosis(observer, &pair);
    let d = &record["diagnosis"];
    let local = ids(&d["findings"]);
    assert!(
        !local.contains(&"firewall-drop"),
        "the observer claims a drop of its own: {d}"
    );
    assert!(local.contains(&"remote-unreachable"), "{d}");
    assert!(
        d["findings"].to_string().contains(&format!(
            "{} is not an address of this host (its other namespaces were not searched)",
            ip(ECHO_BLOCKED)
        )),
        "the observer looked for the peer among its own namespaces: {d}"
    );
    let far = &d["far_end"];
    assert_eq!(far["status"], "answered", "{far}");
    assert_eq!(far["node"], name(ECHO_BLOCKED));
    assert_eq!(far["agent"], format!("{}:{PORT}", ip(ECHO_BLOCKED)));
    assert_eq!(far["question"]["source"], observer_ip, "{far}");
    assert_eq!(far["question"]["protocol"], "icmp", "{far}");
    assert_eq!(
        ids(&far["diagnosis"]["findings"]),
        ["firewall-drop"],
        "{far}"
    );
    let evidence = far["diagnosis"]["findings"][0]["evidence"].to_string();
    assert!(
        evidence.contains("chain INPUT rule 1: -A INPUT -p icmp -m icmp --icmp-type 8 -j DROP"),
        "{evidence}"
    );
    let examined = d["examined"].to_string();
    assert!(
        examined.contains(&format!(
            "far end {} (agent at {}:{PORT}) names the cause on its own host: firewall-drop",
            name(ECHO_BLOCKED),
            ip(ECHO_BLOCKED)
        )),
        "{examined}"
    );

    // 3. The pair to node-2: its agent cannot be reached, and the diagnosis says so.
    let pair_cut = format!("mesh.{}.{}", name(CUT_OFF), ip(CUT_OFF));
    let record = stored_diagnosis(observer, &pair_cut);
    let d = &record["diagnosis"];
    let far = &d["far_end"];
    assert_eq!(far["status"], "unreachable", "{far}");
    assert!(far["diagnosis"].is_null(), "{far}");
    assert!(ids(&d["findings"]).contains(&"remote-unreachable"), "{d}");
    let examined = d["examined"].to_string();
    assert!(
        examined.contains(&format!(
            "far-end agent at {}:{PORT} unreachable: connect: timed out after 2s",
            ip(CUT_OFF)
        )),
        "{examined}"
    );

    // 4. Counted by end, and the exposition still passes promtool.
    let (_, metrics) = get(observer, api(OBSERVER), "/metrics");
    for want in [
        format!(
            r#"netprobe_diagnosis_findings_total{{check="{pair}",id="firewall-drop",end="far"}} 1"#
        ),
        format!(
            r#"netprobe_diagnosis_findings_total{{check="{pair}",id="remote-unreachable",end="local"}} 1"#
        ),
        format!(
            r#"netprobe_diagnosis_findings_total{{check="{pair_cut}",id="remote-unreachable",end="local"}} 1"#
        ),
    ] {
        assert!(metrics.contains(&want), "{want} missing from:\n{metrics}");
    }
    assert!(
        !metrics.contains(&format!(
            r#"netprobe_diagnosis_findings_total{{check="{pair}",id="firewall-drop",end="local"}}"#
        )),
        "{metrics}"
    );
    promtool_check(&metrics);

    for (i, c) in agents.0.iter_mut().enumerate() {
        assert!(c.try_wait().unwrap().is_none(), "agent {i} exited");
    }
    drop(agents);
    drop(veths);
}
