//! Where mesh peers come from: the static list, the Kubernetes API (the snapshot a long-lived watch
//! keeps, see [`super::kubernetes`]) and the A/AAAA records of a DNS name (a headless Service),
//! re-resolved every `refresh` through the project's DNS client ([`probe::dns`]).
//!
//! Precedence when sources overlap: static first; a Kubernetes peer named like a static one is
//! dropped and its addresses already listed are not repeated; a DNS address already listed by
//! either is not repeated.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use probe::Details;
use probe::dns::{DnsConfig, DnsProber};

use super::kubernetes::KubeWatch;
use crate::config::{DnsDiscovery, MAX_STATIC_PEERS, MeshConfig};

/// Bound on one DNS query.
const DNS_TIMEOUT: Duration = Duration::from_secs(2);

/// A discovered node and the addresses to probe on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Node name (the static name, the Kubernetes Node name or the pod's `spec.nodeName`, or for
    /// DNS the address itself).
    pub name: String,
    /// Addresses, each probed and reported separately (dual-stack nodes have two).
    pub addresses: Vec<IpAddr>,
    /// The node's agent port (TCP fallback).
    pub port: u16,
    /// Whether DNS discovery found it (kept from the previous pass while DNS fails).
    pub from_dns: bool,
}

/// The outcome of one discovery pass.
#[derive(Debug, Clone, Default)]
pub struct Discovered {
    /// Nodes by name (deduplicated; an address already listed by an earlier source is not repeated).
    pub nodes: BTreeMap<String, Node>,
    /// What failed (DNS errors, Kubernetes watch errors since the last pass, truncation), in words,
    /// for the API and logs.
    pub errors: Vec<String>,
}

/// Runs every configured discovery once. When DNS fails altogether, the nodes it found in
/// `previous` are kept (a resolver outage must not empty the mesh); the error is reported.
/// Kubernetes peers are `kube`'s current snapshot (no API request here); the watch keeps its last
/// known set through errors, which are reported in the pass after they happened.
pub async fn discover(
    cfg: &MeshConfig,
    previous: &BTreeMap<String, Node>,
    kube: Option<&KubeWatch>,
) -> Discovered {
    let mut out = Discovered::default();
    for p in &cfg.static_peers {
        out.nodes.insert(
            p.name.clone(),
            Node {
                name: p.name.clone(),
                addresses: p.addresses.clone(),
                port: cfg.tcp_port,
                from_dns: false,
            },
        );
    }
    if let Some(kube) = kube {
        merge_kubernetes(&mut out, kube.nodes());
        out.errors.extend(kube.take_errors());
    }
    if let Some(dns) = &cfg.dns {
        let listed: Vec<IpAddr> = out
            .nodes
            .values()
            .flat_map(|n| n.addresses.iter().copied())
            .collect();
        match resolve_all(dns).await {
            Ok((addrs, errors)) => {
                out.errors.extend(errors);
                for ip in addrs {
                    if listed.contains(&ip) {
                        continue;
                    }
                    if out.nodes.len() >= MAX_STATIC_PEERS {
                        out.errors.push(format!(
                            "DNS discovery: more than {MAX_STATIC_PEERS} nodes; the rest are ignored"
                        ));
                        break;
                    }
                    let name = ip.to_string();
                    out.nodes.insert(
                        name.clone(),
                        Node {
                            name,
                            addresses: vec![ip],
                            port: dns.port.unwrap_or(cfg.tcp_port),
                            from_dns: true,
                        },
                    );
                }
            }
            Err(e) => {
                out.errors
                    .push(format!("{e} (keeping the previous answer)"));
                for (name, node) in previous {
                    if node.from_dns && !out.nodes.contains_key(name) {
                        out.nodes.insert(name.clone(), node.clone());
                    }
                }
            }
        }
    }
    out
}

/// Adds the Kubernetes peers to `out` (static ones already in): a name already taken is skipped,
/// addresses already listed are dropped, and a peer left without any is skipped.
fn merge_kubernetes(out: &mut Discovered, peers: BTreeMap<String, Node>) {
    let listed: std::collections::HashSet<IpAddr> = out
        .nodes
        .values()
        .flat_map(|n| n.addresses.iter().copied())
        .collect();
    for (name, mut node) in peers {
        if out.nodes.contains_key(&name) {
            continue;
        }
        node.addresses.retain(|a| !listed.contains(a));
        if node.addresses.is_empty() {
            continue;
        }
        if out.nodes.len() >= MAX_STATIC_PEERS {
            out.errors.push(format!(
                "Kubernetes discovery: more than {MAX_STATIC_PEERS} nodes; the rest are ignored"
            ));
            break;
        }
        out.nodes.insert(name, node);
    }
}

/// A and AAAA of `dns.name`: the addresses (sorted, deduplicated) and the errors of a query that
/// failed while the other answered. Err when both failed.
async fn resolve_all(dns: &DnsDiscovery) -> Result<(Vec<IpAddr>, Vec<String>), String> {
    let server = match dns.server {
        Some(s) => s,
        None => resolv_conf_server().await?,
    };
    let mut addrs = Vec::new();
    let mut errors = Vec::new();
    for rtype in ["A", "AAAA"] {
        match query(server, &dns.name, rtype).await {
            Ok(mut a) => addrs.append(&mut a),
            Err(e) => errors.push(e),
        }
    }
    if addrs.is_empty() && errors.len() == 2 {
        return Err(errors.join("; "));
    }
    addrs.sort();
    addrs.dedup();
    Ok((addrs, errors))
}

async fn query(server: SocketAddr, name: &str, rtype: &str) -> Result<Vec<IpAddr>, String> {
    let cfg = DnsConfig {
        server: server.to_string(),
        query: format!("{name}."),
        record_type: rtype.to_owned(),
        ..DnsConfig::default()
    };
    let prober = DnsProber::new(cfg).map_err(|e| format!("DNS discovery: {e}"))?;
    let outcome = prober.probe(DNS_TIMEOUT).await;
    if !outcome.success {
        return Err(format!(
            "DNS discovery: {rtype} {name} via {server}: {}",
            outcome.message
        ));
    }
    let Details::Dns(d) = outcome.details else {
        return Ok(Vec::new());
    };
    // Presentation format `owner TTL CLASS TYPE RDATA`: keep the A/AAAA records (a CNAME chain
    // may precede them).
    Ok(d.answers
        .iter()
        .filter_map(|line| {
            let mut f = line.split_whitespace().rev();
            let rdata = f.next()?;
            let ty = f.next()?;
            (ty == rtype)
                .then(|| rdata.parse::<IpAddr>().ok())
                .flatten()
        })
        .map(|ip| ip.to_canonical())
        .collect())
}

/// The first `nameserver` of /etc/resolv.conf, port 53.
async fn resolv_conf_server() -> Result<SocketAddr, String> {
    let text = tokio::fs::read_to_string("/etc/resolv.conf")
        .await
        .map_err(|e| format!("DNS discovery: cannot read /etc/resolv.conf: {e}"))?;
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.trim().split('%').next()?.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .next()
        .ok_or_else(|| {
            "DNS discovery: no nameserver in /etc/resolv.conf; set mesh.discovery.dns.server"
                .to_owned()
        })
}

/// Whether `ip` is an address of this host (in the current network namespace): binding a UDP
/// socket to it succeeds only then.
pub fn is_local(ip: IpAddr) -> bool {
    std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}
