//! Typed values of nftables expressions and the lookup structure of sets and maps.
//!
//! `nft -j` prints constants by their datatype (`"198.51.100.10"`, `"tcp"`, `"established"`,
//! `80`); the datatype comes from the other side of a match or from a set's declared `type`
//! (libnftables-json(5) "SET"; nftables src/datatype.c for the symbol tables). Constants are
//! converted once, when the ruleset is parsed; a constant that cannot be converted is kept as
//! [`Pat::Unknown`] so that any comparison with it is undetermined, never guessed.

use std::net::IpAddr;

use rustc_hash::FxHashMap;
use serde_json::Value;

use super::NftVerdict;

/// The datatype of an expression's value (nftables src/datatype.c names in comments).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ty {
    /// `ipv4_addr`: the address as a number (host order).
    Addr4,
    /// `ipv6_addr`.
    Addr6,
    /// `integer`, `inet_service`, `mark`: a number.
    Int,
    /// `inet_proto`: an IP protocol number (`tcp` = 6).
    Proto,
    /// `ifname` / `iface_index`: an interface name (a trailing `*` is a prefix wildcard).
    Str,
    /// `ct_state`: a bitmask (invalid 1, established 2, related 4, new 8, untracked 64).
    CtState,
    /// `ct_status`: a bitmask (`IPS_*` of include/uapi/linux/netfilter/nf_conntrack_common.h).
    CtStatus,
    /// `fib_addrtype`: a route type name (`local`, `unicast`, `broadcast`, `multicast`, …).
    FibType,
    /// `icmp_type`.
    Icmp,
    /// `icmpv6_type`.
    Icmp6,
    /// `tcp_flag`: a bitmask of [`crate::matches::tcp_flags`].
    TcpFlags,
    /// `nf_proto`: `ipv4` = 2, `ipv6` = 10.
    NfProto,
    /// `ether_type` (`meta protocol`): `ip` = 0x0800, `ip6` = 0x86dd.
    EtherType,
    /// Anything else: constants of it are kept unconverted.
    Unknown,
}

impl Ty {
    /// The datatype of a set's declared `type` name (`ipv4_addr`, `inet_service`, …).
    pub fn of_name(name: &str) -> Ty {
        match name {
            "ipv4_addr" => Ty::Addr4,
            "ipv6_addr" => Ty::Addr6,
            "inet_proto" => Ty::Proto,
            "inet_service" | "mark" | "integer" | "uid" | "gid" => Ty::Int,
            "ifname" | "iface_index" => Ty::Str,
            "ct_state" => Ty::CtState,
            "ct_status" => Ty::CtStatus,
            "fib_addrtype" => Ty::FibType,
            "icmp_type" => Ty::Icmp,
            "icmpv6_type" => Ty::Icmp6,
            "tcp_flag" => Ty::TcpFlags,
            "nf_proto" => Ty::NfProto,
            "ether_type" => Ty::EtherType,
            _ => Ty::Unknown,
        }
    }

    /// Whether values of this type are bitmasks (op `in` tests bits).
    pub fn is_flags(self) -> bool {
        matches!(self, Ty::CtState | Ty::CtStatus | Ty::TcpFlags)
    }
}

/// One concrete value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Val {
    /// A number, an address (IPv4 in the low 32 bits), a protocol, a bitmask.
    Num(u128),
    /// A name: an interface, a route type.
    Str(Box<str>),
}

/// What a constant of a match or a set element accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pat {
    /// Exactly this value.
    Eq(Val),
    /// An inclusive numeric range (a prefix `198.51.100.0/24` or a range `1000-2000`).
    Range(u128, u128),
    /// An interface-name prefix (`"eth*"`).
    Prefix(Box<str>),
    /// A constant this crate cannot convert (its JSON text): comparing with it is undetermined.
    Unknown(String),
}

impl Pat {
    /// Whether `v` is accepted; `None` for [`Pat::Unknown`].
    pub fn accepts(&self, v: &Val) -> Option<bool> {
        Some(match (self, v) {
            (Pat::Eq(a), b) => a == b,
            (Pat::Range(lo, hi), Val::Num(n)) => lo <= n && n <= hi,
            (Pat::Prefix(pre), Val::Str(s)) => s.starts_with(&**pre),
            (Pat::Unknown(_), _) => return None,
            _ => false,
        })
    }
}

const CT_STATE: &[(&str, u128)] = &[
    ("invalid", 1),
    ("established", 2),
    ("related", 4),
    ("new", 8),
    ("untracked", 64),
];
const CT_STATUS: &[(&str, u128)] = &[
    ("expected", 1),
    ("seen-reply", 2),
    ("assured", 4),
    ("confirmed", 8),
    ("snat", 16),
    ("dnat", 32),
    ("dying", 512),
];
const TCP_FLAGS: &[(&str, u128)] = &[
    ("fin", 0x01),
    ("syn", 0x02),
    ("rst", 0x04),
    ("psh", 0x08),
    ("ack", 0x10),
    ("urg", 0x20),
    ("ecn", 0x40),
    ("cwr", 0x80),
];
const PROTOS: &[(&str, u128)] = &[
    ("icmp", 1),
    ("igmp", 2),
    ("tcp", 6),
    ("udp", 17),
    ("ipv6-icmp", 58),
    ("icmpv6", 58),
    ("gre", 47),
    ("esp", 50),
    ("ah", 51),
    ("sctp", 132),
    ("udplite", 136),
    ("dccp", 33),
];
const ICMP: &[(&str, u128)] = &[
    ("echo-reply", 0),
    ("destination-unreachable", 3),
    ("source-quench", 4),
    ("redirect", 5),
    ("echo-request", 8),
    ("router-advertisement", 9),
    ("router-solicitation", 10),
    ("time-exceeded", 11),
    ("parameter-problem", 12),
    ("timestamp-request", 13),
    ("timestamp-reply", 14),
    ("info-request", 15),
    ("info-reply", 16),
    ("address-mask-request", 17),
    ("address-mask-reply", 18),
];
const ICMP6: &[(&str, u128)] = &[
    ("destination-unreachable", 1),
    ("packet-too-big", 2),
    ("time-exceeded", 3),
    ("parameter-problem", 4),
    ("echo-request", 128),
    ("echo-reply", 129),
    ("mld-listener-query", 130),
    ("mld-listener-report", 131),
    ("mld-listener-done", 132),
    ("mld-listener-reduction", 132),
    ("nd-router-solicit", 133),
    ("nd-router-advert", 134),
    ("nd-neighbor-solicit", 135),
    ("nd-neighbor-advert", 136),
    ("nd-redirect", 137),
    ("router-renumbering", 138),
    ("ind-neighbor-solicit", 141),
    ("ind-neighbor-advert", 142),
    ("mld2-listener-report", 143),
];
const SERVICES: &[(&str, u128)] = &[("ssh", 22), ("domain", 53), ("http", 80), ("https", 443)];

fn lookup(table: &[(&str, u128)], s: &str) -> Option<u128> {
    table.iter().find(|(n, _)| *n == s).map(|(_, v)| *v)
}

fn number(s: &str) -> Option<u128> {
    match s.strip_prefix("0x") {
        Some(h) => u128::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

fn addr(s: &str, ty: Ty) -> Option<u128> {
    match (s.parse::<IpAddr>().ok()?, ty) {
        (IpAddr::V4(a), Ty::Addr4) => Some(u128::from(a.to_bits())),
        (IpAddr::V6(a), Ty::Addr6) => Some(a.to_bits()),
        _ => None,
    }
}

/// Converts a string constant of type `ty`.
fn symbol(s: &str, ty: Ty) -> Option<Val> {
    let num = |t: &[(&str, u128)]| lookup(t, s).or_else(|| number(s)).map(Val::Num);
    match ty {
        Ty::Addr4 | Ty::Addr6 => addr(s, ty).map(Val::Num),
        Ty::Int => num(SERVICES),
        Ty::Proto => num(PROTOS),
        Ty::Str | Ty::FibType => Some(Val::Str(s.into())),
        Ty::CtState => num(CT_STATE),
        Ty::CtStatus => num(CT_STATUS),
        Ty::TcpFlags => num(TCP_FLAGS),
        Ty::Icmp => num(ICMP),
        Ty::Icmp6 => num(ICMP6),
        Ty::NfProto => num(&[("ipv4", 2), ("ipv6", 10)]),
        Ty::EtherType => num(&[
            ("ip", 0x0800),
            ("ip6", 0x86dd),
            ("arp", 0x0806),
            ("vlan", 0x8100),
        ]),
        Ty::Unknown => None,
    }
}

/// The width in bits of a value of `ty` (for prefixes).
fn width(ty: Ty) -> u32 {
    match ty {
        Ty::Addr4 => 32,
        _ => 128,
    }
}

/// Converts a JSON constant (number, string, flag list, `prefix`, `range`) of type `ty`.
pub fn pat_of(j: &Value, ty: Ty) -> Pat {
    let unknown = || Pat::Unknown(j.to_string());
    match j {
        Value::Number(n) => match n.as_u64() {
            Some(n) if ty != Ty::Str && ty != Ty::FibType => Pat::Eq(Val::Num(u128::from(n))),
            _ => unknown(),
        },
        Value::String(s) if ty == Ty::Str && s.ends_with('*') && !s.ends_with("\\*") => {
            Pat::Prefix(s.trim_end_matches('*').into())
        }
        Value::String(s) => symbol(s, ty).map_or_else(unknown, Pat::Eq),
        // A flag list (`["established", "related"]`): the bits or'ed together.
        Value::Array(items) if ty.is_flags() => {
            let mut mask = 0;
            for it in items {
                match pat_of(it, ty) {
                    Pat::Eq(Val::Num(b)) => mask |= b,
                    _ => return unknown(),
                }
            }
            Pat::Eq(Val::Num(mask))
        }
        Value::Object(o) => {
            if let Some(p) = o.get("prefix") {
                let base = p
                    .get("addr")
                    .and_then(Value::as_str)
                    .and_then(|a| addr(a, ty));
                let len = p.get("len").and_then(Value::as_u64);
                let w = width(ty);
                match (base, len) {
                    (Some(b), Some(l)) if l <= u64::from(w) => {
                        let host_bits = w - u32::try_from(l).unwrap_or(w);
                        let mask = if host_bits >= 128 {
                            u128::MAX
                        } else {
                            (1u128 << host_bits) - 1
                        };
                        Pat::Range(b & !mask, b | mask)
                    }
                    _ => unknown(),
                }
            } else if let Some(Value::Array(r)) = o.get("range") {
                match r.as_slice() {
                    [a, b] => match (pat_of(a, ty), pat_of(b, ty)) {
                        (Pat::Eq(Val::Num(a)), Pat::Eq(Val::Num(b))) => Pat::Range(a, b),
                        _ => unknown(),
                    },
                    _ => unknown(),
                }
            } else {
                unknown()
            }
        }
        _ => unknown(),
    }
}

/// What a map element maps to.
#[derive(Debug, Clone, PartialEq)]
pub enum MapData {
    /// A verdict map's verdict.
    Verdict(NftVerdict),
    /// Any other data (an address for `dnat to … map`), as JSON text: not evaluated.
    Other(String),
}

/// The elements of a set or map, arranged for lookup: exact keys in a hash map, intervals and
/// prefixes in a list scanned in order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SetData {
    /// The key's datatypes, one per concatenated component.
    pub key: Vec<Ty>,
    /// Whether it is a map (`elem` entries are `[key, data]`).
    pub is_map: bool,
    /// Exact keys → element index.
    exact: FxHashMap<Vec<Val>, usize>,
    /// Elements with a range, prefix or unconvertible component → element index.
    others: Vec<(Vec<Pat>, usize)>,
    /// Each element's data (maps), by element index.
    pub data: Vec<Option<MapData>>,
    /// Each element's key as written (for display), by element index.
    pub texts: Vec<String>,
}

/// The outcome of a lookup.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup<'s> {
    /// The element at this index matched; its data if a map.
    Hit(usize, Option<&'s MapData>),
    /// No element matches.
    Miss,
    /// It cannot be decided (why).
    Unknown(String),
}

impl SetData {
    /// An empty set of key type `key`.
    pub fn new(key: Vec<Ty>, is_map: bool) -> SetData {
        SetData {
            key,
            is_map,
            ..SetData::default()
        }
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether it has no element.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Adds one element (its key patterns, one per component) with its data.
    pub fn push(&mut self, key: Vec<Pat>, data: Option<MapData>, text: String) {
        let idx = self.data.len();
        self.data.push(data);
        self.texts.push(text);
        let exact: Option<Vec<Val>> = key
            .iter()
            .map(|p| match p {
                Pat::Eq(v) => Some(v.clone()),
                _ => None,
            })
            .collect();
        match exact {
            Some(k) => {
                self.exact.entry(k).or_insert(idx);
            }
            None => self.others.push((key, idx)),
        }
    }

    /// Looks `key` up; a `None` component is a value not known, which makes the lookup
    /// undetermined unless no element could match whatever it is.
    pub fn lookup(&self, key: &[Option<Val>]) -> Lookup<'_> {
        if !self.key.is_empty() && key.len() != self.key.len() {
            return Lookup::Unknown(format!(
                "a key of {} values for a set of {}",
                key.len(),
                self.key.len()
            ));
        }
        let hit = |i: usize| Lookup::Hit(i, self.data.get(i).and_then(Option::as_ref));
        let known: Option<Vec<Val>> = key.iter().cloned().collect();
        if let Some(k) = &known
            && let Some(&i) = self.exact.get(k)
        {
            return hit(i);
        }
        // `Some(true)`: matches; `Some(false)`: cannot match; `None`: may match.
        let fold = |it: &mut dyn Iterator<Item = Option<bool>>| {
            let mut all = Some(true);
            for r in it {
                match r {
                    Some(false) => return Some(false),
                    Some(true) => {}
                    None => all = None,
                }
            }
            all
        };
        let mut maybe: Option<usize> = None;
        if known.is_none() {
            for (k, &i) in &self.exact {
                let mut it = k.iter().zip(key).map(|(kv, v)| v.as_ref().map(|v| v == kv));
                match fold(&mut it) {
                    Some(true) => return hit(i),
                    Some(false) => {}
                    None => maybe = Some(maybe.map_or(i, |m| m.min(i))),
                }
            }
        }
        for (pats, i) in &self.others {
            let mut it = pats
                .iter()
                .zip(key)
                .map(|(p, v)| v.as_ref().and_then(|v| p.accepts(v)));
            match fold(&mut it) {
                Some(true) if maybe.is_none_or(|m| *i < m) => return hit(*i),
                Some(true) | None => maybe = Some(maybe.map_or(*i, |m| m.min(*i))),
                Some(false) => {}
            }
        }
        match maybe {
            Some(i) => Lookup::Unknown(format!(
                "element `{}` may match a value not known",
                self.texts.get(i).map_or("", String::as_str)
            )),
            None => Lookup::Miss,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;
    use serde_json::json;

    #[test]
    fn constants_convert_by_type() {
        assert_eq!(
            pat_of(&json!("198.51.100.1"), Ty::Addr4),
            Pat::Eq(Val::Num(0xc633_6401))
        );
        assert_eq!(pat_of(&json!("tcp"), Ty::Proto), Pat::Eq(Val::Num(6)));
        assert_eq!(
            pat_of(&json!(["established", "related"]), Ty::CtState),
            Pat::Eq(Val::Num(6))
        );
        assert_eq!(
            pat_of(
                &json!({"prefix": {"addr": "198.51.100.0", "len": 24}}),
                Ty::Addr4
            ),
            Pat::Range(0xc633_6400, 0xc633_64ff)
        );
        assert_eq!(
            pat_of(&json!({"range": [1000, 2000]}), Ty::Int),
            Pat::Range(1000, 2000)
        );
        assert_eq!(pat_of(&json!("eth*"), Ty::Str), Pat::Prefix("eth".into()));
        assert!(matches!(pat_of(&json!("x"), Ty::Unknown), Pat::Unknown(_)));
        assert!(matches!(
            pat_of(
                &json!({"prefix": {"addr": "fd00::", "len": 200}}),
                Ty::Addr6
            ),
            Pat::Unknown(_)
        ));
    }

    #[test]
    fn lookups_hash_exact_keys_and_scan_ranges() {
        let mut s = SetData::new(vec![Ty::Addr4, Ty::Proto], false);
        s.push(
            vec![Pat::Eq(Val::Num(1)), Pat::Eq(Val::Num(6))],
            None,
            "a".into(),
        );
        s.push(
            vec![Pat::Range(10, 20), Pat::Eq(Val::Num(17))],
            None,
            "b".into(),
        );
        assert_eq!(
            s.lookup(&[Some(Val::Num(1)), Some(Val::Num(6))]),
            Lookup::Hit(0, None)
        );
        assert_eq!(
            s.lookup(&[Some(Val::Num(15)), Some(Val::Num(17))]),
            Lookup::Hit(1, None)
        );
        assert_eq!(
            s.lookup(&[Some(Val::Num(15)), Some(Val::Num(6))]),
            Lookup::Miss
        );
        assert_eq!(s.lookup(&[Some(Val::Num(2)), None]), Lookup::Miss);
        assert!(matches!(
            s.lookup(&[Some(Val::Num(1)), None]),
            Lookup::Unknown(_)
        ));
    }
}
