//! Walking one hook: every table's base chain on it, of every ruleset of the packet's family,
//! rule by rule, with jumps, gotos, returns and policies (ip_tables.c `ipt_do_table`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::matches::{Match, StatisticMode};
use crate::model::{Chain, Family, Policy, Rule, Ruleset, Table, TableName};
use crate::render::render_match;
use crate::target::{ConnmarkAction, NatFlags, NatRange, Target};

use super::Limits;
use super::flow::HostModel;
use super::hooks::Hook;
use super::index::{Indexes, packet_key};
use super::matches::{Tri, eval};
use super::packet::{Dev, Packet};
use super::trace::{Choice, Endpoint, NatKind, NatRewrite, RuleRef, Step, Verdict};

/// A walk ended the packet's journey: a drop, a reject, or a point past which nothing is certain.
#[derive(Debug)]
pub(crate) struct Stop {
    pub(crate) verdict: Verdict,
    pub(crate) by: Option<RuleRef>,
}

impl Stop {
    pub(crate) fn undetermined(reason: String, by: Option<RuleRef>) -> Stop {
        Stop {
            verdict: Verdict::Undetermined { reason },
            by,
        }
    }
}

/// Where a rule or chain sits.
#[derive(Clone, Copy)]
struct Cx<'r> {
    rs: &'r Ruleset,
    table: &'r Table,
    hook: Hook,
}

impl Cx<'_> {
    fn rule_ref(&self, chain: &Chain, idx: usize) -> RuleRef {
        let (text, comment) = match chain.rules.get(idx) {
            Some(r) => (r.text.clone(), r.comments()),
            None => (String::new(), None),
        };
        RuleRef {
            backend: self.rs.backend,
            family: self.rs.family.into(),
            table: self.table.name.into(),
            chain: chain.name.clone(),
            rule_number: Some(idx + 1),
            text,
            comment,
        }
    }
}

/// What [`Walker::nat_apply`] did.
pub(crate) struct NatApplied {
    /// The step's text: the rewrite.
    pub(crate) why: String,
    /// Whether the re-route after the rewrite drops the packet (a loopback source DNATed to a
    /// remote address).
    pub(crate) dropped: bool,
}

impl NatApplied {
    /// `Err(drop by rule)` when the re-route dropped the packet.
    pub(crate) fn stop(&self, rule: RuleRef) -> Result<(), Stop> {
        if self.dropped {
            return Err(Stop {
                verdict: Verdict::Drop,
                by: Some(rule),
            });
        }
        Ok(())
    }
}

/// A return frame pushed by `-j`.
struct Frame<'r> {
    chain: &'r Chain,
    next: usize,
    path_len: usize,
}

enum RuleEval {
    Matched,
    NotMatched(String),
    Unknown(String),
}

/// One walk of the packet along one statistic branch.
pub(crate) struct Walker<'a> {
    pub(crate) rulesets: &'a [Ruleset],
    /// Native nftables rulesets, walked alongside.
    pub(crate) native: &'a [crate::nft::NftRuleset],
    pub(crate) host: &'a HostModel,
    pub(crate) limits: &'a Limits,
    /// Per-chain indexes that let the walk jump over rules that cannot match.
    pub(crate) indexes: &'a Indexes,
    /// Outcomes of the `-m statistic` matches met so far that this branch must take.
    pub(crate) prefix: &'a [bool],
    pub(crate) p: Packet,
    pub(crate) steps: Vec<Step>,
    pub(crate) nat: Vec<NatRewrite>,
    pub(crate) choices: Vec<Choice>,
}

/// Targets that neither decide nor change anything a later match reads: a rule ending in one
/// may be skipped when its matches cannot be decided.
fn ignorable(target: Option<&Target>) -> bool {
    matches!(
        target,
        None | Some(Target::Log(_) | Target::Nflog(_) | Target::Trace)
    )
}

impl<'a> Walker<'a> {
    fn step(&mut self, cx: Cx<'_>, chain: &str, rule: Option<usize>, matched: bool, why: String) {
        self.steps.push(Step {
            hook: cx.hook,
            backend: cx.rs.backend,
            table: cx.table.name.into(),
            chain: chain.to_string(),
            rule_number: rule.map(|i| i + 1),
            matched,
            why,
        });
    }

    /// Runs every base chain on `hook` in priority order (iptables tables and native nftables
    /// base chains together); `Err` ends the journey.
    pub(crate) fn hook(&mut self, hook: Hook) -> Result<(), Stop> {
        if hook == Hook::Postrouting
            && let Some(dev) = self.p.outdev_after_output.take()
        {
            self.p.outdev = dev;
        }
        for slot in super::nft::slots(self.rulesets, self.native, self.p.family, hook) {
            if slot.after_conntrack() {
                // Conntrack (priority −200) has run.
                self.p.ct_attached = true;
            }
            let (rs, t) = match slot.base {
                super::nft::Base::Xt(rs, t) => (rs, t),
                super::nft::Base::Native(t, c) => {
                    self.native_chain(hook, t, c)?;
                    continue;
                }
            };
            let cx = Cx { rs, table: t, hook };
            if t.name == TableName::Nat
                && let Some(why) = self.nat_skipped(hook)
            {
                self.step(cx, hook.chain(), None, false, why);
                continue;
            }
            self.walk(cx)?;
        }
        Ok(())
    }

    /// Why the nat table is not consulted on `hook`, if it is not (nf_nat_core.c `nf_nat_inet_fn`).
    pub(crate) fn nat_skipped(&self, hook: Hook) -> Option<String> {
        if self.p.reentry {
            return Some(
                "nat not consulted: the connection's NAT was set up on the output path \
                 (loopback re-entry)"
                    .to_string(),
            );
        }
        if !self.p.has_ct() || self.p.state != super::ConnState::New {
            return Some(format!(
                "nat not consulted: only the first packet of a connection is (ctstate {:?})",
                self.p.state
            ));
        }
        let done = if hook.is_dnat() {
            self.p.dnat_init
        } else {
            self.p.snat_init
        };
        // An earlier nat table on this hook set up the binding: later ones are not run.
        done.then(|| "nat not consulted: an earlier nat chain on this hook set up NAT".to_string())
    }

    /// Walks one base chain; `Ok` means it let the packet through.
    fn walk(&mut self, cx: Cx<'a>) -> Result<(), Stop> {
        let Some(base) = cx.table.chain(cx.hook.chain()) else {
            return Ok(());
        };
        let mut frames: Vec<Frame<'a>> = Vec::new();
        let mut path: Vec<&'a str> = vec![base.name.as_str()];
        let (mut chain, mut idx) = (base, 0usize);
        let mut budget = self.limits.max_rules;
        loop {
            let Some(rule) = chain.rules.get(idx) else {
                match frames.pop() {
                    Some(f) => {
                        path.truncate(f.path_len);
                        (chain, idx) = (f.chain, f.next);
                        continue;
                    }
                    None => return self.policy(cx, base),
                }
            };
            if budget > 0
                && let Some(d) = self.indexes.get(chain)
                && let Some(key) = packet_key(&self.p)
            {
                let next = d.next(idx, key).min(chain.rules.len());
                if next > idx {
                    // Skipped rules count against the budget as if they had been evaluated.
                    let skip = (next - idx).min(budget);
                    budget -= skip;
                    let why = skipped_note(idx, idx + skip, key);
                    self.step(cx, &chain.name, None, false, why);
                    idx += skip;
                    continue;
                }
            }
            if budget == 0 {
                return Err(Stop::undetermined(
                    format!(
                        "evaluation budget exceeded: more than {} rules on one base chain",
                        self.limits.max_rules
                    ),
                    Some(cx.rule_ref(chain, idx)),
                ));
            }
            budget -= 1;
            match self.eval_rule(cx, chain, idx, rule) {
                RuleEval::NotMatched(why) => {
                    self.step(cx, &chain.name, Some(idx), false, why);
                    idx += 1;
                    continue;
                }
                RuleEval::Unknown(reason) if ignorable(rule.target.as_ref()) => {
                    let why = format!(
                        "undetermined ({reason}); its target cannot change the verdict or \
                         later matches: ignored"
                    );
                    self.step(cx, &chain.name, Some(idx), false, why);
                    idx += 1;
                    continue;
                }
                RuleEval::Unknown(reason) => {
                    self.step(
                        cx,
                        &chain.name,
                        Some(idx),
                        false,
                        format!("undetermined: {reason}"),
                    );
                    return Err(Stop::undetermined(reason, Some(cx.rule_ref(chain, idx))));
                }
                RuleEval::Matched => {}
            }
            let Some(target) = &rule.target else {
                self.step(
                    cx,
                    &chain.name,
                    Some(idx),
                    true,
                    "matched; no target".into(),
                );
                idx += 1;
                continue;
            };
            let by = || Some(cx.rule_ref(chain, idx));
            match target {
                Target::Accept => {
                    self.step(
                        cx,
                        &chain.name,
                        Some(idx),
                        true,
                        "ACCEPT: ends this base chain".into(),
                    );
                    return Ok(());
                }
                Target::Drop => {
                    self.step(cx, &chain.name, Some(idx), true, "DROP".into());
                    return Err(Stop {
                        verdict: Verdict::Drop,
                        by: by(),
                    });
                }
                Target::Reject(with) => {
                    self.step(
                        cx,
                        &chain.name,
                        Some(idx),
                        true,
                        format!("REJECT {}", with.as_str()),
                    );
                    return Err(Stop {
                        verdict: Verdict::Reject { with: *with },
                        by: by(),
                    });
                }
                Target::Return => {
                    self.step(cx, &chain.name, Some(idx), true, "RETURN".into());
                    match frames.pop() {
                        Some(f) => {
                            path.truncate(f.path_len);
                            (chain, idx) = (f.chain, f.next);
                        }
                        None => return self.policy(cx, base),
                    }
                }
                Target::Jump(name) | Target::Goto(name) => {
                    let jump = matches!(target, Target::Jump(_));
                    let next = match cx.table.chain(name) {
                        Some(c) if !c.builtin && c.line.is_some() => c,
                        Some(c) if !c.builtin => {
                            // A restore payload's undeclared chain: its rules are not known.
                            let r = format!("chain `{}` is used but never declared", c.name);
                            return Err(Stop::undetermined(r, by()));
                        }
                        Some(_) => {
                            let r = format!("jump to built-in chain `{name}`");
                            return Err(Stop::undetermined(r, by()));
                        }
                        None => {
                            let r = format!("jump to chain `{name}`, which does not exist");
                            return Err(Stop::undetermined(r, by()));
                        }
                    };
                    if path.contains(&name.as_str()) {
                        let r = format!("jump loop: {} -> {name}", path.join(" -> "));
                        return Err(Stop::undetermined(r, by()));
                    }
                    if path.len() > self.limits.max_depth {
                        let r = format!("chain nesting deeper than {}", self.limits.max_depth);
                        return Err(Stop::undetermined(r, by()));
                    }
                    let verb = if jump { "jump to" } else { "goto" };
                    self.step(cx, &chain.name, Some(idx), true, format!("{verb} {name}"));
                    if jump {
                        frames.push(Frame {
                            chain,
                            next: idx + 1,
                            path_len: path.len(),
                        });
                    }
                    path.push(name);
                    (chain, idx) = (next, 0);
                }
                Target::Dnat { .. }
                | Target::Snat { .. }
                | Target::Masquerade { .. }
                | Target::Redirect { .. } => {
                    return self.nat(cx, chain, idx, target);
                }
                Target::Unknown { name, .. } => {
                    self.step(cx, &chain.name, Some(idx), true, format!("target {name}"));
                    let r = format!("target `{name}` is not modelled");
                    return Err(Stop::undetermined(r, by()));
                }
                other => {
                    let why = self.apply_nonterminal(other);
                    self.step(cx, &chain.name, Some(idx), true, why);
                    idx += 1;
                }
            }
        }
    }

    /// The end of a base chain (or a RETURN with no frame): its policy decides.
    fn policy(&mut self, cx: Cx<'_>, base: &Chain) -> Result<(), Stop> {
        let by = |p: &str| RuleRef {
            backend: cx.rs.backend,
            family: cx.rs.family.into(),
            table: cx.table.name.into(),
            chain: base.name.clone(),
            rule_number: None,
            text: format!(":{} {p}", base.name),
            comment: None,
        };
        match base.policy {
            Some(Policy::Accept) => {
                self.step(cx, &base.name, None, true, "policy ACCEPT".into());
                Ok(())
            }
            Some(Policy::Drop) => {
                self.step(cx, &base.name, None, true, "policy DROP".into());
                Err(Stop {
                    verdict: Verdict::Drop,
                    by: Some(by("DROP")),
                })
            }
            None => Err(Stop::undetermined(
                format!("policy of {} not known (declared `-`)", base.name),
                Some(by("-")),
            )),
        }
    }

    /// Evaluates every match; `-m statistic` is decided last, by the branch being walked.
    fn eval_rule(&mut self, cx: Cx<'_>, chain: &Chain, idx: usize, rule: &Rule) -> RuleEval {
        let nft = cx.rs.backend == Some(crate::model::Backend::Nft);
        let mut first_unknown = None;
        for m in &rule.matches {
            let ambiguous = nft.then(|| nft_port_pair_differs(m, &self.p)).flatten();
            let tri = match ambiguous {
                Some(why) => Tri::Unknown(why),
                None => eval(m, &self.p, self.host),
            };
            match tri {
                Tri::Yes => {}
                Tri::No => {
                    return RuleEval::NotMatched(format!("`{}` does not hold", render_match(m)));
                }
                Tri::Unknown(r) => {
                    first_unknown.get_or_insert_with(|| format!("`{}`: {r}", render_match(m)));
                }
            }
        }
        if let Some(r) = first_unknown {
            return RuleEval::Unknown(r);
        }
        for m in &rule.matches {
            let Match::Statistic(s) = m else { continue };
            let p_match = match s.mode {
                StatisticMode::Random { probability } => probability.clamp(0.0, 1.0),
                StatisticMode::Nth { every, .. } => 1.0 / f64::from(every.max(1)),
            };
            let p_match = if s.negated { 1.0 - p_match } else { p_match };
            let matched = match self.prefix.get(self.choices.len()) {
                Some(m) => *m,
                None => p_match > 0.0,
            };
            self.choices.push(Choice {
                rule: cx.rule_ref(chain, idx),
                matched,
                probability: if matched { p_match } else { 1.0 - p_match },
            });
            if !matched {
                return RuleEval::NotMatched(format!(
                    "`{}`: not taken on this branch",
                    render_match(m)
                ));
            }
        }
        RuleEval::Matched
    }

    /// Applies a non-terminal target and says what it did.
    fn apply_nonterminal(&mut self, t: &Target) -> String {
        let p = &mut self.p;
        match t {
            Target::Mark { value, mask } => {
                let old = p.mark;
                p.mark = (p.mark & !mask) ^ value;
                format!("MARK: mark {old:#x} -> {:#x}", p.mark)
            }
            // CONNMARK does nothing without a conntrack entry (xt_connmark.c `connmark_tg_shift`).
            Target::Connmark(_) if !p.has_ct() => "CONNMARK: no conntrack entry, no effect".into(),
            Target::Connmark(a) => {
                match *a {
                    ConnmarkAction::SetXmark { value, mask } => {
                        p.ct_mark = (p.ct_mark & !mask) ^ value;
                    }
                    ConnmarkAction::Save { nfmask, ctmask } => {
                        p.ct_mark = (p.ct_mark & !ctmask) ^ (p.mark & nfmask);
                    }
                    ConnmarkAction::Restore { nfmask, ctmask } => {
                        p.mark = (p.mark & !nfmask) ^ (p.ct_mark & ctmask);
                    }
                }
                format!("CONNMARK: mark {:#x}, ctmark {:#x}", p.mark, p.ct_mark)
            }
            // xt_CT.c `notrack_tg`/`xt_ct_target`: "Previously seen (loopback)? Ignore." — a
            // packet that already carries a conntrack reference keeps it.
            t if t.is_notrack() && p.ct_attached => {
                "NOTRACK: ignored, the packet already has a conntrack entry (loopback re-entry)"
                    .into()
            }
            t if t.is_notrack() => {
                p.notracked = true;
                p.state = super::ConnState::Untracked;
                "NOTRACK: the packet is UNTRACKED".into()
            }
            Target::Ct(args) => format!("CT {}: not modelled beyond --notrack", args.join(" ")),
            Target::Log(_) => "LOG (non-terminal)".into(),
            Target::Nflog(_) => "NFLOG (non-terminal)".into(),
            Target::Trace => "TRACE (non-terminal)".into(),
            other => format!("{other:?}"),
        }
    }

    /// Sets up a NAT binding (ends the nat chain with ACCEPT) and rewrites the packet.
    fn nat(&mut self, cx: Cx<'_>, chain: &Chain, idx: usize, t: &Target) -> Result<(), Stop> {
        let rule = cx.rule_ref(chain, idx);
        let applied = self.nat_apply(cx.hook, rule.clone(), t)?;
        self.step(cx, &chain.name, Some(idx), true, applied.why.clone());
        applied.stop(rule)
    }

    /// Applies the NAT target `t` of `rule` on `hook`: rewrites the packet, records the binding
    /// and says what it did (and whether the re-route after it drops the packet).
    pub(crate) fn nat_apply(
        &mut self,
        hook: Hook,
        rule: RuleRef,
        t: &Target,
    ) -> Result<NatApplied, Stop> {
        let family = self.p.family;
        let (kind, dnat) = match t {
            Target::Dnat { .. } => (NatKind::Dnat, true),
            Target::Redirect { .. } => (NatKind::Redirect, true),
            Target::Snat { .. } => (NatKind::Snat, false),
            _ => (NatKind::Masquerade, false),
        };
        if dnat != hook.is_dnat() {
            let r = format!("{kind:?} in the {hook} chain is not valid");
            return Err(Stop::undetermined(r, Some(rule)));
        }
        let from = if dnat {
            Endpoint {
                addr: self.p.dst,
                port: self.p.dport,
            }
        } else {
            Endpoint {
                addr: self.p.src,
                port: self.p.sport,
            }
        };
        let to = match t {
            Target::Dnat { to, flags } | Target::Snat { to, flags } => Endpoint {
                addr: pick_addr(to, from.addr),
                port: pick_port(to.ports, flags, from.port, dnat),
            },
            Target::Redirect { ports, flags } => {
                let addr = match (&self.p.indev, hook) {
                    (_, Hook::Output) => Some(loopback(family)),
                    (Dev::Named(n), _) => self.host.sole_addr(n, family),
                    _ => None,
                };
                Endpoint {
                    addr,
                    port: pick_port(*ports, flags, from.port, true),
                }
            }
            Target::Masquerade { ports, flags } => {
                let addr = match &self.p.outdev {
                    // On `lo`, inet_select_addr(RT_SCOPE_UNIVERSE) skips 127.0.0.1 (host scope)
                    // and takes a global address of another device: not known from the model.
                    Dev::Named(n) if n == "lo" && family == Family::Ipv4 => None,
                    // IPv6 asks ipv6_dev_get_saddr for the (local) destination, and RFC 6724
                    // rule 1 "prefer same address" picks the destination itself.
                    Dev::Named(n) if n == "lo" => self.p.dst,
                    Dev::Named(n) => self.host.sole_addr(n, family),
                    _ => None,
                };
                Endpoint {
                    addr,
                    port: pick_port(*ports, flags, from.port, false),
                }
            }
            _ => from,
        };
        let changed = to != from || to.addr.is_none();
        let p = &mut self.p;
        if dnat {
            (p.dst, p.dport) = (to.addr, to.port);
            (p.repl_src, p.repl_sport) = (to.addr, to.port);
            p.dnat_init = true;
            p.ct_dnat |= changed;
            // Routing looks at addresses: a port-only DNAT keeps the route (nf_nat_ipv4_local_fn
            // re-routes only when the destination address changed).
            let moved = to.addr != from.addr;
            p.rerouted |= moved;
            if moved && hook == Hook::Output {
                // Local output is re-routed after nat OUTPUT (ip_route_me_harder), but the rest of
                // the OUTPUT hook still sees the old device (`state->out` is fixed for the whole
                // hook); the new one shows from POSTROUTING on.
                p.outdev_after_output = Some(match to.addr {
                    Some(a) if self.host.is_local(a) => Dev::Named("lo".into()),
                    Some(a) => Dev::from_opt(self.host.route_dev(a)),
                    None => Dev::Unknown,
                });
            }
        } else {
            (p.src, p.sport) = (to.addr, to.port);
            (p.repl_dst, p.repl_dport) = (to.addr, to.port);
            p.snat_init = true;
            p.ct_snat |= changed;
        }
        let show = |e: &Endpoint| {
            let a = e.addr.map_or("?".to_string(), |a| a.to_string());
            let port = e.port.map_or(String::new(), |p| format!(":{p}"));
            format!("{a}{port}")
        };
        let why = format!("{kind:?}: {} -> {}", show(&from), show(&to));
        self.nat.push(NatRewrite {
            hook,
            rule: rule.clone(),
            kind,
            from,
            to,
        });
        // A 127.0.0.0/8 source may not leave the host: re-routing after nat OUTPUT fails
        // (route.c `__mkroute_output`: loopback source, non-loopback device → EINVAL) and
        // nf_nat_ipv4_local_fn drops the packet; the sender's sendmsg gets EINVAL.
        if hook == Hook::Output
            && dnat
            && to.addr != from.addr
            && let (Some(IpAddr::V4(src)), Some(dst)) = (self.p.src, to.addr)
            && src.is_loopback()
            && !self.host.is_local(dst)
        {
            let why = format!(
                "{why}; dropped on re-route: source {src} is loopback and {dst} is not local \
                 (EINVAL)"
            );
            return Ok(NatApplied { why, dropped: true });
        }
        Ok(NatApplied {
            why,
            dropped: false,
        })
    }
}

/// Why an iptables-nft match `! --sport A ! --dport B` cannot be decided for this packet:
/// the kernel's compiled form matches when either port differs
/// ([`crate::matches::negated_port_pair`]), the text only when both do, and exactly one of the
/// packet's ports equals its value. `None` where both readings agree.
fn nft_port_pair_differs(m: &Match, p: &Packet) -> Option<String> {
    let (a, b) = crate::matches::negated_port_pair(m)?;
    let (sp, dp) = (p.sport?, p.dport?);
    ((sp == a) != (dp == b)).then(|| {
        format!(
            "`! --sport {a} ! --dport {b}` in iptables-nft: the kernel's compiled form (one \
             `th sport . th dport != {a} . {b}` comparison, iptables 1.8.9) matches this packet \
             ({sp} -> {dp}) while the rule's text does not"
        )
    })
}

/// The note for rules `from..to` (0-based) jumped over by the chain index.
fn skipped_note(from: usize, to: usize, (dst, proto, port): (IpAddr, u8, u16)) -> String {
    let what = match proto {
        6 => format!("{dst} tcp port {port}"),
        17 => format!("{dst} udp port {port}"),
        n => format!("{dst} protocol {n}"),
    };
    format!(
        "rules {}-{to} skipped: none of them can match {what} (chain index by -d, -p, --dport)",
        from + 1
    )
}

fn loopback(family: Family) -> IpAddr {
    match family {
        Family::Ipv4 => IpAddr::V4(Ipv4Addr::LOCALHOST),
        Family::Ipv6 => IpAddr::V6(Ipv6Addr::LOCALHOST),
    }
}

/// The address a NAT range maps to: kept when absent, certain only for a single address (the
/// kernel picks within a range by hash, nf_nat_core.c `find_best_ips_proto`).
fn pick_addr(to: &NatRange, cur: Option<IpAddr>) -> Option<IpAddr> {
    match to.addrs {
        None => cur,
        Some((a, b)) if a == b => Some(a),
        Some(_) => None,
    }
}

/// The port a NAT range maps to: a single port is certain; a range keeps the current port when it
/// already lies inside (nf_nat_core.c `get_unique_tuple`) unless randomised.
fn pick_port(
    range: Option<crate::addr::PortRange>,
    flags: &NatFlags,
    cur: Option<u16>,
    dnat: bool,
) -> Option<u16> {
    let random = flags.random || flags.random_fully;
    match range {
        Some(r) if r.start == r.end => Some(r.start),
        Some(r) => cur.filter(|c| r.contains(*c) && !random),
        None if random && !dnat => None,
        None => cur,
    }
}
