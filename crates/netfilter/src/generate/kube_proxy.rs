//! kube-proxy iptables-mode rulesets at scale (feature `gen`): N ClusterIP Services × M endpoints,
//! printed as `iptables-save` prints them, for benchmarks and realistic fixtures.
//!
//! The shape follows kube-proxy's `pkg/proxy/iptables/proxier.go` (v1.28+) and the dump in
//! `tests/fixtures/kube-proxy-legacy.txt` taken from a real node: nat `KUBE-SERVICES` holds one
//! `-d VIP/32 -p tcp --dport P -j KUBE-SVC-X` per Service and ends with the NodePort rule;
//! `KUBE-SVC-X` masquerades off-cluster sources and splits with `-m statistic --mode random
//! --probability 1/k` into `KUBE-SEP-Y`, which marks hairpin traffic and DNATs to the endpoint;
//! NodePort Services get a `KUBE-EXT-X` chain reached from `KUBE-NODEPORTS`; `KUBE-POSTROUTING`
//! masquerades marked packets. The filter table has kubelet's `KUBE-FIREWALL` and kube-proxy's
//! `KUBE-FORWARD`, `KUBE-SERVICES` (a REJECT per Service without endpoints),
//! `KUBE-EXTERNAL-SERVICES`, `KUBE-NODEPORTS` and `KUBE-PROXY-FIREWALL`.
//!
//! Addresses are documentation ranges only (RFC 5737), so a generated ruleset can be loaded in a
//! lab namespace without touching real traffic:
//!
//! * Service `i` has ClusterIP `203.0.113.(1 + i mod 254)` and port `1000 + i / 254`: 254 VIPs
//!   carry many ports each, since one /24 cannot give 10,000 Services their own address.
//! * Endpoint `k = i·M + j` is `192.0.2.(1 + k mod 254)` port `8000 + k / 254`; the cluster
//!   (pod) CIDR is `192.0.2.0/24`.
//! * The node is `198.51.100.10`; NodePorts are `30000 + n` for the n-th NodePort Service.
//!
//! User chains are printed in name order and rules grouped by chain, as `iptables-legacy-save`
//! and `iptables-nft-save` (1.8.7+) print them, so the text survives a kernel round trip unchanged.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use crate::model::Backend;

/// The node's address in generated rulesets (RFC 5737 TEST-NET-2).
pub const NODE_ADDR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);

/// The cluster (pod) CIDR the endpoints live in, as kube-proxy's `--cluster-cidr`.
pub const CLUSTER_CIDR: &str = "192.0.2.0/24";

/// Most Services a configuration may ask for (ports stay below 65536).
pub const MAX_SERVICES: usize = 100_000;

/// Most endpoints per Service.
pub const MAX_ENDPOINTS: usize = 100;

/// The first NodePort; kube-proxy's default range is 30000–32767.
const NODEPORT_BASE: usize = 30_000;
const NODEPORT_COUNT: usize = 2_768;

/// What to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KubeProxyConfig {
    /// Number of Services (capped at [`MAX_SERVICES`]).
    pub services: usize,
    /// Endpoints per Service (capped at [`MAX_ENDPOINTS`]).
    pub endpoints: usize,
    /// Every `nodeport_every`-th Service (index ≡ 0) is also a NodePort Service; 0: none. At most
    /// 2,768 get one (the default NodePort range).
    pub nodeport_every: usize,
    /// Every `empty_every`-th Service (index ≡ `empty_every − 1`) has no endpoints: a filter
    /// `REJECT` instead of nat rules; 0: none.
    pub empty_every: usize,
    /// Which `iptables-save` header to print.
    pub backend: Backend,
}

impl KubeProxyConfig {
    /// `services` × `endpoints`, every 10th Service a NodePort, all with endpoints, legacy header.
    pub fn new(services: usize, endpoints: usize) -> KubeProxyConfig {
        KubeProxyConfig {
            services: services.min(MAX_SERVICES),
            endpoints: endpoints.min(MAX_ENDPOINTS),
            nodeport_every: 10,
            empty_every: 0,
            backend: Backend::Legacy,
        }
    }

    fn has_endpoints(&self, i: usize) -> bool {
        self.endpoints > 0
            && (self.empty_every == 0 || i % self.empty_every != self.empty_every - 1)
    }

    /// The NodePort of Service `i`, if it has one.
    pub fn node_port(&self, i: usize) -> Option<u16> {
        if self.nodeport_every == 0 || !i.is_multiple_of(self.nodeport_every) {
            return None;
        }
        let n = i / self.nodeport_every;
        (n < NODEPORT_COUNT)
            .then(|| u16::try_from(NODEPORT_BASE + n).ok())
            .flatten()
    }
}

/// The ClusterIP and port of Service `i` (see the module docs).
pub fn service_addr(i: usize) -> (Ipv4Addr, u16) {
    let i = i.min(MAX_SERVICES);
    (doc_addr([203, 0, 113], i), port(1000, i / 254))
}

/// The address and port of endpoint `j` of Service `i` when each Service has `m` endpoints.
pub fn endpoint_addr(i: usize, j: usize, m: usize) -> (Ipv4Addr, u16) {
    let k = i.min(MAX_SERVICES) * m.min(MAX_ENDPOINTS) + j.min(MAX_ENDPOINTS);
    (doc_addr([192, 0, 2], k), port(8000, k / 254))
}

fn doc_addr(net: [u8; 3], k: usize) -> Ipv4Addr {
    // 1 + k mod 254 is always within 1..=254.
    let host = u8::try_from(1 + k % 254).unwrap_or(1);
    Ipv4Addr::new(net[0], net[1], net[2], host)
}

fn port(base: u16, off: usize) -> u16 {
    u16::try_from(off).map_or(u16::MAX, |o| base.saturating_add(o))
}

/// A chain name as kube-proxy makes them: `PREFIX-` and 16 base32 characters of a hash of the
/// Service (and endpoint). kube-proxy hashes with SHA-256; any well-mixed hash gives the same shape.
fn chain_name(prefix: &str, a: usize, b: usize) -> String {
    const B32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut h = super::Rng::new(((a as u64) << 20) ^ (b as u64) ^ 0x6b75_6265);
    let (x, y) = (h.next_u64(), h.next_u64());
    let mut s = String::with_capacity(prefix.len() + 17);
    s.push_str(prefix);
    s.push('-');
    for n in 0..16u32 {
        let bits = if n < 12 {
            x >> (n * 5)
        } else {
            y >> ((n - 12) * 5)
        };
        s.push(char::from(B32[(bits & 31) as usize]));
    }
    s
}

/// The probability kube-proxy writes for the `j`-th of `m` endpoints (`1/(m−j)`), as
/// `iptables-save` prints it back: xt_statistic stores `lround(2³¹·p)` and libxt_statistic.c
/// prints `%.11f` of it over 2³¹.
fn probability(j: usize, m: usize) -> String {
    let k = (m - j) as f64;
    let raw = (2_147_483_648.0_f64 / k).round();
    format!("{:.11}", raw / 2_147_483_648.0)
}

struct Tables {
    nat: BTreeMap<String, Vec<String>>,
    filter: BTreeMap<String, Vec<String>>,
}

fn push(t: &mut BTreeMap<String, Vec<String>>, chain: &str, rule: String) {
    t.entry(chain.to_string()).or_default().push(rule);
}

/// The `iptables-save` text of a kube-proxy node with `cfg`'s Services (tables nat, filter,
/// mangle, as `iptables-legacy-save` orders them on a kube-proxy node).
pub fn kube_proxy_text(cfg: &KubeProxyConfig) -> String {
    let mut t = Tables {
        nat: BTreeMap::new(),
        filter: BTreeMap::new(),
    };
    for name in [
        "KUBE-KUBELET-CANARY",
        "KUBE-MARK-MASQ",
        "KUBE-NODEPORTS",
        "KUBE-POSTROUTING",
        "KUBE-PROXY-CANARY",
        "KUBE-SERVICES",
    ] {
        t.nat.insert(name.to_string(), Vec::new());
    }
    for name in [
        "KUBE-EXTERNAL-SERVICES",
        "KUBE-FIREWALL",
        "KUBE-FORWARD",
        "KUBE-KUBELET-CANARY",
        "KUBE-NODEPORTS",
        "KUBE-PROXY-CANARY",
        "KUBE-PROXY-FIREWALL",
        "KUBE-SERVICES",
    ] {
        t.filter.insert(name.to_string(), Vec::new());
    }
    fixed_rules(&mut t);
    for i in 0..cfg.services.min(MAX_SERVICES) {
        service(&mut t, cfg, i);
    }
    push(
        &mut t.nat,
        "KUBE-SERVICES",
        "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must \
         be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS"
            .to_string(),
    );
    let tool = match cfg.backend {
        Backend::Legacy => "iptables-save v1.8.9",
        // No iptables tool writes native nftables tables: print them as iptables-nft would.
        Backend::Nft | Backend::Nftables => "iptables-nft-save v1.8.9 (nf_tables)",
    };
    let mut out = String::with_capacity(cfg.services * cfg.endpoints.max(1) * 400);
    let mangle = BTreeMap::from([
        ("KUBE-IPTABLES-HINT".to_string(), Vec::new()),
        ("KUBE-KUBELET-CANARY".to_string(), Vec::new()),
        ("KUBE-PROXY-CANARY".to_string(), Vec::new()),
    ]);
    table(&mut out, tool, "nat", &BUILTIN_NAT, &t.nat);
    table(&mut out, tool, "filter", &BUILTIN_FILTER, &t.filter);
    table(&mut out, tool, "mangle", &BUILTIN_MANGLE, &mangle);
    out
}

const BUILTIN_NAT: [&str; 4] = ["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"];
const BUILTIN_FILTER: [&str; 3] = ["INPUT", "FORWARD", "OUTPUT"];
const BUILTIN_MANGLE: [&str; 5] = ["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"];

fn table(
    out: &mut String,
    tool: &str,
    name: &str,
    builtin: &[&str],
    chains: &BTreeMap<String, Vec<String>>,
) {
    // Writing to a String cannot fail.
    let _ = writeln!(
        out,
        "# Generated by {tool} on Sat Nov 21 13:04:04 2026\n*{name}"
    );
    for b in builtin {
        let _ = writeln!(out, ":{b} ACCEPT [0:0]");
    }
    let user = chains.keys().filter(|c| !builtin.contains(&c.as_str()));
    for c in user.clone() {
        let _ = writeln!(out, ":{c} - [0:0]");
    }
    for c in builtin.iter().copied().chain(user.map(String::as_str)) {
        for r in chains.get(c).into_iter().flatten() {
            out.push_str(r);
            out.push('\n');
        }
    }
    out.push_str("COMMIT\n# Completed on Sat Nov 21 13:04:04 2026\n");
}

fn fixed_rules(t: &mut Tables) {
    let nat: [(&str, &str); 7] = [
        (
            "PREROUTING",
            "-m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
        ),
        (
            "OUTPUT",
            "-m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
        ),
        (
            "POSTROUTING",
            "-m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING",
        ),
        ("KUBE-MARK-MASQ", "-j MARK --set-xmark 0x4000/0x4000"),
        (
            "KUBE-POSTROUTING",
            "-m mark ! --mark 0x4000/0x4000 -j RETURN",
        ),
        ("KUBE-POSTROUTING", "-j MARK --set-xmark 0x4000/0x0"),
        (
            "KUBE-POSTROUTING",
            "-m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE \
             --random-fully",
        ),
    ];
    for (c, r) in nat {
        push(&mut t.nat, c, format!("-A {c} {r}"));
    }
    let lb = "-m conntrack --ctstate NEW -m comment --comment \"kubernetes load balancer \
              firewall\" -j KUBE-PROXY-FIREWALL";
    let ext = "-m conntrack --ctstate NEW -m comment --comment \"kubernetes externally-visible \
               service portals\" -j KUBE-EXTERNAL-SERVICES";
    let svc = "-m conntrack --ctstate NEW -m comment --comment \"kubernetes service portals\" \
               -j KUBE-SERVICES";
    let filter: [(&str, &str); 14] = [
        ("INPUT", lb),
        (
            "INPUT",
            "-m comment --comment \"kubernetes health check service ports\" -j KUBE-NODEPORTS",
        ),
        ("INPUT", ext),
        ("INPUT", "-j KUBE-FIREWALL"),
        ("FORWARD", lb),
        (
            "FORWARD",
            "-m comment --comment \"kubernetes forwarding rules\" -j KUBE-FORWARD",
        ),
        ("FORWARD", svc),
        ("FORWARD", ext),
        ("OUTPUT", lb),
        ("OUTPUT", svc),
        ("OUTPUT", "-j KUBE-FIREWALL"),
        (
            "KUBE-FIREWALL",
            "! -s 127.0.0.0/8 -d 127.0.0.0/8 -m comment --comment \"block incoming localnet \
             connections\" -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP",
        ),
        (
            "KUBE-FORWARD",
            "-m conntrack --ctstate INVALID -m comment --comment \"kubernetes forwarding rules\" \
             -j DROP",
        ),
        (
            "KUBE-FORWARD",
            "-m comment --comment \"kubernetes forwarding rules\" -m mark --mark 0x4000/0x4000 \
             -j ACCEPT",
        ),
    ];
    for (c, r) in filter {
        push(&mut t.filter, c, format!("-A {c} {r}"));
    }
    push(
        &mut t.filter,
        "KUBE-FORWARD",
        "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding conntrack rule\" -m \
         conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
            .to_string(),
    );
}

fn service(t: &mut Tables, cfg: &KubeProxyConfig, i: usize) {
    let (vip, vport) = service_addr(i);
    let name = format!("ns{}/svc{i}:http", i / 100);
    let node_port = cfg.node_port(i);
    if !cfg.has_endpoints(i) {
        let r = format!(
            "-A KUBE-SERVICES -d {vip}/32 -p tcp -m comment --comment \"{name} has no \
             endpoints\" -m tcp --dport {vport} -j REJECT --reject-with icmp-port-unreachable"
        );
        push(&mut t.filter, "KUBE-SERVICES", r);
        if let Some(np) = node_port {
            let r = format!(
                "-A KUBE-EXTERNAL-SERVICES -p tcp -m comment --comment \"{name} has no \
                 endpoints\" -m addrtype --dst-type LOCAL -m tcp --dport {np} -j REJECT \
                 --reject-with icmp-port-unreachable"
            );
            push(&mut t.filter, "KUBE-EXTERNAL-SERVICES", r);
        }
        return;
    }
    let svc = chain_name("KUBE-SVC", i, usize::MAX);
    push(
        &mut t.nat,
        "KUBE-SERVICES",
        format!(
            "-A KUBE-SERVICES -d {vip}/32 -p tcp -m comment --comment \"{name} cluster IP\" -m \
             tcp --dport {vport} -j {svc}"
        ),
    );
    let mut rules = vec![format!(
        "-A {svc} ! -s {CLUSTER_CIDR} -d {vip}/32 -p tcp -m comment --comment \"{name} cluster \
         IP\" -m tcp --dport {vport} -j KUBE-MARK-MASQ"
    )];
    for j in 0..cfg.endpoints {
        let (ep, eport) = endpoint_addr(i, j, cfg.endpoints);
        let sep = chain_name("KUBE-SEP", i, j);
        let stat = if j + 1 < cfg.endpoints {
            format!(
                " -m statistic --mode random --probability {}",
                probability(j, cfg.endpoints)
            )
        } else {
            String::new()
        };
        rules.push(format!(
            "-A {svc} -m comment --comment \"{name} -> {ep}:{eport}\"{stat} -j {sep}"
        ));
        t.nat.insert(
            sep.clone(),
            vec![
                format!("-A {sep} -s {ep}/32 -m comment --comment \"{name}\" -j KUBE-MARK-MASQ"),
                format!(
                    "-A {sep} -p tcp -m comment --comment \"{name}\" -m tcp -j DNAT \
                     --to-destination {ep}:{eport}"
                ),
            ],
        );
    }
    t.nat.insert(svc.clone(), rules);
    if let Some(np) = node_port {
        let ext = chain_name("KUBE-EXT", i, usize::MAX);
        push(
            &mut t.nat,
            "KUBE-NODEPORTS",
            format!(
                "-A KUBE-NODEPORTS -p tcp -m comment --comment \"{name}\" -m tcp --dport {np} \
                 -j {ext}"
            ),
        );
        t.nat.insert(
            ext.clone(),
            vec![
                format!(
                    "-A {ext} -m comment --comment \"masquerade traffic for {name} external \
                     destinations\" -j KUBE-MARK-MASQ"
                ),
                format!("-A {ext} -j {svc}"),
            ],
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use crate::model::TableName;
    use crate::parse::{ParseOptions, parse_save};
    use crate::render::render_ruleset;

    #[test]
    fn counts_and_round_trip() {
        let mut cfg = KubeProxyConfig::new(300, 3);
        cfg.empty_every = 7;
        let text = kube_proxy_text(&cfg);
        let rs = parse_save(&text, &ParseOptions::default()).unwrap();
        let nat = rs.table(TableName::Nat).unwrap();
        let empty = 300 / 7;
        let with_eps = 300 - empty;
        // One rule per Service with endpoints, plus the trailing NodePort rule.
        assert_eq!(
            nat.chain("KUBE-SERVICES").unwrap().rules.len(),
            with_eps + 1
        );
        let seps = nat
            .chains
            .iter()
            .filter(|c| c.name.starts_with("KUBE-SEP-"))
            .count();
        assert_eq!(seps, with_eps * 3, "distinct endpoint chain names");
        let filter = rs.table(TableName::Filter).unwrap();
        assert_eq!(filter.chain("KUBE-SERVICES").unwrap().rules.len(), empty);
        assert_eq!(
            render_ruleset(&rs),
            render_ruleset(&parse_save(&render_ruleset(&rs), &ParseOptions::default()).unwrap())
        );
    }

    #[test]
    fn probabilities_as_iptables_save_prints_them() {
        assert_eq!(probability(0, 3), "0.33333333349");
        assert_eq!(probability(1, 3), "0.50000000000");
        assert_eq!(probability(0, 5), "0.20000000019");
    }

    #[test]
    fn addresses_stay_in_documentation_ranges() {
        for i in [0, 253, 254, 9_999, MAX_SERVICES - 1] {
            let (a, p) = service_addr(i);
            assert_eq!(a.octets()[..3], [203, 0, 113]);
            assert!(p >= 1000);
            let (e, ep) = endpoint_addr(i, 99, 100);
            assert_eq!(e.octets()[..3], [192, 0, 2]);
            assert!((8000..u16::MAX).contains(&ep));
        }
    }
}
