//! Skipping rules that cannot match: a per-chain index by destination address, protocol and
//! destination port.
//!
//! kube-proxy's nat `KUBE-SERVICES` has one rule per Service port, all of the shape
//! `-d VIP/32 -p tcp [-m comment …] -m tcp --dport P -j KUBE-SVC-…`; a flow to one Service
//! would otherwise be compared with every rule before it. For a chain of at least [`MIN_RULES`]
//! rules, [`Dispatch`] maps `(address, protocol, port)` to the rules of exactly that shape (a
//! non-negated host `-d`, `-p tcp`/`-p udp`, a single non-negated `--dport` and nothing else but
//! comments) and lists every other rule as always worth evaluating. When the packet's
//! destination, protocol and (for TCP/UDP) destination port are known, each rule of that shape is
//! decided by its key alone — it matches exactly when the keys are equal — so the walk jumps to
//! the next rule that is either keyed like the packet or not indexed. The walk records one note
//! step for the rules it jumped over; verdict, deciding rule, NAT and statistic branches are the
//! same as a linear walk (checked by `indexed_and_linear_walks_agree`), and skipped rules are
//! charged to the rule budget so even `Limits::max_rules` stops at the same rule.

use std::cell::RefCell;
use std::net::IpAddr;
use std::rc::Rc;

use rustc_hash::FxHashMap;

use crate::matches::{Match, TcpMatch, UdpMatch};
use crate::model::{Chain, Rule};
use crate::proto::Protocol;

use super::packet::Packet;

/// Chains shorter than this are walked rule by rule: the index would not pay for itself.
pub(crate) const MIN_RULES: usize = 64;

/// `(destination address, protocol number, destination port)`.
type Key = (IpAddr, u8, u16);

/// The index of one chain.
pub(crate) struct Dispatch {
    /// The position of the first rule with each key.
    first: FxHashMap<Key, usize>,
    /// Positions of every other rule, ascending: those not of the indexed shape and later rules
    /// repeating a key (rare; they are simply evaluated).
    others: Vec<usize>,
}

impl Dispatch {
    fn build(chain: &Chain) -> Option<Dispatch> {
        let mut first = FxHashMap::with_capacity_and_hasher(chain.rules.len(), Default::default());
        let mut others = Vec::new();
        for (i, rule) in chain.rules.iter().enumerate() {
            match key_of(rule) {
                Some(k) if !first.contains_key(&k) => {
                    first.insert(k, i);
                }
                _ => others.push(i),
            }
        }
        // Worth it only when most rules are keyed.
        (others.len() * 2 < chain.rules.len()).then_some(Dispatch { first, others })
    }

    /// The first position at or after `idx` whose rule may match a packet with key `key`
    /// (`usize::MAX` when none does).
    pub(crate) fn next(&self, idx: usize, key: Key) -> usize {
        let keyed = self
            .first
            .get(&key)
            .copied()
            .filter(|&i| i >= idx)
            .unwrap_or(usize::MAX);
        let at = self.others.partition_point(|&i| i < idx);
        let other = self.others.get(at).copied().unwrap_or(usize::MAX);
        keyed.min(other)
    }
}

/// The key of a rule of the indexed shape, `None` for any other rule.
fn key_of(rule: &Rule) -> Option<Key> {
    let (mut dst, mut proto, mut port) = (None, None, None);
    for m in &rule.matches {
        match m {
            Match::Comment(_) => {}
            Match::Destination(n) if !n.negated && n.value.is_host() && dst.is_none() => {
                dst = Some(n.value.addr());
            }
            Match::Protocol(n) if !n.negated && proto.is_none() => match n.value {
                Protocol::Number(x @ (6 | 17)) => proto = Some(x),
                _ => return None,
            },
            Match::Tcp(TcpMatch {
                sport: None,
                dport: Some(d),
                flags: None,
                option: None,
            }) if !d.negated && d.value.start == d.value.end && port.is_none() => {
                port = Some((6, d.value.start));
            }
            Match::Udp(UdpMatch {
                sport: None,
                dport: Some(d),
            }) if !d.negated && d.value.start == d.value.end && port.is_none() => {
                port = Some((17, d.value.start));
            }
            _ => return None,
        }
    }
    match (dst, proto, port) {
        (Some(a), Some(p), Some((q, port))) if p == q => Some((a, p, port)),
        _ => None,
    }
}

/// The packet's key, when every part an indexed rule compares is known. For a protocol other
/// than TCP and UDP no indexed rule can match, whatever the port.
pub(crate) fn packet_key(p: &Packet) -> Option<Key> {
    let dst = p.dst?;
    match p.protocol {
        6 | 17 => Some((dst, p.protocol, p.dport?)),
        other => Some((dst, other, 0)),
    }
}

/// The indexes of the chains one [`super::trace`] call meets, built on first entry and shared by
/// all its statistic branches.
pub(crate) struct Indexes {
    enabled: bool,
    /// By the chain's address: the rulesets are borrowed for the whole call, so it is stable.
    cache: RefCell<FxHashMap<usize, Option<Rc<Dispatch>>>>,
}

impl Indexes {
    /// `enabled: false` walks every chain rule by rule (the reference for tests).
    pub(crate) fn new(enabled: bool) -> Indexes {
        Indexes {
            enabled,
            cache: RefCell::new(FxHashMap::default()),
        }
    }

    /// The index of `chain`, if it has one.
    pub(crate) fn get(&self, chain: &Chain) -> Option<Rc<Dispatch>> {
        if !self.enabled || chain.rules.len() < MIN_RULES {
            return None;
        }
        let id = std::ptr::from_ref(chain) as usize;
        self.cache
            .borrow_mut()
            .entry(id)
            .or_insert_with(|| Dispatch::build(chain).map(Rc::new))
            .clone()
    }
}

#[cfg(all(test, feature = "gen"))]
mod tests;
