//! Live collection — the kernel-facing part of `trace --live` (and of `snapshot` / `diagnose`
//! later): enter a network namespace ([`netns`], `setns(2)` on a dedicated thread), run the
//! tools that print its state ([`command`]), keep their raw output in one serialisable
//! [`NetnsSnapshot`], and turn it into the `netfilter` crate's model (pure, in this file).
//!
//! What is collected, inside the target namespace:
//!
//! | field | command | used by `trace` |
//! |---|---|---|
//! | [`NetnsSnapshot::iptables`] | `iptables-legacy-save`, `iptables-nft-save`, `ip6tables-legacy-save`, `ip6tables-nft-save` | yes |
//! | [`NetnsSnapshot::nft_ruleset`] | `nft -j list ruleset` (raw JSON text in `stdout`) | yes (native tables) |
//! | [`NetnsSnapshot::ipset`] | `ipset save` | yes (set contents) |
//! | [`NetnsSnapshot::addresses`] / [`NetnsSnapshot::addrs`] | `ip -j addr show` | yes (local addresses) |
//! | [`NetnsSnapshot::routes`] | `ip -j route get TO [from FROM]` per question | yes (source address, output device) |
//!
//! A tool that is not installed is recorded as [`CaptureStatus::Missing`], not an error; only a
//! namespace that cannot be entered is ([`NetnsError`]).
//!
//! For `snapshot` / `diagnose`, [`snapshot`] adds sysctls, `/proc/thread-self/net/*` (legacy
//! table names, listening sockets), the local routing table and the prober's credentials
//! ([`procfs`] parses them), and [`locate`] finds the namespace that owns a destination address.

pub mod command;
pub mod ip;
pub mod locate;
pub mod netns;
pub mod procfs;
pub mod snapshot;

use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use netfilter::eval::{HostModel, IpSet};
use netfilter::nft::{NftParseError, NftRuleset};
use netfilter::{Backend, Family, ParseError, ParseOptions, Ruleset, parse_ipset_save, parse_save};
use serde::{Deserialize, Serialize};

pub use command::{Capture, CaptureStatus, TOOL_TIMEOUT, capture};
pub use ip::{Addr, Route};
pub use netns::{NetnsError, NetnsTarget, run_in};

/// One of the four `*-save` tools: which backend and family its output is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IptablesTool {
    /// `iptables-legacy-save`: IPv4, x_tables.
    IptablesLegacySave,
    /// `iptables-nft-save`: IPv4, nf_tables.
    IptablesNftSave,
    /// `ip6tables-legacy-save`: IPv6, x_tables.
    Ip6tablesLegacySave,
    /// `ip6tables-nft-save`: IPv6, nf_tables.
    Ip6tablesNftSave,
}

impl IptablesTool {
    /// All four, IPv4 first.
    pub const ALL: [IptablesTool; 4] = [
        IptablesTool::IptablesLegacySave,
        IptablesTool::IptablesNftSave,
        IptablesTool::Ip6tablesLegacySave,
        IptablesTool::Ip6tablesNftSave,
    ];

    /// The program name.
    pub fn program(self) -> &'static str {
        match self {
            IptablesTool::IptablesLegacySave => "iptables-legacy-save",
            IptablesTool::IptablesNftSave => "iptables-nft-save",
            IptablesTool::Ip6tablesLegacySave => "ip6tables-legacy-save",
            IptablesTool::Ip6tablesNftSave => "ip6tables-nft-save",
        }
    }

    /// The backend whose tables it prints.
    pub fn backend(self) -> Backend {
        match self {
            IptablesTool::IptablesLegacySave | IptablesTool::Ip6tablesLegacySave => Backend::Legacy,
            IptablesTool::IptablesNftSave | IptablesTool::Ip6tablesNftSave => Backend::Nft,
        }
    }

    /// The family whose tables it prints.
    pub fn family(self) -> Family {
        match self {
            IptablesTool::IptablesLegacySave | IptablesTool::IptablesNftSave => Family::Ipv4,
            IptablesTool::Ip6tablesLegacySave | IptablesTool::Ip6tablesNftSave => Family::Ipv6,
        }
    }
}

/// The output of one `*-save` tool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IptablesDump {
    /// Which tool.
    pub tool: IptablesTool,
    /// What it printed (empty `stdout` when the backend has no tables in this namespace).
    pub capture: Capture,
}

/// A route question: where would a packet from this host to `to` go?
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteQuery {
    /// Destination.
    pub to: IpAddr,
    /// Source address the socket is bound to, if any (`from` makes the kernel check it is local).
    pub from: Option<IpAddr>,
}

/// The kernel's answer to one [`RouteQuery`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteLookup {
    /// The question.
    pub query: RouteQuery,
    /// `ip -j route get …` as run.
    pub capture: Capture,
    /// The route, when the lookup succeeded and its answer was readable.
    pub route: Option<Route>,
}

/// Everything collected from one network namespace, raw output kept next to what was read from
/// it, so that the snapshot can be stored, shown and re-evaluated later (`netprobe snapshot`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetnsSnapshot {
    /// Which namespace.
    pub netns: NetnsTarget,
    /// When collection started, Unix time in milliseconds.
    pub collected_at_unix_ms: u64,
    /// The four `*-save` tools, in [`IptablesTool::ALL`] order.
    pub iptables: Vec<IptablesDump>,
    /// `nft -j list ruleset`: the whole native nftables ruleset as JSON text in `stdout`
    /// (schema: libnftables-json(5)); [`NetnsSnapshot::nft`] parses it.
    pub nft_ruleset: Capture,
    /// `ipset save`.
    pub ipset: Capture,
    /// `ip -j addr show`.
    pub addresses: Capture,
    /// The addresses read from [`NetnsSnapshot::addresses`] (empty if it failed).
    pub addrs: Vec<Addr>,
    /// One lookup per question asked.
    pub routes: Vec<RouteLookup>,
    /// `ip -j route show` and `ip -6 -j route show`: the main routing table of each family.
    pub route_tables: Vec<Capture>,
    /// The routes read from [`NetnsSnapshot::route_tables`], which pick the output interface
    /// after a DNAT (empty where a table could not be read).
    pub table_routes: Vec<ip::TableRoute>,
}

/// A collected text that does not parse: which tool printed it and where it is wrong.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{tool} output, {error}")]
pub struct SnapshotParseError {
    /// The program whose output this is.
    pub tool: String,
    /// The parser's error (line and text).
    pub error: ParseError,
}

/// Collects the snapshot of `target`, asking the kernel each route question. Errors only when the
/// namespace cannot be entered; a missing or failing tool is recorded in its [`Capture`].
pub fn collect(
    target: &NetnsTarget,
    questions: &[RouteQuery],
) -> Result<NetnsSnapshot, NetnsError> {
    let collected_at_unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    run_in(target, || {
        let iptables = IptablesTool::ALL
            .iter()
            .map(|&tool| IptablesDump {
                tool,
                capture: capture(&[tool.program()], TOOL_TIMEOUT),
            })
            .collect();
        let nft_ruleset = capture(&["nft", "-j", "list", "ruleset"], TOOL_TIMEOUT);
        let ipset = capture(&["ipset", "save"], TOOL_TIMEOUT);
        let addresses = capture(&["ip", "-j", "addr", "show"], TOOL_TIMEOUT);
        let addrs = addresses
            .ok_stdout()
            .and_then(|t| ip::parse_addrs(t).ok())
            .unwrap_or_default();
        let routes = questions.iter().map(|q| route_get(*q)).collect();
        let route_tables = vec![
            capture(&["ip", "-j", "route", "show"], TOOL_TIMEOUT),
            capture(&["ip", "-6", "-j", "route", "show"], TOOL_TIMEOUT),
        ];
        let families = [Family::Ipv4, Family::Ipv6];
        let table_routes = route_tables
            .iter()
            .zip(families)
            .filter_map(|(c, f)| c.ok_stdout().and_then(|t| ip::parse_route_table(t, f).ok()))
            .flatten()
            .collect();
        NetnsSnapshot {
            netns: target.clone(),
            collected_at_unix_ms,
            iptables,
            nft_ruleset,
            ipset,
            addresses,
            addrs,
            routes,
            route_tables,
            table_routes,
        }
    })
}

/// Asks the kernel of the calling thread's network namespace one [`RouteQuery`]
/// (`ip -j route get TO [from FROM]`). Never fails: a missing `ip` or an unreachable destination
/// is in the [`Capture`], and then `route` is `None`.
pub fn route_get(query: RouteQuery) -> RouteLookup {
    let to = query.to.to_string();
    let from = query.from.map(|f| f.to_string());
    let mut argv = vec!["ip", "-j", "route", "get", to.as_str()];
    if let Some(f) = &from {
        argv.extend(["from", f.as_str()]);
    }
    let capture = capture(&argv, TOOL_TIMEOUT);
    let route = capture.ok_stdout().and_then(|t| ip::parse_route(t).ok());
    RouteLookup {
        query,
        capture,
        route,
    }
}

impl NetnsSnapshot {
    /// Parses every `*-save` output that succeeded and printed at least one table, with the
    /// backend and family of the tool that printed it.
    pub fn rulesets(&self) -> Result<Vec<Ruleset>, SnapshotParseError> {
        let mut out = Vec::new();
        for d in &self.iptables {
            let Some(text) = d.capture.ok_stdout() else {
                continue;
            };
            let opts = ParseOptions {
                family: Some(d.tool.family()),
                backend: Some(d.tool.backend()),
            };
            let rs = parse_save(text, &opts).map_err(|error| SnapshotParseError {
                tool: d.tool.program().to_string(),
                error,
            })?;
            if !rs.tables.is_empty() {
                out.push(rs);
            }
        }
        Ok(out)
    }

    /// The ipset contents, empty when `ipset save` did not succeed.
    pub fn ipsets(&self) -> Result<std::collections::BTreeMap<String, IpSet>, SnapshotParseError> {
        self.ipset.ok_stdout().map_or(Ok(Default::default()), |t| {
            parse_ipset_save(t).map_err(|error| SnapshotParseError {
                tool: "ipset save".to_string(),
                error,
            })
        })
    }

    /// The evaluator's host: this namespace's addresses, main-table routes and ipsets.
    pub fn host_model(&self) -> Result<HostModel, SnapshotParseError> {
        let host = self.addrs.iter().fold(HostModel::default(), |h, a| {
            h.with_addr(&a.iface, a.addr, a.prefix)
        });
        let host =
            self.table_routes
                .iter()
                .fold(host, |h, r| match netfilter::Cidr::parse(&r.dst) {
                    Ok(dst) => h.with_route(dst, &r.dev),
                    Err(_) => h,
                });
        Ok(HostModel {
            ipsets: self.ipsets()?,
            ..host
        })
    }

    /// The native nftables ruleset as `nft -j list ruleset` printed it (libnftables-json(5)),
    /// when `nft` ran successfully: the input of the nft JSON parser.
    pub fn nft_json(&self) -> Option<&str> {
        self.nft_ruleset.ok_stdout()
    }

    /// The route found for `query`, if it was asked and answered.
    pub fn route(&self, query: RouteQuery) -> Option<&RouteLookup> {
        self.routes.iter().find(|r| r.query == query)
    }

    /// The native nftables ruleset parsed from [`NetnsSnapshot::nft_ruleset`] (tables that
    /// iptables-nft made are skipped there and read from `iptables-nft-save`); `None` when `nft`
    /// did not run successfully. Errors: output that is not a ruleset nft's JSON schema describes
    /// (with the JSON path).
    pub fn nft(&self) -> Result<Option<NftRuleset>, NftParseError> {
        self.nft_json().map(netfilter::nft::parse_json).transpose()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    fn ok(argv: &[&str], stdout: &str) -> Capture {
        Capture {
            argv: argv.iter().map(|s| (*s).to_string()).collect(),
            status: CaptureStatus::Ok,
            stdout: stdout.to_string(),
            stderr: String::new(),
        }
    }

    fn missing(argv: &[&str]) -> Capture {
        Capture {
            status: CaptureStatus::Missing,
            ..ok(argv, "")
        }
    }

    fn snapshot() -> NetnsSnapshot {
        let legacy = "# Generated by iptables-save v1.8.9 on Fri Nov 27 09:40:52 2026\n*filter\n\
                      :INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
                      -A OUTPUT -m set --match-set blk dst -j DROP\nCOMMIT\n";
        NetnsSnapshot {
            netns: NetnsTarget::Named { name: "x".into() },
            collected_at_unix_ms: 1,
            iptables: IptablesTool::ALL
                .iter()
                .map(|&tool| IptablesDump {
                    tool,
                    capture: match tool {
                        IptablesTool::IptablesLegacySave => ok(&[tool.program()], legacy),
                        IptablesTool::IptablesNftSave => ok(&[tool.program()], ""),
                        _ => missing(&[tool.program()]),
                    },
                })
                .collect(),
            nft_ruleset: ok(
                &["nft", "-j", "list", "ruleset"],
                r#"{"nftables": [{"metainfo": {"version": "1.0.6"}}, {"table": {"family": "ip", "name": "filter", "handle": 1}}, {"chain": {"family": "ip", "table": "filter", "name": "INPUT", "handle": 1, "type": "filter", "hook": "input", "prio": 0, "policy": "accept"}}, {"table": {"family": "inet", "name": "fw", "handle": 2}}]}"#,
            ),
            ipset: ok(
                &["ipset", "save"],
                "create blk hash:net family inet\nadd blk 192.0.2.0/24\n",
            ),
            addresses: ok(&["ip", "-j", "addr", "show"], "[]"),
            addrs: vec![Addr {
                iface: "v0".into(),
                addr: "198.51.100.1".parse().unwrap(),
                prefix: 24,
            }],
            routes: vec![],
            route_tables: vec![ok(
                &["ip", "-j", "route", "show"],
                r#"[{"dst":"192.0.2.0/24","dev":"v1","flags":[]}]"#,
            )],
            table_routes: vec![ip::TableRoute {
                dst: "192.0.2.0/24".into(),
                dev: "v1".into(),
            }],
        }
    }

    #[test]
    fn snapshot_round_trips_and_feeds_the_evaluator() {
        let snap = snapshot();
        let text = serde_json::to_string(&snap).unwrap();
        let back: NetnsSnapshot = serde_json::from_str(&text).unwrap();
        assert_eq!(back, snap);
        let rs = snap.rulesets().unwrap();
        // The empty nft dump adds no ruleset; the legacy one is legacy IPv4 by its tool.
        assert_eq!(rs.len(), 1);
        assert_eq!(rs[0].backend, Some(Backend::Legacy));
        assert_eq!(rs[0].family, Family::Ipv4);
        let host = snap.host_model().unwrap();
        assert!(host.is_local("198.51.100.1".parse().unwrap()));
        assert_eq!(host.ipsets["blk"].members.len(), 1);
        assert_eq!(host.route_dev("192.0.2.77".parse().unwrap()), Some("v1"));
        let nft = snap.nft().unwrap().unwrap();
        let tables: Vec<String> = nft
            .tables
            .iter()
            .map(|t| format!("{} {}", t.family, t.name))
            .collect();
        assert_eq!(tables, ["inet fw"]);
        // iptables-nft's own table is left to iptables-nft-save.
        assert_eq!(nft.skipped.len(), 1, "{:?}", nft.skipped);
    }

    #[test]
    fn unparsable_output_names_the_tool() {
        let mut snap = snapshot();
        snap.ipset = ok(&["ipset", "save"], "create blk hash:net\nbogus\n");
        let e = snap.host_model().unwrap_err();
        assert_eq!(e.tool, "ipset save");
        assert_eq!(e.error.line, 2);
        snap.iptables[1].capture = ok(&["iptables-nft-save"], "*filter\nnonsense\n");
        let e = snap.rulesets().unwrap_err();
        assert_eq!(e.tool, "iptables-nft-save");
    }
}
