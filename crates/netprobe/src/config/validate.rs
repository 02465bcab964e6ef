//! Stage two: raw structs → validated [`Config`], with every cross-value error located through
//! serde-saphyr's `Spanned` positions.

use std::collections::HashMap;
use std::sync::Arc;

use probe::icmp::IcmpEngine;
use serde_saphyr::{Location, Spanned};

use super::env::{self, PositionMap};
use super::error::{self, ConfigError};
use super::raw::{RawCheck, RawConfig};
use super::{
    CheckConfig, Config, Defaults, DiagnosisConfig, MAX_CONFIG_BYTES, ProbeSpec, ServerConfig,
    StorageConfig,
};

const PROBE_KEYS: &str = "icmp, tcp, http, dns, exec, grpc";

/// Limits for hostile input. A real config is a few levels deep (root → checks → check → probe →
/// headers) with at most thousands of nodes; these bounds leave wide room above that.
fn yaml_options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        with_snippet: false,
        budget: serde_saphyr::budget! {
            max_depth: 32,
            max_events: 1_000_000,
            max_nodes: 250_000,
            max_aliases: 10_000,
            max_anchors: 10_000,
            max_total_scalar_bytes: 4 * MAX_CONFIG_BYTES,
            max_recorded_anchor_bytes: 4 * MAX_CONFIG_BYTES,
        },
    }
}

pub(super) fn parse(
    text: &str,
    origin: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let too_large = |what: &str| {
        ConfigError::whole_file(
            origin,
            format!("{what} is larger than {MAX_CONFIG_BYTES} bytes; expected a config file"),
        )
    };
    if text.len() > MAX_CONFIG_BYTES {
        return Err(too_large("the text"));
    }
    let (expanded, map) =
        env::expand(text, env).map_err(|e| ConfigError::at(origin, e.line, e.column, e.message))?;
    if expanded.len() > MAX_CONFIG_BYTES {
        return Err(too_large("the text after ${VAR} expansion"));
    }
    let raw: RawConfig = serde_saphyr::from_str_with_options(&expanded, yaml_options())
        .map_err(|e| ConfigError::from_yaml(origin, &map, &e))?;
    Validator { origin, map: &map }.config(raw)
}

struct Validator<'a> {
    origin: &'a str,
    map: &'a PositionMap,
}

impl Validator<'_> {
    fn err(&self, loc: Location, message: impl Into<String>) -> ConfigError {
        ConfigError::at_location(self.origin, self.map, loc, message)
    }

    /// The source line of `loc`, for "first defined at line N".
    fn line(&self, loc: Location) -> Option<usize> {
        error::known(loc).map(|(line, col)| self.map.to_source(line, col).0)
    }

    fn config(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let mut server = ServerConfig::default();
        if let Some(listen) = raw.server.and_then(|s| s.listen) {
            server.listen = listen.0;
        }
        let mut storage = StorageConfig::default();
        if let Some(s) = raw.storage {
            storage.path = s.path.unwrap_or(storage.path);
            storage.retention = s.retention.map_or(storage.retention, |r| r.0.0);
        }
        let mut diagnosis = DiagnosisConfig::default();
        if let Some(d) = raw.diagnosis {
            diagnosis = DiagnosisConfig {
                enabled: d.enabled.unwrap_or(diagnosis.enabled),
                min_interval: d.min_interval.map_or(diagnosis.min_interval, |i| i.0.0),
                max_concurrent: d.max_concurrent.map_or(diagnosis.max_concurrent, |c| c.0),
            };
        }
        let mut defaults = Defaults::default();
        if let Some(d) = raw.defaults {
            defaults = Defaults {
                period: d.period.map_or(defaults.period, |p| p.0.0),
                timeout: d.timeout.map_or(defaults.timeout, |t| t.0.0),
                initial_delay: d.initial_delay.map_or(defaults.initial_delay, |i| i.0),
                success_threshold: d
                    .success_threshold
                    .map_or(defaults.success_threshold, |t| t.0),
                failure_threshold: d
                    .failure_threshold
                    .map_or(defaults.failure_threshold, |t| t.0),
            };
        }
        // Probers are built once here only to validate them; the engine opens no socket until used.
        let engine = Arc::new(IcmpEngine::new());
        let mut first_seen: HashMap<String, Location> = HashMap::new();
        let mut checks = Vec::new();
        for check in raw.checks.unwrap_or_default() {
            let name = &check.value.name;
            if let Some(first) = first_seen.get(&name.value.0) {
                let first = self
                    .line(*first)
                    .map_or(String::new(), |l| format!(" (first used at line {l})"));
                return Err(self.err(
                    name.referenced,
                    format!(
                        "duplicate check name {:?}{first}; expected every check name to be unique",
                        name.value.0
                    ),
                ));
            }
            first_seen.insert(name.value.0.clone(), name.referenced);
            checks.push(self.check(check, &defaults, &engine)?);
        }
        let mesh = match raw.mesh {
            None => None,
            Some(m) => {
                let mesh = super::mesh::validate(m.value, server.listen.port())
                    .map_err(|e| self.err(m.referenced, e))?;
                if let Some(r) = mesh.retention.filter(|r| *r > storage.retention) {
                    return Err(self.err(
                        m.referenced,
                        format!(
                            "mesh.retention {} is longer than storage.retention {}; expected at \
                             most that (everything older than storage.retention is pruned)",
                            humantime::format_duration(r),
                            humantime::format_duration(storage.retention)
                        ),
                    ));
                }
                Some(mesh)
            }
        };
        Ok(Config {
            mesh,
            server,
            storage,
            defaults,
            diagnosis,
            checks,
        })
    }

    fn check(
        &self,
        check: Spanned<RawCheck>,
        defaults: &Defaults,
        engine: &Arc<IcmpEngine>,
    ) -> Result<CheckConfig, ConfigError> {
        let c = check.value;
        let name = c.name.value.0;
        let mut probes: Vec<(&str, Location, ProbeSpec)> = Vec::new();
        if let Some(p) = c.icmp {
            probes.push(("icmp", p.referenced, ProbeSpec::Icmp(p.value)));
        }
        if let Some(p) = c.tcp {
            probes.push(("tcp", p.referenced, ProbeSpec::Tcp(p.value)));
        }
        if let Some(p) = c.http {
            probes.push(("http", p.referenced, ProbeSpec::Http(p.value)));
        }
        if let Some(p) = c.dns {
            probes.push(("dns", p.referenced, ProbeSpec::Dns(p.value)));
        }
        if let Some(p) = c.exec {
            probes.push(("exec", p.referenced, ProbeSpec::Exec(p.value)));
        }
        if let Some(p) = c.grpc {
            probes.push(("grpc", p.referenced, ProbeSpec::Grpc(p.value)));
        }
        probes.sort_by_key(|(_, loc, _)| (loc.line(), loc.column()));
        let (key, probe_loc, spec) = match probes.len() {
            0 => {
                return Err(self.err(
                    check.referenced,
                    format!(
                        "check {name:?} has no probe; expected exactly one of the keys {PROBE_KEYS}"
                    ),
                ));
            }
            1 => probes.remove(0),
            _ => {
                let keys: Vec<&str> = probes.iter().map(|(k, _, _)| *k).collect();
                return Err(self.err(
                    probes[1].1,
                    format!(
                        "check {name:?} has {} probes ({}); expected exactly one of the keys {PROBE_KEYS}",
                        keys.len(),
                        keys.join(", ")
                    ),
                ));
            }
        };
        spec.build(engine).map_err(|e| {
            self.err(
                probe_loc,
                format!("check {name:?}: invalid {key} probe: {e}"),
            )
        })?;
        let mut conditions = Vec::new();
        for cond in c.conditions.unwrap_or_default() {
            cond.value.check_kind(spec.kind()).map_err(|e| {
                self.err(
                    cond.referenced,
                    format!("check {name:?}: condition {:?}: {e}", cond.value.text()),
                )
            })?;
            conditions.push(cond.value);
        }
        Ok(CheckConfig {
            name,
            spec,
            period: c.period.map_or(defaults.period, |p| p.0.0),
            timeout: c.timeout.map_or(defaults.timeout, |t| t.0.0),
            initial_delay: c.initial_delay.map_or(defaults.initial_delay, |i| i.0),
            success_threshold: c
                .success_threshold
                .map_or(defaults.success_threshold, |t| t.0),
            failure_threshold: c
                .failure_threshold
                .map_or(defaults.failure_threshold, |t| t.0),
            conditions,
        })
    }
}
