//! The observer: a native nftables table in the router that only counts, and how its counters
//! become an outcome.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use netfilter::eval::Verdict;
use netfilter::target::RejectWith;

/// What the kernel did with the test packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Accepted,
    Dropped,
    /// Answered with a TCP RST.
    Reset,
    /// Answered with ICMP destination unreachable of this code.
    Unreachable(u8),
    /// Answered with ICMPv6 destination unreachable of this code.
    Unreachable6(u8),
}

pub(crate) fn expected(v: &Verdict) -> Option<Outcome> {
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
pub(crate) const UNREACH_CODES: [u8; 7] = [0, 1, 2, 3, 9, 10, 13];
/// The ICMPv6 destination-unreachable codes REJECT can send (ip6t_REJECT.c).
pub(crate) const UNREACH6_CODES: [u8; 6] = [0, 1, 3, 4, 5, 6];

/// The observer table: counters only, base chains before and after every iptables table.
pub(crate) fn observer_table() -> String {
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
pub(crate) type Counts = BTreeMap<String, u64>;

pub(crate) fn parse_counts(listing: &str) -> Counts {
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

pub(crate) fn delta(after: &Counts, before: &Counts) -> Counts {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect()
}

/// The outcome from a counter delta; `None` while the packet has not arrived.
pub(crate) fn classify(d: &Counts, settled: bool) -> Option<Outcome> {
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
