//! Typed matches. A rule matches a packet when every one of its [`Match`]es does; within one match
//! module every given option must hold. Semantics are those of iptables-extensions(8); the source
//! of each is named on the type.

use serde::Serialize;

use crate::addr::{AddrRange, Cidr, IdRange, Interface, MacAddr, MarkMask, PortRange};
use crate::icmp::IcmpType;
use crate::proto::Protocol;

/// A value with iptables' `!` negation: the condition holds when `value` matches XOR `negated`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Neg<T> {
    /// Whether the option was preceded by `!`.
    pub negated: bool,
    /// The value compared.
    pub value: T,
}

impl<T> Neg<T> {
    /// A non-negated value.
    pub fn plain(value: T) -> Neg<T> {
        Neg {
            negated: false,
            value,
        }
    }

    /// Applies the negation to the result of matching `value`.
    pub fn apply(&self, matched: bool) -> bool {
        matched != self.negated
    }
}

/// One match of a rule, in the order written.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "spec")]
pub enum Match {
    /// `[!] -s addr[/mask]`: source address.
    Source(Neg<Cidr>),
    /// `[!] -d addr[/mask]`: destination address.
    Destination(Neg<Cidr>),
    /// `[!] -i name[+]`: input interface (only valid in PREROUTING, INPUT, FORWARD).
    InInterface(Neg<Interface>),
    /// `[!] -o name[+]`: output interface (only valid in FORWARD, OUTPUT, POSTROUTING).
    OutInterface(Neg<Interface>),
    /// `[!] -p proto`: layer-4 protocol.
    Protocol(Neg<Protocol>),
    /// `[!] -f`: second and later fragments (IPv4 only).
    Fragment {
        /// `! -f`: only unfragmented packets and first fragments.
        negated: bool,
    },
    /// `-m tcp` (also implied by `-p tcp` with tcp options).
    Tcp(TcpMatch),
    /// `-m udp` (also implied by `-p udp`).
    Udp(UdpMatch),
    /// `-m icmp [!] --icmp-type` (IPv4).
    Icmp(Neg<IcmpType>),
    /// `-m icmp6 [!] --icmpv6-type` (IPv6).
    Icmp6(Neg<IcmpType>),
    /// `-m multiport`.
    Multiport(MultiportMatch),
    /// `-m conntrack`.
    Conntrack(Box<ConntrackMatch>),
    /// `-m state [!] --state S,…` (libxt_state: the conntrack states without SNAT/DNAT).
    State(Neg<Vec<CtState>>),
    /// `-m comment --comment TEXT`: always matches; the text attributes the rule.
    Comment(String),
    /// `-m addrtype`.
    AddrType(Box<AddrTypeMatch>),
    /// `-m mark [!] --mark v[/m]`: `(nfmark & m) == v`.
    Mark(Neg<MarkMask>),
    /// `-m connmark [!] --mark v[/m]`: `(ctmark & m) == v`.
    Connmark(Neg<MarkMask>),
    /// `-m set [!] --match-set NAME dir[,dir…]`.
    Set(Box<SetMatch>),
    /// `-m statistic`.
    Statistic(StatisticMatch),
    /// `-m iprange`.
    IpRange(Box<IpRangeMatch>),
    /// `-m owner` (OUTPUT and POSTROUTING only: needs the local socket).
    Owner(OwnerMatch),
    /// `-m physdev` (bridged traffic with `br_netfilter`).
    Physdev(Box<PhysdevMatch>),
    /// `-m limit`: a token bucket; stateful, so its outcome depends on history.
    Limit(LimitMatch),
    /// `-m length [!] --length a[:b]`: the IP packet's total length in bytes (IPv6: payload + 40).
    Length(Neg<PortRange>),
    /// `-m mac [!] --mac-source MAC` (PREROUTING, FORWARD, INPUT only).
    Mac(Neg<MacAddr>),
    /// A match this crate does not model, or a known module with an option it does not model.
    /// Kept verbatim; an evaluator must report `undetermined` through it.
    Unknown {
        /// The module name after `-m` (or the core option, e.g. `-p`, when that is what could not be read).
        name: String,
        /// The module's argument tokens as written (unquoted; `!` kept as its own token).
        args: Vec<String>,
    },
}

/// TCP flag bits as in the TCP header (RFC 9293 §3.1; CWR/ECE RFC 3168).
pub mod tcp_flags {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// PSH.
    pub const PSH: u8 = 0x08;
    /// ACK.
    pub const ACK: u8 = 0x10;
    /// URG.
    pub const URG: u8 = 0x20;
    /// ECE.
    pub const ECE: u8 = 0x40;
    /// CWR.
    pub const CWR: u8 = 0x80;
    /// iptables' `ALL` (libxt_tcp.c: FIN|SYN|RST|PSH|ACK|URG).
    pub const ALL: u8 = 0x3f;
    /// Names in the order iptables prints them.
    pub const NAMES: [(&str, u8); 8] = [
        ("FIN", FIN),
        ("SYN", SYN),
        ("RST", RST),
        ("PSH", PSH),
        ("ACK", ACK),
        ("URG", URG),
        ("ECE", ECE),
        ("CWR", CWR),
    ];
}

/// `--tcp-flags MASK COMP`: `(flags & mask) == comp`. `--syn` is `FIN,SYN,RST,ACK SYN` and is
/// saved in that form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct TcpFlags {
    /// The flags examined (bits of [`tcp_flags`]).
    pub mask: u8,
    /// The flags that must be set among them.
    pub comp: u8,
}

impl TcpFlags {
    /// `--syn`.
    pub const SYN: TcpFlags = TcpFlags {
        mask: tcp_flags::FIN | tcp_flags::SYN | tcp_flags::RST | tcp_flags::ACK,
        comp: tcp_flags::SYN,
    };
}

/// `-m tcp` options (libxt_tcp.man). Absent options do not constrain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize)]
pub struct TcpMatch {
    /// `[!] --sport a[:b]`.
    pub sport: Option<Neg<PortRange>>,
    /// `[!] --dport a[:b]`.
    pub dport: Option<Neg<PortRange>>,
    /// `[!] --tcp-flags` / `[!] --syn`.
    pub flags: Option<Neg<TcpFlags>>,
    /// `[!] --tcp-option N`: the TCP option kind is present.
    pub option: Option<Neg<u8>>,
}

/// The single ports of `! --sport A ! --dport B` in a `-m tcp` / `-m udp` match, when both are
/// negated single ports. iptables-nft 1.8.9 compiles that pair into one 4-byte `!=` comparison of
/// `th sport . th dport`, so the kernel matches when *either* port differs, while the text means
/// *both* differ (found by the kernel differential test; `nft list` shows the merged payload).
pub fn negated_port_pair(m: &Match) -> Option<(u16, u16)> {
    let (sport, dport) = match m {
        Match::Tcp(t) => (t.sport.as_ref()?, t.dport.as_ref()?),
        Match::Udp(u) => (u.sport.as_ref()?, u.dport.as_ref()?),
        _ => return None,
    };
    let single = |n: &Neg<crate::addr::PortRange>| {
        (n.negated && n.value.start == n.value.end).then_some(n.value.start)
    };
    Some((single(sport)?, single(dport)?))
}

/// `-m udp` options (libxt_udp.man).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize)]
pub struct UdpMatch {
    /// `[!] --sport a[:b]`.
    pub sport: Option<Neg<PortRange>>,
    /// `[!] --dport a[:b]`.
    pub dport: Option<Neg<PortRange>>,
}

/// Which ports `-m multiport` compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MultiportDir {
    /// `--sports` (`--source-ports`).
    Source,
    /// `--dports` (`--destination-ports`).
    Destination,
    /// `--ports`: source or destination.
    Either,
}

/// `-m multiport [!] --dports|--sports|--ports p[,a:b…]` (≤15 entries, a range counts 2; libxt_multiport.man).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct MultiportMatch {
    /// Whether `!` preceded the option.
    pub negated: bool,
    /// Which ports are compared.
    pub dir: MultiportDir,
    /// The ports and ranges.
    pub ports: Vec<PortRange>,
}

/// A conntrack state (libxt_conntrack.man "--ctstate"). `Snat`/`Dnat` are virtual states: the
/// original source differs from the reply destination / the original destination differs from the
/// reply source. Declared in the order iptables prints them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CtState {
    /// Not associated with a known connection.
    Invalid,
    /// Starts a new connection (the first packet).
    New,
    /// Related to an existing connection (ICMP error, FTP data).
    Related,
    /// Belongs to a connection that has seen packets both ways.
    Established,
    /// Untracked (`-j CT --notrack` / `NOTRACK` in raw).
    Untracked,
    /// Virtual: source NAT applied.
    Snat,
    /// Virtual: destination NAT applied.
    Dnat,
}

impl CtState {
    /// All states in print order.
    pub const ALL: [CtState; 7] = [
        CtState::Invalid,
        CtState::New,
        CtState::Related,
        CtState::Established,
        CtState::Untracked,
        CtState::Snat,
        CtState::Dnat,
    ];

    /// The save-format name.
    pub fn as_str(self) -> &'static str {
        match self {
            CtState::Invalid => "INVALID",
            CtState::New => "NEW",
            CtState::Related => "RELATED",
            CtState::Established => "ESTABLISHED",
            CtState::Untracked => "UNTRACKED",
            CtState::Snat => "SNAT",
            CtState::Dnat => "DNAT",
        }
    }
}

/// A conntrack status bit (`--ctstatus`, libxt_conntrack.man), in print order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CtStatus {
    /// No status bit set.
    None,
    /// An expected connection.
    Expected,
    /// Packets seen in both directions.
    SeenReply,
    /// Will not be early-expired.
    Assured,
    /// Confirmed (the first packet left the box).
    Confirmed,
}

impl CtStatus {
    /// All values in print order.
    pub const ALL: [CtStatus; 5] = [
        CtStatus::None,
        CtStatus::Expected,
        CtStatus::SeenReply,
        CtStatus::Assured,
        CtStatus::Confirmed,
    ];

    /// The save-format name.
    pub fn as_str(self) -> &'static str {
        match self {
            CtStatus::None => "NONE",
            CtStatus::Expected => "EXPECTED",
            CtStatus::SeenReply => "SEEN_REPLY",
            CtStatus::Assured => "ASSURED",
            CtStatus::Confirmed => "CONFIRMED",
        }
    }
}

/// `--ctdir`: which direction the packet travels in its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CtDir {
    /// The direction of the connection's first packet.
    Original,
    /// The reply direction.
    Reply,
}

/// `-m conntrack` options (libxt_conntrack.man); addresses compare the conntrack tuples.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize)]
pub struct ConntrackMatch {
    /// `[!] --ctstate` (sorted, in print order).
    pub state: Option<Neg<Vec<CtState>>>,
    /// `[!] --ctproto` (saved as a number).
    pub proto: Option<Neg<Protocol>>,
    /// `[!] --ctorigsrc`.
    pub orig_src: Option<Neg<Cidr>>,
    /// `[!] --ctorigdst`.
    pub orig_dst: Option<Neg<Cidr>>,
    /// `[!] --ctreplsrc`.
    pub repl_src: Option<Neg<Cidr>>,
    /// `[!] --ctrepldst`.
    pub repl_dst: Option<Neg<Cidr>>,
    /// `[!] --ctorigsrcport`.
    pub orig_src_port: Option<Neg<PortRange>>,
    /// `[!] --ctorigdstport`.
    pub orig_dst_port: Option<Neg<PortRange>>,
    /// `[!] --ctreplsrcport`.
    pub repl_src_port: Option<Neg<PortRange>>,
    /// `[!] --ctrepldstport`.
    pub repl_dst_port: Option<Neg<PortRange>>,
    /// `[!] --ctstatus` (sorted).
    pub status: Option<Neg<Vec<CtStatus>>>,
    /// `[!] --ctexpire a[:b]`: remaining lifetime in seconds.
    pub expire: Option<Neg<IdRange>>,
    /// `--ctdir`.
    pub dir: Option<CtDir>,
}

/// A kernel address type (`RTN_*`, include/uapi/linux/rtnetlink.h) for `-m addrtype`, in print order.
/// The kernel refuses BROADCAST, BLACKHOLE, THROW and NAT for IPv6 (net/netfilter/xt_addrtype.c).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AddrType {
    /// RTN_UNSPEC.
    Unspec,
    /// RTN_UNICAST.
    Unicast,
    /// RTN_LOCAL: an address of this host.
    Local,
    /// RTN_BROADCAST.
    Broadcast,
    /// RTN_ANYCAST.
    Anycast,
    /// RTN_MULTICAST.
    Multicast,
    /// RTN_BLACKHOLE.
    Blackhole,
    /// RTN_UNREACHABLE.
    Unreachable,
    /// RTN_PROHIBIT.
    Prohibit,
    /// RTN_THROW.
    Throw,
    /// RTN_NAT.
    Nat,
    /// RTN_XRESOLVE.
    Xresolve,
}

impl AddrType {
    /// All types in print order.
    pub const ALL: [AddrType; 12] = [
        AddrType::Unspec,
        AddrType::Unicast,
        AddrType::Local,
        AddrType::Broadcast,
        AddrType::Anycast,
        AddrType::Multicast,
        AddrType::Blackhole,
        AddrType::Unreachable,
        AddrType::Prohibit,
        AddrType::Throw,
        AddrType::Nat,
        AddrType::Xresolve,
    ];

    /// The save-format name.
    pub fn as_str(self) -> &'static str {
        match self {
            AddrType::Unspec => "UNSPEC",
            AddrType::Unicast => "UNICAST",
            AddrType::Local => "LOCAL",
            AddrType::Broadcast => "BROADCAST",
            AddrType::Anycast => "ANYCAST",
            AddrType::Multicast => "MULTICAST",
            AddrType::Blackhole => "BLACKHOLE",
            AddrType::Unreachable => "UNREACHABLE",
            AddrType::Prohibit => "PROHIBIT",
            AddrType::Throw => "THROW",
            AddrType::Nat => "NAT",
            AddrType::Xresolve => "XRESOLVE",
        }
    }
}

/// Which interface `-m addrtype --limit-iface-in/out` restricts the address-type lookup to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitIface {
    /// `--limit-iface-in`: the packet's input interface.
    In,
    /// `--limit-iface-out`: the packet's output interface.
    Out,
}

/// `-m addrtype` (libxt_addrtype.man): the route type of the source/destination address; a
/// packet matches a list when its address has any of the listed types.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize)]
pub struct AddrTypeMatch {
    /// `[!] --src-type T,…` (sorted).
    pub src: Option<Neg<Vec<AddrType>>>,
    /// `[!] --dst-type T,…` (sorted).
    pub dst: Option<Neg<Vec<AddrType>>>,
    /// `--limit-iface-in` / `--limit-iface-out`.
    pub limit_iface: Option<LimitIface>,
}

/// `-m set [!] --match-set NAME src|dst[,…]` (libxt_set.man). Membership needs the ipset contents.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct SetMatch {
    /// Whether `!` preceded `--match-set`.
    pub negated: bool,
    /// The ipset name.
    pub set: String,
    /// For each dimension of the set, whether the packet's source (`false`) or destination (`true`) is used.
    pub dst: Vec<bool>,
    /// `--return-nomatch`.
    pub return_nomatch: bool,
}

/// `-m statistic` mode (libxt_statistic.man).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StatisticMode {
    /// `--mode random --probability P`: matches with probability `P` (0..=1), printed with 11 decimals.
    /// kube-proxy splits a Service over its endpoints with `1/n`, `1/(n-1)`, …
    Random {
        /// The probability.
        probability: f64,
    },
    /// `--mode nth --every N --packet P`: matches one packet in every `N`, the `P`-th (0-based).
    Nth {
        /// N.
        every: u32,
        /// P.
        packet: u32,
    },
}

/// `-m statistic [!] …`: non-deterministic from the rule text alone.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatisticMatch {
    /// Whether `!` preceded `--probability` / `--every`.
    pub negated: bool,
    /// The mode and its parameters.
    pub mode: StatisticMode,
}

/// `-m iprange` (libxt_iprange.man).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize)]
pub struct IpRangeMatch {
    /// `[!] --src-range a-b`.
    pub src: Option<Neg<AddrRange>>,
    /// `[!] --dst-range a-b`.
    pub dst: Option<Neg<AddrRange>>,
}

/// `-m owner` (libxt_owner.man): the local socket's owner; never matches forwarded packets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize)]
pub struct OwnerMatch {
    /// `[!] --uid-owner a[-b]` (numbers only).
    pub uid: Option<Neg<IdRange>>,
    /// `[!] --gid-owner a[-b]` (numbers only).
    pub gid: Option<Neg<IdRange>>,
    /// `--suppl-groups`: `--gid-owner` also checks supplementary groups.
    pub suppl_groups: bool,
    /// `[!] --socket-exists`.
    pub socket_exists: Option<Neg<()>>,
}

/// `-m physdev` (libxt_physdev.man): bridge ports, needs `br_netfilter`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize)]
pub struct PhysdevMatch {
    /// `[!] --physdev-in name[+]`.
    pub physdev_in: Option<Neg<Interface>>,
    /// `[!] --physdev-out name[+]`.
    pub physdev_out: Option<Neg<Interface>>,
    /// `[!] --physdev-is-in`.
    pub is_in: Option<Neg<()>>,
    /// `[!] --physdev-is-out`.
    pub is_out: Option<Neg<()>>,
    /// `[!] --physdev-is-bridged`.
    pub is_bridged: Option<Neg<()>>,
}

/// `-m limit` (libxt_limit.man). The rate is kept as written (`5/sec`): iptables may print a
/// different but equivalent unit than it was given.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize)]
pub struct LimitMatch {
    /// `--limit N/unit` as `(N, unit)`, unit one of `sec`, `min`, `hour`, `day` (input prefixes accepted).
    pub rate: Option<(u32, String)>,
    /// `--limit-burst N`.
    pub burst: Option<u32>,
}
