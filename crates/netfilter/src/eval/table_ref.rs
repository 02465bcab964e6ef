//! Which table a traced rule belongs to: one of the five x_tables tables of an iptables ruleset,
//! or a native nftables table named by its family and name.

use std::fmt;

use serde::{Serialize, Serializer};

use crate::model::{Family, TableName};
use crate::nft::NftFamily;

/// A table in a trace. Serialises as its name (`"filter"`, `"kube-proxy"`), so the JSON of
/// iptables rules is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TableId {
    /// An x_tables table of an iptables ruleset (legacy or iptables-nft).
    Xt(TableName),
    /// A native nftables table.
    Native {
        /// Its family (`ip`, `ip6`, `inet`).
        family: NftFamily,
        /// Its name.
        name: String,
    },
}

impl TableId {
    /// The name (`filter`, `kube-proxy`).
    pub fn name(&self) -> &str {
        match self {
            TableId::Xt(t) => t.as_str(),
            TableId::Native { name, .. } => name,
        }
    }

    /// The x_tables table, for an iptables rule.
    pub fn xt(&self) -> Option<TableName> {
        match self {
            TableId::Xt(t) => Some(*t),
            TableId::Native { .. } => None,
        }
    }
}

impl From<TableName> for TableId {
    fn from(t: TableName) -> TableId {
        TableId::Xt(t)
    }
}

impl PartialEq<TableName> for TableId {
    fn eq(&self, other: &TableName) -> bool {
        *self == TableId::Xt(*other)
    }
}

impl fmt::Display for TableId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for TableId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// The family of the table a traced rule belongs to: `ipv4` / `ipv6` for iptables rulesets and
/// native `ip` / `ip6` tables, `inet` for a native table that sees both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TableFamily {
    /// IPv4 only (`iptables`, nft `ip`).
    Ipv4,
    /// IPv6 only (`ip6tables`, nft `ip6`).
    Ipv6,
    /// Both (nft `inet`).
    Inet,
}

impl TableFamily {
    /// `ipv4`, `ipv6` or `inet`, as serialised.
    pub fn as_str(self) -> &'static str {
        match self {
            TableFamily::Ipv4 => "ipv4",
            TableFamily::Ipv6 => "ipv6",
            TableFamily::Inet => "inet",
        }
    }

    /// The family of a native table (`ip` → ipv4, `ip6` → ipv6, otherwise inet; only IP
    /// families are traced).
    pub fn of_nft(f: NftFamily) -> TableFamily {
        match f {
            NftFamily::Ip => TableFamily::Ipv4,
            NftFamily::Ip6 => TableFamily::Ipv6,
            _ => TableFamily::Inet,
        }
    }
}

impl From<Family> for TableFamily {
    fn from(f: Family) -> TableFamily {
        match f {
            Family::Ipv4 => TableFamily::Ipv4,
            Family::Ipv6 => TableFamily::Ipv6,
        }
    }
}

impl PartialEq<Family> for TableFamily {
    fn eq(&self, other: &Family) -> bool {
        *self == TableFamily::from(*other)
    }
}
