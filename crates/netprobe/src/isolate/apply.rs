//! Kernel-facing part of isolation: reading the target namespace's rules, addresses and default
//! routes, and applying `iptables-restore --noflush` payloads there (with `setns(2)` on a
//! dedicated thread, [`crate::collect::run_in`]), then flushing its conntrack table; on release,
//! deleting a filter table the isolation created (nf_tables only).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::rules;
use super::source::DefaultRoute;
use crate::collect::ip::{self, Addr};
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
    /// The namespace's addresses (`ip -j addr show`; empty if it failed).
    pub addrs: Vec<Addr>,
    /// Its default routes, IPv4 first (`ip -j route show default`, both families).
    pub default_routes: Vec<DefaultRoute>,
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

    /// Whether `backend` has no filter table for the family yet: isolating creates it (and marks
    /// it, [`rules::NEW_TABLE_MARKER`]).
    pub fn lacks_filter_table(&self, backend: IptBackend, ipv6: bool) -> bool {
        !rules::has_filter_table(self.text(backend, ipv6))
    }

    /// Whether the isolation in `backend` created the family's filter table (the marker chain).
    pub fn created_table(&self, backend: IptBackend, ipv6: bool) -> bool {
        rules::created_table(self.text(backend, ipv6))
    }

    /// The save text of `backend` for both families, for before/after comparisons.
    pub fn save_text(&self, backend: IptBackend) -> (String, String) {
        (
            self.text(backend, false).to_string(),
            self.text(backend, true).to_string(),
        )
    }
}

/// The default routes of one family (`ip [-6] -j route show default`); none when it fails.
fn default_routes(ipv6: bool) -> Vec<DefaultRoute> {
    let argv: &[&str] = if ipv6 {
        &["ip", "-6", "-j", "route", "show", "default"]
    } else {
        &["ip", "-j", "route", "show", "default"]
    };
    let c = capture(argv, TOOL_TIMEOUT);
    let Some(v) = c
        .ok_stdout()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(t).ok())
    else {
        return Vec::new();
    };
    let text = |r: &serde_json::Value, k: &str| r.get(k)?.as_str().map(str::to_string);
    v.as_array()
        .into_iter()
        .flatten()
        .map(|r| DefaultRoute {
            ipv6,
            gateway: text(r, "gateway").and_then(|g| g.parse().ok()),
            dev: text(r, "dev"),
        })
        .collect()
}

/// Reads the four `*-save` outputs, the addresses, the default routes and `iptables -V` inside
/// `target`.
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
        let addrs = capture(&["ip", "-j", "addr", "show"], TOOL_TIMEOUT)
            .ok_stdout()
            .and_then(|t| ip::parse_addrs(t).ok())
            .unwrap_or_default();
        let mut routes = default_routes(false);
        routes.extend(default_routes(true));
        NsState {
            saves,
            addrs,
            default_routes: routes,
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

/// One family's isolation, as [`isolate`] applies it.
#[derive(Debug, Clone)]
pub struct FamilyPlan {
    /// The `ip6tables` family.
    pub ipv6: bool,
    /// [`rules::isolate_payload`].
    pub payload: String,
    /// Whether the family has no filter table yet (the payload creates and marks it).
    pub new_table: bool,
}

/// One family to release, as [`release`] takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FamilyRelease {
    /// The `ip6tables` family.
    pub ipv6: bool,
    /// Whether the isolation created the family's filter table (it carries
    /// [`rules::NEW_TABLE_MARKER`]).
    pub created_table: bool,
}

/// Applies `plans` (in order) with `backend`'s restore programs inside `target`, each atomically;
/// if one fails, the families already applied are released again ([`release`]'s steps, table
/// included). Then runs `conntrack -F` for both families there and returns what it said (a
/// missing `conntrack` is reported, not an error: the DROP rules match established flows anyway).
pub fn isolate(
    target: &NetnsTarget,
    backend: IptBackend,
    plans: &[FamilyPlan],
) -> Result<Vec<String>, ApplyError> {
    run_in(target, || {
        let mut done: Vec<FamilyRelease> = Vec::new();
        for p in plans {
            if let Err(e) = restore(&backend.restore(p.ipv6), &p.payload) {
                for d in &done {
                    let _ = release_family(backend, *d);
                }
                return Err(e);
            }
            done.push(FamilyRelease {
                ipv6: p.ipv6,
                created_table: p.new_table,
            });
        }
        let mut notes = Vec::new();
        for fam in ["ipv4", "ipv6"] {
            let c = capture(&["conntrack", "-F", "-f", fam], TOOL_TIMEOUT);
            let said = c.stderr.lines().next().unwrap_or("").to_string();
            notes.push(match c.status {
                CaptureStatus::Ok => format!("conntrack -F -f {fam}: {said}"),
                _ => format!("conntrack -F -f {fam}: {}", c.summary()),
            });
        }
        Ok(notes)
    })?
}

/// Releases `families` inside `target` in order: each with [`rules::release_payload`] (atomic),
/// then, where the isolation created the filter table, deletes it again if it is empty (nf_tables;
/// x_tables cannot unload a table: it stays, empty, and the note says so). Returns what
/// happened to such tables, for the user. Stops at the first family whose payload fails.
pub fn release(
    target: &NetnsTarget,
    backend: IptBackend,
    families: &[FamilyRelease],
) -> Result<Vec<String>, ApplyError> {
    run_in(target, || {
        let mut notes = Vec::new();
        for f in families {
            notes.extend(release_family(backend, *f)?);
        }
        Ok(notes)
    })?
}

fn release_family(backend: IptBackend, f: FamilyRelease) -> Result<Option<String>, ApplyError> {
    restore(
        &backend.restore(f.ipv6),
        &rules::release_payload(f.created_table),
    )?;
    Ok(f.created_table.then(|| drop_created_table(backend, f.ipv6)))
}

/// After the release payload, in a family whose filter table the isolation created: with
/// nf_tables, deletes the table (`nft delete table ip|ip6 filter`) when it holds nothing but the
/// empty built-in chains at policy accept ([`rules::table_leftovers`]), so `iptables-save` prints
/// what it printed before; anything else is left in place and named. x_tables cannot unload a
/// table once a namespace has loaded it (the kernel keeps it registered until the namespace
/// ends), so with legacy the table stays, empty with ACCEPT policies. Returns the sentence for
/// the user. nft has no conditional delete: a rule added in the milliseconds between the listing
/// and the delete would go with the table (a pod's own namespace has no such writer).
fn drop_created_table(backend: IptBackend, ipv6: bool) -> String {
    let fam = if ipv6 { "IPv6" } else { "IPv4" };
    let save = backend.save(ipv6);
    if backend == IptBackend::Legacy {
        return format!(
            "the {fam} filter table did not exist before the isolation, and iptables-legacy (x_tables) \
             cannot unload a table once loaded: it stays, empty, with ACCEPT policies; {save} prints \
             it as `*filter` and three `ACCEPT` policy lines, which it did not before"
        );
    }
    let nft_family = if ipv6 { "ip6" } else { "ip" };
    let listed = capture(
        &["nft", "-j", "list", "table", nft_family, "filter"],
        TOOL_TIMEOUT,
    );
    let leftovers = match listed.ok_stdout() {
        Some(t) => rules::table_leftovers(t),
        None => Err(format!(
            "nft -j list table {nft_family} filter: {}",
            listed.summary()
        )),
    };
    match leftovers {
        Ok(l) if l.is_empty() => {
            let d = capture(
                &["nft", "delete", "table", nft_family, "filter"],
                TOOL_TIMEOUT,
            );
            match d.status {
                CaptureStatus::Ok => format!(
                    "deleted the {fam} filter table: the isolation had created it and it held nothing \
                     else (`nft delete table {nft_family} filter`); {save} prints what it did before"
                ),
                _ => format!(
                    "the {fam} filter table the isolation created could not be deleted \
                     (nft delete table {nft_family} filter: {}): it stays, empty, with ACCEPT policies",
                    d.summary()
                ),
            }
        }
        Ok(l) => format!(
            "the {fam} filter table was created by the isolation but now also holds {}: left in place",
            l.join(", ")
        ),
        Err(e) => format!(
            "the {fam} filter table the isolation created was left in place (empty unless \
             something else added to it): {e}"
        ),
    }
}
