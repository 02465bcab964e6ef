//! Kernel-facing part of isolation: reading the target namespace's rules and default route, and
//! applying `iptables-restore --noflush` payloads there (with `setns(2)` on a dedicated thread,
//! [`crate::collect::run_in`]), then flushing its conntrack table.

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::rules;
use crate::collect::{
    Capture, CaptureStatus, NetnsError, NetnsTarget, TOOL_TIMEOUT, capture, run_in,
};

/// Which iptables backend the namespace's rules live in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum IptBackend {
    /// x_tables (`iptables-legacy`).
    Legacy,
    /// nf_tables through `iptables-nft`.
    Nft,
}

impl IptBackend {
    /// `legacy` or `nft`.
    pub fn name(self) -> &'static str {
        match self {
            IptBackend::Legacy => "legacy",
            IptBackend::Nft => "nft",
        }
    }

    /// `iptables-legacy-save`, `ip6tables-nft-save`, …
    pub fn save(self, ipv6: bool) -> String {
        format!(
            "{}-{}-save",
            if ipv6 { "ip6tables" } else { "iptables" },
            self.name()
        )
    }

    /// `iptables-legacy-restore`, `ip6tables-nft-restore`, …
    pub fn restore(self, ipv6: bool) -> String {
        format!(
            "{}-{}-restore",
            if ipv6 { "ip6tables" } else { "iptables" },
            self.name()
        )
    }
}

/// What `isolate`/`release` read from the namespace before acting.
#[derive(Debug, Clone)]
pub struct NsState {
    /// `(backend, ipv6, save output)` for the four `*-save` tools.
    pub saves: Vec<(IptBackend, bool, Capture)>,
    /// Gateway of the IPv4 default route, else of the IPv6 one (where the kubelet's probes come from
    /// when the node is the pod's gateway).
    pub default_gateway: Option<IpAddr>,
    /// The backend `iptables -V` names (the host's default), if it ran.
    pub default_backend: Option<IptBackend>,
}

impl NsState {
    fn text(&self, backend: IptBackend, ipv6: bool) -> &str {
        self.saves
            .iter()
            .find(|(b, v6, _)| *b == backend && *v6 == ipv6)
            .and_then(|(_, _, c)| c.ok_stdout())
            .unwrap_or("")
    }

    /// The backend holding netprobe's isolation chains (either family), if any.
    pub fn isolated_backend(&self) -> Option<IptBackend> {
        [IptBackend::Nft, IptBackend::Legacy].into_iter().find(|b| {
            rules::is_isolated(self.text(*b, false)) || rules::is_isolated(self.text(*b, true))
        })
    }

    /// Families (`ipv6` flags) in which `backend` holds the isolation chains.
    pub fn isolated_families(&self, backend: IptBackend) -> Vec<bool> {
        [false, true]
            .into_iter()
            .filter(|v6| rules::is_isolated(self.text(backend, *v6)))
            .collect()
    }

    /// The backend the namespace uses: the one with tables (the one with more rules when both
    /// have some), else the host's `iptables` default, else nft.
    pub fn backend(&self) -> IptBackend {
        let rules_in = |b: IptBackend| -> Option<usize> {
            let t = format!("{}{}", self.text(b, false), self.text(b, true));
            t.lines()
                .any(|l| l.starts_with('*'))
                .then(|| t.lines().filter(|l| l.starts_with("-A ")).count())
        };
        match (rules_in(IptBackend::Legacy), rules_in(IptBackend::Nft)) {
            (Some(_), None) => IptBackend::Legacy,
            (None, Some(_)) => IptBackend::Nft,
            (Some(l), Some(n)) if l > n => IptBackend::Legacy,
            (Some(_), Some(_)) => IptBackend::Nft,
            (None, None) => self.default_backend.unwrap_or(IptBackend::Nft),
        }
    }

    /// The save text of `backend` for both families, for before/after comparisons.
    pub fn save_text(&self, backend: IptBackend) -> (String, String) {
        (
            self.text(backend, false).to_string(),
            self.text(backend, true).to_string(),
        )
    }
}

fn default_gateway(ipv6: bool) -> Option<IpAddr> {
    let argv: &[&str] = if ipv6 {
        &["ip", "-6", "-j", "route", "show", "default"]
    } else {
        &["ip", "-j", "route", "show", "default"]
    };
    let c = capture(argv, TOOL_TIMEOUT);
    let v: serde_json::Value = serde_json::from_str(c.ok_stdout()?).ok()?;
    v.as_array()?
        .iter()
        .find_map(|r| r.get("gateway")?.as_str()?.parse().ok())
}

/// Reads the four `*-save` outputs, the default route's gateway and `iptables -V` inside `target`.
pub fn read_state(target: &NetnsTarget) -> Result<NsState, NetnsError> {
    run_in(target, || {
        let mut saves = Vec::new();
        for b in [IptBackend::Legacy, IptBackend::Nft] {
            for v6 in [false, true] {
                saves.push((b, v6, capture(&[b.save(v6).as_str()], TOOL_TIMEOUT)));
            }
        }
        let version = capture(&["iptables", "-V"], TOOL_TIMEOUT);
        let default_backend = version.ok_stdout().and_then(|t| {
            if t.contains("nf_tables") {
                Some(IptBackend::Nft)
            } else if t.contains("legacy") {
                Some(IptBackend::Legacy)
            } else {
                None
            }
        });
        NsState {
            saves,
            default_gateway: default_gateway(false).or_else(|| default_gateway(true)),
            default_backend,
        }
    })
}

/// Why the rules could not be applied. After any of these, nothing netprobe added is left.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The namespace could not be entered.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// A restore program failed (the payload of the other family, if applied, was rolled back).
    #[error("{program} failed: {summary}")]
    Restore {
        /// The program.
        program: String,
        /// Its exit status and first error line.
        summary: String,
    },
    /// The payload file could not be written.
    #[error("cannot write the rules to {path}: {source}")]
    TempFile {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Runs `program --noflush -w 5 FILE` with `payload` in FILE (`-w` takes an optional number of
/// seconds and would otherwise swallow FILE, leaving the program reading an empty stdin) (a fresh file in the temp directory,
/// removed afterwards). Runs in the calling thread's namespace.
fn restore(program: &str, payload: &str) -> Result<(), ApplyError> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let path = std::env::temp_dir().join(format!(
        "netprobe-isolate-{}-{nanos}.rules",
        std::process::id()
    ));
    let shown = path.display().to_string();
    let write = || -> std::io::Result<()> {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        f.write_all(payload.as_bytes())
    };
    write().map_err(|source| ApplyError::TempFile {
        path: shown.clone(),
        source,
    })?;
    let c = capture(
        &[program, "--noflush", "-w", "5", &shown],
        Duration::from_secs(30),
    );
    let _ = std::fs::remove_file(&path);
    match c.status {
        CaptureStatus::Ok => Ok(()),
        _ => Err(ApplyError::Restore {
            program: program.to_string(),
            summary: c.summary(),
        }),
    }
}

/// Applies `payloads` (`(ipv6, text)`, in order) with `backend`'s restore programs inside
/// `target`, each atomically; if one fails, the ones already applied are undone with `undo`'s
/// payload. Then, when `flush_conntrack`, runs `conntrack -F` for both families there and returns
/// what it said (a missing `conntrack` is reported, not an error: the DROP rules match
/// established flows anyway).
pub fn apply(
    target: &NetnsTarget,
    backend: IptBackend,
    payloads: &[(bool, String)],
    undo: Option<fn(bool) -> String>,
    flush_conntrack: bool,
) -> Result<Vec<String>, ApplyError> {
    run_in(target, || {
        let mut done: Vec<bool> = Vec::new();
        for (v6, text) in payloads {
            if let Err(e) = restore(&backend.restore(*v6), text) {
                if let Some(undo) = undo {
                    for d in &done {
                        let _ = restore(&backend.restore(*d), &undo(*d));
                    }
                }
                return Err(e);
            }
            done.push(*v6);
        }
        let mut notes = Vec::new();
        if flush_conntrack {
            for fam in ["ipv4", "ipv6"] {
                let c = capture(&["conntrack", "-F", "-f", fam], TOOL_TIMEOUT);
                let said = c.stderr.lines().next().unwrap_or("").to_string();
                notes.push(match c.status {
                    CaptureStatus::Ok => format!("conntrack -F -f {fam}: {said}"),
                    _ => format!("conntrack -F -f {fam}: {}", c.summary()),
                });
            }
        }
        Ok(notes)
    })?
}
