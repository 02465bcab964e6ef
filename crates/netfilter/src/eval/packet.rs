//! The packet as it travels: the flow's fields after the marks and NAT applied so far, and what
//! the kernel would know about it at the current hook.

use std::net::IpAddr;

use crate::model::Family;

use super::flow::{ConnState, Flow, Origin};

/// What the kernel sees as an input or output device at a hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Dev {
    /// No device (input on the output path, output before routing): matched as the empty name,
    /// as `ip_packet_match` compares against `nulldevname`.
    Absent,
    /// A known interface.
    Named(String),
    /// There is one but it is not known.
    Unknown,
}

impl Dev {
    pub(crate) fn from_opt(name: Option<&str>) -> Dev {
        name.map_or(Dev::Unknown, |n| Dev::Named(n.to_string()))
    }
}

/// The mutable state of the packet and its conntrack entry during a walk.
#[derive(Debug, Clone)]
pub(crate) struct Packet {
    pub(crate) family: Family,
    pub(crate) protocol: u8,
    pub(crate) src: Option<IpAddr>,
    pub(crate) dst: Option<IpAddr>,
    pub(crate) sport: Option<u16>,
    pub(crate) dport: Option<u16>,
    pub(crate) tcp_flags: Option<u8>,
    pub(crate) icmp_type: Option<u8>,
    pub(crate) icmp_code: Option<u8>,
    pub(crate) length: Option<u16>,
    pub(crate) indev: Dev,
    pub(crate) outdev: Dev,
    pub(crate) mark: u32,
    pub(crate) ct_mark: u32,
    /// The state conntrack gives (or gave) the packet.
    pub(crate) state: ConnState,
    /// Whether conntrack (priority −200) has run; before it (the raw table of a fresh packet)
    /// no entry is attached and `--ctstate` sees INVALID.
    pub(crate) ct_attached: bool,
    /// `NOTRACK` / `CT --notrack` fired: the packet is UNTRACKED from then on.
    pub(crate) notracked: bool,
    pub(crate) ct_dnat: bool,
    pub(crate) ct_snat: bool,
    /// The original tuple (pre-NAT, as the flow entered).
    pub(crate) orig_src: IpAddr,
    pub(crate) orig_dst: IpAddr,
    pub(crate) orig_sport: Option<u16>,
    pub(crate) orig_dport: Option<u16>,
    /// The reply tuple's source (= the original destination after DNAT) and its port.
    pub(crate) repl_src: Option<IpAddr>,
    pub(crate) repl_sport: Option<u16>,
    /// The reply tuple's destination (= the original source after SNAT) and its port.
    pub(crate) repl_dst: Option<IpAddr>,
    pub(crate) repl_dport: Option<u16>,
    /// Whether `skb->sk` is a local socket (`-m owner`): OUTPUT and POSTROUTING of local output.
    pub(crate) socket: bool,
    pub(crate) uid: Option<u32>,
    pub(crate) gid: Option<u32>,
    /// Whether this is the loopback re-entry of a locally generated packet.
    pub(crate) reentry: bool,
    /// Whether destination NAT / source NAT has been set up for the connection in this walk.
    pub(crate) dnat_init: bool,
    pub(crate) snat_init: bool,
    /// Whether a DNAT in this walk changed the destination (routing must be redone).
    pub(crate) rerouted: bool,
    /// The output device after a nat OUTPUT re-route, which hooks see from POSTROUTING on.
    pub(crate) outdev_after_output: Option<Dev>,
}

impl Packet {
    pub(crate) fn new(flow: &Flow) -> Packet {
        Packet {
            family: flow.family,
            protocol: flow.protocol,
            src: Some(flow.src),
            dst: Some(flow.dst),
            sport: flow.sport,
            dport: flow.dport,
            tcp_flags: flow.tcp_flags,
            icmp_type: flow.icmp_type,
            icmp_code: flow.icmp_code,
            length: flow.length,
            indev: Dev::Absent,
            outdev: Dev::Absent,
            mark: flow.mark,
            ct_mark: flow.ct_mark,
            state: flow.ct_state,
            ct_attached: false,
            notracked: false,
            ct_dnat: flow.ct_dnat,
            ct_snat: flow.ct_snat,
            orig_src: flow.src,
            orig_dst: flow.dst,
            orig_sport: flow.sport,
            orig_dport: flow.dport,
            // An existing connection's NAT binding is not known: its reply tuple is not either.
            repl_src: (!flow.ct_dnat).then_some(flow.dst),
            repl_sport: if flow.ct_dnat { None } else { flow.dport },
            repl_dst: (!flow.ct_snat).then_some(flow.src),
            repl_dport: if flow.ct_snat { None } else { flow.sport },
            socket: flow.origin == Origin::LocalOutput,
            uid: flow.uid,
            gid: flow.gid,
            reentry: false,
            dnat_init: false,
            snat_init: false,
            rerouted: false,
            outdev_after_output: None,
        }
    }

    /// Whether `nf_ct_get()` returns an entry now.
    pub(crate) fn has_ct(&self) -> bool {
        self.ct_attached && !self.notracked && self.state.has_entry()
    }
}
