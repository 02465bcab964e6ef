//! What `trace --live` collected, as a report: per source its status (`ok`, `missing`,
//! `failed`, …) and what was read from it, the route, and warnings about what the verdict cannot
//! have seen.

use std::fmt::Write as _;

use netfilter::Ruleset;
use netfilter::eval::HostModel;
use netfilter::nft::NftRuleset;
use serde_json::{Value, json};

use crate::collect::{Capture, CaptureStatus, NetnsSnapshot, RouteLookup};

/// The report of one collection.
pub(super) struct LiveReport {
    netns: Value,
    netns_text: String,
    /// `(source, status line, extra JSON fields)`.
    sources: Vec<(String, Capture, Value, String)>,
    route: Option<Value>,
    route_text: Option<String>,
    /// Things the verdict cannot have taken into account.
    warnings: Vec<String>,
}

fn status_json(c: &Capture) -> Value {
    let mut v = serde_json::to_value(&c.status).unwrap_or(Value::Null);
    if c.status != CaptureStatus::Ok && !c.stderr.is_empty() {
        v["stderr"] = json!(c.stderr);
    }
    v
}

impl LiveReport {
    pub(super) fn new(
        snap: &NetnsSnapshot,
        rulesets: &[Ruleset],
        nft: Option<&NftRuleset>,
        host: &HostModel,
        route: Option<&RouteLookup>,
    ) -> LiveReport {
        let mut sources = Vec::new();
        let mut warnings = Vec::new();
        for d in &snap.iptables {
            let tables: Vec<&str> = rulesets
                .iter()
                .filter(|rs| rs.backend == Some(d.tool.backend()) && rs.family == d.tool.family())
                .flat_map(|rs| rs.tables.iter().map(|t| t.name.as_str()))
                .collect();
            let extra = json!({ "evaluated": true, "tables": tables });
            let text = if d.capture.status == CaptureStatus::Ok {
                format!(
                    "ok, tables: {}",
                    if tables.is_empty() {
                        "none".to_string()
                    } else {
                        tables.join(" ")
                    }
                )
            } else {
                d.capture.summary()
            };
            if matches!(
                d.capture.status,
                CaptureStatus::Failed { .. }
                    | CaptureStatus::TimedOut { .. }
                    | CaptureStatus::Error { .. }
            ) {
                warnings.push(format!(
                    "{} {}; its rules are not in this trace",
                    d.tool.program(),
                    d.capture.summary()
                ));
            }
            sources.push((d.tool.program().to_string(), d.capture.clone(), extra, text));
        }
        let native: Vec<String> = nft
            .into_iter()
            .flat_map(|n| &n.tables)
            .map(|t| format!("{} {}", t.family, t.name))
            .collect();
        let skipped: Vec<String> = nft
            .into_iter()
            .flat_map(|n| &n.skipped)
            .map(|t| format!("{} {}", t.family, t.name))
            .collect();
        let nft_text = if snap.nft_ruleset.status == CaptureStatus::Ok {
            let list = |v: &[String]| {
                if v.is_empty() {
                    "none".to_string()
                } else {
                    v.join(", ")
                }
            };
            format!(
                "ok, native tables: {}; iptables-nft's (read from iptables-nft-save): {}",
                list(&native),
                list(&skipped)
            )
        } else {
            snap.nft_ruleset.summary()
        };
        if matches!(
            snap.nft_ruleset.status,
            CaptureStatus::Failed { .. }
                | CaptureStatus::TimedOut { .. }
                | CaptureStatus::Error { .. }
        ) {
            warnings.push(format!(
                "nft -j list ruleset {}; native nftables rules are not in this trace",
                snap.nft_ruleset.summary()
            ));
        }
        sources.push((
            "nft -j list ruleset".to_string(),
            snap.nft_ruleset.clone(),
            json!({ "evaluated": nft.is_some(), "native_tables": native, "iptables_nft_tables": skipped }),
            nft_text,
        ));
        let sets: Vec<&String> = host.ipsets.keys().collect();
        let ipset_text = if snap.ipset.status == CaptureStatus::Ok {
            format!(
                "ok, {} set{}",
                sets.len(),
                if sets.len() == 1 { "" } else { "s" }
            )
        } else {
            snap.ipset.summary()
        };
        sources.push((
            "ipset save".to_string(),
            snap.ipset.clone(),
            json!({ "evaluated": true, "sets": sets }),
            ipset_text,
        ));
        let addr_text = if snap.addresses.status == CaptureStatus::Ok {
            format!("ok, {} addresses", snap.addrs.len())
        } else {
            snap.addresses.summary()
        };
        sources.push((
            "ip -j addr show".to_string(),
            snap.addresses.clone(),
            json!({ "evaluated": true, "addresses": snap.addrs.len() }),
            addr_text,
        ));
        let (route_json, route_text) = match route {
            None => (None, None),
            Some(r) => {
                let cmd = r.capture.argv.join(" ");
                let mut v =
                    json!({ "command": cmd, "result": status_json(&r.capture), "route": r.route });
                let text = match &r.route {
                    Some(rt) => format!(
                        "{} {}dev {} src {}",
                        rt.kind,
                        rt.gateway.map_or(String::new(), |g| format!("via {g} ")),
                        rt.dev.as_deref().unwrap_or("?"),
                        rt.prefsrc.map_or("?".to_string(), |a| a.to_string())
                    ),
                    None => {
                        v["route"] = Value::Null;
                        // E.g. a --from that is not local: the kernel would not send this packet.
                        warnings.push(format!(
                            "the kernel has no route for this packet ({cmd}: {}); the output \
                             interface is unknown unless --out is given",
                            r.capture.summary()
                        ));
                        r.capture.summary()
                    }
                };
                (Some(v), Some(format!("{cmd}: {text}")))
            }
        };
        LiveReport {
            netns: serde_json::to_value(&snap.netns).unwrap_or(Value::Null),
            netns_text: snap.netns.describe(),
            sources,
            route: route_json,
            route_text,
            warnings,
        }
    }

    /// The `live` object of `trace --json`.
    pub(super) fn json(&self) -> Value {
        let sources: Vec<Value> = self
            .sources
            .iter()
            .map(|(name, cap, extra, _)| {
                let mut v = json!({ "source": name });
                if let (Some(o), Value::Object(s)) = (v.as_object_mut(), status_json(cap)) {
                    o.extend(s);
                }
                if let (Some(o), Value::Object(e)) = (v.as_object_mut(), extra.clone()) {
                    o.extend(e);
                }
                v
            })
            .collect();
        json!({
            "netns": self.netns,
            "sources": sources,
            "route": self.route,
            "warnings": self.warnings,
        })
    }

    /// The lines printed before the story.
    pub(super) fn text(&self) -> String {
        let mut out = format!("collected live from the {}\n", self.netns_text);
        for (name, _, _, text) in &self.sources {
            let _ = writeln!(out, "  {name:<22} {text}");
        }
        if let Some(r) = &self.route_text {
            let _ = writeln!(out, "  {r}");
        }
        for w in &self.warnings {
            let _ = writeln!(out, "  warning: {w}");
        }
        out.push('\n');
        out
    }
}
