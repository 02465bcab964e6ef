//! A pure model of netfilter rulesets as `iptables-save` / `ip6tables-save` print them, for both
//! iptables backends (legacy x_tables and nf_tables), with a parser, a canonical renderer and a
//! seedable generator of random valid rulesets. No I/O, no async: callers collect the text.
//!
//! * [`model`]: [`Ruleset`] → [`Table`] → [`Chain`] → [`Rule`] (typed [`Match`]es + one [`Target`],
//!   original text, comment, line, counters).
//! * [`parse_save`] reads a dump; [`parse_restore_payload`] reads an `iptables-restore` payload and
//!   records undeclared chain references. Errors are [`ParseError`] `{ line, text, message }`.
//! * [`parse_ipset_save`] reads `ipset save` output into [`eval::IpSet`]s for the evaluator.
//! * [`render`] writes the canonical save text; parse → render → parse is the identity.
//! * `generate` (feature `gen`): random valid rulesets from a seed.
//! * [`nft`]: native nftables rulesets from `nft -j list ruleset` ([`nft::parse_json`]), traced
//!   alongside iptables rulesets by [`eval::trace_all`].
//!
//! Anything not modelled is kept as [`Match::Unknown`] / [`Target::Unknown`] with its arguments,
//! never dropped and never guessed: an evaluator must answer `undetermined` through it.
#![deny(missing_docs)]

pub mod addr;
pub mod checks;
pub mod eval;
#[cfg(feature = "gen")]
pub mod generate;
pub mod icmp;
pub mod ipset;
pub mod lex;
pub mod manage;
pub mod matches;
pub mod model;
pub mod nft;
mod parse;
pub mod proto;
pub mod render;
pub mod target;

pub use addr::{AddrRange, Cidr, IdRange, Interface, MacAddr, MarkMask, PortRange};
pub use icmp::IcmpType;
pub use ipset::parse_ipset_save;
pub use matches::{Match, Neg};
pub use model::{
    Backend, Chain, Counters, Family, Policy, Rule, Ruleset, SaveComment, Table, TableName,
};
pub use parse::{
    ChainCommand, ChainOp, ParseError, ParseOptions, ReferenceKind, RestorePayload,
    UndeclaredChain, parse_restore_payload, parse_save,
};
pub use proto::Protocol;
pub use render::render_ruleset;
pub use target::Target;
