//! Delay injected on one node appears on its pair only: node B's kernel ignores echo-requests
//! (`net.ipv4.icmp_echo_ignore_all=1`) and a user-space responder on a raw socket answers each one
//! 30 ms late (no `tc netem` in this kernel). Node C answers normally. The agent on node A, the real
//! `netprobe run`, must report ~30 ms to B and well under that to C.
#![allow(
    clippy::unwrap_used,
    reason = "in a test a panic is the failure report"
)]

mod mesh_support;

use std::io::Read as _;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use lab::{Bridge, Netns};
use mesh_support::{Agents, agent_command, eventually, get};
use serde_json::Value;
use socket2::{Domain, Protocol, Socket, Type};

const DELAY: Duration = Duration::from_millis(30);

/// RFC 1071 checksum.
fn checksum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    for c in data.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from_be_bytes([c[0], 0])
        };
        sum += u32::from(w);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Answers echo-requests to this namespace `DELAY` late until `stop` (bounded by 60 s); returns how
/// many it answered.
fn delaying_responder(mut sock: Socket, stop: Arc<AtomicBool>) -> u32 {
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut answered = 0;
    let mut pkt = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        // A raw IPv4 socket reads the IP header too: the source address is in it.
        let Ok(n) = sock.read(&mut pkt) else {
            continue;
        };
        let pkt = &pkt[..n];
        let ihl = usize::from(pkt[0] & 0x0f) * 4;
        if pkt.len() < ihl + 8 || pkt[ihl] != 8 {
            continue;
        }
        let from = Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15]);
        let mut reply = pkt[ihl..].to_vec();
        reply[0] = 0;
        reply[2] = 0;
        reply[3] = 0;
        let c = checksum(&reply);
        reply[2..4].copy_from_slice(&c.to_be_bytes());
        std::thread::sleep(DELAY);
        let to = SocketAddr::V4(SocketAddrV4::new(from, 0));
        if sock.send_to(&reply, &to.into()).is_ok() {
            answered += 1;
        }
    }
    answered
}

fn rtt_avg(v: &Value, node: &str) -> Option<f64> {
    v["pairs"]
        .as_array()?
        .iter()
        .find(|p| p["target_node"] == node)?["latest"]["rtt_avg"]
        .as_f64()
}

#[test]
fn delay_from_a_delaying_responder_shows_on_its_pair_only() {
    let switch = Bridge::new("npdelsw").unwrap();
    let nodes: Vec<Netns> = (0..3).map(|_| Netns::new("npdel").unwrap()).collect();
    let mut veths = Vec::new();
    for (i, ns) in nodes.iter().enumerate() {
        let addr = format!("198.51.100.{}/24", i + 1);
        veths.push(switch.attach(ns, &[&addr]).unwrap());
    }
    nodes[1]
        .sysctl("net.ipv4.icmp_echo_ignore_all", "1")
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    // The socket is opened inside node B's namespace and stays there; the responder thread uses it.
    let sock = nodes[1]
        .run_in(|| Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4)).unwrap())
        .unwrap();
    let responder = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || delaying_responder(sock, stop))
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("a.yaml");
    std::fs::write(
        &cfg,
        format!(
            r#"
storage: {{ path: "{db}" }}
diagnosis: {{ enabled: false }}
mesh:
  node_name: a
  interval: "1s"
  packets: 5
  discovery:
    static:
      - {{ name: slow, addresses: ["198.51.100.2"] }}
      - {{ name: fast, addresses: ["198.51.100.3"] }}
"#,
            db = dir.path().join("a.db").display()
        ),
    )
    .unwrap();
    let agent = agent_command(&nodes[0], &cfg, "198.51.100.1:8080").spawn();
    let agents = Agents(vec![agent.unwrap()]);
    let addr: SocketAddr = "198.51.100.1:8080".parse().unwrap();
    let (slow, fast) = eventually(20, "rounds to both peers", || {
        let (_, body) = get(&nodes[0], addr, "/api/v1/mesh");
        let v: Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
        match (rtt_avg(&v, "slow"), rtt_avg(&v, "fast")) {
            (Some(s), Some(f)) => Ok((s, f)),
            _ => Err(format!("{v}")),
        }
    });
    drop(agents);
    stop.store(true, Ordering::Relaxed);
    let answered = responder.join().unwrap();
    assert!(answered >= 5, "the responder answered {answered}");
    assert!(
        (0.029..0.1).contains(&slow),
        "RTT to the delayed node {slow}s, expected ~{DELAY:?}"
    );
    assert!(fast < 0.01, "RTT to the undelayed node {fast}s");
}
