//! Statements and expressions of a rule's `expr` list (libnftables-json(5) "STATEMENTS",
//! "EXPRESSIONS").

use serde_json::Value;

use super::super::value::{Pat, SetData, Ty, pat_of};
use super::super::{Expr, NftMatch, NftNat, Op, Stmt};
use super::{Res, add_elem, err, field, object, opt_str, single, str_field, strings, verdict};
use crate::eval::NatKind;

/// The datatypes of an expression's value, one per concatenated component.
pub(crate) fn types_of(e: &Expr) -> Vec<Ty> {
    match e {
        Expr::Concat(parts) => parts.iter().flat_map(types_of).collect(),
        Expr::Binop { left, .. } => types_of(left),
        Expr::Payload { protocol, field } => vec![match (protocol.as_str(), field.as_str()) {
            ("ip", "saddr" | "daddr") => Ty::Addr4,
            ("ip6", "saddr" | "daddr") => Ty::Addr6,
            ("ip", "protocol") | ("ip6", "nexthdr") => Ty::Proto,
            (_, "sport" | "dport" | "length" | "code") => Ty::Int,
            ("tcp", "flags") => Ty::TcpFlags,
            ("icmp", "type") => Ty::Icmp,
            ("icmpv6", "type") => Ty::Icmp6,
            _ => Ty::Unknown,
        }],
        Expr::Meta(k) => vec![match k.as_str() {
            "mark" | "skuid" | "skgid" | "length" => Ty::Int,
            "l4proto" => Ty::Proto,
            "nfproto" => Ty::NfProto,
            "protocol" => Ty::EtherType,
            "iifname" | "oifname" | "iif" | "oif" => Ty::Str,
            _ => Ty::Unknown,
        }],
        Expr::Ct { key, family, .. } => vec![match (key.as_str(), family.as_deref()) {
            ("state", _) => Ty::CtState,
            ("status", _) => Ty::CtStatus,
            ("mark" | "proto-src" | "proto-dst", _) => Ty::Int,
            ("saddr" | "daddr", Some("ip")) => Ty::Addr4,
            ("saddr" | "daddr", Some("ip6")) => Ty::Addr6,
            _ => Ty::Unknown,
        }],
        Expr::Fib { result, .. } => vec![match result.as_str() {
            "type" => Ty::FibType,
            "oif" | "oifname" => Ty::Str,
            _ => Ty::Unknown,
        }],
        Expr::Numgen { .. } => vec![Ty::Int],
        _ => vec![Ty::Unknown],
    }
}

/// Parses a value expression. `types`: the datatypes a set or constant here has (the other
/// side's), for anonymous sets.
fn expr(v: &Value, path: &str, types: &[Ty], is_map: bool) -> Res<Expr> {
    match v {
        Value::String(s) if s.starts_with('@') => {
            return Ok(Expr::SetRef(s.trim_start_matches('@').to_string()));
        }
        Value::Object(_) => {}
        other => return Ok(Expr::Const(other.clone())),
    }
    let (k, body) = single(v, path)?;
    let inner = format!("{path}.{k}");
    Ok(match k {
        "payload" => {
            let b = object(body, &inner)?;
            match (b.get("protocol"), b.get("field")) {
                (Some(Value::String(p)), Some(Value::String(f))) => Expr::Payload {
                    protocol: p.clone(),
                    field: f.clone(),
                },
                // Raw payloads (`@th,16,16`) are not modelled.
                _ => Expr::Unknown(v.to_string()),
            }
        }
        "meta" => Expr::Meta(str_field(object(body, &inner)?, "key", &inner)?.to_string()),
        "ct" => {
            let b = object(body, &inner)?;
            // nft 1.0 writes `ct original ip daddr` as key "ip daddr"; older ones as key
            // "daddr" with "family": "ip".
            let key = str_field(b, "key", &inner)?;
            let (family, key) = match key.split_once(' ') {
                Some((f, k)) => (Some(f.to_string()), k.to_string()),
                None => (opt_str(b, "family"), key.to_string()),
            };
            Expr::Ct {
                key,
                dir: opt_str(b, "dir"),
                family,
            }
        }
        "fib" => {
            let b = object(body, &inner)?;
            Expr::Fib {
                result: str_field(b, "result", &inner)?.to_string(),
                flags: strings(b.get("flags")),
            }
        }
        "numgen" => {
            let b = object(body, &inner)?;
            let num = |key: &str| -> Res<u32> {
                match b.get(key) {
                    None if key == "offset" => Ok(0),
                    Some(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()).map_or_else(
                        || err(&format!("{inner}.{key}"), "expected a 32-bit number"),
                        Ok,
                    ),
                    None => err(&inner, format!("missing field `{key}`")),
                }
            };
            Expr::Numgen {
                mode: str_field(b, "mode", &inner)?.to_string(),
                modulus: num("mod")?,
                offset: num("offset")?,
            }
        }
        "&" | "|" | "^" | "<<" | ">>" => match body {
            Value::Array(a) if a.len() == 2 => {
                let left = expr(&a[0], &format!("{inner}[0]"), &[], false)?;
                let right = expr(&a[1], &format!("{inner}[1]"), &[], false)?;
                Expr::Binop {
                    op: k.to_string(),
                    left: Box::new(left),
                    right: Box::new(right),
                }
            }
            _ => return err(&inner, "expected an array of two operands"),
        },
        "concat" => match body {
            Value::Array(a) => Expr::Concat(
                a.iter()
                    .enumerate()
                    .map(|(i, x)| expr(x, &format!("{inner}[{i}]"), &[], false))
                    .collect::<Res<Vec<Expr>>>()?,
            ),
            _ => return err(&inner, "expected an array"),
        },
        "set" => {
            let mut data = SetData::new(types.to_vec(), is_map);
            let one;
            let elems: &[Value] = match body {
                Value::Array(a) => a,
                single => {
                    one = [single.clone()];
                    &one
                }
            };
            for (i, e) in elems.iter().enumerate() {
                add_elem(&mut data, e, &format!("{inner}[{i}]"))?;
            }
            Expr::Set(Box::new(data))
        }
        "prefix" | "range" | "elem" => Expr::Const(v.clone()),
        _ => Expr::Unknown(v.to_string()),
    })
}

fn op(s: &str) -> Option<Op> {
    Some(match s {
        "==" => Op::Eq,
        "!=" => Op::Ne,
        "<" => Op::Lt,
        ">" => Op::Gt,
        "<=" => Op::Le,
        ">=" => Op::Ge,
        "in" => Op::In,
        _ => return None,
    })
}

/// The NAT address: a literal, a `range` or a `prefix`; an expression is kept as JSON text.
fn nat_addr(v: Option<&Value>) -> Result<Option<(std::net::IpAddr, std::net::IpAddr)>, String> {
    let parse = |x: &Value| x.as_str().and_then(|s| s.parse().ok());
    match v {
        None => Ok(None),
        Some(x) => {
            if let Some(a) = parse(x) {
                return Ok(Some((a, a)));
            }
            if let Some(Value::Array(r)) = x.get("range")
                && let [a, b] = r.as_slice()
                && let (Some(a), Some(b)) = (parse(a), parse(b))
            {
                return Ok(Some((a, b)));
            }
            Err(x.to_string())
        }
    }
}

fn nat_port(v: Option<&Value>) -> Result<Option<(u16, u16)>, String> {
    let parse = |x: &Value| x.as_u64().and_then(|n| u16::try_from(n).ok());
    match v {
        None => Ok(None),
        Some(x) => {
            if let Some(p) = parse(x) {
                return Ok(Some((p, p)));
            }
            if let Some(Value::Array(r)) = x.get("range")
                && let [a, b] = r.as_slice()
                && let (Some(a), Some(b)) = (parse(a), parse(b))
            {
                return Ok(Some((a, b)));
            }
            Err(x.to_string())
        }
    }
}

/// Parses one statement of a rule's `expr` list.
pub(super) fn stmt(v: &Value, path: &str) -> Res<Stmt> {
    let (k, body) = single(v, path)?;
    let inner = format!("{path}.{k}");
    let unknown = || Stmt::Unknown {
        name: k.to_string(),
        json: v.to_string(),
    };
    if let Some(vd) = verdict(v) {
        return vd.map(Stmt::Verdict).or_else(|m| err(&inner, m));
    }
    Ok(match k {
        "match" => {
            let b = object(body, &inner)?;
            let o = str_field(b, "op", &inner)?;
            let Some(o) = op(o) else {
                return Ok(unknown());
            };
            let left = expr(
                field(b, "left", &inner)?,
                &format!("{inner}.left"),
                &[],
                false,
            )?;
            let types = types_of(&left);
            let rv = field(b, "right", &inner)?;
            let right = expr(rv, &format!("{inner}.right"), &types, false)?;
            let pats = match (&right, rv) {
                (Expr::Set(_) | Expr::SetRef(_) | Expr::Unknown(_), _) => Vec::new(),
                (_, Value::Object(c)) if c.contains_key("concat") => {
                    let parts = c.get("concat").and_then(Value::as_array);
                    match parts {
                        Some(p) if p.len() == types.len() => {
                            p.iter().zip(&types).map(|(x, t)| pat_of(x, *t)).collect()
                        }
                        _ => vec![Pat::Unknown(rv.to_string())],
                    }
                }
                _ if types.len() == 1 => vec![pat_of(rv, types[0])],
                _ => vec![Pat::Unknown(rv.to_string())],
            };
            Stmt::Match(Box::new(NftMatch {
                op: o,
                left,
                right,
                types,
                pats,
            }))
        }
        "vmap" => {
            let b = object(body, &inner)?;
            let key = expr(
                field(b, "key", &inner)?,
                &format!("{inner}.key"),
                &[],
                false,
            )?;
            let types = types_of(&key);
            let map = expr(
                field(b, "data", &inner)?,
                &format!("{inner}.data"),
                &types,
                true,
            )?;
            Stmt::Vmap { key, types, map }
        }
        "counter" => Stmt::Counter(match body {
            Value::Object(c) => format!(
                "counter packets {} bytes {}",
                c.get("packets").and_then(Value::as_u64).unwrap_or(0),
                c.get("bytes").and_then(Value::as_u64).unwrap_or(0)
            ),
            Value::String(name) => format!("counter name \"{name}\""),
            _ => "counter".to_string(),
        }),
        "log" => {
            let mut text = "log".to_string();
            if let Some(p) = body.get("prefix").and_then(Value::as_str) {
                text.push_str(&format!(" prefix \"{p}\""));
            }
            if let Some(g) = body.get("group").and_then(Value::as_u64) {
                text.push_str(&format!(" group {g}"));
            }
            Stmt::Log(text)
        }
        "limit" | "quota" | "ct count" | "connlimit" => Stmt::Stateful(stateful_text(k, body)),
        "mangle" => {
            let b = object(body, &inner)?;
            Stmt::Mangle {
                key: expr(
                    field(b, "key", &inner)?,
                    &format!("{inner}.key"),
                    &[],
                    false,
                )?,
                value: expr(
                    field(b, "value", &inner)?,
                    &format!("{inner}.value"),
                    &[],
                    false,
                )?,
            }
        }
        "dnat" | "snat" | "masquerade" | "redirect" => {
            let kind = match k {
                "dnat" => NatKind::Dnat,
                "snat" => NatKind::Snat,
                "masquerade" => NatKind::Masquerade,
                _ => NatKind::Redirect,
            };
            let b = match body {
                Value::Null => None,
                Value::Object(b) => Some(b),
                _ => return err(&inner, "expected null or an object"),
            };
            let get = |key: &str| b.and_then(|b| b.get(key));
            Stmt::Nat(Box::new(NftNat {
                kind,
                addr: nat_addr(get("addr")),
                port: nat_port(get("port")),
                flags: strings(get("flags")),
                family: get("family").and_then(Value::as_str).map(Into::into),
            }))
        }
        "reject" => Stmt::Reject {
            kind: body.get("type").and_then(Value::as_str).map(Into::into),
            code: body.get("expr").and_then(Value::as_str).map(Into::into),
        },
        "notrack" => Stmt::Notrack,
        _ => unknown(),
    })
}

fn stateful_text(k: &str, body: &Value) -> String {
    match (k, body) {
        ("limit", Value::Object(b)) => {
            let over = if b.get("inv").and_then(Value::as_bool) == Some(true) {
                "over "
            } else {
                ""
            };
            let rate = b.get("rate").and_then(Value::as_u64).unwrap_or(0);
            let per = b.get("per").and_then(Value::as_str).unwrap_or("second");
            let unit = b
                .get("rate_unit")
                .and_then(Value::as_str)
                .filter(|u| *u != "packets")
                .map_or(String::new(), |u| format!(" {u}"));
            format!("limit rate {over}{rate}{unit}/{per}")
        }
        _ => format!("{k} {body}"),
    }
}
