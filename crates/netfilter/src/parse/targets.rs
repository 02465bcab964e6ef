//! Parsers for targets (`-j NAME options…`); like the module parsers, each stops at the first
//! option it does not know and the caller then keeps the whole target as [`Target::Unknown`].

use std::net::IpAddr;

use crate::addr::{PortRange, parse_u32};
use crate::model::Family;
use crate::parse::cursor::Cursor;
use crate::target::{ConnmarkAction, NatFlags, NatRange, RejectWith, Target};

/// Parses target `name`'s options. `Ok(None)`: not a target this crate models by name.
pub(crate) fn parse_target(
    name: &str,
    cur: &mut Cursor<'_>,
    family: Family,
) -> Result<Option<Target>, String> {
    let t = match name {
        "ACCEPT" => Target::Accept,
        "DROP" => Target::Drop,
        "RETURN" => Target::Return,
        "TRACE" => Target::Trace,
        "NOTRACK" => Target::Notrack,
        "REJECT" => reject(cur, family)?,
        "LOG" => Target::Log(rest(cur)),
        "NFLOG" => Target::Nflog(rest(cur)),
        "CT" => Target::Ct(rest(cur)),
        "MARK" => {
            let (value, mask) = xmark(cur, "MARK")?;
            Target::Mark { value, mask }
        }
        "CONNMARK" => Target::Connmark(connmark(cur)?),
        "DNAT" => {
            let (to, flags) = nat(cur, "--to-destination", family)?;
            Target::Dnat { to, flags }
        }
        "SNAT" => {
            let (to, flags) = nat(cur, "--to-source", family)?;
            Target::Snat { to, flags }
        }
        "MASQUERADE" | "REDIRECT" => {
            let (ports, flags) = to_ports(cur)?;
            if name == "MASQUERADE" {
                Target::Masquerade { ports, flags }
            } else {
                Target::Redirect { ports, flags }
            }
        }
        _ => return Ok(None),
    };
    Ok(Some(t))
}

/// All tokens up to the next boundary (options of LOG, NFLOG, CT are kept verbatim).
fn rest(cur: &mut Cursor<'_>) -> Vec<String> {
    let from = cur.pos;
    cur.skip_to_boundary();
    cur.slice(from)
}

fn reject(cur: &mut Cursor<'_>, family: Family) -> Result<Target, String> {
    let mut with = RejectWith::default_for(family);
    if let Some((false, "--reject-with")) = cur.peek_option() {
        cur.take_option();
        let v = cur.value("--reject-with")?;
        with = RejectWith::parse(v, family)
            .ok_or_else(|| format!("--reject-with: unknown `{v}` for {family:?}"))?;
    }
    Ok(Target::Reject(with))
}

fn mark_mask(s: &str) -> Result<(u32, Option<u32>), String> {
    match s.split_once('/') {
        Some((v, m)) => Ok((parse_u32(v)?, Some(parse_u32(m)?))),
        None => Ok((parse_u32(s)?, None)),
    }
}

/// MARK / CONNMARK value options, normalised to `(value, mask)` of `x = (x & !mask) ^ value`
/// (libxt_MARK.c `mark_tg_parse`, libxt_CONNMARK.c `connmark_tg_parse`).
fn xmark_option(opt: &str, v: &str) -> Result<Option<(u32, u32)>, String> {
    let (val, mask) = mark_mask(v).map_err(|e| format!("{opt}: {e}"))?;
    let r = match opt {
        "--set-xmark" => (val, mask.unwrap_or(u32::MAX)),
        "--set-mark" => (val, val | mask.unwrap_or(u32::MAX)),
        "--and-mark" if mask.is_none() => (0, !val),
        "--or-mark" if mask.is_none() => (val, val),
        "--xor-mark" if mask.is_none() => (val, 0),
        _ => return Ok(None),
    };
    Ok(Some(r))
}

fn xmark(cur: &mut Cursor<'_>, target: &str) -> Result<(u32, u32), String> {
    let Some((false, opt)) = cur.peek_option() else {
        return Err(format!("{target}: expected a mark option"));
    };
    if !matches!(
        opt,
        "--set-xmark" | "--set-mark" | "--and-mark" | "--or-mark" | "--xor-mark"
    ) {
        return Err(format!("{target}: unknown option `{opt}`"));
    }
    cur.take_option();
    let v = cur.value(opt)?;
    xmark_option(opt, v)?.ok_or_else(|| format!("{target}: `{opt}` takes no mask"))
}

fn connmark(cur: &mut Cursor<'_>) -> Result<ConnmarkAction, String> {
    let Some((false, opt)) = cur.peek_option() else {
        return Err("CONNMARK: expected an option".to_string());
    };
    if opt == "--save-mark" || opt == "--restore-mark" {
        cur.take_option();
        let (mut nfmask, mut ctmask) = (u32::MAX, u32::MAX);
        while let Some((false, m)) = cur.peek_option() {
            if !matches!(m, "--nfmask" | "--ctmask" | "--mask") {
                break;
            }
            cur.take_option();
            let v = parse_u32(cur.value(m)?).map_err(|e| format!("{m}: {e}"))?;
            match m {
                "--nfmask" => nfmask = v,
                "--ctmask" => ctmask = v,
                _ => (nfmask, ctmask) = (v, v),
            }
        }
        return Ok(if opt == "--save-mark" {
            ConnmarkAction::Save { nfmask, ctmask }
        } else {
            ConnmarkAction::Restore { nfmask, ctmask }
        });
    }
    let (value, mask) = xmark(cur, "CONNMARK")?;
    Ok(ConnmarkAction::SetXmark { value, mask })
}

fn addr_range(s: &str, family: Family) -> Result<(IpAddr, IpAddr), String> {
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let a: IpAddr = a.parse().map_err(|_| format!("invalid address `{a}`"))?;
    let b: IpAddr = b.parse().map_err(|_| format!("invalid address `{b}`"))?;
    if Family::of(a) != family || Family::of(b) != family {
        return Err(format!("`{s}` is not an {family:?} address range"));
    }
    Ok((a, b))
}

/// Parses `[addr[-addr]][:port[-port]]`; IPv6 as `addr[-addr]` or `[addr[-addr]]:port[-port]`.
pub(crate) fn parse_nat_range(s: &str, family: Family) -> Result<NatRange, String> {
    let (addr, ports) = if let Some(inner) = s.strip_prefix('[') {
        let (a, after) = inner
            .split_once(']')
            .ok_or_else(|| format!("unclosed `[` in `{s}`"))?;
        match after {
            "" => (a, None),
            p => (
                a,
                Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| format!("invalid `{s}`"))?,
                ),
            ),
        }
    } else if family == Family::Ipv6 {
        (s, None)
    } else {
        match s.split_once(':') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        }
    };
    let addrs = if addr.is_empty() {
        None
    } else {
        Some(addr_range(addr, family)?)
    };
    let ports = ports.map(|p| PortRange::parse_with(p, '-')).transpose()?;
    if addrs.is_none() && ports.is_none() {
        return Err("empty NAT range".to_string());
    }
    Ok(NatRange { addrs, ports })
}

fn flag(flags: &mut NatFlags, opt: &str) -> bool {
    let slot = match opt {
        "--random" => &mut flags.random,
        "--random-fully" => &mut flags.random_fully,
        "--persistent" => &mut flags.persistent,
        _ => return false,
    };
    *slot = true;
    true
}

fn nat(cur: &mut Cursor<'_>, want: &str, family: Family) -> Result<(NatRange, NatFlags), String> {
    let mut to = None;
    let mut flags = NatFlags::default();
    while let Some((false, opt)) = cur.peek_option() {
        if opt == want {
            cur.take_option();
            if to.is_some() {
                return Err(format!("`{want}` given twice"));
            }
            to =
                Some(parse_nat_range(cur.value(opt)?, family).map_err(|e| format!("{want}: {e}"))?);
        } else if flag(&mut flags, opt) {
            cur.take_option();
        } else {
            break;
        }
    }
    Ok((to.ok_or_else(|| format!("missing `{want}`"))?, flags))
}

fn to_ports(cur: &mut Cursor<'_>) -> Result<(Option<PortRange>, NatFlags), String> {
    let mut ports = None;
    let mut flags = NatFlags::default();
    while let Some((false, opt)) = cur.peek_option() {
        if opt == "--to-ports" {
            cur.take_option();
            let v = cur.value(opt)?;
            ports = Some(PortRange::parse_with(v, '-').map_err(|e| format!("--to-ports: {e}"))?);
        } else if flag(&mut flags, opt) {
            cur.take_option();
        } else {
            break;
        }
    }
    Ok((ports, flags))
}
