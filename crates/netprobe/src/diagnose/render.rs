//! Human output of a [`Diagnosis`].

use std::fmt::Write as _;

use super::{Conclusion, Diagnosis};

/// Renders a diagnosis for a terminal: the conclusion, each finding with its evidence and
/// fixes, then what was examined and what could not be read.
pub fn render_human(d: &Diagnosis) -> String {
    let mut out = String::new();
    let conclusion = match d.conclusion {
        Conclusion::Healthy => "healthy: nothing wrong found",
        Conclusion::Explained => "findings explain the failure",
        Conclusion::Unexplained => "the failure is not explained by anything examined",
    };
    let _ = writeln!(out, "diagnosis of {}: {conclusion}", d.target);
    if let Some(o) = &d.observed {
        let r = o.reason.map_or("ok", |r| r.as_str());
        let _ = writeln!(out, "  observed: {r} {}", o.message);
    }
    if let Some(f) = &d.flow {
        let src = f.src.map_or("?".to_string(), |s| s.to_string());
        let port = f.dport.map_or(String::new(), |p| format!(" port {p}"));
        let _ = writeln!(
            out,
            "  flow: {} {src} -> {}{port}",
            f.protocol.as_str(),
            f.dst
        );
    }
    for f in &d.findings {
        let _ = writeln!(out, "\n[{}] {}: {}", f.severity.as_str(), f.id, f.summary);
        for e in &f.evidence {
            let _ = writeln!(out, "    evidence: {e}");
        }
        for x in &f.fixes {
            let _ = writeln!(out, "    fix: {x}");
        }
    }
    if !d.examined.is_empty() {
        let _ = writeln!(out, "\nexamined:");
        for e in &d.examined {
            let _ = writeln!(out, "  - {e}");
        }
    }
    if !d.unreadable.is_empty() {
        let _ = writeln!(out, "\ncould not read:");
        for e in &d.unreadable {
            let _ = writeln!(out, "  - {e}");
        }
    }
    out
}
