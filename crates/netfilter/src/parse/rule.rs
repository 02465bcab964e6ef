//! Parsing the arguments of one rule (everything after `-A CHAIN`) into matches and a target.

use std::borrow::Cow;

use crate::addr::{Cidr, Interface};
use crate::matches::Match;
use crate::model::Family;
use crate::parse::cursor::{Cursor, is_core};
use crate::parse::modules::{neg_value, parse_module};
use crate::parse::targets::parse_target;
use crate::proto::Protocol;
use crate::target::Target;

/// The target as written; whether a bare name is a user chain is decided at `COMMIT`, when all
/// chains of the table are known.
#[derive(Debug)]
pub(crate) enum TargetSpec {
    /// A target this crate models.
    Known(Target),
    /// `-j NAME [args]` with a name that is not a modelled target: a user chain or an unknown extension.
    Named { name: String, args: Vec<String> },
    /// `-g CHAIN`.
    Goto(String),
}

#[derive(Debug)]
pub(crate) struct ParsedRule {
    pub(crate) matches: Vec<Match>,
    pub(crate) target: Option<TargetSpec>,
}

/// The module a protocol loads implicitly for options given without `-m` (iptables loads the
/// match named like the protocol: `-p tcp --dport 80` is `-p tcp -m tcp --dport 80`).
fn implicit_module(proto: &Protocol, family: Family) -> Option<&'static str> {
    match (proto.number()?, family) {
        (6, _) => Some("tcp"),
        (17, _) => Some("udp"),
        (1, Family::Ipv4) => Some("icmp"),
        (58, Family::Ipv6) => Some("icmp6"),
        _ => None,
    }
}

/// Reads a module at the cursor (its options follow). A module this crate does not model, or one
/// that stops before its options end, is kept whole as [`Match::Unknown`].
fn module(name: &str, cur: &mut Cursor<'_>, family: Family) -> Result<Match, String> {
    let start = cur.pos;
    if let Some(m) = parse_module(name, cur, family).map_err(|e| format!("-m {name}: {e}"))?
        && cur.at_boundary()
    {
        return Ok(m);
    }
    cur.pos = start;
    cur.skip_to_boundary();
    Ok(Match::Unknown {
        name: name.to_string(),
        args: cur.slice(start),
    })
}

fn target(name: &str, cur: &mut Cursor<'_>, family: Family) -> Result<TargetSpec, String> {
    let start = cur.pos;
    if let Some(t) = parse_target(name, cur, family).map_err(|e| format!("-j {name}: {e}"))? {
        if cur.at_boundary() {
            return Ok(TargetSpec::Known(t));
        }
        cur.pos = start;
        cur.skip_to_boundary();
        return Ok(TargetSpec::Known(Target::Unknown {
            name: name.to_string(),
            args: cur.slice(start),
        }));
    }
    cur.skip_to_boundary();
    Ok(TargetSpec::Named {
        name: name.to_string(),
        args: cur.slice(start),
    })
}

/// Parses a rule's arguments for `family`. Errors are messages; the caller adds line and text.
/// `scratch` is a buffer reused from rule to rule, so that the rule's own match list is allocated
/// once at its final size (a kube-proxy dump has 170,000 rules; growth slack was a third of the
/// parsed ruleset's memory).
pub(crate) fn parse_rule_args<'a>(
    toks: &'a [Cow<'a, str>],
    family: Family,
    scratch: &mut Vec<Match>,
) -> Result<ParsedRule, String> {
    let mut cur = Cursor::new(toks);
    scratch.clear();
    let matches = scratch;
    let mut target_spec = None;
    let mut proto: Option<Protocol> = None;
    let addr = |s: &str| {
        let c = Cidr::parse(s)?;
        if c.family() != family {
            return Err(format!("`{s}` is not an {family:?} address"));
        }
        Ok(c)
    };
    while let Some(tok) = cur.peek() {
        let negated = tok == "!";
        let opt = if negated {
            cur.peek_at(1).ok_or("trailing `!`")?
        } else {
            tok
        };
        match opt {
            "-s" | "--source" | "--src" | "-d" | "--destination" | "--dst" => {
                cur.take_option();
                let v = neg_value(&mut cur, negated, opt, addr)?;
                matches.push(if opt.starts_with("-s") || opt == "--src" {
                    Match::Source(v)
                } else {
                    Match::Destination(v)
                });
            }
            "-i" | "--in-interface" => {
                cur.take_option();
                matches.push(Match::InInterface(neg_value(
                    &mut cur,
                    negated,
                    opt,
                    Interface::parse,
                )?));
            }
            "-o" | "--out-interface" => {
                cur.take_option();
                matches.push(Match::OutInterface(neg_value(
                    &mut cur,
                    negated,
                    opt,
                    Interface::parse,
                )?));
            }
            "-p" | "--protocol" => {
                cur.take_option();
                let v = neg_value(&mut cur, negated, opt, |s| Ok(Protocol::parse(s)))?;
                if !v.negated {
                    proto = Some(v.value.clone());
                }
                matches.push(Match::Protocol(v));
            }
            "-f" | "--fragment" => {
                cur.take_option();
                if family == Family::Ipv6 {
                    return Err("`-f` is IPv4 only".to_string());
                }
                matches.push(Match::Fragment { negated });
            }
            "-m" | "--match" => {
                if negated {
                    return Err(format!("`!` before `{opt}`"));
                }
                cur.next();
                let name = cur.value(opt)?;
                matches.push(module(name, &mut cur, family)?);
            }
            "-j" | "--jump" | "-g" | "--goto" => {
                if negated {
                    return Err(format!("`!` before `{opt}`"));
                }
                if target_spec.is_some() {
                    return Err("more than one target".to_string());
                }
                cur.next();
                let name = cur.value(opt)?;
                target_spec = Some(if opt == "-g" || opt == "--goto" {
                    TargetSpec::Goto(name.to_string())
                } else {
                    target(name, &mut cur, family)?
                });
            }
            o if o.starts_with("--") && !is_core(o) => {
                let implicit = proto.as_ref().and_then(|p| implicit_module(p, family));
                let Some(name) = implicit else {
                    return Err(format!(
                        "unknown option `{o}` (no -m module or -p protocol provides it)"
                    ));
                };
                matches.push(module(name, &mut cur, family)?);
            }
            o => return Err(format!("unexpected argument `{o}`")),
        }
    }
    // Moved into a vector of exactly the right size; `scratch` keeps its capacity.
    let mut exact = Vec::with_capacity(matches.len());
    exact.append(matches);
    Ok(ParsedRule {
        matches: exact,
        target: target_spec,
    })
}
