//! The sequence of hooks a flow crosses, with the routing decisions between them.

use std::net::IpAddr;

use crate::model::Ruleset;
use crate::nft::NftRuleset;

use super::Limits;
use super::flow::{Flow, HostModel, Origin};
use super::hooks::Hook;
use super::index::Indexes;
use super::packet::{Dev, Packet};
use super::trace::{Trace, Verdict};
use super::walk::{Stop, Walker};

/// A trace that walked nothing.
pub(crate) fn undetermined_trace(reason: String) -> Trace {
    Trace {
        verdict: Verdict::Undetermined { reason },
        decided_by: None,
        steps: Vec::new(),
        nat: Vec::new(),
        branch: Vec::new(),
        probability: 1.0,
    }
}

/// Walks the flow once, taking the statistic outcomes in `prefix` (and "matched" past it).
pub(crate) fn walk_once(
    rulesets: &[Ruleset],
    native: &[NftRuleset],
    host: &HostModel,
    flow: &Flow,
    limits: &Limits,
    indexes: &Indexes,
    prefix: &[bool],
) -> Trace {
    let mut w = Walker {
        rulesets,
        native,
        host,
        limits,
        indexes,
        prefix,
        p: Packet::new(flow),
        steps: Vec::new(),
        nat: Vec::new(),
        choices: Vec::new(),
    };
    let result = match flow.origin {
        Origin::LocalOutput => local_output(&mut w, flow),
        Origin::Input | Origin::Forward => from_outside(&mut w, flow),
    };
    let (verdict, decided_by) = match result {
        Ok(()) => (Verdict::Accept, None),
        Err(Stop { verdict, by }) => (verdict, by),
    };
    let probability = w.choices.iter().map(|c| c.probability).product();
    Trace {
        verdict,
        decided_by,
        steps: w.steps,
        nat: w.nat,
        branch: w.choices,
        probability,
    }
}

fn local_output(w: &mut Walker<'_>, flow: &Flow) -> Result<(), Stop> {
    let host = w.host;
    w.p.indev = Dev::Absent;
    w.p.outdev = match &flow.out_iface {
        Some(n) => Dev::Named(n.clone()),
        None => route_dev(host, flow.dst),
    };
    w.hook(Hook::Output)?;
    let Some(dst) = w.p.dst else {
        return Err(Stop::undetermined(
            "destination not known after NAT: cannot tell whether it is delivered locally".into(),
            None,
        ));
    };
    w.hook(Hook::Postrouting)?;
    if !host.is_local(dst) {
        return Ok(());
    }
    // Loopback re-entry: in on `lo`, the socket orphaned (loopback_xmit), conntrack entry kept.
    w.p.reentry = true;
    w.p.indev = Dev::Named("lo".into());
    w.p.outdev = Dev::Absent;
    w.p.socket = false;
    w.hook(Hook::Prerouting)?;
    w.hook(Hook::Input)
}

fn from_outside(w: &mut Walker<'_>, flow: &Flow) -> Result<(), Stop> {
    w.p.indev = Dev::from_opt(flow.in_iface.as_deref());
    w.p.outdev = Dev::Absent;
    w.p.socket = false;
    w.hook(Hook::Prerouting)?;
    let local = if w.p.rerouted {
        match w.p.dst {
            Some(d) => w.host.is_local(d),
            None => {
                return Err(Stop::undetermined(
                    "destination not known after DNAT: cannot tell input from forward".into(),
                    None,
                ));
            }
        }
    } else {
        flow.origin == Origin::Input
    };
    if local {
        return w.hook(Hook::Input);
    }
    w.p.outdev = match (&w.p.dst, &flow.out_iface) {
        (Some(d), _) if w.p.rerouted => route_dev(w.host, *d),
        (_, Some(n)) => Dev::Named(n.clone()),
        (_, None) => route_dev(w.host, flow.dst),
    };
    w.hook(Hook::Forward)?;
    w.hook(Hook::Postrouting)
}

/// The output device the kernel's route lookup gives `dst`: `lo` for a local address (the kernel
/// routes every local address through the loopback device), else the host model's route, else
/// unknown.
fn route_dev(host: &HostModel, dst: IpAddr) -> Dev {
    if host.is_local(dst) {
        return Dev::Named("lo".into());
    }
    Dev::from_opt(host.route_dev(dst))
}
