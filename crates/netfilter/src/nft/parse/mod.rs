//! `nft -j list ruleset` → [`NftRuleset`] (libnftables-json(5)).

use rustc_hash::FxHashMap;
use serde_json::{Map, Value};

mod stmt;

pub(crate) use stmt::types_of;

use super::render::{render_rule, render_set_key};
use super::value::{MapData, Pat, SetData, Ty, pat_of};
use super::{
    BaseChain, ChainType, NftChain, NftFamily, NftHook, NftParseError, NftRule, NftRuleset, NftSet,
    NftTable, NftVerdict, SkippedTable, Stmt,
};
use crate::eval::Hook;
use crate::model::Policy;

type Res<T> = Result<T, NftParseError>;

fn err<T>(path: &str, message: impl Into<String>) -> Res<T> {
    Err(NftParseError {
        path: path.to_string(),
        message: message.into(),
    })
}

fn field<'j>(o: &'j Map<String, Value>, key: &str, path: &str) -> Res<&'j Value> {
    match o.get(key) {
        Some(v) => Ok(v),
        None => err(path, format!("missing field `{key}`")),
    }
}

fn str_field<'j>(o: &'j Map<String, Value>, key: &str, path: &str) -> Res<&'j str> {
    match field(o, key, path)? {
        Value::String(s) => Ok(s),
        other => err(
            &format!("{path}.{key}"),
            format!("expected a string, found {other}"),
        ),
    }
}

fn opt_str(o: &Map<String, Value>, key: &str) -> Option<String> {
    o.get(key).and_then(Value::as_str).map(str::to_string)
}

fn object<'j>(v: &'j Value, path: &str) -> Res<&'j Map<String, Value>> {
    match v {
        Value::Object(o) => Ok(o),
        other => err(path, format!("expected an object, found {other}")),
    }
}

/// The only key of an object such as `{"accept": null}`.
fn single<'j>(v: &'j Value, path: &str) -> Res<(&'j str, &'j Value)> {
    let o = object(v, path)?;
    let mut it = o.iter();
    match (it.next(), it.next()) {
        (Some((k, v)), None) => Ok((k.as_str(), v)),
        _ => err(
            path,
            format!("expected an object with exactly one key, found {v}"),
        ),
    }
}

fn family(o: &Map<String, Value>, path: &str) -> Res<NftFamily> {
    let f = str_field(o, "family", path)?;
    NftFamily::parse(f).map_or_else(
        || err(&format!("{path}.family"), format!("unknown family `{f}`")),
        Ok,
    )
}

/// Strings or a list of strings (`"flags": "interval"` or `["interval", "timeout"]`).
fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

/// Parses the text of `nft -j list ruleset` (or any `{"nftables": [...]}` listing).
///
/// Errors name the JSON path of the offending value. Tables that iptables-nft manages (family
/// `ip`/`ip6`, named like an x_tables table, with `xt` statements or upper-case built-in chain
/// names) go to [`NftRuleset::skipped`].
pub fn parse_json(text: &str) -> Result<NftRuleset, NftParseError> {
    let root: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => return err("", format!("not valid JSON: {e}")),
    };
    let Some(items) = root.get("nftables") else {
        return err("", "expected an object with the key `nftables`");
    };
    let Value::Array(items) = items else {
        return err("nftables", "expected an array");
    };
    let mut p = Parser::default();
    for (i, item) in items.iter().enumerate() {
        let path = format!("nftables[{i}]");
        let (kind, body) = single(item, &path)?;
        let path = format!("{path}.{kind}");
        match kind {
            "metainfo" => {
                p.rs.version = body.get("version").and_then(Value::as_str).map(Into::into);
            }
            "table" => p.table(body, &path)?,
            "chain" => p.chain(body, &path)?,
            "rule" => p.rule(body, &path)?,
            "set" | "map" => p.set(body, &path, kind == "map")?,
            other => {
                p.rs.notes
                    .push(format!("{path}: `{other}` objects are not modelled"))
            }
        }
    }
    let mut rs = p.rs;
    let (kept, skipped): (Vec<NftTable>, Vec<NftTable>) = rs
        .tables
        .into_iter()
        .partition(|t| iptables_nft(t).is_none());
    rs.skipped = skipped
        .iter()
        .map(|t| SkippedTable {
            family: t.fam(),
            name: t.name.clone(),
            reason: iptables_nft(t).unwrap_or_default(),
        })
        .collect();
    rs.tables = kept;
    Ok(rs)
}

/// Why `t` looks like a table iptables-nft manages, if it does.
fn iptables_nft(t: &NftTable) -> Option<String> {
    let xt_name = crate::model::TableName::parse(&t.name)?;
    if !matches!(t.family, NftFamily::Ip | NftFamily::Ip6) {
        return None;
    }
    let has_xt = t.chains.iter().any(|c| {
        c.rules.iter().any(|r| {
            r.stmts
                .iter()
                .any(|s| matches!(s, Stmt::Unknown { name, .. } if name == "xt"))
        })
    });
    let bases: Vec<&NftChain> = t.base_chains().collect();
    let builtin_names = !bases.is_empty() && bases.iter().all(|c| xt_name.is_builtin(&c.name));
    (has_xt || builtin_names).then(|| {
        format!(
            "table {} {} is managed by iptables-nft: read it from iptables-nft-save",
            t.fam(),
            t.name
        )
    })
}

#[derive(Default)]
struct Parser {
    rs: NftRuleset,
    tables: FxHashMap<(NftFamily, String), usize>,
}

impl Parser {
    fn table_of(&mut self, o: &Map<String, Value>, path: &str) -> Res<&mut NftTable> {
        let fam = family(o, path)?;
        let name = str_field(o, "table", path)?;
        match self.tables.get(&(fam, name.to_string())) {
            Some(&i) => match self.rs.tables.get_mut(i) {
                Some(t) => Ok(t),
                None => err(path, "internal: table index out of range"),
            },
            None => err(
                path,
                format!("table {fam} {name} is not declared before this object"),
            ),
        }
    }

    fn table(&mut self, body: &Value, path: &str) -> Res<()> {
        let o = object(body, path)?;
        let fam = family(o, path)?;
        let name = str_field(o, "name", path)?;
        if self.tables.contains_key(&(fam, name.to_string())) {
            return err(path, format!("table {fam} {name} is listed twice"));
        }
        self.tables
            .insert((fam, name.to_string()), self.rs.tables.len());
        let mut t = NftTable::new(fam, name);
        t.handle = o.get("handle").and_then(Value::as_u64);
        t.comment = opt_str(o, "comment");
        self.rs.tables.push(t);
        Ok(())
    }

    fn chain(&mut self, body: &Value, path: &str) -> Res<()> {
        let o = object(body, path)?;
        let name = str_field(o, "name", path)?.to_string();
        let base = match o.get("hook") {
            None => None,
            Some(h) => {
                let Some(h) = h.as_str() else {
                    return err(&format!("{path}.hook"), "expected a string");
                };
                let hook = match h {
                    "prerouting" => NftHook::Ip(Hook::Prerouting),
                    "input" => NftHook::Ip(Hook::Input),
                    "forward" => NftHook::Ip(Hook::Forward),
                    "output" => NftHook::Ip(Hook::Output),
                    "postrouting" => NftHook::Ip(Hook::Postrouting),
                    other => NftHook::Other(other.to_string()),
                };
                let kind = match o.get("type").and_then(Value::as_str) {
                    Some("filter") | None => ChainType::Filter,
                    Some("nat") => ChainType::Nat,
                    Some("route") => ChainType::Route,
                    Some(other) => ChainType::Other(other.to_string()),
                };
                let priority = match o.get("prio").and_then(Value::as_i64) {
                    Some(p) => i32::try_from(p).map_or_else(
                        |_| err(&format!("{path}.prio"), "priority out of range"),
                        Ok,
                    )?,
                    None => return err(path, "a base chain without a numeric `prio`"),
                };
                let policy = match o.get("policy").and_then(Value::as_str) {
                    None | Some("accept") => Some(Policy::Accept),
                    Some("drop") => Some(Policy::Drop),
                    Some(_) => None,
                };
                let mut devices = strings(o.get("dev"));
                devices.extend(strings(o.get("devices")));
                Some(BaseChain {
                    kind,
                    hook,
                    priority,
                    policy,
                    devices,
                })
            }
        };
        let chain = NftChain {
            name: name.clone(),
            handle: o.get("handle").and_then(Value::as_u64),
            base,
            comment: opt_str(o, "comment"),
            rules: Vec::new(),
        };
        let t = self.table_of(o, path)?;
        match t.add_chain(chain) {
            Some(_) => Ok(()),
            None => err(path, format!("chain {name} is listed twice")),
        }
    }

    fn rule(&mut self, body: &Value, path: &str) -> Res<()> {
        let o = object(body, path)?;
        let chain = str_field(o, "chain", path)?.to_string();
        let exprs = match field(o, "expr", path)? {
            Value::Array(a) => a,
            other => {
                return err(
                    &format!("{path}.expr"),
                    format!("expected an array, found {other}"),
                );
            }
        };
        let mut stmts = Vec::with_capacity(exprs.len());
        for (i, e) in exprs.iter().enumerate() {
            stmts.push(stmt::stmt(e, &format!("{path}.expr[{i}]"))?);
        }
        let t = self.table_of(o, path)?;
        let mut rule = NftRule {
            handle: o.get("handle").and_then(Value::as_u64),
            comment: opt_str(o, "comment"),
            stmts,
            text: String::new(),
        };
        rule.text = render_rule(&rule);
        let (fam, tname) = (t.fam(), t.name.clone());
        match t.chain_mut(&chain) {
            Some(c) => {
                c.rules.push(rule);
                Ok(())
            }
            None => err(
                path,
                format!("chain {chain} of table {fam} {tname} is not declared before its rules"),
            ),
        }
    }

    fn set(&mut self, body: &Value, path: &str, is_map: bool) -> Res<()> {
        let o = object(body, path)?;
        let name = str_field(o, "name", path)?.to_string();
        let type_names = strings(o.get("type"));
        let types: Vec<Ty> = type_names.iter().map(|n| Ty::of_name(n)).collect();
        let map = opt_str(o, "map");
        let mut data = SetData::new(types, is_map);
        if let Some(elems) = o.get("elem") {
            let Value::Array(elems) = elems else {
                return err(&format!("{path}.elem"), "expected an array");
            };
            for (i, e) in elems.iter().enumerate() {
                add_elem(&mut data, e, &format!("{path}.elem[{i}]"))?;
            }
        }
        let set = NftSet {
            name: name.clone(),
            type_names,
            map,
            flags: strings(o.get("flags")),
            comment: opt_str(o, "comment"),
            data,
        };
        let t = self.table_of(o, path)?;
        if t.sets.insert(name.clone(), set).is_some() {
            return err(path, format!("set {name} is listed twice"));
        }
        Ok(())
    }
}

/// Adds one `elem` entry (`value`, `{"elem": {"val": …}}`, `{"concat": […]}`, or `[key, data]`
/// for a map) to `data`.
fn add_elem(data: &mut SetData, e: &Value, path: &str) -> Res<()> {
    let (key, value) = if data.is_map {
        match e {
            Value::Array(kv) if kv.len() == 2 => (&kv[0], Some(&kv[1])),
            _ => return err(path, "expected a map element `[key, data]`"),
        }
    } else {
        (e, None)
    };
    let key = match key {
        Value::Object(o) if o.contains_key("elem") => {
            match o.get("elem").and_then(|x| x.get("val")) {
                Some(v) => v,
                None => return err(path, "an `elem` without `val`"),
            }
        }
        k => k,
    };
    let pats: Vec<Pat> = match key {
        // A key type not known: keep the element, it can only answer undetermined.
        k if data.key.is_empty() => vec![Pat::Unknown(k.to_string())],
        Value::Object(o) if o.contains_key("concat") => {
            let Some(Value::Array(parts)) = o.get("concat") else {
                return err(path, "`concat` must be an array");
            };
            if parts.len() != data.key.len() {
                return err(
                    path,
                    format!(
                        "{} components for a key of {} types",
                        parts.len(),
                        data.key.len()
                    ),
                );
            }
            parts
                .iter()
                .zip(&data.key)
                .map(|(p, t)| pat_of(p, *t))
                .collect()
        }
        k if data.key.len() == 1 => vec![pat_of(k, data.key[0])],
        _ => {
            return err(
                path,
                format!("expected a concatenation of {} values", data.key.len()),
            );
        }
    };
    let map_data = match value {
        None => None,
        Some(v) => Some(match verdict(v) {
            Some(Ok(vd)) => MapData::Verdict(vd),
            Some(Err(m)) => return err(path, m),
            None => MapData::Other(v.to_string()),
        }),
    };
    data.push(pats, map_data, render_set_key(key));
    Ok(())
}

/// A verdict object (`{"accept": null}`, `{"goto": {"target": "x"}}`); `None` if it is not one.
fn verdict(v: &Value) -> Option<Result<NftVerdict, String>> {
    let Value::Object(o) = v else { return None };
    let mut it = o.iter();
    let (Some((k, body)), None) = (it.next(), it.next()) else {
        return None;
    };
    let target = || match body.get("target").and_then(Value::as_str) {
        Some(t) => Ok(t.to_string()),
        None => Err(format!("`{k}` without a string `target`")),
    };
    Some(match k.as_str() {
        "accept" => Ok(NftVerdict::Accept),
        "drop" => Ok(NftVerdict::Drop),
        "continue" => Ok(NftVerdict::Continue),
        "return" => Ok(NftVerdict::Return),
        "jump" => target().map(NftVerdict::Jump),
        "goto" => target().map(NftVerdict::Goto),
        _ => return None,
    })
}

#[cfg(test)]
mod tests;
