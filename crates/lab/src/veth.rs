//! veth pairs between two namespaces.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::LabError;
use crate::netns::{Netns, ip};

static NEXT_VETH: AtomicU32 = AtomicU32::new(0);
/// How long [`Veth::connect`] waits for both ends to come up.
const UP_TIMEOUT: Duration = Duration::from_secs(5);

/// A veth pair with one end in each of two namespaces, both up. The interfaces are created directly
/// inside the namespaces (never in the host's) and disappear with them, so `Veth` needs no cleanup.
#[derive(Debug, Clone)]
pub struct Veth {
    a_ns: String,
    a_if: String,
    b_ns: String,
    b_if: String,
}

impl Veth {
    /// Joins `a` and `b` with a veth pair and gives each end one address in CIDR form, e.g.
    /// `Veth::connect(&a, "198.51.100.1/24", &b, "198.51.100.2/24")`. IPv6 addresses (`fd00::1/64`)
    /// are added with `nodad` so they are usable at once. Errors: an `ip` command failed.
    pub fn connect(a: &Netns, a_addr: &str, b: &Netns, b_addr: &str) -> Result<Veth, LabError> {
        Self::connect_multi(a, &[a_addr], b, &[b_addr])
    }

    /// Like [`Veth::connect`] with any number of addresses per end, e.g. one IPv4 and one IPv6:
    /// `Veth::connect_multi(&a, &["198.51.100.1/24", "fd00::1/64"], &b, &["198.51.100.2/24", "fd00::2/64"])`.
    pub fn connect_multi(
        a: &Netns,
        a_addrs: &[&str],
        b: &Netns,
        b_addrs: &[&str],
    ) -> Result<Veth, LabError> {
        let n = NEXT_VETH.fetch_add(1, Ordering::Relaxed);
        // Interface names are per namespace and at most 15 bytes; the namespaces are unique to this
        // process, so a per-process counter keeps the names unique within them.
        let (a_if, b_if) = (format!("lab{n}a"), format!("lab{n}b"));
        ip(&[
            "link",
            "add",
            &a_if,
            "netns",
            a.name(),
            "type",
            "veth",
            "peer",
            "name",
            &b_if,
            "netns",
            b.name(),
        ])?;
        let veth = Veth {
            a_ns: a.name().to_string(),
            a_if,
            b_ns: b.name().to_string(),
            b_if,
        };
        for addr in a_addrs {
            veth.add_address(true, addr)?;
        }
        for addr in b_addrs {
            veth.add_address(false, addr)?;
        }
        a.ip(&["link", "set", &veth.a_if, "up"])?;
        b.ip(&["link", "set", &veth.b_if, "up"])?;
        veth.wait_up(a, &veth.a_if)?;
        veth.wait_up(b, &veth.b_if)?;
        Ok(veth)
    }

    /// Waits until `dev` is operationally up. The kernel turns the carrier on asynchronously
    /// (linkwatch, up to a second later) and until then the device's queue discards packets, which
    /// would cost the first neighbour solicitation and a one-second retransmit.
    fn wait_up(&self, ns: &Netns, dev: &str) -> Result<(), LabError> {
        let deadline = Instant::now() + UP_TIMEOUT;
        loop {
            let state = ns.ip(&["-o", "link", "show", "dev", dev])?;
            if state.contains("state UP") {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(LabError::NotReady(format!(
                    "{dev} in {} not up after {UP_TIMEOUT:?}: {state}",
                    ns.name()
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Adds `cidr` to the `a` end (`on_a`) or the `b` end; IPv6 with `nodad`.
    pub fn add_address(&self, on_a: bool, cidr: &str) -> Result<(), LabError> {
        let (ns, dev) = if on_a {
            (&self.a_ns, &self.a_if)
        } else {
            (&self.b_ns, &self.b_if)
        };
        let mut args = vec!["-n", ns.as_str(), "addr", "add", cidr, "dev", dev.as_str()];
        if cidr.contains(':') {
            args.push("nodad");
        }
        ip(&args).map(drop)
    }

    /// Interface name of the end in namespace `a`.
    pub fn a_name(&self) -> &str {
        &self.a_if
    }

    /// Interface name of the end in namespace `b`.
    pub fn b_name(&self) -> &str {
        &self.b_if
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_veth_pair_carries_ipv4_and_ipv6() {
        let a = Netns::new("labv").unwrap();
        let b = Netns::new("labv").unwrap();
        let v = Veth::connect_multi(
            &a,
            &["198.51.100.1/24", "fd00::1/64"],
            &b,
            &["198.51.100.2/24", "fd00::2/64"],
        )
        .unwrap();
        let addrs = b.ip(&["-o", "addr", "show", "dev", v.b_name()]).unwrap();
        assert!(
            addrs.contains("198.51.100.2/24") && addrs.contains("fd00::2/64"),
            "{addrs}"
        );
        let fd00 = addrs
            .lines()
            .find(|l| l.contains("fd00::2/64"))
            .unwrap_or_default();
        assert!(
            fd00.contains("nodad") && !fd00.contains("tentative"),
            "usable at once: {fd00}"
        );
        // iputils ping over the link proves both families pass end to end.
        a.exec_ok(&["ping", "-c", "1", "-W", "2", "198.51.100.2"])
            .unwrap();
        a.exec_ok(&["ping", "-6", "-c", "1", "-W", "2", "fd00::2"])
            .unwrap();
        let none = a
            .exec(&["ping", "-c", "1", "-W", "1", "203.0.113.1"])
            .unwrap();
        assert!(!none.status.success(), "no route out of the lab");
    }
}
