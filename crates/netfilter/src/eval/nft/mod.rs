//! Walking native nftables base chains (nft(8) "OVERALL EVALUATION OF THE RULESET";
//! net/netfilter/nf_tables_core.c `nft_do_chain`): statements run in order; a failing match
//! ends the rule; `accept` ends the base chain, `drop` ends everything; `jump`/`goto`/`return`
//! as in iptables; a verdict map's miss ends the rule; the policy decides at the end.

use crate::addr::PortRange;
use crate::model::{Backend, Family, Policy, Ruleset, Table};
use crate::nft::value::Lookup;
use crate::nft::{
    ChainType, Expr, MapData, NftChain, NftHook, NftNat, NftRule, NftRuleset, NftTable, NftVerdict,
    Stmt, Val, reject_with, render_stmt,
};
use crate::target::{NatFlags, NatRange, Target};

mod read;

use super::ConnState;
use super::hooks::Hook;
use super::table_ref::{TableFamily, TableId};
use super::trace::{NatKind, RuleRef, Step, Verdict};
use super::walk::{Stop, Walker};

/// A base chain on a hook: an x_tables table's, or a native one.
pub(crate) enum Base<'r> {
    Xt(&'r Ruleset, &'r Table),
    Native(&'r NftTable, &'r NftChain),
}

/// A base chain with the priority at which it runs.
pub(crate) struct Slot<'r> {
    pub(crate) base: Base<'r>,
    prio: i32,
    hook: Hook,
}

impl Slot<'_> {
    /// Whether conntrack (priority −200 on PREROUTING and OUTPUT) has run before this chain; on
    /// the later hooks it always has.
    pub(crate) fn after_conntrack(&self) -> bool {
        self.prio > -200 || !matches!(self.hook, Hook::Prerouting | Hook::Output)
    }
}

/// Every base chain of the packet's family on `hook`, in the order the kernel runs them: by
/// priority; a native `type nat` chain runs inside the NAT core at −100 (PREROUTING, OUTPUT) or
/// 100 (INPUT, POSTROUTING), after the x_tables nat table of equal priority. Ties keep the
/// iptables tables first, then the native chains in listing order (the kernel's order of equal
/// priorities is undefined).
pub(crate) fn slots<'r>(
    rulesets: &'r [Ruleset],
    native: &'r [NftRuleset],
    family: Family,
    hook: Hook,
) -> Vec<Slot<'r>> {
    let mut v: Vec<(i32, i32, Slot<'r>)> = Vec::new();
    for &table in hook.tables() {
        for rs in rulesets.iter().filter(|rs| rs.family == family) {
            if let Some(t) = rs.table(table)
                && t.chain(hook.chain()).is_some()
                && let Some(prio) = hook.backend_priority(table, rs.backend)
            {
                let base = Base::Xt(rs, t);
                v.push((prio, prio, Slot { base, prio, hook }));
            }
        }
    }
    let nat_core = if hook.is_dnat() { -100 } else { 100 };
    for nrs in native {
        for t in nrs.tables.iter().filter(|t| t.fam().sees(family)) {
            for c in t.base_chains() {
                let Some(b) = &c.base else { continue };
                if b.hook != NftHook::Ip(hook) {
                    continue;
                }
                let prio = if b.kind == ChainType::Nat {
                    nat_core
                } else {
                    b.priority
                };
                let base = Base::Native(t, c);
                v.push((prio, b.priority, Slot { base, prio, hook }));
            }
        }
    }
    v.sort_by_key(|(p, own, _)| (*p, *own));
    v.into_iter().map(|(_, _, s)| s).collect()
}

/// A value read from the packet.
enum Pv {
    Val(Val),
    /// The expression's protocol dependency fails (`tcp dport` of a UDP packet): no match.
    Absent(String),
    /// Not known.
    Unknown(String),
}

enum Tri {
    Yes,
    No(String),
    Unknown(String),
}

/// How a rule ended.
enum Outcome {
    Next,
    Accept,
    Return,
    Jump(String, bool),
}

/// Where a native rule sits.
#[derive(Clone, Copy)]
struct Ncx<'r> {
    hook: Hook,
    table: &'r NftTable,
    chain: &'r NftChain,
    idx: usize,
}

impl Ncx<'_> {
    fn table_id(&self) -> TableId {
        TableId::Native {
            family: self.table.fam(),
            name: self.table.name.clone(),
        }
    }

    fn rule_ref(&self) -> RuleRef {
        let rule: Option<&NftRule> = self.chain.rules.get(self.idx);
        RuleRef {
            backend: Some(Backend::Nftables),
            family: TableFamily::of_nft(self.table.fam()),
            table: self.table_id(),
            chain: self.chain.name.clone(),
            rule_number: self.idx.checked_add(1),
            text: rule.map_or(String::new(), |r| r.text.clone()),
            comment: rule.and_then(|r| r.comment.clone()),
        }
    }
}

fn flags(names: &[String]) -> NatFlags {
    NatFlags {
        random: names.iter().any(|f| f == "random"),
        random_fully: names.iter().any(|f| f == "fully-random"),
        persistent: names.iter().any(|f| f == "persistent"),
    }
}

impl<'a> Walker<'a> {
    fn nstep(&mut self, cx: Ncx<'_>, chain: &str, rule: Option<usize>, matched: bool, why: String) {
        self.steps.push(Step {
            hook: cx.hook,
            backend: Some(Backend::Nftables),
            table: cx.table_id(),
            chain: chain.to_string(),
            rule_number: rule.map(|i| i + 1),
            matched,
            why,
        });
    }

    /// Walks one native base chain; `Ok` means it let the packet through.
    pub(crate) fn native_chain(
        &mut self,
        hook: Hook,
        table: &'a NftTable,
        base: &'a NftChain,
    ) -> Result<(), Stop> {
        let mut cx = Ncx {
            hook,
            table,
            chain: base,
            idx: 0,
        };
        let is_nat = base.base.as_ref().is_some_and(|b| b.kind == ChainType::Nat);
        if is_nat && let Some(why) = self.nat_skipped(hook) {
            self.nstep(cx, &base.name, None, false, why);
            return Ok(());
        }
        if let Some(b) = &base.base
            && let ChainType::Other(k) = &b.kind
        {
            let r = format!("base chain type `{k}` is not modelled");
            return Err(Stop::undetermined(r, Some(self.policy_ref(cx, "?"))));
        }
        // Return frames: (chain, next rule index, path length).
        let mut frames: Vec<(&'a NftChain, usize, usize)> = Vec::new();
        let mut path: Vec<&'a str> = vec![base.name.as_str()];
        let mut budget = self.limits.max_rules;
        loop {
            if cx.chain.rules.get(cx.idx).is_none() {
                match frames.pop() {
                    Some((c, next, len)) => {
                        path.truncate(len);
                        (cx.chain, cx.idx) = (c, next);
                        continue;
                    }
                    None => return self.native_policy(cx, base),
                }
            }
            if budget == 0 {
                let r = format!(
                    "evaluation budget exceeded: more than {} rules on one base chain",
                    self.limits.max_rules
                );
                return Err(Stop::undetermined(r, Some(cx.rule_ref())));
            }
            budget -= 1;
            match self.native_rule(cx, is_nat)? {
                Outcome::Next => cx.idx += 1,
                Outcome::Accept => return Ok(()),
                Outcome::Return => match frames.pop() {
                    Some((c, next, len)) => {
                        path.truncate(len);
                        (cx.chain, cx.idx) = (c, next);
                    }
                    None => return self.native_policy(cx, base),
                },
                Outcome::Jump(name, jump) => {
                    let by = || Some(cx.rule_ref());
                    let next = match table.chain(&name) {
                        Some(c) if c.base.is_none() => c,
                        Some(_) => {
                            let r = format!("jump to base chain `{name}`");
                            return Err(Stop::undetermined(r, by()));
                        }
                        None => {
                            let r = format!("jump to chain `{name}`, which does not exist");
                            return Err(Stop::undetermined(r, by()));
                        }
                    };
                    if path.contains(&next.name.as_str()) {
                        let r = format!("jump loop: {} -> {name}", path.join(" -> "));
                        return Err(Stop::undetermined(r, by()));
                    }
                    if path.len() > self.limits.max_depth {
                        let r = format!("chain nesting deeper than {}", self.limits.max_depth);
                        return Err(Stop::undetermined(r, by()));
                    }
                    if jump {
                        frames.push((cx.chain, cx.idx + 1, path.len()));
                    }
                    path.push(next.name.as_str());
                    (cx.chain, cx.idx) = (next, 0);
                }
            }
        }
    }

    /// The policy of `cx.chain` as the deciding "rule".
    fn policy_ref(&self, cx: Ncx<'_>, policy: &str) -> RuleRef {
        RuleRef {
            backend: Some(Backend::Nftables),
            family: TableFamily::of_nft(cx.table.fam()),
            table: cx.table_id(),
            chain: cx.chain.name.clone(),
            rule_number: None,
            text: format!("policy {policy}"),
            comment: None,
        }
    }

    /// The end of the walk of a base chain: its policy decides.
    fn native_policy(&mut self, cx: Ncx<'a>, base: &'a NftChain) -> Result<(), Stop> {
        let Some(b) = &base.base else {
            return Ok(());
        };
        let cx = Ncx { chain: base, ..cx };
        let name = &base.name;
        match b.policy {
            Some(Policy::Accept) => {
                self.nstep(cx, name, None, true, "policy accept".into());
                Ok(())
            }
            Some(Policy::Drop) => {
                self.nstep(cx, name, None, true, "policy drop".into());
                Err(Stop {
                    verdict: Verdict::Drop,
                    by: Some(self.policy_ref(cx, "drop")),
                })
            }
            None => Err(Stop::undetermined(
                format!("policy of {name} not known"),
                Some(self.policy_ref(cx, "?")),
            )),
        }
    }

    /// Runs one rule's statements.
    fn native_rule(&mut self, cx: Ncx<'_>, is_nat: bool) -> Result<Outcome, Stop> {
        let Some(rule) = cx.chain.rules.get(cx.idx) else {
            return Ok(Outcome::Next);
        };
        let name = &cx.chain.name;
        let at = Some(cx.idx);
        let mut unknown: Option<String> = None;
        // Whether a statement already put a step for this rule (a mark set, a notrack).
        let mut acted = false;
        for st in &rule.stmts {
            if let Some(reason) = &unknown {
                if st.is_passive() {
                    continue;
                }
                // A later match that surely fails still settles the rule.
                if let Stmt::Match(m) = st
                    && let Tri::No(why) = self.native_match(cx, m)
                {
                    self.nstep(cx, name, at, false, why);
                    return Ok(Outcome::Next);
                }
                let r = reason.clone();
                self.nstep(cx, name, at, false, format!("undetermined: {r}"));
                return Err(Stop::undetermined(r, Some(cx.rule_ref())));
            }
            match st {
                Stmt::Match(m) => match self.native_match(cx, m) {
                    Tri::Yes => {}
                    Tri::No(why) => {
                        self.nstep(cx, name, at, false, why);
                        return Ok(Outcome::Next);
                    }
                    Tri::Unknown(r) => unknown = Some(r),
                },
                Stmt::Verdict(v) => return self.native_verdict(cx, v, None),
                Stmt::Vmap { key, map, .. } => {
                    // A verdict map decides: what it cannot decide is undetermined at once.
                    let undetermined = |w: &mut Self, r: String| {
                        w.nstep(cx, name, at, false, format!("undetermined: {r}"));
                        Err(Stop::undetermined(r, Some(cx.rule_ref())))
                    };
                    let data = match map {
                        Expr::Set(s) => Some(&**s),
                        Expr::SetRef(n) => cx.table.sets.get(n).map(|s| &s.data),
                        _ => None,
                    };
                    let Some(data) = data else {
                        let r = format!("map of `{}` not found", render_stmt(st));
                        return undetermined(self, r);
                    };
                    let k = match self.key(cx, key) {
                        Ok(k) => k,
                        Err(Pv::Absent(why)) => {
                            self.nstep(cx, name, at, false, why);
                            return Ok(Outcome::Next);
                        }
                        Err(_) => return undetermined(self, "the key cannot be read".into()),
                    };
                    match data.lookup(&k) {
                        Lookup::Hit(i, Some(MapData::Verdict(v))) => {
                            let elem = data.texts.get(i).cloned().unwrap_or_default();
                            return self.native_verdict(cx, v, Some(elem));
                        }
                        Lookup::Hit(..) => {
                            return undetermined(self, "the map element has no verdict".into());
                        }
                        Lookup::Miss => {
                            let why = format!("`{}`: no element matches", render_expr_short(key));
                            self.nstep(cx, name, at, false, why);
                            return Ok(Outcome::Next);
                        }
                        Lookup::Unknown(r) => {
                            let r = format!("`{}`: {r}", render_expr_short(key));
                            return undetermined(self, r);
                        }
                    }
                }
                Stmt::Counter(_) | Stmt::Log(_) => {}
                Stmt::Stateful(t) => {
                    unknown = Some(format!("`{t}` depends on packet rates or state"));
                }
                Stmt::Mangle { key, value } => {
                    if let Err(r) = self.mangle(cx, key, value) {
                        self.nstep(cx, name, at, true, format!("undetermined: {r}"));
                        return Err(Stop::undetermined(r, Some(cx.rule_ref())));
                    }
                    acted = true;
                }
                Stmt::Nat(n) => return self.native_nat(cx, n, is_nat),
                Stmt::Reject { kind, code } => {
                    let Some(with) = reject_with(kind.as_deref(), code.as_deref(), self.p.family)
                    else {
                        let r = format!("`{}` for this family is not modelled", render_stmt(st));
                        return Err(Stop::undetermined(r, Some(cx.rule_ref())));
                    };
                    self.nstep(cx, name, at, true, format!("reject {}", with.as_str()));
                    return Err(Stop {
                        verdict: Verdict::Reject { with },
                        by: Some(cx.rule_ref()),
                    });
                }
                Stmt::Notrack => {
                    let why = if self.p.ct_attached && !self.p.notracked {
                        // nft_notrack_eval: a packet that already has an entry keeps it.
                        "notrack: conntrack has already run, no effect".to_string()
                    } else {
                        self.p.notracked = true;
                        self.p.state = ConnState::Untracked;
                        "notrack: the packet is untracked".to_string()
                    };
                    self.nstep(cx, name, at, true, why);
                    acted = true;
                }
                Stmt::Unknown { name: n, .. } => {
                    let r = format!("statement `{n}` is not modelled");
                    self.nstep(cx, name, at, true, format!("undetermined: {r}"));
                    return Err(Stop::undetermined(r, Some(cx.rule_ref())));
                }
            }
        }
        if let Some(r) = unknown {
            let why = format!(
                "undetermined ({r}); its statements cannot change the verdict or later matches: \
                 ignored"
            );
            self.nstep(cx, name, at, false, why);
            return Ok(Outcome::Next);
        }
        if !acted {
            self.nstep(cx, name, at, true, "matched; no verdict".into());
        }
        Ok(Outcome::Next)
    }

    fn native_verdict(
        &mut self,
        cx: Ncx<'_>,
        v: &NftVerdict,
        elem: Option<String>,
    ) -> Result<Outcome, Stop> {
        let via = elem.map_or(String::new(), |e| format!(" (map element `{e}`)"));
        let (name, at) = (&cx.chain.name, Some(cx.idx));
        Ok(match v {
            NftVerdict::Accept => {
                self.nstep(
                    cx,
                    name,
                    at,
                    true,
                    format!("accept{via}: ends this base chain"),
                );
                Outcome::Accept
            }
            NftVerdict::Drop => {
                self.nstep(cx, name, at, true, format!("drop{via}"));
                return Err(Stop {
                    verdict: Verdict::Drop,
                    by: Some(cx.rule_ref()),
                });
            }
            NftVerdict::Continue => {
                self.nstep(cx, name, at, true, format!("continue{via}"));
                Outcome::Next
            }
            NftVerdict::Return => {
                self.nstep(cx, name, at, true, format!("return{via}"));
                Outcome::Return
            }
            NftVerdict::Jump(t) | NftVerdict::Goto(t) => {
                let jump = matches!(v, NftVerdict::Jump(_));
                let verb = if jump { "jump" } else { "goto" };
                self.nstep(cx, name, at, true, format!("{verb} {t}{via}"));
                Outcome::Jump(t.clone(), jump)
            }
        })
    }

    fn native_nat(&mut self, cx: Ncx<'_>, n: &NftNat, is_nat: bool) -> Result<Outcome, Stop> {
        let by = || Some(cx.rule_ref());
        if !is_nat {
            let r = "a NAT statement outside a `type nat` chain".to_string();
            return Err(Stop::undetermined(r, by()));
        }
        let fam_ok = match n.family.as_deref() {
            Some("ip") => self.p.family == Family::Ipv4,
            Some("ip6") => self.p.family == Family::Ipv6,
            _ => true,
        };
        if !fam_ok {
            let why = "the NAT statement is for the other IP family".to_string();
            self.nstep(cx, &cx.chain.name, Some(cx.idx), false, why);
            return Ok(Outcome::Next);
        }
        let addrs = match &n.addr {
            Ok(a) => *a,
            Err(j) => {
                let r = format!("NAT address from an expression ({j}) is not evaluated");
                return Err(Stop::undetermined(r, by()));
            }
        };
        if let Some((a, _)) = addrs
            && Family::of(a) != self.p.family
        {
            let r = "NAT address of the other family".to_string();
            return Err(Stop::undetermined(r, by()));
        }
        let ports = match &n.port {
            Ok(p) => p.map(|(start, end)| PortRange { start, end }),
            Err(j) => {
                let r = format!("NAT port from an expression ({j}) is not evaluated");
                return Err(Stop::undetermined(r, by()));
            }
        };
        let fl = flags(&n.flags);
        let to = NatRange { addrs, ports };
        let target = match n.kind {
            NatKind::Dnat => Target::Dnat { to, flags: fl },
            NatKind::Snat => Target::Snat { to, flags: fl },
            NatKind::Masquerade => Target::Masquerade { ports, flags: fl },
            NatKind::Redirect => Target::Redirect { ports, flags: fl },
        };
        let applied = self.nat_apply(cx.hook, cx.rule_ref(), &target)?;
        self.nstep(cx, &cx.chain.name, Some(cx.idx), true, applied.why.clone());
        applied.stop(cx.rule_ref())?;
        Ok(Outcome::Accept)
    }

    fn mangle(&mut self, cx: Ncx<'_>, key: &Expr, value: &Expr) -> Result<(), String> {
        let v = match self.value(cx, value) {
            Pv::Val(Val::Num(n)) => u32::try_from(n).map_err(|_| "value out of range")?,
            Pv::Val(Val::Str(_)) => return Err("a non-numeric value".into()),
            Pv::Absent(r) | Pv::Unknown(r) => return Err(r),
        };
        let why = match key {
            Expr::Meta(k) if k == "mark" => {
                let old = self.p.mark;
                self.p.mark = v;
                format!("meta mark set: {old:#x} -> {v:#x}")
            }
            Expr::Ct { key: k, .. } if k == "mark" => {
                if self.p.has_ct() {
                    self.p.ct_mark = v;
                    format!("ct mark set: {v:#x}")
                } else {
                    "ct mark set: no conntrack entry, no effect".to_string()
                }
            }
            Expr::Meta(k) if k == "nftrace" || k == "priority" => format!("meta {k} set"),
            other => {
                return Err(format!(
                    "setting `{}` is not modelled",
                    render_expr_short(other)
                ));
            }
        };
        self.nstep(cx, &cx.chain.name, Some(cx.idx), true, why);
        Ok(())
    }
}

pub(super) fn render_expr_short(e: &Expr) -> String {
    let s = crate::nft::render_expr(e);
    if s.len() > 120 {
        let cut = (0..=120)
            .rev()
            .find(|i| s.is_char_boundary(*i))
            .unwrap_or(0);
        format!("{}…", &s[..cut])
    } else {
        s
    }
}
