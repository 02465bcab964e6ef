//! A switch for multi-node labs: a namespace holding a Linux bridge.

use crate::LabError;
use crate::netns::Netns;
use crate::veth::Veth;

/// A network namespace holding one Linux bridge, `br0` (up), that other namespaces plug into with
/// [`Bridge::attach`]: the lab's layer-2 segment for several "nodes". Deleted with its namespace.
#[derive(Debug)]
pub struct Bridge {
    ns: Netns,
}

impl Bridge {
    /// Creates the switch namespace (named from `prefix`, as [`Netns::new`]) and its bridge.
    /// Errors: an `ip` command failed.
    pub fn new(prefix: &str) -> Result<Bridge, LabError> {
        let ns = Netns::new(prefix)?;
        ns.ip(&["link", "add", "br0", "type", "bridge"])?;
        ns.ip(&["link", "set", "br0", "up"])?;
        Ok(Bridge { ns })
    }

    /// Plugs `node` into the bridge with a veth pair whose `node` end gets `addrs` (CIDR form;
    /// IPv6 with `nodad`, as [`Veth::connect_multi`]). Errors: an `ip` command failed.
    pub fn attach(&self, node: &Netns, addrs: &[&str]) -> Result<Veth, LabError> {
        let veth = Veth::connect_multi(node, addrs, &self.ns, &[])?;
        self.ns
            .ip(&["link", "set", veth.b_name(), "master", "br0"])?;
        Ok(veth)
    }

    /// The switch's namespace.
    pub fn netns(&self) -> &Netns {
        &self.ns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two nodes on one bridge reach each other.
    #[test]
    fn two_nodes_on_a_bridge_reach_each_other() {
        let sw = Bridge::new("labbr").unwrap();
        let (a, b) = (Netns::new("labbra").unwrap(), Netns::new("labbrb").unwrap());
        sw.attach(&a, &["198.51.100.61/24"]).unwrap();
        sw.attach(&b, &["198.51.100.62/24"]).unwrap();
        a.exec_ok(&["ping", "-c", "1", "-W", "5", "198.51.100.62"])
            .unwrap();
    }
}
