//! Pure parsers for the `/proc` files a diagnosis reads: listening sockets
//! (`/proc/thread-self/net/{tcp,tcp6,udp,udp6}`), a process's credentials (`/proc/PID/status`)
//! and `net.ipv4.ping_group_range`. Text in, values out; no I/O here.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

/// Bit number of `CAP_NET_RAW` in the capability masks (`include/uapi/linux/capability.h`).
pub const CAP_NET_RAW: u32 = 13;

/// Transport protocol of a socket table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SocketProto {
    /// `/proc/net/tcp` and `tcp6`.
    Tcp,
    /// `/proc/net/udp` and `udp6`.
    Udp,
}

impl SocketProto {
    /// `tcp` or `udp`.
    pub fn as_str(self) -> &'static str {
        match self {
            SocketProto::Tcp => "tcp",
            SocketProto::Udp => "udp",
        }
    }
}

/// A socket that accepts new traffic: a TCP socket in state `LISTEN` (`0A`), or a UDP socket
/// with no remote peer (state `07`, remote port 0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listener {
    /// TCP or UDP.
    pub proto: SocketProto,
    /// The local address it is bound to (`0.0.0.0` / `::` for every address).
    pub addr: IpAddr,
    /// The local port (host byte order).
    pub port: u16,
    /// The owning uid.
    pub uid: u32,
}

impl Listener {
    /// Whether it accepts a packet to `dst:port`: same port, and bound to `dst` or to the
    /// wildcard of either family (an IPv6 wildcard socket also takes IPv4 unless `IPV6_V6ONLY`,
    /// which `/proc` does not show; it is taken as accepting).
    pub fn accepts(&self, dst: IpAddr, port: u16) -> bool {
        self.port == port && (self.addr == dst || self.addr.is_unspecified())
    }
}

/// Decodes one address of `/proc/net/{tcp,udp}[6]`: 8 hex digits (IPv4) or 32 (IPv6), each
/// 32-bit word printed as the native-endian integer of its network-order bytes (`%08X`).
fn parse_hex_addr(s: &str) -> Option<IpAddr> {
    let word = |w: &str| u32::from_str_radix(w, 16).ok().map(u32::to_ne_bytes);
    match s.len() {
        8 => word(s).map(|b| IpAddr::V4(Ipv4Addr::from(b))),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                let w = word(s.get(i * 8..i * 8 + 8)?)?;
                bytes[i * 4..i * 4 + 4].copy_from_slice(&w);
            }
            Some(IpAddr::V6(Ipv6Addr::from(bytes)))
        }
        _ => None,
    }
}

fn parse_endpoint(s: &str) -> Option<(IpAddr, u16)> {
    let (a, p) = s.split_once(':')?;
    Some((parse_hex_addr(a)?, u16::from_str_radix(p, 16).ok()?))
}

/// The listening sockets of one `/proc/net/{tcp,tcp6,udp,udp6}` text (format: `net/ipv4/tcp_ipv4.c`
/// `get_tcp4_sock`, `net/ipv4/udp.c` `udp4_format_sock`). Unreadable lines are skipped.
pub fn parse_socket_table(text: &str, proto: SocketProto) -> Vec<Listener> {
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(local), Some(remote), Some(state), Some(uid)) =
            (f.get(1), f.get(2), f.get(3), f.get(7))
        else {
            continue;
        };
        let (Some((addr, port)), Some((_, rport))) =
            (parse_endpoint(local), parse_endpoint(remote))
        else {
            continue;
        };
        let listening = match proto {
            SocketProto::Tcp => *state == "0A",
            SocketProto::Udp => *state == "07" && rport == 0,
        };
        if listening && let Ok(uid) = uid.parse() {
            out.push(Listener {
                proto,
                addr,
                port,
                uid,
            });
        }
    }
    out
}

/// A process's identity as the kernel checks it for sockets, from `/proc/PID/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    /// The process id read.
    pub pid: u32,
    /// `Name:` (the command name).
    pub name: String,
    /// Real, effective, saved and filesystem uid (`Uid:`).
    pub uid: [u32; 4],
    /// Real, effective, saved and filesystem gid (`Gid:`).
    pub gid: [u32; 4],
    /// Supplementary groups (`Groups:`).
    pub groups: Vec<u32>,
    /// Effective capabilities (`CapEff:`, a bit mask; bit 13 = CAP_NET_RAW).
    pub cap_eff: u64,
    /// Ambient capabilities (`CapAmb:`): what survives an execve by a non-root user.
    pub cap_amb: u64,
    /// Bounding set (`CapBnd:`).
    pub cap_bnd: u64,
    /// `NoNewPrivs:` (1: execve cannot gain privileges, e.g. file capabilities or setuid).
    pub no_new_privs: bool,
}

impl Credentials {
    /// The effective uid.
    pub fn euid(&self) -> u32 {
        self.uid[1]
    }

    /// The effective gid.
    pub fn egid(&self) -> u32 {
        self.gid[1]
    }

    /// Whether CAP_NET_RAW is in the effective set (a raw ICMP socket is allowed).
    pub fn has_net_raw(&self) -> bool {
        self.cap_eff & (1 << CAP_NET_RAW) != 0
    }

    /// The gids the kernel compares with `ping_group_range`: the effective gid, then the
    /// supplementary groups (`ping_init_sock()` in `net/ipv4/ping.c`).
    pub fn ping_gids(&self) -> Vec<u32> {
        let mut g = vec![self.egid()];
        g.extend(self.groups.iter().copied().filter(|x| *x != self.egid()));
        g
    }
}

/// Parses `/proc/PID/status`. Errors name the first missing or malformed field.
pub fn parse_status(pid: u32, text: &str) -> Result<Credentials, String> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':').map(str::trim))
    };
    let ids = |name: &str| -> Result<[u32; 4], String> {
        let v = field(name).ok_or_else(|| format!("no {name}: line"))?;
        let n: Vec<u32> = v
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()
            .map_err(|_| format!("{name}: {v:?} is not four ids"))?;
        <[u32; 4]>::try_from(n).map_err(|_| format!("{name}: {v:?} is not four ids"))
    };
    let mask = |name: &str| -> Result<u64, String> {
        let v = field(name).ok_or_else(|| format!("no {name}: line"))?;
        u64::from_str_radix(v, 16).map_err(|_| format!("{name}: {v:?} is not a hex mask"))
    };
    let (uid, gid) = (ids("Uid")?, ids("Gid")?);
    let groups = field("Groups")
        .ok_or("no Groups: line")?
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<Vec<u32>, _>>()
        .map_err(|_| "Groups: not a list of ids".to_string())?;
    Ok(Credentials {
        pid,
        name: field("Name").unwrap_or("").to_string(),
        uid,
        gid,
        groups,
        cap_eff: mask("CapEff")?,
        cap_amb: mask("CapAmb")?,
        cap_bnd: mask("CapBnd")?,
        // Absent before Linux 4.10: taken as not set.
        no_new_privs: field("NoNewPrivs").is_some_and(|v| v == "1"),
    })
}

/// `net.ipv4.ping_group_range` (`LOW HIGH`, inclusive; the default `1 0` admits nobody).
pub fn parse_ping_group_range(text: &str) -> Option<(u32, u32)> {
    let mut it = text.split_whitespace().map(str::parse::<u32>);
    match (it.next(), it.next(), it.next()) {
        (Some(Ok(lo)), Some(Ok(hi)), None) => Some((lo, hi)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn reads_listening_sockets_of_both_families() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0200007F:238B 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1001 1 0 100 0 0 10 0\n\
   1: 0100007F:0050 0100007F:A000 01 00000000:00000000 00:00000000 00000000  1000        0 1002 1 0 100 0 0 10 0\n\
   2: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1003 1\n\
   garbage\n";
        let l = parse_socket_table(tcp, SocketProto::Tcp);
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].addr, "127.0.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(l[0].port, 9099);
        assert!(l[0].accepts("127.0.0.2".parse().unwrap(), 9099));
        assert!(!l[0].accepts("127.0.0.1".parse().unwrap(), 9099));
        assert!(l[1].accepts("198.51.100.1".parse().unwrap(), 22));
        let tcp6 = "  sl  local_address                         remote_address                        st\n\
   0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000   65534        0 1 1\n\
   1: 0000FDFD000000000000000001000000:0035 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000   0        0 1 1\n";
        let l = parse_socket_table(tcp6, SocketProto::Tcp);
        assert_eq!(l[0].addr, "::1".parse::<IpAddr>().unwrap());
        assert_eq!(l[0].port, 8080);
        assert_eq!(l[0].uid, 65534);
        assert_eq!(l[1].addr, "fdfd::1".parse::<IpAddr>().unwrap());
        let udp = "  sl  local_address rem_address   st\n\
 1: 00000000:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1 2\n\
 2: 0100007F:0036 0100007F:0035 01 00000000:00000000 00:00000000 00000000     0        0 1 2\n";
        let l = parse_socket_table(udp, SocketProto::Udp);
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].port, 53);
    }

    #[test]
    fn reads_credentials() {
        let status = "Name:\tsleep\nUmask:\t0022\nState:\tS (sleeping)\nUid:\t65534\t65534\t65534\t65534\n\
Gid:\t65534\t65534\t65534\t65534\nGroups:\t100 65534 \nCapInh:\t0000000000000000\nCapPrm:\t0000000000000000\n\
CapEff:\t0000000000000000\nCapBnd:\t000001ffffffffff\nCapAmb:\t0000000000000000\nNoNewPrivs:\t1\n";
        let c = parse_status(7, status).unwrap();
        assert_eq!(c.euid(), 65534);
        assert_eq!(c.egid(), 65534);
        assert_eq!(c.groups, [100, 65534]);
        assert_eq!(c.ping_gids(), [65534, 100]);
        assert!(!c.has_net_raw());
        assert!(c.no_new_privs);
        assert_eq!(c.cap_bnd, 0x1ff_ffff_ffff);
        let root = status
            .replace("CapEff:\t0000000000000000", "CapEff:\t000001ffffffffff")
            .replace("Groups:\t100 65534 ", "Groups:\t");
        let c = parse_status(1, &root).unwrap();
        assert!(c.has_net_raw());
        assert!(c.groups.is_empty());
        assert!(parse_status(1, "Name:\tx\n").unwrap_err().contains("Uid"));
        assert!(
            parse_status(
                1,
                &status.replace("CapEff:\t0000000000000000", "CapEff:\tzz")
            )
            .unwrap_err()
            .contains("CapEff")
        );
    }

    proptest::proptest! {
        /// Whatever the kernel (or a corrupted snapshot) holds, the parsers return, never panic.
        #[test]
        fn parsers_never_panic(text in "\\PC{0,400}", hexy in "[0-9A-F: \n]{0,300}") {
            let _ = parse_socket_table(&text, SocketProto::Tcp);
            let _ = parse_socket_table(&format!("h\n 0: {hexy}"), SocketProto::Udp);
            let _ = parse_status(1, &text);
            let _ = parse_status(1, &format!("Uid:\t{hexy}\nGid:\t{hexy}\nGroups:\t{hexy}\nCapEff:\t{hexy}"));
            let _ = parse_ping_group_range(&text);
        }
    }

    #[test]
    fn reads_ping_group_range() {
        assert_eq!(parse_ping_group_range("1\t0\n"), Some((1, 0)));
        assert_eq!(
            parse_ping_group_range("0 2147483647"),
            Some((0, 2_147_483_647))
        );
        assert_eq!(parse_ping_group_range("1"), None);
        assert_eq!(parse_ping_group_range("a b"), None);
    }
}
