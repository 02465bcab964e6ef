//! The mesh with `firewall.manage: true` (DESIGN.md, "Mesh ICMP blocked by the host firewall"):
//! node B's host firewall drops echo-requests on INPUT, so node A sees B's pair lose everything;
//! B's own agent, configured to manage the firewall on its interface, puts `NETPROBE-INPUT` /
//! `NETPROBE-OUTPUT` first and the path comes back. Real agents (`netprobe run` inside lab
//! namespaces), real iptables (nf_tables backend), addresses in 198.51.100.0/24 only.
#![allow(
    clippy::unwrap_used,
    reason = "in a test a panic is the failure report"
)]

mod mesh_support;

use std::net::SocketAddr;
use std::path::Path;

use lab::{Netns, Veth};
use mesh_support::{Agents, agent_command, drop_echo_requests, eventually, get};
use serde_json::Value;

const PORT: u16 = 8080;

fn config(dir: &std::path::Path, node: &str, peer: (&str, &str), manage: Option<&str>) -> String {
    let path = dir.join(format!("{node}.yaml"));
    let firewall = manage.map_or(String::new(), |iface| {
        format!("  firewall: {{ manage: true, interfaces: [\"{iface}\"] }}\n")
    });
    std::fs::write(
        &path,
        format!(
            r#"
storage: {{ path: "{db}" }}
mesh:
  node_name: "{node}"
  interval: "1s"
  packets: 5
  protocols: [icmp]
  discovery:
    static:
      - {{ name: {}, addresses: ["{}"] }}
{firewall}"#,
            peer.0,
            peer.1,
            db = dir.join(format!("{node}.db")).display()
        ),
    )
    .unwrap();
    path.display().to_string()
}

/// The latest ICMP loss ratio of `ns`'s pair to `peer`, if a round has finished.
fn loss_to(ns: &Netns, own: &str, peer: &str) -> Option<f64> {
    let addr: SocketAddr = format!("{own}:{PORT}").parse().unwrap();
    let (status, body) = get(ns, addr, "/api/v1/mesh");
    if status != 200 {
        return None;
    }
    let v: Value = serde_json::from_str(&body).ok()?;
    let pair = v["pairs"]
        .as_array()?
        .iter()
        .find(|p| p["target_ip"] == peer)?
        .clone();
    (pair["latest"]["protocol"] == "icmp")
        .then(|| pair["latest"]["loss_ratio"].as_f64())
        .flatten()
}

#[test]
fn managed_firewall_restores_the_mesh_path_the_host_firewall_blocked() {
    let (a, b) = (Netns::new("npmfwa").unwrap(), Netns::new("npmfwb").unwrap());
    let veth = Veth::connect(&a, "198.51.100.31/24", &b, "198.51.100.32/24").unwrap();
    // The incident: B's host firewall drops echo-requests.
    drop_echo_requests(&b, "iptables-nft");

    let dir = tempfile::tempdir().unwrap();
    let spawn = |ns: &Netns, cfg: String| {
        agent_command(ns, Path::new(&cfg), &format!("0.0.0.0:{PORT}"))
            .spawn()
            .unwrap()
    };
    let cfg_a = config(dir.path(), "node-a", ("node-b", "198.51.100.32"), None);
    let mut agents = Agents(vec![spawn(&a, cfg_a)]);

    // Without management: A's pair to B loses every echo.
    let lost = eventually(20, "A's pair to B reports total loss", || {
        match loss_to(&a, "198.51.100.31", "198.51.100.32") {
            Some(l) if l >= 1.0 => Ok(l),
            other => Err(format!("loss {other:?}")),
        }
    });
    assert!((lost - 1.0).abs() < f64::EPSILON);

    // B's agent manages the firewall on its interface: its rules go first, the path comes back.
    let cfg_b = config(
        dir.path(),
        "node-b",
        ("node-a", "198.51.100.31"),
        Some(veth.b_name()),
    );
    agents.0.push(spawn(&b, cfg_b));
    eventually(20, "A's pair to B recovers", || {
        match loss_to(&a, "198.51.100.31", "198.51.100.32") {
            Some(0.0) => Ok(()),
            other => Err(format!("loss {other:?}")),
        }
    });
    let saved = b.exec_ok(&["iptables-nft-save", "-t", "filter"]).unwrap();
    assert!(saved.contains(":NETPROBE-INPUT"), "{saved}");
    let input: Vec<&str> = saved
        .lines()
        .filter(|l| l.starts_with("-A INPUT "))
        .collect();
    assert!(input[0].contains("-j NETPROBE-INPUT"), "{input:?}");
    assert!(
        input.iter().any(|l| l.contains("--icmp-type 8 -j DROP")),
        "the host's own rule stays: {input:?}"
    );
    drop(agents);
}
