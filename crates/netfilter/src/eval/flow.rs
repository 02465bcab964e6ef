//! What the evaluator is asked about: one packet ([`Flow`]) and the host it crosses ([`HostModel`]).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Serialize;

use crate::addr::Cidr;
use crate::model::Family;

/// Where the packet starts, which decides the hooks it crosses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// Sent by a local process: OUTPUT, POSTROUTING, and (destination on this host) loopback re-entry
    /// through PREROUTING and INPUT.
    LocalOutput,
    /// Arriving from outside, addressed to this host: PREROUTING then INPUT (FORWARD instead if a
    /// DNAT sends it to an address that is not local).
    Input,
    /// Arriving from outside, routed on: PREROUTING, FORWARD, POSTROUTING (INPUT instead if a DNAT
    /// sends it to a local address).
    Forward,
}

/// The conntrack state the packet has once conntrack (priority −200) has seen it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ConnState {
    /// The first packet of a connection: the nat table is consulted.
    #[default]
    New,
    /// A packet of a connection that has seen traffic both ways.
    Established,
    /// Related to an existing connection (an ICMP error, FTP data).
    Related,
    /// Conntrack could not classify it; no conntrack entry is attached.
    Invalid,
    /// Exempted from tracking (`NOTRACK` / `CT --notrack` in raw); no entry is attached.
    Untracked,
}

impl ConnState {
    /// Whether a conntrack entry is attached (`nf_ct_get()` non-NULL), which `-m conntrack`
    /// options other than `--ctstate`, `-m connmark` and `CONNMARK` need (net/netfilter/xt_conntrack.c).
    pub fn has_entry(self) -> bool {
        matches!(
            self,
            ConnState::New | ConnState::Established | ConnState::Related
        )
    }
}

/// One packet to trace. Addresses and ports are those on the wire when it enters the first hook
/// (before any NAT). Unknown values are `None`: a rule that needs one is then `undetermined`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Flow {
    /// IPv4 or IPv6; only rulesets of this family are evaluated.
    pub family: Family,
    /// Layer-4 protocol number (`IPPROTO_TCP` = 6, UDP = 17, ICMP = 1, ICMPv6 = 58).
    pub protocol: u8,
    /// Source address (for a local process: the address the kernel picked or the socket bound).
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Source port (TCP/UDP/SCTP); usually an unknown ephemeral port for a client.
    pub sport: Option<u16>,
    /// Destination port (TCP/UDP/SCTP).
    pub dport: Option<u16>,
    /// TCP flags of the packet (bits of [`crate::matches::tcp_flags`]); [`Flow::new`] sets SYN for a NEW TCP flow.
    pub tcp_flags: Option<u8>,
    /// ICMP / ICMPv6 type.
    pub icmp_type: Option<u8>,
    /// ICMP / ICMPv6 code.
    pub icmp_code: Option<u8>,
    /// The IP packet's total length in bytes (`-m length`).
    pub length: Option<u16>,
    /// Input interface for [`Origin::Input`] / [`Origin::Forward`] (ignored for local output,
    /// whose loopback re-entry comes in on `lo`).
    pub in_iface: Option<String>,
    /// Output interface (for a destination on this host it is `lo`, which the evaluator fills in).
    pub out_iface: Option<String>,
    /// Where the packet starts.
    pub origin: Origin,
    /// Conntrack state after conntrack has seen it (NEW by default).
    pub ct_state: ConnState,
    /// The connection's mark (`ctmark`), for an existing connection.
    pub ct_mark: u32,
    /// Whether the (existing) connection was destination-NATed: the virtual `--ctstate DNAT`.
    /// For a NEW flow the evaluator sets it when a DNAT rule fires.
    pub ct_dnat: bool,
    /// Whether the (existing) connection was source-NATed: the virtual `--ctstate SNAT`.
    pub ct_snat: bool,
    /// The packet mark (`nfmark`) when it enters the first hook (usually 0; `SO_MARK` sets it).
    pub mark: u32,
    /// Socket owner's fsuid, for `-m owner` on locally generated packets.
    pub uid: Option<u32>,
    /// Socket owner's fsgid.
    pub gid: Option<u32>,
}

impl Flow {
    /// A NEW flow with no optional field known except, for TCP (6), the SYN flag. The family is
    /// the destination's.
    pub fn new(origin: Origin, protocol: u8, src: IpAddr, dst: IpAddr) -> Flow {
        Flow {
            family: Family::of(dst),
            protocol,
            src,
            dst,
            sport: None,
            dport: None,
            tcp_flags: (protocol == 6).then_some(crate::matches::tcp_flags::SYN),
            icmp_type: None,
            icmp_code: None,
            length: None,
            in_iface: None,
            out_iface: None,
            origin,
            ct_state: ConnState::New,
            ct_mark: 0,
            ct_dnat: false,
            ct_snat: false,
            mark: 0,
            uid: None,
            gid: None,
        }
    }

    /// A NEW TCP flow (a SYN) to `dst:dport`.
    pub fn tcp(origin: Origin, src: IpAddr, dst: IpAddr, dport: u16) -> Flow {
        Flow {
            dport: Some(dport),
            ..Flow::new(origin, 6, src, dst)
        }
    }

    /// A NEW UDP flow to `dst:dport`.
    pub fn udp(origin: Origin, src: IpAddr, dst: IpAddr, dport: u16) -> Flow {
        Flow {
            dport: Some(dport),
            ..Flow::new(origin, 17, src, dst)
        }
    }

    /// An ICMP (IPv4) or ICMPv6 echo request (type 8 / 128, code 0).
    pub fn echo_request(origin: Origin, src: IpAddr, dst: IpAddr) -> Flow {
        let (proto, ty) = if dst.is_ipv4() { (1, 8) } else { (58, 128) };
        Flow {
            icmp_type: Some(ty),
            icmp_code: Some(0),
            ..Flow::new(origin, proto, src, dst)
        }
    }

    /// Sets the conntrack state (builder style).
    pub fn with_state(mut self, state: ConnState) -> Flow {
        self.ct_state = state;
        if state != ConnState::New && self.protocol == 6 {
            // Not a SYN any more, and which flags it has is not known.
            self.tcp_flags = None;
        }
        self
    }
}

/// One address configured on an interface (`ip -o addr`), with its prefix length.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LocalAddr {
    /// The interface (`eth0`).
    pub iface: String,
    /// The address.
    pub addr: IpAddr,
    /// The prefix length (for the IPv4 subnet broadcast address).
    pub prefix: u8,
}

/// The contents of one ipset ([`crate::ipset::parse_ipset_save`] reads `ipset save`). Only
/// single-dimension address sets (`hash:ip`, `hash:net`, `bitmap:ip`) are modelled; for any other
/// type the evaluator answers `undetermined`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct IpSet {
    /// The set type as `ipset save` prints it (`hash:ip`, `hash:net`, `hash:ip,port`, …).
    pub kind: String,
    /// The members (a host for `hash:ip` without `netmask`).
    pub members: Vec<Cidr>,
    /// Members added with `nomatch` (`hash:net`): an address whose most specific covering entry
    /// is one of these is not in the set (ipset(8), "nomatch").
    pub nomatch: Vec<Cidr>,
}

impl IpSet {
    /// Whether membership of one address can be decided from this model.
    pub fn is_address_set(&self) -> bool {
        matches!(self.kind.as_str(), "hash:ip" | "hash:net" | "bitmap:ip")
    }

    /// Whether the type supports `nomatch` entries and so `--return-nomatch`
    /// (`IPSET_TYPE_NOMATCH`: the `hash:net` family of types).
    pub fn has_nomatch_feature(&self) -> bool {
        self.kind.starts_with("hash:net")
    }
}

/// One route of the main table (`ip route`): packets to `dst` leave through `dev`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Route {
    /// The destination prefix (`0.0.0.0/0` / `::/0` for a default route).
    pub dst: Cidr,
    /// The output interface.
    pub dev: String,
}

/// What the evaluator knows about the host: its addresses, routes and ipsets. Addresses are
/// taken as complete: an address not listed is not local. The loopback addresses (127.0.0.0/8 and
/// ::1 on `lo`) are always local and need not be listed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HostModel {
    /// Every address of every interface.
    pub addrs: Vec<LocalAddr>,
    /// Routes of the main table, used to find the output interface of a packet whose
    /// destination a DNAT changed (and of a local packet when the flow gives none). Each address
    /// in `addrs` also implies its connected subnet route, as the kernel adds one.
    pub routes: Vec<Route>,
    /// ipset contents by set name.
    pub ipsets: BTreeMap<String, IpSet>,
}

impl HostModel {
    /// Adds `addr/prefix` on `iface` (builder style).
    pub fn with_addr(mut self, iface: &str, addr: IpAddr, prefix: u8) -> HostModel {
        self.addrs.push(LocalAddr {
            iface: iface.to_string(),
            addr,
            prefix,
        });
        self
    }

    /// Adds a route to `dst` through `dev` (builder style).
    pub fn with_route(mut self, dst: Cidr, dev: &str) -> HostModel {
        self.routes.push(Route {
            dst,
            dev: dev.to_string(),
        });
        self
    }

    /// The output interface the main routing table picks for a non-local `dst`: the longest
    /// matching prefix among [`HostModel::routes`] and the connected subnets of
    /// [`HostModel::addrs`] (an explicit route wins a tie); `None` when nothing matches, so the
    /// interface stays unknown rather than guessed. Policy routing (`ip rule`) is not modelled.
    pub fn route_dev(&self, dst: IpAddr) -> Option<&str> {
        let connected = self.addrs.iter().filter_map(|a| {
            let net = Cidr::new(a.addr, a.prefix)?;
            Some((net, a.iface.as_str(), 0u8))
        });
        let explicit = self.routes.iter().map(|r| (r.dst, r.dev.as_str(), 1u8));
        explicit
            .chain(connected)
            .filter(|(net, _, _)| net.family() == Family::of(dst) && net.contains(dst))
            .max_by_key(|(net, _, explicit)| (net.prefix_len().unwrap_or(0), *explicit))
            .map(|(_, dev, _)| dev)
    }

    /// The interface owning the local address `addr` (`lo` for loopback), or `None` if not local.
    pub fn local_iface(&self, addr: IpAddr) -> Option<&str> {
        let loopback = match addr {
            IpAddr::V4(a) => a.is_loopback(),
            IpAddr::V6(a) => a == Ipv6Addr::LOCALHOST,
        };
        if loopback {
            return Some("lo");
        }
        self.addrs
            .iter()
            .find(|a| a.addr == addr)
            .map(|a| a.iface.as_str())
    }

    /// Whether `addr` is an address of this host (the kernel's RTN_LOCAL).
    pub fn is_local(&self, addr: IpAddr) -> bool {
        self.local_iface(addr).is_some()
    }

    /// The interface whose IPv4 subnet has `addr` as its directed broadcast address, if any
    /// (the kernel adds a `broadcast` route to the local table for it).
    pub fn subnet_broadcast_iface(&self, addr: Ipv4Addr) -> Option<&str> {
        self.addrs.iter().find_map(|a| match a.addr {
            IpAddr::V4(v4) if a.prefix < 31 => {
                let host_bits = u32::MAX.checked_shr(u32::from(a.prefix)).unwrap_or(0);
                ((v4.to_bits() | host_bits) == addr.to_bits()).then_some(a.iface.as_str())
            }
            _ => None,
        })
    }

    /// The only address of `family` on `iface`, if it has exactly one (what MASQUERADE and
    /// REDIRECT pick is certain only then); loopback gives 127.0.0.1 / ::1.
    pub fn sole_addr(&self, iface: &str, family: Family) -> Option<IpAddr> {
        if iface == "lo" {
            return Some(match family {
                Family::Ipv4 => IpAddr::V4(Ipv4Addr::LOCALHOST),
                Family::Ipv6 => IpAddr::V6(Ipv6Addr::LOCALHOST),
            });
        }
        let mut it = self
            .addrs
            .iter()
            .filter(|a| a.iface == iface && Family::of(a.addr) == family);
        match (it.next(), it.next()) {
            (Some(a), None) => Some(a.addr),
            _ => None,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn route_dev_takes_the_longest_prefix_and_prefers_an_explicit_route_on_a_tie() {
        let host = HostModel::default()
            .with_addr("eth0", "198.51.100.10".parse().unwrap(), 24)
            .with_route(Cidr::parse("0.0.0.0/0").unwrap(), "eth0")
            .with_route(Cidr::parse("192.0.2.0/24").unwrap(), "tun0")
            .with_route(Cidr::parse("192.0.2.8/32").unwrap(), "cali0")
            .with_route(Cidr::parse("198.51.100.0/24").unwrap(), "vrf0");
        let dev = |a: &str| host.route_dev(a.parse().unwrap());
        assert_eq!(dev("192.0.2.8"), Some("cali0"));
        assert_eq!(dev("192.0.2.9"), Some("tun0"));
        assert_eq!(dev("203.0.113.1"), Some("eth0"));
        assert_eq!(dev("198.51.100.20"), Some("vrf0"));
        assert_eq!(dev("fd00::1"), None, "no IPv6 route");
        let bare = HostModel::default().with_addr("eth0", "198.51.100.10".parse().unwrap(), 24);
        assert_eq!(
            bare.route_dev("198.51.100.99".parse().unwrap()),
            Some("eth0")
        );
        assert_eq!(bare.route_dev("203.0.113.1".parse().unwrap()), None);
    }
}
