//! Why an ICMP socket could not be opened, in words an operator can act on.
//!
//! The engine tries an unprivileged datagram ("ping") socket first and a raw socket second. The kernel
//! refuses them for different reasons:
//! * `socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP)` fails with `EACCES` unless the process's effective gid
//!   or one of its supplementary gids lies within `net.ipv4.ping_group_range` of the socket's network
//!   namespace (`ping_init_sock()` in `net/ipv4/ping.c`; the same sysctl governs ICMPv6 ping sockets).
//!   The default range `1 0` admits nobody, not even root.
//! * `socket(…, SOCK_RAW, …)` fails with `EPERM` without an effective `CAP_NET_RAW` in the network
//!   namespace's owning user namespace (`inet_create()` in `net/ipv4/af_inet.c`).

use std::io;

use crate::Reason;
use crate::resolve::Family;

/// Where the kernel exposes the ping-socket group range (per network namespace).
pub const PING_GROUP_RANGE_PATH: &str = "/proc/sys/net/ipv4/ping_group_range";
/// Bit number of `CAP_NET_RAW` in the capability sets (`include/uapi/linux/capability.h`).
const CAP_NET_RAW_BIT: u32 = 13;

/// Neither an ICMP datagram socket nor a raw socket could be opened for one address family.
///
/// The [`Display`](std::fmt::Display) text says what each attempt returned, why (quoting
/// `net.ipv4.ping_group_range` and the process's gids, and whether `CAP_NET_RAW` is effective), and
/// what would fix it. [`IcmpPermissionError::reason`] is `permission-denied` when both attempts were
/// refused for permission (`EACCES`/`EPERM`), else the reason of the raw socket's errno (for example
/// `EAFNOSUPPORT` when IPv6 is disabled maps to `error`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct IcmpPermissionError {
    /// The address family whose socket failed.
    pub family: Family,
    /// errno of the datagram-socket attempt (`EACCES` when outside `ping_group_range`).
    pub datagram_errno: Option<i32>,
    /// errno of the raw-socket attempt (`EPERM` without `CAP_NET_RAW`).
    pub raw_errno: Option<i32>,
    reason: Reason,
    message: String,
}

impl IcmpPermissionError {
    /// Builds the error from the two failed `socket(2)` calls, reading the process's gids, its
    /// effective capabilities (`/proc/self/status`) and [`PING_GROUP_RANGE_PATH`] for the message.
    pub(crate) fn diagnose(family: Family, datagram: &io::Error, raw: &io::Error) -> Self {
        let range = std::fs::read_to_string(PING_GROUP_RANGE_PATH)
            .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
            .map_err(|e| e.to_string());
        let facts = ProcessFacts {
            gids: process_gids(),
            cap_net_raw: effective_cap_net_raw(),
            ping_group_range: range,
        };
        Self::from_facts(family, datagram, raw, &facts)
    }

    fn from_facts(
        family: Family,
        datagram: &io::Error,
        raw: &io::Error,
        facts: &ProcessFacts,
    ) -> Self {
        let fam = match family {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        };
        let (dgram_call, raw_call) = match family {
            Family::V4 => (
                "socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP)",
                "socket(AF_INET, SOCK_RAW, IPPROTO_ICMP)",
            ),
            Family::V6 => (
                "socket(AF_INET6, SOCK_DGRAM, IPPROTO_ICMPV6)",
                "socket(AF_INET6, SOCK_RAW, IPPROTO_ICMPV6)",
            ),
        };
        let gids = facts
            .gids
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let v6_note = if family == Family::V6 {
            ", which governs ICMPv6 ping sockets too"
        } else {
            ""
        };
        let range = match &facts.ping_group_range {
            Ok(r) => {
                format!("net.ipv4.ping_group_range is \"{r}\" ({PING_GROUP_RANGE_PATH}{v6_note})")
            }
            Err(e) => format!(
                "net.ipv4.ping_group_range could not be read from {PING_GROUP_RANGE_PATH}: {e}"
            ),
        };
        let dgram_why = match datagram.raw_os_error() {
            Some(libc::EACCES) => format!(
                "EACCES: the process's gids [{gids}] are outside the ping group range; {range}"
            ),
            _ => format!("{datagram}; {range}"),
        };
        let raw_why = match (raw.raw_os_error(), facts.cap_net_raw) {
            (Some(libc::EPERM), Some(false)) => "EPERM: the process has no effective CAP_NET_RAW".to_string(),
            (Some(libc::EPERM), Some(true)) => {
                "EPERM although CAP_NET_RAW is effective (a seccomp or LSM policy, or a network namespace owned by \
                 another user namespace)"
                    .to_string()
            }
            (Some(libc::EPERM), None) => "EPERM: no effective CAP_NET_RAW".to_string(),
            _ => raw.to_string(),
        };
        let permission =
            |e: &io::Error| matches!(e.raw_os_error(), Some(libc::EACCES) | Some(libc::EPERM));
        let reason = if permission(datagram) && permission(raw) {
            Reason::PermissionDenied
        } else {
            Reason::from_io_error(raw)
        };
        let first_gid = facts.gids.first().copied().unwrap_or(0);
        let message = format!(
            "cannot open an {fam} ICMP socket: datagram socket {dgram_call} failed with {dgram_why}; raw socket \
             {raw_call} failed with {raw_why}. Fix: widen net.ipv4.ping_group_range to include gid {first_gid} \
             (sysctl -w net.ipv4.ping_group_range=\"0 2147483647\", or the pod's securityContext.sysctls; that \
             sysctl is per network namespace, so with hostNetwork the node's value applies) or grant CAP_NET_RAW \
             (securityContext.capabilities.add: [NET_RAW])"
        );
        IcmpPermissionError {
            family,
            datagram_errno: datagram.raw_os_error(),
            raw_errno: raw.raw_os_error(),
            reason,
            message,
        }
    }

    /// The outcome reason this failure maps to (`permission-denied`, or `error` for other errnos).
    pub fn reason(&self) -> Reason {
        self.reason
    }
}

/// What the kernel checks, gathered once for a message.
struct ProcessFacts {
    /// Effective gid first, then supplementary gids.
    gids: Vec<u32>,
    /// Whether `CAP_NET_RAW` is in the effective set; `None` if `/proc/self/status` is unreadable.
    cap_net_raw: Option<bool>,
    /// The sysctl's text (whitespace collapsed), or why it could not be read.
    ping_group_range: Result<String, String>,
}

fn process_gids() -> Vec<u32> {
    let mut gids = vec![nix::unistd::getegid().as_raw()];
    if let Ok(groups) = nix::unistd::getgroups() {
        for g in groups {
            if !gids.contains(&g.as_raw()) {
                gids.push(g.as_raw());
            }
        }
    }
    gids
}

/// Parses `CapEff:` of `/proc/self/status` (a hex bit mask, `proc(5)`).
fn effective_cap_net_raw() -> Option<bool> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    cap_net_raw_from_status(&status)
}

fn cap_net_raw_from_status(status: &str) -> Option<bool> {
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))?
        .trim();
    let mask = u64::from_str_radix(hex, 16).ok()?;
    Some(mask & (1 << CAP_NET_RAW_BIT) != 0)
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    reason = "in a test a panic is the failure report"
)]
mod tests {
    use super::*;

    fn facts(cap: Option<bool>) -> ProcessFacts {
        ProcessFacts {
            gids: vec![65534, 100],
            cap_net_raw: cap,
            ping_group_range: Ok("1 0".into()),
        }
    }

    #[test]
    fn explains_eacces_and_eperm_with_the_fix() {
        let e = IcmpPermissionError::from_facts(
            Family::V4,
            &io::Error::from_raw_os_error(libc::EACCES),
            &io::Error::from_raw_os_error(libc::EPERM),
            &facts(Some(false)),
        );
        assert_eq!(e.reason(), Reason::PermissionDenied);
        let msg = e.to_string();
        for needle in [
            "EACCES",
            "gids [65534, 100]",
            "net.ipv4.ping_group_range is \"1 0\"",
            "/proc/sys/net/ipv4/ping_group_range",
            "EPERM: the process has no effective CAP_NET_RAW",
            "include gid 65534",
            "securityContext.sysctls",
            "NET_RAW",
        ] {
            assert!(msg.contains(needle), "{needle:?} missing from {msg}");
        }
    }

    #[test]
    fn other_errnos_are_not_permission_problems() {
        let e = IcmpPermissionError::from_facts(
            Family::V6,
            &io::Error::from_raw_os_error(libc::EAFNOSUPPORT),
            &io::Error::from_raw_os_error(libc::EAFNOSUPPORT),
            &facts(Some(true)),
        );
        assert_eq!(e.reason(), Reason::Error);
        assert!(e.to_string().contains("AF_INET6"), "{e}");
    }

    #[test]
    fn reads_cap_eff() {
        assert_eq!(
            cap_net_raw_from_status("Name:\tx\nCapEff:\t0000000000002000\n"),
            Some(true)
        );
        assert_eq!(
            cap_net_raw_from_status("CapEff:\t0000000000000000\n"),
            Some(false)
        );
        assert_eq!(cap_net_raw_from_status("CapEff:\tzz\n"), None);
        assert_eq!(cap_net_raw_from_status(""), None);
    }
}
