//! Differential test of the packet-path evaluator against the kernel (needs root, network
//! namespaces, iptables-legacy/-nft, nft and conntrack; fails, never skips, where they are missing).
//!
//! The lab: three namespaces, client (198.51.100.1) — router — server (203.0.113.1), joined by
//! veth pairs with permanent neighbour entries. Only the router holds rules under test: each case
//! ([`netfilter::generate::cases`]) restores a legacy and an nf_tables ruleset there (all five
//! tables each, so a restore replaces the previous case's), flushes conntrack, and sends one
//! hand-built packet (a TCP SYN, a UDP datagram or an ICMP echo request, from a raw socket) along
//! one of four paths: client → server (forwarded), client → router (input), router → client or
//! server (local output), router → itself (loopback).
//!
//! The outcome is read from a native nftables table in the router that only counts (no verdicts,
//! so by nft(8) "OVERALL EVALUATION OF THE RULESET" it cannot change any packet's fate):
//! * chains at priority −1000 on prerouting/output (before raw at −300) count the test packet
//!   arriving, and every TCP RST and ICMP destination-unreachable the router emits (a REJECT's
//!   answer, counted before the router's own OUTPUT rules could drop it);
//! * chains at priority +1000 on input and postrouting (after nat at +100, the last iptables
//!   table) count the test packet having survived every chain of its path.
//!
//! Survived → accept; else an answer of the right kind → reject; else drop. The client and the
//! server drop everything in raw PREROUTING, so nothing answers the test packet from beyond the
//! router. The kernel's outcome must equal the evaluator's verdict, or with `-m statistic` one of
//! its branches' verdicts. `undetermined` is accepted only on cases the generator marked as holding
//! something undecidable by design, and must stay a small minority.
//!
//! Runs: `differential_kernel_agrees` (CI) runs `NETFILTER_DIFF_CASES` cases (default 1000) from
//! seed `NETFILTER_DIFF_SEED` (default fixed); case `i` is generated from seed `SEED + i`, which is
//! printed with any disagreement. Reproduce one case with
//! `NETFILTER_DIFF_SEED=<case seed> NETFILTER_DIFF_CASES=1`. `regressions_kernel_agrees` runs the
//! hand-written cases and the seeds of past disagreements.
#![allow(clippy::unwrap_used, reason = "tests")]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::{Duration, Instant};

use lab::{Netns, Veth, run_bounded};
use netfilter::eval::{Flow, NatKind, Origin, RuleRef, Trace, Traces, Verdict, trace};
use netfilter::generate::cases::{Case, CasePath, Lab, case, packet_len};
use netfilter::target::RejectWith;
use netfilter::{Backend, Family, ParseOptions, parse_save};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// Default first seed of the CI run (fixed, so CI is reproducible; the long run takes another).
const DEFAULT_SEED: u64 = 0x0D1F_F000;
/// Default number of cases.
const DEFAULT_CASES: u64 = 1000;
/// Longest wait for the test packet to show up at the router.
const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(2);
/// Time limit of one command in the lab.
const CMD_TIMEOUT: Duration = Duration::from_secs(20);

/// What the kernel did with the test packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Accepted,
    Dropped,
    /// Answered with a TCP RST.
    Reset,
    /// Answered with ICMP destination unreachable of this code.
    Unreachable(u8),
    /// Answered with ICMPv6 destination unreachable of this code.
    Unreachable6(u8),
}

fn expected(v: &Verdict) -> Option<Outcome> {
    Some(match v {
        Verdict::Accept => Outcome::Accepted,
        Verdict::Drop => Outcome::Dropped,
        Verdict::Reject { with } => match with {
            RejectWith::TcpReset => Outcome::Reset,
            RejectWith::IcmpNetUnreachable => Outcome::Unreachable(0),
            RejectWith::IcmpHostUnreachable => Outcome::Unreachable(1),
            RejectWith::IcmpProtoUnreachable => Outcome::Unreachable(2),
            RejectWith::IcmpPortUnreachable => Outcome::Unreachable(3),
            RejectWith::IcmpNetProhibited => Outcome::Unreachable(9),
            RejectWith::IcmpHostProhibited => Outcome::Unreachable(10),
            RejectWith::IcmpAdminProhibited => Outcome::Unreachable(13),
            RejectWith::Icmp6NoRoute => Outcome::Unreachable6(0),
            RejectWith::Icmp6AdmProhibited => Outcome::Unreachable6(1),
            RejectWith::Icmp6AddrUnreachable => Outcome::Unreachable6(3),
            RejectWith::Icmp6PortUnreachable => Outcome::Unreachable6(4),
            RejectWith::Icmp6PolicyFail => Outcome::Unreachable6(5),
            RejectWith::Icmp6RejectRoute => Outcome::Unreachable6(6),
        },
        Verdict::Undetermined { .. } => return None,
    })
}

/// The ICMP destination-unreachable codes REJECT can send (ipt_REJECT.c).
const UNREACH_CODES: [u8; 7] = [0, 1, 2, 3, 9, 10, 13];
/// The ICMPv6 destination-unreachable codes REJECT can send (ip6t_REJECT.c).
const UNREACH6_CODES: [u8; 6] = [0, 1, 3, 4, 5, 6];

/// The observer table: counters only, base chains before and after every iptables table.
fn observer_table() -> String {
    let sig = [
        "tcp flags & (fin | syn | rst | ack) == syn",
        "meta l4proto udp",
        "icmp type echo-request",
        "icmpv6 type echo-request",
    ];
    let mut s = String::from("table inet ndiff_obs {\n");
    s.push_str("  chain pre { type filter hook prerouting priority -1000; policy accept;\n");
    for m in sig {
        let _ = writeln!(s, "    iifname != \"lo\" {m} counter comment \"arrive\"");
    }
    s.push_str("  }\n  chain out { type filter hook output priority -1000; policy accept;\n");
    for m in sig {
        let _ = writeln!(s, "    {m} counter comment \"arrive\"");
    }
    s.push_str("    tcp flags & rst == rst counter comment \"rst\"\n");
    for c in UNREACH_CODES {
        let _ = writeln!(
            s,
            "    icmp type destination-unreachable icmp code {c} counter comment \"unreach-{c}\""
        );
    }
    for c in UNREACH6_CODES {
        let _ = writeln!(
            s,
            "    icmpv6 type destination-unreachable icmpv6 code {c} counter comment \"unreach6-{c}\""
        );
    }
    s.push_str("  }\n  chain in_last { type filter hook input priority 1000; policy accept;\n");
    for m in sig {
        let _ = writeln!(s, "    {m} counter comment \"passed\"");
    }
    s.push_str(
        "  }\n  chain post_last { type filter hook postrouting priority 1000; policy accept;\n",
    );
    for m in sig {
        let _ = writeln!(s, "    oifname != \"lo\" {m} counter comment \"passed\"");
    }
    s.push_str("  }\n}\n");
    s
}

/// Counter totals by comment.
type Counts = BTreeMap<String, u64>;

fn parse_counts(listing: &str) -> Counts {
    let mut out = Counts::new();
    for line in listing.lines() {
        let (Some(p), Some(c)) = (line.find("packets "), line.find("comment \"")) else {
            continue;
        };
        let n: u64 = line[p + 8..]
            .split_whitespace()
            .next()
            .and_then(|x| x.parse().ok())
            .unwrap_or_else(|| panic!("cannot read a counter in `{line}`"));
        let name = line[c + 9..].trim_end_matches('"').to_string();
        *out.entry(name).or_default() += n;
    }
    out
}

fn delta(after: &Counts, before: &Counts) -> Counts {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect()
}

/// The outcome from a counter delta; `None` while the packet has not arrived.
fn classify(d: &Counts, settled: bool) -> Option<Outcome> {
    let get = |k: &str| d.get(k).copied().unwrap_or(0);
    if get("arrive") == 0 {
        return None;
    }
    if get("passed") > 0 {
        return Some(Outcome::Accepted);
    }
    if get("rst") > 0 {
        return Some(Outcome::Reset);
    }
    if let Some(c) = UNREACH_CODES
        .iter()
        .find(|c| get(&format!("unreach-{c}")) > 0)
    {
        return Some(Outcome::Unreachable(*c));
    }
    if let Some(c) = UNREACH6_CODES
        .iter()
        .find(|c| get(&format!("unreach6-{c}")) > 0)
    {
        return Some(Outcome::Unreachable6(*c));
    }
    settled.then_some(Outcome::Dropped)
}

/// Internet checksum (RFC 1071) of `data` with `init` folded in.
fn checksum(data: &[u8], init: u32) -> u16 {
    let mut sum = init;
    for c in data.chunks(2) {
        let w = u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]);
        sum += u32::from(w);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The IP packet of `flow`: a SYN without options, a UDP datagram or an echo request with 8
/// payload bytes (the lengths of [`packet_len`]), with correct checksums.
fn packet(flow: &Flow, id: u16) -> (Vec<u8>, IpAddr) {
    let v6 = flow.family == Family::Ipv6;
    let payload = *b"netprobe";
    let mut l4: Vec<u8> = match flow.protocol {
        6 => {
            let mut t = vec![0u8; 20];
            t[0..2].copy_from_slice(&flow.sport.unwrap().to_be_bytes());
            t[2..4].copy_from_slice(&flow.dport.unwrap().to_be_bytes());
            t[4..8].copy_from_slice(&0x1000_0000u32.wrapping_add(u32::from(id)).to_be_bytes());
            t[12] = 5 << 4;
            t[13] = 0x02; // SYN
            t[14..16].copy_from_slice(&1024u16.to_be_bytes());
            t
        }
        17 => {
            let mut u = vec![0u8; 8];
            u[0..2].copy_from_slice(&flow.sport.unwrap().to_be_bytes());
            u[2..4].copy_from_slice(&flow.dport.unwrap().to_be_bytes());
            u[4..6].copy_from_slice(&16u16.to_be_bytes());
            u.extend_from_slice(&payload);
            u
        }
        1 | 58 => {
            let mut i = vec![if v6 { 128 } else { 8 }, 0, 0, 0];
            i.extend_from_slice(&id.to_be_bytes());
            i.extend_from_slice(&1u16.to_be_bytes());
            i.extend_from_slice(&payload);
            i
        }
        p => panic!("protocol {p} not sent by the lab"),
    };
    let sum_at = match flow.protocol {
        6 => 16,
        17 => 6,
        _ => 2,
    };
    let (src, dst) = (ip_bytes(flow.src), ip_bytes(flow.dst));
    // The pseudo-header (RFC 793/768 for IPv4, RFC 8200 §8.1 for IPv6, which ICMPv6 uses too);
    // ICMP over IPv4 has none.
    let mut pseudo = Vec::new();
    if flow.protocol != 1 {
        pseudo.extend_from_slice(&src);
        pseudo.extend_from_slice(&dst);
        if v6 {
            pseudo.extend_from_slice(&(l4.len() as u32).to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, flow.protocol]);
        } else {
            pseudo.extend_from_slice(&[0, flow.protocol]);
            pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
        }
    }
    let init = pseudo
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    let cs = checksum(&l4, init);
    l4[sum_at..sum_at + 2].copy_from_slice(&cs.to_be_bytes());
    let mut ip = if v6 {
        let mut h = vec![0u8; 40];
        h[0] = 0x60;
        h[4..6].copy_from_slice(&(l4.len() as u16).to_be_bytes());
        h[6] = flow.protocol;
        h[7] = 64;
        h[8..24].copy_from_slice(&src);
        h[24..40].copy_from_slice(&dst);
        h
    } else {
        let mut h = vec![0u8; 20];
        h[0] = 0x45;
        h[2..4].copy_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
        h[4..6].copy_from_slice(&id.to_be_bytes());
        h[8] = 64;
        h[9] = flow.protocol;
        h[12..16].copy_from_slice(&src);
        h[16..20].copy_from_slice(&dst);
        let cs = checksum(&h, 0);
        h[10..12].copy_from_slice(&cs.to_be_bytes());
        h
    };
    ip.extend_from_slice(&l4);
    assert_eq!(
        ip.len(),
        usize::from(packet_len(flow.family, flow.protocol))
    );
    (ip, flow.dst)
}

fn ip_bytes(a: IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// `iptables-legacy-save`, `ip6tables-nft-save`, …
fn save_command(family: Family, backend: Backend) -> &'static str {
    match (family, backend) {
        (Family::Ipv4, Backend::Legacy) => "iptables-legacy-save",
        (Family::Ipv4, Backend::Nft) => "iptables-nft-save",
        (Family::Ipv6, Backend::Legacy) => "ip6tables-legacy-save",
        (Family::Ipv6, Backend::Nft) => "ip6tables-nft-save",
    }
}

/// The family of the case generated from `seed`: one in four is IPv6, chosen by a hash of the
/// seed (so a case's seed alone reproduces it).
fn family_of(seed: u64) -> Family {
    if netfilter::generate::Rng::new(seed ^ 0x6666).next_u64() % 4 == 3 {
        Family::Ipv6
    } else {
        Family::Ipv4
    }
}

/// The three namespaces and what the cases need of them.
struct DiffLab {
    /// Kept for its lifetime: the namespace is deleted on drop.
    _client: Netns,
    router: Netns,
    /// Kept for its lifetime.
    _server: Netns,
    lab: Lab,
    dir: tempfile::TempDir,
    client_sock: Socket,
    router_sock: Socket,
    client_sock6: Socket,
    router_sock6: Socket,
    next_id: u16,
}

/// Runs `argv` inside `ns` (a child of a thread that entered it: no `ip netns exec`), with a
/// private xtables lock so other tests' iptables runs do not block it. Panics on failure.
fn run(ns: &Netns, lock: &std::path::Path, argv: &[&str]) -> String {
    let out = ns
        .run_in(|| {
            let mut c = Command::new(argv[0]);
            c.args(&argv[1..]).env("XTABLES_LOCKFILE", lock);
            run_bounded(c, CMD_TIMEOUT)
        })
        .unwrap()
        .unwrap_or_else(|e| panic!("{}: {e}", argv.join(" ")));
    if !out.status.success() {
        panic!(
            "{} in {} failed ({}): {}{}",
            argv.join(" "),
            ns.name(),
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn mac(ns: &Netns, dev: &str) -> String {
    let link = ns.ip(&["-o", "link", "show", "dev", dev]).unwrap();
    let mut it = link.split_whitespace();
    it.find(|w| *w == "link/ether")
        .and_then(|_| it.next())
        .unwrap_or_else(|| panic!("no MAC in {link}"))
        .to_string()
}

/// The router's interface towards the client.
const ROUTER_INNER: &str = "ndin";
/// The router's interface towards the server.
const ROUTER_OUTER: &str = "ndout";

/// Waits (at most 5 s) until `dev` in `ns` is operationally up.
fn wait_up(ns: &Netns, dev: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let state = ns.ip(&["-o", "link", "show", "dev", dev]).unwrap();
        if state.contains("state UP") {
            return;
        }
        assert!(Instant::now() < deadline, "{dev} not up: {state}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A raw socket that sends whole IP packets (`IPPROTO_RAW` implies the header is included, for
/// IPv4 and IPv6 alike).
fn raw_socket(ns: &Netns, domain: Domain) -> Socket {
    ns.run_in(|| Socket::new(domain, Type::RAW, Some(Protocol::from(255))))
        .unwrap()
        .expect("raw socket (needs CAP_NET_RAW)")
}

impl DiffLab {
    fn new() -> DiffLab {
        for tool in [
            "iptables-legacy-restore",
            "iptables-nft-restore",
            "nft",
            "conntrack",
        ] {
            let found = std::env::var_os("PATH")
                .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
                .unwrap_or(false);
            assert!(
                found,
                "`{tool}` is needed by the differential test and is not installed"
            );
        }
        let client = Netns::new("ndc").unwrap();
        let router = Netns::new("ndr").unwrap();
        let server = Netns::new("nds").unwrap();
        let inner =
            Veth::connect(&router, "198.51.100.254/24", &client, "198.51.100.1/24").unwrap();
        let outer = Veth::connect(&router, "203.0.113.254/24", &server, "203.0.113.1/24").unwrap();
        // Fixed names for the router's ends, so that a seed gives the same rules in any run.
        for (old, new) in [
            (inner.a_name(), ROUTER_INNER),
            (outer.a_name(), ROUTER_OUTER),
        ] {
            router.ip(&["link", "set", old, "down"]).unwrap();
            router.ip(&["link", "set", old, "name", new]).unwrap();
            router.ip(&["link", "set", new, "up"]).unwrap();
        }
        wait_up(&router, ROUTER_INNER);
        wait_up(&router, ROUTER_OUTER);
        let lab = Lab::new(ROUTER_INNER, ROUTER_OUTER);
        // IPv6 after the renames (a link going down loses its IPv6 addresses), without DAD, and
        // without link-local addresses, so that the fd00:: address is the only one of each end.
        for (ns, dev, addr) in [
            (&router, ROUTER_INNER, "fd00:1::fe/64"),
            (&router, ROUTER_OUTER, "fd00:2::fe/64"),
            (&client, inner.b_name(), "fd00:1::1/64"),
            (&server, outer.b_name(), "fd00:2::1/64"),
        ] {
            ns.ip(&["addr", "add", addr, "dev", dev, "nodad"]).unwrap();
            ns.ip(&["-6", "addr", "flush", "dev", dev, "scope", "link"])
                .unwrap();
        }
        client
            .ip(&["route", "add", "fd00:2::/64", "via", "fd00:1::fe"])
            .unwrap();
        server
            .ip(&["route", "add", "fd00:1::/64", "via", "fd00:2::fe"])
            .unwrap();
        // SNAT targets (192.0.2.0/24, fd00:9::/64) routed towards the server, so that a REJECT of
        // an SNATed packet can answer: the kernel sends nothing to an unroutable source.
        router
            .ip(&["route", "add", "192.0.2.0/24", "via", "203.0.113.1"])
            .unwrap();
        router
            .ip(&["route", "add", "fd00:9::/64", "via", "fd00:2::1"])
            .unwrap();
        client
            .ip(&["route", "add", "203.0.113.0/24", "via", "198.51.100.254"])
            .unwrap();
        server
            .ip(&["route", "add", "198.51.100.0/24", "via", "203.0.113.254"])
            .unwrap();
        // Permanent neighbours: no ARP in flight when a case's packet goes out.
        let (c_mac, r_in_mac) = (mac(&client, inner.b_name()), mac(&router, ROUTER_INNER));
        let (s_mac, r_out_mac) = (mac(&server, outer.b_name()), mac(&router, ROUTER_OUTER));
        let neigh = |ns: &Netns, addr: &str, mac: &str, dev: &str| {
            ns.ip(&[
                "neigh",
                "replace",
                addr,
                "lladdr",
                mac,
                "dev",
                dev,
                "nud",
                "permanent",
            ])
            .unwrap();
        };
        neigh(&client, "198.51.100.254", &r_in_mac, inner.b_name());
        neigh(&router, "198.51.100.1", &c_mac, ROUTER_INNER);
        neigh(&router, "198.51.100.7", &c_mac, ROUTER_INNER);
        neigh(&router, "203.0.113.1", &s_mac, ROUTER_OUTER);
        neigh(&server, "203.0.113.254", &r_out_mac, outer.b_name());
        neigh(&client, "fd00:1::fe", &r_in_mac, inner.b_name());
        neigh(&router, "fd00:1::1", &c_mac, ROUTER_INNER);
        neigh(&router, "fd00:1::7", &c_mac, ROUTER_INNER);
        neigh(&router, "fd00:2::1", &s_mac, ROUTER_OUTER);
        neigh(&server, "fd00:2::fe", &r_out_mac, outer.b_name());
        for (k, v) in [
            ("net.ipv4.ip_forward", "1"),
            ("net.ipv4.conf.all.rp_filter", "0"),
            ("net.ipv4.conf.default.rp_filter", "0"),
            ("net.ipv4.conf.all.send_redirects", "0"),
            // Every REJECT must answer: no ICMP rate limit.
            ("net.ipv4.icmp_ratelimit", "0"),
            ("net.ipv4.icmp_ratemask", "0"),
            ("net.ipv4.icmp_msgs_per_sec", "1000000"),
            ("net.ipv6.conf.all.forwarding", "1"),
            ("net.ipv6.icmp.ratelimit", "0"),
        ] {
            router.sysctl(k, v).unwrap();
        }
        for dev in [ROUTER_INNER, ROUTER_OUTER] {
            router
                .sysctl(&format!("net.ipv4.conf.{dev}.rp_filter"), "0")
                .unwrap();
            router
                .sysctl(&format!("net.ipv4.conf.{dev}.send_redirects"), "0")
                .unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join("xtables.lock");
        for (ns, cmd) in [
            (&client, "iptables-legacy"),
            (&server, "iptables-legacy"),
            (&client, "ip6tables-legacy"),
            (&server, "ip6tables-legacy"),
        ] {
            run(
                ns,
                &lock,
                &[
                    cmd,
                    "-w",
                    "5",
                    "-t",
                    "raw",
                    "-A",
                    "PREROUTING",
                    "-j",
                    "DROP",
                ],
            );
        }
        let obs = dir.path().join("observer.nft");
        std::fs::write(&obs, observer_table()).unwrap();
        run(&router, &lock, &["nft", "-f", obs.to_str().unwrap()]);
        let client_sock = raw_socket(&client, Domain::IPV4);
        let router_sock = raw_socket(&router, Domain::IPV4);
        let client_sock6 = raw_socket(&client, Domain::IPV6);
        let router_sock6 = raw_socket(&router, Domain::IPV6);
        let me = DiffLab {
            _client: client,
            router,
            _server: server,
            lab,
            dir,
            client_sock,
            router_sock,
            client_sock6,
            router_sock6,
            next_id: 1,
        };
        // The legacy tables first, so their hooks are registered before the nf_tables ones and run
        // after them at equal priority (see `Case::rulesets`).
        for family in [Family::Ipv4, Family::Ipv6] {
            let empty = case(0, &me.lab, family);
            let empty_text = empty_ruleset();
            me.load(&Case {
                legacy: empty_text.clone(),
                nft: empty_text,
                ..empty
            });
        }
        me
    }

    fn lock(&self) -> std::path::PathBuf {
        self.dir.path().join("xtables.lock")
    }

    fn load(&self, c: &Case) {
        let legacy = self.dir.path().join("legacy.rules");
        let nft = self.dir.path().join("nft.rules");
        std::fs::write(&legacy, &c.legacy).unwrap();
        std::fs::write(&nft, &c.nft).unwrap();
        let lock = self.lock();
        let (pre, ct_family) = match c.flow.family {
            Family::Ipv4 => ("iptables", "ipv4"),
            Family::Ipv6 => ("ip6tables", "ipv6"),
        };
        let restore = |backend: &str, path: &std::path::Path| {
            let cmd = format!("{pre}-{backend}-restore");
            run(
                &self.router,
                &lock,
                &[&cmd, "-w", "5", path.to_str().unwrap()],
            );
        };
        restore("legacy", &legacy);
        restore("nft", &nft);
        run(&self.router, &lock, &["conntrack", "-F", "-f", ct_family]);
    }

    fn counts(&self) -> Counts {
        let lock = self.lock();
        parse_counts(&run(
            &self.router,
            &lock,
            &["nft", "list", "table", "inet", "ndiff_obs"],
        ))
    }

    /// The router's rules with their packet counters, after a case (for a failure report).
    fn saved_with_counters(&self, family: Family) -> String {
        let lock = self.lock();
        let mut s = String::new();
        for cmd in [
            save_command(family, Backend::Legacy),
            save_command(family, Backend::Nft),
        ] {
            let out = run(&self.router, &lock, &[cmd, "-c"]);
            let _ = writeln!(s, "--- {cmd} -c after the case ---");
            for l in out.lines().filter(|l| !l.starts_with('#')) {
                s.push_str(l);
                s.push('\n');
            }
        }
        s
    }

    /// Loads the case, sends its packet, and returns the outcome with the counter delta and the
    /// sender's error, if any.
    fn observe(&mut self, c: &Case) -> (Outcome, Counts, Option<String>) {
        self.load(c);
        let before = self.counts();
        self.next_id = self.next_id.wrapping_add(1).max(1);
        let (bytes, dst) = packet(&c.flow, self.next_id);
        let sock = match (c.flow.origin, c.flow.family) {
            (Origin::LocalOutput, Family::Ipv4) => &self.router_sock,
            (Origin::LocalOutput, Family::Ipv6) => &self.router_sock6,
            (_, Family::Ipv4) => &self.client_sock,
            (_, Family::Ipv6) => &self.client_sock6,
        };
        let to = SockAddr::from(SocketAddr::new(dst, 0));
        let send_err = sock.send_to(&bytes, &to).err().map(|e| e.to_string());
        let start = Instant::now();
        let mut arrived_reads = 0;
        loop {
            std::thread::sleep(Duration::from_millis(2));
            let d = delta(&self.counts(), &before);
            if d.get("arrive").copied().unwrap_or(0) > 0 {
                arrived_reads += 1;
            }
            // A drop is final once the packet has arrived and a later read still shows nothing.
            if let Some(o) = classify(&d, arrived_reads >= 2) {
                return (o, d, send_err);
            }
            assert!(
                start.elapsed() < ARRIVAL_TIMEOUT,
                "seed {}: the test packet never reached the router's first hook (send: {send_err:?}, \
                 counters {d:?}); the lab is broken, not the evaluator",
                c.seed
            );
        }
    }
}

/// All five tables, empty, ACCEPT policies.
fn empty_ruleset() -> String {
    let mut s = String::new();
    for (t, chains) in [
        ("raw", &["PREROUTING", "OUTPUT"][..]),
        (
            "mangle",
            &["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"][..],
        ),
        ("nat", &["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"][..]),
        ("filter", &["INPUT", "FORWARD", "OUTPUT"][..]),
        ("security", &["INPUT", "FORWARD", "OUTPUT"][..]),
    ] {
        let _ = writeln!(s, "*{t}");
        for c in chains {
            let _ = writeln!(s, ":{c} ACCEPT [0:0]");
        }
        s.push_str("COMMIT\n");
    }
    s
}

fn show_trace(t: &Trace) -> String {
    let mut s = format!(
        "verdict {:?} (p={:.3}), decided by {:?}\n",
        t.verdict,
        t.probability,
        t.decided_by
            .as_ref()
            .map(|r| (&r.backend, r.table, &r.chain, r.rule_number, &r.text))
    );
    for st in &t.steps {
        let _ = writeln!(
            s,
            "    {:<11} {:<6} {:<8} {:<14} {:>4} {} {}",
            st.hook.to_string(),
            st.backend.map_or("-".into(), |b| format!("{b:?}")),
            st.table.to_string(),
            st.chain,
            st.rule_number.map_or("-".into(), |n| n.to_string()),
            if st.matched { "MATCH" } else { "     " },
            st.why
        );
    }
    for n in &t.nat {
        let _ = writeln!(s, "    nat: {:?} {:?} -> {:?}", n.kind, n.from, n.to);
    }
    s
}

fn report(lab: &DiffLab, c: &Case, traces: &Traces, observed: &str, why: &str) -> String {
    let mut s = format!(
        "DISAGREEMENT (seed {seed}; reproduce: NETFILTER_DIFF_SEED={seed} NETFILTER_DIFF_CASES=1 \
         cargo nextest run -p netfilter --test differential): {why}\n\
         path: {}\nflow: {:?}\nobserved: {observed}\n\
         --- legacy ruleset (iptables-legacy-restore) ---\n{}\
         --- nf_tables ruleset (iptables-nft-restore) ---\n{}",
        c.path.as_str(),
        c.flow,
        c.legacy,
        c.nft,
        seed = c.seed,
    );
    for (i, t) in traces.branches.iter().enumerate() {
        let _ = write!(s, "--- evaluator branch {i} ---\n{}", show_trace(t));
    }
    s.push_str(&lab.saved_with_counters(c.flow.family));
    s
}

/// Tallies of a run.
#[derive(Debug, Default)]
struct Tally {
    cases: u64,
    by_outcome: BTreeMap<String, u64>,
    by_path: BTreeMap<&'static str, u64>,
    undetermined: u64,
    no_route: u64,
    split: u64,
    /// Drop/reject cases whose deciding rule was checked against its kernel counter.
    attributed: u64,
    /// Rejects the kernel could not answer (see [`unanswered_reject`]).
    unanswered_rejects: u64,
    failures: Vec<String>,
}

/// Checks the rule the evaluator names as deciding a drop or reject against the kernel's packet
/// counter of that rule (or policy): it must have counted at least one packet. `None` when there
/// is nothing to check (an accept, several branches, an undetermined verdict); `Some("")` when the
/// counter agrees; otherwise the complaint.
fn attribution(lab: &DiffLab, traces: &Traces, outcome: Outcome) -> Option<String> {
    let t = traces.single()?;
    let by = t.decided_by.as_ref()?;
    if outcome == Outcome::Accepted || expected(&t.verdict) != Some(outcome) {
        return None;
    }
    Some(if rule_counter(lab, by)? == 0 {
        format!(
            "the evaluator says `{}` ({:?} {} {}) decided, but the kernel's counter for it is 0",
            by.text, by.backend, by.table, by.chain
        )
    } else {
        String::new()
    })
}

/// The kernel's packet counter of the rule (or chain policy) `by`, from
/// `ip[6]tables-{legacy,nft}-save -c -t TABLE`; `None` when its backend is not known.
fn rule_counter(lab: &DiffLab, by: &RuleRef) -> Option<u64> {
    let cmd = save_command(by.family, by.backend?);
    let table = by.table.to_string();
    let saved = run(&lab.router, &lab.lock(), &[cmd, "-c", "-t", &table]);
    let rs = parse_save(&saved, &ParseOptions::default())
        .unwrap_or_else(|e| panic!("cannot parse {cmd} -c: {e}\n{saved}"));
    let chain = rs
        .table(by.table)
        .and_then(|t| t.chain(&by.chain))
        .unwrap_or_else(|| panic!("{cmd}: no chain {} in {table}\n{saved}", by.chain));
    Some(match by.rule_number {
        Some(n) => chain
            .rules
            .get(n - 1)
            .and_then(|r| r.counters)
            .map_or(0, |c| c.packets),
        None => chain.counters.packets,
    })
}

/// A REJECT whose answer the kernel could not route (e.g. to a loopback-sourced packet SNATed to
/// a remote address: the ICMP error would leave with source 127.0.0.1) looks like a drop from
/// outside. It counts as the evaluator's reject when the kernel's counter of exactly the REJECT
/// rule the evaluator names is not zero.
fn unanswered_reject(lab: &DiffLab, traces: &Traces) -> Option<Outcome> {
    traces.branches.iter().find_map(|t| {
        let by = t.decided_by.as_ref()?;
        matches!(t.verdict, Verdict::Reject { .. })
            .then_some(())
            .and_then(|()| rule_counter(lab, by))
            .filter(|n| *n > 0)
            .and_then(|_| expected(&t.verdict))
    })
}

/// Whether every undetermined branch gave up on an interface or address that only a route
/// lookup could give: the output interface after a destination-changing DNAT, or the source a
/// MASQUERADE picked when the model cannot tell which address it takes.
fn no_route_model(traces: &Traces) -> bool {
    traces.branches.iter().all(|t| match &t.verdict {
        Verdict::Undetermined { reason } => {
            let rerouted = t.nat.iter().any(|n| {
                matches!(n.kind, NatKind::Dnat | NatKind::Redirect) && n.from.addr != n.to.addr
            });
            // MASQUERADE out of `lo` takes a global address of some other device.
            let masq_unknown = t
                .nat
                .iter()
                .any(|n| n.kind == NatKind::Masquerade && n.to.addr.is_none());
            (rerouted
                && (reason.contains("output interface not known")
                    || reason.contains("source address not known")))
                || (masq_unknown && reason.contains("source address not known"))
        }
        _ => true,
    })
}

/// Runs one case; records a failure message on disagreement. Returns the kernel's outcome.
fn check(lab: &mut DiffLab, c: &Case, tally: &mut Tally) -> Outcome {
    let rulesets = c
        .rulesets()
        .unwrap_or_else(|e| panic!("seed {}: the case does not parse: {e}", c.seed));
    let host = lab.lab.host_model();
    let traces = trace(&rulesets, &host, &c.flow);
    let (outcome, counts, send_err) = lab.observe(c);
    let observed = format!("{outcome:?} (counters {counts:?}, send error {send_err:?})");
    tally.cases += 1;
    *tally.by_outcome.entry(format!("{outcome:?}")).or_default() += 1;
    *tally.by_path.entry(c.path.as_str()).or_default() += 1;
    *tally
        .by_path
        .entry(match c.flow.family {
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
        })
        .or_default() += 1;
    if traces.branches.len() > 1 {
        tally.split += 1;
    }
    let undetermined = traces
        .branches
        .iter()
        .any(|t| matches!(t.verdict, Verdict::Undetermined { .. }));
    if undetermined {
        if no_route_model(&traces) {
            // The evaluator knows no routes: after a DNAT that changes the destination it does
            // not know the output interface (nor what MASQUERADE picks from it).
            tally.no_route += 1;
        } else if c.undecidable.is_empty() {
            let why = "undetermined on a case with nothing undecidable in it";
            tally.failures.push(report(lab, c, &traces, &observed, why));
        } else {
            tally.undetermined += 1;
        }
        return outcome;
    }
    if let Some(why) = attribution(lab, &traces, outcome) {
        tally.attributed += 1;
        if !why.is_empty() {
            tally
                .failures
                .push(report(lab, c, &traces, &observed, &why));
            return outcome;
        }
    }
    let possible: Vec<Option<Outcome>> = traces
        .branches
        .iter()
        .map(|t| expected(&t.verdict))
        .collect();
    if outcome == Outcome::Dropped
        && !possible.contains(&Some(outcome))
        && let Some(reject) = unanswered_reject(lab, &traces)
    {
        tally.unanswered_rejects += 1;
        return reject;
    }
    if !possible.contains(&Some(outcome)) {
        let why = format!("the kernel's outcome is none of the evaluator's {possible:?}");
        tally
            .failures
            .push(report(lab, c, &traces, &observed, &why));
    }
    outcome
}

fn env_u64(key: &str, default: u64) -> u64 {
    match std::env::var(key) {
        Ok(v) => {
            let v = v.trim();
            let parsed = match v.strip_prefix("0x") {
                Some(h) => u64::from_str_radix(h, 16),
                None => v.parse(),
            };
            parsed.unwrap_or_else(|_| panic!("{key}={v} is not a number"))
        }
        Err(_) => default,
    }
}

fn finish(name: &str, tally: &Tally, started: Instant) {
    eprintln!(
        "{name}: {} cases in {:.1}s; outcomes {:?}; paths {:?}; {} split by -m statistic; {} deciding rules checked against kernel counters; {} rejects without a routable answer; {} \
         undetermined (generated undecidable), {} (no route model); {} disagreements",
        tally.cases,
        started.elapsed().as_secs_f64(),
        tally.by_outcome,
        tally.by_path,
        tally.split,
        tally.attributed,
        tally.unanswered_rejects,
        tally.undetermined,
        tally.no_route,
        tally.failures.len()
    );
    if !tally.failures.is_empty() {
        let shown: Vec<&String> = tally.failures.iter().take(5).collect();
        panic!(
            "{} of {} cases disagree with the kernel; the first {}:\n\n{}",
            tally.failures.len(),
            tally.cases,
            shown.len(),
            shown
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("\n\n")
        );
    }
}

#[test]
fn differential_kernel_agrees() {
    let seed = env_u64("NETFILTER_DIFF_SEED", DEFAULT_SEED);
    let n = env_u64("NETFILTER_DIFF_CASES", DEFAULT_CASES);
    eprintln!("differential: seed {seed:#x} ({seed}), {n} cases");
    let started = Instant::now();
    let mut lab = DiffLab::new();
    let mut tally = Tally::default();
    for i in 0..n {
        let s = seed.wrapping_add(i);
        let c = case(s, &lab.lab, family_of(s));
        check(&mut lab, &c, &mut tally);
        if (i + 1) % 1000 == 0 && i + 1 < n {
            eprintln!(
                "differential: {} cases, {:.0}s, {} disagreements so far",
                i + 1,
                started.elapsed().as_secs_f64(),
                tally.failures.len()
            );
        }
    }
    finish("differential", &tally, started);
    if n >= 100 {
        // A run that could not decide is no evidence: undetermined must stay a small minority, and
        // every kind of outcome must have been seen.
        let undetermined = tally.undetermined + tally.no_route;
        assert!(
            undetermined * 10 < tally.cases,
            "{undetermined} of {} cases undetermined",
            tally.cases
        );
        for o in ["Accepted", "Dropped", "Reset"] {
            assert!(
                tally.by_outcome.contains_key(o),
                "no case ended {o}: {tally:?}"
            );
        }
        assert!(
            tally
                .by_outcome
                .keys()
                .any(|k| k.starts_with("Unreachable")),
            "no case was rejected with ICMP: {tally:?}"
        );
    }
}

/// `text` plus an empty block for every table it does not have, so that restoring it replaces
/// all five tables.
fn all_tables(text: &str) -> String {
    let mut s = text.to_string();
    let empty = empty_ruleset();
    for block in empty.split_inclusive("COMMIT\n") {
        let header = block.lines().next().unwrap_or_default();
        if !text.lines().any(|l| l == header) {
            s.push_str(block);
        }
    }
    s
}

/// A hand-written case on the lab's router.
fn written(path: CasePath, flow: Flow, legacy: &str, nft: &str) -> Case {
    Case {
        seed: 0,
        path,
        flow,
        legacy: all_tables(legacy),
        nft: all_tables(nft),
        undecidable: Vec::new(),
    }
}

/// Seeds of past disagreements (valid for the generator version that found them; the
/// hand-written cases below are the durable form).
const REGRESSION_SEEDS: [(u64, Family); 8] = [
    (0xd1ff07f, Family::Ipv4),
    (0xd1ff0d1, Family::Ipv4),
    (0xd1ff2a8, Family::Ipv4),
    (0xd1ff283, Family::Ipv4),
    (13139, Family::Ipv4),
    (779189, Family::Ipv4),
    (0xd1ff016, Family::Ipv4),
    (20280609, Family::Ipv6),
];

#[test]
fn regressions_kernel_agrees() {
    let started = Instant::now();
    let mut lab = DiffLab::new();
    let l = lab.lab.clone();
    let v4 = IpAddr::V4;
    let forward = |mut f: Flow| {
        f.in_iface = Some(l.inner_if.clone());
        f.out_iface = Some(l.outer_if.clone());
        f.length = Some(packet_len(f.family, f.protocol));
        f
    };
    let local = |mut f: Flow| {
        f.uid = Some(0);
        f.gid = Some(0);
        f.length = Some(packet_len(f.family, f.protocol));
        f
    };
    let tcp = |origin, s: Ipv4Addr, d: Ipv4Addr, port| {
        let mut f = Flow::tcp(origin, v4(s), v4(d), port);
        f.sport = Some(40_001);
        f
    };
    let udp = |origin, s: Ipv4Addr, d: Ipv4Addr, port| {
        let mut f = Flow::udp(origin, v4(s), v4(d), port);
        f.sport = Some(40_002);
        f
    };
    let fwd_tcp = forward(tcp(Origin::Forward, l.client, l.server, 443));
    let fwd_udp = forward(udp(Origin::Forward, l.client, l.server, 80));
    let lo_udp = local(udp(Origin::LocalOutput, l.router_outer, l.router_outer, 22));
    let lo_udp_127 = local(udp(
        Origin::LocalOutput,
        Ipv4Addr::LOCALHOST,
        Ipv4Addr::LOCALHOST,
        53,
    ));
    let mut out_udp = local(udp(Origin::LocalOutput, l.router_outer, l.server, 22));
    out_udp.out_iface = Some(l.outer_if.clone());
    let mut out_tcp = local(tcp(Origin::LocalOutput, l.router_inner, l.client, 443));
    out_tcp.out_iface = Some(l.inner_if.clone());
    let empty = empty_ruleset();
    let out = &l.outer_if;
    let inner = &l.inner_if;
    let cases = [
        // -m conntrack without an entry (raw, before conntrack): only the state test counts.
        written(
            CasePath::Forward,
            fwd_tcp.clone(),
            "*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
             -A PREROUTING -m conntrack ! --ctstate NEW ! --ctorigdst 203.0.113.254 -j DROP\n\
             COMMIT\n",
            &empty,
        ),
        // NOTRACK on loopback re-entry is ignored: the packet stays NEW.
        written(
            CasePath::Loopback,
            lo_udp,
            "*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n-A PREROUTING -p udp -j NOTRACK\n\
             COMMIT\n*filter\n:INPUT DROP [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
             -A INPUT -m conntrack --ctstate NEW -j ACCEPT\nCOMMIT\n",
            &empty,
        ),
        // A port-only DNAT keeps the route: `-o` is still known.
        written(
            CasePath::Forward,
            fwd_udp,
            &format!(
                "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
                 :POSTROUTING ACCEPT [0:0]\n\
                 -A PREROUTING -p udp -j DNAT --to-destination 203.0.113.1:8080\nCOMMIT\n\
                 *mangle\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n\
                 :OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n\
                 -A POSTROUTING -o {out} -j DROP\nCOMMIT\n"
            ),
            &empty,
        ),
        // Equal priority: the nf_tables chain runs before the legacy one (registered later, it is
        // inserted first), so the legacy MARK comes too late for the nft rule...
        written(
            CasePath::LocalRemote,
            out_udp.clone(),
            "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
             -A OUTPUT -j MARK --set-xmark 0x1/0xffffffff\nCOMMIT\n",
            "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
             -A OUTPUT -m mark --mark 0x1 -j DROP\nCOMMIT\n",
        ),
        // ...and the nft MARK is seen by the legacy rule.
        written(
            CasePath::LocalRemote,
            out_udp,
            "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
             -A OUTPUT -m mark --mark 0x1 -j DROP\nCOMMIT\n",
            "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
             -A OUTPUT -j MARK --set-xmark 0x1/0xffffffff\nCOMMIT\n",
        ),
        // After a nat OUTPUT DNAT to a local address, filter OUTPUT still sees the old device.
        written(
            CasePath::LocalRemote,
            out_tcp,
            &format!(
                "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
                 :POSTROUTING ACCEPT [0:0]\n\
                 -A OUTPUT -p tcp -j DNAT --to-destination 203.0.113.254:80\nCOMMIT\n\
                 *filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
                 -A OUTPUT -o {inner} -p tcp -m tcp --dport 80 -j REJECT --reject-with tcp-reset\n\
                 COMMIT\n"
            ),
            &empty,
        ),
        // iptables-nft's security chain sits at 150: the legacy one (50) decides first.
        written(
            CasePath::Forward,
            fwd_tcp.clone(),
            "*security\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
             -A FORWARD -p tcp -j DROP\nCOMMIT\n",
            "*security\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n",
        ),
        // A packet from 127.0.0.1 DNATed to a remote address is dropped at re-route (EINVAL).
        written(
            CasePath::Loopback,
            lo_udp_127,
            "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
             :POSTROUTING ACCEPT [0:0]\n-A OUTPUT -p udp -j DNAT --to-destination 203.0.113.1\n\
             COMMIT\n",
            &empty,
        ),
    ];
    let mut tally = Tally::default();
    let outcomes: Vec<Outcome> = cases
        .iter()
        .map(|c| check(&mut lab, c, &mut tally))
        .collect();
    for (s, family) in REGRESSION_SEEDS {
        let c = case(s, &lab.lab, family);
        check(&mut lab, &c, &mut tally);
    }
    assert_eq!(
        tally.undetermined + tally.no_route,
        0,
        "regression cases must be decided: {tally:?}"
    );
    finish("regressions", &tally, started);
    // The lab itself: the hand-written cases end as their comments say.
    use Outcome::{Accepted, Dropped, Reset};
    assert_eq!(
        outcomes,
        [
            Dropped, Accepted, Dropped, Accepted, Dropped, Reset, Dropped, Dropped
        ]
    );
}
