//! Differential test of the packet-path evaluator against the kernel (needs root, network
//! namespaces, iptables-legacy/-nft, nft and conntrack; fails, never skips, where they are missing).
//!
//! The lab: three namespaces, client (198.51.100.1) — router — server (203.0.113.1), joined by
//! veth pairs with permanent neighbour entries. Only the router holds rules under test: each case
//! ([`netfilter::generate::cases`]) restores a legacy and an nf_tables ruleset there (all five
//! tables each, so a restore replaces the previous case's), flushes conntrack, and sends one
//! hand-built packet (a TCP SYN, a UDP datagram or an ICMP echo request, from a raw socket) along
//! one of four paths: client → server (forwarded), client → router (input), router → client or
//! server (local output), router → itself (loopback).
//!
//! The outcome is read from a native nftables table in the router that only counts (no verdicts,
//! so by nft(8) "OVERALL EVALUATION OF THE RULESET" it cannot change any packet's fate):
//! * chains at priority −1000 on prerouting/output (before raw at −300) count the test packet
//!   arriving, and every TCP RST and ICMP destination-unreachable the router emits (a REJECT's
//!   answer, counted before the router's own OUTPUT rules could drop it);
//! * chains at priority +1000 on input and postrouting (after nat at +100, the last iptables
//!   table) count the test packet having survived every chain of its path.
//!
//! Survived → accept; else an answer of the right kind → reject; else drop. The client and the
//! server drop everything in raw PREROUTING, so nothing answers the test packet from beyond the
//! router. The kernel's outcome must equal the evaluator's verdict, or with `-m statistic` one of
//! its branches' verdicts. `undetermined` is accepted only on cases the generator marked as holding
//! something undecidable by design, and must stay a small minority.
//!
//! Runs: `differential_kernel_agrees` (CI) runs `NETFILTER_DIFF_CASES` cases (default 1000) from
//! seed `NETFILTER_DIFF_SEED` (default fixed); case `i` is generated from seed `SEED + i`, which is
//! printed with any disagreement. Reproduce one case with
//! `NETFILTER_DIFF_SEED=<case seed> NETFILTER_DIFF_CASES=1`. `regressions_kernel_agrees` runs the
//! hand-written cases and the seeds of past disagreements.
#![allow(clippy::unwrap_used, reason = "tests")]

mod differential_lab;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use differential_lab::{DiffLab, Outcome, empty_ruleset, expected, run, save_command};
use netfilter::eval::{Flow, NatKind, Origin, RuleRef, Trace, Traces, Verdict, trace};
use netfilter::generate::cases::{Case, CasePath, case, packet_len};
use netfilter::{Family, ParseOptions, parse_save};

/// Default first seed of the CI run (fixed, so CI is reproducible; the long run takes another).
const DEFAULT_SEED: u64 = 0x0D1F_F000;
/// Default number of cases.
const DEFAULT_CASES: u64 = 1000;

/// The family of the case generated from `seed`: one in four is IPv6, chosen by a hash of the
/// seed (so a case's seed alone reproduces it).
fn family_of(seed: u64) -> Family {
    if netfilter::generate::Rng::new(seed ^ 0x6666).next_u64() % 4 == 3 {
        Family::Ipv6
    } else {
        Family::Ipv4
    }
}

fn show_trace(t: &Trace) -> String {
    let mut s = format!(
        "verdict {:?} (p={:.3}), decided by {:?}\n",
        t.verdict,
        t.probability,
        t.decided_by
            .as_ref()
            .map(|r| (&r.backend, &r.table, &r.chain, r.rule_number, &r.text))
    );
    for st in &t.steps {
        let _ = writeln!(
            s,
            "    {:<11} {:<6} {:<8} {:<14} {:>4} {} {}",
            st.hook.to_string(),
            st.backend.map_or("-".into(), |b| format!("{b:?}")),
            st.table.to_string(),
            st.chain,
            st.rule_number.map_or("-".into(), |n| n.to_string()),
            if st.matched { "MATCH" } else { "     " },
            st.why
        );
    }
    for n in &t.nat {
        let _ = writeln!(s, "    nat: {:?} {:?} -> {:?}", n.kind, n.from, n.to);
    }
    s
}

fn report(lab: &DiffLab, c: &Case, traces: &Traces, observed: &str, why: &str) -> String {
    let mut s = format!(
        "DISAGREEMENT (seed {seed}; reproduce: NETFILTER_DIFF_SEED={seed} NETFILTER_DIFF_CASES=1 \
         cargo nextest run -p netfilter --test differential): {why}\n\
         path: {}\nflow: {:?}\nobserved: {observed}\n\
         --- legacy ruleset (iptables-legacy-restore) ---\n{}\
         --- nf_tables ruleset (iptables-nft-restore) ---\n{}",
        c.path.as_str(),
        c.flow,
        c.legacy,
        c.nft,
        seed = c.seed,
    );
    for (i, t) in traces.branches.iter().enumerate() {
        let _ = write!(s, "--- evaluator branch {i} ---\n{}", show_trace(t));
    }
    s.push_str(&lab.saved_with_counters(c.flow.family));
    s
}

/// Tallies of a run.
#[derive(Debug, Default)]
struct Tally {
    cases: u64,
    by_outcome: BTreeMap<String, u64>,
    by_path: BTreeMap<&'static str, u64>,
    undetermined: u64,
    no_route: u64,
    split: u64,
    /// Drop/reject cases whose deciding rule was checked against its kernel counter.
    attributed: u64,
    /// Rejects the kernel could not answer (see [`unanswered_reject`]).
    unanswered_rejects: u64,
    failures: Vec<String>,
}

/// Checks the rule the evaluator names as deciding a drop or reject against the kernel's packet
/// counter of that rule (or policy): it must have counted at least one packet. `None` when there
/// is nothing to check (an accept, several branches, an undetermined verdict); `Some("")` when the
/// counter agrees; otherwise the complaint.
fn attribution(lab: &DiffLab, traces: &Traces, outcome: Outcome) -> Option<String> {
    let t = traces.single()?;
    let by = t.decided_by.as_ref()?;
    if outcome == Outcome::Accepted || expected(&t.verdict) != Some(outcome) {
        return None;
    }
    Some(if rule_counter(lab, by)? == 0 {
        format!(
            "the evaluator says `{}` ({:?} {} {}) decided, but the kernel's counter for it is 0",
            by.text, by.backend, by.table, by.chain
        )
    } else {
        String::new()
    })
}

/// The kernel's packet counter of the rule (or chain policy) `by`, from
/// `ip[6]tables-{legacy,nft}-save -c -t TABLE`; `None` when its backend is not known.
fn rule_counter(lab: &DiffLab, by: &RuleRef) -> Option<u64> {
    let family = if by.family == Family::Ipv6 {
        Family::Ipv6
    } else {
        Family::Ipv4
    };
    let cmd = save_command(family, by.backend?);
    let table = by.table.to_string();
    let saved = run(&lab.router, &lab.lock(), &[cmd, "-c", "-t", &table]);
    let rs = parse_save(&saved, &ParseOptions::default())
        .unwrap_or_else(|e| panic!("cannot parse {cmd} -c: {e}\n{saved}"));
    let chain = rs
        .table(by.table.xt()?)
        .and_then(|t| t.chain(&by.chain))
        .unwrap_or_else(|| panic!("{cmd}: no chain {} in {table}\n{saved}", by.chain));
    Some(match by.rule_number {
        Some(n) => chain
            .rules
            .get(n - 1)
            .and_then(|r| r.counters)
            .map_or(0, |c| c.packets),
        None => chain.counters.packets,
    })
}

/// A REJECT whose answer the kernel could not route (e.g. to a loopback-sourced packet SNATed to
/// a remote address: the ICMP error would leave with source 127.0.0.1) looks like a drop from
/// outside. It counts as the evaluator's reject when the kernel's counter of exactly the REJECT
/// rule the evaluator names is not zero.
fn unanswered_reject(lab: &DiffLab, traces: &Traces) -> Option<Outcome> {
    traces.branches.iter().find_map(|t| {
        let by = t.decided_by.as_ref()?;
        matches!(t.verdict, Verdict::Reject { .. })
            .then_some(())
            .and_then(|()| rule_counter(lab, by))
            .filter(|n| *n > 0)
            .and_then(|_| expected(&t.verdict))
    })
}

/// Whether every undetermined branch gave up on an interface or address that only a route
/// lookup could give: the output interface after a destination-changing DNAT, or the source a
/// MASQUERADE picked when the model cannot tell which address it takes.
fn no_route_model(traces: &Traces) -> bool {
    traces.branches.iter().all(|t| match &t.verdict {
        Verdict::Undetermined { reason } => {
            let rerouted = t.nat.iter().any(|n| {
                matches!(n.kind, NatKind::Dnat | NatKind::Redirect) && n.from.addr != n.to.addr
            });
            // MASQUERADE out of `lo` takes a global address of some other device.
            let masq_unknown = t
                .nat
                .iter()
                .any(|n| n.kind == NatKind::Masquerade && n.to.addr.is_none());
            (rerouted
                && (reason.contains("output interface not known")
                    || reason.contains("source address not known")))
                || (masq_unknown && reason.contains("source address not known"))
        }
        _ => true,
    })
}

/// Runs one case; records a failure message on disagreement. Returns the kernel's outcome.
fn check(lab: &mut DiffLab, c: &Case, tally: &mut Tally) -> Outcome {
    let rulesets = c
        .rulesets()
        .unwrap_or_else(|e| panic!("seed {}: the case does not parse: {e}", c.seed));
    let host = lab.lab.host_model();
    let traces = trace(&rulesets, &host, &c.flow);
    let (outcome, counts, send_err) = lab.observe(c);
    let observed = format!("{outcome:?} (counters {counts:?}, send error {send_err:?})");
    tally.cases += 1;
    *tally.by_outcome.entry(format!("{outcome:?}")).or_default() += 1;
    *tally.by_path.entry(c.path.as_str()).or_default() += 1;
    *tally
        .by_path
        .entry(match c.flow.family {
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
        })
        .or_default() += 1;
    if traces.branches.len() > 1 {
        tally.split += 1;
    }
    let undetermined = traces
        .branches
        .iter()
        .any(|t| matches!(t.verdict, Verdict::Undetermined { .. }));
    if undetermined {
        if no_route_model(&traces) {
            // The evaluator knows no routes: after a DNAT that changes the destination it does
            // not know the output interface (nor what MASQUERADE picks from it).
            tally.no_route += 1;
        } else if c.undecidable.is_empty() {
            let why = "undetermined on a case with nothing undecidable in it";
            tally.failures.push(report(lab, c, &traces, &observed, why));
        } else {
            tally.undetermined += 1;
        }
        return outcome;
    }
    if let Some(why) = attribution(lab, &traces, outcome) {
        tally.attributed += 1;
        if !why.is_empty() {
            tally
                .failures
                .push(report(lab, c, &traces, &observed, &why));
            return outcome;
        }
    }
    let possible: Vec<Option<Outcome>> = traces
        .branches
        .iter()
        .map(|t| expected(&t.verdict))
        .collect();
    if outcome == Outcome::Dropped
        && !possible.contains(&Some(outcome))
        && let Some(reject) = unanswered_reject(lab, &traces)
    {
        tally.unanswered_rejects += 1;
        return reject;
    }
    if !possible.contains(&Some(outcome)) {
        let why = format!("the kernel's outcome is none of the evaluator's {possible:?}");
        tally
            .failures
            .push(report(lab, c, &traces, &observed, &why));
    }
    outcome
}

fn env_u64(key: &str, default: u64) -> u64 {
    match std::env::var(key) {
        Ok(v) => {
            let v = v.trim();
            let parsed = match v.strip_prefix("0x") {
                Some(h) => u64::from_str_radix(h, 16),
                None => v.parse(),
            };
            parsed.unwrap_or_else(|_| panic!("{key}={v} is not a number"))
        }
        Err(_) => default,
    }
}

fn finish(name: &str, tally: &Tally, started: Instant) {
    eprintln!(
        "{name}: {} cases in {:.1}s; outcomes {:?}; paths {:?}; {} split by -m statistic; {} deciding rules checked against kernel counters; {} rejects without a routable answer; {} \
         undetermined (generated undecidable), {} (no route model); {} disagreements",
        tally.cases,
        started.elapsed().as_secs_f64(),
        tally.by_outcome,
        tally.by_path,
        tally.split,
        tally.attributed,
        tally.unanswered_rejects,
        tally.undetermined,
        tally.no_route,
        tally.failures.len()
    );
    if !tally.failures.is_empty() {
        let shown: Vec<&String> = tally.failures.iter().take(5).collect();
        panic!(
            "{} of {} cases disagree with the kernel; the first {}:\n\n{}",
            tally.failures.len(),
            tally.cases,
            shown.len(),
            shown
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("\n\n")
        );
    }
}

#[test]
fn differential_kernel_agrees() {
    let seed = env_u64("NETFILTER_DIFF_SEED", DEFAULT_SEED);
    let n = env_u64("NETFILTER_DIFF_CASES", DEFAULT_CASES);
    eprintln!("differential: seed {seed:#x} ({seed}), {n} cases");
    let started = Instant::now();
    let mut lab = DiffLab::new();
    let mut tally = Tally::default();
    for i in 0..n {
        let s = seed.wrapping_add(i);
        let c = case(s, &lab.lab, family_of(s));
        check(&mut lab, &c, &mut tally);
        if (i + 1) % 1000 == 0 && i + 1 < n {
            eprintln!(
                "differential: {} cases, {:.0}s, {} disagreements so far",
                i + 1,
                started.elapsed().as_secs_f64(),
                tally.failures.len()
            );
        }
    }
    finish("differential", &tally, started);
    if n >= 500 {
        // A run that could not decide is no evidence: undetermined must stay a small minority, and
        // every kind of outcome must have been seen.
        let undetermined = tally.undetermined + tally.no_route;
        assert!(
            undetermined * 10 < tally.cases,
            "{undetermined} of {} cases undetermined",
            tally.cases
        );
        // TCP resets are about 0.5% of cases: required only of longer runs.
        let needed: &[&str] = if n >= 2000 {
            &["Accepted", "Dropped", "Reset"]
        } else {
            &["Accepted", "Dropped"]
        };
        for o in needed {
            assert!(
                tally.by_outcome.contains_key(*o),
                "no case ended {o}: {tally:?}"
            );
        }
        assert!(
            tally
                .by_outcome
                .keys()
                .any(|k| k.starts_with("Unreachable")),
            "no case was rejected with ICMP: {tally:?}"
        );
    }
}

/// `text` plus an empty block for every table it does not have, so that restoring it replaces
/// all five tables.
fn all_tables(text: &str) -> String {
    let mut s = text.to_string();
    let empty = empty_ruleset();
    for block in empty.split_inclusive("COMMIT\n") {
        let header = block.lines().next().unwrap_or_default();
        if !text.lines().any(|l| l == header) {
            s.push_str(block);
        }
    }
    s
}

/// A hand-written case on the lab's router.
fn written(path: CasePath, flow: Flow, legacy: &str, nft: &str) -> Case {
    Case {
        seed: 0,
        path,
        flow,
        legacy: all_tables(legacy),
        nft: all_tables(nft),
        undecidable: Vec::new(),
    }
}

/// Seeds of past disagreements (valid for the generator version that found them; the
/// hand-written cases below are the durable form).
const REGRESSION_SEEDS: [(u64, Family); 8] = [
    (0xd1ff07f, Family::Ipv4),
    (0xd1ff0d1, Family::Ipv4),
    (0xd1ff2a8, Family::Ipv4),
    (0xd1ff283, Family::Ipv4),
    (13139, Family::Ipv4),
    (779189, Family::Ipv4),
    (0xd1ff016, Family::Ipv4),
    (20280609, Family::Ipv6),
];

#[test]
fn regressions_kernel_agrees() {
    let started = Instant::now();
    let mut lab = DiffLab::new();
    let l = lab.lab.clone();
    let v4 = IpAddr::V4;
    let forward = |mut f: Flow| {
        f.in_iface = Some(l.inner_if.clone());
        f.out_iface = Some(l.outer_if.clone());
        f.length = Some(packet_len(f.family, f.protocol));
        f
    };
    let local = |mut f: Flow| {
        f.uid = Some(0);
        f.gid = Some(0);
        f.length = Some(packet_len(f.family, f.protocol));
        f
    };
    let tcp = |origin, s: Ipv4Addr, d: Ipv4Addr, port| {
        let mut f = Flow::tcp(origin, v4(s), v4(d), port);
        f.sport = Some(40_001);
        f
    };
    let udp = |origin, s: Ipv4Addr, d: Ipv4Addr, port| {
        let mut f = Flow::udp(origin, v4(s), v4(d), port);
        f.sport = Some(40_002);
        f
    };
    let fwd_tcp = forward(tcp(Origin::Forward, l.client, l.server, 443));
    let fwd_udp = forward(udp(Origin::Forward, l.client, l.server, 80));
    let lo_udp = local(udp(Origin::LocalOutput, l.router_outer, l.router_outer, 22));
    let lo_udp_127 = local(udp(
        Origin::LocalOutput,
        Ipv4Addr::LOCALHOST,
        Ipv4Addr::LOCALHOST,
        53,
    ));
    let mut out_udp = local(udp(Origin::LocalOutput, l.router_outer, l.server, 22));
    out_udp.out_iface = Some(l.outer_if.clone());
    let mut out_tcp = local(tcp(Origin::LocalOutput, l.router_inner, l.client, 443));
    out_tcp.out_iface = Some(l.inner_if.clone());
    let empty = empty_ruleset();
    let out = &l.outer_if;
    let inner = &l.inner_if;
    let cases = [
        // -m conntrack without an entry (raw, before conntrack): only the state test counts.
        written(
            CasePath::Forward,
            fwd_tcp.clone(),
            "*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
             -A PREROUTING -m conntrack ! --ctstate NEW ! --ctorigdst 203.0.113.254 -j DROP\n\
             COMMIT\n",
            &empty,
        ),
        // NOTRACK on loopback re-entry is ignored: the packet stays NEW.
        written(
            CasePath::Loopback,
            lo_udp,
            "*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n-A PREROUTING -p udp -j NOTRACK\n\
             COMMIT\n*filter\n:INPUT DROP [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
             -A INPUT -m conntrack --ctstate NEW -j ACCEPT\nCOMMIT\n",
            &empty,
        ),
        // A port-only DNAT keeps the route: `-o` is still known.
        written(
            CasePath::Forward,
            fwd_udp,
            &format!(
                "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
                 :POSTROUTING ACCEPT [0:0]\n\
                 -A PREROUTING -p udp -j DNAT --to-destination 203.0.113.1:8080\nCOMMIT\n\
                 *mangle\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n\
                 :OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n\
                 -A POSTROUTING -o {out} -j DROP\nCOMMIT\n"
            ),
            &empty,
        ),
        // Equal priority: the nf_tables chain runs before the legacy one (registered later, it is
        // inserted first), so the legacy MARK comes too late for the nft rule...
        written(
            CasePath::LocalRemote,
            out_udp.clone(),
            "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
             -A OUTPUT -j MARK --set-xmark 0x1/0xffffffff\nCOMMIT\n",
            "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
             -A OUTPUT -m mark --mark 0x1 -j DROP\nCOMMIT\n",
        ),
        // ...and the nft MARK is seen by the legacy rule.
        written(
            CasePath::LocalRemote,
            out_udp,
            "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
             -A OUTPUT -m mark --mark 0x1 -j DROP\nCOMMIT\n",
            "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
             -A OUTPUT -j MARK --set-xmark 0x1/0xffffffff\nCOMMIT\n",
        ),
        // After a nat OUTPUT DNAT to a local address, filter OUTPUT still sees the old device.
        written(
            CasePath::LocalRemote,
            out_tcp,
            &format!(
                "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
                 :POSTROUTING ACCEPT [0:0]\n\
                 -A OUTPUT -p tcp -j DNAT --to-destination 203.0.113.254:80\nCOMMIT\n\
                 *filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
                 -A OUTPUT -o {inner} -p tcp -m tcp --dport 80 -j REJECT --reject-with tcp-reset\n\
                 COMMIT\n"
            ),
            &empty,
        ),
        // iptables-nft's security chain sits at 150: the legacy one (50) decides first.
        written(
            CasePath::Forward,
            fwd_tcp.clone(),
            "*security\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
             -A FORWARD -p tcp -j DROP\nCOMMIT\n",
            "*security\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n",
        ),
        // A packet from 127.0.0.1 DNATed to a remote address is dropped at re-route (EINVAL).
        written(
            CasePath::Loopback,
            lo_udp_127,
            "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
             :POSTROUTING ACCEPT [0:0]\n-A OUTPUT -p udp -j DNAT --to-destination 203.0.113.1\n\
             COMMIT\n",
            &empty,
        ),
    ];
    let mut tally = Tally::default();
    let outcomes: Vec<Outcome> = cases
        .iter()
        .map(|c| check(&mut lab, c, &mut tally))
        .collect();
    for (s, family) in REGRESSION_SEEDS {
        let c = case(s, &lab.lab, family);
        check(&mut lab, &c, &mut tally);
    }
    assert_eq!(
        tally.undetermined + tally.no_route,
        0,
        "regression cases must be decided: {tally:?}"
    );
    finish("regressions", &tally, started);
    // The lab itself: the hand-written cases end as their comments say.
    use Outcome::{Accepted, Dropped, Reset};
    assert_eq!(
        outcomes,
        [
            Dropped, Accepted, Dropped, Accepted, Dropped, Reset, Dropped, Dropped
        ]
    );
}
