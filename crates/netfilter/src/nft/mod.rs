//! Native nftables rulesets as `nft -j list ruleset` prints them (libnftables-json(5), JSON schema
//! version 1, nftables 1.0.x).
//!
//! [`parse_json`] reads the JSON into an [`NftRuleset`] → [`NftTable`] → [`NftChain`] → [`NftRule`]
//! (a list of [`Stmt`]s). Constants are converted by their datatype when parsed; sets and maps
//! are hashed for lookup ([`value::SetData`]). Tables that `iptables-nft` created are not kept:
//! they are listed in [`NftRuleset::skipped`] and should be read from `iptables-nft-save`, which
//! prints them with full fidelity (`xt` expressions lose their options in JSON).
//!
//! The parser never panics: malformed input gives an [`NftParseError`] naming the JSON path
//! (`nftables[12].rule.expr[3]`); expressions and statements it does not know (from a newer nft)
//! are kept as [`Expr::Unknown`] / [`Stmt::Unknown`] with their JSON text, and the evaluator
//! answers undetermined through them.
//!
//! Each rule is rendered to nft's text syntax ([`NftRule::text`]), what users see in traces.
//!
//! ```
//! use netfilter::eval::{Flow, HostModel, Origin, Verdict, trace_all};
//! use netfilter::nft::parse_json;
//!
//! // What `nft -j list ruleset` prints (shortened).
//! let json = r#"{"nftables": [
//!   {"table": {"family": "inet", "name": "fw", "handle": 1}},
//!   {"chain": {"family": "inet", "table": "fw", "name": "in", "handle": 1,
//!              "type": "filter", "hook": "input", "prio": 0, "policy": "drop"}},
//!   {"rule": {"family": "inet", "table": "fw", "chain": "in", "handle": 2,
//!             "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "tcp",
//!                      "field": "dport"}}, "right": 22}}, {"accept": null}]}}
//! ]}"#;
//! let nft = parse_json(json)?;
//! assert_eq!(nft.tables[0].chain("in").unwrap().rules[0].text, "tcp dport 22 accept");
//! // iptables rulesets (from iptables-save) go in the first slice, native ones in the second.
//! let flow = Flow::tcp(Origin::Input, "203.0.113.5".parse()?, "192.0.2.10".parse()?, 80);
//! let traces = trace_all(&[], &[nft], &HostModel::default(), &flow);
//! assert_eq!(traces.verdict(), Verdict::Drop);
//! let by = traces.branches[0].decided_by.as_ref().unwrap();
//! assert_eq!((by.table.name(), by.chain.as_str(), by.text.as_str()), ("fw", "in", "policy drop"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Evaluation ([`crate::eval::trace_all`]) decides: payload `ip`/`ip6` `saddr daddr protocol
//! nexthdr length`, `tcp udp udplite sctp dccp th` `sport dport`, `tcp flags`, `icmp`/`icmpv6`
//! `type code`; `meta mark l4proto nfproto protocol iifname oifname iif oif skuid skgid length`;
//! `ct state`, `ct status` (only its `snat`/`dnat` bits, as a flag test), `ct mark`,
//! `ct original|reply saddr daddr proto-src proto-dst`; `fib daddr type` / `fib saddr type`;
//! `numgen random|inc mod N` (a branch per value, 1/N each); binary `& | ^ << >>` with
//! constants; ranges, prefixes, interface wildcards, anonymous and named sets and verdict maps
//! (concatenations and intervals included); `accept drop continue return jump goto`; `reject`
//! (every `icmp`/`icmpv6`/`icmpx` code and `tcp reset`); `dnat snat masquerade redirect` with
//! literal addresses and ports, in `type nat` chains, for NEW connections; `meta mark set`,
//! `ct mark set`; `notrack`; `counter` and `log` (no effect).
//!
//! It answers undetermined (with the rule) for: other payload fields and raw payloads, other
//! `meta`/`ct`/`fib` keys, `limit`/`quota`/`ct count` (rates and state), `jhash`/`symhash`,
//! NAT addresses or ports taken from a map, data maps (`… map { … }`), and the statements
//! `queue`, `xt`, set updates (`add @s`, `update @s`), `dup`, `fwd`, `tproxy`, `synproxy` and any
//! other unknown one. A rule whose undecidable part is followed only by `counter`/`log` is
//! skipped with a note. `arp`, `bridge` and `netdev` tables (and `ingress`/`egress` hooks) are
//! parsed but not evaluated: a drop there is not seen. Set contents are those listed when the
//! JSON was taken (a `dynamic` set may have changed since).

mod parse;
mod render;
pub mod value;

use std::fmt;

use rustc_hash::FxHashMap;
use serde::Serialize;

use crate::model::Family;
use crate::target::RejectWith;

pub use parse::parse_json;
pub use render::{render_expr, render_rule, render_stmt, render_verdict};

/// The datatypes of an expression's value, one per concatenated component.
pub fn types_of_expr(e: &Expr) -> Vec<Ty> {
    parse::types_of(e)
}

/// A constant expression converted to a pattern of type `ty`; `None` if `e` is not a constant.
pub fn pat_of_expr(e: &Expr, ty: Ty) -> Option<Pat> {
    match e {
        Expr::Const(v) => Some(value::pat_of(v, ty)),
        _ => None,
    }
}
pub use value::{MapData, Pat, SetData, Ty, Val};

/// An error in `nft -j` output: where (a JSON path such as `nftables[12].rule.expr[3]`, empty for
/// a syntax error) and what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", if path.is_empty() { String::new() } else { format!("{path}: ") })]
pub struct NftParseError {
    /// The JSON path of the offending value.
    pub path: String,
    /// What is wrong, and what was expected.
    pub message: String,
}

/// An nftables address family (nft(8) "ADDRESS FAMILIES").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NftFamily {
    /// `ip`: IPv4.
    Ip,
    /// `ip6`: IPv6.
    Ip6,
    /// `inet`: IPv4 and IPv6 (the same chains see both).
    Inet,
    /// `arp`: kept, not evaluated.
    Arp,
    /// `bridge`: kept, not evaluated.
    Bridge,
    /// `netdev`: kept, not evaluated.
    Netdev,
}

impl NftFamily {
    /// The name nft prints (`ip`, `ip6`, `inet`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            NftFamily::Ip => "ip",
            NftFamily::Ip6 => "ip6",
            NftFamily::Inet => "inet",
            NftFamily::Arp => "arp",
            NftFamily::Bridge => "bridge",
            NftFamily::Netdev => "netdev",
        }
    }

    /// Parses a family name.
    pub fn parse(s: &str) -> Option<NftFamily> {
        Some(match s {
            "ip" => NftFamily::Ip,
            "ip6" => NftFamily::Ip6,
            "inet" => NftFamily::Inet,
            "arp" => NftFamily::Arp,
            "bridge" => NftFamily::Bridge,
            "netdev" => NftFamily::Netdev,
            _ => return None,
        })
    }

    /// Whether packets of `family` traverse tables of this family's IP hooks.
    pub fn sees(self, family: Family) -> bool {
        matches!(
            (self, family),
            (NftFamily::Inet, _) | (NftFamily::Ip, Family::Ipv4) | (NftFamily::Ip6, Family::Ipv6)
        )
    }
}

impl fmt::Display for NftFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything `nft -j list ruleset` listed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NftRuleset {
    /// `metainfo.version` (the nft that printed it).
    pub version: Option<String>,
    /// The native tables, in listing order.
    pub tables: Vec<NftTable>,
    /// Tables not kept: those iptables-nft manages (read them from `iptables-nft-save`).
    pub skipped: Vec<SkippedTable>,
    /// Objects not modelled (flowtables, named counters, …), one note each.
    pub notes: Vec<String>,
}

impl NftRuleset {
    /// The table `family name`.
    pub fn table(&self, family: NftFamily, name: &str) -> Option<&NftTable> {
        self.tables
            .iter()
            .find(|t| t.family == family && t.name == name)
    }

    /// The rule with 1-based `number` in `family name chain` (what a trace's step refers to).
    pub fn rule(
        &self,
        family: NftFamily,
        table: &str,
        chain: &str,
        number: usize,
    ) -> Option<&NftRule> {
        self.table(family, table)?
            .chain(chain)?
            .rules
            .get(number.checked_sub(1)?)
    }
}

impl NftRuleset {
    /// The native rule a trace's step or [`crate::eval::RuleRef`] names (`table` with its
    /// family, `chain`, 1-based `number`); `None` for an iptables table or a policy.
    pub fn rule_at(
        &self,
        table: &crate::eval::TableId,
        chain: &str,
        number: Option<usize>,
    ) -> Option<&NftRule> {
        match table {
            crate::eval::TableId::Native { family, name } => {
                self.rule(*family, name, chain, number?)
            }
            crate::eval::TableId::Xt(_) => None,
        }
    }
}

/// A table left out, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SkippedTable {
    /// Its family.
    pub family: NftFamily,
    /// Its name.
    pub name: String,
    /// Why it was left out.
    pub reason: String,
}

/// One table: its chains and its named sets and maps.
#[derive(Debug, Clone, PartialEq)]
pub struct NftTable {
    /// Its family.
    pub family: NftFamily,
    /// Its name (`kube-proxy`).
    pub name: String,
    /// The kernel's handle.
    pub handle: Option<u64>,
    /// Its comment.
    pub comment: Option<String>,
    /// The chains, in listing order.
    pub chains: Vec<NftChain>,
    /// Named sets and maps by name.
    pub sets: FxHashMap<String, NftSet>,
    chain_index: FxHashMap<String, usize>,
    /// Indexes of the base chains in `chains`, so a hook does not scan thousands of chains.
    base_chains: Vec<usize>,
}

impl NftTable {
    /// The chain called `name`.
    pub fn chain(&self, name: &str) -> Option<&NftChain> {
        self.chains.get(*self.chain_index.get(name)?)
    }

    /// The base chains, in listing order.
    pub fn base_chains(&self) -> impl Iterator<Item = &NftChain> {
        self.base_chains.iter().filter_map(|&i| self.chains.get(i))
    }

    /// An empty table.
    pub fn new(family: NftFamily, name: &str) -> NftTable {
        NftTable {
            family,
            name: name.to_string(),
            handle: None,
            comment: None,
            chains: Vec::new(),
            sets: FxHashMap::default(),
            chain_index: FxHashMap::default(),
            base_chains: Vec::new(),
        }
    }

    /// Its family (the same as [`NftTable::family`]).
    pub fn fam(&self) -> NftFamily {
        self.family
    }

    pub(crate) fn add_chain(&mut self, chain: NftChain) -> Option<usize> {
        if self.chain_index.contains_key(&chain.name) {
            return None;
        }
        let i = self.chains.len();
        self.chain_index.insert(chain.name.clone(), i);
        if chain.base.is_some() {
            self.base_chains.push(i);
        }
        self.chains.push(chain);
        Some(i)
    }

    pub(crate) fn chain_mut(&mut self, name: &str) -> Option<&mut NftChain> {
        let i = *self.chain_index.get(name)?;
        self.chains.get_mut(i)
    }
}

/// A named set or map.
#[derive(Debug, Clone, PartialEq)]
pub struct NftSet {
    /// Its name (referenced as `@name`).
    pub name: String,
    /// The declared key type names (`["ipv4_addr", "inet_proto", "inet_service"]`).
    pub type_names: Vec<String>,
    /// For a map, the data type (`verdict`, `ipv4_addr`, …).
    pub map: Option<String>,
    /// Flags (`interval`, `constant`, `timeout`, `dynamic`).
    pub flags: Vec<String>,
    /// Its comment.
    pub comment: Option<String>,
    /// The elements, arranged for lookup.
    pub data: SetData,
}

/// A base chain's type (nft(8) "CHAINS": filter, nat, route).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChainType {
    /// `filter`.
    Filter,
    /// `nat`: consulted only for a connection's first packet, through the NAT core.
    Nat,
    /// `route`: like filter on output; re-routes when marks change.
    Route,
    /// Another type name.
    Other(String),
}

/// The hook a base chain sits on (IP families; `ingress`/`egress` and others kept by name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NftHook {
    /// One of the five IP hooks.
    Ip(crate::eval::Hook),
    /// `ingress`, `egress`, or another family's hook: not evaluated.
    Other(String),
}

/// A base chain's attachment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BaseChain {
    /// Its type.
    pub kind: ChainType,
    /// Its hook.
    pub hook: NftHook,
    /// Its numeric priority (`prio`; lower runs first; `filter` = 0, `dstnat` = −100, …).
    pub priority: i32,
    /// Its policy (`accept` when not given); `None` for an unknown policy word.
    pub policy: Option<crate::model::Policy>,
    /// The device list of a netdev chain.
    pub devices: Vec<String>,
}

/// One chain.
#[derive(Debug, Clone, PartialEq)]
pub struct NftChain {
    /// Its name.
    pub name: String,
    /// The kernel's handle.
    pub handle: Option<u64>,
    /// The hook attachment of a base chain; `None` for a regular chain.
    pub base: Option<BaseChain>,
    /// Its comment.
    pub comment: Option<String>,
    /// The rules, in order; rule number `n` (1-based) is `rules[n-1]`.
    pub rules: Vec<NftRule>,
}

/// One rule: statements run in order until one does not match or ends the rule.
#[derive(Debug, Clone, PartialEq)]
pub struct NftRule {
    /// The kernel's handle (`nft -a`).
    pub handle: Option<u64>,
    /// Its comment.
    pub comment: Option<String>,
    /// The statements.
    pub stmts: Vec<Stmt>,
    /// nft's text for it (`ip daddr 198.51.100.1 tcp dport 80 counter packets 0 bytes 0 accept`).
    pub text: String,
}

/// A verdict (nft(8) "VERDICT STATEMENT").
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum NftVerdict {
    /// Ends the current base chain; later base chains still see the packet.
    Accept,
    /// Ends everything.
    Drop,
    /// Goes on with the next rule.
    Continue,
    /// Back to the calling chain (from a base chain: its policy).
    Return,
    /// Calls a chain; a `return` there comes back.
    Jump(String),
    /// Continues in a chain; a `return` there goes back to the last jump.
    Goto(String),
}

/// An expression producing a value from the packet (or a constant, on the right of a match).
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A header field (`ip daddr`, `tcp dport`, `th dport`).
    Payload {
        /// The header (`ip`, `ip6`, `tcp`, `udp`, `th`, `icmp`, …).
        protocol: String,
        /// The field.
        field: String,
    },
    /// `meta KEY` (`mark`, `l4proto`, `iifname`, …).
    Meta(String),
    /// `ct [DIR] KEY` (`state`, `status`, `mark`, `original ip daddr`, …).
    Ct {
        /// The key.
        key: String,
        /// `original` / `reply`, if given.
        dir: Option<String>,
        /// The address family of an address key (`ip`, `ip6`).
        family: Option<String>,
    },
    /// `fib FLAGS RESULT` (`fib daddr type`).
    Fib {
        /// `type`, `oif`, `oifname`.
        result: String,
        /// `daddr`, `saddr`, `iif`, `oif`, `mark`.
        flags: Vec<String>,
    },
    /// `numgen MODE mod N [offset O]`.
    Numgen {
        /// `random` or `inc`.
        mode: String,
        /// N.
        modulus: u32,
        /// O.
        offset: u32,
    },
    /// A binary operation (`&`, `|`, `^`, `<<`, `>>`) of a value and a constant.
    Binop {
        /// The operator.
        op: String,
        /// The value.
        left: Box<Expr>,
        /// The constant.
        right: Box<Expr>,
    },
    /// `a . b . c`.
    Concat(Vec<Expr>),
    /// A constant as written (number, string, flag list, `prefix`, `range`).
    Const(serde_json::Value),
    /// An anonymous set or map (`{ 22, 80 }`).
    Set(Box<SetData>),
    /// A named set or map (`@name`).
    SetRef(String),
    /// An expression not modelled, with its JSON text.
    Unknown(String),
}

/// A relational operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `==` (also set membership).
    Eq,
    /// `!=`.
    Ne,
    /// `<`.
    Lt,
    /// `>`.
    Gt,
    /// `<=`.
    Le,
    /// `>=`.
    Ge,
    /// `in`: bits of a flag value, or set membership.
    In,
}

impl Op {
    /// The operator as nft writes it (`in` is implicit: empty).
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Eq | Op::In => "",
            Op::Ne => "!=",
            Op::Lt => "<",
            Op::Gt => ">",
            Op::Le => "<=",
            Op::Ge => ">=",
        }
    }
}

/// A match: `left OP right`, with the right side converted by the left side's datatypes.
#[derive(Debug, Clone, PartialEq)]
pub struct NftMatch {
    /// The operator.
    pub op: Op,
    /// The packet-side expression.
    pub left: Expr,
    /// The constant side, as written.
    pub right: Expr,
    /// The left side's datatypes (one per concatenated component).
    pub types: Vec<Ty>,
    /// The right side converted: one pattern per component, unless it is a set.
    pub pats: Vec<Pat>,
}

/// `dnat`/`snat`/`masquerade`/`redirect`.
#[derive(Debug, Clone, PartialEq)]
pub struct NftNat {
    /// Which.
    pub kind: crate::eval::NatKind,
    /// The target address or range (`None`: kept / the interface's); `Err` with the JSON text
    /// when it is an expression (a map) that is not evaluated.
    pub addr: Result<Option<(std::net::IpAddr, std::net::IpAddr)>, String>,
    /// The target port or range; `Err` with the JSON text for an expression.
    pub port: Result<Option<(u16, u16)>, String>,
    /// `random`, `fully-random`, `persistent`.
    pub flags: Vec<String>,
    /// The `family` given (`ip`, `ip6`), for an inet table.
    pub family: Option<String>,
}

/// One statement of a rule.
#[derive(Debug, Clone, PartialEq)]
pub enum Stmt {
    /// A match: the rule goes on only if it holds.
    Match(Box<NftMatch>),
    /// A verdict.
    Verdict(NftVerdict),
    /// `KEY vmap { … }` / `KEY vmap @name`: the verdict of the matching element, else no match.
    Vmap {
        /// The key expression.
        key: Expr,
        /// Its datatypes.
        types: Vec<Ty>,
        /// The map (anonymous [`Expr::Set`] or [`Expr::SetRef`]).
        map: Expr,
    },
    /// `counter` (anonymous, with its counts, or a named counter).
    Counter(String),
    /// `log …` (its arguments as text).
    Log(String),
    /// `limit …`, `quota …`, `ct count …`: whether it matches depends on rates or state.
    Stateful(String),
    /// `meta mark set …`, `ct mark set …` and other `mangle` statements.
    Mangle {
        /// What is set.
        key: Expr,
        /// The value.
        value: Expr,
    },
    /// A NAT statement.
    Nat(Box<NftNat>),
    /// `reject [with TYPE CODE]`; see [`reject_with`] for what is sent.
    Reject {
        /// `icmp`, `icmpv6`, `icmpx`, `tcp reset`; `None`: the family's default.
        kind: Option<String>,
        /// The ICMP code name (`port-unreachable`, `admin-prohibited`, …).
        code: Option<String>,
    },
    /// `notrack`.
    Notrack,
    /// A statement not modelled (`xt`, `queue`, `set` updates, …): its key and JSON text.
    Unknown {
        /// The statement's key (`xt`, `queue`, …).
        name: String,
        /// Its JSON text.
        json: String,
    },
}

/// What `reject` with `kind` and `code` sends to a packet of `family` (nft(8) "REJECT
/// STATEMENT"; `icmpx` codes are mapped per family by net/netfilter/nft_reject.c); `None` for a
/// type or code this crate does not know.
pub fn reject_with(kind: Option<&str>, code: Option<&str>, family: Family) -> Option<RejectWith> {
    use RejectWith as R;
    let v4 = |c: &str| {
        Some(match c {
            "net-unreachable" => R::IcmpNetUnreachable,
            "host-unreachable" => R::IcmpHostUnreachable,
            "prot-unreachable" => R::IcmpProtoUnreachable,
            "port-unreachable" => R::IcmpPortUnreachable,
            "net-prohibited" => R::IcmpNetProhibited,
            "host-prohibited" => R::IcmpHostProhibited,
            "admin-prohibited" => R::IcmpAdminProhibited,
            _ => return None,
        })
    };
    let v6 = |c: &str| {
        Some(match c {
            "no-route" => R::Icmp6NoRoute,
            "admin-prohibited" => R::Icmp6AdmProhibited,
            "addr-unreachable" => R::Icmp6AddrUnreachable,
            "port-unreachable" => R::Icmp6PortUnreachable,
            "policy-fail" => R::Icmp6PolicyFail,
            "reject-route" => R::Icmp6RejectRoute,
            _ => return None,
        })
    };
    let code = code.unwrap_or("port-unreachable");
    match (kind, family) {
        (Some("tcp reset"), _) => Some(R::TcpReset),
        (Some("icmp"), Family::Ipv4) => v4(code),
        (Some("icmpv6"), Family::Ipv6) => v6(code),
        (None | Some("icmpx"), Family::Ipv4) => match code {
            "no-route" => Some(R::IcmpNetUnreachable),
            c => v4(c),
        },
        (None | Some("icmpx"), Family::Ipv6) => match code {
            "host-unreachable" => Some(R::Icmp6AddrUnreachable),
            c => v6(c),
        },
        _ => None,
    }
}

impl Stmt {
    /// Whether it neither decides nor changes anything a later match reads (counters, logs).
    pub fn is_passive(&self) -> bool {
        matches!(self, Stmt::Counter(_) | Stmt::Log(_))
    }
}
