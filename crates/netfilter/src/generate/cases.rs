//! Random differential-test cases (feature `gen`): an IPv4 or IPv6 flow and the two rulesets
//! (legacy x_tables and iptables-nft) loaded at once on the *router* of a three-host lab, for
//! checking the evaluator against the kernel (`tests/differential.rs`).
//!
//! The lab the cases are made for ([`Lab`]): a client (198.51.100.1, fd00:1::1) and a server
//! (203.0.113.1, fd00:2::1), each joined to the router by a veth pair; the router has
//! 198.51.100.254 and fd00:1::fe on `inner_if`, 203.0.113.254 and fd00:2::fe on `outer_if`,
//! forwards between them, and is the only host with rules under test. A case's flow takes one of four paths through the router ([`CasePath`]): forwarded,
//! delivered to it, sent by it to a remote host, or sent by it to itself over loopback.
//!
//! Unlike [`crate::generate::model`], which aims at syntax coverage, rules here aim at the flow:
//! addresses, ports, interfaces, marks and states are drawn from small pools that contain the
//! flow's own values, so rules match often and verdicts vary. Besides being accepted by
//! `iptables-restore` (the constraints of [`crate::generate`]: NAT targets only where their hooks
//! allow, REJECT only in filter, `-i`/`-o`/`-m owner` only on hooks that have them — every user
//! chain has one *home* built-in chain and is reached only from it, so its hook is known), a
//! case avoids what the evaluator does not model by design, each for a stated reason:
//!
//! * no DNAT to an address without a host behind it (the kernel then drops or answers after
//!   neighbour resolution fails, which is routing, not netfilter), no DNAT to loopback in
//!   PREROUTING (a martian destination, dropped by routing unless `route_localnet`), and no DNAT
//!   of a packet from ::1 to a remote address (the evaluator models only the IPv4 rule that a
//!   127.0.0.0/8 source cannot leave the host);
//! * IPv6 `-m addrtype` only with LOCAL (the only IPv6 address type the evaluator models);
//! * no `-m mac` (the peer's MAC is not part of a [`Flow`]), no `-m set`, no `-m physdev`.
//!
//! A few constructs the evaluator cannot decide *are* generated on purpose, rarely (`-m limit`,
//! `-m pkttype`, `-m ttl`, kept as unknown matches), so that the test sees `undetermined`
//! answered where it must be; [`Case::undecidable`] lists them, and an `undetermined` verdict on a
//! case without any is a failure of the differential test.

mod rules;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::eval::{Flow, HostModel, Origin};
use crate::matches::tcp_flags;
use crate::model::{Backend, Family, Ruleset};
use crate::parse::{ParseError, ParseOptions, parse_save};
use crate::render::render_ruleset;

use super::Rng;
use rules::{Gen, empty};

/// The lab a case is generated for: the router's interfaces and the hosts' addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lab {
    /// The client, beyond `inner_if` (198.51.100.1).
    pub client: Ipv4Addr,
    /// A second source address the client may send from (spoofed, same subnet).
    pub client_alt: Ipv4Addr,
    /// The server, beyond `outer_if` (203.0.113.1).
    pub server: Ipv4Addr,
    /// The router's address on `inner_if` (198.51.100.254/24).
    pub router_inner: Ipv4Addr,
    /// The router's address on `outer_if` (203.0.113.254/24).
    pub router_outer: Ipv4Addr,
    /// The router's interface towards the client.
    pub inner_if: String,
    /// The router's interface towards the server.
    pub outer_if: String,
    /// The client's IPv6 address (fd00:1::1/64).
    pub client6: Ipv6Addr,
    /// A second IPv6 source the client may send from (fd00:1::7).
    pub client6_alt: Ipv6Addr,
    /// The server's IPv6 address (fd00:2::1/64).
    pub server6: Ipv6Addr,
    /// The router's IPv6 address on `inner_if` (fd00:1::fe/64).
    pub router_inner6: Ipv6Addr,
    /// The router's IPv6 address on `outer_if` (fd00:2::fe/64).
    pub router_outer6: Ipv6Addr,
}

impl Lab {
    /// The standard addresses with the given router interface names.
    pub fn new(inner_if: &str, outer_if: &str) -> Lab {
        Lab {
            client: Ipv4Addr::new(198, 51, 100, 1),
            client_alt: Ipv4Addr::new(198, 51, 100, 7),
            server: Ipv4Addr::new(203, 0, 113, 1),
            router_inner: Ipv4Addr::new(198, 51, 100, 254),
            router_outer: Ipv4Addr::new(203, 0, 113, 254),
            inner_if: inner_if.to_string(),
            outer_if: outer_if.to_string(),
            client6: Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 1),
            client6_alt: Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 7),
            server6: Ipv6Addr::new(0xfd00, 2, 0, 0, 0, 0, 0, 1),
            router_inner6: Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 0xfe),
            router_outer6: Ipv6Addr::new(0xfd00, 2, 0, 0, 0, 0, 0, 0xfe),
        }
    }

    /// The addresses of one family, in the same roles.
    pub fn addrs(&self, family: Family) -> Addrs {
        match family {
            Family::Ipv4 => Addrs {
                client: IpAddr::V4(self.client),
                client_alt: IpAddr::V4(self.client_alt),
                server: IpAddr::V4(self.server),
                router_inner: IpAddr::V4(self.router_inner),
                router_outer: IpAddr::V4(self.router_outer),
                loopback: IpAddr::V4(Ipv4Addr::LOCALHOST),
            },
            Family::Ipv6 => Addrs {
                client: IpAddr::V6(self.client6),
                client_alt: IpAddr::V6(self.client6_alt),
                server: IpAddr::V6(self.server6),
                router_inner: IpAddr::V6(self.router_inner6),
                router_outer: IpAddr::V6(self.router_outer6),
                loopback: IpAddr::V6(Ipv6Addr::LOCALHOST),
            },
        }
    }

    /// What the evaluator knows about the router: its addresses (/24 and /64, whose connected
    /// routes the model implies) and the routes the lab adds for the SNAT targets (192.0.2.0/24 and
    /// fd00:9::/64 towards the server), so that a DNAT's new output interface is known.
    pub fn host_model(&self) -> HostModel {
        let snat4 = crate::addr::Cidr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 0)), 24);
        let snat6 =
            crate::addr::Cidr::new(IpAddr::V6(Ipv6Addr::new(0xfd00, 9, 0, 0, 0, 0, 0, 0)), 64);
        let host = HostModel::default()
            .with_addr(&self.inner_if, IpAddr::V4(self.router_inner), 24)
            .with_addr(&self.outer_if, IpAddr::V4(self.router_outer), 24)
            .with_addr(&self.inner_if, IpAddr::V6(self.router_inner6), 64)
            .with_addr(&self.outer_if, IpAddr::V6(self.router_outer6), 64);
        [snat4, snat6]
            .into_iter()
            .flatten()
            .fold(host, |h, net| h.with_route(net, &self.outer_if))
    }
}

/// The lab's addresses of one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addrs {
    /// The client.
    pub client: IpAddr,
    /// The client's second (spoofed) source.
    pub client_alt: IpAddr,
    /// The server.
    pub server: IpAddr,
    /// The router, client side.
    pub router_inner: IpAddr,
    /// The router, server side.
    pub router_outer: IpAddr,
    /// 127.0.0.1 or ::1.
    pub loopback: IpAddr,
}

/// The way a case's packet crosses the router.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CasePath {
    /// From the client to the server, forwarded by the router.
    Forward,
    /// From the client to one of the router's addresses.
    Input,
    /// Sent by the router (a raw socket, uid 0) to the client or the server.
    LocalRemote,
    /// Sent by the router to itself (127.0.0.1 or one of its addresses) over loopback.
    Loopback,
}

impl CasePath {
    /// `forward`, `input`, `local-remote`, `loopback`.
    pub fn as_str(self) -> &'static str {
        match self {
            CasePath::Forward => "forward",
            CasePath::Input => "input",
            CasePath::LocalRemote => "local-remote",
            CasePath::Loopback => "loopback",
        }
    }
}

/// One differential case: the flow and the restore payloads of both backends.
#[derive(Debug, Clone)]
pub struct Case {
    /// The seed it was generated from (0 for a hand-written case).
    pub seed: u64,
    /// The path through the router.
    pub path: CasePath,
    /// The packet, as the evaluator is asked about it. Its length is the exact length the test
    /// sends ([`packet_len`]).
    pub flow: Flow,
    /// The `iptables-legacy-restore` payload (all five tables, so a restore replaces everything).
    pub legacy: String,
    /// The `iptables-nft-restore` payload.
    pub nft: String,
    /// The constructs in the rules the evaluator cannot decide, by design (empty: it must decide).
    pub undecidable: Vec<String>,
}

impl Case {
    /// Both payloads parsed, nf_tables first: the kernel inserts a hook before those of equal
    /// priority registered earlier (`nf_hook_entries_grow`), and the lab loads the legacy tables
    /// before the nf_tables ones, so at each priority the nft chain runs first.
    pub fn rulesets(&self) -> Result<Vec<Ruleset>, ParseError> {
        let parse = |text: &str, backend| {
            parse_save(
                text,
                &ParseOptions {
                    family: Some(self.flow.family),
                    backend: Some(backend),
                },
            )
        };
        Ok(vec![
            parse(&self.nft, Backend::Nft)?,
            parse(&self.legacy, Backend::Legacy)?,
        ])
    }
}

/// The total length of the packet the lab sends for `protocol` (IP header included): a TCP SYN
/// without options, or a UDP datagram / ICMP echo request with 8 payload bytes.
pub fn packet_len(family: Family, protocol: u8) -> u16 {
    let ip = match family {
        Family::Ipv4 => 20,
        Family::Ipv6 => 40,
    };
    ip + if protocol == 6 { 20 } else { 16 }
}

/// A random case of `family` from `seed` for `lab`.
pub fn case(seed: u64, lab: &Lab, family: Family) -> Case {
    let mut r = Rng::new(seed);
    let path = *r.pick(&[
        CasePath::Forward,
        CasePath::Forward,
        CasePath::Input,
        CasePath::LocalRemote,
        CasePath::Loopback,
    ]);
    let flow = flow(&mut r, &lab.addrs(family), lab, path);
    let mut g = Gen {
        r,
        lab,
        flow: &flow,
        undecidable: Vec::new(),
    };
    // Either backend may be left empty, as on most hosts.
    let legacy = if g.r.chance(1, 4) {
        empty(family)
    } else {
        g.ruleset()
    };
    let nft = if g.r.chance(1, 4) {
        empty(family)
    } else {
        g.ruleset()
    };
    let undecidable = g.undecidable;
    Case {
        seed,
        path,
        flow,
        legacy: render_ruleset(&legacy),
        nft: render_ruleset(&nft),
        undecidable,
    }
}

fn flow(r: &mut Rng, a: &Addrs, lab: &Lab, path: CasePath) -> Flow {
    let (origin, src, dst, in_if, out_if) = match path {
        CasePath::Forward => {
            let src = if r.chance(1, 4) {
                a.client_alt
            } else {
                a.client
            };
            (
                Origin::Forward,
                src,
                a.server,
                Some(&lab.inner_if),
                Some(&lab.outer_if),
            )
        }
        CasePath::Input => {
            let dst = *r.pick(&[a.router_inner, a.router_outer]);
            (Origin::Input, a.client, dst, Some(&lab.inner_if), None)
        }
        CasePath::LocalRemote => {
            if r.chance(1, 2) {
                let out = Some(&lab.outer_if);
                (Origin::LocalOutput, a.router_outer, a.server, None, out)
            } else {
                let out = Some(&lab.inner_if);
                (Origin::LocalOutput, a.router_inner, a.client, None, out)
            }
        }
        CasePath::Loopback => {
            let x = *r.pick(&[a.loopback, a.loopback, a.router_inner, a.router_outer]);
            (Origin::LocalOutput, x, x, None, None)
        }
    };
    let family = Family::of(dst);
    let icmp = if family == Family::Ipv4 { 1 } else { 58 };
    let protocol = *r.pick(&[6u8, 6, 17, 17, icmp]);
    let mut f = Flow::new(origin, protocol, src, dst);
    match protocol {
        6 | 17 => {
            f.sport = Some(20_000 + r.below(40_000) as u16);
            f.dport = Some(*r.pick(&[22u16, 53, 80, 443, 8080, 9099]));
        }
        _ => {
            f.icmp_type = Some(if family == Family::Ipv4 { 8 } else { 128 });
            f.icmp_code = Some(0);
        }
    }
    if protocol == 6 {
        f.tcp_flags = Some(tcp_flags::SYN);
    }
    f.length = Some(packet_len(family, protocol));
    f.in_iface = in_if.cloned();
    f.out_iface = out_if.cloned();
    if origin == Origin::LocalOutput {
        // The lab sends from a raw socket of the test process, which runs as root.
        f.uid = Some(0);
        f.gid = Some(0);
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cases_parse_and_are_deterministic() {
        let lab = Lab::new("lab0a", "lab1a");
        for seed in 0..300 {
            let family = if seed % 3 == 0 {
                Family::Ipv6
            } else {
                Family::Ipv4
            };
            let a = case(seed, &lab, family);
            let b = case(seed, &lab, family);
            assert_eq!(a.legacy, b.legacy);
            assert_eq!(a.nft, b.nft);
            assert_eq!(a.flow, b.flow);
            let rs = a
                .rulesets()
                .unwrap_or_else(|e| panic!("seed {seed}: {e}\n{}\n{}", a.legacy, a.nft));
            assert_eq!(rs.len(), 2);
            assert!(rs.iter().all(|r| r.tables.len() == 5));
        }
    }
}
