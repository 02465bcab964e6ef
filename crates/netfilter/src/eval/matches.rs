//! Three-valued evaluation of one typed match against the packet, following the kernel's match
//! functions (net/ipv4/netfilter/ip_tables.c `ip_packet_match`, net/netfilter/xt_*.c).

use std::net::{IpAddr, Ipv4Addr};

use crate::addr::{Cidr, Interface, PortRange};
use crate::matches::{
    AddrType, AddrTypeMatch, ConntrackMatch, CtDir, CtState, LimitIface, Match, MultiportDir, Neg,
    OwnerMatch, SetMatch,
};
use crate::proto::Protocol;

use super::flow::{ConnState, HostModel};
use super::packet::{Dev, Packet};

/// A match result: holds, does not hold, or cannot be decided (with the reason).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Tri {
    Yes,
    No,
    Unknown(String),
}

impl Tri {
    fn of(b: bool) -> Tri {
        if b { Tri::Yes } else { Tri::No }
    }

    /// Applies `!`; an unknown stays unknown.
    fn neg(self, negated: bool) -> Tri {
        match self {
            Tri::Yes if negated => Tri::No,
            Tri::No if negated => Tri::Yes,
            t => t,
        }
    }

    /// Conjunction: a definite `No` wins over an unknown.
    fn and(self, other: Tri) -> Tri {
        match (self, other) {
            (Tri::No, _) | (_, Tri::No) => Tri::No,
            (Tri::Unknown(r), _) | (_, Tri::Unknown(r)) => Tri::Unknown(r),
            (Tri::Yes, Tri::Yes) => Tri::Yes,
        }
    }

    /// Disjunction: a definite `Yes` wins over an unknown.
    fn or(self, other: Tri) -> Tri {
        match (self, other) {
            (Tri::Yes, _) | (_, Tri::Yes) => Tri::Yes,
            (Tri::Unknown(r), _) | (_, Tri::Unknown(r)) => Tri::Unknown(r),
            (Tri::No, Tri::No) => Tri::No,
        }
    }
}

fn unknown(reason: impl Into<String>) -> Tri {
    Tri::Unknown(reason.into())
}

fn addr_in(addr: Option<IpAddr>, what: &str, test: impl Fn(IpAddr) -> bool) -> Tri {
    addr.map_or_else(
        || unknown(format!("{what} address not known")),
        |a| Tri::of(test(a)),
    )
}

fn port_in(port: Option<u16>, what: &str, r: &PortRange) -> Tri {
    port.map_or_else(
        || unknown(format!("{what} port not known")),
        |p| Tri::of(r.contains(p)),
    )
}

fn opt<T>(o: &Option<Neg<T>>, f: impl FnOnce(&T) -> Tri) -> Tri {
    o.as_ref().map_or(Tri::Yes, |n| f(&n.value).neg(n.negated))
}

fn dev_match(dev: &Dev, iface: &Interface, what: &str) -> Tri {
    match dev {
        Dev::Absent => Tri::of(iface.matches("")),
        Dev::Named(n) => Tri::of(iface.matches(n)),
        // `+` alone matches every name.
        Dev::Unknown if iface.wildcard && iface.name.is_empty() => Tri::Yes,
        Dev::Unknown => unknown(format!("{what} interface not known")),
    }
}

/// Protocols whose header carries ports at the offsets `-m multiport` reads.
const PORT_PROTOS: [u8; 5] = [6, 17, 33, 132, 136];

/// Evaluates `m`; `Match::Statistic` is the caller's (it forks the walk) and gives `Yes` here.
pub(crate) fn eval(m: &Match, p: &Packet, host: &HostModel) -> Tri {
    match m {
        Match::Source(n) => addr_in(p.src, "source", |a| n.value.contains(a)).neg(n.negated),
        Match::Destination(n) => {
            addr_in(p.dst, "destination", |a| n.value.contains(a)).neg(n.negated)
        }
        Match::InInterface(n) => dev_match(&p.indev, &n.value, "input").neg(n.negated),
        Match::OutInterface(n) => dev_match(&p.outdev, &n.value, "output").neg(n.negated),
        Match::Protocol(n) => match &n.value {
            // `-p all` (0) is not compared at all, negated or not (ip_packet_match: `ipinfo->proto &&`).
            Protocol::Number(0) => Tri::Yes,
            Protocol::Number(x) => Tri::of(*x == p.protocol).neg(n.negated),
            Protocol::Unresolved(s) => unknown(format!("protocol name `{s}` not resolved")),
        },
        // Flows are unfragmented (or first fragments).
        Match::Fragment { negated } => Tri::of(*negated),
        Match::Tcp(t) => {
            if p.protocol != 6 {
                return Tri::No;
            }
            opt(&t.sport, |r| port_in(p.sport, "source", r))
                .and(opt(&t.dport, |r| port_in(p.dport, "destination", r)))
                .and(opt(&t.flags, |f| {
                    p.tcp_flags.map_or_else(
                        || unknown("TCP flags of the packet not known"),
                        |b| Tri::of(b & f.mask == f.comp),
                    )
                }))
                .and(opt(&t.option, |_| {
                    unknown("TCP options of the packet not known")
                }))
        }
        Match::Udp(u) => {
            if !matches!(p.protocol, 17 | 136) {
                return Tri::No;
            }
            opt(&u.sport, |r| port_in(p.sport, "source", r))
                .and(opt(&u.dport, |r| port_in(p.dport, "destination", r)))
        }
        Match::Icmp(n) => icmp(p, 1, n),
        Match::Icmp6(n) => icmp(p, 58, n),
        Match::Multiport(mp) => {
            if !PORT_PROTOS.contains(&p.protocol) {
                return Tri::No;
            }
            let any = |port: Option<u16>, what| {
                mp.ports
                    .iter()
                    .fold(Tri::No, |acc, r| acc.or(port_in(port, what, r)))
            };
            let t = match mp.dir {
                MultiportDir::Source => any(p.sport, "source"),
                MultiportDir::Destination => any(p.dport, "destination"),
                MultiportDir::Either => any(p.sport, "source").or(any(p.dport, "destination")),
            };
            t.neg(mp.negated)
        }
        Match::Conntrack(c) => conntrack(c, p),
        Match::State(n) => {
            let bit = state_bit(p);
            Tri::of(n.value.contains(&bit)).neg(n.negated)
        }
        Match::Comment(_) => Tri::Yes,
        Match::AddrType(a) => addrtype(a, p, host),
        Match::Mark(n) => Tri::of(n.value.matches(p.mark)).neg(n.negated),
        // Without a conntrack entry connmark_mt returns false whatever the negation.
        Match::Connmark(n) if !p.has_ct() => Tri::No,
        Match::Connmark(n) => Tri::of(n.value.matches(p.ct_mark)).neg(n.negated),
        Match::Set(s) => set(s, p, host),
        Match::Statistic(_) => Tri::Yes,
        Match::IpRange(r) => opt(&r.src, |a| addr_in(p.src, "source", |x| a.contains(x)))
            .and(opt(&r.dst, |a| {
                addr_in(p.dst, "destination", |x| a.contains(x))
            })),
        Match::Owner(o) => owner(o, p),
        Match::Physdev(_) => unknown("-m physdev: bridge ports are not modelled"),
        Match::Limit(_) => unknown("-m limit: a token bucket, depends on traffic history"),
        Match::Length(n) => p
            .length
            .map_or_else(
                || unknown("packet length not known"),
                |l| Tri::of(n.value.contains(l)),
            )
            .neg(n.negated),
        Match::Mac(_) => match &p.indev {
            // mac_mt returns false (whatever the negation) unless the device is Ethernet.
            Dev::Absent => Tri::No,
            Dev::Named(n) if n == "lo" => Tri::No,
            _ => unknown("source MAC address not known"),
        },
        Match::Unknown { name, args } => {
            unknown(format!("match `{name} {}` is not modelled", args.join(" ")))
        }
    }
}

fn icmp(p: &Packet, proto: u8, n: &Neg<crate::icmp::IcmpType>) -> Tri {
    if p.protocol != proto {
        return Tri::No;
    }
    match (p.icmp_type, p.icmp_code) {
        (Some(t), Some(c)) => Tri::of(n.value.matches(t, c)).neg(n.negated),
        // `any` and a whole-type match need no code.
        (Some(t), None) if n.value.code_min == 0 && n.value.code_max == 0xFF => {
            Tri::of(n.value.matches(t, 0)).neg(n.negated)
        }
        _ => unknown("ICMP type/code of the packet not known"),
    }
}

/// The `-m state` bit (xt_state.c): UNTRACKED, INVALID without an entry, else the entry's state.
fn state_bit(p: &Packet) -> CtState {
    if p.notracked || (p.ct_attached && p.state == ConnState::Untracked) {
        return CtState::Untracked;
    }
    if !p.has_ct() {
        return CtState::Invalid;
    }
    match p.state {
        ConnState::New => CtState::New,
        ConnState::Established => CtState::Established,
        ConnState::Related => CtState::Related,
        ConnState::Invalid => CtState::Invalid,
        ConnState::Untracked => CtState::Untracked,
    }
}

/// xt_conntrack.c `conntrack_mt`: the state test first; without an entry (`ct == NULL`: before
/// conntrack, INVALID, UNTRACKED) the match holds iff it has a state test, which passed — every
/// other option is then ignored (`if (ct == NULL) return info->match_flags & XT_CONNTRACK_STATE;`).
fn conntrack(c: &ConntrackMatch, p: &Packet) -> Tri {
    let state = opt(&c.state, |states| {
        let bit = state_bit(p);
        let virt = p.has_ct()
            && ((p.ct_snat && states.contains(&CtState::Snat))
                || (p.ct_dnat && states.contains(&CtState::Dnat)));
        Tri::of(states.contains(&bit) || virt)
    });
    if state == Tri::No {
        return Tri::No;
    }
    if !p.has_ct() {
        return state.and(Tri::of(c.state.is_some()));
    }
    let new = p.state == ConnState::New;
    let cidr = |a: Option<IpAddr>, what: &str, n: &Cidr| addr_in(a, what, |x| n.contains(x));
    state
        .and(opt(&c.proto, |pr| match pr.number() {
            Some(n) => Tri::of(n == p.protocol),
            None => unknown("--ctproto name not resolved"),
        }))
        .and(opt(&c.orig_src, |n| {
            cidr(Some(p.orig_src), "original source", n)
        }))
        .and(opt(&c.orig_dst, |n| {
            cidr(Some(p.orig_dst), "original destination", n)
        }))
        .and(opt(&c.repl_src, |n| cidr(p.repl_src, "reply source", n)))
        .and(opt(&c.repl_dst, |n| {
            cidr(p.repl_dst, "reply destination", n)
        }))
        .and(opt(&c.orig_src_port, |r| {
            port_in(p.orig_sport, "original source", r)
        }))
        .and(opt(&c.orig_dst_port, |r| {
            port_in(p.orig_dport, "original destination", r)
        }))
        .and(opt(&c.repl_src_port, |r| {
            port_in(p.repl_sport, "reply source", r)
        }))
        .and(opt(&c.repl_dst_port, |r| {
            port_in(p.repl_dport, "reply destination", r)
        }))
        .and(opt(&c.status, |_| unknown("--ctstatus is not modelled")))
        .and(opt(&c.expire, |_| unknown("--ctexpire is not modelled")))
        .and(match c.dir {
            None => Tri::Yes,
            // The first packet travels in the original direction.
            Some(d) if new => Tri::of(d == CtDir::Original),
            Some(_) => unknown("--ctdir: the packet's direction is not known"),
        })
}

/// The IPv4 route type (`__inet_dev_addr_type`, net/ipv4/fib_frontend.c): broadcast for 0/8-zero
/// and 255.255.255.255, multicast, then the local table (local addresses, subnet broadcasts)
/// restricted to `dev` when given, else unicast.
pub(crate) fn v4_type(a: Ipv4Addr, dev: Option<&str>, host: &HostModel) -> AddrType {
    if a.octets()[0] == 0 || a.is_broadcast() {
        return AddrType::Broadcast;
    }
    if a.is_multicast() {
        return AddrType::Multicast;
    }
    let on_dev = |iface: &str| dev.is_none_or(|d| d == iface);
    if let Some(i) = host.local_iface(IpAddr::V4(a)) {
        return if on_dev(i) {
            AddrType::Local
        } else {
            AddrType::Unicast
        };
    }
    match host.subnet_broadcast_iface(a) {
        Some(i) if on_dev(i) => AddrType::Broadcast,
        _ => AddrType::Unicast,
    }
}

fn addrtype(m: &AddrTypeMatch, p: &Packet, host: &HostModel) -> Tri {
    let dev = match m.limit_iface {
        None => None,
        Some(LimitIface::In) => Some(&p.indev),
        Some(LimitIface::Out) => Some(&p.outdev),
    };
    let dev = match dev {
        None | Some(Dev::Absent) => None,
        Some(Dev::Named(n)) => Some(n.as_str()),
        Some(Dev::Unknown) => return unknown("addrtype: the limiting interface is not known"),
    };
    let test = |addr: Option<IpAddr>, what: &str, types: &[AddrType]| -> Tri {
        match addr {
            None => unknown(format!("{what} address not known")),
            Some(IpAddr::V4(a)) => Tri::of(types.contains(&v4_type(a, dev, host))),
            // IPv6 (xt_addrtype.c match_type6) combines the types differently; only LOCAL is modelled.
            Some(IpAddr::V6(a)) if types == [AddrType::Local] && dev.is_none() => {
                Tri::of(host.is_local(IpAddr::V6(a)))
            }
            Some(IpAddr::V6(_)) => unknown("IPv6 addrtype other than LOCAL is not modelled"),
        }
    };
    let src = opt(&m.src, |t| test(p.src, "source", t));
    if src == Tri::No {
        return Tri::No;
    }
    src.and(opt(&m.dst, |t| test(p.dst, "destination", t)))
}

/// xt_set.c `match_set` over ip_set_core.c `ip_set_test`: a one-dimension address set uses the
/// first `src`/`dst` flag (extra flags are ignored); the most specific entry covering the address
/// decides (ip_set_hash_gen.h `mtype_test_cidrs` tries prefixes longest first), a `nomatch` entry
/// meaning "not in the set" — inverted by `--return-nomatch` for types with the nomatch feature.
fn set(s: &SetMatch, p: &Packet, host: &HostModel) -> Tri {
    let Some(set) = host.ipsets.get(&s.set) else {
        return unknown(format!("ipset `{}`: contents not given", s.set));
    };
    let Some(&use_dst) = s.dst.first().filter(|_| set.is_address_set()) else {
        return unknown(format!(
            "ipset `{}` ({}): only single-address lookups in hash:ip/hash:net/bitmap:ip sets are modelled",
            s.set, set.kind
        ));
    };
    let (addr, what) = if use_dst {
        (p.dst, "destination")
    } else {
        (p.src, "source")
    };
    // Specificity of an entry: the bits its mask keeps (the prefix length when contiguous).
    let best = |list: &[Cidr], a: IpAddr| {
        list.iter()
            .filter(|c| c.contains(a))
            .map(|c| match c.mask() {
                IpAddr::V4(m) => m.to_bits().count_ones(),
                IpAddr::V6(m) => m.to_bits().count_ones(),
            })
            .max()
    };
    let return_nomatch = s.return_nomatch && set.has_nomatch_feature();
    addr_in(addr, what, |a| {
        let found = best(&set.members, a);
        let found_nomatch = best(&set.nomatch, a);
        // A nomatch entry as specific as a member wins: the dump cannot hold both (same key).
        let nomatch_wins = found_nomatch.is_some() && found_nomatch >= found;
        if return_nomatch {
            nomatch_wins
        } else {
            found.is_some() && !nomatch_wins
        }
    })
    .neg(s.negated)
}

/// xt_owner.c `owner_mt`: without a local socket the match holds iff every given option is
/// negated (`(info->match ^ info->invert) == 0`).
fn owner(o: &OwnerMatch, p: &Packet) -> Tri {
    if !p.socket {
        let all_negated = [
            o.uid.as_ref().map(|n| n.negated),
            o.gid.as_ref().map(|n| n.negated),
            o.socket_exists.as_ref().map(|n| n.negated),
        ]
        .into_iter()
        .flatten()
        .all(|n| n);
        return Tri::of(all_negated);
    }
    opt(&o.socket_exists, |()| Tri::Yes)
        .and(opt(&o.uid, |r| {
            p.uid.map_or_else(
                || unknown("socket owner uid not known"),
                |u| Tri::of(r.contains(u)),
            )
        }))
        .and(opt(&o.gid, |r| match p.gid {
            None => unknown("socket owner gid not known"),
            Some(g) if r.contains(g) => Tri::Yes,
            Some(_) if o.suppl_groups => unknown("supplementary groups not known"),
            Some(_) => Tri::No,
        }))
}
