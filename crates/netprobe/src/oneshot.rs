//! The one-shot verbs: `netprobe check TARGET` and `netprobe validate -c FILE`.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use probe::icmp::IcmpEngine;
use probe::{Details, Outcome};
use serde_json::{Value, json};

use crate::conditions::{self, Condition};
use crate::config::{self, ProbeSpec};

/// Exit code: success.
pub const EXIT_OK: u8 = 0;
/// Exit code: the check failed.
pub const EXIT_FAILED: u8 = 1;
/// Exit code: usage or input error.
pub const EXIT_USAGE: u8 = 2;

/// Arguments of `netprobe check`.
#[derive(Debug, Clone)]
pub struct CheckArgs {
    /// The target URL-like string.
    pub target: String,
    /// ICMP echoes (default 3).
    pub count: Option<u32>,
    /// Probe timeout.
    pub timeout: Duration,
    /// Condition texts.
    pub conditions: Vec<String>,
    /// Skip TLS verification.
    pub insecure: bool,
    /// JSON output.
    pub json: bool,
    /// After a failure, print the diagnosis (`--diagnose`).
    pub diagnose: bool,
}

/// Turns a one-shot target into a probe spec.
///
/// Forms: `icmp://HOST`, `tcp://HOST:PORT`, `http://…`, `https://…`, `dns://SERVER[:PORT]/NAME[?type=T]`,
/// `grpc://HOST:PORT[/SERVICE]`. Errors name the form that was expected.
pub fn parse_target(target: &str, count: Option<u32>, insecure: bool) -> Result<ProbeSpec, String> {
    let (scheme, rest) =
        target.split_once("://").ok_or_else(|| format!("target {target:?} has no scheme; expected e.g. icmp://HOST, tcp://HOST:PORT, https://HOST/PATH"))?;
    let spec = match scheme {
        "icmp" => {
            let host = rest.trim_end_matches('/');
            if host.is_empty() {
                return Err("icmp target needs a host: icmp://HOST".into());
            }
            ProbeSpec::Icmp(from_json(
                json!({ "host": host, "count": count.unwrap_or(3) }),
            )?)
        }
        "tcp" => {
            let address = rest.trim_end_matches('/');
            ProbeSpec::Tcp(from_json(json!({ "address": address }))?)
        }
        "http" | "https" => {
            let mut v = json!({ "url": target });
            if insecure {
                v["tls_verify"] = Value::Bool(false);
            }
            ProbeSpec::Http(from_json(v)?)
        }
        "dns" => {
            let (server, rest) = rest.split_once('/').ok_or_else(|| {
                "dns target needs a name: dns://SERVER[:PORT]/NAME?type=A".to_owned()
            })?;
            let (name, query) = rest.split_once('?').unwrap_or((rest, ""));
            if name.is_empty() {
                return Err("dns target needs a name: dns://SERVER[:PORT]/NAME?type=A".into());
            }
            let mut record_type = "A".to_owned();
            for pair in query.split('&').filter(|p| !p.is_empty()) {
                match pair.split_once('=') {
                    Some(("type", t)) => record_type = t.to_ascii_uppercase(),
                    _ => {
                        return Err(format!(
                            "unknown dns target parameter {pair:?}; expected type=A|AAAA|…"
                        ));
                    }
                }
            }
            let server = if server.contains(':') && !server.ends_with(']') {
                server.to_owned()
            } else {
                format!("{server}:53")
            };
            ProbeSpec::Dns(from_json(
                json!({ "server": server, "query": name, "record_type": record_type }),
            )?)
        }
        "grpc" => {
            let (address, service) = rest.split_once('/').unwrap_or((rest, ""));
            ProbeSpec::Grpc(from_json(
                json!({ "address": address, "service": service }),
            )?)
        }
        other => {
            return Err(format!(
                "unknown scheme {other:?}; expected icmp, tcp, http, https, dns or grpc"
            ));
        }
    };
    Ok(spec)
}

fn from_json<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, String> {
    serde_json::from_value(v).map_err(|e| e.to_string())
}

/// Runs `netprobe check` and returns the exit code.
pub async fn check(args: CheckArgs) -> u8 {
    let fail_usage = |msg: String| {
        if args.json {
            println!("{}", json!({ "error": msg }));
        } else {
            eprintln!("netprobe check: {msg}");
        }
        EXIT_USAGE
    };
    let spec = match parse_target(&args.target, args.count, args.insecure) {
        Ok(s) => s,
        Err(e) => return fail_usage(e),
    };
    let mut conds = Vec::new();
    for text in &args.conditions {
        match Condition::parse(text) {
            Ok(c) => conds.push(c),
            Err(e) => return fail_usage(format!("condition {text:?}: {e}")),
        }
    }
    let engine = Arc::new(IcmpEngine::new());
    let prober = match spec.build(&engine) {
        Ok(p) => p,
        Err(e) => return fail_usage(e.to_string()),
    };
    let outcome = prober.probe(args.timeout).await;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let (outcome, results) = conditions::apply(outcome, &conds, now);
    let diagnosis = if args.diagnose && !outcome.success {
        Some(crate::diagnose::cli::after_check(&args.target, &outcome).await)
    } else {
        None
    };
    if args.json {
        let mut doc = json!({
            "target": prober.target(),
            "kind": prober.kind(),
            "success": outcome.success,
            "outcome": outcome,
            "conditions": results,
        });
        match &diagnosis {
            Some(Ok(d)) => doc["diagnosis"] = json!(d),
            Some(Err(e)) => doc["diagnosis_error"] = json!(e),
            None => {}
        }
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    } else {
        print!("{}", render(&prober.target(), &outcome));
        for r in &results {
            println!(
                "  condition {} {}",
                if r.success { "ok  " } else { "FAIL" },
                r.resolved
            );
        }
        match &diagnosis {
            Some(Ok(d)) => print!("\n{}", crate::diagnose::render_human(d)),
            Some(Err(e)) => eprintln!("netprobe check: cannot diagnose: {e}"),
            None => {}
        }
    }
    if outcome.success {
        EXIT_OK
    } else {
        EXIT_FAILED
    }
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

/// Renders an outcome for a terminal: a verdict line, kind details, then one line per phase.
pub fn render(target: &str, o: &Outcome) -> String {
    let mut out = String::new();
    let verdict = if o.success {
        "OK".to_owned()
    } else {
        format!("FAIL ({})", o.reason.map_or("error", |r| r.as_str()))
    };
    let _ = writeln!(out, "{target}: {verdict} in {}", ms(o.duration));
    if !o.message.is_empty() {
        let _ = writeln!(out, "  {}", o.message);
    }
    match &o.details {
        Details::Icmp(i) => {
            for (seq, rtt) in i.rtts.iter().enumerate() {
                match rtt {
                    Some(s) => {
                        let _ = writeln!(out, "  seq={seq} rtt={:.3} ms", s * 1e3);
                    }
                    None => {
                        let _ = writeln!(out, "  seq={seq} lost");
                    }
                }
            }
            let _ = write!(
                out,
                "  {} sent, {} received, {:.0}% loss",
                i.sent,
                i.received,
                i.loss_ratio * 100.0
            );
            let mode = i.mode.map_or("none", |m| m.as_str());
            let _ = writeln!(
                out,
                " ({mode} socket{})",
                if i.kernel_timestamps {
                    ", kernel timestamps"
                } else {
                    ""
                }
            );
        }
        Details::Http(h) => {
            let status = h.status.map_or("-".to_owned(), |s| s.to_string());
            let _ = writeln!(
                out,
                "  status {status} {}, {} body bytes{}{}",
                h.version.as_deref().unwrap_or(""),
                h.body_bytes,
                if h.body_truncated { " (truncated)" } else { "" },
                if h.redirects > 0 {
                    format!(", {} redirects", h.redirects)
                } else {
                    String::new()
                }
            );
            if let Some(t) = &h.tls {
                let _ = writeln!(
                    out,
                    "  tls {} {} cert notAfter {} ({})",
                    t.version, t.cipher, t.earliest_not_after, t.subject
                );
            }
        }
        Details::Dns(d) => {
            let _ = writeln!(
                out,
                "  {} {} rcode {}",
                d.query,
                d.record_type,
                d.rcode.as_deref().unwrap_or("-")
            );
            for a in &d.answers {
                let _ = writeln!(out, "    {a}");
            }
        }
        Details::Tcp(t) => {
            if let (Some(l), Some(p)) = (t.local, t.peer) {
                let _ = writeln!(out, "  {l} -> {p}");
            }
        }
        Details::Exec(e) => {
            let _ = writeln!(out, "  exit {:?} signal {:?}", e.exit_code, e.signal);
        }
        Details::Grpc(g) => {
            let _ = writeln!(
                out,
                "  service {:?} status {}",
                g.service,
                g.status.as_deref().unwrap_or("-")
            );
        }
        Details::None => {}
    }
    for p in &o.phases {
        let _ = writeln!(out, "  {:<11} {}", p.phase.as_str(), ms(p.duration));
    }
    out
}

/// Runs `netprobe validate` and returns the exit code.
pub fn validate(path: &Path, json_out: bool) -> u8 {
    match config::load(path) {
        Ok(cfg) => {
            if json_out {
                println!("{}", json!({ "valid": true, "checks": cfg.checks.len() }));
            } else {
                println!("{}: ok, {} checks", path.display(), cfg.checks.len());
            }
            EXIT_OK
        }
        Err(e) => {
            if json_out {
                let err = json!({ "file": e.origin, "line": e.line, "column": e.column, "message": e.message });
                println!("{}", json!({ "valid": false, "error": err }));
            } else {
                eprintln!("{e}");
            }
            EXIT_USAGE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_target_forms() {
        assert!(matches!(
            parse_target("icmp://127.0.0.1", None, false),
            Ok(ProbeSpec::Icmp(_))
        ));
        assert!(matches!(
            parse_target("tcp://127.0.0.1:80", None, false),
            Ok(ProbeSpec::Tcp(_))
        ));
        assert!(matches!(
            parse_target("https://example.test/x", None, true),
            Ok(ProbeSpec::Http(_))
        ));
        assert!(matches!(
            parse_target("dns://127.0.0.1/a.test?type=aaaa", None, false),
            Ok(ProbeSpec::Dns(_))
        ));
        assert!(matches!(
            parse_target("grpc://127.0.0.1:50051/svc", None, false),
            Ok(ProbeSpec::Grpc(_))
        ));
        assert!(
            parse_target("127.0.0.1", None, false)
                .unwrap_err()
                .contains("no scheme")
        );
        assert!(
            parse_target("ftp://x", None, false)
                .unwrap_err()
                .contains("unknown scheme")
        );
        assert!(parse_target("dns://127.0.0.1", None, false).is_err());
        assert!(parse_target("dns://127.0.0.1/x?kind=A", None, false).is_err());
    }
}
