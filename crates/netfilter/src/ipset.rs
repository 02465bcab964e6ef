//! A parser for `ipset save` output (ipset 7.x; also what `ipset restore` reads): the contents of
//! the address sets that `-m set --match-set` rules consult, as [`IpSet`]s for [`HostModel::ipsets`].
//!
//! ```text
//! create blocked hash:net family inet hashsize 1024 maxelem 65536 counters bucketsize 12 initval 0x…
//! add blocked 192.0.2.0/24 packets 0 bytes 0
//! add blocked 192.0.2.128/25 nomatch packets 0 bytes 0
//! ```
//!
//! * The address sets (`hash:ip`, `hash:net`, `bitmap:ip`; [`IpSet::is_address_set`]) get their
//!   members: a host, `ADDR/LEN`, or a range `A-B` (ipset prints ranges of `hash:ip` and
//!   `hash:net` element by element, but `ipset restore` accepts them, so they are split into the
//!   covering networks here). A set's `netmask N` (or `bitmask MASK`) applies to members given as
//!   bare addresses, as the kernel stores them masked. `nomatch` members go to [`IpSet::nomatch`].
//! * Every other set type (`hash:ip,port`, `list:set`, `hash:mac`, …) is kept with its `kind` and
//!   no members, so that the evaluator answers `undetermined` for it rather than guessing.
//! * Options this model does not need (`timeout`, `packets`, `bytes`, `comment "…"`, `skbmark`,
//!   `hashsize`, `initval`, …) are skipped, and unknown options too, so that output of a newer ipset
//!   still reads. A `timeout` member is taken as present: the dump is a snapshot (the kernel does
//!   not list expired entries).
//!
//! Errors ([`ParseError`], 1-based line and its text) for: an unknown command, a missing set name
//! or type, a set created twice, an `add` to a set not created before, an unknown `family`, a member
//! that is not an address, network or range of the set's family, an unterminated quote. Never panics.
//!
//! [`HostModel::ipsets`]: crate::eval::HostModel::ipsets

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::addr::Cidr;
use crate::eval::IpSet;
use crate::lex::tokenize;
use crate::model::Family;
use crate::parse::ParseError;

/// Most networks a range can split into: two per bit of the address (IPv6).
const MAX_RANGE_PARTS: usize = 2 * 128;

/// Options of an `add` line that take a value (ipset(8) "Generic create and add options",
/// "comment", "skbinfo"); skipped so that a value is never read as a flag.
const ADD_VALUE_OPTIONS: [&str; 7] = [
    "timeout", "packets", "bytes", "comment", "skbmark", "skbprio", "skbqueue",
];

/// How members of one set are read.
#[derive(Debug, Clone, Copy)]
struct SetShape {
    /// Whether this model reads the members at all (an address set).
    addresses: bool,
    family: Family,
    /// The mask applied to a member given as a bare address (`netmask` / `bitmask`), if any.
    mask: Option<IpAddr>,
}

/// Parses `ipset save` output into the sets by name. See the module docs for what is modelled.
pub fn parse_ipset_save(text: &str) -> Result<BTreeMap<String, IpSet>, ParseError> {
    let mut sets: BTreeMap<String, IpSet> = BTreeMap::new();
    let mut shapes: BTreeMap<String, SetShape> = BTreeMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |message: String| ParseError {
            line: i + 1,
            text: line.to_string(),
            message,
        };
        let tokens = tokenize(line).map_err(err)?;
        let (cmd, rest) = match tokens.split_first() {
            Some((c, r)) => (c.as_str(), r),
            None => continue,
        };
        match cmd {
            // `-N` / `-A` are the older spellings `ipset restore` still accepts.
            "create" | "-N" | "n" => {
                let (name, kind, opts) = match rest {
                    [name, kind, opts @ ..] => (name, kind, opts),
                    _ => return Err(err("`create` needs a set name and a type".into())),
                };
                if sets.contains_key(name.as_str()) {
                    return Err(err(format!("set `{name}` is created twice")));
                }
                let shape = create_shape(kind, opts).map_err(err)?;
                shapes.insert(name.clone(), shape);
                sets.insert(
                    name.clone(),
                    IpSet {
                        kind: kind.clone(),
                        ..IpSet::default()
                    },
                );
            }
            "add" | "-A" | "a" => {
                let (name, elem, opts) = match rest {
                    [name, elem, opts @ ..] => (name, elem, opts),
                    _ => return Err(err("`add` needs a set name and a member".into())),
                };
                let (Some(set), Some(shape)) =
                    (sets.get_mut(name.as_str()), shapes.get(name.as_str()))
                else {
                    return Err(err(format!("`add` to set `{name}`, not created before")));
                };
                if !shape.addresses {
                    continue;
                }
                let members = parse_member(elem, *shape).map_err(err)?;
                if add_is_nomatch(opts) {
                    set.nomatch.extend(members);
                } else {
                    set.members.extend(members);
                }
            }
            other => {
                return Err(err(format!(
                    "`{other}` is not an ipset save command (create, add)"
                )));
            }
        }
    }
    Ok(sets)
}

/// Reads the options of a `create` line that change how members are read.
fn create_shape(kind: &str, opts: &[String]) -> Result<SetShape, String> {
    let value = |key: &str| {
        opts.iter()
            .position(|o| o == key)
            .map(|k| opts.get(k + 1).map(String::as_str))
    };
    let family = match value("family") {
        None => Family::Ipv4,
        Some(Some("inet")) => Family::Ipv4,
        Some(Some("inet6")) => Family::Ipv6,
        Some(v) => {
            return Err(format!(
                "family `{}` is not inet or inet6",
                v.unwrap_or_default()
            ));
        }
    };
    let addresses = matches!(kind, "hash:ip" | "hash:net" | "bitmap:ip");
    let mut mask = None;
    if addresses {
        if let Some(v) = value("netmask") {
            let v = v.unwrap_or_default();
            let cidr = v
                .parse::<u8>()
                .ok()
                .and_then(|len| Cidr::new(unspecified(family), len))
                .ok_or_else(|| {
                    format!("netmask `{v}` is not a prefix length of the set's family")
                })?;
            mask = Some(cidr.mask());
        }
        if let Some(v) = value("bitmask") {
            let v = v.unwrap_or_default();
            let m: IpAddr = v
                .parse()
                .ok()
                .filter(|m| Family::of(*m) == family)
                .ok_or_else(|| format!("bitmask `{v}` is not a mask of the set's family"))?;
            mask = Some(m);
        }
    }
    Ok(SetShape {
        addresses,
        family,
        mask,
    })
}

fn unspecified(family: Family) -> IpAddr {
    match family {
        Family::Ipv4 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        Family::Ipv6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

/// Whether an `add` line's options contain the `nomatch` flag (values of other options skipped).
fn add_is_nomatch(opts: &[String]) -> bool {
    let mut it = opts.iter();
    while let Some(o) = it.next() {
        if o == "nomatch" {
            return true;
        }
        if ADD_VALUE_OPTIONS.contains(&o.as_str()) {
            it.next();
        }
    }
    false
}

/// One member of an address set: `ADDR`, `ADDR/LEN` or `A-B`.
fn parse_member(elem: &str, shape: SetShape) -> Result<Vec<Cidr>, String> {
    let same_family = |a: IpAddr| {
        if Family::of(a) == shape.family {
            Ok(a)
        } else {
            Err(format!(
                "member `{elem}` is not of the set's family ({})",
                shape.family.as_str()
            ))
        }
    };
    let parse_addr = |s: &str| {
        s.parse::<IpAddr>()
            .map_err(|_| format!("member `{elem}`: `{s}` is not an address"))
            .and_then(same_family)
    };
    if let Some((a, b)) = elem.split_once('-') {
        let (start, end) = (parse_addr(a)?, parse_addr(b)?);
        return range_to_cidrs(start, end).ok_or_else(|| format!("range `{elem}` is empty"));
    }
    if let Some((a, len)) = elem.split_once('/') {
        let addr = parse_addr(a)?;
        let cidr = len
            .parse::<u8>()
            .ok()
            .and_then(|l| Cidr::new(addr, l))
            .ok_or_else(|| format!("member `{elem}`: `{len}` is not a prefix length"))?;
        return Ok(vec![cidr]);
    }
    let addr = parse_addr(elem)?;
    Ok(vec![match shape.mask {
        Some(m) => Cidr::with_mask(addr, m).unwrap_or(Cidr::host(addr)),
        None => Cidr::host(addr),
    }])
}

/// The fewest networks covering exactly `start..=end` (same family), or `None` if `start > end`
/// or the families differ. At most 256 networks (two per address bit).
pub fn range_to_cidrs(start: IpAddr, end: IpAddr) -> Option<Vec<Cidr>> {
    let (lo, hi, width) = match (start, end) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (u128::from(a.to_bits()), u128::from(b.to_bits()), 32),
        (IpAddr::V6(a), IpAddr::V6(b)) => (a.to_bits(), b.to_bits(), 128),
        _ => return None,
    };
    if lo > hi {
        return None;
    }
    let to_addr = |v: u128| match width {
        // `v` came from a u32 and never exceeds `hi`.
        32 => IpAddr::V4(Ipv4Addr::from(u32::try_from(v).unwrap_or(u32::MAX))),
        _ => IpAddr::V6(Ipv6Addr::from(v)),
    };
    let mut out = Vec::new();
    let mut cur = lo;
    while out.len() < MAX_RANGE_PARTS {
        // The largest block aligned at `cur` that does not pass `hi`: at most 2^width addresses.
        let align = cur.trailing_zeros().min(width);
        let span = hi - cur; // addresses left after `cur`
        let fit = if span == u128::MAX {
            128
        } else {
            127 - (span + 1).leading_zeros()
        };
        let bits = align.min(fit).min(width);
        let prefix = u8::try_from(width - bits).unwrap_or(0);
        out.push(Cidr::new(to_addr(cur), prefix)?);
        let size = 1u128.checked_shl(bits);
        match size.and_then(|s| cur.checked_add(s)) {
            Some(next) if next <= hi && next > cur => cur = next,
            _ => break,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests;
