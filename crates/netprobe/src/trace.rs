//! The rule verbs: `netprobe trace` (which netfilter rule decides a flow, from saved rulesets) and
//! `netprobe rules check` (static findings on a ruleset or an `iptables-restore` payload). Both are
//! thin shells over the `netfilter` crate: read files, build the question, print the answer.
//!
//! With `--live`, `trace` collects the rules, ipsets, addresses and route itself ([`crate::collect`]).
//!
//! Exit codes: `trace` 0 accept, 1 drop/reject/undetermined; `rules check` 0 clean (info findings
//! only), 1 a warning or error finding; both 2 on bad input (unreadable file, parse error with its
//! line number and text, inconsistent flow; with `--live` a namespace or pid that does not exist or
//! cannot be entered, or collected output that does not parse).

use std::fmt::Write as _;
use std::io::IsTerminal as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use netfilter::checks::{self, Finding, Severity};
use netfilter::eval::{
    ConnState, Endpoint, Flow, HostModel, Origin, RuleRef, Step, Trace, Traces, Verdict, trace_all,
};
use netfilter::nft::{self, NftRuleset};
use netfilter::{
    Backend, Family, ParseError, ParseOptions, Ruleset, parse_ipset_save, parse_restore_payload,
    parse_save,
};
use serde_json::{Value, json};

use crate::collect::{self, NetnsTarget, RouteQuery};
use crate::oneshot::{EXIT_FAILED, EXIT_OK, EXIT_USAGE};

mod args;
mod live_report;

pub use args::{
    LocalAddrArg, PathArg, ProtoArg, StateArg, ToArg, TraceArgs, parse_local_addr, parse_proto,
    parse_to,
};

/// An input error: which file, and the parser's line and text when there is one.
struct InputError {
    message: String,
    file: Option<String>,
    parse: Option<ParseError>,
}

impl InputError {
    fn plain(message: String) -> InputError {
        InputError {
            message,
            file: None,
            parse: None,
        }
    }

    fn report(&self, verb: &str, json_out: bool) -> u8 {
        if json_out {
            let mut e = json!({ "message": self.message });
            if let Some(f) = &self.file {
                e["file"] = json!(f);
            }
            if let Some(p) = &self.parse {
                e["line"] = json!(p.line);
                e["text"] = json!(p.text);
            }
            println!("{}", json!({ "error": e }));
        } else {
            eprintln!("netprobe {verb}: {}", self.message);
        }
        EXIT_USAGE
    }
}

fn read(path: &Path) -> Result<String, InputError> {
    std::fs::read_to_string(path).map_err(|e| InputError {
        message: format!("{}: cannot read: {e}", path.display()),
        file: Some(path.display().to_string()),
        parse: None,
    })
}

fn parse_failed(path: &Path, e: ParseError) -> InputError {
    InputError {
        message: format!("{}: {e}", path.display()),
        file: Some(path.display().to_string()),
        parse: Some(e),
    }
}

/// What a trace runs on, read from files or collected live.
struct Input {
    rulesets: Vec<Ruleset>,
    /// Native nftables rulesets (`nft -j list ruleset`).
    nft: Vec<NftRuleset>,
    host: HostModel,
    from: IpAddr,
    out_iface: Option<String>,
    /// With `--live`: what was collected, for the report.
    live: Option<live_report::LiveReport>,
}

/// Builds the flow from the arguments, the source address and output interface decided.
fn question(args: &TraceArgs, from: IpAddr, out_iface: Option<String>) -> Result<Flow, InputError> {
    let family = Family::of(args.to.addr);
    if Family::of(from) != family {
        return Err(InputError::plain(format!(
            "--from {} and --to {} are of different address families",
            from, args.to.addr
        )));
    }
    let origin = match args.path {
        PathArg::Output => Origin::LocalOutput,
        PathArg::Input => Origin::Input,
        PathArg::Forward => Origin::Forward,
    };
    let mut flow = match args.proto {
        ProtoArg::Icmp => Flow::echo_request(origin, from, args.to.addr),
        ProtoArg::Tcp => Flow::new(origin, 6, from, args.to.addr),
        ProtoArg::Udp => Flow::new(origin, 17, from, args.to.addr),
        ProtoArg::Number(n) => Flow::new(origin, n, from, args.to.addr),
    };
    // TCP, UDP, DCCP, SCTP, UDP-Lite: the protocols with ports that iptables matches on.
    let has_ports = matches!(flow.protocol, 6 | 17 | 33 | 132 | 136);
    if !has_ports && (args.to.port.is_some() || args.sport.is_some()) {
        return Err(InputError::plain(format!(
            "protocol {} has no ports; drop the port from --to and --sport",
            flow.protocol
        )));
    }
    flow.dport = args.to.port;
    flow.sport = args.sport;
    flow.in_iface.clone_from(&args.in_iface);
    flow.out_iface = out_iface;
    Ok(flow.with_state(match args.state {
        StateArg::New => ConnState::New,
        StateArg::Established => ConnState::Established,
        StateArg::Related => ConnState::Related,
        StateArg::Invalid => ConnState::Invalid,
    }))
}

fn add_local_addrs(host: HostModel, args: &TraceArgs) -> HostModel {
    let host = args
        .local_addrs
        .iter()
        .fold(host, |h, a| h.with_addr(&a.iface, a.addr, a.prefix));
    args.routes
        .iter()
        .fold(host, |h, r| h.with_route(r.dst, &r.dev))
}

/// `--rules` and `--ipset` files.
fn load_files(args: &TraceArgs) -> Result<Input, InputError> {
    let mut rulesets = Vec::new();
    for path in &args.rules {
        let text = read(path)?;
        let rs = parse_save(&text, &ParseOptions::default()).map_err(|e| parse_failed(path, e))?;
        rulesets.push(rs);
    }
    let mut nft = Vec::new();
    for path in &args.nft_json {
        let text = read(path)?;
        let rs = nft::parse_json(&text)
            .map_err(|e| InputError::plain(format!("{}: {e}", path.display())))?;
        nft.push(rs);
    }
    let mut host = add_local_addrs(HostModel::default(), args);
    for path in &args.ipsets {
        let text = read(path)?;
        let sets = parse_ipset_save(&text).map_err(|e| parse_failed(path, e))?;
        host.ipsets.extend(sets);
    }
    let family = Family::of(args.to.addr);
    let native = nft
        .iter()
        .flat_map(|n| &n.tables)
        .any(|t| t.family.sees(family));
    if !native && !rulesets.iter().any(|rs| rs.family == family) {
        return Err(InputError::plain(format!(
            "no --rules file (and no --nft-json table) is of the flow's family ({}); an \
             ip6tables-save header says IPv6",
            family.as_str()
        )));
    }
    let from = args
        .from
        .ok_or_else(|| InputError::plain("--from is required without --live".into()))?;
    Ok(Input {
        rulesets,
        nft,
        host,
        from,
        out_iface: args.out_iface.clone(),
        live: None,
    })
}

/// `--live`: collect in the target namespace; the source address and output device default to
/// the kernel's route for the destination.
fn load_live(args: &TraceArgs) -> Result<Input, InputError> {
    let target = match (&args.netns, args.pid) {
        (Some(name), _) => NetnsTarget::Named { name: name.clone() },
        (None, Some(pid)) => NetnsTarget::Pid { pid },
        (None, None) => NetnsTarget::Current,
    };
    let output = args.path == PathArg::Output;
    let query = RouteQuery {
        to: args.to.addr,
        from: args.from,
    };
    let questions = if output { vec![query] } else { Vec::new() };
    let snap = collect::collect(&target, &questions)
        .map_err(|e| InputError::plain(format!("--live: {e}")))?;
    let snap_err = |e: collect::SnapshotParseError| InputError {
        message: format!("--live: {e}"),
        file: Some(e.tool.clone()),
        parse: Some(e.error),
    };
    let rulesets = snap.rulesets().map_err(snap_err)?;
    let nft: Vec<NftRuleset> = snap
        .nft()
        .map_err(|e| InputError::plain(format!("--live: nft -j list ruleset output, {e}")))?
        .into_iter()
        .collect();
    let host = add_local_addrs(snap.host_model().map_err(snap_err)?, args);
    let route = snap.route(query).filter(|_| output);
    let from = match (args.from, route) {
        (Some(f), _) => f,
        (None, Some(r)) => r.route.as_ref().and_then(|r| r.prefsrc).ok_or_else(|| {
            InputError::plain(format!(
                "--live: no --from given and the kernel has no source address for {}: {} ({})",
                args.to.addr,
                r.capture.argv.join(" "),
                r.capture.summary()
            ))
        })?,
        (None, None) => {
            return Err(InputError::plain(
                "--from is required for --path input and forward".into(),
            ));
        }
    };
    let out_iface = args
        .out_iface
        .clone()
        .or_else(|| route.and_then(|r| r.route.as_ref()?.dev.clone()));
    let live = live_report::LiveReport::new(&snap, &rulesets, nft.first(), &host, route);
    Ok(Input {
        rulesets,
        nft,
        host,
        from,
        out_iface,
        live: Some(live),
    })
}

/// Runs `netprobe trace` and returns the exit code.
pub fn run_trace(args: &TraceArgs) -> u8 {
    let loaded = if args.live {
        load_live(args)
    } else {
        load_files(args)
    };
    let asked = loaded.and_then(|input| {
        let flow = question(args, input.from, input.out_iface.clone())?;
        Ok((input, flow))
    });
    let (input, flow) = match asked {
        Ok(x) => x,
        Err(e) => return e.report("trace", args.json),
    };
    let traces = trace_all(&input.rulesets, &input.nft, &input.host, &flow);
    let verdict = traces.verdict();
    if args.json {
        let mut doc = traces_json(&flow, &traces);
        if let Some(live) = &input.live {
            doc["live"] = live.json();
        }
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    } else {
        let bold = std::io::stdout().is_terminal();
        if let Some(live) = &input.live {
            print!("{}", live.text());
        }
        print!(
            "{}",
            story(&flow, &input.rulesets, &input.nft, &traces, bold)
        );
    }
    if verdict == Verdict::Accept {
        EXIT_OK
    } else {
        EXIT_FAILED
    }
}

fn verdict_fields(v: &Verdict, out: &mut Value) {
    out["verdict"] = json!(v.as_str());
    match v {
        Verdict::Reject { with } => out["reject_with"] = json!(with.as_str()),
        Verdict::Undetermined { reason } => out["reason"] = json!(reason),
        Verdict::Accept | Verdict::Drop => {}
    }
}

fn step_json(s: &Step) -> Value {
    json!({
        "hook": s.hook, "backend": s.backend, "table": s.table, "chain": s.chain,
        "rule": s.rule_number, "matched": s.matched, "why": s.why,
    })
}

fn trace_json(t: &Trace) -> Value {
    let mut v = json!({
        "decided_by": t.decided_by,
        "steps": t.steps.iter().map(step_json).collect::<Vec<_>>(),
        "nat": t.nat,
    });
    verdict_fields(&t.verdict, &mut v);
    v
}

/// The JSON document of `trace --json` (shape documented in the README).
pub fn traces_json(flow: &Flow, traces: &Traces) -> Value {
    if let Some(t) = traces.single()
        && t.branch.is_empty()
    {
        let mut v = trace_json(t);
        v["flow"] = json!(flow);
        return v;
    }
    let branches: Vec<Value> = traces
        .branches
        .iter()
        .map(|t| {
            let mut v = trace_json(t);
            v["probability"] = json!(t.probability);
            v["choices"] = json!(t.branch);
            v
        })
        .collect();
    let mut v = json!({ "flow": flow, "branches": branches });
    verdict_fields(&traces.verdict(), &mut v);
    v
}

fn endpoint(e: &Endpoint) -> String {
    let addr = e.addr.map_or("?".to_owned(), |a| a.to_string());
    match (e.addr, e.port) {
        (Some(IpAddr::V6(_)), Some(p)) => format!("[{addr}]:{p}"),
        (_, Some(p)) => format!("{addr}:{p}"),
        (_, None) => addr,
    }
}

fn flow_line(flow: &Flow) -> String {
    let proto = match flow.protocol {
        6 => "tcp".to_owned(),
        17 => "udp".to_owned(),
        1 => "icmp".to_owned(),
        58 => "icmpv6".to_owned(),
        n => format!("protocol {n}"),
    };
    let src = endpoint(&Endpoint {
        addr: Some(flow.src),
        port: flow.sport,
    });
    let dst = endpoint(&Endpoint {
        addr: Some(flow.dst),
        port: flow.dport,
    });
    let origin = match flow.origin {
        Origin::LocalOutput => "sent by a local process",
        Origin::Input => "arriving for this host",
        Origin::Forward => "forwarded through this host",
    };
    let state = format!("{:?}", flow.ct_state).to_ascii_uppercase();
    format!("{proto} {src} -> {dst}, {origin}, conntrack {state}")
}

/// The human story: hook by hook, chain by chain, each rule examined and why; the deciding rule
/// marked `>>` (and bold when `bold`), with its comment; NAT rewrites; the verdict last.
pub fn story(
    flow: &Flow,
    rulesets: &[Ruleset],
    nft: &[NftRuleset],
    traces: &Traces,
    bold: bool,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}", flow_line(flow));
    let forked = traces.branches.len() > 1;
    for (k, t) in traces.branches.iter().enumerate() {
        if forked {
            let _ = writeln!(
                out,
                "\nbranch {} of {} (probability {:.1}%)",
                k + 1,
                traces.branches.len(),
                t.probability * 100.0
            );
        }
        trace_story(&mut out, flow, (rulesets, nft), t, bold);
    }
    if forked {
        let _ = writeln!(out, "\noverall: {}", verdict_line(&traces.verdict(), None));
    }
    out
}

/// The text and comment(s) of the rule a step names, from the iptables rulesets or the native
/// nftables ones.
fn rule_text(
    (rulesets, nft): (&[Ruleset], &[NftRuleset]),
    family: Family,
    s: &Step,
    n: usize,
) -> Option<(String, Option<String>)> {
    if let Some(table) = s.table.xt() {
        let r = rulesets
            .iter()
            .filter(|rs| rs.family == family && rs.backend == s.backend)
            .find_map(|rs| {
                rs.table(table)?
                    .chain(&s.chain)?
                    .rules
                    .get(n.checked_sub(1)?)
            })?;
        return Some((r.text.clone(), r.comments()));
    }
    let r = nft
        .iter()
        .find_map(|rs| rs.rule_at(&s.table, &s.chain, Some(n)))?;
    Some((r.text.clone(), r.comment.clone()))
}

fn trace_story(
    out: &mut String,
    flow: &Flow,
    rules: (&[Ruleset], &[NftRuleset]),
    t: &Trace,
    bold: bool,
) {
    let rule_of = |s: &Step, n: usize| rule_text(rules, flow.family, s, n);
    let decisive = t.decided_by.as_ref().and_then(|d| {
        t.steps.iter().rposition(|s| {
            s.matched
                && s.backend == d.backend
                && s.table == d.table
                && s.chain == d.chain
                && s.rule_number == d.rule_number
        })
    });
    let mut hook = None;
    let mut chain: Option<&Step> = None;
    for (i, s) in t.steps.iter().enumerate() {
        if hook != Some(s.hook) {
            let _ = writeln!(out, "\n{}", s.hook);
            hook = Some(s.hook);
            chain = None;
        }
        let same = chain
            .is_some_and(|c| c.backend == s.backend && c.table == s.table && c.chain == s.chain);
        if !same {
            let _ = writeln!(
                out,
                "  {} {} {}",
                Backend::name_of(s.backend),
                s.table,
                s.chain
            );
            chain = Some(s);
        }
        let decides = Some(i) == decisive;
        let mark = if decides { ">>" } else { "  " };
        let rule = s.rule_number.and_then(|n| rule_of(s, n).map(|r| (n, r)));
        let head = match &rule {
            Some((n, (text, comment))) => {
                // The comment is in the text already; set beside the deciding rule it names the owner.
                let comment = comment
                    .as_ref()
                    .filter(|_| decides)
                    .map_or(String::new(), |c| format!("   <- {c}"));
                format!("{mark} {n:>4}  {text}{comment}")
            }
            None => format!("{mark}    -  {}", s.why),
        };
        let head = if bold && decides {
            format!("\x1b[1m{head}\x1b[0m")
        } else {
            head
        };
        let _ = writeln!(out, "  {head}");
        if rule.is_some() {
            let outcome = if s.matched { "match" } else { "no match" };
            let _ = writeln!(out, "            {outcome}: {}", s.why);
        }
    }
    for n in &t.nat {
        let _ = writeln!(
            out,
            "\nNAT {} at {} by {} {} rule {}: {} -> {}",
            format!("{:?}", n.kind).to_ascii_uppercase(),
            n.hook,
            n.rule.table,
            n.rule.chain,
            n.rule.rule_number.map_or("-".to_owned(), |r| r.to_string()),
            endpoint(&n.from),
            endpoint(&n.to)
        );
    }
    let _ = writeln!(
        out,
        "\nverdict: {}",
        verdict_line(&t.verdict, t.decided_by.as_ref())
    );
}

fn verdict_line(v: &Verdict, by: Option<&RuleRef>) -> String {
    let head = match v {
        Verdict::Accept => "ACCEPT".to_owned(),
        Verdict::Drop => "DROP".to_owned(),
        Verdict::Reject { with } => format!("REJECT ({})", with.as_str()),
        Verdict::Undetermined { reason } => format!("UNDETERMINED: {reason}"),
    };
    let Some(r) = by else { return head };
    let backend = Backend::name_of(r.backend);
    let rule = r
        .rule_number
        .map_or("policy".to_owned(), |n| format!("rule {n}"));
    let comment = r
        .comment
        .as_ref()
        .map_or(String::new(), |c| format!(" \"{c}\""));
    format!(
        "{head} by {backend} {} {} {} {rule}{comment}",
        r.family.as_str(),
        r.table,
        r.chain
    )
}

/// Runs `netprobe rules check FILE...` and returns the exit code. With `restore`, each file is an
/// `iptables-restore` payload; otherwise `iptables-save` output, and the cross-ruleset checks
/// (`both-backends`, `k8s-backend`) run over all files together.
pub fn run_rules_check(files: &[PathBuf], restore: bool, json_out: bool) -> u8 {
    let mut findings: Vec<Finding> = Vec::new();
    let mut rulesets = Vec::new();
    for path in files {
        let text = match read(path) {
            Ok(t) => t,
            Err(e) => return e.report("rules check", json_out),
        };
        let opts = ParseOptions::default();
        if restore {
            match parse_restore_payload(&text, &opts) {
                Ok(p) => findings.extend(checks::check_restore_payload(&p)),
                Err(e) => return parse_failed(path, e).report("rules check", json_out),
            }
        } else {
            match parse_save(&text, &opts) {
                Ok(rs) => rulesets.push(rs),
                Err(e) => return parse_failed(path, e).report("rules check", json_out),
            }
        }
    }
    if !restore {
        findings.extend(checks::check_all(&rulesets));
    }
    let failed = findings.iter().any(|f| f.severity >= Severity::Warning);
    if json_out {
        let doc = json!({ "ok": !failed, "findings": findings });
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    } else if findings.is_empty() {
        println!("no findings");
    } else {
        for f in &findings {
            println!("{:<7} {}: {}", f.severity, f.id, f.summary);
            for e in &f.evidence {
                println!("        {e}");
            }
        }
    }
    if failed { EXIT_FAILED } else { EXIT_OK }
}
