//! Parsers for match modules (`-m NAME options…`). Each consumes the options it knows and stops at
//! the first it does not; the caller turns a module that stopped early into [`Match::Unknown`].

use crate::addr::{AddrRange, Cidr, IdRange, Interface, MacAddr, MarkMask, PortRange};
use crate::icmp::{ICMP_NAMES, ICMPV6_NAMES, IcmpType};
use crate::matches::{
    AddrType, AddrTypeMatch, ConntrackMatch, CtDir, CtState, CtStatus, IpRangeMatch, LimitIface,
    LimitMatch, Match, MultiportDir, MultiportMatch, Neg, OwnerMatch, PhysdevMatch, SetMatch,
    StatisticMatch, StatisticMode, TcpFlags, TcpMatch, UdpMatch, tcp_flags,
};
use crate::model::Family;
use crate::parse::cursor::Cursor;
use crate::proto::Protocol;

fn set<T>(slot: &mut Option<T>, v: T, opt: &str) -> Result<(), String> {
    if slot.is_some() {
        return Err(format!("option `{opt}` given twice"));
    }
    *slot = Some(v);
    Ok(())
}

fn no_neg(negated: bool, opt: &str) -> Result<(), String> {
    if negated {
        return Err(format!("option `{opt}` cannot be negated"));
    }
    Ok(())
}

/// Reads `[!] --opt value` (also `--opt ! value`) and parses the value.
pub(super) fn neg_value<T>(
    cur: &mut Cursor<'_>,
    negated: bool,
    opt: &str,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<Neg<T>, String> {
    let mut negated = negated;
    let v = cur.value_neg(opt, &mut negated)?;
    let value = parse(v).map_err(|e| format!("{opt}: {e}"))?;
    Ok(Neg { negated, value })
}

/// Parses a comma-separated list of names from `all` (given in print order), sorted and deduplicated.
fn name_list<T: Copy + Ord>(
    s: &str,
    all: &[T],
    name: impl Fn(T) -> &'static str,
) -> Result<Vec<T>, String> {
    let mut out = Vec::new();
    for part in s.split(',') {
        let v = all
            .iter()
            .copied()
            .find(|&t| name(t).eq_ignore_ascii_case(part))
            .ok_or_else(|| format!("unknown value `{part}`"))?;
        out.push(v);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn parse_tcp_flag_list(s: &str) -> Result<u8, String> {
    let mut bits = 0u8;
    for part in s.split(',') {
        bits |= match part.to_ascii_uppercase().as_str() {
            "ALL" => tcp_flags::ALL,
            "NONE" => 0,
            p => tcp_flags::NAMES
                .iter()
                .find(|(n, _)| *n == p)
                .map(|(_, b)| *b)
                .ok_or_else(|| format!("unknown TCP flag `{part}`"))?,
        };
    }
    Ok(bits)
}

/// Parses module `name`'s options at the cursor. `Ok(None)`: the module is not modelled.
pub(crate) fn parse_module(
    name: &str,
    cur: &mut Cursor<'_>,
    family: Family,
) -> Result<Option<Match>, String> {
    let m = match name {
        "tcp" => Match::Tcp(tcp(cur)?),
        "udp" => Match::Udp(udp(cur)?),
        "icmp" if family == Family::Ipv4 => {
            icmp(cur, "--icmp-type", ICMP_NAMES).map(Match::Icmp)?
        }
        "icmp6" if family == Family::Ipv6 => {
            icmp(cur, "--icmpv6-type", ICMPV6_NAMES).map(Match::Icmp6)?
        }
        "multiport" => Match::Multiport(multiport(cur)?),
        "conntrack" => Match::Conntrack(Box::new(conntrack(cur, family)?)),
        "state" => state(cur)?,
        "comment" => comment(cur)?,
        "addrtype" => Match::AddrType(Box::new(addrtype(cur)?)),
        "mark" => mark(cur, "--mark").map(Match::Mark)?,
        "connmark" => mark(cur, "--mark").map(Match::Connmark)?,
        "set" => set_match(cur)?,
        "statistic" => statistic(cur)?,
        "iprange" => Match::IpRange(Box::new(iprange(cur, family)?)),
        "owner" => Match::Owner(owner(cur)?),
        "physdev" => Match::Physdev(Box::new(physdev(cur)?)),
        "limit" => Match::Limit(limit(cur)?),
        "length" => single(cur, "--length", PortRange::parse).map(Match::Length)?,
        "mac" => single(cur, "--mac-source", MacAddr::parse).map(Match::Mac)?,
        _ => return Ok(None),
    };
    Ok(Some(m))
}

fn tcp(cur: &mut Cursor<'_>) -> Result<TcpMatch, String> {
    let mut m = TcpMatch::default();
    while let Some((neg, opt)) = cur.peek_option() {
        match opt {
            "--sport" | "--source-port" => {
                cur.take_option();
                set(
                    &mut m.sport,
                    neg_value(cur, neg, opt, PortRange::parse)?,
                    opt,
                )?;
            }
            "--dport" | "--destination-port" => {
                cur.take_option();
                set(
                    &mut m.dport,
                    neg_value(cur, neg, opt, PortRange::parse)?,
                    opt,
                )?;
            }
            "--syn" => {
                cur.take_option();
                set(
                    &mut m.flags,
                    Neg {
                        negated: neg,
                        value: TcpFlags::SYN,
                    },
                    opt,
                )?;
            }
            "--tcp-flags" => {
                cur.take_option();
                let mut negated = neg;
                let mask = parse_tcp_flag_list(cur.value_neg(opt, &mut negated)?)?;
                let comp = parse_tcp_flag_list(cur.value(opt)?)?;
                set(
                    &mut m.flags,
                    Neg {
                        negated,
                        value: TcpFlags { mask, comp },
                    },
                    opt,
                )?;
            }
            "--tcp-option" => {
                cur.take_option();
                let v = neg_value(cur, neg, opt, |s| {
                    s.parse::<u8>().map_err(|_| format!("invalid option `{s}`"))
                })?;
                set(&mut m.option, v, opt)?;
            }
            _ => break,
        }
    }
    Ok(m)
}

fn udp(cur: &mut Cursor<'_>) -> Result<UdpMatch, String> {
    let mut m = UdpMatch::default();
    while let Some((neg, opt)) = cur.peek_option() {
        match opt {
            "--sport" | "--source-port" => {
                cur.take_option();
                set(
                    &mut m.sport,
                    neg_value(cur, neg, opt, PortRange::parse)?,
                    opt,
                )?;
            }
            "--dport" | "--destination-port" => {
                cur.take_option();
                set(
                    &mut m.dport,
                    neg_value(cur, neg, opt, PortRange::parse)?,
                    opt,
                )?;
            }
            _ => break,
        }
    }
    Ok(m)
}

/// A module with exactly one (required, negatable) option.
fn single<T>(
    cur: &mut Cursor<'_>,
    want: &str,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<Neg<T>, String> {
    match cur.peek_option() {
        Some((neg, opt)) if opt == want => {
            cur.take_option();
            neg_value(cur, neg, opt, parse)
        }
        _ => Err(format!("expected `{want}`")),
    }
}

fn icmp(
    cur: &mut Cursor<'_>,
    want: &str,
    names: &[(&str, u8, u8, u8)],
) -> Result<Neg<IcmpType>, String> {
    single(cur, want, |s| IcmpType::parse(s, names))
}

fn mark(cur: &mut Cursor<'_>, want: &str) -> Result<Neg<MarkMask>, String> {
    single(cur, want, MarkMask::parse)
}

fn multiport(cur: &mut Cursor<'_>) -> Result<MultiportMatch, String> {
    let Some((neg, opt)) = cur.peek_option() else {
        return Err("multiport needs --dports, --sports or --ports".to_string());
    };
    let dir = match opt {
        "--sports" | "--source-ports" => MultiportDir::Source,
        "--dports" | "--destination-ports" => MultiportDir::Destination,
        "--ports" => MultiportDir::Either,
        _ => return Err(format!("unknown multiport option `{opt}`")),
    };
    cur.take_option();
    let v = neg_value(cur, neg, opt, |s| {
        s.split(',')
            .map(PortRange::parse)
            .collect::<Result<Vec<_>, _>>()
    })?;
    // libxt_multiport.c: at most XT_MULTI_PORTS (15) slots, a range taking two.
    let slots: usize = v
        .value
        .iter()
        .map(|r| if r.start == r.end { 1 } else { 2 })
        .sum();
    if slots > 15 {
        return Err("multiport: too many ports (15 slots, a range counts 2)".to_string());
    }
    Ok(MultiportMatch {
        negated: v.negated,
        dir,
        ports: v.value,
    })
}

fn cidr_of(family: Family) -> impl Fn(&str) -> Result<Cidr, String> {
    move |s| {
        let c = Cidr::parse(s)?;
        if c.family() != family {
            return Err(format!("`{s}` is not an {family:?} address"));
        }
        Ok(c)
    }
}

fn conntrack(cur: &mut Cursor<'_>, family: Family) -> Result<ConntrackMatch, String> {
    let mut m = ConntrackMatch::default();
    let states = |s: &str| name_list(s, &CtState::ALL, CtState::as_str);
    while let Some((neg, opt)) = cur.peek_option() {
        let addr = cidr_of(family);
        match opt {
            "--ctstate" => {
                cur.take_option();
                set(&mut m.state, neg_value(cur, neg, opt, states)?, opt)?;
            }
            "--ctproto" => {
                cur.take_option();
                set(
                    &mut m.proto,
                    neg_value(cur, neg, opt, |s| Ok(Protocol::parse(s)))?,
                    opt,
                )?;
            }
            "--ctorigsrc" | "--ctorigdst" | "--ctreplsrc" | "--ctrepldst" => {
                cur.take_option();
                let v = neg_value(cur, neg, opt, addr)?;
                let slot = match opt {
                    "--ctorigsrc" => &mut m.orig_src,
                    "--ctorigdst" => &mut m.orig_dst,
                    "--ctreplsrc" => &mut m.repl_src,
                    _ => &mut m.repl_dst,
                };
                set(slot, v, opt)?;
            }
            "--ctorigsrcport" | "--ctorigdstport" | "--ctreplsrcport" | "--ctrepldstport" => {
                cur.take_option();
                let v = neg_value(cur, neg, opt, PortRange::parse)?;
                let slot = match opt {
                    "--ctorigsrcport" => &mut m.orig_src_port,
                    "--ctorigdstport" => &mut m.orig_dst_port,
                    "--ctreplsrcport" => &mut m.repl_src_port,
                    _ => &mut m.repl_dst_port,
                };
                set(slot, v, opt)?;
            }
            "--ctstatus" => {
                cur.take_option();
                let v = neg_value(cur, neg, opt, |s| {
                    name_list(s, &CtStatus::ALL, CtStatus::as_str)
                })?;
                set(&mut m.status, v, opt)?;
            }
            "--ctexpire" => {
                cur.take_option();
                let v = neg_value(cur, neg, opt, |s| IdRange::parse(&s.replacen(':', "-", 1)))?;
                set(&mut m.expire, v, opt)?;
            }
            "--ctdir" => {
                cur.take_option();
                no_neg(neg, opt)?;
                let d = match cur.value(opt)?.to_ascii_uppercase().as_str() {
                    "ORIGINAL" => CtDir::Original,
                    "REPLY" => CtDir::Reply,
                    other => return Err(format!("--ctdir: unknown direction `{other}`")),
                };
                set(&mut m.dir, d, opt)?;
            }
            _ => break,
        }
    }
    Ok(m)
}

fn state(cur: &mut Cursor<'_>) -> Result<Match, String> {
    // libxt_state knows the real states only; SNAT/DNAT are conntrack's virtual ones.
    let real = &CtState::ALL[..5];
    single(cur, "--state", |s| name_list(s, real, CtState::as_str)).map(Match::State)
}

fn comment(cur: &mut Cursor<'_>) -> Result<Match, String> {
    match cur.peek_option() {
        Some((false, "--comment")) => {
            cur.take_option();
            let c = cur.value("--comment")?;
            // xt_comment.h: XT_MAX_COMMENT_LEN 256 including the NUL.
            if c.len() > 255 {
                return Err("--comment: longer than 255 bytes".to_string());
            }
            Ok(Match::Comment(c.to_string()))
        }
        _ => Err("expected `--comment`".to_string()),
    }
}

fn addrtype(cur: &mut Cursor<'_>) -> Result<AddrTypeMatch, String> {
    let mut m = AddrTypeMatch::default();
    let types = |s: &str| name_list(s, &AddrType::ALL, AddrType::as_str);
    while let Some((neg, opt)) = cur.peek_option() {
        match opt {
            "--src-type" => {
                cur.take_option();
                set(&mut m.src, neg_value(cur, neg, opt, types)?, opt)?;
            }
            "--dst-type" => {
                cur.take_option();
                set(&mut m.dst, neg_value(cur, neg, opt, types)?, opt)?;
            }
            "--limit-iface-in" | "--limit-iface-out" => {
                cur.take_option();
                no_neg(neg, opt)?;
                let l = if opt == "--limit-iface-in" {
                    LimitIface::In
                } else {
                    LimitIface::Out
                };
                set(&mut m.limit_iface, l, "--limit-iface-in/out")?;
            }
            _ => break,
        }
    }
    Ok(m)
}

fn set_match(cur: &mut Cursor<'_>) -> Result<Match, String> {
    let Some((neg, "--match-set")) = cur.peek_option() else {
        return Err("expected `--match-set`".to_string());
    };
    cur.take_option();
    let mut negated = neg;
    let name = cur.value_neg("--match-set", &mut negated)?.to_string();
    let dirs = cur.value("--match-set")?;
    let dst = dirs
        .split(',')
        .map(|d| match d {
            "src" => Ok(false),
            "dst" => Ok(true),
            _ => Err(format!("--match-set: unknown direction `{d}`")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut return_nomatch = false;
    if let Some((false, "--return-nomatch")) = cur.peek_option() {
        cur.take_option();
        return_nomatch = true;
    }
    Ok(Match::Set(Box::new(SetMatch {
        negated,
        set: name,
        dst,
        return_nomatch,
    })))
}

fn statistic(cur: &mut Cursor<'_>) -> Result<Match, String> {
    let (mut mode, mut prob, mut every, mut packet) = (None, None, None, None);
    let mut negated = false;
    while let Some((neg, opt)) = cur.peek_option() {
        match opt {
            "--mode" => {
                cur.take_option();
                no_neg(neg, opt)?;
                set(&mut mode, cur.value(opt)?, opt)?;
            }
            "--probability" | "--every" => {
                cur.take_option();
                let mut n = neg;
                let v = cur.value_neg(opt, &mut n)?;
                negated |= n;
                if opt == "--probability" {
                    let p: f64 = v
                        .parse()
                        .map_err(|_| format!("--probability: invalid `{v}`"))?;
                    if !(0.0..=1.0).contains(&p) {
                        return Err(format!("--probability: `{v}` is not within 0..1"));
                    }
                    set(&mut prob, p, opt)?;
                } else {
                    let n: u32 = v.parse().map_err(|_| format!("--every: invalid `{v}`"))?;
                    set(&mut every, n, opt)?;
                }
            }
            "--packet" => {
                cur.take_option();
                no_neg(neg, opt)?;
                let v = cur.value(opt)?;
                set(
                    &mut packet,
                    v.parse::<u32>()
                        .map_err(|_| format!("--packet: invalid `{v}`"))?,
                    opt,
                )?;
            }
            _ => break,
        }
    }
    let mode = match (mode, prob, every) {
        (Some("random"), Some(probability), None) if packet.is_none() => {
            StatisticMode::Random { probability }
        }
        (Some("nth"), None, Some(every)) if every > 0 => {
            let packet = packet.unwrap_or(0);
            if packet >= every {
                return Err("statistic: --packet must be below --every".to_string());
            }
            StatisticMode::Nth { every, packet }
        }
        _ => {
            return Err(
                "statistic: need `--mode random --probability P` or `--mode nth --every N`"
                    .to_string(),
            );
        }
    };
    Ok(Match::Statistic(StatisticMatch { negated, mode }))
}

fn iprange(cur: &mut Cursor<'_>, family: Family) -> Result<IpRangeMatch, String> {
    let mut m = IpRangeMatch::default();
    let range = |s: &str| {
        let r = AddrRange::parse(s)?;
        if Family::of(r.start) != family {
            return Err(format!("`{s}` is not an {family:?} range"));
        }
        Ok(r)
    };
    while let Some((neg, opt)) = cur.peek_option() {
        match opt {
            "--src-range" => {
                cur.take_option();
                set(&mut m.src, neg_value(cur, neg, opt, range)?, opt)?;
            }
            "--dst-range" => {
                cur.take_option();
                set(&mut m.dst, neg_value(cur, neg, opt, range)?, opt)?;
            }
            _ => break,
        }
    }
    Ok(m)
}

fn owner(cur: &mut Cursor<'_>) -> Result<OwnerMatch, String> {
    let mut m = OwnerMatch::default();
    while let Some((neg, opt)) = cur.peek_option() {
        match opt {
            "--uid-owner" => {
                cur.take_option();
                set(&mut m.uid, neg_value(cur, neg, opt, IdRange::parse)?, opt)?;
            }
            "--gid-owner" => {
                cur.take_option();
                set(&mut m.gid, neg_value(cur, neg, opt, IdRange::parse)?, opt)?;
            }
            "--suppl-groups" => {
                cur.take_option();
                no_neg(neg, opt)?;
                m.suppl_groups = true;
            }
            "--socket-exists" => {
                cur.take_option();
                set(
                    &mut m.socket_exists,
                    Neg {
                        negated: neg,
                        value: (),
                    },
                    opt,
                )?;
            }
            _ => break,
        }
    }
    Ok(m)
}

fn physdev(cur: &mut Cursor<'_>) -> Result<PhysdevMatch, String> {
    let mut m = PhysdevMatch::default();
    while let Some((neg, opt)) = cur.peek_option() {
        let flag = Neg {
            negated: neg,
            value: (),
        };
        match opt {
            "--physdev-in" => {
                cur.take_option();
                set(
                    &mut m.physdev_in,
                    neg_value(cur, neg, opt, Interface::parse)?,
                    opt,
                )?;
            }
            "--physdev-out" => {
                cur.take_option();
                set(
                    &mut m.physdev_out,
                    neg_value(cur, neg, opt, Interface::parse)?,
                    opt,
                )?;
            }
            "--physdev-is-in" => {
                cur.take_option();
                set(&mut m.is_in, flag, opt)?;
            }
            "--physdev-is-out" => {
                cur.take_option();
                set(&mut m.is_out, flag, opt)?;
            }
            "--physdev-is-bridged" => {
                cur.take_option();
                set(&mut m.is_bridged, flag, opt)?;
            }
            _ => break,
        }
    }
    Ok(m)
}

/// Units accepted by libxt_limit.c `parse_rate`: any non-empty prefix of the full word.
fn rate_unit(u: &str) -> Option<&'static str> {
    let full = [
        ("second", "sec"),
        ("minute", "min"),
        ("hour", "hour"),
        ("day", "day"),
    ];
    let lower = u.to_ascii_lowercase();
    full.iter()
        .find(|(w, _)| !lower.is_empty() && w.starts_with(&lower))
        .map(|(_, s)| *s)
}

fn limit(cur: &mut Cursor<'_>) -> Result<LimitMatch, String> {
    let mut m = LimitMatch::default();
    while let Some((neg, opt)) = cur.peek_option() {
        match opt {
            "--limit" => {
                cur.take_option();
                no_neg(neg, opt)?;
                let v = cur.value(opt)?;
                let (n, unit) = v.split_once('/').unwrap_or((v, "second"));
                let n: u32 = n
                    .parse()
                    .map_err(|_| format!("--limit: invalid rate `{v}`"))?;
                let unit =
                    rate_unit(unit).ok_or_else(|| format!("--limit: invalid unit in `{v}`"))?;
                if n == 0 {
                    return Err("--limit: rate must be positive".to_string());
                }
                set(&mut m.rate, (n, unit.to_string()), opt)?;
            }
            "--limit-burst" => {
                cur.take_option();
                no_neg(neg, opt)?;
                let v = cur.value(opt)?;
                set(
                    &mut m.burst,
                    v.parse::<u32>()
                        .map_err(|_| format!("--limit-burst: invalid `{v}`"))?,
                    opt,
                )?;
            }
            _ => break,
        }
    }
    Ok(m)
}
