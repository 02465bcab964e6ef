//! The chains container runtimes and CNI plugins install on a node (feature `gen`), printed as
//! `iptables-save` prints them, as realistic fixtures for the evaluator and for `netprobe trace`:
//!
//! * [`docker_text`]: Docker's `DOCKER`, `DOCKER-USER`, `DOCKER-ISOLATION-STAGE-1/2` filter
//!   chains and the nat `DOCKER` chain (published ports as DNAT), for the default bridge
//!   `docker0` and one user-defined bridge, with the FORWARD policy DROP Docker sets
//!   (moby `libnetwork/iptables`, `libnetwork/drivers/bridge/setup_ip_tables_linux.go`).
//! * [`calico_text`]: Calico felix's iptables dataplane: `cali-FORWARD` dispatching on the `cali+`
//!   workload interfaces to per-endpoint `cali-tw-*` / `cali-fw-*` chains, policy chains
//!   `cali-pi-*` that accept by setting mark `0x10000`, profile chains `cali-pri-*`/`cali-pro-*`,
//!   the final `FORWARD` ACCEPT on that mark, "Unknown interface" drops, and NAT-outgoing through
//!   the ipsets `cali40masq-ipam-pools` / `cali40all-ipam-pools` (felix `rules/static.go`,
//!   `rules/dispatch.go`, `rules/endpoints.go`). felix's raw-table `-m rpfilter` check is left
//!   out: the evaluator does not model reverse-path lookups, so it would make every workload
//!   flow undetermined.
//! * [`antrea_text`]: Antrea's `ANTREA-*` chains (agent `pkg/agent/route/route_linux.go`): raw
//!   NOTRACK of Geneve encapsulation, FORWARD accept to and from `antrea-gw0`, masquerade of Pod
//!   traffic leaving the cluster through the ipset `ANTREA-POD-IP`.
//!
//! Addresses are documentation ranges only (RFC 5737): the node is
//! [`super::kube_proxy::NODE_ADDR`] on `eth0`, workloads live in [`POD_CIDR`]
//! (`192.0.2.(2 + i)`), Docker's user-defined bridge is `203.0.113.0/24`.
//! The kernel round-trip tests load each text with `iptables-restore` (both backends) and
//! compare `iptables-save`'s output line for line.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use super::{Rng, save_table, save_tool};
use crate::model::Backend;

/// The workloads' (Pods', containers') subnet on the node.
pub const POD_CIDR: &str = "192.0.2.0/24";

/// Most workloads a configuration may ask for (they must fit in [`POD_CIDR`]).
pub const MAX_WORKLOADS: usize = 250;

/// Docker's user-defined bridge (`docker network create`) and its subnet.
pub const DOCKER_USER_BRIDGE: &str = "br-5f1e2d3c4b5a";
/// The subnet of [`DOCKER_USER_BRIDGE`].
pub const DOCKER_USER_CIDR: &str = "203.0.113.0/24";
/// The host port published for the container on [`DOCKER_USER_BRIDGE`] (→ `203.0.113.2:80`).
pub const DOCKER_USER_PORT: u16 = 9000;

/// Calico's mark bit meaning "a policy or profile accepted the packet" (felix `MarkAccept`).
pub const CALICO_ACCEPT_MARK: u32 = 0x10000;

/// Antrea's gateway interface between the OVS bridge and the host.
pub const ANTREA_GATEWAY: &str = "antrea-gw0";

/// What to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeConfig {
    /// Containers / Pods on the node (capped at [`MAX_WORKLOADS`]).
    pub workloads: usize,
    /// Which `iptables-save` header to print.
    pub backend: Backend,
}

impl NodeConfig {
    /// `workloads` workloads, legacy header.
    pub fn new(workloads: usize) -> NodeConfig {
        NodeConfig {
            workloads: workloads.min(MAX_WORKLOADS),
            backend: Backend::Legacy,
        }
    }
}

/// The address of workload `i`: `192.0.2.(2 + i)`.
pub fn workload_addr(i: usize) -> Ipv4Addr {
    let host = u8::try_from(2 + i.min(MAX_WORKLOADS)).unwrap_or(u8::MAX);
    Ipv4Addr::new(192, 0, 2, host)
}

/// The host port Docker publishes for container `i` (→ its port 80): `8000 + i`.
pub fn docker_port(i: usize) -> u16 {
    u16::try_from(8000 + i.min(MAX_WORKLOADS)).unwrap_or(u16::MAX)
}

/// The host side of workload `i`'s veth as Calico names it: `cali` and 11 hex digits of a hash
/// of the endpoint (15 characters, the kernel's IFNAMSIZ − 1).
pub fn calico_iface(i: usize) -> String {
    let mut r = Rng::new(0x00ca_11c0 ^ i as u64);
    format!("cali{:011x}", r.next_u64() & 0xfff_ffff_ffff)
}

/// Whether Calico workload `i` has an ingress policy (even `i`: only TCP port 80 is allowed in);
/// odd ones are governed by their namespace profile alone, which allows everything.
pub fn calico_has_policy(i: usize) -> bool {
    i.is_multiple_of(2)
}

#[derive(Default)]
struct Tables {
    raw: BTreeMap<String, Vec<String>>,
    mangle: BTreeMap<String, Vec<String>>,
    nat: BTreeMap<String, Vec<String>>,
    filter: BTreeMap<String, Vec<String>>,
}

/// Appends `-A chain spec` (and declares the chain).
fn add(t: &mut BTreeMap<String, Vec<String>>, chain: &str, spec: &str) {
    t.entry(chain.to_string())
        .or_default()
        .push(format!("-A {chain} {spec}"));
}

/// Declares an empty chain.
fn declare(t: &mut BTreeMap<String, Vec<String>>, chain: &str) {
    t.entry(chain.to_string()).or_default();
}

const ACCEPT: &str = "ACCEPT";

fn render(backend: Backend, t: &Tables, forward_policy: &str) -> String {
    let tool = save_tool(backend);
    let mut out = String::new();
    let hooks5 = [
        ("PREROUTING", ACCEPT),
        ("INPUT", ACCEPT),
        ("FORWARD", ACCEPT),
        ("OUTPUT", ACCEPT),
        ("POSTROUTING", ACCEPT),
    ];
    let nat = [
        ("PREROUTING", ACCEPT),
        ("INPUT", ACCEPT),
        ("OUTPUT", ACCEPT),
        ("POSTROUTING", ACCEPT),
    ];
    let filter = [
        ("INPUT", ACCEPT),
        ("FORWARD", forward_policy),
        ("OUTPUT", ACCEPT),
    ];
    if !t.raw.is_empty() {
        let raw = [("PREROUTING", ACCEPT), ("OUTPUT", ACCEPT)];
        save_table(&mut out, tool, "raw", &raw, &t.raw);
    }
    if !t.mangle.is_empty() {
        save_table(&mut out, tool, "mangle", &hooks5, &t.mangle);
    }
    save_table(&mut out, tool, "nat", &nat, &t.nat);
    save_table(&mut out, tool, "filter", &filter, &t.filter);
    out
}

/// Docker's rules for `cfg.workloads` containers on `docker0` (container `i` at
/// [`workload_addr`], port 80 published on host port [`docker_port`]) and one container
/// `203.0.113.2` on the user-defined bridge [`DOCKER_USER_BRIDGE`], published on
/// [`DOCKER_USER_PORT`].
pub fn docker_text(cfg: &NodeConfig) -> String {
    let mut t = Tables::default();
    let (nat, filter) = (&mut t.nat, &mut t.filter);
    add(nat, "PREROUTING", "-m addrtype --dst-type LOCAL -j DOCKER");
    add(
        nat,
        "OUTPUT",
        "! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER",
    );
    let bridges = [
        (DOCKER_USER_BRIDGE, DOCKER_USER_CIDR),
        ("docker0", POD_CIDR),
    ];
    for (br, cidr) in bridges {
        add(
            nat,
            "POSTROUTING",
            &format!("-s {cidr} ! -o {br} -j MASQUERADE"),
        );
        add(nat, "DOCKER", &format!("-i {br} -j RETURN"));
    }
    let mut published = vec![(
        Ipv4Addr::new(203, 0, 113, 2),
        DOCKER_USER_BRIDGE,
        DOCKER_USER_PORT,
    )];
    published.extend(
        (0..cfg.workloads.min(MAX_WORKLOADS))
            .map(|i| (workload_addr(i), "docker0", docker_port(i))),
    );
    for (addr, br, port) in &published {
        add(
            nat,
            "POSTROUTING",
            &format!("-s {addr}/32 -d {addr}/32 -p tcp -m tcp --dport 80 -j MASQUERADE"),
        );
        add(
            nat,
            "DOCKER",
            &format!("! -i {br} -p tcp -m tcp --dport {port} -j DNAT --to-destination {addr}:80"),
        );
        add(
            filter,
            "DOCKER",
            &format!("-d {addr}/32 ! -i {br} -o {br} -p tcp -m tcp --dport 80 -j ACCEPT"),
        );
    }
    add(filter, "FORWARD", "-j DOCKER-USER");
    add(filter, "FORWARD", "-j DOCKER-ISOLATION-STAGE-1");
    for (br, _) in bridges {
        add(
            filter,
            "FORWARD",
            &format!("-o {br} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"),
        );
        add(filter, "FORWARD", &format!("-o {br} -j DOCKER"));
        add(filter, "FORWARD", &format!("-i {br} ! -o {br} -j ACCEPT"));
        add(filter, "FORWARD", &format!("-i {br} -o {br} -j ACCEPT"));
        add(
            filter,
            "DOCKER-ISOLATION-STAGE-1",
            &format!("-i {br} ! -o {br} -j DOCKER-ISOLATION-STAGE-2"),
        );
        add(
            filter,
            "DOCKER-ISOLATION-STAGE-2",
            &format!("-o {br} -j DROP"),
        );
    }
    add(filter, "DOCKER-ISOLATION-STAGE-1", "-j RETURN");
    add(filter, "DOCKER-ISOLATION-STAGE-2", "-j RETURN");
    add(filter, "DOCKER-USER", "-j RETURN");
    render(cfg.backend, &t, "DROP")
}

/// A felix-style rule id comment: `-m comment --comment "cali:XXXXXXXXXXXXXXXX"` (16 characters
/// of a hash of the chain and rule position, as felix hashes the rule).
fn cali_id(chain: &str, n: usize) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
    let seed = chain.bytes().fold(n as u64, |h, b| {
        h.wrapping_mul(31).wrapping_add(u64::from(b))
    });
    let mut r = Rng::new(seed);
    let id: String = (0..16)
        .map(|_| char::from(ALPHABET[(r.next_u64() % 64) as usize]))
        .collect();
    format!("-m comment --comment \"cali:{id}\"")
}

/// Appends a felix rule: `pre` (interface / protocol selectors, printed before the matches),
/// the rule-id comment, then `rest`.
fn cali(t: &mut BTreeMap<String, Vec<String>>, chain: &str, pre: &str, rest: &str) {
    let n = t.get(chain).map_or(0, Vec::len);
    let id = cali_id(chain, n);
    let spec = if pre.is_empty() {
        format!("{id} {rest}")
    } else {
        format!("{pre} {id} {rest}")
    };
    add(t, chain, &spec);
}

/// felix's fixed rules: (table, chain, selectors printed before the id comment, the rest).
const CALICO_FIXED: &[(&str, &str, &str, &str)] = &[
    ("raw", "PREROUTING", "", "-j cali-PREROUTING"),
    ("raw", "OUTPUT", "", "-j cali-OUTPUT"),
    (
        "raw",
        "cali-PREROUTING",
        "",
        "-j MARK --set-xmark 0x0/0xf0000",
    ),
    (
        "raw",
        "cali-PREROUTING",
        "-i cali+",
        "-j MARK --set-xmark 0x40000/0x40000",
    ),
    (
        "raw",
        "cali-PREROUTING",
        "",
        "-m mark --mark 0x0/0x40000 -j cali-from-host-endpoint",
    ),
    (
        "raw",
        "cali-PREROUTING",
        "",
        "-m mark --mark 0x10000/0x10000 -j ACCEPT",
    ),
    ("raw", "cali-OUTPUT", "", "-j MARK --set-xmark 0x0/0xf0000"),
    ("raw", "cali-OUTPUT", "", "-j cali-to-host-endpoint"),
    (
        "raw",
        "cali-OUTPUT",
        "",
        "-m mark --mark 0x10000/0x10000 -j ACCEPT",
    ),
    ("mangle", "PREROUTING", "", "-j cali-PREROUTING"),
    (
        "mangle",
        "cali-PREROUTING",
        "",
        "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
    ),
    (
        "mangle",
        "cali-PREROUTING",
        "",
        "-m mark --mark 0x10000/0x10000 -j ACCEPT",
    ),
    (
        "mangle",
        "cali-PREROUTING",
        "",
        "-j cali-from-host-endpoint",
    ),
    ("nat", "PREROUTING", "", "-j cali-PREROUTING"),
    ("nat", "OUTPUT", "", "-j cali-OUTPUT"),
    ("nat", "POSTROUTING", "", "-j cali-POSTROUTING"),
    ("nat", "cali-PREROUTING", "", "-j cali-fip-dnat"),
    ("nat", "cali-OUTPUT", "", "-j cali-fip-dnat"),
    ("nat", "cali-POSTROUTING", "", "-j cali-fip-snat"),
    ("nat", "cali-POSTROUTING", "", "-j cali-nat-outgoing"),
    (
        "nat",
        "cali-nat-outgoing",
        "",
        "-m set --match-set cali40masq-ipam-pools src -m set ! --match-set cali40all-ipam-pools \
         dst -j MASQUERADE --random-fully",
    ),
    ("filter", "INPUT", "", "-j cali-INPUT"),
    ("filter", "FORWARD", "", "-j cali-FORWARD"),
    (
        "filter",
        "FORWARD",
        "",
        "-m comment --comment \"Policy explicitly accepted packet.\" -m mark --mark \
         0x10000/0x10000 -j ACCEPT",
    ),
    ("filter", "OUTPUT", "", "-j cali-OUTPUT"),
    (
        "filter",
        "cali-FORWARD",
        "",
        "-j MARK --set-xmark 0x0/0xe0000",
    ),
    (
        "filter",
        "cali-FORWARD",
        "",
        "-m mark --mark 0x0/0x10000 -j cali-from-hep-forward",
    ),
    (
        "filter",
        "cali-FORWARD",
        "-i cali+",
        "-j cali-from-wl-dispatch",
    ),
    (
        "filter",
        "cali-FORWARD",
        "-o cali+",
        "-j cali-to-wl-dispatch",
    ),
    ("filter", "cali-FORWARD", "", "-j cali-to-hep-forward"),
    ("filter", "cali-FORWARD", "", "-j cali-cidr-block"),
    ("filter", "cali-INPUT", "-i cali+", "-g cali-wl-to-host"),
    (
        "filter",
        "cali-INPUT",
        "",
        "-m mark --mark 0x10000/0x10000 -j ACCEPT",
    ),
    (
        "filter",
        "cali-INPUT",
        "",
        "-j MARK --set-xmark 0x0/0xf0000",
    ),
    ("filter", "cali-INPUT", "", "-j cali-from-host-endpoint"),
    (
        "filter",
        "cali-INPUT",
        "",
        "-m comment --comment \"Host endpoint policy accepted packet.\" -m mark --mark \
         0x10000/0x10000 -j ACCEPT",
    ),
    ("filter", "cali-wl-to-host", "", "-j cali-from-wl-dispatch"),
    (
        "filter",
        "cali-wl-to-host",
        "",
        "-m comment --comment \"Configured DefaultEndpointToHostAction\" -j ACCEPT",
    ),
    (
        "filter",
        "cali-OUTPUT",
        "",
        "-m mark --mark 0x10000/0x10000 -j ACCEPT",
    ),
    ("filter", "cali-OUTPUT", "-o cali+", "-j RETURN"),
    (
        "filter",
        "cali-OUTPUT",
        "",
        "-j MARK --set-xmark 0x0/0xf0000",
    ),
    (
        "filter",
        "cali-OUTPUT",
        "",
        "-m conntrack ! --ctstate DNAT -j cali-to-host-endpoint",
    ),
    (
        "filter",
        "cali-OUTPUT",
        "",
        "-m comment --comment \"Host endpoint policy accepted packet.\" -m mark --mark \
         0x10000/0x10000 -j ACCEPT",
    ),
    (
        "filter",
        "cali-pri-kns.default",
        "",
        "-m comment --comment \"profile kns.default ingress\" -j MARK --set-xmark 0x10000/0x10000",
    ),
    (
        "filter",
        "cali-pri-kns.default",
        "",
        "-m mark --mark 0x10000/0x10000 -j RETURN",
    ),
    (
        "filter",
        "cali-pro-kns.default",
        "",
        "-m comment --comment \"profile kns.default egress\" -j MARK --set-xmark 0x10000/0x10000",
    ),
    (
        "filter",
        "cali-pro-kns.default",
        "",
        "-m mark --mark 0x10000/0x10000 -j RETURN",
    ),
    (
        "filter",
        "cali-pi-_allow-http",
        "-p tcp",
        "-m comment --comment \"Policy default/knp.default.allow-http ingress\" -m tcp --dport 80 \
         -j MARK --set-xmark 0x10000/0x10000",
    ),
    (
        "filter",
        "cali-pi-_allow-http",
        "",
        "-m mark --mark 0x10000/0x10000 -j RETURN",
    ),
];

/// felix's chains that are declared but empty on a node without host endpoints or floating IPs.
const CALICO_EMPTY: &[(&str, &str)] = &[
    ("raw", "cali-from-host-endpoint"),
    ("raw", "cali-to-host-endpoint"),
    ("mangle", "cali-from-host-endpoint"),
    ("nat", "cali-fip-dnat"),
    ("nat", "cali-fip-snat"),
    ("filter", "cali-from-hep-forward"),
    ("filter", "cali-to-hep-forward"),
    ("filter", "cali-cidr-block"),
    ("filter", "cali-from-host-endpoint"),
    ("filter", "cali-to-host-endpoint"),
];

impl Tables {
    fn get(&mut self, table: &str) -> &mut BTreeMap<String, Vec<String>> {
        match table {
            "raw" => &mut self.raw,
            "mangle" => &mut self.mangle,
            "nat" => &mut self.nat,
            _ => &mut self.filter,
        }
    }
}

/// Calico felix's iptables dataplane for `cfg.workloads` local workloads (workload `i` at
/// [`workload_addr`] behind [`calico_iface`]; [`calico_has_policy`] says which have an ingress
/// policy allowing only TCP port 80).
pub fn calico_text(cfg: &NodeConfig) -> String {
    let mut t = Tables::default();
    for (table, chain, pre, rest) in CALICO_FIXED {
        cali(t.get(table), chain, pre, rest);
    }
    for (table, chain) in CALICO_EMPTY {
        declare(t.get(table), chain);
    }
    for i in 0..cfg.workloads.min(MAX_WORKLOADS) {
        calico_workload(&mut t.filter, i);
    }
    let unknown = "-m comment --comment \"Unknown interface\" -j DROP";
    cali(&mut t.filter, "cali-from-wl-dispatch", "", unknown);
    cali(&mut t.filter, "cali-to-wl-dispatch", "", unknown);
    render(cfg.backend, &t, ACCEPT)
}

/// The dispatch entries and the per-endpoint chains of workload `i`.
fn calico_workload(f: &mut BTreeMap<String, Vec<String>>, i: usize) {
    let iface = calico_iface(i);
    let (tw, fw) = (format!("cali-tw-{iface}"), format!("cali-fw-{iface}"));
    cali(
        f,
        "cali-from-wl-dispatch",
        &format!("-i {iface}"),
        &format!("-g {fw}"),
    );
    cali(
        f,
        "cali-to-wl-dispatch",
        &format!("-o {iface}"),
        &format!("-g {tw}"),
    );
    for chain in [&tw, &fw] {
        cali(
            f,
            chain,
            "",
            "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        );
        cali(f, chain, "", "-m conntrack --ctstate INVALID -j DROP");
        cali(f, chain, "", "-j MARK --set-xmark 0x0/0x10000");
    }
    if calico_has_policy(i) {
        cali(
            f,
            &tw,
            "",
            "-m comment --comment \"Start of policies\" -j MARK --set-xmark 0x0/0x20000",
        );
        cali(
            f,
            &tw,
            "",
            "-m mark --mark 0x0/0x20000 -j cali-pi-_allow-http",
        );
        cali(
            f,
            &tw,
            "",
            "-m comment --comment \"Return if policy accepted\" -m mark --mark \
             0x10000/0x10000 -j RETURN",
        );
        cali(
            f,
            &tw,
            "",
            "-m comment --comment \"Drop if no policies passed packet\" -m mark --mark \
             0x0/0x20000 -j DROP",
        );
    }
    cali(
        f,
        &fw,
        "-p udp",
        "-m comment --comment \"Drop VXLAN encapped packets originating in workloads\" -m \
         multiport --dports 4789 -j DROP",
    );
    for (chain, profile) in [(&tw, "cali-pri-kns.default"), (&fw, "cali-pro-kns.default")] {
        cali(f, chain, "", &format!("-j {profile}"));
        cali(
            f,
            chain,
            "",
            "-m comment --comment \"Return if profile accepted\" -m mark --mark \
             0x10000/0x10000 -j RETURN",
        );
        cali(
            f,
            chain,
            "",
            "-m comment --comment \"Drop if no profiles matched\" -j DROP",
        );
    }
}

/// Antrea's rules on a node whose Pods are in [`POD_CIDR`] behind [`ANTREA_GATEWAY`]; the ipset
/// `ANTREA-POD-IP` (hash:net) must hold every Node's Pod CIDR for the masquerade rule to be
/// decided.
pub fn antrea_text(cfg: &NodeConfig) -> String {
    let mut t = Tables::default();
    let jump = |t: &mut BTreeMap<String, Vec<String>>, hook: &str, what: &str, to: &str| {
        add(
            t,
            hook,
            &format!("-m comment --comment \"Antrea: jump to Antrea {what} rules\" -j {to}"),
        );
    };
    jump(&mut t.raw, "PREROUTING", "prerouting", "ANTREA-PREROUTING");
    jump(&mut t.raw, "OUTPUT", "output", "ANTREA-OUTPUT");
    add(
        &mut t.raw,
        "ANTREA-PREROUTING",
        "-p udp -m comment --comment \"Antrea: do not track incoming encapsulation packets\" \
         -m udp --dport 6081 -m addrtype --dst-type LOCAL -j CT --notrack",
    );
    add(
        &mut t.raw,
        "ANTREA-OUTPUT",
        "-p udp -m comment --comment \"Antrea: do not track outgoing encapsulation packets\" \
         -m udp --dport 6081 -m addrtype --src-type LOCAL -j CT --notrack",
    );
    jump(&mut t.mangle, "PREROUTING", "mangle", "ANTREA-MANGLE");
    jump(&mut t.mangle, "OUTPUT", "output", "ANTREA-OUTPUT");
    declare(&mut t.mangle, "ANTREA-MANGLE");
    declare(&mut t.mangle, "ANTREA-OUTPUT");
    jump(&mut t.filter, "INPUT", "input", "ANTREA-INPUT");
    jump(&mut t.filter, "FORWARD", "forwarding", "ANTREA-FORWARD");
    jump(&mut t.filter, "OUTPUT", "output", "ANTREA-OUTPUT");
    declare(&mut t.filter, "ANTREA-INPUT");
    declare(&mut t.filter, "ANTREA-OUTPUT");
    add(
        &mut t.filter,
        "ANTREA-FORWARD",
        &format!(
            "-i {ANTREA_GATEWAY} -m comment --comment \"Antrea: accept packets from local \
             Pods\" -j ACCEPT"
        ),
    );
    add(
        &mut t.filter,
        "ANTREA-FORWARD",
        &format!(
            "-o {ANTREA_GATEWAY} -m comment --comment \"Antrea: accept packets to local Pods\" \
             -j ACCEPT"
        ),
    );
    jump(&mut t.nat, "PREROUTING", "prerouting", "ANTREA-PREROUTING");
    jump(&mut t.nat, "OUTPUT", "output", "ANTREA-OUTPUT");
    jump(
        &mut t.nat,
        "POSTROUTING",
        "postrouting",
        "ANTREA-POSTROUTING",
    );
    declare(&mut t.nat, "ANTREA-PREROUTING");
    declare(&mut t.nat, "ANTREA-OUTPUT");
    add(
        &mut t.nat,
        "ANTREA-POSTROUTING",
        &format!(
            "-s {POD_CIDR} ! -o {ANTREA_GATEWAY} -m comment --comment \"Antrea: masquerade Pod \
             to external packets\" -m set ! --match-set ANTREA-POD-IP dst -j MASQUERADE"
        ),
    );
    render(cfg.backend, &t, ACCEPT)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use crate::model::TableName;
    use crate::parse::{ParseOptions, parse_save};
    use crate::render::render_ruleset;

    #[test]
    fn every_generator_parses_and_round_trips() {
        let cfg = NodeConfig::new(6);
        for text in [docker_text(&cfg), calico_text(&cfg), antrea_text(&cfg)] {
            let rs = parse_save(&text, &ParseOptions::default()).unwrap();
            assert!(rs.rule_count() > 10);
            let again = parse_save(&render_ruleset(&rs), &ParseOptions::default()).unwrap();
            assert_eq!(render_ruleset(&rs), render_ruleset(&again));
            assert!(rs.table(TableName::Filter).is_some());
        }
    }

    #[test]
    fn calico_interfaces_are_distinct_and_fit_ifnamsiz() {
        let names: std::collections::BTreeSet<String> =
            (0..MAX_WORKLOADS).map(calico_iface).collect();
        assert_eq!(names.len(), MAX_WORKLOADS);
        assert!(names.iter().all(|n| n.len() == 15 && n.starts_with("cali")));
    }

    #[test]
    fn addresses_stay_in_documentation_ranges() {
        assert_eq!(workload_addr(0), Ipv4Addr::new(192, 0, 2, 2));
        assert_eq!(workload_addr(MAX_WORKLOADS), Ipv4Addr::new(192, 0, 2, 252));
    }
}
