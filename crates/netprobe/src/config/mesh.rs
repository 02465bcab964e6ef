//! `mesh:`: the node latency mesh (see [`crate::mesh`]). Raw shape and validation in one place.
//!
//! ```yaml
//! mesh:
//!   node_name: "${NODE_NAME}"   # required; this agent's name in the mesh
//!   interval: "10s"             # one round per peer per interval (default 10s)
//!   packets: 5                  # echoes per peer per round, spread over the interval (default 5, 1–100)
//!   peers_per_node: 0           # 0 = full mesh; k > 0 = rendezvous selection of k observers per node
//!   full_mesh_max: 50           # full mesh while there are at most this many peers (default 50)
//!   protocols: [icmp, tcp]      # tcp = connect to the peer's agent port when ICMP is denied or blocked
//!   tcp_port: 8080              # the peers' agent port (default: the port of server.listen)
//!   discovery:
//!     static: [{ name: node-a, addresses: ["198.51.100.1", "fd00::1"] }]
//!     dns: { name: "netprobe-mesh.kube-system.svc.cluster.local", port: 8080, refresh: "30s",
//!            server: "10.96.0.10:53" }  # server defaults to the first nameserver of /etc/resolv.conf
//!     kubernetes: { nodes: true }  # or { pods: { label_selector: "app=netprobe", namespace: "kube-system" } }
//!                                  # optional port: (default tcp_port)
//!   firewall: { manage: false, interfaces: ["antrea-gw0"] }  # true: keep the mesh's rules in place
//!   retention: "1d"             # how long the per-round history is kept (default: storage.retention,
//!                               # at most that)
//! ```

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer};

use super::raw::{CheckName, Positive};

/// Largest number of static peers (and DNS answers) read; more are refused at load (static) or
/// truncated and reported (DNS).
pub const MAX_STATIC_PEERS: usize = 100_000;

/// `mesh:` as read.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMesh {
    /// This agent's node name.
    node_name: CheckName,
    /// Round interval.
    interval: Option<Positive>,
    /// Echoes per peer per round.
    packets: Option<u16>,
    /// Observers per node (0 = full mesh).
    peers_per_node: Option<u32>,
    /// Full mesh up to this many peers.
    full_mesh_max: Option<u32>,
    /// Protocols, in order of preference.
    protocols: Option<Vec<MeshProtocolName>>,
    /// The peers' agent port for the TCP fallback.
    tcp_port: Option<u16>,
    /// Where peers come from.
    discovery: Option<RawDiscovery>,
    /// Firewall management: the rules the mesh needs, kept in place.
    firewall: Option<RawFirewall>,
    /// How long the per-round history is kept.
    retention: Option<Positive>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum MeshProtocolName {
    Icmp,
    Tcp,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDiscovery {
    #[serde(rename = "static")]
    static_peers: Option<Vec<RawStaticPeer>>,
    dns: Option<RawDns>,
    kubernetes: Option<RawKubernetes>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStaticPeer {
    name: CheckName,
    addresses: Vec<Addr>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDns {
    name: String,
    port: Option<u16>,
    refresh: Option<Positive>,
    server: Option<SocketAddr>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKubernetes {
    nodes: Option<bool>,
    pods: Option<RawPods>,
    port: Option<u16>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPods {
    label_selector: Option<String>,
    namespace: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFirewall {
    manage: Option<bool>,
    interfaces: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy)]
struct Addr(IpAddr);

impl<'de> Deserialize<'de> for Addr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.trim()
            .parse::<IpAddr>()
            .map(|ip| Addr(ip.to_canonical()))
            .map_err(|_| {
                de::Error::custom(format!(
                    "invalid address {text:?}; expected an IPv4 or IPv6 address like 198.51.100.1 or fd00::1"
                ))
            })
    }
}

/// The validated `mesh:` section.
#[derive(Debug, Clone, PartialEq)]
pub struct MeshConfig {
    /// This agent's node name (`[A-Za-z0-9_.-]{1,128}`), after `${VAR}` expansion.
    pub node_name: String,
    /// Time between the rounds of one pair; greater than zero. Default 10 s.
    pub interval: Duration,
    /// Echoes (or TCP connects) per peer per round, sent `interval / packets` apart. 1–100, default 5.
    pub packets: u16,
    /// Observers per node under rendezvous selection; 0 = full mesh. Default 0.
    pub peers_per_node: u32,
    /// A full mesh is used while there are at most this many peers. Default 50.
    pub full_mesh_max: u32,
    /// ICMP first.
    pub icmp: bool,
    /// TCP connect to `tcp_port` when ICMP is denied or every echo was lost.
    pub tcp: bool,
    /// The peers' agent port. Default: the port of `server.listen`.
    pub tcp_port: u16,
    /// Static peers.
    pub static_peers: Vec<StaticPeer>,
    /// DNS discovery.
    pub dns: Option<DnsDiscovery>,
    /// Kubernetes discovery (a watch on Nodes or Pods, see [`crate::mesh::kubernetes`]).
    pub kubernetes: Option<KubernetesDiscovery>,
    /// `firewall.manage`: keep the mesh's rules in place on `firewall.interfaces` (the same code
    /// as `netprobe firewall ensure`, reconciled every 30 s).
    pub firewall_manage: bool,
    /// Interfaces of `firewall`.
    pub firewall_interfaces: Vec<String>,
    /// How long the per-round history is kept in the store; `None`: `storage.retention` (which
    /// also bounds it: a longer one is refused at load).
    pub retention: Option<Duration>,
}

/// One `discovery.static` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticPeer {
    /// Node name.
    pub name: String,
    /// Addresses probed (each family reported separately).
    pub addresses: Vec<IpAddr>,
}

/// `discovery.dns`: A and AAAA records of a (headless Service) name; each address is a node named by
/// the address itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsDiscovery {
    /// Name to resolve (fully qualified; a trailing dot is added).
    pub name: String,
    /// The agents' port (the TCP fallback uses it). Default: `tcp_port`.
    pub port: Option<u16>,
    /// Re-resolution interval. Default 30 s.
    pub refresh: Duration,
    /// DNS server; default the first `nameserver` of /etc/resolv.conf.
    pub server: Option<SocketAddr>,
}

/// `discovery.kubernetes`: peers from the Kubernetes API, kept current by one watch (list once, then
/// watch from the list's `resourceVersion`; never a list per discovery pass). The API server and its
/// credentials come from `KUBECONFIG` / `~/.kube/config` or, inside a pod, the service account
/// (kube-rs `Client::try_default`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubernetesDiscovery {
    /// What is watched.
    pub source: KubernetesSource,
    /// The agents' port (the TCP fallback uses it). Default: `tcp_port`.
    pub port: Option<u16>,
}

/// What `discovery.kubernetes` watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KubernetesSource {
    /// `nodes: true`: every Node, named by its name, probed at its `InternalIP` addresses (both
    /// families on a dual-stack node). Needs `get`, `list`, `watch` on `nodes` (cluster scope).
    Nodes,
    /// `pods: {…}`: the Running pods matching `label_selector` (e.g. the agents' DaemonSet), named
    /// by the node they run on (`spec.nodeName`), probed at their `status.podIPs`. Needs `get`,
    /// `list`, `watch` on `pods` (cluster scope, or in `namespace`).
    Pods {
        /// A Kubernetes label selector (`app=netprobe`, `tier in (a,b)`, `!canary`); `None` = every pod.
        label_selector: Option<String>,
        /// Only this namespace; `None` = all namespaces.
        namespace: Option<String>,
    },
}

/// Checks `discovery.kubernetes`. The label selector's grammar is left to the API server (its
/// refusal is a discovery error); here only its character set is checked.
fn validate_kubernetes(k: RawKubernetes) -> Result<Option<KubernetesDiscovery>, String> {
    let source = match (k.nodes.unwrap_or(false), k.pods) {
        (true, Some(_)) => {
            return Err(
                "mesh.discovery.kubernetes has both nodes: true and pods; expected one of them"
                    .to_owned(),
            );
        }
        (true, None) => KubernetesSource::Nodes,
        (false, Some(p)) => {
            let label_selector = p
                .label_selector
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty());
            if let Some(sel) = &label_selector
                && let Some(bad) = sel
                    .chars()
                    .find(|c| !(c.is_ascii_alphanumeric() || "-_./=!,() ".contains(*c)))
            {
                return Err(format!(
                    "mesh.discovery.kubernetes.pods.label_selector {sel:?} has {bad:?}; expected a \
                     Kubernetes label selector like \"app=netprobe\" or \"tier in (a,b),!canary\""
                ));
            }
            let namespace = p.namespace.map(|n| n.trim().to_owned());
            if let Some(ns) = &namespace
                && (ns.is_empty()
                    || ns.len() > 63
                    || !ns
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    || ns.starts_with('-')
                    || ns.ends_with('-'))
            {
                return Err(format!(
                    "mesh.discovery.kubernetes.pods.namespace {ns:?} is not a namespace name; \
                     expected a DNS label like kube-system (omit it for all namespaces)"
                ));
            }
            KubernetesSource::Pods {
                label_selector,
                namespace,
            }
        }
        (false, None) if k.nodes == Some(false) => return Ok(None),
        (false, None) => {
            return Err(
                "mesh.discovery.kubernetes names nothing to watch; expected nodes: true or \
                 pods: { label_selector: \"app=netprobe\" }"
                    .to_owned(),
            );
        }
    };
    Ok(Some(KubernetesDiscovery {
        source,
        port: k.port,
    }))
}

/// Validates `raw`; `listen_port` is the default `tcp_port`. Errors are messages for the `mesh:` key.
pub(crate) fn validate(raw: RawMesh, listen_port: u16) -> Result<MeshConfig, String> {
    let packets = raw.packets.unwrap_or(5);
    if !(1..=probe::icmp::MAX_COUNT).contains(&packets) {
        return Err(format!(
            "mesh.packets {packets} is out of range; expected 1 to {}",
            probe::icmp::MAX_COUNT
        ));
    }
    let interval = raw.interval.map_or(Duration::from_secs(10), |i| i.0.0);
    if interval < Duration::from_millis(100) || interval > Duration::from_secs(3600) {
        return Err(format!(
            "mesh.interval {interval:?} is out of range; expected 100ms to 1h"
        ));
    }
    let protocols = raw
        .protocols
        .unwrap_or_else(|| vec![MeshProtocolName::Icmp]);
    if protocols.is_empty() {
        return Err("mesh.protocols is empty; expected [icmp], [tcp] or [icmp, tcp]".to_owned());
    }
    let discovery = raw.discovery.unwrap_or(RawDiscovery {
        static_peers: None,
        dns: None,
        kubernetes: None,
    });
    let kubernetes = match discovery.kubernetes {
        Some(k) => validate_kubernetes(k)?,
        None => None,
    };
    let mut static_peers: Vec<StaticPeer> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for p in discovery.static_peers.unwrap_or_default() {
        if !seen.insert(p.name.0.clone()) {
            return Err(format!(
                "duplicate node name {:?} in mesh.discovery.static; expected every name once",
                p.name.0
            ));
        }
        if p.addresses.is_empty() {
            return Err(format!(
                "node {:?} in mesh.discovery.static has no addresses; expected at least one",
                p.name.0
            ));
        }
        static_peers.push(StaticPeer {
            name: p.name.0,
            addresses: p.addresses.into_iter().map(|a| a.0).collect(),
        });
    }
    if static_peers.len() > MAX_STATIC_PEERS {
        return Err(format!(
            "mesh.discovery.static lists {} nodes; expected at most {MAX_STATIC_PEERS}",
            static_peers.len()
        ));
    }
    let dns = match discovery.dns {
        None => None,
        Some(d) => {
            let name = d.name.trim().trim_end_matches('.').to_owned();
            if name.is_empty() || name.len() > 253 {
                return Err(format!(
                    "mesh.discovery.dns.name {:?} is not a DNS name; expected like netprobe-mesh.kube-system.svc.cluster.local",
                    d.name
                ));
            }
            Some(DnsDiscovery {
                name,
                port: d.port,
                refresh: d.refresh.map_or(Duration::from_secs(30), |r| r.0.0),
                server: d.server,
            })
        }
    };
    if static_peers.is_empty() && dns.is_none() && kubernetes.is_none() {
        return Err("mesh.discovery lists no peers; expected static, dns or kubernetes".to_owned());
    }
    let firewall = raw.firewall.unwrap_or(RawFirewall {
        manage: None,
        interfaces: None,
    });
    Ok(MeshConfig {
        node_name: raw.node_name.0,
        interval,
        packets,
        peers_per_node: raw.peers_per_node.unwrap_or(0),
        full_mesh_max: raw.full_mesh_max.unwrap_or(50),
        icmp: protocols.contains(&MeshProtocolName::Icmp),
        tcp: protocols.contains(&MeshProtocolName::Tcp),
        tcp_port: raw.tcp_port.unwrap_or(listen_port),
        static_peers,
        dns,
        kubernetes,
        firewall_manage: firewall.manage.unwrap_or(false),
        firewall_interfaces: firewall.interfaces.unwrap_or_default(),
        retention: raw.retention.map(|r| r.0.0),
    })
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    reason = "in a test a panic is the failure report"
)]
mod tests {
    use crate::config::{KubernetesDiscovery, KubernetesSource, parse};

    fn load(text: &str) -> Result<crate::config::Config, String> {
        let env = |k: &str| (k == "NODE_NAME").then(|| "node-a".to_owned());
        parse(text, "t.yaml", &env).map_err(|e| e.to_string())
    }

    #[test]
    fn the_issue_example_loads_with_kubernetes_discovery() {
        let cfg = load(
            r#"
mesh:
  node_name: "${NODE_NAME}"
  interval: "10s"
  packets: 5
  peers_per_node: 0
  protocols: [icmp, tcp]
  discovery:
    static: [{ name: node-a, addresses: ["198.51.100.1", "fd00::1"] }]
    dns: { name: "netprobe-mesh.kube-system.svc.cluster.local", port: 8080, refresh: "30s" }
    kubernetes: { nodes: true }            # or { pods: { label_selector: "app=netprobe" } }
  firewall: { manage: true, interfaces: ["antrea-gw0"] }
"#,
        )
        .unwrap();
        let m = cfg.mesh.unwrap();
        assert_eq!(m.node_name, "node-a");
        assert_eq!(m.packets, 5);
        assert!(m.icmp && m.tcp);
        assert_eq!(m.tcp_port, 8080);
        assert_eq!(m.static_peers[0].addresses.len(), 2);
        assert_eq!(m.dns.unwrap().refresh.as_secs(), 30);
        assert!(m.firewall_manage);
        assert_eq!(m.retention, None, "storage.retention applies");
        assert_eq!(
            m.kubernetes,
            Some(KubernetesDiscovery {
                source: KubernetesSource::Nodes,
                port: None
            })
        );
    }

    #[test]
    fn kubernetes_discovery_alone_is_enough_and_pods_take_a_selector_and_namespace() {
        let m = load(
            "mesh: { node_name: a, discovery: { kubernetes: { nodes: true, port: 9000 } } }\n",
        )
        .unwrap()
        .mesh
        .unwrap();
        assert!(m.static_peers.is_empty() && m.dns.is_none());
        assert_eq!(
            m.kubernetes,
            Some(KubernetesDiscovery {
                source: KubernetesSource::Nodes,
                port: Some(9000)
            })
        );
        let m = load(
            "mesh: { node_name: a, discovery: { kubernetes: { pods: { label_selector: \" app=netprobe,tier in (a,b) \", namespace: kube-system } } } }\n",
        )
        .unwrap()
        .mesh
        .unwrap();
        assert_eq!(
            m.kubernetes.unwrap().source,
            KubernetesSource::Pods {
                label_selector: Some("app=netprobe,tier in (a,b)".to_owned()),
                namespace: Some("kube-system".to_owned()),
            }
        );
        // An empty selector is every pod, in every namespace.
        let m = load(
            "mesh: { node_name: a, discovery: { kubernetes: { pods: { label_selector: \"\" } } } }\n",
        )
        .unwrap()
        .mesh
        .unwrap();
        assert_eq!(
            m.kubernetes.unwrap().source,
            KubernetesSource::Pods {
                label_selector: None,
                namespace: None,
            }
        );
    }

    #[test]
    fn bad_kubernetes_sections_are_refused() {
        for (text, want) in [
            (
                "mesh: { node_name: a, discovery: { kubernetes: { nodes: true, pods: {} } } }\n",
                "both nodes: true and pods",
            ),
            (
                "mesh: { node_name: a, discovery: { kubernetes: {} } }\n",
                "names nothing to watch",
            ),
            (
                "mesh: { node_name: a, discovery: { kubernetes: { nodes: false } } }\n",
                "lists no peers",
            ),
            (
                "mesh: { node_name: a, discovery: { kubernetes: { pods: { label_selector: \"app=a;b\" } } } }\n",
                "label_selector",
            ),
            (
                "mesh: { node_name: a, discovery: { kubernetes: { pods: { namespace: Kube_System } } } }\n",
                "not a namespace name",
            ),
            (
                "mesh: { node_name: a, discovery: { kubernetes: { services: true } } }\n",
                "services",
            ),
        ] {
            let err = load(text).unwrap_err();
            assert!(err.contains(want), "{text}: {err}");
            assert!(err.starts_with("t.yaml:1:"), "{err}");
        }
    }

    #[test]
    fn mesh_retention_may_be_shorter_than_the_store_s() {
        let cfg = load(
            "storage: { retention: \"2d\" }\nmesh: { node_name: a, retention: \"36h\", discovery: { static: [{ name: b, addresses: [\"1.2.3.4\"] }] } }\n",
        )
        .unwrap();
        let m = cfg.mesh.unwrap();
        assert_eq!(m.retention, Some(std::time::Duration::from_secs(36 * 3600)));
        let equal = load(
            "storage: { retention: \"2d\" }\nmesh: { node_name: a, retention: \"48h\", discovery: { static: [{ name: b, addresses: [\"1.2.3.4\"] }] } }\n",
        );
        assert!(equal.is_ok(), "{equal:?}");
    }

    #[test]
    fn bad_mesh_sections_are_refused_with_a_location() {
        for (text, want) in [
            (
                "mesh: { node_name: a, discovery: { static: [{ name: b, addresses: [\"1.2.3.4\"] }, { name: b, addresses: [\"1.2.3.5\"] }] } }\n",
                "duplicate node name",
            ),
            ("mesh: { node_name: a }\n", "lists no peers"),
            (
                "mesh: { node_name: a, packets: 0, discovery: { static: [{ name: b, addresses: [\"1.2.3.4\"] }] } }\n",
                "mesh.packets 0",
            ),
            (
                "mesh: { node_name: a, discovery: { static: [{ name: b, addresses: [\"nope\"] }] } }\n",
                "invalid address",
            ),
            (
                "mesh: { node_name: a, bogus: 1, discovery: { static: [] } }\n",
                "bogus",
            ),
            ("mesh: { node_name: \"a b\" }\n", "invalid check name"),
            (
                "mesh: { node_name: a, retention: \"8d\", discovery: { static: [{ name: b, addresses: [\"1.2.3.4\"] }] } }\n",
                "mesh.retention 8days is longer than storage.retention 7days",
            ),
            (
                "mesh: { node_name: a, retention: \"0s\", discovery: { static: [{ name: b, addresses: [\"1.2.3.4\"] }] } }\n",
                "duration 0s must be greater than zero",
            ),
        ] {
            let err = load(text).unwrap_err();
            assert!(err.contains(want), "{text}: {err}");
            assert!(err.starts_with("t.yaml:1:"), "{err}");
        }
    }
}
