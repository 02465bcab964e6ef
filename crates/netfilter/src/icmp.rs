//! ICMP and ICMPv6 type/code matching and the iptables name tables.
//!
//! The names are those iptables 1.8 accepts: `libxtables`' `xtables_icmp_codes` (`iptables -p icmp
//! -m icmp -h`) and `libip6t_icmp6.c` (`ip6tables -p icmpv6 -m icmp6 -h`). The numbers were
//! verified against iptables v1.8.9: each name restored and saved back as the number given here.

use std::fmt;

use serde::Serialize;

/// A type with an inclusive code range, as the kernel matches it (`icmp_type_code_match`,
/// net/netfilter/xt_tcpudp.c / net/ipv6/netfilter/ip6_tables.c): `type == 0xFF` means any ICMP
/// packet (`--icmp-type any`, IPv4 only), otherwise the type must be equal and the code in range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct IcmpType {
    /// The ICMP type, or `0xFF` for any.
    pub icmp_type: u8,
    /// The first code matched.
    pub code_min: u8,
    /// The last code matched.
    pub code_max: u8,
}

/// `(name, type, code_min, code_max)` for IPv4 (RFC 792, RFC 950, RFC 1812).
pub const ICMP_NAMES: &[(&str, u8, u8, u8)] = &[
    ("any", 0xFF, 0, 0xFF),
    ("echo-reply", 0, 0, 0xFF),
    ("pong", 0, 0, 0xFF),
    ("destination-unreachable", 3, 0, 0xFF),
    ("network-unreachable", 3, 0, 0),
    ("host-unreachable", 3, 1, 1),
    ("protocol-unreachable", 3, 2, 2),
    ("port-unreachable", 3, 3, 3),
    ("fragmentation-needed", 3, 4, 4),
    ("source-route-failed", 3, 5, 5),
    ("network-unknown", 3, 6, 6),
    ("host-unknown", 3, 7, 7),
    ("network-prohibited", 3, 9, 9),
    ("host-prohibited", 3, 10, 10),
    ("TOS-network-unreachable", 3, 11, 11),
    ("TOS-host-unreachable", 3, 12, 12),
    ("communication-prohibited", 3, 13, 13),
    ("host-precedence-violation", 3, 14, 14),
    ("precedence-cutoff", 3, 15, 15),
    ("source-quench", 4, 0, 0xFF),
    ("redirect", 5, 0, 0xFF),
    ("network-redirect", 5, 0, 0),
    ("host-redirect", 5, 1, 1),
    ("TOS-network-redirect", 5, 2, 2),
    ("TOS-host-redirect", 5, 3, 3),
    ("echo-request", 8, 0, 0xFF),
    ("ping", 8, 0, 0xFF),
    ("router-advertisement", 9, 0, 0xFF),
    ("router-solicitation", 10, 0, 0xFF),
    ("time-exceeded", 11, 0, 0xFF),
    ("ttl-exceeded", 11, 0, 0xFF),
    ("ttl-zero-during-transit", 11, 0, 0),
    ("ttl-zero-during-reassembly", 11, 1, 1),
    ("parameter-problem", 12, 0, 0xFF),
    ("ip-header-bad", 12, 0, 0),
    ("required-option-missing", 12, 1, 1),
    ("timestamp-request", 13, 0, 0xFF),
    ("timestamp-reply", 14, 0, 0xFF),
    ("address-mask-request", 17, 0, 0xFF),
    ("address-mask-reply", 18, 0, 0xFF),
];

/// `(name, type, code_min, code_max)` for IPv6 (RFC 4443, RFC 4861).
pub const ICMPV6_NAMES: &[(&str, u8, u8, u8)] = &[
    ("destination-unreachable", 1, 0, 0xFF),
    ("no-route", 1, 0, 0),
    ("communication-prohibited", 1, 1, 1),
    ("beyond-scope", 1, 2, 2),
    ("address-unreachable", 1, 3, 3),
    ("port-unreachable", 1, 4, 4),
    ("failed-policy", 1, 5, 5),
    ("reject-route", 1, 6, 6),
    ("packet-too-big", 2, 0, 0xFF),
    ("time-exceeded", 3, 0, 0xFF),
    ("ttl-exceeded", 3, 0, 0xFF),
    ("ttl-zero-during-transit", 3, 0, 0),
    ("ttl-zero-during-reassembly", 3, 1, 1),
    ("parameter-problem", 4, 0, 0xFF),
    ("bad-header", 4, 0, 0),
    ("unknown-header-type", 4, 1, 1),
    ("unknown-option", 4, 2, 2),
    ("echo-request", 128, 0, 0xFF),
    ("ping", 128, 0, 0xFF),
    ("echo-reply", 129, 0, 0xFF),
    ("pong", 129, 0, 0xFF),
    ("router-solicitation", 133, 0, 0xFF),
    ("router-advertisement", 134, 0, 0xFF),
    ("neighbour-solicitation", 135, 0, 0xFF),
    ("neighbor-solicitation", 135, 0, 0xFF),
    ("neighbour-advertisement", 136, 0, 0xFF),
    ("neighbor-advertisement", 136, 0, 0xFF),
    ("redirect", 137, 0, 0xFF),
];

impl IcmpType {
    /// `--icmp-type any`.
    pub const ANY: IcmpType = IcmpType {
        icmp_type: 0xFF,
        code_min: 0,
        code_max: 0xFF,
    };

    /// Parses a name from `table`, a number `T` (any code) or `T/C`.
    pub fn parse(s: &str, table: &[(&str, u8, u8, u8)]) -> Result<IcmpType, String> {
        if let Some(&(_, t, lo, hi)) = table.iter().find(|e| e.0 == s) {
            return Ok(IcmpType {
                icmp_type: t,
                code_min: lo,
                code_max: hi,
            });
        }
        let num = |x: &str| {
            x.parse::<u8>()
                .map_err(|_| format!("unknown ICMP type `{s}`"))
        };
        match s.split_once('/') {
            Some((t, c)) => {
                let code = num(c)?;
                Ok(IcmpType {
                    icmp_type: num(t)?,
                    code_min: code,
                    code_max: code,
                })
            }
            None => Ok(IcmpType {
                icmp_type: num(s)?,
                code_min: 0,
                code_max: 0xFF,
            }),
        }
    }

    /// Whether an ICMP message of `icmp_type`/`code` matches.
    pub fn matches(&self, icmp_type: u8, code: u8) -> bool {
        self.icmp_type == 0xFF
            || (self.icmp_type == icmp_type && self.code_min <= code && code <= self.code_max)
    }
}

impl fmt::Display for IcmpType {
    /// The save form: `any`, `T`, or `T/C` (`libipt_icmp.c` save prints the first code when the
    /// range is not the full one).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == IcmpType::ANY {
            f.write_str("any")
        } else if self.code_min == 0 && self.code_max == 0xFF {
            write!(f, "{}", self.icmp_type)
        } else {
            write!(f, "{}/{}", self.icmp_type, self.code_min)
        }
    }
}
