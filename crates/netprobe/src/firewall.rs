//! Firewall management — the kernel-facing half of the mesh's `firewall.manage` and of
//! `netprobe firewall ensure|status|remove`: detect the iptables backend a namespace actually
//! uses, read its `filter` tables (IPv4 and IPv6), and apply the pure payloads of
//! [`netfilter::manage`] atomically with `iptables-restore -w --noflush` of that backend.
//!
//! Everything runs on one thread that has entered the target namespace ([`collect::run_in`],
//! `setns(2)`), so no tokio worker changes namespace. Per family the restore is atomic (one
//! transaction); across families, both payloads are first checked with `iptables-restore --test`
//! and only then applied, so a bad payload or a missing tool applies nothing.
//!
//! For the daemon, [`Reconciler::reconcile_once`] is the call to make on a timer.

use std::io::Write as _;
use std::process::{Command, Stdio};

use netfilter::manage::{self, BackendChoice, ManageError, Spec, Status};
use netfilter::{Backend, Family, ParseOptions, Ruleset, parse_save};
use serde::Serialize;

use crate::collect::{self, CaptureStatus, IptablesTool, NetnsError, NetnsTarget, TOOL_TIMEOUT};

pub use netfilter::manage::{INPUT_CHAIN, OUTPUT_CHAIN};

/// What to manage: where, what, and on which backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirewallConfig {
    /// The network namespace whose rules are managed.
    pub netns: NetnsTarget,
    /// Interfaces and TCP fallback port.
    pub spec: Spec,
    /// The backend; `None` detects it at every call ([`detect`]). `Nftables` (native nftables,
    /// which no iptables tool writes) is taken as `Nft`.
    pub backend: Option<Backend>,
}

/// Why a firewall operation failed. Nothing was applied unless the variant says so.
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    /// The namespace cannot be entered (exit 2).
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// Bad interfaces or port, or a foreign rule referring to netprobe's chains (exit 2).
    #[error(transparent)]
    Spec(#[from] ManageError),
    /// A tool of the chosen backend is not installed.
    #[error("{program} is not installed (needed for the {backend} backend)")]
    ToolMissing {
        /// The program.
        program: String,
        /// `legacy` or `nft`.
        backend: &'static str,
    },
    /// A save or restore tool failed; `applied` lists the families already changed (only when the
    /// kernel rejected a payload that passed `--test`).
    #[error("{argv} {summary}{}", applied_note(.applied))]
    ToolFailed {
        /// The command line.
        argv: String,
        /// How it ended, with the first line of its stderr.
        summary: String,
        /// Families already applied when it failed.
        applied: Vec<&'static str>,
    },
    /// A save tool printed something the parser rejects.
    #[error("{program} output does not parse: {error}")]
    Parse {
        /// The program.
        program: &'static str,
        /// The parser's error (line and text).
        error: netfilter::ParseError,
    },
}

fn applied_note(applied: &[&str]) -> String {
    if applied.is_empty() {
        String::new()
    } else {
        format!(" (already applied: {})", applied.join(", "))
    }
}

impl FirewallError {
    /// Whether this is bad input (exit 2) rather than an operational failure.
    pub fn is_input(&self) -> bool {
        matches!(
            self,
            FirewallError::Netns(_) | FirewallError::Spec(_) | FirewallError::ToolMissing { .. }
        )
    }
}

/// One family's state, and what an operation wrote for it.
#[derive(Debug, Clone, Serialize)]
pub struct FamilyReport {
    /// `ipv4` or `ipv6`.
    pub family: &'static str,
    /// Whether everything is in place (after the operation).
    pub in_place: bool,
    /// What was missing before the operation (`NETPROBE-INPUT: missing "netprobe: …"`).
    pub missing: Vec<String>,
    /// Rules in netprobe's chains it did not want (before the operation).
    pub extra: Vec<String>,
    /// The `iptables-restore --noflush` payload applied, if any.
    pub applied: Option<String>,
}

/// The result of [`ensure`], [`status`], [`remove`].
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The namespace, as [`NetnsTarget::describe`] says it.
    pub netns: String,
    /// The backend used.
    pub backend: &'static str,
    /// Why that backend (detected, or given).
    pub backend_reason: String,
    /// IPv4, then IPv6.
    pub families: Vec<FamilyReport>,
}

impl Report {
    /// Whether every family is in place.
    pub fn in_place(&self) -> bool {
        self.families.iter().all(|f| f.in_place)
    }

    /// Whether anything was applied.
    pub fn changed(&self) -> bool {
        self.families.iter().any(|f| f.applied.is_some())
    }
}

const FAMILIES: [Family; 2] = [Family::Ipv4, Family::Ipv6];

fn save_tool(backend: Backend, family: Family) -> IptablesTool {
    match (backend, family) {
        (Backend::Legacy, Family::Ipv4) => IptablesTool::IptablesLegacySave,
        (_, Family::Ipv4) => IptablesTool::IptablesNftSave,
        (Backend::Legacy, Family::Ipv6) => IptablesTool::Ip6tablesLegacySave,
        (_, Family::Ipv6) => IptablesTool::Ip6tablesNftSave,
    }
}

fn restore_program(backend: Backend, family: Family) -> &'static str {
    match (backend, family) {
        (Backend::Legacy, Family::Ipv4) => "iptables-legacy-restore",
        (_, Family::Ipv4) => "iptables-nft-restore",
        (Backend::Legacy, Family::Ipv6) => "ip6tables-legacy-restore",
        (_, Family::Ipv6) => "ip6tables-nft-restore",
    }
}

/// Runs one save tool (in the current thread's namespace). `Ok(None)` when it is not installed.
fn save(tool: IptablesTool) -> Result<Option<Ruleset>, FirewallError> {
    let cap = collect::capture(&[tool.program()], TOOL_TIMEOUT);
    match &cap.status {
        CaptureStatus::Ok => {}
        CaptureStatus::Missing => return Ok(None),
        _ => {
            return Err(FirewallError::ToolFailed {
                argv: tool.program().to_string(),
                summary: cap.summary(),
                applied: Vec::new(),
            });
        }
    }
    let opts = ParseOptions {
        family: Some(tool.family()),
        backend: Some(tool.backend()),
    };
    parse_save(&cap.stdout, &opts)
        .map(Some)
        .map_err(|error| FirewallError::Parse {
            program: tool.program(),
            error,
        })
}

/// Detection in the current thread's namespace.
fn detect_here() -> Result<BackendChoice, FirewallError> {
    let mut rulesets = Vec::new();
    for tool in IptablesTool::ALL {
        if let Some(rs) = save(tool)? {
            rulesets.push(rs);
        }
    }
    // Legacy tables loaded in this namespace (what iptables-nft warns about): thread-self, since
    // only this thread has entered the namespace.
    let legacy_tables: Vec<String> =
        std::fs::read_to_string("/proc/thread-self/net/ip_tables_names")
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
    Ok(manage::choose_backend(&rulesets, &legacy_tables))
}

/// Which backend `target` uses, and why: a Kubernetes marker chain, else the backend with more
/// rules (all four `*-save` tools are read), else nft ([`manage::choose_backend`]).
pub fn detect(target: &NetnsTarget) -> Result<BackendChoice, FirewallError> {
    collect::run_in(target, detect_here)?
}

/// Runs `program -w 5 --noflush [--test]` with `payload` on stdin (the `-w` wait for the xtables
/// lock bounds how long it can block; nothing else in it waits).
fn restore(program: &str, payload: &str, test: bool) -> Result<(), (String, String)> {
    let mut argv = vec![program, "-w", "5", "--noflush"];
    if test {
        argv.push("--test");
    }
    let shown = argv.join(" ");
    let mut child = Command::new(program)
        .args(&argv[1..])
        .env("LC_ALL", "C")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| (shown.clone(), format!("cannot start: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A write error shows up as the tool's own failure below.
        let _ = stdin.write_all(payload.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| (shown.clone(), format!("wait: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        Err((
            shown,
            format!(
                "failed ({}): {}",
                out.status,
                err.lines().next().unwrap_or("").trim()
            ),
        ))
    }
}

/// The operation to run on both families.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Status,
    Ensure,
    Remove,
}

fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// The whole operation, inside the namespace.
fn run_here(cfg: &FirewallConfig, op: Op) -> Result<Report, FirewallError> {
    manage::validate(&cfg.spec)?;
    let choice = match cfg.backend {
        Some(b) => BackendChoice {
            backend: b,
            reason: "given".to_string(),
        },
        None => detect_here()?,
    };
    let backend = choice.backend;
    // Every tool needed, before anything is read or written.
    for family in FAMILIES {
        let tools = [
            save_tool(backend, family).program(),
            restore_program(backend, family),
        ];
        for program in tools {
            if !which(program) {
                return Err(FirewallError::ToolMissing {
                    program: program.to_string(),
                    backend: backend.as_str(),
                });
            }
        }
    }
    let mut plans = Vec::new();
    for family in FAMILIES {
        let tool = save_tool(backend, family);
        let current = save(tool)?.ok_or_else(|| FirewallError::ToolMissing {
            program: tool.program().to_string(),
            backend: backend.as_str(),
        })?;
        let st: Status = manage::status(&cfg.spec, &current)?;
        let payload = match op {
            Op::Status => None,
            Op::Ensure => manage::ensure_payload(&cfg.spec, &current)?,
            Op::Remove => manage::remove_payload(&current)?,
        };
        plans.push((family, st, payload));
    }
    for (family, _, payload) in &plans {
        if let Some(p) = payload {
            restore(restore_program(backend, *family), p, true).map_err(|(argv, summary)| {
                FirewallError::ToolFailed {
                    argv,
                    summary,
                    applied: Vec::new(),
                }
            })?;
        }
    }
    let mut applied = Vec::new();
    let mut families = Vec::new();
    for (family, st, payload) in plans {
        if let Some(p) = &payload {
            restore(restore_program(backend, family), p, false).map_err(|(argv, summary)| {
                FirewallError::ToolFailed {
                    argv,
                    summary,
                    applied: applied.clone(),
                }
            })?;
            applied.push(family.as_str());
        }
        let in_place = match op {
            Op::Status => st.in_place(),
            Op::Ensure => true,
            Op::Remove => false,
        };
        families.push(FamilyReport {
            family: family.as_str(),
            in_place,
            missing: st.missing,
            extra: st.extra,
            applied: payload,
        });
    }
    Ok(Report {
        netns: cfg.netns.describe(),
        backend: backend.as_str(),
        backend_reason: choice.reason,
        families,
    })
}

fn run(cfg: &FirewallConfig, op: Op) -> Result<Report, FirewallError> {
    collect::run_in(&cfg.netns, || run_here(cfg, op))?
}

/// Installs what `cfg` wants, idempotently (a second call applies nothing). Blocking: runs
/// `*-save` and `*-restore` (call it from `spawn_blocking` in async code).
pub fn ensure(cfg: &FirewallConfig) -> Result<Report, FirewallError> {
    run(cfg, Op::Ensure)
}

/// Reads what is in place; applies nothing. [`Report::in_place`] tells whether all is.
pub fn status(cfg: &FirewallConfig) -> Result<Report, FirewallError> {
    run(cfg, Op::Status)
}

/// Deletes netprobe's jumps and chains (only rules with a `netprobe:` comment, and its chains).
pub fn remove(cfg: &FirewallConfig) -> Result<Report, FirewallError> {
    run(cfg, Op::Remove)
}

/// What one reconciliation did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum Change {
    /// Everything was in place.
    Unchanged,
    /// Something was missing and has been restored.
    Restored {
        /// The backend written to.
        backend: &'static str,
        /// What was missing, one line each, prefixed with the family (`ipv4 INPUT: jump … missing`).
        missing: Vec<String>,
    },
}

/// Keeps the rules in place for the daemon: call [`Reconciler::reconcile_once`] on a timer (from
/// `spawn_blocking`: it runs the iptables tools). Logs what it restored (`warn`, with what was
/// missing) and counts reconciliations.
#[derive(Debug, Clone)]
pub struct Reconciler {
    cfg: FirewallConfig,
    restored: u64,
}

impl Reconciler {
    /// A reconciler for `cfg`; checks the spec now, so a bad interface name fails at start-up.
    pub fn new(cfg: FirewallConfig) -> Result<Reconciler, FirewallError> {
        manage::validate(&cfg.spec)?;
        Ok(Reconciler { cfg, restored: 0 })
    }

    /// What it manages.
    pub fn config(&self) -> &FirewallConfig {
        &self.cfg
    }

    /// How many times something had to be restored so far.
    pub fn restored_count(&self) -> u64 {
        self.restored
    }

    /// One pass: ensure, and say whether anything had been missing.
    pub fn reconcile_once(&mut self) -> Result<Change, FirewallError> {
        let report = ensure(&self.cfg).inspect_err(|e| {
            tracing::error!(netns = %self.cfg.netns.describe(), error = %e, "firewall reconcile failed");
        })?;
        if !report.changed() {
            return Ok(Change::Unchanged);
        }
        self.restored += 1;
        let missing: Vec<String> = report
            .families
            .iter()
            .flat_map(|f| f.missing.iter().map(move |m| format!("{} {m}", f.family)))
            .collect();
        tracing::warn!(
            netns = %report.netns,
            backend = report.backend,
            missing = ?missing,
            "firewall rules restored"
        );
        Ok(Change::Restored {
            backend: report.backend,
            missing,
        })
    }
}

pub mod cli;
