//! Rules in nft's text syntax (`nft list ruleset`), for display: what users see in traces. The
//! text follows nft's output closely but is not guaranteed byte-identical (nft omits protocol
//! dependencies it can infer, prints some keys without `meta`, …).

use serde_json::Value;

use super::value::MapData;
use super::{Expr, NftMatch, NftNat, NftRule, NftVerdict, Op, SetData, Stmt};
use crate::eval::NatKind;

/// The text of a rule: its statements, then `comment "…"`.
pub fn render_rule(rule: &NftRule) -> String {
    let mut parts: Vec<String> = rule.stmts.iter().map(render_stmt).collect();
    if let Some(c) = &rule.comment {
        parts.push(format!("comment \"{c}\""));
    }
    parts.join(" ")
}

/// A verdict as nft writes it (`accept`, `goto NAME`).
pub fn render_verdict(v: &NftVerdict) -> String {
    match v {
        NftVerdict::Accept => "accept".into(),
        NftVerdict::Drop => "drop".into(),
        NftVerdict::Continue => "continue".into(),
        NftVerdict::Return => "return".into(),
        NftVerdict::Jump(t) => format!("jump {t}"),
        NftVerdict::Goto(t) => format!("goto {t}"),
    }
}

/// One constant (`198.51.100.0/24`, `1000-2000`, `established,related`, `"lo"`).
pub fn render_const(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(render_const).collect::<Vec<_>>().join(","),
        Value::Object(o) => {
            if let Some(p) = o.get("prefix") {
                let addr = p.get("addr").map_or(String::new(), render_const);
                let len = p.get("len").map_or(String::new(), render_const);
                format!("{addr}/{len}")
            } else if let Some(Value::Array(r)) = o.get("range") {
                r.iter().map(render_const).collect::<Vec<_>>().join("-")
            } else if let Some(Value::Array(c)) = o.get("concat") {
                c.iter().map(render_const).collect::<Vec<_>>().join(" . ")
            } else if let Some(val) = o.get("elem").and_then(|e| e.get("val")) {
                render_const(val)
            } else {
                v.to_string()
            }
        }
        other => other.to_string(),
    }
}

/// A set element's key as written.
pub(crate) fn render_set_key(v: &Value) -> String {
    render_const(v)
}

fn render_set(s: &SetData) -> String {
    let elems: Vec<String> = s
        .texts
        .iter()
        .zip(&s.data)
        .map(|(k, d)| match d {
            None => k.clone(),
            Some(MapData::Verdict(v)) => format!("{k} : {}", render_verdict(v)),
            Some(MapData::Other(o)) => format!("{k} : {o}"),
        })
        .collect();
    format!("{{ {} }}", elems.join(", "))
}

/// Whether `e` reads a mark (nft prints marks as `0x%08x`).
fn is_mark(e: &Expr) -> bool {
    match e {
        Expr::Meta(k) => k == "mark",
        Expr::Ct { key, .. } => key == "mark",
        Expr::Binop { left, .. } => is_mark(left),
        _ => false,
    }
}

/// `e`, with numbers in nft's mark notation when `mark`.
fn render_value(e: &Expr, mark: bool) -> String {
    match e {
        Expr::Const(Value::Number(n)) if mark => match n.as_u64() {
            Some(n) => format!("{n:#010x}"),
            None => n.to_string(),
        },
        Expr::Binop { op, left, right } if mark => {
            format!("{} {op} {}", render_expr(left), render_value(right, true))
        }
        e => render_expr(e),
    }
}

/// An expression as nft writes it.
pub fn render_expr(e: &Expr) -> String {
    match e {
        Expr::Payload { protocol, field } => format!("{protocol} {field}"),
        Expr::Meta(k) => match k.as_str() {
            "iifname" | "oifname" | "iif" | "oif" => k.clone(),
            _ => format!("meta {k}"),
        },
        Expr::Ct { key, dir, family } => {
            let mut out = "ct".to_string();
            for part in [dir.as_deref(), family.as_deref(), Some(key.as_str())]
                .into_iter()
                .flatten()
            {
                out.push(' ');
                out.push_str(part);
            }
            out
        }
        Expr::Fib { result, flags } => format!("fib {} {result}", flags.join(" . ")),
        Expr::Numgen {
            mode,
            modulus,
            offset,
        } => {
            let off = if *offset == 0 {
                String::new()
            } else {
                format!(" offset {offset}")
            };
            format!("numgen {mode} mod {modulus}{off}")
        }
        Expr::Binop { op, left, right } => {
            let r = match &**right {
                // A flag list as an operand: nft writes `(syn | ack)`.
                Expr::Const(Value::Array(a)) => format!(
                    "({})",
                    a.iter().map(render_const).collect::<Vec<_>>().join(" | ")
                ),
                r => render_value(r, is_mark(left)),
            };
            format!("{} {op} {r}", render_expr(left))
        }
        Expr::Concat(parts) => parts
            .iter()
            .map(render_expr)
            .collect::<Vec<_>>()
            .join(" . "),
        Expr::Const(v) => render_const(v),
        Expr::Set(s) => render_set(s),
        Expr::SetRef(n) => format!("@{n}"),
        Expr::Unknown(j) => j.clone(),
    }
}

fn quote_ifname(m: &NftMatch, right: String) -> String {
    let ifname = matches!(&m.left, Expr::Meta(k) if k.ends_with("ifname"));
    if ifname && matches!(m.right, Expr::Const(Value::String(_))) {
        format!("\"{right}\"")
    } else {
        right
    }
}

fn render_nat(n: &NftNat) -> String {
    let verb = match n.kind {
        NatKind::Dnat => "dnat",
        NatKind::Snat => "snat",
        NatKind::Masquerade => "masquerade",
        NatKind::Redirect => "redirect",
    };
    let addr = match &n.addr {
        Ok(None) => String::new(),
        Ok(Some((a, b))) if a == b => match a {
            std::net::IpAddr::V6(_) if n.port != Ok(None) => format!("[{a}]"),
            _ => a.to_string(),
        },
        Ok(Some((a, b))) => format!("{a}-{b}"),
        Err(j) => j.clone(),
    };
    let port = match &n.port {
        Ok(None) => String::new(),
        Ok(Some((a, b))) if a == b => format!(":{a}"),
        Ok(Some((a, b))) => format!(":{a}-{b}"),
        Err(j) => format!(":{j}"),
    };
    let fam = n.family.as_ref().map_or(String::new(), |f| format!(" {f}"));
    let to = if addr.is_empty() && port.is_empty() {
        String::new()
    } else {
        format!("{fam} to {addr}{port}")
    };
    let flags = if n.flags.is_empty() {
        String::new()
    } else {
        format!(" {}", n.flags.join(","))
    };
    format!("{verb}{to}{flags}")
}

/// A statement as nft writes it.
pub fn render_stmt(s: &Stmt) -> String {
    match s {
        Stmt::Match(m) => {
            let left = render_expr(&m.left);
            let right = quote_ifname(m, render_value(&m.right, is_mark(&m.left)));
            match m.op {
                // nft spells out `==` after a binary operation (`meta mark & 0x4000 == 0`).
                Op::Eq if matches!(m.left, Expr::Binop { .. }) => format!("{left} == {right}"),
                Op::Eq | Op::In => format!("{left} {right}"),
                op => format!("{left} {} {right}", op.as_str()),
            }
        }
        Stmt::Verdict(v) => render_verdict(v),
        Stmt::Vmap { key, map, .. } => format!("{} vmap {}", render_expr(key), render_expr(map)),
        Stmt::Counter(t) | Stmt::Log(t) | Stmt::Stateful(t) => t.clone(),
        Stmt::Mangle { key, value } => format!(
            "{} set {}",
            render_expr(key),
            render_value(value, is_mark(key))
        ),
        Stmt::Nat(n) => render_nat(n),
        Stmt::Reject { kind, code } => match (kind, code) {
            (None, _) => "reject".into(),
            (Some(k), None) => format!("reject with {k}"),
            (Some(k), Some(c)) => format!("reject with {k} {c}"),
        },
        Stmt::Notrack => "notrack".into(),
        Stmt::Unknown { name, json } => format!("{name} {json}"),
    }
}
