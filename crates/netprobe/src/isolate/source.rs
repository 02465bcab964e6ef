//! Where the kubelet's probes come from, when `--keep-probes` is given without `--probe-source`
//! (pure: the kernel's answers come in through a lookup function).
//!
//! The kubelet runs in the node's (host) network namespace and connects to the pod's IP
//! (`status.podIP`; its httpGet, tcpSocket and grpc probers dial the pod IP from the node), so
//! the source of its probes is whatever source address the node's kernel picks for that
//! destination: `ip route get POD_IP` → `prefsrc`. netprobe runs in that namespace too (as a
//! DaemonSet with `hostNetwork`, or on the node), so it asks its own namespace. This is right for
//! every CNI, including Calico, whose pods route via the link-local `169.254.1.1` on a veth whose
//! host side has no address (the node answers with proxy ARP and probes from its own address).
//! Only when this namespace has no usable route to the pod does the gateway of the pod's default
//! route stand in (right for bridge CNIs, where the node is the pod's gateway), and never a
//! link-local one.

use std::net::IpAddr;

use serde::Serialize;

use crate::collect::{Addr, Route};

/// One default route of the pod's namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DefaultRoute {
    /// An IPv6 route (`ip -6 route`).
    pub ipv6: bool,
    /// The next hop, if any (`default dev eth0` has none).
    pub gateway: Option<IpAddr>,
    /// The output interface.
    pub dev: Option<String>,
}

/// A probe source found, and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProbeSource {
    /// The address the kubelet's probes come from.
    pub addr: IpAddr,
    /// How it was found, for the report (`probe source ADDR: …`).
    pub how: String,
}

/// What [`find`] found: at most one source per family, and why a family has none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Found {
    /// IPv4 first.
    pub sources: Vec<ProbeSource>,
    /// One sentence per family of the pod's addresses for which no source was found.
    pub missing: Vec<String>,
}

/// Whether `a` can be the source of the kubelet's connection to a pod address: not loopback,
/// unspecified, multicast or link-local (`169.254.0.0/16`, `fe80::/10`; a node never probes a
/// routable pod address from those).
fn routable(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(v) => {
            !(v.is_loopback() || v.is_unspecified() || v.is_multicast() || v.is_link_local())
        }
        IpAddr::V6(v) => {
            !(v.is_loopback()
                || v.is_unspecified()
                || v.is_multicast()
                || (v.segments()[0] & 0xffc0) == 0xfe80)
        }
    }
}

fn family_name(ipv6: bool) -> &'static str {
    if ipv6 { "IPv6" } else { "IPv4" }
}

/// The pod's addresses the kubelet may probe, of one family: the routable addresses on the
/// interface of the pod's default route (its primary interface, the one holding `status.podIP`),
/// or every routable address when there is no default route or none on it.
fn pod_candidates(pod_addrs: &[Addr], defaults: &[DefaultRoute], ipv6: bool) -> Vec<IpAddr> {
    let all: Vec<&Addr> = pod_addrs
        .iter()
        .filter(|a| a.addr.is_ipv6() == ipv6 && routable(a.addr))
        .collect();
    let primary = defaults.iter().find_map(|d| d.dev.as_deref());
    let on_primary: Vec<IpAddr> = all
        .iter()
        .filter(|a| Some(a.iface.as_str()) == primary)
        .map(|a| a.addr)
        .collect();
    if on_primary.is_empty() {
        all.iter().map(|a| a.addr).collect()
    } else {
        on_primary
    }
}

/// Finds the probe source for each family the pod has a routable address in: the preferred
/// source of this namespace's route to the pod's address (`lookup` answers `ip route get`), else
/// the (routable) gateway of the pod's default route of that family. `pod_addrs` and `defaults`
/// are the pod namespace's addresses and default routes.
pub fn find(
    pod_addrs: &[Addr],
    defaults: &[DefaultRoute],
    lookup: &mut dyn FnMut(IpAddr) -> Result<Route, String>,
) -> Found {
    let mut found = Found::default();
    for ipv6 in [false, true] {
        let fam = family_name(ipv6);
        let candidates = pod_candidates(pod_addrs, defaults, ipv6);
        if candidates.is_empty() {
            // No pod address of this family: the kubelet cannot probe over it.
            continue;
        }
        let mut why_not = Vec::new();
        let mut source = None;
        for pod in candidates {
            match lookup(pod) {
                Ok(r) if r.kind == "local" => why_not.push(format!(
                    "the pod's {pod} is an address of this namespace (is netprobe running inside the pod's?)"
                )),
                Ok(Route {
                    prefsrc: Some(s),
                    dev,
                    gateway,
                    ..
                }) if routable(s) => {
                    let via = gateway.map_or(String::new(), |g| format!(" via {g}"));
                    let dev = dev.unwrap_or_else(|| "?".to_string());
                    source = Some(ProbeSource {
                        addr: s,
                        how: format!(
                            "the source address this network namespace (where netprobe runs; the kubelet \
                             probes from the node's) picks for the pod's {pod} (`ip route get {pod}`: dev \
                             {dev}{via})"
                        ),
                    });
                    break;
                }
                Ok(r) => why_not.push(format!(
                    "this namespace's route to the pod's {pod} has no routable preferred source ({})",
                    r.prefsrc.map_or("none".to_string(), |s| s.to_string())
                )),
                Err(e) => why_not.push(format!("this namespace has no route to the pod's {pod} ({e})")),
            }
        }
        if let Some(s) = source {
            found.sources.push(s);
            continue;
        }
        let why = why_not.join("; ");
        match defaults.iter().find(|d| d.ipv6 == ipv6).and_then(|d| d.gateway) {
            Some(g) if routable(g) => found.sources.push(ProbeSource {
                addr: g,
                how: format!(
                    "the gateway of the pod's {fam} default route, because {why} (give --probe-source \
                     when the kubelet's node address differs)"
                ),
            }),
            Some(g) => found.missing.push(format!(
                "{fam}: {why}, and the pod's default route goes via the link-local {g} (as with \
                 Calico), which is not where the kubelet probes from"
            )),
            None => found
                .missing
                .push(format!("{fam}: {why}, and the pod has no {fam} default route")),
        }
    }
    found
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn addr(iface: &str, a: &str, prefix: u8) -> Addr {
        Addr {
            iface: iface.into(),
            addr: ip(a),
            prefix,
        }
    }

    fn route(dev: &str, prefsrc: Option<&str>, gateway: Option<&str>) -> Route {
        Route {
            kind: "unicast".into(),
            dev: Some(dev.into()),
            prefsrc: prefsrc.map(ip),
            gateway: gateway.map(ip),
        }
    }

    fn default(ipv6: bool, gw: &str, dev: &str) -> DefaultRoute {
        DefaultRoute {
            ipv6,
            gateway: Some(ip(gw)),
            dev: Some(dev.into()),
        }
    }

    /// Calico: the pod routes via 169.254.1.1 and fe80::ecee:eeff:feee:eeee on eth0; the node
    /// reaches the pod's /32 over the cali veth (no address) from its own address. The node's
    /// choice wins, both families; the link-local gateways are never used.
    #[test]
    fn calico_takes_the_nodes_source_for_each_family() {
        let pod = [
            addr("lo", "127.0.0.1", 8),
            addr("lo", "::1", 128),
            addr("eth0", "198.51.100.10", 32),
            addr("eth0", "fd00:10::a", 128),
            addr("eth0", "fe80::1c2d:3eff:fe4f:5a6b", 64),
        ];
        let defaults = [
            default(false, "169.254.1.1", "eth0"),
            default(true, "fe80::ecee:eeff:feee:eeee", "eth0"),
        ];
        let mut asked = Vec::new();
        let f = find(&pod, &defaults, &mut |a| {
            asked.push(a);
            Ok(if a.is_ipv4() {
                route("cali1234", Some("203.0.113.5"), None)
            } else {
                route("cali1234", Some("fd00:5::5"), None)
            })
        });
        assert_eq!(asked, [ip("198.51.100.10"), ip("fd00:10::a")]);
        let got: Vec<IpAddr> = f.sources.iter().map(|s| s.addr).collect();
        assert_eq!(got, [ip("203.0.113.5"), ip("fd00:5::5")]);
        assert!(
            f.sources[0]
                .how
                .contains("`ip route get 198.51.100.10`: dev cali1234")
        );
        assert!(f.missing.is_empty());
    }

    /// No route here: the gateway of the pod's default route, said why; a link-local gateway is
    /// refused with the reason; a family without pod addresses is skipped silently.
    #[test]
    fn falls_back_to_a_routable_gateway_only() {
        let pod = [
            addr("eth0", "198.51.100.2", 24),
            addr("eth1", "203.0.113.2", 24),
        ];
        let defaults = [default(false, "198.51.100.1", "eth0")];
        let mut asked = Vec::new();
        let f = find(&pod, &defaults, &mut |a| {
            asked.push(a);
            Err("RTNETLINK answers: Network is unreachable".into())
        });
        // Only the primary interface's address is asked about.
        assert_eq!(asked, [ip("198.51.100.2")]);
        assert_eq!(f.sources.len(), 1);
        assert_eq!(f.sources[0].addr, ip("198.51.100.1"));
        assert!(
            f.sources[0]
                .how
                .contains("this namespace has no route to the pod's 198.51.100.2"),
            "{}",
            f.sources[0].how
        );
        assert!(f.missing.is_empty());

        let calico = [default(false, "169.254.1.1", "eth0")];
        let f = find(&pod[..1], &calico, &mut |_| Err("unreachable".into()));
        assert!(f.sources.is_empty());
        assert_eq!(f.missing.len(), 1);
        assert!(
            f.missing[0].contains("link-local 169.254.1.1"),
            "{:?}",
            f.missing
        );
    }

    /// A local answer (netprobe inside the pod's namespace) or a link-local preferred source is
    /// not a probe source; without a default route every routable address is a candidate.
    #[test]
    fn local_and_link_local_answers_are_not_sources() {
        let pod = [
            addr("eth0", "198.51.100.2", 24),
            addr("eth1", "203.0.113.2", 24),
        ];
        let f = find(&pod, &[], &mut |a| {
            Ok(if a == ip("198.51.100.2") {
                Route {
                    kind: "local".into(),
                    ..route("lo", Some("198.51.100.2"), None)
                }
            } else {
                route("eth1", Some("169.254.7.7"), None)
            })
        });
        assert!(f.sources.is_empty());
        let m = &f.missing[0];
        assert!(m.contains("is an address of this namespace"), "{m}");
        assert!(
            m.contains("no routable preferred source (169.254.7.7)"),
            "{m}"
        );
        assert!(m.contains("the pod has no IPv4 default route"), "{m}");
    }
}
