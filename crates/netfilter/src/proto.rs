//! Layer-4 protocol numbers and the names iptables-save prints for them.

use std::fmt;

use serde::Serialize;

/// `(name, number)`: the first name of a number is the one printed. The names are those of
/// Debian's netbase `/etc/protocols` (which iptables-save consults through `getprotobynumber`)
/// plus libxtables' built-in aliases (`xtables_chain_protos`: `icmpv6`, `ipv6-mh`, `all`).
pub const PROTOCOL_NAMES: &[(&str, u8)] = &[
    ("all", 0),
    ("icmp", 1),
    ("igmp", 2),
    ("ggp", 3),
    ("ipencap", 4),
    ("st", 5),
    ("tcp", 6),
    ("egp", 8),
    ("igp", 9),
    ("pup", 12),
    ("udp", 17),
    ("hmp", 20),
    ("xns-idp", 22),
    ("rdp", 27),
    ("iso-tp4", 29),
    ("dccp", 33),
    ("xtp", 36),
    ("ddp", 37),
    ("idpr-cmtp", 38),
    ("ipv6", 41),
    ("ipv6-route", 43),
    ("ipv6-frag", 44),
    ("idrp", 45),
    ("rsvp", 46),
    ("gre", 47),
    ("esp", 50),
    ("ah", 51),
    ("skip", 57),
    ("ipv6-icmp", 58),
    ("icmpv6", 58),
    ("ipv6-nonxt", 59),
    ("ipv6-opts", 60),
    ("rspf", 73),
    ("vmtp", 81),
    ("eigrp", 88),
    ("ospf", 89),
    ("ax.25", 93),
    ("ipip", 94),
    ("etherip", 97),
    ("encap", 98),
    ("pim", 103),
    ("ipcomp", 108),
    ("vrrp", 112),
    ("l2tp", 115),
    ("isis", 124),
    ("sctp", 132),
    ("fc", 133),
    ("mobility-header", 135),
    ("ipv6-mh", 135),
    ("mh", 135),
    ("udplite", 136),
    ("mpls-in-ip", 137),
    ("manet", 138),
    ("hip", 139),
    ("shim6", 140),
    ("wesp", 141),
    ("rohc", 142),
    ("ethernet", 143),
];

/// A protocol as given to `-p` or `--ctproto`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// A protocol number (`IPPROTO_*`); `0` is `all` (any protocol).
    Number(u8),
    /// A name this crate cannot map to a number (it would need the host's `/etc/protocols`);
    /// an evaluator must treat it as undetermined.
    Unresolved(String),
}

impl Protocol {
    /// TCP (6).
    pub const TCP: Protocol = Protocol::Number(6);
    /// UDP (17).
    pub const UDP: Protocol = Protocol::Number(17);
    /// ICMP (1).
    pub const ICMP: Protocol = Protocol::Number(1);
    /// ICMPv6 (58).
    pub const ICMPV6: Protocol = Protocol::Number(58);

    /// Parses a name (case-insensitively, as libxtables does) or a number.
    pub fn parse(s: &str) -> Protocol {
        if let Ok(n) = s.parse::<u8>() {
            return Protocol::Number(n);
        }
        let lower = s.to_ascii_lowercase();
        match PROTOCOL_NAMES.iter().find(|(n, _)| *n == lower) {
            Some(&(_, n)) => Protocol::Number(n),
            None => Protocol::Unresolved(s.to_string()),
        }
    }

    /// The number, if known.
    pub fn number(&self) -> Option<u8> {
        match self {
            Protocol::Number(n) => Some(*n),
            Protocol::Unresolved(_) => None,
        }
    }
}

impl fmt::Display for Protocol {
    /// The name iptables-save prints, or the number when there is none.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Protocol::Number(n) => match PROTOCOL_NAMES.iter().find(|(_, p)| p == n) {
                Some((name, _)) => f.write_str(name),
                None => write!(f, "{n}"),
            },
            Protocol::Unresolved(s) => f.write_str(s),
        }
    }
}
