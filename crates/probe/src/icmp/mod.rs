//! ICMP echo prober and the shared ICMP engine.
//!
//! * [`IcmpConfig`] — what to ping and how (`count`, `interval`, `size`, `family`).
//! * [`IcmpEngine`] — one socket per address family for all ICMP probes of the process, opened lazily:
//!   an unprivileged datagram ("ping") socket when `net.ipv4.ping_group_range` admits the process,
//!   else a raw socket (needs `CAP_NET_RAW`), else [`IcmpPermissionError`] saying which failed and how
//!   to fix it. One receive task per socket hands replies to the probes waiting for them, matched by
//!   (address, sequence number, 64-bit probe token in the payload) — concurrent probes to one host
//!   never see each other's replies.
//! * [`IcmpProber`] — one probe: `count` echoes, replies until the timeout, an [`Outcome`](crate::Outcome)
//!   with [`IcmpDetails`](crate::IcmpDetails) and blackbox_exporter's phases (`resolve`, `setup`, `rtt`).
//! * [`IcmpRounds`] — many probes on one schedule (the mesh's rounds), sent and settled by one driver
//!   task instead of one future and a wake-up per echo.
//!
//! RTTs use the kernel's receive timestamp (`SO_TIMESTAMPNS`, CLOCK_REALTIME) against a CLOCK_REALTIME
//! stamp taken right before `sendto`, as iputils `ping` and fping do; when the kernel stamp is missing
//! (the first milliseconds after a socket enables timestamping) or implausible (the realtime clock was
//! stepped), a CLOCK_MONOTONIC user-space RTT is used and `kernel_timestamps` is false.
//!
//! Module map: `config` (the YAML struct), `prober` (one probe), `rounds` (many probes, one task),
//! `summary` (its outcome), `engine` (sockets, sessions, receive
//! task), `dispatch` (matching replies to echoes), `receive` (draining the
//! socket), `packet` (bytes), `socket` (the kernel-facing calls),
//! `permission` (explaining a refused socket).

mod config;
mod dispatch;
mod engine;
pub mod packet;
mod permission;
mod prober;
mod reactor;
mod receive;
mod rounds;
mod socket;
mod summary;

pub use config::{IcmpConfig, IpFamily, MAX_COUNT, MAX_INTERVAL, MAX_SIZE};
pub use engine::{IcmpEngine, IcmpEngineStats, family_label};
pub use permission::{IcmpPermissionError, PING_GROUP_RANGE_PATH};
pub use prober::IcmpProber;
pub use rounds::IcmpRounds;
