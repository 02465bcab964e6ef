//! Random valid rulesets from a seed (feature `gen`), for round-trip property tests and for
//! differential tests against the kernel.
//!
//! "Valid" means `iptables-restore` (legacy and nf_tables) accepts the rendered text — the test
//! `kernel_accepts_generated_rulesets` applies generated rulesets in a network namespace and
//! checks `iptables-save` prints them back unchanged. The rules that keep them valid: `-i` only
//! in PREROUTING/INPUT/FORWARD and `-o` only in FORWARD/OUTPUT/POSTROUTING built-in chains;
//! `owner` only in OUTPUT/POSTROUTING; `mac` only in PREROUTING/INPUT/FORWARD; no DROP/REJECT
//! in nat (iptables refuses them there); REJECT only in filter; NAT targets only in the nat
//! built-in chains whose hooks allow them; user chains jump only to later user chains (no
//! loops) and use only hook-independent matches and targets; nat policies are ACCEPT.
//! ipsets are used only when [`GenConfig::with_sets`] is set (they must exist to restore).
//!
//! [`kube_proxy`] generates kube-proxy iptables-mode rulesets of N Services × M endpoints;
//! [`cni`] the chains Docker, Calico and Antrea install on a node.

pub mod cases;
pub mod cni;
pub mod kube_proxy;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::addr::{AddrRange, Cidr, IdRange, Interface, MacAddr, MarkMask, PortRange};
use crate::icmp::IcmpType;
use crate::matches::{
    AddrType, AddrTypeMatch, ConntrackMatch, CtState, IpRangeMatch, LimitMatch, Match,
    MultiportDir, MultiportMatch, Neg, OwnerMatch, SetMatch, StatisticMatch, StatisticMode,
    TcpFlags, TcpMatch, UdpMatch,
};
use crate::model::{Chain, Family, Policy, Rule, Ruleset, Table, TableName};
use crate::parse::{ParseOptions, parse_save};
use crate::proto::Protocol;
use crate::render::render_ruleset;
use crate::target::{ConnmarkAction, NatFlags, NatRange, RejectWith, Target};

/// A small deterministic RNG (SplitMix64): the same seed gives the same ruleset on every platform
/// and crate version, so a failing seed printed by a test reproduces.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `0..n` (`0` when `n == 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// True with probability `num/den`.
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }

    /// A random element of a non-empty slice (the first for an empty one is impossible: callers pass literals).
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenConfig {
    /// Address family.
    pub family: Family,
    /// At most this many user chains per table.
    pub max_user_chains: usize,
    /// At most this many rules per chain.
    pub max_rules: usize,
    /// Use `-m set` (the sets `gen4`/`gen6` must exist for `iptables-restore` to accept it).
    pub with_sets: bool,
    /// Include modules and targets this crate keeps as `Unknown` (`-m pkttype`, `-m ttl`/`hl`, `-j TTL`-free).
    pub with_unknown: bool,
    /// Print `[p:b]` rule counters.
    pub with_counters: bool,
}

impl GenConfig {
    /// Defaults for `family`: up to 3 user chains and 6 rules per chain, no sets, unknown modules, no counters.
    pub fn new(family: Family) -> GenConfig {
        GenConfig {
            family,
            max_user_chains: 3,
            max_rules: 6,
            with_sets: false,
            with_unknown: true,
            with_counters: false,
        }
    }
}

/// The canonical save text of a random ruleset.
pub fn ruleset_text(seed: u64, cfg: &GenConfig) -> String {
    render_ruleset(&model(seed, cfg))
}

/// A random ruleset, as parsed from its canonical text (so lines and texts are filled in).
/// Returns `None` only if the generator produced text the parser rejects (a bug either side).
pub fn ruleset(seed: u64, cfg: &GenConfig) -> Option<Ruleset> {
    let opts = ParseOptions {
        family: Some(cfg.family),
        backend: None,
    };
    parse_save(&ruleset_text(seed, cfg), &opts).ok()
}

/// Where a rule sits, which decides what is valid in it.
struct Spot<'a> {
    table: TableName,
    chain: &'a str,
    builtin: bool,
    later_chains: &'a [String],
}

/// A random ruleset model (rule `line`/`text` are placeholders; see [`ruleset`]).
pub fn model(seed: u64, cfg: &GenConfig) -> Ruleset {
    let mut r = Rng::new(seed);
    let mut tables = Vec::new();
    for name in TableName::ALL {
        if !r.chance(3, 4) {
            continue;
        }
        let n_user = r.below(cfg.max_user_chains as u64 + 1) as usize;
        let users: Vec<String> = (0..n_user)
            .map(|i| format!("GEN-{}-{i}", name.as_str().to_uppercase()))
            .collect();
        let mut chains = Vec::new();
        for &b in name.builtin_chains() {
            let mut c = Chain::new(b, true);
            c.policy = Some(if name != TableName::Nat && r.chance(1, 4) {
                Policy::Drop
            } else {
                Policy::Accept
            });
            c.line = Some(0);
            let spot = Spot {
                table: name,
                chain: b,
                builtin: true,
                later_chains: &users,
            };
            c.rules = (0..r.below(cfg.max_rules as u64 + 1))
                .map(|_| rule(&mut r, cfg, &spot))
                .collect();
            chains.push(c);
        }
        for (i, u) in users.iter().enumerate() {
            let mut c = Chain::new(u, false);
            c.line = Some(0);
            let spot = Spot {
                table: name,
                chain: u,
                builtin: false,
                later_chains: &users[i + 1..],
            };
            c.rules = (0..r.below(cfg.max_rules as u64 + 1))
                .map(|_| rule(&mut r, cfg, &spot))
                .collect();
            chains.push(c);
        }
        let mut table = Table::new(name, 0);
        table.chains = chains;
        tables.push(table);
    }
    Ruleset {
        backend: None,
        family: cfg.family,
        version: None,
        tables,
        comments: Vec::new(),
    }
}

fn addr(r: &mut Rng, family: Family) -> IpAddr {
    match family {
        Family::Ipv4 => {
            let nets = [[198, 51, 100], [203, 0, 113], [192, 0, 2]];
            let n = r.pick(&nets);
            IpAddr::V4(Ipv4Addr::new(n[0], n[1], n[2], r.below(256) as u8))
        }
        Family::Ipv6 => IpAddr::V6(Ipv6Addr::new(
            0xfd00,
            r.below(4) as u16,
            0,
            0,
            0,
            0,
            0,
            r.below(0x10000) as u16,
        )),
    }
}

fn cidr(r: &mut Rng, family: Family) -> Cidr {
    let a = addr(r, family);
    let len = match family {
        Family::Ipv4 => *r.pick(&[8u8, 16, 24, 28, 32]),
        Family::Ipv6 => *r.pick(&[8u8, 32, 64, 120, 128]),
    };
    Cidr::new(a, len).unwrap_or_else(|| Cidr::host(a))
}

fn neg<T>(value: T, r: &mut Rng) -> Neg<T> {
    Neg {
        negated: r.chance(1, 4),
        value,
    }
}

fn ports(r: &mut Rng) -> PortRange {
    let a = r.below(65536) as u16;
    if r.chance(1, 3) {
        let b = a.saturating_add(r.below(1000) as u16);
        PortRange { start: a, end: b }
    } else {
        PortRange::single(a)
    }
}

fn iface(r: &mut Rng) -> Interface {
    let name = format!("{}{}", r.pick(&["eth", "veth", "cali", "lo"]), r.below(4));
    Interface {
        name,
        wildcard: r.chance(1, 3),
    }
}

fn comment(r: &mut Rng) -> String {
    r.pick(&[
        "kubernetes service nodeports",
        "cali:abc_-1",
        "a \"quoted\" word",
        "x",
        "ns/svc:http",
        "it's",
    ])
    .to_string()
}

fn rule(r: &mut Rng, cfg: &GenConfig, spot: &Spot<'_>) -> Rule {
    let f = cfg.family;
    let mut m = Vec::new();
    if r.chance(1, 3) {
        m.push(Match::Source(neg(cidr(r, f), r)));
    }
    if r.chance(1, 3) {
        m.push(Match::Destination(neg(cidr(r, f), r)));
    }
    let (in_ok, out_ok) = match (spot.builtin, spot.chain) {
        (true, "PREROUTING" | "INPUT") => (true, false),
        (true, "FORWARD") => (true, true),
        (true, "OUTPUT" | "POSTROUTING") => (false, true),
        _ => (false, false),
    };
    if in_ok && r.chance(1, 4) {
        m.push(Match::InInterface(neg(iface(r), r)));
    }
    if out_ok && r.chance(1, 4) {
        m.push(Match::OutInterface(neg(iface(r), r)));
    }
    let proto = match r.below(6) {
        0 | 1 => Some(6u8),
        2 => Some(17),
        3 => Some(if f == Family::Ipv4 { 1 } else { 58 }),
        _ => None,
    };
    if let Some(p) = proto {
        m.push(Match::Protocol(Neg::plain(Protocol::Number(p))));
        proto_match(r, p, &mut m);
    } else if f == Family::Ipv4 && r.chance(1, 8) {
        m.push(Match::Fragment {
            negated: r.chance(1, 2),
        });
    }
    for _ in 0..r.below(3) {
        module(r, cfg, spot, &mut m);
    }
    let target = target(r, cfg, spot, proto);
    let counters = cfg.with_counters.then(|| crate::model::Counters {
        packets: r.below(1000),
        bytes: r.below(100_000),
    });
    Rule {
        line: 0,
        text: String::new(),
        counters,
        matches: m,
        target,
    }
}

fn proto_match(r: &mut Rng, p: u8, m: &mut Vec<Match>) {
    match p {
        6 if r.chance(2, 3) => {
            let flags = if r.chance(1, 3) {
                Some(neg(
                    if r.chance(1, 2) {
                        TcpFlags::SYN
                    } else {
                        TcpFlags {
                            mask: 0x3f,
                            comp: 0,
                        }
                    },
                    r,
                ))
            } else {
                None
            };
            let sport = r.chance(1, 3).then(|| neg(ports(r), r));
            let dport = r.chance(2, 3).then(|| neg(ports(r), r));
            m.push(Match::Tcp(TcpMatch {
                sport,
                dport,
                flags,
                option: None,
            }));
        }
        17 if r.chance(2, 3) => {
            let sport = r.chance(1, 3).then(|| neg(ports(r), r));
            let dport = r.chance(2, 3).then(|| neg(ports(r), r));
            m.push(Match::Udp(UdpMatch { sport, dport }));
        }
        1 if r.chance(2, 3) => {
            let names = crate::icmp::ICMP_NAMES;
            let e = r.pick(names);
            m.push(Match::Icmp(neg(
                IcmpType {
                    icmp_type: e.1,
                    code_min: e.2,
                    code_max: e.3,
                },
                r,
            )));
        }
        58 if r.chance(2, 3) => {
            let e = r.pick(crate::icmp::ICMPV6_NAMES);
            m.push(Match::Icmp6(neg(
                IcmpType {
                    icmp_type: e.1,
                    code_min: e.2,
                    code_max: e.3,
                },
                r,
            )));
        }
        6 | 17 if r.chance(1, 2) => {
            let n = 1 + r.below(4);
            let ps = (0..n).map(|_| ports(r)).collect();
            let dir = *r.pick(&[
                MultiportDir::Source,
                MultiportDir::Destination,
                MultiportDir::Either,
            ]);
            m.push(Match::Multiport(MultiportMatch {
                negated: r.chance(1, 4),
                dir,
                ports: ps,
            }));
        }
        _ => {}
    }
}

fn states(r: &mut Rng, all: &[CtState]) -> Vec<CtState> {
    let mut v: Vec<CtState> = all.iter().copied().filter(|_| r.chance(1, 3)).collect();
    if v.is_empty() {
        v.push(*r.pick(all));
    }
    v
}

fn module(r: &mut Rng, cfg: &GenConfig, spot: &Spot<'_>, m: &mut Vec<Match>) {
    let f = cfg.family;
    let hook_out = spot.builtin && matches!(spot.chain, "OUTPUT" | "POSTROUTING");
    let hook_in = spot.builtin && matches!(spot.chain, "PREROUTING" | "INPUT" | "FORWARD");
    match r.below(15) {
        0 => {
            let mut c = ConntrackMatch {
                state: Some(neg(states(r, &CtState::ALL), r)),
                ..Default::default()
            };
            if r.chance(1, 3) {
                c.orig_dst = Some(neg(cidr(r, f), r));
            }
            if r.chance(1, 4) {
                c.orig_dst_port = Some(neg(ports(r), r));
                c.proto = Some(Neg::plain(Protocol::TCP));
            }
            m.push(Match::Conntrack(Box::new(c)));
        }
        1 => m.push(Match::State(neg(states(r, &CtState::ALL[..5]), r))),
        2 => m.push(Match::Comment(comment(r))),
        3 => {
            // xt_addrtype.c refuses BROADCAST, BLACKHOLE, THROW and NAT for IPv6.
            let types: &[AddrType] = match f {
                Family::Ipv4 => &[
                    AddrType::Local,
                    AddrType::Unicast,
                    AddrType::Broadcast,
                    AddrType::Multicast,
                ],
                Family::Ipv6 => &[AddrType::Local, AddrType::Unicast, AddrType::Multicast],
            };
            let mut t: Vec<AddrType> = types.iter().copied().filter(|_| r.chance(1, 2)).collect();
            if t.is_empty() {
                t.push(AddrType::Local);
            }
            t.sort();
            let a = if r.chance(1, 2) {
                AddrTypeMatch {
                    dst: Some(neg(t, r)),
                    ..Default::default()
                }
            } else {
                AddrTypeMatch {
                    src: Some(neg(t, r)),
                    ..Default::default()
                }
            };
            m.push(Match::AddrType(Box::new(a)));
        }
        4 => m.push(Match::Mark(neg(mark(r), r))),
        5 => m.push(Match::Connmark(neg(mark(r), r))),
        6 => {
            // iptables stores lround(p * 2^31) and prints it back with 11 decimals.
            let k = r.below(1 << 31) as f64;
            let mode = if r.chance(3, 4) {
                StatisticMode::Random {
                    probability: k / f64::from(1u32 << 31),
                }
            } else {
                let every = 1 + r.below(9) as u32;
                StatisticMode::Nth {
                    every,
                    packet: r.below(u64::from(every)) as u32,
                }
            };
            m.push(Match::Statistic(StatisticMatch {
                negated: r.chance(1, 5),
                mode,
            }));
        }
        7 => {
            let (a, b) = (addr(r, f), addr(r, f));
            let range = AddrRange {
                start: a.min(b),
                end: a.max(b),
            };
            let im = if r.chance(1, 2) {
                IpRangeMatch {
                    src: Some(neg(range, r)),
                    dst: None,
                }
            } else {
                IpRangeMatch {
                    src: None,
                    dst: Some(neg(range, r)),
                }
            };
            m.push(Match::IpRange(Box::new(im)));
        }
        8 if hook_out => {
            let uid = r.below(2000) as u32;
            let o = OwnerMatch {
                uid: Some(neg(
                    IdRange {
                        start: uid,
                        end: uid + r.below(3) as u32,
                    },
                    r,
                )),
                ..Default::default()
            };
            m.push(Match::Owner(o));
        }
        9 => {
            // iptables prints the rate in the unit it finds best (1/hour becomes 24/day); these
            // come back as written.
            let rate = if r.chance(1, 2) {
                (1 + r.below(100) as u32, "sec")
            } else {
                (1 + r.below(59) as u32, "min")
            };
            let l = LimitMatch {
                rate: Some((rate.0, rate.1.to_string())),
                // The default burst (5) is printed by ip6tables-legacy-save and omitted by the
                // others, so always give another one.
                burst: Some(match 1 + r.below(50) as u32 {
                    5 => 6,
                    b => b,
                }),
            };
            m.push(Match::Limit(l));
        }
        10 => {
            let a = r.below(1500) as u16;
            m.push(Match::Length(neg(
                PortRange {
                    start: a,
                    end: a + r.below(100) as u16,
                },
                r,
            )));
        }
        11 if hook_in => {
            let b = r.next_u64().to_be_bytes();
            m.push(Match::Mac(neg(
                MacAddr([2, b[1], b[2], b[3], b[4], b[5]]),
                r,
            )));
        }
        12 if cfg.with_sets => {
            let set = if f == Family::Ipv4 { "gen4" } else { "gen6" };
            m.push(Match::Set(Box::new(SetMatch {
                negated: r.chance(1, 4),
                set: set.into(),
                dst: vec![r.chance(1, 2)],
                return_nomatch: false,
            })));
        }
        13 if cfg.with_unknown => {
            let (name, args) = if r.chance(1, 2) {
                (
                    "pkttype",
                    vec![
                        "--pkt-type".to_string(),
                        r.pick(&["unicast", "broadcast", "multicast"]).to_string(),
                    ],
                )
            } else if f == Family::Ipv4 {
                (
                    "ttl",
                    vec!["--ttl-gt".to_string(), r.below(255).to_string()],
                )
            } else {
                ("hl", vec!["--hl-gt".to_string(), r.below(255).to_string()])
            };
            m.push(Match::Unknown {
                name: name.to_string(),
                args,
            });
        }
        // The draws that are not valid here add nothing.
        _ => {}
    }
}

fn mark(r: &mut Rng) -> MarkMask {
    let mask = if r.chance(1, 2) {
        u32::MAX
    } else {
        0xffff << r.below(16)
    };
    MarkMask {
        value: (r.next_u64() as u32) & mask,
        mask,
    }
}

fn target(r: &mut Rng, cfg: &GenConfig, spot: &Spot<'_>, proto: Option<u8>) -> Option<Target> {
    let f = cfg.family;
    if r.chance(1, 12) {
        return None;
    }
    if !spot.later_chains.is_empty() && r.chance(1, 4) {
        let c = r.pick(spot.later_chains).clone();
        return Some(if r.chance(1, 4) {
            Target::Goto(c)
        } else {
            Target::Jump(c)
        });
    }
    let mut options = vec![
        Target::Accept,
        Target::Return,
        Target::Log(vec!["--log-prefix".into(), "gen: ".into()]),
    ];
    let t = spot.table;
    if t != TableName::Nat {
        options.push(Target::Drop);
    }
    if t == TableName::Filter {
        let with = if proto == Some(6) && r.chance(1, 3) {
            RejectWith::TcpReset
        } else if f == Family::Ipv4 {
            *r.pick(&[
                RejectWith::IcmpPortUnreachable,
                RejectWith::IcmpHostProhibited,
                RejectWith::IcmpAdminProhibited,
            ])
        } else {
            *r.pick(&[
                RejectWith::Icmp6PortUnreachable,
                RejectWith::Icmp6AdmProhibited,
            ])
        };
        options.push(Target::Reject(with));
    }
    if t == TableName::Mangle || t == TableName::Filter {
        let mk = mark(r);
        options.push(Target::Mark {
            value: mk.value,
            mask: mk.mask,
        });
        options.push(Target::Connmark(if r.chance(1, 2) {
            ConnmarkAction::SetXmark {
                value: mk.value,
                mask: mk.mask,
            }
        } else {
            ConnmarkAction::Save {
                nfmask: u32::MAX,
                ctmask: u32::MAX,
            }
        }));
    }
    if t == TableName::Raw {
        options.push(Target::Notrack);
        options.push(Target::Ct(vec!["--notrack".into()]));
    }
    if t == TableName::Nat && spot.builtin {
        let ported = matches!(proto, Some(6 | 17));
        let p = ported.then(|| PortRange::single(1 + r.below(65535) as u16));
        let to = NatRange {
            addrs: Some({
                let a = addr(r, f);
                (a, a)
            }),
            ports: p,
        };
        match spot.chain {
            "PREROUTING" | "OUTPUT" => {
                options.push(Target::Dnat {
                    to,
                    flags: NatFlags::default(),
                });
                if ported {
                    options.push(Target::Redirect {
                        ports: p,
                        flags: NatFlags::default(),
                    });
                }
            }
            "POSTROUTING" => {
                options.push(Target::Snat {
                    to,
                    flags: NatFlags {
                        random: r.chance(1, 3),
                        ..Default::default()
                    },
                });
                options.push(Target::Masquerade {
                    ports: None,
                    flags: NatFlags {
                        random_fully: r.chance(1, 2),
                        ..Default::default()
                    },
                });
            }
            _ => options.push(Target::Snat {
                to,
                flags: NatFlags::default(),
            }),
        }
    }
    Some(r.pick(&options).clone())
}

/// The `# Generated by` tool string of `iptables-save` for `backend` (iptables 1.8.9).
pub(crate) fn save_tool(backend: crate::model::Backend) -> &'static str {
    match backend {
        crate::model::Backend::Legacy => "iptables-save v1.8.9",
        // No iptables tool writes native nftables tables: print them as iptables-nft would.
        crate::model::Backend::Nft | crate::model::Backend::Nftables => {
            "iptables-nft-save v1.8.9 (nf_tables)"
        }
    }
}

/// Appends one table as `iptables-save` prints it: the header, the built-in chains in hook order
/// with their policies (`builtin`: name, policy), the user chains in name order (libiptc and
/// iptables-nft-save 1.8.7+ sort them), then every chain's rules (full `-A` lines) in that order.
pub(crate) fn save_table(
    out: &mut String,
    tool: &str,
    name: &str,
    builtin: &[(&str, &str)],
    chains: &std::collections::BTreeMap<String, Vec<String>>,
) {
    use std::fmt::Write as _;
    // Writing to a String cannot fail.
    let _ = writeln!(
        out,
        "# Generated by {tool} on Sat Nov 21 13:04:04 2026\n*{name}"
    );
    for (b, policy) in builtin {
        let _ = writeln!(out, ":{b} {policy} [0:0]");
    }
    let is_builtin = |c: &str| builtin.iter().any(|(b, _)| *b == c);
    let user = chains.keys().filter(|c| !is_builtin(c));
    for c in user.clone() {
        let _ = writeln!(out, ":{c} - [0:0]");
    }
    let order = builtin
        .iter()
        .map(|(b, _)| *b)
        .chain(user.map(String::as_str));
    for c in order {
        for r in chains.get(c).into_iter().flatten() {
            out.push_str(r);
            out.push('\n');
        }
    }
    out.push_str("COMMIT\n# Completed on Sat Nov 21 13:04:04 2026\n");
}
