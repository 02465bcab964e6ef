//! Value types used by matches and targets: address/mask networks, address ranges, interface names,
//! port and id ranges, marks and MAC addresses. Each parses from and prints as iptables-save does.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Serialize;

use crate::model::Family;

/// An address with a mask, as in `-s 198.51.100.0/24` or `-d 203.0.0.0/255.255.0.255`.
///
/// The kernel stores an address and a mask (`struct ipt_ip` `src`/`smsk`), not a prefix length, and
/// masks need not be contiguous; iptables-save prints `/len` when the mask is contiguous and the
/// dotted (or colon) mask otherwise (`xshared.c save_ipv4_addr`). The address is stored already
/// masked, as the kernel does (`-s 198.51.100.7/24` is saved as `198.51.100.0/24`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Cidr {
    addr: IpAddr,
    mask: IpAddr,
}

impl Cidr {
    /// A network from an address and a prefix length (0–32 for IPv4, 0–128 for IPv6).
    /// Returns `None` if the length is out of range.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Cidr> {
        let mask = match addr {
            IpAddr::V4(_) if prefix <= 32 => IpAddr::V4(Ipv4Addr::from(
                u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0),
            )),
            IpAddr::V6(_) if prefix <= 128 => IpAddr::V6(Ipv6Addr::from(
                u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0),
            )),
            _ => return None,
        };
        Cidr::with_mask(addr, mask)
    }

    /// A network from an address and an arbitrary mask of the same family (`None` if the families differ).
    pub fn with_mask(addr: IpAddr, mask: IpAddr) -> Option<Cidr> {
        match (addr, mask) {
            (IpAddr::V4(a), IpAddr::V4(m)) => Some(Cidr {
                addr: IpAddr::V4(Ipv4Addr::from(a.to_bits() & m.to_bits())),
                mask,
            }),
            (IpAddr::V6(a), IpAddr::V6(m)) => Some(Cidr {
                addr: IpAddr::V6(Ipv6Addr::from(a.to_bits() & m.to_bits())),
                mask,
            }),
            _ => None,
        }
    }

    /// A single host (`/32` or `/128`).
    pub fn host(addr: IpAddr) -> Cidr {
        let prefix = if addr.is_ipv4() { 32 } else { 128 };
        // Proven invariant: a full-length prefix is always in range.
        Cidr::new(addr, prefix).unwrap_or(Cidr { addr, mask: addr })
    }

    /// The (masked) network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The mask.
    pub fn mask(&self) -> IpAddr {
        self.mask
    }

    /// The prefix length when the mask is contiguous, `None` for a non-contiguous mask.
    pub fn prefix_len(&self) -> Option<u8> {
        let (bits, width) = match self.mask {
            IpAddr::V4(m) => (u128::from(m.to_bits()) << 96, 32),
            IpAddr::V6(m) => (m.to_bits(), 128),
        };
        let ones = bits.leading_ones();
        (bits.checked_shl(ones).unwrap_or(0) == 0 && ones <= width).then_some(ones as u8)
    }

    /// Whether `ip` is inside: `ip & mask == addr`. An address of the other family never is.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, self.mask, ip) {
            (IpAddr::V4(a), IpAddr::V4(m), IpAddr::V4(i)) => {
                i.to_bits() & m.to_bits() == a.to_bits()
            }
            (IpAddr::V6(a), IpAddr::V6(m), IpAddr::V6(i)) => {
                i.to_bits() & m.to_bits() == a.to_bits()
            }
            _ => false,
        }
    }

    /// Whether the mask covers the whole address (a single host).
    pub fn is_host(&self) -> bool {
        matches!(self.prefix_len(), Some(32) if self.addr.is_ipv4())
            || matches!(self.prefix_len(), Some(128) if self.addr.is_ipv6())
    }

    /// The family of the address.
    pub fn family(&self) -> Family {
        Family::of(self.addr)
    }

    /// Parses `addr`, `addr/len` or `addr/mask`. A bare address is a host.
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (a, m) = match s.split_once('/') {
            Some((a, m)) => (a, Some(m)),
            None => (s, None),
        };
        let addr: IpAddr = a.parse().map_err(|_| format!("invalid address `{a}`"))?;
        match m {
            None => Ok(Cidr::host(addr)),
            Some(m) => {
                if let Ok(len) = m.parse::<u8>() {
                    Cidr::new(addr, len).ok_or_else(|| format!("prefix length `{m}` out of range"))
                } else {
                    let mask: IpAddr = m.parse().map_err(|_| format!("invalid mask `{m}`"))?;
                    Cidr::with_mask(addr, mask)
                        .ok_or_else(|| format!("mask `{m}` is not of the address's family"))
                }
            }
        }
    }

    /// Prints as conntrack's save does: a bare address for a host, else like [`Display`](fmt::Display).
    pub fn display_bare_host(&self) -> String {
        if self.is_host() {
            self.addr.to_string()
        } else {
            self.to_string()
        }
    }
}

impl fmt::Display for Cidr {
    /// `addr/len`, or `addr/mask` for a non-contiguous mask (as iptables-save prints `-s`/`-d`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.prefix_len() {
            Some(len) => write!(f, "{}/{len}", self.addr),
            None => write!(f, "{}/{}", self.addr, self.mask),
        }
    }
}

/// An inclusive address range, as in `-m iprange --src-range 192.0.2.1-192.0.2.9`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct AddrRange {
    /// First address (inclusive).
    pub start: IpAddr,
    /// Last address (inclusive).
    pub end: IpAddr,
}

impl AddrRange {
    /// Parses `a-b` or a single address `a` (then `start == end`).
    pub fn parse(s: &str) -> Result<AddrRange, String> {
        let (a, b) = s.split_once('-').unwrap_or((s, s));
        let start: IpAddr = a.parse().map_err(|_| format!("invalid address `{a}`"))?;
        let end: IpAddr = b.parse().map_err(|_| format!("invalid address `{b}`"))?;
        if start.is_ipv4() != end.is_ipv4() {
            return Err(format!("range `{s}` mixes address families"));
        }
        Ok(AddrRange { start, end })
    }

    /// Whether `ip` lies in the range (same family, `start <= ip <= end`).
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.start.is_ipv4() && self.start <= ip && ip <= self.end
    }
}

impl fmt::Display for AddrRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

/// An interface name match (`-i eth0`, `-o veth+`). A trailing `+` in iptables makes the name a
/// prefix (`wildcard`); `+` alone matches every interface (iptables.8, "-i").
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Interface {
    /// The name, without the trailing `+`.
    pub name: String,
    /// Whether `name` is a prefix (the save form ends in `+`).
    pub wildcard: bool,
}

impl Interface {
    /// Parses `name` or `prefix+`. Names longer than `IFNAMSIZ - 1` (15) bytes are rejected, as iptables does.
    pub fn parse(s: &str) -> Result<Interface, String> {
        let (name, wildcard) = match s.strip_suffix('+') {
            Some(n) => (n, true),
            None => (s, false),
        };
        if s.is_empty() || s.len() > 15 {
            return Err(format!("invalid interface name `{s}`"));
        }
        Ok(Interface {
            name: name.to_string(),
            wildcard,
        })
    }

    /// Whether the interface called `ifname` matches.
    pub fn matches(&self, ifname: &str) -> bool {
        if self.wildcard {
            ifname.starts_with(&self.name)
        } else {
            ifname == self.name
        }
    }
}

impl fmt::Display for Interface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.name, if self.wildcard { "+" } else { "" })
    }
}

/// An inclusive range of 16-bit values: ports (`80`, `1000:2000`) or packet lengths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct PortRange {
    /// First value (inclusive).
    pub start: u16,
    /// Last value (inclusive).
    pub end: u16,
}

impl PortRange {
    /// A single value.
    pub fn single(p: u16) -> PortRange {
        PortRange { start: p, end: p }
    }

    /// Whether `p` is inside.
    pub fn contains(&self, p: u16) -> bool {
        self.start <= p && p <= self.end
    }

    /// Parses `p`, `a:b`, `:b` (from 0) or `a:` (to 65535), numbers only — service names are not
    /// resolved here (that would need `/etc/services`); iptables-save always prints numbers.
    /// `sep` is `:` for tcp/udp/length and `-` for NAT `--to-ports`.
    pub fn parse_with(s: &str, sep: char) -> Result<PortRange, String> {
        let num = |t: &str, default: u16| -> Result<u16, String> {
            if t.is_empty() {
                return Ok(default);
            }
            t.parse::<u16>()
                .map_err(|_| format!("invalid number `{t}` (names are not resolved)"))
        };
        let r = match s.split_once(sep) {
            Some((a, b)) => PortRange {
                start: num(a, 0)?,
                end: num(b, u16::MAX)?,
            },
            None if !s.is_empty() => PortRange::single(num(s, 0)?),
            None => return Err("empty value".to_string()),
        };
        if r.start > r.end {
            return Err(format!("range `{s}` is reversed"));
        }
        Ok(r)
    }

    /// Parses with the `:` separator (see [`PortRange::parse_with`]).
    pub fn parse(s: &str) -> Result<PortRange, String> {
        PortRange::parse_with(s, ':')
    }

    /// Prints `p` or `a<sep>b`.
    pub fn render(&self, sep: char) -> String {
        if self.start == self.end {
            self.start.to_string()
        } else {
            format!("{}{sep}{}", self.start, self.end)
        }
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render(':'))
    }
}

/// An inclusive range of uids or gids (`-m owner --uid-owner 0` or `10-20`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct IdRange {
    /// First id (inclusive).
    pub start: u32,
    /// Last id (inclusive).
    pub end: u32,
}

impl IdRange {
    /// Parses `n` or `a-b`, numbers only (user and group names are not resolved here).
    pub fn parse(s: &str) -> Result<IdRange, String> {
        let (a, b) = s.split_once('-').unwrap_or((s, s));
        let n = |t: &str| t.parse::<u32>().map_err(|_| format!("invalid id `{t}`"));
        let r = IdRange {
            start: n(a)?,
            end: n(b)?,
        };
        if r.start > r.end {
            return Err(format!("range `{s}` is reversed"));
        }
        Ok(r)
    }

    /// Whether `id` is inside.
    pub fn contains(&self, id: u32) -> bool {
        self.start <= id && id <= self.end
    }
}

impl fmt::Display for IdRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.end {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}-{}", self.start, self.end)
        }
    }
}

/// A 32-bit mark with a mask: `-m mark --mark value[/mask]` matches when `(nfmark & mask) == value`
/// (libxt_mark.man). The mask defaults to `0xffffffff`, and then is not printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct MarkMask {
    /// The value compared with the masked mark.
    pub value: u32,
    /// The mask applied to the packet's (or connection's) mark.
    pub mask: u32,
}

impl MarkMask {
    /// Parses `value[/mask]`, each decimal or `0x` hex (as `strtoul(…, 0)` accepts).
    pub fn parse(s: &str) -> Result<MarkMask, String> {
        match s.split_once('/') {
            Some((v, m)) => Ok(MarkMask {
                value: parse_u32(v)?,
                mask: parse_u32(m)?,
            }),
            None => Ok(MarkMask {
                value: parse_u32(s)?,
                mask: u32::MAX,
            }),
        }
    }

    /// Whether `mark` matches: `(mark & mask) == value`.
    pub fn matches(&self, mark: u32) -> bool {
        mark & self.mask == self.value
    }
}

impl fmt::Display for MarkMask {
    /// `0xV` or `0xV/0xM` (libxt_mark.c `mark_mt_save`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.mask == u32::MAX {
            write!(f, "{:#x}", self.value)
        } else {
            write!(f, "{:#x}/{:#x}", self.value, self.mask)
        }
    }
}

/// Parses a u32 in decimal, `0x` hex or leading-`0` octal, like C's `strtoul(s, NULL, 0)`.
pub(crate) fn parse_u32(s: &str) -> Result<u32, String> {
    let r = if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        u32::from_str_radix(h, 16)
    } else if s.len() > 1 && s.starts_with('0') {
        u32::from_str_radix(&s[1..], 8)
    } else {
        s.parse::<u32>()
    };
    r.map_err(|_| format!("invalid number `{s}`"))
}

/// A MAC address (`-m mac --mac-source 02:00:00:00:00:01`), printed lower-case as iptables-save does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// Parses six colon-separated hex octets.
    pub fn parse(s: &str) -> Result<MacAddr, String> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for b in &mut out {
            let p = parts
                .next()
                .ok_or_else(|| format!("invalid MAC address `{s}`"))?;
            if p.is_empty() || p.len() > 2 {
                return Err(format!("invalid MAC address `{s}`"));
            }
            *b = u8::from_str_radix(p, 16).map_err(|_| format!("invalid MAC address `{s}`"))?;
        }
        if parts.next().is_some() {
            return Err(format!("invalid MAC address `{s}`"));
        }
        Ok(MacAddr(out))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn cidr_forms() {
        let c = Cidr::parse("198.51.100.7/24").unwrap();
        assert_eq!(c.to_string(), "198.51.100.0/24");
        assert_eq!(c.prefix_len(), Some(24));
        assert!(c.contains("198.51.100.200".parse().unwrap()));
        assert!(!c.contains("198.51.101.1".parse().unwrap()));
        let odd = Cidr::parse("203.0.113.0/255.255.0.255").unwrap();
        assert_eq!(odd.prefix_len(), None);
        assert_eq!(odd.to_string(), "203.0.0.0/255.255.0.255");
        assert!(odd.contains("203.0.9.0".parse().unwrap()));
        assert_eq!(
            Cidr::parse("192.0.2.1").unwrap().to_string(),
            "192.0.2.1/32"
        );
        assert_eq!(Cidr::parse("0.0.0.0/0").unwrap().prefix_len(), Some(0));
        assert_eq!(Cidr::parse("fd00::1/64").unwrap().to_string(), "fd00::/64");
        assert!(Cidr::parse("192.0.2.1/33").is_err());
        assert!(Cidr::parse("fd00::/255.0.0.0").is_err());
        assert!(Cidr::parse("example.com").is_err());
        assert!(
            !Cidr::parse("fd00::/8")
                .unwrap()
                .contains("192.0.2.1".parse().unwrap())
        );
    }

    #[test]
    fn ranges_and_marks() {
        assert_eq!(
            PortRange::parse(":1024").unwrap(),
            PortRange {
                start: 0,
                end: 1024
            }
        );
        assert_eq!(
            PortRange::parse("1024:").unwrap(),
            PortRange {
                start: 1024,
                end: 65535
            }
        );
        assert!(PortRange::parse("http").is_err());
        assert!(PortRange::parse("90:80").is_err());
        assert_eq!(
            PortRange::parse_with("80-90", '-').unwrap().render('-'),
            "80-90"
        );
        let m = MarkMask::parse("0x4000/0x4000").unwrap();
        assert!(m.matches(0x4001) && !m.matches(0x1));
        assert_eq!(MarkMask::parse("5").unwrap().to_string(), "0x5");
        assert_eq!(
            MacAddr::parse("0A:BB:cc:00:00:01").unwrap().to_string(),
            "0a:bb:cc:00:00:01"
        );
        assert!(MacAddr::parse("0a:bb:cc:00:00").is_err());
        let i = Interface::parse("veth+").unwrap();
        assert!(i.matches("veth12") && !i.matches("eth0"));
        assert!(Interface::parse("0123456789abcdef").is_err());
        assert_eq!(IdRange::parse("10-20").unwrap().to_string(), "10-20");
    }
}
