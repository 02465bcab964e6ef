//! The netfilter hooks and the order in which the x_tables tables sit on them.
//!
//! Priorities are from include/uapi/linux/netfilter_ipv4.h (`NF_IP_PRI_*`, the same values for
//! IPv6): raw −300, conntrack −200, mangle −150, nat destination −100, filter 0, security 50,
//! nat source 100. The nat table's PREROUTING and OUTPUT chains are destination NAT; its INPUT and
//! POSTROUTING chains are source NAT.

use std::fmt;

use serde::Serialize;

use crate::model::{Backend, TableName};

/// A netfilter hook (`NF_INET_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Hook {
    /// After the packet arrives, before routing.
    Prerouting,
    /// Routed to a local socket.
    Input,
    /// Routed on to another host.
    Forward,
    /// Sent by a local process.
    Output,
    /// Leaving through an interface.
    Postrouting,
}

impl Hook {
    /// The built-in chain name (`PREROUTING`, …).
    pub fn chain(self) -> &'static str {
        match self {
            Hook::Prerouting => "PREROUTING",
            Hook::Input => "INPUT",
            Hook::Forward => "FORWARD",
            Hook::Output => "OUTPUT",
            Hook::Postrouting => "POSTROUTING",
        }
    }

    /// The tables with a base chain on this hook, in priority order.
    pub fn tables(self) -> &'static [TableName] {
        use TableName::{Filter, Mangle, Nat, Raw, Security};
        match self {
            Hook::Prerouting => &[Raw, Mangle, Nat],
            Hook::Output => &[Raw, Mangle, Nat, Filter, Security],
            Hook::Input => &[Mangle, Filter, Security, Nat],
            Hook::Forward => &[Mangle, Filter, Security],
            Hook::Postrouting => &[Mangle, Nat],
        }
    }

    /// The priority of `table`'s base chain on this hook (`NF_IP_PRI_*`), `None` if it has none.
    pub fn priority(self, table: TableName) -> Option<i32> {
        if !self.tables().contains(&table) {
            return None;
        }
        Some(match table {
            TableName::Raw => -300,
            TableName::Mangle => -150,
            TableName::Nat if matches!(self, Hook::Prerouting | Hook::Output) => -100,
            TableName::Nat => 100,
            TableName::Filter => 0,
            TableName::Security => 50,
        })
    }

    /// The priority at which `backend` registers `table`'s base chain on this hook: the
    /// `NF_IP_PRI_*` value, except that iptables-nft registers its security chains at 150
    /// (iptables nft.c, `.prio = 150`; `nft list table ip security` shows `priority 150`), after
    /// the nat INPUT chain (100) rather than between filter and nat as the legacy table (50).
    pub fn backend_priority(self, table: TableName, backend: Option<Backend>) -> Option<i32> {
        match (table, backend) {
            (TableName::Security, Some(Backend::Nft)) => self.priority(table).map(|_| 150),
            _ => self.priority(table),
        }
    }

    /// Whether this hook's nat chain sets up destination NAT (PREROUTING, OUTPUT) rather than source NAT.
    pub fn is_dnat(self) -> bool {
        matches!(self, Hook::Prerouting | Hook::Output)
    }

    /// Whether conntrack (priority −200) has run before `table` on this hook when the packet is
    /// fresh (not a loopback re-entry): only the raw table runs before it.
    pub fn before_conntrack(table: TableName) -> bool {
        table == TableName::Raw
    }
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.chain())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_in_priority_order() {
        for hook in [
            Hook::Prerouting,
            Hook::Input,
            Hook::Forward,
            Hook::Output,
            Hook::Postrouting,
        ] {
            let prios: Vec<i32> = hook
                .tables()
                .iter()
                .filter_map(|t| hook.priority(*t))
                .collect();
            assert_eq!(prios.len(), hook.tables().len());
            assert!(prios.windows(2).all(|w| w[0] < w[1]), "{hook}: {prios:?}");
            for t in hook.tables() {
                assert!(t.is_builtin(hook.chain()), "{t} has no {hook}");
            }
        }
    }
}
