//! Reading a native rule's values from the packet and deciding its matches: payload, meta, ct
//! and fib keys, `numgen` draws, binary operations, set and map lookups, comparisons.

use std::net::IpAddr;

use crate::matches::AddrType;
use crate::model::Family;
use crate::nft::value::Lookup;
use crate::nft::{Expr, NftMatch, Op, Pat, Stmt, Ty, Val, pat_of_expr, render_stmt};

use super::super::ConnState;
use super::super::matches::v4_type;
use super::super::packet::Dev;
use super::super::trace::Choice;
use super::super::walk::Walker;
use super::{Ncx, Pv, Tri, render_expr_short};

fn fib_name(t: AddrType) -> &'static str {
    match t {
        AddrType::Local => "local",
        AddrType::Broadcast => "broadcast",
        AddrType::Multicast => "multicast",
        _ => "unicast",
    }
}

fn num(v: &Val) -> Option<u128> {
    match v {
        Val::Num(n) => Some(*n),
        Val::Str(_) => None,
    }
}

impl Walker<'_> {
    /// A key for a lookup: one value per component, `None` where not known; `Err` with the
    /// [`Pv::Absent`] reason when a dependency fails.
    pub(super) fn key(&mut self, cx: Ncx<'_>, e: &Expr) -> Result<Vec<Option<Val>>, Pv> {
        let parts: Vec<&Expr> = match e {
            Expr::Concat(p) => p.iter().collect(),
            e => vec![e],
        };
        let mut out = Vec::with_capacity(parts.len());
        for p in parts {
            match self.value(cx, p) {
                Pv::Val(v) => out.push(Some(v)),
                Pv::Unknown(_) => out.push(None),
                absent @ Pv::Absent(_) => return Err(absent),
            }
        }
        Ok(out)
    }

    /// Draws a value of `numgen … mod n` for this branch: N−1 binary choices at most.
    pub(super) fn draw(&mut self, cx: Ncx<'_>, n: u32) -> u32 {
        let mut k = 0u32;
        while k + 1 < n {
            let p = 1.0 / f64::from(n - k);
            let taken = self.prefix.get(self.choices.len()).copied().unwrap_or(true);
            self.choices.push(Choice {
                rule: cx.rule_ref(),
                matched: taken,
                probability: if taken { p } else { 1.0 - p },
            });
            if taken {
                break;
            }
            k += 1;
        }
        k
    }

    /// Reads `e` from the packet.
    pub(super) fn value(&mut self, cx: Ncx<'_>, e: &Expr) -> Pv {
        let p = &self.p;
        let v4 = p.family == Family::Ipv4;
        let addr = |a: Option<IpAddr>, what: &str| match a {
            Some(IpAddr::V4(a)) => Pv::Val(Val::Num(u128::from(a.to_bits()))),
            Some(IpAddr::V6(a)) => Pv::Val(Val::Num(a.to_bits())),
            None => Pv::Unknown(format!("{what} address not known after NAT")),
        };
        let opt = |n: Option<u128>, what: &str| match n {
            Some(n) => Pv::Val(Val::Num(n)),
            None => Pv::Unknown(format!("{what} not known")),
        };
        let dev = |d: &Dev, name: bool, what: &str| match d {
            Dev::Named(n) => Pv::Val(Val::Str(n.as_str().into())),
            // nft_meta_get_eval stores "" for a missing device's name, and breaks for its index.
            Dev::Absent if name => Pv::Val(Val::Str("".into())),
            Dev::Absent => Pv::Absent(format!("no {what} interface")),
            Dev::Unknown => Pv::Unknown(format!("{what} interface not known")),
        };
        match e {
            Expr::Payload { protocol, field } => {
                let (proto, f) = (protocol.as_str(), field.as_str());
                let l4 = |want: u8| -> Option<Pv> {
                    (p.protocol != want)
                        .then(|| Pv::Absent(format!("`{proto} {f}`: not a {proto} packet")))
                };
                match proto {
                    "ip" | "ip6" => {
                        if (proto == "ip") != v4 {
                            return Pv::Absent(format!("`{proto} {f}`: not an {proto} packet"));
                        }
                        match f {
                            "saddr" => addr(p.src, "source"),
                            "daddr" => addr(p.dst, "destination"),
                            "protocol" | "nexthdr" => Pv::Val(Val::Num(u128::from(p.protocol))),
                            "length" if v4 => opt(p.length.map(u128::from), "packet length"),
                            "length" => opt(
                                p.length.and_then(|l| l.checked_sub(40)).map(u128::from),
                                "payload length",
                            ),
                            _ => Pv::Unknown(format!("`{proto} {f}` is not modelled")),
                        }
                    }
                    "tcp" | "udp" | "udplite" | "sctp" | "dccp" => {
                        let want = match proto {
                            "tcp" => 6,
                            "udp" => 17,
                            "udplite" => 136,
                            "sctp" => 132,
                            _ => 33,
                        };
                        if let Some(a) = l4(want) {
                            return a;
                        }
                        match f {
                            "sport" => opt(p.sport.map(u128::from), "source port"),
                            "dport" => opt(p.dport.map(u128::from), "destination port"),
                            "flags" if proto == "tcp" => {
                                opt(p.tcp_flags.map(u128::from), "TCP flags")
                            }
                            _ => Pv::Unknown(format!("`{proto} {f}` is not modelled")),
                        }
                    }
                    "th" => match (p.protocol, f) {
                        (6 | 17 | 33 | 132 | 136, "sport") => {
                            opt(p.sport.map(u128::from), "source port")
                        }
                        (6 | 17 | 33 | 132 | 136, "dport") => {
                            opt(p.dport.map(u128::from), "destination port")
                        }
                        (n, _) => Pv::Unknown(format!("`th {f}` of protocol {n}: not a port")),
                    },
                    "icmp" | "icmpv6" => {
                        let (want, fam) = if proto == "icmp" {
                            (1, true)
                        } else {
                            (58, false)
                        };
                        if v4 != fam {
                            return Pv::Absent(format!("`{proto} {f}`: other IP family"));
                        }
                        if let Some(a) = l4(want) {
                            return a;
                        }
                        match f {
                            "type" => opt(p.icmp_type.map(u128::from), "ICMP type"),
                            "code" => opt(p.icmp_code.map(u128::from), "ICMP code"),
                            _ => Pv::Unknown(format!("`{proto} {f}` is not modelled")),
                        }
                    }
                    _ => Pv::Unknown(format!("`{proto} {f}` is not modelled")),
                }
            }
            Expr::Meta(k) => match k.as_str() {
                "mark" => Pv::Val(Val::Num(u128::from(p.mark))),
                "l4proto" => Pv::Val(Val::Num(u128::from(p.protocol))),
                "nfproto" => Pv::Val(Val::Num(if v4 { 2 } else { 10 })),
                "protocol" => Pv::Val(Val::Num(if v4 { 0x0800 } else { 0x86dd })),
                "iifname" => dev(&p.indev, true, "input"),
                "oifname" => dev(&p.outdev, true, "output"),
                "iif" => dev(&p.indev, false, "input"),
                "oif" => dev(&p.outdev, false, "output"),
                "skuid" | "skgid" if !p.socket => Pv::Absent("no local socket".into()),
                "skuid" => opt(p.uid.map(u128::from), "socket uid"),
                "skgid" => opt(p.gid.map(u128::from), "socket gid"),
                "length" => opt(p.length.map(u128::from), "packet length"),
                other => Pv::Unknown(format!("`meta {other}` is not modelled")),
            },
            Expr::Ct { key, dir, family } => match (key.as_str(), dir) {
                ("state", None) => {
                    let bits = if p.notracked || p.state == ConnState::Untracked {
                        64
                    } else if !p.has_ct() {
                        1
                    } else {
                        match p.state {
                            ConnState::New => 8,
                            ConnState::Established => 2,
                            ConnState::Related => 4,
                            _ => 1,
                        }
                    };
                    Pv::Val(Val::Num(bits))
                }
                ("mark", None) if !p.has_ct() => Pv::Absent("no conntrack entry".into()),
                ("mark", None) => Pv::Val(Val::Num(u128::from(p.ct_mark))),
                ("status", None) if !p.has_ct() => Pv::Absent("no conntrack entry".into()),
                ("status", None) => {
                    let bits = if p.ct_dnat { 32 } else { 0 } | if p.ct_snat { 16 } else { 0 };
                    Pv::Val(Val::Num(bits))
                }
                (k @ ("saddr" | "daddr" | "proto-src" | "proto-dst"), d) => {
                    if !p.has_ct() {
                        return Pv::Absent("no conntrack entry".into());
                    }
                    match family.as_deref() {
                        Some("ip") if !v4 => return Pv::Absent("not an IPv4 connection".into()),
                        Some("ip6") if v4 => return Pv::Absent("not an IPv6 connection".into()),
                        _ => {}
                    }
                    // The original tuple is the flow as it entered; the reply tuple is it reversed
                    // after the NAT set up so far.
                    let reply = d.as_deref() == Some("reply");
                    match (k, reply) {
                        ("saddr", false) => addr(Some(p.orig_src), "original source"),
                        ("daddr", false) => addr(Some(p.orig_dst), "original destination"),
                        ("proto-src", false) => {
                            opt(p.orig_sport.map(u128::from), "original source port")
                        }
                        ("proto-dst", false) => {
                            opt(p.orig_dport.map(u128::from), "original destination port")
                        }
                        ("saddr", true) => addr(p.repl_src, "reply source"),
                        ("daddr", true) => addr(p.repl_dst, "reply destination"),
                        ("proto-src", true) => {
                            opt(p.repl_sport.map(u128::from), "reply source port")
                        }
                        _ => opt(p.repl_dport.map(u128::from), "reply destination port"),
                    }
                }
                (k, _) => Pv::Unknown(format!("`ct {k}` is not modelled")),
            },
            Expr::Fib { result, flags } => {
                let f: Vec<&str> = flags.iter().map(String::as_str).collect();
                let a = match (result.as_str(), f.as_slice()) {
                    ("type", ["daddr"]) => p.dst,
                    ("type", ["saddr"]) => p.src,
                    _ => {
                        return Pv::Unknown(format!(
                            "`fib {} {result}` is not modelled",
                            f.join(" . ")
                        ));
                    }
                };
                match a {
                    None => Pv::Unknown("address not known after NAT".into()),
                    Some(IpAddr::V4(a)) => {
                        Pv::Val(Val::Str(fib_name(v4_type(a, None, self.host)).into()))
                    }
                    Some(a @ IpAddr::V6(v6)) => Pv::Val(Val::Str(
                        if self.host.is_local(a) {
                            "local"
                        } else if v6.is_multicast() {
                            "multicast"
                        } else {
                            "unicast"
                        }
                        .into(),
                    )),
                }
            }
            Expr::Numgen {
                mode,
                modulus,
                offset,
            } => {
                if (mode != "random" && mode != "inc") || *modulus == 0 {
                    return Pv::Unknown(format!("`numgen {mode} mod {modulus}` is not modelled"));
                }
                let k = self.draw(cx, *modulus);
                Pv::Val(Val::Num(u128::from(k) + u128::from(*offset)))
            }
            Expr::Binop { op, left, right } => {
                let l = match self.value(cx, left) {
                    Pv::Val(Val::Num(n)) => n,
                    Pv::Val(Val::Str(_)) => return Pv::Unknown(format!("`{op}` of a name")),
                    other => return other,
                };
                let ty = crate::nft::types_of_expr(left)
                    .first()
                    .copied()
                    .unwrap_or(Ty::Unknown);
                let ty = if ty.is_flags() { ty } else { Ty::Int };
                let r = match pat_of_expr(right, ty) {
                    Some(Pat::Eq(Val::Num(r))) => r,
                    _ => return Pv::Unknown(format!("operand of `{op}` not a number")),
                };
                let shift = |r: u128| u32::try_from(r).ok().filter(|s| *s < 128);
                let v = match op.as_str() {
                    "&" => l & r,
                    "|" => l | r,
                    "^" => l ^ r,
                    "<<" => match shift(r) {
                        Some(s) => (l << s) & u128::from(u32::MAX),
                        None => 0,
                    },
                    ">>" => shift(r).map_or(0, |s| l >> s),
                    _ => return Pv::Unknown(format!("operator `{op}` is not modelled")),
                };
                Pv::Val(Val::Num(v))
            }
            Expr::Const(_) => match pat_of_expr(e, Ty::Int) {
                Some(Pat::Eq(v)) => Pv::Val(v),
                _ => Pv::Unknown("a constant that is not a number".into()),
            },
            Expr::Concat(_) | Expr::Set(_) | Expr::SetRef(_) | Expr::Unknown(_) => {
                Pv::Unknown(format!("`{}` is not a packet value", render_expr_short(e)))
            }
        }
    }

    pub(super) fn native_match(&mut self, cx: Ncx<'_>, m: &NftMatch) -> Tri {
        let text = || render_stmt(&Stmt::Match(Box::new(m.clone())));
        let key = match self.key(cx, &m.left) {
            Ok(k) => k,
            Err(Pv::Absent(why)) => return Tri::No(format!("`{}`: {why}", text())),
            Err(_) => return Tri::Unknown(format!("`{}`", text())),
        };
        let set = match &m.right {
            Expr::Set(s) => Some(&**s),
            Expr::SetRef(n) => match cx.table.sets.get(n) {
                Some(s) => Some(&s.data),
                None => return Tri::Unknown(format!("`{}`: set @{n} not found", text())),
            },
            _ => None,
        };
        let member = if let Some(s) = set {
            match s.lookup(&key) {
                Lookup::Hit(..) => Some(true),
                Lookup::Miss => Some(false),
                Lookup::Unknown(r) => return Tri::Unknown(format!("`{}`: {r}", text())),
            }
        } else {
            None
        };
        let is_status = matches!(&m.left, Expr::Ct { key, .. } if key == "status");
        let result: Result<bool, String> = match (member, m.op) {
            (Some(b), Op::Eq | Op::In) => Ok(b),
            (Some(b), Op::Ne) => Ok(!b),
            (Some(_), _) => Err("an ordering against a set".into()),
            (None, _) if key.len() != m.pats.len() => Err("key and value differ in length".into()),
            (None, op) => {
                let mut all = Ok(true);
                for ((v, pat), ty) in key.iter().zip(&m.pats).zip(&m.types) {
                    let r = self.compare(v.as_ref(), pat, *ty, op, is_status);
                    match r {
                        Ok(true) => {}
                        Ok(false) => {
                            all = Ok(false);
                            break;
                        }
                        Err(e) => all = Err(e),
                    }
                }
                // `!=` on one component; on a concatenation it negates the whole.
                match (all, op) {
                    (Ok(b), Op::Ne) if m.pats.len() > 1 => Ok(!b),
                    (r, _) => r,
                }
            }
        };
        match result {
            Ok(true) => Tri::Yes,
            Ok(false) => Tri::No(format!("`{}` does not hold", text())),
            Err(r) => Tri::Unknown(format!("`{}`: {r}", text())),
        }
    }

    /// One component: `v OP pat`. For a concatenation `op` is applied by the caller when `!=`.
    pub(super) fn compare(
        &self,
        v: Option<&Val>,
        pat: &Pat,
        ty: Ty,
        op: Op,
        is_status: bool,
    ) -> Result<bool, String> {
        let Some(v) = v else {
            return Err("the value is not known".into());
        };
        if let Pat::Unknown(j) = pat {
            return Err(format!("constant {j} is not understood"));
        }
        if is_status {
            // Only the snat/dnat bits of ct status are modelled.
            return match (op, pat, v) {
                (Op::In, Pat::Eq(Val::Num(mask)), Val::Num(n)) if mask & !48 == 0 => {
                    Ok(n & mask != 0)
                }
                _ => Err("ct status bits other than snat/dnat are not modelled".into()),
            };
        }
        match op {
            Op::In if ty.is_flags() => match (pat, v) {
                (Pat::Eq(Val::Num(mask)), Val::Num(n)) => Ok(n & mask != 0),
                _ => Err("a flag test on a non-number".into()),
            },
            Op::Eq | Op::In => pat.accepts(v).ok_or_else(|| "not comparable".into()),
            Op::Ne => pat
                .accepts(v)
                .map(|b| !b)
                .ok_or_else(|| "not comparable".into()),
            Op::Lt | Op::Gt | Op::Le | Op::Ge => match (pat, num(v)) {
                (Pat::Eq(Val::Num(r)), Some(n)) => Ok(match op {
                    Op::Lt => n < *r,
                    Op::Gt => n > *r,
                    Op::Le => n <= *r,
                    _ => n >= *r,
                }),
                _ => Err("an ordering of non-numbers".into()),
            },
        }
    }
}
