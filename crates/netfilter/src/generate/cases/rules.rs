//! The rules of a differential case: every table of one backend, each rule aimed at the case's
//! flow (see the parent module for what is generated and what is avoided, and why).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::addr::{AddrRange, Cidr, IdRange, Interface, MarkMask, PortRange};
use crate::eval::Flow;
use crate::icmp::IcmpType;
use crate::matches::{
    AddrType, AddrTypeMatch, ConntrackMatch, CtState, IpRangeMatch, LimitMatch, Match,
    MultiportDir, MultiportMatch, Neg, OwnerMatch, StatisticMatch, StatisticMode, TcpFlags,
    TcpMatch, UdpMatch,
};
use crate::model::{Chain, Family, Policy, Rule, Ruleset, Table, TableName};
use crate::proto::Protocol;
use crate::target::{ConnmarkAction, NatFlags, NatRange, RejectWith, Target};

use super::super::Rng;
use super::{Addrs, Lab};

/// Every table with its built-in chains, policies ACCEPT, no rules.
pub(super) fn empty(family: Family) -> Ruleset {
    let tables = TableName::ALL
        .iter()
        .map(|&name| {
            let mut t = Table::new(name, 0);
            t.chains = name
                .builtin_chains()
                .iter()
                .map(|&b| {
                    let mut c = Chain::new(b, true);
                    c.policy = Some(Policy::Accept);
                    c.line = Some(0);
                    c
                })
                .collect();
            t
        })
        .collect();
    Ruleset {
        backend: None,
        family,
        version: None,
        tables,
        comments: Vec::new(),
    }
}

/// Where a rule sits: its table, the built-in chain whose hook reaches it, and the user chains it
/// may jump to.
struct Spot<'a> {
    table: TableName,
    home: &'a str,
    later: &'a [String],
}

pub(super) struct Gen<'a> {
    pub(super) r: Rng,
    pub(super) lab: &'a Lab,
    pub(super) flow: &'a Flow,
    pub(super) undecidable: Vec<String>,
}

const MARKS: [u32; 5] = [0x1, 0x2, 0x3, 0x10, 0x4000];
const MASKS: [u32; 4] = [u32::MAX, 0xff, 0x1, 0x4000];

impl Gen<'_> {
    pub(super) fn ruleset(&mut self) -> Ruleset {
        let mut rs = empty(self.flow.family);
        for t in &mut rs.tables {
            if !self.r.chance(2, 3) {
                continue;
            }
            let name = t.name;
            let builtins = name.builtin_chains();
            // User chains, each with a home built-in chain; in creation order, so a chain jumps
            // only to later ones of the same home (no loops).
            let n_user = self.r.below(4) as usize;
            let homes: Vec<&str> = (0..n_user).map(|_| *self.r.pick(builtins)).collect();
            let users: Vec<String> = (0..n_user)
                .map(|i| format!("DIFF-{}-{i}", name.as_str().to_uppercase()))
                .collect();
            for c in t.chains.iter_mut() {
                if name != TableName::Nat && self.r.chance(1, 14) {
                    c.policy = Some(Policy::Drop);
                }
                let later: Vec<String> = users
                    .iter()
                    .zip(&homes)
                    .filter(|(_, h)| **h == c.name)
                    .map(|(u, _)| u.clone())
                    .collect();
                let spot = Spot {
                    table: name,
                    home: builtins
                        .iter()
                        .find(|b| **b == c.name)
                        .copied()
                        .unwrap_or("INPUT"),
                    later: &later,
                };
                let n = self.r.below(6);
                c.rules = (0..n).map(|_| self.rule(&spot)).collect();
            }
            for (i, u) in users.iter().enumerate() {
                let later: Vec<String> = (i + 1..n_user)
                    .filter(|&j| homes[j] == homes[i])
                    .map(|j| users[j].clone())
                    .collect();
                let spot = Spot {
                    table: name,
                    home: homes[i],
                    later: &later,
                };
                let mut c = Chain::new(u, false);
                c.line = Some(0);
                let n = self.r.below(5);
                c.rules = (0..n).map(|_| self.rule(&spot)).collect();
                t.chains.push(c);
            }
        }
        rs
    }

    fn addrs(&self) -> Addrs {
        self.lab.addrs(self.flow.family)
    }

    fn addr(&mut self) -> IpAddr {
        let a = self.addrs();
        let random = match self.flow.family {
            Family::Ipv4 => IpAddr::V4(Ipv4Addr::new(192, 0, 2, self.r.below(256) as u8)),
            Family::Ipv6 => IpAddr::V6(Ipv6Addr::new(
                0xfd00,
                9,
                0,
                0,
                0,
                0,
                0,
                self.r.below(0x10000) as u16,
            )),
        };
        *self.r.pick(&[
            self.flow.src,
            self.flow.dst,
            a.client,
            a.server,
            a.router_inner,
            a.router_outer,
            a.loopback,
            random,
        ])
    }

    fn cidr(&mut self) -> Cidr {
        let a = self.addr();
        let len = match self.flow.family {
            Family::Ipv4 => *self.r.pick(&[32u8, 32, 24, 16, 8]),
            Family::Ipv6 => *self.r.pick(&[128u8, 128, 64, 32, 16]),
        };
        Cidr::new(a, len).unwrap_or_else(|| Cidr::host(a))
    }

    fn neg<T>(&mut self, value: T) -> Neg<T> {
        Neg {
            negated: self.r.chance(1, 5),
            value,
        }
    }

    fn port(&mut self) -> PortRange {
        let p = self.flow.dport.unwrap_or(80);
        match self.r.below(6) {
            0 | 1 => PortRange::single(p),
            2 => PortRange {
                start: p.saturating_sub(10),
                end: p.saturating_add(10),
            },
            3 => PortRange::single(p.wrapping_add(1).max(1)),
            4 => PortRange {
                start: 1024,
                end: 65535,
            },
            _ => PortRange::single(*self.r.pick(&[22u16, 53, 80, 443, 8080, 9099])),
        }
    }

    fn sport(&mut self) -> PortRange {
        let s = self.flow.sport.unwrap_or(30_000);
        match self.r.below(3) {
            0 => PortRange::single(s),
            1 => PortRange {
                start: 20_000,
                end: 40_000,
            },
            _ => PortRange {
                start: 1,
                end: 1023,
            },
        }
    }

    fn iface(&mut self) -> Interface {
        let l = self.lab;
        let (name, wildcard) = match self.r.below(6) {
            0 => (l.inner_if.clone(), false),
            1 => (l.outer_if.clone(), false),
            2 => ("lo".to_string(), false),
            // A prefix of the lab's interface names (`lab3a` -> `lab+`).
            3 => (
                l.inner_if
                    .chars()
                    .take_while(|c| c.is_ascii_alphabetic())
                    .collect(),
                true,
            ),
            4 => ("eth0".to_string(), false),
            _ => (String::new(), true),
        };
        Interface { name, wildcard }
    }

    fn mark(&mut self) -> MarkMask {
        let mask = *self.r.pick(&MASKS);
        let value = *self.r.pick(&MARKS) & mask;
        MarkMask { value, mask }
    }

    fn rule(&mut self, spot: &Spot<'_>) -> Rule {
        let (in_ok, out_ok) = match spot.home {
            "PREROUTING" | "INPUT" => (true, false),
            "FORWARD" => (true, true),
            _ => (false, true),
        };
        let mut m = Vec::new();
        if self.r.chance(1, 4) {
            let c = self.cidr();
            m.push(Match::Source(self.neg(c)));
        }
        if self.r.chance(1, 4) {
            let c = self.cidr();
            m.push(Match::Destination(self.neg(c)));
        }
        if in_ok && self.r.chance(1, 5) {
            let i = self.iface();
            m.push(Match::InInterface(self.neg(i)));
        }
        if out_ok && self.r.chance(1, 5) {
            let i = self.iface();
            m.push(Match::OutInterface(self.neg(i)));
        }
        // The protocol of the rule: the flow's most of the time.
        let proto = if self.r.chance(1, 2) {
            let p = if self.r.chance(2, 3) {
                self.flow.protocol
            } else {
                let icmp = if self.flow.family == Family::Ipv4 {
                    1
                } else {
                    58
                };
                *self.r.pick(&[6u8, 17, icmp])
            };
            let negated = self.r.chance(1, 6);
            m.push(Match::Protocol(Neg {
                negated,
                value: Protocol::Number(p),
            }));
            (!negated).then_some(p)
        } else {
            None
        };
        if let Some(p) = proto {
            self.proto_match(p, &mut m);
        }
        for _ in 0..self.r.below(3) {
            self.module(spot, out_ok, &mut m);
        }
        let target = self.target(spot, proto);
        Rule {
            line: 0,
            text: String::new(),
            counters: None,
            matches: m,
            target,
        }
    }

    fn proto_match(&mut self, p: u8, m: &mut Vec<Match>) {
        match p {
            6 if self.r.chance(2, 3) => {
                let dport = self.r.chance(2, 3).then(|| self.port());
                let dport = dport.map(|d| self.neg(d));
                let sport = self.r.chance(1, 4).then(|| self.sport());
                let sport = sport.map(|s| self.neg(s));
                let flags = self.r.chance(1, 4).then(|| {
                    if self.r.chance(1, 2) {
                        TcpFlags::SYN
                    } else {
                        // FIN,SYN,RST,ACK / ACK: not a SYN.
                        TcpFlags {
                            mask: 0x17,
                            comp: 0x10,
                        }
                    }
                });
                let flags = flags.map(|f| self.neg(f));
                let dport = fix_double_negation(&sport, dport);
                m.push(Match::Tcp(TcpMatch {
                    sport,
                    dport,
                    flags,
                    option: None,
                }));
            }
            17 if self.r.chance(2, 3) => {
                let dport = self.r.chance(3, 4).then(|| self.port());
                let dport = dport.map(|d| self.neg(d));
                let sport = self.r.chance(1, 4).then(|| self.sport());
                let sport = sport.map(|s| self.neg(s));
                let dport = fix_double_negation(&sport, dport);
                m.push(Match::Udp(UdpMatch { sport, dport }));
            }
            1 if self.r.chance(2, 3) => {
                let (t, lo, hi) = *self.r.pick(&[
                    (8u8, 0u8, 0xffu8),
                    (8, 0, 0xff),
                    (0, 0, 0xff),
                    (3, 3, 3),
                    (0xff, 0, 0xff),
                ]);
                let v = IcmpType {
                    icmp_type: t,
                    code_min: lo,
                    code_max: hi,
                };
                m.push(Match::Icmp(self.neg(v)));
            }
            58 if self.r.chance(2, 3) => {
                let (t, lo, hi) = *self.r.pick(&[
                    (128u8, 0u8, 0xffu8),
                    (128, 0, 0xff),
                    (129, 0, 0xff),
                    (1, 4, 4),
                    (1, 0, 0xff),
                ]);
                let v = IcmpType {
                    icmp_type: t,
                    code_min: lo,
                    code_max: hi,
                };
                m.push(Match::Icmp6(self.neg(v)));
            }
            6 | 17 if self.r.chance(1, 2) => {
                let n = 1 + self.r.below(3);
                let ports = (0..n).map(|_| self.port()).collect();
                let dir = *self.r.pick(&[
                    MultiportDir::Source,
                    MultiportDir::Destination,
                    MultiportDir::Destination,
                    MultiportDir::Either,
                ]);
                m.push(Match::Multiport(MultiportMatch {
                    negated: self.r.chance(1, 5),
                    dir,
                    ports,
                }));
            }
            _ => {}
        }
    }

    fn states(&mut self, all: &[CtState]) -> Vec<CtState> {
        let mut v: Vec<CtState> = all
            .iter()
            .copied()
            .filter(|_| self.r.chance(1, 3))
            .collect();
        if v.is_empty() {
            v.push(*self.r.pick(all));
        }
        v
    }

    fn module(&mut self, spot: &Spot<'_>, out_ok: bool, m: &mut Vec<Match>) {
        match self.r.below(14) {
            0 | 1 => {
                let s = self.states(&CtState::ALL);
                let mut c = ConntrackMatch {
                    state: Some(self.neg(s)),
                    ..Default::default()
                };
                if self.r.chance(1, 4) {
                    let d = self.cidr();
                    c.orig_dst = Some(self.neg(d));
                }
                m.push(Match::Conntrack(Box::new(c)));
            }
            2 => {
                let s = self.states(&CtState::ALL[..5]);
                m.push(Match::State(self.neg(s)));
            }
            3 => m.push(Match::Comment("diff".into())),
            4 => {
                let types = [
                    AddrType::Local,
                    AddrType::Unicast,
                    AddrType::Broadcast,
                    AddrType::Multicast,
                ];
                let mut t: Vec<AddrType> = types
                    .iter()
                    .copied()
                    .filter(|_| self.r.chance(1, 2))
                    .collect();
                if t.is_empty() || self.flow.family == Family::Ipv6 {
                    // IPv6: xt_addrtype refuses BROADCAST, and the evaluator models only LOCAL.
                    t = vec![AddrType::Local];
                }
                let n = self.neg(t);
                let a = if self.r.chance(1, 2) {
                    AddrTypeMatch {
                        dst: Some(n),
                        ..Default::default()
                    }
                } else {
                    AddrTypeMatch {
                        src: Some(n),
                        ..Default::default()
                    }
                };
                m.push(Match::AddrType(Box::new(a)));
            }
            5 | 6 => {
                let k = self.mark();
                m.push(Match::Mark(self.neg(k)));
            }
            7 => {
                let k = self.mark();
                m.push(Match::Connmark(self.neg(k)));
            }
            8 => {
                let mode = if self.r.chance(3, 4) {
                    // Exactly representable in iptables' 2^31 fixed point.
                    let probability = *self.r.pick(&[0.5, 0.25, 0.75, 1.0]);
                    StatisticMode::Random { probability }
                } else {
                    let every = 2 + self.r.below(2) as u32;
                    StatisticMode::Nth {
                        every,
                        packet: self.r.below(u64::from(every)) as u32,
                    }
                };
                m.push(Match::Statistic(StatisticMatch {
                    negated: self.r.chance(1, 5),
                    mode,
                }));
            }
            9 => {
                let (a, b) = (self.addr(), self.addr());
                let range = AddrRange {
                    start: a.min(b),
                    end: a.max(b),
                };
                let n = self.neg(range);
                let im = if self.r.chance(1, 2) {
                    IpRangeMatch {
                        src: Some(n),
                        dst: None,
                    }
                } else {
                    IpRangeMatch {
                        src: None,
                        dst: Some(n),
                    }
                };
                m.push(Match::IpRange(Box::new(im)));
            }
            10 => {
                let len = self.flow.length.unwrap_or(40);
                let r = *self.r.pick(&[
                    PortRange::single(len),
                    PortRange { start: 0, end: 38 },
                    PortRange {
                        start: 39,
                        end: 1500,
                    },
                ]);
                m.push(Match::Length(self.neg(r)));
            }
            11 if out_ok && matches!(spot.home, "OUTPUT" | "POSTROUTING") => {
                let uid = *self.r.pick(&[0u32, 1000]);
                let o = OwnerMatch {
                    uid: Some(self.neg(IdRange {
                        start: uid,
                        end: uid,
                    })),
                    ..Default::default()
                };
                m.push(Match::Owner(o));
            }
            12 if self.r.chance(1, 20) => {
                self.undecidable.push("-m limit".into());
                m.push(Match::Limit(LimitMatch {
                    rate: Some((1 + self.r.below(100) as u32, "sec".into())),
                    burst: Some(1 + self.r.below(10) as u32),
                }));
            }
            13 if self.r.chance(1, 20) => {
                let (name, args) = if self.r.chance(1, 2) {
                    ("pkttype", vec!["--pkt-type".to_string(), "unicast".into()])
                } else if self.flow.family == Family::Ipv4 {
                    ("ttl", vec!["--ttl-gt".to_string(), "10".into()])
                } else {
                    ("hl", vec!["--hl-gt".to_string(), "10".into()])
                };
                self.undecidable.push(format!("-m {name}"));
                m.push(Match::Unknown {
                    name: name.into(),
                    args,
                });
            }
            _ => {}
        }
    }

    fn target(&mut self, spot: &Spot<'_>, proto: Option<u8>) -> Option<Target> {
        if self.r.chance(1, 15) {
            return None;
        }
        if !spot.later.is_empty() && self.r.chance(1, 3) {
            let c = self.r.pick(spot.later).clone();
            return Some(if self.r.chance(1, 4) {
                Target::Goto(c)
            } else {
                Target::Jump(c)
            });
        }
        let t = spot.table;
        let mut options = vec![Target::Accept, Target::Accept, Target::Return];
        if t != TableName::Nat {
            options.push(Target::Drop);
        }
        if t == TableName::Filter {
            let with = if proto == Some(6) && self.r.chance(1, 2) {
                RejectWith::TcpReset
            } else if self.flow.family == Family::Ipv6 {
                *self.r.pick(&[
                    RejectWith::Icmp6PortUnreachable,
                    RejectWith::Icmp6AdmProhibited,
                    RejectWith::Icmp6NoRoute,
                    RejectWith::Icmp6AddrUnreachable,
                ])
            } else {
                *self.r.pick(&[
                    RejectWith::IcmpPortUnreachable,
                    RejectWith::IcmpHostProhibited,
                    RejectWith::IcmpAdminProhibited,
                    RejectWith::IcmpNetUnreachable,
                    RejectWith::IcmpHostUnreachable,
                ])
            };
            for _ in 0..3 {
                options.push(Target::Reject(with));
            }
        }
        if matches!(t, TableName::Mangle | TableName::Filter) {
            let k = self.mark();
            options.push(Target::Mark {
                value: k.value,
                mask: k.mask,
            });
            options.push(Target::Mark {
                value: k.value,
                mask: k.mask,
            });
            let action = match self.r.below(3) {
                0 => ConnmarkAction::SetXmark {
                    value: k.value,
                    mask: k.mask,
                },
                1 => ConnmarkAction::Save {
                    nfmask: u32::MAX,
                    ctmask: u32::MAX,
                },
                _ => ConnmarkAction::Restore {
                    nfmask: u32::MAX,
                    ctmask: u32::MAX,
                },
            };
            options.push(Target::Connmark(action));
        }
        if t == TableName::Raw {
            options.push(Target::Notrack);
            options.push(Target::Ct(vec!["--notrack".into()]));
        }
        if t == TableName::Nat {
            self.nat_targets(spot.home, proto, &mut options);
        }
        Some(self.r.pick(&options).clone())
    }

    fn nat_targets(&mut self, home: &str, proto: Option<u8>, options: &mut Vec<Target>) {
        let l = self.addrs();
        let ported = matches!(proto, Some(6 | 17));
        let port = (ported && self.r.chance(1, 2))
            .then(|| PortRange::single(*self.r.pick(&[22u16, 80, 8080, 9099])));
        let to = |a: IpAddr, ports| NatRange {
            addrs: Some((a, a)),
            ports,
        };
        match home {
            "PREROUTING" | "OUTPUT" => {
                // Only addresses with a host behind them; loopback only from local output
                // (PREROUTING to 127.0.0.1 is a martian destination for routing).
                let loopback_src = self.flow.src.is_loopback();
                let mut dsts = if home == "OUTPUT" && loopback_src && l.loopback.is_ipv6() {
                    // ::1 re-routed off the host: the evaluator models the IPv4 rule only
                    // (127.0.0.0/8 may not leave the host, `__mkroute_output`, EINVAL).
                    vec![l.router_inner, l.router_outer]
                } else {
                    vec![l.server, l.client, l.router_inner, l.router_outer]
                };
                if home == "OUTPUT" {
                    dsts.push(l.loopback);
                }
                let d = *self.r.pick(&dsts);
                for _ in 0..2 {
                    options.push(Target::Dnat {
                        to: to(d, port),
                        flags: NatFlags::default(),
                    });
                }
                if ported {
                    options.push(Target::Redirect {
                        ports: port,
                        flags: NatFlags::default(),
                    });
                }
            }
            _ => {
                let n = 1 + self.r.below(250) as u8;
                let random = match self.flow.family {
                    Family::Ipv4 => IpAddr::V4(Ipv4Addr::new(192, 0, 2, n)),
                    Family::Ipv6 => IpAddr::V6(Ipv6Addr::new(0xfd00, 9, 0, 0, 0, 0, 0, n.into())),
                };
                let s = *self.r.pick(&[l.router_inner, l.router_outer, random]);
                for _ in 0..2 {
                    options.push(Target::Snat {
                        to: to(s, port),
                        flags: NatFlags::default(),
                    });
                }
                if home == "POSTROUTING" {
                    options.push(Target::Masquerade {
                        ports: None,
                        flags: NatFlags::default(),
                    });
                }
            }
        }
    }
}

/// `! --sport A ! --dport B` with single ports is not generated: iptables-nft 1.8.9 loads both
/// ports as one 4-byte payload and compares it `!=` once, so the rule matches when *either* port
/// differs (OR), while the rule text — and xt_tcpudp, and the legacy backend — mean both (AND).
/// (`nft --debug=netlink`: `payload load 4b @ transport header + 0`, `cmp neq`; found by the
/// differential test, seed 32906.) That is an iptables-nft bug, not evaluator semantics; the
/// dport negation is dropped instead (no random draw, so other cases stay the same).
fn fix_double_negation(
    sport: &Option<Neg<PortRange>>,
    dport: Option<Neg<PortRange>>,
) -> Option<Neg<PortRange>> {
    let single = |n: &Neg<PortRange>| n.negated && n.value.start == n.value.end;
    match (sport, dport) {
        (Some(s), Some(d)) if single(s) && single(&d) => Some(Neg {
            negated: false,
            value: d.value,
        }),
        (_, d) => d,
    }
}
