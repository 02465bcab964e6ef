//! Peer selection: full mesh for small meshes, rendezvous (highest-random-weight) hashing above.
//!
//! The assignment is computed *per target*: the observers of node `t` are the `k` other nodes `o`
//! with the highest weight `w(t, o)`. Every node is therefore observed by exactly `min(k, n - 1)`
//! others (Goldpinger's `LookupN` picks `k` targets per observer instead, which leaves the number of
//! observers of a node to chance). An agent probes every `t` whose top `k` contains it, so it probes
//! `k` peers on average. Weights depend only on the two names, so when a node joins or leaves only
//! assignments involving it change, plus — for each target it entered or left the top `k` of — the
//! one observer that it displaced or that replaces it.
//!
//! Cost: `n²` weight computations per selection (a multiply-xorshift each); [`MAX_MESH_NODES`]
//! bounds `n`.

use std::collections::BTreeSet;

/// The largest number of nodes a selection considers; discovery results beyond it (in name order)
/// are dropped and reported. 10,000² weights take well under a second.
pub const MAX_MESH_NODES: usize = 10_000;

/// The largest number of peers one agent probes, whatever the configuration says: a full mesh above
/// it falls back to rendezvous selection with `k` = this, which bounds memory and sockets.
pub const MAX_PROBED_PEERS: usize = 2_000;

/// 64-bit FNV-1a of a name (stable across releases and architectures: weights must agree between
/// agents of different builds).
pub fn name_hash(name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The rendezvous weight of observer `o` for target `t`, from their [`name_hash`]es (splitmix64
/// finaliser over an asymmetric combination, so `w(t, o) != w(o, t)` in general).
pub fn weight(t: u64, o: u64) -> u64 {
    let mut z = t ^ o.rotate_left(29).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Which peers `me` probes, and how many nodes observe `me`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// Names of the peers `me` probes, sorted.
    pub targets: Vec<String>,
    /// How many nodes (other than `me`) probe `me` under the same selection.
    pub observers: usize,
    /// `true` when every other node is probed (full mesh).
    pub full_mesh: bool,
}

/// Selects the targets of `me` among `nodes` (which may or may not contain `me`; duplicates count
/// once). `k` = `peers_per_node` (0 = full mesh); a full mesh is also used while the number of other
/// nodes is at most `full_mesh_max`. Full meshes larger than [`MAX_PROBED_PEERS`] use rendezvous
/// selection with that `k`.
pub fn select(me: &str, nodes: &[String], k: usize, full_mesh_max: usize) -> Selection {
    let set: BTreeSet<&str> = nodes.iter().map(String::as_str).collect();
    let others: Vec<&str> = set.iter().copied().filter(|n| *n != me).collect();
    let n_others = others.len();
    if (k == 0 || n_others <= full_mesh_max) && n_others <= MAX_PROBED_PEERS {
        return Selection {
            targets: others.iter().map(|s| (*s).to_owned()).collect(),
            observers: n_others,
            full_mesh: true,
        };
    }
    let k = if k == 0 {
        MAX_PROBED_PEERS
    } else {
        k.min(MAX_PROBED_PEERS)
    };
    let all: Vec<(&str, u64)> = set.iter().map(|n| (*n, name_hash(n))).collect();
    let me_h = name_hash(me);
    let mut targets = Vec::new();
    for &(t, th) in &all {
        if t == me {
            continue;
        }
        if in_top_k(th, me_h, t, me, &all, k) {
            targets.push(t.to_owned());
        }
    }
    Selection {
        targets,
        observers: k.min(n_others),
        full_mesh: false,
    }
}

/// Whether observer `o` is among the `k` highest-weight observers of target `t` (ties broken by
/// name, so the order is total).
fn in_top_k(th: u64, oh: u64, t: &str, o: &str, all: &[(&str, u64)], k: usize) -> bool {
    let mine = (weight(th, oh), o);
    let mut above = 0usize;
    for &(x, xh) in all {
        if x == t || x == o {
            continue;
        }
        if (weight(th, xh), x) > mine {
            above += 1;
            if above >= k {
                return false;
            }
        }
    }
    true
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    reason = "in a test a panic is the failure report"
)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, HashSet};

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("node-{i:04}")).collect()
    }

    fn pairs(nodes: &[String], k: usize) -> HashSet<(String, String)> {
        let mut out = HashSet::new();
        for me in nodes {
            for t in select(me, nodes, k, 0).targets {
                out.insert((me.clone(), t));
            }
        }
        out
    }

    #[test]
    fn small_meshes_are_full() {
        let nodes = names(5);
        let s = select("node-0002", &nodes, 3, 10);
        assert!(s.full_mesh);
        assert_eq!(s.targets.len(), 4);
        assert_eq!(s.observers, 4);
        assert!(!s.targets.contains(&"node-0002".to_owned()));
        // k = 0 is a full mesh whatever the size.
        assert!(select("node-0000", &names(50), 0, 0).full_mesh);
    }

    #[test]
    fn every_node_of_1000_has_at_least_k_observers() {
        let nodes = names(1000);
        let k = 5;
        let all = pairs(&nodes, k);
        let mut observers: BTreeMap<&str, usize> = BTreeMap::new();
        let mut probes: BTreeMap<&str, usize> = BTreeMap::new();
        for (o, t) in &all {
            *observers.entry(t.as_str()).or_default() += 1;
            *probes.entry(o.as_str()).or_default() += 1;
            assert_ne!(o, t);
        }
        for n in &nodes {
            assert_eq!(observers.get(n.as_str()).copied(), Some(k), "{n}");
            assert_eq!(select(n, &nodes, k, 0).observers, k);
        }
        // Each agent probes k peers on average; none is overloaded.
        assert_eq!(all.len(), 1000 * k);
        assert!(probes.values().all(|&p| p <= 4 * k), "{probes:?}");
    }

    #[test]
    fn churn_of_one_node_moves_only_its_assignments() {
        let nodes = names(1000);
        let k = 4;
        let before = pairs(&nodes, k);
        let gone = "node-0123".to_owned();
        let remaining: Vec<String> = nodes.iter().filter(|n| **n != gone).cloned().collect();
        let after = pairs(&remaining, k);
        // Nothing that did not involve the departed node was removed…
        for p in &before {
            if p.0 != gone && p.1 != gone {
                assert!(after.contains(p), "{p:?} moved");
            }
        }
        // …and the only new assignments replace the departed node as an observer, one each.
        let removed_as_observer = before.iter().filter(|p| p.0 == gone).count();
        let added: Vec<_> = after.difference(&before).collect();
        assert_eq!(added.len(), removed_as_observer, "{added:?}");
        for (_, t) in &added {
            assert!(before.contains(&(gone.clone(), t.clone())));
        }
        // And the node joining again restores exactly the old assignment.
        assert_eq!(pairs(&nodes, k), before);
    }

    #[test]
    fn huge_full_meshes_are_capped() {
        let nodes = names(MAX_PROBED_PEERS + 10);
        let s = select("node-0000", &nodes, 0, usize::MAX);
        assert!(!s.full_mesh);
        assert!(s.targets.len() < MAX_PROBED_PEERS + 9);
        assert_eq!(s.observers, MAX_PROBED_PEERS);
    }

    #[test]
    fn duplicates_and_absent_self_are_fine() {
        let nodes = vec!["a".to_owned(), "b".to_owned(), "b".to_owned()];
        let s = select("z", &nodes, 0, 10);
        assert_eq!(s.targets, vec!["a".to_owned(), "b".to_owned()]);
        assert_eq!(select("a", &[], 3, 0).targets, Vec::<String>::new());
    }
}
