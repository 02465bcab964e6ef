//! Typed targets (`-j` / `-g`). Which of them end a chain's traversal is given by
//! [`Target::is_terminal`]; the table is from iptables.8 "TARGETS" and iptables-extensions(8).

use std::net::IpAddr;

use serde::Serialize;

use crate::addr::PortRange;
use crate::model::Family;

/// The ICMP error (or TCP RST) sent by `REJECT --reject-with` (libipt_REJECT.c, libip6t_REJECT.c).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RejectWith {
    /// `icmp-net-unreachable` (alias `net-unreach`).
    IcmpNetUnreachable,
    /// `icmp-host-unreachable` (`host-unreach`): the sender sees EHOSTUNREACH.
    IcmpHostUnreachable,
    /// `icmp-proto-unreachable` (`proto-unreach`).
    IcmpProtoUnreachable,
    /// `icmp-port-unreachable` (`port-unreach`), the IPv4 default: the sender sees ECONNREFUSED.
    IcmpPortUnreachable,
    /// `icmp-net-prohibited` (`net-prohib`).
    IcmpNetProhibited,
    /// `icmp-host-prohibited` (`host-prohib`).
    IcmpHostProhibited,
    /// `icmp-admin-prohibited` (`admin-prohib`).
    IcmpAdminProhibited,
    /// `tcp-reset` (`tcp-rst`): a TCP RST; the sender sees ECONNREFUSED.
    TcpReset,
    /// `icmp6-no-route` (`no-route`).
    Icmp6NoRoute,
    /// `icmp6-adm-prohibited` (`adm-prohibited`).
    Icmp6AdmProhibited,
    /// `icmp6-addr-unreachable` (`addr-unreach`).
    Icmp6AddrUnreachable,
    /// `icmp6-port-unreachable` (`port-unreach`), the IPv6 default.
    Icmp6PortUnreachable,
    /// `icmp6-policy-fail` (`policy-fail`).
    Icmp6PolicyFail,
    /// `icmp6-reject-route` (`reject-route`).
    Icmp6RejectRoute,
}

const REJECT_V4: &[(&str, &str, RejectWith)] = &[
    (
        "icmp-net-unreachable",
        "net-unreach",
        RejectWith::IcmpNetUnreachable,
    ),
    (
        "icmp-host-unreachable",
        "host-unreach",
        RejectWith::IcmpHostUnreachable,
    ),
    (
        "icmp-proto-unreachable",
        "proto-unreach",
        RejectWith::IcmpProtoUnreachable,
    ),
    (
        "icmp-port-unreachable",
        "port-unreach",
        RejectWith::IcmpPortUnreachable,
    ),
    (
        "icmp-net-prohibited",
        "net-prohib",
        RejectWith::IcmpNetProhibited,
    ),
    (
        "icmp-host-prohibited",
        "host-prohib",
        RejectWith::IcmpHostProhibited,
    ),
    ("tcp-reset", "tcp-rst", RejectWith::TcpReset),
    (
        "icmp-admin-prohibited",
        "admin-prohib",
        RejectWith::IcmpAdminProhibited,
    ),
];

const REJECT_V6: &[(&str, &str, RejectWith)] = &[
    ("icmp6-no-route", "no-route", RejectWith::Icmp6NoRoute),
    (
        "icmp6-adm-prohibited",
        "adm-prohibited",
        RejectWith::Icmp6AdmProhibited,
    ),
    (
        "icmp6-addr-unreachable",
        "addr-unreach",
        RejectWith::Icmp6AddrUnreachable,
    ),
    (
        "icmp6-port-unreachable",
        "port-unreach",
        RejectWith::Icmp6PortUnreachable,
    ),
    ("tcp-reset", "tcp-rst", RejectWith::TcpReset),
    (
        "icmp6-policy-fail",
        "policy-fail",
        RejectWith::Icmp6PolicyFail,
    ),
    (
        "icmp6-reject-route",
        "reject-route",
        RejectWith::Icmp6RejectRoute,
    ),
];

impl RejectWith {
    fn table(family: Family) -> &'static [(&'static str, &'static str, RejectWith)] {
        match family {
            Family::Ipv4 => REJECT_V4,
            Family::Ipv6 => REJECT_V6,
        }
    }

    /// The default when `--reject-with` is absent.
    pub fn default_for(family: Family) -> RejectWith {
        match family {
            Family::Ipv4 => RejectWith::IcmpPortUnreachable,
            Family::Ipv6 => RejectWith::Icmp6PortUnreachable,
        }
    }

    /// Parses a canonical name or its alias for `family`.
    pub fn parse(s: &str, family: Family) -> Option<RejectWith> {
        RejectWith::table(family)
            .iter()
            .find(|e| e.0 == s || e.1 == s)
            .map(|e| e.2)
    }

    /// The canonical name.
    pub fn as_str(self) -> &'static str {
        REJECT_V4
            .iter()
            .chain(REJECT_V6)
            .find(|e| e.2 == self)
            .map_or("icmp-port-unreachable", |e| e.0)
    }
}

/// A NAT mapping: `[addr[-addr]][:port[-port]]` (libxt_NAT.man); IPv6 addresses are bracketed when a
/// port follows (`[fd00::2]:80`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct NatRange {
    /// The inclusive address range; `None` keeps the address (only the port changes).
    pub addrs: Option<(IpAddr, IpAddr)>,
    /// The inclusive port range; `None` keeps the port.
    pub ports: Option<PortRange>,
}

/// DNAT/SNAT/MASQUERADE/REDIRECT flags.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
pub struct NatFlags {
    /// `--random`: randomised source port mapping.
    pub random: bool,
    /// `--random-fully`: fully randomised port mapping.
    pub random_fully: bool,
    /// `--persistent`: same mapping for a client across connections.
    pub persistent: bool,
}

/// `CONNMARK` actions (libxt_CONNMARK.man), normalised as iptables-save prints them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnmarkAction {
    /// `--set-xmark v/m`: `ctmark = (ctmark & !mask) ^ value` (also `--set-mark`, `--and-mark`,
    /// `--or-mark`, `--xor-mark`, converted as for [`Target::Mark`]).
    SetXmark {
        /// XORed in.
        value: u32,
        /// Bits cleared first.
        mask: u32,
    },
    /// `--save-mark --nfmask n --ctmask c`: `ctmark = (ctmark & !c) ^ (nfmark & n)`.
    Save {
        /// Mask on the packet mark.
        nfmask: u32,
        /// Mask on the connection mark.
        ctmask: u32,
    },
    /// `--restore-mark --nfmask n --ctmask c`: `nfmark = (nfmark & !n) ^ (ctmark & c)`.
    Restore {
        /// Mask on the packet mark.
        nfmask: u32,
        /// Mask on the connection mark.
        ctmask: u32,
    },
}

/// A rule's target.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "spec")]
pub enum Target {
    /// `-j ACCEPT`: ends this base chain's traversal (the packet continues to the next base chain/hook).
    Accept,
    /// `-j DROP`.
    Drop,
    /// `-j REJECT [--reject-with …]` (always saved with `--reject-with`).
    Reject(RejectWith),
    /// `-j RETURN`: back to the calling chain; at the end of a built-in chain, its policy.
    Return,
    /// `-j CHAIN`: to a user chain, returning here on RETURN or at its end.
    Jump(String),
    /// `-g CHAIN`: to a user chain without a return frame ("RETURN … continues in the chain that
    /// called us via --jump", iptables.8).
    Goto(String),
    /// `-j LOG …` (non-terminal); options kept as tokens.
    Log(Vec<String>),
    /// `-j NFLOG …` (non-terminal); options kept as tokens.
    Nflog(Vec<String>),
    /// `-j TRACE` (raw table, non-terminal).
    Trace,
    /// `-j MARK --set-xmark v/m` (non-terminal): `nfmark = (nfmark & !mask) ^ value` (libxt_MARK.man).
    /// `--set-mark v[/m]` is `v/(v|m)`, `--and-mark b` is `0/!b`, `--or-mark b` is `b/b`,
    /// `--xor-mark b` is `b/0`; iptables-save prints them all as `--set-xmark`.
    Mark {
        /// XORed in.
        value: u32,
        /// Bits cleared first.
        mask: u32,
    },
    /// `-j CONNMARK …` (non-terminal).
    Connmark(ConnmarkAction),
    /// `-j DNAT --to-destination …` (nat PREROUTING/OUTPUT; first packet of a connection).
    Dnat {
        /// The mapping.
        to: NatRange,
        /// Flags.
        flags: NatFlags,
    },
    /// `-j SNAT --to-source …` (nat POSTROUTING/INPUT).
    Snat {
        /// The mapping.
        to: NatRange,
        /// Flags.
        flags: NatFlags,
    },
    /// `-j MASQUERADE [--to-ports p[-q]]`: SNAT to the output interface's address.
    Masquerade {
        /// `--to-ports`.
        ports: Option<PortRange>,
        /// Flags (`--random`, `--random-fully`).
        flags: NatFlags,
    },
    /// `-j REDIRECT [--to-ports p[-q]]`: DNAT to the incoming interface's primary address (127.0.0.1 / ::1 for locally generated packets).
    Redirect {
        /// `--to-ports`.
        ports: Option<PortRange>,
        /// Flags (`--random`).
        flags: NatFlags,
    },
    /// `-j NOTRACK` (raw, non-terminal): the packet becomes UNTRACKED.
    Notrack,
    /// `-j CT …` (raw, non-terminal); options kept as tokens. `--notrack` is [`Target::is_notrack`].
    Ct(Vec<String>),
    /// A target this crate does not model, or a known one with options it does not model. Kept
    /// verbatim; an evaluator must report `undetermined` through it.
    Unknown {
        /// The name after `-j`.
        name: String,
        /// Its argument tokens (unquoted).
        args: Vec<String>,
    },
}

impl Target {
    /// Whether the target ends the traversal of the current chain (a verdict, a NAT binding, a
    /// jump/goto handing over, or RETURN). `None` for an unknown target: it may or may not.
    pub fn is_terminal(&self) -> Option<bool> {
        match self {
            Target::Accept
            | Target::Drop
            | Target::Reject(_)
            | Target::Return
            | Target::Goto(_)
            | Target::Dnat { .. }
            | Target::Snat { .. }
            | Target::Masquerade { .. }
            | Target::Redirect { .. } => Some(true),
            // A jump returns here unless the callee decides.
            Target::Jump(_) => Some(false),
            Target::Log(_)
            | Target::Nflog(_)
            | Target::Trace
            | Target::Mark { .. }
            | Target::Connmark(_)
            | Target::Notrack
            | Target::Ct(_) => Some(false),
            Target::Unknown { .. } => None,
        }
    }

    /// Whether this is `NOTRACK` or `CT --notrack`.
    pub fn is_notrack(&self) -> bool {
        match self {
            Target::Notrack => true,
            Target::Ct(args) => args.iter().any(|a| a == "--notrack"),
            _ => false,
        }
    }

    /// The user chain jumped or gone to, if any.
    pub fn chain(&self) -> Option<&str> {
        match self {
            Target::Jump(c) | Target::Goto(c) => Some(c),
            _ => None,
        }
    }
}
