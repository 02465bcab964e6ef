//! Finding the network namespace on this host that owns an address (a pod's, seen from its
//! node). Kernel-facing: scans the named namespaces (`/run/netns/*`) and every process's
//! `/proc/PID/ns/net`, deduplicated by the namespace file's device and inode (two files with the
//! same inode are one namespace, `namespaces(7)`), enters each with [`run_in`] and asks
//! `ip -j addr show`. Bounded: at most [`MAX_CANDIDATES`] namespaces and [`SCAN_BUDGET`] in all.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt as _;
use std::time::{Duration, Instant};

use super::{NetnsTarget, TOOL_TIMEOUT, capture, ip, run_in};

/// At most this many distinct namespaces are entered.
pub const MAX_CANDIDATES: usize = 256;
/// The whole scan stops after this long.
pub const SCAN_BUDGET: Duration = Duration::from_secs(15);

fn inode(target: &NetnsTarget) -> Option<(u64, u64)> {
    let path = target
        .path()
        .unwrap_or_else(|| "/proc/thread-self/ns/net".into());
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// The namespaces to look in: named ones first (stable names), then by pid, without the
/// prober's own and without duplicates. netprobe's own namespace is a candidate when the prober
/// is elsewhere (a node address seen from a pod); it is found through netprobe's pid.
fn candidates(exclude: &NetnsTarget, notes: &mut Vec<String>) -> Vec<NetnsTarget> {
    let mut seen = BTreeSet::new();
    if let Some(i) = inode(exclude) {
        seen.insert(i);
    }
    let mut out = Vec::new();
    let mut names: Vec<String> = std::fs::read_dir("/run/netns")
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    let mut pids: Vec<u32> = match std::fs::read_dir("/proc") {
        Ok(d) => d
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect(),
        Err(e) => {
            notes.push(format!("/proc: {e}"));
            Vec::new()
        }
    };
    pids.sort_unstable();
    let all = names
        .into_iter()
        .map(|name| NetnsTarget::Named { name })
        .chain(pids.into_iter().map(|pid| NetnsTarget::Pid { pid }));
    for t in all {
        if let Some(i) = inode(&t)
            && seen.insert(i)
        {
            out.push(t);
        }
    }
    out
}

/// The namespace other than `prober`'s that has `addr` on one of its interfaces, and notes on
/// the search (how many were scanned, what was cut short).
pub fn owner_of(addr: IpAddr, prober: &NetnsTarget) -> (Option<NetnsTarget>, Vec<String>) {
    let mut notes = Vec::new();
    let start = Instant::now();
    let list = candidates(prober, &mut notes);
    let total = list.len();
    let mut scanned = 0;
    for t in list.into_iter().take(MAX_CANDIDATES) {
        if start.elapsed() > SCAN_BUDGET {
            notes.push(format!(
                "search stopped after {} s with {scanned} of {total} namespaces scanned",
                SCAN_BUDGET.as_secs()
            ));
            return (None, notes);
        }
        scanned += 1;
        let has = run_in(&t, || {
            capture(
                &["ip", "-j", "addr", "show"],
                TOOL_TIMEOUT.min(Duration::from_secs(5)),
            )
            .ok_stdout()
            .and_then(|s| ip::parse_addrs(s).ok())
            .is_some_and(|a| a.iter().any(|a| a.addr == addr))
        });
        match has {
            Ok(true) => {
                notes.push(format!(
                    "{addr} is an address of {} (found after scanning {scanned} of {total} other namespaces)",
                    t.describe()
                ));
                return (Some(t), notes);
            }
            Ok(false) => {}
            // A process that exited since the listing is common; a few examples suffice.
            Err(e) if notes.len() < 5 => notes.push(format!("{}: {e}", t.describe())),
            Err(_) => {}
        }
    }
    if total > MAX_CANDIDATES {
        notes.push(format!(
            "only the first {MAX_CANDIDATES} of {total} other namespaces were scanned"
        ));
    }
    notes.push(format!(
        "{addr} is not an address of any of the {scanned} other network namespaces scanned \
         (/run/netns/*, /proc/*/ns/net)"
    ));
    (None, notes)
}
